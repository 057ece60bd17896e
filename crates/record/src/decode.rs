//! Ring records → format events, and the time-ordered merge of all rings.

use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, VecDeque};

use mmio_trace_format::text::escape_marker;
use mmio_trace_format::{
    Access, Direction, Event, Map, Mark, Stream, StringAccesses, Unknown, Unmap, MAX_WIDTH,
};
use mmio_trace_ring::{Drained, Kind, Record, MAX_MARK, MAX_STR_VALUES};

/// What the merge hands out: an event, or one string instruction's run of accesses
/// (which a binary log keeps as one record; [`Out::Strings`] stands for its accesses).
pub(crate) enum Out {
    Event(Event),
    Strings(StringAccesses),
}

/// How many distinct unmatched files the recorder keeps (by path hash); further ones are
/// only counted.
pub(crate) const UNMATCHED_KEPT: usize = 64;

/// A file the program mapped shared that no device rule matched (so it was not traced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmatchedFile {
    /// Its canonical path (as `/proc/self/fd` names it).
    pub path: Vec<u8>,
    /// How many times it was mapped shared, by every traced process together.
    pub times: u64,
    /// `Some('c')`: a character device; `Some('b')`: a block device.
    pub device: Option<char>,
}

/// One event as drained, not yet resolved against the mapping table.
#[derive(Clone, Debug)]
pub(crate) struct RawEvent {
    pub ts: u64,
    pub tid: u32,
    /// The process of the ring (0 for the recorder's own marks).
    pub pid: u32,
    pub first: Record,
    pub extra: Vec<Record>,
}

/// A mapping as the recorder knows it (for resolving accesses).
#[derive(Clone, Copy, Debug)]
struct MapInfo {
    id: u64,
    virt: u64,
    len: u64,
    phys: u64,
    /// The process that mapped it.
    pid: u32,
}

impl MapInfo {
    fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.virt) < self.len
    }
}

/// Merges per-ring event queues by timestamp and turns them into format events.
pub(crate) struct Merger {
    queues: Vec<VecDeque<RawEvent>>,
    heads: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    in_heap: Vec<bool>,
    /// Live mappings by the low 16 bits of their id (what access records carry): a short
    /// list each, since ids 65,536 apart share the bits; an access picks the mapping whose
    /// virtual range holds its address (same process first).
    maps: Vec<Vec<MapInfo>>,
    /// Per low-16 value, the last mapping removed by an `UNMAP`: the fallback for an access
    /// no live mapping holds (a fork child still using a mapping its parent unmapped).
    gone: Vec<Option<MapInfo>>,
    start_ns: u64,
    /// Everything before this time has been handed out.
    done_until: u64,
    /// Events turned out so far.
    pub emitted: u64,
    /// Exec notes: (pid, time as the producer took it, path; `None`: the exec failed).
    execs: Vec<(u32, u64, Option<Vec<u8>>)>,
    /// Attach notes: (pid, time as the producer took it).
    attaches: Vec<(u32, u64)>,
    /// Shared file mappings no device rule matched, by path hash, in the order first told.
    unmatched: Vec<UnmatchedFile>,
    /// Index into `unmatched` by path hash.
    unmatched_at: std::collections::HashMap<u64, usize>,
    /// Hashes of further such files, beyond the first [`UNMATCHED_KEPT`] (not kept).
    unmatched_more: std::collections::HashSet<u64>,
    /// `kernel cannot reach` markers from traced processes: system calls that could not
    /// hand the kernel device memory, which failed with `EFAULT`.
    unreached: u64,
    /// What the hot-site patchers said, and accesses by path.
    patching: Patching,
    /// The time of the last event handed out, for the closing markers.
    last_ts: u64,
    /// Whether the closing warnings were given (by the final [`Merger::emit`]).
    closed: bool,
}

/// What the traced processes' hot-site patchers did (from their `Patch` notes) and how
/// accesses were recorded.
#[derive(Clone, Debug, Default)]
pub struct Patching {
    /// Sites patched (over all processes; a site patched in a parent and again in its
    /// fork child counts once per process that patched it).
    pub patched: u64,
    /// Accesses written by trampolines.
    pub trampolines: u64,
    /// Accesses written by the trap path.
    pub traps: u64,
    /// Hot sites that could not be patched (the first 64).
    pub refused: Vec<RefusedSite>,
    /// Trap-path accesses by (pid, pc).
    by_site: std::collections::HashMap<(u32, u64), u64, SiteHash>,
    /// Why patching was off in some process (each reason once).
    pub off: Vec<String>,
    /// Objects the processes loaded: (pid, start, end, bias, path).
    objects: Vec<(u32, u64, u64, u64, String)>,
}

