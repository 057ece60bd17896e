//! The per-site cache: what the fault path learned about each faulting instruction,
//! keyed by its address (RIP).
//!
//! A site keeps the instruction's original bytes, its decoding (or that the emulator
//! refuses it), a hit count, and a snapshot of the region its last fault was in, with the
//! region table's generation at the time (`regions::generation`, bumped by every table
//! change). A fault at a known site in the same region therefore decodes nothing and
//! makes no region lookup; otherwise it makes one lookup and refreshes the snapshot.
//!
//! The bytes the fault path decodes are the saved ones. While a site is not patched they
//! are compared with the live text at every fault (16 bytes): a program that rewrites its
//! code (a JIT reusing a buffer) gets the new instruction decoded and the site refreshed.
//! A patched site (hot-site patching, where the live text holds `CC`/`E9`) is marked so,
//! and its saved bytes are then the truth (the patcher marks it before it writes).
//!
//! Fixed table, lock-free, allocation-free: a site is claimed with one compare-exchange
//! of its key on a short probe; its contents are a seqlock, written by whichever thread
//! faults there (a try-lock: a thread that finds it busy uses what it decoded itself
//! without caching it) and copied by readers that never wait (an inconsistent copy is a
//! miss). A full probe means no caching for that RIP: the fault decodes the live text as
//! before the cache existed.

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

use iced_x86::{Decoder, DecoderOptions, Instruction};
use mmio_trace_x86 as x86;

use crate::regions::{self, Region};

/// Sites in the table (distinct faulting instructions cached).
pub const SITES: usize = 4096;
const _: () = assert!(SITES.is_power_of_two());
/// Slots a lookup probes before giving up (the table is then treated as full).
const PROBE: usize = 16;

/// What a site holds (copied out whole under the seqlock).
#[derive(Clone, Copy)]
pub(crate) struct SiteData {
    /// Whether the rest is filled in.
    pub valid: bool,
    /// The instruction's original bytes (`len` of them) and up to 16 read with them.
    pub bytes: [u8; 16],
    /// How many bytes the instruction has (0: it did not decode).
    pub len: u8,
    /// How many bytes were read (the instruction, or what the page held up to 15).
    pub read: u8,
    /// The emulator's decoding (`None`: it refuses the instruction).
    pub decoded: Option<x86::Decoded>,
    /// The region the last fault here was in, and the table generation it was read at.
    pub region: Option<Region>,
    pub generation: u64,
}

const NO_DATA: SiteData = SiteData {
    valid: false,
    bytes: [0; 16],
    len: 0,
    read: 0,
    decoded: None,
    region: None,
    generation: 0,
};

/// One site.
struct Site {
    /// The instruction's address (0: a free slot).
    rip: AtomicU64,
    /// Faults taken here.
    hits: AtomicU64,
    /// Even: `data` is stable; odd: being written.
    seq: AtomicU32,
    /// The hot-site patcher replaced (or is replacing) the live bytes: the saved ones are
    /// the instruction. Outside `data`, so that a fault writing back what it read before
    /// the patcher set it cannot clear it.
    patched: AtomicBool,
    data: UnsafeCell<SiteData>,
}

// SAFETY: `data` is written only by the holder of the odd `seq` (a compare-exchange),
// and read as a copy checked against `seq` (a seqlock).
unsafe impl Sync for Site {}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Site = Site {
    rip: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    seq: AtomicU32::new(0),
    patched: AtomicBool::new(false),
    data: UnsafeCell::new(NO_DATA),
};

static TABLE: [Site; SITES] = [FREE; SITES];

impl Site {
    /// A consistent copy of the contents, or `None` while a writer holds them.
    fn read(&self) -> Option<SiteData> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        // SAFETY: a plain copy of a `Copy` value; a copy torn by a concurrent writer is
        // thrown away below (the sequence moved), never used.
        let d = unsafe { core::ptr::read_volatile(self.data.get()) };
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == s1).then_some(d)
    }

    /// Replaces the contents unless another thread is writing them (then nothing).
    fn write(&self, d: &SiteData) {
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 != 0
            || self
                .seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        // SAFETY: the odd sequence makes this thread the only writer; readers discard
        // what they copy meanwhile.
        unsafe { core::ptr::write_volatile(self.data.get(), *d) };
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

#[inline]
fn home(rip: u64) -> usize {
    (rip.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SITES.trailing_zeros())) as usize
}

