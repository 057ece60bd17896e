//! The emulate step of the fault path: complete the faulting instruction through the alias.
//!
//! Decoding and instruction semantics are `mmio-trace-x86`'s ([`x86::decode`],
//! [`x86::emulate`] over the signal context with [`UcontextCpu`]); this module is the
//! [`Bus`] the emulator talks to: every access that falls in a traced region is performed
//! once, at its exact width, on the alias mapping, and logged; other accesses (the
//! non-device side of `MOVS`, the stack of `PUSH m`) go to ordinary memory unlogged.
//! Instructions it cannot complete return `false` and take the step fallback.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use mmio_trace_x86 as x86;
use x86::ucontext::{UcontextCpu, XsaveLayout};
use x86::{AccessDir, Bus, BusFault, Cpu, Rmw};

use iced_x86::{Instruction, Register};

use crate::emit;
use crate::regions::{self, Region};
use crate::sys;

/// The `gregs` index of a 64-bit general-purpose register.
pub(crate) fn greg_index(full: Register) -> Option<usize> {
    Some(match full {
        Register::RAX => libc::REG_RAX,
        Register::RCX => libc::REG_RCX,
        Register::RDX => libc::REG_RDX,
        Register::RBX => libc::REG_RBX,
        Register::RSP => libc::REG_RSP,
        Register::RBP => libc::REG_RBP,
        Register::RSI => libc::REG_RSI,
        Register::RDI => libc::REG_RDI,
        Register::R8 => libc::REG_R8,
        Register::R9 => libc::REG_R9,
        Register::R10 => libc::REG_R10,
        Register::R11 => libc::REG_R11,
        Register::R12 => libc::REG_R12,
        Register::R13 => libc::REG_R13,
        Register::R14 => libc::REG_R14,
        Register::R15 => libc::REG_R15,
        _ => return None,
    } as usize)
}

/// A general-purpose register operand: gregs index, size in bytes, high-byte (AH..BH).
pub(crate) fn gpr(reg: Register) -> Option<(usize, u8, bool)> {
    if !reg.is_gpr() {
        return None;
    }
    let high = matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    );
    Some((greg_index(reg.full_register())?, reg.size() as u8, high))
}

