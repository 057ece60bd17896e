//! `mmio-trace analyze`: the story of a log, per map — its init sequence, its
//! polling loops, its hottest registers and call sites — from the folded stream.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mmio_trace_format::{Access, Direction, Event};
use serde_json::{json, Value};

use crate::analyse::Progress;
use crate::fold::{
    describe_change, fmt_duration, fmt_values, hex, Folded, Folder, Run, Shape, Slot,
};
use crate::input::{BadInput, InputArgs, LogInput};
use crate::regnames::{DbArgs, Names};
use crate::show::fmt_ts;
use crate::symbols::SymbolArgs;

/// Tell the story of a log, per map: its init sequence, its polling loops, its
/// hottest registers and its hottest call sites.
///
/// Accesses are folded first, as `show --fold` folds them.
///
/// The init sequence of a map runs from its MAP to its last "first write": the
/// last write to a register (address) of that map that no earlier access wrote,
/// and on through the polling loops right after it (waiting for what it started).
/// A driver brings a device up by writing registers it has not written before;
/// once up, it only writes again the registers it already wrote (interrupt
/// masks, ring tails, ...), so the last first write marks the end of bring-up.
/// The sequence lists the writes in order, with the polling loops among them
/// (waits) and the sleeps (no access to the map for 1 ms or more: a reset's
/// settle time); other reads are left out.
///
/// When the last first write is inside a folded group, the sequence ends with that
/// group's first repetition.
///
/// A polling loop is a folded run whose writes keep one value and one of whose
/// reads returned one value at least twice and then another until the run ended
/// (the register and the bits that changed are what it waited on), or a run of at
/// least three reads only that never saw a change (a wait that gave up, or that
/// the next access ended). A register read twice in a row (same thread, nothing else
/// of the map between) whose second read returned another value is a wait too, one
/// the second read satisfied (QEMU's edu device: STATUS 0x1, then 0x0 once the
/// factorial is done). A wait the first read satisfied cannot be told from a plain
/// read and is not listed.
///
/// Exit status as for `show`: 0 when the log was read, 2 for a damaged log or bad
/// arguments, 1 when a file cannot be opened or written.
///
/// `--script FILE` writes the init sequences as a replayable script: one line per
/// write (`write32 OFFSET VALUE`) and per wait (`wait32 OFFSET MASK VALUE`, i.e.
/// poll until `read & MASK == VALUE`) and per sleep (`delay MICROSECONDS`),
/// offsets within the map; `--script-json FILE` the same as JSON. A write wider than 8
/// bytes (`write512`) gives its whole value; in JSON its `value` is null and
/// `value_hex` holds it.
#[derive(clap::Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    input: InputArgs,

    #[command(flatten)]
    db: DbArgs,

    #[command(flatten)]
    symbols: SymbolArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,

    /// How many of the hottest registers and call sites to list per map.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,

    /// Write each map's init sequence to FILE as a replayable text script.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Write each map's init sequence to FILE as a replayable JSON script.
    #[arg(long, value_name = "FILE")]
    script_json: Option<PathBuf>,
}

/// How a program counter prints: the one place, so that symbolization names the
/// function (`pid 7 pc 0x401136 main+0x16 (drv.c:12)`) where the log holds the objects
/// `record` saw loaded and the binary is still the recorded one.
pub fn site_label(pid: u32, pc: u64) -> String {
    match crate::symbols::symbol_of(pid, pc) {
        Some(l) => format!("pid {pid} pc {pc:#x} {l}"),
        None => format!("pid {pid} pc {pc:#x}"),
    }
}

/// One step of an init sequence.
enum Step {
    /// A write that did not fold.
    Write(Access, u64),
    /// A folded run whose writes replay in order (reads left out).
    Group(Box<Run>),
    /// A polling loop: the group's writes once, then poll until the value.
    Wait(Box<Run>, usize),
    /// No access to the map for `ns` (at least [`SLEEP_NS`]) before event `index`:
    /// the driver slept (a reset's settle time, a delay).
    Sleep { ns: u64, index: u64, ts: u64 },
}

/// A pause between two accesses of a map at least this long is a sleep of the
/// driver, and a `delay` step of the init sequence.
const SLEEP_NS: u64 = 1_000_000;

