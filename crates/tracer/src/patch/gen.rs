//! Trampoline generation: the code a patched site jumps to.
//!
//! A trampoline does what the trap path does for the site's instruction, without a trap:
//! it computes the instruction's address with its own addressing mode, checks it against
//! the ranges the site traces (a [`Slot`] table the tracer can disable with one store),
//! makes the access on the alias at the instruction's exact width, writes the event the
//! trap path would (same kind, width, address, value and PC: the site's, never the
//! trampoline's) into the thread's ring with the ring's own protocol, and jumps back.
//! Anything unusual — an address in no slot, a thread with no ring or no published block,
//! a recording that is closing — runs the original instruction, copied verbatim (sites
//! with RIP-relative operands are refused), which faults into the trap path: the trap path
//! stays the universal slow path.
//!
//! Frame: the red zone is skipped, then [`FRAME`] bytes hold the nine scratch registers,
//! the flags (kept with `seto`/`lahf`, never `pushf`, and only when a liveness scan says
//! they are live after the site), the timestamp and whether this writer is the ring's
//! outermost. Only fixed-size encodings are used for branches, so a trampoline's size does
//! not depend on where it is placed.
//!
//! Ring protocol (the ring crate's `Producer`, restated): `pending` set to busy by an
//! `xchg` unless an interrupted writer of this thread already did, `lfence; rdtsc`, then
//! the records reserved by an unlocked `xadd` on `head` — before the access, so that a
//! signal handler interrupting it logs its own accesses after this one — then the access,
//! then the records filled and committed by storing the first record's word 3 last. A ring that looks full after the reservation raises an
//! `int3` at a known place: the trap handler waits for room (as the producer does) and
//! returns. Bit 47 of word 3 says the event came through a trampoline (user PCs are below
//! 2^47); the recorder counts and clears it.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64};

use mmio_trace_ring::Kind;

use iced_x86::{
    Code, Encoder, EncodingKind, IcedError, Instruction, MemoryOperand, Mnemonic, OpKind, Register,
};

/// Range slots per site.
pub(crate) const SLOTS: usize = 4;

/// One range a trampoline serves: addresses `a` with `a - start < len` (`len` already
/// shortened by the access width less one, so that the whole access lies inside; 0: the
/// slot is off). Writers set `start`, `alias` and `mapbits` before `len`; readers load
/// `start` then `len` (x86 keeps loads in order).
#[repr(C)]
pub(crate) struct Slot {
    pub start: AtomicU64,
    pub len: AtomicU64,
    /// The alias address of `start`.
    pub alias: AtomicU64,
    /// The map id's low 16 bits, shifted to bit 48 (the access record's word 1).
    pub mapbits: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
pub(crate) const NO_SLOT: Slot = Slot {
    start: AtomicU64::new(0),
    len: AtomicU64::new(0),
    alias: AtomicU64::new(0),
    mapbits: AtomicU64::new(0),
};

const SLOT_START: i64 = 0;
const SLOT_LEN: i64 = 8;
const SLOT_ALIAS: i64 = 16;
const SLOT_MAPBITS: i64 = 24;
const SLOT_SIZE: i64 = 32;
const _: () = assert!(core::mem::size_of::<Slot>() == SLOT_SIZE as usize);

/// Bit 47 of an access record's word 3: the event was written by a trampoline.
pub(crate) const VIA_TRAMPOLINE: u64 = 1 << 47;

/// Scratch registers, in frame order.
const SCRATCH: [Register; 9] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];
const F_FLAGS: i64 = 72;
const F_TS: i64 = 80;
const F_OUTER: i64 = 88;
const F_OLD: i64 = 96;
/// Bytes of the frame (below the skipped red zone).
const FRAME: i64 = 112;
/// How far below the program's stack pointer the frame starts.
const DROP: i64 = 128 + FRAME;

// Ring control block and thread block offsets the code reads.
const CTL_HEAD: i64 = 0;
const CTL_PENDING: i64 = 8;
const CTL_TAIL_CACHE: i64 = 32;
const IDLE: i64 = -1;
const BUSY: i64 = -2;

/// Blocks a [`BlockAt::Table`] probe looks at before it gives up (to the trap path, which
/// probes on): a thread's block lies within a few of its home slot unless the table is
/// crowded.
pub(crate) const TABLE_PROBES: u32 = 16;

/// Where the code finds the calling thread's block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BlockAt {
    /// `%fs:offset` holds it (the preload library's initial-exec slot); the block's key
    /// (FS base | bit 63, `rdfsbase`) proves it is the thread's own.
    Tls(i64),
    /// No slot: the code probes the block table at this address itself, as
    /// `threads::lookup` does (`rdfsbase` | bit 63 is the key, hashed by `threads::hash`),
    /// at most [`TABLE_PROBES`] blocks, and takes the first whose key is the thread's and
    /// whose owner's stack holds the stack pointer; an empty block or the bound ends the
    /// probe with a miss (the trap path then claims a block).
    Table(u64),
    /// A fixed block (tests).
    #[cfg(test)]
    Fixed(u64),
}

/// What a trampoline needs of its process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    pub block: BlockAt,
    /// Offset in the block of the ring's control block, records and mask pointers.
    pub off_ring_ctl: i64,
    pub off_ring_data: i64,
    pub off_ring_mask: i64,
    /// Offset in the block of the thread's trampoline depth (incremented on entry,
    /// decremented on exit: a signal handler may run a trampoline inside another).
    pub off_inside: i64,
    /// Offset in the block of its key.
    pub off_key: i64,
    /// Offset in the block of its owner's stack bounds (`[lo, hi)`).
    pub off_own_stack: i64,
    /// [`BlockAt::Table`] only: offsets in the block of its owner's tid (u32) and of the
    /// address of the owner's tid word (u64; see `threads::ThreadBlock::tid_word`).
    pub off_tid: i64,
    pub off_tid_word: i64,
    /// Address of the recording's `closed` flag (u32).
    pub closed: u64,
    /// Address of the fork canary (u32, 0 in the child of a fork none of the tracer's
    /// hooks saw), checked before the block is looked for: such a child still holds its
    /// parent's blocks and rings until its first trap re-keys them. 0: no check (a kernel
    /// without `MADV_WIPEONFORK`).
    pub fork_canary: u64,
    /// Offset of the thread's `struct rseq` from the thread pointer (glibc's
    /// `__rseq_offset`), when glibc registered rseq: the access runs in a critical section.
    pub rseq: Option<i64>,
}

/// The instruction a trampoline is made for.
pub(crate) struct Site<'a> {
    pub rip: u64,
    /// Its bytes (exactly its length).
    pub bytes: &'a [u8],
    pub ins: Instruction,
    /// Whether the arithmetic flags are live after it.
    pub flags_live: bool,
    /// Its [`Slot`] table (`SLOTS` entries, then one more: the bounds of them all).
    pub slots: u64,
    /// Its [`RseqCs`] (filled in once the trampoline's address is known).
    pub cs: u64,
}

/// A generated trampoline.
pub(crate) struct Tramp {
    pub code: Vec<u8>,
    /// Offset of the out-of-range path (the original instruction's frame teardown).
    pub miss: usize,
    /// Offsets `[lo, hi)` of the loads that may fault on a foreign thread pointer (the
    /// TLS slot and the block's key): a fault there goes to `miss`.
    pub guard: (usize, usize),
    /// Offset just past the `int3` that asks the trap handler to wait for ring room (the
    /// reservation's first index is in `rdx`; it reserved [`Tramp::records`]).
    pub wait: usize,
    /// Offset of the copy of the original instruction.
    pub original: usize,
    /// Records one access reserves.
    pub records: u64,
    /// The rseq critical section: its start offset, length, and the abort handler's
    /// offset (all 0 without rseq).
    pub cs: (usize, usize, usize),
    /// Offsets `[lo, hi)` from the reservation to the end of the access: a fault there (of
    /// the access) finds the records reserved, not committed.
    pub access: (usize, usize),
}

/// How the instruction's access is made.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// General registers: read the memory into `r8` at `width` (zero-extended), run `op`
    /// (the instruction with its memory operand replaced by `r8` of that width, and a
    /// scratch register operand by `r9`), write `r8` back.
    Gpr {
        width: u8,
        read: bool,
        write: bool,
        op: Option<Instruction>,
        /// The program register `r9` stands for, and whether `op` writes it.
        other: Option<(Register, bool)>,
        /// A store made with `movnti`.
        nt: bool,
        /// `r8` is cleared before `op` (a pure store of a narrow register).
        clear: bool,
        /// A `mov` to or from a high-byte register (`ah`, `bh`, `ch`, `dh`, which no
        /// instruction with a REX prefix can name): its full register, and whether the
        /// `mov` loads it.
        high: Option<(Register, bool)>,
    },
    /// Vector moves: `ins` with its memory operand at `[rdi]`; `reg` is the vector
    /// register, logged with `log`.
    Vector {
        width: u8,
        load: bool,
        ins: Instruction,
        log: Instruction,
    },
}

fn full(r: Register) -> Register {
    r.full_register()
}

