//! The shared-memory image of a [`Model`] and its allocation-free server.
//!
//! The image is an array of 64-bit words: a header, two fixed hash tables the traced
//! processes fill as they go (their mappings bound to the trace's maps, their threads
//! bound to the trace's threads), then the model's maps, registers, streams, sequences,
//! values and paths, and the `--map` overrides. Every word that changes during a run is
//! used as an `AtomicU64`, so the processes of a replayed program serve and check it at
//! once; a word index out of range reads a dummy word instead of faulting (the program
//! could write over the image: it may never make the server fault or panic).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::mask;
use crate::{Model, SeqEntry};

/// `"MMIOREPL"`, little-endian: the first word of an image.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MMIOREPL");
/// Layout version.
pub const VERSION: u64 = 1;

/// `--strict`: a process stops (SIGKILL) at its first divergence.
pub const FLAG_STRICT: u64 = 1;

// Header words.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_FLAGS: usize = 2;
const H_NMAPS: usize = 3;
const H_MAPS: usize = 4;
const H_WORDS: usize = 5;
const H_DIVERGENCES: usize = 6;
const H_FIRST_SET: usize = 7;
/// First divergence: kind, map, stream, position, write, width, rel, value, pc, tid.
const H_FIRST: usize = 8;
const H_FIRST_DONE: usize = 18;
const H_UNBOUND: usize = 19;
const H_STEPPED: usize = 20;
const H_UNCHECKED: usize = 21;
const H_TOLERATED: usize = 22;
const H_NOVR: usize = 23;
const H_OVR: usize = 24;
const H_BOUND: usize = 25;
const H_NRULES: usize = 26;
const H_RULES: usize = 27;
const H_SEED: usize = 28;
const H_STOP: usize = 29;
const HEADER: usize = 64;

/// Bindings of the run's mappings: (map id, model map + 1 (0: none), base, mask of the
/// injection rules that apply).
const BIND_N: usize = 4096;
const BIND_W: usize = 4;
const BIND_AT: usize = HEADER;
/// Bindings of the run's threads: ((model map + 1) << 32 | tid, stream + 1).
const THR_N: usize = 16384;
const THR_W: usize = 2;
const THR_AT: usize = BIND_AT + BIND_N * BIND_W;
const TABLES_END: usize = THR_AT + THR_N * THR_W;

// A map: claimed, trace id, path byte offset, path length (NONE), file offset (NONE),
// length, registers at, registers, streams at, streams, phys.
const M_CLAIMED: usize = 0;
const M_ID: usize = 1;
const M_PATH: usize = 2;
const M_PATH_LEN: usize = 3;
const M_FILE_OFF: usize = 4;
const M_REGS: usize = 6;
const M_NREGS: usize = 7;
const M_STREAMS: usize = 8;
const M_NSTREAMS: usize = 9;
const MAP_W: usize = 11;
// A register: rel, width, values at, values, read cursor.
const R_REL: usize = 0;
const R_WIDTH: usize = 1;
const R_VALS: usize = 2;
const R_NVALS: usize = 3;
const R_CURSOR: usize = 4;
const REG_W: usize = 5;
// A stream: claimed, sequence at, entries, cursor, diverged, trace tid, unchecked.
const S_CLAIMED: usize = 0;
const S_SEQ: usize = 1;
const S_NSEQ: usize = 2;
const S_CURSOR: usize = 3;
const S_DIVERGED: usize = 4;
const S_TID: usize = 5;
const STREAM_W: usize = 7;
// A sequence entry: write | width << 8, rel, value.
const SEQ_W: usize = 3;
// An override (`--map NEW=OLD`): kind (1: ids, 2: paths), new id / new path byte offset,
// new path length, old id / old path byte offset, old path length.
const OVR_W: usize = 5;

// An injection rule: file glob byte offset, its length (NONE: any file), rel, width (0:
// any), op, operand, from the Nth read, probability (of u64::MAX), delay in ns, SIGBUS at
// the Nth access, accesses seen, reads seen.
const RU_FILE: usize = 0;
const RU_FILE_LEN: usize = 1;
const RU_REL: usize = 2;
const RU_WIDTH: usize = 3;
const RU_OP: usize = 4;
const RU_OPERAND: usize = 5;
const RU_FROM: usize = 6;
const RU_PROB: usize = 7;
const RU_DELAY_NS: usize = 8;
const RU_SIGBUS_AT: usize = 9;
const RU_ACCESSES: usize = 10;
const RU_READS: usize = 11;
const RULE_W: usize = 12;
const OP_NONE: u64 = 0;
const OP_VALUE: u64 = 1;
const OP_SET: u64 = 2;
const OP_CLEAR: u64 = 3;
const OP_FLIP: u64 = 4;

/// The most injection rules.
pub const MAX_RULES: usize = 64;

const NONE: u64 = u64::MAX;
/// A table key being written (readers pass over it).
const BUSY: u64 = u64::MAX;

/// A `--map NEW=OLD` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapRule {
    /// The run's mapping id NEW (as its log numbers it) is the trace's map OLD.
    Ids(u64, i64),
    /// Mappings of file NEW are the trace's mappings of file OLD.
    Paths(Vec<u8>, Vec<u8>),
}

/// What an injection rule does to a read's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectOp {
    /// Nothing (the rule only delays or raises SIGBUS).
    None,
    /// Return this value.
    Value(u64),
    /// Set these bits.
    Set(u64),
    /// Clear these bits.
    Clear(u64),
    /// Flip these bits.
    Flip(u64),
}

