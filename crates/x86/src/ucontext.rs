//! [`Cpu`] over the `ucontext_t` a SIGSEGV handler receives on Linux x86-64.
//!
//! GPRs, RIP and RFLAGS live in `uc_mcontext.gregs`. Vector state lives in the signal frame's
//! XSAVE area (`uc_mcontext.fpregs`): XMM0-15 in the legacy FXSAVE region, the upper halves of
//! YMM0-15 in component 2, opmasks in component 5, the upper 256 bits of ZMM0-15 in component
//! 6 and ZMM16-31 in component 7. Component offsets come from CPUID leaf 0xD (the kernel writes
//! the standard, non-compacted format). A component whose bit is clear in the header's
//! XSTATE_BV is in its initial state (all zero) whatever the memory holds, and the kernel's
//! XRSTOR on sigreturn re-initialises it; so reads honour XSTATE_BV, and a write to such a
//! component zeroes it in memory and then sets its bit.
//!
//! FS and GS bases are not in the signal frame; the caller passes them (e.g. read with
//! `arch_prctl(ARCH_GET_FS)` when the thread registers, or `rdfsbase` where enabled).

use crate::Cpu;

/// The legacy FXSAVE region: XMM registers start here.
const XMM_OFF: usize = 160;
/// `struct _fpx_sw_bytes` in the FXSAVE region's software-reserved bytes.
const SW_BYTES_OFF: usize = 464;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// The XSAVE header (XSTATE_BV first) follows the 512-byte legacy region.
const XSAVE_HEADER_OFF: usize = 512;

const COMP_YMM_HI128: usize = 2;
const COMP_OPMASK: usize = 5;
const COMP_ZMM_HI256: usize = 6;
const COMP_HI16_ZMM: usize = 7;

/// Where each XSAVE component lives in a signal frame (from CPUID leaf 0xD); detect it once,
/// outside the signal handler, and share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveLayout {
    /// (offset, size) of components 0..8; size 0 when the CPU lacks the component.
    comp: [(u32, u32); 8],
}

impl XsaveLayout {
    /// Reads the layout from CPUID leaf 0xD.
    pub fn detect() -> Self {
        use core::arch::x86_64::__cpuid_count;
        let mut comp = [(0u32, 0u32); 8];
        // CPUID is always present on x86-64; sub-leaf 0 EAX bits say which components exist.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID has no side effects and exists on every x86-64 CPU.
        let supported = unsafe { __cpuid_count(0xd, 0) }.eax;
        for (i, slot) in comp.iter_mut().enumerate().skip(2) {
            if supported & (1 << i) != 0 {
                #[allow(unused_unsafe)]
                // SAFETY: as above.
                let r = unsafe { __cpuid_count(0xd, i as u32) };
                *slot = (r.ebx, r.eax);
            }
        }
        XsaveLayout { comp }
    }

    /// (offset, size) in bytes of XSAVE component `i` in the standard (non-compacted)
    /// format, as signal frames and `PTRACE_GETREGSET(NT_X86_XSTATE)` use it; `None` for
    /// components 0 and 1 (the legacy region) and those the CPU lacks.
    pub fn component(&self, i: usize) -> Option<(u32, u32)> {
        self.comp.get(i).copied().filter(|c| c.1 != 0)
    }
}

/// FS and GS bases of the calling thread (`arch_prctl`, issued as a raw syscall: no libc
/// call, async-signal-safe). A signal handler runs on the faulting thread, so this is the
/// interrupted code's FS/GS base.
pub fn thread_segment_bases() -> (u64, u64) {
    const SYS_ARCH_PRCTL: u64 = 158;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    let get = |code: u64| {
        let mut v = 0u64;
        // SAFETY: arch_prctl(ARCH_GET_*, &v) only stores one u64 through a valid pointer;
        // the syscall instruction clobbers RCX and R11, declared here.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => _,
                in("rdi") code,
                in("rsi") &mut v as *mut u64,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        v
    };
    (get(ARCH_GET_FS), get(ARCH_GET_GS))
}

/// A [`Cpu`] over a signal handler's `ucontext_t`.
pub struct UcontextCpu<'a> {
    uc: &'a mut libc::ucontext_t,
    layout: &'a XsaveLayout,
    fs_base: u64,
    gs_base: u64,
}

/// `gregs` index of each GPR in hardware order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15).
const GREG: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

