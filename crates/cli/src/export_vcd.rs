//! `export --to vcd`: registers as waveforms, for GTKWave and Surfer.
//!
//! A VCD file declares every signal before the first value change, so the log is
//! read twice: [`Scan`] finds the registers and their widths, [`Vcd`] writes the
//! changes. Only changes are written (a polling loop that reads the same value a
//! million times is one change), which is what waveform viewers expect.

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use mmio_trace_format::{Access, Event, Format};
use vcd::{IdCode, TimescaleUnit, VarType};

use crate::export::{Context, Exporter};

/// Where a signal's value comes from: an address, or a named register of a map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    At(i64, u64),
    Named(i64, String),
}

fn key_of(a: &Access, ctx: &Context) -> (Key, String) {
    match ctx.register(a) {
        Some(n) => {
            let label = sanitize(&n);
            (Key::Named(a.map_id, n), label)
        }
        None => {
            let label = match ctx.offset(a) {
                Some(o) => format!("off_{o:#06x}"),
                None => format!("phys_{:#x}", a.phys),
            };
            (Key::At(a.map_id, a.phys), label)
        }
    }
}

/// A VCD identifier from a register name: letters, digits and `_` (dots and
/// brackets mean scopes and bit ranges to some readers).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else {
        s
    }
}

/// The bits an access's value needs: its width, or more for the kernel's
/// sign-extended reads, whose logged value is the whole register.
fn bits_of(a: &Access) -> u32 {
    let w = a.width as u32 * 8;
    if a.width <= 8 {
        w.max(64 - a.value().leading_zeros())
    } else {
        w
    }
}

struct Signal {
    label: String,
    bits: u32,
}

/// Signals a VCD file gets: beyond, accesses to further registers are left out (with
/// a warning), so that a frame buffer's millions of addresses cannot grow the tables
/// without bound.
pub const MAX_SIGNALS: usize = 65536;

/// The first pass: every signal, per map, with its width.
#[derive(Default)]
pub struct Scan {
    signals: HashMap<Key, Signal>,
    markers: bool,
    /// Accesses to registers past [`MAX_SIGNALS`].
    left_out: u64,
}

impl Scan {
    /// Notes the signal `ev` changes, if any.
    pub fn event(&mut self, ev: &Event, ctx: &Context) {
        match ev {
            Event::Access(a) => {
                let bits = bits_of(a);
                let name = ctx.register(a);
                if name.is_none() {
                    // The common case without a database costs no allocation.
                    if let Some(s) = self.signals.get_mut(&Key::At(a.map_id, a.phys)) {
                        s.bits = s.bits.max(bits);
                        return;
                    }
                }
                let (key, label) = key_of(a, ctx);
                if self.signals.len() >= MAX_SIGNALS && !self.signals.contains_key(&key) {
                    self.left_out += 1;
                    return;
                }
                let s = self.signals.entry(key).or_insert(Signal { label, bits });
                s.bits = s.bits.max(bits);
            }
            Event::Mark(_)
            | Event::LostEvents(_)
            | Event::CpuLost { .. }
            | Event::Kernel(_)
            | Event::Unknown(_) => self.markers = true,
            _ => {}
        }
    }
}

/// A declared signal: its id and the last value written, to write changes only.
struct Var {
    /// The id code as written in the file.
    code: Box<[u8]>,
    last: Option<[u8; 64]>,
}

/// The VCD writer (second pass).
pub struct Vcd {
    w: vcd::Writer<BufWriter<Box<dyn Write + Send>>>,
    name: String,
    vars: HashMap<Key, Var>,
    markers: Option<IdCode>,
    /// Nanoseconds per time unit: 1000 for text logs (microseconds), 1 for binary.
    unit_ns: u64,
    /// The last time written: VCD time never goes back.
    now: Option<u64>,
    line: Vec<u8>,
    left_out: u64,
}

