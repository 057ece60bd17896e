//! The one clock every writer of a recording stamps events with, and its conversion to the
//! log's clock.
//!
//! A recording uses one of two clocks ([`Clock`], chosen by the recorder at start and
//! written in [`crate::Header::clock`]):
//!
//! - [`Clock::Tsc`]: the time-stamp counter (`rdtsc`), when the CPU says it is invariant
//!   (CPUID leaf `0x8000_0007`, EDX bit 8: it ticks at a constant rate in every power
//!   state, the same on every core) and the kernel still offers it as a clock source (it
//!   withdraws it when it finds the cores disagree). Reading it is one instruction: no system call, no
//!   vDSO, no libc, nothing a signal handler or generated code could not do.
//! - [`Clock::Monotonic`]: `CLOCK_MONOTONIC` nanoseconds, read through the vDSO's
//!   `clock_gettime` (looked up once, at [`init`], in the image the kernel maps into every
//!   process) or, without a vDSO, the raw system call. Never libc's wrapper.
//!
//! The log's clock is `CLOCK_MONOTONIC` ns. For a TSC recording the consumer converts
//! every timestamp with a piecewise-linear map through `(tsc, CLOCK_MONOTONIC)` pairs it
//! takes at every poll ([`TscMap`]): exact at each pair (within the few ns between the two
//! reads of one pair), linear between pairs a poll apart (the kernel's own
//! TSC-to-monotonic map is linear between its updates, and slews by at most 500 ppm), and
//! monotonic by construction. The header carries the first pair and a rate measured at
//! start, for producers that want a rough duration from a tick count.
//!
//! `MMIO_TRACE_CLOCK=tsc|monotonic` ([`ENV_CLOCK`]) forces one (tests); `tsc` where the TSC
//! is not invariant is an error (the kernel's opinion is not asked then).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys;

/// Environment variable that forces the recording's clock: `tsc` or `monotonic`.
pub const ENV_CLOCK: &str = "MMIO_TRACE_CLOCK";

/// Which clock a recording's events are stamped with ([`crate::Header::clock`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `CLOCK_MONOTONIC` nanoseconds.
    Monotonic = 0,
    /// Invariant time-stamp counter ticks.
    Tsc = 1,
}

impl Clock {
    /// The clock with this header value.
    pub fn from_u32(v: u32) -> Option<Clock> {
        match v {
            0 => Some(Clock::Monotonic),
            1 => Some(Clock::Tsc),
            _ => None,
        }
    }

    /// The clock a recording should use: [`ENV_CLOCK`] if set, else the TSC when it is
    /// invariant, else `CLOCK_MONOTONIC`. An unknown value, or `tsc` on a CPU without an
    /// invariant TSC, is an error that says so.
    #[cfg(feature = "std")]
    pub fn choose() -> Result<Clock, String> {
        let Some(raw) = std::env::var_os(ENV_CLOCK) else {
            return Ok(Clock::detect());
        };
        let want = raw.to_str().map(|v| v.trim().to_ascii_lowercase());
        match want.as_deref() {
            Some("tsc") => {
                if invariant_tsc() {
                    Ok(Clock::Tsc)
                } else {
                    Err(format!(
                        "{ENV_CLOCK}=tsc: this CPU's time-stamp counter is not invariant \
                         (CPUID 0x80000007 EDX bit 8 is clear); use {ENV_CLOCK}=monotonic"
                    ))
                }
            }
            Some("monotonic") => Ok(Clock::Monotonic),
            Some("") => Ok(Clock::detect()),
            _ => Err(format!(
                "{ENV_CLOCK}={:?}: expected \"tsc\" or \"monotonic\"",
                raw.to_string_lossy()
            )),
        }
    }

    /// The TSC when it is invariant and the kernel has not found it unreliable (it
    /// drops `tsc` from the clock sources it offers when its cores disagree, as on some
    /// multi-socket machines and VMs), else `CLOCK_MONOTONIC`.
    #[cfg(feature = "std")]
    pub fn detect() -> Clock {
        if invariant_tsc() && kernel_trusts_tsc() {
            Clock::Tsc
        } else {
            Clock::Monotonic
        }
    }

