//! Hot-site patching on the inject route (static programs, `--route inject`): trampolines
//! there find their thread's block by probing the block table (no TLS slot of the
//! tracer's in the program). tests/programs/k_hot.c runs six labelled access sites hot,
//! waits until it sees them rewritten, then runs them N more times; it prints the sites'
//! addresses, so every logged PC is compared as the site's name. Each test records the
//! static build on the inject route (patched, and with `--no-patch`), the dynamic build on
//! the preload route (the reference: built `-no-pie`, so that an exec'd copy has the same
//! addresses) and, where it adds something, the dynamic build under `--route inject`; all
//! must log the same accesses per thread (site, direction, width, address, value, in
//! order) and leave the same device contents. The patched inject runs must also say that
//! the sites were patched and how many accesses went through trampolines.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::{Direction, Event};

/// Calls of the hot function after the sites are patched (per thread).
const N: u64 = 2000;
/// Accesses per call (the `add` is a read and a write).
const PER_CALL: u64 = 7;
/// How long the program waits for its sites to be rewritten (ms): generous, a loaded
/// machine's patcher may be slow; the wait ends as soon as all six are.
const WAIT_MS: &str = "60000";

/// Compiles tests/programs/k_hot.c into DIR/OUT, static or dynamic (non-PIE).
#[track_caller]
fn cc(dir: &Path, out: &str, static_: bool) -> PathBuf {
    let exe = dir.join(out);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs/k_hot.c");
    let mut c = Command::new("cc");
    c.args(["-O1", "-pthread"]);
    c.arg(if static_ { "-static" } else { "-no-pie" });
    let st = c
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the end-to-end tests");
    assert!(st.success(), "cc k_hot.c (static {static_})");
    exe
}

/// The two builds and a device, in a scratch directory.
struct Prog {
    dir: PathBuf,
    dynamic: PathBuf,
    static_: PathBuf,
    dev: PathBuf,
}

impl Prog {
    fn new(name: &str) -> Prog {
        let dir = scratch(name);
        let dynamic = cc(&dir, "k_hot_dyn", false);
        let static_ = cc(&dir, "k_hot_stat", true);
        let dev = device(&dir, 4096);
        Prog {
            dir,
            dynamic,
            static_,
            dev,
        }
    }
}

/// How one run is recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// The dynamic build, the automatic route (preload), patched: the reference.
    Preload,
    /// The static build, the automatic route (inject), patched.
    Static,
    /// The static build, the automatic route (inject), `--no-patch`.
    StaticNoPatch,
    /// The dynamic build under `--route inject`, patched.
    InjectDynamic,
}

/// One recording.
struct Run {
    way: Way,
    out: Output,
    events: Vec<Event>,
    /// Site address → name, from the program's output.
    sites: HashMap<u64, String>,
    dev: Vec<u8>,
}

