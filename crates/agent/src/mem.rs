//! The memory functions compiled code calls (`memcpy`, `memmove`, `memset`, `memcmp`,
//! `bcmp`, `strlen`), which a program normally gets from libc. On this target the
//! precompiled `compiler_builtins` leaves them to libc, and the agent links none; glibc's
//! static ones would bring IFUNC relocations and libc's start-up state.
//!
//! Written with `rep movsb`/`rep stosb` (fast on CPUs with ERMS, correct on all) and plain
//! byte loops the compiler does not turn back into calls to these functions (it would for
//! a copy or fill loop: that is why those two are assembly). They run on the fault path
//! too: no allocation, no locks, the direction flag is clear there (the ABI and the
//! kernel's signal entry guarantee it).

use core::arch::asm;

/// # Safety
/// As C's `memcpy`: `n` bytes readable at `src`, writable at `dst`, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep movsb` copies rcx bytes forward.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
            options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memmove`: `n` bytes readable at `src`, writable at `dst` (may overlap).
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst before src, or no overlap: a forward copy never reads what it wrote.
        // SAFETY: the caller's contract.
        return unsafe { memcpy(dst, src, n) };
    }
    // dst inside [src, src + n): copy backward, from the last byte (DF set for the copy
    // only, cleared again before returning, as the ABI requires).
    // SAFETY: the caller's contract; rdi/rsi start at the last byte of each range.
    unsafe {
        asm!("std", "rep movsb", "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack))
    };
    dst
}

/// # Safety
/// As C's `memset`: `n` writable bytes at `dst`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep stosb` stores al rcx times forward.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
            options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memcmp`: `n` readable bytes at each of `a` and `b`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n, within both ranges.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As `bcmp`: `n` readable bytes at each of `a` and `b`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C's `strlen`: a NUL-terminated string at `s`.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller's contract: every byte up to the NUL is readable.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
    }
    n
}