fn is_scratch(r: Register) -> Option<usize> {
    SCRATCH.iter().position(|&s| s == full(r))
}

/// The `r8`/`r9` register of `width` bytes.
fn sized(base: Register, width: u32) -> Register {
    match (base, width) {
        (Register::R8, 1) => Register::R8L,
        (Register::R8, 2) => Register::R8W,
        (Register::R8, 4) => Register::R8D,
        (Register::R9, 1) => Register::R9L,
        (Register::R9, 2) => Register::R9W,
        (Register::R9, 4) => Register::R9D,
        (b, _) => b,
    }
}

fn is_gpr(r: Register) -> bool {
    r.is_gpr8() || r.is_gpr16() || r.is_gpr32() || r.is_gpr64()
}

/// Why the instruction cannot have a trampoline (the trap path keeps it), or how it can.
fn classify(ins: &Instruction) -> Result<Form, &'static str> {
    if ins.has_lock_prefix() || ins.has_xacquire_prefix() || ins.has_xrelease_prefix() {
        return Err("locked instruction");
    }
    let mem: Vec<u32> = (0..ins.op_count())
        .filter(|&i| ins.op_kind(i) == OpKind::Memory)
        .collect();
    if mem.len() != 1 {
        return Err("no single memory operand");
    }
    let m = mem[0];
    if ins.is_ip_rel_memory_operand() || ins.memory_base() == Register::RIP {
        return Err("RIP-relative operand");
    }
    if matches!(ins.segment_prefix(), Register::FS | Register::GS) {
        return Err("fs:/gs: operand");
    }
    if ins.memory_base().is_gpr32() || ins.memory_index().is_gpr32() {
        return Err("32-bit address");
    }
    if ins.is_vsib() || ins.memory_index().is_xmm() || ins.memory_index().is_ymm() {
        return Err("vector-indexed operand");
    }
    if ins.memory_base() == Register::None && ins.memory_index() == Register::None {
        return Err("absolute address");
    }
    if alloc::format!("{:?}", ins.code()).contains("moffs") {
        return Err("absolute address");
    }
    let width = ins.memory_size().size() as u32;
    let mn = ins.mnemonic();
    use Mnemonic as M;
    let vector = matches!(
        mn,
        M::Movups
            | M::Movaps
            | M::Movupd
            | M::Movapd
            | M::Movdqu
            | M::Movdqa
            | M::Movntdq
            | M::Movntps
            | M::Movntpd
            | M::Movntdqa
            | M::Vmovups
            | M::Vmovaps
            | M::Vmovupd
            | M::Vmovapd
            | M::Vmovdqu
            | M::Vmovdqa
            | M::Vmovntdq
            | M::Vmovntps
            | M::Vmovntpd
            | M::Vmovntdqa
    );
    if vector {
        if !matches!(ins.encoding(), EncodingKind::Legacy | EncodingKind::VEX) {
            return Err("EVEX encoding");
        }
        if width != 16 && width != 32 {
            return Err("unusual vector width");
        }
        let load = m == 1;
        let reg = ins.op_register(if load { 0 } else { 1 });
        let mut a = *ins;
        a.set_memory_base(Register::RDI);
        a.set_memory_index(Register::None);
        a.set_memory_index_scale(1);
        a.set_memory_displacement64(0);
        a.set_memory_displ_size(0);
        a.set_segment_prefix(Register::None);
        // The value is logged from the register into the event's data record (`[r9]`).
        let code = match (ins.encoding(), width) {
            (EncodingKind::Legacy, _) => Code::Movdqu_xmmm128_xmm,
            (_, 16) => Code::VEX_Vmovdqu_xmmm128_xmm,
            _ => Code::VEX_Vmovdqu_ymmm256_ymm,
        };
        let log = Instruction::with2(code, mem_at(Register::R9, 0), reg).map_err(|_| "encoding")?;
        return Ok(Form::Vector {
            width: width as u8,
            load,
            ins: a,
            log,
        });
    }
    if !matches!(width, 1 | 2 | 4 | 8) {
        return Err("unusual width");
    }
    // The other operand (a register or an immediate), if any.
    let other_idx = if ins.op_count() == 2 {
        Some(1 - m)
    } else {
        None
    };
    let mut other = None;
    if let Some(i) = other_idx {
        match ins.op_kind(i) {
            OpKind::Register => {
                let r = ins.op_register(i);
                if !is_gpr(r) {
                    return Err("non-general register operand");
                }
                if matches!(r, Register::AH | Register::BH | Register::CH | Register::DH) {
                    if ins.mnemonic() != Mnemonic::Mov {
                        return Err("high-byte register");
                    }
                    return Ok(Form::Gpr {
                        width: 1,
                        read: m == 1,
                        write: m == 0,
                        op: None,
                        other: None,
                        nt: false,
                        clear: false,
                        high: Some((full(r), m == 1)),
                    });
                }
                other = Some(r);
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {}
            _ => return Err("unusual operand"),
        }
    } else if ins.op_count() != 1 {
        return Err("unusual operands");
    }
    // (read, write, op writes the other register)
    let (read, write, writes_other, nt) = match mn {
        M::Mov if m == 0 => (false, true, false, false),
        M::Mov | M::Movzx | M::Movsx | M::Movsxd if m == 1 => (true, false, true, false),
        M::Movnti => (false, true, false, true),
        M::Add | M::Or | M::And | M::Sub | M::Xor if m == 0 => (true, true, false, false),
        M::Add | M::Or | M::And | M::Sub | M::Xor if m == 1 => (true, false, true, false),
        M::Cmp | M::Test => (true, false, false, false),
        M::Inc | M::Dec | M::Neg | M::Not if ins.op_count() == 1 => (true, true, false, false),
        _ => return Err("instruction not handled by trampolines"),
    };
    let mut op = *ins;
    let r8 = sized(Register::R8, width);
    let mut other_sub = None;
    if nt {
        // `movnti [m], r` becomes `mov r8, r` then `movnti [alias], r8`.
        let r = other.ok_or("unusual operands")?;
        let code = if width == 8 {
            Code::Mov_r64_rm64
        } else {
            Code::Mov_r32_rm32
        };
        let src = match is_scratch(r) {
            Some(_) => {
                other_sub = Some((r, false));
                sized(Register::R9, width)
            }
            None => r,
        };
        op = Instruction::with2(code, r8, src).map_err(|_| "encoding")?;
    } else {
        op.set_op_kind(m, OpKind::Register);
        op.set_op_register(m, r8);
        op.set_segment_prefix(Register::None);
        if let (Some(i), Some(r)) = (other_idx, other) {
            if is_scratch(r).is_some() {
                let w = r.size() as u32;
                op.set_op_register(i, sized(Register::R9, w));
                other_sub = Some((r, writes_other));
            }
        }
    }
    // The register form must encode (it does for every form above).
    Encoder::new(64)
        .encode(&op, 0x1000)
        .map_err(|_| "encoding")?;
    Ok(Form::Gpr {
        width: width as u8,
        read,
        write,
        op: Some(op),
        other: other_sub,
        nt,
        clear: !read && width < 4,
        high: None,
    })
}

/// Whether the instruction at `rip` could have a trampoline (the reason if not).
pub(crate) fn supported(ins: &Instruction) -> Result<(), &'static str> {
    classify(ins).map(|_| ())
}

fn mem_at(base: Register, disp: i64) -> MemoryOperand {
    MemoryOperand::with_base_displ(base, disp)
}

fn frame(disp: i64) -> MemoryOperand {
    mem_at(Register::RSP, disp)
}

