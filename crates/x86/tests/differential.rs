//! Differential tests: every supported instruction form runs natively on an ordinary page and
//! emulated on a copy, from the same random registers and memory. Registers, flags, vector
//! state and memory must be identical, and the bus must have seen exactly the access list the
//! CPU makes (width, address, direction, order, once). Case counts per class are printed and
//! asserted, so a class cannot silently run zero cases.

mod harness;

use harness::{
    reg_n, seg_bases, vec_equal, vec_level, x87_equal, Native, Regs, Rng, Seen, TestBus, VecLevel,
    DATA_LEN, PAGE,
};
use iced_x86::{
    Code, CpuidFeature, Encoder, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K,
    Register, RepPrefixKind,
};
use mmio_trace_x86::{decode, emulate};

/// Cases per instruction class (override with MMIO_X86_CASES).
fn cases() -> usize {
    std::env::var("MMIO_X86_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000)
}

fn cpu_has(f: CpuidFeature) -> bool {
    use CpuidFeature as F;
    match f {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 | F::CMOV => {
            true
        }
        F::SSE | F::SSE2 | F::MMX => true,
        F::SSE3 => std::is_x86_feature_detected!("sse3"),
        F::SSE4_1 => std::is_x86_feature_detected!("sse4.1"),
        F::AVX => std::is_x86_feature_detected!("avx"),
        F::AVX2 => std::is_x86_feature_detected!("avx2"),
        F::AVX512F => std::is_x86_feature_detected!("avx512f"),
        F::AVX512VL => std::is_x86_feature_detected!("avx512vl"),
        F::AVX512BW => std::is_x86_feature_detected!("avx512bw"),
        F::MOVBE => std::is_x86_feature_detected!("movbe"),
        F::CMPXCHG16B => std::is_x86_feature_detected!("cmpxchg16b"),
        F::CX8 => true,
        F::MOVDIRI => cpuid7_ecx() & (1 << 27) != 0,
        F::MOVDIR64B => cpuid7_ecx() & (1 << 28) != 0,
        _ => false,
    }
}

/// CPUID.(EAX=7,ECX=0):ECX, where MOVDIRI/MOVDIR64B are reported (std has no names for them).
fn cpuid7_ecx() -> u32 {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU and has no side effects.
    unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.ecx
}

fn is_mem_kind(k: K) -> bool {
    matches!(
        k,
        K::mem
            | K::mem_offs
            | K::mm_or_mem
            | K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
            | K::zmm_or_mem
    )
}

/// All 64-bit-mode encodings of `mnemonics` that have a memory operand we can generate and
/// that this CPU runs.
fn codes_for(mnemonics: &[Mnemonic]) -> Vec<Code> {
    codes_for_cpu(mnemonics, true)
}

fn codes_for_cpu(mnemonics: &[Mnemonic], this_cpu: bool) -> Vec<Code> {
    Code::values()
        .filter(|c| mnemonics.contains(&c.mnemonic()))
        .filter(|c| !this_cpu || c.cpuid_features().iter().all(|f| cpu_has(*f)))
        .filter(|c| {
            let oc = c.op_code();
            oc.is_instruction()
                && oc.mode64()
                && oc.op_kinds().iter().any(|k| is_mem_kind(*k))
                && oc.op_kinds().iter().all(|k| {
                    is_mem_kind(*k)
                        || matches!(
                            k,
                            K::r8_reg
                                | K::r8_opcode
                                | K::r16_reg
                                | K::r16_opcode
                                | K::r32_reg
                                | K::r32_opcode
                                | K::r64_reg
                                | K::r32_reg_mem
                                | K::r64_reg_mem
                                | K::mm_reg
                                | K::xmm_vvvv
                                | K::r64_opcode
                                | K::xmm_reg
                                | K::ymm_reg
                                | K::zmm_reg
                                | K::imm8
                                | K::imm8sex16
                                | K::imm8sex32
                                | K::imm8sex64
                                | K::imm16
                                | K::imm32
                                | K::imm32sex64
                                | K::imm8_const_1
                                | K::cl
                                | K::al
                                | K::ax
                                | K::eax
                                | K::rax
                        )
                })
        })
        .collect()
}

/// How the CPU accesses memory for a class (the oracle for the bus log).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    /// Read or write depending on which operand is memory (moves).
    Move,
    Read,
    Write,
    ReadWrite,
    Push,
    Pop,
    /// BT*: like Read/ReadWrite, at the word holding the bit.
    Bit {
        write: bool,
    },
    /// MOVDIR64B: 64-byte read of the source, then 64-byte write to es:[reg].
    Movdir64b,
}

struct Class {
    name: &'static str,
    mnemonics: &'static [Mnemonic],
    pattern: Pattern,
}

const LOCKABLE: &[Mnemonic] = &[
    Mnemonic::Add,
    Mnemonic::Or,
    Mnemonic::Adc,
    Mnemonic::Sbb,
    Mnemonic::And,
    Mnemonic::Sub,
    Mnemonic::Xor,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Not,
    Mnemonic::Neg,
    Mnemonic::Xchg,
    Mnemonic::Cmpxchg,
    Mnemonic::Cmpxchg8b,
    Mnemonic::Cmpxchg16b,
    Mnemonic::Xadd,
    Mnemonic::Bts,
    Mnemonic::Btr,
    Mnemonic::Btc,
];

/// Mnemonics whose memory operand must be aligned to its size (else #GP).
const ALIGNED: &[Mnemonic] = &[
    Mnemonic::Movaps,
    Mnemonic::Movapd,
    Mnemonic::Movdqa,
    Mnemonic::Movntdq,
    Mnemonic::Movntdqa,
    Mnemonic::Movntps,
    Mnemonic::Movntpd,
    Mnemonic::Vmovaps,
    Mnemonic::Vmovapd,
    Mnemonic::Vmovdqa,
    Mnemonic::Vmovdqa32,
    Mnemonic::Vmovdqa64,
    Mnemonic::Vmovntdq,
    Mnemonic::Vmovntdqa,
    Mnemonic::Vmovntps,
    Mnemonic::Vmovntpd,
    Mnemonic::Cmpxchg16b,
];

/// Byte offset in the data area where the stack (RSP) lives for PUSH/POP cases.
const STACK_AT: u64 = (DATA_LEN - 256) as u64;

struct Ctx {
    native: Native,
    rng: Rng,
    fs: u64,
    gs: u64,
    level: VecLevel,
    enc: Encoder,
    modes: [usize; MODES.len()],
    /// The CPU lacks the instruction: compare against a written-out oracle instead.
    oracle_only: bool,
}