/// Records k_hot `DEV N ARGS...` the given way on a fresh copy of the device (without
/// `-q`: the patching summary is wanted).
fn record(p: &Prog, way: Way, args: &[&str]) -> Run {
    let tag = format!("{way:?}").to_lowercase();
    let dev = p.dir.join(format!("dev-{tag}.bin"));
    std::fs::copy(&p.dev, &dev).unwrap();
    let log = p.dir.join(format!("trace-{tag}.log"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    c.arg("record")
        .arg("-o")
        .arg(&log)
        .arg("--device")
        .arg(&dev);
    let exe = match way {
        Way::Preload => &p.dynamic,
        Way::Static | Way::StaticNoPatch => &p.static_,
        Way::InjectDynamic => {
            c.args(["--route", "inject"]);
            &p.dynamic
        }
    };
    if way == Way::StaticNoPatch {
        c.arg("--no-patch");
        // No wait: nothing will be rewritten.
        c.env("K_WAIT_MS", "0");
    } else {
        c.env("K_WAIT_MS", WAIT_MS);
    }
    c.env("MMIO_TRACE_PATCH_AFTER", "4");
    let n = N.to_string();
    c.arg("--").arg(exe).arg(&dev).arg(&n).args(args);
    let out = output_within(c, way);
    assert!(
        log.exists(),
        "{way:?}: no trace written; stderr {}",
        stderr(&out)
    );
    let events = read_log(&log);
    let mut sites = HashMap::new();
    for l in stdout(&out).lines() {
        // site NAME 0xADDR
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 3 && w[0] == "site" {
            let a = u64::from_str_radix(w[2].trim_start_matches("0x"), 16).unwrap();
            if let Some(old) = sites.insert(a, w[1].to_string()) {
                assert_eq!(old, w[1], "{way:?}: two names for {a:#x}");
            }
        }
    }
    assert_eq!(
        sites.len(),
        6,
        "{way:?}: site addresses; stdout {}",
        stdout(&out)
    );
    Run {
        way,
        out,
        events,
        sites,
        dev: std::fs::read(&dev).unwrap(),
    }
}

/// Runs the recorder, at most [`LIMIT`]: a hang (a ring corrupted by two writers) must
/// fail the test, not stall it.
fn output_within(mut c: Command, way: Way) -> Output {
    use std::io::Read;
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drained meanwhile, so that a full pipe never stalls the recorder.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{way:?}: the recording did not end within {LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// How long one recording may take (a few seconds when all is well).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

/// One access as the comparison sees it.
type Acc = (String, char, u8, u64, u64);

/// Every thread's accesses in its order, the threads ordered by their first access (each
/// thread owns its own block of registers), with each PC named by its site.
fn streams(r: &Run) -> Vec<Vec<Acc>> {
    let mut by: BTreeMap<u32, Vec<Acc>> = BTreeMap::new();
    for e in &r.events {
        match e {
            Event::Access(a) => {
                let site = r
                    .sites
                    .get(&a.pc)
                    .cloned()
                    .unwrap_or_else(|| format!("pc {:#x}", a.pc));
                let d = if a.dir == Direction::Read { 'R' } else { 'W' };
                by.entry(a.pid)
                    .or_default()
                    .push((site, d, a.width, a.phys, a.value));
            }
            Event::Unknown(u) => panic!("{:?}: an UNKNOWN event: {u:?}", r.way),
            _ => {}
        }
    }
    let mut v: Vec<Vec<Acc>> = by.into_values().collect();
    v.sort_by_key(|s| s[0].3);
    v
}

/// The accesses thread `t` makes in calls `from..to` of k_hot's hot function, in order.
fn expected(t: u64, from: u64, to: u64, dev0: &[u8]) -> Vec<Acc> {
    let base = 0x100 * t;
    let word = |off: u64| {
        let o = (base + off) as usize;
        u64::from(u32::from_le_bytes(dev0[o..o + 4].try_into().unwrap()))
    };
    let r16 = word(0x20) >> 16;
    let mut v = Vec::new();
    for i in from..to {
        let w = t << 16 | i;
        let add = word(0x30).wrapping_add(3 * (i - from)) & 0xffff_ffff;
        v.push(("w32".into(), 'W', 4, base + 0x10, w));
        v.push(("r32".into(), 'R', 4, base + 0x10, w));
        v.push(("w8".into(), 'W', 1, base + 0x20, 0x5a));
        v.push(("r16".into(), 'R', 2, base + 0x22, r16));
        v.push(("w64".into(), 'W', 8, base + 0x28, t << 32 | i));
        v.push(("add".into(), 'R', 4, base + 0x30, add));
        v.push(("add".into(), 'W', 4, base + 0x30, (add + 3) & 0xffff_ffff));
    }
    v
}

/// `mmio-trace: patching: S sites patched, A accesses through trampolines, T through traps`
fn patching(out: &Output) -> Option<(u64, u64, u64)> {
    let e = stderr(out);
    let l = e
        .lines()
        .find(|l| l.starts_with("mmio-trace: patching: "))?;
    let n: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 3, "summary line: {l}");
    Some((n[0], n[1], n[2]))
}

/// How many of the six sites the program saw rewritten (each image says it once).
fn rewritten(out: &Output) -> Vec<u32> {
    stderr(out)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("rewritten ")?
                .strip_suffix(" of 6")?
                .parse()
                .ok()
        })
        .collect()
}

/// The runs' exit, program output, per-thread accesses (against `want`) and device.
#[track_caller]
fn assert_same(runs: &[&Run], want: &[Vec<Acc>]) {
    for r in runs {
        assert_exit(&r.out, 0);
        assert!(
            stdout(&r.out)
                .lines()
                .filter(|l| l.starts_with("bad "))
                .all(|l| l == "bad 0"),
            "{:?}: wrong values read; stdout {}",
            r.way,
            stdout(&r.out)
        );
        let got = streams(r);
        assert_eq!(got.len(), want.len(), "{:?}: threads logged", r.way);
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            if g != w {
                let at = g.iter().zip(w).position(|(a, b)| a != b);
                panic!(
                    "{:?}: thread {k}: {} accesses, {} wanted; first difference at {at:?}: {:?} vs {:?}",
                    r.way,
                    g.len(),
                    w.len(),
                    at.map(|i| &g[i]),
                    at.map(|i| &w[i])
                );
            }
        }
        assert_eq!(r.dev, runs[0].dev, "{:?}: device contents", r.way);
    }
}

