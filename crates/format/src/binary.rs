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
//! repeat the previous access's). A size byte after the tag gives the byte length of
//! the time, address and value fields, which are plain little-endian integers: a
//! reader finds every field from the first two bytes and decodes them in parallel,
//! without the byte-by-byte dependency of varints. Timestamps and addresses are
//! deltas from the previous access, which makes a typical access 6 to 10 bytes.
//!
//! *Other records* (tag `0x80..=0xff`) carry a varint payload length, so a reader
//! skips kinds it does not know: later versions may add records without breaking
//! older readers.
//!
//! *Access blocks* (version 2; tag `0x89`, a record with a length) hold runs of up to
//! 255 accesses of 1, 2, 4 or 8 bytes, which writers put there rather than in access
//! records: the count, then every access's tag, then every size byte, then every
//! access's fields as an access record has them. An access record's length is known
//! only once its first two bytes are read, so a reader of back-to-back records cannot
//! start on one before finishing the previous; in a block the tags and sizes are read
//! ahead and only the data offset is carried from access to access, so decoding
//! overlaps across accesses. A block costs 4 bytes (tag, length, count). Delta state
//! runs on through blocks and records alike. Version 1 logs (no blocks) read as before;
//! version 1 readers refuse version 2 logs, which they would misread (they would skip
//! every block as an unknown record).
//!
//! *Context blocks* (version 3; tag `0x8a`) are the blocks of user-space recordings,
//! where the pc or thread changes on nearly every access: their map, pc and pid changes
//! are fixed-size fields whose lengths one context byte per such access gives, ahead of
//! the data, rather than varints in it, whose lengths are only known by decoding them
//! (which would chain each access to the previous one again). Blocks without such
//! changes stay version 2's.
//!
//! *String records* (tag `0x8c`, a record with a length, so version 3 readers that
//! predate it skip it: the version stays 3) hold one string instruction's run of
//! accesses ([`StringAccesses`]: a `REP STOS` of 4096 elements is one record of about
//! 30 bytes): readers expand it into the per-element accesses it stands for. It
//! carries absolute values and leaves the delta state of access records alone. A
//! writer given per-element accesses (`convert` of a text log) does not gather them
//! into string records again.

use std::io::{self, Read, Write};

use crate::error::{Error, ParseError, Stop};
use crate::event::*;
use crate::reader::{access_slot, is_damage, put_event};
use crate::strings::{Stream, StringAccesses, MAX_STRING_COUNT};

/// The first bytes of every binary log. The high byte and the CR/LF pair detect
/// transfers that mangle binary data, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89MMT\r\n\x1a\n";

/// The format version this crate writes; readers accept this and older.
pub const VERSION: u16 = 3;

/// The self-description stored in every header.
pub const SCHEMA: &str = "\
mmio-trace binary log v3. Integers LE; var = LEB128; zz = zigzag LEB128;
le(n) = n-byte LE integer; zz(x) also names the zigzag of x in such fields.
access tag 0b0CM1DWWW: D=1 write/0 read; WWW=log2(width) or 7 then width:u8 after sizes;
  sizes:u8 = T | P<<2 | V<<5, T in 0..3 -> 1,2,4,8 bytes; P,V in 0..7 -> 0,1,2,3,4,5,6,8;
  ts: le(T) ts-delta code (zz(delta_ns)<<1, or zz(delta_us)<<1|1 when whole us);
  phys: le(P) zz(delta); value: le(V) (width<=8) or width raw bytes (V=0);
  [M] map_id: zz delta; [C] pc: zz delta, pid: var. Deltas: from the previous access.
record tag>=0x80, then len:var, then payload:
  0x80 VERSION text | 0x81 PCIDEV bus:u8 devfn:u8 vendor:u16 device:u16 irq:var
  starts:7var sizes:7var has_driver:u8 driver | 0x82 MAP ts:var id:zz phys virt len pc:var
  pid:var | 0x83 UNMAP ts:var id:zz pc:var pid:var | 0x84 UNKNOWN ts:var id:zz phys:var
  opcode:3 pc:var pid:var | 0x85 MARK ts:var text | 0x86 LOST n:var |
  0x87 CPULOST cpu:var has_count:u8 count:var | 0x88 VERBATIM text |
  0x89 BLOCK n:u8 (1..=255), n access tags (WWW 0..=3: width 1,2,4,8), n sizes bytes,
  then each access's fields in order as in an access record (ts, phys, value, [M], [C]).
  0x8a CBLOCK as 0x89, with one context byte per access with M or C after the size
  bytes, ctx = M | P<<3 | D<<6 (M, P as above, D in 0..3 -> 0,1,2,4 bytes), and those
  accesses' M and C fields as le(M) zz(map delta), le(P) zz(pc delta), le(D) pid
  (D=0: unchanged) instead of varints.
  0x8b KERNEL ts:var id:zz phys len dir:u8 pid:var call
  0x8c STRING ts:var pid:var pc:var width:u8 (1,2,4,8) flags:u8 count:var (>= 1)
  id:zz phys:var [id2:zz phys2:var] values: one string instruction's run of elements;
  flags: 1 first stream writes, 2 a second stream (its id2/phys2), 4 it writes,
  8 addresses go down, 16 one value for all (width bytes; else count*width bytes).
  Element k accesses phys +- k*width, then (second stream) phys2 +- k*width with the
  same value; every access has time ts.
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
const T_BLOCK: u8 = 0x89;
const T_CBLOCK: u8 = 0x8a;
const T_KERNEL: u8 = 0x8b;
const T_STRING: u8 = 0x8c;

const S_FIRST_WRITE: u8 = 1;
const S_SECOND: u8 = 2;
const S_SECOND_WRITE: u8 = 4;
const S_DOWN: u8 = 8;
const S_SAME: u8 = 16;

/// Byte lengths of a context block's pid field, by its 2-bit size code (0: the pid of
/// the previous access).
const PID_SIZES: [usize; 4] = [0, 1, 2, 4];

/// The most accesses in one access block (its count is one byte).
pub const BLOCK_MAX: usize = 255;
/// The longest fields of an access in a block: time, address and value of 8 bytes, and
/// three varints of up to 10 bytes.
const MAX_NARROW_FIELDS: usize = 3 * 8 + 3 * 10;
/// The longest access block payload a reader accepts: the count, and `BLOCK_MAX` tags,
/// size bytes and fields.
const MAX_BLOCK: usize = 1 + BLOCK_MAX * (2 + MAX_NARROW_FIELDS);
// The error message for longer blocks names this number.
const _: () = assert!(MAX_BLOCK == 14281);

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

/// Byte sizes of the access fields, by their 2-bit (time) and 3-bit (address, value)
/// size codes.
const SIZES2: [usize; 4] = [1, 2, 4, 8];
const SIZES3: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 8];
const MASKS2: [u64; 4] = [0xff, 0xffff, 0xffff_ffff, !0];
const MASKS3: [u64; 8] = [
    0,
    0xff,
    0xffff,
    0xff_ffff,
    0xffff_ffff,
    0xff_ffff_ffff,
    0xffff_ffff_ffff,
    !0,
];

/// The smallest 2-bit size code whose size holds `v`.
fn size_code2(v: u64) -> u8 {
    match v {
        0..=0xff => 0,
        0x100..=0xffff => 1,
        0x1_0000..=0xffff_ffff => 2,
        _ => 3,
    }
}

