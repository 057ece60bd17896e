//! Planning the jump that replaces an instruction (E9Patch's instruction punning).
//!
//! Only the hot instruction's own bytes are overwritten, with `[prefixes] E9 rel32`. When
//! the instruction is shorter than the jump, the high bytes of `rel32` are the unchanged
//! bytes of the instruction after it: the jump is still decoded and taken, and lands
//! wherever those bytes make it point. No other instruction boundary moves, so nothing
//! that branches to the next instruction can land in displaced bytes, and no control-flow
//! recovery is needed. The fewer bytes of `rel32` lie inside the instruction, the
//! narrower the window of reachable targets: 4 free bytes reach ±2 GiB, 3 bytes a 16 MiB
//! window, 2 bytes 64 KiB, 1 byte 256 bytes, 0 bytes exactly one address. Redundant
//! segment prefixes before the `E9` shift which bytes form `rel32`, giving other windows
//! to try when one is full.
//!
//! Successor eviction (E9Patch's third tactic: also rewriting the next instruction) is not
//! done: a site none of whose windows has room stays on the trap path.

use alloc::vec::Vec;

// The patcher (patch/mod.rs) calls these; on a branch without it only tests do, and
// this allow can go once both are merged.

/// The prefix written for padding: an `es` segment override, ignored on a near jump in
/// 64-bit mode. Never `0x66` (operand size: `jmp rel16` on some CPUs) nor a REX byte.
const PAD_PREFIX: u8 = 0x26;
/// The lowest address a trampoline may start at (below `vm.mmap_min_addr`'s usual value
/// nothing can be mapped).
pub(crate) const USER_MIN: u64 = 0x10000;
/// One past the highest address a trampoline may start at (the top of the 47-bit user
/// address space, less the guard the kernel keeps below it).
pub(crate) const USER_MAX: u64 = 0x7fff_ffff_0000;

/// One way to turn the `len`-byte instruction at `rip` into a jump: `prefixes` redundant
/// prefix bytes, then `0xE9`, then `rel32`, of which only the bytes inside the instruction
/// are written (the low ones); the rest are the unchanged bytes that follow it. The jump
/// lands anywhere in `[lo, hi)` (the free low bytes of `rel32` choose where), or exactly
/// at `lo` when `hi == lo + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Redundant prefix bytes before the `E9`.
    pub prefixes: u8,
    /// Lowest reachable target.
    pub lo: u64,
    /// One past the highest reachable target.
    pub hi: u64,
}

/// Every plan for the `len`-byte (1..=15) instruction at `rip` (`after` = the bytes that
/// follow it in memory, at least 4 for a short instruction), in tactic order: a plain
/// jump (`len >= 5`: ±2 GiB), a punned jump (`len < 5`), punned jumps with 1..len-1
/// redundant prefixes. Windows are clipped to `[USER_MIN, USER_MAX)`; empty ones are
/// dropped.
pub(crate) fn plans(rip: u64, len: usize, after: &[u8]) -> Vec<Plan> {
    let mut out = Vec::new();
    if len == 0 || len > 15 {
        return out;
    }
    let counts: &[usize] = if len >= 5 { &[0] } else { &[0, 1, 2, 3] };
    for &p in counts.iter().filter(|&&p| p < len) {
        if let Some((lo, hi)) = window(rip, len, after, p) {
            out.push(Plan {
                prefixes: p as u8,
                lo,
                hi,
            });
        }
    }
    out
}

