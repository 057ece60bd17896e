//! The kernel mmiotrace text format (`VERSION 20070824`): one line per record.
//!
//! The parser accepts exactly the canonical encodings the kernel writes (lowercase hex
//! without leading zeros, six-digit microseconds, single spaces), so that every line
//! it accepts is written back byte for byte; anything else is an error that names the
//! column and what was expected.

use crate::error::{excerpt, ParseError};
use crate::event::*;

/// Parses one line (without its newline) into an event.
#[inline]
pub fn parse_line(line: &[u8], line_no: u64) -> Result<Event, ParseError> {
    let mut c = Cursor {
        s: line,
        pos: 0,
        line_no,
    };
    let ev = match line.first() {
        Some(b'R') if line.get(1) == Some(&b' ') => c.access(Direction::Read)?,
        Some(b'W') if line.get(1) == Some(&b' ') => c.access(Direction::Write)?,
        Some(b'#') => return Ok(Event::Verbatim(line.to_vec())),
        _ => c.rare()?,
    };
    Ok(ev)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
    line_no: u64,
}

const fn hexval(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => 0xff,
    }
}

static HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = hexval(i as u8);
        i += 1;
    }
    t
};

impl<'a> Cursor<'a> {
    #[cold]
    #[inline(never)]
    fn err2(&self, what: &str, how: &str) -> ParseError {
        self.err(&format!("{what} {how}"))
    }

    #[cold]
    #[inline(never)]
    fn err(&self, expected: &str) -> ParseError {
        ParseError {
            line: self.line_no,
            column: self.pos as u64 + 1,
            expected: expected.to_string(),
            found: excerpt(&self.s[self.pos.min(self.s.len())..]),
            binary: false,
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.s[self.pos..]
    }

    fn lit(&mut self, lit: &[u8], expected: &str) -> Result<(), ParseError> {
        if self.rest().starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }

    #[inline(always)]
    fn space(&mut self) -> Result<(), ParseError> {
        if self.s.get(self.pos) == Some(&b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err("a single space"))
        }
    }

    fn end(&self) -> Result<(), ParseError> {
        if self.pos == self.s.len() {
            Ok(())
        } else {
            Err(self.err("end of line"))
        }
    }

