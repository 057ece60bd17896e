//! Opening logs for the analysis commands: one place that names the file in every
//! error and reports what lenient mode skipped.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mmio_trace_format::{AnyReader, Event, Format};

/// Events per `read_batch` call: enough to amortise the call, few enough that the
/// batch stays in cache.
const BATCH: usize = 256;

/// Marks an error caused by the input rather than by the machine: exit status 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A log being read, with its name for messages.
pub struct LogInput {
    name: String,
    reader: AnyReader,
    events: u64,
    lenient: bool,
}

/// Options every command that reads a log takes.
#[derive(clap::Args, Clone, Debug)]
pub struct InputArgs {
    /// The log to read: kernel mmiotrace text or mmio-trace binary, optionally
    /// gzip/xz/zstd compressed (detected from content). `-` reads standard input.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,

    /// Read a damaged log as far as it can be read instead of stopping at the first
    /// damage: malformed lines (text), damaged records whose length is intact
    /// (binary) and a last line cut short are skipped; damage the reader cannot read
    /// past (a damaged access record or block of a binary log, compressed data that
    /// stops decompressing) ends the log there. Every complete event before the
    /// damage is used; what was skipped and where reading stopped is reported on
    /// standard error, and the exit status is 0. Without it, the first damage is
    /// an error (exit status 2), after the events before it.
    #[arg(long)]
    pub lenient: bool,
}

impl LogInput {
    /// Opens the log named in `args`.
    pub fn open(args: &InputArgs) -> anyhow::Result<LogInput> {
        Self::open_path(&args.log, args.lenient)
    }

    /// Opens `path` (`-` for standard input).
    pub fn open_path(path: &Path, lenient: bool) -> anyhow::Result<LogInput> {
        let name = path.display().to_string();
        let source: Box<dyn Read + Send> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?)
        };
        let mut reader = AnyReader::new(source).map_err(|e| wrap(&name, e, ""))?;
        reader.set_lenient(lenient);
        Ok(LogInput {
            name: if name == "-" { "<stdin>".into() } else { name },
            reader,
            events: 0,
            lenient,
        })
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The detected format.
    pub fn format(&self) -> Format {
        self.reader.format()
    }

    /// Calls `f` on each remaining event in order, with the number of events read
    /// up to and including it; stops at the first error, from `f` or the log (which
    /// names the file).
    ///
    /// Events are read in batches, the format crate's fastest path, but `f` sees the
    /// same events and errors in the same order as reading one at a time would give:
    /// every event before a malformed line reaches `f` before the error is returned,
    /// and an error from `f` wins over a read error further on.
    pub fn for_each_event(
        &mut self,
        mut f: impl FnMut(&Event, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let read = self.reader.read_batch(&mut batch, BATCH);
            // On error the batch holds the events before the bad one.
            for ev in &batch {
                self.events += 1;
                f(ev, self.events)?;
            }
            match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    let hint = if self.lenient {
                        ""
                    } else {
                        " (--lenient reads on past damage where it can)"
                    };
                    return Err(wrap(&self.name, e, hint));
                }
            }
        }
    }

    /// Whether lenient reading stopped at damage before the end of the input.
    pub fn stopped(&self) -> bool {
        self.reader.stop().is_some()
    }

    /// Where lenient reading stopped at damage, if it did.
    pub fn stop(&self) -> Option<&mmio_trace_format::Stop> {
        self.reader.stop()
    }

    /// Records of kinds this version does not know, skipped (binary logs).
    pub fn unknown_records(&self) -> u64 {
        self.reader.unknown_records().0
    }

    /// Malformed lines skipped so far (lenient mode).
    pub fn skipped(&self) -> u64 {
        self.reader.skipped()
    }

    /// Tells on standard error, once each, what lenient mode skipped and where it
    /// stopped, and how many records of unknown kinds a binary log had.
    pub fn report_skipped(&self) {
        let n = self.reader.skipped();
        let what = match self.format() {
            Format::Text => "malformed line",
            Format::Binary => "damaged record",
        };
        if n > 0 {
            let first = self
                .reader
                .first_error()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default();
            eprintln!(
                "mmio-trace: {}: skipped {n} {what}{}{first}",
                self.name,
                plural(n)
            );
        }
        if let Some(stop) = self.reader.stop() {
            let unread = match stop.unread_bytes {
                Some(b) => format!(
                    "; the {b} byte{} from there to the end were not read",
                    plural(b)
                ),
                None => String::new(),
            };
            eprintln!(
                "mmio-trace: {}: stopped at damage: {}{unread}",
                self.name, stop.error
            );
        }
        if let (k @ 1.., Some(tag)) = self.reader.unknown_records() {
            eprintln!(
                "mmio-trace: {}: skipped {k} record{} of a kind this version does not know \
                 (first: tag {tag:#04x}; written by a later version?)",
                self.name,
                plural(k)
            );
        }
    }
}