/// Addressing-mode and encoding features counted per class, so the output shows that every
/// mode was exercised (and the suite asserts the ones every class must hit).
const MODES: [&str; 14] = [
    "sib-index",
    "rip-rel",
    "abs-disp32",
    "moffs64",
    "fs:",
    "gs:",
    "addr32",
    "rex/ext-reg",
    "high-byte",
    "lock",
    "page-straddle",
    "no-disp",
    "opmask",
    "zero-mask",
];

fn count_modes(modes: &mut [usize; MODES.len()], ins: &iced_x86::Instruction, straddle: bool) {
    let base = ins.memory_base();
    let mut hit = |i: usize, on: bool| {
        if on {
            modes[i] += 1;
        }
    };
    hit(0, ins.memory_index() != Register::None);
    hit(1, base == Register::RIP);
    let moffs = matches!(
        ins.code(),
        Code::Mov_AL_moffs8
            | Code::Mov_AX_moffs16
            | Code::Mov_EAX_moffs32
            | Code::Mov_RAX_moffs64
            | Code::Mov_moffs8_AL
            | Code::Mov_moffs16_AX
            | Code::Mov_moffs32_EAX
            | Code::Mov_moffs64_RAX
    );
    hit(
        2,
        !moffs && base == Register::None && ins.memory_index() == Register::None,
    );
    hit(3, moffs);
    hit(4, ins.segment_prefix() == Register::FS);
    hit(5, ins.segment_prefix() == Register::GS);
    hit(6, base.is_gpr32() || ins.memory_index().is_gpr32());
    let regs = (0..ins.op_count())
        .filter(|i| ins.op_kind(*i) == iced_x86::OpKind::Register)
        .map(|i| ins.op_register(i));
    let mut ext = false;
    let mut high = false;
    for r in regs.chain([base, ins.memory_index()]) {
        if r == Register::None || r == Register::RIP {
            continue;
        }
        ext |= r.number() >= 8
            || (r.is_gpr8()
                && matches!(
                    r,
                    Register::SPL | Register::BPL | Register::SIL | Register::DIL
                ))
            || r.is_gpr64();
        high |= matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    }
    hit(7, ext);
    hit(8, high);
    hit(9, ins.has_lock_prefix());
    hit(10, straddle);
    hit(
        11,
        ins.memory_displ_size() == 0 && base != Register::None && base != Register::RIP,
    );
    hit(12, ins.op_mask() != Register::None);
    hit(13, ins.zeroing_masking());
}

impl Ctx {
    fn new(seed: u64) -> Self {
        let (fs, gs) = seg_bases();
        Ctx {
            native: Native::new(),
            rng: Rng::new(seed),
            fs,
            gs,
            level: vec_level(),
            enc: Encoder::new(64),
            modes: [0; MODES.len()],
            oracle_only: false,
        }
    }

    fn random_regs(&mut self) -> Regs {
        let mut r = Regs::zeroed();
        for g in r.gpr.iter_mut() {
            *g = self.rng.next();
        }
        // Random arithmetic flags and DF; IF and bit 1 as the CPU shows them.
        r.rflags = 0x202 | (self.rng.next() & 0x8d5) | if self.rng.chance(4) { 0x400 } else { 0 };
        r.gpr[4] = self.native.data_base() + STACK_AT - self.rng.below(64);
        r.fs_base = self.fs;
        r.gs_base = self.gs;
        for z in r.zmm.iter_mut() {
            self.rng.fill(z);
        }
        for k in r.k.iter_mut() {
            *k = self.rng.next();
        }
        // x87/MMX: random TOP, tags and registers, so MMn aliasing and the TOP rotation of
        // MMX instructions are exercised.
        let fsw = (self.rng.below(8) as u16) << 11;
        r.fx[2..4].copy_from_slice(&fsw.to_le_bytes());
        r.fx[4] = self.rng.next() as u8;
        for i in 0..8 {
            let mut st = [0u8; 10];
            self.rng.fill(&mut st);
            r.fx[32 + 16 * i..42 + 16 * i].copy_from_slice(&st);
        }
        r
    }

    fn gpr(&mut self, first: Register, allow_high: bool) -> Register {
        loop {
            let i = self.rng.below(if first == Register::AL && allow_high {
                20
            } else {
                16
            }) as usize;
            // Never RSP/ESP/SP/SPL as a data register: the stack must stay valid.
            let r = if first == Register::AL {
                // AL..BL, AH..BH, SPL..R15L
                if i < 8 {
                    reg_n(Register::AL, i)
                } else {
                    reg_n(Register::SPL, i - 8)
                }
            } else {
                reg_n(first, i)
            };
            if !matches!(
                r,
                Register::SPL | Register::SP | Register::ESP | Register::RSP
            ) {
                return r;
            }
        }
    }
}

/// A memory operand aimed at `target` (a linear address in the data area) plus the register
/// values that make it so.
struct Aim {
    mem: MemoryOperand,
    fix: Vec<(usize, u64)>,
}