/// A small assembler: iced's encoder for each instruction, rel32 branches to labels.
struct Asm {
    buf: Vec<u8>,
    base: u64,
    enc: Encoder,
    failed: bool,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn new(base: u64) -> Asm {
        Asm {
            buf: Vec::with_capacity(512),
            base,
            enc: Encoder::new(64),
            failed: false,
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    fn ip(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn i(&mut self, ins: Result<Instruction, IcedError>) {
        let Ok(ins) = ins else {
            self.failed = true;
            return;
        };
        self.ins(&ins);
    }

    fn ins(&mut self, ins: &Instruction) {
        let ip = self.ip();
        match self.enc.encode(ins, ip) {
            Ok(_) => self.buf.extend_from_slice(&self.enc.take_buffer()),
            Err(_) => self.failed = true,
        }
    }

    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.buf.len());
    }

    fn rel32(&mut self, l: usize) {
        self.fixups.push((self.buf.len(), l));
        self.raw(&[0; 4]);
    }

    /// `jcc rel32` (`cc`: the condition's low opcode nibble).
    fn jcc(&mut self, cc: u8, l: usize) {
        self.raw(&[0x0f, 0x80 | cc]);
        self.rel32(l);
    }

    fn jmp(&mut self, l: usize) {
        self.raw(&[0xe9]);
        self.rel32(l);
    }

    /// `jmp rel32` to an absolute address.
    fn jmp_to(&mut self, target: u64) {
        let next = self.ip() + 5;
        let rel = target.wrapping_sub(next) as i64;
        if rel < i32::MIN as i64 || rel > i32::MAX as i64 {
            self.failed = true;
        }
        self.raw(&[0xe9]);
        self.raw(&(rel as i32).to_le_bytes());
    }

    fn finish(mut self) -> Option<Vec<u8>> {
        for &(at, l) in &self.fixups {
            let to = self.labels[l]?;
            let rel = to as i64 - (at as i64 + 4);
            self.buf[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        (!self.failed).then_some(self.buf)
    }
}

const JB: u8 = 0x2;
const JE: u8 = 0x4;
const JNE: u8 = 0x5;
const JBE: u8 = 0x6;

/// Generates the trampoline for `site` to be placed at `at`.
pub(crate) fn generate(site: &Site, env: &Env, at: u64) -> Result<Tramp, &'static str> {
    let form = classify(&site.ins)?;
    let (width, wide, records) = match form {
        Form::Gpr {
            width, read, write, ..
        } => (width, false, u64::from(read) + u64::from(write)),
        Form::Vector { width, .. } => (width, true, 2),
    };
    let mut a = Asm::new(at);
    let miss0 = a.label();
    let miss1 = a.label();
    let fast_miss = a.label();
    let done = a.label();
    // Prologue: below the red zone, save what the range check needs (rax, rsi, rdi).
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        Register::RSP,
        frame(-DROP),
    ));
    for k in FIRST_SAVED {
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            frame(8 * k as i64),
            SCRATCH[k],
        ));
    }
    // The instruction's address, with its own addressing mode (the frame moved rsp).
    let ins = &site.ins;
    let mut disp = ins.memory_displacement64() as i64;
    if ins.memory_base() == Register::RSP {
        disp += DROP;
    }
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        Register::RSI,
        MemoryOperand::new(
            ins.memory_base(),
            ins.memory_index(),
            ins.memory_index_scale(),
            disp,
            1,
            false,
            Register::None,
        ),
    ));
    if site.flags_live {
        flags_save(&mut a);
    }
    // A first range check, before anything else is saved: an address in no slot (the
    // program's ordinary memory through the same instruction) costs a few instructions.
    // It is not the one that counts (see below).
    range_check(&mut a, site.slots, fast_miss, false);
    for (k, &r) in SCRATCH.iter().enumerate() {
        if !FIRST_SAVED.contains(&k) {
            a.i(Instruction::with2(
                Code::Mov_rm64_r64,
                frame(8 * k as i64),
                r,
            ));
        }
    }
    // Not in the child of a fork none of the tracer's hooks saw: it still holds its
    // parent's blocks (and their rings) until its first trap re-keys them.
    if env.fork_canary != 0 {
        a.i(Instruction::with2(
            Code::Mov_r64_imm64,
            Register::RAX,
            env.fork_canary,
        ));
        a.i(Instruction::with2(
            Code::Cmp_rm32_imm8,
            mem_at(Register::RAX, 0),
            0u32,
        ));
        a.jcc(JE, miss0);
    }
    // The thread's block, proven its own; its ring.
    let guard_lo;
    let guard_hi;
    match env.block {
        BlockAt::Tls(off) => {
            a.i(Instruction::with1(Code::Rdfsbase_r64, Register::RCX));
            a.i(Instruction::with2(
                Code::Test_rm64_r64,
                Register::RCX,
                Register::RCX,
            ));
            a.jcc(JE, miss0);
            guard_lo = a.buf.len();
            a.i(Instruction::with2(
                Code::Mov_r64_rm64,
                Register::R10,
                MemoryOperand::new(
                    Register::None,
                    Register::None,
                    1,
                    off,
                    8,
                    false,
                    Register::FS,
                ),
            ));
            a.i(Instruction::with2(
                Code::Test_rm64_r64,
                Register::R10,
                Register::R10,
            ));
            a.jcc(JE, miss0);
            a.i(Instruction::with2(
                Code::Bts_rm64_imm8,
                Register::RCX,
                63u32,
            ));
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RCX,
                mem_at(Register::R10, env.off_key),
            ));
            guard_hi = a.buf.len();
            a.jcc(JNE, miss0);
            // The block is the thread's own only if so is the stack (a raw clone reads
            // its parent's slot and has the same thread pointer).
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RSP,
                mem_at(Register::R10, env.off_own_stack),
            ));
            a.jcc(JB, miss0);
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RSP,
                mem_at(Register::R10, env.off_own_stack + 8),
            ));
            a.jcc(0x3, miss0); // jae
        }
        BlockAt::Table(base) => {
            use crate::threads::{BLOCK_SIZE, HASH_MUL, HASH_SHIFT, MAX_THREADS};
            // rcx = the key, rax = the slot, r8 = the table, r11 = probes left.
            a.i(Instruction::with1(Code::Rdfsbase_r64, Register::RCX));
            a.i(Instruction::with2(
                Code::Bts_rm64_imm8,
                Register::RCX,
                63u32,
            ));
            a.i(Instruction::with2(
                Code::Mov_r64_rm64,
                Register::RAX,
                Register::RCX,
            ));
            a.i(Instruction::with2(
                Code::Mov_r64_imm64,
                Register::RDX,
                HASH_MUL,
            ));
            a.i(Instruction::with2(
                Code::Imul_r64_rm64,
                Register::RAX,
                Register::RDX,
            ));
            a.i(Instruction::with2(
                Code::Shr_rm64_imm8,
                Register::RAX,
                HASH_SHIFT,
            ));
            a.i(Instruction::with2(Code::Mov_r64_imm64, Register::R8, base));
            a.i(Instruction::with2(
                Code::Mov_r32_imm32,
                Register::R11D,
                TABLE_PROBES,
            ));
            let probe = a.label();
            let other = a.label();
            let next = a.label();
            let found = a.label();
            a.bind(probe);
            a.i(Instruction::with3(
                Code::Imul_r64_rm64_imm32,
                Register::R10,
                Register::RAX,
                BLOCK_SIZE as u32,
            ));
            a.i(Instruction::with2(
                Code::Add_r64_rm64,
                Register::R10,
                Register::R8,
            ));
            a.i(Instruction::with2(
                Code::Mov_r64_rm64,
                Register::RDX,
                mem_at(Register::R10, env.off_key),
            ));
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RDX,
                Register::RCX,
            ));
            a.jcc(JNE, other);
            // The key's: the thread's own block only if its stack is the owner's (threads
            // sharing an FS base each have a block under it).
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RSP,
                mem_at(Register::R10, env.off_own_stack),
            ));
            a.jcc(JB, next);
            a.i(Instruction::with2(
                Code::Cmp_r64_rm64,
                Register::RSP,
                mem_at(Register::R10, env.off_own_stack + 8),
            ));
            a.jcc(0x3, next); // jae
                              // And only while the owner lives: its tid word (which the kernel zeroes at
                              // its end) still holds its tid. A thread given a dead owner's TCB and stack
                              // (libc's stack cache) has its own tid there. The word is the thread's TCB or
                              // the table; a fault reading it (an owner's word gone with its memory) is a
                              // miss (the guard).
            a.i(Instruction::with2(
                Code::Mov_r64_rm64,
                Register::RDX,
                mem_at(Register::R10, env.off_tid_word),
            ));
            guard_lo = a.buf.len();
            a.i(Instruction::with2(
                Code::Mov_r32_rm32,
                Register::EDX,
                mem_at(Register::RDX, 0),
            ));
            guard_hi = a.buf.len();
            a.i(Instruction::with2(
                Code::Cmp_r32_rm32,
                Register::EDX,
                mem_at(Register::R10, env.off_tid),
            ));
            a.jcc(JNE, next);
            a.jmp(found);
            a.bind(other);
            // An empty block ends the probe (a freed one does not).
            a.i(Instruction::with2(
                Code::Test_rm64_r64,
                Register::RDX,
                Register::RDX,
            ));
            a.jcc(JE, miss0);
            a.bind(next);
            a.i(Instruction::with2(Code::Add_rm64_imm8, Register::RAX, 1u32));
            a.i(Instruction::with2(
                Code::And_rm64_imm32,
                Register::RAX,
                (MAX_THREADS - 1) as u32,
            ));
            a.i(Instruction::with2(Code::Sub_rm64_imm8, Register::R11, 1u32));
            a.jcc(JNE, probe);
            a.jmp(miss0);
            a.bind(found);
        }
        #[cfg(test)]
        BlockAt::Fixed(b) => {
            a.i(Instruction::with2(Code::Mov_r64_imm64, Register::R10, b));
            guard_lo = a.buf.len();
            guard_hi = guard_lo;
        }
    }
    a.i(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::RCX,
        mem_at(Register::R10, env.off_ring_ctl),
    ));
    a.i(Instruction::with2(
        Code::Test_rm64_r64,
        Register::RCX,
        Register::RCX,
    ));
    a.jcc(JE, miss0);
    // Inside from here (counted before the range check: see `patch::quiesce`).
    a.i(Instruction::with2(
        Code::Add_rm64_imm8,
        mem_at(Register::R10, env.off_inside),
        1u32,
    ));
    // The range check that counts (after the depth is raised): rdi = the slot hit, rax =
    // the offset in it.
    range_check(&mut a, site.slots, miss1, true);
    // word 1 (address | map bits) in rsi, the alias address in rdi.
    a.i(Instruction::with2(
        Code::Or_r64_rm64,
        Register::RSI,
        mem_at(Register::RDI, SLOT_MAPBITS),
    ));
    a.i(Instruction::with2(
        Code::Add_r64_rm64,
        Register::RAX,
        mem_at(Register::RDI, SLOT_ALIAS),
    ));
    a.i(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::RDI,
        Register::RAX,
    ));
    // A recording that is closing: the trap path stops tracing.
    a.i(Instruction::with2(
        Code::Mov_r64_imm64,
        Register::RAX,
        env.closed,
    ));
    a.i(Instruction::with2(
        Code::Cmp_rm32_imm8,
        mem_at(Register::RAX, 0),
        0u32,
    ));
    a.jcc(JNE, miss1);
    // Begin: busy unless an interrupted writer of this thread already said so; the time.
    let nested = a.label();
    a.i(Instruction::with2(
        Code::Mov_rm64_imm32,
        frame(F_OUTER),
        0u32,
    ));
    a.i(Instruction::with2(
        Code::Cmp_rm64_imm8,
        mem_at(Register::RCX, CTL_PENDING),
        IDLE as i32,
    ));
    a.jcc(JNE, nested);
    a.i(Instruction::with2(
        Code::Mov_rm64_imm32,
        frame(F_OUTER),
        1u32,
    ));
    a.i(Instruction::with2(
        Code::Mov_r64_imm64,
        Register::RAX,
        BUSY as u64,
    ));
    a.i(Instruction::with2(
        Code::Xchg_rm64_r64,
        mem_at(Register::RCX, CTL_PENDING),
        Register::RAX,
    ));
    a.bind(nested);
    a.i(Ok(Instruction::with(Code::Lfence)));
    a.i(Ok(Instruction::with(Code::Rdtsc)));
    a.i(Instruction::with2(
        Code::Shl_rm64_imm8,
        Register::RDX,
        32u32,
    ));
    a.i(Instruction::with2(
        Code::Or_r64_rm64,
        Register::RAX,
        Register::RDX,
    ));
    a.i(Instruction::with2(
        Code::Mov_rm64_r64,
        frame(F_TS),
        Register::RAX,
    ));
    let not_outer = a.label();
    a.i(Instruction::with2(
        Code::Cmp_rm64_imm8,
        frame(F_OUTER),
        0u32,
    ));
    a.jcc(JE, not_outer);
    a.i(Instruction::with2(
        Code::Mov_rm64_r64,
        mem_at(Register::RCX, CTL_PENDING),
        Register::RAX,
    ));
    a.bind(not_outer);
    // Reserve before the access (rdx = the first index; room for rdx + records?), and
    // make the access inside an rseq critical section that starts by checking that no
    // other writer reserved since: a signal handler that logs accesses of its own then
    // either runs before the reservation (its events first, its accesses first), or
    // after the access (both after), or aborts the section (the kernel moves the thread
    // to `abort` before the handler runs: the reservation is voided and made again).
    let again = a.label();
    a.bind(again);
    a.i(Instruction::with2(
        Code::Mov_r32_imm32,
        Register::EDX,
        records as u32,
    ));
    a.i(Instruction::with2(
        Code::Xadd_rm64_r64,
        mem_at(Register::RCX, CTL_HEAD),
        Register::RDX,
    ));
    a.i(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::R11,
        mem_at(Register::R10, env.off_ring_mask),
    ));
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        Register::RAX,
        mem_at(Register::RDX, records as i64 - 1),
    ));
    a.i(Instruction::with2(
        Code::Sub_r64_rm64,
        Register::RAX,
        mem_at(Register::RCX, CTL_TAIL_CACHE),
    ));
    a.i(Instruction::with2(
        Code::Cmp_r64_rm64,
        Register::RAX,
        Register::R11,
    ));
    let room = a.label();
    a.jcc(JBE, room);
    a.i(Ok(Instruction::with(Code::Int3)));
    let wait = a.buf.len();
    a.bind(room);
    let voided = a.label();
    let access_start = a.buf.len();
    let mut cs_start = 0;
    if let Some(rseq) = env.rseq {
        a.i(Instruction::with2(
            Code::Lea_r64_m,
            Register::R11,
            mem_at(Register::RDX, records as i64),
        ));
        a.i(Instruction::with2(
            Code::Mov_r64_imm64,
            Register::RAX,
            site.cs,
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            fs_at(rseq + RSEQ_CS),
            Register::RAX,
        ));
        cs_start = a.buf.len();
        a.i(Instruction::with2(
            Code::Cmp_rm64_r64,
            mem_at(Register::RCX, CTL_HEAD),
            Register::R11,
        ));
        a.jcc(JNE, voided);
    }
    let mut cs_end = 0;
    // The access.
    match form {
        Form::Gpr {
            width,
            read,
            write,
            op,
            other,
            nt,
            clear,
            high,
        } => {
            if let Some((full_reg, false)) = high {
                // r8 = bits 8..15 of the register.
                high_get(&mut a, full_reg);
                a.i(Instruction::with2(
                    Code::Mov_r64_rm64,
                    Register::R8,
                    Register::R9,
                ));
                a.i(Instruction::with2(Code::Shr_rm64_imm8, Register::R8, 8u32));
                a.i(Instruction::with2(
                    Code::Movzx_r32_rm8,
                    Register::R8D,
                    Register::R8L,
                ));
            }
            if read {
                let code = match width {
                    1 => Code::Movzx_r32_rm8,
                    2 => Code::Movzx_r32_rm16,
                    4 => Code::Mov_r32_rm32,
                    _ => Code::Mov_r64_rm64,
                };
                let dst = if width == 8 {
                    Register::R8
                } else {
                    Register::R8D
                };
                a.i(Instruction::with2(code, dst, mem_at(Register::RDI, 0)));
                cs_end = a.buf.len();
                a.i(Instruction::with2(
                    Code::Mov_rm64_r64,
                    frame(F_OLD),
                    Register::R8,
                ));
            } else if clear {
                a.i(Instruction::with2(Code::Mov_r32_imm32, Register::R8D, 0u32));
            }
            if let Some(op) = op {
                if let Some((r, _)) = other {
                    let k = is_scratch(r).unwrap_or(0) as i64;
                    a.i(Instruction::with2(
                        Code::Mov_r64_rm64,
                        Register::R9,
                        frame(8 * k),
                    ));
                }
                if site.flags_live {
                    flags_restore(&mut a);
                }
                a.ins(&op);
                if site.flags_live {
                    flags_save(&mut a);
                }
                if let Some((r, true)) = other {
                    let k = is_scratch(r).unwrap_or(0) as i64;
                    a.i(Instruction::with2(
                        Code::Mov_rm64_r64,
                        frame(8 * k),
                        Register::R9,
                    ));
                }
            }
            if let Some((full_reg, true)) = high {
                // Bits 8..15 of the register = the byte read (the flags, clobbered here,
                // are restored on the way out when live: a mov leaves them alone).
                high_get(&mut a, full_reg);
                a.i(Instruction::with2(
                    Code::Mov_r64_imm64,
                    Register::R11,
                    !0xff00u64,
                ));
                a.i(Instruction::with2(
                    Code::And_r64_rm64,
                    Register::R9,
                    Register::R11,
                ));
                a.i(Instruction::with2(
                    Code::Movzx_r32_rm8,
                    Register::R11D,
                    Register::R8L,
                ));
                a.i(Instruction::with2(Code::Shl_rm64_imm8, Register::R11, 8u32));
                a.i(Instruction::with2(
                    Code::Or_r64_rm64,
                    Register::R9,
                    Register::R11,
                ));
                match is_scratch(full_reg) {
                    Some(k) => a.i(Instruction::with2(
                        Code::Mov_rm64_r64,
                        frame(8 * k as i64),
                        Register::R9,
                    )),
                    None => a.i(Instruction::with2(
                        Code::Mov_r64_rm64,
                        full_reg,
                        Register::R9,
                    )),
                }
            }
            if write {
                let code = match (width, nt) {
                    (1, _) => Code::Mov_rm8_r8,
                    (2, _) => Code::Mov_rm16_r16,
                    (4, false) => Code::Mov_rm32_r32,
                    (4, true) => Code::Movnti_m32_r32,
                    (_, false) => Code::Mov_rm64_r64,
                    (_, true) => Code::Movnti_m64_r64,
                };
                let src = sized(Register::R8, u32::from(width));
                a.i(Instruction::with2(code, mem_at(Register::RDI, 0), src));
                cs_end = a.buf.len();
            }
        }
        Form::Vector { ins, .. } => {
            // The vector register is not a scratch register: the instruction runs as is.
            a.ins(&ins);
            cs_end = a.buf.len();
        }
    }
    let cs_len = cs_end.saturating_sub(cs_start);
    if let Some(rseq) = env.rseq {
        a.i(Instruction::with2(
            Code::Mov_rm64_imm32,
            fs_at(rseq + RSEQ_CS),
            0u32,
        ));
    }
    // The mask again (the access may use r11).
    a.i(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::R11,
        mem_at(Register::R10, env.off_ring_mask),
    ));
    // Records: slot(k) = data + ((rdx + k) & mask) * 32, in rdi (first) and r9 (second).
    let slot = |a: &mut Asm, dst: Register, k: i64| ring_slot(a, env, dst, k);
    let word3 = |kind: u64| -> u64 {
        (site.rip & ((1 << 47) - 1)) | VIA_TRAMPOLINE | u64::from(width) << 48 | kind << 56
    };
    // One event: first record at `dst` (value from `value`, or 0), committed last.
    let event = |a: &mut Asm, dst: Register, value: Option<Register>, kind: u64| {
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RAX,
            frame(F_TS),
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(dst, 0),
            Register::RAX,
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(dst, 8),
            Register::RSI,
        ));
        match value {
            Some(v) => a.i(Instruction::with2(Code::Mov_rm64_r64, mem_at(dst, 16), v)),
            None => a.i(Instruction::with2(
                Code::Mov_rm64_imm32,
                mem_at(dst, 16),
                0u32,
            )),
        }
        a.i(Instruction::with2(
            Code::Mov_r64_imm64,
            Register::RAX,
            word3(kind),
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(dst, 24),
            Register::RAX,
        ));
    };
    match form {
        Form::Gpr { read, write, .. } => {
            let mut k = 0;
            if read {
                slot(&mut a, Register::RDI, k);
                a.i(Instruction::with2(
                    Code::Mov_r64_rm64,
                    Register::R9,
                    frame(F_OLD),
                ));
                event(&mut a, Register::RDI, Some(Register::R9), 1);
                k += 1;
            }
            if write {
                slot(&mut a, Register::RDI, k);
                event(&mut a, Register::RDI, Some(Register::R8), 2);
            }
        }
        Form::Vector { load, log, .. } => {
            slot(&mut a, Register::RDI, 0);
            slot(&mut a, Register::R9, 1);
            a.ins(&log);
            if wide && width < 32 {
                a.i(Instruction::with2(
                    Code::Mov_rm64_imm32,
                    mem_at(Register::R9, 16),
                    0u32,
                ));
                a.i(Instruction::with2(
                    Code::Mov_rm64_imm32,
                    mem_at(Register::R9, 24),
                    0u32,
                ));
            }
            event(&mut a, Register::RDI, None, if load { 3 } else { 4 });
        }
    }
    // End: idle again if this writer was the outermost.
    let inner = a.label();
    a.i(Instruction::with2(
        Code::Cmp_rm64_imm8,
        frame(F_OUTER),
        0u32,
    ));
    a.jcc(JE, inner);
    a.i(Instruction::with2(
        Code::Mov_rm64_imm32,
        mem_at(Register::RCX, CTL_PENDING),
        IDLE as i32,
    ));
    a.bind(inner);
    a.i(Instruction::with2(
        Code::Sub_rm64_imm8,
        mem_at(Register::R10, env.off_inside),
        1u32,
    ));
    a.jmp(done);
    // Out of range (inside counted): leave, then run the original.
    a.bind(miss1);
    a.i(Instruction::with2(
        Code::Sub_rm64_imm8,
        mem_at(Register::R10, env.off_inside),
        1u32,
    ));
    let miss = a.buf.len();
    a.bind(miss0);
    for (k, &r) in SCRATCH.iter().enumerate() {
        if !FIRST_SAVED.contains(&k) {
            a.i(Instruction::with2(
                Code::Mov_r64_rm64,
                r,
                frame(8 * k as i64),
            ));
        }
    }
    a.bind(fast_miss);
    if site.flags_live {
        flags_restore(&mut a);
    }
    for k in FIRST_SAVED {
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            SCRATCH[k],
            frame(8 * k as i64),
        ));
    }
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        Register::RSP,
        frame(DROP),
    ));
    let original = a.buf.len();
    a.raw(site.bytes);
    a.jmp_to(site.rip + site.bytes.len() as u64);
    a.bind(done);
    epilogue(&mut a, site.flags_live);
    a.jmp_to(site.rip + site.bytes.len() as u64);
    // The critical section's abort (the kernel has cleared the section), preceded by the
    // signature the kernel checks; also reached when another writer reserved first. Only
    // r9, r11 and rax are free here (rdi holds the alias address for the retry). The
    // reserved records become one void event (a `Patch` note the recorder drops, with
    // the other records as its data), and the reservation is made again.
    let mut abort = 0;
    if let Some(rseq) = env.rseq {
        a.raw(&RSEQ_SIG.to_le_bytes());
        abort = a.buf.len();
        a.bind(voided);
        a.i(Instruction::with2(
            Code::Mov_rm64_imm32,
            fs_at(rseq + RSEQ_CS),
            0u32,
        ));
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::R11,
            mem_at(Register::R10, env.off_ring_mask),
        ));
        ring_slot(&mut a, env, Register::R9, 0);
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RAX,
            frame(F_TS),
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(Register::R9, 0),
            Register::RAX,
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_imm32,
            mem_at(Register::R9, 8),
            0u32,
        ));
        let void = VOID_STATUS | ((records - 1) * 32) << 8;
        a.i(Instruction::with2(Code::Mov_r64_imm64, Register::RAX, void));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(Register::R9, 16),
            Register::RAX,
        ));
        a.i(Instruction::with2(
            Code::Mov_r64_imm64,
            Register::RAX,
            (Kind::Patch as u64) << 56,
        ));
        a.i(Instruction::with2(
            Code::Mov_rm64_r64,
            mem_at(Register::R9, 24),
            Register::RAX,
        ));
        a.jmp(again);
    }
    let code = a.finish().ok_or("encoding")?;
    Ok(Tramp {
        code,
        miss,
        guard: (guard_lo, guard_hi),
        wait,
        original,
        records,
        cs: (cs_start, cs_len, abort),
        access: (access_start, cs_end),
    })
}

