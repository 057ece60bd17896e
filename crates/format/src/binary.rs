//! mmio-trace's compact binary format.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header:  MAGIC (8 bytes) | version: u16 | schema_len: u32 | schema: UTF-8 text
//! records: tag: u8 | fields
//! ```
//!
//! The schema text in the header describes every record kind in words, so a file
//! explains itself to a person holding only a hex dump. Varints are LEB128;
//! "zz" means zigzag-encoded signed LEB128.
//!
//! *Access records* (tag `0b0_C_M_1_D_WWW`) carry no length: they are the bulk of a
//! log and every byte counts. `D` is the direction (0 read, 1 write); `WWW` is
//! log2 of the width (0..=6 for 1..=64 bytes) or 7 when a width byte follows; `M`
//! says a map-id delta follows; `C` says a pc delta and a pid follow (otherwise both
//! repeat the previous access's). Timestamps and addresses are deltas from the
//! previous access, which makes a typical access 8 to 12 bytes.
//!
//! *Other records* (tag `0x80..=0xff`) carry a varint payload length, so a reader
//! skips kinds it does not know: later versions may add records without breaking
//! older readers.

use std::io::{self, Read, Write};

use crate::error::{Error, ParseError};
use crate::event::*;

/// The first bytes of every binary log. The high byte and the CR/LF pair detect
/// transfers that mangle binary data, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89MMT\r\n\x1a\n";

/// The format version this crate writes; readers accept this and older.
pub const VERSION: u16 = 1;

/// The self-description stored in every header.
pub const SCHEMA: &str = "\
mmio-trace binary log v1. Integers LE; var = LEB128; zz = zigzag LEB128.
access tag 0b0CM1DWWW: D=1 write/0 read; WWW=log2(width) or 7 then width:u8;
  ts: ts-delta code (zz(delta_ns)<<1, or zz(delta_us)<<1|1 when the delta is whole us);
  [M] map_id: zz delta; phys: zz delta; value: var (width<=8) or width raw bytes;
  [C] pc: zz delta, pid: var. Deltas are from the previous access record.
record tag>=0x80, then len:var, then payload:
  0x80 VERSION text | 0x81 PCIDEV bus:u8 devfn:u8 vendor:u16 device:u16 irq:var
  starts:7var sizes:7var has_driver:u8 driver | 0x82 MAP ts:var id:zz phys virt len pc:var
  pid:var | 0x83 UNMAP ts:var id:zz pc:var pid:var | 0x84 UNKNOWN ts:var id:zz phys:var
  opcode:3 pc:var pid:var | 0x85 MARK ts:var text | 0x86 LOST n:var |
  0x87 CPULOST cpu:var has_count:u8 count:var | 0x88 VERBATIM text
";

const T_VERSION: u8 = 0x80;
const T_PCIDEV: u8 = 0x81;
const T_MAP: u8 = 0x82;
const T_UNMAP: u8 = 0x83;
const T_UNKNOWN: u8 = 0x84;
const T_MARK: u8 = 0x85;
const T_LOST: u8 = 0x86;
const T_CPULOST: u8 = 0x87;
const T_VERBATIM: u8 = 0x88;

const A_BASE: u8 = 0x10;
const A_WRITE: u8 = 0x08;
const A_MAP: u8 = 0x20;
const A_CTX: u8 = 0x40;

/// The largest non-access record a reader accepts.
pub const MAX_RECORD: usize = 16 << 20;

#[inline]
fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Delta state shared by writer and reader.
#[derive(Default, Clone, Copy)]
struct Prev {
    ts: u64,
    map_id: i64,
    phys: u64,
    pc: u64,
    pid: u32,
}

/// Writes the binary format.
pub struct BinaryWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    prev: Prev,
    payload: Vec<u8>,
}