fn aim(ctx: &mut Ctx, target: u64, moffs: bool, rsp_base: Option<u64>) -> Aim {
    let rng = &mut ctx.rng;
    let seg = match rng.below(6) {
        0 => Register::FS,
        1 => Register::GS,
        _ => Register::None,
    };
    let segbase = match seg {
        Register::FS => ctx.fs,
        Register::GS => ctx.gs,
        _ => 0,
    };
    if moffs {
        return Aim {
            mem: MemoryOperand::new(
                Register::None,
                Register::None,
                1,
                target.wrapping_sub(segbase) as i64,
                8,
                false,
                seg,
            ),
            fix: vec![],
        };
    }
    let mode = rng.below(10);
    if mode == 0 {
        // RIP-relative: the encoder turns the absolute target into a displacement.
        return Aim {
            mem: MemoryOperand::new(
                Register::RIP,
                Register::None,
                1,
                target.wrapping_sub(segbase) as i64,
                4,
                false,
                seg,
            ),
            fix: vec![],
        };
    }
    if mode == 1 && segbase == 0 {
        // Absolute disp32 (SIB, no base): the data area is below 2 GiB.
        return Aim {
            mem: MemoryOperand::new(
                Register::None,
                Register::None,
                1,
                target as i64,
                4,
                false,
                seg,
            ),
            fix: vec![],
        };
    }
    let a32 = mode == 2 && segbase == 0;
    let pick = |rng: &mut Rng, avoid: Option<usize>| loop {
        let i = rng.below(16) as usize;
        if i != 4 && Some(i) != avoid {
            return i;
        }
    };
    let base_i = if rsp_base.is_some() {
        4
    } else {
        pick(rng, None)
    };
    let use_index = rng.chance(2);
    let index_i = if use_index {
        Some(pick(rng, Some(base_i)))
    } else {
        None
    };
    let scale = [1u32, 2, 4, 8][rng.below(4) as usize];
    let disp: i64 = match rng.below(3) {
        0 => 0,
        1 => rng.below(256) as i64 - 128,
        _ => rng.below(0x20000) as i64 - 0x10000,
    };
    let mut fix = vec![];
    let mut sum = target.wrapping_sub(segbase).wrapping_sub(disp as u64);
    let reg = |i: usize| {
        if a32 {
            reg_n(Register::EAX, i)
        } else {
            reg_n(Register::RAX, i)
        }
    };
    let mut index = Register::None;
    if let Some(ii) = index_i {
        let v = rng.below(512).wrapping_sub(256);
        let full = if a32 {
            (rng.next() << 32) | (v & 0xffff_ffff)
        } else {
            v
        };
        fix.push((ii, full));
        sum = sum.wrapping_sub(v.wrapping_mul(scale as u64));
        index = reg(ii);
    }
    let mut disp = disp;
    if let Some(rsp) = rsp_base {
        // Base is RSP (value fixed by the caller): fold the remainder into the displacement.
        disp = disp.wrapping_add(sum.wrapping_sub(rsp) as i64);
    } else if a32 {
        fix.push((base_i, (rng.next() << 32) | (sum & 0xffff_ffff)));
    } else {
        fix.push((base_i, sum));
    }
    let displ_size = if disp == 0 && rng.chance(2) {
        0
    } else if (-128..128).contains(&disp) {
        1
    } else {
        4
    };
    Aim {
        mem: MemoryOperand::new(reg(base_i), index, scale, disp, displ_size, false, seg),
        fix,
    }
}

/// Expected bus log, checked against what the emulator's bus saw.
fn expect(
    seen: &[Seen],
    want: &[(bool, u64, usize)],
    before: &[u8],
    after: &[u8],
    base: u64,
) -> Result<(), String> {
    let got: Vec<(bool, u64, usize)> = seen
        .iter()
        .map(|s| (s.write, s.addr, s.data.len()))
        .collect();
    if got != want {
        return Err(format!("bus log {got:x?} want {want:x?}"));
    }
    // Reads must return memory as it was (before any write of this instruction to it).
    let mut shadow = before.to_vec();
    for s in seen {
        let off = (s.addr - base) as usize;
        let slot = &mut shadow[off..off + s.data.len()];
        if s.write {
            slot.copy_from_slice(&s.data);
        } else if slot != &s.data[..] {
            return Err(format!(
                "read at {:#x} returned {:x?}, memory held {:x?}",
                s.addr, s.data, slot
            ));
        }
    }
    if shadow != after {
        return Err("bus writes do not explain the final memory".into());
    }
    Ok(())
}

