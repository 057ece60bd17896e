//! Guarded memory accesses: the fault path's device (alias) and ordinary accesses, made by
//! small assembly routines whose faults come back as an error instead of a crash.
//!
//! An access the tracer makes for the program can fault: the file behind a device mapping
//! was truncated (SIGBUS, as a device removed under its driver), or the ordinary side of a
//! `MOVS` is unmapped (SIGSEGV). The kernel delivers that nested fault to the tracer's own
//! handler, with a context inside the tracer. Each routine here is a leaf that touches no
//! stack and no callee-saved register, so at any of its instructions the return address is
//! at `[rsp]`: the handler ([`fixup`]) makes the faulting routine return at once, with the
//! fault (signal, `si_code`, `si_addr`) in its two return registers. The fault path then
//! hands the fault to the program as the kernel would have delivered it for the program's
//! own instruction. No per-thread state, no allocation, nothing to unwind.

use core::arch::global_asm;

/// What a guarded access reports: `status` 0 and the loaded value (loads, atomics), or a
/// fault (bit 63; the page-fault error code in bits 48-62, `si_addr_lsb` in 40-47, the
/// signal in 32-39, `si_code` in 0-31) with the faulting address in `val`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Ret {
    status: u64,
    val: u64,
}

/// A fault raised by a guarded access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// SIGBUS or SIGSEGV.
    pub signo: i32,
    /// The kernel's `si_code` (e.g. `BUS_ADRERR`).
    pub code: i32,
    /// The kernel's `si_addr_lsb` (machine-check faults; 0 otherwise).
    pub lsb: u16,
    /// The page-fault error code of the faulting access (the context's `REG_ERR`: write,
    /// user, present bits).
    pub err: u16,
    /// The faulting address (as the access saw it: an alias address for device accesses).
    pub addr: u64,
}

const FAULTED: u64 = 1 << 63;

impl Ret {
    fn get(self) -> Result<u64, Fault> {
        if self.status & FAULTED == 0 {
            return Ok(self.val);
        }
        Err(Fault {
            signo: ((self.status >> 32) & 0xff) as i32,
            code: self.status as u32 as i32,
            lsb: ((self.status >> 40) & 0xff) as u16,
            err: ((self.status >> 48) & 0x7fff) as u16,
            addr: self.val,
        })
    }
}