/// A polling loop found in the log.
struct Poll {
    run: Box<Run>,
    slot: usize,
}

#[derive(Default)]
struct MapInfo {
    map: Option<mmio_trace_format::Map>,
    written: HashSet<u64>,
    steps: Vec<Step>,
    /// Steps of the init sequence: up to and including the last first write,
    /// then the waits right after it.
    init_len: usize,
    /// Steps up to and including the last first write.
    init_writes_len: usize,
    /// The last first write: event index and time, and the access.
    init_end: Option<(u64, u64, Access)>,
    /// Whether the last first write is in a folded group (the init sequence's
    /// last step), of which the init sequence then takes the first repetition.
    init_first_rep: bool,
    polls: Vec<Poll>,
    /// Reads and writes per physical address, with an access to name it by.
    regs: HashMap<u64, (u64, u64, Access)>,
    sites: HashMap<(u32, u64), u64>,
    reads: u64,
    writes: u64,
    /// Time of the map's last access so far.
    last_ts: Option<u64>,
    /// The map's last access, when it was a read that did not fold (with its event
    /// index): a second read of that register with another value makes a short wait.
    last_read: Option<(Access, u64)>,
    /// Folded runs that are not polling loops, by the shapes of their group:
    /// (order first seen, runs, repetitions, first event index, a run to name it).
    groups: HashMap<Vec<Shape>, Group>,
}

/// The runs of one repeating group (bit-banging, a block written in a loop).
struct Group {
    order: usize,
    runs: u64,
    reps: u64,
    first_index: u64,
    last_index: u64,
    example: Box<Run>,
}

impl MapInfo {
    fn count(&mut self, a: &Access, n: u64) {
        let e = self.regs.entry(a.phys).or_insert_with(|| (0, 0, a.clone()));
        match a.dir {
            Direction::Read => {
                e.0 += n;
                self.reads += n;
            }
            Direction::Write => {
                e.1 += n;
                self.writes += n;
            }
        }
        if a.pc != 0 {
            *self.sites.entry((a.pid, a.pc)).or_default() += n;
        }
    }

    /// Notes a write to `a.phys`, whose step is the last one pushed: the init
    /// sequence reaches to here if no access wrote that register before.
    fn wrote(&mut self, a: &Access, index: u64) -> bool {
        let first = self.written.insert(a.phys);
        if first {
            self.init_len = self.steps.len();
            self.init_end = Some((index, a.ts_ns, a.clone()));
        }
        first
    }

    /// Takes into the init sequence the polling loops that follow its last first
    /// write (with the sleeps between them): the driver waiting for what that
    /// write started.
    fn extend_init(&mut self) {
        self.init_writes_len = self.init_len;
        let mut k = self.init_len;
        while k < self.steps.len() {
            match self.steps[k] {
                Step::Sleep { .. } => k += 1,
                Step::Wait(..) => {
                    k += 1;
                    self.init_len = k;
                }
                _ => break,
            }
        }
    }

    /// Notes the next access (or run) of the map, from `first` to `last` (times):
    /// a sleep step when the map was left alone for long enough before it.
    fn next(&mut self, first: u64, last: u64, index: u64) {
        if let Some(prev) = self.last_ts {
            if first.saturating_sub(prev) >= SLEEP_NS {
                self.steps.push(Step::Sleep {
                    ns: first - prev,
                    index,
                    ts: first,
                });
            }
        }
        self.last_ts = Some(last);
    }

    fn offset(&self, phys: u64) -> u64 {
        match self.map {
            Some(m) if phys >= m.phys => phys - m.phys,
            _ => phys,
        }
    }
}

