//! `mmio-trace replay`: a recorded trace stands in for the device.
//!
//! The trace becomes a model ([`mmio_trace_replay`]) in a memfd the program inherits;
//! the program runs under the recorder (so the replayed run is itself traced to `-o`)
//! with patching off, its device mappings served by the model; afterwards the model's
//! shared state says whether the run matched, and where it first diverged.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mmio_trace_format::{Access, Direction, Event, Format};
use mmio_trace_record::Error;
use mmio_trace_replay::image::{self, DivergenceKind, Image, MapRule, RunState};
use mmio_trace_replay::{Model, ModelBuilder, SeqEntry};
use serde_json::{json, Value};

use crate::fold::{self, Folded, Folder};
use crate::input::{BadInput, LogInput};
use crate::record::{RecordFormat, EXIT_CANNOT_RUN, EXIT_NOT_FOUND, EXIT_TRACE_FAILED};
use crate::regnames::{DbArgs, Names};

/// Run a program against a recorded trace instead of its device.
///
/// PROGRAM's device mappings (the same rules as `record`) are bound to the maps of TRACE
/// (any log the readers read: mmio-trace text or binary, kernel logs) by file, offset
/// and order, or by --map. Each read of a register (offset and width) returns the next
/// value the same thread read there in TRACE (when the thread is not where TRACE is: the
/// register's values in the order of all of TRACE, the last one once they run out; a
/// register TRACE
/// never read returns what was last written to it, else zeros). Writes go to a shadow:
/// each device file TRACE maps (any, for a log that names none) is stood in for by
/// memory of the trace's size when PROGRAM opens it, so the file need not exist and is
/// never touched. Every access is checked against what the same thread did in TRACE,
/// in order (threads and processes are matched to TRACE's by their first access). A
/// polling loop may take more or fewer reads than recorded. Patching is off. The
/// replayed run is itself traced to -o.
///
/// At the first access that does not match (another register, direction, width or
/// written value than TRACE has next for that thread and map), the report on standard
/// error names it, with the last matching accesses and the expected next ones (folded;
/// register names with --db). The program keeps being served (reads follow each
/// register's recorded values) so that it can finish; --strict stops it instead.
///
/// Example: mmio-trace replay driver.mmiotrace -o replayed.log -- ./driver --probe
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ReplayArgs {
    /// The recorded trace that stands in for the device.
    #[arg(value_name = "TRACE")]
    trace: PathBuf,

    /// Where to write the trace of the replayed run; `-` is standard output.
    #[arg(short, long, value_name = "FILE", default_value = "replay.mmiotrace")]
    output: PathBuf,

    /// Format of the replayed run's trace.
    #[arg(long, value_enum, default_value_t)]
    format: RecordFormat,

    /// Also treat files matching GLOB as devices (repeatable), as for `record`.
    #[arg(long = "device", value_name = "GLOB")]
    devices: Vec<String>,

    /// Do not use the default device rules (only --device ones).
    #[arg(long)]
    no_default_devices: bool,

    /// Bind mappings explicitly: NEW=OLD with two numbers binds the run's mapping id NEW
    /// (as the replayed log numbers it) to TRACE's map id OLD; with two paths, the
    /// program's mappings of file NEW are bound to TRACE's mappings of file OLD (a
    /// device at another path than when it was recorded). Repeatable.
    #[arg(long = "map", value_name = "NEW=OLD", value_parser = parse_map)]
    maps: Vec<MapRule>,

    /// Stop the program (SIGKILL) at its first divergence.
    #[arg(long)]
    strict: bool,

    /// Fault-injection rules (TOML; see `mmio-trace record --help`): change what reads
    /// of a register return, delay its accesses, or raise SIGBUS; each injection is a
    /// MARK in the replayed trace.
    #[arg(long, value_name = "FILE")]
    inject: Option<PathBuf>,

    /// Also write the report as one JSON object to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    #[command(flatten)]
    db: DbArgs,

    /// No status line, no report when the run matched.
    #[arg(short, long)]
    quiet: bool,

    /// The program to run, and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
    command: Vec<OsString>,
}