/// The smallest 3-bit size code whose size holds `v`.
fn size_code3(v: u64) -> u8 {
    // 0..=6 bytes are codes 0..=6; 7 or 8 bytes take code 7 (8 bytes).
    ((64 - v.leading_zeros()).div_ceil(8) as u8).min(7)
}

fn put_le(out: &mut Vec<u8>, v: u64, n: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..n]);
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

/// Appends the time, address and value fields of `a` (those after its tag, size byte
/// and width byte) to `b`, and returns its tag and size byte. The tag's `M` and `C`
/// bits say whether the map id, or the pc or pid, differ from `p`'s.
#[inline]
fn put_fixed(p: &Prev, a: &Access, b: &mut Vec<u8>) -> (u8, u8) {
    let width = a.width.clamp(1, MAX_WIDTH as u8);
    let mut tag = A_BASE;
    if a.dir == Direction::Write {
        tag |= A_WRITE;
    }
    tag |= if width.is_power_of_two() {
        width.trailing_zeros() as u8
    } else {
        7
    };
    if a.map_id != p.map_id {
        tag |= A_MAP;
    }
    if a.pc != p.pc || a.pid != p.pid {
        tag |= A_CTX;
    }
    let dt = a.ts_ns.wrapping_sub(p.ts) as i64;
    // A delta this large would lose its top bit in the shift; none occurs within
    // 2^62 ns (146 years) of the previous access.
    let ts = if dt % 1000 == 0 {
        (zz(dt / 1000) << 1) | 1
    } else {
        zz(dt) << 1
    };
    let phys = zz(a.phys.wrapping_sub(p.phys) as i64);
    let value = if width <= 8 { a.value } else { 0 };
    let (tc, vc, pcode) = (size_code2(ts), size_code3(value), size_code3(phys));
    put_le(b, ts, SIZES2[tc as usize]);
    put_le(b, phys, SIZES3[pcode as usize]);
    if width <= 8 {
        put_le(b, value, SIZES3[vc as usize]);
    } else {
        b.extend_from_slice(&a.bytes()[..width as usize]);
    }
    (tag, tc | pcode << 2 | vc << 5)
}

impl Prev {
    /// The state after `a`.
    fn of(a: &Access) -> Prev {
        Prev {
            ts: a.ts_ns,
            map_id: a.map_id,
            phys: a.phys,
            pc: a.pc,
            pid: a.pid,
        }
    }
}

/// An access record's fields: [`put_fixed`]'s, then the map and context varints its
/// tag asks for. Returns the tag and size byte; `p` becomes `a`'s state.
#[inline]
fn put_fields(p: &mut Prev, a: &Access, b: &mut Vec<u8>) -> (u8, u8) {
    let (tag, sizes) = put_fixed(p, a, b);
    if tag & A_MAP != 0 {
        put_var(b, zz(a.map_id.wrapping_sub(p.map_id)));
    }
    if tag & A_CTX != 0 {
        put_var(b, zz(a.pc.wrapping_sub(p.pc) as i64));
        put_var(b, a.pid as u64);
    }
    *p = Prev::of(a);
    (tag, sizes)
}

/// An access's fields in a context block: [`put_fixed`]'s, then, when its tag has `M`
/// or `C`, the map-id delta, pc delta and pid as plain little-endian integers whose
/// lengths the returned context byte gives. Returns the tag, size byte and context
/// byte; `p` becomes `a`'s state.
#[inline]
fn put_block_fields(p: &mut Prev, a: &Access, b: &mut Vec<u8>) -> (u8, u8, Option<u8>) {
    let (tag, sizes) = put_fixed(p, a, b);
    let ctx = (tag & (A_MAP | A_CTX) != 0).then(|| {
        let map = zz(a.map_id.wrapping_sub(p.map_id));
        let pc = zz(a.pc.wrapping_sub(p.pc) as i64);
        let (mc, pcc) = (size_code3(map), size_code3(pc));
        let pidc = match a.pid {
            _ if a.pid == p.pid => 0,
            0..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 3,
        };
        put_le(b, map, SIZES3[mc as usize]);
        put_le(b, pc, SIZES3[pcc as usize]);
        put_le(b, a.pid as u64, PID_SIZES[pidc as usize]);
        mc | pcc << 3 | pidc << 6
    });
    *p = Prev::of(a);
    (tag, sizes, ctx)
}