impl<W: Write> BinaryWriter<W> {
    /// Writes the header and returns a writer for events.
    pub fn new(out: W) -> io::Result<Self> {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&(SCHEMA.len() as u32).to_le_bytes());
        buf.extend_from_slice(SCHEMA.as_bytes());
        Ok(BinaryWriter {
            out,
            buf,
            prev: Prev::default(),
            payload: Vec::new(),
        })
    }

    /// Appends one event.
    pub fn write_event(&mut self, ev: &Event) -> io::Result<()> {
        match ev {
            Event::Access(a) => self.access(a),
            _ => self.rare(ev),
        }
        if self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn access(&mut self, a: &Access) {
        let p = &mut self.prev;
        let width = a.width.clamp(1, MAX_WIDTH as u8);
        let mut tag = A_BASE;
        if a.dir == Direction::Write {
            tag |= A_WRITE;
        }
        let wcode = if width.is_power_of_two() {
            width.trailing_zeros() as u8
        } else {
            7
        };
        tag |= wcode;
        if a.map_id != p.map_id {
            tag |= A_MAP;
        }
        if a.pc != p.pc || a.pid != p.pid {
            tag |= A_CTX;
        }
        let b = &mut self.buf;
        b.push(tag);
        if wcode == 7 {
            b.push(width);
        }
        let dt = a.ts_ns.wrapping_sub(p.ts) as i64;
        if dt % 1000 == 0 {
            put_var(b, (zz(dt / 1000) << 1) | 1);
        } else {
            // A delta this large would lose its top bit in the shift; none occurs
            // within 2^62 ns (146 years) of the previous access.
            put_var(b, zz(dt) << 1);
        }
        if tag & A_MAP != 0 {
            put_var(b, zz(a.map_id.wrapping_sub(p.map_id)));
        }
        put_var(b, zz(a.phys.wrapping_sub(p.phys) as i64));
        if width <= 8 {
            put_var(b, a.value);
        } else {
            b.extend_from_slice(&a.bytes()[..width as usize]);
        }
        if tag & A_CTX != 0 {
            put_var(b, zz(a.pc.wrapping_sub(p.pc) as i64));
            put_var(b, a.pid as u64);
        }
        *p = Prev {
            ts: a.ts_ns,
            map_id: a.map_id,
            phys: a.phys,
            pc: a.pc,
            pid: a.pid,
        };
    }

    fn rare(&mut self, ev: &Event) {
        let pl = &mut self.payload;
        pl.clear();
        let tag = match ev {
            Event::Access(_) => unreachable!("accesses take the compact path"),
            Event::Version(v) => {
                pl.extend_from_slice(v);
                T_VERSION
            }
            Event::PciDev(d) => {
                pl.extend_from_slice(&[d.bus, d.devfn]);
                pl.extend_from_slice(&d.vendor.to_le_bytes());
                pl.extend_from_slice(&d.device.to_le_bytes());
                put_var(pl, d.irq as u64);
                for v in d.starts.iter().chain(d.sizes.iter()) {
                    put_var(pl, *v);
                }
                match &d.driver {
                    Some(name) => {
                        pl.push(1);
                        pl.extend_from_slice(name);
                    }
                    None => pl.push(0),
                }
                T_PCIDEV
            }
            Event::Map(m) => {
                put_var(pl, m.ts_ns);
                put_var(pl, zz(m.id));
                for v in [m.phys, m.virt, m.len, m.pc, m.pid as u64] {
                    put_var(pl, v);
                }
                T_MAP
            }
            Event::Unmap(u) => {
                put_var(pl, u.ts_ns);
                put_var(pl, zz(u.id));
                put_var(pl, u.pc);
                put_var(pl, u.pid as u64);
                T_UNMAP
            }
            Event::Unknown(u) => {
                put_var(pl, u.ts_ns);
                put_var(pl, zz(u.map_id));
                put_var(pl, u.phys);
                pl.extend_from_slice(&u.opcode);
                put_var(pl, u.pc);
                put_var(pl, u.pid as u64);
                T_UNKNOWN
            }
            Event::Mark(m) => {
                put_var(pl, m.ts_ns);
                pl.extend_from_slice(&m.text);
                T_MARK
            }
            Event::LostEvents(n) => {
                put_var(pl, *n);
                T_LOST
            }
            Event::CpuLost { cpu, count } => {
                put_var(pl, *cpu as u64);
                pl.push(count.is_some() as u8);
                put_var(pl, count.unwrap_or(0));
                T_CPULOST
            }
            Event::Verbatim(v) => {
                pl.extend_from_slice(v);
                T_VERBATIM
            }
        };
        self.buf.push(tag);
        put_var(&mut self.buf, pl.len() as u64);
        self.buf.extend_from_slice(pl);
    }

    /// Writes out everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

const READ_CHUNK: usize = 256 * 1024;
/// Room for the longest access record: tag, width, 5 varints of up to 10 bytes,
/// 64 value bytes.
const MAX_ACCESS: usize = 2 + 5 * 10 + MAX_WIDTH + 10;

/// Reads the binary format.
pub struct BinaryReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    /// File offset of `buf[0]`.
    base: u64,
    record: u64,
    prev: Prev,
    version: u16,
    schema: String,
}

