//! End to end on a real signal frame: a PROT_NONE page, a SIGSEGV handler that decodes the
//! faulting instruction and emulates it through `UcontextCpu` against an alias buffer, then
//! returns. Proves the `ucontext` adapter (GPRs, RFLAGS, RIP, XMM/YMM/ZMM in the XSAVE area).
#![cfg(feature = "ucontext")]

use mmio_trace_x86::ucontext::{thread_segment_bases, UcontextCpu, XsaveLayout};
use mmio_trace_x86::{decode, emulate, Bus, BusFault};
use std::arch::asm;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

const LEN: usize = 2 * 4096;
static TRAP: AtomicU64 = AtomicU64::new(0);
static ALIAS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicUsize = AtomicUsize::new(0);
static LAYOUT: OnceLock<XsaveLayout> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Device accesses go to the alias; anything else is ordinary memory of this process.
struct AliasBus;

impl AliasBus {
    fn map(addr: u64, len: usize) -> *mut u8 {
        let trap = TRAP.load(Ordering::Relaxed);
        if addr >= trap && addr + len as u64 <= trap + LEN as u64 {
            (ALIAS.load(Ordering::Relaxed) + (addr - trap)) as *mut u8
        } else {
            addr as *mut u8
        }
    }
}

impl Bus for AliasBus {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        // SAFETY: test addresses are the alias or live buffers of the test.
        unsafe {
            std::ptr::copy_nonoverlapping(Self::map(addr, buf.len()), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        // SAFETY: as above.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), Self::map(addr, data.len()), data.len())
        };
        Ok(())
    }
}

extern "C" fn on_segv(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handler: ctx is the kernel's ucontext_t for this thread.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let layout = LAYOUT
        .get()
        .expect("layout detected before the first fault");
    let (fs, gs) = thread_segment_bases();
    // SAFETY: uc is the frame's context and we are its only user.
    let mut cpu = unsafe { UcontextCpu::new(uc, layout, fs, gs) };
    let rip = mmio_trace_x86::Cpu::rip(&cpu);
    // SAFETY: RIP points into this test binary's text; 15 bytes stay inside it.
    let code = unsafe { std::slice::from_raw_parts(rip as *const u8, 15) };
    let ok = match decode(code, rip) {
        Ok(d) => emulate(&d, &mut cpu, &mut AliasBus).is_ok(),
        Err(_) => false,
    };
    if !ok {
        // SAFETY: async-signal-safe exit on an unexpected instruction.
        unsafe { libc::_exit(99) };
    }
    FAULTS.fetch_add(1, Ordering::SeqCst);
}

struct Setup {
    trap: *mut u8,
    alias: *mut u8,
}