    /// Unsigned decimal without leading zeros.
    #[inline(always)]
    fn dec(&mut self, what: &str) -> Result<u64, ParseError> {
        let start = self.pos;
        let mut v: u64 = 0;
        while let Some(&b) = self.s.get(self.pos) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = match v.checked_mul(10).and_then(|v| v.checked_add(d as u64)) {
                Some(v) => v,
                None => {
                    self.pos = start;
                    return Err(self.err2(what, "(decimal, fits in 64 bits)"));
                }
            };
            self.pos += 1;
        }
        let n = self.pos - start;
        if n == 0 || (n > 1 && self.s[start] == b'0') {
            self.pos = start;
            return Err(self.err2(what, "(decimal without leading zeros)"));
        }
        Ok(v)
    }

    #[inline(always)]
    fn dec_u32(&mut self, what: &str) -> Result<u32, ParseError> {
        let start = self.pos;
        let v = self.dec(what)?;
        u32::try_from(v).map_err(|_| {
            self.pos = start;
            self.err2(what, "(decimal, fits in 32 bits)")
        })
    }

    /// Signed decimal map id (`-1` occurs).
    #[inline(always)]
    fn map_id(&mut self) -> Result<i64, ParseError> {
        let start = self.pos;
        let neg = self.s.get(self.pos) == Some(&b'-');
        if neg {
            self.pos += 1;
        }
        let v = self.dec("map id")?;
        let bad = |c: &mut Self| {
            c.pos = start;
            c.err("map id (signed decimal)")
        };
        if neg {
            if v == 0 || v > i64::MAX as u64 + 1 {
                return Err(bad(self));
            }
            Ok((v as i64).wrapping_neg())
        } else {
            i64::try_from(v).map_err(|_| bad(self))
        }
    }

    /// Lowercase hex digits without leading zeros, at most 16.
    #[inline(always)]
    fn bare_hex(&mut self, what: &str) -> Result<u64, ParseError> {
        let start = self.pos;
        let mut v: u64 = 0;
        while let Some(&b) = self.s.get(self.pos) {
            let d = HEX[b as usize];
            if d == 0xff {
                break;
            }
            v = (v << 4) | d as u64;
            self.pos += 1;
        }
        let n = self.pos - start;
        if n == 0 || n > 16 || (n > 1 && self.s[start] == b'0') {
            self.pos = start;
            return Err(self.err2(
                what,
                "(lowercase hexadecimal, no leading zeros, at most 16 digits)",
            ));
        }
        Ok(v)
    }

    #[inline(always)]
    fn hex0x(&mut self, what: &str) -> Result<u64, ParseError> {
        if self.s.get(self.pos) == Some(&b'0') && self.s.get(self.pos + 1) == Some(&b'x') {
            self.pos += 2;
            self.bare_hex(what)
        } else {
            Err(self.err2(what, "(`0x` followed by lowercase hexadecimal)"))
        }
    }

    fn fixed_hex(&mut self, digits: usize, what: &str) -> Result<u64, ParseError> {
        let start = self.pos;
        let mut v = 0u64;
        for _ in 0..digits {
            let d = self.s.get(self.pos).map_or(0xff, |&b| HEX[b as usize]);
            if d == 0xff {
                self.pos = start;
                return Err(self.err2(what, "({digits} lowercase hex digits)"));
            }
            v = (v << 4) | d as u64;
            self.pos += 1;
        }
        Ok(v)
    }

    /// `S.UUUUUU` into nanoseconds.
    #[inline(always)]
    fn ts(&mut self) -> Result<u64, ParseError> {
        let start = self.pos;
        let secs = self.dec("timestamp seconds")?;
        if self.s.get(self.pos) != Some(&b'.') {
            return Err(self.err("`.` and six digits of microseconds in the timestamp"));
        }
        self.pos += 1;
        let mut us = 0u64;
        for _ in 0..6 {
            match self.s.get(self.pos) {
                Some(&b) if b.is_ascii_digit() => {
                    us = us * 10 + (b - b'0') as u64;
                    self.pos += 1;
                }
                _ => return Err(self.err("six digits of microseconds in the timestamp")),
            }
        }
        secs.checked_mul(1_000_000)
            .and_then(|s| s.checked_add(us))
            .and_then(|u| u.checked_mul(1000))
            .ok_or_else(|| {
                self.pos = start;
                self.err("timestamp that fits in 64-bit nanoseconds")
            })
    }

    /// ` PC PID` and the end of the line: how every record but MARK ends.
    #[inline(always)]
    fn pc_pid_end(&mut self) -> Result<(u64, u32), ParseError> {
        self.space()?;
        let pc = self.hex0x("program counter")?;
        self.space()?;
        let pid = self.dec_u32("pid")?;
        self.end()?;
        Ok((pc, pid))
    }

    #[inline(always)]
    fn access(&mut self, dir: Direction) -> Result<Event, ParseError> {
        self.pos = 2;
        let wstart = self.pos;
        let width = self.dec("access width")?;
        if !(1..=8).contains(&width) {
            self.pos = wstart;
            return Err(self.err("access width 1..8 (bytes)"));
        }
        self.space()?;
        let ts_ns = self.ts()?;
        self.space()?;
        let map_id = self.map_id()?;
        self.space()?;
        let phys = self.hex0x("physical address")?;
        self.space()?;
        let value = self.hex0x("value")?;
        let (pc, pid) = self.pc_pid_end()?;
        let mut a = Access::new(dir, width as u8, ts_ns, map_id, phys, value);
        a.pc = pc;
        a.pid = pid;
        Ok(Event::Access(a))
    }

    #[inline(never)]
    fn rare(&mut self) -> Result<Event, ParseError> {
        let r = self.rest();
        if r.starts_with(b"MAP ") {
            self.pos += 4;
            let ts_ns = self.ts()?;
            self.space()?;
            let id = self.map_id()?;
            self.space()?;
            let phys = self.hex0x("physical address")?;
            self.space()?;
            let virt = self.hex0x("virtual address")?;
            self.space()?;
            let len = self.hex0x("length")?;
            let (pc, pid) = self.pc_pid_end()?;
            Ok(Event::Map(Map {
                ts_ns,
                id,
                phys,
                virt,
                len,
                pc,
                pid,
            }))
        } else if r.starts_with(b"UNMAP ") {
            self.pos += 6;
            let ts_ns = self.ts()?;
            self.space()?;
            let id = self.map_id()?;
            let (pc, pid) = self.pc_pid_end()?;
            Ok(Event::Unmap(Unmap { ts_ns, id, pc, pid }))
        } else if r.starts_with(b"UNKNOWN ") {
            self.pos += 8;
            let ts_ns = self.ts()?;
            self.space()?;
            let map_id = self.map_id()?;
            self.space()?;
            let phys = self.hex0x("physical address")?;
            self.space()?;
            let mut opcode = [0u8; 3];
            for (i, b) in opcode.iter_mut().enumerate() {
                if i > 0 {
                    self.lit(b",", "`,` between instruction bytes")?;
                }
                *b = self.fixed_hex(2, "instruction byte")? as u8;
            }
            let (pc, pid) = self.pc_pid_end()?;
            Ok(Event::Unknown(Unknown {
                ts_ns,
                map_id,
                phys,
                opcode,
                pc,
                pid,
            }))
        } else if r.starts_with(b"MARK ") {
            self.pos += 5;
            let ts_ns = self.ts()?;
            self.space()?;
            let text = self.rest();
            if ts_ns == 0 {
                if let Some(n) = lost_count(text) {
                    return Ok(Event::LostEvents(n));
                }
            }
            Ok(Event::Mark(Mark {
                ts_ns,
                text: text.to_vec(),
            }))
        } else if r.starts_with(b"PCIDEV ") {
            self.pos += 7;
            self.pcidev()
        } else if r.starts_with(b"VERSION ") {
            Ok(Event::Version(r[8..].to_vec()))
        } else if r.starts_with(b"CPU:") {
            self.pos += 4;
            let cpu = self.dec_u32("CPU number")?;
            self.lit(b" [LOST ", "` [LOST `")?;
            let count = if self.rest() == b"EVENTS]" {
                self.pos += 7;
                None
            } else {
                let n = self.dec("lost event count")?;
                self.lit(b" EVENTS]", "` EVENTS]`")?;
                Some(n)
            };
            self.end()?;
            Ok(Event::CpuLost { cpu, count })
        } else if r == b"rw what?" || r == b"map what?" || r.starts_with(b"LSPCI ") {
            Ok(Event::Verbatim(r.to_vec()))
        } else {
            Err(self
                .err("a record keyword (VERSION, PCIDEV, MAP, UNMAP, R, W, UNKNOWN, MARK, CPU:)"))
        }
    }

    fn pcidev(&mut self) -> Result<Event, ParseError> {
        let bbdf = self.fixed_hex(4, "bus and devfn")?;
        self.space()?;
        let vendev = self.fixed_hex(8, "vendor and device id")?;
        self.space()?;
        let irq = self.bare_hex("irq")?;
        let irq = u32::try_from(irq).map_err(|_| self.err("irq that fits in 32 bits"))?;
        let mut starts = [0u64; 7];
        let mut sizes = [0u64; 7];
        for s in starts.iter_mut() {
            self.space()?;
            *s = self.bare_hex("resource start")?;
        }
        for s in sizes.iter_mut() {
            self.space()?;
            *s = self.bare_hex("resource size")?;
        }
        self.space()?;
        let name = self.rest();
        if name.contains(&b' ') {
            return Err(self.err("a driver name without spaces, or nothing"));
        }
        let driver = (!name.is_empty()).then(|| name.to_vec());
        Ok(Event::PciDev(Box::new(PciDev {
            bus: (bbdf >> 8) as u8,
            devfn: bbdf as u8,
            vendor: (vendev >> 16) as u16,
            device: vendev as u16,
            irq,
            starts,
            sizes,
            driver,
        })))
    }
}

/// `Lost N events.` with N canonical decimal.
fn lost_count(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"Lost ")?.strip_suffix(b" events.")?;
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

// ---------------------------------------------------------------------------------------
// Fast path for `R`/`W` lines
//
// The bulk of every log is access lines. [`fast_access`] parses one straight out of the
// read buffer without first looking for the line's end: it finds all its separators
// at once, moves each field's digits into a word of eight (two for 16 hex digits), and
// checks and converts the words two or four at a time in SIMD lanes (SSE2, which every
// x86-64 has, through the safe wrappers of `safe_arch`; SWAR on other targets).
// It accepts a subset of what [`parse_line`] accepts (the common shapes: seconds and
// decimals of up to 8 digits, non-negative map ids, the line's `\n` within the buffer)
// and returns the identical event; for anything else it returns `None` and the caller
// goes the slow way, which also produces the error messages. Tests check both agree.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `w` that is an ASCII decimal digit.
#[inline(always)]
fn digit_bits(w: u64) -> u64 {
    let x = w ^ (0x30 * ONES);
    let x7 = x & (0x7f * ONES);
    !(x7.wrapping_add(0x76 * ONES)) & !x & HIGHS
}

