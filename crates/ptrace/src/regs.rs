//! Registers of a stopped thread, as an [`mmio_trace_x86::Cpu`].
//!
//! General registers come from `PTRACE_GETREGS` at once. The vector state comes from
//! `PTRACE_GETREGSET(NT_X86_XSTATE)` (the standard-format XSAVE image, component offsets from
//! CPUID leaf 0xD, like a signal frame's) or, on kernels or CPUs without XSAVE,
//! `NT_PRFPREG` (the 512-byte FXSAVE image: x87 and XMM0-15 only); it is read only when a
//! vector, opmask or x87 accessor is first used. [`Regs::write_back`] writes only the
//! parts that changed.
//!
//! XSAVE semantics as in `mmio_trace_x86::ucontext`: a component whose bit is clear in the
//! header's XSTATE_BV is in its initial state (zeros) whatever the image holds, and the
//! kernel loads it as initial on SETREGSET; so reads honour XSTATE_BV, and a write to such a
//! component zeroes it first and then sets its bit.

use std::cell::OnceCell;
use std::sync::OnceLock;

use mmio_trace_x86::ucontext::XsaveLayout;
use mmio_trace_x86::Cpu;

use crate::sys::{self, NT_PRFPREG, NT_X86_XSTATE};
use crate::{Error, Pid, Result};

const XMM_OFF: usize = 160;
const XSAVE_HEADER_OFF: usize = 512;
const FSW_OFF: usize = 2;
const FTW_OFF: usize = 4;
const ST_OFF: usize = 32;
const COMP_YMM_HI128: usize = 2;
const COMP_OPMASK: usize = 5;
const COMP_ZMM_HI256: usize = 6;
const COMP_HI16_ZMM: usize = 7;

/// The vector state as read from the kernel.
#[derive(Clone, Debug)]
enum Vector {
    /// Standard-format XSAVE image, exactly as long as the kernel gave it.
    Xsave(Vec<u8>),
    /// FXSAVE image (512 bytes).
    Fxsave(Vec<u8>),
    /// Neither could be read (the error is reported by [`Regs::load_vector`]).
    Missing,
}

fn layout() -> &'static XsaveLayout {
    static L: OnceLock<XsaveLayout> = OnceLock::new();
    L.get_or_init(XsaveLayout::detect)
}

/// Largest XSAVE image the CPU can produce (CPUID.(EAX=0xD,ECX=0).ECX).
pub(crate) fn xsave_max() -> usize {
    static M: OnceLock<usize> = OnceLock::new();
    *M.get_or_init(|| {
        #[allow(unused_unsafe)]
        // SAFETY: CPUID has no side effects and exists on every x86-64 CPU.
        let r = unsafe { core::arch::x86_64::__cpuid_count(0xd, 0) };
        (r.ecx as usize).max(XSAVE_HEADER_OFF + 64)
    })
}

/// The registers of one stopped thread.
pub struct Regs {
    tid: Pid,
    user: libc::user_regs_struct,
    /// What the kernel holds (to write back only on change).
    kernel: libc::user_regs_struct,
    vector: OnceCell<Vector>,
    vector_dirty: bool,
}

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = &self.user;
        f.debug_struct("Regs")
            .field("tid", &self.tid)
            .field("rip", &format_args!("{:#x}", u.rip))
            .field("rsp", &format_args!("{:#x}", u.rsp))
            .field("rax", &format_args!("{:#x}", u.rax))
            .field("orig_rax", &(u.orig_rax as i64))
            .field("vector_loaded", &self.vector.get().is_some())
            .finish_non_exhaustive()
    }
}

fn bytes(r: &libc::user_regs_struct) -> &[u8] {
    // SAFETY: user_regs_struct is 27 u64 fields with no padding; reading its bytes is fine.
    unsafe {
        std::slice::from_raw_parts(
            r as *const libc::user_regs_struct as *const u8,
            std::mem::size_of::<libc::user_regs_struct>(),
        )
    }
}

fn read_vector(tid: Pid) -> Result<Vector> {
    let mut buf = vec![0u8; xsave_max()];
    match sys::regset(false, tid, NT_X86_XSTATE, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            return Ok(Vector::Xsave(buf));
        }
        // No XSAVE (old CPU or kernel): FXSAVE is all there is.
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::EIO)
            ) => {}
        Err(e) => return Err(e),
    }
    let mut fx = vec![0u8; 512];
    let n = sys::regset(false, tid, NT_PRFPREG, &mut fx)?;
    fx.truncate(n);
    Ok(Vector::Fxsave(fx))
}

impl Regs {
    /// Reads the general registers of stopped thread `tid` (vector state later, on demand).
    pub fn read(tid: Pid) -> Result<Regs> {
        let user = sys::getregs(tid)?;
        Ok(Regs {
            tid,
            user,
            kernel: user,
            vector: OnceCell::new(),
            vector_dirty: false,
        })
    }

    /// The thread.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// The general registers (`user_regs_struct`: rax…r15, orig_rax, rip, eflags, segment
    /// selectors, fs_base, gs_base).
    pub fn user(&self) -> &libc::user_regs_struct {
        &self.user
    }

