//! `mmio-trace diff`: an aligned diff of two logs of one device, loops folded first.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::Context;
use mmio_trace_format::{Access, Direction, Event};
use serde_json::json;
use similar::{Algorithm, DiffOp};

use crate::fold::{fmt_duration, fmt_values, hex, Folded, Folder, Run};
use crate::input::{parse_u64, BadInput, LogInput};
use crate::regnames::{DbArgs, Names};
use crate::show::fmt_ts;

/// Compare two logs of one device, like `diff -u`: what the driver did differently.
///
/// Each log is folded as `show --fold` folds it, then the items (accesses, folded
/// runs, MAP/UNMAP lines, markers) are aligned by register, direction and value
/// with Myers' O(ND) algorithm, which stays near-linear when the logs mostly agree.
/// Logs with little in common take longer: after 10 seconds of searching the
/// alignment settles for a correct diff that may not be the shortest. Hunk
/// headers count folded items (`@@ -A,N +B,M @@`); each line gives the event
/// index in its log after `#`.
///
/// A polling loop (see `analyze --help`) compares equal whatever its count: how
/// long a device took to answer is timing. Other folded runs compare by every
/// value and their count. Times never take part in the comparison (two runs
/// never share a clock); they are printed unless --ignore-times.
///
/// Exit status: 0 when the logs are equal, 1 when they differ, 2 on trouble (a log
/// that cannot be read, bad arguments).
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The first (old) log.
    #[arg(value_name = "A")]
    a: std::path::PathBuf,

    /// The second (new) log.
    #[arg(value_name = "B")]
    b: std::path::PathBuf,

    /// Read damaged logs as far as they can be read (see `show --help`).
    #[arg(long)]
    lenient: bool,

    #[command(flatten)]
    db: DbArgs,

    /// Print one JSON object instead: `equal`, the item counts, and `hunks`, each
    /// with its ranges and `lines` (`op`: equal, delete or insert; `a_index` and
    /// `b_index`: event indices; `text`).
    #[arg(long)]
    json: bool,

    /// Lines of context around each change.
    #[arg(short = 'U', long, default_value_t = 3, value_name = "N")]
    context: usize,

    /// Leave times out of the output (they never take part in the comparison).
    #[arg(long)]
    ignore_times: bool,

    /// Do not compare the values of this register: a name from --db, or an
    /// address (an offset within the map with --ignore-base). Repeatable. A name
    /// that no access of either log has (misspelt, or in another case) is an error.
    #[arg(long, value_name = "REG")]
    ignore_value: Vec<String>,

    /// Compare offsets within maps instead of physical addresses, the maps of the
    /// two logs matched by the order of their MAP lines (for two runs that mapped
    /// the device at different addresses).
    #[arg(long)]
    ignore_base: bool,
}

/// Seconds the alignment searches for the shortest diff before it settles.
const DEADLINE_S: u64 = 10;

/// What is compared of one slot of a folded run: map, address, direction, width
/// and its values (none when ignored).
type SlotKey = (i64, u64, Direction, u8, Option<Vec<(u64, u64)>>);

/// What is compared of one item.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Access {
        map: i64,
        addr: u64,
        dir: Direction,
        width: u8,
        value: Option<u64>,
        /// The bytes past the first 8 of a wider access (compared too).
        wide: Option<Vec<u8>>,
    },
    Run {
        slots: Vec<SlotKey>,
        reps: Option<u64>,
    },
    Map {
        map: i64,
        phys: u64,
        len: u64,
    },
    Unmap(i64),
    Text(String),
}

enum What {
    Access(Access),
    Run(Box<Run>),
    Text(String),
}

/// One folded item of a log, with what is compared and what is printed.
struct Item {
    key: Key,
    what: What,
    index: u64,
    ts: Option<u64>,
}

struct Opts<'a> {
    ignore_base: bool,
    ignore_value: &'a [String],
    /// The register names of `ignore_value` that named an access of either log.
    names_seen: std::cell::RefCell<std::collections::HashSet<String>>,
}

/// One log, folded.
struct Side {
    name: String,
    items: Vec<Item>,
    names: Option<Names>,
    /// Map id → (order of its MAP line, physical base).
    maps: HashMap<i64, (i64, u64)>,
}

impl Side {
    fn addr(&self, map_id: i64, phys: u64, o: &Opts) -> (i64, u64) {
        if !o.ignore_base {
            return (0, phys);
        }
        match self.maps.get(&map_id) {
            Some(&(ord, base)) => (ord, phys.wrapping_sub(base)),
            None => (-1 - map_id, phys),
        }
    }