/// A patched run: every site patched, at least `min` accesses through trampolines.
#[track_caller]
fn assert_patched(r: &Run, sites: u64, images: usize, min: u64) {
    assert_eq!(
        rewritten(&r.out),
        vec![6; images],
        "{:?}: sites seen rewritten; stderr {}",
        r.way,
        stderr(&r.out)
    );
    let (s, t, _) = patching(&r.out).unwrap_or_else(|| {
        panic!(
            "{:?}: no patching summary; stderr {}",
            r.way,
            stderr(&r.out)
        )
    });
    assert_eq!(
        s,
        sites,
        "{:?}: sites patched; stderr {}",
        r.way,
        stderr(&r.out)
    );
    assert!(
        t >= min,
        "{:?}: {t} accesses through trampolines, at least {min} wanted; stderr {}",
        r.way,
        stderr(&r.out)
    );
}

#[track_caller]
fn assert_inject(r: &Run, why: &str) {
    assert_eq!(
        route_marks(&r.events),
        [format!("mmio-trace: route inject ({why})")],
        "{:?}",
        r.way
    );
}

const WARM: u64 = 40;

#[test]
fn a_static_hot_loop_goes_through_trampolines_and_logs_what_the_preload_route_logs() {
    let p = Prog::new("loop");
    let dev0 = std::fs::read(&p.dev).unwrap();
    let want = vec![expected(0, 0, WARM + N, &dev0)];
    let reference = record(&p, Way::Preload, &["loop"]);
    let stat = record(&p, Way::Static, &["loop"]);
    let forced = record(&p, Way::InjectDynamic, &["loop"]);
    assert_same(&[&reference, &stat, &forced], &want);
    assert_inject(&stat, "static executable");
    assert_inject(&forced, "forced by --route");
    // After the sites are seen rewritten, every access goes through a trampoline.
    for r in [&reference, &stat, &forced] {
        assert_patched(r, 6, 1, PER_CALL * N);
    }
}

#[test]
fn no_patch_on_the_inject_route_leaves_the_text_alone_and_traps() {
    let p = Prog::new("nopatch");
    let dev0 = std::fs::read(&p.dev).unwrap();
    let want = vec![expected(0, 0, WARM + N, &dev0)];
    let reference = record(&p, Way::Preload, &["loop"]);
    let stat = record(&p, Way::StaticNoPatch, &["loop"]);
    assert_same(&[&reference, &stat], &want);
    assert_inject(&stat, "static executable");
    assert_eq!(rewritten(&stat.out), [0], "stderr {}", stderr(&stat.out));
    assert_eq!(patching(&stat.out), None, "stderr {}", stderr(&stat.out));
    assert!(
        !stderr(&stat.out).contains("patch"),
        "stderr {}",
        stderr(&stat.out)
    );
}

#[test]
fn threads_each_hot_on_their_own_register_all_go_through_trampolines() {
    let p = Prog::new("threads");
    let dev0 = std::fs::read(&p.dev).unwrap();
    let want: Vec<Vec<Acc>> = (0..5).map(|t| expected(t, 0, WARM + N, &dev0)).collect();
    let reference = record(&p, Way::Preload, &["threads", "4"]);
    let stat = record(&p, Way::Static, &["threads", "4"]);
    let nopatch = record(&p, Way::StaticNoPatch, &["threads", "4"]);
    assert_same(&[&reference, &stat, &nopatch], &want);
    assert_inject(&stat, "static executable");
    // The main thread and the four pthreads (each found in the table, its stack learnt
    // at its first trap).
    assert_patched(&stat, 6, 1, 5 * PER_CALL * N);
    assert_patched(&reference, 6, 1, 5 * PER_CALL * N);
}