/// Takes a trampoline's frame down in a signal context stopped inside it, after its
/// registers were all saved: the program's scratch registers, flags (when they were
/// kept) and stack pointer are put back in `g` (the context's general registers).
///
/// # Safety
/// `g[REG_RSP]` must be the stack pointer of a trampoline stopped after its full save.
pub(crate) unsafe fn unframe(g: &mut [i64], flags_live: bool) {
    let sp = g[libc::REG_RSP as usize] as u64;
    let slot = |off: i64| -> u64 {
        // SAFETY: the frame is live on the stack below the interrupted code (caller's
        // contract).
        unsafe { ((sp as i64 + off) as *const u64).read() }
    };
    if flags_live {
        // ah = SF ZF - AF - PF - CF (as in EFLAGS' low byte), al = OF.
        let f = slot(F_FLAGS);
        let (al, ah) = (f & 0xff, (f >> 8) & 0xff);
        let efl = g[libc::REG_EFL as usize] as u64;
        g[libc::REG_EFL as usize] = ((efl & !0x8d5) | (ah & 0xd5) | (al & 1) << 11) as i64;
    }
    const REGS: [libc::c_int; 9] = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
    ];
    for (k, r) in REGS.iter().enumerate() {
        g[*r as usize] = slot(8 * k as i64) as i64;
    }
    g[libc::REG_RSP as usize] = (sp + DROP as u64) as i64;
}