/// A fault-injection rule for one register.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectRule {
    /// Mappings of files matching this glob (`*` matches `/` too); `None`: any.
    pub file: Option<Vec<u8>>,
    /// Offset of the register within its mapping.
    pub rel: u64,
    /// Access width it applies to (0: any).
    pub width: u8,
    /// What it does to reads.
    pub op: InjectOp,
    /// From the Nth read of the register on (1: every read).
    pub from_read: u64,
    /// The probability each of those reads is changed (1.0: always).
    pub probability: f64,
    /// Delay of every access of the register, in nanoseconds.
    pub delay_ns: u64,
    /// The Nth access (read or write) is followed by SIGBUS (0: never).
    pub sigbus_at: u64,
}

/// What [`Image::inject`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// The value was changed (or set).
    pub changed: bool,
    /// The access is to be followed by SIGBUS.
    pub sigbus: bool,
    /// Delay the access this long.
    pub delay_ns: u64,
    /// The rule that changed it or raises SIGBUS.
    pub rule: Option<usize>,
}

/// What the run's mapping is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The model map (`None`: none of the trace; injection only).
    pub map: Option<usize>,
    /// The physical address offsets are counted from.
    pub base: u64,
    /// The injection rules that apply (bit i: rule i).
    pub rules: u64,
}

/// SplitMix64: a seeded, stateless draw per (rule, read number).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lays `model` out as an image (bytes, a multiple of 4096).
pub fn build(model: &Model, flags: u64, rules: &[MapRule]) -> Vec<u8> {
    build_with(model, flags, rules, &[], 0)
}

/// [`build`], with fault-injection rules (at most [`MAX_RULES`]) and their seed.
pub fn build_with(
    model: &Model,
    flags: u64,
    rules: &[MapRule],
    inject: &[InjectRule],
    seed: u64,
) -> Vec<u8> {
    let mut w: Vec<u64> = vec![0; TABLES_END];
    w[H_MAGIC] = MAGIC;
    w[H_VERSION] = VERSION;
    w[H_FLAGS] = flags;
    w[H_NMAPS] = model.maps.len() as u64;
    let maps_at = w.len();
    w[H_MAPS] = maps_at as u64;
    w.resize(maps_at + model.maps.len() * MAP_W, 0);
    // Paths are appended as bytes after the words: (word-relative byte offset, bytes).
    let mut paths: Vec<u8> = Vec::new();
    let mut path_fix: Vec<(usize, usize)> = Vec::new();
    for (i, m) in model.maps.iter().enumerate() {
        let at = maps_at + i * MAP_W;
        w[at + M_ID] = m.id as u64;
        match &m.path {
            Some(p) => {
                path_fix.push((at + M_PATH, paths.len()));
                paths.extend_from_slice(p);
                w[at + M_PATH_LEN] = p.len() as u64;
            }
            None => w[at + M_PATH_LEN] = NONE,
        }
        w[at + M_FILE_OFF] = m.file_off.unwrap_or(NONE);
        w[at + 5] = m.len;
        w[at + 10] = m.phys;
        let regs_at = w.len();
        w[at + M_REGS] = regs_at as u64;
        w[at + M_NREGS] = m.regs.len() as u64;
        w.resize(regs_at + m.regs.len() * REG_W, 0);
        for (j, r) in m.regs.iter().enumerate() {
            let vals = w.len();
            w.extend_from_slice(&r.reads);
            let ra = regs_at + j * REG_W;
            w[ra + R_REL] = r.rel;
            w[ra + R_WIDTH] = u64::from(r.width);
            w[ra + R_VALS] = vals as u64;
            w[ra + R_NVALS] = r.reads.len() as u64;
        }
        let st_at = w.len();
        w[at + M_STREAMS] = st_at as u64;
        w[at + M_NSTREAMS] = m.streams.len() as u64;
        w.resize(st_at + m.streams.len() * STREAM_W, 0);
        for (j, s) in m.streams.iter().enumerate() {
            let seq = w.len();
            for e in &s.entries {
                w.extend_from_slice(&[
                    u64::from(e.write) | u64::from(e.width) << 8,
                    e.rel,
                    e.value,
                ]);
            }
            let sa = st_at + j * STREAM_W;
            w[sa + S_SEQ] = seq as u64;
            w[sa + S_NSEQ] = s.entries.len() as u64;
            w[sa + S_TID] = u64::from(s.tid);
        }
    }
    let ovr_at = w.len();
    w[H_OVR] = ovr_at as u64;
    w[H_NOVR] = rules.len() as u64;
    w.resize(ovr_at + rules.len() * OVR_W, 0);
    for (i, r) in rules.iter().enumerate() {
        let at = ovr_at + i * OVR_W;
        match r {
            MapRule::Ids(new, old) => {
                w[at] = 1;
                w[at + 1] = *new;
                w[at + 3] = *old as u64;
            }
            MapRule::Paths(new, old) => {
                w[at] = 2;
                path_fix.push((at + 1, paths.len()));
                paths.extend_from_slice(new);
                w[at + 2] = new.len() as u64;
                path_fix.push((at + 3, paths.len()));
                paths.extend_from_slice(old);
                w[at + 4] = old.len() as u64;
            }
        }
    }
    let inject = &inject[..inject.len().min(MAX_RULES)];
    let ru_at = w.len();
    w[H_RULES] = ru_at as u64;
    w[H_NRULES] = inject.len() as u64;
    w[H_SEED] = seed;
    w.resize(ru_at + inject.len() * RULE_W, 0);
    for (i, r) in inject.iter().enumerate() {
        let at = ru_at + i * RULE_W;
        match &r.file {
            Some(f) => {
                path_fix.push((at + RU_FILE, paths.len()));
                paths.extend_from_slice(f);
                w[at + RU_FILE_LEN] = f.len() as u64;
            }
            None => w[at + RU_FILE_LEN] = NONE,
        }
        w[at + RU_REL] = r.rel;
        w[at + RU_WIDTH] = u64::from(r.width);
        (w[at + RU_OP], w[at + RU_OPERAND]) = match r.op {
            InjectOp::None => (OP_NONE, 0),
            InjectOp::Value(v) => (OP_VALUE, v),
            InjectOp::Set(v) => (OP_SET, v),
            InjectOp::Clear(v) => (OP_CLEAR, v),
            InjectOp::Flip(v) => (OP_FLIP, v),
        };
        w[at + RU_FROM] = r.from_read.max(1);
        w[at + RU_PROB] = if r.probability >= 1.0 {
            u64::MAX
        } else if r.probability <= 0.0 {
            0
        } else {
            (r.probability * 18_446_744_073_709_551_616.0) as u64
        };
        w[at + RU_DELAY_NS] = r.delay_ns;
        w[at + RU_SIGBUS_AT] = r.sigbus_at;
    }
    let bytes_at = w.len() * 8;
    for (slot, off) in path_fix {
        w[slot] = (bytes_at + off) as u64;
    }
    let total = (bytes_at + paths.len()).div_ceil(4096) * 4096;
    w[H_WORDS] = (total / 8) as u64;
    let mut out = Vec::with_capacity(total);
    for v in &w {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&paths);
    out.resize(total, 0);
    out
}