const AFTER_HELP: &str = "\
Exit status:
    0  the whole run matched TRACE;
    1  it diverged (an access other than TRACE's next, a thread or map TRACE does not
       have, or accesses of TRACE the run never made), also when --strict stopped it;
  otherwise PROGRAM's own failure status (128+N if it died of signal N) when it matched;
  127/126  PROGRAM was not found / could not be run;  125  the trace of the run could not
  be written;  2  bad usage or an unreadable TRACE.

--json FILE writes one object: \"result\" (\"match\" or \"diverged\"), \"exit\" (the status
above), \"program\" (PROGRAM's exit: {\"code\": N} or {\"signal\": N}), \"divergences\"
(how many accesses diverged, at most one per thread and map), \"first\" (null, or the
first divergence: \"kind\" mismatch|extra-thread|ended-early|never-mapped, \"trace_map\",
\"file\", \"thread\", \"trace_thread\", \"position\" (index in that thread's recorded
accesses of the map), \"got\" and \"expected\" (each {\"dir\", \"width\", \"offset\",
\"value\", \"register\", \"pc\"} or null), \"last_matching\" and \"expected_next\" (folded
lines)), \"maps\" (per map of
TRACE: \"trace_map\", \"file\", \"bound\", \"threads\": [{\"trace_thread\", \"matched\",
\"recorded\", \"diverged\"}]), \"unbound_accesses\" (to mappings bound to no map of TRACE),
\"stepped_accesses\" (single-stepped: served by the shadow, not the model),
\"tolerated_polls\" and \"unchecked_accesses\" (after their thread diverged).";

fn parse_map(s: &str) -> Result<MapRule, String> {
    let (new, old) = s
        .split_once('=')
        .ok_or_else(|| format!("--map {s}: expected NEW=OLD"))?;
    if new.is_empty() || old.is_empty() {
        return Err(format!("--map {s}: expected NEW=OLD"));
    }
    match (new.parse::<u64>(), old.parse::<i64>()) {
        (Ok(n), Ok(o)) => Ok(MapRule::Ids(n, o)),
        (Err(_), Err(_)) => Ok(MapRule::Paths(
            new.as_bytes().to_vec(),
            old.as_bytes().to_vec(),
        )),
        _ => Err(format!(
            "--map {s}: NEW and OLD are both map ids or both file paths"
        )),
    }
}

/// Reads `path` into a model (and lets `names` see its events).
pub fn load_model(path: &std::path::Path, mut names: Option<&mut Names>) -> anyhow::Result<Model> {
    let mut input = LogInput::open_path(path, false)?;
    let mut b = ModelBuilder::new();
    input.for_each_event(|ev, _| {
        if let Some(n) = names.as_deref_mut() {
            n.observe(ev);
        }
        match ev {
            Event::Map(m) => b.map(m.id, m.phys, m.len),
            Event::Unmap(u) => b.unmap(u.id),
            Event::Mark(m) => b.mark(&m.text),
            Event::Access(a) => b.access(
                a.dir == Direction::Write,
                a.width,
                a.map_id,
                a.phys,
                a.value,
                a.pid,
                a.ts_ns,
                a.pc,
            ),
            Event::Unknown(u) => b.unknown(u.map_id, u.phys, u.pid, u.ts_ns, u.pc),
            _ => {}
        }
        Ok(())
    })?;
    Ok(b.finish())
}

/// The image in a memfd the program inherits (no close-on-exec).
fn image_memfd(bytes: &[u8]) -> anyhow::Result<File> {
    // SAFETY: a NUL-terminated name; no flags: inherited across exec on purpose.
    let fd = unsafe { libc::memfd_create(c"mmio-trace-replay-model".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot create the replay model's memfd");
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes)
        .context("cannot write the replay model")?;
    Ok(f)
}

/// The run's state, read from the memfd after the run.
fn run_state(f: &File, len: usize) -> anyhow::Result<RunState> {
    // SAFETY: a fresh shared mapping of our memfd, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("cannot read the replay model back");
    }
    // SAFETY: the mapping above, `len` bytes, kept until the munmap below.
    let state = unsafe { Image::from_raw(p as *mut u8, len) }.map(|i| i.state());
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, len) };
    state.ok_or_else(|| anyhow::anyhow!("the replay model was damaged during the run"))
}