/// Reads a register operand's value from the saved context.
pub(crate) fn get_reg(gregs: &[i64; 23], r: (usize, u8, bool)) -> u64 {
    let v = gregs.get(r.0).copied().unwrap_or(0) as u64;
    if r.2 {
        return (v >> 8) & 0xff;
    }
    match r.1 {
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

/// The effective address of the instruction's memory operand, from the saved registers.
/// `None` for segment-relative (`fs:`/`gs:`) operands.
pub(crate) fn effective_address(instr: &Instruction, gregs: &[i64; 23]) -> Option<u64> {
    if matches!(instr.memory_segment(), Register::FS | Register::GS) {
        return None;
    }
    if instr.is_ip_rel_memory_operand() {
        return Some(instr.ip_rel_memory_address());
    }
    let mut ea = instr.memory_displacement64();
    let base = instr.memory_base();
    if base != Register::None {
        ea = ea.wrapping_add(get_reg(gregs, gpr(base)?));
    }
    let index = instr.memory_index();
    if index != Register::None {
        let i = get_reg(gregs, gpr(index)?);
        ea = ea.wrapping_add(i.wrapping_mul(instr.memory_index_scale() as u64));
    }
    if instr.memory_base().size() == 4 {
        ea &= 0xffff_ffff;
    }
    Some(ea)
}

/// Unaligned single-instruction accesses: x86 `mov` handles any alignment, and
/// `read_volatile` requires alignment, so use inline asm of the exact width.
trait Unaligned<T> {
    unsafe fn read_unaligned_volatile_or_plain(self) -> T;
}
trait UnalignedW<T> {
    unsafe fn write_unaligned_volatile_or_plain(self, v: T);
}

macro_rules! unaligned {
    ($t:ty, $reg:ident, $ptr:literal) => {
        impl Unaligned<$t> for *const $t {
            #[inline(always)]
            unsafe fn read_unaligned_volatile_or_plain(self) -> $t {
                let v: $t;
                // SAFETY: caller guarantees the address is readable for the width.
                unsafe {
                    core::arch::asm!(concat!("mov {v:", stringify!($reg), "}, ", $ptr, " ptr [{p}]"),
                        p = in(reg) self, v = out(reg) v, options(nostack, preserves_flags))
                };
                v
            }
        }
        impl UnalignedW<$t> for *mut $t {
            #[inline(always)]
            unsafe fn write_unaligned_volatile_or_plain(self, v: $t) {
                // SAFETY: caller guarantees the address is writable for the width.
                unsafe {
                    core::arch::asm!(concat!("mov ", $ptr, " ptr [{p}], {v:", stringify!($reg), "}"),
                        p = in(reg) self, v = in(reg) v, options(nostack, preserves_flags))
                };
            }
        }
    };
}
unaligned!(u16, x, "word");
unaligned!(u32, e, "dword");
unaligned!(u64, r, "qword");

static LAYOUT: OnceLock<XsaveLayout> = OnceLock::new();

/// Prepares the emulator outside any signal handler: builds the decoder's tables (which
/// allocate once) and reads the signal frame's XSAVE layout.
pub(crate) fn warm_up() {
    x86::warm_up();
    LAYOUT.get_or_init(XsaveLayout::detect);
}

/// Serialises the read and the write of an emulated `LOCK CMPXCHG16B` (the one locked form
/// the emulator issues as two bus calls) between the threads of this process. Every other
/// locked form is one [`Bus::atomic_rmw`], performed natively on the alias (see there).
static RMW_LOCK: AtomicBool = AtomicBool::new(false);

/// Whether one bus access of `n` bytes can be made as a single instruction of that width.
fn width_ok(n: usize) -> bool {
    match n {
        1 | 2 | 4 | 8 | 16 => true,
        32 => std::arch::is_x86_feature_detected!("avx"),
        64 => std::arch::is_x86_feature_detected!("avx512f"),
        _ => false,
    }
}

struct AliasBus {
    pc: u64,
    locked: bool,
    holding: bool,
}

impl AliasBus {
    fn region_for(&self, addr: u64, len: usize) -> Result<Option<Region>, BusFault> {
        match regions::find_aliased(addr) {
            Some(r) if r.alias != 0 && r.contains(addr + len as u64 - 1) && width_ok(len) => {
                Ok(Some(r))
            }
            Some(_) => Err(BusFault { addr }),
            None if regions::find(addr + len as u64 - 1).is_some() => Err(BusFault { addr }),
            None => Ok(None),
        }
    }

    fn lock_for_rmw(&mut self) {
        if self.locked && !self.holding {
            while RMW_LOCK
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
            self.holding = true;
        }
    }
}

impl Drop for AliasBus {
    fn drop(&mut self) {
        if self.holding {
            RMW_LOCK.store(false, Ordering::Release);
        }
    }
}

impl Bus for AliasBus {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        match self.region_for(addr, buf.len())? {
            Some(r) => {
                self.lock_for_rmw();
                let e = emit::begin();
                // SAFETY: the alias maps the whole region readable; width checked.
                unsafe { alias_read(r.alias_of(addr), buf) };
                e.access(false, addr, r.map_id, buf, self.pc);
            }
            // SAFETY: ordinary memory the instruction itself would have read.
            None => unsafe {
                std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            },
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        match self.region_for(addr, data.len())? {
            Some(r) => {
                if r.prot & libc::PROT_WRITE == 0 {
                    return Err(BusFault { addr });
                }
                self.lock_for_rmw();
                let e = emit::begin();
                // SAFETY: the alias maps the whole region writable when the program's
                // protection allows writes; width checked.
                unsafe { alias_write(r.alias_of(addr), data) };
                e.access(true, addr, r.map_id, data, self.pc);
            }
            // SAFETY: ordinary memory the instruction itself would have written.
            None => unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len())
            },
        }
        Ok(())
    }

    /// The locked forms of 1..8 bytes (`XCHG`, `LOCK CMPXCHG/XADD/ADD/OR/BTS/INC`…): performed
    /// with the native locked instruction on the alias, so it is atomic with respect to every
    /// other access to the word, plain stores of other threads (and processes) included.
    /// `XCHG`, `XADD` and `CMPXCHG` are the same single instruction the program made (a
    /// failed `LOCK CMPXCHG` therefore makes the device see what the hardware makes it see:
    /// one locked read and write-back of the current value). The other forms are a plain
    /// load then a `LOCK CMPXCHG` loop computing the new value from the old (on a race the
    /// device sees one more locked compare-exchange per lost race). Logged as the read of
    /// the old value and the write of the new one. A misaligned word is refused (nothing
    /// was accessed; the step path runs the instruction natively).
    fn atomic_rmw(&mut self, addr: u64, width: u32, op: &mut Rmw<'_>) -> Result<u64, BusFault> {
        let w = width as usize;
        if !matches!(w, 1 | 2 | 4 | 8) || addr % u64::from(width) != 0 {
            return Err(BusFault { addr });
        }
        match self.region_for(addr, w)? {
            Some(r) => {
                if r.prot & libc::PROT_WRITE == 0 {
                    return Err(BusFault { addr });
                }
                let e = emit::begin();
                // SAFETY: the alias maps the whole region read-write (the program may
                // write); aligned, width 1/2/4/8.
                let (old, new) = unsafe { native_rmw(r.alias_of(addr), width, op) };
                e.access_value(false, addr, r.map_id, width as u8, old, self.pc);
                emit::begin().access_value(true, addr, r.map_id, width as u8, new, self.pc);
                Ok(old)
            }
            // SAFETY: ordinary memory the instruction itself would have modified; aligned.
            None => Ok(unsafe { native_rmw(addr, width, op) }.0),
        }
    }
}

