//! The region registry: which virtual ranges are traced, read without locks.
//!
//! Two structures, both read by the fault handler without locks and without allocating:
//!
//! * **Slots** hold the regions. Each slot is guarded by its own sequence counter (a
//!   seqlock): a reader copies the slot and retries if a writer changed it meanwhile.
//!   Slots live in chunks of [`CHUNK_SLOTS`] mapped on demand (normal context), so the
//!   table grows with the program: GPU drivers hold thousands of buffer mappings.
//! * **The index** maps a page number to the slot holding it: a radix tree of five levels
//!   of 512 entries (57-bit addresses), each entry empty, a slot number, or the next
//!   level. A region covering a whole aligned block of 512^k pages is one entry at the
//!   level of that block, so a lookup is at most five loads however many regions there
//!   are, and a large BAR costs a handful of entries. Index nodes are mapped in normal
//!   context and never freed nor reused (a reader may be walking any of them); an entry
//!   changes with one atomic store, and a node replacing a whole-block entry is filled
//!   before it is published, so a byte that stays traced is never seen untraced.
//!
//! Writers (mmap/munmap/mprotect/mremap hooks, normal context; the first access to a
//! region whose alias is made then) serialise on one spin lock, with asynchronous signals
//! blocked while they hold it: a program handler interrupting a writer on the same thread
//! would otherwise spin for ever on the half-written slot (a lookup) or on the lock (its
//! own `mmap`). A writer changing a region first publishes the pieces that keep pages
//! traced under their new slots, then shrinks or empties the old slot, then clears the
//! index entries of the pages that went: a reader that read a stale slot number finds a
//! region not containing its address and looks again.
//!
//! The alias of a mapping the preload library traces is made on its first access
//! ([`find_aliasing`]), not at `mmap`: most buffer mappings of a driver are never touched,
//! and an alias per mapping would double the program's count of address-space entries
//! (`vm.max_map_count`). The alias is a second mapping of the program's open file
//! description through a descriptor of the tracer's own (one per open file description,
//! shared by all its mappings: [`alias_fd`]), closed when its last region goes.

use core::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::sys;

/// Regions per chunk of slots.
pub const CHUNK_SLOTS: usize = 1024;
/// Chunks at most.
const MAX_CHUNKS: usize = 1024;
/// How many regions can be traced at once (over a million; the table grows to it on
/// demand). Reaching it is announced on stderr and in the log.
pub const MAX_REGIONS: usize = CHUNK_SLOTS * MAX_CHUNKS;

const PAGE: u64 = 4096;

/// One traced range, as the fault handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First traced byte (page-aligned).
    pub start: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// Address of the always-accessible alias of the same memory (0 when there is none:
    /// it is made on the first access when [`Region::lazy`] says how, else every access
    /// takes the step path).
    pub alias: u64,
    /// Physical address (or file offset) of `start`.
    pub phys: u64,
    /// Mapping id, as logged in `MAP`.
    pub map_id: u64,
    /// The protection the program asked for (`PROT_*`); accesses it forbids are delivered
    /// to the program as faults.
    pub prot: i32,
    /// `phys - file offset` (wrapping), the same for every piece of a mapping: the file
    /// offset of an address, for the device rules' `--range`/`--bypass`.
    pub phys_minus_off: u64,
    /// Which of the tracer's descriptors makes the alias on the first access (an index
    /// returned by [`alias_fd`]); 0: none.
    pub lazy: u32,
}

impl Region {
    /// Whether `addr` lies in the region.
    #[inline]
    pub fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.start) < self.len
    }

    /// The alias address of `addr` (which must be inside).
    #[inline]
    pub fn alias_of(&self, addr: u64) -> u64 {
        self.alias + (addr - self.start)
    }

    /// The physical address of `addr` (which must be inside).
    #[inline]
    pub fn phys_of(&self, addr: u64) -> u64 {
        self.phys + (addr - self.start)
    }

    /// The file offset of `addr` (which must be inside).
    #[inline]
    pub fn off_of(&self, addr: u64) -> u64 {
        self.phys_of(addr).wrapping_sub(self.phys_minus_off)
    }

    /// The end (exclusive).
    #[inline]
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// The part `[from, to)` (inside), with its alias and physical address.
    pub fn piece(&self, from: u64, to: u64) -> Region {
        Region {
            start: from,
            len: to - from,
            alias: if self.alias != 0 {
                self.alias_of(from)
            } else {
                0
            },
            phys: self.phys_of(from),
            ..*self
        }
    }
}

const EMPTY: Region = Region {
    start: 0,
    len: 0,
    alias: 0,
    phys: 0,
    map_id: 0,
    prot: 0,
    phys_minus_off: 0,
    lazy: 0,
};

/// A slot; all-zero is a valid empty slot (chunks come zeroed from `mmap`).
struct Slot {
    seq: AtomicU32,
    lazy: AtomicU32,
    start: AtomicU64,
    len: AtomicU64,
    alias: AtomicU64,
    phys: AtomicU64,
    map_id: AtomicU64,
    prot: AtomicI32,
    /// The next free slot + 1 (writers only).
    next_free: AtomicU32,
    phys_minus_off: AtomicU64,
}

