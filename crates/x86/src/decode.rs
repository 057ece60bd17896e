//! Decoding and classification: which emulation recipe an instruction needs.

use crate::native::{Bin, Un};
use crate::{Accesses, Cpu};
use iced_x86::{Decoder, DecoderOptions, EncodingKind, Instruction, Mnemonic, OpKind, Register};

/// Longest x86 instruction.
const MAX_LEN: usize = 15;

/// Why an instruction is not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The bytes do not form a valid 64-bit instruction (or are cut short).
    Invalid,
    /// The instruction has no explicit memory operand the emulator could handle.
    NoMemoryOperand,
    /// A valid memory instruction this emulator does not implement (yet).
    NotEmulated,
    /// An EVEX form with an opmask this emulator does not handle (the masked forms of the
    /// vector moves are emulated; zero-masking on a store is invalid anyway).
    Masked,
}

/// An instruction the emulator does not handle: the caller falls back to single-stepping.
/// Carries the mnemonic and raw bytes for the log, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Mnemonic (`Mnemonic::INVALID` for undecodable bytes).
    pub mnemonic: Mnemonic,
    /// Why it is not emulated.
    pub reason: Reason,
    bytes: [u8; MAX_LEN],
    len: u8,
    /// The decoded instruction, when the bytes were valid.
    ins: Option<Instruction>,
}

impl Unsupported {
    pub(crate) fn new(ins: &Instruction, code: &[u8], reason: Reason) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        let len = ins.len().clamp(1, MAX_LEN).min(code.len());
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), code.get(..len)) {
            dst.copy_from_slice(src);
        }
        Unsupported {
            mnemonic: ins.mnemonic(),
            reason,
            bytes,
            len: len as u8,
            ins: (!ins.is_invalid()).then_some(*ins),
        }
    }

    /// The decoded iced-x86 instruction (`None` for invalid bytes), for callers that want more
    /// detail (e.g. `InstructionInfoFactory` on the single-step path).
    pub fn instruction(&self) -> Option<&Instruction> {
        self.ins.as_ref()
    }

    /// Linear address and width of the instruction's first explicit memory operand, computed
    /// from `cpu` before the instruction runs: what the single-step fallback logs. `None` when
    /// there is no memory operand (or the bytes were invalid).
    pub fn memory_operand<C: Cpu>(&self, cpu: &C) -> Option<(u64, u32)> {
        let ins = self.ins.as_ref()?;
        let op = (0..ins.op_count()).find(|i| is_memory_kind(ins.op_kind(*i)))?;
        let addr = ins.virtual_address(op, 0, |r, _, _| crate::emulate::reg_value(cpu, r))?;
        Some((addr, ins.memory_size().size() as u32))
    }

    /// The instruction's raw bytes (as far as they were decoded).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or(&[])
    }
}

/// Load with optional extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ext {
    None,
    Zero,
    Sign,
}

/// String instruction families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

/// The emulation recipe, chosen once at decode time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `reg <- [m]` (MOV, MOVZX, MOVSX, MOVSXD, MOVBE when `swap`).
    Load {
        ext: Ext,
        swap: bool,
    },
    /// `[m] <- reg` (MOV, MOVNTI, MOVDIRI, MOVBE when `swap`).
    Store {
        swap: bool,
    },
    /// `[m] <- imm`.
    StoreImm,
    /// MOVDIR64B: 64-byte read of `[m]`, 64-byte write to `es:[reg]`.
    Movdir64b,
    /// XLAT: `al <- [rbx + al]` (a table lookup; the operand is implicit).
    Xlat,
    Xchg,
    Cmpxchg,
    /// CMPXCHG8B / CMPXCHG16B.
    CmpxchgWide,
    Xadd,
    /// `[m] op= reg/imm`; `write` false for CMP and TEST.
    AluMem {
        op: Bin,
        write: bool,
    },
    /// `reg op= [m]`; `write` false for CMP.
    AluReg {
        op: Bin,
        write: bool,
    },
    Unary(Un),
    /// Shift or rotate of memory by imm8, 1 or CL.
    Shift(Bin),
    /// SHLD (`left`) / SHRD of memory.
    ShiftD {
        left: bool,
    },
    /// BT/BTS/BTR/BTC on memory; `write` false for BT.
    Bit {
        op: Bin,
        write: bool,
    },
    Setcc,
    PushM,
    PopM,
    Str(StrOp),
    /// Vector load of `width` bytes into the low bytes of a ZMM register; bytes
    /// `width..zero_to` are cleared; `align` is the required alignment (1 = none);
    /// `esize` is the element size of an EVEX opmask (0 = unmasked).
    VecLoad {
        width: u8,
        zero_to: u8,
        align: u8,
        esize: u8,
    },
    /// MOVLPS/MOVHPS/MOVLPD/MOVHPD load of 8 bytes into the low (`high` false) or high half
    /// of an XMM register; `vex`: the other half comes from a second source register and
    /// bits 128+ are cleared (VEX/EVEX), else the rest of the register is kept (SSE).
    HalfLoad {
        high: bool,
        vex: bool,
    },
    /// MOVLPS/MOVHPS/MOVLPD/MOVHPD store of the low or high 8 bytes of an XMM register.
    HalfStore {
        high: bool,
    },
    /// CMOVcc reg, [m]: the memory is always read; a 32-bit destination is zero-extended
    /// even when the condition is false.
    Cmov,
    /// IMUL reg, [m] (`three` false) or IMUL reg, [m], imm.
    Imul {
        three: bool,
    },
    /// One-operand MUL/IMUL [m] (RDX:RAX or AX).
    MulM {
        signed: bool,
    },
    /// MMX load (`MOVD`/`MOVQ mm, m`): `width` bytes zero-extended into MMn.
    MmxLoad,
    /// MMX store (`MOVD`/`MOVQ`/`MOVNTQ m, mm`).
    MmxStore,
    /// Vector store of the low `width` bytes of a ZMM register (`esize` as for loads).
    VecStore {
        width: u8,
        align: u8,
        esize: u8,
    },
}

