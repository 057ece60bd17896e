//! `mmio-trace show`: a readable, filtered listing of a log.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use mmio_trace_format::{Access, Direction, Event};

use crate::analyse::{FilterArgs, Progress};
use crate::input::{InputArgs, LogInput};
use crate::regnames::DbArgs;
use crate::style::{ColorChoice, Style};

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

    /// Colour the output.
    #[arg(long, value_enum, default_value_t)]
    color: ColorChoice,
}

/// Runs `show`.
pub fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let mut input = LogInput::open(&args.input)?;
    let mut names = args.db.load()?;
    let style = Style::new(args.color);
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut line = String::with_capacity(256);
    let mut progress = Progress::new();
    input.for_each_event(|ev, seen| {
        if let Some(n) = names.as_mut() {
            n.observe(ev);
        }
        if !args.filter.keep(ev) {
            return Ok(());
        }
        line.clear();
        let described = match (ev, names.as_ref()) {
            (Event::Access(a), Some(n)) => n.describe(a),
            _ => None,
        };
        render(&mut line, ev, &style, described.as_deref());
        out.write_all(line.as_bytes())?;
        progress.tick(seen);
        Ok(())
    })?;
    out.flush()?;
    progress.finish();
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
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

fn ctx(line: &mut String, pc: u64, pid: u32, style: &Style) {
    use std::fmt::Write as _;
    if pc != 0 || pid != 0 {
        let _ = write!(line, "  {}pid {pid} pc {pc:#x}{}", style.dim, style.reset);
    }
}

/// Renders one event as one or more lines ending in `\n`.
pub fn render(line: &mut String, ev: &Event, style: &Style, described: Option<&str>) {
    use std::fmt::Write as _;
    let s = style;
    match ev {
        Event::Access(a) => {
            let (col, letter, arrow) = match a.dir {
                Direction::Read => (s.read, 'R', "=>"),
                Direction::Write => (s.write, 'W', "<="),
            };
            let _ = write!(
                line,
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
            );
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
                None => line.push_str(" no driver"),
            }
        }
        Event::Verbatim(v) => {
            let _ = write!(line, "{}{}{}", s.dim, String::from_utf8_lossy(v), s.reset);
        }
    }
    line.push('\n');
}
