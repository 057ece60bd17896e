//! Memory for trampolines at exact addresses.
//!
//! A punned jump reaches only a window of addresses (256 bytes to ±2 GiB, see `pun`), and
//! the trampoline must start at the exact address the jump encodes. The arena hands out
//! byte ranges of executable pages it owns, preferring space in pages it already has, and
//! otherwise maps new private anonymous read-execute pages in a free gap of the address
//! space with `MAP_FIXED_NOREPLACE` (never over anything that exists). Pages are not
//! writable: code goes in through `text::poke`. Trampoline space is never freed: a thread
//! may be preempted inside a trampoline, and may resume there at any later time.
//!
//! Patcher thread only (it allocates, locks and reads `/proc/self/maps`).

// The patcher (patch/mod.rs) calls these; on a branch without it only tests do, and
// this allow can go once both are merged.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::sync::Mutex;

use super::pun::{USER_MAX, USER_MIN};
use super::text;
use crate::sys;

const PAGE: u64 = 4096;
/// How many new mappings one `reserve` tries before giving up.
const MAX_TRIES: usize = 16;
/// Gaps the program's heap and main stack grow into: placing pages there would stop
/// `brk` or the stack early, so they are tried last.
const HEAP_ROOM: u64 = 1 << 30;
const STACK_ROOM: u64 = 256 << 20;

/// Free space in pages the arena owns: start -> end, disjoint, never adjacent (merged).
struct Arena {
    free: BTreeMap<u64, u64>,
    /// Page ranges the arena mapped: start -> end.
    owned: BTreeMap<u64, u64>,
}

static ARENA: Mutex<Arena> = Mutex::new(Arena {
    free: BTreeMap::new(),
    owned: BTreeMap::new(),
});

impl Arena {
    /// Space in owned pages starting in `[lo, hi)`.
    fn take_owned(&mut self, lo: u64, hi: u64, size: u64) -> Option<u64> {
        // Free intervals that may contain a start in [lo, hi): those starting below hi
        // and ending after lo.
        // Ends grow with starts (disjoint intervals): walk down from the last interval
        // starting below hi while intervals still end after lo.
        let s = self
            .free
            .range(..hi)
            .rev()
            .take_while(|(_, &e)| e > lo)
            .find_map(|(&a, &b)| {
                let s = a.max(lo);
                (s < hi && s + size <= b).then_some(s)
            })?;
        self.carve(s, size);
        Some(s)
    }

    /// Removes `[s, s + size)` from the free interval containing it.
    fn carve(&mut self, s: u64, size: u64) {
        let (&a, &b) = self.free.range(..=s).next_back().expect("free interval");
        debug_assert!(a <= s && s + size <= b);
        self.free.remove(&a);
        if a < s {
            self.free.insert(a, s);
        }
        if s + size < b {
            self.free.insert(s + size, b);
        }
    }

    /// Adds new pages `[a, b)` to the free space, merging with neighbours.
    fn add_pages(&mut self, a: u64, b: u64) {
        self.owned.insert(a, b);
        let (mut a, mut b) = (a, b);
        if let Some((&pa, &pb)) = self.free.range(..a).next_back() {
            if pb == a {
                self.free.remove(&pa);
                a = pa;
            }
        }
        if let Some(&nb) = self.free.get(&b) {
            self.free.remove(&b);
            b = nb;
        }
        self.free.insert(a, b);
    }

    fn owns(&self, a: u64, b: u64) -> bool {
        // Owned ranges can be adjacent: walk them from the one holding `a`.
        let mut at = a;
        while at < b {
            match self.owned.range(..=at).next_back() {
                Some((_, &e)) if e > at => at = e,
                _ => return false,
            }
        }
        true
    }
}

/// Finds and reserves `size` (1..=4096) bytes of executable memory starting at an
/// address in `[lo, hi)`, preferring space in pages the arena already owns, else mapping
/// new private anonymous read-execute pages in a free gap (never over an existing
/// mapping). Returns the start; `None` when the window has no room (within a bounded
/// number of tries).
pub(crate) fn reserve(lo: u64, hi: u64, size: usize) -> Option<u64> {
    let lo = lo.max(USER_MIN);
    let hi = hi.min(USER_MAX);
    if size == 0 || size > PAGE as usize || lo >= hi {
        return None;
    }
    let size = size as u64;
    let mut arena = ARENA.lock();
    if let Some(s) = arena.take_owned(lo, hi, size) {
        return Some(s);
    }
    let maps = text::maps();
    for s in candidates(&maps, lo, hi, size).into_iter().take(MAX_TRIES) {
        let a = s & !(PAGE - 1);
        let b = (s + size).div_ceil(PAGE) * PAGE;
        if map_fixed(a, b) {
            arena.add_pages(a, b);
            arena.carve(s, size);
            return Some(s);
        }
    }
    None
}