    /// The general registers, to change (written by [`Regs::write_back`]).
    pub fn user_mut(&mut self) -> &mut libc::user_regs_struct {
        &mut self.user
    }

    /// Reads the vector state now, reporting failure (the [`Cpu`] accessors cannot: they
    /// give zeros if it is unreadable). Does nothing if already read.
    pub fn load_vector(&mut self) -> Result<()> {
        if let Some(v) = self.vector.get() {
            if !matches!(v, Vector::Missing) {
                return Ok(());
            }
        }
        let v = read_vector(self.tid)?;
        self.vector = OnceCell::from(v);
        Ok(())
    }

    /// The XSAVE image (standard format) or FXSAVE image, reading it if not yet done.
    pub fn fpu_image(&self) -> Option<&[u8]> {
        match self.vec_state() {
            Vector::Xsave(b) | Vector::Fxsave(b) => Some(b),
            Vector::Missing => None,
        }
    }

    /// True if the vector state came from XSAVE (AVX and AVX-512 state available).
    pub fn has_xsave(&self) -> bool {
        matches!(self.vec_state(), Vector::Xsave(_))
    }

    /// Writes back to the kernel what changed since the last read or write: the general
    /// registers (`SETREGS`) and/or the vector state (`SETREGSET`).
    pub fn write_back(&mut self) -> Result<()> {
        if bytes(&self.user) != bytes(&self.kernel) {
            sys::setregs(self.tid, &self.user)?;
            self.kernel = self.user;
        }
        if self.vector_dirty {
            let (nt, buf) = match self.vector.get_mut() {
                Some(Vector::Xsave(b)) => (NT_X86_XSTATE, b),
                Some(Vector::Fxsave(b)) => (NT_PRFPREG, b),
                _ => {
                    self.vector_dirty = false;
                    return Ok(());
                }
            };
            let len = buf.len();
            let n = sys::regset(true, self.tid, nt, buf)?;
            if n != len {
                return Err(Error::BadStop {
                    tid: self.tid,
                    what: "write the vector registers",
                    why: format!("the kernel took {n} of {len} bytes"),
                });
            }
            self.vector_dirty = false;
        }
        Ok(())
    }

    fn vec_state(&self) -> &Vector {
        self.vector
            .get_or_init(|| read_vector(self.tid).unwrap_or(Vector::Missing))
    }

    fn vec_state_mut(&mut self) -> Option<&mut Vec<u8>> {
        self.vec_state();
        match self.vector.get_mut() {
            Some(Vector::Xsave(b)) | Some(Vector::Fxsave(b)) => Some(b),
            _ => None,
        }
    }

    fn xstate_bv(&self) -> u64 {
        match self.vec_state() {
            Vector::Xsave(b) if b.len() >= XSAVE_HEADER_OFF + 8 => u64::from_le_bytes(
                b[XSAVE_HEADER_OFF..XSAVE_HEADER_OFF + 8]
                    .try_into()
                    .unwrap_or_default(),
            ),
            _ => 0,
        }
    }

    /// Range of `len` bytes at `off` inside component `c` of the XSAVE image.
    fn comp_range(&self, c: usize, off: usize, len: usize) -> Option<std::ops::Range<usize>> {
        let Vector::Xsave(b) = self.vec_state() else {
            return None;
        };
        let (coff, csize) = layout().component(c)?;
        let (coff, csize) = (coff as usize, csize as usize);
        if off + len > csize || coff + csize > b.len() {
            return None;
        }
        Some(coff + off..coff + off + len)
    }

    fn read_comp(&self, c: usize, off: usize, out: &mut [u8]) {
        out.fill(0);
        if self.xstate_bv() & (1 << c) == 0 {
            return;
        }
        if let (Some(r), Vector::Xsave(b)) = (self.comp_range(c, off, out.len()), self.vec_state())
        {
            out.copy_from_slice(&b[r]);
        }
    }

    /// Marks component `c` live, zeroing it first if it was in its initial state.
    fn activate(&mut self, c: usize) {
        let bv = self.xstate_bv();
        if bv & (1 << c) != 0 {
            return;
        }
        let whole = if c >= 2 {
            layout()
                .component(c)
                .and_then(|(_, s)| self.comp_range(c, 0, s as usize))
        } else {
            None
        };
        if let Some(Vector::Xsave(b)) = self.vector.get_mut() {
            if b.len() < XSAVE_HEADER_OFF + 8 {
                return;
            }
            if let Some(r) = whole {
                b[r].fill(0);
            }
            b[XSAVE_HEADER_OFF..XSAVE_HEADER_OFF + 8]
                .copy_from_slice(&(bv | (1 << c)).to_le_bytes());
        }
    }

    fn write_comp(&mut self, c: usize, off: usize, data: &[u8]) {
        let Some(r) = self.comp_range(c, off, data.len()) else {
            return;
        };
        self.activate(c);
        if let Some(Vector::Xsave(b)) = self.vector.get_mut() {
            b[r].copy_from_slice(data);
            self.vector_dirty = true;
        }
    }