impl<'a> UcontextCpu<'a> {
    /// Wraps the context of the interrupted thread.
    ///
    /// # Safety
    /// `uc` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler (so that
    /// `uc_mcontext.fpregs` is null or points to the frame's complete FXSAVE/XSAVE area), and
    /// nothing else may access it while this value lives.
    pub unsafe fn new(
        uc: &'a mut libc::ucontext_t,
        layout: &'a XsaveLayout,
        fs_base: u64,
        gs_base: u64,
    ) -> Self {
        UcontextCpu {
            uc,
            layout,
            fs_base,
            gs_base,
        }
    }

    fn greg(&self, i: libc::c_int) -> u64 {
        self.uc
            .uc_mcontext
            .gregs
            .get(i as usize)
            .map_or(0, |v| *v as u64)
    }

    fn set_greg(&mut self, i: libc::c_int, v: u64) {
        if let Some(g) = self.uc.uc_mcontext.gregs.get_mut(i as usize) {
            *g = v as i64;
        }
    }

    /// The FXSAVE/XSAVE area, and its size as the kernel reports it (512 without XSAVE).
    fn area(&self) -> Option<(*mut u8, usize)> {
        let fp = self.uc.uc_mcontext.fpregs as *mut u8;
        if fp.is_null() {
            return None;
        }
        // SAFETY: `new`'s contract: fpregs points to at least the 512-byte FXSAVE region.
        let magic = unsafe { (fp.add(SW_BYTES_OFF) as *const u32).read_unaligned() };
        // SAFETY: as above; xstate_size is the third u32 of `_fpx_sw_bytes` (after
        // magic1, extended_size and the u64 xfeatures).
        let xstate_size = unsafe { (fp.add(SW_BYTES_OFF + 16) as *const u32).read_unaligned() };
        if magic == FP_XSTATE_MAGIC1 {
            Some((fp, xstate_size as usize))
        } else {
            Some((fp, 512))
        }
    }

    /// Pointer to `len` bytes at `off` inside component `c`, if the frame holds them.
    fn comp_ptr(&self, c: usize, off: usize, len: usize) -> Option<*mut u8> {
        let (fp, size) = self.area()?;
        let (coff, csize) = *self.layout.comp.get(c)?;
        if csize == 0 || off + len > csize as usize || coff as usize + csize as usize > size {
            return None;
        }
        // SAFETY: within the frame's XSAVE area (checked against the kernel's xstate_size).
        Some(unsafe { fp.add(coff as usize + off) })
    }

    fn xstate_bv(&self) -> u64 {
        match self.area() {
            // SAFETY: the XSAVE header lies inside any area larger than 512 + 64 bytes.
            Some((fp, size)) if size >= XSAVE_HEADER_OFF + 64 => unsafe {
                (fp.add(XSAVE_HEADER_OFF) as *const u64).read_unaligned()
            },
            _ => 0,
        }
    }

    /// Makes component `c` live (non-init) so XRSTOR on sigreturn loads what we write.
    fn activate(&mut self, c: usize) {
        let bv = self.xstate_bv();
        if bv & (1 << c) != 0 {
            return;
        }
        let Some((fp, area)) = self.area() else {
            return;
        };
        if c <= 1 {
            // x87 and SSE state live in the legacy region (written by XSAVE either way; Linux
            // also sets both bits in every frame): marking them live is enough.
            if area >= XSAVE_HEADER_OFF + 64 {
                // SAFETY: the header is inside the area.
                unsafe { (fp.add(XSAVE_HEADER_OFF) as *mut u64).write_unaligned(bv | (1 << c)) };
            }
            return;
        }
        let size = self.layout.comp.get(c).map_or(0, |x| x.1 as usize);
        if let Some(p) = self.comp_ptr(c, 0, size) {
            // SAFETY: `comp_ptr` checked the range; the header is inside the area too.
            unsafe {
                core::ptr::write_bytes(p, 0, size);
                (fp.add(XSAVE_HEADER_OFF) as *mut u64).write_unaligned(bv | (1 << c));
            }
        }
    }

    fn read_comp(&self, c: usize, off: usize, out: &mut [u8]) {
        if self.xstate_bv() & (1 << c) == 0 {
            out.fill(0);
            return;
        }
        match self.comp_ptr(c, off, out.len()) {
            // SAFETY: range checked by `comp_ptr`.
            Some(p) => unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) },
            None => out.fill(0),
        }
    }

    fn write_comp(&mut self, c: usize, off: usize, data: &[u8]) {
        if self.comp_ptr(c, off, data.len()).is_none() {
            return;
        }
        self.activate(c);
        if let Some(p) = self.comp_ptr(c, off, data.len()) {
            // SAFETY: range checked by `comp_ptr`.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        }
    }
}