// The routines, System V calling convention, between `mmio_trace_guard_begin` and
// `mmio_trace_guard_end`. They may clobber only caller-saved registers, must not touch
// the stack, and return `Ret` in RAX (status, 0 on success) and RDX (value). Hidden: one
// copy per loaded image, never interposed.
global_asm!(
    ".pushsection .text.mmio_trace_guard,\"ax\",@progbits",
    ".p2align 4",
    ".globl mmio_trace_guard_begin",
    ".hidden mmio_trace_guard_begin",
    "mmio_trace_guard_begin:",
    // Loads of 1..8 bytes: (addr) -> value.
    "mmio_trace_guard_ld1:",
    "    movzx edx, byte ptr [rdi]",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_ld2:",
    "    movzx edx, word ptr [rdi]",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_ld4:",
    "    mov edx, dword ptr [rdi]",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_ld8:",
    "    mov rdx, qword ptr [rdi]",
    "    xor eax, eax",
    "    ret",
    // Stores of 1..8 bytes: (addr, value).
    "mmio_trace_guard_st1:",
    "    mov byte ptr [rdi], sil",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st2:",
    "    mov word ptr [rdi], si",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st4:",
    "    mov dword ptr [rdi], esi",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st8:",
    "    mov qword ptr [rdi], rsi",
    "    xor eax, eax",
    "    ret",
    // Wide loads: (addr, out buffer); wide stores: (addr, data buffer). One access each.
    "mmio_trace_guard_ld16:",
    "    movdqu xmm0, xmmword ptr [rdi]",
    "    movdqu xmmword ptr [rsi], xmm0",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st16:",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_ld32:",
    "    vmovdqu ymm0, ymmword ptr [rdi]",
    "    vmovdqu ymmword ptr [rsi], ymm0",
    "    vzeroupper",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st32:",
    "    vmovdqu ymm0, ymmword ptr [rsi]",
    "    vmovdqu ymmword ptr [rdi], ymm0",
    "    vzeroupper",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_ld64:",
    "    vmovdqu64 zmm0, zmmword ptr [rdi]",
    "    vmovdqu64 zmmword ptr [rsi], zmm0",
    "    vzeroupper",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_st64:",
    "    vmovdqu64 zmm0, zmmword ptr [rsi]",
    "    vmovdqu64 zmmword ptr [rdi], zmm0",
    "    vzeroupper",
    "    xor eax, eax",
    "    ret",
    // XCHG (implicitly locked): (addr, value) -> old.
    "mmio_trace_guard_xchg1:",
    "    mov edx, esi",
    "    xchg byte ptr [rdi], dl",
    "    movzx edx, dl",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xchg2:",
    "    mov edx, esi",
    "    xchg word ptr [rdi], dx",
    "    movzx edx, dx",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xchg4:",
    "    mov edx, esi",
    "    xchg dword ptr [rdi], edx",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xchg8:",
    "    mov rdx, rsi",
    "    xchg qword ptr [rdi], rdx",
    "    xor eax, eax",
    "    ret",
    // LOCK XADD: (addr, addend) -> old.
    "mmio_trace_guard_xadd1:",
    "    mov edx, esi",
    "    lock xadd byte ptr [rdi], dl",
    "    movzx edx, dl",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xadd2:",
    "    mov edx, esi",
    "    lock xadd word ptr [rdi], dx",
    "    movzx edx, dx",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xadd4:",
    "    mov edx, esi",
    "    lock xadd dword ptr [rdi], edx",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_xadd8:",
    "    mov rdx, rsi",
    "    lock xadd qword ptr [rdi], rdx",
    "    xor eax, eax",
    "    ret",
    // LOCK CMPXCHG: (addr, expected, new) -> old (= expected when it stored).
    "mmio_trace_guard_cas1:",
    "    mov eax, esi",
    "    lock cmpxchg byte ptr [rdi], dl",
    "    movzx edx, al",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_cas2:",
    "    mov eax, esi",
    "    lock cmpxchg word ptr [rdi], dx",
    "    movzx edx, ax",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_cas4:",
    "    mov eax, esi",
    "    lock cmpxchg dword ptr [rdi], edx",
    "    mov edx, eax",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_cas8:",
    "    mov rax, rsi",
    "    lock cmpxchg qword ptr [rdi], rdx",
    "    mov rdx, rax",
    "    xor eax, eax",
    "    ret",
    // Ordinary memory: (dst, src, len), byte by byte in ascending order.
    "mmio_trace_guard_copy:",
    "    mov rcx, rdx",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    // A whole REP STOS / REP MOVS (RDI, RSI, RCX, RAX and DF as the caller set them, see
    // `rep_string`): the CPU's own string instruction, which a fault stops with RCX, RSI
    // and RDI on the faulting element.
    "mmio_trace_guard_stos1:",
    "    rep stosb",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_stos2:",
    "    rep stosw",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_stos4:",
    "    rep stosd",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_stos8:",
    "    rep stosq",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_movs1:",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_movs2:",
    "    rep movsw",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_movs4:",
    "    rep movsd",
    "    xor eax, eax",
    "    ret",
    "mmio_trace_guard_movs8:",
    "    rep movsq",
    "    xor eax, eax",
    "    ret",
    ".globl mmio_trace_guard_end",
    ".hidden mmio_trace_guard_end",
    "mmio_trace_guard_end:",
    "    ud2",
    ".popsection",
    // Hidden global aliases of the routines, so Rust can name them.
    ".globl mmio_trace_guard_ld1, mmio_trace_guard_ld2, mmio_trace_guard_ld4, mmio_trace_guard_ld8",
    ".hidden mmio_trace_guard_ld1, mmio_trace_guard_ld2, mmio_trace_guard_ld4, mmio_trace_guard_ld8",
    ".globl mmio_trace_guard_st1, mmio_trace_guard_st2, mmio_trace_guard_st4, mmio_trace_guard_st8",
    ".hidden mmio_trace_guard_st1, mmio_trace_guard_st2, mmio_trace_guard_st4, mmio_trace_guard_st8",
    ".globl mmio_trace_guard_ld16, mmio_trace_guard_ld32, mmio_trace_guard_ld64",
    ".hidden mmio_trace_guard_ld16, mmio_trace_guard_ld32, mmio_trace_guard_ld64",
    ".globl mmio_trace_guard_st16, mmio_trace_guard_st32, mmio_trace_guard_st64",
    ".hidden mmio_trace_guard_st16, mmio_trace_guard_st32, mmio_trace_guard_st64",
    ".globl mmio_trace_guard_xchg1, mmio_trace_guard_xchg2, mmio_trace_guard_xchg4, mmio_trace_guard_xchg8",
    ".hidden mmio_trace_guard_xchg1, mmio_trace_guard_xchg2, mmio_trace_guard_xchg4, mmio_trace_guard_xchg8",
    ".globl mmio_trace_guard_xadd1, mmio_trace_guard_xadd2, mmio_trace_guard_xadd4, mmio_trace_guard_xadd8",
    ".hidden mmio_trace_guard_xadd1, mmio_trace_guard_xadd2, mmio_trace_guard_xadd4, mmio_trace_guard_xadd8",
    ".globl mmio_trace_guard_cas1, mmio_trace_guard_cas2, mmio_trace_guard_cas4, mmio_trace_guard_cas8",
    ".hidden mmio_trace_guard_cas1, mmio_trace_guard_cas2, mmio_trace_guard_cas4, mmio_trace_guard_cas8",
    ".globl mmio_trace_guard_copy",
    ".hidden mmio_trace_guard_copy",
    ".globl mmio_trace_guard_stos1, mmio_trace_guard_stos2, mmio_trace_guard_stos4, mmio_trace_guard_stos8",
    ".hidden mmio_trace_guard_stos1, mmio_trace_guard_stos2, mmio_trace_guard_stos4, mmio_trace_guard_stos8",
    ".globl mmio_trace_guard_movs1, mmio_trace_guard_movs2, mmio_trace_guard_movs4, mmio_trace_guard_movs8",
    ".hidden mmio_trace_guard_movs1, mmio_trace_guard_movs2, mmio_trace_guard_movs4, mmio_trace_guard_movs8",
);