impl Slot {
    fn read(&self) -> Option<Region> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let r = Region {
                start: self.start.load(Ordering::Relaxed),
                len: self.len.load(Ordering::Relaxed),
                alias: self.alias.load(Ordering::Relaxed),
                phys: self.phys.load(Ordering::Relaxed),
                map_id: self.map_id.load(Ordering::Relaxed),
                prot: self.prot.load(Ordering::Relaxed),
                phys_minus_off: self.phys_minus_off.load(Ordering::Relaxed),
                lazy: self.lazy.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (r.len != 0).then_some(r);
            }
        }
    }

    /// Writer side; the registry lock is held. Keeps the per-mapping and per-descriptor
    /// counts.
    fn write(&self, r: Option<Region>) {
        let old = self.read();
        let r = r.unwrap_or(EMPTY);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(r.start, Ordering::Relaxed);
        self.len.store(r.len, Ordering::Relaxed);
        self.alias.store(r.alias, Ordering::Relaxed);
        self.phys.store(r.phys, Ordering::Relaxed);
        self.map_id.store(r.map_id, Ordering::Relaxed);
        self.prot.store(r.prot, Ordering::Relaxed);
        self.phys_minus_off
            .store(r.phys_minus_off, Ordering::Relaxed);
        self.lazy.store(r.lazy, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
        // After the slot is whole again: a snapshot taken under the old generation may
        // hold the old contents; one taken under the new one was read after this write.
        GENERATION.fetch_add(1, Ordering::Release);
        let aliased = |r: &Region| r.len != 0 && r.lazy != 0 && r.alias != 0;
        if aliased(&r) {
            ALIASED.fetch_add(1, Ordering::Relaxed);
        }
        if old.as_ref().is_some_and(aliased) {
            ALIASED.fetch_sub(1, Ordering::Relaxed);
        }
        // The counts first grow, then shrink, so that a descriptor kept by both the old
        // and the new region never closes; unchanged counts are not touched (the fault
        // handler's alias update changes neither).
        let same = old.is_some_and(|o| r.len != 0 && o.map_id == r.map_id && o.lazy == r.lazy);
        if same {
            return;
        }
        if r.len != 0 {
            ids::add(r.map_id, 1);
            fds::count(r.lazy, 1);
        }
        if let Some(o) = old {
            ids::add(o.map_id, -1);
            fds::count(o.lazy, -1);
        }
    }
}

static CHUNKS: [AtomicPtr<Slot>; MAX_CHUNKS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS];
/// Slots handed out so far (free ones included).
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Head of the free-slot list + 1 (writers only).
static FREE: AtomicU32 = AtomicU32::new(0);
/// Quick reject: the lowest start and highest end ever registered.
static LO: AtomicU64 = AtomicU64::new(u64::MAX);
static HI: AtomicU64 = AtomicU64::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);
/// Regions registered now.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Regions whose alias was made on first access (an upper bound of those aliases'
/// address-space entries).
static ALIASED: AtomicUsize = AtomicUsize::new(0);
/// The kernel's `vm.max_map_count`.
static MAP_MAX: AtomicUsize = AtomicUsize::new(65530);

/// Reads `vm.max_map_count` (normal context, at start-up).
pub fn init_limits() {
    let fd = sys::open_read(b"/proc/sys/vm/max_map_count\0");
    if fd < 0 {
        return;
    }
    let mut b = [0u8; 32];
    let n = sys::read(fd as i32, &mut b);
    sys::close(fd as i32);
    let v = b[..n.max(0) as usize]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0usize, |v, &c| {
            v.saturating_mul(10).saturating_add((c - b'0') as usize)
        });
    if v > 0 {
        MAP_MAX.store(v, Ordering::Relaxed);
    }
}

/// Whether one more alias leaves the program its address-space entries: the aliases made
/// on first access take at most a quarter of `vm.max_map_count`, and traced regions plus
/// aliases stay 8192 below it (the program has other mappings). Past that, accesses are
/// single-stepped: traced, slower.
fn alias_budget_left() -> bool {
    let max = MAP_MAX.load(Ordering::Relaxed);
    let aliased = ALIASED.load(Ordering::Relaxed);
    aliased < max / 4 && LIVE.load(Ordering::Relaxed) + aliased + 8192 < max
}

#[inline]
fn slot(i: u32) -> Option<&'static Slot> {
    let i = i as usize;
    let c = CHUNKS.get(i / CHUNK_SLOTS)?.load(Ordering::Acquire);
    if c.is_null() {
        return None;
    }
    // SAFETY: a chunk of CHUNK_SLOTS slots, mapped for the process's lifetime.
    Some(unsafe { &*c.add(i % CHUNK_SLOTS) })
}

/// A free slot (the lock is held); `None` when the table is at [`MAX_REGIONS`] or no
/// memory is left for a chunk.
fn alloc_slot() -> Option<u32> {
    let f = FREE.load(Ordering::Relaxed);
    if f != 0 {
        let s = slot(f - 1)?;
        FREE.store(s.next_free.load(Ordering::Relaxed), Ordering::Relaxed);
        return Some(f - 1);
    }
    let high = HIGH.load(Ordering::Relaxed);
    if high >= MAX_REGIONS {
        return None;
    }
    let c = &CHUNKS[high / CHUNK_SLOTS];
    if c.load(Ordering::Relaxed).is_null() {
        let bytes = CHUNK_SLOTS * core::mem::size_of::<Slot>();
        // Zeroed memory: a valid empty slot each.
        let p = sys::map_anon(bytes)?;
        c.store(p as *mut Slot, Ordering::Release);
    }
    HIGH.store(high + 1, Ordering::Release);
    Some(high as u32)
}

fn free_slot(i: u32) {
    if let Some(s) = slot(i) {
        s.next_free
            .store(FREE.load(Ordering::Relaxed), Ordering::Relaxed);
        FREE.store(i + 1, Ordering::Relaxed);
    }
}

/// The page-number index (see the module documentation).
mod index {
    use super::*;

    pub(super) type Node = [AtomicU64; 512];
    pub(super) const LEVELS: u32 = 5;
    static ROOT: Node = [const { AtomicU64::new(0) }; 512];

    /// Nodes mapped but not yet used (writers only).
    static POOL: AtomicUsize = AtomicUsize::new(0);
    static POOL_LEFT: AtomicUsize = AtomicUsize::new(0);
    const BATCH: usize = 64;
    /// Nodes one [`set`] may need at most: two partly covered entries per level.
    pub(super) const PER_SET: usize = 2 * LEVELS as usize;

    fn leaf(slot: u32) -> u64 {
        (u64::from(slot) << 1) | 1
    }

    /// Makes sure `n` nodes can be taken without failing (the lock is held).
    pub(super) fn reserve(n: usize) -> bool {
        if POOL_LEFT.load(Ordering::Relaxed) >= n {
            return true;
        }
        let bytes = BATCH.max(n) * core::mem::size_of::<Node>();
        // Zeroed memory: an empty node each.
        let Some(p) = sys::map_anon(bytes) else {
            return false;
        };
        POOL.store(p, Ordering::Relaxed);
        POOL_LEFT.store(BATCH.max(n), Ordering::Relaxed);
        true
    }

