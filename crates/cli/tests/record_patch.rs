//! Hot-site patching (issue 15) through the built binary. Every test records the same
//! program twice, trap-only (`--no-patch`) and patched (`MMIO_TRACE_PATCH_AFTER=K`, small
//! K), and requires identical event streams: per thread, the same sequence of (kind,
//! width, map-relative offset, value, PC relative to its object) with the same MAP and
//! UNMAP events; the same program output and exit status; the same device contents
//! afterwards. The patched run must also say in its summary that sites were patched and
//! that accesses went through trampolines; a `--no-patch` run says nothing of patching.
//! Programs that must see their sites patched before going on (`PATCH_WAIT`,
//! `PATCH_FORMS_REPORT`) watch their own text for the rewritten bytes, at most 3 s.
//! A few tests (`every_required_form_is_patched`, `adjacent_short_sites_are_all_patched`,
//! `jit_and_shared_code_is_never_patched`) are about what gets patched, and say so.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::{Direction, Event};

/// How a program is recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `--no-patch`: every access traps.
    Trap,
    /// Patching on, a site patched after this many traps.
    Patch(u32),
}

/// One recording: the recorder's output, the events, the device file afterwards.
struct Run {
    mode: Mode,
    out: Output,
    events: Vec<Event>,
    dev: Vec<u8>,
    log: PathBuf,
}

/// Records `PROGRAM DEV ARGS` (without `-q`: the summary is wanted) on a fresh copy of the
/// fixture's device, with `env` added to the environment.
fn record(f: &Fixture, mode: Mode, env: &[(&str, &str)], args: &[&str]) -> Run {
    record_opts(f, mode, &[], env, args)
}

/// As [`record`], with extra `record` options.
fn record_opts(f: &Fixture, mode: Mode, opts: &[&str], env: &[(&str, &str)], args: &[&str]) -> Run {
    let tag = match mode {
        Mode::Trap => "trap".to_string(),
        Mode::Patch(k) => format!("patch{k}"),
    };
    let dev = f.dir.join(format!("dev-{tag}.bin"));
    std::fs::copy(&f.dev, &dev).unwrap();
    let log = f.dir.join(format!("trace-{tag}.log"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    c.arg("record")
        .arg("-o")
        .arg(&log)
        .arg("--device")
        .arg(&dev)
        .args(opts);
    match mode {
        Mode::Trap => {
            c.arg("--no-patch");
        }
        Mode::Patch(k) => {
            c.env("MMIO_TRACE_PATCH_AFTER", k.to_string());
        }
    }
    c.arg("--").arg(&f.exe).arg(&dev).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    if !log.exists() {
        panic!("{mode:?}: no trace written; stderr {}", stderr(&out));
    }
    let events = read_log(&log);
    let dev = std::fs::read(&dev).unwrap();
    Run {
        mode,
        out,
        events,
        dev,
        log,
    }
}

/// Runs `PROGRAM DEV ARGS` untraced on a fresh copy of the fixture's device; returns its
/// output and the device afterwards.
fn native(f: &Fixture, env: &[(&str, &str)], args: &[&str]) -> (Output, Vec<u8>) {
    let dev = f.dir.join("dev-native.bin");
    std::fs::copy(&f.dev, &dev).unwrap();
    let mut c = Command::new(&f.exe);
    c.arg(&dev).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out, std::fs::read(&dev).unwrap())
}

/// A loaded object from an `object pid ...` marker.
struct Object {
    start: u64,
    end: u64,
    name: String,
}

/// The loaded objects the log names, in log order.
fn objects(events: &[Event]) -> Vec<Object> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Mark(m) => {
                let t = String::from_utf8_lossy(&m.text);
                // object pid PID 0xSTART-0xEND bias 0xBIAS build HEX PATH
                let w: Vec<&str> = t.splitn(9, ' ').collect();
                if w.len() < 9 || w[0] != "object" || w[1] != "pid" {
                    return None;
                }
                let (s, e) = w[3].split_once('-')?;
                let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
                let name = Path::new(w[8])
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| w[8].to_string());
                Some(Object {
                    start: hex(s)?,
                    end: hex(e)?,
                    name,
                })
            }
            _ => None,
        })
        .collect()
}

/// `pc` relative to the object holding it (the latest logged one), so that the runs of
/// one program compare whatever address space layout each got; absolute otherwise.
fn place(objects: &[Object], pc: u64) -> String {
    match objects
        .iter()
        .rev()
        .find(|o| (o.start..o.end).contains(&pc))
    {
        Some(o) => format!("{}+{:#x}", o.name, pc - o.start),
        None => format!("{pc:#x}"),
    }
}

/// One event as the comparison sees it: what must be equal between two runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Map {
        phys: u64,
        len: u64,
        pc: String,
    },
    Unmap {
        pc: String,
    },
    Access {
        dir: char,
        width: u8,
        phys: u64,
        value: u64,
        bytes: Vec<u8>,
        pc: String,
    },
    Unknown {
        phys: u64,
        opcode: [u8; 3],
        pc: String,
    },
    Kernel {
        dir: char,
        len: u64,
        phys: u64,
        call: String,
    },
}