/// Runs `analyze`.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let scripts = [&args.script, &args.script_json];
    for path in scripts.into_iter().flatten() {
        // The scripts are written after the log is read: over the log, they would
        // replace it without a word.
        if crate::export::same_file(&args.input.log, path) {
            return Err(BadInput(format!(
                "{} is the input log: write the script to another file",
                path.display()
            ))
            .into());
        }
    }
    if let (Some(a), Some(b)) = (&args.script, &args.script_json) {
        if a == b || crate::export::same_file(a, b) {
            return Err(BadInput(format!(
                "--script and --script-json both name {}: give each its own file",
                a.display()
            ))
            .into());
        }
    }
    let mut input = LogInput::open(&args.input)?;
    let mut names = args.db.load()?;
    crate::symbols::use_symbols(args.symbols);
    let mut maps: Vec<(i64, MapInfo)> = Vec::new();
    let mut index_of: HashMap<i64, usize> = HashMap::new();
    let mut folder = Folder::default();
    let mut progress = Progress::new();
    let mut events = 0u64;
    let mut on_item = |item: Folded<'_>| -> anyhow::Result<()> {
        match item {
            Folded::Event(Event::Map(m), _) => {
                let i = map_info(&mut maps, &mut index_of, m.id);
                if i.map.is_none() {
                    i.map = Some(*m);
                }
            }
            Folded::Event(Event::Access(a), index) => {
                let i = map_info(&mut maps, &mut index_of, a.map_id);
                i.next(a.ts_ns, a.ts_ns, index);
                i.count(a, 1);
                let prev = i.last_read.take();
                if a.dir == Direction::Read {
                    match prev {
                        Some((p, pi))
                            if Shape::of(&p) == Shape::of(a)
                                && p.pid == a.pid
                                && p.value != a.value
                                && a.wide.is_none() =>
                        {
                            // Read again at once, and it changed: the driver waited for it
                            // (a wait the second read satisfied, too short to fold).
                            let run = Box::new(Run {
                                slots: vec![Slot {
                                    shape: Shape::of(a),
                                    first: p.clone(),
                                    values: vec![(p.value, 1), (a.value, 1)],
                                }],
                                reps: 2,
                                first_index: pi,
                                last_index: index,
                                first_ts: p.ts_ns,
                                last_ts: a.ts_ns,
                            });
                            i.polls.push(Poll {
                                run: run.clone(),
                                slot: 0,
                            });
                            i.steps.push(Step::Wait(run, 0));
                        }
                        _ => i.last_read = Some((a.clone(), index)),
                    }
                }
                if a.dir == Direction::Write {
                    i.steps.push(Step::Write(a.clone(), index));
                    if i.wrote(a, index) {
                        i.init_first_rep = false;
                    }
                }
            }
            Folded::Event(..) => {}
            Folded::Run(run) => {
                let i = map_info(&mut maps, &mut index_of, run.slots[0].shape.map_id);
                i.last_read = None;
                i.next(run.first_ts, run.last_ts, run.first_index);
                for s in &run.slots {
                    let n: u64 = s.values.iter().map(|v| v.1).sum();
                    i.count(&s.first, n);
                }
                let poll = run.poll_slot();
                let has_writes = run.slots.iter().any(|s| s.shape.dir == Direction::Write);
                if let Some(slot) = poll {
                    i.polls.push(Poll {
                        run: Box::new(run.clone()),
                        slot,
                    });
                    i.steps.push(Step::Wait(Box::new(run.clone()), slot));
                } else {
                    let key: Vec<Shape> = run.slots.iter().map(|s| s.shape).collect();
                    let order = i.groups.len();
                    let g = i.groups.entry(key).or_insert_with(|| Group {
                        order,
                        runs: 0,
                        reps: 0,
                        first_index: run.first_index,
                        last_index: run.last_index,
                        example: Box::new(run.clone()),
                    });
                    g.runs += 1;
                    g.reps += run.reps;
                    g.last_index = run.last_index;
                    if has_writes {
                        i.steps.push(Step::Group(Box::new(run.clone())));
                    }
                }
                // Every register a run writes, it writes in its first repetition:
                // a first write there ends the init sequence with that repetition.
                for (k, s) in run.slots.iter().enumerate() {
                    if s.shape.dir == Direction::Write
                        && i.wrote(&s.first, run.first_index + k as u64)
                    {
                        i.init_first_rep = has_writes && poll.is_none();
                    }
                }
            }
        }
        Ok(())
    };
    input.for_each_event(|ev, seen| {
        events = seen;
        if let Some(n) = names.as_mut() {
            n.observe(ev);
        }
        crate::symbols::observe_symbols(ev);
        progress.tick(seen);
        folder.push(ev, seen, &mut on_item)
    })?;
    folder.finish(&mut on_item)?;
    for (_, m) in &mut maps {
        m.extend_init();
    }
    progress.finish();
    let names = names.as_ref();
    if let Some(path) = &args.script {
        let text = script_text(input.name(), &maps, names);
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.script_json {
        let mut text = serde_json::to_string_pretty(&script_json(input.name(), &maps, names))?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let out = if args.json {
        let mut s =
            serde_json::to_string_pretty(&to_json(input.name(), events, &maps, names, args.top))?;
        s.push('\n');
        s
    } else {
        to_text(input.name(), &maps, names, args.top)
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing standard output")?;
    if let Some(n) = names {
        n.report_unbound();
    }
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}

/// The entry of map `id`, made on first sight (in the order maps appear).
fn map_info<'a>(
    maps: &'a mut Vec<(i64, MapInfo)>,
    index_of: &mut HashMap<i64, usize>,
    id: i64,
) -> &'a mut MapInfo {
    let k = *index_of.entry(id).or_insert_with(|| {
        maps.push((id, MapInfo::default()));
        maps.len() - 1
    });
    &mut maps[k].1
}

