//! A small allocator over raw `mmap`, for a tracer without libc's `malloc` (the
//! freestanding agent's `#[global_allocator]`).
//!
//! The tracer allocates only in normal context (start, the hooks on `mmap` and friends,
//! the patcher thread), never on the fault path, so a spin lock is enough: a signal
//! handler of the tracer never takes it, so it cannot deadlock on its own thread. Small
//! blocks (up to [`MAX_SMALL`] bytes, power-of-two classes from 16) come from 64 KiB
//! chunks and go back to their class's free list; larger ones are mappings of their own,
//! unmapped when freed. Memory of small blocks is not returned to the kernel while the
//! heap is in use (the tracer's allocations are a few tables made at start and the
//! patcher's bookkeeping); [`Heap::release_all`] gives back every mapping at once, for a
//! tracer about to be unloaded from a process that lives on (`record --pid --route
//! inject`).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// The largest size (and alignment) served from the size classes.
pub const MAX_SMALL: usize = 2048;
const MIN_SMALL: usize = 16;
/// Classes 16, 32, ..., 2048.
const CLASSES: usize = 8;
const CHUNK: usize = 64 << 10;
const PAGE: usize = 4096;
/// How many chunks and live large blocks [`Heap::release_all`] can find again (more are
/// served, and left mapped by it).
const TRACKED_CHUNKS: usize = 256;
const TRACKED_LARGE: usize = 64;

struct State {
    /// Head of each class's free list (0: empty); a free block's first word links to the
    /// next.
    free: [usize; CLASSES],
    /// The unused rest of the current chunk: `[next, end)`.
    next: usize,
    end: usize,
    /// Every chunk mapped (the first `chunks_used`).
    chunks: [usize; TRACKED_CHUNKS],
    chunks_used: usize,
    /// Live large blocks: (address, mapped length); 0: a free entry.
    large: [(usize, usize); TRACKED_LARGE],
}