fn dir(d: Direction) -> char {
    match d {
        Direction::Read => 'R',
        Direction::Write => 'W',
    }
}

/// Every thread's events, in its order, keyed by thread id.
fn streams(events: &[Event]) -> BTreeMap<u32, Vec<Ev>> {
    let objs = objects(events);
    let mut by: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    for e in events {
        let (pid, ev) = match e {
            Event::Map(m) => (
                m.pid,
                Ev::Map {
                    phys: m.phys,
                    len: m.len,
                    pc: place(&objs, m.pc),
                },
            ),
            Event::Unmap(u) => (
                u.pid,
                Ev::Unmap {
                    pc: place(&objs, u.pc),
                },
            ),
            Event::Access(a) => (
                a.pid,
                Ev::Access {
                    dir: dir(a.dir),
                    width: a.width,
                    phys: a.phys,
                    value: a.value,
                    bytes: a.bytes()[..usize::from(a.width)].to_vec(),
                    pc: place(&objs, a.pc),
                },
            ),
            Event::Unknown(u) => (
                u.pid,
                Ev::Unknown {
                    phys: u.phys,
                    opcode: u.opcode,
                    pc: place(&objs, u.pc),
                },
            ),
            Event::Kernel(k) => (
                k.pid,
                Ev::Kernel {
                    dir: dir(k.dir),
                    len: k.len,
                    phys: k.phys,
                    call: String::from_utf8_lossy(&k.call).into_owned(),
                },
            ),
            _ => continue,
        };
        by.entry(pid).or_default().push(ev);
    }
    by
}

/// Asserts that two runs logged the same per-thread event streams (thread ids aside:
/// the streams are compared as a sorted list) and that neither lost events.
#[track_caller]
fn assert_same_streams(a: &Run, b: &Run) {
    assert_none_lost(&a.events);
    assert_none_lost(&b.events);
    let mut sa: Vec<Vec<Ev>> = streams(&a.events).into_values().collect();
    let mut sb: Vec<Vec<Ev>> = streams(&b.events).into_values().collect();
    sa.sort();
    sb.sort();
    if sa == sb {
        return;
    }
    let lens = |s: &[Vec<Ev>]| s.iter().map(Vec::len).collect::<Vec<_>>();
    let mut msg = format!(
        "event streams differ: {:?} has {} threads {:?} ({}), {:?} has {} threads {:?} ({})",
        a.mode,
        sa.len(),
        lens(&sa),
        a.log.display(),
        b.mode,
        sb.len(),
        lens(&sb),
        b.log.display()
    );
    if let Some((x, y)) = sa.iter().zip(&sb).find(|(x, y)| x != y) {
        let at = x.iter().zip(y).take_while(|(p, q)| p == q).count();
        let show = |s: &[Ev]| {
            s.iter()
                .skip(at.saturating_sub(2))
                .take(5)
                .map(|e| format!("\n    {e:?}"))
                .collect::<String>()
        };
        msg += &format!(
            "\n  first difference at event {at} of a thread:\n  {:?}:{}\n  {:?}:{}",
            a.mode,
            show(x),
            b.mode,
            show(y)
        );
    }
    panic!("{msg}");
}

/// The figures of `mmio-trace: patching: S sites patched, A accesses through
/// trampolines, T through traps`.
#[derive(Debug, Clone, Copy)]
struct Summary {
    sites: u64,
    trampolines: u64,
    traps: u64,
}

fn summary(stderr: &str) -> Option<Summary> {
    let l = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mmio-trace: patching: "))?;
    let n: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    let shape = format!(
        "{} sites patched, {} accesses through trampolines, {} through traps",
        n.first()?,
        n.get(1)?,
        n.get(2)?
    );
    assert_eq!(l, shape, "the patching summary's wording");
    Some(Summary {
        sites: n[0],
        trampolines: n[1],
        traps: n[2],
    })
}

/// A `mmio-trace: hot site 0xPC (PLACE) not patched: REASON (N traps)` line.
#[derive(Debug)]
struct HotSite {
    pc: u64,
    place: String,
    reason: String,
    traps: u64,
}

#[track_caller]
fn hot_sites(stderr: &str) -> Vec<HotSite> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mmio-trace: hot site "))
        .map(|l| {
            // A fresh closure per use: each returns what its call site needs.
            macro_rules! bad {
                () => {
                    |_| panic!("malformed hot-site line: {l}")
                };
            }
            let (pc, rest) = l.split_once(" (").ok_or(()).unwrap_or_else(bad!());
            let (place, rest) = rest
                .split_once(") not patched: ")
                .ok_or(())
                .unwrap_or_else(bad!());
            let (reason, n) = rest.rsplit_once(" (").ok_or(()).unwrap_or_else(bad!());
            let traps = n.strip_suffix(" traps)").ok_or(()).unwrap_or_else(bad!());
            HotSite {
                pc: u64::from_str_radix(pc.strip_prefix("0x").ok_or(()).unwrap_or_else(bad!()), 16)
                    .unwrap_or_else(bad!()),
                place: place.to_string(),
                reason: reason.to_string(),
                traps: traps.parse().unwrap_or_else(bad!()),
            }
        })
        .collect()
}

