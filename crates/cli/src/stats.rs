//! `mmio-trace stats`: what a log holds, per address, per mapping and per register.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use mmio_trace_format::{Access, Direction, Event};
use serde_json::{json, Value};

use crate::analyse::{FilterArgs, Progress};
use crate::input::{plural, InputArgs, LogInput};
use crate::regnames::DbArgs;
use crate::show::fmt_ts;
use crate::symbols::{SymbolArgs, Symbolizer};

/// Distinct values are counted exactly up to this many per address.
const DISTINCT_CAP: usize = 65536;

/// Summarise a log: totals, per mapping, the hottest addresses (reads, writes,
/// widths, distinct values, first and last time), hottest registers with `--db`,
/// and every loss the log reports.
///
/// Events are counted apart from the header lines (VERSION, PCIDEV); accesses the
/// kernel made on the program's behalf (`MARK ... kernel read|wrote N bytes ...`) are
/// counted, with their bytes. With `--lenient`, where reading stopped is said on
/// standard error (and in `--json`: `lost.stopped_at_damage`, `lost.unread_bytes`).
#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    input: InputArgs,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    db: DbArgs,

    /// How many of the hottest addresses (and registers) to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,

    /// List every address, not only the hottest.
    #[arg(long)]
    all: bool,

    /// Also list the call sites (the code that made the accesses), hottest first, each
    /// as `function+0xOFF (file:line)` or `object+0xOFF` where the log holds the loaded
    /// objects (`0xPC` otherwise); `--top` of them, or all with `--all`. In `--json`:
    /// `sites`, each with `site`, `pcs`, `reads` and `writes`.
    #[arg(long)]
    by_site: bool,

    #[command(flatten)]
    symbols: SymbolArgs,

    /// Print one JSON object instead: totals `reads`, `writes`, `unknown`, `lost`,
    /// `maps`, `addresses` (every address, hottest first) and `registers` (with `--db`),
    /// `kernel_accesses` and `kernel_bytes`.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct AddrStats {
    reads: u64,
    writes: u64,
    /// Bit `log2(w)` set for each power-of-two width seen; others in `odd_widths`.
    widths: u128,
    values: HashSet<u64>,
    capped: bool,
    first: u64,
    last: u64,
}

#[derive(Default)]
struct MapStats {
    phys: Option<u64>,
    len: Option<u64>,
    reads: u64,
    writes: u64,
    unmapped: bool,
    /// The mapped file and whether accesses went through an alias mapping, from the
    /// `MARK` that `record` writes after the `MAP`.
    file: Option<(String, bool)>,
}

/// The ids of `map ID continues map FROM`, the `MARK` that `record` writes when an
/// `mremap` moves, grows or duplicates a mapping (the same file).
pub(crate) fn continues_mark(text: &[u8]) -> Option<(i64, i64)> {
    let rest = std::str::from_utf8(text).ok()?.strip_prefix("map ")?;
    let (id, from) = rest.split_once(" continues map ")?;
    Some((id.parse().ok()?, from.parse().ok()?))
}

/// The map id, file and alias flag of a `MARK` as `record` writes after a `MAP`:
/// `map ID PATH offset 0xOFF length 0xLEN`, then ` (no alias mapping: ...)` when the
/// driver refused the alias. Anything else is an ordinary marker.
pub(crate) fn map_mark(text: &[u8]) -> Option<(i64, String, bool)> {
    let text = std::str::from_utf8(text).ok()?;
    let (head, alias) = match text.split_once(" (no alias mapping") {
        Some((head, _)) => (head, false),
        None => (text, true),
    };
    let rest = head.strip_prefix("map ")?;
    let (id, rest) = rest.split_once(' ')?;
    let (path, rest) = rest.rsplit_once(" offset 0x")?;
    let (off, len) = rest.split_once(" length 0x")?;
    let hex = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(off) && hex(len)).then_some(())?;
    Some((id.parse().ok()?, path.to_string(), alias))
}