    fn value_ignored(&self, a: &Access, o: &Opts) -> bool {
        // Every entry is tried (no short cut), so that each name that matches is seen.
        o.ignore_value.iter().fold(false, |ignored, r| {
            if let Ok(x) = parse_u64(r) {
                return ignored || self.addr(a.map_id, a.phys, o).1 == x;
            }
            let hit = self
                .names
                .as_ref()
                .and_then(|n| n.register_name(a))
                .is_some_and(|n| n == *r);
            if hit {
                o.names_seen.borrow_mut().insert(r.clone());
            }
            ignored || hit
        })
    }

    fn label(&self, a: &Access, o: &Opts) -> String {
        let mut s = if o.ignore_base {
            let (ord, off) = self.addr(a.map_id, a.phys, o);
            format!("map#{ord}+{off:#06x}")
        } else {
            format!("{:#010x}", a.phys)
        };
        if let Some(n) = self.names.as_ref().and_then(|n| n.register_name(a)) {
            let _ = write!(s, " {n}");
        }
        s
    }

    fn text(&self, item: &Item, o: &Opts, times: bool) -> String {
        let mut s = String::new();
        if times {
            match item.ts {
                Some(ts) => {
                    let _ = write!(s, "{:>14}  ", fmt_ts(ts));
                }
                None => s.push_str(&" ".repeat(16)),
            }
        }
        match &item.what {
            What::Access(a) => {
                let (letter, arrow) = match a.dir {
                    Direction::Read => ('R', "=>"),
                    Direction::Write => ('W', "<="),
                };
                let _ = write!(
                    s,
                    "{letter}{} {} {arrow} {}",
                    a.width,
                    self.label(a, o),
                    if a.width > 8 {
                        crate::show::fmt_value(a)
                    } else {
                        hex(a.value, a.width)
                    }
                );
            }
            What::Run(run) => {
                let polling = run.poll_slot().is_some();
                let _ = write!(s, "×{} {{", run.reps);
                for (i, slot) in run.slots.iter().enumerate() {
                    if i > 0 {
                        s.push_str("; ");
                    }
                    let letter = if slot.shape.dir == Direction::Read {
                        'R'
                    } else {
                        'W'
                    };
                    let _ = write!(
                        s,
                        "{letter}{} {} {}",
                        slot.shape.width,
                        self.label(&slot.first, o),
                        fmt_values(slot)
                    );
                }
                s.push('}');
                if times {
                    let _ = write!(
                        s,
                        ", {}",
                        fmt_duration(run.last_ts.saturating_sub(run.first_ts))
                    );
                }
                if polling {
                    s.push_str(" (polling)");
                }
            }
            What::Text(t) => s.push_str(t),
        }
        let _ = write!(s, "  #{}", item.index);
        s
    }
}