/// Whether this writer was its ring's outermost (the frame's word), for a frame being
/// taken down.
///
/// # Safety
/// As [`unframe`], before it.
pub(crate) unsafe fn frame_outer(g: &[i64]) -> bool {
    let sp = g[libc::REG_RSP as usize] as u64;
    // SAFETY: as `unframe`.
    unsafe { ((sp as i64 + F_OUTER) as *const u64).read() != 0 }
}

/// Offset of `rseq_cs` in the kernel's `struct rseq`.
const RSEQ_CS: i64 = 8;
/// The signature glibc registers rseq with on x86 (the 4 bytes before an abort handler).
pub(crate) const RSEQ_SIG: u32 = 0x5305_3053;
/// Status byte of a void `Patch` note (a trampoline's voided reservation).
pub(crate) const VOID_STATUS: u64 = 3;

/// The kernel's `struct rseq_cs`: a critical section (32-byte aligned).
#[repr(C, align(32))]
pub(crate) struct RseqCs {
    pub version: AtomicU32,
    pub flags: AtomicU32,
    pub start_ip: AtomicU64,
    pub post_commit_offset: AtomicU64,
    pub abort_ip: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
pub(crate) const NO_CS: RseqCs = RseqCs {
    version: AtomicU32::new(0),
    flags: AtomicU32::new(0),
    start_ip: AtomicU64::new(0),
    post_commit_offset: AtomicU64::new(0),
    abort_ip: AtomicU64::new(0),
};

fn fs_at(off: i64) -> MemoryOperand {
    MemoryOperand::new(
        Register::None,
        Register::None,
        1,
        off,
        8,
        false,
        Register::FS,
    )
}

/// `dst` = the address of ring record `rdx + k` (r11 = the ring's mask, r10 = the block).
fn ring_slot(a: &mut Asm, env: &Env, dst: Register, k: i64) {
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        dst,
        mem_at(Register::RDX, k),
    ));
    a.i(Instruction::with2(Code::And_r64_rm64, dst, Register::R11));
    a.i(Instruction::with2(Code::Shl_rm64_imm8, dst, 5u32));
    a.i(Instruction::with2(
        Code::Add_r64_rm64,
        dst,
        mem_at(Register::R10, env.off_ring_data),
    ));
}

