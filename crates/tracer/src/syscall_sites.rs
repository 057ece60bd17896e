//! Finding the inline `syscall` instructions of a program's code: the preload route's
//! filter traps the memory and signal calls made from those exact instructions
//! ([`crate::sysemu::install_sites`]), which no interposed libc function sees.
//!
//! A linear scan for the instruction's two bytes (`0f 05`) finds every candidate; each is
//! confirmed by decoding from a few points before it (x86 code falls back into step with
//! its instruction boundaries within a few instructions): a `0f 05` inside another
//! instruction (an immediate, a displacement) is not a site. A site missed is a raw call
//! not seen, as without the filter; a site wrongly taken only traps a call that is not
//! there.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// How far before a candidate the confirming decodes start.
const BACK: [usize; 4] = [64, 49, 37, 23];

/// Calls `found` with the address just after each `syscall` instruction in `code`
/// (loaded at `base`): the instruction pointer a seccomp filter sees for its calls.
pub fn scan(code: &[u8], base: u64, found: &mut dyn FnMut(u64)) {
    candidates(code, &mut |i| {
        if is_syscall_at(code, base, i) {
            found(base + i as u64 + 2);
        }
    });
}

/// Calls `f` with each offset of the bytes `0f 05` in `code`, in order: 16 offsets at a
/// time with SSE2 (a program's text is megabytes, scanned at every start).
fn candidates(code: &[u8], f: &mut dyn FnMut(usize)) {
    use core::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let n = code.len();
    let mut i = 0;
    // SAFETY: SSE2 is part of x86-64; each load reads 16 bytes of `code` (at `i` and at
    // `i + 1`, both ending by `i + 17 <= n`).
    unsafe {
        let (a, b) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(0x05));
        while i + 17 <= n {
            let x = _mm_loadu_si128(code.as_ptr().add(i) as *const __m128i);
            let y = _mm_loadu_si128(code.as_ptr().add(i + 1) as *const __m128i);
            let mut m =
                _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(x, a), _mm_cmpeq_epi8(y, b))) as u32;
            while m != 0 {
                f(i + m.trailing_zeros() as usize);
                m &= m - 1;
            }
            i += 16;
        }
    }
    while i + 1 < n {
        if code[i] == 0x0f && code[i + 1] == 0x05 {
            f(i);
        }
        i += 1;
    }
}

/// Whether decoding from most of the points [`BACK`] bytes before `p` lands on a
/// `syscall` at `p`.
fn is_syscall_at(code: &[u8], base: u64, p: usize) -> bool {
    let mut votes = 0;
    let mut tries = 0;
    let mut ins = Instruction::default();
    for back in BACK {
        let start = p.saturating_sub(back);
        tries += 1;
        let mut d = Decoder::with_ip(
            64,
            &code[start..p + 2],
            base + start as u64,
            DecoderOptions::NONE,
        );
        while d.can_decode() {
            d.decode_out(&mut ins);
            let at = (ins.ip() - base) as usize;
            if at >= p {
                if at == p && ins.mnemonic() == Mnemonic::Syscall {
                    votes += 1;
                }
                break;
            }
        }
        if start == 0 {
            // Every later start is the same.
            break;
        }
    }
    votes * 2 > tries
}

#[cfg(test)]
mod tests {
    use super::scan;

    fn sites(code: &[u8]) -> Vec<u64> {
        let mut v = Vec::new();
        scan(code, 0x1000, &mut |a| v.push(a));
        v
    }

    #[test]
    fn real_syscall_instructions_are_found_and_embedded_bytes_are_not() {
        // mov eax, 9; syscall; ret
        let mut code = vec![0x90u8; 80];
        code.extend_from_slice(&[0xb8, 9, 0, 0, 0, 0x0f, 0x05, 0xc3]);
        assert_eq!(sites(&code), [0x1000 + 80 + 7]);
        // mov eax, 0x050f; ret: the bytes inside an immediate.
        let mut code = vec![0x90u8; 80];
        code.extend_from_slice(&[0xb8, 0x0f, 0x05, 0, 0, 0xc3]);
        assert_eq!(sites(&code), Vec::<u64>::new());
        // lea rax, [rip + 0x50f]: in a displacement.
        let mut code = vec![0x90u8; 80];
        code.extend_from_slice(&[0x48, 0x8d, 0x05, 0x0f, 0x05, 0, 0, 0xc3]);
        assert_eq!(sites(&code), Vec::<u64>::new());
        // At the very start, and twice.
        let code = [0x0f, 0x05, 0x0f, 0x05, 0xc3];
        assert_eq!(sites(&code), [0x1002, 0x1004]);
        // A lone 0x0f at the end.
        assert_eq!(sites(&[0x90, 0x0f]), Vec::<u64>::new());
    }

    /// The 16-at-a-time search finds every `0f 05` a byte-by-byte one finds, across its
    /// block edges and in the tail.
    #[test]
    fn candidates_match_a_plain_search() {
        let mut code = [0u8; 200];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in code.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = [0x0f, 0x05, 0x90, 0x0f][(x % 4) as usize];
        }
        for len in [0, 1, 2, 15, 16, 17, 18, 31, 32, 33, 100, 200] {
            let c = &code[..len];
            let mut got = Vec::new();
            super::candidates(c, &mut |i| got.push(i));
            let want: Vec<usize> = (0..len.saturating_sub(1))
                .filter(|&i| c[i] == 0x0f && c[i + 1] == 0x05)
                .collect();
            assert_eq!(got, want, "len {len}");
        }
    }
}