/// FXSAVE image offsets of the x87 fields.
const FSW_OFF: usize = 2;
const FTW_OFF: usize = 4;
const ST_OFF: usize = 32;

impl UcontextCpu<'_> {
    fn legacy_read<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = [0u8; N];
        if let Some((fp, _)) = self.area() {
            if off + N <= 512 {
                // SAFETY: inside the 512-byte legacy region.
                unsafe { core::ptr::copy_nonoverlapping(fp.add(off), v.as_mut_ptr(), N) };
            }
        }
        v
    }

    fn legacy_write(&mut self, off: usize, data: &[u8]) {
        if let Some((fp, _)) = self.area() {
            if off + data.len() <= 512 {
                // SAFETY: inside the 512-byte legacy region.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), fp.add(off), data.len()) };
                self.activate(0);
            }
        }
    }
}

impl Cpu for UcontextCpu<'_> {
    fn gpr(&self, n: usize) -> u64 {
        GREG.get(n).map_or(0, |g| self.greg(*g))
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        if let Some(g) = GREG.get(n) {
            self.set_greg(*g, value);
        }
    }
    fn rip(&self) -> u64 {
        self.greg(libc::REG_RIP)
    }
    fn set_rip(&mut self, value: u64) {
        self.set_greg(libc::REG_RIP, value);
    }
    fn rflags(&self) -> u64 {
        self.greg(libc::REG_EFL)
    }
    fn set_rflags(&mut self, value: u64) {
        self.set_greg(libc::REG_EFL, value);
    }
    fn fs_base(&self) -> u64 {
        self.fs_base
    }
    fn gs_base(&self) -> u64 {
        self.gs_base
    }

    fn vec(&self, n: usize) -> [u8; 64] {
        let mut v = [0u8; 64];
        if n < 16 {
            if let Some((fp, size)) = self.area() {
                if size <= XSAVE_HEADER_OFF || self.xstate_bv() & 0b10 != 0 {
                    // SAFETY: XMM n is inside the 512-byte legacy region.
                    unsafe {
                        core::ptr::copy_nonoverlapping(fp.add(XMM_OFF + 16 * n), v.as_mut_ptr(), 16)
                    };
                }
            }
            self.read_comp(COMP_YMM_HI128, 16 * n, &mut v[16..32]);
            self.read_comp(COMP_ZMM_HI256, 32 * n, &mut v[32..64]);
        } else if n < 32 {
            self.read_comp(COMP_HI16_ZMM, 64 * (n - 16), &mut v);
        }
        v
    }

    fn set_vec(&mut self, n: usize, value: &[u8; 64]) {
        if n < 16 {
            if let Some((fp, _)) = self.area() {
                // SAFETY: XMM n is inside the 512-byte legacy region. The legacy SSE state is
                // always restored from the frame (XSTATE_BV bit 1 is set by the kernel when
                // XSAVE is used; without XSAVE FXRSTOR restores it unconditionally).
                unsafe {
                    core::ptr::copy_nonoverlapping(value.as_ptr(), fp.add(XMM_OFF + 16 * n), 16)
                };
            }
            self.activate(1);
            self.write_comp(COMP_YMM_HI128, 16 * n, &value[16..32]);
            self.write_comp(COMP_ZMM_HI256, 32 * n, &value[32..64]);
        } else if n < 32 {
            self.write_comp(COMP_HI16_ZMM, 64 * (n - 16), value);
        }
    }

    fn opmask(&self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        if n < 8 {
            self.read_comp(COMP_OPMASK, 8 * n, &mut b);
        }
        u64::from_le_bytes(b)
    }

    fn set_opmask(&mut self, n: usize, value: u64) {
        if n < 8 {
            self.write_comp(COMP_OPMASK, 8 * n, &value.to_le_bytes());
        }
    }

    fn x87_status(&self) -> u16 {
        u16::from_le_bytes(self.legacy_read(FSW_OFF))
    }

    fn set_x87_status(&mut self, value: u16) {
        self.legacy_write(FSW_OFF, &value.to_le_bytes());
    }

    fn x87_tags(&self) -> u8 {
        self.legacy_read::<1>(FTW_OFF)[0]
    }

    fn set_x87_tags(&mut self, value: u8) {
        self.legacy_write(FTW_OFF, &[value]);
    }

    fn x87_slot(&self, i: usize) -> [u8; 10] {
        self.legacy_read(ST_OFF + 16 * (i & 7))
    }

    fn set_x87_slot(&mut self, i: usize, value: &[u8; 10]) {
        self.legacy_write(ST_OFF + 16 * (i & 7), value);
    }
}