#[test]
fn raw_clones_with_a_foreign_or_a_shared_fs_base_stay_exact() {
    // t1: FS base at the top of its own stack mapping (as a libc thread); t2: FS base in
    // the program's data (Go-like); t3: no CLONE_SETTLS, the main thread's FS base. All
    // hot on the patched sites at once with the main thread.
    let p = Prog::new("clone");
    let dev0 = std::fs::read(&p.dev).unwrap();
    let want: Vec<Vec<Acc>> = (0..4).map(|t| expected(t, 0, WARM + N, &dev0)).collect();
    let reference = record(&p, Way::Preload, &["clone"]);
    let stat = record(&p, Way::Static, &["clone"]);
    let nopatch = record(&p, Way::StaticNoPatch, &["clone"]);
    assert_same(&[&reference, &stat, &nopatch], &want);
    // The main thread and t1 through trampolines; t2 has no stack bounds that prove its
    // block its own, and t3's block shares the main thread's key: both stay on the trap
    // path (a trampoline serving t3 with the main thread's block would have logged t3's
    // accesses under the main thread's id, which `assert_same` rules out).
    assert_patched(&stat, 6, 1, 2 * PER_CALL * N);
    let (_, tramp, traps) = patching(&stat.out).unwrap();
    assert!(
        tramp <= 2 * PER_CALL * (N + WARM) && traps >= 2 * PER_CALL * N,
        "{tramp} through trampolines, {traps} through traps"
    );
}

#[test]
fn a_fork_child_on_patched_text_and_its_exec_stay_exact() {
    // The parent patches its sites; its fork child (a fork no hook of the tracer saw on
    // the inject route) runs them without having trapped, then execs the program again
    // (a fresh image, patched anew); the parent runs them once more.
    fork_case("fork");
}

#[test]
fn a_raw_fork_child_on_patched_text_stays_exact_on_both_routes() {
    // As above with `syscall(SYS_fork)`, which the preload library's hooks do not see
    // either: its trampolines, too, must not write into the parent's ring.
    fork_case("rawfork");
}

fn fork_case(mode: &str) {
    let p = Prog::new(mode);
    let dev0 = std::fs::read(&p.dev).unwrap();
    let mut parent = expected(0, 0, WARM + N, &dev0);
    let mut child = expected(1, 0, N, &dev0);
    // The exec'd image runs as t = 0 on what the parent left at 0x00..0x40, before the
    // parent's last calls.
    let mut after = dev0.clone();
    let last = parent.last().unwrap().4 as u32;
    after[0x30..0x34].copy_from_slice(&last.to_le_bytes());
    child.extend(expected(0, 0, WARM + N, &after));
    let mut later = after.clone();
    let last = child.last().unwrap().4 as u32;
    later[0x30..0x34].copy_from_slice(&last.to_le_bytes());
    parent.extend(expected(0, WARM + N, WARM + 2 * N, &later));
    let want = vec![parent, child];
    let reference = record(&p, Way::Preload, &[mode]);
    let stat = record(&p, Way::Static, &[mode]);
    assert_same(&[&reference, &stat], &want);
    assert_inject(&stat, "static executable");
    // Six sites in each image; the child's first access traps (it finds itself a fork
    // child), every later one of the four hot parts goes through a trampoline.
    assert_patched(&stat, 12, 2, 4 * PER_CALL * N - PER_CALL);
    assert_patched(&reference, 12, 2, 4 * PER_CALL * N - PER_CALL);
}

/// (PC, direction, width, address, value) of a Go access.
type GoAcc = (u64, char, u8, u64, u64);

