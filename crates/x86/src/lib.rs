//! Decode one x86-64 memory-touching instruction and emulate it against a CPU context and a bus.
//!
//! This is the heart of the tracer's fault path: a device page is mapped `PROT_NONE`, the
//! program faults on it, and the handler completes the faulting instruction itself through an
//! always-accessible alias mapping of the device, so the trapped page never opens for other
//! threads. The crate knows nothing about signals or mappings: it sees the thread's registers
//! through [`Cpu`] and every memory access of the instruction through [`Bus`].
//!
//! ```text
//! mmio_trace_x86::warm_up();                    // once, before installing the handler
//! // in the SIGSEGV handler:
//! let mut cpu = unsafe { UcontextCpu::new(uc, &layout, fs_base, gs_base) };
//! match decode(code_bytes_at_rip, rip) {        // small Copy value, cacheable per RIP
//!     Ok(d) => emulate(&d, &mut cpu, &mut bus)?, // bus accesses in CPU order, then registers
//!     Err(u) => /* single-step; u.mnemonic, u.bytes(), u.memory_operand(&cpu) for the log */,
//! }
//! ```
//!
//! # Guarantees
//! - No allocation, no panics on any byte sequence, no signals. `unsafe` lives only in the
//!   native flag module (and the optional [`ucontext`] adapter).
//! - Every memory access the instruction makes goes through the bus, device memory or not
//!   (the non-device side of `MOVS`, the stack of `PUSH m`/`POP m`), with the width and
//!   address the CPU uses, exactly once, in the CPU's order. Accesses wider than 8 bytes (SSE,
//!   AVX, AVX-512, `CMPXCHG16B`, `MOVDIR64B`) are one bus access of 16/32/64 bytes. The
//!   emulator never splits an access that crosses a page or mapping boundary: the bus gets the
//!   whole range and decides (serve it, split-and-log it, or refuse with [`BusFault`]).
//! - Read-modify-write instructions read, then write. A failed `CMPXCHG`/`CMPXCHG8B`/
//!   `CMPXCHG16B` writes the old value back, as the hardware does ("the destination operand
//!   receives a write cycle without regard to the result of the comparison", Intel SDM).
//!   `CMP`, `TEST` and `BT` only read.
//! - Commit rule: the CPU context is changed only after all bus accesses of the instruction
//!   succeeded; on a [`BusFault`] nothing is changed (RIP still points at the instruction).
//!   Accesses made before the refused one did happen (a device read has its side effect), so
//!   a bus that may refuse should check [`Decoded::accesses`] before emulating.
//!   REP string instructions commit per element, like the CPU does on a fault: RCX/RSI/RDI
//!   reflect the completed iterations and RIP stays on the instruction until RCX reaches 0.
//! - Arithmetic flags are produced by running the same ALU instruction natively on the values.
//! - Masked EVEX moves access exactly the enabled elements, one bus access per run of
//!   consecutive enabled elements, in ascending address order (none if the mask is empty);
//!   an all-ones mask gives the single full-width access of the unmasked form.
//!
//! See `NOTES.md` in the crate for the supported instruction classes, the differential test
//! counts and the named gaps.
//!
//! # What the bus must know
//! - LOCK semantics: a locked RMW of 1, 2, 4 or 8 bytes (`LOCK ADD`, `XCHG` with memory,
//!   `LOCK CMPXCHG`, `LOCK XADD`, `LOCK BTS`, `LOCK CMPXCHG8B`…) is one [`Bus::atomic_rmw`]
//!   call; a bus shared between threads performs it natively (see there). The provided
//!   method falls back to read + write. The one exception is `LOCK CMPXCHG16B`: its read and
//!   write are two bus calls, and [`Decoded::is_locked`] tells the bus they must be atomic.
//! - The first [`decode`] in a process builds iced-x86's tables (allocates): call
//!   [`warm_up`] before installing a signal handler.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod decode;
mod emulate;
mod native;
#[cfg(all(target_os = "linux", feature = "ucontext"))]
pub mod ucontext;

pub use decode::{decode, Decoded, Reason, Unsupported};
pub use emulate::emulate;
pub use iced_x86::Mnemonic;

/// Builds iced-x86's decoder tables (allocated once per process on first use). Call it before
/// installing a signal handler that decodes, so that no fault ever allocates.
pub fn warm_up() {
    // Touch each encoding family's tables: legacy, VEX and EVEX.
    for bytes in [
        &[0x8b, 0x07][..],
        &[0xc5, 0xfe, 0x6f, 0x07],
        &[0x62, 0xf1, 0xfe, 0x48, 0x6f, 0x07],
    ] {
        let _ = decode(bytes, 0);
    }
}