/// A locked read-modify-write of the aligned `width`-byte word at `p`: (old, new).
///
/// # Safety
/// `p` aligned to `width` (1, 2, 4 or 8), readable and writable.
unsafe fn native_rmw(p: u64, width: u32, op: &mut Rmw<'_>) -> (u64, u64) {
    macro_rules! go {
        ($a:ty, $t:ty) => {{
            // SAFETY: caller's contract (aligned, valid for the width); the word is only
            // accessed atomically here.
            let a = unsafe { <$a>::from_ptr(p as *mut $t) };
            const S: Ordering = Ordering::SeqCst;
            match op {
                Rmw::Xchg(v) => (a.swap(*v as $t, S) as u64, *v as $t as u64),
                Rmw::Add(v) => {
                    let o = a.fetch_add(*v as $t, S);
                    (o as u64, o.wrapping_add(*v as $t) as u64)
                }
                Rmw::Cmpxchg { expected, new } => {
                    match a.compare_exchange(*expected as $t, *new as $t, S, S) {
                        Ok(o) => (o as u64, *new as $t as u64),
                        Err(o) => (o as u64, o as u64),
                    }
                }
                Rmw::Update(_) => {
                    let mut cur = a.load(S);
                    loop {
                        let n = op.apply(cur as u64, width) as $t;
                        match a.compare_exchange(cur, n, S, S) {
                            Ok(_) => break (cur as u64, n as u64),
                            Err(x) => cur = x,
                        }
                    }
                }
            }
        }};
    }
    match width {
        1 => go!(AtomicU8, u8),
        2 => go!(AtomicU16, u16),
        4 => go!(AtomicU32, u32),
        _ => go!(AtomicU64, u64),
    }
}

