//! Out-of-line execution through a bounce buffer: the fault path for instructions the
//! emulator does not complete (SSE/AVX compares, `popcnt`/`div`/`crc32` with memory, x87
//! loads and stores, `pextrd`, `vmaskmov`…), without pausing any other thread.
//!
//! In the handler: the device is read once, at the operand's width, through the alias into
//! a per-thread *bounce* buffer (and logged with its value); the instruction is copied into
//! a per-thread executable *slot* with its memory operand rewritten to `[scratch]`, the
//! scratch register is pointed at the bounce buffer, and the handler returns into the slot.
//! After the instruction the slot pushes the return target and the program's scratch value
//! onto the program's stack (below its red zone) and jumps to a fixed epilogue
//! (`mmio_trace_ool_tail_*`) that releases the frame, restores the scratch register and
//! returns with `ret 128`: no shared variable is read after the frame is released, so a
//! nested fault may reuse it at once. A store first goes through `mmio_trace_ool_store_*`,
//! which saves the flags, the caller-saved registers and (XSAVE) every vector and x87
//! register before calling [`store_done`], which writes the bounce bytes back to the alias
//! at the operand's width (a masked store: each selected element) and logs them.
//!
//! A program signal pending while the handler ran is delivered at the slot's first
//! instruction, and its handler may touch the device: each thread has a stack of
//! [`DEPTH`] frames (bounce buffer, slot, saved state), the first free one is taken, and
//! each is released by its own epilogue (LIFO). With all frames busy the step path runs.
//!
//! Not run out of line (the step path, or the emulator, keeps them): `call`/`jmp [m]`,
//! anything that moves the stack pointer, string instructions, VSIB gathers/scatters,
//! `LOCK`ed forms and `xchg`, `cmpxchg`, `cmpxchg8b/16b`, `movdir64b`/`enqcmd` (a second,
//! implicit destination), `fs:`/`gs:` and 32-bit-address operands, operands of sizes other
//! than 1, 2, 4, 8, 10, 16, 32 and 64 bytes, masked expands, and instructions whose memory
//! destination is not a known store or read-modify-write form.
//!
//! Limits: a program handler that interrupts a slot sees RIP inside it; one that leaves
//! with `siglongjmp` from there leaves its frame busy (after [`DEPTH`] such, the thread's
//! accesses take the step path). A store's epilogue uses about 3 KiB of the program's
//! stack below its red zone. An 80-bit x87 operand is accessed as 8 bytes then 2.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use iced_x86::{
    Decoder, DecoderOptions, EncodingKind, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use crate::ctx::{self, gregs};
use crate::emu::{self, Emulated};
use crate::guard;
use crate::regions::Region;
use crate::{emit, sys, threads};

/// Frames per thread: the nesting depth of faults inside out-of-line slots (a program
/// signal handler interrupting a slot and touching the device).
pub(crate) const DEPTH: usize = 8;
/// Bytes of code per slot (the instruction, at most 15, and the fixed tail of 30).
const SLOT: usize = 64;
/// Bytes of data per frame.
const FRAME: usize = 256;
const PAGE: usize = 4096;
/// One mapping per thread: the code page (slots) then the data page (frames).
const AREA: usize = 2 * PAGE;
/// `OolFrames::area` of a thread whose area could not be mapped (no executable memory).
const NO_AREA: u64 = 1;

const _: () = assert!(DEPTH * SLOT <= PAGE && DEPTH * FRAME <= PAGE);
const _: () = assert!(core::mem::size_of::<Frame>() <= FRAME);

/// What the slot did with the operand.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Dir {
    Read = 1,
    Write = 2,
    ReadWrite = 3,
}

/// One frame: the bounce buffer, what the epilogue reads, and what a fault inside the slot
/// needs to put the program back on its own instruction.
#[repr(C, align(64))]
struct Frame {
    /// The operand's bytes (offset 0: the slot's `[scratch]`).
    bounce: [u8; 64],
    /// The program's scratch register (pushed by the slot).
    saved_scratch: u64,
    /// The next original instruction (pushed by the slot).
    next_rip: u64,
    /// Nonzero while in use; cleared by the epilogue (`BUSY_OFF`).
    busy: u64,
    /// Where the slot jumps after the instruction (an epilogue entry).
    tail: u64,
    /// The original instruction.
    rip: u64,
    /// The program's address of the operand and its alias.
    addr: u64,
    alias: u64,
    map_id: u64,
    /// Selected elements of a masked operand (bit per element), or all ones.
    select: u64,
    /// Operand width in bytes; element width of a masked operand (0: not masked).
    width: u32,
    elem: u32,
    /// End of the relocated instruction in the slot (a fault below it is the program's).
    insn_len: u32,
    /// gregs index of the scratch register.
    scratch: u32,
    dir: Dir,
}

const BUSY_OFF: usize = 80;
const _: () = assert!(core::mem::offset_of!(Frame, busy) == BUSY_OFF);

/// A thread's out-of-line frames: its area (code page + data page), mapped on first use.
/// One field of the thread's slot; const-constructible and all zeros when unused.
pub struct OolFrames {
    area: AtomicU64,
}