impl Vcd {
    /// Writes the header: one scope per map, one signal per register found by `scan`.
    pub fn new(
        out: Box<dyn Write + Send>,
        name: String,
        scan: Scan,
        format: Format,
    ) -> anyhow::Result<Vcd> {
        use anyhow::Context as _;
        let (unit_ns, unit) = match format {
            Format::Text => (1000, TimescaleUnit::US),
            Format::Binary => (1, TimescaleUnit::NS),
        };
        let mut w = vcd::Writer::new(BufWriter::with_capacity(1 << 16, out));
        let mut vars = HashMap::new();
        let left_out = scan.left_out;
        let mut markers = None;
        (|| -> std::io::Result<()> {
            w.version(concat!("mmio-trace ", env!("CARGO_PKG_VERSION")))?;
            w.timescale(1, unit)?;
            w.add_module("mmio")?;
            if scan.markers {
                markers = Some(w.add_var(VarType::String, 1, "markers", None)?);
            }
            let mut map = None;
            let mut used: HashMap<String, u32> = HashMap::new();
            let mut signals: Vec<(Key, Signal)> = scan.signals.into_iter().collect();
            signals.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, sig) in signals {
                let id = match &key {
                    Key::At(m, _) | Key::Named(m, _) => *m,
                };
                if map != Some(id) {
                    if map.is_some() {
                        w.upscope()?;
                    }
                    w.add_module(&format!("map_{}", id.to_string().replace('-', "neg")))?;
                    map = Some(id);
                    used.clear();
                }
                // Two names that sanitize alike stay two signals.
                let n = used.entry(sig.label.clone()).or_insert(0);
                *n += 1;
                let label = if *n == 1 {
                    sig.label
                } else {
                    format!("{}_{n}", sig.label)
                };
                let code = w.add_var(VarType::Wire, sig.bits.max(1), &label, None)?;
                vars.insert(
                    key,
                    Var {
                        code: code.to_string().into_bytes().into(),
                        last: None,
                    },
                );
            }
            if map.is_some() {
                w.upscope()?;
            }
            w.upscope()?;
            w.enddefinitions()
        })()
        .with_context(|| format!("writing {name}"))?;
        Ok(Vcd {
            w,
            name,
            vars,
            markers,
            unit_ns,
            now: None,
            line: Vec::with_capacity(600),
            left_out,
        })
    }

    fn at(&mut self, ts_ns: u64) -> std::io::Result<()> {
        let t = ts_ns / self.unit_ns;
        match self.now {
            Some(now) if t <= now => Ok(()),
            _ => {
                self.now = Some(t);
                self.w.timestamp(t)
            }
        }
    }

    fn export(&mut self, ev: &Event, ctx: &Context) -> std::io::Result<()> {
        match ev {
            Event::Access(a) => {
                let key = match ctx.register(a) {
                    Some(n) => Key::Named(a.map_id, n),
                    None => Key::At(a.map_id, a.phys),
                };
                let bytes = if a.width <= 8 {
                    let mut b = [0u8; 64];
                    b[..8].copy_from_slice(&a.value().to_le_bytes());
                    b
                } else {
                    a.bytes()
                };
                let Some(var) = self.vars.get_mut(&key) else {
                    // Not seen by the first pass: the file changed in between.
                    return Ok(());
                };
                if var.last == Some(bytes) {
                    return Ok(());
                }
                var.last = Some(bytes);
                let n = a.width.max(8) as usize;
                vector_change(&mut self.line, &bytes[..n], &var.code);
                self.at(a.ts_ns)?;
                self.w.writer().write_all(&self.line)?;
            }
            Event::Mark(m) => self.marker(m.ts_ns, &String::from_utf8_lossy(&m.text))?,
            // Not register values: shown among the markers, where they happened.
            Event::Kernel(k) => self.marker(k.ts_ns, &String::from_utf8_lossy(&k.text()))?,
            Event::Unknown(u) => {
                let o = u.opcode;
                let text = format!(
                    "UNKNOWN {:02x} {:02x} {:02x} at {:#x} (map {})",
                    o[0], o[1], o[2], u.phys, u.map_id
                );
                self.marker(u.ts_ns, &text)?
            }
            Event::LostEvents(n) => {
                let ts = self.now.unwrap_or(0) * self.unit_ns;
                self.marker(ts, &format!("Lost {n} events"))?
            }
            Event::CpuLost { cpu, count } => {
                let ts = self.now.unwrap_or(0) * self.unit_ns;
                let text = match count {
                    Some(n) => format!("CPU {cpu} lost {n} events"),
                    None => format!("CPU {cpu} lost events"),
                };
                self.marker(ts, &text)?
            }
            _ => {}
        }
        Ok(())
    }

    fn marker(&mut self, ts_ns: u64, text: &str) -> std::io::Result<()> {
        let Some(id) = self.markers else {
            return Ok(());
        };
        self.at(ts_ns)?;
        // A VCD value is one token: blanks become `_`.
        let mut v: String = text
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        if v.is_empty() {
            v.push('_');
        }
        self.w.change_string(id, &v)
    }
}

