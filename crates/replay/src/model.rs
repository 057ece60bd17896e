//! What a trace says about its device: per map, each register's read values in order
//! and each thread's sequence of accesses.

use std::collections::BTreeMap;

/// One access of a thread's recorded sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqEntry {
    /// A write (else a read).
    pub write: bool,
    /// Width in bytes (1..=64; values of wider accesses keep their first 8 bytes); 0 for
    /// an `UNKNOWN` of the trace (an access whose direction and value it does not know:
    /// any access at its offset matches it).
    pub width: u8,
    /// Offset of the access within its mapping.
    pub rel: u64,
    /// The value read or written (the first 8 bytes for wider accesses).
    pub value: u64,
    /// Time in the trace, nanoseconds.
    pub ts_ns: u64,
    /// Program counter in the trace.
    pub pc: u64,
}

impl SeqEntry {
    /// Whether `other` is the same register access (direction, width, offset) and, for
    /// writes, the same value: what a replayed access must be to match.
    pub fn matches(&self, write: bool, width: u8, rel: u64, value: u64) -> bool {
        if self.width == 0 {
            return self.rel == rel;
        }
        self.write == write
            && self.width == width
            && self.rel == rel
            && (!write || self.value == mask(value, width))
    }
}

/// `v` cut to `width` bytes (8 and more: whole).
pub(crate) fn mask(v: u64, width: u8) -> u64 {
    if width >= 8 {
        v
    } else {
        v & ((1u64 << (u32::from(width) * 8)) - 1)
    }
}

/// A register of a map: an offset and a width, with everything the trace read from it
/// and wrote to it, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reg {
    /// Offset within the mapping.
    pub rel: u64,
    /// Access width in bytes.
    pub width: u8,
    /// The values read, in order.
    pub reads: Vec<u64>,
    /// The values written, in order.
    pub writes: Vec<u64>,
}

/// The accesses one thread of the trace made to one map, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// The thread id in the trace (0 in kernel logs).
    pub tid: u32,
    /// Its accesses.
    pub entries: Vec<SeqEntry>,
}

/// One device mapping of the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceMap {
    /// The `MAP`'s id.
    pub id: i64,
    /// Physical address (or file offset) of its first byte.
    pub phys: u64,
    /// Length in bytes.
    pub len: u64,
    /// The mapped file, where the log names it (`MARK map ID PATH offset ...`).
    pub path: Option<Vec<u8>>,
    /// The file offset mapped, where the log names it.
    pub file_off: Option<u64>,
    /// Registers, by (offset, width).
    pub regs: Vec<Reg>,
    /// One access sequence per thread, in the order the threads first touched the map.
    pub streams: Vec<Stream>,
}

impl TraceMap {
    /// The register at `rel` of `width` bytes.
    pub fn reg(&self, rel: u64, width: u8) -> Option<&Reg> {
        self.regs
            .binary_search_by(|r| (r.rel, r.width).cmp(&(rel, width)))
            .ok()
            .map(|i| &self.regs[i])
    }

    /// Accesses of all threads.
    pub fn accesses(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }
}

/// A replay model: every device mapping of a trace, in `MAP` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// The maps.
    pub maps: Vec<TraceMap>,
}

/// Builds a [`Model`] from a trace's events, in log order.
#[derive(Default)]
pub struct ModelBuilder {
    maps: Vec<TraceMap>,
    /// Live map ids → index in `maps` (an mremap's new id → the map it continues).
    live: BTreeMap<i64, usize>,
    /// Every map id seen → its latest index (an mremap's `MAP`, with the `continues`
    /// marker after it, may follow the old map's `UNMAP`).
    seen: BTreeMap<i64, usize>,
    regs: Vec<BTreeMap<(u64, u8), Reg>>,
}

impl ModelBuilder {
    /// An empty builder.
    pub fn new() -> ModelBuilder {
        ModelBuilder::default()
    }

    /// A `MAP`: mapping `id` of `len` bytes at physical address `phys`.
    pub fn map(&mut self, id: i64, phys: u64, len: u64) {
        self.live.insert(id, self.maps.len());
        self.seen.insert(id, self.maps.len());
        self.maps.push(TraceMap {
            id,
            phys,
            len,
            ..TraceMap::default()
        });
        self.regs.push(BTreeMap::new());
    }

    /// An `UNMAP` of mapping `id`.
    pub fn unmap(&mut self, id: i64) {
        self.live.remove(&id);
    }