/// The clipped target window of the jump with `p` prefixes, `None` when empty or when
/// `after` is too short.
fn window(rip: u64, len: usize, after: &[u8], p: usize) -> Option<(u64, u64)> {
    let free = (len - p - 1).min(4);
    let fixed = 4 - free;
    if after.len() < fixed {
        return None;
    }
    let mut rel = [0u8; 4];
    rel[free..].copy_from_slice(&after[..fixed]);
    let base = i32::from_le_bytes(rel) as i64;
    let next = rip as i64 + p as i64 + 5;
    let (lo, hi) = if free == 4 {
        (next + i32::MIN as i64, next + i32::MAX as i64 + 1)
    } else {
        let lo = next + base;
        (lo, lo + (1i64 << (8 * free)))
    };
    let lo = lo.max(USER_MIN as i64);
    let hi = hi.min(USER_MAX as i64);
    (lo < hi).then_some((lo as u64, hi as u64))
}

/// The `len` bytes (in the first `len` of the array) to write over the instruction at
/// `rip` so that it jumps to `target`, by `plan`; `None` when `target` is outside the
/// plan's window or `after` does not give the bytes the plan was made with. Bytes of the
/// instruction past the jump (`len > 5`) become `int3`: nothing can branch into the middle
/// of an instruction, and a stray arrival there traps instead of running garbage.
pub(crate) fn encode(
    plan: &Plan,
    rip: u64,
    len: usize,
    after: &[u8],
    target: u64,
) -> Option<[u8; 15]> {
    let p = plan.prefixes as usize;
    if len == 0 || len > 15 || p >= len || target < plan.lo || target >= plan.hi {
        return None;
    }
    let (lo, hi) = window(rip, len, after, p)?;
    if target < lo || target >= hi {
        return None;
    }
    let rel = target as i64 - (rip as i64 + p as i64 + 5);
    let rel = i32::try_from(rel).ok()?.to_le_bytes();
    let free = (len - p - 1).min(4);
    if rel[free..] != after[..4 - free] {
        return None;
    }
    let mut out = [0xCCu8; 15];
    out[..p].fill(PAD_PREFIX);
    out[p] = 0xE9;
    out[p + 1..p + 1 + free].copy_from_slice(&rel[..free]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    /// Decodes the written bytes followed by `after` at `rip` and returns the near jump's
    /// target and length.
    fn decode_jump(rip: u64, written: &[u8], after: &[u8]) -> (u64, usize) {
        let mut bytes = written.to_vec();
        bytes.extend_from_slice(after);
        let mut d = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
        let i = d.decode();
        assert_eq!(i.code(), Code::Jmp_rel32_64, "{written:02x?} {after:02x?}");
        (i.near_branch_target(), i.len())
    }

    const AFTERS: &[[u8; 6]] = &[
        [0x48, 0x8b, 0x07, 0xc3, 0x90, 0x90], // mov rax,[rdi]; ret
        [0x89, 0x47, 0x04, 0x5d, 0xc3, 0x00], // mov [rdi+4],eax; pop rbp; ret
        [0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc], // ret; int3 padding
        [0x0f, 0x1f, 0x40, 0x00, 0x90, 0x90], // nopl
        [0xe8, 0x10, 0x20, 0x30, 0x00, 0x00], // call
        [0xff, 0xff, 0xff, 0x7f, 0x00, 0x00],
        [0x00, 0x00, 0x00, 0x80, 0x00, 0x00],
    ];
    const RIPS: &[u64] = &[0x5555_5555_4000, 0x7f12_3456_789a, 0x40_1000, 0x20_0000];

    /// Every plan's window is reachable: its first, last and a middle target encode and
    /// decode back (iced) to a near jump at exactly that target, whose displaced bytes are
    /// `after`'s, for every length and sample of following bytes.
    #[test]
    fn every_plan_round_trips() {
        let mut checked = 0;
        for &rip in RIPS {
            for after in AFTERS {
                for len in 1..=15 {
                    let ps = plans(rip, len, after);
                    let expected = if len >= 5 { 1 } else { len };
                    assert!(ps.len() <= expected);
                    for plan in &ps {
                        assert!(plan.lo < plan.hi && plan.lo >= USER_MIN && plan.hi <= USER_MAX);
                        let free = (len - plan.prefixes as usize - 1).min(4);
                        let span = plan.hi - plan.lo;
                        assert!(span <= 1u64 << (8 * free), "{plan:?}");
                        for t in [plan.lo, plan.hi - 1, plan.lo + span / 2] {
                            let w = encode(plan, rip, len, after, t).expect("in window");
                            let (got, jlen) = decode_jump(rip, &w[..len], after);
                            assert_eq!(got, t, "len {len} {plan:?}");
                            assert_eq!(jlen, plan.prefixes as usize + 5);
                            assert!(w[len..].iter().all(|&b| b == 0xCC));
                            checked += 1;
                        }
                        assert_eq!(encode(plan, rip, len, after, plan.hi), None);
                        assert_eq!(encode(plan, rip, len, after, plan.lo.wrapping_sub(1)), None);
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    /// The windows have the sizes the free bytes give and sit where the bytes that follow
    /// put them: worked examples.
    #[test]
    fn window_shapes() {
        let rip = 0x5555_5555_4000u64;
        // 5+ bytes: ±2 GiB around the next instruction.
        let p = plans(rip, 7, &[0; 4]);
        assert_eq!(
            p,
            vec![Plan {
                prefixes: 0,
                lo: rip + 5 - (1 << 31),
                hi: rip + 5 + (1 << 31)
            }]
        );
        // 4 bytes: after[0] = 0x01 is rel32's top byte: a 16 MiB window 16 MiB above.
        let p = plans(rip, 4, &[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(
            p[0],
            Plan {
                prefixes: 0,
                lo: rip + 5 + 0x0100_0000,
                hi: rip + 5 + 0x0200_0000
            }
        );
        // one prefix: after[0..2] are the top bytes (0x0201_0000), 64 KiB wide.
        assert_eq!(
            p[1],
            Plan {
                prefixes: 1,
                lo: rip + 6 + 0x0201_0000,
                hi: rip + 6 + 0x0202_0000
            }
        );
        // two: 256 bytes; three: one address.
        assert_eq!(
            p[2],
            Plan {
                prefixes: 2,
                lo: rip + 7 + 0x0302_0100,
                hi: rip + 7 + 0x0302_0200
            }
        );
        assert_eq!(
            p[3],
            Plan {
                prefixes: 3,
                lo: rip + 8 + 0x0403_0201,
                hi: rip + 8 + 0x0403_0202
            }
        );
        assert_eq!(p.len(), 4);
        // 2 bytes: the E9 and one free byte, or a prefix and the E9.
        let p = plans(rip, 2, &[0xc3, 0xff, 0xff, 0xff]);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].hi - p[0].lo, 256);
        // rel32 = 0xffffc3xx: the top three bytes from `after`.
        assert_eq!(p[0].lo, rip + 5 - 0x3d00);
        // rel32 = 0xffffffc3 after one prefix.
        assert_eq!(
            p[1],
            Plan {
                prefixes: 1,
                lo: rip + 6 - 0x3d,
                hi: rip + 6 - 0x3c
            }
        );
        // 1 byte: the E9 alone; rel32 is the next four bytes.
        let p = plans(rip, 1, &[0x10, 0x00, 0x00, 0x00]);
        assert_eq!(
            p,
            vec![Plan {
                prefixes: 0,
                lo: rip + 5 + 0x10,
                hi: rip + 5 + 0x11
            }]
        );
        // Too few following bytes, bad lengths.
        assert!(plans(rip, 1, &[0x10, 0x00, 0x00]).is_empty());
        assert!(plans(rip, 0, &[0; 4]).is_empty());
        assert!(plans(rip, 16, &[0; 4]).is_empty());
    }

    /// Windows that leave the user address space are clipped or dropped.
    #[test]
    fn windows_are_clipped() {
        // A plain jump low in memory: nothing below USER_MIN.
        let p = plans(0x40_0000, 5, &[0; 4]);
        assert_eq!(p[0].lo, USER_MIN);
        // rel32 = 0x80xxxxxx from just above USER_MIN: the whole window is below it.
        let p = plans(0x10_0000, 4, &[0x80, 0, 0, 0]);
        assert!(p.iter().all(|p| p.prefixes != 0), "{p:?}");
        // Near the top: nothing at or above USER_MAX.
        let p = plans(USER_MAX - 0x1000, 6, &[0; 4]);
        assert_eq!(p[0].hi, USER_MAX);
        let p = plans(USER_MAX - 0x1000, 4, &[0x7f, 0, 0, 0]);
        assert!(p.iter().all(|p| p.prefixes != 0), "{p:?}");
    }

    /// `place` falls back along the tactic order: with the punned jump's window taken by an
    /// existing mapping, the prefixed jump's single target, in a hole, gets the trampoline.
    /// What the patcher does: the first plan, in tactic order, whose window the arena has
    /// room in.
    fn place(rip: u64, len: usize, after: &[u8], size: usize) -> Option<(u64, [u8; 15], Plan)> {
        plans(rip, len, after).into_iter().find_map(|plan| {
            let at = crate::patch::arena::reserve(plan.lo, plan.hi, size)?;
            Some((at, encode(&plan, rip, len, after, at)?, plan))
        })
    }

    #[test]
    fn place_takes_the_first_window_with_room() {
        crate::patch::text::init().expect("text route");
        use crate::sys;
        // SAFETY: a fresh reservation where the kernel likes.
        let r = unsafe {
            sys::mmap(
                0,
                512 * 4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(r > 0);
        let r = r as u64;
        let rip = r + 0x1100;
        // len 2: no prefix: rel32 = 0x001004xx (inside the reservation); one prefix:
        // rel32 = 0x00001004 exactly.
        let after = [0x04, 0x10, 0x00, 0x00];
        let ps = plans(rip, 2, &after);
        assert_eq!(ps[0].lo, rip + 5 + 0x0010_0400);
        assert_eq!(ps[1].lo, rip + 6 + 0x1004);
        assert!(ps[0].hi <= r + 512 * 4096);
        assert_eq!(place(rip, 2, &after, 16), None, "both windows taken");
        let target = rip + 6 + 0x1004;
        let page = target & !4095;
        // SAFETY: a page of our own reservation.
        assert_eq!(unsafe { sys::munmap(page as usize, 4096) }, 0);
        let Some((at, bytes, plan)) = place(rip, 2, &after, 16) else {
            // Tests run as threads of one process: another test's mmap may have taken the
            // hole first.
            let m = crate::patch::text::maps();
            let taken = m.iter().any(|m| m.start <= page && page < m.end);
            assert!(taken, "no room, though the hole is free");
            return;
        };
        assert_eq!((at, plan), (target, ps[1]));
        assert_eq!(&bytes[..2], &[PAD_PREFIX, 0xE9]);
        let (got, _) = decode_jump(rip, &bytes[..2], &after);
        assert_eq!(got, target);
    }

    /// A target outside the window, or bytes after the site that changed since the plan
    /// was made, give no encoding.
    #[test]
    fn encode_refuses_mismatches() {
        let rip = 0x5555_5555_4000u64;
        let after = [0x01, 0x02, 0x03, 0x04];
        let p = plans(rip, 3, &after);
        assert!(encode(&p[0], rip, 3, &after, p[0].lo).is_some());
        assert!(encode(&p[0], rip, 3, &[0x01, 0x09, 0x03, 0x04], p[0].lo).is_none());
        assert!(encode(&p[0], rip, 3, &after, p[0].hi + 5).is_none());
        assert!(encode(&p[0], rip, 3, &after[..1], p[0].lo).is_none());
        let p5 = plans(rip, 5, &after)[0];
        assert!(encode(&p5, rip, 5, &after, rip + 5 + (1 << 31)).is_none());
        assert!(encode(&p5, rip, 5, &after, rip + 5 + (1 << 31) - 1).is_some());
    }
}
