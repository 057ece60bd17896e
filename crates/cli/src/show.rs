//! `mmio-trace show`: a readable, filtered listing of a log.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;

use mmio_trace_format::{Access, Direction, Event};

use crate::analyse::{FilterArgs, Progress};
use crate::fold::{fmt_duration, fmt_values, Folded, Folder, Run, Slot};
use crate::input::{InputArgs, LogInput};
use crate::regnames::{DbArgs, Names};
use crate::style::{ColorChoice, Style};
use crate::symbols::{SymbolArgs, Symbolizer};

/// List the events of a log, one per line, readable and filtered.
///
/// Accesses print as `TIME  R4  ADDRESS => VALUE` for reads and `<=` for writes (the
/// convention of envytools' demmio), with the mapping id and, where the log has
/// them, thread id and program counter. With `--db`, each access also shows its
/// register name and decoded fields.
#[derive(clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    input: InputArgs,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    db: DbArgs,

    #[command(flatten)]
    symbols: SymbolArgs,

    /// Colour the output.
    #[arg(long, value_enum, default_value_t)]
    color: ColorChoice,

    /// Fold repetition: a run of accesses whose register, direction and width repeat
    /// (one register polled, or a group of up to 8 accesses such as a bit-banged
    /// EEPROM's write/read pairs) prints once with its count, every value it took
    /// in order (`= 0x0 … until 0x8 (bit 3 set)` for a poll that ended on a new
    /// value; `= 0x1c6 ×2, 0x1c7` otherwise) and its duration. No value is hidden:
    /// the first, each changed and the last value of every run stay visible.
    #[arg(long)]
    fold: bool,

    /// With --fold: one JSON object per line instead, each unfolded event with its
    /// index in the log (`index`, 1-based) and each run with its extent
    /// (`first_index`, `last_index`, `first_ts_ns`, `last_ts_ns`), `reps` and its
    /// `slots` (`dir`, `width`, `map`, `phys`, `name`, `values` as [value, count]).
    #[arg(long, requires = "fold")]
    json: bool,
}

/// Runs `show`.
pub fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let mut input = LogInput::open(&args.input)?;
    let mut names = args.db.load()?;
    let style = Style::new(args.color);
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut line = Vec::with_capacity(256);
    let mut progress = Progress::new();
    if args.fold {
        crate::symbols::use_symbols(args.symbols);
        return run_folded(&args, input, names, &style, out, progress);
    }
    let mut symbols = Symbolizer::new(args.symbols);
    input.for_each_event(|ev, seen| {
        if let Some(n) = names.as_mut() {
            n.observe(ev);
        }
        symbols.observe(ev);
        if !args.filter.keep(ev) {
            return Ok(());
        }
        line.clear();
        let described = match (ev, names.as_ref()) {
            (Event::Access(a), Some(n)) => n.describe(a),
            _ => None,
        };
        render(&mut line, ev, &style, described.as_deref());
        if let Some(site) = event_site(ev).and_then(|(pid, pc)| symbols.label(pid, pc)) {
            // After the `pc` that ends the event's (single) line.
            if line.last() == Some(&b'\n') {
                line.pop();
                let _ = write!(line, " {}{site}{}", style.dim, style.reset);
                line.push(b'\n');
            }
        }
        out.write_all(&line).context("writing standard output")?;
        progress.tick(seen);
        Ok(())
    })?;
    out.flush().context("writing standard output")?;
    progress.finish();
    if let Some(n) = &names {
        n.report_unbound();
    }
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}