#[derive(Default)]
struct Totals {
    /// What happened, in time: accesses, undecoded accesses, markers, MAP, UNMAP and
    /// loss notices; not the header nor comments.
    events: u64,
    /// `VERSION` and `PCIDEV` lines (records in binary logs).
    header: u64,
    /// Comments and the kernel's notes (`#...`, `rw what?`, `LSPCI ...`).
    other: u64,
    maps: u64,
    unmaps: u64,
    reads: u64,
    writes: u64,
    unknown: u64,
    marks: u64,
    /// System calls' accesses to device memory (`kernel read/wrote` markers) and their bytes.
    kernel: u64,
    kernel_bytes: u64,
    lost_marks: u64,
    lost_events: u64,
    cpu_lost: u64,
    /// `CPU:N [LOST ...]` lines, and those of them without a count.
    cpu_lost_lines: u64,
    cpu_lost_unknown: u64,
    first: Option<u64>,
    last: Option<u64>,
}

fn value_key(a: &Access) -> u64 {
    if a.width <= 8 {
        a.value()
    } else {
        // Wide accesses: fold the bytes; collisions only merge distinct-value counts.
        a.bytes()[..a.width as usize]
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
    }
}

/// Runs `stats`.
pub fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let mut input = LogInput::open(&args.input)?;
    let mut names = args.db.load()?;
    let mut t = Totals::default();
    let mut addrs: HashMap<u64, AddrStats> = HashMap::new();
    let mut maps: BTreeMap<i64, MapStats> = BTreeMap::new();
    let mut regs: HashMap<String, (u64, u64)> = HashMap::new();
    let mut progress = Progress::new();
    let mut symbols = Symbolizer::new(args.symbols);
    // (thread, PC, its object then) -> (reads, writes), with --by-site.
    let mut pcs: HashMap<(u32, u64, Option<usize>), (u64, u64)> = HashMap::new();
    input.for_each_event(|ev, seen| {
        progress.tick(seen);
        if let Some(n) = names.as_mut() {
            n.observe(ev);
        }
        if args.by_site {
            symbols.observe(ev);
        }
        if !args.filter.keep(ev) {
            return Ok(());
        }
        match ev {
            Event::Version(_) | Event::PciDev(_) => t.header += 1,
            Event::Verbatim(_) => t.other += 1,
            _ => t.events += 1,
        }
        if let Some(ts) = ev.ts_ns() {
            if !matches!(ev, Event::LostEvents(_)) {
                t.first = Some(t.first.map_or(ts, |f| f.min(ts)));
                t.last = Some(t.last.map_or(ts, |l| l.max(ts)));
            }
        }
        match ev {
            Event::Access(a) => {
                let read = a.dir == Direction::Read;
                if read {
                    t.reads += 1;
                } else {
                    t.writes += 1;
                }
                if args.by_site {
                    let obj = symbols.object_at(a.pid, a.pc);
                    let c = pcs.entry((a.pid, a.pc, obj)).or_default();
                    if read {
                        c.0 += 1
                    } else {
                        c.1 += 1
                    }
                }
                let m = maps.entry(a.map_id).or_default();
                if read {
                    m.reads += 1
                } else {
                    m.writes += 1
                }
                let s = addrs.entry(a.phys).or_insert_with(|| AddrStats {
                    first: a.ts_ns,
                    ..Default::default()
                });
                if read {
                    s.reads += 1
                } else {
                    s.writes += 1
                }
                s.widths |= 1u128 << a.width.min(127);
                if !s.capped {
                    s.values.insert(value_key(a));
                    if s.values.len() >= DISTINCT_CAP {
                        s.capped = true;
                    }
                }
                s.first = s.first.min(a.ts_ns);
                s.last = s.last.max(a.ts_ns);
                if let Some(name) = names.as_ref().and_then(|n| n.register_name(a)) {
                    let r = regs.entry(name).or_default();
                    if read {
                        r.0 += 1
                    } else {
                        r.1 += 1
                    }
                }
            }
            Event::Unknown(_) => t.unknown += 1,
            Event::Map(m) => {
                t.maps += 1;
                let s = maps.entry(m.id).or_default();
                s.phys = Some(m.phys);
                s.len = Some(m.len);
            }
            Event::Unmap(u) => {
                t.unmaps += 1;
                maps.entry(u.id).or_default().unmapped = true;
            }
            Event::Mark(m) => {
                t.marks += 1;
                if let Some((id, file, alias)) = map_mark(&m.text) {
                    maps.entry(id).or_default().file = Some((file, alias));
                } else if let Some((id, from)) = continues_mark(&m.text) {
                    let file = maps.get(&from).and_then(|f| f.file.clone());
                    maps.entry(id).or_default().file = file;
                }
            }
            Event::Kernel(k) => {
                t.kernel += 1;
                t.kernel_bytes += k.len;
            }
            Event::LostEvents(n) => {
                t.lost_marks += 1;
                t.lost_events += n;
            }
            Event::CpuLost { count, .. } => {
                t.cpu_lost_lines += 1;
                match count {
                    Some(n) => t.cpu_lost += n,
                    None => t.cpu_lost_unknown += 1,
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    progress.finish();

    let mut hot: Vec<(&u64, &AddrStats)> = addrs.iter().collect();
    hot.sort_by(|a, b| {
        (b.1.reads + b.1.writes)
            .cmp(&(a.1.reads + a.1.writes))
            .then(a.0.cmp(b.0))
    });
    let mut hot_regs: Vec<(&String, &(u64, u64))> = regs.iter().collect();
    hot_regs.sort_by(|a, b| (b.1 .0 + b.1 .1).cmp(&(a.1 .0 + a.1 .1)).then(a.0.cmp(b.0)));

    let sites = args.by_site.then(|| by_site(&mut symbols, &pcs));
    let out = if args.json {
        let mut v = to_json(&input, &t, &maps, &hot, &hot_regs);
        if let (Some(sites), Value::Object(o)) = (&sites, &mut v) {
            let list = sites
                .iter()
                .map(|s| json!({"site": s.label, "pcs": s.pcs.iter().map(|&p| hex(p)).collect::<Vec<_>>(), "reads": s.reads, "writes": s.writes}))
                .collect::<Vec<_>>();
            o.insert("sites".into(), Value::Array(list));
        }
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        s
    } else {
        let mut s = to_text(&args, &input, &t, &maps, &hot, &hot_regs);
        if let Some(sites) = &sites {
            sites_text(&mut s, sites, if args.all { usize::MAX } else { args.top });
        }
        s
    };
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .and_then(|()| std::io::stdout().lock().flush())
        .map_err(|e| anyhow::Error::new(e).context("writing standard output"))?;
    if let Some(n) = &names {
        n.report_unbound();
    }
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}

/// The accesses made from one call site (one label; PCs of forked processes that share
/// code count together).
struct Site {
    label: String,
    pcs: Vec<u64>,
    reads: u64,
    writes: u64,
}

/// The call sites of `pcs`, hottest first (then by label).
fn by_site(
    symbols: &mut Symbolizer,
    pcs: &HashMap<(u32, u64, Option<usize>), (u64, u64)>,
) -> Vec<Site> {
    let mut keys: Vec<_> = pcs.keys().copied().collect();
    keys.sort_unstable();
    let mut sites: HashMap<String, Site> = HashMap::new();
    for key in keys {
        let (r, w) = pcs[&key];
        let (_, pc, obj) = key;
        let label = match obj {
            Some(o) => symbols.label_in(o, pc),
            None => hex(pc),
        };
        let s = sites.entry(label.clone()).or_insert_with(|| Site {
            label,
            pcs: Vec::new(),
            reads: 0,
            writes: 0,
        });
        if !s.pcs.contains(&pc) {
            s.pcs.push(pc);
        }
        s.reads += r;
        s.writes += w;
    }
    let mut v: Vec<Site> = sites.into_values().collect();
    v.sort_by(|a, b| {
        (b.reads + b.writes)
            .cmp(&(a.reads + a.writes))
            .then_with(|| a.label.cmp(&b.label))
    });
    v
}

fn sites_text(out: &mut String, sites: &[Site], top: usize) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Call sites ({} of {}, hottest first):",
        sites.len().min(top),
        sites.len()
    );
    let _ = writeln!(out, "  {:>10} {:>10}  site", "reads", "writes");
    for s in sites.iter().take(top) {
        let _ = writeln!(out, "  {:>10} {:>10}  {}", s.reads, s.writes, s.label);
    }
}

fn widths_list(w: u128) -> Vec<u64> {
    (0..128)
        .filter(|i| w & (1u128 << i) != 0)
        .map(|i| i as u64)
        .collect()
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn to_json(
    input: &LogInput,
    t: &Totals,
    maps: &BTreeMap<i64, MapStats>,
    hot: &[(&u64, &AddrStats)],
    regs: &[(&String, &(u64, u64))],
) -> Value {
    json!({
        "file": input.name(),
        "format": format!("{:?}", input.format()).to_lowercase(),
        "events": t.events,
        "header_lines": t.header,
        "other_lines": t.other,
        "reads": t.reads,
        "writes": t.writes,
        "unknown": t.unknown,
        "marks": t.marks,
        "kernel_accesses": t.kernel,
        "kernel_bytes": t.kernel_bytes,
        "first_ns": t.first,
        "last_ns": t.last,
        "lost": {
            "lost_event_marks": t.lost_marks,
            "events_lost": t.lost_events,
            "cpu_lost_events": t.cpu_lost,
            "cpu_lost_unknown_count_lines": t.cpu_lost_unknown,
            "malformed_lines_skipped": input.skipped(),
            "stopped_at_damage": input.stop().map(|s| s.error.to_string()),
            "unread_bytes": input.stop().and_then(|s| s.unread_bytes),
            "unknown_records_skipped": input.unknown_records(),
        },
        "maps": maps.iter().map(|(id, m)| json!({
            "id": id,
            "phys": m.phys.map(hex),
            "len": m.len.map(hex),
            "reads": m.reads,
            "writes": m.writes,
            "unmapped": m.unmapped,
            "file": m.file.as_ref().map(|f| &f.0),
            "alias": m.file.as_ref().map(|f| f.1),
        })).collect::<Vec<_>>(),
        "addresses": hot.iter().map(|(addr, s)| json!({
            "addr": hex(**addr),
            "reads": s.reads,
            "writes": s.writes,
            "widths": widths_list(s.widths),
            "distinct_values": s.values.len(),
            "distinct_values_capped": s.capped,
            "first_ns": s.first,
            "last_ns": s.last,
        })).collect::<Vec<_>>(),
        "registers": regs.iter().map(|(name, (r, w))| json!({
            "name": name, "reads": r, "writes": w,
        })).collect::<Vec<_>>(),
    })
}

/// The losses the log reports, in words: the kernel's `Lost N events.` markers
/// (tracer losses) and ftrace's `CPU:N [LOST M EVENTS]` lines, some of which give no
/// count (the number lost is unknown, not zero).
fn losses_text(t: &Totals) -> String {
    let mut parts = Vec::new();
    if t.lost_marks > 0 {
        parts.push(format!(
            "{} event{} lost ({} `Lost N events.` marker{})",
            t.lost_events,
            plural(t.lost_events),
            t.lost_marks,
            plural(t.lost_marks)
        ));
    }
    let cpu_lines = t.cpu_lost_lines - t.cpu_lost_unknown;
    if cpu_lines > 0 {
        parts.push(format!(
            "{} event{} lost by ftrace ({} `CPU:N [LOST M EVENTS]` line{})",
            t.cpu_lost,
            plural(t.cpu_lost),
            cpu_lines,
            plural(cpu_lines)
        ));
    }
    if t.cpu_lost_unknown > 0 {
        parts.push(format!(
            "an unknown number of events lost by ftrace ({} `CPU:N [LOST EVENTS]` line{} \
             without a count)",
            t.cpu_lost_unknown,
            plural(t.cpu_lost_unknown)
        ));
    }
    if parts.is_empty() {
        "none reported in the log".into()
    } else {
        parts.join("; ")
    }
}

fn to_text(
    args: &StatsArgs,
    input: &LogInput,
    t: &Totals,
    maps: &BTreeMap<i64, MapStats>,
    hot: &[(&u64, &AddrStats)],
    regs: &[(&String, &(u64, u64))],
) -> String {
    let mut o = String::new();
    let fmt = format!("{:?}", input.format()).to_lowercase();
    let _ = write!(
        o,
        "{} ({fmt}): {} event{}",
        input.name(),
        t.events,
        plural(t.events)
    );
    if t.header > 0 {
        let _ = write!(
            o,
            ", {} header line{} (VERSION, PCIDEV)",
            t.header,
            plural(t.header)
        );
    }
    if t.other > 0 {
        let _ = write!(
            o,
            ", {} other line{} (comments, kernel notes)",
            t.other,
            plural(t.other)
        );
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "accesses: {} ({} reads, {} writes), {} undecoded, {} marker{}, {} MAP, {} UNMAP",
        t.reads + t.writes,
        t.reads,
        t.writes,
        t.unknown,
        t.marks,
        plural(t.marks),
        t.maps,
        t.unmaps
    );
    if t.kernel > 0 {
        let _ = writeln!(
            o,
            "system calls' accesses to device memory: {} ({} bytes)",
            t.kernel, t.kernel_bytes
        );
    }
    if let (Some(a), Some(b)) = (t.first, t.last) {
        let span = (b - a) as f64 / 1e9;
        let _ = writeln!(o, "time: {} .. {} ({span:.6} s)", fmt_ts(a), fmt_ts(b));
    }
    let _ = writeln!(o, "losses: {}", losses_text(t));
    if !maps.is_empty() {
        let _ = writeln!(o, "\nmaps:");
        let _ = writeln!(
            o,
            "  {:>5}  {:>18}  {:>10}  {:>10}  {:>10}",
            "id", "phys", "length", "reads", "writes"
        );
        for (id, m) in maps {
            let _ = writeln!(
                o,
                "  {:>5}  {:>18}  {:>10}  {:>10}  {:>10}{}{}",
                id,
                m.phys.map(hex).unwrap_or_else(|| "?".into()),
                m.len.map(hex).unwrap_or_else(|| "?".into()),
                m.reads,
                m.writes,
                match &m.file {
                    Some((f, true)) => format!("  {f}"),
                    Some((f, false)) => format!("  {f} (no alias: single-stepped)"),
                    None => String::new(),
                },
                if m.unmapped { "  (unmapped)" } else { "" }
            );
        }
    }
    let n = if args.all {
        hot.len()
    } else {
        args.top.min(hot.len())
    };
    if n > 0 {
        let title = if args.all {
            "all addresses".to_string()
        } else {
            format!("hottest {n} of {} addresses", hot.len())
        };
        let _ = writeln!(o, "\n{title}:");
        let _ = writeln!(
            o,
            "  {:>18}  {:>9}  {:>9}  {:>8}  {:>9}  {:>14}  {:>14}",
            "address", "reads", "writes", "widths", "distinct", "first", "last"
        );
        for (addr, s) in &hot[..n] {
            let widths: Vec<String> = widths_list(s.widths).iter().map(u64::to_string).collect();
            let distinct = if s.capped {
                format!("{}+", s.values.len())
            } else {
                s.values.len().to_string()
            };
            let _ = writeln!(
                o,
                "  {:>18}  {:>9}  {:>9}  {:>8}  {:>9}  {:>14}  {:>14}",
                hex(**addr),
                s.reads,
                s.writes,
                widths.join(","),
                distinct,
                fmt_ts(s.first),
                fmt_ts(s.last)
            );
        }
    }
    if !regs.is_empty() {
        let n = if args.all {
            regs.len()
        } else {
            args.top.min(regs.len())
        };
        let _ = writeln!(o, "\nhottest {n} of {} registers:", regs.len());
        let _ = writeln!(o, "  {:<32}  {:>9}  {:>9}", "register", "reads", "writes");
        for (name, (r, w)) in &regs[..n] {
            let _ = writeln!(o, "  {name:<32}  {r:>9}  {w:>9}");
        }
    }
    o
}