/// The site of `rip`, claimed if new; `None` when its probe is full.
fn site(rip: u64) -> Option<&'static Site> {
    if rip == 0 {
        return None;
    }
    let mut i = home(rip);
    for _ in 0..PROBE {
        let s = &TABLE[i];
        let k = s.rip.load(Ordering::Acquire);
        if k == rip {
            return Some(s);
        }
        if k == 0 {
            match s
                .rip
                .compare_exchange(0, rip, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(s),
                Err(k) if k == rip => return Some(s),
                Err(_) => {}
            }
        }
        i = (i + 1) & (SITES - 1);
    }
    None
}

/// The code bytes at `rip`: up to 15, but not past the end of its page unless the
/// instruction continues there (the next page may be unmapped).
fn live_code(rip: u64) -> ([u8; 16], usize) {
    let mut bytes = [0u8; 16];
    let to_page_end = (4096 - (rip & 4095)) as usize;
    let mut n = to_page_end.min(15);
    // SAFETY: the code at rip is mapped (it just ran) to the end of its page.
    unsafe { core::ptr::copy_nonoverlapping(rip as *const u8, bytes.as_mut_ptr(), n) };
    if n < 15 {
        let mut d = Decoder::with_ip(64, &bytes[..n], rip, DecoderOptions::NONE);
        if d.decode().is_invalid() && d.last_error() == iced_x86::DecoderError::NoMoreBytes {
            // SAFETY: the instruction itself continues onto the next page, so it is mapped.
            unsafe { core::ptr::copy_nonoverlapping(rip as *const u8, bytes.as_mut_ptr(), 15) };
            n = 15;
        }
    }
    (bytes, n)
}

/// One fault's view of its site: the instruction and the region, from the cache where it
/// is current, else read (and cached) now.
pub(crate) struct Fault {
    rip: u64,
    site: Option<&'static Site>,
    data: SiteData,
    /// The contents changed and are to be written back to the site.
    dirty: bool,
    /// Faults taken here so far, this one included (0: not in the table).
    pub hits: u64,
}

impl Fault {
    /// The view of the instruction at `rip` (one probe of the table).
    #[inline]
    pub fn at(rip: u64) -> Fault {
        let site = site(rip);
        let (data, hits) = match site {
            Some(s) => {
                let hits = s.hits.fetch_add(1, Ordering::Relaxed) + 1;
                (s.read().unwrap_or(NO_DATA), hits)
            }
            None => (NO_DATA, 0),
        };
        Fault {
            rip,
            site,
            data,
            dirty: false,
            hits,
        }
    }

    /// The traced region holding `addr` (its alias made if it is made on first access):
    /// the snapshot when the table has not changed since it was taken and it holds
    /// `addr`, else one lookup.
    #[inline]
    pub fn region(&mut self, addr: u64) -> Option<Region> {
        let generation = regions::generation();
        if let Some(r) = self.data.region {
            if self.data.valid
                && self.data.generation == generation
                && r.contains(addr)
                && (r.alias != 0 || r.lazy == 0)
            {
                return Some(r);
            }
        }
        let r = find_aliased(addr)?;
        // The generation read before the lookup: a change meanwhile makes the snapshot
        // stale at once (its bump comes after it).
        self.data.region = Some(r);
        self.data.generation = generation;
        self.dirty = true;
        Some(r)
    }

    /// Makes sure the instruction is decoded from its original bytes: the saved ones when
    /// they are still the live ones (or the site is patched), else the live ones, saved.
    fn load_code(&mut self) {
        let patched = |f: &Fault| f.site.is_some_and(|s| s.patched.load(Ordering::Acquire));
        if patched(self) && self.saved_code() {
            return;
        }
        let (bytes, n) = live_code(self.rip);
        if self.data.valid && self.data.bytes[..n] == bytes[..n] && usize::from(self.data.read) == n
        {
            return;
        }
        // Asked again after reading the text: the patcher marks a site before it writes
        // the site's text, so text seen changed by it is seen marked.
        if patched(self) && self.saved_code() {
            return;
        }
        self.decode_from(bytes, n);
    }

    /// For a patched site, whose live text is a jump or an int3: the saved instruction,
    /// from the cache or (when the copy read raced a writer) from the patcher's record.
    /// `false`: neither has it.
    fn saved_code(&mut self) -> bool {
        if self.data.valid {
            return true;
        }
        match crate::patch::original_of(self.rip) {
            Some((bytes, n)) => {
                self.decode_from(bytes, n);
                true
            }
            None => false,
        }
    }