/// `""` or `"s"`.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `e` as an error naming the file; parse errors are bad input, followed by `hint`.
fn wrap(name: &str, e: mmio_trace_format::Error, hint: &str) -> anyhow::Error {
    match &e {
        mmio_trace_format::Error::Parse(p) if p.binary => {
            BadInput(format!("{name}: {p}{hint}")).into()
        }
        mmio_trace_format::Error::Parse(p) => BadInput(format!(
            "{name}:{}:{}: expected {}, found {}{hint}",
            p.line, p.column, p.expected, p.found
        ))
        .into(),
        mmio_trace_format::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            BadInput(format!(
                "{name}: the compressed data is damaged or cut short: {io}{hint}"
            ))
            .into()
        }
        _ => anyhow::Error::new(e).context(format!("reading {name}")),
    }
}

/// Parses `LO..HI` (either side optional) or a single address `A` (as `A..A`);
/// numbers in hex with `0x` or decimal.
pub fn parse_u64_range(s: &str) -> Result<(u64, u64), String> {
    let Some((lo, hi)) = s.split_once("..") else {
        let a = parse_u64(s).map_err(|_| {
            format!("`{s}` is neither an address nor a range LO..HI (decimal, or hex with 0x)")
        })?;
        return Ok((a, a));
    };
    let lo = if lo.is_empty() { 0 } else { parse_u64(lo)? };
    let hi = if hi.is_empty() {
        u64::MAX
    } else {
        parse_u64(hi)?
    };
    if lo > hi {
        return Err(format!("range `{s}` is empty: {lo:#x} > {hi:#x}"));
    }
    Ok((lo, hi))
}

/// A number in hex (`0x...`) or decimal.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a number (decimal, or hex with 0x)"))
}

/// Parses `A..B` in seconds (either side optional) into nanoseconds.
pub fn parse_time_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range A..B"))?;
    let secs = |x: &str| -> Result<u64, String> {
        let v: f64 = x
            .trim()
            .parse()
            .map_err(|_| format!("`{x}` is not a time in seconds"))?;
        if !(v >= 0.0 && v.is_finite()) {
            return Err(format!("`{x}` is not a time in seconds"));
        }
        Ok((v * 1e9).round() as u64)
    };
    let lo = if a.is_empty() { 0 } else { secs(a)? };
    let hi = if b.is_empty() { u64::MAX } else { secs(b)? };
    if lo > hi {
        return Err(format!("time range `{s}` is empty"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_hex_decimal_and_open_ends() {
        assert_eq!(parse_u64_range("0x10..0x20"), Ok((0x10, 0x20)));
        assert_eq!(parse_u64_range("..16"), Ok((0, 16)));
        assert_eq!(parse_u64_range("0xfeb4_0000.."), Ok((0xfeb40000, u64::MAX)));
        assert!(parse_u64_range("5..4").is_err());
        assert!(parse_u64_range("zz..4").is_err());
        assert_eq!(parse_u64_range("0xfeb40010"), Ok((0xfeb40010, 0xfeb40010)));
        assert_eq!(parse_u64_range("16"), Ok((16, 16)));
        assert!(parse_u64_range("0xzz").is_err());
        assert_eq!(
            parse_time_range("2.5..3"),
            Ok((2_500_000_000, 3_000_000_000))
        );
        assert!(parse_time_range("-1..3").is_err());
    }
}