/// `show --fold`: the same listing with runs folded.
fn run_folded(
    args: &ShowArgs,
    mut input: LogInput,
    mut names: Option<Names>,
    style: &Style,
    mut out: impl Write,
    mut progress: Progress,
) -> anyhow::Result<ExitCode> {
    let mut folder = Folder::default();
    let mut line = Vec::with_capacity(256);
    let json = args.json;
    let mut emit = |item: Folded<'_>, names: Option<&Names>| -> anyhow::Result<()> {
        line.clear();
        match item {
            Folded::Event(ev, index) => {
                if json {
                    json_event(&mut line, ev, index, names);
                } else {
                    let described = match (ev, names) {
                        (Event::Access(a), Some(n)) => n.describe(a),
                        _ => None,
                    };
                    render(&mut line, ev, style, described.as_deref());
                }
            }
            Folded::Run(run) => {
                if json {
                    serde_json::to_writer(&mut line, &run_json(run, names))?;
                    line.push(b'\n');
                } else {
                    render_run(&mut line, run, style, names);
                }
            }
        }
        out.write_all(&line).context("writing standard output")
    };
    input.for_each_event(|ev, seen| {
        if let Some(n) = names.as_mut() {
            n.observe(ev);
        }
        crate::symbols::observe_symbols(ev);
        progress.tick(seen);
        if !args.filter.keep(ev) {
            return Ok(());
        }
        let n = names.as_ref();
        folder.push(ev, seen, &mut |item| emit(item, n))
    })?;
    let n = names.as_ref();
    folder.finish(&mut |item| emit(item, n))?;
    out.flush().context("writing standard output")?;
    progress.finish();
    if let Some(n) = &names {
        n.report_unbound();
    }
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}

/// One folded run, as `show --fold` prints it: a run of one register on one line
/// (`R4  0xfeb40008 STATUS ×1533 = 0x0 … until 0x8 (bit 3 set), 4.1 ms  map 1`), a
/// longer group as a line with its count and duration and then one line per access
/// of the group.
pub fn render_run(line: &mut Vec<u8>, run: &Run, s: &Style, names: Option<&Names>) {
    let _ = write!(line, "{:>14}  ", fmt_ts(run.first_ts));
    let span = fmt_duration(run.last_ts.saturating_sub(run.first_ts));
    let slot_text = |line: &mut Vec<u8>, slot: &Slot| {
        let col = match slot.shape.dir {
            Direction::Read => s.read,
            Direction::Write => s.write,
        };
        let letter = if slot.shape.dir == Direction::Read {
            'R'
        } else {
            'W'
        };
        let _ = write!(
            line,
            "{col}{letter}{:<2}{} {:#010x}",
            slot.shape.width, s.reset, slot.shape.phys
        );
        if let Some(name) = names.and_then(|n| n.register_name(&slot.first)) {
            let _ = write!(line, " {name}");
        }
    };
    if let [slot] = run.slots.as_slice() {
        slot_text(line, slot);
        let _ = write!(
            line,
            " ×{} {}, {span}  {}map {}{}",
            run.reps,
            fmt_values(slot),
            s.dim,
            slot.shape.map_id,
            s.reset
        );
        site(line, &slot.first, s);
        line.push(b'\n');
        return;
    }
    let _ = writeln!(
        line,
        "×{} of {} accesses, {span}",
        run.reps,
        run.slots.len()
    );
    for slot in &run.slots {
        let _ = write!(line, "{:>14}    ", "");
        slot_text(line, slot);
        let _ = write!(
            line,
            " {}  {}map {}{}",
            fmt_values(slot),
            s.dim,
            slot.shape.map_id,
            s.reset
        );
        site(line, &slot.first, s);
        line.push(b'\n');
    }
}

fn site(line: &mut Vec<u8>, a: &Access, s: &Style) {
    if a.pc != 0 || a.pid != 0 {
        let _ = write!(
            line,
            "  {}{}{}",
            s.dim,
            crate::analyze::site_label(a.pid, a.pc),
            s.reset
        );
    }
}