/// One access of `buf.len()` bytes as a single load of that width.
///
/// # Safety
/// `addr..addr+len` readable; `len` accepted by [`width_ok`].
unsafe fn alias_read(addr: u64, buf: &mut [u8]) {
    // SAFETY: caller's contract.
    unsafe {
        match buf.len() {
            1 => buf[0] = (addr as *const u8).read_volatile(),
            2 => buf.copy_from_slice(
                &(addr as *const u16)
                    .read_unaligned_volatile_or_plain()
                    .to_le_bytes(),
            ),
            4 => buf.copy_from_slice(
                &(addr as *const u32)
                    .read_unaligned_volatile_or_plain()
                    .to_le_bytes(),
            ),
            8 => buf.copy_from_slice(
                &(addr as *const u64)
                    .read_unaligned_volatile_or_plain()
                    .to_le_bytes(),
            ),
            16 => {
                core::arch::asm!("movdqu {x}, xmmword ptr [{p}]", "movdqu xmmword ptr [{b}], {x}",
                p = in(reg) addr, b = in(reg) buf.as_mut_ptr(), x = out(xmm_reg) _, options(nostack, preserves_flags))
            }
            32 => wide_read32(addr, buf.as_mut_ptr()),
            64 => wide_read64(addr, buf.as_mut_ptr()),
            _ => {}
        }
    }
}

/// One access of `data.len()` bytes as a single store of that width.
///
/// # Safety
/// `addr..addr+len` writable; `len` accepted by [`width_ok`].
unsafe fn alias_write(addr: u64, data: &[u8]) {
    let mut w = [0u8; 8];
    let n = data.len().min(8);
    w[..n].copy_from_slice(&data[..n]);
    let v = u64::from_le_bytes(w);
    // SAFETY: caller's contract.
    unsafe {
        match data.len() {
            1 => (addr as *mut u8).write_volatile(v as u8),
            2 => (addr as *mut u16).write_unaligned_volatile_or_plain(v as u16),
            4 => (addr as *mut u32).write_unaligned_volatile_or_plain(v as u32),
            8 => (addr as *mut u64).write_unaligned_volatile_or_plain(v),
            16 => {
                core::arch::asm!("movdqu {x}, xmmword ptr [{b}]", "movdqu xmmword ptr [{p}], {x}",
                p = in(reg) addr, b = in(reg) data.as_ptr(), x = out(xmm_reg) _, options(nostack, preserves_flags))
            }
            32 => wide_write32(addr, data.as_ptr()),
            64 => wide_write64(addr, data.as_ptr()),
            _ => {}
        }
    }
}

#[target_feature(enable = "avx")]
unsafe fn wide_read32(addr: u64, out: *mut u8) {
    // SAFETY: caller's contract (AVX present, 32 readable bytes at addr, 32 writable at out).
    unsafe {
        core::arch::asm!("vmovdqu {y}, ymmword ptr [{p}]", "vmovdqu ymmword ptr [{o}], {y}",
        p = in(reg) addr, o = in(reg) out, y = out(ymm_reg) _, options(nostack, preserves_flags))
    };
}

#[target_feature(enable = "avx")]
unsafe fn wide_write32(addr: u64, data: *const u8) {
    // SAFETY: as wide_read32.
    unsafe {
        core::arch::asm!("vmovdqu {y}, ymmword ptr [{d}]", "vmovdqu ymmword ptr [{p}], {y}",
        p = in(reg) addr, d = in(reg) data, y = out(ymm_reg) _, options(nostack, preserves_flags))
    };
}

#[target_feature(enable = "avx512f")]
unsafe fn wide_read64(addr: u64, out: *mut u8) {
    // SAFETY: caller's contract (AVX-512F present).
    unsafe {
        core::arch::asm!("vmovdqu64 {z}, zmmword ptr [{p}]", "vmovdqu64 zmmword ptr [{o}], {z}",
        p = in(reg) addr, o = in(reg) out, z = out(zmm_reg) _, options(nostack, preserves_flags))
    };
}