/// What kind of divergence a report names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DivergenceKind {
    /// The access is not the one the trace has next for its thread and map.
    Mismatch,
    /// A thread the trace does not have touched the map (no recorded sequence left).
    ExtraThread,
}

/// The first access of a run that did not match the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// What did not match.
    pub kind: DivergenceKind,
    /// Index of the map in the model.
    pub map: usize,
    /// Index of the stream in its map (meaningless for [`DivergenceKind::ExtraThread`]).
    pub stream: usize,
    /// Position in the stream: the entry the trace had next.
    pub pos: usize,
    /// The access made: a write (else a read).
    pub write: bool,
    /// Its width in bytes.
    pub width: u8,
    /// Its offset within the mapping.
    pub rel: u64,
    /// Its value (written, or served for a read).
    pub value: u64,
    /// Its program counter.
    pub pc: u64,
    /// Its thread.
    pub tid: u32,
}

/// What happened to one recorded thread sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// A thread of the run took it.
    pub claimed: bool,
    /// Entries matched (the position reached).
    pub pos: usize,
    /// Entries in the trace.
    pub len: usize,
    /// It diverged.
    pub diverged: bool,
}

/// The state of a run, read after it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// Divergences (at most one per stream, plus extra threads).
    pub divergences: u64,
    /// The first one.
    pub first: Option<Divergence>,
    /// Per map: whether a mapping of the run was bound to it, and its streams.
    pub maps: Vec<(bool, Vec<StreamState>)>,
    /// Accesses to mappings bound to no map of the trace (served from the shadow).
    pub unbound: u64,
    /// Accesses single-stepped under replay (their values came from the shadow).
    pub stepped: u64,
    /// Accesses after their stream diverged (served, not checked).
    pub unchecked: u64,
    /// Reads the trace did not have at that point that repeated the read before
    /// (a polling loop that took more reads): accepted.
    pub tolerated: u64,
    /// Mappings of the run bound to a map of the trace.
    pub bound: u64,
}

/// What [`Image::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As recorded.
    Match,
    /// This access diverged (`first`: the run's first divergence).
    Diverged {
        /// The run's first divergence.
        first: bool,
    },
    /// Not checked: its stream diverged before.
    Unchecked,
}

static DUMMY: AtomicU64 = AtomicU64::new(0);

/// A mapped image.
#[derive(Clone, Copy)]
pub struct Image {
    base: *const AtomicU64,
    words: usize,
}

// SAFETY: every word is accessed atomically; the memory lives as long as the mapping,
// which the owner keeps for the process's lifetime (see `from_raw`).
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