    /// This clock now.
    #[inline]
    pub fn now(self) -> u64 {
        match self {
            Clock::Tsc => rdtsc(),
            Clock::Monotonic => monotonic_ns(),
        }
    }
}

/// Whether the kernel offers the TSC as a clock source (`tsc` in
/// `/sys/devices/system/clocksource/clocksource0/available_clocksource`); true when that
/// cannot be read (no sysfs: the CPU's word is all there is).
#[cfg(feature = "std")]
pub fn kernel_trusts_tsc() -> bool {
    match std::fs::read_to_string(
        "/sys/devices/system/clocksource/clocksource0/available_clocksource",
    ) {
        Ok(s) => s.split_whitespace().any(|c| c == "tsc"),
        Err(_) => true,
    }
}

/// Whether the CPU's time-stamp counter is invariant (CPUID `0x8000_0007` EDX bit 8).
pub fn invariant_tsc() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 0x8000_0000 gives the highest
        // extended leaf, checked before 0x8000_0007 is asked. (Safe to call in newer Rust.)
        #[allow(unused_unsafe)]
        unsafe {
            let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
            max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The time-stamp counter, read after every earlier instruction has completed (LFENCE):
/// an event's time is taken after the store that marked its ring busy is visible (that
/// store is a locked or fenced one), which the consumer's watermark relies on.
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let lo: u32;
        let hi: u32;
        // SAFETY: LFENCE and RDTSC only read the counter into edx:eax.
        unsafe {
            core::arch::asm!(
                "lfence",
                "rdtsc",
                out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags),
            )
        };
        (hi as u64) << 32 | lo as u64
    }
    #[cfg(not(target_arch = "x86_64"))]
    monotonic_ns()
}

/// As [`rdtsc`], and later instructions (loads) wait for the read (LFENCE after): for the
/// consumer, whose clock read must precede its loads of the rings' `pending` words.
#[inline]
pub fn rdtsc_before_loads() -> u64 {
    let t = rdtsc();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: LFENCE only orders instruction execution.
    unsafe {
        core::arch::asm!("lfence", options(nostack, preserves_flags))
    };
    t
}

type ClockGettime = unsafe extern "C" fn(i32, *mut [i64; 2]) -> i32;

/// The vDSO's `clock_gettime` (0: not looked up, 1: none, else its address).
static VDSO_CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);

/// Looks up the vDSO's `clock_gettime` (once per process; later calls return at once).
/// Call it before the first event from code that may run in a signal handler: the lookup
/// reads memory only, but it is not free. Without it, [`monotonic_ns`] looks up on first
/// use.
pub fn init() {
    if VDSO_CLOCK_GETTIME.load(Ordering::Relaxed) != 0 {
        return;
    }
    init_with_vdso(sys::auxval(libc::AT_SYSINFO_EHDR).unwrap_or(0) as usize);
}

/// As [`init`], with the vDSO's address given (`AT_SYSINFO_EHDR`; 0: none), for a caller
/// that has the auxiliary vector at hand (an injected agent, which the recorder tells).
/// The first call wins.
pub fn init_with_vdso(base: usize) {
    if VDSO_CLOCK_GETTIME.load(Ordering::Relaxed) != 0 {
        return;
    }
    // SAFETY: the kernel maps a whole, valid ELF image at AT_SYSINFO_EHDR for the life of
    // the process (0: none).
    let f = if base == 0 {
        None
    } else {
        unsafe { vdso_symbol(base, b"__vdso_clock_gettime") }
    };
    VDSO_CLOCK_GETTIME.store(f.unwrap_or(1), Ordering::Relaxed);
}