/// Writes the binary format.
///
/// Accesses of 1, 2, 4 or 8 bytes are gathered into access blocks of up to
/// [`BLOCK_MAX`]; a block is written out when it is full, before any other record, and
/// by [`flush`](Self::flush) (so [`into_inner`](Self::into_inner) loses nothing).
/// Dropping the writer without flushing loses what it buffered, as with any event
/// written since the last flush.
pub struct BinaryWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    prev: Prev,
    payload: Vec<u8>,
    /// The open block's access tags, size bytes and fields, kept apart until it closes
    /// because its length (which comes first) is known only then.
    block_tags: Vec<u8>,
    block_sizes: Vec<u8>,
    /// Context bytes of the open block's accesses that change map, pc or pid.
    block_ctx: Vec<u8>,
    block_data: Vec<u8>,
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
            block_tags: Vec::with_capacity(BLOCK_MAX),
            block_sizes: Vec::with_capacity(BLOCK_MAX),
            block_ctx: Vec::with_capacity(BLOCK_MAX),
            block_data: Vec::with_capacity(BLOCK_MAX * MAX_NARROW_FIELDS),
        })
    }

    /// Appends one event.
    pub fn write_event(&mut self, ev: &Event) -> io::Result<()> {
        match ev {
            Event::Access(a) if matches!(a.width, 1 | 2 | 4 | 8) => {
                let (tag, sizes, ctx) = put_block_fields(&mut self.prev, a, &mut self.block_data);
                self.block_tags.push(tag);
                self.block_sizes.push(sizes);
                self.block_ctx.extend(ctx);
                if self.block_tags.len() == BLOCK_MAX {
                    self.close_block();
                }
            }
            Event::Access(a) => {
                self.close_block();
                self.access(a);
            }
            _ => {
                self.close_block();
                self.rare(ev);
            }
        }
        if self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends one string instruction's run of accesses as one string record (readers
    /// give back the accesses it stands for). A run that is not
    /// [`valid`](StringAccesses::is_valid) is an `InvalidInput` error, nothing written.
    pub fn write_strings(&mut self, s: &StringAccesses) -> io::Result<()> {
        if !s.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a string record needs width 1, 2, 4 or 8, a count of 1..2^32 and its values",
            ));
        }
        self.close_block();
        let pl = &mut self.payload;
        pl.clear();
        put_var(pl, s.ts_ns);
        put_var(pl, u64::from(s.pid));
        put_var(pl, s.pc);
        pl.push(s.width);
        let mut flags = 0;
        if s.first.dir == Direction::Write {
            flags |= S_FIRST_WRITE;
        }
        if let Some(t) = &s.second {
            flags |= S_SECOND;
            if t.dir == Direction::Write {
                flags |= S_SECOND_WRITE;
            }
        }
        if s.down {
            flags |= S_DOWN;
        }
        if s.same {
            flags |= S_SAME;
        }
        pl.push(flags);
        put_var(pl, s.count);
        put_var(pl, zz(s.first.map_id));
        put_var(pl, s.first.phys);
        if let Some(t) = &s.second {
            put_var(pl, zz(t.map_id));
            put_var(pl, t.phys);
        }
        pl.extend_from_slice(&s.values);
        self.buf.push(T_STRING);
        put_var(&mut self.buf, pl.len() as u64);
        self.buf.extend_from_slice(pl);
        if self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Moves the open block, if any, into the output buffer.
    fn close_block(&mut self) {
        let n = self.block_tags.len();
        if n == 0 {
            return;
        }
        let b = &mut self.buf;
        // Blocks whose accesses keep map, pc and pid are version 2's (no context bytes).
        b.push(if self.block_ctx.is_empty() {
            T_BLOCK
        } else {
            T_CBLOCK
        });
        put_var(
            b,
            (1 + 2 * n + self.block_ctx.len() + self.block_data.len()) as u64,
        );
        b.push(n as u8);
        b.extend_from_slice(&self.block_tags);
        b.extend_from_slice(&self.block_sizes);
        b.extend_from_slice(&self.block_ctx);
        b.extend_from_slice(&self.block_data);
        self.block_tags.clear();
        self.block_sizes.clear();
        self.block_ctx.clear();
        self.block_data.clear();
    }

    /// A stand-alone access record (v1's only kind): for widths blocks do not hold.
    fn access(&mut self, a: &Access) {
        let b = &mut self.buf;
        let at = b.len();
        b.extend_from_slice(&[0, 0]);
        let width = a.width.clamp(1, MAX_WIDTH as u8);
        if !width.is_power_of_two() {
            b.push(width);
        }
        let (tag, sizes) = put_fields(&mut self.prev, a, b);
        b[at] = tag;
        b[at + 1] = sizes;
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
            Event::Kernel(k) => {
                put_var(pl, k.ts_ns);
                put_var(pl, zz(k.map_id));
                put_var(pl, k.phys);
                put_var(pl, k.len);
                pl.push((k.dir == Direction::Write) as u8);
                put_var(pl, k.pid as u64);
                pl.extend_from_slice(&k.call);
                T_KERNEL
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

    /// Writes out everything buffered, the open access block included: what was
    /// written before a flush is complete in the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.close_block();
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
/// Room for the longest access record (tag, size byte, width, time, address, 64 value
/// bytes, three varints of up to 10 bytes) and the 8-byte loads that decode it.
const MAX_ACCESS: usize = 3 + 8 + 8 + MAX_WIDTH + 3 * 10 + 8;

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
    /// Accesses of a decoded block not handed out yet (by `next_event`, or by a
    /// `read_batch` whose `max` is smaller than the block), from `pending_pos` on.
    pending: Vec<Event>,
    pending_pos: usize,
    /// A string record being expanded, and the index of its next access.
    string: Option<(StringAccesses, u64)>,
    lenient: bool,
    /// Damaged records skipped in lenient mode, and the first of them.
    skipped: u64,
    first_error: Option<ParseError>,
    /// Where lenient reading stopped, if it did: nothing is read after it.
    stop: Option<Stop>,
    /// Records of kinds this version does not know, and the first one's tag.
    unknown: u64,
    first_unknown: Option<u8>,
    /// A header cut short, reported at the first read.
    deferred: Option<Error>,
}

/// Decoding failure inside a record; turned into a [`ParseError`] by the caller.
struct Bad(&'static str);

#[inline(always)]
fn get_var(b: &[u8], pos: &mut usize) -> Result<u64, Bad> {
    // Fast path: decode from one unaligned 8-byte load without a data-dependent
    // branch per byte; lengths vary record to record and mispredicted branches
    // would otherwise dominate the cost of reading.
    if let Some(chunk) = b.get(*pos..*pos + 8) {
        if let Some((v, len)) = var8(chunk.try_into().expect("8 bytes")) {
            *pos += len;
            return Ok(v);
        }
    }
    get_var_slow(b, pos)
}

/// A varint from the 8 bytes at its start: its value and length, or `None` when it
/// is longer than 8 bytes.
#[inline(always)]
fn var8(chunk: [u8; 8]) -> Option<(u64, usize)> {
    let w = u64::from_le_bytes(chunk);
    let stops = !w & 0x8080_8080_8080_8080;
    if stops == 0 {
        return None;
    }
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
    Some((v, len))
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

/// An `n`-byte little-endian field at `pos` (`mask` keeps its `n` bytes).
#[inline(always)]
fn get_le(b: &[u8], pos: usize, n: usize, mask: u64) -> Result<u64, Bad> {
    if let Some(chunk) = b.get(pos..pos + 8) {
        return Ok(u64::from_le_bytes(chunk.try_into().expect("8 bytes")) & mask);
    }
    let s = b
        .get(pos..pos + n)
        .ok_or(Bad("the rest of an access record"))?;
    let mut w = [0u8; 8];
    w[..n].copy_from_slice(s);
    Ok(u64::from_le_bytes(w))
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
            pending: Vec::new(),
            pending_pos: 0,
            string: None,
            lenient: false,
            skipped: 0,
            first_error: None,
            stop: None,
            unknown: 0,
            first_unknown: None,
            deferred: None,
        };
        r.fill(14)?;
        if r.end < 8 || r.buf[..8] != MAGIC {
            return Err(r.bad(0, "the binary log header (magic, version, schema length)"));
        }
        // A header cut short (a tiny log cut in two) is damage like any other: an
        // error at the first read, or the end of a lenient reading, not of opening.
        if r.end < 14 {
            r.deferred = Some(r.bad(0, "the binary log header (magic, version, schema length)"));
            r.pos = r.end;
            return Ok(r);
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
            // `fill` may have moved the buffer: the schema starts at `pos`.
            r.deferred = Some(r.bad(r.pos, "the whole schema text"));
            r.pos = r.end;
            return Ok(r);
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

    /// In lenient mode a damaged record whose length is intact (any but an access
    /// record or block) is skipped and counted, and damage the reader cannot read past
    /// ends the log there instead of being an error: a damaged access record or
    /// block (every later access is a delta from it), a damaged record length, a
    /// truncated record, compressed data that stops decompressing. Everything before
    /// the damage is read; [`stop`](Self::stop) says where it was.
    pub fn set_lenient(&mut self, lenient: bool) {
        self.lenient = lenient;
    }

    /// Damaged records skipped in lenient mode.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The first damaged record skipped in lenient mode, with why.
    pub fn first_error(&self) -> Option<&ParseError> {
        self.first_error.as_ref()
    }

    /// Where lenient reading stopped before the end of the input, and why.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Records of kinds this version does not know (from a later version), which the
    /// format lets readers skip, and the first one's tag.
    pub fn unknown_records(&self) -> (u64, Option<u8>) {
        (self.unknown, self.first_unknown)
    }

    /// Whether lenient reading ends at `e` rather than failing.
    fn stops_at(&self, e: &Error) -> bool {
        self.lenient && (e.as_parse().is_some() || is_damage(e))
    }

    /// Ends lenient reading at `e`: records where, and counts the bytes after it.
    #[cold]
    #[inline(never)]
    fn halt(&mut self, e: Error) {
        let (error, offset) = match e {
            Error::Parse(p) => {
                let at = p.column;
                (*p, Some(at))
            }
            e => (
                ParseError {
                    line: self.record + 1,
                    column: self.base + self.pos as u64,
                    expected: "more of the log".into(),
                    found: format!("data that does not decompress ({e})"),
                    binary: true,
                },
                None,
            ),
        };
        // Bytes after the damage: those buffered and those still to come.
        let unread = offset.and_then(|at| {
            let mut total = self.base + self.end as u64;
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(k) => total += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            Some(total.saturating_sub(at))
        });
        self.pos = 0;
        self.end = 0;
        self.eof = true;
        self.pending.clear();
        self.pending_pos = 0;
        self.string = None;
        self.stop = Some(Stop {
            error,
            unread_bytes: unread,
        });
    }

    #[cold]
    #[inline(never)]
    fn bad(&self, at: usize, expected: &str) -> Error {
        self.bad_record(self.record, at, expected)
    }

    /// A [`ParseError`] at buffer position `at` naming record number `record`.
    #[cold]
    #[inline(never)]
    fn bad_record(&self, record: u64, at: usize, expected: &str) -> Error {
        let found = match self.buf.get(at..self.end.min(at + 8)) {
            Some(s) if !s.is_empty() => format!("bytes {s:02x?}"),
            _ => "end of file".to_string(),
        };
        ParseError {
            line: record,
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
        if self.stop.is_some() {
            return Ok(None);
        }
        let read = match self.deferred.take() {
            Some(e) => Err(e),
            None => self.next_event_inner(),
        };
        match read {
            Err(e) if self.stops_at(&e) => {
                self.halt(e);
                Ok(None)
            }
            r => r,
        }
    }

    fn next_event_inner(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(ev) = self.pending.get_mut(self.pending_pos) {
                self.pending_pos += 1;
                return Ok(Some(std::mem::replace(ev, Event::Access(BLANK))));
            }
            if let Some(a) = self.next_string_access() {
                return Ok(Some(Event::Access(a)));
            }
            if self.end - self.pos < MAX_ACCESS {
                self.fill(MAX_ACCESS)?;
                if self.pos == self.end {
                    return Ok(None);
                }
            }
            if matches!(self.buf[self.pos], T_BLOCK | T_CBLOCK) {
                // Staged whole: a damaged block must give none of its accesses.
                let blk = self.block_header()?;
                let mut staged = std::mem::take(&mut self.pending);
                let res = self.block(blk, &mut staged, 0);
                staged.truncate(if res.is_ok() { blk.count } else { 0 });
                self.pending = staged;
                self.pending_pos = 0;
                res?;
                continue;
            }
            self.record += 1;
            let start = self.pos;
            let tag = self.buf[start];
            if tag & 0x80 == 0 {
                let mut pos = start + 1;
                let mut a = BLANK;
                let b = &self.buf[..self.end];
                return match decode_access(b, &mut pos, tag, &mut self.prev, &mut a) {
                    Ok(()) => {
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
            if tag == T_STRING {
                match decode_string(payload) {
                    Ok(s) => {
                        self.string = Some((s, 0));
                        continue;
                    }
                    Err(Bad(what)) => {
                        let err = self.bad(start, what);
                        match err {
                            Error::Parse(p) if self.lenient => {
                                self.skipped += 1;
                                self.first_error.get_or_insert(*p);
                                continue;
                            }
                            err => return Err(err),
                        }
                    }
                }
            }
            match decode_rare(tag, payload) {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => {
                    self.unknown += 1;
                    self.first_unknown.get_or_insert(tag);
                    continue;
                }
                Err(Bad(what)) => {
                    let err = self.bad(start, what);
                    match err {
                        // Its length is intact and it holds no delta: the records
                        // after it read as they would without it.
                        Error::Parse(p) if self.lenient => {
                            self.skipped += 1;
                            self.first_error.get_or_insert(*p);
                            continue;
                        }
                        err => return Err(err),
                    }
                }
            }
        }
    }
}

impl<R: Read> BinaryReader<R> {
    /// Replaces the contents of `out` with the next events, at most `max` of them,
    /// and returns how many: 0 only at the end of the log (or when `max` is 0).
    ///
    /// The same events as [`next_event`](Self::next_event) gives, with less overhead
    /// per event: the fastest way to read a log. Pass the same `out` on every call:
    /// its elements are reused in place (an access is decoded straight into the
    /// previous call's access at the same index). On error, `out` holds the events
    /// read before the bad record.
    ///
    /// A call may return fewer than `max` events before the end of the log: it stops
    /// before an access block that would not fit, rather than split it.
    pub fn read_batch(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, Error> {
        if self.stop.is_some() {
            out.clear();
            return Ok(0);
        }
        let read = match self.deferred.take() {
            Some(e) => {
                out.clear();
                Err(e)
            }
            None => self.read_batch_inner(out, max),
        };
        match read {
            Err(e) if self.stops_at(&e) => {
                self.halt(e);
                Ok(out.len())
            }
            r => r,
        }
    }

    fn read_batch_inner(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, Error> {
        let mut n = 0;
        while n < max {
            if self.string.is_some() {
                while n < max {
                    let Some(a) = self.next_string_access() else {
                        break;
                    };
                    *access_slot(out, n) = a;
                    n += 1;
                }
                continue;
            }
            if self.pending_pos < self.pending.len() {
                let k = (self.pending.len() - self.pending_pos).min(max - n);
                for ev in &mut self.pending[self.pending_pos..self.pending_pos + k] {
                    if n < out.len() {
                        std::mem::swap(&mut out[n], ev);
                    } else {
                        out.push(std::mem::replace(ev, Event::Access(BLANK)));
                    }
                    n += 1;
                }
                self.pending_pos += k;
                continue;
            }
            let n0 = n;
            // Access records back to back while the buffer surely holds a whole one.
            let safe = self.end.saturating_sub(MAX_ACCESS);
            let b = &self.buf[..self.end];
            (self.pos, n) = decode_run(b, self.pos, safe, &mut self.prev, out, n, max);
            self.record += (n - n0) as u64;
            if n == max {
                break;
            }
            if let Err(e) = self.fill(MAX_ACCESS) {
                out.truncate(n);
                return Err(e);
            }
            if matches!(
                self.buf[self.pos..self.end].first(),
                Some(&(T_BLOCK | T_CBLOCK))
            ) {
                let blk = match self.block_header() {
                    Ok(blk) => blk,
                    Err(e) => {
                        out.truncate(n);
                        return Err(e);
                    }
                };
                let count = blk.count;
                if count > max - n && n > 0 {
                    // Whole blocks decode fastest: this one starts the next batch.
                    break;
                }
                if let Err(e) = self.block(blk, out, n) {
                    out.truncate(n);
                    return Err(e);
                }
                if n + count > max {
                    self.pending.clear();
                    self.pending.extend(out.drain(max..n + count));
                    self.pending_pos = 0;
                }
                n = max.min(n + count);
                continue;
            }
            match self.next_event_inner() {
                Ok(Some(ev)) => put_event(out, n, ev),
                Ok(None) => break,
                Err(e) => {
                    out.truncate(n);
                    return Err(e);
                }
            }
            n += 1;
        }
        out.truncate(n);
        Ok(n)
    }
}

impl<R> BinaryReader<R> {
    /// The next access of the string record being expanded, if any.
    fn next_string_access(&mut self) -> Option<Access> {
        let (s, i) = self.string.as_mut()?;
        if *i >= s.accesses_len() {
            self.string = None;
            return None;
        }
        let a = s.access(*i);
        *i += 1;
        Some(a)
    }
}

/// A string record's payload.
fn decode_string(b: &[u8]) -> Result<StringAccesses, Bad> {
    let mut pos = 0;
    let pos = &mut pos;
    let ts_ns = get_var(b, pos)?;
    let pid = get_u32(b, pos, "a pid that fits in 32 bits")?;
    let pc = get_var(b, pos)?;
    let fixed = get_bytes(b, pos, 2)?;
    let (width, flags) = (fixed[0], fixed[1]);
    if !matches!(width, 1 | 2 | 4 | 8) {
        return Err(Bad("a string element width of 1, 2, 4 or 8"));
    }
    if flags & !(S_FIRST_WRITE | S_SECOND | S_SECOND_WRITE | S_DOWN | S_SAME) != 0
        || (flags & S_SECOND == 0 && flags & S_SECOND_WRITE != 0)
    {
        return Err(Bad("string flags of the known bits"));
    }
    let count = get_var(b, pos)?;
    if count == 0 || count > MAX_STRING_COUNT {
        return Err(Bad("a string element count of 1..2^32"));
    }
    let dir = |write: bool| {
        if write {
            Direction::Write
        } else {
            Direction::Read
        }
    };
    let first = Stream {
        dir: dir(flags & S_FIRST_WRITE != 0),
        map_id: unzz(get_var(b, pos)?),
        phys: get_var(b, pos)?,
    };
    let second = if flags & S_SECOND != 0 {
        Some(Stream {
            dir: dir(flags & S_SECOND_WRITE != 0),
            map_id: unzz(get_var(b, pos)?),
            phys: get_var(b, pos)?,
        })
    } else {
        None
    };
    let same = flags & S_SAME != 0;
    let n = if same {
        u64::from(width)
    } else {
        count * u64::from(width)
    };
    if b.len() - *pos != n as usize {
        return Err(Bad("as many value bytes as the string's elements"));
    }
    Ok(StringAccesses {
        ts_ns,
        pid,
        pc,
        width,
        count,
        down: flags & S_DOWN != 0,
        first,
        second,
        values: b[*pos..].to_vec(),
        same,
    })
}

/// Where a buffered access block lies: its payload `buf[at..end]`, and its count.
#[derive(Clone, Copy)]
struct BlockAt {
    at: usize,
    end: usize,
    count: usize,
    /// A context block (`0x8a`): context bytes follow the size bytes.
    ctx: bool,
}

impl<R: Read> BinaryReader<R> {
    /// At an access block's tag: checks its header and buffers all of it, consuming
    /// nothing.
    fn block_header(&mut self) -> Result<BlockAt, Error> {
        let rec = self.record + 1;
        let start = self.pos;
        // Read now: `fill` below may move the buffer's contents.
        let ctx = self.buf[start] == T_CBLOCK;
        let mut pos = start + 1;
        let len = get_var(&self.buf[..self.end], &mut pos)
            .map_err(|Bad(w)| self.bad_record(rec, start, w))?;
        // Checked before buffering, so a damaged length cannot make the buffer grow.
        if len > MAX_BLOCK as u64 {
            return Err(self.bad_record(rec, start, "an access block of at most 14281 bytes"));
        }
        let head = pos - start;
        let total = head + len as usize;
        if self.end - start < total {
            self.fill(total)?;
            if self.end - self.pos < total {
                return Err(self.bad_record(
                    rec,
                    self.pos,
                    "the rest of a record (file truncated?)",
                ));
            }
        }
        let (at, end) = (self.pos + head, self.pos + total);
        let count = match self.buf[at..end].first() {
            None | Some(0) => {
                return Err(self.bad_record(rec, at, "an access count of 1..=255"));
            }
            Some(&c) => c as usize,
        };
        if end - at < 1 + 2 * count {
            return Err(self.bad_record(
                rec,
                self.pos,
                "a block length that holds its accesses' tags and size bytes",
            ));
        }
        Ok(BlockAt {
            at,
            end,
            count,
            ctx,
        })
    }

    /// Decodes the block [`block_header`](Self::block_header) found into
    /// `out[n..n + count]` (growing `out` as needed) and consumes it. On error nothing
    /// is consumed and the delta state is unchanged; `out` past `n` is then garbage,
    /// for the caller to truncate.
    fn block(&mut self, blk: BlockAt, out: &mut Vec<Event>, n: usize) -> Result<(), Error> {
        let mut p = self.prev;
        match decode_block(&self.buf[blk.at..blk.end], blk.ctx, &mut p, out, n) {
            Ok(()) => {
                self.prev = p;
                self.pos = blk.end;
                self.record += blk.count as u64;
                Ok(())
            }
            Err(BlockBad { at, index, what }) => {
                let rec = self.record + 1 + index as u64;
                Err(self.bad_record(rec, blk.at + at, what))
            }
        }
    }
}

/// Why a block is damaged: the offset in its payload, the index of the access, and
/// what was expected there.
struct BlockBad {
    at: usize,
    index: usize,
    what: &'static str,
}

/// Bytes [`decode_block`] may load from an access's data offset: 8-byte loads at
/// offsets up to 31 (the value's offset, at most 16, masked to 5 bits).
const FIELDS_WINDOW: usize = 40;

/// The `FIELDS_WINDOW` bytes of a block's data at `off`, for fields of `len` bytes
/// there: from `data` itself, or near its end from `tail` (its last `tail_at..` bytes,
/// zero-padded); `None` when the fields run past the data.
#[inline(always)]
fn window<'a>(
    data: &'a [u8],
    tail: &'a [u8; 2 * FIELDS_WINDOW],
    tail_at: usize,
    off: usize,
    len: usize,
) -> Option<&'a [u8; FIELDS_WINDOW]> {
    match data.get(off..off + FIELDS_WINDOW) {
        Some(w) => Some(w.try_into().expect("window")),
        None if off + len <= data.len() => Some(
            tail[off - tail_at..][..FIELDS_WINDOW]
                .try_into()
                .expect("window"),
        ),
        None => None,
    }
}

#[inline(always)]
fn le64(w: &[u8; FIELDS_WINDOW], o: usize) -> u64 {
    debug_assert!(o + 8 <= FIELDS_WINDOW);
    u64::from_le_bytes(w[o..o + 8].try_into().expect("8 bytes"))
}

/// Decodes an access block's payload (count, tags, sizes, data; its header already
/// checked) into `out[n..n + count]`, from the delta state `p`.
///
/// The tags and size bytes give every access's field lengths without looking at the
/// data, so the only dependency from one access to the next is the data offset (plus
/// the rare varints): the loop's loads overlap across accesses, unlike v1 records,
/// where the next record's tag is found only after decoding this one's size byte.
#[inline(never)]
fn decode_block(
    b: &[u8],
    ctx: bool,
    p: &mut Prev,
    out: &mut Vec<Event>,
    n: usize,
) -> Result<(), BlockBad> {
    let count = b[0] as usize;
    let tags = &b[1..1 + count];
    // Checked up front, in a loop the compiler vectorises, so that the decoding loop
    // trusts every tag; whether any has varints (or context bytes) picks the loop.
    let (mut any, mut all) = (0u8, 0xffu8);
    for &t in tags {
        any |= t;
        all &= (t & 0x84 == 0 && t & A_BASE != 0) as u8 * 0xff;
    }
    if all == 0 {
        let i = tags
            .iter()
            .position(|&t| t & 0x84 != 0 || t & A_BASE == 0)
            .unwrap_or(0);
        return Err(BlockBad {
            at: 1 + i,
            index: i,
            what: "an access tag of width 1, 2, 4 or 8 in a block",
        });
    }
    // A context block's context bytes: one for each access whose tag has M or C.
    let ctxs = if ctx {
        tags.iter().filter(|&&t| t & (A_MAP | A_CTX) != 0).count()
    } else {
        0
    };
    if b.len() < 1 + 2 * count + ctxs {
        return Err(BlockBad {
            at: b.len(),
            index: count - 1,
            what: "a block length that holds its accesses' context bytes",
        });
    }
    // Grown first, so that the decoding loop makes no call to grow `out`: a call
    // would evict the loop's state from registers.
    if out.len() < n + count {
        out.resize(n + count, Event::Access(BLANK));
    }
    let slots = &mut out[n..n + count];
    match (any & (A_MAP | A_CTX) == 0, ctx) {
        (true, _) => decode_accesses::<PLAIN>(b, ctxs, p, slots),
        (false, false) => decode_accesses::<VARINTS>(b, ctxs, p, slots),
        (false, true) => decode_accesses::<CONTEXT>(b, ctxs, p, slots),
    }
}

/// How a block's accesses carry map id, pc and pid: not at all (they keep the previous
/// access's), as varints after their fields (`0x89`), or as fields sized by context
/// bytes (`0x8a`).
const PLAIN: u8 = 0;
const VARINTS: u8 = 1;
const CONTEXT: u8 = 2;

/// What a context byte says of an access's map-id delta, pc delta and pid fields.
struct CtxInfo {
    /// Keeps each field's bytes of an 8-byte load.
    masks: [u64; 3],
    /// Offsets of the pc and pid fields after the map-id delta.
    pc_at: u8,
    pid_at: u8,
    /// Length of the three fields.
    len: u8,
    /// Whether the pid is there (otherwise it is the previous access's).
    has_pid: bool,
}

/// [`CtxInfo`] by context byte `M | P << 3 | D << 6`: map and pc size codes as the size
/// byte's `P` and `V`, pid size code 0..3 for 0 (unchanged), 1, 2 or 4 bytes.
const CTX_INFO: [CtxInfo; 256] = {
    const NONE: CtxInfo = CtxInfo {
        masks: [0; 3],
        pc_at: 0,
        pid_at: 0,
        len: 0,
        has_pid: false,
    };
    let mut t = [NONE; 256];
    let mut c = 0;
    while c < 256 {
        let mn = SIZES3[c & 7] as u8;
        let pn = SIZES3[c >> 3 & 7] as u8;
        let dn = PID_SIZES[c >> 6] as u8;
        t[c] = CtxInfo {
            masks: [
                MASKS3[c & 7],
                MASKS3[c >> 3 & 7],
                [0, 0xff, 0xffff, 0xffff_ffff][c >> 6],
            ],
            pc_at: mn,
            pid_at: mn + pn,
            len: mn + pn + dn,
            has_pid: c >> 6 != 0,
        };
        c += 1;
    }
    t
};

/// What a size byte says of an access's time, address and value fields.
struct SizeInfo {
    /// Keeps each field's bytes of an 8-byte load.
    masks: [u64; 3],
    /// Offsets of the address and value fields.
    p_at: u8,
    v_at: u8,
    /// Length of the three fields.
    fields: u8,
}

/// [`SizeInfo`] by size byte: one table row instead of decoding three bit fields.
const SIZE_INFO: [SizeInfo; 256] = {
    const NONE: SizeInfo = SizeInfo {
        masks: [0; 3],
        p_at: 0,
        v_at: 0,
        fields: 0,
    };
    let mut t = [NONE; 256];
    let mut s = 0;
    while s < 256 {
        let tn = SIZES2[s & 3] as u8;
        let pn = SIZES3[s >> 2 & 7] as u8;
        let vn = SIZES3[s >> 5] as u8;
        t[s] = SizeInfo {
            masks: [MASKS2[s & 3], MASKS3[s >> 2 & 7], MASKS3[s >> 5]],
            p_at: tn,
            v_at: tn + pn,
            fields: tn + pn + vn,
        };
        s += 1;
    }
    t
};

/// Direction and width by the low 4 bits of a block's access tag.
const DIR_WIDTH: [(Direction, u8); 16] = {
    let mut t = [(Direction::Read, 1); 16];
    let mut i = 0;
    while i < 16 {
        let dir = if i as u8 & A_WRITE != 0 {
            Direction::Write
        } else {
            Direction::Read
        };
        t[i] = (dir, 1 << (i & 3));
        i += 1;
    }
    t
};

/// The loop of [`decode_block`] over checked tags and prepared slots; `VARINTS`: some
/// access has map or context varints (otherwise map id, pc and pid stay as they are).
#[inline(always)]
fn decode_accesses<const MODE: u8>(
    b: &[u8],
    nctx: usize,
    p: &mut Prev,
    slots: &mut [Event],
) -> Result<(), BlockBad> {
    let count = b[0] as usize;
    let (tags, rest) = b[1..].split_at(count);
    let (sizes, rest) = rest.split_at(count);
    let (ctxs, data) = rest.split_at(nctx);
    let mut ctxs = ctxs.iter();
    let data_at = 1 + 2 * count + nctx;
    // The data's last bytes, zero-padded to a whole window for the accesses there.
    let tail_at = data.len().saturating_sub(FIELDS_WINDOW);
    let mut tail = [0u8; 2 * FIELDS_WINDOW];
    tail[..data.len() - tail_at].copy_from_slice(&data[tail_at..]);
    let mut q = *p;
    let mut off = 0usize;
    for (i, ((&tag, &sizes), ev)) in tags.iter().zip(sizes).zip(slots).enumerate() {
        let bad = |at: usize, what| BlockBad {
            at: data_at + at,
            index: i,
            what,
        };
        let info = &SIZE_INFO[sizes as usize];
        let fields = info.fields;
        let Some(w) = window(data, &tail, tail_at, off, fields as usize) else {
            return Err(bad(off, "an access's fields inside its block"));
        };
        // The masked offsets (8 and 16 at most) bound the loads inside the window
        // without a check.
        let code = le64(w, 0) & info.masks[0];
        let dphys = le64(w, info.p_at as usize & 15) & info.masks[1];
        let value = le64(w, info.v_at as usize & 31) & info.masks[2];
        let field_at = off;
        off += fields as usize;
        // A microsecond delta whose nanoseconds overflow is refused, as in
        // `decode_access`.
        // A branch, not a select: logs keep to one unit nearly throughout.
        let dt = unzz(code >> 1);
        let dt = if code & 1 == 1 {
            dt.checked_mul(1000)
                .ok_or_else(|| bad(field_at, "a time delta that fits in 64 bits"))?
        } else {
            dt
        };
        if MODE == CONTEXT && tag & (A_MAP | A_CTX) != 0 {
            // The caller counted one context byte for each such tag.
            let c = *ctxs.next().ok_or_else(|| bad(off, "a context byte"))?;
            let ci = &CTX_INFO[c as usize];
            let Some(w) = window(data, &tail, tail_at, off, ci.len as usize) else {
                return Err(bad(off, "an access's context fields inside its block"));
            };
            // Masked offsets (8 and 16 at most) bound the loads inside the window.
            q.map_id = q.map_id.wrapping_add(unzz(le64(w, 0) & ci.masks[0]));
            let dpc = le64(w, ci.pc_at as usize & 15) & ci.masks[1];
            q.pc = q.pc.wrapping_add(unzz(dpc) as u64);
            if ci.has_pid {
                q.pid = (le64(w, ci.pid_at as usize & 31) & ci.masks[2]) as u32;
            }
            off += ci.len as usize;
        }
        if MODE == VARINTS && tag & A_MAP != 0 {
            let (d, len) = block_var(data, off).map_err(|(at, what)| bad(at, what))?;
            q.map_id = q.map_id.wrapping_add(unzz(d));
            off += len;
        }
        if MODE == VARINTS && tag & A_CTX != 0 {
            let (d, len) = block_var(data, off).map_err(|(at, what)| bad(at, what))?;
            q.pc = q.pc.wrapping_add(unzz(d) as u64);
            off += len;
            let (pid, len) = block_var(data, off).map_err(|(at, what)| bad(at, what))?;
            q.pid = u32::try_from(pid).map_err(|_| bad(off, "a pid that fits in 32 bits"))?;
            off += len;
        }
        q.ts = q.ts.wrapping_add(dt as u64);
        q.phys = q.phys.wrapping_add(unzz(dphys) as u64);
        let (dir, width) = DIR_WIDTH[(tag & 15) as usize];
        match ev {
            Event::Access(a) if a.wide.is_none() => {
                a.dir = dir;
                a.width = width;
                a.pid = q.pid;
                a.ts_ns = q.ts;
                a.map_id = q.map_id;
                a.phys = q.phys;
                a.value = value;
                a.pc = q.pc;
            }
            _ => replace_slot(
                ev,
                Access {
                    dir,
                    width,
                    pid: q.pid,
                    ts_ns: q.ts,
                    map_id: q.map_id,
                    phys: q.phys,
                    value,
                    pc: q.pc,
                    wide: None,
                },
            ),
        }
    }
    if off != data.len() {
        return Err(BlockBad {
            at: data_at + off,
            index: count - 1,
            what: "the end of the block's data after its accesses' fields",
        });
    }
    *p = q;
    Ok(())
}

/// Puts `a` in place of a slot that held another event (or a wide access): out of
/// line, so that dropping the old event costs the decoding loop nothing.
#[cold]
#[inline(never)]
fn replace_slot(ev: &mut Event, a: Access) {
    *ev = Event::Access(a);
}

/// A varint at `data[off..]`: its value and length; on error, its offset and what
/// was expected.
///
/// By value, unlike [`get_var`], so that `decode_block`'s offset never has its
/// address taken and stays in a register.
#[inline(always)]
fn block_var(data: &[u8], off: usize) -> Result<(u64, usize), (usize, &'static str)> {
    if let Some(chunk) = data.get(off..off + 8) {
        if let Some(v) = var8(chunk.try_into().expect("8 bytes")) {
            return Ok(v);
        }
    }
    block_var_slow(data, off)
}

/// [`block_var`] for varints of more than 8 bytes or near the end of the data.
#[inline(never)]
fn block_var_slow(data: &[u8], off: usize) -> Result<(u64, usize), (usize, &'static str)> {
    let mut pos = off;
    match get_var_slow(data, &mut pos) {
        Ok(v) => Ok((v, pos - off)),
        Err(Bad(what)) => Err((off, what)),
    }
}

/// Decodes access records from `b[pos..]` into `out[n..max]` while they start before
/// `safe`: the new position and count. Stops before any other record, and before a
/// damaged one (for [`BinaryReader::next_event`] to report). Out of line, so that its
/// state stays in registers.
#[inline(never)]
fn decode_run(
    b: &[u8],
    mut pos: usize,
    safe: usize,
    prev: &mut Prev,
    out: &mut Vec<Event>,
    mut n: usize,
    max: usize,
) -> (usize, usize) {
    let mut p = *prev;
    while n < max && pos < safe {
        let slot = access_slot(out, n);
        let window: &[u8; WINDOW] = b[pos..pos + WINDOW].try_into().expect("in the buffer");
        if let Some(len) = decode_narrow(window, &mut p, slot) {
            pos += len;
        } else {
            let tag = b[pos];
            let mut q = pos + 1;
            if tag & 0x80 != 0 || decode_access(b, &mut q, tag, &mut p, slot).is_err() {
                break;
            }
            pos = q;
        }
        n += 1;
    }
    *prev = p;
    (pos, n)
}

/// Bytes [`decode_narrow`] may look at: the longest access record of width 8 or less,
/// and the 8-byte loads that decode it.
const WINDOW: usize = 64;

#[inline(always)]
fn at(r: &[u8; WINDOW], o: usize) -> u64 {
    u64::from_le_bytes(r[o..o + 8].try_into().expect("8 bytes"))
}

/// The common access record (width 1, 2, 4 or 8) from the `WINDOW` bytes at its tag:
/// the record's length, or `None` for anything else ([`decode_access`] handles it).
/// The field offsets follow from the first two bytes by arithmetic the compiler can
/// bound, so the loads need no bounds checks and do not wait on each other.
#[inline(always)]
fn decode_narrow(r: &[u8; WINDOW], p: &mut Prev, out: &mut Access) -> Option<usize> {
    let tag = r[0];
    if tag & 0x84 != 0 || tag & A_BASE == 0 {
        return None;
    }
    let sizes = r[1];
    let tn = 1usize << (sizes & 3);
    let pcode = (sizes >> 2 & 7) as usize;
    let pn = pcode + (pcode == 7) as usize;
    let vcode = (sizes >> 5) as usize;
    let vn = vcode + (vcode == 7) as usize;
    // Offsets by arithmetic (the next record waits on them), masks from tables.
    let code = at(r, 2) & MASKS2[(sizes & 3) as usize];
    let dphys = at(r, 2 + tn) & MASKS3[pcode];
    let value = at(r, 2 + tn + pn) & MASKS3[vcode];
    let mut o = 2 + tn + pn + vn;
    let unit = if code & 1 == 1 { 1000 } else { 1 };
    let dt = unzz(code >> 1).checked_mul(unit)?;
    let (mut map_id, mut pc, mut pid) = (p.map_id, p.pc, p.pid);
    if tag & (A_MAP | A_CTX) != 0 {
        let r = &r[..];
        if tag & A_MAP != 0 {
            map_id = map_id.wrapping_add(unzz(get_var(r, &mut o).ok()?));
        }
        if tag & A_CTX != 0 {
            pc = pc.wrapping_add(unzz(get_var(r, &mut o).ok()?) as u64);
            pid = u32::try_from(get_var(r, &mut o).ok()?).ok()?;
        }
    }
    p.ts = p.ts.wrapping_add(dt as u64);
    p.phys = p.phys.wrapping_add(unzz(dphys) as u64);
    p.map_id = map_id;
    p.pc = pc;
    p.pid = pid;
    out.dir = if tag & A_WRITE != 0 {
        Direction::Write
    } else {
        Direction::Read
    };
    out.width = 1 << (tag & 3);
    out.pid = pid;
    out.ts_ns = p.ts;
    out.map_id = map_id;
    out.phys = p.phys;
    out.value = value;
    out.pc = pc;
    out.wide = None;
    Some(o)
}

#[inline(always)]
fn decode_access(
    b: &[u8],
    pos: &mut usize,
    tag: u8,
    p: &mut Prev,
    out: &mut Access,
) -> Result<(), Bad> {
    if tag & A_BASE == 0 {
        return Err(Bad("a record tag (0x10..=0x7f or 0x80..=0xff)"));
    }
    let wcode = tag & 7;
    let sizes = *b.get(*pos).ok_or(Bad("a size byte"))?;
    *pos += 1;
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
    let (tc, pcode, vc) = (
        (sizes & 3) as usize,
        (sizes >> 2 & 7) as usize,
        (sizes >> 5) as usize,
    );
    let code = get_le(b, *pos, SIZES2[tc], MASKS2[tc])?;
    let p_phys = *pos + SIZES2[tc];
    let dphys = get_le(b, p_phys, SIZES3[pcode], MASKS3[pcode])?;
    let p_value = p_phys + SIZES3[pcode];
    // A microsecond delta whose nanoseconds overflow is refused: the writer never
    // makes one, and accepting it would give a delta the writer cannot write back.
    let dt = if code & 1 == 1 {
        unzz(code >> 1)
            .checked_mul(1000)
            .ok_or(Bad("a time delta that fits in 64 bits"))?
    } else {
        unzz(code >> 1)
    };
    let ts_ns = p.ts.wrapping_add(dt as u64);
    let phys = p.phys.wrapping_add(unzz(dphys) as u64);
    let (value, wide) = if width <= 8 {
        *pos = p_value + SIZES3[vc];
        (get_le(b, p_value, SIZES3[vc], MASKS3[vc])?, None)
    } else {
        if vc != 0 {
            return Err(Bad("value size code 0 in a wide access"));
        }
        *pos = p_value;
        let raw = get_bytes(b, pos, width as usize)?;
        let mut bytes = Box::new([0u8; MAX_WIDTH]);
        bytes[..raw.len()].copy_from_slice(raw);
        let first = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        (first, Some(bytes))
    };
    let map_id = if tag & A_MAP != 0 {
        p.map_id.wrapping_add(unzz(get_var(b, pos)?))
    } else {
        p.map_id
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
    out.dir = dir;
    out.width = width;
    out.pid = pid;
    out.ts_ns = ts_ns;
    out.map_id = map_id;
    out.phys = phys;
    out.value = value;
    out.pc = pc;
    out.wide = wide;
    Ok(())
}

/// An access whose fields the decoders overwrite.
pub(crate) const BLANK: Access = Access {
    dir: Direction::Read,
    width: 1,
    pid: 0,
    ts_ns: 0,
    map_id: 0,
    phys: 0,
    value: 0,
    pc: 0,
    wide: None,
};

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
        T_KERNEL => {
            let ts_ns = get_var(b, pos)?;
            let map_id = unzz(get_var(b, pos)?);
            let phys = get_var(b, pos)?;
            let len = get_var(b, pos)?;
            let dir = match get_bytes(b, pos, 1)?[0] {
                0 => Direction::Read,
                1 => Direction::Write,
                _ => return Err(Bad("a direction 0 (kernel read) or 1 (kernel wrote)")),
            };
            let pid = get_u32(b, pos, "a pid that fits in 32 bits")?;
            let k = KernelAccess {
                ts_ns,
                dir,
                len,
                map_id,
                phys,
                call: b[*pos..].to_vec(),
                pid,
            };
            // Only what the text format can carry, so that conversions stay exact.
            if KernelAccess::parse(ts_ns, &k.text()).as_ref() != Some(&k) {
                return Err(Bad(
                    "a kernel access of 1 byte or more by a call named [a-z0-9_]{1,32}",
                ));
            }
            Event::Kernel(k)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_table_rows_match_the_size_codes() {
        for s in 0..256usize {
            let (tn, pn, vn) = (SIZES2[s & 3], SIZES3[s >> 2 & 7], SIZES3[s >> 5]);
            let row = &SIZE_INFO[s];
            assert_eq!(
                (row.p_at, row.v_at, row.fields),
                (tn as u8, (tn + pn) as u8, (tn + pn + vn) as u8)
            );
            assert_eq!(
                row.masks,
                [MASKS2[s & 3], MASKS3[s >> 2 & 7], MASKS3[s >> 5]]
            );
            // The masked offsets the decoder loads at are the offsets themselves.
            assert_eq!(row.p_at as usize & 15, tn);
            assert_eq!(row.v_at as usize & 31, tn + pn);
            assert!(tn + pn + 8 <= FIELDS_WINDOW);
        }
        for tag in 0..16u8 {
            let dir = if tag & A_WRITE != 0 {
                Direction::Write
            } else {
                Direction::Read
            };
            assert_eq!(DIR_WIDTH[tag as usize], (dir, 1 << (tag & 3)));
        }
    }

    #[test]
    fn varints_decode_the_same_by_word_and_byte_by_byte() {
        let mut values = vec![0u64, 1, 127, 128, 300, u32::MAX as u64, 1 << 55, u64::MAX];
        values.extend((0..64).map(|s| (1u64 << s) - 1));
        for v in values {
            let mut b = Vec::new();
            put_var(&mut b, v);
            let n = b.len();
            b.resize(n + 8, 0xaa);
            let mut pos = 0;
            assert_eq!(get_var_slow(&b, &mut pos).ok(), Some(v));
            assert_eq!(pos, n);
            assert_eq!(block_var(&b, 0).ok(), Some((v, n)));
            assert_eq!(block_var(&b[..n], 0).ok(), Some((v, n)), "at the end");
            let mut pos = 0;
            assert_eq!(get_var(&b, &mut pos).ok(), Some(v));
            assert_eq!(pos, n);
        }
    }

    #[test]
    fn writer_closes_the_block_before_a_stand_alone_access() {
        let mut w = BinaryWriter::new(Vec::new()).unwrap();
        let narrow = Access::new(Direction::Read, 4, 1000, 0, 0x10, 5);
        let odd = Access::new(Direction::Write, 3, 2000, 0, 0x14, 0x10203);
        w.write_event(&Event::Access(narrow)).unwrap();
        w.write_event(&Event::Access(odd)).unwrap();
        let out = w.into_inner().unwrap();
        let hdr = 14 + SCHEMA.len();
        #[rustfmt::skip]
        let expect = [
            T_BLOCK, 6, 1, 0x12, 0x24, 0x05, 0x20, 0x05,
            // W, WWW = 7 (width byte 3 after the size byte), 1-byte time and
            // address, 3-byte value.
            0x1f, 0x64, 3, 0x05, 0x08, 0x03, 0x02, 0x01,
        ];
        assert_eq!(out[hdr..], expect);
    }
}