/// `b<bits> <code>\n`, the line `vcd::Writer::change_vector` writes for the value
/// `bytes` (little-endian): most significant bit first, leading zeros left out (VCD
/// extends a shorter vector with zeros). Built here because the crate formats each
/// bit through `fmt::write`, which made it five times slower than the rest of the
/// export together; the test below holds the two to the same bytes.
fn vector_change(line: &mut Vec<u8>, bytes: &[u8], code: &[u8]) {
    line.clear();
    line.push(b'b');
    let top = (0..bytes.len() * 8)
        .rev()
        .find(|&i| bytes[i / 8] >> (i % 8) & 1 != 0)
        .unwrap_or(0);
    line.extend(
        (0..=top)
            .rev()
            .map(|i| b'0' + (bytes[i / 8] >> (i % 8) & 1)),
    );
    line.push(b' ');
    line.extend_from_slice(code);
    line.push(b'\n');
}

impl Exporter for Vcd {
    fn event(&mut self, ev: &Event, ctx: &Context) -> anyhow::Result<()> {
        use anyhow::Context as _;
        self.export(ev, ctx)
            .with_context(|| format!("writing {}", self.name))
    }

    fn finish(mut self: Box<Self>, _ctx: &Context) -> anyhow::Result<()> {
        self.w.flush()?;
        if self.left_out > 0 {
            eprintln!(
                "mmio-trace: warning: {}: more than {MAX_SIGNALS} registers: {} access{} to \
                 the others are not in the VCD",
                self.name,
                self.left_out,
                if self.left_out == 1 { "" } else { "es" }
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::vector_change;
    use vcd::Value;

    #[test]
    fn vector_changes_are_the_bytes_the_vcd_crate_writes() {
        let mut w = vcd::Writer::new(Vec::new());
        w.add_module("m").unwrap();
        let id = w.add_wire(128, "r").unwrap();
        let code = id.to_string().into_bytes();
        let mut wide = [0u8; 16];
        wide[15] = 0x80;
        wide[0] = 1;
        let cases: [&[u8]; 5] = [
            &[0; 8],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[0x83, 0x07, 0x08, 0x80, 0, 0, 0, 0],
            &[0xff; 8],
            &wide,
        ];
        for bytes in cases {
            let start = w.writer().len();
            let top = (0..bytes.len() * 8)
                .rev()
                .find(|&i| bytes[i / 8] >> (i % 8) & 1 != 0)
                .unwrap_or(0);
            let bits = (0..=top).rev().map(|i| {
                if bytes[i / 8] >> (i % 8) & 1 != 0 {
                    Value::V1
                } else {
                    Value::V0
                }
            });
            w.change_vector(id, bits).unwrap();
            let theirs = w.writer()[start..].to_vec();
            let mut ours = Vec::new();
            vector_change(&mut ours, bytes, &code);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }
}
