//! Ring records → format events, and the time-ordered merge of all rings.

use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, VecDeque};

use mmio_trace_format::text::escape_marker;
use mmio_trace_format::{Access, Direction, Event, Map, Mark, Unknown, Unmap, MAX_WIDTH};
use mmio_trace_ring::{Drained, Kind, Record, MAX_MARK};

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
                    ts: first.ts(),
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

    /// Hands out, in time order, every queued event older than `watermark` (all if `None`).
    pub fn emit(&mut self, watermark: Option<u64>, mut out: impl FnMut(Event)) {
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
            if let Some(ev) = self.resolve(&e) {
                self.emitted += 1;
                out(ev);
            }
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
            Kind::Data => return None,
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
}