    /// A `MARK`: mmio-trace's `map ID PATH offset 0xOFF length 0xLEN` names a map's
    /// file, and `map NEW continues map OLD` (an `mremap`) makes NEW's accesses OLD's.
    pub fn mark(&mut self, text: &[u8]) {
        let Ok(t) = std::str::from_utf8(text) else {
            return;
        };
        let Some(rest) = t.strip_prefix("map ") else {
            return;
        };
        let Some((id, rest)) = rest.split_once(' ') else {
            return;
        };
        let Ok(id) = id.parse::<i64>() else { return };
        if let Some(old) = rest.strip_prefix("continues map ") {
            let old = old.split(' ').next().and_then(|o| o.parse::<i64>().ok());
            if let Some(&i) = old.and_then(|o| self.seen.get(&o)) {
                // The moved pages keep their device addresses: offsets stay phys-based.
                if let Some(&mine) = self.live.get(&id) {
                    if self.maps[mine].streams.is_empty() && mine + 1 == self.maps.len() {
                        self.maps.pop();
                        self.regs.pop();
                    }
                }
                self.live.insert(id, i);
                self.seen.insert(id, i);
            }
            return;
        }
        // PATH may hold spaces: the fields after it are the last four words.
        let words: Vec<&str> = rest.rsplitn(5, ' ').collect();
        if words.len() < 5 || words[3] != "offset" || words[1] != "length" {
            return;
        }
        let Some(off) = words[2]
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return;
        };
        if let Some(&i) = self.live.get(&id) {
            let m = &mut self.maps[i];
            if m.path.is_none() {
                m.path = Some(words[4].as_bytes().to_vec());
                m.file_off = Some(off);
            }
        }
    }

    /// An access (`R`/`W`) of mapping `map_id` at physical address `phys`, made by
    /// thread `tid`. Accesses of unknown maps are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn access(
        &mut self,
        write: bool,
        width: u8,
        map_id: i64,
        phys: u64,
        value: u64,
        tid: u32,
        ts_ns: u64,
        pc: u64,
    ) {
        let Some(&i) = self.live.get(&map_id) else {
            return;
        };
        let m = &mut self.maps[i];
        let rel = phys.wrapping_sub(m.phys);
        let value = mask(value, width);
        let e = SeqEntry {
            write,
            width,
            rel,
            value,
            ts_ns,
            pc,
        };
        match m.streams.iter_mut().find(|s| s.tid == tid) {
            Some(s) => s.entries.push(e),
            None => m.streams.push(Stream {
                tid,
                entries: vec![e],
            }),
        }
        let r = self.regs[i].entry((rel, width)).or_insert_with(|| Reg {
            rel,
            width,
            ..Reg::default()
        });
        if write {
            r.writes.push(value);
        } else {
            r.reads.push(value);
        }
    }

    /// An `UNKNOWN` (an access the tracer could not name the direction or value of) of
    /// mapping `map_id` at `phys` by thread `tid`: any access there matches it.
    pub fn unknown(&mut self, map_id: i64, phys: u64, tid: u32, ts_ns: u64, pc: u64) {
        let Some(&i) = self.live.get(&map_id) else {
            return;
        };
        let m = &mut self.maps[i];
        let e = SeqEntry {
            write: false,
            width: 0,
            rel: phys.wrapping_sub(m.phys),
            value: 0,
            ts_ns,
            pc,
        };
        match m.streams.iter_mut().find(|s| s.tid == tid) {
            Some(s) => s.entries.push(e),
            None => m.streams.push(Stream {
                tid,
                entries: vec![e],
            }),
        }
    }

    /// The model.
    pub fn finish(mut self) -> Model {
        for (m, regs) in self.maps.iter_mut().zip(self.regs) {
            m.regs = regs.into_values().collect();
        }
        Model { maps: self.maps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_registers_and_streams_come_from_the_events() {
        let mut b = ModelBuilder::new();
        b.map(1, 0x1000, 0x1000);
        b.mark(b"map 1 /tmp/my dev offset 0x0 length 0x1000");
        b.access(false, 4, 1, 0x1014, 5, 7, 1, 0);
        b.access(true, 4, 1, 0x1010, 0x1_0000_0002, 7, 2, 0);
        b.access(false, 4, 1, 0x1014, 6, 8, 3, 0);
        b.access(false, 4, 9, 0x1014, 6, 8, 3, 0);
        let m = b.finish();
        assert_eq!(m.maps.len(), 1);
        let map = &m.maps[0];
        assert_eq!(map.path.as_deref(), Some(&b"/tmp/my dev"[..]));
        assert_eq!(map.file_off, Some(0));
        assert_eq!(map.reg(0x14, 4).unwrap().reads, vec![5, 6]);
        assert_eq!(map.reg(0x10, 4).unwrap().writes, vec![2]);
        assert_eq!(map.streams.len(), 2);
        assert_eq!(map.streams[0].entries.len(), 2);
        assert!(map.streams[0].entries[1].matches(true, 4, 0x10, 0xff_0000_0002));
    }
}