fn setup() -> Setup {
    LAYOUT.get_or_init(XsaveLayout::detect);
    // SAFETY: plain anonymous mappings and a SIGSEGV handler for this test binary.
    unsafe {
        let alias = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let trap = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(alias != libc::MAP_FAILED && trap != libc::MAP_FAILED);
        for i in 0..LEN {
            *(alias as *mut u8).add(i) = (i * 7 + 3) as u8;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
        TRAP.store(trap as u64, Ordering::SeqCst);
        ALIAS.store(alias as u64, Ordering::SeqCst);
        Setup {
            trap: trap as *mut u8,
            alias: alias as *mut u8,
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings.
        unsafe {
            libc::munmap(self.trap as *mut libc::c_void, LEN);
            libc::munmap(self.alias as *mut libc::c_void, LEN);
        }
    }
}

fn alias_u64(s: &Setup, off: usize) -> u64 {
    // SAFETY: inside the alias mapping.
    unsafe { (s.alias.add(off) as *const u64).read_unaligned() }
}

#[test]
fn gpr_loads_stores_and_rmw_go_through_the_alias() {
    let _g = SERIAL.lock().unwrap();
    let s = setup();
    let before = FAULTS.load(Ordering::SeqCst);
    let p = s.trap.wrapping_add(0x100);
    let v: u32;
    // SAFETY: the access faults and the handler emulates it against the alias.
    unsafe { asm!("mov {v:e}, dword ptr [{p}]", p = in(reg) p, v = out(reg) v) };
    assert_eq!(v as u64, alias_u64(&s, 0x100) & 0xffff_ffff);
    // SAFETY: as above.
    unsafe {
        asm!("mov qword ptr [{p}], {v}", p = in(reg) p, v = in(reg) 0x1122_3344_5566_7788u64)
    };
    assert_eq!(alias_u64(&s, 0x100), 0x1122_3344_5566_7788);
    let carry: u8;
    // SAFETY: as above; the flags of the emulated ADD must reach the program.
    unsafe {
        asm!("add qword ptr [{p}], {v}", "setc {c}", p = in(reg) p, v = in(reg) u64::MAX - 0x1122_3344_5566_7787, c = out(reg_byte) carry)
    };
    assert_eq!((alias_u64(&s, 0x100), carry), (0, 1));
    let mut old: u64 = 5;
    // SAFETY: as above.
    unsafe { asm!("lock xadd qword ptr [{p}], {o}", p = in(reg) p, o = inout(reg) old) };
    assert_eq!((old, alias_u64(&s, 0x100)), (0, 5));
    // rep movsb from device to ordinary memory, each element a separate fault-free bus access.
    let mut dst = [0u8; 37];
    // SAFETY: as above; RSI on the trapped page, RDI on our buffer.
    unsafe {
        asm!("rep movsb", inout("rsi") s.trap.wrapping_add(0x200) => _, inout("rdi") dst.as_mut_ptr() => _, inout("rcx") 37usize => _)
    };
    for (i, b) in dst.iter().enumerate() {
        assert_eq!(*b, ((0x200 + i) * 7 + 3) as u8);
    }
    // A TLS-relative access: fs:[rdi] with rdi = trap - fs_base.
    let (fs, _) = thread_segment_bases();
    let v: u32;
    // SAFETY: as above.
    unsafe {
        asm!("mov {v:e}, dword ptr fs:[{p}]", p = in(reg) (p as u64).wrapping_sub(fs), v = out(reg) v)
    };
    assert_eq!(v, 5);
    assert_eq!(FAULTS.load(Ordering::SeqCst) - before, 6);
}

#[test]
fn xmm_load_lands_in_the_signal_frame() {
    let _g = SERIAL.lock().unwrap();
    let s = setup();
    let mut out = [0u8; 16];
    // SAFETY: the load faults and is emulated into XMM0 of the frame; the store is ordinary.
    unsafe {
        asm!("movdqu xmm0, [{p}]", "movdqu [{o}], xmm0", p = in(reg) s.trap.wrapping_add(0x300), o = in(reg) out.as_mut_ptr(), out("xmm0") _)
    };
    for (i, b) in out.iter().enumerate() {
        assert_eq!(*b, ((0x300 + i) * 7 + 3) as u8);
    }
}

#[test]
fn mmx_load_lands_in_the_x87_registers_of_the_frame() {
    let _g = SERIAL.lock().unwrap();
    let s = setup();
    let mut out = 0u64;
    // SAFETY: the load faults and is emulated into MM0 (x87 register 0 of the frame); EMMS
    // leaves the x87 stack empty for the rest of the test.
    unsafe {
        asm!(
            "movq mm0, [{p}]", "movq [{o}], mm0", "emms",
            p = in(reg) s.trap.wrapping_add(0x700), o = in(reg) &mut out as *mut u64, out("mm0") _
        )
    };
    assert_eq!(out, alias_u64(&s, 0x700));
}

#[target_feature(enable = "avx")]
unsafe fn ymm_load(p: *const u8, out: &mut [u8; 32]) {
    // SAFETY: as in the XMM test; YMM bits 128-255 come from XSAVE component 2.
    unsafe {
        asm!("vmovdqu ymm1, [{p}]", "vmovdqu [{o}], ymm1", "vzeroupper", p = in(reg) p, o = in(reg) out.as_mut_ptr(), out("ymm1") _)
    };
}

#[target_feature(enable = "avx512f")]
unsafe fn zmm_load(p: *const u8, out: &mut [u8; 128]) {
    // SAFETY: ZMM2's upper half is component 6, ZMM17 is component 7.
    unsafe {
        asm!(
            "vmovdqu64 zmm2, [{p}]", "vmovdqu64 zmm17, [{p} + 64]",
            "vmovdqu64 [{o}], zmm2", "vmovdqu64 [{o} + 64], zmm17", "vzeroupper",
            p = in(reg) p, o = in(reg) out.as_mut_ptr(), out("zmm2") _, out("zmm17") _
        )
    };
}

#[target_feature(enable = "avx512f")]
unsafe fn masked_zmm_load(p: *const u8, mask: u64, out: &mut [u8; 64]) {
    // SAFETY: the opmask comes from XSAVE component 5 of the frame; zero-masking clears
    // the disabled dwords.
    unsafe {
        asm!(
            "kmovw k1, {m:e}", "vmovdqu32 zmm3 {{k1}} {{z}}, [{p}]", "vmovdqu64 [{o}], zmm3", "vzeroupper",
            m = in(reg) mask, p = in(reg) p, o = in(reg) out.as_mut_ptr(), out("zmm3") _, out("k1") _
        )
    };
}

#[test]
fn masked_zmm_load_reads_the_opmask_from_the_frame() {
    let _g = SERIAL.lock().unwrap();
    if !std::is_x86_feature_detected!("avx512f") {
        eprintln!("sigsegv: no AVX-512, masked case skipped");
        return;
    }
    let s = setup();
    let mut out = [0xffu8; 64];
    let mask = 0b1010_0000_1111_0001u64;
    // SAFETY: AVX-512F checked above.
    unsafe { masked_zmm_load(s.trap.wrapping_add(0x600), mask, &mut out) };
    for (i, b) in out.iter().enumerate() {
        let want = if mask >> (i / 4) & 1 == 1 {
            ((0x600 + i) * 7 + 3) as u8
        } else {
            0
        };
        assert_eq!(*b, want, "byte {i}");
    }
}

#[test]
fn ymm_and_zmm_loads_land_in_the_xsave_components() {
    let _g = SERIAL.lock().unwrap();
    let s = setup();
    if std::is_x86_feature_detected!("avx") {
        let mut out = [0u8; 32];
        // SAFETY: AVX checked above.
        unsafe { ymm_load(s.trap.wrapping_add(0x400), &mut out) };
        for (i, b) in out.iter().enumerate() {
            assert_eq!(*b, ((0x400 + i) * 7 + 3) as u8, "ymm byte {i}");
        }
    } else {
        eprintln!("sigsegv: no AVX, YMM case skipped");
    }
    if std::is_x86_feature_detected!("avx512f") {
        let mut out = [0u8; 128];
        // SAFETY: AVX-512F checked above.
        unsafe { zmm_load(s.trap.wrapping_add(0x500), &mut out) };
        for (i, b) in out.iter().enumerate() {
            assert_eq!(*b, ((0x500 + i) * 7 + 3) as u8, "zmm byte {i}");
        }
    } else {
        eprintln!("sigsegv: no AVX-512, ZMM case skipped");
    }
}