/// Asserts that a patched run patched sites and sent accesses through trampolines.
#[track_caller]
fn assert_patched(r: &Run) -> Summary {
    let err = stderr(&r.out);
    let s = summary(&err)
        .unwrap_or_else(|| panic!("{:?}: no patching summary on stderr: {err}", r.mode));
    assert!(
        s.sites > 0 && s.trampolines > 0,
        "{:?}: nothing went through a trampoline: {s:?}; stderr {err}",
        r.mode
    );
    s
}

/// Asserts that a `--no-patch` run says nothing of patching.
#[track_caller]
fn assert_silent_on_patching(r: &Run) {
    let err = stderr(&r.out);
    assert!(
        !err.contains("mmio-trace: patching:") && !err.contains("mmio-trace: hot site"),
        "{:?}: {err}",
        r.mode
    );
}

/// Asserts what every run of a test shares: the recorder's exit status `code`, the same
/// program output as natively, the same device contents as natively, and the same streams
/// trap-only and patched.
#[track_caller]
fn assert_same_runs(nat: &(Output, Vec<u8>), trap: &Run, pat: &Run, code: i32) {
    assert_exit(&trap.out, code);
    assert_exit(&pat.out, code);
    assert_eq!(
        stdout(&trap.out),
        stdout(&nat.0),
        "trap-only stdout vs native"
    );
    assert_eq!(stdout(&pat.out), stdout(&nat.0), "patched stdout vs native");
    assert!(
        trap.dev == nat.1,
        "device after the trap-only run differs from native"
    );
    assert!(
        pat.dev == nat.1,
        "device after the patched run differs from native"
    );
    assert_same_streams(trap, pat);
    assert_silent_on_patching(trap);
}

/// Records tests/programs/patch_forms.c `DEV 4 12` patched (K=2), in the binary format
/// (16- and 32-byte accesses whole), with the program reporting its sites; returns the run
/// and the report: (name, address, rewritten after the warm-up, required) per site.
fn forms_patched(f: &Fixture) -> (Run, Vec<(String, u64, bool, bool)>) {
    let report = f.dir.join("sites.txt");
    let rep = report.to_str().unwrap();
    let env = [("PATCH_FORMS_REPORT", rep)];
    let pat = record_opts(
        f,
        Mode::Patch(2),
        &["--format", "binary"],
        &env,
        &["4", "12"],
    );
    let text = std::fs::read_to_string(&report).expect("patch_forms wrote its site report");
    let sites = text
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            let at = u64::from_str_radix(w[1].trim_start_matches("0x"), 16).unwrap();
            (
                w[0].to_string(),
                at,
                w[3] == "patched",
                w.get(5) == Some(&"required"),
            )
        })
        .collect();
    let lens: std::collections::BTreeSet<usize> = text
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(
        (2..=15).all(|n| lens.contains(&n)),
        "sites of every length 2..=15: {lens:?}"
    );
    (pat, sites)
}

/// Every instruction form of tests/programs/patch_forms.c (lengths 2..=15, widths 1..=32,
/// read-modify-write, flags live, rsp-based, RIP-relative neighbours, branch targets),
/// each through the same site on three mappings of the device (one met only after the
/// site was patched), on the heap and on a shared mapping of an ordinary file: the same
/// events, results and device contents patched as trap-only, and every access of a site
/// rewritten before the measured pass through its trampoline.
#[test]
fn every_form_logs_the_same_patched_as_trap_only() {
    let f = Fixture::new("forms", "patch_forms", 0x18000);
    let args = ["4", "12"];
    let nat = native(&f, &[], &args);
    assert!(
        !stdout(&nat.0).contains("MISMATCH"),
        "natively: {}",
        stdout(&nat.0)
    );
    if stdout(&nat.0).contains("skipped") {
        eprintln!("note: the 32-byte AVX forms are skipped: this CPU has no AVX");
    }
    let trap = record_opts(&f, Mode::Trap, &["--format", "binary"], &[], &args);
    let (pat, sites) = forms_patched(&f);
    assert_same_runs(&nat, &trap, &pat, 0);
    assert!(
        unknowns(&trap.events).is_empty(),
        "a form was single-stepped"
    );
    let s = assert_patched(&pat);
    // Every access of a site rewritten before the measured pass, to maps A and B, went
    // through its trampoline. Instructions, not events: a read-modify-write logs a read
    // and a write.
    let pass = pat
        .events
        .iter()
        .position(|e| matches!(e, Event::Mark(m) if m.text == b"patch_forms: measured pass"))
        .expect("the measured pass's marker");
    let patched: Vec<u64> = sites.iter().filter(|s| s.2).map(|s| s.1).collect();
    let mut through = 0u64;
    let mut last: Option<(u64, u64)> = None;
    for e in &pat.events[pass..] {
        if let Event::Access(a) = e {
            let rmw_write = a.dir == Direction::Write && last == Some((a.pc, a.phys));
            // Map C (file offset 0x10000) is new to the sites: it may take traps.
            if patched.contains(&a.pc) && !rmw_write && a.phys < 0x10000 {
                through += 1;
            }
            last = (a.dir == Direction::Read).then_some((a.pc, a.phys));
        }
    }
    assert!(
        s.trampolines >= through,
        "{s:?}: at least {through} accesses of the measured pass went through trampolines"
    );
}