/// r9 = the program's value of `full_reg` (from the frame when it is a scratch register).
fn high_get(a: &mut Asm, full_reg: Register) {
    match is_scratch(full_reg) {
        Some(k) => a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::R9,
            frame(8 * k as i64),
        )),
        None => a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::R9,
            full_reg,
        )),
    }
}

/// Scratch registers (indices into [`SCRATCH`]) saved before the first range check.
const FIRST_SAVED: [usize; 3] = [0, 3, 4];

/// Checks the address in rsi against the site's slots (rdi = the table, rax = scratch):
/// no slot holds it -> `miss`; else falls through with rdi = the slot, rax = the offset
/// (`hit`: the caller uses them; `false`: a mere filter, its results unused).
fn range_check(a: &mut Asm, slots: u64, miss: usize, hit: bool) {
    a.i(Instruction::with2(
        Code::Mov_r64_imm64,
        Register::RDI,
        slots,
    ));
    let found = a.label();
    if !hit {
        // The bounds of every slot (right after them): most misses stop here.
        let b = SLOTS as i64 * SLOT_SIZE;
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RAX,
            Register::RSI,
        ));
        a.i(Instruction::with2(
            Code::Sub_r64_rm64,
            Register::RAX,
            mem_at(Register::RDI, b + SLOT_START),
        ));
        a.i(Instruction::with2(
            Code::Cmp_r64_rm64,
            Register::RAX,
            mem_at(Register::RDI, b + SLOT_LEN),
        ));
        a.jcc(0x3, miss); // jae
    }
    for k in 0..SLOTS as i64 {
        let this = a.label();
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RAX,
            Register::RSI,
        ));
        a.i(Instruction::with2(
            Code::Sub_r64_rm64,
            Register::RAX,
            mem_at(Register::RDI, k * SLOT_SIZE + SLOT_START),
        ));
        a.i(Instruction::with2(
            Code::Cmp_r64_rm64,
            Register::RAX,
            mem_at(Register::RDI, k * SLOT_SIZE + SLOT_LEN),
        ));
        if !hit {
            a.jcc(JB, found);
            continue;
        }
        a.jcc(JB, this);
        let next = a.label();
        a.jmp(next);
        a.bind(this);
        if k > 0 {
            a.i(Instruction::with2(
                Code::Add_rm64_imm32,
                Register::RDI,
                (k * SLOT_SIZE) as u32,
            ));
        }
        a.jmp(found);
        a.bind(next);
    }
    a.jmp(miss);
    a.bind(found);
}

/// Flags into the frame (`seto al; lahf`: OF in al, SF ZF AF PF CF in ah).
fn flags_save(a: &mut Asm) {
    a.i(Instruction::with1(Code::Seto_rm8, Register::AL));
    a.i(Ok(Instruction::with(Code::Lahf)));
    a.i(Instruction::with2(
        Code::Mov_rm64_r64,
        frame(F_FLAGS),
        Register::RAX,
    ));
}

/// Flags back from the frame (clobbers rax: restore it after).
fn flags_restore(a: &mut Asm) {
    a.i(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::RAX,
        frame(F_FLAGS),
    ));
    // al is 1 when OF was set: 1 + 0x7f overflows, 0 + 0x7f does not.
    a.i(Instruction::with2(
        Code::Add_rm8_imm8,
        Register::AL,
        0x7fu32,
    ));
    a.i(Ok(Instruction::with(Code::Sahf)));
}