/// A decoded, emulatable instruction: a small `Copy` value that can be cached per RIP.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    pub(crate) ins: Instruction,
    pub(crate) kind: Kind,
}

impl Decoded {
    /// Length of the instruction in bytes.
    pub fn len(&self) -> usize {
        self.ins.len()
    }

    /// Always false: a decoded instruction has at least one byte (for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The instruction's RIP.
    pub fn ip(&self) -> u64 {
        self.ins.ip()
    }

    /// For a string instruction whose elements each make at most one access, or a read
    /// then a write of the same value (`MOVS`, `STOS`, `LODS`, `SCAS`; not `CMPS`, whose
    /// two reads differ), the element width in bytes: a bus may log a run of its elements
    /// as one record (see [`crate::Bus::string_element_done`]).
    pub fn string_run_width(&self) -> Option<u8> {
        match self.kind {
            Kind::Str(StrOp::Movs | StrOp::Stos | StrOp::Lods | StrOp::Scas) => {
                Some(self.ins.memory_size().size() as u8)
            }
            _ => None,
        }
    }

    /// The mnemonic.
    pub fn mnemonic(&self) -> Mnemonic {
        self.ins.mnemonic()
    }

    /// Whether the instruction has a LOCK prefix (XCHG with memory is locked implicitly).
    pub fn is_locked(&self) -> bool {
        self.ins.has_lock_prefix() || self.kind == Kind::Xchg
    }

    /// The underlying iced-x86 instruction.
    pub fn instruction(&self) -> &Instruction {
        &self.ins
    }

    /// The memory accesses the instruction will make with the register values of `cpu`, in
    /// CPU order (for a string instruction: those of its first element; empty if a REP prefix
    /// meets RCX = 0). Lets the caller log width and address when it falls back to stepping.
    pub fn accesses<C: Cpu>(&self, cpu: &C) -> Accesses {
        crate::emulate::accesses(self, cpu)
    }
}

/// Decodes the instruction at the start of `bytes`, located at `rip`, and decides how to
/// emulate it. Never allocates or panics; `bytes` may be longer than the instruction.
pub fn decode(bytes: &[u8], rip: u64) -> Result<Decoded, Unsupported> {
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let ins = decoder.decode();
    if ins.is_invalid() {
        return Err(Unsupported::new(&ins, bytes, Reason::Invalid));
    }
    match classify(&ins) {
        Ok(kind) => Ok(Decoded { ins, kind }),
        Err(reason) => Err(Unsupported::new(&ins, bytes, reason)),
    }
}

fn is_gpr(r: Register) -> bool {
    (Register::AL as u32..=Register::R15 as u32).contains(&(r as u32))
}

fn is_vec(r: Register) -> bool {
    (Register::XMM0 as u32..=Register::ZMM31 as u32).contains(&(r as u32))
}

fn is_mmx(r: Register) -> bool {
    (Register::MM0 as u32..=Register::MM7 as u32).contains(&(r as u32))
}

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