/// A folded run as JSON.
pub fn run_json(run: &Run, names: Option<&Names>) -> serde_json::Value {
    serde_json::json!({
        "kind": "run",
        "first_index": run.first_index,
        "last_index": run.last_index,
        "first_ts_ns": run.first_ts,
        "last_ts_ns": run.last_ts,
        "reps": run.reps,
        "accesses": run.accesses(),
        "slots": run.slots.iter().map(|slot| serde_json::json!({
            "dir": if slot.shape.dir == Direction::Read { "R" } else { "W" },
            "width": slot.shape.width,
            "map": slot.shape.map_id,
            "phys": slot.shape.phys,
            "name": names.and_then(|n| n.register_name(&slot.first)),
            "values": slot.values.iter().map(|&(v, n)| [v, n]).collect::<Vec<_>>(),
            "pid": slot.first.pid,
            "pc": slot.first.pc,
        })).collect::<Vec<_>>(),
    })
}

/// An event that did not fold, as one JSON line: accesses field by field, other
/// events as the line `show` prints for them.
fn json_event(line: &mut Vec<u8>, ev: &Event, index: u64, names: Option<&Names>) {
    let v = match ev {
        Event::Access(a) => serde_json::json!({
            "kind": "access",
            "index": index,
            "ts_ns": a.ts_ns,
            "dir": if a.dir == Direction::Read { "R" } else { "W" },
            "width": a.width,
            "map": a.map_id,
            "phys": a.phys,
            "value": fmt_value(a),
            "name": names.and_then(|n| n.register_name(a)),
            "pid": a.pid,
            "pc": a.pc,
        }),
        _ => {
            let mut text = Vec::new();
            render(&mut text, ev, &Style::new(ColorChoice::Never), None);
            let text = String::from_utf8_lossy(&text);
            serde_json::json!({
                "kind": "event",
                "index": index,
                "ts_ns": ev.ts_ns(),
                "text": text.trim(),
            })
        }
    };
    let _ = serde_json::to_writer(&mut *line, &v);
    line.push(b'\n');
}

/// The thread and PC of an event that has a call site.
fn event_site(ev: &Event) -> Option<(u32, u64)> {
    match ev {
        Event::Access(a) => Some((a.pid, a.pc)),
        Event::Unknown(u) => Some((u.pid, u.pc)),
        Event::Map(m) => Some((m.pid, m.pc)),
        Event::Unmap(u) => Some((u.pid, u.pc)),
        _ => None,
    }
}

/// `seconds.microseconds`, as the kernel prints time.
pub fn fmt_ts(ts_ns: u64) -> String {
    let mut v = Vec::with_capacity(20);
    mmio_trace_format::text::put_ts(&mut v, ts_ns);
    String::from_utf8(v).expect("ASCII digits")
}

/// The value of an access, zero-padded to its width; wider accesses as 8-byte
/// words, most significant first, separated by `_`.
pub fn fmt_value(a: &Access) -> String {
    let w = a.width as usize;
    if w <= 8 {
        format!("0x{:0width$x}", a.value(), width = w * 2)
    } else {
        let bytes = a.bytes();
        let mut s = String::from("0x");
        for (i, chunk) in bytes[..w].chunks(8).enumerate().rev() {
            for b in chunk.iter().rev() {
                s.push_str(&format!("{b:02x}"));
            }
            if i > 0 {
                s.push('_');
            }
        }
        s
    }
}

fn ctx(line: &mut Vec<u8>, pc: u64, pid: u32, style: &Style) {
    if pc != 0 || pid != 0 {
        let _ = write!(line, "  {}pid {pid} pc {pc:#x}{}", style.dim, style.reset);
    }
}

/// Lowercase hex digits of `v`, at least `min` (<= 16) of them, zero-padded.
fn put_hex(line: &mut Vec<u8>, v: u64, min: usize) {
    let digits = (16 - v.leading_zeros() as usize / 4).max(min);
    line.extend(
        (0..digits)
            .rev()
            .map(|i| b"0123456789abcdef"[(v >> (4 * i) & 0xf) as usize]),
    );
}