fn read_side(path: &std::path::Path, args: &DiffArgs, o: &Opts) -> anyhow::Result<Side> {
    let mut input = LogInput::open_path(path, args.lenient)?;
    let mut side = Side {
        name: input.name().to_string(),
        items: Vec::new(),
        names: args.db.load()?,
        maps: HashMap::new(),
    };
    let mut folder = Folder::ignoring_time();
    // Items are keyed after the whole log was read (names bind at MAP/PCIDEV
    // lines, which come first; map bases are known by then too).
    let mut raw: Vec<(What, u64, Option<u64>, Option<Event>)> = Vec::new();
    let mut on_item = |item: Folded<'_>| -> anyhow::Result<()> {
        match item {
            Folded::Event(Event::Access(a), index) => {
                raw.push((What::Access(a.clone()), index, Some(a.ts_ns), None))
            }
            Folded::Event(Event::Map(m), index) => raw.push((
                What::Text(format!("MAP #{} {:#x}+{:#x}", m.id, m.phys, m.len)),
                index,
                Some(m.ts_ns),
                Some(Event::Map(*m)),
            )),
            Folded::Event(Event::Unmap(u), index) => raw.push((
                What::Text(format!("UNMAP #{}", u.id)),
                index,
                Some(u.ts_ns),
                Some(Event::Unmap(*u)),
            )),
            // The loaded objects of a run differ in pid and addresses from run to run:
            // metadata for symbolization, not the driver's conversation.
            Folded::Event(Event::Mark(m), _)
                if crate::symbols::ObjectMark::parse(&m.text).is_some() => {}
            Folded::Event(ev, index) => {
                let mut line = Vec::new();
                crate::show::render(
                    &mut line,
                    ev,
                    &crate::style::Style::new(crate::style::ColorChoice::Never),
                    None,
                );
                let text = String::from_utf8_lossy(&line).trim().to_string();
                // Drop the time the line starts with: it is printed apart.
                let text = match ev.ts_ns() {
                    Some(_) => text
                        .split_once("  ")
                        .map_or(text.clone(), |(_, r)| r.to_string()),
                    None => text,
                };
                raw.push((What::Text(text), index, ev.ts_ns(), None))
            }
            Folded::Run(run) => raw.push((
                What::Run(Box::new(run.clone())),
                run.first_index,
                Some(run.first_ts),
                None,
            )),
        }
        Ok(())
    };
    let mut order = 0i64;
    let mut maps = HashMap::new();
    input.for_each_event(|ev, seen| {
        if let Some(n) = side.names.as_mut() {
            n.observe(ev);
        }
        if let Event::Map(m) = ev {
            maps.entry(m.id).or_insert_with(|| {
                order += 1;
                (order, m.phys)
            });
        }
        folder.push(ev, seen, &mut on_item)
    })?;
    folder.finish(&mut on_item)?;
    input.report_skipped();
    side.maps = maps;
    let mut items = Vec::with_capacity(raw.len());
    for (what, index, ts, ev) in raw {
        let key = match (&what, &ev) {
            (What::Access(a), _) => {
                let (map, addr) = side.addr(a.map_id, a.phys, o);
                Key::Access {
                    map,
                    addr,
                    dir: a.dir,
                    width: a.width,
                    value: (!side.value_ignored(a, o)).then_some(a.value),
                    wide: (a.width > 8 && !side.value_ignored(a, o))
                        .then(|| a.bytes()[8..a.width as usize].to_vec()),
                }
            }
            (What::Run(run), _) => {
                let polling = run.poll_slot().is_some();
                Key::Run {
                    slots: run
                        .slots
                        .iter()
                        .map(|s| {
                            let (map, addr) = side.addr(s.shape.map_id, s.shape.phys, o);
                            let values = if side.value_ignored(&s.first, o) {
                                None
                            } else if polling {
                                // The values in order, not how often each came.
                                Some(s.values.iter().map(|&(v, _)| (v, 0)).collect())
                            } else {
                                Some(s.values.clone())
                            };
                            (map, addr, s.shape.dir, s.shape.width, values)
                        })
                        .collect(),
                    reps: (!polling).then_some(run.reps),
                }
            }
            (What::Text(_), Some(Event::Map(m))) => {
                let (map, _) = side.addr(m.id, m.phys, o);
                Key::Map {
                    map,
                    phys: if o.ignore_base { 0 } else { m.phys },
                    len: m.len,
                }
            }
            (What::Text(_), Some(Event::Unmap(u))) => Key::Unmap(side.addr(u.id, 0, o).0),
            // `record`'s note of the mapped file names the file offset: another
            // base, with --ignore-base.
            (What::Text(t), _) if o.ignore_base && t.starts_with("MARK map ") => {
                Key::Text(without_offset(t))
            }
            (What::Text(t), _) => Key::Text(t.clone()),
        };
        items.push(Item {
            key,
            what,
            index,
            ts,
        });
    }
    side.items = items;
    Ok(side)
}

/// `text` without its ` offset 0x...` word pair.
fn without_offset(text: &str) -> String {
    let mut words: Vec<&str> = text.split(' ').collect();
    if let Some(k) = words.iter().position(|w| *w == "offset") {
        words.drain(k..(k + 2).min(words.len()));
    }
    words.join(" ")
}

/// Runs `diff`: exit status 0 equal, 1 different, 2 trouble.
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    match compare(&args) {
        Ok(equal) => Ok(ExitCode::from(if equal { 0 } else { 1 })),
        Err(e) => {
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                // Output was being written: the logs differ.
                return Ok(ExitCode::from(1));
            }
            eprintln!("{}", crate::error_message(&e));
            Ok(ExitCode::from(2))
        }
    }
}