impl OolFrames {
    /// No area yet.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: OolFrames = OolFrames {
        area: AtomicU64::new(0),
    };

    /// The thread's area, mapped now if it has none (`None`: no executable memory).
    fn get(&self) -> Option<u64> {
        let a = self.area.load(Ordering::Relaxed);
        if a == NO_AREA {
            return None;
        }
        if a != 0 {
            return Some(a);
        }
        // SAFETY: a fresh mapping at an address the kernel picks.
        let p = unsafe {
            sys::mmap(
                0,
                AREA,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p < 0 {
            self.area.store(NO_AREA, Ordering::Relaxed);
            return None;
        }
        self.area.store(p as u64, Ordering::Relaxed);
        Some(p as u64)
    }

    /// A new thread took the slot: its frames are all free (a thread that ended inside a
    /// slot left them busy).
    pub(crate) fn reset(&self) {
        let a = self.area.load(Ordering::Relaxed);
        if a > NO_AREA {
            for i in 0..DEPTH {
                // SAFETY: the area is this slot's mapping; its thread is the caller.
                unsafe { (*frame_ptr(a, i)).busy = 0 };
            }
        }
    }

    /// Whether a frame is in use (a thread runs, or was stopped, inside a slot or its
    /// epilogue; or left one with `siglongjmp`). Read with the thread stopped.
    pub(crate) fn any_busy(&self) -> bool {
        let a = self.area.load(Ordering::Relaxed);
        // SAFETY: the area is this slot's live mapping (released only by its thread).
        a > NO_AREA && (0..DEPTH).any(|i| unsafe { (*frame_ptr(a, i)).busy } != 0)
    }

    /// The thread is ending: its area is unmapped (it runs no slot any more).
    pub(crate) fn release(&self) {
        let a = self.area.swap(0, Ordering::Relaxed);
        if a > NO_AREA {
            // SAFETY: the tracer's own mapping, used only by the ending thread.
            unsafe { sys::munmap(a as usize, AREA) };
        }
    }
}

fn frame_ptr(area: u64, i: usize) -> *mut Frame {
    (area as usize + PAGE + i * FRAME) as *mut Frame
}

fn slot_addr(area: u64, i: usize) -> u64 {
    area + (i * SLOT) as u64
}

/// Size of the XSAVE area the store epilogue reserves (a multiple of 64); 0: no XSAVE,
/// stores are not run out of line.
static XSAVE_SIZE: AtomicU64 = AtomicU64::new(0);

/// The state components the store epilogue saves: x87, SSE, AVX, the AVX-512 opmasks and
/// upper registers (not AMX tiles, which need permission, nor supervisor state).
const XSAVE_MASK: u32 = 0xe7;

/// Reads the XSAVE area size (outside any handler).
pub(crate) fn warm_up() {
    let l1 = core::arch::x86_64::__cpuid(1);
    let osxsave = l1.ecx & (1 << 27) != 0;
    if !osxsave {
        return;
    }
    // Leaf 0xD: the enabled components (XCR0's low bits in EAX) and, per component, its
    // size and offset in the standard layout. Only the saved ones count (AMX tiles would
    // add 8 KiB of the program's stack to every store).
    let enabled = core::arch::x86_64::__cpuid_count(0xd, 0).eax & XSAVE_MASK;
    let mut size = 576u64;
    for c in 2..8 {
        if enabled & (1 << c) != 0 {
            let d = core::arch::x86_64::__cpuid_count(0xd, c);
            size = size.max(u64::from(d.ebx) + u64::from(d.eax));
        }
    }
    XSAVE_SIZE.store((size + 63) & !63, Ordering::Relaxed);
}

// The epilogue. Entered from a slot with the program's stack as: [rsp] = the program's
// scratch value, [rsp+8] = the next instruction, then the 128-byte red zone skipped; the
// scratch register holds the frame. `tail_R` releases the frame (a plain store: flags
// untouched), restores R and returns past the red zone. `store_R` first saves the flags
// and caller-saved registers, and `store_common` all extended state (XSAVE, 64-aligned,
// header zeroed), around the call of `store_done(frame)`.
macro_rules! epilogue {
    ($($r:literal),*) => {
        global_asm!(
            $(
                concat!(".globl mmio_trace_ool_tail_", $r),
                concat!(".hidden mmio_trace_ool_tail_", $r),
                concat!("mmio_trace_ool_tail_", $r, ":"),
                concat!("    mov qword ptr [", $r, " + {busy}], 0"),
                concat!("    pop ", $r),
                "    ret 128",
                concat!(".globl mmio_trace_ool_store_", $r),
                concat!(".hidden mmio_trace_ool_store_", $r),
                concat!("mmio_trace_ool_store_", $r, ":"),
                "    pushfq",
                "    push rax",
                "    push rcx",
                "    push rdx",
                "    push rsi",
                "    push rdi",
                "    push r8",
                "    push r9",
                "    push r10",
                "    push r11",
                concat!("    mov rdi, ", $r),
                "    call mmio_trace_ool_store_common",
                "    pop r11",
                "    pop r10",
                "    pop r9",
                "    pop r8",
                "    pop rdi",
                "    pop rsi",
                "    pop rdx",
                "    pop rcx",
                "    pop rax",
                "    popfq",
                concat!("    jmp mmio_trace_ool_tail_", $r),
            )*
            ".globl mmio_trace_ool_store_common",
            ".hidden mmio_trace_ool_store_common",
            "mmio_trace_ool_store_common:",
            "    push rbp",
            "    mov rbp, rsp",
            "    and rsp, -64",
            "    sub rsp, qword ptr [rip + {size}]",
            "    xor eax, eax",
            "    mov qword ptr [rsp + 512], rax",
            "    mov qword ptr [rsp + 520], rax",
            "    mov qword ptr [rsp + 528], rax",
            "    mov qword ptr [rsp + 536], rax",
            "    mov qword ptr [rsp + 544], rax",
            "    mov qword ptr [rsp + 552], rax",
            "    mov qword ptr [rsp + 560], rax",
            "    mov qword ptr [rsp + 568], rax",
            "    mov eax, {mask}",
            "    xor edx, edx",
            "    xsave64 [rsp]",
            "    cld",
            "    call {done}",
            "    mov eax, {mask}",
            "    xor edx, edx",
            "    xrstor64 [rsp]",
            "    mov rsp, rbp",
            "    pop rbp",
            "    ret",
            busy = const BUSY_OFF,
            size = sym XSAVE_SIZE,
            mask = const XSAVE_MASK,
            done = sym store_done,
        );
    };
}
epilogue!("rbx", "rsi", "rdi");

extern "C" {
    fn mmio_trace_ool_tail_rbx();
    fn mmio_trace_ool_tail_rsi();
    fn mmio_trace_ool_tail_rdi();
    fn mmio_trace_ool_store_rbx();
    fn mmio_trace_ool_store_rsi();
    fn mmio_trace_ool_store_rdi();
}

/// The scratch registers: (register, ModRM r/m number, gregs index). Low registers, so the
/// rewritten operand needs no REX.B (and `AH`..`BH` operands keep working), none an
/// implicit operand of an instruction run out of line.
const SCRATCH: [(Register, u8, libc::c_int); 3] = [
    (Register::RBX, 3, libc::REG_RBX),
    (Register::RSI, 6, libc::REG_RSI),
    (Register::RDI, 7, libc::REG_RDI),
];

/// A scratch register the instruction does not name (the memory operand's base and index
/// are no longer used once it is rewritten).
fn scratch_for(ins: &Instruction) -> Option<(Register, u8, libc::c_int)> {
    let used = |reg: Register| {
        (0..ins.op_count()).any(|i| {
            ins.op_kind(i) == OpKind::Register && ins.op_register(i).full_register() == reg
        })
    };
    SCRATCH.iter().copied().find(|s| !used(s.0))
}

fn tails(n: u8) -> (u64, u64) {
    match n {
        3 => (
            mmio_trace_ool_tail_rbx as *const () as u64,
            mmio_trace_ool_store_rbx as *const () as u64,
        ),
        6 => (
            mmio_trace_ool_tail_rsi as *const () as u64,
            mmio_trace_ool_store_rsi as *const () as u64,
        ),
        _ => (
            mmio_trace_ool_tail_rdi as *const () as u64,
            mmio_trace_ool_store_rdi as *const () as u64,
        ),
    }
}

/// The device accesses of an operand of `width` bytes, as (offset, length): one, or for
/// an 80-bit x87 operand eight bytes then two, or with a mask (`elem` bytes per element,
/// `select` the selected ones; `elem` 0: none) one per run of selected elements, as the
/// emulator makes them.
fn pieces(width: usize, elem: usize, select: u64) -> ([(u8, u8); 64], usize) {
    let mut out = [(0u8, 0u8); 64];
    let mut n = 0;
    if elem != 0 {
        emu::masked_pieces(width, elem, select, |off, len| {
            out[n] = (off as u8, len as u8);
            n += 1;
        });
    } else if width == 10 {
        out[0] = (0, 8);
        out[1] = (8, 2);
        n = 2;
    } else {
        out[0] = (0, width as u8);
        n = 1;
    }
    (out, n)
}

/// Called by the store epilogue, in the program's context with all its registers saved:
/// writes the bounce bytes back to the device and logs them. Async signals are blocked
/// meanwhile: a program handler touching the device must not interleave its events with
/// this thread's ring write.
extern "C" fn store_done(f: *mut Frame) {
    let old = ctx::block_async();
    // A SIGBUS of the write-back must reach the tracer's handler (see emu.rs): blocked by
    // the program, the kernel would kill the process from inside the tracer.
    const SIGBUS_BIT: u64 = 1 << (libc::SIGBUS - 1);
    if old & SIGBUS_BIT != 0 {
        sys::sigprocmask(libc::SIG_UNBLOCK, Some(&SIGBUS_BIT), None);
    }
    // SAFETY: the frame is this thread's and busy (released only by the tail after this).
    let f = unsafe { &*f };
    let mut lost = None;
    let (pieces, np) = pieces(f.width as usize, f.elem as usize, f.select);
    for &(off, n) in &pieces[..np] {
        let (off, n) = (off as usize, n as usize);
        {
            let e = emit::begin();
            let data = &f.bounce[off..off + n];
            // SAFETY: the alias maps the region writable (checked by the handler); width
            // 1..64 of a supported size.
            match unsafe { guard::write(f.alias + off as u64, data) } {
                Ok(()) => {
                    crate::model::after_write(f.map_id, f.addr + off as u64, data, f.rip);
                    e.access(true, f.addr + off as u64, f.map_id, data, f.rip)
                }
                Err(fault) => {
                    e.cancel();
                    lost = lost.or(Some(fault.signo));
                }
            }
        }
    }
    ctx::restore_mask(old);
    if lost == Some(libc::SIGBUS) {
        // The device went away under the store (its file truncated): the program gets the
        // SIGBUS it would have had natively, though after its instruction and as a sent
        // signal (`SI_TKILL`), since the instruction has already completed.
        sys::tgkill(crate::pid(), sys::gettid(), libc::SIGBUS);
    }
}

/// Stores run out of line: the memory operand is the destination and is only written.
const STORES: &[Mnemonic] = &[
    Mnemonic::Pextrb,
    Mnemonic::Pextrw,
    Mnemonic::Pextrd,
    Mnemonic::Pextrq,
    Mnemonic::Extractps,
    Mnemonic::Vpextrb,
    Mnemonic::Vpextrw,
    Mnemonic::Vpextrd,
    Mnemonic::Vpextrq,
    Mnemonic::Vextractps,
    Mnemonic::Movss,
    Mnemonic::Movsd,
    Mnemonic::Movlps,
    Mnemonic::Movhps,
    Mnemonic::Movlpd,
    Mnemonic::Movhpd,
    Mnemonic::Movq,
    Mnemonic::Movd,
    Mnemonic::Movdqu,
    Mnemonic::Movdqa,
    Mnemonic::Movups,
    Mnemonic::Movaps,
    Mnemonic::Movupd,
    Mnemonic::Movapd,
    Mnemonic::Movntdq,
    Mnemonic::Movntps,
    Mnemonic::Movntpd,
    Mnemonic::Movnti,
    Mnemonic::Mov,
    Mnemonic::Movbe,
    Mnemonic::Movntq,
    Mnemonic::Vmovss,
    Mnemonic::Vmovsd,
    Mnemonic::Vmovlps,
    Mnemonic::Vmovhps,
    Mnemonic::Vmovlpd,
    Mnemonic::Vmovhpd,
    Mnemonic::Vmovq,
    Mnemonic::Vmovd,
    Mnemonic::Vmovdqu,
    Mnemonic::Vmovdqa,
    Mnemonic::Vmovups,
    Mnemonic::Vmovaps,
    Mnemonic::Vmovupd,
    Mnemonic::Vmovapd,
    Mnemonic::Vmovntdq,
    Mnemonic::Vmovntps,
    Mnemonic::Vmovntpd,
    Mnemonic::Vmovdqu8,
    Mnemonic::Vmovdqu16,
    Mnemonic::Vmovdqu32,
    Mnemonic::Vmovdqu64,
    Mnemonic::Vmovdqa32,
    Mnemonic::Vmovdqa64,
    Mnemonic::Vmaskmovps,
    Mnemonic::Vmaskmovpd,
    Mnemonic::Vpmaskmovd,
    Mnemonic::Vpmaskmovq,
    Mnemonic::Vextracti128,
    Mnemonic::Vextractf128,
    Mnemonic::Vextracti32x4,
    Mnemonic::Vextracti64x2,
    Mnemonic::Vextracti32x8,
    Mnemonic::Vextracti64x4,
    Mnemonic::Vextractf32x4,
    Mnemonic::Vextractf64x2,
    Mnemonic::Vextractf32x8,
    Mnemonic::Vextractf64x4,
    Mnemonic::Vcvtps2ph,
    Mnemonic::Fst,
    Mnemonic::Fstp,
    Mnemonic::Fist,
    Mnemonic::Fistp,
    Mnemonic::Fisttp,
    Mnemonic::Fbstp,
    Mnemonic::Fnstsw,
    Mnemonic::Fnstcw,
    Mnemonic::Stmxcsr,
    Mnemonic::Vstmxcsr,
    Mnemonic::Setb,
    Mnemonic::Setae,
    Mnemonic::Sete,
    Mnemonic::Setne,
    Mnemonic::Setbe,
    Mnemonic::Seta,
    Mnemonic::Sets,
    Mnemonic::Setns,
    Mnemonic::Setp,
    Mnemonic::Setnp,
    Mnemonic::Setl,
    Mnemonic::Setge,
    Mnemonic::Setle,
    Mnemonic::Setg,
    Mnemonic::Seto,
    Mnemonic::Setno,
];

/// Read-modify-write forms run out of line (unlocked: the read and the write-back are two
/// device accesses, as the CPU makes them).
const RMWS: &[Mnemonic] = &[
    Mnemonic::Add,
    Mnemonic::Or,
    Mnemonic::Adc,
    Mnemonic::Sbb,
    Mnemonic::And,
    Mnemonic::Sub,
    Mnemonic::Xor,
    Mnemonic::Not,
    Mnemonic::Neg,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Rol,
    Mnemonic::Ror,
    Mnemonic::Rcl,
    Mnemonic::Rcr,
    Mnemonic::Shl,
    Mnemonic::Sal,
    Mnemonic::Shr,
    Mnemonic::Sar,
    Mnemonic::Shld,
    Mnemonic::Shrd,
    Mnemonic::Bts,
    Mnemonic::Btr,
    Mnemonic::Btc,
    Mnemonic::Xadd,
];

/// Forms whose first operand is memory and only read.
const READS_OP0: &[Mnemonic] = &[
    Mnemonic::Cmp,
    Mnemonic::Test,
    Mnemonic::Bt,
    Mnemonic::Div,
    Mnemonic::Idiv,
    Mnemonic::Mul,
    Mnemonic::Imul,
    Mnemonic::Fld,
    Mnemonic::Fild,
    Mnemonic::Fbld,
    Mnemonic::Fldcw,
    Mnemonic::Ldmxcsr,
    Mnemonic::Vldmxcsr,
    Mnemonic::Fadd,
    Mnemonic::Fsub,
    Mnemonic::Fsubr,
    Mnemonic::Fmul,
    Mnemonic::Fdiv,
    Mnemonic::Fdivr,
    Mnemonic::Fcom,
    Mnemonic::Fcomp,
    Mnemonic::Fiadd,
    Mnemonic::Fisub,
    Mnemonic::Fisubr,
    Mnemonic::Fimul,
    Mnemonic::Fidiv,
    Mnemonic::Fidivr,
    Mnemonic::Ficom,
    Mnemonic::Ficomp,
];

/// Legacy SSE forms with a 16-byte operand that need no alignment (every other one raises
/// #GP on a misaligned operand, which the aligned bounce buffer would hide).
const UNALIGNED_OK: &[Mnemonic] = &[
    Mnemonic::Movups,
    Mnemonic::Movupd,
    Mnemonic::Movdqu,
    Mnemonic::Lddqu,
];

/// VEX/EVEX forms that need their operand aligned to its size.
const ALIGNED_VEX: &[Mnemonic] = &[
    Mnemonic::Vmovaps,
    Mnemonic::Vmovapd,
    Mnemonic::Vmovdqa,
    Mnemonic::Vmovdqa32,
    Mnemonic::Vmovdqa64,
    Mnemonic::Vmovntdq,
    Mnemonic::Vmovntps,
    Mnemonic::Vmovntpd,
    Mnemonic::Vmovntdqa,
];

/// The direction of the instruction's one explicit memory operand, or `None` when it is
/// not run out of line.
fn direction(ins: &Instruction) -> Option<Dir> {
    if ins.op0_kind() != OpKind::Memory {
        // The memory operand is a source.
        return (1..ins.op_count())
            .any(|i| ins.op_kind(i) == OpKind::Memory)
            .then_some(Dir::Read);
    }
    let m = ins.mnemonic();
    if STORES.contains(&m) {
        Some(Dir::Write)
    } else if RMWS.contains(&m) {
        Some(Dir::ReadWrite)
    } else if READS_OP0.contains(&m) {
        Some(Dir::Read)
    } else {
        None
    }
}

/// Where the ModRM byte is, and which prefix carries the B and X register extensions
/// (offset, kind: 0 none, 1 REX, 2 VEX3/EVEX P0). `None`: a form not rewritten (XOP,
/// 3DNow!, and a 32-bit address size, which would truncate the bounce buffer's address).
fn layout(b: &[u8]) -> Option<(usize, usize, u8)> {
    let mut i = 0;
    while matches!(
        b.get(i)?,
        0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0
    ) {
        if b[i] == 0x67 {
            return None;
        }
        i += 1;
    }
    let mut ext = (0, 0);
    if (0x40..=0x4f).contains(b.get(i)?) {
        ext = (i, 1);
        i += 1;
    }
    let modrm = match *b.get(i)? {
        0xc5 => i + 3,
        0xc4 => {
            ext = (i + 1, 2);
            i + 4
        }
        0x62 => {
            ext = (i + 1, 2);
            i + 5
        }
        0x8f if b.get(i + 1)? & 0x1f >= 8 => return None,
        0x0f => match *b.get(i + 1)? {
            0x38 | 0x3a => i + 3,
            0x0f => return None,
            _ => i + 2,
        },
        _ => i + 1,
    };
    Some((modrm, ext.0, ext.1))
}

/// The instruction with its memory operand rewritten to `[scratch]` (ModRM r/m `rm`):
/// B and X extensions cleared, mod 00, SIB and displacement dropped, trailing immediates
/// kept. `None` when the bytes do not match the decoder's view.
fn rewrite(
    ins: &Instruction,
    bytes: &[u8],
    offsets: &iced_x86::ConstantOffsets,
    rm: u8,
) -> Option<([u8; 16], usize)> {
    let len = ins.len();
    let b = bytes.get(..len)?;
    let (m, ext_at, ext) = layout(b)?;
    let modrm = *b.get(m)?;
    let md = modrm >> 6;
    if md == 3 {
        return None;
    }
    let sib = modrm & 7 == 4;
    let mut end = m + 1 + usize::from(sib);
    let disp = match (md, modrm & 7) {
        (1, _) => 1,
        (2, _) => 4,
        (0, 5) => 4,
        (0, 4) if b.get(m + 1)? & 7 == 5 => 4,
        _ => 0,
    };
    if offsets.displacement_size() != disp || (disp != 0 && offsets.displacement_offset() != end) {
        return None;
    }
    end += disp;
    if offsets.has_immediate() && offsets.immediate_offset() != end {
        return None;
    }
    let mut out = [0u8; 16];
    out[..m].copy_from_slice(&b[..m]);
    match ext {
        1 => out[ext_at] &= !0x03,
        2 => out[ext_at] |= 0x60,
        _ => {}
    }
    out[m] = (modrm & 0x38) | rm;
    let tail = b.get(end..)?;
    out[m + 1..m + 1 + tail.len()].copy_from_slice(tail);
    Some((out, m + 1 + tail.len()))
}

/// Masked EVEX forms whose memory elements do not map one to one onto the destination
/// elements the mask selects (permutes, shuffles, packs, inserts, broadcasts, expands…):
/// their operand is read whole, as an unmasked one, so that the instruction computes
/// from the right bytes. (The expands read as many consecutive elements as the mask
/// selects: not run out of line.)
const NOT_ELEMENTWISE: &[Mnemonic] = &[
    Mnemonic::Vpermb,
    Mnemonic::Vpermw,
    Mnemonic::Vpermd,
    Mnemonic::Vpermq,
    Mnemonic::Vpermps,
    Mnemonic::Vpermpd,
    Mnemonic::Vpermilps,
    Mnemonic::Vpermilpd,
    Mnemonic::Vpermi2b,
    Mnemonic::Vpermi2w,
    Mnemonic::Vpermi2d,
    Mnemonic::Vpermi2q,
    Mnemonic::Vpermi2ps,
    Mnemonic::Vpermi2pd,
    Mnemonic::Vpermt2b,
    Mnemonic::Vpermt2w,
    Mnemonic::Vpermt2d,
    Mnemonic::Vpermt2q,
    Mnemonic::Vpermt2ps,
    Mnemonic::Vpermt2pd,
    Mnemonic::Vpshufb,
    Mnemonic::Vpshufd,
    Mnemonic::Vpshufhw,
    Mnemonic::Vpshuflw,
    Mnemonic::Vshufps,
    Mnemonic::Vshufpd,
    Mnemonic::Vshuff32x4,
    Mnemonic::Vshuff64x2,
    Mnemonic::Vshufi32x4,
    Mnemonic::Vshufi64x2,
    Mnemonic::Vunpcklps,
    Mnemonic::Vunpckhps,
    Mnemonic::Vunpcklpd,
    Mnemonic::Vunpckhpd,
    Mnemonic::Vpunpcklbw,
    Mnemonic::Vpunpcklwd,
    Mnemonic::Vpunpckldq,
    Mnemonic::Vpunpcklqdq,
    Mnemonic::Vpunpckhbw,
    Mnemonic::Vpunpckhwd,
    Mnemonic::Vpunpckhdq,
    Mnemonic::Vpunpckhqdq,
    Mnemonic::Valignd,
    Mnemonic::Valignq,
    Mnemonic::Vpalignr,
    Mnemonic::Vpacksswb,
    Mnemonic::Vpackssdw,
    Mnemonic::Vpackuswb,
    Mnemonic::Vpackusdw,
    Mnemonic::Vpmaddwd,
    Mnemonic::Vpmaddubsw,
    Mnemonic::Vpsadbw,
    Mnemonic::Vdbpsadbw,
    Mnemonic::Vpmultishiftqb,
    Mnemonic::Vpdpbusd,
    Mnemonic::Vpdpbusds,
    Mnemonic::Vpdpwssd,
    Mnemonic::Vpdpwssds,
    Mnemonic::Vgf2p8affineqb,
    Mnemonic::Vgf2p8affineinvqb,
    Mnemonic::Vexpandps,
    Mnemonic::Vexpandpd,
    Mnemonic::Vpexpandb,
    Mnemonic::Vpexpandw,
    Mnemonic::Vpexpandd,
    Mnemonic::Vpexpandq,
    Mnemonic::Vinsertf32x4,
    Mnemonic::Vinsertf64x2,
    Mnemonic::Vinsertf32x8,
    Mnemonic::Vinsertf64x4,
    Mnemonic::Vinserti32x4,
    Mnemonic::Vinserti64x2,
    Mnemonic::Vinserti32x8,
    Mnemonic::Vinserti64x4,
    Mnemonic::Vbroadcastf32x2,
    Mnemonic::Vbroadcastf32x4,
    Mnemonic::Vbroadcastf64x2,
    Mnemonic::Vbroadcastf32x8,
    Mnemonic::Vbroadcastf64x4,
    Mnemonic::Vbroadcasti32x2,
    Mnemonic::Vbroadcasti32x4,
    Mnemonic::Vbroadcasti64x2,
    Mnemonic::Vbroadcasti32x8,
    Mnemonic::Vbroadcasti64x4,
    Mnemonic::Vbroadcastss,
    Mnemonic::Vbroadcastsd,
    Mnemonic::Vpbroadcastb,
    Mnemonic::Vpbroadcastw,
    Mnemonic::Vpbroadcastd,
    Mnemonic::Vpbroadcastq,
    Mnemonic::Vmovddup,
    Mnemonic::Vmovshdup,
    Mnemonic::Vmovsldup,
    Mnemonic::Vpshufbitqmb,
    Mnemonic::Vp2intersectd,
    Mnemonic::Vp2intersectq,
];

/// The selected elements of a masked operand: (element width, bit per element), or
/// `None` for an unmasked one.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn mask_of(
    ins: &Instruction,
    uc: *mut libc::c_void,
    width: u32,
) -> Option<Option<(u32, u64)>> {
    let m = ins.mnemonic();
    if matches!(
        m,
        Mnemonic::Vmaskmovps | Mnemonic::Vmaskmovpd | Mnemonic::Vpmaskmovd | Mnemonic::Vpmaskmovq
    ) {
        let e = if matches!(m, Mnemonic::Vmaskmovps | Mnemonic::Vpmaskmovd) {
            4
        } else {
            8
        };
        // The mask is the register before the memory operand's value (vvvv).
        let n = emu::vec_number(ins.op1_register())?;
        // SAFETY: handler context.
        let v = unsafe { emu::vec_reg(uc, n) }?;
        let mut sel = 0u64;
        for i in 0..(width / e) as usize {
            if v[i * e as usize + e as usize - 1] & 0x80 != 0 {
                sel |= 1 << i;
            }
        }
        return Some(Some((e, sel)));
    }
    let k = ins.op_mask();
    let expand = matches!(
        m,
        Mnemonic::Vpexpandb
            | Mnemonic::Vpexpandw
            | Mnemonic::Vpexpandd
            | Mnemonic::Vpexpandq
            | Mnemonic::Vexpandps
            | Mnemonic::Vexpandpd
    );
    if k != Register::None && expand {
        return None;
    }
    if k == Register::None || ins.is_broadcast() || NOT_ELEMENTWISE.contains(&m) {
        return Some(None);
    }
    let e = ins.memory_size().element_size() as u32;
    if e == 0 || width % e != 0 {
        return None;
    }
    // SAFETY: handler context.
    let kv = unsafe { emu::opmask(uc, (k as u32 - Register::K0 as u32) as usize) }?;
    let n = width / e;
    let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    Some(Some((e, kv & all)))
}