/// The allocator. `const`-constructible, for a `static`.
pub struct Heap {
    lock: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only touched with `lock` held.
unsafe impl Sync for Heap {}

impl Default for Heap {
    fn default() -> Heap {
        Heap::new()
    }
}

impl Heap {
    /// An empty heap (maps nothing until the first allocation).
    pub const fn new() -> Heap {
        Heap {
            lock: AtomicBool::new(false),
            state: UnsafeCell::new(State {
                free: [0; CLASSES],
                next: 0,
                end: 0,
                chunks: [0; TRACKED_CHUNKS],
                chunks_used: 0,
                large: [(0, 0); TRACKED_LARGE],
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut spins = 0u32;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                sys::sched_yield();
            }
        }
        // SAFETY: the lock is held, so this is the only reference.
        let r = f(unsafe { &mut *self.state.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// Unmaps every chunk and every live large block this heap can find (all of them
    /// unless more than it tracks were made) and starts empty again.
    ///
    /// # Safety
    /// Nothing allocated from this heap may be used again, by any thread: for a tracer
    /// whose image is about to be unmapped, with every other thread stopped.
    pub unsafe fn release_all(&self) {
        self.with(|s| {
            for &c in &s.chunks[..s.chunks_used] {
                // SAFETY: a chunk of ours; the caller's contract says it is dead.
                unsafe { sys::munmap(c, CHUNK) };
            }
            for &(p, len) in &s.large {
                if p != 0 {
                    // SAFETY: a large block of ours; the caller's contract.
                    unsafe { sys::munmap(p, len) };
                }
            }
            s.free = [0; CLASSES];
            (s.next, s.end) = (0, 0);
            s.chunks_used = 0;
            s.large = [(0, 0); TRACKED_LARGE];
        });
    }
}

/// The class of a small layout (index into `free`), or `None` for a large one.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_SMALL);
    if size > MAX_SMALL {
        return None;
    }
    // Sizes are powers of two, so a block of the class is aligned to its size within a
    // chunk (chunks are page-aligned and carved from the start in class-size steps).
    Some((size.next_power_of_two().trailing_zeros() - MIN_SMALL.trailing_zeros()) as usize)
}

fn large_len(layout: Layout) -> usize {
    (layout.size().max(1) + PAGE - 1) & !(PAGE - 1)
}

// SAFETY: blocks handed out are valid for their layout's size and aligned to it (small
// classes: a power of two >= size and >= align, carved at multiples of itself from a
// page-aligned chunk; large: page-aligned mappings, alignments above a page refused), and
// distinct until freed.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some(c) => self.with(|s| {
                let head = s.free[c];
                if head != 0 {
                    // SAFETY: a free block's first word holds the next free block.
                    s.free[c] = unsafe { *(head as *const usize) };
                    return head as *mut u8;
                }
                let size = MIN_SMALL << c;
                // Carving keeps each class's alignment: align the cursor up to `size`.
                let mut at = (s.next + size - 1) & !(size - 1);
                if s.next == 0 || at + size > s.end {
                    let Some(p) = sys::map_anon(CHUNK) else {
                        return core::ptr::null_mut();
                    };
                    if s.chunks_used < TRACKED_CHUNKS {
                        s.chunks[s.chunks_used] = p;
                        s.chunks_used += 1;
                    }
                    (s.next, s.end) = (p, p + CHUNK);
                    at = p;
                }
                s.next = at + size;
                at as *mut u8
            }),
            None => {
                if layout.align() > PAGE {
                    return core::ptr::null_mut();
                }
                let len = large_len(layout);
                let Some(p) = sys::map_anon(len) else {
                    return core::ptr::null_mut();
                };
                self.with(|s| {
                    if let Some(e) = s.large.iter_mut().find(|e| e.0 == 0) {
                        *e = (p, len);
                    }
                });
                p as *mut u8
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(layout) {
            Some(c) => self.with(|s| {
                // SAFETY: the block is ours again, at least a word long and aligned.
                unsafe { *(ptr as *mut usize) = s.free[c] };
                s.free[c] = ptr as usize;
            }),
            None => {
                self.with(|s| {
                    if let Some(e) = s.large.iter_mut().find(|e| e.0 == ptr as usize) {
                        *e = (0, 0);
                    }
                });
                // SAFETY: a large block is a mapping of its own, of this length.
                unsafe { sys::munmap(ptr as usize, large_len(layout)) };
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // Fresh anonymous mappings are zero already.
            // SAFETY: forwarding the caller's layout.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarding the caller's layout; the block is `layout.size()` bytes.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                core::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let h = Heap::new();
        let mut got = Vec::new();
        for (size, align) in [(1, 1), (16, 8), (24, 8), (100, 64), (2048, 2048), (3000, 8)] {
            let l = Layout::from_size_align(size, align).unwrap();
            for _ in 0..50 {
                // SAFETY: a non-zero layout.
                let p = unsafe { h.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size}/{align}");
                // SAFETY: the block is `size` bytes.
                unsafe { core::ptr::write_bytes(p, 0xa5, size) };
                got.push((p as usize, l));
            }
        }
        // No two live blocks overlap.
        let mut spans: Vec<_> = got.iter().map(|&(p, l)| (p, p + l.size())).collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
        }
        // A freed small block is handed out again; zeroed when asked.
        let (p, l) = got[60];
        // SAFETY: freeing a block of this heap with its layout.
        unsafe { h.dealloc(p as *mut u8, l) };
        // SAFETY: the same layout.
        let q = unsafe { h.alloc_zeroed(l) };
        assert_eq!(q as usize, p);
        // SAFETY: the block is `l.size()` bytes.
        assert!(unsafe { core::slice::from_raw_parts(q, l.size()) }
            .iter()
            .all(|&b| b == 0));
        for &(p, l) in &got {
            // SAFETY: each live block once (the reused one is live again at the same place).
            unsafe { h.dealloc(p as *mut u8, l) };
        }
    }

    #[test]
    fn release_all_unmaps_every_mapping() {
        let h = Heap::new();
        let small = Layout::from_size_align(64, 8).unwrap();
        let large = Layout::from_size_align(10_000, 8).unwrap();
        // SAFETY: non-zero layouts.
        let (a, b) = unsafe { (h.alloc(small), h.alloc(large)) };
        // Whether anything is mapped at `p`'s page: a probe with MAP_FIXED_NOREPLACE
        // (no allocation in between: other tests' threads map memory meanwhile).
        let mapped = |p: *mut u8| {
            let page = (p as usize & !(PAGE - 1)) as *mut libc::c_void;
            // SAFETY: NOREPLACE maps nothing over an existing mapping.
            let q = unsafe {
                libc::mmap(
                    page,
                    PAGE,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if q == page {
                // SAFETY: the probe's own page.
                unsafe { libc::munmap(q, PAGE) };
                return false;
            }
            q == libc::MAP_FAILED
        };
        assert!(mapped(a) && mapped(b));
        // SAFETY: neither block is used again.
        unsafe { h.release_all() };
        assert!(!mapped(a) && !mapped(b));
        // The heap serves again afterwards.
        // SAFETY: a non-zero layout.
        let c = unsafe { h.alloc(small) };
        assert!(!c.is_null() && mapped(c));
    }

    #[test]
    fn threads_share_the_heap() {
        static H: Heap = Heap::new();
        let ts: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let l = Layout::from_size_align(48, 16).unwrap();
                    let mut mine = Vec::new();
                    for i in 0..2000 {
                        // SAFETY: a non-zero layout.
                        let p = unsafe { H.alloc(l) };
                        // SAFETY: 48 bytes.
                        unsafe { core::ptr::write_bytes(p, t as u8, 48) };
                        mine.push(p as usize);
                        if i % 3 == 0 {
                            let f = mine.swap_remove(i % mine.len());
                            // SAFETY: a live block of ours.
                            unsafe { H.dealloc(f as *mut u8, l) };
                        }
                    }
                    for &p in &mine {
                        // SAFETY: nobody else wrote our blocks.
                        let b = unsafe { core::slice::from_raw_parts(p as *const u8, 48) };
                        assert!(b.iter().all(|&x| x == t as u8));
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
    }
}