    fn legacy_read<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = [0u8; N];
        if let Vector::Xsave(b) | Vector::Fxsave(b) = self.vec_state() {
            if off + N <= b.len().min(512) {
                v.copy_from_slice(&b[off..off + N]);
            }
        }
        v
    }

    /// Writes into the legacy region and marks component `comp` (0 x87, 1 SSE) live.
    fn legacy_write(&mut self, off: usize, data: &[u8], comp: usize) {
        let Some(b) = self.vec_state_mut() else {
            return;
        };
        if off + data.len() > b.len().min(512) {
            return;
        }
        b[off..off + data.len()].copy_from_slice(data);
        self.vector_dirty = true;
        self.activate(comp);
    }
}

/// `user_regs_struct` field of each GPR in hardware order.
fn gpr_mut(u: &mut libc::user_regs_struct, n: usize) -> Option<&mut u64> {
    Some(match n {
        0 => &mut u.rax,
        1 => &mut u.rcx,
        2 => &mut u.rdx,
        3 => &mut u.rbx,
        4 => &mut u.rsp,
        5 => &mut u.rbp,
        6 => &mut u.rsi,
        7 => &mut u.rdi,
        8 => &mut u.r8,
        9 => &mut u.r9,
        10 => &mut u.r10,
        11 => &mut u.r11,
        12 => &mut u.r12,
        13 => &mut u.r13,
        14 => &mut u.r14,
        15 => &mut u.r15,
        _ => return None,
    })
}

impl Cpu for Regs {
    fn gpr(&self, n: usize) -> u64 {
        let mut u = self.user;
        gpr_mut(&mut u, n).map_or(0, |v| *v)
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        if let Some(r) = gpr_mut(&mut self.user, n) {
            *r = value;
        }
    }
    fn rip(&self) -> u64 {
        self.user.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.user.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.user.eflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.user.eflags = value;
    }
    fn fs_base(&self) -> u64 {
        self.user.fs_base
    }
    fn gs_base(&self) -> u64 {
        self.user.gs_base
    }

    fn vec(&self, n: usize) -> [u8; 64] {
        let mut v = [0u8; 64];
        if n < 16 {
            let sse_live = match self.vec_state() {
                Vector::Fxsave(_) => true,
                _ => self.xstate_bv() & 0b10 != 0,
            };
            if sse_live {
                v[..16].copy_from_slice(&self.legacy_read::<16>(XMM_OFF + 16 * n));
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
            self.legacy_write(XMM_OFF + 16 * n, &value[..16], 1);
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
        self.legacy_write(FSW_OFF, &value.to_le_bytes(), 0);
    }
    fn x87_tags(&self) -> u8 {
        self.legacy_read::<1>(FTW_OFF)[0]
    }
    fn set_x87_tags(&mut self, value: u8) {
        self.legacy_write(FTW_OFF, &[value], 0);
    }
    fn x87_slot(&self, i: usize) -> [u8; 10] {
        self.legacy_read(ST_OFF + 16 * (i & 7))
    }
    fn set_x87_slot(&mut self, i: usize, value: &[u8; 10]) {
        self.legacy_write(ST_OFF + 16 * (i & 7), value, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Regs` over a given FXSAVE image (what kernels and CPUs without XSAVE give).
    fn fx(image: Vec<u8>) -> Regs {
        // SAFETY: all-zero is a valid user_regs_struct.
        let user: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        Regs {
            tid: 0,
            user,
            kernel: user,
            vector: OnceCell::from(Vector::Fxsave(image)),
            vector_dirty: false,
        }
    }

    #[test]
    fn fxsave_image_gives_xmm_and_x87_and_zero_above() {
        let mut img = vec![0u8; 512];
        for (i, b) in img[XMM_OFF..XMM_OFF + 256].iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        img[FSW_OFF..FSW_OFF + 2].copy_from_slice(&0x3800u16.to_le_bytes());
        img[FTW_OFF] = 0x81;
        img[ST_OFF + 16..ST_OFF + 26].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let mut r = fx(img);
        let v3 = r.vec(3);
        let want: Vec<u8> = (48..64).map(|i: u32| i as u8 ^ 0x5a).collect();
        assert_eq!(&v3[..16], &want[..]);
        assert_eq!(&v3[16..], &[0u8; 48][..]);
        assert_eq!(r.vec(20), [0u8; 64]);
        assert_eq!(r.opmask(1), 0);
        assert_eq!(r.x87_status(), 0x3800);
        assert_eq!(r.x87_tags(), 0x81);
        assert_eq!(r.x87_slot(1), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        // Writes land in the legacy region; what FXSAVE cannot hold is dropped.
        let mut z = [0xeeu8; 64];
        z[0] = 1;
        r.set_vec(15, &z);
        r.set_vec(16, &z);
        r.set_opmask(2, 5);
        assert!(r.vector_dirty);
        let mut want = [0u8; 64];
        want[..16].copy_from_slice(&z[..16]);
        assert_eq!(r.vec(15), want);
        assert_eq!(r.vec(16), [0u8; 64]);
        assert_eq!(r.opmask(2), 0);
        assert_eq!(r.fpu_image().map(|b| b.len()), Some(512));
        assert!(!r.has_xsave());
    }
}