fn alu_op(m: Mnemonic) -> Option<(Bin, bool)> {
    Some(match m {
        Mnemonic::Add => (Bin::Add, true),
        Mnemonic::Or => (Bin::Or, true),
        Mnemonic::Adc => (Bin::Adc, true),
        Mnemonic::Sbb => (Bin::Sbb, true),
        Mnemonic::And => (Bin::And, true),
        Mnemonic::Sub => (Bin::Sub, true),
        Mnemonic::Xor => (Bin::Xor, true),
        Mnemonic::Cmp => (Bin::Sub, false),
        Mnemonic::Test => (Bin::And, false),
        _ => return None,
    })
}

fn classify(ins: &Instruction) -> Result<Kind, Reason> {
    let m = ins.mnemonic();
    let n = ins.op_count();
    let k0 = ins.op0_kind();
    let k1 = if n > 1 {
        ins.op1_kind()
    } else {
        OpKind::Register
    };
    let r0 = if k0 == OpKind::Register {
        ins.op0_register()
    } else {
        Register::None
    };
    let r1 = if n > 1 && k1 == OpKind::Register {
        ins.op1_register()
    } else {
        Register::None
    };
    let mem0 = n >= 1 && k0 == OpKind::Memory;
    let mem1 = n >= 2 && k1 == OpKind::Memory;
    let size = ins.memory_size().size();

    // String instructions use the implicit [rsi]/[rdi] operand kinds.
    let strop = match m {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => Some(StrOp::Movs),
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => Some(StrOp::Stos),
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => Some(StrOp::Lods),
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => Some(StrOp::Cmps),
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => Some(StrOp::Scas),
        _ => None,
    };
    if let Some(op) = strop {
        let implicit = |k: OpKind| {
            matches!(
                k,
                OpKind::MemorySegESI
                    | OpKind::MemorySegRSI
                    | OpKind::MemoryESEDI
                    | OpKind::MemoryESRDI
            )
        };
        if (n >= 1 && implicit(k0)) || (n >= 2 && implicit(k1)) {
            return Ok(Kind::Str(op));
        }
        // MOVSD/CMPSD are also SSE mnemonics: fall through to the vector rules.
    }

    let gpr_pair = |mem_first: bool| {
        if mem_first {
            mem0 && n == 2 && is_gpr(r1)
        } else {
            mem1 && n == 2 && is_gpr(r0)
        }
    };

    let kind = match m {
        Mnemonic::Mov => {
            if gpr_pair(true) {
                Kind::Store { swap: false }
            } else if gpr_pair(false) {
                Kind::Load {
                    ext: Ext::None,
                    swap: false,
                }
            } else if mem0 && n == 2 && is_imm(k1) {
                Kind::StoreImm
            } else {
                return Err(none_or_not(ins));
            }
        }
        Mnemonic::Movzx if gpr_pair(false) => Kind::Load {
            ext: Ext::Zero,
            swap: false,
        },
        Mnemonic::Movsx | Mnemonic::Movsxd if gpr_pair(false) => Kind::Load {
            ext: Ext::Sign,
            swap: false,
        },
        Mnemonic::Movbe if gpr_pair(false) => Kind::Load {
            ext: Ext::None,
            swap: true,
        },
        Mnemonic::Movbe if gpr_pair(true) => Kind::Store { swap: true },
        Mnemonic::Movnti | Mnemonic::Movdiri if gpr_pair(true) => Kind::Store { swap: false },
        Mnemonic::Movdir64b if n == 2 && is_gpr(r0) && mem1 => Kind::Movdir64b,
        Mnemonic::Xlatb if n == 1 && mem0 => Kind::Xlat,
        Mnemonic::Xchg if gpr_pair(true) => Kind::Xchg,
        Mnemonic::Xchg if gpr_pair(false) => Kind::Xchg,
        Mnemonic::Cmpxchg if gpr_pair(true) => Kind::Cmpxchg,
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b if mem0 => Kind::CmpxchgWide,
        Mnemonic::Xadd if gpr_pair(true) => Kind::Xadd,
        Mnemonic::Inc if mem0 => Kind::Unary(Un::Inc),
        Mnemonic::Dec if mem0 => Kind::Unary(Un::Dec),
        Mnemonic::Not if mem0 => Kind::Unary(Un::Not),
        Mnemonic::Neg if mem0 => Kind::Unary(Un::Neg),
        Mnemonic::Rol
        | Mnemonic::Ror
        | Mnemonic::Rcl
        | Mnemonic::Rcr
        | Mnemonic::Shl
        | Mnemonic::Sal
        | Mnemonic::Shr
        | Mnemonic::Sar
            if mem0 && n == 2 && (k1 == OpKind::Immediate8 || r1 == Register::CL) =>
        {
            Kind::Shift(match m {
                Mnemonic::Rol => Bin::Rol,
                Mnemonic::Ror => Bin::Ror,
                Mnemonic::Rcl => Bin::Rcl,
                Mnemonic::Rcr => Bin::Rcr,
                Mnemonic::Shr => Bin::Shr,
                Mnemonic::Sar => Bin::Sar,
                _ => Bin::Shl,
            })
        }
        Mnemonic::Shld | Mnemonic::Shrd
            if mem0
                && n == 3
                && is_gpr(r1)
                && (ins.op2_kind() == OpKind::Immediate8
                    || (ins.op2_kind() == OpKind::Register
                        && ins.op2_register() == Register::CL)) =>
        {
            Kind::ShiftD {
                left: m == Mnemonic::Shld,
            }
        }
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
            if mem0 && n == 2 && (k1 == OpKind::Immediate8 || is_gpr(r1)) =>
        {
            let op = match m {
                Mnemonic::Bt => Bin::Bt,
                Mnemonic::Bts => Bin::Bts,
                Mnemonic::Btr => Bin::Btr,
                _ => Bin::Btc,
            };
            Kind::Bit {
                op,
                write: op != Bin::Bt,
            }
        }
        Mnemonic::Movhps
        | Mnemonic::Movhpd
        | Mnemonic::Movlps
        | Mnemonic::Movlpd
        | Mnemonic::Vmovhps
        | Mnemonic::Vmovhpd
        | Mnemonic::Vmovlps
        | Mnemonic::Vmovlpd => {
            let high = matches!(
                m,
                Mnemonic::Movhps | Mnemonic::Movhpd | Mnemonic::Vmovhps | Mnemonic::Vmovhpd
            );
            let vex = ins.encoding() != EncodingKind::Legacy;
            if size != 8 || ins.op_mask() != Register::None {
                return Err(Reason::NotEmulated);
            }
            if mem0 && n == 2 && is_vec(r1) {
                Kind::HalfStore { high }
            } else if (!vex && mem1 && n == 2 && is_vec(r0))
                || (vex && n == 3 && is_vec(r0) && is_vec(r1) && ins.op2_kind() == OpKind::Memory)
            {
                // SSE: `movhps xmm, m64`; VEX/EVEX: `vmovhps xmm1, xmm2, m64`.
                Kind::HalfLoad { high, vex }
            } else {
                return Err(none_or_not(ins));
            }
        }
        Mnemonic::Mul if n == 1 && mem0 => Kind::MulM { signed: false },
        Mnemonic::Imul if n == 1 && mem0 => Kind::MulM { signed: true },
        Mnemonic::Imul if gpr_pair(false) => Kind::Imul { three: false },
        Mnemonic::Imul if n == 3 && mem1 && is_gpr(r0) && is_imm(ins.op2_kind()) => {
            Kind::Imul { three: true }
        }
        _ if mem1 && n == 2 && is_gpr(r0) && is_cmov(m) => Kind::Cmov,
        Mnemonic::Push if n == 1 && mem0 => Kind::PushM,
        Mnemonic::Pop if n == 1 && mem0 => Kind::PopM,
        _ if mem0
            && n == 1
            && ins.condition_code() != iced_x86::ConditionCode::None
            && is_setcc(m) =>
        {
            Kind::Setcc
        }
        _ => {
            if let Some((op, write)) = alu_op(m) {
                if mem0 && n == 2 && (is_gpr(r1) || is_imm(k1)) {
                    Kind::AluMem { op, write }
                } else if gpr_pair(false) && m != Mnemonic::Test {
                    Kind::AluReg { op, write }
                } else {
                    return Err(none_or_not(ins));
                }
            } else if let Some(k) = classify_vec(ins, m, n, r0, r1, mem0, mem1, size)? {
                k
            } else {
                return Err(none_or_not(ins));
            }
        }
    };
    // The recipes rely on these widths (shift amounts, masks); anything else is refused here
    // rather than trusted later.
    let width_ok = match kind {
        Kind::CmpxchgWide => matches!(size, 8 | 16),
        Kind::Movdir64b => size == 64,
        Kind::Xlat => size == 1,
        Kind::VecLoad { .. } | Kind::VecStore { .. } => true, // checked in classify_vec
        Kind::MmxLoad | Kind::MmxStore => matches!(size, 4 | 8),
        Kind::HalfLoad { .. } | Kind::HalfStore { .. } => size == 8,
        Kind::Bit { .. } | Kind::ShiftD { .. } | Kind::Cmov | Kind::Imul { .. } => {
            matches!(size, 2 | 4 | 8)
        }
        _ => matches!(size, 1 | 2 | 4 | 8),
    };
    if !width_ok {
        return Err(Reason::NotEmulated);
    }
    Ok(kind)
}

fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

fn is_memory_kind(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Memory
            | OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemorySegDI
            | OpKind::MemorySegEDI
            | OpKind::MemorySegRDI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI
    )
}

fn is_cmov(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

fn none_or_not(ins: &Instruction) -> Reason {
    let has_mem = (0..ins.op_count()).any(|i| is_memory_kind(ins.op_kind(i)));
    if has_mem {
        Reason::NotEmulated
    } else {
        Reason::NoMemoryOperand
    }
}

#[allow(clippy::too_many_arguments)]
fn classify_vec(
    ins: &Instruction,
    m: Mnemonic,
    n: u32,
    r0: Register,
    r1: Register,
    mem0: bool,
    mem1: bool,
    size: usize,
) -> Result<Option<Kind>, Reason> {
    use Mnemonic as M;
    // (scalar-with-zeroing in legacy form, needs alignment)
    let (scalar, aligned) = match m {
        M::Movd
        | M::Movq
        | M::Movntq
        | M::Movss
        | M::Movsd
        | M::Vmovd
        | M::Vmovq
        | M::Vmovss
        | M::Vmovsd => (true, false),
        M::Movups
        | M::Movupd
        | M::Movdqu
        | M::Lddqu
        | M::Vmovups
        | M::Vmovupd
        | M::Vmovdqu
        | M::Vmovdqu8
        | M::Vmovdqu16
        | M::Vmovdqu32
        | M::Vmovdqu64
        | M::Vlddqu => (false, false),
        M::Movaps
        | M::Movapd
        | M::Movdqa
        | M::Movntdq
        | M::Movntdqa
        | M::Movntps
        | M::Movntpd
        | M::Vmovaps
        | M::Vmovapd
        | M::Vmovdqa
        | M::Vmovdqa32
        | M::Vmovdqa64
        | M::Vmovntdq
        | M::Vmovntdqa
        | M::Vmovntps
        | M::Vmovntpd => (false, true),
        _ => return Ok(None),
    };
    if n != 2 || !matches!(size, 4 | 8 | 16 | 32 | 64) {
        return Err(Reason::NotEmulated);
    }
    let width = size as u8;
    let align = if aligned { width } else { 1 };
    let legacy = ins.encoding() == EncodingKind::Legacy;
    // EVEX opmask: element-wise merge/zero on loads, only enabled elements stored.
    let esize = if ins.encoding() == EncodingKind::EVEX && ins.op_mask() != Register::None {
        let maskable = matches!(
            m,
            M::Vmovss
                | M::Vmovsd
                | M::Vmovups
                | M::Vmovupd
                | M::Vmovaps
                | M::Vmovapd
                | M::Vmovdqu8
                | M::Vmovdqu16
                | M::Vmovdqu32
                | M::Vmovdqu64
                | M::Vmovdqa32
                | M::Vmovdqa64
        );
        let e = ins.memory_size().element_size();
        if !maskable || !matches!(e, 1 | 2 | 4 | 8) || (mem0 && ins.zeroing_masking()) {
            return Err(Reason::Masked);
        }
        e as u8
    } else {
        0
    };
    if mem1 && is_vec(r0) {
        let zero_to = if !legacy {
            64
        } else if scalar {
            16
        } else {
            width
        };
        Ok(Some(Kind::VecLoad {
            width,
            zero_to,
            align,
            esize,
        }))
    } else if mem0 && is_vec(r1) {
        Ok(Some(Kind::VecStore {
            width,
            align,
            esize,
        }))
    } else if mem1 && is_mmx(r0) && matches!(size, 4 | 8) {
        Ok(Some(Kind::MmxLoad))
    } else if mem0 && is_mmx(r1) && matches!(size, 4 | 8) {
        Ok(Some(Kind::MmxStore))
    } else if mem0 || mem1 {
        Err(Reason::NotEmulated)
    } else {
        Err(Reason::NoMemoryOperand)
    }
}