#[target_feature(enable = "avx512f")]
unsafe fn wide_write64(addr: u64, data: *const u8) {
    // SAFETY: as wide_read64.
    unsafe {
        core::arch::asm!("vmovdqu64 {z}, zmmword ptr [{d}]", "vmovdqu64 zmmword ptr [{p}], {z}",
        p = in(reg) addr, d = in(reg) data, z = out(zmm_reg) _, options(nostack, preserves_flags))
    };
}

/// Completes the instruction at `rip` (bytes `code`) that faulted on a traced region:
/// every access performed and logged, registers and RIP updated in `uc`. `false`: nothing
/// was accessed or changed (unsupported instruction, an access straddling a region edge,
/// a width that cannot be done in one access); the caller single-steps instead.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn emulate(code: &[u8], rip: u64, uc: *mut libc::c_void) -> bool {
    let Some(layout) = LAYOUT.get() else {
        return false;
    };
    let Ok(d) = x86::decode(code, rip) else {
        return false;
    };
    // The fault address (the kernel's `si_addr` of a page fault, in the context's CR2).
    // SAFETY: the kernel's ucontext of this handler.
    let fault =
        unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_CR2 as usize] }
            as u64;
    // Segment-relative operands need the real bases (rare: one arch_prctl each); the thread
    // pointer is the FS base for everything else (unused there).
    let ins = d.instruction();
    let (fs, gs) = if matches!(ins.segment_prefix(), Register::FS | Register::GS)
        || matches!(ins.memory_segment(), Register::FS | Register::GS)
    {
        x86::ucontext::thread_segment_bases()
    } else {
        (sys::thread_pointer(), 0)
    };
    // SAFETY: the kernel's ucontext of this handler, used only through `cpu` below.
    let mut cpu = unsafe { UcontextCpu::new(&mut *(uc as *mut libc::ucontext_t), layout, fs, gs) };
    let mut bus = AliasBus {
        pc: rip,
        locked: d.is_locked(),
        holding: false,
    };
    // Refuse up front anything the bus would refuse half-way: a read with side effects
    // must not happen and then be repeated by the step fallback. And the faulting access
    // must be one of those computed (a wrong segment base or decode would otherwise make
    // the emulator touch some other address): else the step path runs it natively.
    let mut covers = false;
    for a in d.accesses(&cpu).as_slice() {
        match bus.region_for(a.addr, a.size as usize) {
            Err(_) => return false,
            Ok(Some(_)) => covers |= fault.wrapping_sub(a.addr) < u64::from(a.size),
            Ok(None) => {}
        }
        if a.dir != AccessDir::Read {
            if let Some(r) = regions::find(a.addr) {
                if r.prot & libc::PROT_WRITE == 0 {
                    return false;
                }
            }
        }
    }
    if !covers {
        return false;
    }
    x86::emulate(&d, &mut cpu, &mut bus).is_ok()
}

/// In a fork child: a locked RMW of a thread that does not exist there holds nothing.
pub(crate) fn after_fork_child() {
    RMW_LOCK.store(false, Ordering::Relaxed);
}

/// The number (0..=31) of vector register `r` (XMM, YMM or ZMM), for [`vec_reg`].
pub(crate) fn vec_number(r: Register) -> Option<u8> {
    let v = r as u32;
    [Register::XMM0, Register::YMM0, Register::ZMM0]
        .into_iter()
        .find_map(|base| {
            (base as u32..base as u32 + 32)
                .contains(&v)
                .then(|| (v - base as u32) as u8)
        })
}

/// Vector register `n` (0..=31) of the interrupted context `uc`: 64 bytes, of which an
/// XMM register is the first 16.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn vec_reg(uc: *mut libc::c_void, n: u8) -> Option<[u8; 64]> {
    let layout = LAYOUT.get()?;
    // SAFETY: the kernel's ucontext of this handler, read through `cpu` only.
    let cpu = unsafe { UcontextCpu::new(&mut *(uc as *mut libc::ucontext_t), layout, 0, 0) };
    Some(cpu.vec(n as usize))
}