/// The register state of the interrupted thread, as the emulator needs it.
///
/// General-purpose registers are numbered in hardware encoding order: 0 = RAX, 1 = RCX,
/// 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8..=15 = R8..R15. Vector registers
/// 0..=31 are ZMM0..ZMM31 as 64 little-endian bytes (XMM n is bytes 0..16, YMM n bytes
/// 0..32); on a machine without AVX-512 an implementation returns zeros above what exists and
/// ignores writes there. The x87 accessors exist for the MMX forms of MOVD/MOVQ/MOVNTQ (MMn
/// aliases x87 physical register n). Methods are infallible: the emulator validates indices
/// first.
pub trait Cpu {
    /// Value of general-purpose register `n` (0..=15).
    fn gpr(&self, n: usize) -> u64;
    /// Sets general-purpose register `n` (0..=15) to the full 64-bit `value`.
    fn set_gpr(&mut self, n: usize, value: u64);
    /// Instruction pointer.
    fn rip(&self) -> u64;
    /// Sets the instruction pointer.
    fn set_rip(&mut self, value: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS (the emulator changes only CF, PF, AF, ZF, SF and OF).
    fn set_rflags(&mut self, value: u64);
    /// FS segment base (used by `fs:` prefixed operands).
    fn fs_base(&self) -> u64;
    /// GS segment base (used by `gs:` prefixed operands).
    fn gs_base(&self) -> u64;
    /// ZMM register `n` (0..=31), 64 bytes.
    fn vec(&self, n: usize) -> [u8; 64];
    /// Sets ZMM register `n` (0..=31) to `value`.
    fn set_vec(&mut self, n: usize, value: &[u8; 64]);
    /// Opmask register `n` (0..=7).
    fn opmask(&self, n: usize) -> u64;
    /// Sets opmask register `n` (0..=7).
    fn set_opmask(&mut self, n: usize, value: u64);
    /// x87 status word (FSW; bits 11-13 are TOP), as in the FXSAVE image.
    fn x87_status(&self) -> u16;
    /// Sets the x87 status word.
    fn set_x87_status(&mut self, value: u16);
    /// The abridged x87 tag byte of the FXSAVE image (bit i set = physical register i valid).
    fn x87_tags(&self) -> u8;
    /// Sets the abridged x87 tag byte.
    fn set_x87_tags(&mut self, value: u8);
    /// The 80-bit register in FXSAVE slot `i` (0..=7), i.e. ST(i), little-endian.
    fn x87_slot(&self, i: usize) -> [u8; 10];
    /// Sets FXSAVE slot `i` (ST(i)).
    fn set_x87_slot(&mut self, i: usize, value: &[u8; 10]);
}

/// Every memory access an emulated instruction makes, each exactly once.
///
/// `buf.len()`/`data.len()` is the access width (1, 2, 4, 8, 16, 32 or 64 bytes; a masked
/// EVEX move may use any multiple of its element size); values
/// are the raw little-endian bytes as they travel on the bus. The address is the linear
/// address (segment base included). A range may cross a page or mapping boundary; the
/// emulator never splits it, the implementation decides.
pub trait Bus {
    /// Reads exactly `buf.len()` bytes at `addr`, once.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault>;
    /// Writes exactly `data.len()` bytes at `addr`, once.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault>;

    /// A locked read-modify-write of the `width`-byte integer at `addr` (width 1, 2, 4 or
    /// 8): the emulator calls it instead of [`Bus::read`] + [`Bus::write`] for `LOCK`ed
    /// forms and for `XCHG` with memory (implicitly locked). Returns the old value (zero
    /// extended); the new value is `op.apply(old, width)`.
    ///
    /// An implementation shared with other threads must make it atomic with respect to
    /// *every* access of those threads, plain stores included: e.g. the native locked
    /// instruction (`XCHG`, `LOCK XADD`, `LOCK CMPXCHG`) or a `LOCK CMPXCHG` loop computing
    /// the new value from the old ([`Rmw::apply`] is pure, it may be called more than once).
    ///
    /// The provided method reads, then writes (always, like the hardware: a failed
    /// `CMPXCHG` writes the old value back), which is exact for a single-threaded bus.
    fn atomic_rmw(&mut self, addr: u64, width: u32, op: &mut Rmw<'_>) -> Result<u64, BusFault> {
        let w = (width as usize).clamp(1, 8);
        let mut b = [0u8; 8];
        self.read(addr, &mut b[..w])?;
        let old = u64::from_le_bytes(b);
        let new = op.apply(old, width);
        self.write(addr, &new.to_le_bytes()[..w])?;
        Ok(old)
    }

