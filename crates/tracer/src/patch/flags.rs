//! Flag liveness after a site: whether a trampoline must preserve the arithmetic flags.
//!
//! A trampoline's range check (`cmp`) clobbers CF PF AF ZF SF OF. Saving and restoring them
//! costs several nanoseconds per access, so it is done only where the code after the site
//! may read a flag before writing it. The scan decodes forward from the end of the site
//! and is conservative: whatever it cannot follow counts as a read.

// The patcher (patch/mod.rs) calls these; on a branch without it only tests do, and
// this allow can go once both are merged.

use iced_x86::RflagsBits as F;
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, Register};

use super::{arena, text};

/// The six status flags a trampoline's compare clobbers.
const STATUS: u32 = F::CF | F::PF | F::AF | F::ZF | F::SF | F::OF;
/// How many instructions the scan decodes before it gives up (and says live).
const MAX_INSNS: usize = 32;
/// Bytes read at a time.
const CHUNK: usize = 256;

/// Whether any of CF PF AF ZF SF OF may be read after the instruction ending at `next`
/// before all six are written. Decodes forward from `next` (reading the text without
/// faulting: the next page may be unmapped), at most 32 instructions, following direct
/// unconditional jumps; any instruction that reads a status flag still unwritten, any
/// other control transfer (conditional branch, call, return, indirect jump, interrupt,
/// system call), a jump into trampoline memory, undecodable bytes or the limit all answer
/// `true`. A shift or rotate by `cl` and a `rep`-prefixed string instruction do not count
/// as writes (a zero count leaves the flags alone); undefined results do.
pub(crate) fn live_after(next: u64) -> bool {
    let mut open = STATUS;
    let mut buf = [0u8; CHUNK];
    let mut base = next;
    let mut have = 0usize;
    let mut pc = next;
    for _ in 0..MAX_INSNS {
        // Keep at least one whole instruction (15 bytes) in the buffer unless the
        // readable text ends first.
        let off = pc.wrapping_sub(base) as usize;
        if pc < base || off + 15 > have {
            base = pc;
            have = text::read(pc, &mut buf);
        }
        let off = (pc - base) as usize;
        if off >= have {
            return true;
        }
        let mut d = Decoder::with_ip(64, &buf[off..have], pc, DecoderOptions::NONE);
        let mut i = Instruction::default();
        d.decode_out(&mut i);
        if i.is_invalid() {
            return true;
        }
        if i.rflags_read() & open != 0 {
            return true;
        }
        match i.flow_control() {
            FlowControl::Next => {}
            FlowControl::UnconditionalBranch
                if matches!(i.code(), Code::Jmp_rel8_64 | Code::Jmp_rel32_64) =>
            {
                let t = i.near_branch_target();
                // Into a trampoline: what runs there depends on the patch, not on text.
                if arena::owns(t, 1) {
                    return true;
                }
                pc = t;
                continue;
            }
            _ => return true,
        }
        if !count_may_be_zero(&i) {
            open &= !i.rflags_modified();
            if open & STATUS == 0 {
                return false;
            }
        }
        pc = i.next_ip();
    }
    true
}