/// Generates, runs natively, emulates and compares one case of `code`. Returns Ok(false) when
/// the random choice could not be encoded (retry), Err on a mismatch.
fn one_case(ctx: &mut Ctx, code: Code, pattern: Pattern) -> Result<bool, String> {
    let oc = code.op_code();
    let mnemonic = code.mnemonic();
    let data_base = ctx.native.data_base();
    let mut regs = ctx.random_regs();
    let mut data = vec![0u8; DATA_LEN];
    ctx.rng.fill(&mut data);
    let mem_size = {
        let ms = oc.memory_size().size();
        if ms == 0 {
            8
        } else {
            ms
        }
    } as u64;
    // Target: anywhere in the data area, sometimes straddling the page boundary in its middle.
    let margin = 576u64;
    let mut target = if ctx.rng.chance(6) {
        PAGE as u64 - 1 - ctx.rng.below(mem_size.max(2) - 1)
    } else {
        margin + ctx.rng.below(DATA_LEN as u64 - 2 * margin - mem_size - 300)
    };
    if ALIGNED.contains(&mnemonic) || ctx.rng.chance(3) {
        target &= !(mem_size.next_power_of_two() - 1);
    }
    let target = data_base + target;
    let rsp = regs.gpr[4];
    let rsp_base = if matches!(pattern, Pattern::Push | Pattern::Pop) && ctx.rng.chance(4) {
        Some(if pattern == Pattern::Pop {
            rsp + mem_size
        } else {
            rsp
        })
    } else {
        None
    };
    let moffs = oc.op_kinds().contains(&K::mem_offs);
    let a = aim(ctx, target, moffs, rsp_base);
    let mut ops: Vec<OpV> = vec![];
    for (i, k) in oc.op_kinds().iter().enumerate() {
        let _ = i;
        let rng = &mut ctx.rng;
        let v = match *k {
            k if is_mem_kind(k) => OpV::M(a.mem),
            K::r8_reg | K::r8_opcode => OpV::R(ctx.gpr(Register::AL, true)),
            K::r16_reg | K::r16_opcode => OpV::R(ctx.gpr(Register::AX, false)),
            K::r32_reg | K::r32_opcode | K::r32_reg_mem => OpV::R(ctx.gpr(Register::EAX, false)),
            K::r64_reg | K::r64_opcode | K::r64_reg_mem => OpV::R(ctx.gpr(Register::RAX, false)),
            K::mm_reg => OpV::R(reg_n(Register::MM0, rng.below(8) as usize)),
            K::xmm_reg | K::ymm_reg | K::zmm_reg | K::xmm_vvvv => {
                let n = if code.encoding() == iced_x86::EncodingKind::EVEX {
                    32
                } else {
                    16
                };
                let first = match *k {
                    K::xmm_reg | K::xmm_vvvv => Register::XMM0,
                    K::ymm_reg => Register::YMM0,
                    _ => Register::ZMM0,
                };
                OpV::R(reg_n(first, rng.below(n) as usize))
            }
            K::imm8 | K::imm16 | K::imm32 => {
                let bits = match *k {
                    K::imm8 => 8,
                    K::imm16 => 16,
                    _ => 32,
                };
                let mut v = rng.next() & ((1u64 << bits) - 1);
                if rng.chance(3) {
                    v &= 0x3f; // small shift counts and bit offsets matter most
                }
                OpV::U(v as u32)
            }
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => OpV::I(rng.below(256) as i32 - 128),
            K::imm32sex64 => OpV::I(rng.next() as i32),
            K::imm8_const_1 => OpV::U(1),
            K::cl => OpV::R(Register::CL),
            K::al => OpV::R(Register::AL),
            K::ax => OpV::R(Register::AX),
            K::eax => OpV::R(Register::EAX),
            K::rax => OpV::R(Register::RAX),
            _ => return Ok(false),
        };
        ops.push(v);
    }
    let mut ins = match build(code, &ops) {
        Some(i) => i,
        None => return Ok(false),
    };
    if LOCKABLE.contains(&mnemonic)
        && ops.first().is_some_and(|o| matches!(o, OpV::M(_)))
        && ctx.rng.chance(2)
    {
        ins.set_has_lock_prefix(true);
    }
    // EVEX opmask (merge- or zero-masking) on half of the maskable cases.
    let mem_is_op0 = matches!(ops.first(), Some(OpV::M(_)));
    let mut kreg = None;
    if code.encoding() == iced_x86::EncodingKind::EVEX
        && oc.can_use_op_mask_register()
        && ctx.rng.chance(2)
    {
        let k = 1 + ctx.rng.below(7) as usize;
        ins.set_op_mask(reg_n(Register::K0, k));
        if !mem_is_op0 && oc.can_use_zeroing_masking() && ctx.rng.chance(2) {
            ins.set_zeroing_masking(true);
        }
        kreg = Some(k);
    }
    let rip = ctx.native.slot_addr();
    let _ = ctx.enc.take_buffer(); // a failed encode may leave bytes behind
    let len = match ctx.enc.encode(&ins, rip) {
        Ok(n) => n,
        Err(_) => return Ok(false),
    };
    let bytes = ctx.enc.take_buffer();
    debug_assert_eq!(bytes.len(), len);
    for (i, v) in &a.fix {
        regs.gpr[*i] = *v;
    }
    if rsp_base.is_none()
        && matches!(pattern, Pattern::Push | Pattern::Pop)
        && a.fix.iter().any(|(i, _)| *i == 4)
    {
        return Ok(false);
    }
    // Instruction-specific register shaping, so both outcomes of compares get exercised.
    let toff = (target - data_base) as usize;
    let rd = |n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&data[toff..toff + n]);
        u64::from_le_bytes(b)
    };
    let mut movdir_dst = 0u64;
    match mnemonic {
        Mnemonic::Movdir64b => {
            if let Some(OpV::R(r)) = ops.first() {
                let n = r.full_register() as usize - Register::RAX as usize;
                movdir_dst = data_base + 64 * (1 + ctx.rng.below(DATA_LEN as u64 / 64 - 2));
                // With a 32-bit address register the upper half must not matter.
                let junk = if r.size() == 4 {
                    ctx.rng.next() << 32
                } else {
                    0
                };
                regs.gpr[n] = movdir_dst | junk;
            }
        }
        Mnemonic::Cmpxchg if ctx.rng.chance(2) => {
            regs.gpr[0] = rd(mem_size as usize);
        }
        Mnemonic::Cmpxchg8b if ctx.rng.chance(2) => {
            regs.gpr[0] = rd(4) | (ctx.rng.next() << 32);
            regs.gpr[2] = (rd(8) >> 32) | (ctx.rng.next() << 32);
        }
        Mnemonic::Cmpxchg16b if ctx.rng.chance(2) => {
            regs.gpr[0] = rd(8);
            regs.gpr[2] = u64::from_le_bytes(data[toff + 8..toff + 16].try_into().unwrap());
        }
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
            // Keep register bit offsets within +-256 bytes so the word stays in the data area.
            if let Some(OpV::R(r)) = ops.get(1) {
                let full = r.full_register();
                let n = full as usize - Register::RAX as usize;
                let off = ctx.rng.below(4096) as i64 - 2048;
                regs.gpr[n] = (regs.gpr[n] & !0xffff) | (off as u64 & 0xffff);
                if r.size() >= 4 {
                    regs.gpr[n] = off as u64
                        | if r.size() == 4 {
                            regs.gpr[n] & 0xffff_ffff_0000_0000
                        } else {
                            0
                        };
                }
                if r.size() == 4 {
                    regs.gpr[n] =
                        (regs.gpr[n] & 0xffff_ffff_0000_0000) | (off as u64 & 0xffff_ffff);
                }
            }
        }
        _ => {}
    }
    // A data register may also be an address register: re-apply the address fix-ups and
    // skip cases where they collide.
    for (i, v) in &a.fix {
        if regs.gpr[*i] != *v {
            return Ok(false);
        }
    }
    regs.rip = rip;
    if let Some(k) = kreg {
        // Edge masks matter: none, all, and sparse patterns.
        regs.k[k] = match ctx.rng.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => ctx.rng.next(),
        };
    }

    let (native_regs, native_mem) = if ctx.oracle_only {
        // MOVDIRI / MOVDIR64B on a CPU without them: the SDM's effect, written out.
        let mut mem = data.clone();
        let t = (target - data_base) as usize;
        if mnemonic == Mnemonic::Movdir64b {
            let d = (movdir_dst - data_base) as usize;
            let src: Vec<u8> = data[t..t + 64].to_vec();
            mem[d..d + 64].copy_from_slice(&src);
        } else if let Some(OpV::R(r)) = ops.get(1) {
            let v = regs.gpr[r.full_register() as usize - Register::RAX as usize];
            mem[t..t + r.size()].copy_from_slice(&v.to_le_bytes()[..r.size()]);
        }
        (regs, mem)
    } else {
        ctx.native.run(&bytes, &regs, &data)
    };

    let d = decode(&bytes, rip).map_err(|u| format!("decode refused: {u:?}"))?;
    let mut emu = regs;
    let mut bus = TestBus {
        base: data_base,
        mem: data.clone(),
        log: vec![],
    };
    let predicted = d.accesses(&regs);
    emulate(&d, &mut emu, &mut bus).map_err(|e| format!("emulate failed: {e:?}"))?;
    let mut want_native = native_regs;
    want_native.rip = rip + bytes.len() as u64;
    let ctxmsg = || format!("{code:?} bytes {bytes:02x?}\n  before {regs:?}");
    if emu.gpr != want_native.gpr || emu.rflags != want_native.rflags || emu.rip != want_native.rip
    {
        return Err(format!(
            "{}\n  native {want_native:?}\n  emu    {emu:?}",
            ctxmsg()
        ));
    }
    if !vec_equal(ctx.level, &emu, &want_native) {
        return Err(format!("{}\n  vector registers differ", ctxmsg()));
    }
    if !ctx.oracle_only && !x87_equal(&emu, &want_native) {
        return Err(format!(
            "{}\n  x87/MMX state differs\n  native {:02x?}\n  emu    {:02x?}",
            ctxmsg(),
            &want_native.fx[..160],
            &emu.fx[..160]
        ));
    }
    if bus.mem != native_mem {
        let first = bus
            .mem
            .iter()
            .zip(native_mem.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "{}\n  memory differs first at +{first:#x}",
            ctxmsg()
        ));
    }
    // The oracle for the access list: derived from the instruction form, not the emulator.
    let size = d.instruction().memory_size().size();
    let want: Vec<(bool, u64, usize)> = match pattern {
        Pattern::Move if kreg.is_some() => {
            // Masked: each run of enabled elements is one access; nothing else is touched.
            let e = d.instruction().memory_size().element_size();
            let mask = regs.k[kreg.unwrap_or(0)];
            let mut v = vec![];
            let mut i = 0;
            while i < size / e {
                if mask >> i & 1 == 1 {
                    let from = i;
                    while i < size / e && mask >> i & 1 == 1 {
                        i += 1;
                    }
                    v.push((mem_is_op0, target + (from * e) as u64, (i - from) * e));
                } else {
                    i += 1;
                }
            }
            v
        }
        Pattern::Move => vec![(mem_is_op0, target, size)],
        Pattern::Read => vec![(false, target, size)],
        Pattern::Write => vec![(true, target, size)],
        Pattern::ReadWrite => {
            if mem_is_op0 || matches!(mnemonic, Mnemonic::Xchg) {
                vec![(false, target, size), (true, target, size)]
            } else {
                vec![(false, target, size)] // ALU reg, [m]
            }
        }
        Pattern::Push => vec![(false, target, size), (true, rsp - size as u64, size)],
        Pattern::Pop => vec![(false, rsp, size), (true, target, size)],
        Pattern::Movdir64b => vec![(false, target, 64), (true, movdir_dst, 64)],
        Pattern::Bit { write } => {
            let bits = size as i64 * 8;
            let word = match ops.get(1) {
                Some(OpV::R(r)) => {
                    let v = regs.gpr[r.full_register() as usize - Register::RAX as usize];
                    let off = match size {
                        2 => v as u16 as i16 as i64,
                        4 => v as u32 as i32 as i64,
                        _ => v as i64,
                    };
                    off.div_euclid(bits) * size as i64
                }
                _ => 0,
            };
            let t = target.wrapping_add(word as u64);
            if write {
                vec![(false, t, size), (true, t, size)]
            } else {
                vec![(false, t, size)]
            }
        }
    };
    expect(&bus.log, &want, &data, &bus.mem, data_base)
        .map_err(|e| format!("{}\n  {e}", ctxmsg()))?;
    let pred: Vec<(bool, u64, usize)> = predicted
        .as_slice()
        .iter()
        .flat_map(|a| {
            let s = a.size as usize;
            match a.dir {
                mmio_trace_x86::AccessDir::Read => vec![(false, a.addr, s)],
                mmio_trace_x86::AccessDir::Write => vec![(true, a.addr, s)],
                mmio_trace_x86::AccessDir::ReadWrite => vec![(false, a.addr, s), (true, a.addr, s)],
            }
        })
        .collect();
    if pred != want && kreg.is_none() {
        return Err(format!(
            "{}\n  Decoded::accesses {pred:x?} want {want:x?}",
            ctxmsg()
        ));
    }
    let straddle = (target & !0xfff) != ((target + size as u64 - 1) & !0xfff);
    count_modes(&mut ctx.modes, d.instruction(), straddle);
    Ok(true)
}