/// An access line, built by hand rather than through `format!`: the bulk of every
/// listing, and formatting machinery was most of `show`'s time. The same bytes as
/// `{:>14}  {col}{letter}{:<2}{reset} {:#010x} {arrow} {col}{value}{reset}  {dim}map {}{reset}`.
fn render_access(line: &mut Vec<u8>, a: &Access, s: &Style) {
    let (col, head, arrow) = match a.dir {
        Direction::Read => (s.read, b'R', &b" => "[..]),
        Direction::Write => (s.write, b'W', &b" <= "[..]),
    };
    let start = line.len();
    mmio_trace_format::text::put_ts(line, a.ts_ns);
    let pad = 14usize.saturating_sub(line.len() - start);
    line.splice(start..start, std::iter::repeat_n(b' ', pad));
    line.extend_from_slice(b"  ");
    line.extend_from_slice(col.as_bytes());
    line.push(head);
    let mut width = itoa::Buffer::new();
    let width = width.format(a.width);
    line.extend_from_slice(width.as_bytes());
    if width.len() < 2 {
        line.push(b' ');
    }
    line.extend_from_slice(s.reset.as_bytes());
    line.extend_from_slice(b" 0x");
    put_hex(line, a.phys, 8);
    line.extend_from_slice(arrow);
    line.extend_from_slice(col.as_bytes());
    if a.width <= 8 {
        line.extend_from_slice(b"0x");
        put_hex(line, a.value(), 2 * a.width as usize);
    } else {
        line.extend_from_slice(fmt_value(a).as_bytes());
    }
    line.extend_from_slice(s.reset.as_bytes());
    line.extend_from_slice(b"  ");
    line.extend_from_slice(s.dim.as_bytes());
    line.extend_from_slice(b"map ");
    line.extend_from_slice(itoa::Buffer::new().format(a.map_id).as_bytes());
    line.extend_from_slice(s.reset.as_bytes());
}