/// The address of dynamic symbol `name` in the ELF image mapped at `base` (the vDSO: one
/// image mapped whole from file offset 0, so that file offsets are offsets from `base`).
///
/// # Safety
/// `base` must be the start of a complete, mapped ELF64 image.
unsafe fn vdso_symbol(base: usize, name: &[u8]) -> Option<usize> {
    // SAFETY (whole function): reads within the image the caller vouches for, through
    // unaligned reads of the ELF64 structures at the offsets their headers give.
    unsafe {
        let rd64 = |off: usize| (base as *const u8).add(off).cast::<u64>().read_unaligned();
        let rd32 = |off: usize| (base as *const u8).add(off).cast::<u32>().read_unaligned();
        let rd16 = |off: usize| (base as *const u8).add(off).cast::<u16>().read_unaligned();
        if rd32(0) != u32::from_le_bytes(*b"\x7fELF") || *(base as *const u8).add(4) != 2 {
            return None;
        }
        // The load bias: where the image's virtual address 0 is (the first PT_LOAD maps
        // file offset 0).
        let (phoff, phentsize, phnum) = (rd64(0x20) as usize, rd16(0x36) as usize, rd16(0x38));
        let mut bias = None;
        for i in 0..phnum as usize {
            let ph = phoff + i * phentsize;
            if rd32(ph) == 1 {
                let (offset, vaddr) = (rd64(ph + 8), rd64(ph + 16));
                bias = Some(base.wrapping_sub(vaddr.wrapping_sub(offset) as usize));
                break;
            }
        }
        let bias = bias?;
        // The dynamic symbol table and its strings, from the section headers.
        let (shoff, shentsize, shnum) = (rd64(0x28) as usize, rd16(0x3a) as usize, rd16(0x3c));
        for i in 0..shnum as usize {
            let sh = shoff + i * shentsize;
            if rd32(sh + 4) != 11 {
                continue; // not SHT_DYNSYM
            }
            let (symoff, size, entsize) = (
                rd64(sh + 0x18) as usize,
                rd64(sh + 0x20) as usize,
                rd64(sh + 0x38) as usize,
            );
            let strsec = shoff + rd32(sh + 0x28) as usize * shentsize;
            let stroff = rd64(strsec + 0x18) as usize;
            if entsize == 0 {
                return None;
            }
            for k in 0..size / entsize {
                let sym = symoff + k * entsize;
                let value = rd64(sym + 8);
                if value == 0 {
                    continue;
                }
                let s = (base as *const u8).add(stroff + rd32(sym) as usize);
                let mut j = 0;
                while j < name.len() && *s.add(j) == name[j] {
                    j += 1;
                }
                if j == name.len() && *s.add(j) == 0 {
                    return Some(bias.wrapping_add(value as usize));
                }
            }
        }
        None
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, through the vDSO when the process has one (no libc,
/// no system call), else the raw system call. Async-signal-safe.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut f = VDSO_CLOCK_GETTIME.load(Ordering::Relaxed);
    if f == 0 {
        init();
        f = VDSO_CLOCK_GETTIME.load(Ordering::Relaxed);
    }
    if f > 1 {
        let mut ts = [0i64; 2];
        // SAFETY: the vDSO's clock_gettime, found at `init`, with CLOCK_MONOTONIC (1) and a
        // valid timespec; it is async-signal-safe and needs no libc state.
        let r = unsafe { core::mem::transmute::<usize, ClockGettime>(f)(1, &mut ts) };
        if r == 0 {
            return ts[0] as u64 * 1_000_000_000 + ts[1] as u64;
        }
    }
    sys::monotonic_ns_syscall()
}

/// One `(tsc, CLOCK_MONOTONIC ns)` pair: the monotonic clock read between two TSC reads,
/// paired with their midpoint; the tightest of a few tries (a try interrupted between its
/// reads is wide).
pub fn sample_pair() -> (u64, u64) {
    let (t, ns, _) = sample();
    (t, ns)
}

/// As [`sample_pair`], with the pair's width: the ticks between its two TSC reads (the
/// pair is exact to within half of it).
pub fn sample() -> (u64, u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..4 {
        let a = rdtsc();
        let ns = monotonic_ns();
        let b = rdtsc_before_loads();
        let width = b.wrapping_sub(a);
        if width < best.0 {
            best = (width, a + width / 2, ns);
        }
    }
    (best.1, best.2, best.0)
}

/// TSC ticks to nanoseconds as a 32.32 fixed-point factor, measured over `over_ns`.
pub fn measure_rate(over_ns: u64) -> u64 {
    let (t0, n0) = sample_pair();
    sys::sleep_ns(over_ns);
    let (t1, n1) = sample_pair();
    rate(t0, n0, t1, n1).unwrap_or(1 << 32)
}

/// The 32.32 factor that maps ticks `t0..t1` onto ns `n0..n1` (`None` for an empty span).
pub(crate) fn rate(t0: u64, n0: u64, t1: u64, n1: u64) -> Option<u64> {
    let dt = t1.checked_sub(t0).filter(|&d| d > 0)?;
    let dn = n1.saturating_sub(n0) as u128;
    Some(((dn << 32) / dt as u128).min(u64::MAX as u128) as u64)
}

/// `ns + (t - t0) * mult / 2^32`, for `t` on either side of `t0`, saturating.
#[inline]
fn apply(t0: u64, ns: u64, mult: u64, t: u64) -> u64 {
    if t >= t0 {
        let d = ((t - t0) as u128 * mult as u128) >> 32;
        ns.saturating_add(d.min(u64::MAX as u128) as u64)
    } else {
        let d = ((t0 - t) as u128 * mult as u128) >> 32;
        ns.saturating_sub(d.min(u64::MAX as u128) as u64)
    }
}

/// The consumer's TSC-to-`CLOCK_MONOTONIC` map: piecewise linear through anchor pairs at
/// least [`TscMap::SPACING_NS`] apart, plus the latest pair (taken at every poll). A
/// value between two anchors converts the same way for as long as both are kept (the
/// merge compares values converted at different polls); the last segment, up to the
/// latest pair, moves a little with each poll (by the clock's rate change over one
/// spacing: parts per million of a millisecond), which the consumer's monotonic clamp
/// absorbs.
#[derive(Debug)]
pub struct TscMap {
    /// Anchor pairs, oldest first (never empty), with each segment's factor to the next.
    anchors: alloc::collections::VecDeque<(u64, u64, u64)>,
    /// The latest pair and the factor from the last anchor to it.
    head: (u64, u64, u64),
    /// The factor measured at start (used while only one pair is known).
    start_mult: u64,
    spacing_ticks: u64,
}

impl TscMap {
    /// Minimum spacing of anchors, in ns.
    pub const SPACING_NS: u64 = 1_000_000;

    /// A map through `(tsc, ns)` with rate `mult` (ticks to ns, 32.32) until more pairs come.
    pub fn new(tsc: u64, ns: u64, mult: u64) -> TscMap {
        let mult = mult.max(1);
        TscMap {
            anchors: [(tsc, ns, mult)].into(),
            head: (tsc, ns, mult),
            start_mult: mult,
            spacing_ticks: ((Self::SPACING_NS as u128) << 32)
                .checked_div(mult as u128)
                .unwrap_or(1)
                .clamp(1, u64::MAX as u128) as u64,
        }
    }

    /// Adds the pair taken now (`tsc` and `ns` must not go backwards; a pair that does is
    /// ignored).
    pub fn add(&mut self, tsc: u64, ns: u64) {
        let &(lt, ln, _) = self.anchors.back().expect("never empty");
        if tsc <= self.head.0 || ns < self.head.1 || tsc <= lt {
            return;
        }
        let mult = rate(lt, ln, tsc, ns).unwrap_or(self.start_mult);
        if tsc - lt >= self.spacing_ticks {
            if let Some(last) = self.anchors.back_mut() {
                last.2 = mult;
            }
            self.anchors.push_back((tsc, ns, mult));
            self.head = (tsc, ns, mult);
        } else {
            self.head = (tsc, ns, mult);
        }
    }

    /// Adds a pair from [`sample`] unless it is wide (its reads were interrupted: more
    /// than 1/64 of the anchor spacing, about 15 µs, apart); returns whether it was added.
    pub fn add_sample(&mut self, tsc: u64, ns: u64, width: u64) -> bool {
        if width > self.spacing_ticks / 64 {
            return false;
        }
        self.add(tsc, ns);
        true
    }

    /// Forgets anchors no value at or above `tsc` needs (values below the oldest kept
    /// anchor convert along its segment).
    pub fn forget_before(&mut self, tsc: u64) {
        while self.anchors.len() > 1 && self.anchors[1].0 <= tsc {
            self.anchors.pop_front();
        }
    }

    /// `t` in `CLOCK_MONOTONIC` ns.
    pub fn to_ns(&self, t: u64) -> u64 {
        let &(lt, ln, lm) = self.anchors.back().expect("never empty");
        if t >= lt {
            // The last segment (to the latest pair, and on past it).
            let mult = if self.head.0 > lt { self.head.2 } else { lm };
            return apply(lt, ln, mult, t);
        }
        // The anchor at or before t (or the first one), and its factor to the next.
        let i = self.anchors.partition_point(|a| a.0 <= t).saturating_sub(1);
        let (at, an, am) = self.anchors[i];
        apply(at, an, am, t)
    }

    /// Anchors kept (for tests and diagnostics).
    pub fn anchors(&self) -> usize {
        self.anchors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vdso_clock_agrees_with_the_system_call() {
        init();
        assert!(VDSO_CLOCK_GETTIME.load(Ordering::Relaxed) > 1, "vDSO found");
        let a = sys::monotonic_ns_syscall();
        let b = monotonic_ns();
        let c = sys::monotonic_ns_syscall();
        assert!(a <= b && b <= c, "{a} {b} {c}");
    }

    #[test]
    fn the_auxv_file_gives_what_getauxval_gives() {
        // SAFETY: getauxval has no preconditions.
        let libc_vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as u64;
        assert_ne!(libc_vdso, 0, "this test needs a vDSO");
        assert_eq!(sys::auxval_proc(libc::AT_SYSINFO_EHDR), Some(libc_vdso));
        // SAFETY: as above.
        let pagesz = unsafe { libc::getauxval(libc::AT_PAGESZ) } as u64;
        assert_eq!(sys::auxval_proc(libc::AT_PAGESZ), Some(pagesz));
        assert_eq!(sys::auxval_proc(0xdead), None);
    }

    #[test]
    fn the_map_is_exact_at_anchors_linear_between_and_monotonic() {
        // 3 ticks per ns at first, then 2.
        let mut m = TscMap::new(1_000, 100, (1u64 << 32) / 3);
        m.add(1_000 + 3_000_000, 100 + 1_000_000);
        m.add(1_000 + 3_000_000 + 4_000_000, 100 + 3_000_000);
        assert_eq!(m.anchors(), 3);
        assert_eq!(m.to_ns(1_000), 100);
        assert_eq!(m.to_ns(3_001_000), 1_000_100);
        assert_eq!(m.to_ns(7_001_000), 3_000_100);
        assert!(m.to_ns(1_500_000).abs_diff(100 + 499_666) <= 1);
        assert!(m.to_ns(5_001_000).abs_diff(2_000_100) <= 1);
        let mut last = 0;
        for t in (0..9_000_000).step_by(997) {
            let v = m.to_ns(t);
            assert!(v >= last, "not monotonic at {t}");
            last = v;
        }
        // A close pair moves only the head; anchors stay.
        m.add(7_001_000 + 10, 3_000_100 + 5);
        assert_eq!(m.anchors(), 3);
        assert_eq!(m.to_ns(3_001_000), 1_000_100);
        // A wide sample (its reads were interrupted) is not trusted.
        assert!(!m.add_sample(20_000_000, 9_000_000, 1_000_000));
        assert_eq!(m.to_ns(7_001_000), 3_000_100);
        m.forget_before(6_000_000);
        assert_eq!(m.anchors(), 2);
        assert!(m.to_ns(5_001_000).abs_diff(2_000_100) <= 1);
    }
}