#[derive(Clone, Copy, Debug)]
enum OpV {
    M(MemoryOperand),
    R(Register),
    U(u32),
    I(i32),
}

fn build(code: Code, ops: &[OpV]) -> Option<Instruction> {
    let mut ins = Instruction::default();
    ins.set_code(code);
    for (i, o) in ops.iter().enumerate() {
        let i = i as u32;
        match *o {
            OpV::R(r) => {
                ins.set_op_kind(i, iced_x86::OpKind::Register);
                ins.set_op_register(i, r);
            }
            OpV::M(m) => {
                ins.set_op_kind(i, iced_x86::OpKind::Memory);
                ins.set_memory_base(m.base);
                ins.set_memory_index(m.index);
                ins.set_memory_index_scale(m.scale);
                ins.set_memory_displacement64(m.displacement as u64);
                ins.set_memory_displ_size(m.displ_size);
                ins.set_segment_prefix(m.segment_prefix);
            }
            OpV::U(v) => {
                let (kind, set) = imm_kind(code, i)?;
                ins.set_op_kind(i, kind);
                set(&mut ins, v as u64);
            }
            OpV::I(v) => {
                let (kind, set) = imm_kind(code, i)?;
                ins.set_op_kind(i, kind);
                set(&mut ins, v as i64 as u64);
            }
        }
    }
    Some(ins)
}

type ImmSet = fn(&mut Instruction, u64);

fn imm_kind(code: Code, op: u32) -> Option<(iced_x86::OpKind, ImmSet)> {
    use iced_x86::OpKind as O;
    Some(match code.op_code().op_kind(op) {
        K::imm8 | K::imm8_const_1 => (O::Immediate8, |i, v| i.set_immediate8(v as u8)),
        K::imm16 => (O::Immediate16, |i, v| i.set_immediate16(v as u16)),
        K::imm32 => (O::Immediate32, |i, v| i.set_immediate32(v as u32)),
        K::imm8sex16 => (O::Immediate8to16, |i, v| i.set_immediate8(v as u8)),
        K::imm8sex32 => (O::Immediate8to32, |i, v| i.set_immediate8(v as u8)),
        K::imm8sex64 => (O::Immediate8to64, |i, v| i.set_immediate8(v as u8)),
        K::imm32sex64 => (O::Immediate32to64, |i, v| i.set_immediate32(v as u32)),
        _ => return None,
    })
}