/// Maps `[a, b)` read-execute exactly there, or nothing.
fn map_fixed(a: u64, b: u64) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; a kernel that
    // predates the flag treats the address as a hint, which is checked below.
    let r = unsafe {
        sys::mmap(
            a as usize,
            (b - a) as usize,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if r < 0 {
        return false;
    }
    if r as u64 != a {
        // SAFETY: the mapping the kernel just made elsewhere, ours alone.
        unsafe { sys::munmap(r as usize, (b - a) as usize) };
        return false;
    }
    true
}

/// Start addresses to try, best first: in each free gap that can hold `size` bytes from
/// a start in `[lo, hi)`, the feasible start nearest the window's middle and the gap's
/// first and last, each moved to a page boundary when the window allows; starts nearer
/// the middle first, and those where the heap or the main stack grow last.
fn candidates(maps: &[text::Mapping], lo: u64, hi: u64, size: u64) -> Vec<u64> {
    let mid = lo + (hi - lo) / 2;
    let mut avoid = Vec::new();
    for m in maps {
        if m.name == "[heap]" {
            avoid.push((m.end, m.end.saturating_add(HEAP_ROOM)));
        } else if m.name == "[stack]" {
            avoid.push((m.start.saturating_sub(STACK_ROOM), m.start));
        }
    }
    let mut out: Vec<(bool, u64, u64)> = Vec::new();
    let mut prev = USER_MIN;
    let ends = maps
        .iter()
        .map(|m| (m.start, m.end))
        .chain(core::iter::once((USER_MAX, USER_MAX)));
    for (ms, me) in ends {
        let (g0, g1) = (prev.max(USER_MIN), ms.min(USER_MAX));
        prev = prev.max(me);
        if g1 <= g0 || g1 - g0 < size {
            continue;
        }
        // Feasible starts in this gap: s >= g0, s + size <= g1, lo <= s < hi.
        let f0 = g0.max(lo);
        let f1 = (g1 - size + 1).min(hi);
        if f0 >= f1 {
            continue;
        }
        // The start nearest the middle, and the gap's first and last: a page boundary
        // where the range allows (the rest of the page then serves later trampolines).
        let mut points = vec![mid.clamp(f0, f1 - 1), f0, f1 - 1];
        // Where the range crosses an avoided zone: its edges.
        for &(a, b) in &avoid {
            points.extend(
                [a.saturating_sub(size), b]
                    .into_iter()
                    .filter(|&t| t >= f0 && t < f1),
            );
        }
        for p in points {
            let down = p & !(PAGE - 1);
            let s = if down >= f0 {
                down
            } else {
                (p | (PAGE - 1))
                    .checked_add(1)
                    .filter(|&u| u < f1)
                    .unwrap_or(p)
            };
            let bad = avoid.iter().any(|&(a, b)| s < b && s + size > a);
            out.push((bad, s.abs_diff(mid), s));
        }
    }
    out.sort_unstable();
    out.dedup_by_key(|c| c.2);
    out.into_iter().map(|c| c.2).collect()
}

/// Whether `[addr, addr + len)` lies in pages the arena owns (a trampoline, or space for
/// one).
pub(crate) fn owns(addr: u64, len: usize) -> bool {
    let arena = ARENA.lock();
    arena.owns(addr, addr.saturating_add(len.max(1) as u64))
}

/// Writes `code` into reserved space (the pages are read-execute: through `text::poke`).
/// `Err(EINVAL)` when the range is not arena memory, else the write's errno.
pub(crate) fn fill(at: u64, code: &[u8]) -> Result<(), i32> {
    if !owns(at, code.len()) {
        return Err(libc::EINVAL);
    }
    text::poke(at, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch stretch of address space: reserved PROT_NONE, then pages are unmapped to
    /// make holes or mapped read-write (filled with a pattern) as existing mappings.
    /// Never unmapped: arena pages placed in its holes must stay where the arena's
    /// bookkeeping says they are.
    struct Scratch {
        base: u64,
    }

    impl Scratch {
        fn new(pages: u64) -> Scratch {
            let len = pages * PAGE;
            // SAFETY: a fresh mapping where the kernel likes.
            let r = unsafe {
                sys::mmap(
                    0,
                    len as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert!(r > 0, "{r}");
            Scratch { base: r as u64 }
        }
        fn page(&self, i: u64) -> u64 {
            self.base + i * PAGE
        }
        /// Turns pages [i, j) into a hole.
        fn hole(&self, i: u64, j: u64) {
            // SAFETY: our own scratch pages.
            assert_eq!(
                unsafe { sys::munmap(self.page(i) as usize, ((j - i) * PAGE) as usize) },
                0
            );
        }
        /// Turns pages [i, j) into a read-write mapping holding a pattern.
        fn sentinel(&self, i: u64, j: u64) {
            // SAFETY: our own scratch pages.
            unsafe {
                assert_eq!(
                    sys::mprotect(
                        self.page(i) as usize,
                        ((j - i) * PAGE) as usize,
                        libc::PROT_READ | libc::PROT_WRITE
                    ),
                    0
                );
                core::ptr::write_bytes(self.page(i) as *mut u8, 0x5a, ((j - i) * PAGE) as usize);
            }
        }
        fn sentinel_intact(&self, i: u64, j: u64) -> bool {
            // SAFETY: read-write pages of ours.
            let s = unsafe {
                core::slice::from_raw_parts(self.page(i) as *const u8, ((j - i) * PAGE) as usize)
            };
            s.iter().all(|&b| b == 0x5a)
        }
    }

    /// The reserved bytes are executable, anonymous and read-only memory of the arena.
    fn assert_arena_memory(s: u64, size: usize) {
        assert!(owns(s, size));
        let maps = text::maps();
        for a in [s, s + size as u64 - 1] {
            let m = maps
                .iter()
                .find(|m| m.start <= a && a < m.end)
                .expect("mapped");
            assert_eq!(&m.perms, b"r-xp", "{m:?}");
            assert_eq!(m.name, "", "{m:?}");
        }
    }

    /// Runs `f` on fresh scratch memory of `pages` pages, all read-write sentinels but the
    /// `holes`, until it gets room. Tests run as threads of one process: another test's
    /// `mmap` can take a hole between its making and `reserve`; a `None` with the holes
    /// still free is a failure.
    fn in_scratch<T>(pages: u64, holes: &[(u64, u64)], f: impl Fn(&Scratch) -> Option<T>) -> T {
        for _ in 0..10 {
            let sc = Scratch::new(pages);
            sc.sentinel(0, pages);
            for &(i, j) in holes {
                sc.hole(i, j);
            }
            if let Some(t) = f(&sc) {
                return t;
            }
            let maps = text::maps();
            let stolen = holes.iter().any(|&(i, j)| {
                maps.iter().any(|m| {
                    m.start < sc.page(j) && sc.page(i) < m.end && !owns(m.start.max(sc.page(i)), 1)
                })
            });
            assert!(stolen, "no room, though the holes are free");
        }
        panic!("holes taken by other mappings ten times");
    }

    fn init_text() {
        text::init().expect("text route");
    }

    /// An exact-address window (a 0-free-byte pun) in a hole, mid-page: exactly there;
    /// the rest of that page serves a second, later reservation.
    #[test]
    fn exact_address_in_hole() {
        init_text();
        in_scratch(8, &[(3, 4)], |sc| {
            let want = sc.page(3) + 0x123;
            let s = reserve(want, want + 1, 64)?;
            assert_eq!(s, want);
            assert_arena_memory(s, 64);
            // A later trampoline in a window that covers the rest of that page: the same
            // page.
            let s2 = reserve(sc.page(3), sc.page(4), 200).expect("room");
            assert!(s2 >= sc.page(3) && s2 + 200 <= sc.page(4));
            assert!(s2 + 200 <= s || s2 >= s + 64, "{s2:#x} overlaps {s:#x}");
            // Nothing written over the neighbours.
            assert!(sc.sentinel_intact(0, 3) && sc.sentinel_intact(4, 8));
            fill(s, &[0xc3; 64]).unwrap();
            // SAFETY: just filled.
            assert_eq!(unsafe { *(s as *const u8) }, 0xc3);
            assert!(sc.sentinel_intact(0, 3) && sc.sentinel_intact(4, 8));
            Some(())
        })
    }

    /// A 256-byte window (a 1-free-byte pun) that straddles a page boundary, the lower page
    /// taken: the start lands on the free upper page.
    #[test]
    fn narrow_window_across_pages() {
        init_text();
        in_scratch(6, &[(3, 4)], |sc| {
            let lo = sc.page(3) - 0x80;
            let s = reserve(lo, lo + 256, 32)?;
            assert!(s >= sc.page(3) && s < lo + 256, "{s:#x}");
            assert_arena_memory(s, 32);
            assert!(sc.sentinel_intact(0, 3) && sc.sentinel_intact(4, 6));
            // A trampoline that must start in the window but does not fit before the next
            // mapping: none.
            let hi_lo = sc.page(4) - 0x40;
            assert_eq!(reserve(hi_lo, hi_lo + 0x20, 0x80), None);
            assert!(sc.sentinel_intact(4, 6));
            Some(())
        })
    }

    /// A 64 KiB window (a 2-free-byte pun) almost fully covered by existing mappings, one
    /// free page in it, the window starting and ending mid-page.
    #[test]
    fn window_with_one_free_page() {
        init_text();
        in_scratch(40, &[(21, 22)], |sc| {
            let lo = sc.page(5) + 0x321;
            let s = reserve(lo, lo + 0x10000, 1000)?;
            assert!(s >= sc.page(21) && s + 1000 <= sc.page(22), "{s:#x}");
            assert_arena_memory(s, 1000);
            assert!(sc.sentinel_intact(0, 21) && sc.sentinel_intact(22, 40));
            Some(())
        })
    }

    /// A window with no free byte at all: none, and nothing mapped over what is there.
    #[test]
    fn full_window_gives_none() {
        init_text();
        let sc = Scratch::new(20);
        sc.sentinel(0, 20);
        assert_eq!(reserve(sc.page(2) + 7, sc.page(18) - 9, 16), None);
        assert_eq!(reserve(sc.page(2), sc.page(2) + 1, 16), None);
        assert!(sc.sentinel_intact(0, 20));
        // Bad sizes and empty windows.
        assert_eq!(reserve(sc.page(2), sc.page(3), 0), None);
        assert_eq!(reserve(sc.page(2), sc.page(3), 4097), None);
        assert_eq!(reserve(sc.page(3), sc.page(3), 16), None);
    }

    /// 16 MiB (3 free bytes) and ±2 GiB (a plain jump) windows around this test's own code
    /// and around a hole: a start in the window, in fresh or owned arena memory, over no
    /// existing mapping.
    #[test]
    fn wide_windows() {
        init_text();
        // black_box: a constant offset of 2 GiB folded into the address is a relocation the
        // linker cannot encode.
        let code = core::hint::black_box(wide_windows as *const () as usize as u64);
        for (lo, hi) in [
            (code - (1 << 31) + 5, code + (1 << 31) + 5),
            (code + 5 - (1 << 23), code + 5 + (1 << 23)),
            (code + 5 + (1 << 24), code + 5 + (2 << 24)),
        ] {
            let before = text::maps();
            let s = reserve(lo, hi, 256).expect("room");
            assert!(s >= lo && s < hi, "{s:#x} not in [{lo:#x}, {hi:#x})");
            assert_arena_memory(s, 256);
            for m in &before {
                let over = m.start < s + 256 && s < m.end;
                assert!(
                    !over || (m.name.is_empty() && &m.perms == b"r-xp" && owns(m.start.max(s), 1)),
                    "{m:?}"
                );
            }
        }
    }

    /// Owned pages are used before new ones, and packed: 68 trampolines of 60 bytes fill
    /// one page, the 69th finds no room there; a page added next to it merges with it, so
    /// that a trampoline can cross from one into the other. (On a private `Arena`: the
    /// global one is shared with tests running at the same time.)
    #[test]
    fn reservations_pack_pages() {
        let mut a = Arena {
            free: BTreeMap::new(),
            owned: BTreeMap::new(),
        };
        let (p0, p1) = (0x10_0000u64, 0x10_1000u64);
        assert_eq!(a.take_owned(p0, p1 + PAGE, 60), None);
        a.add_pages(p0, p1);
        let mut got: Vec<u64> = (0..68)
            .map(|_| a.take_owned(p0, p1 + PAGE, 60).expect("room"))
            .collect();
        assert_eq!(a.take_owned(p0, p1 + PAGE, 60), None);
        got.sort_unstable();
        for w in got.windows(2) {
            assert!(w[1] >= w[0] + 60, "overlap {:#x} {:#x}", w[0], w[1]);
        }
        assert!(got[0] >= p0 && got[67] + 60 <= p1);
        // The 16 bytes left at the end of the page and the next page: one interval.
        a.add_pages(p1, p1 + PAGE);
        assert_eq!(a.free.len(), 1);
        let s = a
            .take_owned(p1 - 16, p1 - 15, 100)
            .expect("across the boundary");
        assert_eq!(s, p1 - 16);
        assert!(a.owns(p0, p0 + 2 * PAGE) && !a.owns(p0, p0 + 2 * PAGE + 1));
        // Space is handed out only where the window allows the start.
        let s = a.take_owned(p1 + 0x800, p1 + 0x801, 8).expect("exact");
        assert_eq!(s, p1 + 0x800);
        assert_eq!(
            a.take_owned(p1 + 0x800, p1 + 0x801, 8),
            None,
            "taken already"
        );
        assert_eq!(
            a.take_owned(p1 + 0x7fc, p1 + 0x7fd, 8),
            None,
            "would overlap"
        );
    }

    fn mapping(start: u64, end: u64, name: &str) -> text::Mapping {
        text::Mapping {
            start,
            end,
            perms: *b"r-xp",
            offset: 0,
            name: name.to_string(),
        }
    }

    /// Where the heap and the main stack grow, pages go only when nothing else in the
    /// window is free.
    #[test]
    fn candidates_avoid_heap_and_stack_growth() {
        let heap_end = 0x5600_0000_0000u64;
        let stack = 0x7ffc_0000_0000u64;
        let maps = vec![
            mapping(0x5555_0000_0000, 0x5555_0010_0000, "/usr/bin/prog"),
            mapping(0x5555_0100_0000, heap_end, "[heap]"),
            mapping(stack, stack + 0x2_1000, "[stack]"),
        ];
        // A window that starts where the heap ends, its middle in the heap's room: the
        // first candidate is past that room, and one inside it still comes, last.
        let c = candidates(&maps, heap_end, heap_end + (3 << 29), 64);
        assert!(c[0] >= heap_end + HEAP_ROOM, "{:#x}", c[0]);
        let last = *c.last().unwrap();
        assert!(last < heap_end + HEAP_ROOM, "{last:#x}");
        // Below the stack likewise.
        let c = candidates(&maps, stack - (300 << 20), stack, 64);
        assert!(c[0] + 64 <= stack - STACK_ROOM, "{:#x}", c[0]);
        // A window wholly inside the heap's room: used (nothing better exists).
        let c = candidates(&maps, heap_end + 0x1000, heap_end + 0x1100, 64);
        assert_eq!(c, vec![heap_end + 0x1000]);
    }

    /// Every candidate starts in the window, in the user range, and its bytes overlap no
    /// mapping; when some start in a window is free, there is a candidate. Synthetic maps,
    /// windows of every punning width, pseudo-random.
    #[test]
    fn candidates_are_free_and_in_window() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..300 {
            let mut maps = Vec::new();
            let mut at = 0x7f00_0000_0000u64;
            for _ in 0..40 {
                at += (rnd() % 6) * PAGE;
                let len = (1 + rnd() % 4) * PAGE;
                maps.push(mapping(at, at + len, "/lib/x.so"));
                at += len;
            }
            let width = [1u64, 256, 1 << 16, 1 << 24][(rnd() % 4) as usize];
            let lo = 0x7f00_0000_0000 + rnd() % (at - 0x7f00_0000_0000);
            let hi = lo + width;
            let size = 1 + rnd() % 4096;
            let c = candidates(&maps, lo, hi, size);
            for &s in &c {
                assert!(s >= lo && s < hi && s >= USER_MIN && s + size <= USER_MAX);
                assert!(
                    !maps.iter().any(|m| m.start < s + size && s < m.end),
                    "{s:#x}"
                );
            }
            if width <= 256 {
                let free = (lo..hi).any(|s| !maps.iter().any(|m| m.start < s + size && s < m.end));
                assert_eq!(free, !c.is_empty(), "[{lo:#x}, {hi:#x}) size {size}");
            }
        }
    }

    /// `fill` refuses memory that is not the arena's.
    #[test]
    fn fill_only_arena_memory() {
        let x = [0u8; 16];
        assert_eq!(fill(x.as_ptr() as u64, &[1]), Err(libc::EINVAL));
    }
}