fn reg_label(a: &Access, names: Option<&Names>) -> String {
    let mut s = format!("{:#010x}", a.phys);
    if let Some(n) = names.and_then(|n| n.register_name(a)) {
        let _ = write!(s, " {n}");
    }
    s
}

fn dir_letter(d: Direction) -> char {
    match d {
        Direction::Read => 'R',
        Direction::Write => 'W',
    }
}

/// The value the loop waited for, and the bits that changed to it.
fn waited(run: &Run, slot: usize) -> Option<(u64, u64)> {
    let s = &run.slots[slot];
    let from = s.values[0].0;
    let to = s.values.get(1)?.0;
    Some((to, from ^ to))
}

fn poll_text(p: &Poll, names: Option<&Names>) -> String {
    let s = &p.run.slots[p.slot];
    let polls: u64 = s.values.iter().map(|v| v.1).sum();
    let what = match waited(&p.run, p.slot) {
        Some(_) => "",
        None => " (never changed)",
    };
    let mut t = format!(
        "R{} {}: {polls} reads {}{what}, {}, events {}..{}",
        s.shape.width,
        reg_label(&s.first, names),
        fmt_values(s),
        fmt_duration(p.run.last_ts.saturating_sub(p.run.first_ts)),
        p.run.first_index,
        p.run.last_index
    );
    if p.run.slots.len() > 1 {
        let _ = write!(t, " (a group of {} accesses)", p.run.slots.len());
    }
    if s.first.pc != 0 {
        let _ = write!(t, "  {}", site_label(s.first.pid, s.first.pc));
    }
    t
}

fn write_text(a: &Access, names: Option<&Names>) -> String {
    format!(
        "W{} {} <= {}",
        a.width,
        reg_label(a, names),
        if a.width > 8 {
            crate::show::fmt_value(a)
        } else {
            hex(a.value, a.width)
        }
    )
}

fn step_text(step: &Step, names: Option<&Names>) -> Vec<String> {
    match step {
        Step::Write(a, _) => vec![format!("{:>14}  {}", fmt_ts(a.ts_ns), write_text(a, names))],
        Step::Group(run) => {
            let mut v = vec![format!(
                "{:>14}  ×{} of {} accesses, {}:",
                fmt_ts(run.first_ts),
                run.reps,
                run.slots.len(),
                fmt_duration(run.last_ts.saturating_sub(run.first_ts))
            )];
            for s in &run.slots {
                v.push(format!(
                    "{:>14}    {}{} {} {}",
                    "",
                    dir_letter(s.shape.dir),
                    s.shape.width,
                    reg_label(&s.first, names),
                    fmt_values(s)
                ));
            }
            v
        }
        Step::Sleep { ns, index, ts } => vec![format!(
            "{:>14}  sleep: no access for {} before event {index}",
            fmt_ts(*ts),
            fmt_duration(*ns)
        )],
        Step::Wait(run, slot) => {
            let mut v: Vec<String> = run
                .slots
                .iter()
                .filter(|s| s.shape.dir == Direction::Write)
                .map(|s| {
                    format!(
                        "{:>14}  {}",
                        fmt_ts(run.first_ts),
                        write_text(&s.first, names)
                    )
                })
                .collect();
            v.push(format!(
                "{:>14}  wait: {}",
                fmt_ts(run.first_ts),
                poll_text(
                    &Poll {
                        run: run.clone(),
                        slot: *slot
                    },
                    names
                )
            ));
            v
        }
    }
}