/// Every form the issue asks trampolines to cover is patched: all of patch_forms's sites
/// but the implicitly locked `xchg` and `lock add` (and the AVX ones on a CPU without
/// AVX) are rewritten after their warm-up, and none is listed as not patched.
#[test]
fn every_required_form_is_patched() {
    let f = Fixture::new("forms-cover", "patch_forms", 0x18000);
    let (pat, sites) = forms_patched(&f);
    assert_exit(&pat.out, 0);
    let hot = hot_sites(&stderr(&pat.out));
    let named = |s: &(String, u64, bool, bool)| {
        hot.iter()
            .find(|h| h.pc == s.1)
            .map_or(String::new(), |h| format!(" ({})", h.reason))
    };
    let late: Vec<String> = sites
        .iter()
        .filter(|s| s.3 && !s.2)
        .map(|s| format!("{}{}", s.0, named(s)))
        .collect();
    assert!(late.is_empty(), "required sites not patched: {late:?}");
    for h in &hot {
        if let Some(s) = sites.iter().find(|s| s.1 == h.pc) {
            assert!(!s.3, "{} is listed as not patched: {h:?}", s.0);
        }
    }
}

/// One access as the per-thread checks see it: (R/W, width, offset, value, PC relative to
/// its object).
type Acc = (char, u8, u64, u64, String);

/// The accesses (R/W, width, offset, value) of each thread of `events` that made any,
/// keyed by the offset of its first access, with the PCs relative to their objects.
fn accesses_by_first_offset(events: &[Event]) -> BTreeMap<u64, Vec<Acc>> {
    let mut out = BTreeMap::new();
    for (pid, evs) in streams(events) {
        let acc: Vec<Acc> = evs
            .into_iter()
            .filter_map(|e| match e {
                Ev::Access {
                    dir,
                    width,
                    phys,
                    value,
                    pc,
                    ..
                } => Some((dir, width, phys, value, pc)),
                _ => None,
            })
            .collect();
        if let Some(first) = acc.first() {
            let key = first.2;
            assert!(
                out.insert(key, acc).is_none(),
                "two threads started at {key:#x} (thread {pid})"
            );
        }
    }
    out
}

/// Asserts every access of tests/programs/patch_threads.c `DEV nt n`: thread t makes, per
/// iteration i, W4 i, W4 !i, R4 i, R4 !i, W8 t<<32|i at 0x100 * t (the main thread 8
/// iterations as thread 0), each column from one site; and the device's final contents.
#[track_caller]
fn assert_hammered(r: &Run, f: &Fixture, nt: u64, n: u64) {
    let by = accesses_by_first_offset(&r.events);
    let want_keys: Vec<u64> = (0..=nt).map(|t| 0x100 * t).collect();
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        want_keys,
        "{:?}: one thread per range",
        r.mode
    );
    let mut writes = Vec::new();
    for (&base, acc) in &by {
        let t = base / 0x100;
        let iters = if t == 0 { 8 } else { n };
        let mut want = Vec::new();
        for i in 0..iters {
            let i32_ = i as u32;
            want.push(('W', 4, base, u64::from(i32_)));
            want.push(('W', 4, base + 4, u64::from(!i32_)));
            want.push(('R', 4, base, u64::from(i32_)));
            want.push(('R', 4, base + 4, u64::from(!i32_)));
            want.push(('W', 8, base + 8, t << 32 | i));
        }
        let got: Vec<(char, u8, u64, u64)> = acc.iter().map(|a| (a.0, a.1, a.2, a.3)).collect();
        if got != want {
            let at = got.iter().zip(&want).take_while(|(g, w)| g == w).count();
            panic!(
                "{:?}: thread {t}: {} accesses, want {}; first difference at {at}: got {:x?}, want {:x?}",
                r.mode,
                got.len(),
                want.len(),
                got.get(at),
                want.get(at)
            );
        }
        for col in 0..5 {
            let pcs: std::collections::BTreeSet<&str> = acc
                .iter()
                .skip(col)
                .step_by(5)
                .map(|a| a.4.as_str())
                .collect();
            assert_eq!(
                pcs.len(),
                1,
                "{:?}: thread {t}: column {col} from {pcs:?}",
                r.mode
            );
        }
        let last = iters - 1;
        writes.push((base, last, 4));
        writes.push((base + 4, u64::from(!(last as u32)), 4));
        writes.push((base + 8, t << 32 | last, 8));
    }
    let tag = match r.mode {
        Mode::Trap => "trap".to_string(),
        Mode::Patch(k) => format!("patch{k}"),
    };
    assert_device_after(&f.dir.join(format!("dev-{tag}.bin")), &writes);
}

/// Asserts that the summary counts every access once: through a trampoline or a trap.
#[track_caller]
fn assert_counts_every_access(r: &Run, s: Summary) {
    let n = accesses(&r.events).len() as u64;
    assert_eq!(
        s.trampolines + s.traps,
        n,
        "{:?}: {s:?} for {n} accesses",
        r.mode
    );
}