/// Runs the instruction at `rip` (bytes `code`), which faulted at `addr` in region `r`, out
/// of line. `Refused`: nothing accessed or changed. `Fault`: the device read faulted (the
/// program's address in it); nothing else changed.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn run(
    r: &Region,
    addr: u64,
    code: &[u8],
    rip: u64,
    uc: *mut libc::c_void,
) -> Emulated {
    if r.alias == 0 {
        return Emulated::Refused;
    }
    let mut dec = Decoder::with_ip(64, code, rip, DecoderOptions::NONE);
    let ins = dec.decode();
    if ins.is_invalid()
        || ins.flow_control() != FlowControl::Next
        || ins.stack_pointer_increment() != 0
        || ins.has_lock_prefix()
        || matches!(
            ins.mnemonic(),
            Mnemonic::Xchg
                | Mnemonic::Cmpxchg8b
                | Mnemonic::Cmpxchg16b
                | Mnemonic::Cmpxchg
                // A second, implicit destination (`es:[reg]`) that may be the device.
                | Mnemonic::Movdir64b
                | Mnemonic::Enqcmd
                | Mnemonic::Enqcmds
        )
        || matches!(ins.memory_segment(), Register::FS | Register::GS)
        || ins.memory_index().is_vector_register()
        || (ins.memory_base() != Register::None
            && ins.memory_base() != Register::RIP
            && ins.memory_base().size() != 8)
        || (0..ins.op_count())
            .filter(|&i| ins.op_kind(i) == OpKind::Memory)
            .count()
            != 1
    {
        return Emulated::Refused;
    }
    let Some(dir) = direction(&ins) else {
        return Emulated::Refused;
    };
    let width = ins.memory_size().size() as u32;
    if !matches!(width, 1 | 2 | 4 | 8 | 10 | 16 | 32 | 64)
        || (width == 32 && !emu::has_avx())
        || (width == 64 && !emu::has_avx512())
    {
        return Emulated::Refused;
    }
    if dir != Dir::Read && XSAVE_SIZE.load(Ordering::Relaxed) == 0 {
        return Emulated::Refused;
    }
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let Some(ea) = emu::effective_address(&ins, g) else {
        return Emulated::Refused;
    };
    let end = ea.wrapping_add(u64::from(width) - 1);
    if !(r.contains(ea) && r.contains(end) && addr.wrapping_sub(ea) < u64::from(width)) {
        return Emulated::Refused;
    }
    if dir != Dir::Read && r.prot & libc::PROT_WRITE == 0 {
        return Emulated::Refused;
    }
    let m = ins.mnemonic();
    let needs_align = (ins.encoding() == EncodingKind::Legacy
        && width == 16
        && !UNALIGNED_OK.contains(&m)
        && !matches!(
            m,
            Mnemonic::Fld | Mnemonic::Fstp | Mnemonic::Fbld | Mnemonic::Fbstp
        ))
        || ALIGNED_VEX.contains(&m);
    if needs_align && ea % u64::from(width) != 0 {
        // The CPU raises #GP for this before any access: the step path runs it natively.
        return Emulated::Refused;
    }
    let Some((_, rm, scratch)) = scratch_for(&ins) else {
        return Emulated::Refused;
    };
    // SAFETY: handler context.
    let Some(mask) = (unsafe { mask_of(&ins, uc, width) }) else {
        return Emulated::Refused;
    };
    if mask.is_some_and(|(_, sel)| sel == 0) {
        return Emulated::Refused;
    }
    let offsets = dec.get_constant_offsets(&ins);
    let Some((new, new_len)) = rewrite(&ins, code, &offsets, rm) else {
        return Emulated::Refused;
    };
    let Some(area) = threads::current().and_then(|s| s.ool.get()) else {
        return Emulated::Refused;
    };
    // SAFETY: the area's frames are this thread's; none is touched by another thread.
    let Some(i) = (0..DEPTH).find(|&i| unsafe { (*frame_ptr(area, i)).busy } == 0) else {
        return Emulated::Refused;
    };
    let fp = frame_ptr(area, i);
    let slot = slot_addr(area, i);
    // SAFETY: as above; the frame is free.
    let f = unsafe { &mut *fp };
    let (load_tail, store_tail) = tails(rm);
    f.tail = if dir == Dir::Read {
        load_tail
    } else {
        store_tail
    };

    // The slot: the instruction, `lea rsp, [rsp-128]`, `push [rip+next_rip]`,
    // `push [rip+saved_scratch]`, `mov scratch, frame`, `jmp [rip+tail]`.
    let mut c = [0u8; SLOT];
    c[..new_len].copy_from_slice(&new[..new_len]);
    let mut n = new_len;
    let mut put = |bytes: &[u8], n: &mut usize| {
        c[*n..*n + bytes.len()].copy_from_slice(bytes);
        *n += bytes.len();
    };
    put(&[0x48, 0x8d, 0x64, 0x24, 0x80], &mut n);
    let rel = |n: usize, field: usize| -> [u8; 4] {
        let next = slot + n as u64 + 6;
        let target = fp as u64 + field as u64;
        (target.wrapping_sub(next) as i64 as i32).to_le_bytes()
    };
    let r1 = rel(n, core::mem::offset_of!(Frame, next_rip));
    put(&[0xff, 0x35], &mut n);
    put(&r1, &mut n);
    let r2 = rel(n, core::mem::offset_of!(Frame, saved_scratch));
    put(&[0xff, 0x35], &mut n);
    put(&r2, &mut n);
    put(&[0x48, 0xb8 + rm], &mut n);
    put(&(fp as u64).to_le_bytes(), &mut n);
    let r3 = rel(n, core::mem::offset_of!(Frame, tail));
    put(&[0xff, 0x25], &mut n);
    put(&r3, &mut n);

    f.rip = rip;
    f.next_rip = rip + ins.len() as u64;
    f.addr = ea;
    f.alias = r.alias_of(ea);
    f.map_id = r.map_id;
    f.width = width;
    f.dir = dir;
    f.insn_len = new_len as u32;
    f.scratch = scratch as u32;
    (f.elem, f.select) = mask.unwrap_or((0, u64::MAX));

    if dir != Dir::Write {
        // The device read: once, at the operand's width (a masked operand: each selected
        // element), logged with its value.
        let (pieces, np) = pieces(
            width as usize,
            mask.map_or(0, |m| m.0 as usize),
            mask.map_or(0, |m| m.1),
        );
        for &(off, len) in &pieces[..np] {
            let (off, len) = (off as usize, len as usize);
            {
                let e = emit::begin();
                let at = f.alias + off as u64;
                // SAFETY: the alias maps the whole region readable; a supported width.
                match unsafe { guard::read(at, &mut f.bounce[off..off + len]) } {
                    Ok(()) => {
                        let b = &mut f.bounce[off..off + len];
                        crate::model::after_read(r.map_id, ea + off as u64, b, rip);
                        e.access(false, ea + off as u64, r.map_id, b, rip)
                    }
                    Err(mut fault) => {
                        e.cancel();
                        if fault.signo == libc::SIGSEGV {
                            // The alias refused: not the program's fault (see emu.rs).
                            return Emulated::Refused;
                        }
                        fault.addr =
                            ea + off as u64 + fault.addr.wrapping_sub(at).min(len as u64 - 1);
                        if dir == Dir::ReadWrite {
                            fault.err |= 2;
                        }
                        return Emulated::Fault(fault);
                    }
                }
            }
        }
    }

    // SAFETY: the slot is this thread's, free, and on its executable page; rewritten only
    // when its bytes change (a write to code that runs costs a pipeline flush).
    unsafe {
        let dst = core::slice::from_raw_parts_mut(slot as *mut u8, SLOT);
        if dst[..n] != c[..n] {
            dst[..n].copy_from_slice(&c[..n]);
        }
    }
    f.saved_scratch = g[scratch as usize] as u64;
    g[scratch as usize] = f.bounce.as_ptr() as i64;
    g[libc::REG_RIP as usize] = slot as i64;
    // Taken last: the frame is in use from the slot's first instruction.
    f.busy = 1;
    Emulated::Done
}