/// A shift or rotate by `cl`, or a string instruction repeated `rcx` times: with a zero
/// count the flags are left as they were.
fn count_may_be_zero(i: &Instruction) -> bool {
    use Mnemonic::*;
    let shift = matches!(
        i.mnemonic(),
        Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd
    );
    if shift {
        return (0..i.op_count()).any(|k| i.op_register(k) == Register::CL);
    }
    i.is_string_instruction() && (i.has_rep_prefix() || i.has_repne_prefix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    const PAGE: usize = 4096;

    /// Two pages: the first holds code, the second is inaccessible (a scan that reads past
    /// the end must stop there, not fault).
    struct Code2 {
        base: u64,
    }

    impl Code2 {
        fn new() -> Code2 {
            let p = sys::map_anon(2 * PAGE).expect("memory") as u64;
            // Inaccessible rather than unmapped: a hole could be filled by another test's
            // mapping before the scan reads it.
            // SAFETY: our own second page.
            assert_eq!(
                unsafe { sys::mprotect(p as usize + PAGE, PAGE, libc::PROT_NONE) },
                0
            );
            Code2 { base: p }
        }
        /// Places `code` at `off` in the page, the rest of the page filled with int3.
        fn at(&self, off: usize, code: &[u8]) -> u64 {
            // SAFETY: our own read-write page; the code stays inside it.
            unsafe {
                core::ptr::write_bytes(self.base as *mut u8, 0xcc, PAGE);
                core::ptr::copy_nonoverlapping(
                    code.as_ptr(),
                    (self.base as usize + off) as *mut u8,
                    code.len(),
                );
            }
            self.base + off as u64
        }
    }

    impl Drop for Code2 {
        fn drop(&mut self) {
            // SAFETY: our own pages.
            unsafe { sys::munmap(self.base as usize, 2 * PAGE) };
        }
    }

    fn live(code: &[u8]) -> bool {
        let c = Code2::new();
        live_after(c.at(0, code))
    }

    #[test]
    fn writes_before_reads_are_dead() {
        assert!(!live(&[0x39, 0xd8])); // cmp eax,ebx
        assert!(!live(&[0x8b, 0x07, 0x31, 0xc9, 0x74, 0x00])); // mov eax,[rdi]; xor ecx,ecx; jz
        assert!(!live(&[0x01, 0xd8, 0xc3])); // add eax,ebx; ret
        assert!(!live(&[0x85, 0xc0, 0x0f, 0x44, 0xc3])); // test eax,eax; cmovz
                                                         // Undefined results count as writes: shl by 1 leaves AF undefined.
        assert!(!live(&[0xd1, 0xe0, 0x74, 0x00])); // shl eax,1; jz
                                                   // Flags written in parts: inc (all but CF), then cmp.
        assert!(!live(&[0xff, 0xc0, 0x39, 0xd8, 0x72, 0x00])); // inc eax; cmp; jb
    }

    #[test]
    fn readers_are_live() {
        assert!(live(&[0x74, 0x05])); // jz
        assert!(live(&[0x0f, 0x44, 0xc3])); // cmovz eax,ebx
        assert!(live(&[0x0f, 0x92, 0xc0])); // setc al
        assert!(live(&[0x83, 0xd0, 0x00])); // adc eax,0
        assert!(live(&[0x19, 0xd8])); // sbb eax,ebx
        assert!(live(&[0x9c])); // pushf
        assert!(live(&[0x9f])); // lahf
                                // After a partial write the unwritten flag still counts: inc keeps CF.
        assert!(live(&[0xff, 0xc0, 0x11, 0xd8])); // inc eax; adc eax,ebx
                                                  // sahf writes all but OF.
        assert!(live(&[0x9e, 0x70, 0x00])); // sahf; jo
                                            // Reads after plain moves and lea.
        assert!(live(&[
            0x48, 0x89, 0xc3, 0x48, 0x8d, 0x04, 0x24, 0x0f, 0x94, 0xc0
        ])); // mov; lea; sete
    }

    #[test]
    fn zero_counts_do_not_write() {
        assert!(live(&[0xd3, 0xe0, 0x74, 0x00])); // shl eax,cl; jz
        assert!(!live(&[0xd3, 0xe0, 0x39, 0xd8, 0x74, 0x00])); // shl eax,cl; cmp; jz
        assert!(live(&[0xf3, 0xa6, 0x74, 0x00])); // repe cmpsb; jz
        assert!(!live(&[0xa6, 0x74, 0x00])); // cmpsb; jz
                                             // F3 as a mandatory prefix is no repeat: popcnt and tzcnt write the flags.
        assert!(!live(&[0xf3, 0x0f, 0xb8, 0xc3, 0x74, 0x00])); // popcnt eax,ebx; jz
        assert!(!live(&[0xf3, 0x0f, 0xbc, 0xc3, 0x74, 0x00])); // tzcnt eax,ebx; jz
                                                               // A stray rep on a non-string instruction repeats nothing.
        assert!(!live(&[0xf3, 0x39, 0xd8, 0x74, 0x00])); // rep cmp eax,ebx; jz
                                                         // An immediate count of zero: iced knows it writes nothing.
        assert!(live(&[0xc1, 0xe0, 0x00, 0x74, 0x00])); // shl eax,0; jz
    }

    #[test]
    fn control_flow_is_live_unless_a_direct_jump() {
        assert!(live(&[0xc3])); // ret
        assert!(live(&[0xe8, 0, 0, 0, 0, 0x39, 0xd8])); // call; cmp
        assert!(live(&[0xff, 0xe0])); // jmp rax
        assert!(live(&[0x0f, 0x05])); // syscall
        assert!(live(&[0xcc])); // int3
        assert!(live(&[0x0f, 0x0b])); // ud2
        assert!(live(&[0xe3, 0x00, 0x39, 0xd8])); // jrcxz; cmp
        assert!(live(&[0xe2, 0x00, 0x39, 0xd8])); // loop; cmp
        assert!(live(&[0x06])); // invalid in 64-bit mode
                                // jmp over bytes that would read the flags, to a write: followed.
        assert!(!live(&[0xeb, 0x03, 0x0f, 0x44, 0xc3, 0x85, 0xc0])); // jmp +3; (cmovz); test
        assert!(!live(&[0xe9, 0x03, 0, 0, 0, 0x0f, 0x44, 0xc3, 0x85, 0xc0])); // jmp rel32
                                                                              // Backwards into a reader.
        let c = Code2::new();
        // SAFETY: the page is ours; the code is placed at 64, the reader at 16.
        let at = c.at(64, &[0xeb, 0xce]); // jmp -50 -> 16
        unsafe { *((c.base + 16) as *mut u8) = 0x9c };
        assert!(live_after(at));
        // A jump to itself: the limit.
        assert!(live(&[0xeb, 0xfe]));
    }

    #[test]
    fn instruction_limit() {
        let mut code = vec![0x90; 31];
        code.extend_from_slice(&[0x39, 0xd8]);
        assert!(!live(&code), "31 nops + cmp is 32 instructions");
        let mut code = vec![0x90; 32];
        code.extend_from_slice(&[0x39, 0xd8]);
        assert!(live(&code), "33 instructions");
    }

    #[test]
    fn end_of_readable_text_is_live() {
        let c = Code2::new();
        // Three nops at the very end of the page, nothing readable after.
        let at = c.at(PAGE - 3, &[0x90, 0x90, 0x90]);
        assert!(live_after(at));
        // An instruction cut by the page end.
        let at = c.at(PAGE - 1, &[0x39]);
        assert!(live_after(at));
        // Inaccessible memory itself.
        assert!(live_after(c.base + PAGE as u64));
    }

    #[test]
    fn jump_into_a_trampoline_is_live() {
        text::init().expect("text route");
        let c = Code2::new();
        let here = c.base;
        let t = arena::reserve(here - (1 << 30), here + (1 << 30), 16).expect("room");
        arena::fill(t, &[0x39, 0xd8]).unwrap(); // cmp eax,ebx: would be dead as text
        let rel = (t as i64 - (here as i64 + 5)) as i32;
        let mut code = vec![0xe9];
        code.extend_from_slice(&rel.to_le_bytes());
        assert!(live_after(c.at(0, &code)));
        // The same jump to the same code in ordinary memory is followed.
        let rel = 16i32 - 5;
        let mut code = vec![0xe9];
        code.extend_from_slice(&rel.to_le_bytes());
        let at = c.at(0, &code);
        // SAFETY: our own page.
        unsafe {
            core::ptr::copy_nonoverlapping([0x39u8, 0xd8].as_ptr(), (here + 16) as *mut u8, 2)
        };
        assert!(!live_after(at));
    }
}