    /// Called by a string instruction (`MOVS`, `STOS`, `LODS`, `CMPS`, `SCAS`, with or
    /// without `REP`) after each element whose accesses all completed, before the next
    /// element's first access: a bus that logs may gather a run of elements into one
    /// record. The provided method does nothing.
    fn string_element_done(&mut self) {}
}

/// The operation of a locked read-modify-write ([`Bus::atomic_rmw`]).
pub enum Rmw<'a> {
    /// `XCHG`: store the value.
    Xchg(u64),
    /// `XADD`: store old + value (wrapping at the width).
    Add(u64),
    /// `CMPXCHG` (and `CMPXCHG8B`): store `new` if the old value equals `expected`; else the
    /// hardware writes the old value back.
    Cmpxchg {
        /// The accumulator (compared with the old value).
        expected: u64,
        /// Stored on a match.
        new: u64,
    },
    /// Any other locked form (`ADD`, `OR`, `AND`, `BTS`, `INC`, `NEG`…): the new value as a
    /// pure function of the old one (values zero-extended to 64 bits).
    Update(&'a mut dyn FnMut(u64) -> u64),
}

impl Rmw<'_> {
    /// The value the operation stores when the location held `old` (truncated to `width`
    /// bytes; for a failed `CMPXCHG`, `old` itself).
    pub fn apply(&mut self, old: u64, width: u32) -> u64 {
        let m = if width >= 8 {
            u64::MAX
        } else {
            (1u64 << (width * 8)) - 1
        };
        let old = old & m;
        m & match self {
            Rmw::Xchg(v) => *v,
            Rmw::Add(v) => old.wrapping_add(*v),
            Rmw::Cmpxchg { expected, new } => {
                if *expected & m == old {
                    *new
                } else {
                    old
                }
            }
            Rmw::Update(f) => f(old),
        }
    }
}

impl core::fmt::Debug for Rmw<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Rmw::Xchg(v) => write!(f, "Xchg({v:#x})"),
            Rmw::Add(v) => write!(f, "Add({v:#x})"),
            Rmw::Cmpxchg { expected, new } => write!(f, "Cmpxchg({expected:#x}, {new:#x})"),
            Rmw::Update(_) => f.write_str("Update(..)"),
        }
    }
}

/// A bus access that could not be performed; emulation stops cleanly (see the commit rule in
/// the crate documentation) and the caller falls back to single-stepping or the real fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusFault {
    /// Address of the refused access.
    pub addr: u64,
}

/// A fault the real CPU would raise instead of performing the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #GP: an aligned vector move, `CMPXCHG16B` or `MOVDIR64B` on a misaligned address.
    GeneralProtection {
        /// The misaligned address.
        addr: u64,
    },
}

/// Why [`emulate`] did not complete the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuError {
    /// The bus refused an access.
    Bus(BusFault),
    /// The CPU would fault; nothing was accessed or committed.
    Exception(Exception),
    /// The instruction is not emulated; nothing was accessed or committed.
    Unsupported(Unsupported),
}

impl From<BusFault> for EmuError {
    fn from(f: BusFault) -> Self {
        EmuError::Bus(f)
    }
}

/// What a successful [`emulate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The RIP now in the context (the next instruction).
    pub next_rip: u64,
    /// Elements processed by a string instruction (1 for every other instruction).
    pub iterations: u64,
}

/// Direction of one memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessDir {
    /// Read only.
    Read,
    /// Written only.
    Write,
    /// Read, then written (RMW; also a failed `CMPXCHG`, which writes the old value back).
    ReadWrite,
}

/// One memory access an instruction will make (see [`Decoded::accesses`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemAccess {
    /// Linear address.
    pub addr: u64,
    /// Width in bytes.
    pub size: u32,
    /// Direction.
    pub dir: AccessDir,
}

/// The memory accesses of one instruction (or of the first element of a string instruction),
/// in the order the CPU makes them; a fixed-size list so computing it never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accesses {
    items: [MemAccess; 2],
    len: u8,
}

impl Accesses {
    pub(crate) const EMPTY: Accesses = Accesses {
        items: [MemAccess {
            addr: 0,
            size: 0,
            dir: AccessDir::Read,
        }; 2],
        len: 0,
    };

    pub(crate) fn push(&mut self, addr: u64, size: u32, dir: AccessDir) {
        if let Some(slot) = self.items.get_mut(self.len as usize) {
            *slot = MemAccess { addr, size, dir };
            self.len += 1;
        }
    }

    /// The accesses, in CPU order.
    pub fn as_slice(&self) -> &[MemAccess] {
        self.items.get(..self.len as usize).unwrap_or(&[])
    }
}