    /// A node of the pool; `None` only when [`reserve`] failed (no memory): a page
    /// being untraced then keeps its stale entry, which readers see as "not here" (the
    /// slot it names no longer contains the page).
    fn take() -> Option<&'static Node> {
        let p = POOL.load(Ordering::Relaxed);
        let left = POOL_LEFT.load(Ordering::Relaxed);
        if left == 0 {
            return None;
        }
        POOL.store(p + core::mem::size_of::<Node>(), Ordering::Relaxed);
        POOL_LEFT.store(left - 1, Ordering::Relaxed);
        // SAFETY: an unused, zeroed node of a batch mapped for the process's lifetime.
        Some(unsafe { &*(p as *const Node) })
    }

    /// Unmaps every node of the tree and the pool's rest: the tree is empty again. Only
    /// when no thread can look a page up any more (the tracer is being unloaded).
    pub(super) fn free() {
        fn free_in(node: &Node, level: u32) {
            for ent in node.iter() {
                let e = ent.swap(0, Ordering::Relaxed);
                if e != 0 && e & 1 == 0 && level > 0 {
                    // SAFETY: a published node of a batch of ours; nothing reads it now.
                    free_in(unsafe { &*(e as *const Node) }, level - 1);
                    // SAFETY: as said: one page of a batch mapping, unused from now on.
                    unsafe { sys::munmap(e as usize, core::mem::size_of::<Node>()) };
                }
            }
        }
        free_in(&ROOT, LEVELS - 1);
        let (p, left) = (
            POOL.swap(0, Ordering::Relaxed),
            POOL_LEFT.swap(0, Ordering::Relaxed),
        );
        if p != 0 && left != 0 {
            // SAFETY: the pool's untaken nodes, never published.
            unsafe { sys::munmap(p, left * core::mem::size_of::<Node>()) };
        }
    }

    /// The slot holding page `page`, if any. Lock-free, allocation-free.
    #[inline]
    pub(super) fn lookup(page: u64) -> Option<u32> {
        let mut node: &Node = &ROOT;
        let mut level = LEVELS - 1;
        loop {
            let e = node[((page >> (9 * level)) & 511) as usize].load(Ordering::Acquire);
            if e & 1 != 0 {
                return Some((e >> 1) as u32);
            }
            if e == 0 || level == 0 {
                return None;
            }
            // SAFETY: a published node (never freed).
            node = unsafe { &*(e as *const Node) };
            level -= 1;
        }
    }

    /// Points pages `[lo, hi)` at `slot` (`None`: untraced). The lock is held and
    /// [`PER_SET`] nodes are reserved.
    pub(super) fn set(lo: u64, hi: u64, slot: Option<u32>) {
        if lo < hi {
            set_in(&ROOT, LEVELS - 1, 0, lo, hi, slot.map_or(0, leaf));
        }
    }

    fn set_in(node: &Node, level: u32, base: u64, lo: u64, hi: u64, val: u64) {
        let shift = 9 * level;
        let span = 1u64 << shift;
        let first = ((lo - base) >> shift) as usize;
        let last = ((hi - 1 - base) >> shift) as usize;
        for (i, ent) in node.iter().enumerate().take(last + 1).skip(first) {
            let e_lo = base + ((i as u64) << shift);
            let e_hi = e_lo + span;
            let e = ent.load(Ordering::Relaxed);
            if e == val {
                continue;
            }
            let is_node = e & 1 == 0 && e != 0;
            if !is_node && ((lo <= e_lo && e_hi <= hi) || level == 0) {
                ent.store(val, Ordering::Release);
                continue;
            }
            let child = if is_node {
                // SAFETY: a published node.
                unsafe { &*(e as *const Node) }
            } else {
                let Some(c) = take() else { continue };
                for x in c.iter() {
                    x.store(e, Ordering::Relaxed);
                }
                // Published filled: readers see the same answer through it.
                ent.store(c as *const Node as u64, Ordering::Release);
                c
            };
            set_in(child, level - 1, e_lo, lo.max(e_lo), hi.min(e_hi), val);
        }
    }

    /// The first slot found on pages `[lo, hi)`, in address order, and the page after
    /// the entry that names it.
    pub(super) fn first(lo: u64, hi: u64) -> Option<(u32, u64)> {
        if lo >= hi {
            return None;
        }
        first_in(&ROOT, LEVELS - 1, 0, lo, hi)
    }

    fn first_in(node: &Node, level: u32, base: u64, lo: u64, hi: u64) -> Option<(u32, u64)> {
        let shift = 9 * level;
        let span = 1u64 << shift;
        let first = ((lo - base) >> shift) as usize;
        let last = ((hi - 1 - base) >> shift).min(511) as usize;
        for (i, ent) in node.iter().enumerate().take(last + 1).skip(first) {
            let e = ent.load(Ordering::Acquire);
            let e_lo = base + ((i as u64) << shift);
            if e & 1 != 0 {
                return Some(((e >> 1) as u32, e_lo + span));
            }
            if e != 0 && level > 0 {
                // SAFETY: a published node.
                let child = unsafe { &*(e as *const Node) };
                if let Some(s) = first_in(child, level - 1, e_lo, lo.max(e_lo), hi.min(e_lo + span))
                {
                    return Some(s);
                }
            }
        }
        None
    }
}

/// Pieces per mapping id (writers only): whether a mapping still has a piece, in constant
/// time. An open-addressing table in memory of our own (normal context may not call
/// `malloc`: allocators call `mmap`).
mod ids {
    use super::*;

    static TABLE: AtomicUsize = AtomicUsize::new(0);
    static CAP: AtomicUsize = AtomicUsize::new(0);
    static USED: AtomicUsize = AtomicUsize::new(0);

    /// (map id + 1, count); a zero key is an empty entry.
    type Entry = [u64; 2];