/// `nt` threads hammer five adjacent short sites while the patcher unpatches and
/// re-patches them 2000 times: every access of every thread, in order, both ways.
fn hammer_while_churning(name: &str, nt: u64, n: u64) {
    let f = Fixture::new(name, "patch_threads", 65536);
    let args = [nt.to_string(), n.to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nat = native(&f, &[], &args);
    let trap = record(&f, Mode::Trap, &[], &args);
    let pat = record(
        &f,
        Mode::Patch(4),
        &[
            ("MMIO_TRACE_PATCH_CHURN", "2000"),
            ("PATCH_CHURN_SYNC", "100"),
        ],
        &args,
    );
    assert_hammered(&trap, &f, nt, n);
    assert_hammered(&pat, &f, nt, n);
    assert_same_runs(&nat, &trap, &pat, 0);
    let seen = stderr(&pat.out)
        .lines()
        .find(|l| l.starts_with("patch_threads: "))
        .map(str::to_string);
    eprintln!("{name}: {}", seen.unwrap_or_default());
    let s = assert_patched(&pat);
    assert_counts_every_access(&pat, s);
}

#[test]
fn two_threads_hammering_churned_sites_lose_nothing() {
    hammer_while_churning("churn2", 2, 20000);
}

#[test]
fn four_threads_hammering_churned_sites_lose_nothing() {
    hammer_while_churning("churn4", 4, 10000);
}

/// Threads created after the sites were patched use the trampolines from their first
/// access (their rings are made on the way).
#[test]
fn threads_created_after_patching_are_traced() {
    let f = Fixture::new("late", "patch_threads", 65536);
    let args = ["3", "3000", "late"];
    let nat = native(&f, &[], &args);
    let trap = record(&f, Mode::Trap, &[], &args);
    let pat = record(&f, Mode::Patch(4), &[("PATCH_WAIT", "1")], &args);
    assert_hammered(&trap, &f, 3, 3000);
    assert_hammered(&pat, &f, 3, 3000);
    assert_same_runs(&nat, &trap, &pat, 0);
    let err = stderr(&pat.out);
    let s = assert_patched(&pat);
    assert!(
        !err.contains("sites not rewritten"),
        "the sites were not patched before the threads started: {err}"
    );
    assert_counts_every_access(&pat, s);
    // The threads' accesses through the sites rewritten before they started all went
    // through trampolines (a thread's first iteration may trap: it has no ring yet).
    let n = sites_rewritten(&pat);
    assert!(n > 0, "{err}");
    assert!(
        s.trampolines >= 3 * (3000 - 1) * n,
        "{s:?} with {n} sites rewritten"
    );
}

/// How many of its five sites patch_threads (late, PATCH_WAIT) saw rewritten.
fn sites_rewritten(r: &Run) -> u64 {
    let err = stderr(&r.out);
    err.lines()
        .find_map(|l| l.strip_prefix("patch_threads: "))
        .and_then(|l| l.strip_suffix(" of 5 sites rewritten"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{:?}: no count of sites rewritten: {err}", r.mode))
}

/// Five short sites back to back (2, 3, 2, 3 and 4 bytes), each one's punned jump taking
/// bytes of the next as its displacement: all five are patched, whatever order they get
/// hot in (a pun over a site to patch is redone), and none is listed as not patched.
#[test]
fn adjacent_short_sites_are_all_patched() {
    let f = Fixture::new("adjacent", "patch_threads", 65536);
    let pat = record(
        &f,
        Mode::Patch(4),
        &[("PATCH_WAIT", "1")],
        &["1", "100", "late"],
    );
    assert_exit(&pat.out, 0);
    assert_hammered(&pat, &f, 1, 100);
    let err = stderr(&pat.out);
    assert_eq!(sites_rewritten(&pat), 5, "{err}");
    assert_eq!(assert_patched(&pat).sites, 5, "{err}");
    assert!(hot_sites(&err).is_empty(), "{err}");
}

/// What tests/programs/patch_signal.c said on stderr: (iterations, handler runs) of the
/// loop of each thread, by thread number (0: the main thread's loop).
fn signal_counts(r: &Run) -> BTreeMap<u64, (u64, u64)> {
    let err = stderr(&r.out);
    let counts: BTreeMap<u64, (u64, u64)> = err
        .lines()
        .filter_map(|l| l.strip_prefix("patch_signal: thread "))
        .map(|l| {
            let n: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .map(|w| w.parse().unwrap())
                .collect();
            (n[0], (n[1], n[2]))
        })
        .collect();
    assert!(!counts.is_empty(), "{:?}: no counts: {err}", r.mode);
    counts
}

/// Checks every access of each loop of a patch_signal run in its thread's order: the
/// loop's W REG0 = 0, 1, 2... each followed (maybe after handler runs) by its R REG0 of
/// the same value; each handler run a read of REG0 that sees the latest write before it
/// in the stream and a write of 0x80000000 | that to REG1, nested between the loop's
/// accesses, through the loop's own two sites. Returns each loop's own accesses, by
/// thread number.
#[track_caller]
fn assert_signal_nesting(r: &Run) -> BTreeMap<u64, Vec<Acc>> {
    let counts = signal_counts(r);
    let by = accesses_by_first_offset(&r.events);
    let keys: Vec<u64> = counts.keys().map(|t| 0x80 * t).collect();
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        keys,
        "{:?}: one thread per loop",
        r.mode
    );
    let mut loops = BTreeMap::new();
    for (&t, &(iterations, handled)) in &counts {
        let (reg0, reg1) = (0x80 * t, 0x80 * t + 0x40);
        let acc = &by[&reg0];
        let mut cur = u64::from(initial_word(reg0));
        let (mut next, mut pairs, mut read_due) = (0u64, 0u64, false);
        let mut main = Vec::new();
        let mut sites = std::collections::BTreeSet::new();
        let mut k = 0;
        while k < acc.len() {
            let a = &acc[k];
            let ctx = || {
                let around = &acc[k.saturating_sub(3)..(k + 4).min(acc.len())];
                format!(
                    "{:?}: loop {t}: access {k} {a:x?} among {around:x?}",
                    r.mode
                )
            };
            match (a.0, a.1, a.2) {
                ('W', 4, o) if o == reg0 => {
                    assert!(!read_due && a.3 == next, "{}: want W {next:#x}", ctx());
                    cur = a.3;
                    next += 1;
                    read_due = true;
                    main.push(a.clone());
                }
                ('R', 4, o) if o == reg0 => {
                    assert_eq!(a.3, cur, "{}: a read of REG0 sees the latest write", ctx());
                    match acc.get(k + 1) {
                        Some(w) if (w.0, w.1, w.2) == ('W', 4, reg1) => {
                            assert_eq!(w.3, 0x8000_0000 | a.3, "{}: the handler's write", ctx());
                            sites.insert((a.4.clone(), w.4.clone()));
                            pairs += 1;
                            k += 1;
                        }
                        _ => {
                            assert!(read_due, "{}: a loop read without its write", ctx());
                            read_due = false;
                            main.push(a.clone());
                        }
                    }
                }
                _ => panic!("{}: unexpected access", ctx()),
            }
            k += 1;
        }
        assert!(
            !read_due,
            "{:?}: loop {t}: the last read is missing",
            r.mode
        );
        assert_eq!(next, iterations, "{:?}: loop {t}: every loop write", r.mode);
        assert_eq!(pairs, handled, "{:?}: loop {t}: every handler run", r.mode);
        // The handler ran the loop's own two sites (read, write).
        let own = (main[1].4.clone(), main[0].4.clone());
        assert!(
            sites.iter().all(|s| *s == own),
            "{:?}: loop {t}: handler sites {sites:?}, the loop's {own:?}",
            r.mode
        );
        loops.insert(t, main);
    }
    let handled: u64 = counts.values().map(|c| c.1).sum();
    assert!(handled > 0, "{:?}: no signal arrived", r.mode);
    loops
}

/// Records patch_signal with `args` trap-only and patched (K=1) and checks both runs'
/// nesting; the first `min` iterations of each loop must be the same in both.
fn signal_test(name: &str, args: &[&str], min: usize) {
    let f = Fixture::new(name, "patch_signal", 4096);
    let nat = native(&f, &[], args);
    let trap = record(&f, Mode::Trap, &[], args);
    let pat = record(&f, Mode::Patch(1), &[], args);
    for r in [&trap, &pat] {
        assert_exit(&r.out, 0);
        assert_eq!(stdout(&r.out), stdout(&nat.0), "{:?}", r.mode);
        assert_none_lost(&r.events);
    }
    let loops_trap = assert_signal_nesting(&trap);
    let loops_pat = assert_signal_nesting(&pat);
    for (t, l) in &loops_trap {
        // The loop's first iterations, their sites (PCs) included, are the same.
        assert_eq!(l[..2 * min], loops_pat[t][..2 * min], "loop {t}");
    }
    assert_silent_on_patching(&trap);
    assert_patched(&pat);
    for (t, (n, _)) in signal_counts(&pat) {
        let dev = std::fs::read(f.dir.join("dev-patch1.bin")).unwrap();
        let at = 0x80 * t as usize;
        assert_eq!(dev[at..at + 4], ((n - 1) as u32).to_le_bytes(), "loop {t}");
    }
}

/// A SIGALRM handler (every 100 us) reads and writes the device through the same sites
/// as the loop it interrupts, so that once they are patched it runs inside trampolines'
/// windows: every event present, each handler's pair nested where it ran.
#[test]
fn a_signal_handler_touching_the_device_nests_in_place() {
    signal_test("signal", &["20000", "300"], 20000);
}

/// The same with two threads in the loop, each with its own 100 us timer signal: each
/// handler run nests in the interrupted thread's stream.
#[test]
fn signal_handlers_nest_in_place_in_every_thread() {
    signal_test("signal2", &["5000", "400", "2"], 5000);
}

/// The same with SIGPROF, a process-directed signal the kernel sends at its ticks to
/// whichever thread runs.
#[test]
fn profiling_signals_nest_in_place_in_every_thread() {
    signal_test("signal-prof", &["5000", "50", "2", "prof"], 5000);
}

/// The accesses (R/W, width, offset, value) of each thread, keyed by thread id.
fn thread_accesses(r: &Run) -> BTreeMap<u32, Vec<(char, u8, u64, u64)>> {
    let mut by: BTreeMap<u32, Vec<(char, u8, u64, u64)>> = BTreeMap::new();
    for (pid, d, w, off, v) in accesses_by_pid(&r.events) {
        by.entry(pid).or_default().push((d, w, off, v));
    }
    by
}

/// A 4-byte write of `v` at `off` and its read back, `n` times with `v` counting up.
fn puts(off: impl Fn(u64) -> u64, v0: u64, n: u64) -> Vec<(char, u8, u64, u64)> {
    (0..n)
        .flat_map(|i| [('W', 4, off(i), v0 + i), ('R', 4, off(i), v0 + i)])
        .collect()
}

/// Records tests/programs/patch_life.c in `mode` natively, trap-only and patched (K=4,
/// the program waiting for its sites to be rewritten after warming them); asserts what
/// every mode shares. Returns the trap-only and the patched run.
fn life(mode: &str) -> (Fixture, Run, Run) {
    let f = Fixture::new(&format!("life-{mode}"), "patch_life", 65536);
    let nat = native(&f, &[], &[mode]);
    let trap = record(&f, Mode::Trap, &[], &[mode]);
    let pat = record(&f, Mode::Patch(4), &[("PATCH_WAIT", "1")], &[mode]);
    assert!(
        stdout(&nat.0).contains(&format!("{mode}: 0 wrong")),
        "natively: {}",
        stdout(&nat.0)
    );
    assert_same_runs(&nat, &trap, &pat, 0);
    assert_patched(&pat);
    let err = stderr(&pat.out);
    assert!(
        !err.contains("sites not rewritten"),
        "the sites were not patched after warming: {err}"
    );
    (f, trap, pat)
}

/// The child's pid that patch_life's fork mode named on stderr.
fn child_pid(r: &Run) -> u32 {
    stderr(&r.out)
        .lines()
        .find_map(|l| l.strip_prefix("patch_life: child "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{:?}: no child pid: {}", r.mode, stderr(&r.out)))
}

/// Fork after patching: the child runs the patched sites at once with its parent, and its
/// events are its own (its pid), every one present, the parent's too.
#[test]
fn fork_after_patching_traces_child_and_parent() {
    let (_f, trap, pat) = life("fork");
    for r in [&trap, &pat] {
        let child = child_pid(r);
        let by = thread_accesses(r);
        assert_eq!(by.len(), 2, "{:?}: parent and child", r.mode);
        assert_eq!(
            by.get(&child),
            Some(&puts(|_| 0x10, 0x10000, 1000)),
            "{:?}: the child's accesses, under its pid {child}",
            r.mode
        );
        let parent = by.keys().find(|&&p| p != child).unwrap();
        let mut want = puts(|_| 0, 0x1000, 16);
        want.extend(puts(|_| 0x20, 0x20000, 1000));
        assert_eq!(by[parent], want, "{:?}: the parent's accesses", r.mode);
    }
}

/// Exec after patching: the new image starts clean and is traced, under the same pid.
#[test]
fn exec_after_patching_traces_the_new_image() {
    let (_f, trap, pat) = life("exec");
    for r in [&trap, &pat] {
        let by = thread_accesses(r);
        let mut want = puts(|_| 0x30, 0x30000, 1000);
        want.extend(puts(|_| 0x38, 0x38000, 1000));
        assert_eq!(
            by.into_values().collect::<Vec<_>>(),
            [want],
            "{:?}: both images' accesses, one pid",
            r.mode
        );
        assert_eq!(count_maps(&r.events), 2, "{:?}", r.mode);
    }
}

/// munmap of a traced range while two threads run through the patched sites (they have
/// moved to another mapping), then a new mapping where it was: every access of each
/// thread with the right mapping's offset, none of the old mapping after its UNMAP.
#[test]
fn munmap_while_threads_run_through_patched_sites() {
    let (_f, trap, pat) = life("munmap");
    for r in [&trap, &pat] {
        let by = thread_accesses(r);
        assert_eq!(by.len(), 2, "{:?}: two threads made accesses", r.mode);
        for acc in by.values() {
            let t = acc[0].2 / 0x100;
            let off = |i: u64| match i {
                0..2000 => 0x100 * t,
                2000..6000 => 0x1000 + 0x100 * t,
                _ => 0x2000 + 0x100 * t,
            };
            assert_eq!(acc, &puts(off, t << 24, 8000), "{:?}: thread {t}", r.mode);
        }
        let a = r
            .events
            .iter()
            .find_map(|e| match e {
                Event::Map(m) if m.phys == 0 => Some(m.id),
                _ => None,
            })
            .expect("map A");
        let gone = r
            .events
            .iter()
            .position(|e| matches!(e, Event::Unmap(u) if u.id == a))
            .unwrap_or_else(|| panic!("{:?}: no UNMAP of map A", r.mode));
        let stale: Vec<&Event> = r.events[gone..]
            .iter()
            .filter(|e| matches!(e, Event::Access(x) if x.map_id == a))
            .collect();
        assert!(stale.is_empty(), "{:?}: after A's UNMAP: {stale:?}", r.mode);
    }
}

/// mremap of a patched site's range (moved and grown, then shrunk in place) and ordinary
/// memory mapped where it was, through the same sites: the device accesses logged at
/// their new offsets, the anonymous memory's never.
#[test]
fn mremap_after_patching_follows_the_mapping() {
    let (_f, trap, pat) = life("mremap");
    for r in [&trap, &pat] {
        let mut want = puts(|_| 0x10, 0x10, 16);
        want.extend(puts(|_| 0x1010, 0x1010, 16));
        want.extend(puts(|i| 0x10 + 0x1000 * (i % 4), 0x40000, 200));
        want.extend(puts(|_| 0x20, 0x60000, 100));
        let by = thread_accesses(r);
        assert_eq!(by.into_values().collect::<Vec<_>>(), [want], "{:?}", r.mode);
        if let Some(l) = stderr(&r.out)
            .lines()
            .find(|l| l.contains("old address is taken"))
        {
            eprintln!(
                "{:?}: not checked with memory at the old address: {l}",
                r.mode
            );
        }
    }
}

/// mprotect of a patched site's range: reads of a read-only range are logged; a write
/// to it, and a read of it once PROT_NONE, fault into the program's own handler (never
/// reaching the device, never logged); read-write again, writes are logged.
#[test]
fn mprotect_after_patching_keeps_the_programs_protection() {
    let (_f, trap, pat) = life("mprotect");
    assert!(stdout(&pat.out).contains("faults delivered: 2"));
    for r in [&trap, &pat] {
        let mut want = puts(|_| 0x10, 0x10, 32);
        want.extend((0..100).map(|_| ('R', 4, 0x10, 0x2f)));
        want.extend(puts(|_| 0x18, 0x70000, 100));
        let by = thread_accesses(r);
        assert_eq!(by.into_values().collect::<Vec<_>>(), [want], "{:?}", r.mode);
    }
}

/// Code in anonymous executable memory (read-write-execute like a JIT's, or made
/// read-execute after the copy) and in a shared mapping is never patched, however hot:
/// the same events as trap-only, and the summary names each of its hot sites, with a
/// reason and the traps it took.
#[test]
fn jit_and_shared_code_is_never_patched() {
    let f = Fixture::new("jit", "patch_jit", 4096);
    let nat = native(&f, &[], &[]);
    assert!(stdout(&nat.0).ends_with("0 wrong\n"), "{}", stdout(&nat.0));
    let trap = record(&f, Mode::Trap, &[], &[]);
    let pat = record(&f, Mode::Patch(4), &[], &[]);
    assert_same_runs(&nat, &trap, &pat, 0);
    let err = stderr(&pat.out);
    let s = summary(&err).unwrap_or_else(|| panic!("no patching summary: {err}"));
    assert_eq!(
        (s.sites, s.trampolines, s.traps),
        (0, 0, 1200),
        "nothing patched, every access trapped: {err}"
    );
    let hot = hot_sites(&err);
    let mut pcs: Vec<u64> = hot.iter().map(|h| h.pc).collect();
    pcs.sort_unstable();
    let want: Vec<u64> = (0..3u64)
        .flat_map(|k| {
            let at = 0x5a00_0000_0000 + 0x10000 * k;
            [at, at + 4]
        })
        .collect();
    assert_eq!(pcs, want, "one line per hot site: {err}");
    for h in &hot {
        assert!(
            !h.place.is_empty() && !h.reason.trim().is_empty() && h.traps == 200,
            "{h:?}"
        );
    }
}

/// A site that has not trapped `MMIO_TRACE_PATCH_AFTER` times is not patched: with a
/// threshold above what the program makes, every access traps, no site is listed, and
/// the events are those of `--no-patch`.
#[test]
fn a_site_below_the_threshold_is_not_patched() {
    let f = Fixture::new("threshold", "patch_threads", 65536);
    let args = ["2", "500"];
    let nat = native(&f, &[], &args);
    let trap = record(&f, Mode::Trap, &[], &args);
    let pat = record(&f, Mode::Patch(1_000_000), &[], &args);
    assert_hammered(&pat, &f, 2, 500);
    assert_same_runs(&nat, &trap, &pat, 0);
    let err = stderr(&pat.out);
    let s = summary(&err).unwrap_or_else(|| panic!("no patching summary: {err}"));
    let n = accesses(&pat.events).len() as u64;
    assert_eq!((s.sites, s.trampolines, s.traps), (0, 0, n), "{err}");
    assert!(hot_sites(&err).is_empty(), "{err}");
}

/// `--quiet` keeps the patching summary off stderr, as every other message of `record`.
#[test]
fn quiet_hides_the_patching_summary() {
    let f = Fixture::new("quiet", "patch_threads", 65536);
    let pat = record_opts(&f, Mode::Patch(4), &["-q"], &[], &["2", "500"]);
    assert_exit(&pat.out, 0);
    assert_hammered(&pat, &f, 2, 500);
    assert_eq!(stderr(&pat.out), "", "--quiet");
}