/// Decoding failure inside a record; turned into a [`ParseError`] by the caller.
struct Bad(&'static str);

#[inline(always)]
fn get_var(b: &[u8], pos: &mut usize) -> Result<u64, Bad> {
    // Fast path: decode from one unaligned 8-byte load without a data-dependent
    // branch per byte; lengths vary record to record and mispredicted branches
    // would otherwise dominate the cost of reading.
    if let Some(chunk) = b.get(*pos..*pos + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let stops = !w & 0x8080_8080_8080_8080;
        if stops != 0 {
            let len = (stops.trailing_zeros() / 8 + 1) as usize;
            let x = if len == 8 {
                w
            } else {
                w & ((1u64 << (len * 8)) - 1)
            };
            let v = (x & 0x7f)
                | ((x >> 1) & (0x7f << 7))
                | ((x >> 2) & (0x7f << 14))
                | ((x >> 3) & (0x7f << 21))
                | ((x >> 4) & (0x7f << 28))
                | ((x >> 5) & (0x7f << 35))
                | ((x >> 6) & (0x7f << 42))
                | ((x >> 7) & (0x7f << 49));
            *pos += len;
            return Ok(v);
        }
    }
    get_var_slow(b, pos)
}

#[inline(never)]
fn get_var_slow(b: &[u8], pos: &mut usize) -> Result<u64, Bad> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b
            .get(*pos)
            .ok_or(Bad("a varint, not the end of the record"))?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(Bad("a varint that fits in 64 bits"));
        }
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(Bad("a varint of at most 10 bytes"));
        }
    }
}

fn get_u32(b: &[u8], pos: &mut usize, what: &'static str) -> Result<u32, Bad> {
    u32::try_from(get_var(b, pos)?).map_err(|_| Bad(what))
}

fn get_bytes<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], Bad> {
    let end = pos.checked_add(n).ok_or(Bad("more bytes in the record"))?;
    let s = b.get(*pos..end).ok_or(Bad("more bytes in the record"))?;
    *pos = end;
    Ok(s)
}

impl<R: Read> BinaryReader<R> {
    /// Reads and checks the header.
    pub fn new(inner: R) -> Result<Self, Error> {
        let mut r = BinaryReader {
            inner,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            eof: false,
            base: 0,
            record: 0,
            prev: Prev::default(),
            version: 0,
            schema: String::new(),
        };
        r.fill(14)?;
        if r.end < 14 || r.buf[..8] != MAGIC {
            return Err(r.bad(0, "the binary log header (magic, version, schema length)"));
        }
        r.version = u16::from_le_bytes([r.buf[8], r.buf[9]]);
        if r.version == 0 || r.version > VERSION {
            return Err(r.bad(8, &format!("format version 1..={VERSION}")));
        }
        let slen = u32::from_le_bytes([r.buf[10], r.buf[11], r.buf[12], r.buf[13]]) as usize;
        if slen > MAX_RECORD {
            return Err(r.bad(10, "a schema shorter than 16 MiB"));
        }
        r.pos = 14;
        r.fill(slen)?;
        if r.end - r.pos < slen {
            return Err(r.bad(14, "the whole schema text"));
        }
        r.schema = String::from_utf8_lossy(&r.buf[r.pos..r.pos + slen]).into_owned();
        r.pos += slen;
        Ok(r)
    }