fn run_class(class: &Class, seed: u64) -> usize {
    let mut codes = codes_for(class.mnemonics);
    // The vector classes share mnemonics; split them by encoding.
    let only = match class.name {
        "sse moves" => Some(iced_x86::EncodingKind::Legacy),
        "vex moves" => Some(iced_x86::EncodingKind::VEX),
        "evex moves" => Some(iced_x86::EncodingKind::EVEX),
        _ => None,
    };
    codes.retain(|c| only.is_none_or(|e| c.encoding() == e));
    // MMX forms of MOVD/MOVQ are their own class.
    let mmx = |c: &Code| c.op_code().op_kinds().contains(&K::mm_reg);
    codes.retain(|c| {
        if class.name == "mmx moves" {
            mmx(c)
        } else {
            !mmx(c)
        }
    });
    let mut oracle_only = false;
    if codes.is_empty() && matches!(class.name, "movdiri" | "movdir64b") {
        codes = codes_for_cpu(class.mnemonics, false);
        oracle_only = true;
    }
    if codes.is_empty() {
        // Only CPU-extension classes may be skipped, and only where the CPU lacks them.
        let missing = match class.name {
            "vex moves" => !std::is_x86_feature_detected!("avx"),
            "movbe" => !std::is_x86_feature_detected!("movbe"),
            "movdiri" => cpuid7_ecx() & (1 << 27) == 0,
            "movdir64b" => cpuid7_ecx() & (1 << 28) == 0,
            _ => false,
        };
        assert!(missing, "class {} has no encodings on this CPU", class.name);
        eprintln!(
            "differential class {:<22} SKIPPED (CPU lacks the extension)",
            class.name
        );
        return 0;
    }
    let mut ctx = Ctx::new(seed);
    ctx.oracle_only = oracle_only;
    let want = cases();
    let mut ran = 0usize;
    let mut tries = 0usize;
    while ran < want {
        tries += 1;
        assert!(
            tries < want * 50,
            "class {}: too many unencodable random choices",
            class.name
        );
        let code = codes[ctx.rng.below(codes.len() as u64) as usize];
        match one_case(&mut ctx, code, class.pattern) {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(e) => panic!("class {} case {ran} (seed {seed}): {e}", class.name),
        }
    }
    eprintln!(
        "differential class {:<22} {:>6} cases over {:>3} encodings{}",
        class.name,
        ran,
        codes.len(),
        if oracle_only {
            " (CPU lacks it: checked against the SDM effect, not the CPU)"
        } else {
            ""
        }
    );
    let line: Vec<String> = MODES
        .iter()
        .zip(ctx.modes.iter())
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    eprintln!("    modes: {}", line.join(", "));
    // Every class must exercise these addressing modes (the others depend on the class).
    for (i, m) in MODES.iter().enumerate() {
        // Byte-sized operands (SETcc) cannot straddle a page.
        let multi_byte = codes.iter().any(|c| c.op_code().memory_size().size() > 1);
        let must = matches!(
            *m,
            "sib-index" | "rip-rel" | "fs:" | "gs:" | "addr32" | "rex/ext-reg"
        ) || (*m == "page-straddle" && multi_byte)
            || (matches!(*m, "opmask" | "zero-mask") && class.name == "evex moves");
        assert!(
            !must || ctx.modes[i] > 0,
            "class {}: no case with {m}",
            class.name
        );
    }
    assert!(ran > 0);
    ran
}

macro_rules! class_test {
    ($test:ident, $name:literal, [$($m:ident),* $(,)?], $pat:expr) => {
        #[test]
        fn $test() {
            let class = Class { name: $name, mnemonics: &[$(Mnemonic::$m),*], pattern: $pat };
            run_class(&class, stable_seed($name));
        }
    };
}

