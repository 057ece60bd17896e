//! Streaming readers: constant memory whatever the log's size.

use std::io::{self, BufReader, Read};

use crate::binary::{BinaryReader, BLANK};
use crate::error::{Error, ParseError, Stop};
use crate::event::{Access, Event, Mark};
use crate::text::{fast_access, parse_line};

/// Lines longer than this are refused rather than buffered without bound.
pub const MAX_LINE: usize = 1 << 20;

const CHUNK: usize = 256 * 1024;

/// Splits a byte stream into lines with a reusable buffer.
struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_no: u64,
}

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            line_no: 0,
        }
    }

    /// The next line without its `\n`, as a range of `self.buf`, and whether a `\n`
    /// ended it (not: the input ends in the middle of the line).
    fn next_line(&mut self) -> Result<Option<(usize, usize, bool)>, Error> {
        let mut scanned = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..self.end]) {
                let line = (self.start, scanned + i, true);
                self.start = scanned + i + 1;
                self.line_no += 1;
                return Ok(Some(line));
            }
            scanned = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = (self.start, self.end, false);
                self.start = self.end;
                self.line_no += 1;
                return Ok(Some(line));
            }
            if self.end - self.start > MAX_LINE {
                return Err(ParseError {
                    line: self.line_no + 1,
                    column: MAX_LINE as u64 + 1,
                    expected: format!("a line shorter than {MAX_LINE} bytes"),
                    found: "a longer line".into(),
                    binary: false,
                }
                .into());
            }
            // Make room: move the partial line to the front, grow only for long lines.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                scanned -= self.start;
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }

    /// Drops the rest of the current line, the one [`next_line`](Self::next_line)
    /// found too long, up to and including its `\n`, without buffering it.
    fn skip_line(&mut self) -> Result<(), Error> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                self.start += i + 1;
                self.line_no += 1;
                return Ok(());
            }
            self.start = 0;
            self.end = 0;
            if self.eof {
                self.line_no += 1;
                return Ok(());
            }
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            self.eof = n == 0;
            self.end = n;
        }
    }

    /// Bytes buffered of the line being read.
    fn partial(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

/// Whether a read error is damage in the input (compressed data that stops
/// decompressing, or stops short) rather than a failure of the machine: lenient
/// readers stop there and report it instead of failing.
pub(crate) fn is_damage(e: &Error) -> bool {
    match e {
        Error::Io(io) => is_damage_kind(io.kind()),
        _ => false,
    }
}

/// The kinds of read errors decompressors give for damaged or cut-short data.
fn is_damage_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput
    )
}

/// Reads the kernel text format, one event at a time.
///
/// A `MARK` whose text contained newlines is followed by continuation lines that are
/// not records; they are joined back into the marker's text.
pub struct TextReader<R> {
    lines: Lines<R>,
    pending_mark: Option<Mark>,
    ready: Option<Event>,
    lenient: bool,
    skipped: u64,
    first_error: Option<ParseError>,
    /// An error found while a marker was pending: returned after the marker.
    deferred: Option<ParseError>,
    /// Where lenient reading stopped early, if it did.
    stop: Option<Stop>,
}

impl<R: Read> TextReader<R> {
    /// A strict reader: the first malformed line is an error.
    pub fn new(inner: R) -> Self {
        TextReader {
            lines: Lines::new(inner),
            pending_mark: None,
            ready: None,
            lenient: false,
            skipped: 0,
            first_error: None,
            deferred: None,
            stop: None,
        }
    }

    /// In lenient mode malformed lines are skipped and counted instead: lines that do
    /// not parse, lines longer than [`MAX_LINE`], and a last line that the input
    /// ends in the middle of. Compressed input that stops decompressing ends the log
    /// there (see [`stop`](Self::stop)).
    pub fn set_lenient(&mut self, lenient: bool) {
        self.lenient = lenient;
    }

    /// The number of lines skipped in lenient mode.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The first line skipped in lenient mode, with why.
    pub fn first_error(&self) -> Option<&ParseError> {
        self.first_error.as_ref()
    }

    /// Where lenient reading stopped before the end of the input, and why.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// The number of lines read so far.
    pub fn line_no(&self) -> u64 {
        self.lines.line_no
    }

    /// An access line parsed straight from the buffer, when it is one of the common
    /// shapes and nothing (a pending marker) is queued before it.
    #[inline(always)]
    fn fast(&mut self, out: &mut Access) -> bool {
        if self.pending_mark.is_some() || self.ready.is_some() {
            return false;
        }
        let l = &mut self.lines;
        let Some(n) = fast_access(&l.buf[..l.end], l.start, out) else {
            return false;
        };
        l.start += n;
        l.line_no += 1;
        true
    }