impl Patching {
    /// Keeps an `object pid P 0xS-0xE bias 0xB build ID PATH` marker's object.
    fn note_object(&mut self, text: &[u8]) {
        let t = String::from_utf8_lossy(text);
        let w: Vec<&str> = t.split(' ').collect();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        if w.len() < 8 || self.objects.len() >= 4096 {
            return;
        }
        let (Ok(pid), Some((s, e))) = (w[2].parse::<u32>(), w[3].split_once('-')) else {
            return;
        };
        let (Some(s), Some(e), Some(b)) = (hex(s), hex(e), hex(w[5])) else {
            return;
        };
        let path = w[8..].join(" ");
        self.objects.push((pid, s, e, b, path));
    }

    /// `PATH+0xOFF` for `pc` of `pid`, from the objects it loaded.
    fn place(&self, pid: u32, pc: u64) -> Option<String> {
        self.objects
            .iter()
            .rev()
            .find(|o| o.0 == pid && o.1 <= pc && pc < o.2)
            .map(|o| format!("{}+{:#x}", o.4, pc.wrapping_sub(o.3)))
    }
}

/// A multiply-shift hash for (pid, pc) keys: the per-site trap counts are updated for
/// every trap-path access the recorder sees, where SipHash would cost more than the rest.
#[derive(Clone, Copy, Debug, Default)]
pub struct SiteHash;

impl std::hash::BuildHasher for SiteHash {
    type Hasher = SiteHasher;
    fn build_hasher(&self) -> SiteHasher {
        SiteHasher(0)
    }
}

/// The hasher of [`SiteHash`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SiteHasher(u64);

impl std::hash::Hasher for SiteHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A hot site that stayed on the trap path.
#[derive(Clone, Debug)]
pub struct RefusedSite {
    /// The process.
    pub pid: u32,
    /// The instruction's address.
    pub pc: u64,
    /// Where it is: `OBJECT+0xOFFSET` (the object's path), when known.
    pub place: Option<String>,
    /// Why it could not be patched.
    pub reason: String,
    /// Traps taken there.
    pub traps: u64,
}

impl Merger {
    /// A merger for `nqueues` sources (rings, plus one for the recorder's own marks).
    pub fn new(nqueues: usize, start_ns: u64) -> Merger {
        Merger {
            queues: (0..nqueues).map(|_| VecDeque::new()).collect(),
            heads: BinaryHeap::new(),
            in_heap: vec![false; nqueues],
            maps: vec![Vec::new(); 1 << 16],
            gone: vec![None; 1 << 16],
            start_ns,
            done_until: 0,
            emitted: 0,
            execs: Vec::new(),
            attaches: Vec::new(),
            unmatched: Vec::new(),
            unmatched_at: std::collections::HashMap::new(),
            unmatched_more: std::collections::HashSet::new(),
            unreached: 0,
            patching: Patching::default(),
            last_ts: 0,
            closed: false,
        }
    }

    fn push(&mut self, q: usize, e: RawEvent) {
        if !self.in_heap[q] && self.queues[q].is_empty() {
            self.heads.push(std::cmp::Reverse((e.ts, q)));
            self.in_heap[q] = true;
        }
        self.queues[q].push_back(e);
    }

    /// Queues everything one ring yielded.
    pub fn add(&mut self, d: Drained<'_>) {
        let q = d.ring as usize;
        let mut i = 0;
        while i < d.records.len() {
            let first = d.records[i];
            let n = first.extra();
            let end = (i + 1 + n).min(d.records.len());
            let extra = d.records[i + 1..end].to_vec();
            self.push(
                q,
                RawEvent {
                    // Never before what was handed out already: the log stays monotonic
                    // (an event published with a time it took before the watermark passed
                    // it, or a TSC time whose conversion moved by a few ns since).
                    ts: first.ts().max(self.done_until),
                    tid: d.tid,
                    pid: d.pid,
                    first,
                    extra,
                },
            );
            i = end;
        }
    }

    /// Queues a marker from the recorder itself (queue `q`, the last one), timed `ts` or,
    /// if that part of the trace is already written, just after it; `full`: the length
    /// of the text the sender had, if it cut it.
    pub fn add_mark(&mut self, q: usize, ts: u64, text: &[u8], full: u64) {
        let ts = ts.max(self.done_until);
        let mut extra = Vec::new();
        // Cut as a ring cuts it, whole length kept.
        for c in text[..text.len().min(MAX_MARK)].chunks(32) {
            extra.push(Record::data(c));
        }
        let full = full.max(text.len() as u64);
        let first = Record::new(ts, 0, full, 0, 0, Kind::Mark);
        self.push(
            q,
            RawEvent {
                ts,
                tid: 0,
                pid: 0,
                first,
                extra,
            },
        );
    }