/// Renders one event as one or more lines ending in `\n`.
pub fn render(line: &mut Vec<u8>, ev: &Event, style: &Style, described: Option<&str>) {
    let s = style;
    match ev {
        Event::Access(a) => {
            render_access(line, a, s);
            if let Some(d) = described {
                let _ = write!(line, "  {d}");
            }
            ctx(line, a.pc, a.pid, s);
        }
        Event::Unknown(u) => {
            let _ = write!(
                line,
                "{:>14}  {}??{}  {:#010x} undecoded instruction {:02x} {:02x} {:02x}  {}map {}{}",
                fmt_ts(u.ts_ns),
                s.warn,
                s.reset,
                u.phys,
                u.opcode[0],
                u.opcode[1],
                u.opcode[2],
                s.dim,
                u.map_id,
                s.reset
            );
            ctx(line, u.pc, u.pid, s);
        }
        Event::Map(m) => {
            let _ = write!(
                line,
                "{:>14}  {}MAP #{} {:#x}+{:#x} at {:#x}{}",
                fmt_ts(m.ts_ns),
                s.map,
                m.id,
                m.phys,
                m.len,
                m.virt,
                s.reset
            );
            ctx(line, m.pc, m.pid, s);
        }
        Event::Unmap(u) => {
            let _ = write!(
                line,
                "{:>14}  {}UNMAP #{}{}",
                fmt_ts(u.ts_ns),
                s.map,
                u.id,
                s.reset
            );
            ctx(line, u.pc, u.pid, s);
        }
        Event::Mark(m) => {
            let text = String::from_utf8_lossy(&m.text);
            let _ = write!(
                line,
                "{:>14}  {}MARK {}{}",
                fmt_ts(m.ts_ns),
                s.mark,
                text,
                s.reset
            );
        }
        Event::Kernel(k) => {
            let _ = write!(
                line,
                "{:>14}  {}KERNEL {} {} bytes at {:#010x} by {}(){}  {}map {}  pid {}{}",
                fmt_ts(k.ts_ns),
                s.mark,
                match k.dir {
                    Direction::Read => "read",
                    Direction::Write => "wrote",
                },
                k.len,
                k.phys,
                String::from_utf8_lossy(&k.call),
                s.reset,
                s.dim,
                k.map_id,
                k.pid,
                s.reset
            );
        }
        Event::LostEvents(n) => {
            let _ = write!(line, "{:>14}  {}LOST {n} events{}", "", s.warn, s.reset);
        }
        Event::CpuLost { cpu, count } => {
            let n = count
                .map(|n| n.to_string())
                .unwrap_or_else(|| "some".into());
            let _ = write!(
                line,
                "{:>14}  {}LOST {n} events on CPU {cpu}{}",
                "", s.warn, s.reset
            );
        }
        Event::Version(v) => {
            let _ = write!(
                line,
                "mmiotrace log, format version {}",
                String::from_utf8_lossy(v)
            );
        }
        Event::PciDev(p) => {
            let _ = write!(
                line,
                "PCI {:02x}:{:02x}.{} {:04x}:{:04x} irq {}",
                p.bus,
                p.devfn >> 3,
                p.devfn & 7,
                p.vendor,
                p.device,
                p.irq
            );
            for i in 0..7 {
                if p.sizes[i] != 0 {
                    let name = if i == 6 {
                        "ROM".to_string()
                    } else {
                        format!("BAR{i}")
                    };
                    let kind = if p.starts[i] & 1 != 0 { " io" } else { "" };
                    let _ = write!(line, " {name}{kind} {:#x}+{:#x}", p.base(i), p.sizes[i]);
                }
            }
            match &p.driver {
                Some(d) => {
                    let _ = write!(line, " driver {}", String::from_utf8_lossy(d));
                }
                None => line.extend_from_slice(b" no driver"),
            }
        }
        Event::Verbatim(v) => {
            let _ = write!(line, "{}{}{}", s.dim, String::from_utf8_lossy(v), s.reset);
        }
    }
    line.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::ColorChoice;

    /// The access line as `format!` wrote it before `render_access` built it by hand.
    fn oracle(a: &Access, s: &Style) -> String {
        let (col, letter, arrow) = match a.dir {
            Direction::Read => (s.read, 'R', "=>"),
            Direction::Write => (s.write, 'W', "<="),
        };
        format!(
            "{:>14}  {col}{letter}{:<2}{} {:#010x} {arrow} {col}{}{}  {}map {}{}",
            fmt_ts(a.ts_ns),
            a.width,
            s.reset,
            a.phys,
            fmt_value(a),
            s.reset,
            s.dim,
            a.map_id,
            s.reset
        )
    }

    #[test]
    fn hand_built_access_lines_match_the_format_strings() {
        let bytes: Vec<u8> = (1..=64).collect();
        let mut accesses = Vec::new();
        for (i, &(width, ts, phys, value, map)) in [
            (1u8, 0u64, 0u64, 0u64, 0i64),
            (1, 499, 0xf, 0x7, 1),
            (2, 500, 0x1234, 0xbeef, 12345),
            (4, 2_435_055_000, 0xfeb40008, 0x80080783, 1),
            (8, 99_999_999_999_999_000, u64::MAX, u64::MAX, -1),
            (8, 123_456_789_012, 0x38_0000_0010, 0x1, i64::MAX),
        ]
        .iter()
        .enumerate()
        {
            let dir = if i % 2 == 0 {
                Direction::Read
            } else {
                Direction::Write
            };
            accesses.push(Access::new(dir, width, ts, map, phys, value));
        }
        for w in [9, 16, 32, 64] {
            accesses.push(Access::from_bytes(
                Direction::Write,
                7_000,
                2,
                0xfd00_0000,
                &bytes[..w],
            ));
        }
        for choice in [ColorChoice::Never, ColorChoice::Always] {
            let s = Style::new(choice);
            for a in &accesses {
                let mut line = Vec::new();
                render_access(&mut line, a, &s);
                assert_eq!(String::from_utf8(line).unwrap(), oracle(a, &s));
            }
        }
    }
}