/// The frame whose relocated instruction the context `uc` is on (a fault it raised:
/// SIGFPE of a `div` by a device value of 0, …), if any.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn slot_of(uc: *mut libc::c_void) -> Option<usize> {
    let area = threads::current()?.ool.area.load(Ordering::Relaxed);
    if area <= NO_AREA {
        return None;
    }
    // SAFETY: handler context.
    let pc = unsafe { gregs(uc) }[libc::REG_RIP as usize] as u64;
    let off = pc.wrapping_sub(area);
    if off >= (DEPTH * SLOT) as u64 {
        return None;
    }
    let i = off as usize / SLOT;
    // SAFETY: this thread's frame.
    let f = unsafe { &*frame_ptr(area, i) };
    (f.busy != 0 && (off as usize % SLOT) < f.insn_len as usize).then_some(i)
}

/// Puts the program back on its own instruction after a fault of frame `i`'s relocated
/// instruction (see [`slot_of`]): scratch register restored, frame released, RIP and (for
/// SIGFPE/SIGILL) `si_addr` on the original instruction, so that the fault is handed to
/// the program as if that instruction had raised it. A handler that returns re-runs it
/// (natively: one more device access, as on the hardware).
///
/// # Safety
/// Signal-handler context; `info`/`uc` are the handler's; `i` from [`slot_of`].
pub(crate) unsafe fn leave_slot(i: usize, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let Some(s) = threads::current() else { return };
    let area = s.ool.area.load(Ordering::Relaxed);
    // SAFETY: this thread's frame (slot_of found it busy).
    let f = unsafe { &mut *frame_ptr(area, i) };
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    g[f.scratch as usize] = f.saved_scratch as i64;
    g[libc::REG_RIP as usize] = f.rip as i64;
    f.busy = 0;
    // SAFETY: valid info; a fault's si_addr (SIGFPE, SIGILL: the instruction) follows it.
    unsafe {
        if (*info).si_signo != libc::SIGSEGV && (*info).si_signo != libc::SIGBUS {
            *((info as *mut u8).add(16) as *mut u64) = f.rip;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings (GNU as) of the forms the fault path runs out of line, with every kind of
    /// operand: REX.B/X bases and indexes, SIB, disp8/disp32, RIP-relative with a trailing
    /// immediate, VEX2/VEX3/EVEX (masked, broadcast, disp8*N), x87, mandatory prefixes,
    /// high-byte registers.
    const CASES: &[(&str, &str)] = &[
        (
            "f3430fb8849145230100",
            "popcnt eax,DWORD PTR [r9+r10*4+0x12345]",
        ),
        ("f34c0fb81d00100000", "popcnt r11,QWORD PTR [rip+0x1000]"),
        ("f2410f38f14500", "crc32 eax,DWORD PTR [r13+0x0]"),
        ("f2440f38f0442408", "crc32 r8d,BYTE PTR [rsp+0x8]"),
        ("41f7742440", "div DWORD PTR [r12+0x40]"),
        (
            "66450f3a224c47f802",
            "pinsrd xmm9,DWORD PTR [r15+rax*2-0x8],0x2",
        ),
        (
            "660f3a161d0002000001",
            "pextrd DWORD PTR [rip+0x200],xmm3,0x1",
        ),
        (
            "66470f3a1664087f03",
            "pextrd DWORD PTR [r8+r9*1+0x7f],xmm12,0x3",
        ),
        (
            "c4427d58acce00010000",
            "vpbroadcastd ymm13,DWORD PTR [r14+rcx*8+0x100]",
        ),
        ("c4c105fe4220", "vpaddd ymm0,ymm15,YMMWORD PTR [r10+0x20]"),
        ("c5ed740f", "vpcmpeqb ymm1,ymm2,YMMWORD PTR [rdi]"),
        ("c5e9744b10", "vpcmpeqb xmm1,xmm2,XMMWORD PTR [rbx+0x10]"),
        (
            "62d375203f4b0200",
            "vpcmpeqb k1,ymm17,YMMWORD PTR [r11+0x40]",
        ),
        (
            "62b30d433f54764004",
            "vpcmpneqb k2{k3},zmm30,ZMMWORD PTR [rsi+r14*2+0x1000]",
        ),
        (
            "62d17549fe4102",
            "vpaddd zmm0{k1},zmm1,ZMMWORD PTR [r9+0x80]",
        ),
        ("62d17558fe4101", "vpaddd zmm0,zmm1,DWORD BCST [r9+0x4]"),
        ("f2440f5855f0", "addsd xmm10,QWORD PTR [rbp-0x10]"),
        ("f20f2a043e", "cvtsi2sd xmm0,DWORD PTR [rsi+rdi*1]"),
        ("41d94004", "fld DWORD PTR [r8+0x4]"),
        ("df28", "fild QWORD PTR [rax]"),
        ("41db7d10", "fstp TBYTE PTR [r13+0x10]"),
        ("660f744730", "pcmpeqb xmm0,XMMWORD PTR [rdi+0x30]"),
        ("66410fda3b", "pminub xmm7,XMMWORD PTR [r11]"),
        (
            "c4c2652e642440",
            "vmaskmovps YMMWORD PTR [r12+0x40],ymm3,ymm4",
        ),
        ("c4e26d8c09", "vpmaskmovd ymm1,ymm2,YMMWORD PTR [rcx]"),
        ("326203", "xor ah,BYTE PTR [rdx+0x3]"),
        ("8a3e", "mov bh,BYTE PTR [rsi]"),
        ("438104d978563412", "add DWORD PTR [r9+r11*8],0x12345678"),
        ("66c1630203", "shl WORD PTR [rbx+0x2],0x3"),
        ("416902e8030000", "imul eax,DWORD PTR [r10],0x3e8"),
        ("f3490fbd87ffffff7f", "lzcnt rax,QWORD PTR [r15+0x7fffffff]"),
    ];

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rewritten_operands_address_the_scratch_register_and_keep_everything_else() {
        for &(hex, text) in CASES {
            let code = bytes(hex);
            let mut d = Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE);
            let ins = d.decode();
            assert!(!ins.is_invalid(), "{text}");
            assert_eq!(ins.len(), code.len(), "{text}");
            let (reg, rm, _) = scratch_for(&ins).unwrap();
            let offsets = d.get_constant_offsets(&ins);
            let (new, n) = rewrite(&ins, &code, &offsets, rm).unwrap_or_else(|| panic!("{text}"));
            let mut d2 = Decoder::with_ip(64, &new[..n], 0x2000, DecoderOptions::NONE);
            let out = d2.decode();
            assert_eq!(out.len(), n, "{text}: one whole instruction");
            assert_eq!(out.code(), ins.code(), "{text}: the same form");
            assert_eq!(out.memory_base(), reg, "{text}");
            assert_eq!(out.memory_index(), Register::None, "{text}");
            assert_eq!(out.memory_displacement64(), 0, "{text}");
            assert_eq!(out.memory_size(), ins.memory_size(), "{text}");
            assert_eq!(out.op_mask(), ins.op_mask(), "{text}");
            assert_eq!(out.is_broadcast(), ins.is_broadcast(), "{text}");
            assert_eq!(out.op_count(), ins.op_count(), "{text}");
            for i in 0..ins.op_count() {
                assert_eq!(out.op_kind(i), ins.op_kind(i), "{text}: operand {i}");
                if ins.op_kind(i) == OpKind::Register {
                    assert_eq!(
                        out.op_register(i),
                        ins.op_register(i),
                        "{text}: operand {i}"
                    );
                    assert_ne!(ins.op_register(i).full_register(), reg, "{text}");
                } else if ins.op_kind(i) != OpKind::Memory {
                    assert_eq!(out.immediate(i), ins.immediate(i), "{text}: operand {i}");
                }
            }
            assert!(direction(&ins).is_some(), "{text}: run out of line");
        }
    }

    #[test]
    fn forms_that_cannot_be_rewritten_are_refused() {
        // A 32-bit address, 3DNow!, a register operand (no memory).
        for hex in ["67f30fb83485000000", "0f0f4510b4", "f30fb8c1"] {
            let code = bytes(hex);
            let mut d = Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE);
            let ins = d.decode();
            let offsets = d.get_constant_offsets(&ins);
            assert!(rewrite(&ins, &code, &offsets, 3).is_none(), "{hex}");
        }
    }
}