    fn table() -> &'static mut [Entry] {
        let (p, n) = (TABLE.load(Ordering::Relaxed), CAP.load(Ordering::Relaxed));
        if p == 0 {
            return &mut [];
        }
        // SAFETY: our own mapping of `n` entries; only writers (under the lock) use it.
        unsafe { core::slice::from_raw_parts_mut(p as *mut Entry, n) }
    }

    fn home(key: u64, cap: usize) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize & (cap - 1)
    }

    fn grow() -> bool {
        let cap = (CAP.load(Ordering::Relaxed) * 2).max(1024);
        let Some(p) = sys::map_anon(cap * core::mem::size_of::<Entry>()) else {
            return false;
        };
        // SAFETY: just mapped, `cap` entries.
        let new = unsafe { core::slice::from_raw_parts_mut(p as *mut Entry, cap) };
        let old = table();
        for e in old.iter().filter(|e| e[0] != 0) {
            let mut i = home(e[0], cap);
            while new[i][0] != 0 {
                i = (i + 1) & (cap - 1);
            }
            new[i] = *e;
        }
        let (op, on) = (TABLE.load(Ordering::Relaxed), old.len());
        TABLE.store(p, Ordering::Relaxed);
        CAP.store(cap, Ordering::Relaxed);
        if op != 0 {
            // SAFETY: the old table, no longer referenced.
            unsafe { sys::munmap(op, on * core::mem::size_of::<Entry>()) };
        }
        true
    }

    /// Unmaps the table (the tracer is being unloaded).
    pub(super) fn free() {
        let (p, n) = (
            TABLE.swap(0, Ordering::Relaxed),
            CAP.swap(0, Ordering::Relaxed),
        );
        USED.store(0, Ordering::Relaxed);
        if p != 0 {
            // SAFETY: our table; nothing uses it from now on.
            unsafe { sys::munmap(p, n * core::mem::size_of::<Entry>()) };
        }
    }

    fn position(key: u64) -> Option<usize> {
        let t = table();
        if t.is_empty() {
            return None;
        }
        let mut i = home(key, t.len());
        loop {
            match t[i][0] {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & (t.len() - 1),
            }
        }
    }

    /// Adds `d` to the count of `map_id`.
    pub(super) fn add(map_id: u64, d: i64) {
        let key = map_id.wrapping_add(1).max(1);
        match position(key) {
            Some(i) => {
                let t = table();
                t[i][1] = t[i][1].wrapping_add(d as u64);
                if t[i][1] == 0 {
                    remove_at(i);
                }
            }
            None if d > 0 => {
                let used = USED.load(Ordering::Relaxed) + 1;
                if used * 2 > CAP.load(Ordering::Relaxed)
                    && !grow()
                    && used >= CAP.load(Ordering::Relaxed)
                {
                    // No memory: the count is lost; `has` then answers "gone" early (an
                    // UNMAP too soon), never a slot-table inconsistency.
                    return;
                }
                let t = table();
                let mut i = home(key, t.len());
                while t[i][0] != 0 {
                    i = (i + 1) & (t.len() - 1);
                }
                t[i] = [key, d as u64];
                USED.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// Linear-probing deletion: later entries of the run move back into the hole.
    fn remove_at(mut hole: usize) {
        let t = table();
        let mask = t.len() - 1;
        t[hole] = [0, 0];
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            if t[j][0] == 0 {
                break;
            }
            let h = home(t[j][0], t.len());
            // Movable when its home is not inside (hole, j] (cyclically).
            let inside = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !inside {
                t[hole] = t[j];
                t[j] = [0, 0];
                hole = j;
            }
        }
        USED.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether `map_id` has a piece.
    pub(super) fn has(map_id: u64) -> bool {
        position(map_id.wrapping_add(1).max(1)).is_some()
    }
}

/// The tracer's descriptors for making aliases on first access: one per open file
/// description the program mapped, identified with `kcmp(KCMP_FILE)`, closed with the
/// last region using it.
mod fds {
    use super::*;

    /// Descriptors at most.
    pub(super) const MAX: usize = 256;

    pub(super) struct Entry {
        pub(super) fd: AtomicI32,
        pub(super) dev: AtomicU64,
        pub(super) ino: AtomicU64,
        pub(super) count: AtomicU64,
    }

    pub(super) static TABLE: [Entry; MAX] = [const {
        Entry {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }; MAX];

    /// Adds `d` to the regions using descriptor `lazy` (an index + 1); closes it at zero.
    pub(super) fn count(lazy: u32, d: i64) {
        let Some(e) = (lazy as usize).checked_sub(1).and_then(|i| TABLE.get(i)) else {
            return;
        };
        let n = e.count.load(Ordering::Relaxed).wrapping_add(d as u64);
        e.count.store(n, Ordering::Relaxed);
        if n == 0 {
            let fd = e.fd.swap(-1, Ordering::Relaxed);
            // Only if the number still is ours: a program that closed it behind our back
            // (a raw system call) may have reused it for a file of its own.
            let ours = (e.dev.load(Ordering::Relaxed), e.ino.load(Ordering::Relaxed));
            if fd >= 0 && dev_ino(fd) == Some(ours) {
                sys::close(fd);
            }
        }
    }
}

/// `(st_dev, st_ino)` of `fd` (raw `fstat`: also from the fault handler).
fn dev_ino(fd: i32) -> Option<(u64, u64)> {
    const SYS_FSTAT: usize = 5;
    // SAFETY: an all-zero stat is a valid out buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out buffer.
    let r = unsafe {
        sys::syscall6(
            SYS_FSTAT,
            fd as usize,
            &mut st as *mut _ as usize,
            0,
            0,
            0,
            0,
        )
    };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

/// Whether `a` and `b` are the same open file description (`kcmp(KCMP_FILE)`); `None`
/// when the kernel cannot tell.
fn same_file(a: i32, b: i32) -> Option<bool> {
    const SYS_KCMP: usize = 312;
    const KCMP_FILE: usize = 0;
    let pid = sys::getpid() as usize;
    // SAFETY: plain values.
    let r = unsafe { sys::syscall6(SYS_KCMP, pid, pid, KCMP_FILE, a as usize, b as usize, 0) };
    (r >= 0).then_some(r == 0)
}

/// The tracer's descriptor for the program's descriptor `fd`, for [`Region::lazy`]: an
/// index + 1, holding one reference the caller gives back with [`release_alias_fd`]
/// (after registering the regions that use it). `None`: no descriptor can be kept (the
/// kernel cannot compare open files, the table or the descriptor limit is full): the
/// caller makes its alias now.
pub fn alias_fd(fd: i32) -> Option<u32> {
    let _g = lock();
    let (dev, ino) = dev_ino(fd)?;
    let mut free = None;
    for (i, e) in fds::TABLE.iter().enumerate() {
        let f = e.fd.load(Ordering::Relaxed);
        if f < 0 {
            // An entry whose descriptor was lost (see `evacuate_alias_fd`) stays taken
            // while regions name it.
            if e.count.load(Ordering::Relaxed) == 0 {
                free = free.or(Some(i));
            }
            continue;
        }
        if e.dev.load(Ordering::Relaxed) == dev
            && e.ino.load(Ordering::Relaxed) == ino
            && same_file(f, fd)?
        {
            e.count.fetch_add(1, Ordering::Relaxed);
            return Some(i as u32 + 1);
        }
    }
    // Without kcmp, sharing cannot be decided: no lazy aliases.
    same_file(fd, fd)?;
    let i = free?;
    // High numbers: programs that lay out descriptors use the low ones. Close-on-exec:
    // a new image's mappings are its own.
    // Duplicating the program's descriptor.
    let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 200);
    if n < 0 {
        return None;
    }
    let n = n as i32;
    let e = &fds::TABLE[i];
    e.dev.store(dev, Ordering::Relaxed);
    e.ino.store(ino, Ordering::Relaxed);
    e.count.store(1, Ordering::Relaxed);
    e.fd.store(n, Ordering::Relaxed);
    Some(i as u32 + 1)
}

/// Gives back the reference [`alias_fd`] returned with its index.
pub fn release_alias_fd(lazy: u32) {
    let _g = lock();
    fds::count(lazy, -1);
}

/// Most descriptors [`alias_fds`] reports.
pub const MAX_ALIAS_FDS: usize = fds::MAX;

/// The tracer's alias descriptors (see [`alias_fd`]) into `out`; returns how many.
pub fn alias_fds(out: &mut [i32]) -> usize {
    let mut n = 0;
    for e in fds::TABLE.iter() {
        let fd = e.fd.load(Ordering::Relaxed);
        if fd >= 0 && n < out.len() {
            out[n] = fd;
            n += 1;
        }
    }
    n
}

/// Whether `fd` is one of the tracer's alias descriptors (the preload library keeps the
/// program from closing it).
pub fn is_alias_fd(fd: i32) -> bool {
    fd >= 0
        && fds::TABLE
            .iter()
            .any(|e| e.fd.load(Ordering::Relaxed) == fd)
}

/// The program is about to make `fd` something else (`dup2` onto it): an alias descriptor
/// with that number moves to another (normal context).
pub fn evacuate_alias_fd(fd: i32) {
    if !is_alias_fd(fd) {
        return;
    }
    let _g = lock();
    for e in fds::TABLE.iter() {
        if e.fd.load(Ordering::Relaxed) == fd {
            // Duplicating a descriptor of ours.
            let n = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 200) as i32;
            // The old number is left to the program's call, which replaces it; without a
            // new one the mappings' aliases are made by the step path instead (-1).
            e.fd.store(if n >= 0 { n } else { -1 }, Ordering::Relaxed);
        }
    }
}

/// The registry lock, held; the thread's signal mask from before it was taken.
struct Guard(u64);

fn lock() -> Guard {
    // The child of a fork none of our hooks saw (a raw `syscall(SYS_fork)`) may have
    // inherited the lock held by a parent thread that does not exist here: reset the
    // per-process state first (one load when there was no such fork).
    crate::check_fork();
    let old = crate::ctx::block_async();
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    Guard(old)
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
        crate::ctx::restore_mask(self.0);
    }
}

/// The lock and the mask saved by [`fork_prepare`] (one fork at a time holds the lock).
static FORK_MASK: AtomicU64 = AtomicU64::new(0);

/// Before `fork` (a `pthread_atfork` prepare handler): takes the registry lock so that
/// the child never inherits a slot caught mid-write.
pub fn fork_prepare() {
    let g = lock();
    FORK_MASK.store(g.0, Ordering::Relaxed);
    core::mem::forget(g);
}

/// After `fork`, in the parent or in the child: releases what [`fork_prepare`] took.
pub fn fork_release() {
    LOCK.store(false, Ordering::Release);
    crate::ctx::restore_mask(FORK_MASK.load(Ordering::Relaxed));
}

/// The region containing `addr`, if traced, and its slot. Lock-free, allocation-free.
#[inline]
fn find_slot(addr: u64) -> Option<(u32, Region)> {
    if addr < LO.load(Ordering::Relaxed) || addr >= HI.load(Ordering::Relaxed) {
        return None;
    }
    let mut prev = None;
    loop {
        let i = index::lookup(addr / PAGE)?;
        if let Some(r) = slot(i)?.read() {
            if r.contains(addr) {
                return Some((i, r));
            }
        }
        // A stale slot number (a writer moved the page to another slot, or is removing
        // it): look again; the same answer twice means the page is going.
        if prev == Some(i) {
            return None;
        }
        prev = Some(i);
    }
}

/// Bumped by every change to a region of the table (each slot write, after it): a copy of
/// a region taken when the generation was `g` is still the table's while the generation
/// is `g` (the site cache's region snapshots).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The region table's generation (bumped by every region change): read it before a lookup whose
/// result is kept.
#[inline]
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The region containing `addr`, if traced. Lock-free, allocation-free.
#[inline]
pub fn find(addr: u64) -> Option<Region> {
    find_slot(addr).map(|(_, r)| r)
}

/// As [`find`], with the alias made now if the region makes it on first access (signal
/// context: raw system calls only; the registry lock is taken once per region). A region
/// whose alias cannot be made is left without one (its accesses take the step path), and
/// `failed` is set to the error, for the caller to say so in the log (the fault path's
/// `site::find_aliased`).
pub fn find_aliasing(addr: u64, failed: &mut Option<i32>) -> Option<Region> {
    let (_, r) = find_slot(addr)?;
    if r.alias != 0 || r.lazy == 0 {
        return Some(r);
    }
    let _g = lock();
    let (i, r) = find_slot(addr)?;
    if r.alias != 0 || r.lazy == 0 {
        return Some(r);
    }
    let e = fds::TABLE.get(r.lazy as usize - 1)?;
    let fd = e.fd.load(Ordering::Relaxed);
    // The descriptor must still be what it was (the program may have closed it under
    // us with a raw system call, and reused the number).
    let same = fd >= 0
        && dev_ino(fd) == Some((e.dev.load(Ordering::Relaxed), e.ino.load(Ordering::Relaxed)));
    let mut alias = -libc::EBADF as isize;
    if !alias_budget_left() {
        alias = -libc::ENOMEM as isize;
    } else if same {
        for p in [libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ, r.prot] {
            if p == libc::PROT_NONE {
                continue;
            }
            alias = alias_mmap(r.len, p, fd, r.off_of(r.start) as i64);
            if alias >= 0 {
                break;
            }
        }
    }
    let nr = if alias >= 0 {
        Region {
            alias: alias as u64,
            ..r
        }
    } else {
        *failed = Some(-alias as i32);
        Region { lazy: 0, ..r }
    };
    slot(i)?.write(Some(nr));
    Some(nr)
}

/// Where the next alias goes: just below the last one, far below the program's own
/// mappings (the kernel places those top-down from near the stack).
static ARENA: AtomicU64 = AtomicU64::new(ARENA_TOP);
const ARENA_TOP: u64 = 0x3f00_0000_0000;

/// Whether `addr` lies where [`alias_mmap`] has put aliases so far.
pub fn in_alias_arena(addr: u64) -> bool {
    (ARENA.load(Ordering::Relaxed)..ARENA_TOP).contains(&addr)
}

/// Every region's alias unmapped and every region forgotten (an attached process the
/// recorder leaves; no thread runs in the tracer meanwhile).
pub(crate) fn release_all() {
    let _g = lock();
    each_overlapping(0, u64::MAX, |i, r| {
        if r.alias != 0 {
            // SAFETY: the tracer's own alias; no thread uses it any more.
            unsafe { sys::munmap(r.alias as usize, r.len as usize) };
        }
        remove_locked(i, &r);
    });
}

/// The tables' own memory back (an attached process the recorder leaves, after
/// [`release_all`], with every thread stopped outside the tracer and its handlers gone:
/// nothing looks a page up again). The tables are empty afterwards.
pub(crate) fn free_tables() {
    let _g = lock();
    index::free();
    ids::free();
    for c in &CHUNKS {
        let p = c.swap(core::ptr::null_mut(), Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: a chunk of slots of ours; no region is registered any more.
            unsafe { sys::munmap(p as usize, CHUNK_SLOTS * core::mem::size_of::<Slot>()) };
        }
    }
    HIGH.store(0, Ordering::Relaxed);
    FREE.store(0, Ordering::Relaxed);
}

/// Maps an alias (`MAP_SHARED` of `fd` at `off`) in the tracer's arena, away from the
/// program's mappings: an alias at an address of the kernel's choice would fill the
/// first hole near the program's mappings, such as a page the program just unmapped and
/// still expects to fault. Anywhere when the arena is taken. Returns the address or
/// `-errno`. Raw system calls: also from the fault handler.
pub fn alias_mmap(len: u64, prot: i32, fd: i32, off: i64) -> isize {
    const MAP_FIXED_NOREPLACE: i32 = 0x10_0000;
    // Something of the program's in the way: a few tries further down.
    for _ in 0..4 {
        let at = ARENA.load(Ordering::Relaxed).wrapping_sub(len) & !(PAGE - 1);
        // SAFETY: a fresh shared mapping where nothing is mapped (NOREPLACE).
        let a = unsafe {
            sys::mmap(
                at as usize,
                len as usize,
                prot,
                libc::MAP_SHARED | MAP_FIXED_NOREPLACE,
                fd,
                off,
            )
        };
        if a >= 0 {
            if a as u64 == at {
                ARENA.store(at, Ordering::Relaxed);
            }
            return a;
        }
        if a != -(libc::EEXIST as isize) {
            return a;
        }
        ARENA.store(at.saturating_sub(1 << 30), Ordering::Relaxed);
    }
    // SAFETY: a fresh shared mapping at an address of the kernel's choice.
    unsafe { sys::mmap(0, len as usize, prot, libc::MAP_SHARED, fd, off) }
}

/// Why [`add`] refused a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// [`MAX_REGIONS`] are traced, or no memory is left for the table.
    Full,
    /// The range overlaps a traced region.
    Overlap,
}