#[test]
fn a_go_program_hot_on_its_registers_is_patched_and_stays_exact() {
    // tests/programs/k_go: four goroutines locked to their threads and the (unlocked) main
    // goroutine, each hot on its own register with a store and a load (6-byte sites).
    // Go moves the main goroutine between threads: accesses are compared per register,
    // in log order (each register's are one goroutine's, in program order).
    let dir = scratch("go");
    let exe = go_build(&dir, "k_go");
    let dev = device(&dir, 4096);
    let n: u64 = 20000;
    let run = |tag: &str, opts: &[&str]| {
        let d = dir.join(format!("dev-{tag}.bin"));
        std::fs::copy(&dev, &d).unwrap();
        let log = dir.join(format!("trace-{tag}.log"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
        c.arg("record")
            .arg("-o")
            .arg(&log)
            .arg("--device")
            .arg(&d)
            .args(opts)
            .env("MMIO_TRACE_PATCH_AFTER", "4")
            .arg("--")
            .arg(&exe)
            .arg(&d)
            .arg(n.to_string());
        let out = output_within(c, Way::Static);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), "bad 0\n", "{tag}: stderr {}", stderr(&out));
        let ev = read_log(&log);
        assert_eq!(route_marks(&ev), ["mmio-trace: route inject (Go program)"]);
        let mut by: BTreeMap<u64, Vec<GoAcc>> = BTreeMap::new();
        for e in &ev {
            if let Event::Access(a) = e {
                let d = if a.dir == Direction::Read { 'R' } else { 'W' };
                by.entry(a.phys >> 8)
                    .or_default()
                    .push((a.pc, d, a.width, a.phys, a.value));
            }
        }
        (out, by, std::fs::read(&d).unwrap())
    };
    let (pout, patched, pdev) = run("patch", &[]);
    let (tout, trapped, tdev) = run("trap", &["--no-patch"]);
    assert_eq!(patched.len(), 5, "registers");
    for (t, s) in &trapped {
        assert_eq!(s.len() as u64, 2 * n, "register block {t}");
        for (k, a) in s.iter().enumerate() {
            let v = (*t << 16) | (k as u64 / 2);
            assert_eq!(
                (a.1, a.2, a.3, a.4),
                (if k % 2 == 0 { 'W' } else { 'R' }, 4, 0x100 * t + 0x90, v)
            );
        }
    }
    assert!(
        patched == trapped,
        "the patched run logged other accesses than the trap-only one"
    );
    assert_eq!(pdev, tdev);
    assert_eq!(patching(&tout), None);
    let (sites, tramp, _) =
        patching(&pout).unwrap_or_else(|| panic!("no patching summary; stderr {}", stderr(&pout)));
    assert_eq!(sites, 2, "stderr {}", stderr(&pout));
    // Threads whose stack shares the heap mapping with their `m` (Go's other threads)
    // are served by trampolines; the main thread's `m` is in the binary's data.
    assert!(tramp > 0, "stderr {}", stderr(&pout));
}

#[test]
fn record_pid_on_the_inject_route_never_patches() {
    // A running static program hot on its sites, attached to with `--route inject` (the
    // core is removed at detach: patched text would then jump into unmapped memory), with
    // a threshold that would patch at once. Nothing is rewritten; the program finishes.
    let p = Prog::new("attach");
    let _ = std::fs::remove_file(p.dir.join("ready"));
    let _ = std::fs::remove_file(p.dir.join("stop"));
    let n = N.to_string();
    let mut target = Command::new(&p.static_)
        .arg(&p.dev)
        .arg(&n)
        .arg("attach")
        .arg(&p.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !p.dir.join("ready").exists() {
        if let Some(st) = target.try_wait().unwrap() {
            panic!("the target ended before it was ready: {st:?}");
        }
        assert!(t0.elapsed() < LIMIT, "target never ready");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let log = p.dir.join("trace-attach.log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    c.arg("record")
        .arg("--pid")
        .arg(target.id().to_string())
        .args(["--route", "inject", "--duration", "1", "-o"])
        .arg(&log)
        .arg("--device")
        .arg(&p.dev)
        .env("MMIO_TRACE_PATCH_AFTER", "1");
    let out = output_within(c, Way::Static);
    std::fs::write(p.dir.join("stop"), b"").unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while target.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = target.kill();
            panic!("the target did not finish after the detach");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let done = target.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_exit(&done, 0);
    assert!(
        !stderr(&out).contains("patch"),
        "recorder: {}",
        stderr(&out)
    );
    assert_eq!(rewritten(&done), [0], "target: {}", stderr(&done));
    // It was traced meanwhile: whole calls of the hot function, from the main thread's
    // register block.
    let ev = read_log(&log);
    let acc: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a.phys),
            _ => None,
        })
        .collect();
    assert!(
        acc.len() as u64 >= PER_CALL,
        "{} accesses traced",
        acc.len()
    );
    assert!(acc.iter().all(|&a| (0x10..0x34).contains(&a)), "{acc:x?}");
}