    /// The next event, or `None` at the end of the log.
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        let mut a = BLANK;
        if self.fast(&mut a) {
            Ok(Some(Event::Access(a)))
        } else {
            self.next_event_slow().map(|e| e.map(kernel_marks))
        }
    }

    /// Replaces the contents of `out` with the next events, at most `max` of them,
    /// and returns how many: 0 only at the end of the log (or when `max` is 0).
    ///
    /// The same events as [`next_event`](Self::next_event) gives, with less overhead
    /// per event: the fastest way to read a log. Pass the same `out` on every call:
    /// its elements are reused in place (an access is parsed straight into the
    /// previous call's access at the same index). On error, `out` holds the events
    /// read before the bad line.
    pub fn read_batch(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, Error> {
        let mut n = 0;
        while n < max {
            if self.pending_mark.is_none() && self.ready.is_none() {
                // Access lines back to back, with the buffer state in registers.
                let l = &mut self.lines;
                let buf = &l.buf[..l.end];
                let mut start = l.start;
                let n0 = n;
                // Over the accesses of an earlier batch first: no slot to make, and
                // fewer values for the loop to keep in registers.
                let mut parsed_all = true;
                for slot in out.iter_mut().take(max).skip(n) {
                    let Event::Access(a) = slot else { break };
                    let Some(len) = fast_access(buf, start, a) else {
                        parsed_all = false;
                        break;
                    };
                    start += len;
                    n += 1;
                }
                while parsed_all && n < max {
                    let Some(len) = fast_access(buf, start, access_slot(out, n)) else {
                        break;
                    };
                    start += len;
                    n += 1;
                }
                l.start = start;
                l.line_no += (n - n0) as u64;
                if n == max {
                    break;
                }
            }
            match self.next_event_slow().map(|e| e.map(kernel_marks)) {
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

    #[inline(never)]
    fn next_event_slow(&mut self) -> Result<Option<Event>, Error> {
        if let Some(ev) = self.ready.take() {
            return Ok(Some(ev));
        }
        if let Some(err) = self.deferred.take() {
            return Err(err.into());
        }
        loop {
            if self.stop.is_some() {
                return Ok(self.pending_mark.take().map(Event::Mark));
            }
            let next = match self.lines.next_line() {
                Ok(next) => next,
                Err(Error::Parse(err)) if self.lenient => {
                    // A line too long to buffer: skipped like any malformed line.
                    self.skipped += 1;
                    self.first_error.get_or_insert(*err);
                    self.lines.skip_line()?;
                    continue;
                }
                Err(err) if self.lenient && is_damage(&err) => {
                    self.stop = Some(Stop {
                        error: ParseError {
                            line: self.lines.line_no + 1,
                            column: self.lines.partial() + 1,
                            expected: "more of the log".into(),
                            found: format!("data that does not decompress ({err})"),
                            binary: false,
                        },
                        unread_bytes: None,
                    });
                    // The rest of the line is cut short: never an event.
                    self.lines.start = self.lines.end;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let Some((s, e, terminated)) = next else {
                return Ok(self.pending_mark.take().map(Event::Mark));
            };
            if !terminated {
                // The log ends in the middle of this line (a recording cut short): its
                // last field may be cut too, so no event is made of it.
                let err = ParseError {
                    line: self.lines.line_no,
                    column: (e - s) as u64 + 1,
                    expected: "a newline ending the line".into(),
                    found: "the end of the log (cut short?)".into(),
                    binary: false,
                };
                if self.lenient {
                    self.skipped += 1;
                    self.first_error.get_or_insert(err);
                    continue;
                }
                if let Some(prev) = self.pending_mark.take() {
                    self.deferred = Some(err);
                    return Ok(Some(Event::Mark(prev)));
                }
                return Err(err.into());
            }
            let line = &self.lines.buf[s..e];
            match parse_line(line, self.lines.line_no) {
                Ok(Event::Mark(m)) => {
                    if let Some(prev) = self.pending_mark.replace(m) {
                        return Ok(Some(Event::Mark(prev)));
                    }
                }
                Ok(ev) => {
                    return Ok(Some(match self.pending_mark.take() {
                        Some(prev) => {
                            self.ready = Some(ev);
                            Event::Mark(prev)
                        }
                        None => ev,
                    }));
                }
                Err(err) => {
                    if let Some(m) = &mut self.pending_mark {
                        m.text.push(b'\n');
                        m.text.extend_from_slice(line);
                    } else if self.lenient {
                        self.skipped += 1;
                        self.first_error.get_or_insert(err);
                    } else {
                        return Err(err.into());
                    }
                }
            }
        }
    }
}

/// Puts `ev` at index `i` of `out` (`i <= out.len()`): over the element there, or
/// appended.
#[inline]
pub(crate) fn put_event(out: &mut Vec<Event>, i: usize, ev: Event) {
    if i < out.len() {
        out[i] = ev;
    } else {
        out.push(ev);
    }
}

/// The `Access` at index `i` of `out` (`i <= out.len()`), reusing the element there:
/// decoders write accesses in place rather than moving whole events around.
#[inline(always)]
pub(crate) fn access_slot(out: &mut Vec<Event>, i: usize) -> &mut Access {
    if i == out.len() {
        out.push(Event::Access(BLANK));
    }
    let slot = &mut out[i];
    if !matches!(slot, Event::Access(_)) {
        *slot = Event::Access(BLANK);
    }
    match slot {
        Event::Access(a) => a,
        _ => unreachable!("just made an access"),
    }
}

/// Which encoding a log is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The kernel's text format.
    Text,
    /// mmio-trace's compact binary format.
    Binary,
}

/// Compression detected on input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// xz (`.xz`).
    Xz,
    /// Zstandard (`.zst`).
    Zstd,
}

/// A reader of either format, detected from the content; compressed input
/// (gzip, xz, zstd) is decompressed on the fly.
pub enum AnyReader {
    /// Text input.
    Text(TextReader<Box<dyn Read + Send>>),
    /// Binary input.
    Binary(BinaryReader<Box<dyn Read + Send>>),
}

/// A `Read` that first replays bytes already looked at, then the damage found while
/// looking, if any.
struct Prefixed<R> {
    head: Vec<u8>,
    pos: usize,
    /// Damage (compressed data that does not decompress) met while peeking: the
    /// readers report it where it is, after the bytes before it.
    err: Option<io::Error>,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        self.inner.read(buf)
    }
}

fn peek<R: Read>(mut r: R, n: usize) -> io::Result<Prefixed<R>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    let mut err = None;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_damage_kind(e.kind()) => {
                err = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(Prefixed {
        head,
        pos: 0,
        err,
        inner: r,
    })
}

/// Detects the compression of a stream from its first bytes.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

impl AnyReader {
    /// Wraps a stream, detecting compression and format from its content.
    pub fn new<R: Read + Send + 'static>(inner: R) -> Result<Self, Error> {
        let p = peek(inner, 8)?;
        let raw: Box<dyn Read + Send> = match detect_compression(&p.head) {
            Compression::None => Box::new(p),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(p))),
            Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(BufReader::new(p))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(p)?),
        };
        let p = peek(raw, crate::binary::MAGIC.len())?;
        if p.head == crate::binary::MAGIC {
            let b: Box<dyn Read + Send> = Box::new(p);
            Ok(AnyReader::Binary(BinaryReader::new(b)?))
        } else {
            let b: Box<dyn Read + Send> = Box::new(p);
            Ok(AnyReader::Text(TextReader::new(b)))
        }
    }

    /// Opens a file, detecting compression and format.
    pub fn open(path: &std::path::Path) -> Result<Self, Error> {
        let f = std::fs::File::open(path)?;
        AnyReader::new(f)
    }

    /// The detected format.
    pub fn format(&self) -> Format {
        match self {
            AnyReader::Text(_) => Format::Text,
            AnyReader::Binary(_) => Format::Binary,
        }
    }

    /// Read past damage rather than fail: text skips malformed lines (see
    /// [`TextReader::set_lenient`]); binary skips damaged records whose length is
    /// intact, and ends the log before damage it cannot read past (see
    /// [`BinaryReader::set_lenient`]).
    pub fn set_lenient(&mut self, lenient: bool) {
        match self {
            AnyReader::Text(t) => t.set_lenient(lenient),
            AnyReader::Binary(b) => b.set_lenient(lenient),
        }
    }

    /// The number of lines (text) or records (binary) skipped in lenient mode.
    pub fn skipped(&self) -> u64 {
        match self {
            AnyReader::Text(t) => t.skipped(),
            AnyReader::Binary(b) => b.skipped(),
        }
    }

    /// The first line or record skipped in lenient mode.
    pub fn first_error(&self) -> Option<&ParseError> {
        match self {
            AnyReader::Text(t) => t.first_error(),
            AnyReader::Binary(b) => b.first_error(),
        }
    }

    /// Where lenient reading stopped before the end of the input, and why.
    pub fn stop(&self) -> Option<&Stop> {
        match self {
            AnyReader::Text(t) => t.stop(),
            AnyReader::Binary(b) => b.stop(),
        }
    }

    /// Records of kinds this version does not know (written by a later version),
    /// skipped as the format allows, and the tag of the first.
    pub fn unknown_records(&self) -> (u64, Option<u8>) {
        match self {
            AnyReader::Text(_) => (0, None),
            AnyReader::Binary(b) => b.unknown_records(),
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        match self {
            AnyReader::Text(t) => t.next_event(),
            AnyReader::Binary(b) => b.next_event(),
        }
    }

    /// Replaces the contents of `out` with the next events, at most `max`; see
    /// [`TextReader::read_batch`].
    pub fn read_batch(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, Error> {
        match self {
            AnyReader::Text(t) => t.read_batch(out, max),
            AnyReader::Binary(b) => b.read_batch(out, max),
        }
    }
}

impl Iterator for AnyReader {
    type Item = Result<Event, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

impl<R: Read> Iterator for TextReader<R> {
    type Item = Result<Event, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// A finished marker (continuation lines included) is a kernel access when its text is
/// one (see [`KernelAccess::parse`](crate::event::KernelAccess::parse)); other events
/// pass unchanged.
fn kernel_marks(ev: Event) -> Event {
    match ev {
        Event::Mark(m) => match crate::event::KernelAccess::parse(m.ts_ns, &m.text) {
            Some(k) => Event::Kernel(k),
            None => Event::Mark(m),
        },
        ev => ev,
    }
}