/// Adds a region.
pub fn add(r: Region) -> Result<(), AddError> {
    let _g = lock();
    let mut overlap = false;
    each_overlapping(r.start, r.end(), |_, _| overlap = true);
    if overlap {
        return Err(AddError::Overlap);
    }
    add_locked(r)
}

fn add_locked(r: Region) -> Result<(), AddError> {
    if !index::reserve(index::PER_SET) {
        return Err(AddError::Full);
    }
    let i = alloc_slot().ok_or(AddError::Full)?;
    let s = slot(i).ok_or(AddError::Full)?;
    LO.fetch_min(r.start, Ordering::Relaxed);
    HI.fetch_max(r.end(), Ordering::Relaxed);
    s.write(Some(r));
    index::set(r.start / PAGE, r.end() / PAGE, Some(i));
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Empties slot `i` (holding `r`): its pages leave the index first.
fn remove_locked(i: u32, r: &Region) {
    // Clearing entries never needs a new node when the range is whole leaves, but a
    // region sharing a block entry with no other needs none either: reserve anyway.
    index::reserve(index::PER_SET);
    index::set(r.start / PAGE, r.end() / PAGE, None);
    if let Some(s) = slot(i) {
        s.write(None);
    }
    free_slot(i);
    LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// Shrinks slot `i` to `keep`, then unindexes `[gone_lo, gone_hi)` (the pages that stop
/// being traced; the others of the old region were taken over by other slots already).
fn shrink_locked(i: u32, keep: Region, gone_lo: u64, gone_hi: u64) {
    if let Some(s) = slot(i) {
        s.write(Some(keep));
    }
    if gone_lo < gone_hi {
        index::reserve(index::PER_SET);
        index::set(gone_lo / PAGE, gone_hi / PAGE, None);
    }
}

/// Calls `f` on each region overlapping `[start, end)` in address order, with its slot;
/// `f` may change the table within the region it is given.
fn each_overlapping(start: u64, end: u64, mut f: impl FnMut(u32, Region)) {
    let mut cur = start;
    while cur < end {
        let Some((i, after)) = index::first(cur / PAGE, end.div_ceil(PAGE)) else {
            return;
        };
        match slot(i).and_then(Slot::read) {
            Some(r) if r.start < end && cur < r.end() => {
                f(i, r);
                cur = r.end();
            }
            // A stale entry (see `index::take`): past it.
            _ => cur = cur.max(after.saturating_mul(PAGE)),
        }
    }
}

/// Removes every region overlapping `[start, start+len)`, calling `f` on each (after it is
/// no longer found by lookups) with whether it was the last piece of its mapping id. `f`
/// runs with the registry lock held: it must not call back into the registry.
pub fn remove_overlapping(start: u64, len: u64, mut f: impl FnMut(Region, bool)) {
    let _slots = crate::patch::disable(start, len);
    let _g = lock();
    each_overlapping(start, start.saturating_add(len), |i, r| {
        remove_locked(i, &r);
        f(r, !ids::has(r.map_id));
    });
}

/// Stops tracing `[start, start+len)`: regions wholly inside are removed (`f` is called on
/// each, after lookups no longer find it, with whether it was the last piece of its
/// mapping id; under the registry lock: it must not call back into the registry); regions
/// partly inside shrink or split, so the part still mapped never stops being traced. The
/// alias pages of the part that stops being traced are unmapped, except those of
/// `[keep.0, keep.1)` (an `mremap` moves them along with the program's pages).
pub fn remove_range(start: u64, len: u64, keep: (u64, u64), mut f: impl FnMut(Region, bool)) {
    // No trampoline may still use the alias pages unmapped below (one that stayed inside
    // past the deadline leaves them mapped: never freed, never wrong).
    let slots = crate::patch::disable(start, len);
    let quiet = slots.quiet;
    let _g = lock();
    let end = start.saturating_add(len);
    each_overlapping(start, end, |i, r| {
        let (lo, hi) = (r.start.max(start), r.end().min(end));
        if r.alias != 0 && quiet {
            // The alias of [lo, hi) minus the kept range.
            let (k0, k1) = (keep.0.clamp(lo, hi), keep.1.clamp(lo, hi));
            let parts = if k0 < k1 {
                [(lo, k0), (k1, hi)]
            } else {
                [(lo, hi), (hi, hi)]
            };
            for (a, b) in parts.into_iter().filter(|(a, b)| a < b) {
                // SAFETY: the tracer's own alias pages of a range no longer traced.
                unsafe { sys::munmap(r.alias_of(a) as usize, (b - a) as usize) };
            }
        }
        match (r.start < lo, hi < r.end()) {
            (false, false) => {
                remove_locked(i, &r);
                f(r, !ids::has(r.map_id));
            }
            (true, false) => shrink_locked(i, r.piece(r.start, lo), lo, hi),
            (false, true) => shrink_locked(i, r.piece(hi, r.end()), lo, hi),
            (true, true) => {
                // The right piece first, so that every still-mapped byte stays findable.
                if add_locked(r.piece(hi, r.end())).is_ok() {
                    shrink_locked(i, r.piece(r.start, lo), lo, hi);
                } else {
                    // No room for a second piece: the hole leaves the index, the slot
                    // keeps the whole range (its hole is never found).
                    index::reserve(index::PER_SET);
                    index::set(lo / PAGE, hi / PAGE, None);
                }
            }
        }
    });
}

/// Whether any traced region may overlap the range (a quick test without the lock).
pub fn maybe_overlaps(start: u64, len: u64) -> bool {
    start < HI.load(Ordering::Relaxed) && start.saturating_add(len) > LO.load(Ordering::Relaxed)
}

/// Changes the program-visible protection of `[start, start+len)` in every region it
/// overlaps; a region only partly inside is split at the range's edges, so its other
/// pages keep their protection. Returns how many regions it touched.
pub fn set_prot(start: u64, len: u64, prot: i32) -> usize {
    // Trampolines do not check protections: their slots over the range go off (the trap
    // path then decides, and serves the range from a slot again if the new protection
    // allows the site's access).
    let _slots = crate::patch::disable(start, len);
    let _g = lock();
    let end = start.saturating_add(len);
    let mut n = 0;
    each_overlapping(start, end, |i, r| {
        n += 1;
        if r.prot == prot {
            return;
        }
        let (lo, hi) = (r.start.max(start), r.end().min(end));
        // The outer pieces first (they take over their pages from the old slot with the
        // same data), so that every byte stays findable throughout.
        if r.start < lo && add_locked(r.piece(r.start, lo)).is_err() {
            return;
        }
        if hi < r.end() && add_locked(r.piece(hi, r.end())).is_err() {
            // No room for the right piece: keep the tail in this slot with the old
            // protection, rather than lose it.
            shrink_locked(i, r.piece(lo, r.end()), 0, 0);
            return;
        }
        shrink_locked(
            i,
            Region {
                prot,
                ..r.piece(lo, hi)
            },
            0,
            0,
        );
    });
    n
}

/// Whether any registered region carries mapping id `map_id` (normal context).
pub fn has_map_id(map_id: u64) -> bool {
    let _g = lock();
    ids::has(map_id)
}

/// All regions overlapping the range, in address order (copied out; normal context).
pub fn overlapping(start: u64, len: u64, mut f: impl FnMut(Region)) {
    each_overlapping(start, start.saturating_add(len), |_, r| f(r));
}

/// Whether any region overlaps `[start, start+len)`.
pub fn any_overlapping(start: u64, len: u64) -> bool {
    let mut any = false;
    overlapping(start, len, |_| any = true);
    any
}

/// How many regions are registered now.
pub fn count() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// In a fork child: the registry lock may have been held by a thread that does not exist
/// there.
///
/// After a fork that ran no handler of ours (a raw `syscall(SYS_fork)`), a slot may also
/// have been caught mid-write (odd sequence): lookups would spin on it for ever. Such a slot
/// is emptied (the region being changed at that instant is not traced in the child).
pub(crate) fn after_fork_child() {
    for i in 0..HIGH.load(Ordering::Relaxed) {
        let Some(s) = slot(i as u32) else { continue };
        let q = s.seq.load(Ordering::Relaxed);
        if q & 1 != 0 {
            s.seq.store(q.wrapping_add(1), Ordering::Relaxed);
            s.len.store(0, Ordering::Relaxed);
        }
    }
    LOCK.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The registry is process-wide: one test walks it through every operation, in an
    // address range of its own, compared with a plain model after each step.

    const BASE: u64 = 0x1234_0000_0000;

    fn region(start: u64, pages: u64, map_id: u64) -> Region {
        Region {
            start,
            len: pages * PAGE,
            alias: 0,
            phys: 0x8000_0000 + (start - BASE),
            map_id,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            phys_minus_off: 0,
            lazy: 0,
        }
    }

    /// The model: (start, end, phys at start, prot, map id) of each traced range.
    fn model_find(m: &[(u64, u64, u64, i32, u64)], a: u64) -> Option<(u64, i32, u64)> {
        m.iter()
            .find(|r| r.0 <= a && a < r.1)
            .map(|r| (r.2 + (a - r.0), r.3, r.4))
    }

    fn check(m: &[(u64, u64, u64, i32, u64)], probes: &[u64]) {
        for &a in probes {
            let got = find(a).map(|r| (r.phys_of(a), r.prot, r.map_id));
            assert_eq!(got, model_find(m, a), "address {a:#x}");
        }
    }

    #[test]
    fn registry_matches_a_model_through_adds_holes_splits_and_removals() {
        let mut m: Vec<(u64, u64, u64, i32, u64)> = Vec::new();
        let mut seed = 0x9e37_79b9_u64;
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        // 3000 one-page regions, every other page (LO/HI and the index hold them all).
        for k in 0..3000u64 {
            let r = region(BASE + 2 * k * PAGE, 1, k + 1);
            add(r).unwrap();
            m.push((r.start, r.end(), r.phys, r.prot, r.map_id));
        }
        assert_eq!(add(region(BASE, 1, 99)), Err(AddError::Overlap));
        // A region of a gigabyte and a bit, unaligned: block entries at several levels.
        let big = region(BASE + 0x10_0000_0000 + 3 * PAGE, (1 << 18) + 515, 5000);
        add(big).unwrap();
        m.push((big.start, big.end(), big.phys, big.prot, big.map_id));
        let mut probes: Vec<u64> = (0..6100).map(|k| BASE + k * PAGE + 8).collect();
        probes.extend((0..2000).map(|k| big.start - PAGE + k * (big.len / 1999)));
        probes.push(big.end() - 1);
        probes.push(big.end());
        check(&m, &probes);
        // Random holes and protection changes, each checked against the model.
        for step in 0..300 {
            let (lo, pages) = if step % 3 == 0 {
                (big.start + rnd(big.len / PAGE) * PAGE, 1 + rnd(600))
            } else {
                (BASE + rnd(6000) * PAGE, 1 + rnd(7))
            };
            let hi = lo + pages * PAGE;
            if step % 2 == 0 {
                remove_range(lo, hi - lo, (0, 0), |_, _| {});
                let mut next = Vec::new();
                for &(s, e, p, pr, id) in &m {
                    if e <= lo || hi <= s {
                        next.push((s, e, p, pr, id));
                        continue;
                    }
                    if s < lo {
                        next.push((s, lo, p, pr, id));
                    }
                    if hi < e {
                        next.push((hi, e, p + (hi - s), pr, id));
                    }
                }
                m = next;
            } else {
                let prot = [libc::PROT_READ, libc::PROT_NONE, libc::PROT_WRITE][step % 3];
                set_prot(lo, hi - lo, prot);
                let mut next = Vec::new();
                for &(s, e, p, pr, id) in &m {
                    if e <= lo || hi <= s {
                        next.push((s, e, p, pr, id));
                        continue;
                    }
                    let (a, b) = (s.max(lo), e.min(hi));
                    if s < a {
                        next.push((s, a, p, pr, id));
                    }
                    next.push((a, b, p + (a - s), prot, id));
                    if b < e {
                        next.push((b, e, p + (b - s), pr, id));
                    }
                }
                m = next;
            }
            // Around the change, and a sample elsewhere.
            let mut near: Vec<u64> = (0..pages + 2).map(|k| lo - PAGE + k * PAGE + 4).collect();
            near.extend((0..200).map(|_| probes[rnd(probes.len() as u64) as usize]));
            check(&m, &near);
            for &(_, _, _, _, id) in m.iter().take(50) {
                assert!(ids::has(id));
            }
        }
        check(&m, &probes);
        // Everything goes: nothing is found, every id is gone (each reported once, with
        // its last piece).
        let mut gone = 0;
        remove_overlapping(BASE, 0x20_0000_0000, |_, last| gone += last as usize);
        let mut ids_left: Vec<u64> = m.iter().map(|r| r.4).collect();
        ids_left.sort_unstable();
        ids_left.dedup();
        assert_eq!(gone, ids_left.len());
        check(&[], &probes);
        assert!(!ids::has(5000));
    }

    #[test]
    fn a_page_that_stays_traced_is_always_found_while_its_region_is_split() {
        const B: u64 = 0x2345_0000_0000;
        // Odd while the writer has the region removed (a miss is then allowed).
        let epoch = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let done = std::sync::Arc::new(AtomicU64::new(0));
        add(region(B, 64, 7000)).unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (stop, done, epoch) = (stop.clone(), done.clone(), epoch.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                        let e = epoch.load(Ordering::Acquire);
                        let r = find(B + 10 * PAGE + 4);
                        if e % 2 == 0 && epoch.load(Ordering::Acquire) == e {
                            let r = r.expect("page 10 is traced throughout");
                            assert_eq!(
                                r.phys_of(B + 10 * PAGE),
                                0x8000_0000 + (B - BASE) + 10 * PAGE
                            );
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut k = 0u64;
        // Until the readers have looked many times (they may start late on a loaded
        // machine), or one failed. Each round moves page 10 to a new slot twice (it lands in the outer
        // piece of a split each time).
        while (k < 30_000 || done.load(Ordering::Relaxed) < 1_000_000)
            && !readers.iter().any(|r| r.is_finished())
        {
            k += 1;
            set_prot(B, PAGE, libc::PROT_READ);
            set_prot(B + 63 * PAGE, PAGE, libc::PROT_READ);
            remove_range(B + 40 * PAGE, 3 * PAGE, (0, 0), |_, _| {});
            epoch.fetch_add(1, Ordering::Release);
            remove_overlapping(B, 64 * PAGE, |_, _| {});
            add(region(B, 64, 7000)).unwrap();
            epoch.fetch_add(1, Ordering::Release);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        remove_overlapping(B, 64 * PAGE, |_, _| {});
        assert_eq!(find(B + 10 * PAGE), None);
    }
}