fn stable_seed(name: &str) -> u64 {
    let base: u64 = std::env::var("MMIO_X86_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    name.bytes()
        .fold(base, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

class_test!(mov_matches_cpu, "mov", [Mov], Pattern::Move);
class_test!(
    movzx_movsx_matches_cpu,
    "movzx/movsx/movsxd",
    [Movzx, Movsx, Movsxd],
    Pattern::Read
);
class_test!(movbe_matches_cpu, "movbe", [Movbe], Pattern::Move);
class_test!(movdiri_matches_cpu, "movdiri", [Movdiri], Pattern::Write);
class_test!(
    movdir64b_matches_cpu,
    "movdir64b",
    [Movdir64b],
    Pattern::Movdir64b
);
class_test!(
    mmx_moves_match_cpu,
    "mmx moves",
    [Movd, Movq, Movntq],
    Pattern::Move
);
class_test!(
    movlps_movhps_match_cpu,
    "movlps/movhps/movlpd/movhpd",
    [Movlps, Movhps, Movlpd, Movhpd, Vmovlps, Vmovhps, Vmovlpd, Vmovhpd],
    Pattern::Move
);
class_test!(
    cmovcc_matches_cpu,
    "cmovcc",
    [
        Cmovo, Cmovno, Cmovb, Cmovae, Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp,
        Cmovl, Cmovge, Cmovle, Cmovg
    ],
    Pattern::Read
);
class_test!(mul_imul_matches_cpu, "mul/imul", [Mul, Imul], Pattern::Read);
class_test!(movnti_matches_cpu, "movnti", [Movnti], Pattern::Write);
class_test!(xchg_matches_cpu, "xchg", [Xchg], Pattern::ReadWrite);
class_test!(
    cmpxchg_matches_cpu,
    "cmpxchg",
    [Cmpxchg],
    Pattern::ReadWrite
);
class_test!(
    cmpxchg8b16b_matches_cpu,
    "cmpxchg8b/16b",
    [Cmpxchg8b, Cmpxchg16b],
    Pattern::ReadWrite
);
class_test!(xadd_matches_cpu, "xadd", [Xadd], Pattern::ReadWrite);
class_test!(
    alu_rmw_matches_cpu,
    "add/or/adc/sbb/and/sub/xor",
    [Add, Or, Adc, Sbb, And, Sub, Xor],
    Pattern::ReadWrite
);
class_test!(cmp_test_matches_cpu, "cmp/test", [Cmp, Test], Pattern::Read);
class_test!(
    unary_matches_cpu,
    "inc/dec/not/neg",
    [Inc, Dec, Not, Neg],
    Pattern::ReadWrite
);
class_test!(
    shift_matches_cpu,
    "shift/rotate",
    [Rol, Ror, Rcl, Rcr, Shl, Sal, Shr, Sar, Shld, Shrd],
    Pattern::ReadWrite
);
class_test!(bt_matches_cpu, "bt", [Bt], Pattern::Bit { write: false });
class_test!(
    bts_btr_btc_matches_cpu,
    "bts/btr/btc",
    [Bts, Btr, Btc],
    Pattern::Bit { write: true }
);
class_test!(
    setcc_matches_cpu,
    "setcc",
    [
        Seto, Setno, Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge,
        Setle, Setg
    ],
    Pattern::Write
);
class_test!(push_m_matches_cpu, "push m", [Push], Pattern::Push);
class_test!(pop_m_matches_cpu, "pop m", [Pop], Pattern::Pop);
class_test!(
    sse_moves_match_cpu,
    "sse moves",
    [
        Movd, Movq, Movss, Movsd, Movaps, Movups, Movapd, Movupd, Movdqa, Movdqu, Movntdq,
        Movntdqa, Movntps, Movntpd, Lddqu
    ],
    Pattern::Move
);
class_test!(
    avx_moves_match_cpu,
    "vex moves",
    [
        Vmovd, Vmovq, Vmovss, Vmovsd, Vmovaps, Vmovups, Vmovapd, Vmovupd, Vmovdqa, Vmovdqu,
        Vmovntdq, Vmovntdqa, Vmovntps, Vmovntpd, Vlddqu
    ],
    Pattern::Move
);

/// EVEX forms are tested separately so a CPU without AVX-512 skips them visibly.
#[test]
fn avx512_moves_match_cpu() {
    if !std::is_x86_feature_detected!("avx512f") {
        eprintln!("differential class evex moves: SKIPPED (no AVX-512 on this CPU)");
        return;
    }
    let class = Class {
        name: "evex moves",
        mnemonics: &[
            Mnemonic::Vmovd,
            Mnemonic::Vmovq,
            Mnemonic::Vmovss,
            Mnemonic::Vmovsd,
            Mnemonic::Vmovaps,
            Mnemonic::Vmovups,
            Mnemonic::Vmovapd,
            Mnemonic::Vmovupd,
            Mnemonic::Vmovdqa32,
            Mnemonic::Vmovdqa64,
            Mnemonic::Vmovdqu8,
            Mnemonic::Vmovdqu16,
            Mnemonic::Vmovdqu32,
            Mnemonic::Vmovdqu64,
            Mnemonic::Vmovntdq,
            Mnemonic::Vmovntdqa,
            Mnemonic::Vmovntps,
            Mnemonic::Vmovntpd,
        ],
        pattern: Pattern::Move,
    };
    run_class(&class, stable_seed("evex"));
}

// ---- string instructions -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Str {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

fn string_case(ctx: &mut Ctx, op: Str) -> Result<bool, String> {
    let rng = &mut ctx.rng;
    let size = [1u64, 2, 4, 8][rng.below(4) as usize];
    let rep = match rng.below(4) {
        0 => RepPrefixKind::None,
        1 | 2 => RepPrefixKind::Repe,
        _ => RepPrefixKind::Repne,
    };
    let a32 = rng.chance(4);
    let df = rng.chance(2);
    let count = rng.below(12);
    let seg = if a32 {
        Register::None
    } else {
        [Register::None, Register::None, Register::FS, Register::GS][rng.below(4) as usize]
    };
    let uses_src = matches!(op, Str::Movs | Str::Lods | Str::Cmps);
    let seg = if uses_src { seg } else { Register::None };
    let segbase = match seg {
        Register::FS => ctx.fs,
        Register::GS => ctx.gs,
        _ => 0,
    };
    let asz = if a32 { 32 } else { 64 };
    let ins = match (op, size) {
        (Str::Movs, 1) => Instruction::with_movsb(asz, seg, rep),
        (Str::Movs, 2) => Instruction::with_movsw(asz, seg, rep),
        (Str::Movs, 4) => Instruction::with_movsd(asz, seg, rep),
        (Str::Movs, _) => Instruction::with_movsq(asz, seg, rep),
        (Str::Stos, 1) => Instruction::with_stosb(asz, rep),
        (Str::Stos, 2) => Instruction::with_stosw(asz, rep),
        (Str::Stos, 4) => Instruction::with_stosd(asz, rep),
        (Str::Stos, _) => Instruction::with_stosq(asz, rep),
        (Str::Lods, 1) => Instruction::with_lodsb(asz, seg, rep),
        (Str::Lods, 2) => Instruction::with_lodsw(asz, seg, rep),
        (Str::Lods, 4) => Instruction::with_lodsd(asz, seg, rep),
        (Str::Lods, _) => Instruction::with_lodsq(asz, seg, rep),
        (Str::Cmps, 1) => Instruction::with_cmpsb(asz, seg, rep),
        (Str::Cmps, 2) => Instruction::with_cmpsw(asz, seg, rep),
        (Str::Cmps, 4) => Instruction::with_cmpsd(asz, seg, rep),
        (Str::Cmps, _) => Instruction::with_cmpsq(asz, seg, rep),
        (Str::Scas, 1) => Instruction::with_scasb(asz, rep),
        (Str::Scas, 2) => Instruction::with_scasw(asz, rep),
        (Str::Scas, 4) => Instruction::with_scasd(asz, rep),
        (Str::Scas, _) => Instruction::with_scasq(asz, rep),
    }
    .map_err(|e| e.to_string())?;
    let rip = ctx.native.slot_addr();
    ctx.enc.encode(&ins, rip).map_err(|e| e.to_string())?;
    let bytes = ctx.enc.take_buffer();

    let base = ctx.native.data_base();
    let mut regs = ctx.random_regs();
    regs.rip = rip;
    regs.rflags = (regs.rflags & !0x400) | if df { 0x400 } else { 0 };
    let mut data = vec![0u8; DATA_LEN];
    ctx.rng.fill(&mut data);
    if matches!(op, Str::Cmps | Str::Scas) && ctx.rng.chance(2) {
        // Few distinct values, so REPE/REPNE stop at varying places.
        for b in data.iter_mut() {
            *b &= 1;
        }
        regs.gpr[0] &= !0x0101_0101_0101_0101 ^ u64::MAX;
    }
    let span = 12 * 8 + 16;
    let pick = |rng: &mut Rng| {
        // Straddle the page boundary in the middle of the data area half of the time.
        if rng.chance(2) {
            PAGE as u64 - rng.below(span)
        } else {
            span + rng.below(DATA_LEN as u64 - 2 * span)
        }
    };
    let src = base + pick(&mut ctx.rng);
    let dst = base + pick(&mut ctx.rng);
    let hi = |rng: &mut Rng, low: u64| {
        if a32 {
            (rng.next() << 32) | (low & 0xffff_ffff)
        } else {
            low
        }
    };
    regs.gpr[6] = hi(&mut ctx.rng, src.wrapping_sub(segbase));
    regs.gpr[7] = hi(&mut ctx.rng, dst);
    regs.gpr[1] = if a32 {
        (ctx.rng.next() << 32) | count
    } else {
        count
    };
    if a32 {
        regs.gpr[6] = (ctx.rng.next() << 32) | (src & 0xffff_ffff);
    }

    let (native_regs, native_mem) = ctx.native.run(&bytes, &regs, &data);
    let d = decode(&bytes, rip).map_err(|u| format!("decode refused: {u:?}"))?;
    let mut emu = regs;
    let mut bus = TestBus {
        base,
        mem: data.clone(),
        log: vec![],
    };
    let out = emulate(&d, &mut emu, &mut bus).map_err(|e| format!("emulate failed: {e:?}"))?;
    let mut want_native = native_regs;
    want_native.rip = rip + bytes.len() as u64;
    let ctxmsg = || {
        format!("{op:?} size {size} rep {rep:?} a32 {a32} df {df} bytes {bytes:02x?}\n  before {regs:?}")
    };
    if emu.gpr != want_native.gpr || emu.rflags != want_native.rflags || emu.rip != want_native.rip
    {
        return Err(format!(
            "{}\n  native {want_native:?}\n  emu    {emu:?}",
            ctxmsg()
        ));
    }
    if !x87_equal(&emu, &want_native) || !vec_equal(ctx.level, &emu, &want_native) {
        return Err(format!("{}\n  x87 or vector state differs", ctxmsg()));
    }
    if bus.mem != native_mem {
        return Err(format!("{}\n  memory differs", ctxmsg()));
    }
    // Oracle: as many elements as the CPU consumed, each its own access(es), in order.
    let amask = if a32 { 0xffff_ffffu64 } else { u64::MAX };
    let n = if rep == RepPrefixKind::None {
        1
    } else {
        (regs.gpr[1] & amask) - (native_regs.gpr[1] & amask)
    };
    if out.iterations != n {
        return Err(format!(
            "{}\n  iterations {} want {n}",
            ctxmsg(),
            out.iterations
        ));
    }
    let step = if df { size.wrapping_neg() } else { size };
    let mut want = vec![];
    for i in 0..n {
        let s = segbase.wrapping_add(regs.gpr[6].wrapping_add(i.wrapping_mul(step)) & amask);
        let t = regs.gpr[7].wrapping_add(i.wrapping_mul(step)) & amask;
        let z = size as usize;
        match op {
            Str::Movs => want.extend([(false, s, z), (true, t, z)]),
            Str::Stos => want.push((true, t, z)),
            Str::Lods => want.push((false, s, z)),
            Str::Cmps => want.extend([(false, s, z), (false, t, z)]),
            Str::Scas => want.push((false, t, z)),
        }
    }
    expect(&bus.log, &want, &data, &bus.mem, base).map_err(|e| format!("{}\n  {e}", ctxmsg()))?;
    let mut hit = |i: usize, on: bool| {
        if on {
            ctx.modes[i] += 1;
        }
    };
    hit(0, rep == RepPrefixKind::None);
    hit(1, rep == RepPrefixKind::Repe);
    hit(2, rep == RepPrefixKind::Repne);
    hit(3, rep != RepPrefixKind::None && regs.gpr[1] & amask == 0);
    hit(
        4,
        rep != RepPrefixKind::None && n > 0 && n < regs.gpr[1] & amask,
    );
    hit(5, df);
    hit(6, a32);
    hit(7, seg == Register::FS);
    hit(8, seg == Register::GS);
    let pages = |a: u64| (a & !0xfff, (a + n.max(1) * size) & !0xfff);
    hit(
        9,
        pages(src).0 != pages(src).1 || pages(dst).0 != pages(dst).1,
    );
    Ok(true)
}

const STR_MODES: [&str; 10] = [
    "no-rep",
    "rep/repe",
    "repne",
    "count-0",
    "stopped-early",
    "df=1",
    "addr32",
    "fs:",
    "gs:",
    "crosses-page",
];

fn run_strings(name: &str, op: Str) {
    let mut ctx = Ctx::new(stable_seed(name));
    let want = cases();
    for i in 0..want {
        if let Err(e) = string_case(&mut ctx, op) {
            panic!("class {name} case {i}: {e}");
        }
    }
    eprintln!("differential class {:<22} {:>6} cases", name, want);
    let line: Vec<String> = STR_MODES
        .iter()
        .zip(ctx.modes.iter())
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    eprintln!("    modes: {}", line.join(", "));
    for (i, m) in STR_MODES.iter().enumerate() {
        let optional = *m == "stopped-early" && !matches!(op, Str::Cmps | Str::Scas)
            || (matches!(*m, "fs:" | "gs:") && matches!(op, Str::Stos | Str::Scas));
        assert!(
            optional || ctx.modes[i] > 0,
            "class {name}: no case with {m}"
        );
    }
}

#[test]
fn movs_matches_cpu() {
    run_strings("movs (rep)", Str::Movs);
}
#[test]
fn stos_matches_cpu() {
    run_strings("stos (rep)", Str::Stos);
}
#[test]
fn lods_matches_cpu() {
    run_strings("lods (rep)", Str::Lods);
}
#[test]
fn cmps_matches_cpu() {
    run_strings("cmps (repe/repne)", Str::Cmps);
}
#[test]
fn scas_matches_cpu() {
    run_strings("scas (repe/repne)", Str::Scas);
}

#[test]
#[ignore]
fn list_codes() {
    for m in [
        Mnemonic::Mov,
        Mnemonic::Cmpxchg16b,
        Mnemonic::Movdiri,
        Mnemonic::Movdir64b,
        Mnemonic::Movsd,
        Mnemonic::Movq,
        Mnemonic::Push,
    ] {
        let all: Vec<_> = Code::values()
            .filter(|c| c.mnemonic() == m)
            .map(|c| (c, c.cpuid_features()))
            .collect();
        eprintln!("{m:?}: {all:?}\n  usable: {:?}", codes_for(&[m]));
        for (c, _) in &all {
            eprintln!(
                "  {c:?} kinds {:?} mode64 {} is_instr {}",
                c.op_code().op_kinds(),
                c.op_code().mode64(),
                c.op_code().is_instruction()
            );
        }
    }
}