    /// Hands out, in time order, every queued event older than `watermark` (all if `None`),
    /// string runs as their accesses.
    pub fn emit(&mut self, watermark: Option<u64>, mut out: impl FnMut(Event)) {
        self.emit_out(watermark, |o| match o {
            Out::Event(e) => out(e),
            Out::Strings(s) => s.accesses().for_each(|a| out(Event::Access(a))),
        })
    }

    /// As [`Merger::emit`], with string runs handed out whole.
    pub fn emit_out(&mut self, watermark: Option<u64>, mut out: impl FnMut(Out)) {
        self.done_until = self.done_until.max(watermark.unwrap_or(u64::MAX));
        loop {
            let Some(mut top) = self.heads.peek_mut() else {
                break;
            };
            let std::cmp::Reverse((ts, q)) = *top;
            if watermark.is_some_and(|w| ts >= w) {
                break;
            }
            let e = self.queues[q]
                .pop_front()
                .expect("queue in heap is non-empty");
            // Re-key the queue's heap entry in place (cheaper than pop + push).
            match self.queues[q].front() {
                Some(next) => {
                    *top = std::cmp::Reverse((next.ts, q));
                    drop(top);
                }
                None => {
                    PeekMut::pop(top);
                    self.in_heap[q] = false;
                }
            }
            if e.first.kind() == Some(Kind::Str) {
                if let Some(s) = self.strings(&e) {
                    self.last_ts = self.last_ts.max(s.ts_ns);
                    self.emitted += s.accesses_len();
                    // A string instruction is always the trap path's.
                    self.patching.traps += s.accesses_len();
                    out(Out::Strings(s));
                }
                continue;
            }
            if let Some(ev) = self.resolve(&e) {
                if let (Event::Mark(m), true) = (&ev, e.pid != 0) {
                    if m.text.starts_with(b"kernel cannot reach ") {
                        self.unreached += 1;
                    }
                }
                self.last_ts = self.last_ts.max(ev.ts_ns().unwrap_or(0));
                self.emitted += 1;
                out(Out::Event(ev));
            }
        }
        if watermark.is_none() && !self.closed {
            self.closed = true;
            self.closing_warnings(&mut out);
        }
    }

    /// A [`Kind::Str`] event as the run of accesses it stands for; `None` if it is
    /// damaged (it never is from a tracer of this build).
    fn strings(&mut self, e: &RawEvent) -> Option<StringAccesses> {
        let r = &e.first;
        let width = r.width();
        let count = u64::from(r.0[2] as u32);
        let flags = r.0[2] >> 32;
        if !matches!(width, 1 | 2 | 4 | 8) || count == 0 {
            return None;
        }
        let dir = |write| {
            if write {
                Direction::Write
            } else {
                Direction::Read
            }
        };
        let (map_id, phys) = self.map_of(r, e.pid);
        let first = Stream {
            dir: dir(flags & Record::STR_WRITE != 0),
            map_id,
            phys,
        };
        let mut data = e.extra.iter();
        let second = if flags & Record::STR_SECOND != 0 {
            let d = data.next()?;
            // The second stream's word 1, resolved as an access's.
            let w = Record::new(0, d.0[0], 0, 0, 0, Kind::Write);
            let (map_id, phys) = self.map_of(&w, e.pid);
            Some(Stream {
                dir: Direction::Write,
                map_id,
                phys,
            })
        } else {
            None
        };
        let same = flags & Record::STR_SAME != 0;
        let n = if same {
            usize::from(width)
        } else {
            count as usize * usize::from(width)
        };
        if n > MAX_STR_VALUES {
            return None;
        }
        let mut values = Vec::with_capacity(n.next_multiple_of(32));
        for d in data {
            values.extend_from_slice(&d.bytes());
        }
        if values.len() < n {
            return None;
        }
        values.truncate(n);
        Some(StringAccesses {
            ts_ns: self.rel(e.ts),
            pid: e.tid,
            pc: r.pc(),
            width,
            count,
            down: flags & Record::STR_DOWN != 0,
            first,
            second,
            values,
            same,
        })
    }