extern "C" {
    fn mmio_trace_guard_begin();
    fn mmio_trace_guard_end();
    fn mmio_trace_guard_ld1(p: u64) -> Ret;
    fn mmio_trace_guard_ld2(p: u64) -> Ret;
    fn mmio_trace_guard_ld4(p: u64) -> Ret;
    fn mmio_trace_guard_ld8(p: u64) -> Ret;
    fn mmio_trace_guard_st1(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_st2(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_st4(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_st8(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_ld16(p: u64, out: *mut u8) -> Ret;
    fn mmio_trace_guard_ld32(p: u64, out: *mut u8) -> Ret;
    fn mmio_trace_guard_ld64(p: u64, out: *mut u8) -> Ret;
    fn mmio_trace_guard_st16(p: u64, data: *const u8) -> Ret;
    fn mmio_trace_guard_st32(p: u64, data: *const u8) -> Ret;
    fn mmio_trace_guard_st64(p: u64, data: *const u8) -> Ret;
    fn mmio_trace_guard_xchg1(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xchg2(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xchg4(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xchg8(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xadd1(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xadd2(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xadd4(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_xadd8(p: u64, v: u64) -> Ret;
    fn mmio_trace_guard_cas1(p: u64, expected: u64, new: u64) -> Ret;
    fn mmio_trace_guard_cas2(p: u64, expected: u64, new: u64) -> Ret;
    fn mmio_trace_guard_cas4(p: u64, expected: u64, new: u64) -> Ret;
    fn mmio_trace_guard_cas8(p: u64, expected: u64, new: u64) -> Ret;
    fn mmio_trace_guard_copy(dst: u64, src: u64, len: usize) -> Ret;
    // Not callable from Rust (their operands are RDI, RSI, RCX, RAX and DF): named by
    // address in `rep_string`.
    fn mmio_trace_guard_stos1();
    fn mmio_trace_guard_stos2();
    fn mmio_trace_guard_stos4();
    fn mmio_trace_guard_stos8();
    fn mmio_trace_guard_movs1();
    fn mmio_trace_guard_movs2();
    fn mmio_trace_guard_movs4();
    fn mmio_trace_guard_movs8();
}

/// If the fault interrupted a guarded routine, makes that routine return the fault and
/// returns `true` (the handler then just returns). Runs first in the fault handlers: a
/// few compares on every fault.
///
/// # Safety
/// Signal-handler context with the kernel's `info`/`uc` of a SIGSEGV or SIGBUS.
pub(crate) unsafe fn fixup(sig: i32, info: *const libc::siginfo_t, uc: *mut libc::c_void) -> bool {
    // SAFETY: the kernel's ucontext of this handler.
    let g = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext.gregs };
    let rip = g[libc::REG_RIP as usize] as u64;
    let begin = mmio_trace_guard_begin as *const () as u64;
    let end = mmio_trace_guard_end as *const () as u64;
    if rip.wrapping_sub(begin) >= end.wrapping_sub(begin) {
        return false;
    }
    // SAFETY: the kernel's siginfo of a fault (si_addr; si_addr_lsb right after it, which
    // only the machine-check codes BUS_MCEERR_AR/AO fill).
    let (code, addr, lsb) = unsafe {
        let i = &*info;
        let mce = sig == libc::SIGBUS && matches!(i.si_code, 4 | 5);
        let lsb = if mce {
            *((info as *const u8).add(24) as *const u16)
        } else {
            0
        };
        (i.si_code, i.si_addr() as u64, lsb)
    };
    let err = g[libc::REG_ERR as usize] as u64 & 0x7fff;
    let rsp = g[libc::REG_RSP as usize] as u64;
    // SAFETY: the routines never touch the stack, so `[rsp]` is their return address, on
    // the interrupted thread's (mapped) stack.
    let ret = unsafe { *(rsp as *const u64) };
    g[libc::REG_RAX as usize] = (FAULTED
        | (err << 48)
        | (u64::from(lsb & 0xff) << 40)
        | ((sig as u64 & 0xff) << 32)
        | u64::from(code as u32)) as i64;
    g[libc::REG_RDX as usize] = addr as i64;
    g[libc::REG_RIP as usize] = ret as i64;
    g[libc::REG_RSP as usize] = rsp.wrapping_add(8) as i64;
    true
}

/// One load of `buf.len()` bytes (1, 2, 4, 8, 16, 32 or 64) at `addr`.
///
/// # Safety
/// `addr` is mapped memory the caller may read (a fault is reported, not raised); 32 needs
/// AVX and 64 AVX-512F.
pub(crate) unsafe fn read(addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
    // SAFETY: caller's contract; every routine accesses exactly the width it is named for.
    let v = unsafe {
        match buf.len() {
            1 => mmio_trace_guard_ld1(addr),
            2 => mmio_trace_guard_ld2(addr),
            4 => mmio_trace_guard_ld4(addr),
            8 => mmio_trace_guard_ld8(addr),
            16 => {
                return mmio_trace_guard_ld16(addr, buf.as_mut_ptr())
                    .get()
                    .map(drop)
            }
            32 => {
                return mmio_trace_guard_ld32(addr, buf.as_mut_ptr())
                    .get()
                    .map(drop)
            }
            64 => {
                return mmio_trace_guard_ld64(addr, buf.as_mut_ptr())
                    .get()
                    .map(drop)
            }
            _ => return Ok(()),
        }
    }
    .get()?;
    let n = buf.len();
    buf.copy_from_slice(&v.to_le_bytes()[..n]);
    Ok(())
}

/// One store of `data.len()` bytes (1, 2, 4, 8, 16, 32 or 64) at `addr`.
///
/// # Safety
/// As [`read`], writable.
pub(crate) unsafe fn write(addr: u64, data: &[u8]) -> Result<(), Fault> {
    let mut w = [0u8; 8];
    let n = data.len().min(8);
    w[..n].copy_from_slice(&data[..n]);
    let v = u64::from_le_bytes(w);
    // SAFETY: caller's contract.
    unsafe {
        match data.len() {
            1 => mmio_trace_guard_st1(addr, v),
            2 => mmio_trace_guard_st2(addr, v),
            4 => mmio_trace_guard_st4(addr, v),
            8 => mmio_trace_guard_st8(addr, v),
            16 => mmio_trace_guard_st16(addr, data.as_ptr()),
            32 => mmio_trace_guard_st32(addr, data.as_ptr()),
            64 => mmio_trace_guard_st64(addr, data.as_ptr()),
            _ => return Ok(()),
        }
    }
    .get()
    .map(drop)
}

/// Copies `len` bytes of ordinary memory, in ascending address order.
///
/// # Safety
/// The ranges are the ones the program's instruction itself would access.
pub(crate) unsafe fn copy(dst: u64, src: u64, len: usize) -> Result<(), Fault> {
    // SAFETY: caller's contract.
    unsafe { mmio_trace_guard_copy(dst, src, len) }
        .get()
        .map(drop)
}

/// Which string instruction [`rep_string`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepOp {
    /// `REP STOS` of the value.
    Stos(u64),
    /// `REP MOVS` from the source address.
    Movs(u64),
}

/// Runs `REP STOS`/`REP MOVS` of `count` elements of `width` (1, 2, 4 or 8) bytes at
/// `dst` (and from the source) with DF = `down`, as the CPU's own instruction: each
/// element one access of its width. Returns how many elements are left (0 unless it
/// faulted: then the fault, which stopped it at the first element left).
///
/// # Safety
/// The ranges are mapped memory the caller may access as the instruction does (a fault
/// is reported, not raised).
pub(crate) unsafe fn rep_string(
    op: RepOp,
    width: u8,
    dst: u64,
    count: u64,
    down: bool,
) -> (u64, Result<(), Fault>) {
    let f: unsafe extern "C" fn() = match (op, width) {
        (RepOp::Stos(_), 1) => mmio_trace_guard_stos1,
        (RepOp::Stos(_), 2) => mmio_trace_guard_stos2,
        (RepOp::Stos(_), 4) => mmio_trace_guard_stos4,
        (RepOp::Stos(_), _) => mmio_trace_guard_stos8,
        (RepOp::Movs(_), 1) => mmio_trace_guard_movs1,
        (RepOp::Movs(_), 2) => mmio_trace_guard_movs2,
        (RepOp::Movs(_), 4) => mmio_trace_guard_movs4,
        (RepOp::Movs(_), _) => mmio_trace_guard_movs8,
    };
    let (value, src) = match op {
        RepOp::Stos(v) => (v, 0),
        RepOp::Movs(s) => (0, s),
    };
    let (status, val, left): (u64, u64, u64);
    // SAFETY: caller's contract. The routine is a leaf that touches only RDI, RSI, RCX,
    // RAX, RDX and the string's memory; DF is set for it and cleared after, also when it
    // returns a fault (the fixup returns to the `cld`).
    unsafe {
        core::arch::asm!(
            "test {down}, {down}",
            "jz 2f",
            "std",
            "2:",
            "call {f}",
            "cld",
            f = in(reg) f,
            down = in(reg) u64::from(down),
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") count => left,
            inout("rax") value => status,
            out("rdx") val,
            clobber_abi("C"),
        );
    }
    (left, Ret { status, val }.get().map(drop))
}

/// The locked operations of [`crate::emu`]'s `atomic_rmw` (width 1, 2, 4 or 8).
pub(crate) enum Locked {
    /// `XCHG`.
    Xchg(u64),
    /// `LOCK XADD`.
    Xadd(u64),
    /// `LOCK CMPXCHG` (expected, new).
    Cas(u64, u64),
}

/// One locked read-modify-write of the `width`-byte word at `addr`; returns the old value.
///
/// # Safety
/// `addr` aligned to `width`, mapped read-write.
pub(crate) unsafe fn locked(addr: u64, width: u32, op: Locked) -> Result<u64, Fault> {
    // SAFETY: caller's contract.
    unsafe {
        match (op, width) {
            (Locked::Xchg(v), 1) => mmio_trace_guard_xchg1(addr, v),
            (Locked::Xchg(v), 2) => mmio_trace_guard_xchg2(addr, v),
            (Locked::Xchg(v), 4) => mmio_trace_guard_xchg4(addr, v),
            (Locked::Xchg(v), _) => mmio_trace_guard_xchg8(addr, v),
            (Locked::Xadd(v), 1) => mmio_trace_guard_xadd1(addr, v),
            (Locked::Xadd(v), 2) => mmio_trace_guard_xadd2(addr, v),
            (Locked::Xadd(v), 4) => mmio_trace_guard_xadd4(addr, v),
            (Locked::Xadd(v), _) => mmio_trace_guard_xadd8(addr, v),
            (Locked::Cas(e, n), 1) => mmio_trace_guard_cas1(addr, e, n),
            (Locked::Cas(e, n), 2) => mmio_trace_guard_cas2(addr, e, n),
            (Locked::Cas(e, n), 4) => mmio_trace_guard_cas4(addr, e, n),
            (Locked::Cas(e, n), _) => mmio_trace_guard_cas8(addr, e, n),
        }
    }
    .get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_accesses_move_exact_values() {
        let mut m = [0u8; 64];
        let a = m.as_mut_ptr() as u64;
        // SAFETY: `m` is ours, 64 bytes; the locked forms use an aligned word inside it.
        unsafe {
            write(a + 1, &[0xaa]).unwrap();
            write(a + 2, &0xbbccu16.to_le_bytes()).unwrap();
            write(a + 4, &0x1122_3344u32.to_le_bytes()).unwrap();
            write(a + 8, &0x5566_7788_99aa_bbccu64.to_le_bytes()).unwrap();
            let mut b = [0u8; 8];
            read(a + 8, &mut b).unwrap();
            assert_eq!(u64::from_le_bytes(b), 0x5566_7788_99aa_bbcc);
            let mut b = [0u8; 2];
            read(a + 2, &mut b).unwrap();
            assert_eq!(b, [0xcc, 0xbb]);
            let wide: [u8; 16] = core::array::from_fn(|i| i as u8);
            write(a + 16, &wide).unwrap();
            let mut back = [0u8; 16];
            read(a + 16, &mut back).unwrap();
            assert_eq!(back, wide);
            let x = (a + 8 + 7) & !7;
            write(x, &5u32.to_le_bytes()).unwrap();
            assert_eq!(locked(x, 4, Locked::Xchg(7)).unwrap(), 5);
            assert_eq!(locked(x, 4, Locked::Xadd(3)).unwrap(), 7);
            assert_eq!(locked(x, 4, Locked::Cas(9, 1)).unwrap(), 10);
            assert_eq!(locked(x, 4, Locked::Cas(10, 1)).unwrap(), 10);
            let mut r = [0u8; 4];
            read(x, &mut r).unwrap();
            assert_eq!(u32::from_le_bytes(r), 1);
            copy(a + 32, a + 16, 16).unwrap();
            assert_eq!(&m[32..48], &wide);
            // Whole string instructions, up and down.
            let mut s = [0u8; 16];
            let p = s.as_mut_ptr() as u64;
            assert_eq!(rep_string(RepOp::Stos(0x0102), 2, p, 4, false).0, 0);
            assert_eq!(&s[..8], &[2, 1, 2, 1, 2, 1, 2, 1]);
            assert_eq!(rep_string(RepOp::Movs(p + 2), 1, p + 15, 3, true).0, 0);
            assert_eq!(&s[13..16], &[2, 1, 2]);
            assert_eq!(&s[..8], &[2, 1, 2, 1, 2, 1, 2, 1]);
        }
    }
}