/// Runs `replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut names = args.db.load()?;
    if let Err(e) = File::open(&args.trace) {
        return Err(BadInput(format!("cannot open {}: {e}", args.trace.display())).into());
    }
    let model = load_model(&args.trace, names.as_mut())
        .with_context(|| format!("cannot read the trace {}", args.trace.display()))?;
    if model.maps.is_empty() {
        return Err(BadInput(format!(
            "{}: the trace has no device mapping to replay",
            args.trace.display()
        ))
        .into());
    }
    let output = (args.output.as_os_str() != "-").then(|| args.output.clone());
    if let Some(o) = &output {
        if mmio_trace_record::is_declared_device(o, &args.devices) {
            return Err(BadInput(format!(
                "-o {}: that file is a --device: write the trace to another file",
                o.display()
            ))
            .into());
        }
        if o == &args.trace {
            return Err(BadInput(format!(
                "-o {}: that is TRACE: write the replayed run's trace to another file",
                o.display()
            ))
            .into());
        }
    }
    let flags = if args.strict { image::FLAG_STRICT } else { 0 };
    let (rules, seed) = match &args.inject {
        Some(p) => crate::inject::load(p)?,
        None => (Vec::new(), 0),
    };
    let bytes = image::build_with(&model, flags, &args.maps, &rules, seed);
    let memfd = image_memfd(&bytes)?;
    let fd = memfd.as_raw_fd();
    let mut opts = mmio_trace_record::Options::new(args.command.clone(), output);
    opts.format = match args.format {
        RecordFormat::Text => Format::Text,
        RecordFormat::Binary => Format::Binary,
    };
    opts.devices = args.devices.clone();
    // The files TRACE maps are devices here too (it says so), wherever they are, and so
    // are the new files --map names.
    let mut more: Vec<String> = model
        .maps
        .iter()
        .filter_map(|m| m.path.as_ref())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    more.extend(args.maps.iter().filter_map(|r| match r {
        MapRule::Paths(new, _) => Some(String::from_utf8_lossy(new).into_owned()),
        MapRule::Ids(..) => None,
    }));
    more.sort();
    more.dedup();
    for p in more {
        if !opts.devices.contains(&p) {
            // Globs: a literal path with glob characters matches itself anyway.
            opts.devices.push(p);
        }
    }
    opts.no_default_devices = args.no_default_devices;
    // Patched sites would make their accesses without the fault path, past the model.
    opts.no_patch = true;
    opts.status = !args.quiet;
    opts.env = image_env(fd);
    // The model answers in the preload library only: a program the preload library cannot
    // reach would touch the real files, and no process is handed over to it.
    if let Some(program) = args.command.first() {
        let choice = mmio_trace_record::route::choose(program, None);
        if choice.route != mmio_trace_record::Route::Preload {
            eprintln!(
                "mmio-trace: cannot replay into {}: it is a {}, which the preload library cannot reach, and replay needs the preload route (a dynamically linked glibc build)",
                program.to_string_lossy(),
                choice.reason
            );
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    }
    opts.hand_off = false;
    let out = match mmio_trace_record::record(&opts) {
        Ok(out) => out,
        Err(Error::Spawn { program, error }) => {
            let not_found = error.kind() == std::io::ErrorKind::NotFound;
            eprintln!("mmio-trace: cannot run {program}: {error}");
            return Ok(ExitCode::from(if not_found {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_RUN
            }));
        }
        Err(e @ Error::Open { .. }) => {
            eprintln!("mmio-trace: {e}");
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(Error::Incomplete { path, error, .. }) => {
            eprintln!("mmio-trace: cannot write the trace to {path}: {error}");
            return Ok(ExitCode::from(EXIT_TRACE_FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    let state = run_state(&memfd, bytes.len())?;
    let report = Report::new(&model, &state, names.as_ref());
    let diverged = report.first.is_some();
    let program_code = out.exit.code();
    let code: u8 = if diverged { 1 } else { program_code };
    if diverged || !args.quiet {
        eprint!("{}", report.text(&model, &state, names.as_ref()));
    }
    if out.processes == 0 {
        eprintln!(
            "mmio-trace: warning: the program never loaded the tracer (statically linked, \
             set-uid, or it cleared LD_PRELOAD): nothing was replayed"
        );
    }
    if let Some(path) = &args.json {
        let program = match out.exit {
            mmio_trace_record::Exit::Code(c) => json!({ "code": c }),
            mmio_trace_record::Exit::Signal(s) => json!({ "signal": s }),
        };
        let mut v = report.json(&model, &state, names.as_ref());
        v["exit"] = json!(code);
        v["program"] = program;
        let text = format!("{v}\n");
        if path.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(ExitCode::from(code))
}

/// The variables that name the image in memfd `fd` to the program.
fn image_env(fd: i32) -> Vec<(OsString, OsString)> {
    vec![
        (env_names::FD.into(), fd.to_string().into()),
        (
            env_names::PATH.into(),
            format!("/proc/{}/fd/{fd}", std::process::id()).into(),
        ),
    ]
}

/// For `record --inject FILE`: the rules' image (no trace) in a memfd the program
/// inherits (keep the file open until the program ended), and the variables naming it.
pub fn inject_env(path: &std::path::Path) -> anyhow::Result<(File, Vec<(OsString, OsString)>)> {
    let (rules, seed) = crate::inject::load(path)?;
    let bytes = image::build_with(&Model::default(), 0, &[], &rules, seed);
    let f = image_memfd(&bytes)?;
    let env = image_env(f.as_raw_fd());
    Ok((f, env))
}

/// The environment the tracer reads its model from (its constants, without making
/// the command line depend on the tracer crate).
mod env_names {
    pub const FD: &str = "MMIO_TRACE_REPLAY_FD";
    pub const PATH: &str = "MMIO_TRACE_REPLAY_PATH";
}

/// How many accesses of context each side of a divergence is folded from.
const CONTEXT: usize = 32;
/// How many folded lines of context each side are shown.
const SHOWN: usize = 6;

/// The first divergence, as the report tells it.
struct First {
    kind: &'static str,
    map: usize,
    /// Stream index (none for an extra thread or a map never mapped).
    stream: Option<usize>,
    thread: Option<u32>,
    pos: usize,
    got: Option<SeqEntry>,
    expected: Option<SeqEntry>,
    last_matching: Vec<String>,
    expected_next: Vec<String>,
}

struct Report {
    first: Option<First>,
    divergences: u64,
}

fn access_of(model: &Model, map: usize, e: &SeqEntry) -> Access {
    let m = &model.maps[map];
    let dir = if e.write {
        Direction::Write
    } else {
        Direction::Read
    };
    let mut a = Access::new(
        dir,
        e.width.min(8),
        e.ts_ns,
        m.id,
        m.phys.wrapping_add(e.rel),
        e.value,
    );
    a.pc = e.pc;
    a
}

fn reg_name(model: &Model, map: usize, e: &SeqEntry, names: Option<&Names>) -> Option<String> {
    names.and_then(|n| n.register_name(&access_of(model, map, e)))
}

/// `W4 +0x10 CTRL = 0x00000006`.
fn entry_line(model: &Model, map: usize, e: &SeqEntry, names: Option<&Names>) -> String {
    let name = reg_name(model, map, e, names)
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    if e.width == 0 {
        return format!("UNKNOWN +{:#x}{name}", e.rel);
    }
    format!(
        "{}{} +{:#x}{} = {}",
        if e.write { "W" } else { "R" },
        e.width,
        e.rel,
        name,
        fold::hex(e.value, e.width.min(8))
    )
}

/// Folded lines of `entries` (as `show --fold` folds them).
fn folded(model: &Model, map: usize, entries: &[SeqEntry], names: Option<&Names>) -> Vec<String> {
    let mut out = Vec::new();
    let mut folder = Folder::ignoring_time();
    let mut sink = |f: Folded<'_>| -> Result<(), ()> {
        match f {
            Folded::Event(_, i) => {
                out.push(entry_line(model, map, &entries[i as usize - 1], names));
            }
            Folded::Run(r) => {
                let mut line = format!("×{}", r.reps);
                if r.slots.len() > 1 {
                    line.push_str(&format!(" of {} accesses:", r.slots.len()));
                }
                for s in &r.slots {
                    let rel = s.first.phys.wrapping_sub(model.maps[map].phys);
                    let name = names
                        .and_then(|n| n.register_name(&s.first))
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default();
                    line.push_str(&format!(
                        " {}{} +{:#x}{} {}",
                        if s.shape.dir == Direction::Write {
                            "W"
                        } else {
                            "R"
                        },
                        s.shape.width,
                        rel,
                        name,
                        fold::fmt_values(s)
                    ));
                    if r.slots.len() > 1 {
                        line.push(';');
                    }
                }
                out.push(line.trim_end_matches(';').to_string());
            }
        }
        Ok(())
    };
    for (i, e) in entries.iter().enumerate() {
        // An UNKNOWN does not fold: it passes as an event of another kind.
        let ev = if e.width == 0 {
            Event::LostEvents(0)
        } else {
            Event::Access(access_of(model, map, e))
        };
        let _ = folder.push(&ev, i as u64 + 1, &mut sink);
    }
    let _ = folder.finish(&mut sink);
    out
}

impl Report {
    fn new(model: &Model, st: &RunState, names: Option<&Names>) -> Report {
        let context = |map: usize, s: usize, pos: usize| {
            let entries = &model.maps[map].streams[s].entries;
            let pos = pos.min(entries.len());
            let before = &entries[pos.saturating_sub(CONTEXT)..pos];
            let after = &entries[pos..(pos + CONTEXT).min(entries.len())];
            let mut last = folded(model, map, before, names);
            last.drain(..last.len().saturating_sub(SHOWN));
            let mut next = folded(model, map, after, names);
            next.truncate(SHOWN);
            (last, next)
        };
        let mut first = st.first.map(|d| {
            let got = Some(SeqEntry {
                write: d.write,
                width: d.width,
                rel: d.rel,
                value: d.value,
                ts_ns: 0,
                pc: d.pc,
            });
            match d.kind {
                DivergenceKind::Mismatch => {
                    let (last, next) = context(d.map, d.stream, d.pos);
                    First {
                        kind: "mismatch",
                        map: d.map,
                        stream: Some(d.stream),
                        thread: Some(d.tid),
                        pos: d.pos,
                        got,
                        expected: model.maps[d.map].streams[d.stream]
                            .entries
                            .get(d.pos)
                            .copied(),
                        last_matching: last,
                        expected_next: next,
                    }
                }
                DivergenceKind::ExtraThread => First {
                    kind: "extra-thread",
                    map: d.map,
                    stream: None,
                    thread: Some(d.tid),
                    pos: 0,
                    got,
                    expected: None,
                    last_matching: Vec::new(),
                    expected_next: Vec::new(),
                },
            }
        });
        let mut divergences = st.divergences;
        // Accesses of the trace the run never made: a map never mapped, a thread that
        // never came, a sequence left unfinished (recorded repeats of a poll aside).
        for (mi, (bound, streams)) in st.maps.iter().enumerate() {
            let m = &model.maps[mi];
            if !bound {
                divergences += 1;
                if first.is_none() {
                    first = Some(First {
                        kind: "never-mapped",
                        map: mi,
                        stream: None,
                        thread: None,
                        pos: 0,
                        got: None,
                        expected: m.streams.first().and_then(|s| s.entries.first()).copied(),
                        last_matching: Vec::new(),
                        expected_next: m
                            .streams
                            .first()
                            .map(|s| {
                                let n = s.entries.len().min(CONTEXT);
                                let mut v = folded(model, mi, &s.entries[..n], names);
                                v.truncate(SHOWN);
                                v
                            })
                            .unwrap_or_default(),
                    });
                }
                continue;
            }
            for (si, ss) in streams.iter().enumerate() {
                if ss.diverged {
                    continue;
                }
                let entries = &m.streams[si].entries;
                let mut pos = ss.pos;
                if pos > 0 && !entries[pos - 1].write {
                    let p = entries[pos - 1];
                    while pos < entries.len()
                        && !entries[pos].write
                        && entries[pos].rel == p.rel
                        && entries[pos].width == p.width
                    {
                        pos += 1;
                    }
                }
                if pos < entries.len() {
                    divergences += 1;
                    if first.is_none() {
                        let (last, next) = context(mi, si, ss.pos);
                        first = Some(First {
                            kind: "ended-early",
                            map: mi,
                            stream: Some(si),
                            thread: None,
                            pos: ss.pos,
                            got: None,
                            expected: entries.get(ss.pos).copied(),
                            last_matching: last,
                            expected_next: next,
                        });
                    }
                }
            }
        }
        Report { first, divergences }
    }

    fn map_name(model: &Model, map: usize) -> String {
        let m = &model.maps[map];
        match &m.path {
            Some(p) => format!(
                "map {} ({} offset {:#x})",
                m.id,
                String::from_utf8_lossy(p),
                m.file_off.unwrap_or(0)
            ),
            None => format!("map {} (phys {:#x})", m.id, m.phys),
        }
    }

    fn text(&self, model: &Model, st: &RunState, names: Option<&Names>) -> String {
        let mut s = String::new();
        let total: usize = model.maps.iter().map(|m| m.accesses()).sum();
        let Some(f) = &self.first else {
            s.push_str(&format!(
                "mmio-trace replay: the run matched the trace ({total} recorded accesses, {} mapping{} bound{})\n",
                st.bound,
                if st.bound == 1 { "" } else { "s" },
                if st.tolerated > 0 {
                    format!(", {} extra polling reads", st.tolerated)
                } else {
                    String::new()
                }
            ));
            if st.unbound > 0 || st.stepped > 0 {
                s.push_str(&format!(
                    "mmio-trace replay: note: {} accesses to mappings no map of the trace was bound to, {} single-stepped (served by the shadow, not the model)\n",
                    st.unbound, st.stepped
                ));
            }
            return s;
        };
        let map = Self::map_name(model, f.map);
        let tid = f.stream.map(|si| model.maps[f.map].streams[si].tid);
        let who = match (f.thread, tid) {
            (Some(t), Some(tt)) => format!("thread {t} (trace thread {tt})"),
            (Some(t), None) => format!("thread {t}"),
            (None, Some(tt)) => format!("trace thread {tt}"),
            (None, None) => String::new(),
        };
        s.push_str(&format!(
            "mmio-trace replay: DIVERGED ({} divergence{}): ",
            self.divergences,
            if self.divergences == 1 { "" } else { "s" }
        ));
        match f.kind {
            "mismatch" => s.push_str(&format!(
                "{who}, {map}, at its recorded access {}:\n",
                f.pos + 1
            )),
            "extra-thread" => s.push_str(&format!(
                "{who} accessed {map}, which no (other) thread of the trace did:\n"
            )),
            "never-mapped" => s.push_str(&format!("the program never mapped {map}\n")),
            _ => s.push_str(&format!(
                "the run ended before {who}'s recorded access {} of {map}:\n",
                f.pos + 1
            )),
        }
        let line = |e: &SeqEntry| {
            let mut l = entry_line(model, f.map, e, names);
            if e.pc != 0 {
                l.push_str(&format!("  pc {:#x}", e.pc));
            }
            l
        };
        if let Some(g) = &f.got {
            s.push_str(&format!("  got:      {}\n", line(g)));
        }
        match &f.expected {
            Some(e) => s.push_str(&format!("  expected: {}\n", line(e))),
            None if f.kind == "mismatch" => s.push_str(
                "  expected: nothing more (the trace's accesses of this thread and map ended)\n",
            ),
            None => {}
        }
        if !f.last_matching.is_empty() {
            s.push_str("  last matching accesses:\n");
            for l in &f.last_matching {
                s.push_str(&format!("    {l}\n"));
            }
        }
        if !f.expected_next.is_empty() {
            s.push_str("  expected next:\n");
            for l in &f.expected_next {
                s.push_str(&format!("    {l}\n"));
            }
        }
        s
    }

    fn json(&self, model: &Model, st: &RunState, names: Option<&Names>) -> Value {
        let entry = |map: usize, e: &Option<SeqEntry>| {
            e.map(|e| {
                json!({
                    "dir": if e.write { "W" } else { "R" },
                    "width": e.width,
                    "offset": format!("{:#x}", e.rel),
                    "value": format!("{:#x}", e.value),
                    "register": reg_name(model, map, &e, names),
                    "pc": format!("{:#x}", e.pc),
                })
            })
        };
        let file = |map: usize| {
            model.maps[map]
                .path
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        let first = self.first.as_ref().map(|f| {
            json!({
                "kind": f.kind,
                "trace_map": model.maps[f.map].id,
                "file": file(f.map),
                "thread": f.thread,
                "trace_thread": f.stream.map(|s| model.maps[f.map].streams[s].tid),
                "position": f.pos,
                "got": entry(f.map, &f.got),
                "expected": entry(f.map, &f.expected),
                "last_matching": f.last_matching,
                "expected_next": f.expected_next,
            })
        });
        let maps: Vec<Value> = st
            .maps
            .iter()
            .enumerate()
            .map(|(i, (bound, streams))| {
                json!({
                    "trace_map": model.maps[i].id,
                    "file": file(i),
                    "bound": bound,
                    "threads": streams.iter().enumerate().map(|(si, s)| json!({
                        "trace_thread": model.maps[i].streams[si].tid,
                        "matched": s.pos,
                        "recorded": s.len,
                        "diverged": s.diverged,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "result": if self.first.is_some() { "diverged" } else { "match" },
            "divergences": self.divergences,
            "first": first,
            "maps": maps,
            "unbound_accesses": st.unbound,
            "stepped_accesses": st.stepped,
            "tolerated_polls": st.tolerated,
            "unchecked_accesses": st.unchecked,
        })
    }
}

/// `export --to replay-model`: the model of `log` as documented JSON (see `export
/// --help`), to `out` (`None`: standard output).
pub fn export_model(
    log: &std::path::Path,
    out: Option<&std::path::Path>,
    db: &DbArgs,
) -> anyhow::Result<()> {
    let mut names = db.load()?;
    let model = load_model(log, names.as_mut())?;
    let names = names.as_ref();
    let hex = |v: u64| format!("{v:#x}");
    let maps: Vec<Value> = model
        .maps
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            // The first access of each register, over all threads, in log order.
            let mut first: std::collections::BTreeMap<(u64, u8), (u64, SeqEntry)> =
                Default::default();
            for s in &m.streams {
                for e in &s.entries {
                    let k = (e.rel, e.width);
                    if first.get(&k).is_none_or(|(ts, _)| e.ts_ns < *ts) {
                        first.insert(k, (e.ts_ns, *e));
                    }
                }
            }
            let registers: Vec<Value> = m
                .regs
                .iter()
                .map(|r| {
                    let probe = SeqEntry {
                        write: false,
                        width: r.width,
                        rel: r.rel,
                        value: 0,
                        ts_ns: 0,
                        pc: 0,
                    };
                    let initial = first
                        .get(&(r.rel, r.width))
                        .filter(|(_, e)| !e.write)
                        .map(|(_, e)| hex(e.value));
                    json!({
                        "offset": hex(r.rel),
                        "width": r.width,
                        "name": reg_name(&model, mi, &probe, names),
                        "reads": r.reads.iter().map(|&v| hex(v)).collect::<Vec<_>>(),
                        "writes": r.writes.iter().map(|&v| hex(v)).collect::<Vec<_>>(),
                        "read_only": !r.reads.is_empty() && r.writes.is_empty(),
                        "write_only": r.reads.is_empty() && !r.writes.is_empty(),
                        "initial": initial,
                    })
                })
                .collect();
            let threads: Vec<Value> = m
                .streams
                .iter()
                .map(|s| {
                    json!({
                        "trace_thread": s.tid,
                        "accesses": s.entries.iter().map(|e| json!({
                            "dir": match (e.width, e.write) {
                                (0, _) => "UNKNOWN",
                                (_, true) => "W",
                                _ => "R",
                            },
                            "width": e.width,
                            "offset": hex(e.rel),
                            "value": hex(e.value),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "trace_map": m.id,
                "file": m.path.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
                "file_offset": m.file_off,
                "phys": hex(m.phys),
                "length": hex(m.len),
                "registers": registers,
                "threads": threads,
            })
        })
        .collect();
    let v = json!({
        "format": "mmio-trace replay model",
        "version": 1,
        "source": log.display().to_string(),
        "maps": maps,
    });
    let mut text = serde_json::to_string_pretty(&v)?;
    text.push('\n');
    match out {
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())?;
            o.flush()?;
        }
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
    }
    Ok(())
}