/// Converts 8 digit values (0..=9, first digit in the lowest byte) to their number.
#[inline(always)]
fn swar_dec8(mut x: u64) -> u64 {
    x = (x.wrapping_mul(10) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    (x.wrapping_mul(10000) + (x >> 32)) & 0xffff_ffff
}

/// The bytes [`fast_access`] may look at from the start of a line: a line shorter
/// than 64 bytes and the 8-byte loads that parse its fields.
const WINDOW: usize = 96;

/// The same for a line of 64 to 95 bytes (see [`fast_access_long`]).
const LONG_WINDOW: usize = 112;

/// The 8 bytes at `o` of the window; the callers' offsets are small enough for the
/// compiler to see that no bounds check is needed.
#[inline(always)]
fn at<const W: usize>(r: &[u8; W], o: usize) -> u64 {
    u64::from_le_bytes(r[o..o + 8].try_into().expect("8 bytes"))
}

/// Lowercase hex digits of `w`: (high bit set in each valid byte, nibble values).
#[inline(always)]
fn hex_bits(w: u64) -> (u64, u64) {
    let dig = digit_bits(w);
    let l = w ^ (0x60 * ONES);
    let l7 = l & (0x7f * ONES);
    // 1 <= l <= 6: `a`..=`f`.
    let letter = l7.wrapping_add(0x7f * ONES) & !(l7.wrapping_add(0x79 * ONES)) & !l & HIGHS;
    ((dig | letter), (w & (0x0f * ONES)) + (letter >> 7) * 9)
}

/// Packs 8 nibble values (first in the lowest byte) into a number, first most significant.
#[inline(always)]
fn pack_nibbles(mut x: u64) -> u64 {
    x = ((x << 4) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    x = ((x << 8) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    ((x << 16) + (x >> 32)) & 0xffff_ffff
}

/// Eight `'0'` characters.
const ZERO_CHARS: u64 = 0x30 * ONES;

/// The first `n` (1..=8) characters of `w` moved to its top bytes and `'0'`s below
/// them: eight digits with the same value, which the lane functions convert without
/// caring how long the field was.
#[inline(always)]
fn right_align(w: u64, n: usize) -> u64 {
    // `'0'`s in the low 8 - n bytes, by n (the callers check 1..=8).
    const FILL: [u64; 9] = {
        let mut t = [0; 9];
        let mut n = 1;
        while n <= 8 {
            t[n] = ZERO_CHARS & ((1u64 << (64 - 8 * n)) - 1);
            n += 1;
        }
        t
    };
    (w << (64 - 8 * n)) | FILL[n]
}

/// The canonical decimal (1..=8 digits, no leading zero) filling `r[start..end]`, as
/// eight digit characters for [`lanes::dec4`] (which checks they are digits).
#[inline(always)]
fn dec_word<const W: usize>(r: &[u8; W], start: usize, end: usize) -> Option<u64> {
    let n = end.wrapping_sub(start);
    let w = at(r, start);
    if n.wrapping_sub(1) >= 8 || (n > 1 && w as u8 == b'0') {
        return None;
    }
    Some(right_align(w, n))
}

/// A field of ` 0x` and 1..=16 canonical hex digits filling `r[space..end]` (its
/// leading space included, so one comparison checks the separator and the prefix), as
/// the characters of the high and low eight digits for [`lanes::hex2`] (`'0'`s for the
/// high half of a field of 8 digits or less).
#[inline(always)]
fn hex_field<const W: usize>(r: &[u8; W], space: usize, end: usize) -> Option<(u64, u64)> {
    let n = end.wrapping_sub(space + 3);
    let head = at(r, space);
    if head & 0xff_ffff != 0x78_3020
        || n.wrapping_sub(1) >= 16
        || (n > 1 && (head >> 24) as u8 == b'0')
    {
        return None;
    }
    let w = at(r, space + 3);
    Some(if n <= 8 {
        (ZERO_CHARS, right_align(w, n))
    } else {
        (right_align(w, n - 8), at(r, space + n - 5))
    })
}

/// Digit conversion several fields at a time: each function takes words of eight digit
/// characters (first digit in the lowest byte) and gives their values, or `None` if
/// any byte is not a digit of the base. On x86-64 the words go through the SSE2 lanes
/// of one or two registers; elsewhere through the scalar SWAR code of `scalar_lanes`.
#[cfg(target_feature = "sse2")]
mod lanes {
    use safe_arch::*;

    /// Four words of eight decimal digits.
    #[inline(always)]
    pub(super) fn dec4(a: u64, b: u64, c: u64, d: u64) -> Option<[u64; 4]> {
        let zero = set_splat_i8_m128i(b'0' as i8);
        let nine = set_splat_i8_m128i(9);
        let ab = sub_i8_m128i(set_i64_m128i(b as i64, a as i64), zero);
        let cd = sub_i8_m128i(set_i64_m128i(d as i64, c as i64), zero);
        let ok = cmp_eq_mask_i8_m128i(min_u8_m128i(ab, nine), ab)
            & cmp_eq_mask_i8_m128i(min_u8_m128i(cd, nine), cd);
        if move_mask_i8_m128i(ok) != 0xffff {
            return None;
        }
        // Pairs of digits in 16-bit lanes (first digit in the low byte): d0 * 10 + d1,
        // then groups of four in 32-bit lanes: p0 * 100 + p1.
        let quads = |x: m128i| {
            let pairs = add_i16_m128i(
                mul_i16_keep_low_m128i(x & set_splat_i16_m128i(0xff), set_splat_i16_m128i(10)),
                shr_imm_u16_m128i::<8>(x),
            );
            mul_i16_horizontal_add_m128i(pairs, set_splat_i32_m128i(0x0001_0064))
        };
        // The eight groups (each < 10^4) narrowed to 16 bits: q0 * 10^4 + q1 per word.
        let narrow = pack_i32_to_i16_m128i(quads(ab), quads(cd));
        let all = mul_i16_horizontal_add_m128i(narrow, set_splat_i32_m128i(0x0001_2710));
        let ab = get_i64_from_m128i_s(all) as u64;
        let cd = get_i64_from_m128i_s(unpack_high_i64_m128i(all, all)) as u64;
        Some([ab & 0xffff_ffff, ab >> 32, cd & 0xffff_ffff, cd >> 32])
    }

    /// Two words of eight lowercase hexadecimal digits.
    #[inline(always)]
    pub(super) fn hex2(a: u64, b: u64) -> Option<[u64; 2]> {
        let x = set_i64_m128i(b as i64, a as i64);
        let d = sub_i8_m128i(x, set_splat_i8_m128i(b'0' as i8));
        let is_digit = cmp_eq_mask_i8_m128i(min_u8_m128i(d, set_splat_i8_m128i(9)), d);
        let l = sub_i8_m128i(x, set_splat_i8_m128i(b'a' as i8));
        let is_letter = cmp_eq_mask_i8_m128i(min_u8_m128i(l, set_splat_i8_m128i(5)), l);
        if move_mask_i8_m128i(is_digit | is_letter) != 0xffff {
            return None;
        }
        // `a` - `0` is 49; the nibble of `a` is 10.
        let nib = sub_i8_m128i(d, is_letter & set_splat_i8_m128i(39));
        // Pairs of nibbles in 16-bit lanes (first in the low byte): n0 * 16 + n1.
        let bytes =
            (shl_imm_u16_m128i::<4>(nib) & set_splat_i16_m128i(0xf0)) | shr_imm_u16_m128i::<8>(nib);
        // Four digits in 32-bit lanes: b0 * 256 + b1 (each < 2^16).
        let quads = mul_i16_horizontal_add_m128i(bytes, set_splat_i32_m128i(0x0001_0100));
        // Eight digits in each 64-bit lane: q0 << 16 | q1.
        let words = (shl_imm_u64_m128i::<16>(quads) & set_splat_i64_m128i(0xffff_0000))
            | shr_imm_u64_m128i::<32>(quads);
        // The two low 32-bit halves side by side in the low 64 bits.
        let both = shuffle_ai_f32_all_m128i::<0b00_00_10_00>(words);
        let both = get_i64_from_m128i_s(both) as u64;
        Some([both & 0xffff_ffff, both >> 32])
    }
}

/// The scalar lanes: the same functions with SWAR over each word.
#[cfg_attr(target_feature = "sse2", allow(dead_code))]
mod scalar_lanes {
    use super::*;

    /// Four words of eight decimal digits.
    #[inline(always)]
    pub(super) fn dec4(a: u64, b: u64, c: u64, d: u64) -> Option<[u64; 4]> {
        if digit_bits(a) & digit_bits(b) & digit_bits(c) & digit_bits(d) != HIGHS {
            return None;
        }
        Some([a, b, c, d].map(|w| swar_dec8(w & (0x0f * ONES))))
    }

    /// Two words of eight lowercase hexadecimal digits.
    #[inline(always)]
    pub(super) fn hex2(a: u64, b: u64) -> Option<[u64; 2]> {
        let (oka, na) = hex_bits(a);
        let (okb, nb) = hex_bits(b);
        if oka & okb != HIGHS {
            return None;
        }
        Some([pack_nibbles(na), pack_nibbles(nb)])
    }
}
#[cfg(not(target_feature = "sse2"))]
use scalar_lanes as lanes;

/// Bit i set where byte i of `bytes` (16, 32, 48 or 64 of them) is a control character
/// or a space (`<= 0x20`): in an access line, its spaces and its `\n`.
#[cfg(target_feature = "sse2")]
#[inline(always)]
fn separators(bytes: &[u8]) -> u64 {
    use safe_arch::*;
    let space = set_splat_i8_m128i(0x20);
    let mut m = 0u64;
    for (i, c) in bytes.chunks_exact(16).take(4).enumerate() {
        let v = load_unaligned_m128i(c.try_into().expect("16 bytes"));
        let le = cmp_eq_mask_i8_m128i(min_u8_m128i(v, space), v);
        m |= (move_mask_i8_m128i(le) as u64) << (16 * i);
    }
    m
}

/// [`separators`] in SWAR, for targets without SSE2: the same bits, and also those of
/// bytes 0x80..=0xa0 (no field can hold them, and the checks of the separators' bytes
/// refuse the line).
#[cfg_attr(target_feature = "sse2", allow(dead_code))]
#[inline(always)]
fn separators_swar(bytes: &[u8]) -> u64 {
    let mut m = 0u64;
    for (i, c) in bytes.chunks_exact(8).take(8).enumerate() {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let below = !((w | HIGHS) - 0x21 * ONES) & HIGHS;
        m |= (below.wrapping_mul(0x0002_0408_1020_4081) >> 56) << (8 * i);
    }
    m
}

#[cfg(not(target_feature = "sse2"))]
use separators_swar as separators;

/// The positions of the separators after `R 4 `: five spaces and the `\n`, from the
/// separator bits of the line's first 64 bytes (`lo`) and of the 32 after (`hi`);
/// 128 for those missing.
#[inline(always)]
fn positions(lo: u64, hi: u64) -> [usize; 6] {
    let mut sep = (lo & !0xf) as u128 | (hi as u128) << 64;
    let mut next = || {
        let i = sep.trailing_zeros() as usize;
        sep &= sep.wrapping_sub(1);
        i
    };
    [next(), next(), next(), next(), next(), next()]
}

/// [`positions`] of a line whose separators all lie in its first 64 bytes (64 for
/// those missing): the common case, in 64-bit arithmetic.
#[inline(always)]
fn positions64(mut sep: u64) -> [usize; 6] {
    sep &= !0xf;
    let mut next = || {
        let i = sep.trailing_zeros() as usize;
        sep &= sep.wrapping_sub(1);
        i
    };
    [next(), next(), next(), next(), next(), next()]
}

/// Parses the canonical access line at `buf[start..]` (the read buffer), if it is one
/// of the common shapes (shorter than 96 bytes, non-negative map id, seconds and
/// decimals of at most 8 digits) and 96 bytes (112 for a line of 64 bytes or more) are
/// buffered from `start` on: the length of the line including its `\n`. The access is written into `out`, which holds
/// garbage when this returns `None`.
///
/// All the separators are found at once, then the fields are parsed independently of
/// each other, which keeps the processor's pipelines full.
#[inline(always)]
pub(crate) fn fast_access(buf: &[u8], start: usize, out: &mut Access) -> Option<usize> {
    let r: &[u8; WINDOW] = buf
        .get(start..start.wrapping_add(WINDOW))?
        .try_into()
        .ok()?;
    // Most lines are shorter than 48 bytes: look at 48 first.
    let mut at_ = positions64(separators(&r[..48]));
    // Kernel logs end every access with ` 0x0 0` (no PC, no pid): found after the
    // value, it ends the line, and the separators after it need no search.
    if at_[3] < 48 && at(r, at_[3]) & 0x00ff_ffff_ffff_ffff == KERNEL_TAIL {
        return fields::<WINDOW, true>(r, at_, out);
    }
    if at_[5] == 64 {
        let lo = separators(&r[..64]);
        at_ = positions64(lo);
        if at_[5] == 64 {
            // By value: `out` passed to a call would have to live in memory, which
            // slows down every caller that keeps its access in registers.
            let (n, a) = fast_access_long(buf, start, lo)?;
            *out = a;
            return Some(n);
        }
    }
    fields::<WINDOW, false>(r, at_, out)
}

/// The end of a kernel access line from the space before the PC: ` 0x0 0\n`.
const KERNEL_TAIL: u64 = u64::from_le_bytes(*b" 0x0 0\n\0");

/// [`fast_access`] for lines of 64 to 95 bytes: kernel logs have none, but ours do (a
/// PC and a thread id on every line, 8-byte values). Out of line, so that its larger
/// window costs the common lines nothing. `lo`: the separators of the first 64 bytes.
#[inline(never)]
fn fast_access_long(buf: &[u8], start: usize, lo: u64) -> Option<(usize, Access)> {
    let r: &[u8; LONG_WINDOW] = buf
        .get(start..start.wrapping_add(LONG_WINDOW))?
        .try_into()
        .ok()?;
    let at_ = positions(lo, separators(&r[64..96]));
    if at_[5] >= 96 {
        return None;
    }
    let mut a = crate::binary::BLANK;
    let n = fields::<LONG_WINDOW, false>(r, at_, &mut a)?;
    Some((n, a))
}

/// The access line at the start of `r` whose separators after `R 4 ` are at `at_`
/// (increasing, the last, its `\n`, below `W - 16`: every load stays in `r`), as
/// [`fast_access`] gives it. `KERNEL`: the caller found the kernel's tail at `at_[3]`,
/// which ends the line; the last two positions are then not looked at.
#[inline(always)]
fn fields<const W: usize, const KERNEL: bool>(
    r: &[u8; W],
    at_: [usize; 6],
    out: &mut Access,
) -> Option<usize> {
    let [s2, s3, s4, s5, s6, len] = at_;
    let len = if KERNEL { s5 + 6 } else { len };
    let w0 = at(r, 0);
    let width = ((w0 >> 16) as u8).wrapping_sub(b'0');
    if w0 & 0xff00_ff00 != 0x2000_2000 || !(1..=8).contains(&width) {
        return None;
    }
    let dir = match w0 as u8 {
        b'R' => Direction::Read,
        b'W' => Direction::Write,
        _ => return None,
    };
    // The timestamp `secs.uuuuuu` fills 4..s2: 1 to 8 digits of seconds.
    let secs_n = s2.wrapping_sub(11);
    if secs_n.wrapping_sub(1) >= 8 {
        return None;
    }
    // `.uuuuuu ` in one word: the dot, the microseconds, the space at s2.
    let frac = at(r, s2 - 7);
    if frac & 0xff00_0000_0000_00ff != 0x2000_0000_0000_002e {
        return None;
    }
    let us = (frac & 0x00ff_ffff_ffff_ff00) << 8 | 0x3030;
    let secs = dec_word(r, 4, s2 - 7)?;
    let map_id = dec_word(r, s2 + 1, s3)?;
    let (phys_hi, phys_lo) = hex_field(r, s3, s4)?;
    let (value_hi, value_lo) = hex_field(r, s4, s5)?;
    // Kernel logs end every access with ` 0x0 0` (no PC, no pid): one comparison.
    let kernel_tail = KERNEL || at(r, s5) & 0x00ff_ffff_ffff_ffff == KERNEL_TAIL;
    let (pc, pid) = if kernel_tail {
        (None, ZERO_CHARS)
    } else {
        if r[s6] != b' ' || r[len] != b'\n' {
            return None;
        }
        (Some(hex_field(r, s5, s6)?), dec_word(r, s6 + 1, len)?)
    };
    let [secs, us, map_id, pid] = lanes::dec4(secs, us, map_id, pid)?;
    let [phys_lo, value_lo] = lanes::hex2(phys_lo, value_lo)?;
    let [phys_hi, value_hi] = if phys_hi == ZERO_CHARS && value_hi == ZERO_CHARS {
        [0, 0]
    } else {
        lanes::hex2(phys_hi, value_hi)?
    };
    let pc = match pc {
        None => 0,
        Some((hi, lo)) => {
            let [lo, hi] = lanes::hex2(lo, hi)?;
            hi << 32 | lo
        }
    };
    let ts_ns = (secs * 1_000_000 + us) * 1000; // secs < 10^8: no overflow
    let phys = phys_hi << 32 | phys_lo;
    let value = value_hi << 32 | value_lo;
    out.dir = dir;
    out.width = width;
    out.pid = pid as u32;
    out.ts_ns = ts_ns;
    out.map_id = map_id as i64;
    out.phys = phys;
    out.value = value;
    out.pc = pc;
    out.wide = None;
    Some(len + 1)
}

// ---------------------------------------------------------------------------------------
// Writing

#[inline]
fn put_dec(out: &mut Vec<u8>, v: u64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

#[inline]
fn put_hex(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = 16;
    let mut x = v;
    loop {
        i -= 1;
        tmp[i] = DIGITS[(x & 0xf) as usize];
        x >>= 4;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[inline]
fn put_0x(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(b"0x");
    put_hex(out, v);
}

fn put_id(out: &mut Vec<u8>, id: i64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(id).as_bytes());
}

/// Writes a timestamp as the kernel does: nanoseconds rounded to the nearest
/// microsecond, `seconds.microseconds` with six digits.
#[inline]
pub fn put_ts(out: &mut Vec<u8>, ts_ns: u64) {
    let us = ts_ns / 1000 + u64::from(ts_ns % 1000 >= 500);
    put_dec(out, us / 1_000_000);
    out.push(b'.');
    let frac = us % 1_000_000;
    let mut d = [b'0'; 6];
    let mut x = frac;
    for slot in d.iter_mut().rev() {
        *slot = b'0' + (x % 10) as u8;
        x /= 10;
    }
    out.extend_from_slice(&d);
}

/// Appends the text form of `ev` (one or more lines, each ending in `\n`) to `out`.
///
/// Accesses wider than 8 bytes become consecutive 8-byte lines in ascending address
/// order, each with the raw bus bytes as a zero-extended little-endian value, so that
/// demmio and other kernel-log parsers keep working.
pub fn write_event(out: &mut Vec<u8>, ev: &Event) {
    match ev {
        Event::Access(a) => {
            if a.width as usize <= 8 {
                put_access(out, a, a.width, a.phys, a.value);
            } else {
                let bytes = a.bytes();
                let width = (a.width as usize).min(MAX_WIDTH);
                let mut off = 0;
                while off < width {
                    let n = (width - off).min(8);
                    let mut word = [0u8; 8];
                    word[..n].copy_from_slice(&bytes[off..off + n]);
                    let phys = a.phys.wrapping_add(off as u64);
                    put_access(out, a, n as u8, phys, u64::from_le_bytes(word));
                    off += n;
                }
            }
        }
        Event::Version(v) => {
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        Event::PciDev(p) => {
            out.extend_from_slice(b"PCIDEV ");
            let mut fixed = [0u8; 16];
            let n = fmt_fixed_hex(&mut fixed, ((p.bus as u64) << 8) | p.devfn as u64, 4);
            out.extend_from_slice(&fixed[..n]);
            out.push(b' ');
            let vendev = ((p.vendor as u64) << 16) | p.device as u64;
            let n = fmt_fixed_hex(&mut fixed, vendev, 8);
            out.extend_from_slice(&fixed[..n]);
            out.push(b' ');
            put_hex(out, p.irq as u64);
            for v in p.starts.iter().chain(p.sizes.iter()) {
                out.push(b' ');
                put_hex(out, *v);
            }
            out.push(b' ');
            if let Some(d) = &p.driver {
                out.extend_from_slice(d);
            }
            out.push(b'\n');
        }
        Event::Map(m) => {
            put_head(out, b"MAP ", m.ts_ns, m.id);
            for v in [m.phys, m.virt, m.len] {
                out.push(b' ');
                put_0x(out, v);
            }
            put_pc_pid(out, m.pc, m.pid);
        }
        Event::Unmap(u) => {
            put_head(out, b"UNMAP ", u.ts_ns, u.id);
            put_pc_pid(out, u.pc, u.pid);
        }
        Event::Unknown(u) => {
            put_head(out, b"UNKNOWN ", u.ts_ns, u.map_id);
            out.push(b' ');
            put_0x(out, u.phys);
            out.push(b' ');
            let mut fixed = [0u8; 16];
            for (i, b) in u.opcode.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let n = fmt_fixed_hex(&mut fixed, *b as u64, 2);
                out.extend_from_slice(&fixed[..n]);
            }
            put_pc_pid(out, u.pc, u.pid);
        }
        Event::Mark(m) => {
            out.extend_from_slice(b"MARK ");
            put_ts(out, m.ts_ns);
            out.push(b' ');
            put_mark_text(out, &m.text);
            out.push(b'\n');
        }
        Event::Kernel(k) => {
            out.extend_from_slice(b"MARK ");
            put_ts(out, k.ts_ns);
            out.push(b' ');
            out.extend_from_slice(&k.text());
            out.push(b'\n');
        }
        Event::LostEvents(n) => {
            out.extend_from_slice(b"MARK 0.000000 Lost ");
            put_dec(out, *n);
            out.extend_from_slice(b" events.\n");
        }
        Event::CpuLost { cpu, count } => {
            out.extend_from_slice(b"CPU:");
            put_dec(out, *cpu as u64);
            out.extend_from_slice(b" [LOST ");
            if let Some(n) = count {
                put_dec(out, *n);
                out.push(b' ');
            }
            out.extend_from_slice(b"EVENTS]\n");
        }
        Event::Verbatim(v) => {
            out.extend_from_slice(v);
            out.push(b'\n');
        }
    }
}

/// A marker's text. A newline continues the text on a line of its own, as the kernel
/// writes it and as the reader joins it back, unless that line would read as a record
/// of its own: that newline is written `\x0a`, so that no marker can fake a record.
/// (Recordings never hold raw newlines: [`escape_marker`] has escaped them.)
fn put_mark_text(out: &mut Vec<u8>, text: &[u8]) {
    let mut lines = text.split(|&b| b == b'\n');
    out.extend_from_slice(lines.next().unwrap_or_default());
    for line in lines {
        if parse_line(line, 0).is_ok() {
            out.extend_from_slice(b"\\x0a");
        } else {
            out.push(b'\n');
        }
        out.extend_from_slice(line);
    }
}

/// The text of a marker as `record` logs it: one line, whatever the program passed.
///
/// Control characters (bytes below 0x20, and 0x7f) and the line and paragraph
/// separators U+0085, U+2028 and U+2029 (their UTF-8 bytes) are written `\xHH`, two
/// lowercase hex digits per byte; a backslash is doubled when what follows it in the
/// escaped text starts with `x` or with a backslash, so that the text reads back
/// unambiguously: `\\` is a backslash, `\xHH` the byte HH, and any other backslash
/// stands for itself. Other text, UTF-8 or not, is kept as it is.
pub fn escape_marker(text: &[u8]) -> Vec<u8> {
    let hex = |out: &mut Vec<u8>, b: u8| {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'x',
            DIGITS[(b >> 4) as usize],
            DIGITS[(b & 15) as usize],
        ]);
    };
    let separator = |t: &[u8]| match t {
        [0xc2, 0x85, ..] => 2,
        [0xe2, 0x80, 0xa8 | 0xa9, ..] => 3,
        _ => 0,
    };
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        let sep = separator(&text[i..]);
        if sep > 0 {
            for &c in &text[i..i + sep] {
                hex(&mut out, c);
            }
            i += sep;
            continue;
        }
        match b {
            0..=0x1f | 0x7f => hex(&mut out, b),
            b'\\'
                if matches!(text.get(i + 1), Some(b'x' | b'\\' | 0..=0x1f | 0x7f))
                    || separator(&text[i + 1..]) > 0 =>
            {
                out.extend_from_slice(b"\\\\")
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// The inverse of [`escape_marker`]: the text the program passed.
pub fn unescape_marker(text: &[u8]) -> Vec<u8> {
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match &text[i..] {
            [b'\\', b'\\', ..] => {
                out.push(b'\\');
                i += 2;
            }
            [b'\\', b'x', h, l, ..] if val(*h).is_some() && val(*l).is_some() => {
                out.push(val(*h).unwrap_or(0) << 4 | val(*l).unwrap_or(0));
                i += 4;
            }
            [c, ..] => {
                out.push(*c);
                i += 1;
            }
            [] => break,
        }
    }
    out
}

/// `KEYWORD TIME ID`: how MAP, UNMAP and UNKNOWN lines begin.
fn put_head(out: &mut Vec<u8>, keyword: &[u8], ts_ns: u64, id: i64) {
    out.extend_from_slice(keyword);
    put_ts(out, ts_ns);
    out.push(b' ');
    put_id(out, id);
}

/// ` PC PID` and the newline: how every record but MARK ends.
#[inline]
fn put_pc_pid(out: &mut Vec<u8>, pc: u64, pid: u32) {
    out.push(b' ');
    put_0x(out, pc);
    out.push(b' ');
    put_dec(out, pid as u64);
    out.push(b'\n');
}

#[inline]
fn put_access(out: &mut Vec<u8>, a: &Access, width: u8, phys: u64, value: u64) {
    out.push(match a.dir {
        Direction::Read => b'R',
        Direction::Write => b'W',
    });
    out.push(b' ');
    put_dec(out, width as u64);
    out.push(b' ');
    put_ts(out, a.ts_ns);
    out.push(b' ');
    put_id(out, a.map_id);
    out.push(b' ');
    put_0x(out, phys);
    out.push(b' ');
    put_0x(out, value);
    put_pc_pid(out, a.pc, a.pid);
}

fn fmt_fixed_hex(buf: &mut [u8; 16], v: u64, digits: usize) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in 0..digits {
        buf[digits - 1 - i] = DIGITS[((v >> (4 * i)) & 0xf) as usize];
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(line: &str) -> Event {
        let ev = parse_line(line.as_bytes(), 1).unwrap_or_else(|e| panic!("{line}: {e}"));
        let mut out = Vec::new();
        write_event(&mut out, &ev);
        assert_eq!(String::from_utf8_lossy(&out), format!("{line}\n"));
        ev
    }

    #[test]
    fn every_kernel_line_type_round_trips() {
        roundtrip("VERSION 20070824");
        roundtrip("PCIDEV 0000 80863e30 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 ");
        let p = roundtrip("PCIDEV 0100 10de1b80 10 f6000000 e000000c 0 f000000c 0 e001 0 1000000 10000000 0 2000000 0 80 0 nvidia");
        let Event::PciDev(p) = p else { panic!() };
        assert_eq!(
            (p.bus, p.devfn, p.vendor, p.device, p.irq),
            (1, 0, 0x10de, 0x1b80, 0x10)
        );
        assert_eq!(p.driver.as_deref(), Some(&b"nvidia"[..]));
        assert_eq!(p.base(1), 0xe0000000);
        assert_eq!(p.resource_of(0xf6000140), Some(0));
        roundtrip("MAP 812.004137 7 0xf6000000 0xffffc90001800000 0x1000000 0x0 0");
        let r = roundtrip("R 4 812.004512 7 0xf6000000 0x134000a1 0x0 0");
        assert_eq!(
            r,
            Event::Access(Access::new(
                Direction::Read,
                4,
                812_004_512_000,
                7,
                0xf6000000,
                0x134000a1
            ))
        );
        roundtrip("W 1 812.004601 7 0xf66013d4 0x1f 0x0 0");
        roundtrip("R 2 812.004700 7 0xf6610000 0xbeef 0xffffffffc0a31f2e 0");
        roundtrip("R 1 0.000001 7 0xf6610000 0xffffffffffffff80 0x0 0");
        let u = roundtrip("UNKNOWN 812.005002 7 0xf6700000 f3,48,a5 0x0 0");
        assert!(matches!(
            u,
            Event::Unknown(Unknown {
                opcode: [0xf3, 0x48, 0xa5],
                ..
            })
        ));
        roundtrip("MARK 813.250000 X is up");
        roundtrip("MARK 813.250000 a \\x0a b \\\\ c \\d");
        roundtrip("MARK 813.250000 ");
        assert_eq!(
            roundtrip("MARK 0.000000 Lost 4096 events."),
            Event::LostEvents(4096)
        );
        assert!(matches!(
            roundtrip("MARK 1.000000 Lost 4096 events."),
            Event::Mark(_)
        ));
        assert!(matches!(
            roundtrip("MARK 0.000000 Lost 04 events."),
            Event::Mark(_)
        ));
        assert_eq!(
            roundtrip("CPU:0 [LOST 4096 EVENTS]"),
            Event::CpuLost {
                cpu: 0,
                count: Some(4096)
            }
        );
        assert_eq!(
            roundtrip("CPU:3 [LOST EVENTS]"),
            Event::CpuLost {
                cpu: 3,
                count: None
            }
        );
        roundtrip("UNMAP 900.100000 7 0x0 0");
        let u = roundtrip("UNMAP 900.100020 -1 0x0 0");
        assert!(matches!(u, Event::Unmap(Unmap { id: -1, .. })));
        roundtrip("# tracer: mmiotrace");
        roundtrip("rw what?");
        roundtrip("map what?");
    }

    #[test]
    fn timestamps_round_to_nearest_microsecond_like_ftrace() {
        let mut out = Vec::new();
        put_ts(&mut out, 1_000_499);
        out.push(b' ');
        put_ts(&mut out, 1_000_500);
        out.push(b' ');
        put_ts(&mut out, 999_999_999_500);
        assert_eq!(out, b"0.001000 0.001001 1000.000000");
    }

    #[test]
    fn wide_access_is_split_into_ascending_8_byte_lines() {
        let bytes: Vec<u8> = (0..16).collect();
        let mut a = Access::from_bytes(Direction::Write, 5_000_000, 2, 0x1000, &bytes);
        a.pid = 42;
        a.pc = 0x401000;
        let mut out = Vec::new();
        write_event(&mut out, &Event::Access(a));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "W 8 0.005000 2 0x1000 0x706050403020100 0x401000 42\n\
             W 8 0.005000 2 0x1008 0xf0e0d0c0b0a0908 0x401000 42\n"
        );
    }

    /// The fast path accepts only lines `parse_line` accepts, with the same event.
    fn check_fast(line: &[u8]) -> bool {
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\nR 4 1.000000 1 0x0 0x0 0x0 0\n");
        buf.extend_from_slice(&[b'\n'; 96]);
        let mut a = crate::binary::BLANK;
        let Some(n) = fast_access(&buf, 0, &mut a) else {
            return false;
        };
        let end = memchr::memchr(b'\n', &buf).unwrap();
        assert_eq!(n, end + 1, "{}", String::from_utf8_lossy(line));
        assert_eq!(
            parse_line(&buf[..end], 1),
            Ok(Event::Access(a)),
            "{}",
            String::from_utf8_lossy(line)
        );
        true
    }

    #[test]
    fn fast_access_path_agrees_with_parse_line() {
        let lines: &[&[u8]] = &[
            b"R 4 812.004512 7 0xf6000000 0x134000a1 0x0 0",
            b"W 1 0.000001 0 0x1 0xff 0xffffffffc0a31f2e 1234567",
            b"R 8 99999999.999999 99 0xffffffffffffffff 0x1 0x5555deadbeef 4",
            b"W 2 1.000000 1 0xabcdef01 0x0 0x1 4194304",
            b"R 8 99999999.999999 99999999 0x123456789abcdef0 0x1 0x0 4",
            b"R 4 2.435055 1 0xfeb40008 0x80080783 0x0 0",
            b"W 4 2.000000 1 0xfeb40008 0x0 0x0 0",
            // The kernel's tail past the first 48 bytes.
            b"R 8 12345678.123456 12 0x1234567890abcdef 0x1234567890abcdef 0x0 0",
            // Lines of user-space traces, longer than 64 bytes.
            b"W 8 12345678.999999 12345 0x380000001000 0xfedcba9876543210 0x55b514b68013 1234567",
            b"R 8 99999999.999999 99999999 0xffffffffffffffff 0xffffffffffffffff 0xffffffffffffffff 99999999",
        ];
        for line in lines {
            assert!(check_fast(line), "{}", String::from_utf8_lossy(line));
        }
        // The longest line the fast path takes (94 bytes) is in the list; longer ones
        // hold a field it leaves to the slow way.
        let long = b"W 8 99999999.999999 99999999 0xffffffffffffffff 0xffffffffffffffff 0xffffffffffffffff 4294967295";
        assert!(!check_fast(long));
        assert!(parse_line(long, 1).is_ok());
        let subst = b"0189afgxAF -.\n\r,W\x80\xa0\x1f\x7f";
        let mut accepted = 0;
        for line in lines {
            for i in 0..line.len() {
                for &c in subst {
                    let mut m = line.to_vec();
                    m[i] = c;
                    accepted += check_fast(&m) as u32;
                    m.insert(i, c);
                    accepted += check_fast(&m) as u32;
                }
                let mut m = line.to_vec();
                m.remove(i);
                accepted += check_fast(&m) as u32;
            }
        }
        assert!(accepted > 100, "{accepted}");
        // Pseudo-random lines from a small alphabet.
        let mut x = 0x2545f4914f6cdd1du64;
        for _ in 0..200_000 {
            let mut m = lines[(x % lines.len() as u64) as usize].to_vec();
            for _ in 0..(x >> 8) % 3 + 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x >> 16) as usize % m.len();
                m[i] = subst[(x >> 40) as usize % subst.len()];
            }
            check_fast(&m);
        }
    }

    #[test]
    fn simd_lanes_agree_with_scalar_swar() {
        // Words of decimal or hex digits, now and then with one byte from at or around
        // the edges of the classes (`/`, `:`, `` ` ``, `g`, upper case, high bit).
        let odd = b"/:`gAF\x80\xb0\xe1\xff";
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut word = |base: u64| {
            let mut w = 0u64;
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w = w << 8 | b"0123456789abcdef"[(x % base) as usize] as u64;
            }
            if x >> 60 == 0 {
                w ^= (w & (0xff << (x >> 8 & 0x38)))
                    ^ ((odd[(x >> 16) as usize % odd.len()] as u64) << (x >> 8 & 0x38));
            }
            w
        };
        let (mut dec_ok, mut hex_ok) = (0, 0);
        for _ in 0..200_000 {
            let (a, b, c, d) = (word(10), word(10), word(10), word(10));
            let want = scalar_lanes::dec4(a, b, c, d);
            assert_eq!(lanes::dec4(a, b, c, d), want, "{a:x} {b:x} {c:x} {d:x}");
            dec_ok += want.is_some() as u32;
            let (a, b) = (word(16), word(16));
            let want = scalar_lanes::hex2(a, b);
            assert_eq!(lanes::hex2(a, b), want, "{a:x} {b:x}");
            hex_ok += want.is_some() as u32;
        }
        // Both outcomes were exercised.
        assert!(
            (100_000..195_000).contains(&dec_ok) && (100_000..195_000).contains(&hex_ok),
            "{dec_ok} {hex_ok}"
        );
        assert_eq!(
            scalar_lanes::dec4(
                u64::from_le_bytes(*b"12345678"),
                u64::from_le_bytes(*b"00000009"),
                u64::from_le_bytes(*b"99999999"),
                ZERO_CHARS
            ),
            Some([12345678, 9, 99999999, 0])
        );
        assert_eq!(
            scalar_lanes::hex2(
                u64::from_le_bytes(*b"fedcba98"),
                u64::from_le_bytes(*b"0000a0b1")
            ),
            Some([0xfedcba98, 0xa0b1])
        );
    }

    #[test]
    fn separator_masks_agree() {
        let mut x = 0x2545f4914f6cdd1du64;
        for _ in 0..100_000 {
            let mut r = [0u8; WINDOW];
            for b in r.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // ASCII (the SWAR version also flags 0x80..=0xa0), often a separator.
                *b = if x & 3 == 0 {
                    b" \n\t\x00!"[(x >> 8) as usize % 5]
                } else {
                    (x >> 16) as u8 & 0x7f
                };
            }
            for (from, to) in [(0, 48), (0, 64), (64, 96)] {
                let bytes = &r[from..to];
                let want = bytes
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (i, &b)| m | ((b <= 0x20) as u64) << i);
                assert_eq!(separators(bytes), want);
                assert_eq!(separators_swar(bytes), want);
            }
        }
    }

    fn err(line: &str) -> ParseError {
        parse_line(line.as_bytes(), 7).expect_err(line)
    }

    #[test]
    fn malformed_lines_name_the_column_and_what_was_expected() {
        let e = err("R 4 2.435055 1 0xFEB40008 0x80080783 0x0 0");
        assert_eq!((e.line, e.column), (7, 18));
        assert!(e.expected.contains("lowercase hexadecimal"), "{e}");
        let e = err("R 4 2.43505 1 0xfeb40008 0x80080783 0x0 0");
        assert_eq!(e.column, 12);
        assert!(e.expected.contains("six digits"), "{e}");
        let e = err("R 16 2.435055 1 0xfeb40008 0x80080783 0x0 0");
        assert_eq!(e.column, 3);
        let e = err("R 4 2.435055 1 0xfeb40008 0x80080783 0x0 0 ");
        assert_eq!(e.expected, "end of line");
        let e = err("R 4 2.435055  1 0xfeb40008 0x80080783 0x0 0");
        assert_eq!(e.column, 14);
        let e = err("BOGUS 1");
        assert_eq!(e.column, 1);
        assert!(e.expected.contains("record keyword"));
        let e = err("UNKNOWN 1.000000 1 0x0 f3,48 0x0 0");
        assert!(e.expected.contains("`,`"), "{e}");
        assert_eq!(err("MAP 1.000000 01 0x0 0x0 0x0 0x0 0").column, 14);
        assert_eq!(err("UNMAP 1.000000 -0 0x0 0").column, 16);
        assert_eq!(
            err("R 4 99999999999999999.000000 1 0x0 0x0 0x0 0").column,
            5
        );
        assert_eq!(
            err("R 4 1.000000 1 0x10000000000000000 0x0 0x0 0").column,
            18
        );
        assert_eq!(err("R 4 1.000000 1 0x0 0x0 0x0 4294967296").column, 28);
        assert_eq!(err("").column, 1);
        assert_eq!(err("CPU:1 [LOST 5 EVENTS]4").column, 22);
        assert_eq!(err("CPU:1 [LOST EVENTS] ").column, 13);
    }

    #[test]
    fn markers_escape_control_characters_and_read_back_exactly() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"plain text, C:\\dir", b"plain text, C:\\dir"),
            (
                b"x\nW 4 0.000001 1 0x40 0xdead 0x0 0",
                b"x\\x0aW 4 0.000001 1 0x40 0xdead 0x0 0",
            ),
            (
                b"tab\there\r\0\x1b[31m\x7f",
                b"tab\\x09here\\x0d\\x00\\x1b[31m\\x7f",
            ),
            (b"\\x0a is not a newline", b"\\\\x0a is not a newline"),
            (b"\\\\", b"\\\\\\"),
            (b"\\\n", b"\\\\\\x0a"),
            (
                "a\u{2028}b\u{85}c\u{2029}".as_bytes(),
                b"a\\xe2\\x80\\xa8b\\xc2\\x85c\\xe2\\x80\\xa9",
            ),
            (b"ends in \\", b"ends in \\"),
            (b"\xff\xfe not utf-8", b"\xff\xfe not utf-8"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(
                escape_marker(raw),
                escaped,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(unescape_marker(escaped), raw);
        }
        // Every short byte string round-trips, and never yields a control byte.
        let alphabet = [
            b'\\', b'x', b'a', b'\n', 0, 0x7f, 0xc2, 0x85, 0xe2, 0x80, 0xa8,
        ];
        let mut s = Vec::new();
        for n in 0..alphabet.len().pow(4) {
            s.clear();
            let mut k = n;
            for _ in 0..4 {
                s.push(alphabet[k % alphabet.len()]);
                k /= alphabet.len();
            }
            let e = escape_marker(&s);
            assert!(!e.iter().any(|&b| b < 0x20 || b == 0x7f), "{s:?}");
            assert_eq!(unescape_marker(&e), s, "{s:?} -> {e:?}");
        }
    }

    #[test]
    fn a_marker_newline_that_would_start_a_record_is_written_escaped() {
        let ev = Event::Mark(Mark {
            ts_ns: 1_000_000,
            text: b"x\nW 4 0.000001 1 0x40 0xdead 0x0 0\nnot a record".to_vec(),
        });
        let mut out = Vec::new();
        write_event(&mut out, &ev);
        assert_eq!(
            out,
            b"MARK 0.001000 x\\x0aW 4 0.000001 1 0x40 0xdead 0x0 0\nnot a record\n"
        );
        // What the reader gives back is written back byte for byte.
        let mut r = crate::TextReader::new(&out[..]);
        let back = r.next_event().unwrap().unwrap();
        assert!(r.next_event().unwrap().is_none());
        let mut again = Vec::new();
        write_event(&mut again, &back);
        assert_eq!(again, out);
    }
}