    /// The format version of the file.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The schema text stored in the file's header.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    #[cold]
    #[inline(never)]
    fn bad(&self, at: usize, expected: &str) -> Error {
        let found = match self.buf.get(at..self.end.min(at + 8)) {
            Some(s) if !s.is_empty() => format!("bytes {s:02x?}"),
            _ => "end of file".to_string(),
        };
        ParseError {
            line: self.record,
            column: self.base + at as u64,
            expected: expected.to_string(),
            found,
            binary: true,
        }
        .into()
    }

    /// Ensures at least `n` unread bytes are buffered unless the stream ends first.
    fn fill(&mut self, n: usize) -> Result<(), Error> {
        if self.end - self.pos >= n || self.eof {
            return Ok(());
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < n {
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.end < n {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next event, or `None` at the end of the log.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if self.end - self.pos < MAX_ACCESS {
                self.fill(MAX_ACCESS)?;
                if self.pos == self.end {
                    return Ok(None);
                }
            }
            self.record += 1;
            let start = self.pos;
            let tag = self.buf[start];
            if tag & 0x80 == 0 {
                let mut pos = start + 1;
                return match decode_access(&self.buf[..self.end], &mut pos, tag, &mut self.prev) {
                    Ok(a) => {
                        self.pos = pos;
                        Ok(Some(Event::Access(a)))
                    }
                    Err(Bad(what)) => Err(self.bad(start, what)),
                };
            }
            // A record with a length.
            let mut pos = start + 1;
            let len =
                get_var(&self.buf[..self.end], &mut pos).map_err(|Bad(w)| self.bad(start, w))?;
            if len > MAX_RECORD as u64 {
                return Err(self.bad(start, "a record shorter than 16 MiB"));
            }
            let head = pos - start;
            let total = head + len as usize;
            if self.end - start < total {
                self.fill(total)?;
                if self.end - self.pos < total {
                    return Err(self.bad(self.pos, "the rest of a record (file truncated?)"));
                }
            }
            let start = self.pos;
            let payload = &self.buf[start + head..start + total];
            self.pos = start + total;
            match decode_rare(tag, payload) {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => continue,
                Err(Bad(what)) => return Err(self.bad(start, what)),
            }
        }
    }
}

#[inline(always)]
fn decode_access(b: &[u8], pos: &mut usize, tag: u8, p: &mut Prev) -> Result<Access, Bad> {
    if tag & A_BASE == 0 {
        return Err(Bad("a record tag (0x10..=0x7f or 0x80..=0xff)"));
    }
    let wcode = tag & 7;
    let width = if wcode == 7 {
        let w = *b.get(*pos).ok_or(Bad("a width byte"))?;
        *pos += 1;
        if w == 0 || w as usize > MAX_WIDTH {
            return Err(Bad("an access width 1..=64"));
        }
        w
    } else if wcode <= 6 {
        1u8 << wcode
    } else {
        unreachable!()
    };
    let code = get_var(b, pos)?;
    let dt = if code & 1 == 1 {
        unzz(code >> 1).wrapping_mul(1000)
    } else {
        unzz(code >> 1)
    };
    let ts_ns = p.ts.wrapping_add(dt as u64);
    let map_id = if tag & A_MAP != 0 {
        p.map_id.wrapping_add(unzz(get_var(b, pos)?))
    } else {
        p.map_id
    };
    let phys = p.phys.wrapping_add(unzz(get_var(b, pos)?) as u64);
    let (value, wide) = if width <= 8 {
        (get_var(b, pos)?, None)
    } else {
        let raw = get_bytes(b, pos, width as usize)?;
        let mut bytes = Box::new([0u8; MAX_WIDTH]);
        bytes[..raw.len()].copy_from_slice(raw);
        let first = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        (first, Some(bytes))
    };
    let (pc, pid) = if tag & A_CTX != 0 {
        let pc = p.pc.wrapping_add(unzz(get_var(b, pos)?) as u64);
        (pc, get_u32(b, pos, "a pid that fits in 32 bits")?)
    } else {
        (p.pc, p.pid)
    };
    let dir = if tag & A_WRITE != 0 {
        Direction::Write
    } else {
        Direction::Read
    };
    *p = Prev {
        ts: ts_ns,
        map_id,
        phys,
        pc,
        pid,
    };
    Ok(Access {
        dir,
        width,
        pid,
        ts_ns,
        map_id,
        phys,
        value,
        pc,
        wide,
    })
}

fn decode_rare(tag: u8, b: &[u8]) -> Result<Option<Event>, Bad> {
    let mut pos = 0;
    let pos = &mut pos;
    let ev = match tag {
        T_VERSION => Event::Version(b.to_vec()),
        T_PCIDEV => {
            let fixed = get_bytes(b, pos, 6)?;
            let irq = get_u32(b, pos, "an irq that fits in 32 bits")?;
            let mut starts = [0u64; 7];
            let mut sizes = [0u64; 7];
            for v in starts.iter_mut().chain(sizes.iter_mut()) {
                *v = get_var(b, pos)?;
            }
            let has = get_bytes(b, pos, 1)?[0];
            let driver = match has {
                0 if *pos == b.len() => None,
                1 => Some(b[*pos..].to_vec()),
                _ => return Err(Bad("a driver flag 0 or 1")),
            };
            Event::PciDev(Box::new(PciDev {
                bus: fixed[0],
                devfn: fixed[1],
                vendor: u16::from_le_bytes([fixed[2], fixed[3]]),
                device: u16::from_le_bytes([fixed[4], fixed[5]]),
                irq,
                starts,
                sizes,
                driver,
            }))
        }
        T_MAP => {
            let ts_ns = get_var(b, pos)?;
            let id = unzz(get_var(b, pos)?);
            let phys = get_var(b, pos)?;
            let virt = get_var(b, pos)?;
            let len = get_var(b, pos)?;
            let pc = get_var(b, pos)?;
            let pid = get_u32(b, pos, "a pid that fits in 32 bits")?;
            end(b, pos)?;
            Event::Map(Map {
                ts_ns,
                id,
                phys,
                virt,
                len,
                pc,
                pid,
            })
        }
        T_UNMAP => {
            let ts_ns = get_var(b, pos)?;
            let id = unzz(get_var(b, pos)?);
            let pc = get_var(b, pos)?;
            let pid = get_u32(b, pos, "a pid that fits in 32 bits")?;
            end(b, pos)?;
            Event::Unmap(Unmap { ts_ns, id, pc, pid })
        }
        T_UNKNOWN => {
            let ts_ns = get_var(b, pos)?;
            let map_id = unzz(get_var(b, pos)?);
            let phys = get_var(b, pos)?;
            let o = get_bytes(b, pos, 3)?;
            let opcode = [o[0], o[1], o[2]];
            let pc = get_var(b, pos)?;
            let pid = get_u32(b, pos, "a pid that fits in 32 bits")?;
            end(b, pos)?;
            Event::Unknown(Unknown {
                ts_ns,
                map_id,
                phys,
                opcode,
                pc,
                pid,
            })
        }
        T_MARK => {
            let ts_ns = get_var(b, pos)?;
            Event::Mark(Mark {
                ts_ns,
                text: b[*pos..].to_vec(),
            })
        }
        T_LOST => {
            let n = get_var(b, pos)?;
            end(b, pos)?;
            Event::LostEvents(n)
        }
        T_CPULOST => {
            let cpu = get_u32(b, pos, "a CPU number that fits in 32 bits")?;
            let has = get_bytes(b, pos, 1)?[0];
            let n = get_var(b, pos)?;
            end(b, pos)?;
            let count = match has {
                0 if n == 0 => None,
                1 => Some(n),
                _ => return Err(Bad("a count flag 0 or 1 (count 0 when absent)")),
            };
            Event::CpuLost { cpu, count }
        }
        T_VERBATIM => Event::Verbatim(b.to_vec()),
        // A record kind from a later version: skip it.
        _ => return Ok(None),
    };
    Ok(Some(ev))
}

fn end(b: &[u8], pos: &usize) -> Result<(), Bad> {
    if *pos == b.len() {
        Ok(())
    } else {
        Err(Bad("the end of the record"))
    }
}

impl<R: Read> Iterator for BinaryReader<R> {
    type Item = Result<Event, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}