    /// Decodes `bytes[..n]` as the instruction at the site (new, or rewritten in place).
    fn decode_from(&mut self, bytes: [u8; 16], n: usize) {
        let decoded = x86::decode(&bytes[..n], self.rip).ok();
        let mut d = Decoder::with_ip(64, &bytes[..n], self.rip, DecoderOptions::NONE);
        let ins = d.decode();
        self.data.valid = true;
        self.data.bytes = bytes;
        self.data.read = n as u8;
        self.data.len = if ins.is_invalid() { 0 } else { ins.len() as u8 };
        self.data.decoded = decoded;
        self.dirty = true;
        if self.data.region.is_none() {
            self.data.generation = 0;
        }
    }

    /// The emulator's decoding of the instruction (`None`: it refuses it).
    #[inline]
    pub fn decoded(&mut self) -> Option<x86::Decoded> {
        self.load_code();
        self.data.decoded
    }

    /// The instruction's saved bytes and how many of them were read, for out-of-line
    /// execution (which decodes and relocates them itself).
    pub fn code(&mut self) -> ([u8; 16], usize) {
        self.load_code();
        (self.data.bytes, usize::from(self.data.read))
    }

    /// The instruction and its bytes, for the step path.
    pub fn instruction(&mut self) -> Option<(Instruction, [u8; 16])> {
        self.load_code();
        if self.data.len == 0 {
            return None;
        }
        let n = usize::from(self.data.read);
        let mut d = Decoder::with_ip(64, &self.data.bytes[..n], self.rip, DecoderOptions::NONE);
        let ins = d.decode();
        (!ins.is_invalid()).then_some((ins, self.data.bytes))
    }

    /// Saves what this fault learned in the site (if no other thread is writing it).
    #[inline]
    pub fn finish(self) {
        if !self.dirty {
            return;
        }
        if let Some(s) = self.site {
            if s.rip.load(Ordering::Relaxed) == self.rip {
                s.write(&self.data);
            }
        }
    }
}

/// As `regions::find_aliasing`, saying in the log (a `MARK`) when the alias of a region
/// made on first access cannot be made: its accesses are then single-stepped.
pub(crate) fn find_aliased(addr: u64) -> Option<Region> {
    let mut failed = None;
    let r = regions::find_aliasing(addr, &mut failed);
    if let (Some(errno), Some(r)) = (failed, &r) {
        crate::no_alias_mark(r.map_id, r.start, r.len, errno);
    }
    r
}

/// Faults taken at `rip` so far (0 for an instruction not in the table).
pub fn hits(rip: u64) -> u64 {
    let mut i = home(rip);
    for _ in 0..PROBE {
        let s = &TABLE[i];
        match s.rip.load(Ordering::Acquire) {
            k if k == rip => return s.hits.load(Ordering::Relaxed),
            0 => return 0,
            _ => i = (i + 1) & (SITES - 1),
        }
    }
    0
}

/// What the site of `rip` holds (the patcher's view; `None`: not cached, or being
/// written).
pub(crate) fn snapshot(rip: u64) -> Option<SiteData> {
    let mut i = home(rip);
    for _ in 0..PROBE {
        let s = &TABLE[i];
        match s.rip.load(Ordering::Acquire) {
            k if k == rip => return s.read().filter(|d| d.valid),
            0 => return None,
            _ => i = (i + 1) & (SITES - 1),
        }
    }
    None
}

/// Marks the site of `rip` patched (its live text holds a jump or an int3, now or at any
/// later time: the saved bytes are the instruction) or not (the patch failed).
pub(crate) fn set_patched(rip: u64, patched: bool) {
    if let Some(s) = site(rip) {
        s.patched.store(patched, Ordering::SeqCst);
    }
}

/// In a fork child: the parent's sites hold for the child's copy of its code; only a
/// write the fork caught half-done is dropped.
pub(crate) fn after_fork_child() {
    for s in TABLE.iter() {
        let q = s.seq.load(Ordering::Relaxed);
        if q & 1 != 0 {
            s.seq.store(q.wrapping_add(1), Ordering::Relaxed);
            // SAFETY: single thread in the child; nobody reads meanwhile.
            unsafe { (*s.data.get()).valid = false };
        }
    }
}