fn epilogue(a: &mut Asm, flags_live: bool) {
    if flags_live {
        flags_restore(a);
    }
    for (k, &r) in SCRATCH.iter().enumerate() {
        a.i(Instruction::with2(
            Code::Mov_r64_rm64,
            r,
            frame(8 * k as i64),
        ));
    }
    a.i(Instruction::with2(
        Code::Lea_r64_m,
        Register::RSP,
        frame(DROP),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;
    use iced_x86::{Decoder, DecoderOptions};

    /// A fake thread block, ring and recording for generated code.
    #[repr(C, align(64))]
    struct World {
        block: [u64; 8],
        ctl: [u64; 16],
        data: [[u64; 4]; 16],
        closed: u32,
    }

    const B_KEY: i64 = 0;
    const B_CTL: i64 = 8;
    const B_DATA: i64 = 16;
    const B_MASK: i64 = 24;
    const B_INSIDE: i64 = 32;

    struct Setup {
        world: Box<World>,
        slots: Box<[Slot; SLOTS + 1]>,
        page: *mut u8,
        /// Traced "program" memory and its alias.
        /// (The slot covers its first 64 bytes.)
        dev: Box<[u8; 128]>,
        alias: Box<[u8; 64]>,
        tramp: u64,
        rip: u64,
    }

    fn setup(bytes: &[u8], flags_live: bool) -> Setup {
        setup_with(bytes, flags_live, None)
    }

    /// As [`setup`]; with `table` (its base, the fork canary's address) the trampoline
    /// probes that table for its block instead of using the world's.
    fn setup_with(bytes: &[u8], flags_live: bool, table: Option<(u64, u64)>) -> Setup {
        // SAFETY: a fresh anonymous mapping (tests only: read-write-execute).
        let page = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(page as isize, -1);
        // The "site" ends where a `ret` is: the test calls the trampoline, which jumps back
        // to that `ret`.
        // SAFETY: inside the mapping.
        unsafe { *page = 0xc3 };
        let rip = page as u64 - bytes.len() as u64;
        let mut world = Box::new(World {
            block: [0; 8],
            ctl: [0; 16],
            data: [[0; 4]; 16],
            closed: 0,
        });
        world.ctl[1] = u64::MAX; // pending = IDLE
        world.block[1] = world.ctl.as_ptr() as u64;
        world.block[2] = world.data.as_ptr() as u64;
        world.block[3] = 15;
        let mut dev = Box::new([0u8; 128]);
        dev[64] = 0x99;
        let mut alias = Box::new([0u8; 64]);
        for (i, b) in alias.iter_mut().enumerate() {
            *b = 0x10 + i as u8;
        }
        let slots = Box::new([NO_SLOT, NO_SLOT, NO_SLOT, NO_SLOT, NO_SLOT]);
        let mut d = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
        let ins = d.decode();
        let width = ins.memory_size().size() as u64;
        // The second slot, so that the first one's miss is exercised too.
        slots[1].start.store(dev.as_ptr() as u64, Ordering::Relaxed);
        slots[1]
            .alias
            .store(alias.as_ptr() as u64, Ordering::Relaxed);
        slots[1].mapbits.store(5 << 48, Ordering::Relaxed);
        slots[1].len.store(64 - width + 1, Ordering::Relaxed);
        slots[SLOTS]
            .start
            .store(dev.as_ptr() as u64, Ordering::Relaxed);
        slots[SLOTS].len.store(64, Ordering::Relaxed);
        let env = Env {
            block: match table {
                Some((base, _)) => BlockAt::Table(base),
                None => BlockAt::Fixed(world.block.as_ptr() as u64),
            },
            off_ring_ctl: B_CTL,
            off_ring_data: B_DATA,
            off_ring_mask: B_MASK,
            off_inside: B_INSIDE,
            off_key: B_KEY,
            off_own_stack: 40,
            off_tid_word: 56,
            off_tid: 64,
            closed: &world.closed as *const u32 as u64,
            fork_canary: table.map_or(0, |t| t.1),
            rseq: None,
        };
        let site = Site {
            rip,
            bytes,
            ins,
            flags_live,
            slots: slots.as_ptr() as u64,
            cs: 0,
        };
        let tramp = page as u64 + 64;
        let t = generate(&site, &env, tramp).expect("generated");
        assert!(t.code.len() < 8192 - 64);
        // SAFETY: inside the mapping.
        unsafe { core::ptr::copy_nonoverlapping(t.code.as_ptr(), page.add(64), t.code.len()) };
        Setup {
            world,
            slots,
            page,
            dev,
            alias,
            tramp,
            rip,
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            // SAFETY: mapped in `setup`.
            unsafe { libc::munmap(self.page as *mut libc::c_void, 8192) };
        }
    }

    impl Setup {
        fn dev(&self) -> u64 {
            self.dev.as_ptr() as u64
        }
        fn rec(&self, i: usize) -> [u64; 4] {
            self.world.data[i]
        }
        fn word3(&self, width: u64, kind: u64) -> u64 {
            self.rip | VIA_TRAMPOLINE | width << 48 | kind << 56
        }
        fn head(&self) -> u64 {
            self.world.ctl[0]
        }
        fn check_common(&self, records: u64) {
            assert_eq!(self.head(), records);
            assert_eq!(self.world.ctl[1], u64::MAX, "pending idle again");
            assert_eq!(self.world.block[4], 0, "inside counted in and out");
            assert!(self.slots[0].len.load(Ordering::Relaxed) == 0);
        }
    }

    /// Calls the trampoline with rdi = `rdi`, rcx = `rcx`, rax = `rax`; returns rax, rcx.
    fn call(t: u64, rdi: u64, rcx: u64, rax: u64) -> (u64, u64) {
        let (oa, oc): (u64, u64);
        // SAFETY: the trampoline returns through the `ret` after its site and preserves
        // every register but the instruction's outputs.
        unsafe {
            core::arch::asm!(
                "call {t}",
                t = in(reg) t,
                in("rdi") rdi,
                inout("rcx") rcx => oc,
                inout("rax") rax => oa,
                clobber_abi("C"),
            )
        };
        (oa, oc)
    }

    fn le(b: &[u8]) -> u64 {
        let mut v = [0u8; 8];
        v[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(v)
    }

    #[test]
    fn load_goes_to_the_alias_and_logs_a_read() {
        // mov eax, [rdi+8]
        let s = setup(&[0x8b, 0x47, 0x08], false);
        let (rax, _) = call(s.tramp, s.dev(), 0, 0xdead_beef_0000_0000);
        assert_eq!(rax, le(&s.alias[8..12]));
        let r = s.rec(0);
        assert_ne!(r[0], 0);
        assert_eq!(r[1], (s.dev() + 8) | 5 << 48);
        assert_eq!(r[2], le(&s.alias[8..12]));
        assert_eq!(r[3], s.word3(4, 1));
        s.check_common(1);
        assert!(s.dev[..64].iter().all(|&b| b == 0));
    }

    #[test]
    fn narrow_loads_merge_and_extend_as_the_instruction_does() {
        // mov al, [rdi+3]: the rest of rax kept.
        let s = setup(&[0x8a, 0x47, 0x03], false);
        let (rax, _) = call(s.tramp, s.dev(), 0, 0x1111_2222_3333_4444);
        assert_eq!(rax, 0x1111_2222_3333_4400 | u64::from(s.alias[3]));
        assert_eq!(s.rec(0)[3], s.word3(1, 1));
        // movsx rcx, word [rdi+0x3e]: 0x4f4e sign-extended (positive).
        let s = setup(&[0x48, 0x0f, 0xbf, 0x4f, 0x3e], false);
        let (_, rcx) = call(s.tramp, s.dev(), 0xffff_ffff_ffff_ffff, 0);
        assert_eq!(rcx, 0x4f4e);
        assert_eq!(s.rec(0)[2], 0x4f4e);
        assert_eq!(s.rec(0)[3], s.word3(2, 1));
    }

    #[test]
    fn high_byte_registers_load_and_store() {
        // mov ah, [rdi+5]: bits 8..15 of rax, the rest kept.
        let s = setup(&[0x8a, 0x67, 0x05], false);
        let (rax, _) = call(s.tramp, s.dev(), 0, 0x1111_2222_3333_4444);
        assert_eq!(rax, 0x1111_2222_3333_0044 | u64::from(s.alias[5]) << 8);
        assert_eq!(s.rec(0)[2], u64::from(s.alias[5]));
        assert_eq!(s.rec(0)[3], s.word3(1, 1));
        // mov [rdi+2], ch
        let s = setup(&[0x88, 0x6f, 0x02], false);
        call(s.tramp, s.dev(), 0xabcd, 0);
        assert_eq!(s.alias[2], 0xab);
        assert_eq!(s.rec(0)[2], 0xab);
        assert_eq!(s.rec(0)[3], s.word3(1, 2));
        s.check_common(1);
    }

    #[test]
    fn stores_of_registers_and_immediates() {
        // mov [rdi], rcx
        let s = setup(&[0x48, 0x89, 0x0f], false);
        call(s.tramp, s.dev(), 0x1122_3344_5566_7788, 0);
        assert_eq!(le(&s.alias[0..8]), 0x1122_3344_5566_7788);
        assert_eq!(s.rec(0)[2], 0x1122_3344_5566_7788);
        assert_eq!(s.rec(0)[3], s.word3(8, 2));
        s.check_common(1);
        assert!(s.dev[..64].iter().all(|&b| b == 0));
        // mov byte [rdi+1], 0x5a
        let s = setup(&[0xc6, 0x47, 0x01, 0x5a], false);
        call(s.tramp, s.dev(), 0, 0);
        assert_eq!(s.alias[1], 0x5a);
        assert_eq!(s.alias[2], 0x12);
        assert_eq!(s.rec(0)[2], 0x5a);
        // movnti [rdi+16], eax
        let s = setup(&[0x0f, 0xc3, 0x47, 0x10], false);
        call(s.tramp, s.dev(), 0, 0xffff_ffff_8765_4321);
        assert_eq!(le(&s.alias[16..20]), 0x8765_4321);
        assert_eq!(s.rec(0)[2], 0x8765_4321);
        assert_eq!(s.rec(0)[3], s.word3(4, 2));
    }

    #[test]
    fn read_modify_write_logs_the_read_then_the_write() {
        // add [rdi+4], ecx
        let s = setup(&[0x01, 0x4f, 0x04], false);
        let old = le(&s.alias[4..8]);
        call(s.tramp, s.dev(), 5, 0);
        assert_eq!(le(&s.alias[4..8]), old + 5);
        assert_eq!(s.rec(0)[2], old);
        assert_eq!(s.rec(0)[3], s.word3(4, 1));
        assert_eq!(s.rec(1)[2], old + 5);
        assert_eq!(s.rec(1)[3], s.word3(4, 2));
        assert_eq!(s.rec(0)[1], (s.dev() + 4) | 5 << 48);
        s.check_common(2);
    }

    #[test]
    fn live_flags_come_from_the_instruction() {
        // cmp dword [rdi], eax with flags live: ZF as the compare says.
        let s = setup(&[0x39, 0x07], true);
        let v = le(&s.alias[0..4]);
        let zf = |rax: u64| {
            let z: u64;
            // SAFETY: as `call`; sete reads the flags the trampoline left.
            unsafe {
                core::arch::asm!(
                    "call {t}",
                    "setz al",
                    "movzx eax, al",
                    t = in(reg) s.tramp,
                    in("rdi") s.dev(),
                    inout("rax") rax => z,
                    clobber_abi("C"),
                )
            };
            z
        };
        assert_eq!(zf(v), 1);
        assert_eq!(zf(v + 1), 0);
        // mov eax, [rdi] keeps the flags it found: set ZF by `cmp eax, eax` before.
        let s = setup(&[0x8b, 0x07], true);
        let z: u64;
        // SAFETY: as `call`.
        unsafe {
            core::arch::asm!(
                "xor ecx, ecx",
                "cmp ecx, ecx",
                "call {t}",
                "setz cl",
                "movzx ecx, cl",
                t = in(reg) s.tramp,
                in("rdi") s.dev(),
                out("rcx") z,
                clobber_abi("C"),
            )
        };
        assert_eq!(z, 1);
    }

    #[test]
    fn rsp_based_addresses_are_the_programs() {
        // mov eax, [rsp+rcx]: rcx = device - rsp at the site (the call's return address
        // is on the stack there).
        let s = setup(&[0x8b, 0x04, 0x0c], false);
        let out: u64;
        // SAFETY: as `call`.
        unsafe {
            core::arch::asm!(
                "lea rcx, [rsp - 8]",
                "neg rcx",
                "add rcx, {d}",
                "call {t}",
                d = in(reg) s.dev() + 12,
                t = in(reg) s.tramp,
                out("rax") out,
                out("rcx") _,
                clobber_abi("C"),
            )
        };
        assert_eq!(out, le(&s.alias[12..16]));
        assert_eq!(s.rec(0)[1], (s.dev() + 12) | 5 << 48);
    }

    #[test]
    fn out_of_range_runs_the_original() {
        // mov [rdi], ecx on ordinary memory: done there, nothing logged.
        let s = setup(&[0x89, 0x0f], false);
        let mut plain = [0u32; 2];
        call(s.tramp, plain.as_mut_ptr() as u64, 0x77, 0);
        assert_eq!(plain[0], 0x77);
        s.check_common(0);
        // The last bytes of the range: an access that would run past it is not served.
        let s = setup(&[0x48, 0x8b, 0x07], false);
        let (rax, _) = call(s.tramp, s.dev() + 57, 0, 0);
        assert_eq!(rax, le(&s.dev[57..65]));
        assert_eq!(rax >> 56, 0x99);
        s.check_common(0);
    }

    #[test]
    fn vector_moves_log_their_bytes() {
        // movdqu xmm0, [rdi+16] then read xmm0 back
        let s = setup(&[0xf3, 0x0f, 0x6f, 0x47, 0x10], false);
        let mut out = [0u8; 16];
        // SAFETY: as `call`.
        unsafe {
            core::arch::asm!(
                "call {t}",
                "movdqu [{o}], xmm0",
                t = in(reg) s.tramp,
                o = in(reg) out.as_mut_ptr(),
                in("rdi") s.dev(),
                clobber_abi("C"),
            )
        };
        assert_eq!(out, s.alias[16..32]);
        let r = s.rec(0);
        assert_eq!(r[2], 0);
        assert_eq!(r[3], s.word3(16, 3));
        let d = s.rec(1);
        assert_eq!(le(&s.alias[16..24]), d[0]);
        assert_eq!(le(&s.alias[24..32]), d[1]);
        assert_eq!((d[2], d[3]), (0, 0));
        s.check_common(2);
    }

    #[test]
    fn refused_forms_say_why() {
        let why = |b: &[u8]| {
            let mut d = Decoder::with_ip(64, b, 0x1000, DecoderOptions::NONE);
            supported(&d.decode()).err()
        };
        assert_eq!(why(&[0xf0, 0x01, 0x07]), Some("locked instruction"));
        assert_eq!(why(&[0x8b, 0x05, 0, 0, 0, 0]), Some("RIP-relative operand"));
        assert_eq!(why(&[0x64, 0x8b, 0x07]), Some("fs:/gs: operand"));
        assert_eq!(why(&[0x67, 0x8b, 0x07]), Some("32-bit address"));
        assert_eq!(why(&[0x8a, 0x27]), None);
        assert_eq!(why(&[0x00, 0x27]), Some("high-byte register"));
        assert_eq!(why(&[0xf3, 0xa4]), Some("no single memory operand"));
        assert_eq!(why(&[0x8b, 0x07]), None);
    }

    /// A block table laid out as `threads` lays out its own (stride, hash, size), each
    /// block holding a test block's words (the test `Env`'s offsets).
    struct Table(Vec<u64>);

    impl Table {
        fn new() -> Table {
            use crate::threads::{BLOCK_SIZE, MAX_THREADS};
            Table(vec![0u64; MAX_THREADS * BLOCK_SIZE / 8])
        }
        fn base(&self) -> u64 {
            self.0.as_ptr() as u64
        }
        /// Puts `words` into block `i` (modulo the table's size).
        fn put(&mut self, i: usize, words: &[u64]) {
            use crate::threads::{BLOCK_SIZE, MAX_THREADS};
            let at = (i % MAX_THREADS) * BLOCK_SIZE / 8;
            self.0[at..at + words.len()].copy_from_slice(words);
        }
    }

    /// The calling thread's key and home slot (`rdfsbase` must work here, as patching
    /// needs it anywhere).
    fn my_home() -> Option<(u64, usize)> {
        crate::sys::init_cpu_features();
        assert!(
            crate::sys::fsgsbase(),
            "the kernel does not allow rdfsbase here (FSGSBASE: Linux >= 5.9 on a CPU with it)"
        );
        let key = crate::sys::fs_base() | crate::threads::KEY_BIT;
        Some((key, crate::threads::hash(key)))
    }

    /// The tid of a test block's owner, and its tid word while it lives.
    const OWNER: u32 = 4242;
    static OWNER_WORD: u32 = OWNER;
    /// The tid word of a thread that took over a dead owner's TCB (it holds its own tid).
    static OTHER_WORD: u32 = OWNER + 1;
    /// A dead owner's tid word (zeroed by the kernel).
    static DEAD_WORD: u32 = 0;

    /// A test block's words for `key`, ring `world`'s, owner's stack `[lo, hi)`, owner
    /// [`OWNER`] alive.
    fn block_words(world: &World, key: u64, lo: u64, hi: u64) -> [u64; 9] {
        block_words_tid(world, key, lo, hi, &OWNER_WORD)
    }

    /// As [`block_words`], with the owner's tid word at `word`.
    fn block_words_tid(world: &World, key: u64, lo: u64, hi: u64, word: &u32) -> [u64; 9] {
        [
            key,
            world.ctl.as_ptr() as u64,
            world.data.as_ptr() as u64,
            15,
            0,
            lo,
            hi,
            word as *const u32 as u64,
            u64::from(OWNER),
        ]
    }

    /// This thread's stack, roughly (the trampoline runs a little below the caller).
    fn my_stack() -> (u64, u64) {
        let here = 0u8;
        let sp = &here as *const u8 as u64;
        (sp - (1 << 20), sp + (1 << 20))
    }

    #[test]
    fn table_probe_finds_the_threads_block_past_others() {
        let Some((key, home)) = my_home() else { return };
        let (lo, hi) = my_stack();
        let canary = 1u32;
        let canary_at = &canary as *const u32 as u64;
        // At its home slot.
        let mut t = Table::new();
        let s = setup_with(&[0x8b, 0x47, 0x08], false, Some((t.base(), canary_at)));
        t.put(home, &block_words(&s.world, key, lo, hi));
        let (rax, _) = call(s.tramp, s.dev(), 0, 0);
        assert_eq!(rax, le(&s.alias[8..12]));
        assert_eq!(s.rec(0)[3], s.word3(4, 1));
        s.check_common(1);
        // Past another key, a freed block and a block under its key whose owner's stack
        // is not its stack (a thread sharing its FS base): that block's ring stays empty.
        let mut t = Table::new();
        let s = setup_with(&[0x8b, 0x47, 0x08], false, Some((t.base(), canary_at)));
        let decoy = World {
            block: [0; 8],
            ctl: [0, u64::MAX, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            data: [[0; 4]; 16],
            closed: 0,
        };
        t.put(home, &block_words(&decoy, key ^ 0x1000, lo, hi));
        t.put(home + 1, &[1]);
        t.put(home + 2, &block_words(&decoy, key, 0x1000, 0x2000));
        // And blocks under its key, on its stack, of owners that are gone (the thread
        // inherited their TCB and stack): their tid words hold another tid, or 0.
        t.put(home + 3, &block_words_tid(&decoy, key, lo, hi, &OTHER_WORD));
        t.put(home + 4, &block_words_tid(&decoy, key, lo, hi, &DEAD_WORD));
        t.put(home + 5, &block_words(&s.world, key, lo, hi));
        let (rax, _) = call(s.tramp, s.dev(), 0, 0);
        assert_eq!(rax, le(&s.alias[8..12]));
        s.check_common(1);
        assert_eq!(decoy.ctl[0], 0, "nothing reserved in another block's ring");
        assert!(decoy.data.iter().all(|r| r[3] == 0));
    }

    #[test]
    fn table_probe_misses_to_the_original_instruction() {
        let Some((key, home)) = my_home() else { return };
        let (lo, hi) = my_stack();
        let one = 1u32;
        let zero = 0u32;
        let cases: [(&str, usize, u64, u64, u32, &u32); 7] = [
            // (why, where the block is, its stack, the canary, its owner's tid word)
            (
                "an empty block ends the probe",
                home + 1,
                lo,
                hi,
                1,
                &OWNER_WORD,
            ),
            (
                "the probe's bound",
                home + TABLE_PROBES as usize,
                lo,
                hi,
                1,
                &OWNER_WORD,
            ),
            (
                "an owner's stack that is not the thread's",
                home,
                0x1000,
                0x2000,
                1,
                &OWNER_WORD,
            ),
            ("no owner's stack known", home, 0, 0, 1, &OWNER_WORD),
            (
                "a fork child none of the hooks saw",
                home,
                lo,
                hi,
                0,
                &OWNER_WORD,
            ),
            (
                "a dead owner's TCB and stack, taken by a new thread",
                home,
                lo,
                hi,
                1,
                &OTHER_WORD,
            ),
            ("an owner that is gone", home, lo, hi, 1, &DEAD_WORD),
        ];
        for (why, at, lo, hi, c, word) in cases {
            let canary = if c == 1 { &one } else { &zero };
            let mut t = Table::new();
            let s = setup_with(
                &[0x8b, 0x47, 0x08],
                false,
                Some((t.base(), canary as *const u32 as u64)),
            );
            if at != home {
                // Freed blocks and others' keys up to it (they do not end the probe).
                for k in home..at {
                    if at == home + 1 {
                        break;
                    }
                    t.put(k, &[if k % 2 == 0 { 1 } else { key ^ 0x1000 }]);
                }
            }
            t.put(at, &block_words_tid(&s.world, key, lo, hi, word));
            // The original instruction: the program's memory, not the alias.
            let (rax, _) = call(s.tramp, s.dev(), 0, 0);
            assert_eq!(rax, le(&s.dev[8..12]), "{why}");
            s.check_common(0);
        }
        // Sanity: the same table with the block one slot nearer is found.
        let mut t = Table::new();
        let s = setup_with(
            &[0x8b, 0x47, 0x08],
            false,
            Some((t.base(), &one as *const u32 as u64)),
        );
        for k in home..home + TABLE_PROBES as usize - 1 {
            t.put(k, &[1]);
        }
        t.put(
            home + TABLE_PROBES as usize - 1,
            &block_words(&s.world, key, lo, hi),
        );
        let (rax, _) = call(s.tramp, s.dev(), 0, 0);
        assert_eq!(rax, le(&s.alias[8..12]));
        s.check_common(1);
    }
}