fn compare(args: &DiffArgs) -> anyhow::Result<bool> {
    let o = Opts {
        ignore_base: args.ignore_base,
        ignore_value: &args.ignore_value,
        names_seen: Default::default(),
    };
    if !args.ignore_value.is_empty() && args.db.db.is_empty() {
        if let Some(r) = args.ignore_value.iter().find(|r| parse_u64(r).is_err()) {
            return Err(BadInput(format!(
                "--ignore-value {r}: a register name needs --db (or give an address)"
            ))
            .into());
        }
    }
    let stdin = std::path::Path::new("-");
    if args.a == stdin && args.b == stdin {
        // The second read of standard input would see it empty, and report a
        // difference that is not there.
        return Err(BadInput("A and B cannot both be `-` (standard input)".into()).into());
    }
    let a = read_side(&args.a, args, &o)?;
    let b = read_side(&args.b, args, &o)?;
    if let Some(r) = args
        .ignore_value
        .iter()
        .find(|r| parse_u64(r).is_err() && !o.names_seen.borrow().contains(*r))
    {
        // A misspelt name (or one in the wrong case) would ignore nothing, silently.
        return Err(BadInput(format!(
            "--ignore-value {r}: no access of either log is to a register of that name \
             (names are as --db spells them, case included)"
        ))
        .into());
    }
    let ka: Vec<&Key> = a.items.iter().map(|i| &i.key).collect();
    let kb: Vec<&Key> = b.items.iter().map(|i| &i.key).collect();
    // Myers is O(ND): near-linear when the logs mostly agree, quadratic when they
    // have little in common. Past the deadline it settles for a correct diff that
    // may not be the shortest.
    let deadline = Instant::now() + Duration::from_secs(DEADLINE_S);
    let ops = similar::capture_diff_slices_deadline(Algorithm::Myers, &ka, &kb, Some(deadline));
    let equal = ops.iter().all(|op| matches!(op, DiffOp::Equal { .. }));
    let groups = similar::group_diff_ops(ops, args.context);
    let times = !args.ignore_times;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let hunks: Vec<_> = groups
            .iter()
            .map(|g| {
                let (ra, rb) = ranges(g);
                let mut lines = Vec::new();
                for op in g {
                    for (tag, ia, ib) in op_lines(op) {
                        let (ai, bi) = (ia.map(|i| &a.items[i]), ib.map(|i| &b.items[i]));
                        let text = match (ai, bi) {
                            (Some(x), _) => a.text(x, &o, times),
                            (None, Some(y)) => b.text(y, &o, times),
                            _ => unreachable!(),
                        };
                        lines.push(json!({
                            "op": tag,
                            "a_index": ai.map(|x| x.index),
                            "b_index": bi.map(|y| y.index),
                            "text": text,
                        }));
                    }
                }
                json!({
                    "a_start": ra.0 + 1, "a_len": ra.1, "b_start": rb.0 + 1, "b_len": rb.1,
                    "lines": lines,
                })
            })
            .collect();
        let v = json!({
            "a": a.name, "b": b.name, "equal": equal,
            "a_items": a.items.len(), "b_items": b.items.len(),
            "hunks": hunks,
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else if !equal {
        writeln!(out, "--- {}", a.name)?;
        writeln!(out, "+++ {}", b.name)?;
        for g in &groups {
            let (ra, rb) = ranges(g);
            writeln!(
                out,
                "@@ -{} +{} @@",
                unified(ra.0, ra.1),
                unified(rb.0, rb.1)
            )?;
            for op in g {
                for (tag, ia, ib) in op_lines(op) {
                    let (c, text) = match tag {
                        "equal" => (' ', a.text(&a.items[ia.unwrap()], &o, times)),
                        "delete" => ('-', a.text(&a.items[ia.unwrap()], &o, times)),
                        _ => ('+', b.text(&b.items[ib.unwrap()], &o, times)),
                    };
                    writeln!(out, "{c}{text}")?;
                }
            }
        }
    }
    out.flush().context("writing standard output")?;
    for s in [&a, &b] {
        if let Some(n) = &s.names {
            n.report_unbound();
        }
    }
    Ok(equal)
}

/// `START,LEN` as `diff -u` writes it (1-based; the line before for an empty range).
fn unified(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// The item ranges of a hunk in A and in B: (start, len), 0-based.
fn ranges(g: &[DiffOp]) -> ((usize, usize), (usize, usize)) {
    let first = g.first().expect("a hunk has ops");
    let last = g.last().expect("a hunk has ops");
    let (a0, b0) = (first.old_range().start, first.new_range().start);
    let (a1, b1) = (last.old_range().end, last.new_range().end);
    ((a0, a1 - a0), (b0, b1 - b0))
}

/// The lines of one op: tag and item indices in A and B.
fn op_lines(op: &DiffOp) -> Vec<(&'static str, Option<usize>, Option<usize>)> {
    let mut v = Vec::new();
    match *op {
        DiffOp::Equal {
            old_index,
            new_index,
            len,
        } => {
            for i in 0..len {
                v.push(("equal", Some(old_index + i), Some(new_index + i)));
            }
        }
        DiffOp::Delete {
            old_index, old_len, ..
        } => {
            for i in 0..old_len {
                v.push(("delete", Some(old_index + i), None));
            }
        }
        DiffOp::Insert {
            new_index, new_len, ..
        } => {
            for i in 0..new_len {
                v.push(("insert", None, Some(new_index + i)));
            }
        }
        DiffOp::Replace {
            old_index,
            old_len,
            new_index,
            new_len,
        } => {
            for i in 0..old_len {
                v.push(("delete", Some(old_index + i), None));
            }
            for i in 0..new_len {
                v.push(("insert", None, Some(new_index + i)));
            }
        }
    }
    v
}