fn map_head(id: i64, m: &MapInfo) -> String {
    match m.map {
        Some(map) => format!(
            "map {id}: {:#x}+{:#x} at {:#x}, mapped at {}",
            map.phys,
            map.len,
            map.virt,
            fmt_ts(map.ts_ns)
        ),
        None => format!("map {id}: (no MAP line in the log)"),
    }
}

fn sorted_groups(m: &MapInfo) -> Vec<&Group> {
    let mut v: Vec<&Group> = m.groups.values().collect();
    v.sort_by_key(|g| {
        (
            std::cmp::Reverse(g.runs * g.example.slots.len() as u64),
            g.order,
        )
    });
    v
}

fn group_shape(run: &Run, names: Option<&Names>) -> String {
    run.slots
        .iter()
        .map(|s| {
            format!(
                "{}{} {}",
                dir_letter(s.shape.dir),
                s.shape.width,
                reg_label(&s.first, names)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hot_regs(m: &MapInfo, top: usize) -> Vec<(&u64, &(u64, u64, Access))> {
    let mut v: Vec<_> = m.regs.iter().collect();
    v.sort_by_key(|(phys, (r, w, _))| (std::cmp::Reverse(r + w), **phys));
    v.truncate(top);
    v
}

fn hot_sites(m: &MapInfo, top: usize) -> Vec<(&(u32, u64), &u64)> {
    let mut v: Vec<_> = m.sites.iter().collect();
    v.sort_by_key(|(site, n)| (std::cmp::Reverse(**n), **site));
    v.truncate(top);
    v
}

fn init_counts(m: &MapInfo) -> (u64, usize, usize) {
    let mut writes = 0u64;
    let mut waits = 0usize;
    let mut sleeps = 0usize;
    for (k, s) in m.steps[..m.init_len].iter().enumerate() {
        let last = k + 1 == m.init_writes_len;
        match s {
            Step::Sleep { .. } => sleeps += 1,
            Step::Write(..) => writes += 1,
            Step::Group(run) => {
                writes += run
                    .slots
                    .iter()
                    .filter(|s| s.shape.dir == Direction::Write)
                    .count() as u64
                    * if last && m.init_first_rep {
                        1
                    } else {
                        run.reps
                    }
            }
            Step::Wait(run, _) => {
                writes += run
                    .slots
                    .iter()
                    .filter(|s| s.shape.dir == Direction::Write)
                    .count() as u64;
                waits += 1;
            }
        }
    }
    (writes, waits, sleeps)
}

fn to_text(name: &str, maps: &[(i64, MapInfo)], names: Option<&Names>, top: usize) -> String {
    let mut o = String::new();
    let accesses: u64 = maps.iter().map(|(_, m)| m.reads + m.writes).sum();
    let _ = writeln!(
        o,
        "{name}: {accesses} accesses in {} map{}",
        maps.len(),
        crate::input::plural(maps.len() as u64)
    );
    for (id, m) in maps {
        let _ = writeln!(o, "\n{}", map_head(*id, m));
        let _ = writeln!(o, "  {} reads, {} writes", m.reads, m.writes);
        match &m.init_end {
            Some((index, ts, a)) => {
                let (writes, waits, sleeps) = init_counts(m);
                let _ = writeln!(
                    o,
                    "  init sequence: {writes} writes, {waits} waits and {sleeps} sleeps, up to event {index} at {} \
                     (the last write to a register not written before: {})",
                    fmt_ts(*ts).trim(),
                    write_text(a, names)
                );
                for s in &m.steps[..m.init_len] {
                    for line in step_text(s, names) {
                        let _ = writeln!(o, "    {line}");
                    }
                }
                if m.init_first_rep {
                    let _ = writeln!(
                        o,
                        "    (the sequence ends with the first repetition of that group)"
                    );
                }
            }
            None => {
                let _ = writeln!(o, "  init sequence: none (no writes)");
            }
        }
        let _ = writeln!(o, "  polling loops: {}", m.polls.len());
        for p in &m.polls {
            let _ = writeln!(
                o,
                "    {}  {}",
                fmt_ts(p.run.first_ts).trim(),
                poll_text(p, names)
            );
        }
        let groups = sorted_groups(m);
        let _ = writeln!(
            o,
            "  repeated groups (folded loops that are not polls): {}",
            groups.len()
        );
        for g in &groups {
            let _ = writeln!(
                o,
                "    {} run{}, {} repetitions, events {}..{}: {{{}}}",
                g.runs,
                crate::input::plural(g.runs),
                g.reps,
                g.first_index,
                g.last_index,
                group_shape(&g.example, names)
            );
        }
        let _ = writeln!(o, "  hot registers:");
        for (phys, (r, w, a)) in hot_regs(m, top) {
            let _ = writeln!(
                o,
                "    {:>8}  {}  ({r} reads, {w} writes)",
                r + w,
                reg_label(a, names)
            );
            let _ = phys;
        }
        if m.sites.is_empty() {
            let _ = writeln!(
                o,
                "  hot call sites: none (the log has no program counters)"
            );
        } else {
            let _ = writeln!(o, "  hot call sites:");
            for ((pid, pc), n) in hot_sites(m, top) {
                let _ = writeln!(o, "    {n:>8}  {}", site_label(*pid, *pc));
            }
        }
    }
    o
}

fn poll_json(p: &Poll, names: Option<&Names>) -> Value {
    let s = &p.run.slots[p.slot];
    let (value, mask) = waited(&p.run, p.slot).map_or((None, None), |(v, m)| (Some(v), Some(m)));
    json!({
        "phys": s.shape.phys,
        "width": s.shape.width,
        "name": names.and_then(|n| n.register_name(&s.first)),
        "from": s.values[0].0,
        "until": value,
        "mask": mask,
        "change": value.map(|v| describe_change(s.values[0].0, v)),
        "reads": s.values.iter().map(|v| v.1).sum::<u64>(),
        "group": p.run.slots.len(),
        "reps": p.run.reps,
        "first_index": p.run.first_index,
        "last_index": p.run.last_index,
        "first_ts_ns": p.run.first_ts,
        "last_ts_ns": p.run.last_ts,
        "ns": p.run.last_ts.saturating_sub(p.run.first_ts),
        "pid": s.first.pid,
        "pc": s.first.pc,
        "site": (s.first.pc != 0).then(|| site_label(s.first.pid, s.first.pc)),
    })
}

fn to_json(
    name: &str,
    events: u64,
    maps: &[(i64, MapInfo)],
    names: Option<&Names>,
    top: usize,
) -> Value {
    json!({
        "log": name,
        "events": events,
        "maps": maps.iter().map(|(id, m)| {
            let (writes, waits, sleeps) = init_counts(m);
            json!({
                "id": id,
                "phys": m.map.map(|x| x.phys),
                "len": m.map.map(|x| x.len),
                "virt": m.map.map(|x| x.virt),
                "reads": m.reads,
                "writes": m.writes,
                "init": m.init_end.as_ref().map(|(index, ts, a)| json!({
                    "ends_in_first_repetition": m.init_first_rep,
                    "last_index": index,
                    "last_ts_ns": ts,
                    "last_write": {"phys": a.phys, "width": a.width,
                                   "value": value_json(a).0, "value_hex": value_json(a).1,
                                   "name": names.and_then(|n| n.register_name(a))},
                    "writes": writes,
                    "waits": waits,
                    "sleeps": sleeps,
                    "steps": steps_json(m, names),
                })),
                "polls": m.polls.iter().map(|p| poll_json(p, names)).collect::<Vec<_>>(),
                "groups": sorted_groups(m).iter().map(|g| json!({
                    "runs": g.runs,
                    "reps": g.reps,
                    "first_index": g.first_index,
                    "last_index": g.last_index,
                    "slots": g.example.slots.iter().map(|s| json!({
                        "dir": dir_letter(s.shape.dir).to_string(),
                        "width": s.shape.width,
                        "phys": s.shape.phys,
                        "name": names.and_then(|n| n.register_name(&s.first)),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "hot_registers": hot_regs(m, top).iter().map(|(phys, (r, w, a))| json!({
                    "phys": phys, "name": names.and_then(|n| n.register_name(a)),
                    "reads": r, "writes": w,
                })).collect::<Vec<_>>(),
                "hot_sites": hot_sites(m, top).iter().map(|((pid, pc), n)| json!({
                    "pid": pid, "pc": pc, "site": site_label(*pid, *pc), "accesses": n,
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}

/// The replayable steps of a map's init sequence: writes in order (folded groups
/// expanded), waits as `(offset, width, mask, value)`.
enum Op {
    Write {
        phys: u64,
        width: u8,
        value: u64,
        /// A write wider than 8 bytes: its whole value, hex digits, most significant
        /// first (`value` holds only its first 8 bytes).
        wide: Option<String>,
    },
    Wait {
        phys: u64,
        width: u8,
        mask: u64,
        value: u64,
        polls: u64,
        ns: u64,
    },
    Delay {
        ns: u64,
    },
}

fn ops(m: &MapInfo) -> Vec<Op> {
    let mut v = Vec::new();
    for (k, s) in m.steps[..m.init_len].iter().enumerate() {
        let last = k + 1 == m.init_writes_len;
        match s {
            Step::Sleep { ns, .. } => v.push(Op::Delay { ns: *ns }),
            Step::Write(a, _) => v.push(Op::Write {
                phys: a.phys,
                width: a.width,
                value: a.value,
                wide: (a.width > 8).then(|| crate::show::fmt_value(a).replace('_', "")),
            }),
            Step::Group(run) => {
                // Each slot's values in order, one per repetition.
                let mut iters: Vec<_> = run
                    .slots
                    .iter()
                    .map(|s| {
                        s.values
                            .iter()
                            .flat_map(|&(v, n)| std::iter::repeat_n(v, n as usize))
                    })
                    .collect();
                let reps = if last && m.init_first_rep {
                    1
                } else {
                    run.reps
                };
                for _ in 0..reps {
                    for (slot, it) in run.slots.iter().zip(iters.iter_mut()) {
                        let value = it.next().unwrap_or(0);
                        if slot.shape.dir == Direction::Write {
                            v.push(Op::Write {
                                phys: slot.shape.phys,
                                width: slot.shape.width,
                                value,
                                wide: None,
                            });
                        }
                    }
                }
            }
            Step::Wait(run, slot) => {
                for s in run.slots.iter().filter(|s| s.shape.dir == Direction::Write) {
                    v.push(Op::Write {
                        phys: s.shape.phys,
                        width: s.shape.width,
                        value: s.values[0].0,
                        wide: None,
                    });
                }
                if let Some((value, mask)) = waited(run, *slot) {
                    let s = &run.slots[*slot];
                    v.push(Op::Wait {
                        phys: s.shape.phys,
                        width: s.shape.width,
                        mask,
                        value: value & mask,
                        polls: s.values.iter().map(|v| v.1).sum(),
                        ns: run.last_ts.saturating_sub(run.first_ts),
                    });
                }
            }
        }
    }
    v
}

fn shape_name(phys: u64, width: u8, map_id: i64, names: Option<&Names>) -> Option<String> {
    let a = Access::new(Direction::Read, width, 0, map_id, phys, 0);
    names.and_then(|n| n.register_name(&a))
}

fn script_text(log: &str, maps: &[(i64, MapInfo)], names: Option<&Names>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# mmio-trace init script, from {log}");
    let _ = writeln!(
        o,
        "# write<BITS> OFFSET VALUE: write VALUE at OFFSET within the map"
    );
    let _ = writeln!(
        o,
        "# wait<BITS> OFFSET MASK VALUE: read OFFSET until (read & MASK) == VALUE"
    );
    let _ = writeln!(
        o,
        "# delay US: sleep US microseconds (the driver left the device alone)"
    );
    for (id, m) in maps {
        if m.init_end.is_none() {
            continue;
        }
        match m.map {
            Some(map) => {
                let _ = writeln!(o, "map {id} {:#x} {:#x}", map.phys, map.len);
            }
            None => {
                let _ = writeln!(o, "map {id} 0x0 0x0  # no MAP line: offsets are addresses");
            }
        }
        for op in ops(m) {
            match op {
                Op::Write {
                    phys,
                    width,
                    value,
                    wide,
                } => {
                    let _ = write!(
                        o,
                        "write{} {:#06x} {}",
                        width as u32 * 8,
                        m.offset(phys),
                        wide.unwrap_or_else(|| hex(value, width))
                    );
                    if let Some(n) = shape_name(phys, width, *id, names) {
                        let _ = write!(o, "  # {n}");
                    }
                }
                Op::Wait {
                    phys,
                    width,
                    mask,
                    value,
                    polls,
                    ns,
                } => {
                    let _ = write!(
                        o,
                        "wait{} {:#06x} {} {}  # ",
                        width as u32 * 8,
                        m.offset(phys),
                        hex(mask, width),
                        hex(value, width),
                    );
                    if let Some(n) = shape_name(phys, width, *id, names) {
                        let _ = write!(o, "{n}, ");
                    }
                    let _ = write!(o, "{polls} polls, {}", fmt_duration(ns));
                }
                Op::Delay { ns } => {
                    let _ = write!(o, "delay {}", ns.div_ceil(1000));
                }
            }
            o.push('\n');
        }
    }
    o
}

fn script_json(log: &str, maps: &[(i64, MapInfo)], names: Option<&Names>) -> Value {
    json!({
        "log": log,
        "maps": maps.iter().filter(|(_, m)| m.init_end.is_some()).map(|(id, m)| json!({
            "id": id,
            "phys": m.map.map(|x| x.phys),
            "len": m.map.map(|x| x.len),
            "steps": ops(m).iter().map(|op| match *op {
                // A write wider than 8 bytes: `value` null, `value_hex` its whole value.
                Op::Write { phys, width, value, ref wide } => json!({
                    "op": "write", "offset": m.offset(phys), "width": width,
                    "value": if wide.is_some() { Value::Null } else { json!(value) },
                    "value_hex": wide,
                    "name": shape_name(phys, width, *id, names),
                }),
                Op::Wait { phys, width, mask, value, polls, ns } => json!({
                    "op": "wait", "offset": m.offset(phys), "width": width, "mask": mask,
                    "value": value, "polls": polls, "ns": ns,
                    "name": shape_name(phys, width, *id, names),
                }),
                Op::Delay { ns } => json!({"op": "delay", "ns": ns}),
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// An access's value in JSON: (`value`, `value_hex`): the number for up to 8 bytes, or
/// null and the whole value's hex digits (most significant first) for a wider one.
fn value_json(a: &Access) -> (Value, Value) {
    if a.width > 8 {
        (
            Value::Null,
            json!(crate::show::fmt_value(a).replace('_', "")),
        )
    } else {
        (json!(a.value), Value::Null)
    }
}

fn steps_json(m: &MapInfo, names: Option<&Names>) -> Vec<Value> {
    m.steps[..m.init_len]
        .iter()
        .map(|s| match s {
            Step::Write(a, index) => json!({
                "kind": "write", "index": index, "ts_ns": a.ts_ns, "phys": a.phys,
                "width": a.width, "value": value_json(a).0, "value_hex": value_json(a).1,
                "name": names.and_then(|n| n.register_name(a)),
            }),
            Step::Group(run) => crate::show::run_json(run, names),
            Step::Sleep { ns, index, ts } => json!({
                "kind": "sleep", "ns": ns, "index": index, "ts_ns": ts,
            }),
            Step::Wait(run, slot) => json!({
                "kind": "wait",
                "poll": poll_json(&Poll { run: run.clone(), slot: *slot }, names),
                "run": crate::show::run_json(run, names),
            }),
        })
        .collect()
}