fn hash(v: u64) -> usize {
    (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize
}

impl Image {
    /// The image at `base`, `len` bytes, if it holds one (magic, version, size).
    ///
    /// # Safety
    /// `base` is 8-aligned and `len` bytes are mapped read-write for as long as the
    /// returned value (or a copy) is used.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Option<Image> {
        if len < TABLES_END * 8 {
            return None;
        }
        let img = Image {
            base: base as *const AtomicU64,
            words: len / 8,
        };
        let ok = img.get(H_MAGIC) == MAGIC
            && img.get(H_VERSION) == VERSION
            && img.get(H_WORDS) as usize <= img.words;
        ok.then_some(img)
    }

    /// The image's size in bytes as its header says (to map all of it).
    pub fn size_from_header(header: &[u8]) -> Option<usize> {
        let word = |i: usize| {
            header
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        (word(H_MAGIC)? == MAGIC && word(H_VERSION)? == VERSION)
            .then(|| word(H_WORDS).map(|w| w as usize * 8))
            .flatten()
    }

    #[inline]
    fn w(&self, i: usize) -> &AtomicU64 {
        if i < self.words {
            // SAFETY: in range of the mapping (from_raw's contract); atomics of u64.
            unsafe { &*self.base.add(i) }
        } else {
            &DUMMY
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        self.w(i).load(Ordering::Relaxed)
    }

    fn byte(&self, off: usize) -> u8 {
        let word = self.get(off / 8);
        (word >> ((off % 8) * 8)) as u8
    }

    fn bytes_eq(&self, off: u64, len: u64, s: &[u8]) -> bool {
        len == s.len() as u64
            && s.iter()
                .enumerate()
                .all(|(i, &b)| self.byte(off as usize + i) == b)
    }

    /// Whether `--strict` is on.
    pub fn strict(&self) -> bool {
        self.get(H_FLAGS) & FLAG_STRICT != 0
    }

    /// Under `--strict`, after a divergence: every process of the program is to stop
    /// at its next device access.
    pub fn stop(&self) {
        self.w(H_STOP).store(1, Ordering::Release);
    }

    /// Whether the program is to stop (see [`Image::stop`]).
    #[inline]
    pub fn stopping(&self) -> bool {
        self.w(H_STOP).load(Ordering::Relaxed) != 0
    }

    fn nmaps(&self) -> usize {
        self.get(H_NMAPS) as usize
    }

    fn map_at(&self, i: usize) -> usize {
        self.get(H_MAPS) as usize + i * MAP_W
    }

    fn map_path_eq(&self, i: usize, path: &[u8]) -> bool {
        let at = self.map_at(i);
        let len = self.get(at + M_PATH_LEN);
        len != NONE && self.bytes_eq(self.get(at + M_PATH), len, path)
    }

    fn claim_map(&self, i: usize) -> bool {
        self.w(self.map_at(i) + M_CLAIMED)
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn find_map_by_id(&self, id: u64) -> Option<usize> {
        (0..self.nmaps()).find(|&i| self.get(self.map_at(i) + M_ID) == id)
    }

    /// Binds the run's mapping `map_id` (of `path` at file offset `off`, starting at
    /// `start`) to a map of the trace: a `--map` rule first; else the first map not yet
    /// bound of the same file (through the path rules) and offset, then of the same
    /// file, then one the log names no file for (kernel logs); else a bound one of the
    /// same file and offset (the same mapping made again). Returns the model map.
    /// No allocation: for the `mmap` hook.
    ///
    /// `rules`: the injection rules that apply to the mapping (bit i: rule i); a mapping
    /// bound to no map of the trace is still bound for them.
    pub fn bind(
        &self,
        map_id: u64,
        start: u64,
        path: &[u8],
        off: u64,
        rules: u64,
    ) -> Option<usize> {
        let (novr, ovr) = (self.get(H_NOVR) as usize, self.get(H_OVR) as usize);
        let mut chosen = None;
        let mut path_ovr: Option<(u64, u64)> = None;
        for k in 0..novr {
            let at = ovr + k * OVR_W;
            match self.get(at) {
                1 if self.get(at + 1) == map_id => {
                    chosen = self.find_map_by_id(self.get(at + 3));
                    if let Some(i) = chosen {
                        self.claim_map(i);
                    }
                }
                2 if path_ovr.is_none()
                    && self.bytes_eq(self.get(at + 1), self.get(at + 2), path) =>
                {
                    path_ovr = Some((self.get(at + 3), self.get(at + 4)));
                }
                _ => {}
            }
        }
        let same_file = |i: usize| {
            let at = self.map_at(i);
            match path_ovr {
                Some((p, l)) => {
                    let len = self.get(at + M_PATH_LEN);
                    len == l
                        && (0..l).all(|j| {
                            self.byte((self.get(at + M_PATH) + j) as usize)
                                == self.byte((p + j) as usize)
                        })
                }
                None => self.map_path_eq(i, path),
            }
        };
        let n = self.nmaps();
        let free = |i: usize| self.get(self.map_at(i) + M_CLAIMED) == 0;
        let offset_is = |i: usize| self.get(self.map_at(i) + M_FILE_OFF) == off;
        if chosen.is_none() {
            'pass: for pass in 0..4 {
                for i in 0..n {
                    let ok = match pass {
                        0 => free(i) && same_file(i) && offset_is(i),
                        1 => free(i) && same_file(i),
                        2 => free(i) && self.get(self.map_at(i) + M_PATH_LEN) == NONE,
                        _ => same_file(i) && offset_is(i),
                    };
                    if ok && (pass == 3 || self.claim_map(i)) {
                        chosen = Some(i);
                        break 'pass;
                    }
                }
            }
        }
        let Some(i) = chosen else {
            if rules != 0 {
                self.insert(map_id, 0, start, rules);
            }
            return None;
        };
        self.insert(map_id, i as u64 + 1, start, rules).then_some(i)
    }

    /// Binds the run's mapping `id` as `from` is bound (an `mremap` made `id` continue
    /// `from`). Whether `from` was bound and the table had room.
    pub fn bind_as(&self, id: u64, from: u64) -> bool {
        match self.binding(from) {
            Some(b) => self.insert(id, b.map.map_or(0, |m| m as u64 + 1), b.base, b.rules),
            None => false,
        }
    }

    /// Binds the run's mapping `map_id` to model map `i`, with `start` (what offsets
    /// are counted from) — for a mapping that continues another (`mremap`). Whether
    /// the table had room.
    pub fn bind_to(&self, map_id: u64, i: usize, start: u64) -> bool {
        self.insert(map_id, i as u64 + 1, start, 0)
    }

    fn insert(&self, map_id: u64, i1: u64, start: u64, rules: u64) -> bool {
        let mut slot = hash(map_id) % BIND_N;
        for _ in 0..BIND_N {
            let at = BIND_AT + slot * BIND_W;
            if self
                .w(at)
                .compare_exchange(0, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.w(at + 1).store(i1, Ordering::Relaxed);
                self.w(at + 2).store(start, Ordering::Relaxed);
                self.w(at + 3).store(rules, Ordering::Relaxed);
                self.w(at).store(map_id, Ordering::Release);
                if i1 != 0 {
                    self.w(H_BOUND).fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
            slot = (slot + 1) % BIND_N;
        }
        false
    }

    /// The size a stand-in for the device file `path` needs: the end of the furthest
    /// map of that file in the trace (through the `--map` path rules), else the largest
    /// map the trace names no file for. `None`: the trace maps no such file.
    pub fn file_size(&self, path: &[u8]) -> Option<u64> {
        let (novr, ovr) = (self.get(H_NOVR) as usize, self.get(H_OVR) as usize);
        let mut old: Option<(u64, u64)> = None;
        for k in 0..novr {
            let at = ovr + k * OVR_W;
            if self.get(at) == 2 && self.bytes_eq(self.get(at + 1), self.get(at + 2), path) {
                old = Some((self.get(at + 3), self.get(at + 4)));
                break;
            }
        }
        let mut size = None;
        for i in 0..self.nmaps() {
            let at = self.map_at(i);
            let len = self.get(at + M_PATH_LEN);
            let same = match old {
                Some((p, l)) => {
                    len == l
                        && (0..l).all(|j| {
                            self.byte((self.get(at + M_PATH) + j) as usize)
                                == self.byte((p + j) as usize)
                        })
                }
                None => self.map_path_eq(i, path),
            };
            if same {
                let off = self.get(at + M_FILE_OFF);
                let end = if off == NONE { 0 } else { off } + self.get(at + 5);
                size = Some(size.unwrap_or(0).max(end));
            }
        }
        // A log that names no file (a kernel log): any device file may be its device,
        // and none is touched.
        size.or_else(|| {
            (0..self.nmaps())
                .filter(|&i| self.get(self.map_at(i) + M_PATH_LEN) == NONE)
                .map(|i| self.get(self.map_at(i) + 5))
                .max()
        })
    }

    /// The model map and start address the run's mapping `map_id` is bound to.
    #[inline]
    pub fn lookup(&self, map_id: u64) -> Option<(usize, u64)> {
        self.binding(map_id)
            .and_then(|b| b.map.map(|m| (m, b.base)))
    }

    /// What the run's mapping `map_id` is bound to.
    #[inline]
    pub fn binding(&self, map_id: u64) -> Option<Binding> {
        let mut slot = hash(map_id) % BIND_N;
        for _ in 0..BIND_N {
            let at = BIND_AT + slot * BIND_W;
            match self.w(at).load(Ordering::Acquire) {
                0 => return None,
                k if k == map_id => {
                    let i = self.get(at + 1);
                    return Some(Binding {
                        map: (i != 0).then(|| i as usize - 1),
                        base: self.get(at + 2),
                        rules: self.get(at + 3),
                    });
                }
                _ => slot = (slot + 1) % BIND_N,
            }
        }
        None
    }

    /// Whether the image holds a trace (else it only injects).
    pub fn has_trace(&self) -> bool {
        self.nmaps() > 0
    }

    /// How many injection rules there are.
    pub fn nrules(&self) -> usize {
        self.get(H_NRULES) as usize
    }

    /// The file glob of injection rule `i` (copied into `buf`); `None`: any file.
    pub fn rule_file<'a>(&self, i: usize, buf: &'a mut [u8; 256]) -> Option<&'a [u8]> {
        let at = self.get(H_RULES) as usize + i * RULE_W;
        let len = self.get(at + RU_FILE_LEN);
        if len == NONE || len > 256 {
            return None;
        }
        let off = self.get(at + RU_FILE) as usize;
        for (j, b) in buf.iter_mut().take(len as usize).enumerate() {
            *b = self.byte(off + j);
        }
        Some(&buf[..len as usize])
    }

    /// Applies the injection rules in `rules` (a binding's mask) to an access at `rel`
    /// of `width` bytes: a read's `value` may be replaced or have bits set, cleared or
    /// flipped (from the rule's Nth read on, with its probability, drawn from the seed
    /// and the read's number: the same run gives the same draws); the access may be
    /// delayed, or be the one a SIGBUS follows. No allocation, no lock.
    pub fn inject(
        &self,
        rules: u64,
        rel: u64,
        width: u8,
        write: bool,
        value: &mut u64,
    ) -> Injected {
        let mut out = Injected::default();
        let base = self.get(H_RULES) as usize;
        let seed = self.get(H_SEED);
        for i in 0..self.nrules().min(64) {
            if rules >> i & 1 == 0 {
                continue;
            }
            let at = base + i * RULE_W;
            let w = self.get(at + RU_WIDTH);
            if self.get(at + RU_REL) != rel || (w != 0 && w != u64::from(width)) {
                continue;
            }
            let n = self.w(at + RU_ACCESSES).fetch_add(1, Ordering::Relaxed) + 1;
            let bus = self.get(at + RU_SIGBUS_AT);
            if bus != 0 && n == bus {
                out.sigbus = true;
                out.rule = Some(i);
            }
            out.delay_ns = out.delay_ns.max(self.get(at + RU_DELAY_NS));
            let op = self.get(at + RU_OP);
            if write || op == OP_NONE {
                continue;
            }
            let k = self.w(at + RU_READS).fetch_add(1, Ordering::Relaxed) + 1;
            if k < self.get(at + RU_FROM).max(1) {
                continue;
            }
            let p = self.get(at + RU_PROB);
            if p != u64::MAX && splitmix(seed ^ (i as u64) << 56 ^ k) >= p {
                continue;
            }
            let x = self.get(at + RU_OPERAND);
            let before = *value;
            *value = mask(
                match op {
                    OP_VALUE => x,
                    OP_SET => *value | x,
                    OP_CLEAR => *value & !x,
                    _ => *value ^ x,
                },
                width,
            );
            if *value != before || op == OP_VALUE {
                out.changed = true;
                out.rule = Some(i);
            }
        }
        out
    }

    /// Counts an access to a mapping bound to no map of the trace.
    pub fn note_unbound(&self) {
        self.w(H_UNBOUND).fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an access single-stepped under replay.
    pub fn note_stepped(&self) {
        self.w(H_STEPPED).fetch_add(1, Ordering::Relaxed);
    }

    /// The next recorded read value of the register at `rel` of `width` bytes of model
    /// map `map` (its last one once all were served), or `None` when the trace never
    /// read it (the caller keeps what the shadow holds).
    #[inline]
    pub fn next_read(&self, map: usize, rel: u64, width: u8) -> Option<u64> {
        let at = self.map_at(map);
        let (regs, n) = (
            self.get(at + M_REGS) as usize,
            self.get(at + M_NREGS) as usize,
        );
        let (mut lo, mut hi) = (0usize, n);
        let key = (rel, u64::from(width));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let ra = regs + mid * REG_W;
            let k = (self.get(ra + R_REL), self.get(ra + R_WIDTH));
            if k == key {
                let nv = self.get(ra + R_NVALS);
                if nv == 0 {
                    return None;
                }
                let c = self.w(ra + R_CURSOR).fetch_add(1, Ordering::Relaxed);
                return Some(self.get(self.get(ra + R_VALS) as usize + c.min(nv - 1) as usize));
            }
            if k < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        None
    }

    fn seq(&self, stream_at: usize, pos: usize) -> (bool, u8, u64, u64) {
        let at = self.get(stream_at + S_SEQ) as usize + pos * SEQ_W;
        let k = self.get(at);
        (
            k & 1 != 0,
            (k >> 8) as u8,
            self.get(at + 1),
            self.get(at + 2),
        )
    }

    fn stream_at(&self, map: usize, s: usize) -> usize {
        self.get(self.map_at(map) + M_STREAMS) as usize + s * STREAM_W
    }

    /// The stream of thread `tid` on model map `map`, bound on its first access (the
    /// first free stream whose first entry is this access, else the first free one).
    fn stream_of(
        &self,
        map: usize,
        tid: u32,
        write: bool,
        width: u8,
        rel: u64,
        value: u64,
    ) -> Option<usize> {
        let key = (map as u64 + 1) << 32 | u64::from(tid);
        let mut slot = hash(key) % THR_N;
        let mut free_slot = None;
        for _ in 0..THR_N {
            let at = THR_AT + slot * THR_W;
            match self.w(at).load(Ordering::Acquire) {
                0 => {
                    free_slot = Some(at);
                    break;
                }
                k if k == key => {
                    let s = self.get(at + 1);
                    return (s != 0).then(|| s as usize - 1);
                }
                _ => slot = (slot + 1) % THR_N,
            }
        }
        let n = self.get(self.map_at(map) + M_NSTREAMS) as usize;
        let claim = |s: usize| {
            self.w(self.stream_at(map, s) + S_CLAIMED)
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        };
        let first_matches = |s: usize| {
            let sa = self.stream_at(map, s);
            if self.get(sa + S_NSEQ) == 0 {
                return false;
            }
            let (w, wd, r, v) = self.seq(sa, 0);
            SeqEntry {
                write: w,
                width: wd,
                rel: r,
                value: v,
                ts_ns: 0,
                pc: 0,
            }
            .matches(write, width, rel, value)
        };
        let found = (0..n)
            .find(|&s| {
                self.get(self.stream_at(map, s) + S_CLAIMED) == 0 && first_matches(s) && claim(s)
            })
            .or_else(|| {
                (0..n).find(|&s| self.get(self.stream_at(map, s) + S_CLAIMED) == 0 && claim(s))
            });
        // Remember the binding (a thread without a stream too, so that it is reported
        // once); the table full: looked up again next time.
        let mut at = free_slot?;
        for _ in 0..THR_N {
            if self
                .w(at)
                .compare_exchange(0, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.w(at + 1)
                    .store(found.map_or(0, |s| s as u64 + 1), Ordering::Relaxed);
                self.w(at).store(key, Ordering::Release);
                break;
            }
            at = THR_AT + ((at - THR_AT) / THR_W + 1) % THR_N * THR_W;
        }
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn diverge(
        &self,
        kind: u64,
        map: usize,
        stream: usize,
        pos: usize,
        write: bool,
        width: u8,
        rel: u64,
        value: u64,
        pc: u64,
        tid: u32,
    ) -> bool {
        self.w(H_DIVERGENCES).fetch_add(1, Ordering::Relaxed);
        if self
            .w(H_FIRST_SET)
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let f = [
            kind,
            map as u64,
            stream as u64,
            pos as u64,
            u64::from(write),
            u64::from(width),
            rel,
            value,
            pc,
            u64::from(tid),
        ];
        for (i, v) in f.into_iter().enumerate() {
            self.w(H_FIRST + i).store(v, Ordering::Relaxed);
        }
        self.w(H_FIRST_DONE).store(1, Ordering::Release);
        true
    }

    /// Checks an access of thread `tid` to model map `map` against the trace: the next
    /// entry of the thread's recorded sequence must be this register, direction, width
    /// and (for a write) value. A read that repeats the read before it (a polling loop
    /// taking more reads) is accepted without moving on, and recorded repeats of the
    /// read before are passed over (a loop taking fewer). The first access that does not
    /// match is a divergence; the stream is not checked after it.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        map: usize,
        tid: u32,
        write: bool,
        width: u8,
        rel: u64,
        value: u64,
        pc: u64,
    ) -> Verdict {
        self.check_at(map, tid, write, width, rel, value, pc).0
    }

    /// A read of thread `tid` of the register at `rel` of `width` bytes of model map
    /// `map`, checked as [`Image::check`] does. Its value is the one the thread's
    /// recorded sequence read there (for a polling loop's extra read: the read before);
    /// else (the thread diverged, or has no sequence) the register's next recorded value
    /// in the order of the whole trace, the last one once all were served. `None`: the
    /// trace never read the register (the caller keeps what the shadow holds).
    pub fn read(
        &self,
        map: usize,
        tid: u32,
        width: u8,
        rel: u64,
        pc: u64,
    ) -> (Option<u64>, Verdict) {
        let (v, at) = self.check_at(map, tid, false, width, rel, 0, pc);
        // The register's own order moves on with every read, so that it is where the
        // program is should its thread diverge later.
        let next = self.next_read(map, rel, width);
        let value = match at.map(|(s, p)| self.seq(self.stream_at(map, s), p)) {
            // An UNKNOWN of the trace has no value: the register's order gives one.
            Some((_, wd, _, v)) if wd != 0 => Some(v),
            _ => next,
        };
        (value, v)
    }

    /// [`Image::check`], with the stream and position of the recorded access this one
    /// was taken for.
    #[allow(clippy::too_many_arguments)]
    fn check_at(
        &self,
        map: usize,
        tid: u32,
        write: bool,
        width: u8,
        rel: u64,
        value: u64,
        pc: u64,
    ) -> (Verdict, Option<(usize, usize)>) {
        let Some(s) = self.stream_of(map, tid, write, width, rel, value) else {
            // Reported once per thread: its binding is remembered without a stream.
            let first = self.diverge(2, map, 0, 0, write, width, rel, value, pc, tid);
            return (Verdict::Diverged { first }, None);
        };
        let sa = self.stream_at(map, s);
        let n = self.get(sa + S_NSEQ) as usize;
        let value = mask(value, width);
        let entry_is = |p: usize| {
            let (w, wd, r, v) = self.seq(sa, p);
            SeqEntry {
                write: w,
                width: wd,
                rel: r,
                value: v,
                ts_ns: 0,
                pc: 0,
            }
            .matches(write, width, rel, value)
        };
        loop {
            if self.get(sa + S_DIVERGED) != 0 {
                self.w(H_UNCHECKED).fetch_add(1, Ordering::Relaxed);
                return (Verdict::Unchecked, None);
            }
            let pos = self.get(sa + S_CURSOR) as usize;
            let mut to = None;
            if pos < n && entry_is(pos) {
                to = Some(pos + 1);
            } else if pos > 0 {
                let (pw, pwd, pr, _) = self.seq(sa, pos - 1);
                if !pw && !write && pwd == width && pr == rel {
                    self.w(H_TOLERATED).fetch_add(1, Ordering::Relaxed);
                    return (Verdict::Match, Some((s, pos - 1)));
                }
                if !pw {
                    let mut p = pos;
                    while p < n && {
                        let (w, wd, r, _) = self.seq(sa, p);
                        !w && wd == pwd && r == pr
                    } {
                        p += 1;
                    }
                    if p != pos && p < n && entry_is(p) {
                        to = Some(p + 1);
                    }
                }
            }
            match to {
                Some(next) => {
                    if self
                        .w(sa + S_CURSOR)
                        .compare_exchange(
                            pos as u64,
                            next as u64,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return (Verdict::Match, Some((s, next - 1)));
                    }
                }
                None => {
                    if self
                        .w(sa + S_DIVERGED)
                        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        let first = self.diverge(1, map, s, pos, write, width, rel, value, pc, tid);
                        return (Verdict::Diverged { first }, None);
                    }
                }
            }
        }
    }

    /// The run's state (after it ended).
    pub fn state(&self) -> RunState {
        let first = (self.w(H_FIRST_DONE).load(Ordering::Acquire) == 1).then(|| {
            let f = |i: usize| self.get(H_FIRST + i);
            Divergence {
                kind: if f(0) == 2 {
                    DivergenceKind::ExtraThread
                } else {
                    DivergenceKind::Mismatch
                },
                map: f(1) as usize,
                stream: f(2) as usize,
                pos: f(3) as usize,
                write: f(4) != 0,
                width: f(5) as u8,
                rel: f(6),
                value: f(7),
                pc: f(8),
                tid: f(9) as u32,
            }
        });
        let maps = (0..self.nmaps())
            .map(|m| {
                let at = self.map_at(m);
                let streams = (0..self.get(at + M_NSTREAMS) as usize)
                    .map(|s| {
                        let sa = self.stream_at(m, s);
                        StreamState {
                            claimed: self.get(sa + S_CLAIMED) != 0,
                            pos: self.get(sa + S_CURSOR) as usize,
                            len: self.get(sa + S_NSEQ) as usize,
                            diverged: self.get(sa + S_DIVERGED) != 0,
                        }
                    })
                    .collect();
                (self.get(at + M_CLAIMED) != 0, streams)
            })
            .collect();
        RunState {
            divergences: self.get(H_DIVERGENCES),
            first,
            maps,
            unbound: self.get(H_UNBOUND),
            stepped: self.get(H_STEPPED),
            unchecked: self.get(H_UNCHECKED),
            tolerated: self.get(H_TOLERATED),
            bound: self.get(H_BOUND),
        }
    }

    /// The trace thread id of stream `s` of model map `map`.
    pub fn stream_tid(&self, map: usize, s: usize) -> u32 {
        self.get(self.stream_at(map, s) + S_TID) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelBuilder;

    fn model() -> Model {
        let mut b = ModelBuilder::new();
        b.map(1, 0x1000, 0x1000);
        b.mark(b"map 1 /dev/x offset 0x0 length 0x1000");
        // STATUS polled: 1, 1, 0; then a write.
        for v in [1, 1, 0] {
            b.access(false, 4, 1, 0x1014, v, 7, 0, 0);
        }
        b.access(true, 4, 1, 0x1010, 5, 7, 0, 0);
        b.finish()
    }

    fn image(bytes: &mut [u8]) -> Image {
        // SAFETY: a live, aligned buffer (the test keeps it).
        unsafe { Image::from_raw(bytes.as_mut_ptr(), bytes.len()) }.unwrap()
    }

    fn aligned(v: Vec<u8>) -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn reads_follow_the_recording_then_hold_and_writes_are_checked() {
        let mut words = aligned(build(&model(), 0, &[]));
        // SAFETY: reinterpreting the words as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8)
        };
        let img = image(bytes);
        assert_eq!(img.bind(3, 0x5000, b"/dev/x", 0, 0), Some(0));
        assert_eq!(img.lookup(3), Some((0, 0x5000)));
        assert_eq!(img.lookup(4), None);
        let vals: Vec<_> = (0..5).map(|_| img.next_read(0, 0x14, 4)).collect();
        assert_eq!(vals, [Some(1), Some(1), Some(0), Some(0), Some(0)]);
        assert_eq!(img.next_read(0, 0x18, 4), None);
        for _ in 0..4 {
            assert_eq!(img.check(0, 100, false, 4, 0x14, 1, 0), Verdict::Match);
        }
        assert_eq!(
            img.check(0, 100, true, 4, 0x10, 6, 0x42),
            Verdict::Diverged { first: true }
        );
        assert_eq!(img.check(0, 100, true, 4, 0x10, 5, 0), Verdict::Unchecked);
        let st = img.state();
        let d = st.first.unwrap();
        assert_eq!((d.pos, d.value, d.rel, d.pc), (3, 6, 0x10, 0x42));
        assert_eq!(st.divergences, 1);
    }

    #[test]
    fn fewer_polls_still_match_and_extra_threads_diverge() {
        let mut words = aligned(build(&model(), 0, &[]));
        // SAFETY: reinterpreting the words as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8)
        };
        let img = image(bytes);
        img.bind(1, 0, b"/dev/x", 0, 0);
        assert_eq!(img.check(0, 1, false, 4, 0x14, 0, 0), Verdict::Match);
        assert_eq!(img.check(0, 1, true, 4, 0x10, 5, 0), Verdict::Match);
        let st = img.state();
        assert_eq!(st.maps[0].1[0].pos, 4);
        assert!(st.first.is_none());
        assert_eq!(
            img.check(0, 2, false, 4, 0x14, 0, 0),
            Verdict::Diverged { first: true }
        );
        assert_eq!(img.state().first.unwrap().kind, DivergenceKind::ExtraThread);
    }

    #[test]
    fn path_rules_and_id_rules_pick_the_map() {
        let rules = [MapRule::Paths(b"/tmp/new".to_vec(), b"/dev/x".to_vec())];
        let mut words = aligned(build(&model(), 0, &rules));
        // SAFETY: reinterpreting the words as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8)
        };
        let img = image(bytes);
        assert_eq!(img.bind(1, 0, b"/tmp/other", 0, 0), None);
        assert_eq!(img.bind(2, 0, b"/tmp/new", 0, 0), Some(0));
        let rules = [MapRule::Ids(7, 1)];
        let mut words = aligned(build(&model(), 0, &rules));
        // SAFETY: reinterpreting the words as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8)
        };
        let img = image(bytes);
        assert_eq!(img.bind(7, 0, b"/elsewhere", 0x1000, 0), Some(0));
    }
}
