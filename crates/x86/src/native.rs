//! Flag computation by running the very same ALU instruction on the host CPU.
//!
//! Formulas for AF/OF/undefined flags differ between CPU generations; running the instruction
//! itself on the operand values gives exactly what the traced program would have seen on this
//! machine. This is the only module of the crate with `unsafe`.

use core::arch::asm;

/// RFLAGS bits the ALU instructions we emulate may change: CF, PF, AF, ZF, SF, OF.
pub(crate) const ARITH_FLAGS: u64 = 0x8d5;
/// RFLAGS bit 1 always reads as 1.
const RESERVED_ONE: u64 = 0x2;

/// Two-operand ALU operations (`op dst, src`), run natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    Sar,
    Bt,
    Bts,
    Btr,
    Btc,
}

/// One-operand ALU operations, run natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Un {
    Inc,
    Dec,
    Not,
    Neg,
}

// The `push`/`popfq` pair loads only the arithmetic flags of the traced program (masked by the
// callers): TF, DF, AC and friends are never loaded into the host RFLAGS.
macro_rules! bin_asm {
    ($ins:literal, $size:expr, $r:ident, $b:ident, $f:ident) => {
        // SAFETY: the asm only touches the named registers, the flags and 8 bytes of stack
        // (push/pop, no `nostack`), and the flag image loaded holds only arithmetic flags.
        unsafe {
            match $size {
                1 => asm!("push {f}", "popfq", concat!($ins, " {r:l}, {b:l}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
                2 => asm!("push {f}", "popfq", concat!($ins, " {r:x}, {b:x}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($ins, " {r:e}, {b:e}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($ins, " {r:r}, {b:r}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
            }
        }
    };
}

macro_rules! bit_asm {
    ($ins:literal, $size:expr, $r:ident, $b:ident, $f:ident) => {
        // SAFETY: as in `bin_asm`; BT* has no 8-bit form.
        unsafe {
            match $size {
                1 | 2 => asm!("push {f}", "popfq", concat!($ins, " {r:x}, {b:x}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($ins, " {r:e}, {b:e}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($ins, " {r:r}, {b:r}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, f = inout(reg) $f),
            }
        }
    };
}

macro_rules! shift_asm {
    ($ins:literal, $size:expr, $r:ident, $c:ident, $f:ident) => {
        // SAFETY: as in `bin_asm`; the count lives in CL as the instruction requires.
        unsafe {
            match $size {
                1 => asm!("push {f}", "popfq", concat!($ins, " {r:l}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, in("cl") $c, f = inout(reg) $f),
                2 => asm!("push {f}", "popfq", concat!($ins, " {r:x}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, in("cl") $c, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($ins, " {r:e}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, in("cl") $c, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($ins, " {r:r}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, in("cl") $c, f = inout(reg) $f),
            }
        }
    };
}

macro_rules! un_asm {
    ($ins:literal, $size:expr, $r:ident, $f:ident) => {
        // SAFETY: as in `bin_asm`.
        unsafe {
            match $size {
                1 => asm!("push {f}", "popfq", concat!($ins, " {r:l}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, f = inout(reg) $f),
                2 => asm!("push {f}", "popfq", concat!($ins, " {r:x}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($ins, " {r:e}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($ins, " {r:r}"), "pushfq", "pop {f}",
                    r = inout(reg) $r, f = inout(reg) $f),
            }
        }
    };
}

macro_rules! dshift_asm {
    ($ins:literal, $size:expr, $r:ident, $b:ident, $c:ident, $f:ident) => {
        // SAFETY: as in `shift_asm`.
        unsafe {
            match $size {
                2 => asm!("push {f}", "popfq", concat!($ins, " {r:x}, {b:x}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, in("cl") $c, f = inout(reg) $f),
                4 => asm!("push {f}", "popfq", concat!($ins, " {r:e}, {b:e}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, in("cl") $c, f = inout(reg) $f),
                _ => asm!("push {f}", "popfq", concat!($ins, " {r:r}, {b:r}, cl"), "pushfq", "pop {f}",
                    r = inout(reg) $r, b = in(reg) $b, in("cl") $c, f = inout(reg) $f),
            }
        }
    };
}

/// Runs `op a, b` at `size` bytes (1, 2, 4 or 8) with the arithmetic flags of `flags` loaded.
/// Returns the result (low `size` bytes meaningful) and the arithmetic flags afterwards.
/// For shifts and rotates `b` is the count (the CPU masks it); for BT* it is the bit offset
/// (only 16/32/64-bit sizes are valid).
pub(crate) fn bin(op: Bin, size: u32, a: u64, b: u64, flags: u64) -> (u64, u64) {
    let mut r = a;
    let mut f = (flags & ARITH_FLAGS) | RESERVED_ONE;
    let c = b as u8;
    match op {
        Bin::Add => bin_asm!("add", size, r, b, f),
        Bin::Or => bin_asm!("or", size, r, b, f),
        Bin::Adc => bin_asm!("adc", size, r, b, f),
        Bin::Sbb => bin_asm!("sbb", size, r, b, f),
        Bin::And => bin_asm!("and", size, r, b, f),
        Bin::Sub => bin_asm!("sub", size, r, b, f),
        Bin::Xor => bin_asm!("xor", size, r, b, f),
        Bin::Rol => shift_asm!("rol", size, r, c, f),
        Bin::Ror => shift_asm!("ror", size, r, c, f),
        Bin::Rcl => shift_asm!("rcl", size, r, c, f),
        Bin::Rcr => shift_asm!("rcr", size, r, c, f),
        Bin::Shl => shift_asm!("shl", size, r, c, f),
        Bin::Shr => shift_asm!("shr", size, r, c, f),
        Bin::Sar => shift_asm!("sar", size, r, c, f),
        Bin::Bt => bit_asm!("bt", size, r, b, f),
        Bin::Bts => bit_asm!("bts", size, r, b, f),
        Bin::Btr => bit_asm!("btr", size, r, b, f),
        Bin::Btc => bit_asm!("btc", size, r, b, f),
    }
    (r, f & ARITH_FLAGS)
}

/// Runs a one-operand ALU instruction; see [`bin`].
pub(crate) fn un(op: Un, size: u32, a: u64, flags: u64) -> (u64, u64) {
    let mut r = a;
    let mut f = (flags & ARITH_FLAGS) | RESERVED_ONE;
    match op {
        Un::Inc => un_asm!("inc", size, r, f),
        Un::Dec => un_asm!("dec", size, r, f),
        Un::Not => un_asm!("not", size, r, f),
        Un::Neg => un_asm!("neg", size, r, f),
    }
    (r, f & ARITH_FLAGS)
}

/// Runs `shld`/`shrd a, b, count` (`left` selects SHLD); size 2, 4 or 8.
pub(crate) fn dshift(left: bool, size: u32, a: u64, b: u64, count: u8, flags: u64) -> (u64, u64) {
    let mut r = a;
    let mut f = (flags & ARITH_FLAGS) | RESERVED_ONE;
    let c = count;
    if left {
        dshift_asm!("shld", size, r, b, c, f);
    } else {
        dshift_asm!("shrd", size, r, b, c, f);
    }
    (r, f & ARITH_FLAGS)
}

/// Runs two-operand `imul a, b` (size 2, 4 or 8); returns the truncated product and flags.
pub(crate) fn imul2(size: u32, a: u64, b: u64, flags: u64) -> (u64, u64) {
    let mut r = a;
    let mut f = (flags & ARITH_FLAGS) | RESERVED_ONE;
    // SAFETY: as in `bin_asm` (registers, flags, 8 bytes of stack).
    unsafe {
        match size {
            2 => asm!("push {f}", "popfq", "imul {r:x}, {b:x}", "pushfq", "pop {f}",
                r = inout(reg) r, b = in(reg) b, f = inout(reg) f),
            4 => asm!("push {f}", "popfq", "imul {r:e}, {b:e}", "pushfq", "pop {f}",
                r = inout(reg) r, b = in(reg) b, f = inout(reg) f),
            _ => asm!("push {f}", "popfq", "imul {r:r}, {b:r}", "pushfq", "pop {f}",
                r = inout(reg) r, b = in(reg) b, f = inout(reg) f),
        }
    }
    (r, f & ARITH_FLAGS)
}

/// Runs one-operand `mul`/`imul` (`signed`) of the accumulator `rax` by `b` at `size`.
/// Returns (RAX, RDX, flags) as the instruction leaves them (for size 1 only AX changes;
/// the caller merges by width).
pub(crate) fn mul1(
    signed: bool,
    size: u32,
    rax: u64,
    rdx: u64,
    b: u64,
    flags: u64,
) -> (u64, u64, u64) {
    let mut a = rax;
    let mut d = rdx;
    let mut f = (flags & ARITH_FLAGS) | RESERVED_ONE;
    macro_rules! go {
        ($ins:literal) => {
            // SAFETY: as in `bin_asm`; RAX/RDX are the instruction's implicit operands.
            unsafe {
                asm!("push {f}", "popfq", $ins, "pushfq", "pop {f}",
                    b = in(reg) b, f = inout(reg) f, inout("rax") a, inout("rdx") d)
            }
        };
    }
    match (signed, size) {
        (false, 1) => go!("mul {b:l}"),
        (false, 2) => go!("mul {b:x}"),
        (false, 4) => go!("mul {b:e}"),
        (false, _) => go!("mul {b:r}"),
        (true, 1) => go!("imul {b:l}"),
        (true, 2) => go!("imul {b:x}"),
        (true, 4) => go!("imul {b:e}"),
        (true, _) => go!("imul {b:r}"),
    }
    (a, d, f & ARITH_FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sets_carry_and_zero_at_each_size() {
        assert_eq!(bin(Bin::Add, 1, 0xff, 1, 0).0 & 0xff, 0);
        let (_, f) = bin(Bin::Add, 1, 0xff, 1, 0);
        assert_eq!(f & 0x41, 0x41);
        let (r, f) = bin(Bin::Add, 8, u64::MAX, 1, 0);
        assert_eq!(r, 0);
        assert_eq!(f & 0x41, 0x41);
    }

    #[test]
    fn shift_by_zero_keeps_flags() {
        let (_, f) = bin(Bin::Shl, 4, 5, 0, ARITH_FLAGS);
        assert_eq!(f, ARITH_FLAGS);
    }
}
