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
    let mut i = 0;
    while i + 1 < code.len() {
        let Some(k) = code[i..code.len() - 1].iter().position(|&b| b == 0x0f) else {
            break;
        };
        i += k;
        if code[i + 1] == 0x05 && is_syscall_at(code, base, i) {
            found(base + i as u64 + 2);
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
}