    /// At the end of the recording: each exec'd image that never attached, in a marker
    /// and on stderr, and how many system calls could not be handed device memory.
    fn closing_warnings(&mut self, out: &mut impl FnMut(Out)) {
        for (pid, path) in self.untraced_images() {
            let text = format!(
                "process {pid} exec'd {}, which never attached to the recording (statically \
                 linked, set-uid, not a program for this machine, or it could not reach the \
                 recorder): its accesses are not in the log",
                String::from_utf8_lossy(&path)
            );
            eprintln!("mmio-trace: warning: {text}");
            self.emitted += 1;
            out(Out::Event(Event::Mark(Mark {
                ts_ns: self.last_ts,
                text: text.into_bytes(),
            })));
        }
        if self.unreached > 0 {
            eprintln!(
                "mmio-trace: warning: {} system calls could not be handed device memory (a \
                 mapping without an alias, or a buffer over too many pieces) and failed with \
                 EFAULT (see the `kernel cannot reach` markers)",
                self.unreached
            );
        }
    }

    /// The images a traced process exec'd that never attached: (pid, path). An exec is
    /// settled by the first note of its pid after it: an attach, a failure, or another
    /// exec (which only the old image could have made). Or by counting: only exec'd
    /// images attach, and once an untraced image runs its pid notes no more execs, so
    /// the n-th exec of a pid (less its failures) attached if the pid has n attaches.
    /// That holds whatever the times say: `posix_spawn`'s note, written once the child's
    /// pid is known, may be merged after the child's attach with a time raised past it.
    pub fn untraced_images(&self) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        for (pid, ts, path) in &self.execs {
            let Some(path) = path else { continue };
            let before = |with_path: bool| {
                self.execs
                    .iter()
                    .filter(|(p, t, q)| p == pid && t < ts && q.is_some() == with_path)
                    .count()
            };
            let rank = (1 + before(true)).saturating_sub(before(false));
            let attaches = self.attaches.iter().filter(|&&(p, _)| p == *pid).count();
            let settled = self.attaches.iter().any(|&(p, t)| p == *pid && t >= *ts)
                || self.execs.iter().any(|(p, t, _)| p == pid && t > ts)
                || rank <= attaches;
            if !settled {
                out.push((*pid, path.clone()));
            }
        }
        out
    }

    /// The files the program mapped shared that no device rule matched (not traced), in
    /// the order first mapped (at most `UNMATCHED_KEPT`), and how many more there were.
    pub fn unmatched(&self) -> (Vec<UnmatchedFile>, u64) {
        let known: Vec<_> = self
            .unmatched
            .iter()
            .filter(|f| !f.path.is_empty())
            .cloned()
            .collect();
        (known, self.unmatched_more.len() as u64)
    }

    /// What hot-site patching did (each refused site with the traps logged at it).
    pub fn patching(&self) -> Patching {
        let mut p = self.patching.clone();
        for s in &mut p.refused {
            s.traps = p.by_site.get(&(s.pid, s.pc)).copied().unwrap_or(0);
        }
        p.by_site.clear();
        p
    }

    fn note_patch(&mut self, e: &RawEvent) {
        let r = &e.first;
        let w2 = r.0[2];
        let len = ((w2 >> 8) as u16 as usize).min(512);
        let mut why = Vec::with_capacity(len);
        for d in &e.extra {
            why.extend_from_slice(&d.bytes());
        }
        why.truncate(len);
        let why = String::from_utf8_lossy(&why).into_owned();
        let pc = r.0[1];
        let p = &mut self.patching;
        match w2 & 0xff {
            0 => p.patched += 1,
            // A trampoline's voided reservation (its access was made again).
            3 => {}
            1 => {
                if p.refused.len() < 64 && !p.refused.iter().any(|s| s.pid == e.pid && s.pc == pc) {
                    let place = p.place(e.pid, pc);
                    p.refused.push(RefusedSite {
                        pid: e.pid,
                        pc,
                        place,
                        reason: why,
                        traps: 0,
                    });
                }
            }
            _ => {
                if !p.off.contains(&why) {
                    p.off.push(why);
                }
            }
        }
    }

    fn note_unmatched(&mut self, e: &RawEvent) {
        let r = &e.first;
        let hash = r.0[1];
        let len = (r.0[2] as u32 as usize).min(MAX_MARK);
        let more = r.0[2] >> 32;
        let i = match self.unmatched_at.get(&hash) {
            Some(&i) => i,
            None if self.unmatched.len() < UNMATCHED_KEPT => {
                self.unmatched.push(UnmatchedFile {
                    path: Vec::new(),
                    times: 0,
                    device: None,
                });
                self.unmatched_at.insert(hash, self.unmatched.len() - 1);
                self.unmatched.len() - 1
            }
            None => {
                self.unmatched_more.insert(hash);
                return;
            }
        };
        let f = &mut self.unmatched[i];
        f.times = f.times.saturating_add(more);
        if f.path.is_empty() && len > 0 {
            for d in &e.extra {
                f.path.extend_from_slice(&d.bytes());
            }
            f.path.truncate(len);
            f.device = match r.width() {
                1 => Some('c'),
                2 => Some('b'),
                _ => None,
            };
        }
    }

    fn rel(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.start_ns)
    }

    fn map_of(&self, r: &Record, pid: u32) -> (i64, u64) {
        let low = r.map_low() as usize;
        let addr = r.addr();
        let live = &self.maps[low];
        let m = live
            .iter()
            .rev()
            .find(|m| m.pid == pid && m.contains(addr))
            .or_else(|| live.iter().rev().find(|m| m.contains(addr)))
            .or(self.gone[low].as_ref().filter(|m| m.contains(addr)))
            .or(live.last())
            .or(self.gone[low].as_ref());
        match m {
            Some(m) => (
                m.id as i64,
                m.phys.wrapping_add(r.addr().wrapping_sub(m.virt)),
            ),
            None => (-1, r.addr()),
        }
    }

    fn resolve(&mut self, e: &RawEvent) -> Option<Event> {
        let r = &e.first;
        let ts_ns = self.rel(e.ts);
        Some(match r.kind()? {
            Kind::Read | Kind::Write | Kind::ReadWide | Kind::WriteWide => {
                if r.via_trampoline() {
                    self.patching.trampolines += 1;
                } else {
                    // Per site too, for the hot sites that stay unpatched (a trap costs
                    // microseconds; a map update is nothing next to it).
                    self.patching.traps += 1;
                    *self.patching.by_site.entry((e.pid, r.pc())).or_insert(0) += 1;
                }
                let (map_id, phys) = self.map_of(r, e.pid);
                let dir = match r.kind()? {
                    Kind::Read | Kind::ReadWide => Direction::Read,
                    _ => Direction::Write,
                };
                let mut a = if r.width() as usize <= 8 {
                    Access::new(dir, r.width(), ts_ns, map_id, phys, r.value())
                } else {
                    let mut bytes = [0u8; MAX_WIDTH];
                    for (k, d) in e.extra.iter().take(2).enumerate() {
                        bytes[k * 32..k * 32 + 32].copy_from_slice(&d.bytes());
                    }
                    let width = (r.width() as usize).clamp(9, MAX_WIDTH);
                    Access::from_bytes(dir, ts_ns, map_id, phys, &bytes[..width])
                };
                a.pc = r.pc();
                a.pid = e.tid;
                Event::Access(a)
            }
            Kind::Map => {
                let d = e.extra.first()?;
                let (phys, id) = (d.0[0], d.0[1]);
                let m = MapInfo {
                    id,
                    virt: r.0[1],
                    len: r.0[2],
                    phys,
                    pid: e.pid,
                };
                let list = &mut self.maps[id as u16 as usize];
                // A MAP of an id already listed (a fork child's copy) replaces it.
                list.retain(|o| o.id != id);
                list.push(m);
                Event::Map(Map {
                    ts_ns,
                    id: id as i64,
                    phys,
                    virt: r.0[1],
                    len: r.0[2],
                    pc: r.pc(),
                    pid: e.tid,
                })
            }
            Kind::Unmap => {
                let id = r.0[2];
                let low = id as u16 as usize;
                if let Some(k) = self.maps[low].iter().position(|m| m.id == id) {
                    self.gone[low] = Some(self.maps[low].remove(k));
                }
                Event::Unmap(Unmap {
                    ts_ns,
                    id: id as i64,
                    pc: r.pc(),
                    pid: e.tid,
                })
            }
            Kind::Mark => {
                let full = r.0[2];
                let mut text = Vec::new();
                for d in &e.extra {
                    text.extend_from_slice(&d.bytes());
                }
                text.truncate(full.min(MAX_MARK as u64) as usize);
                if text.starts_with(b"object pid ") {
                    self.patching.note_object(&text);
                }
                let mut text = escape_marker(&text);
                if full > MAX_MARK as u64 {
                    text.extend_from_slice(crate::marks::cut_note(full).as_bytes());
                }
                Event::Mark(Mark { ts_ns, text })
            }
            Kind::Unknown => {
                let (map_id, phys) = self.map_of(r, e.pid);
                let b = r.value().to_le_bytes();
                Event::Unknown(Unknown {
                    ts_ns,
                    map_id,
                    phys,
                    opcode: [b[0], b[1], b[2]],
                    pc: r.pc(),
                    pid: e.tid,
                })
            }
            Kind::Kernel => {
                let (map_id, phys) = self.map_of(r, e.pid);
                let call = Kind::KERNEL_CALLS
                    .get(r.width() as usize)
                    .copied()
                    .unwrap_or("syscall");
                Event::Kernel(mmio_trace_format::KernelAccess {
                    ts_ns,
                    dir: if r.value() >> 63 != 0 {
                        Direction::Write
                    } else {
                        Direction::Read
                    },
                    len: (r.value() & ((1 << 48) - 1)).max(1),
                    map_id,
                    phys,
                    call: call.as_bytes().to_vec(),
                    pid: e.tid,
                })
            }
            Kind::Exec => {
                let pid = r.0[1] as u32;
                let path = (r.width() == 0).then(|| {
                    let mut text = Vec::new();
                    for d in &e.extra {
                        text.extend_from_slice(&d.bytes());
                    }
                    text.truncate(r.0[2] as usize);
                    text
                });
                // The producers' own times (the recording's clock, before conversion):
                // the merge may raise a late note's time past the attach that followed it.
                self.execs.push((pid, r.ts(), path));
                return None;
            }
            Kind::Attach => {
                self.attaches.push((r.0[1] as u32, r.ts()));
                return None;
            }
            Kind::Unmatched => {
                self.note_unmatched(e);
                return None;
            }
            Kind::Patch => {
                self.note_patch(e);
                return None;
            }
            // Handed out by `emit_out` before it gets here.
            Kind::Data | Kind::Str => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(ts: u64, virt: u64, len: u64, phys: u64, id: u64) -> [Record; 2] {
        [
            Record::new(ts, virt, len, 0, 0, Kind::Map),
            Record([phys, id, 0, 0]),
        ]
    }

    fn read(ts: u64, addr: u64, id: u64) -> Record {
        Record::new(
            ts,
            Record::access_word(addr, id),
            0x77,
            0x40_0000,
            4,
            Kind::Read,
        )
    }

    fn unmap(ts: u64, id: u64) -> Record {
        Record::new(ts, 0, id, 0, 0, Kind::Unmap)
    }

    /// (map id, phys) of every access the merger turns out.
    fn resolve(records: &[Record]) -> Vec<(i64, u64)> {
        let mut m = Merger::new(2, 0);
        m.add(Drained {
            ring: 0,
            pid: 10,
            tid: 10,
            records,
        });
        let mut out = Vec::new();
        m.emit(None, |e| {
            if let Event::Access(a) = e {
                out.push((a.map_id, a.phys));
            }
        });
        out
    }

    fn exec(ts: u64, pid: u64, path: &[u8]) -> Vec<Record> {
        let mut v = vec![Record::new(ts, pid, path.len() as u64, 0, 0, Kind::Exec)];
        v.extend(path.chunks(32).map(Record::data));
        v
    }

    fn merged(records: &[Record]) -> (Merger, Vec<Event>) {
        let mut m = Merger::new(2, 0);
        m.add(Drained {
            ring: 0,
            pid: 10,
            tid: 11,
            records,
        });
        let mut out = Vec::new();
        m.emit(None, |e| out.push(e));
        (m, out)
    }

    #[test]
    fn an_exec_no_attach_followed_is_an_untraced_image() {
        let mut r = Vec::new();
        // 20 exec'd a traced image; 21 a static one (a path longer than one data record);
        // 22's exec failed; 23 exec'd twice (the first one failed without a note: only
        // the old image could have made the second); 25 is a spawned child whose note,
        // timed before the spawn, precedes its attach.
        r.extend(exec(1, 20, b"/bin/traced"));
        r.push(Record::new(2, 20, 0, 0, 0, Kind::Attach));
        let long = b"/a/static/program/whose/path/is/longer/than/32/bytes";
        r.extend(exec(3, 21, long));
        r.extend(exec(4, 22, b"/nonexistent"));
        r.push(Record::new(5, 22, 0, 0, 1, Kind::Exec));
        r.extend(exec(6, 23, b"/first"));
        r.extend(exec(7, 23, b"/second"));
        r.extend(exec(8, 25, b"/spawned"));
        r.push(Record::new(9, 25, 0, 0, 0, Kind::Attach));
        // 26 is a spawned child whose note was merged after its attach, with a later
        // time; its image then exec'd an untraced one (its second exec, one attach).
        r.push(Record::new(10, 26, 0, 0, 0, Kind::Attach));
        r.extend(exec(11, 26, b"/late"));
        r.extend(exec(12, 26, b"/static"));
        // 27: the same late note, and nothing after it.
        r.push(Record::new(13, 27, 0, 0, 0, Kind::Attach));
        r.extend(exec(14, 27, b"/late"));
        let (m, out) = merged(&r);
        assert_eq!(
            m.untraced_images(),
            vec![
                (21, long.to_vec()),
                (23, b"/second".to_vec()),
                (26, b"/static".to_vec())
            ]
        );
        // The notes are no events; the final emit names each untraced image in a marker.
        let marks: Vec<_> = out
            .iter()
            .map(|e| match e {
                Event::Mark(m) => (m.ts_ns, String::from_utf8_lossy(&m.text).into_owned()),
                e => panic!("{e:?}"),
            })
            .collect();
        let says = |pid: u32, path: &str| {
            format!(
                "process {pid} exec'd {path}, which never attached to the recording \
                 (statically linked, set-uid, not a program for this machine, or it could \
                 not reach the recorder): its accesses are not in the log"
            )
        };
        assert_eq!(
            marks,
            vec![
                (0, says(21, std::str::from_utf8(long).unwrap())),
                (0, says(23, "/second")),
                (0, says(26, "/static"))
            ]
        );
    }

    /// A `Kind::Str` event: first address word, optional second, flags, values.
    #[allow(clippy::too_many_arguments)]
    fn string(
        ts: u64,
        first: u64,
        second: Option<u64>,
        width: u8,
        count: u32,
        flags: u64,
        values: &[u8],
    ) -> Vec<Record> {
        let mut f = flags;
        if second.is_some() {
            f |= Record::STR_SECOND;
        }
        let w2 = u64::from(count) | f << 32;
        let mut v = vec![Record::new(ts, first, w2, 0x401000, width, Kind::Str)];
        v.extend(second.map(|s| Record([s, 0, 0, 0])));
        v.extend(values.chunks(32).map(Record::data));
        assert_eq!(v[0].extra(), v.len() - 1);
        v
    }

    #[test]
    fn string_runs_resolve_and_expand_to_their_accesses() {
        let mut r = Vec::new();
        r.extend(map(1, 0x10000, 0x2000, 0x8000, 3));
        r.extend(map(2, 0x20000, 0x1000, 0x100, 4));
        // REP STOSQ of 100 elements of one value, descending.
        r.extend(string(
            5,
            Record::access_word(0x10800, 3),
            None,
            8,
            100,
            Record::STR_WRITE | Record::STR_SAME | Record::STR_DOWN,
            &7u64.to_le_bytes(),
        ));
        // REP MOVSW from map 3 to map 4: read, then write of the same value.
        let vals: Vec<u8> = (0..40).collect();
        r.extend(string(
            6,
            Record::access_word(0x10010, 3),
            Some(Record::access_word(0x20020, 4)),
            2,
            20,
            0,
            &vals,
        ));
        let (m, out) = merged(&r);
        let acc: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) => Some((a.dir, a.map_id, a.phys, a.value, a.pc, a.pid)),
                _ => None,
            })
            .collect();
        assert_eq!(acc.len(), 100 + 40);
        assert_eq!(m.emitted as usize, 2 + 140);
        use Direction::{Read as R, Write as W};
        for (k, a) in acc[..100].iter().enumerate() {
            assert_eq!(*a, (W, 3, 0x8800 - 8 * k as u64, 7, 0x401000, 11));
        }
        for k in 0..20u64 {
            let v = u64::from(u16::from_le_bytes([2 * k as u8, 2 * k as u8 + 1]));
            assert_eq!(
                acc[100 + 2 * k as usize],
                (R, 3, 0x8010 + 2 * k, v, 0x401000, 11)
            );
            assert_eq!(
                acc[101 + 2 * k as usize],
                (W, 4, 0x120 + 2 * k, v, 0x401000, 11)
            );
        }
        // Handed out whole to a writer.
        let mut m = Merger::new(2, 0);
        m.add(Drained {
            ring: 0,
            pid: 10,
            tid: 11,
            records: &r,
        });
        let mut runs = vec![];
        m.emit_out(None, |o| {
            if let Out::Strings(s) = o {
                runs.push((s.count, s.same, s.down, s.second.is_some()));
            }
        });
        assert_eq!(
            runs,
            vec![(100, true, true, false), (20, false, false, true)]
        );
    }

    #[test]
    fn damaged_string_runs_are_dropped() {
        let mut r = Vec::new();
        r.extend(map(1, 0x10000, 0x2000, 0x8000, 3));
        // Width 3, count 0: no accesses.
        r.push(Record::new(5, 0x10000, 1, 0, 3, Kind::Str));
        r.push(Record::data(&[0; 32]));
        r.push(Record::new(6, 0x10000, 0, 0, 1, Kind::Str));
        let (_, out) = merged(&r);
        assert!(!out.iter().any(|e| matches!(e, Event::Access(_))));
    }

    #[test]
    fn kernel_records_resolve_to_map_and_physical_address() {
        let mut r = Vec::new();
        r.extend(map(1, 0x10000, 0x2000, 0x8000, 3));
        let call = Kind::KERNEL_CALLS
            .iter()
            .position(|&c| c == "recvmsg")
            .unwrap() as u8;
        r.push(Record::new(
            2,
            Record::access_word(0x11ff0, 3),
            16 | 1 << 63,
            0,
            call,
            Kind::Kernel,
        ));
        r.push(Record::new(
            3,
            Record::access_word(0x10040, 3),
            64,
            0,
            1,
            Kind::Kernel,
        ));
        let (_, out) = merged(&r);
        assert_eq!(
            out[1..],
            [
                Event::Kernel(mmio_trace_format::KernelAccess {
                    ts_ns: 2,
                    dir: Direction::Write,
                    len: 16,
                    map_id: 3,
                    phys: 0x9ff0,
                    call: b"recvmsg".to_vec(),
                    pid: 11,
                }),
                Event::Kernel(mmio_trace_format::KernelAccess {
                    ts_ns: 3,
                    dir: Direction::Read,
                    len: 64,
                    map_id: 3,
                    phys: 0x8040,
                    call: b"write".to_vec(),
                    pid: 11,
                }),
            ]
        );
    }

    #[test]
    fn map_ids_sharing_their_low_16_bits_resolve_by_address() {
        let mut r = Vec::new();
        r.extend(map(1, 0x10000, 0x1000, 0x0, 1));
        // 65,535 short-lived mappings in between would go here; ids wrap to the same bits:
        r.extend(map(2, 0x20000, 0x1000, 0x4000, 65537));
        r.push(read(3, 0x10004, 1));
        r.push(read(4, 0x20008, 65537));
        r.push(unmap(5, 65537));
        r.extend(map(6, 0x30000, 0x2000, 0x8000, 131073));
        r.push(read(7, 0x10004, 1));
        r.push(read(8, 0x31000, 131073));
        r.push(unmap(9, 1));
        // No live mapping holds it: the last unmapped one with these bits (a fork child
        // using its copy of a mapping its parent unmapped).
        r.push(read(10, 0x10008, 1));
        assert_eq!(
            resolve(&r),
            vec![
                (1, 0x4),
                (65537, 0x4008),
                (1, 0x4),
                (131073, 0x9000),
                (1, 0x8)
            ]
        );
    }

    fn unmatched(ts: u64, hash: u64, path: &[u8], more: u64, width: u8) -> Vec<Record> {
        let w2 = path.len() as u64 | more << 32;
        let mut v = vec![Record::new(ts, hash, w2, 0, width, Kind::Unmatched)];
        v.extend(path.chunks(32).map(Record::data));
        v
    }

    #[test]
    fn unmatched_notes_add_up_by_path_hash_and_are_no_events() {
        let long = b"/sys/devices/pci0000:00/0000:00:02.0/resource2_wc";
        let mut r = Vec::new();
        // A count for hash 7 before its path (another thread's note came first).
        r.extend(unmatched(1, 7, b"", 1, 0));
        r.extend(unmatched(2, 7, b"/dev/foo0", 1, 1));
        r.extend(unmatched(3, 9, long, 1, 0));
        r.extend(unmatched(4, 7, b"", 2, 0));
        r.extend(unmatched(5, 11, b"/dev/sdz", 1, 2));
        // Sent again (a full table, or after an exec): counted, not listed twice.
        r.extend(unmatched(6, 9, long, 1, 0));
        let (m, out) = merged(&r);
        assert!(out.is_empty(), "{out:?}");
        let (files, more) = m.unmatched();
        let f = |p: &[u8], times, device| UnmatchedFile {
            path: p.to_vec(),
            times,
            device,
        };
        assert_eq!(
            files,
            vec![
                f(b"/dev/foo0", 4, Some('c')),
                f(long, 2, None),
                f(b"/dev/sdz", 1, Some('b')),
            ]
        );
        assert_eq!(more, 0);
    }

    #[test]
    fn unmatched_files_beyond_those_kept_are_only_counted() {
        let mut r = Vec::new();
        for h in 1..=UNMATCHED_KEPT as u64 + 5 {
            r.extend(unmatched(h, h, format!("/f{h}").as_bytes(), 1, 0));
        }
        // Another note of a file not kept is no second one.
        r.extend(unmatched(1000, UNMATCHED_KEPT as u64 + 1, b"", 3, 0));
        let (m, _) = merged(&r);
        let (files, more) = m.unmatched();
        assert_eq!(files.len(), UNMATCHED_KEPT);
        assert_eq!(files[0].path, b"/f1");
        assert_eq!(more, 5);
    }
}
