//! `mmio-trace replay` through the built binary: a driver (tests/programs/replay_drv.c)
//! recorded against a device simulated by another process (replay_sim.c), then run
//! against its trace with no simulator; the QEMU edu driver's traces (recorded inside the
//! VM by scripts/vm-test) replayed here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// A recording of replay_drv against replay_sim.
struct Recorded {
    dir: PathBuf,
    drv: PathBuf,
    dev: PathBuf,
    trace: PathBuf,
    /// The driver's standard output when recorded.
    out: String,
}

/// Records `replay_drv DEV MODE` (with `env`) while replay_sim simulates the device.
fn recorded(name: &str, mode: &str, env: &[(&str, &str)]) -> Recorded {
    let dir = scratch(name);
    let sim = build(&dir, "replay_sim");
    let drv = build(&dir, "replay_drv");
    let dev = dir.join("dev.regs");
    std::fs::write(&dev, vec![0u8; 4096]).unwrap();
    let ready = dir.join("ready");
    let mut s = Command::new(&sim).arg(&dev).arg(&ready).spawn().unwrap();
    wait_for_file(&mut s, &ready);
    let mut c = record_cmd(&dir, &dev, &[]);
    c.arg(&drv).arg(&dev).arg(mode);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    // The driver's last write (CTRL = 0xff) ends the simulator.
    let st = s.wait().unwrap();
    assert!(st.success(), "simulator: {st:?}; {}", stderr(&out));
    let trace = dir.join("recorded.log");
    std::fs::rename(trace_log(&dir), &trace).unwrap();
    Recorded {
        out: stdout(&out),
        dir,
        drv,
        dev,
        trace,
    }
}

impl Recorded {
    /// `mmio-trace replay TRACE -o DIR/replay.log --device DEV OPTS -- replay_drv DEV MODE`.
    fn replay(&self, opts: &[&str], mode: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
        c.arg("replay")
            .arg(&self.trace)
            .arg("-q")
            .arg("-o")
            .arg(self.dir.join("replay.log"))
            .arg("--device")
            .arg(&self.dev)
            .args(opts)
            .arg("--")
            .arg(&self.drv)
            .arg(&self.dev)
            .arg(mode);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn replayed(&self) -> Vec<mmio_trace_format::Event> {
        read_log(&self.dir.join("replay.log"))
    }
}

const DB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../registers/replay-sim.toml"
);

/// (R/W, width, offset, value) of the accesses, offsets within their map.
fn shapes(events: &[mmio_trace_format::Event]) -> Vec<(char, u8, u64, u64)> {
    accesses(events)
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

fn json_of(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_driver_replayed_without_its_simulator_answers_the_same_and_exits_0() {
    let r = recorded("same", "single", &[]);
    assert_eq!(
        r.out,
        "id 0x594c5052 version 1.3\njob 1: 101\njob 2: 401\njob 3: 901\ndone\n"
    );
    let before = std::fs::read(&r.dev).unwrap();
    let json = r.dir.join("report.json");
    let out = r.replay(&["--json", json.to_str().unwrap()], "single", &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    // The replayed run's trace holds the recorded conversation, access for access.
    let rec = read_log(&r.trace);
    let rep = r.replayed();
    assert_eq!(shapes(&rep), shapes(&rec));
    assert!(mark_texts(&rep)
        .iter()
        .any(|m| m == "replay: map 1 is served by the trace's map #1"));
    // The device file was never written: the writes went to a stand-in.
    assert_eq!(std::fs::read(&r.dev).unwrap(), before);
    let j = json_of(&json);
    assert_eq!(j["result"], "match");
    assert_eq!(j["exit"], 0);
    assert_eq!(j["program"]["code"], 0);
    assert_eq!(j["divergences"], 0);
    assert!(j["first"].is_null());
    let n = shapes(&rec).len() as u64;
    assert_eq!(j["maps"][0]["threads"][0]["matched"], n);
    assert_eq!(j["maps"][0]["threads"][0]["recorded"], n);
}

#[test]
fn a_missing_device_file_or_one_of_zeros_stands_in() {
    let r = recorded("missing", "single", &[]);
    std::fs::remove_file(&r.dev).unwrap();
    let out = r.replay(&[], "single", &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    assert!(!r.dev.exists(), "replay made the device file");
    std::fs::write(&r.dev, vec![0u8; 4096]).unwrap();
    let out = r.replay(&[], "single", &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    assert_eq!(std::fs::read(&r.dev).unwrap(), vec![0u8; 4096]);
}

#[test]
fn one_different_written_value_diverges_with_exit_1_naming_register_and_values() {
    let r = recorded("delta", "single", &[]);
    let json = r.dir.join("report.json");
    let out = r.replay(
        &["--db", DB, "--json", json.to_str().unwrap()],
        "single",
        &[("REPLAY_DELTA", "1")],
    );
    assert_exit(&out, 1);
    // Not stopped: the program was served to its end.
    assert_eq!(stdout(&out), r.out);
    let err = stderr(&out);
    assert!(err.contains("DIVERGED (1 divergence)"), "{err}");
    // The second job's ARG write, after however many polls the first job took.
    let pos = accesses(&read_log(&r.trace))
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 == 'W' && a.2 == 0x100)
        .nth(1)
        .unwrap()
        .0;
    assert!(
        err.contains(&format!("at its recorded access {}:", pos + 1)),
        "{err}"
    );
    assert!(
        err.contains("  got:      W4 +0x100 ARG0 = 0x00000015"),
        "{err}"
    );
    assert!(
        err.contains("  expected: W4 +0x100 ARG0 = 0x00000014"),
        "{err}"
    );
    // Context, folded: the first job's polling loop is one line.
    assert!(err.contains("  last matching accesses:\n"), "{err}");
    assert!(
        err.contains("    R4 +0x10c RESULT0 = 0x00000065\n    W4 +0x108 STATUS0 = 0x00000000\n  expected next:\n    W4 +0x100 ARG0 = 0x00000014\n    W4 +0x104 DOORBELL0 = 0x00000001\n"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("R4 +0x108 STATUS0 = 0x0000000")),
        "{err}"
    );
    let j = json_of(&json);
    assert_eq!(j["result"], "diverged");
    assert_eq!(j["exit"], 1);
    assert_eq!(j["first"]["kind"], "mismatch");
    assert_eq!(j["first"]["position"], pos);
    assert_eq!(j["first"]["got"]["offset"], "0x100");
    assert_eq!(j["first"]["got"]["value"], "0x15");
    assert_eq!(j["first"]["got"]["register"], "ARG0");
    assert_eq!(j["first"]["expected"]["value"], "0x14");
    assert_eq!(j["first"]["expected"]["dir"], "W");
    // The replayed trace marks the divergence right before the access it names.
    let rep = r.replayed();
    let marks = mark_texts(&rep);
    assert!(
        marks
            .iter()
            .any(|m| m.starts_with("replay: diverged: W4 map 1 +0x100 = 0x15 at pc 0x")),
        "{marks:?}"
    );
    // Without --db the report still names the register by its offset.
    let out = r.replay(&[], "single", &[("REPLAY_DELTA", "1")]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("  got:      W4 +0x100 = 0x00000015"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn strict_stops_the_program_at_its_first_divergence() {
    let r = recorded("strict", "single", &[]);
    let out = r.replay(&["--strict"], "single", &[("REPLAY_DELTA", "7")]);
    assert_exit(&out, 1);
    assert!(!stdout(&out).contains("done"), "{}", stdout(&out));
    assert!(stderr(&out).contains("--strict: the program diverged from the trace; stopped"));
    assert!(
        stderr(&out).contains("  got:      W4 +0x100 = 0x0000001b"),
        "{}",
        stderr(&out)
    );
    // Nothing after the divergence reached the (absent) device: the trace ends there.
    let rep = r.replayed();
    let last_access = accesses(&rep).last().copied();
    assert_eq!(last_access, Some(('W', 4, 0x108, 0)));
    // A matching run under --strict is not stopped.
    let out = r.replay(&["--strict"], "single", &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
}

#[test]
fn a_driver_polling_more_often_than_recorded_still_completes_and_matches() {
    let r = recorded("polls", "single", &[]);
    let json = r.dir.join("report.json");
    let out = r.replay(
        &["--json", json.to_str().unwrap()],
        "single",
        &[("REPLAY_EXTRA_POLLS", "4")],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    let j = json_of(&json);
    assert_eq!(j["tolerated_polls"], 12);
    // The extra reads got the register's last recorded value (DONE).
    let rep = r.replayed();
    let status: Vec<u64> = accesses(&rep)
        .iter()
        .filter(|a| a.0 == 'R' && a.2 == 0x108)
        .map(|a| a.3)
        .collect();
    assert!(status.ends_with(&[2, 2, 2, 2, 2]), "{status:?}");
}

#[test]
fn a_run_that_matched_but_failed_gives_the_programs_own_status() {
    // The device reported an error (ARG 0xdead) when recorded: the driver took its error
    // path (exit 3); replayed, it takes it again and the run matched.
    let r = recorded("fails", "single", &[("REPLAY_ARG", "0xdead")]);
    assert!(
        r.out
            .ends_with("channel 0: device error (status 0x4): error path\n"),
        "{}",
        r.out
    );
    let out = r.replay(&[], "single", &[("REPLAY_ARG", "0xdead")]);
    assert_exit(&out, 3);
    assert_eq!(stdout(&out), r.out);
}

#[test]
fn threads_and_forks_replay_with_their_own_sequences() {
    // Streams: the main thread and two workers; the parent and its child.
    for (mode, streams) in [("threads", 3), ("fork", 2)] {
        let r = recorded(&format!("procs-{mode}"), mode, &[]);
        let json = r.dir.join("report.json");
        let out = r.replay(&["--json", json.to_str().unwrap()], mode, &[]);
        assert_exit(&out, 0);
        assert_eq!(sorted_lines(&stdout(&out)), sorted_lines(&r.out), "{mode}");
        let j = json_of(&json);
        let threads = j["maps"][0]["threads"].as_array().unwrap();
        assert_eq!(threads.len(), streams, "{mode}: {j}");
        for t in threads {
            assert_eq!(t["matched"], t["recorded"], "{mode}: {j}");
        }
        // Each replayed thread's accesses are its recorded thread's.
        let rec = read_log(&r.trace);
        let rep = r.replayed();
        let per_thread = |ev: &[mmio_trace_format::Event]| {
            let mut by: std::collections::BTreeMap<u32, Vec<(char, u8, u64, u64)>> =
                Default::default();
            for (pid, d, w, o, v) in accesses_by_pid(ev) {
                by.entry(pid).or_default().push((d, w, o, v));
            }
            let mut v: Vec<_> = by.into_values().collect();
            v.sort();
            v
        };
        assert_eq!(per_thread(&rep), per_thread(&rec), "{mode}");
    }
}

#[test]
fn a_program_that_never_maps_the_device_diverged() {
    let r = recorded("never", "single", &[]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    let out = c
        .arg("replay")
        .arg(&r.trace)
        .arg("-q")
        .arg("-o")
        .arg(r.dir.join("replay.log"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("the program never mapped map 1 ("), "{err}");
    assert!(err.contains("  expected: R4 +0x0 = 0x594c5052"), "{err}");
}

#[test]
fn bad_usage_is_exit_2() {
    let dir = scratch("usage");
    let exe = env!("CARGO_BIN_EXE_mmio-trace");
    let out = Command::new(exe)
        .args(["replay", "--map", "1=/dev/x", "t.log", "--", "true"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("both map ids or both file paths"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(exe)
        .arg("replay")
        .arg(dir.join("absent.log"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let empty = dir.join("empty.log");
    std::fs::write(&empty, "VERSION 20070824\n").unwrap();
    let out = Command::new(exe)
        .arg("replay")
        .arg(&empty)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("no device mapping to replay"),
        "{}",
        stderr(&out)
    );
}

/// The QEMU edu device's traces, recorded inside the VM by scripts/vm-test, replayed
/// here: the driver maps a sysfs BAR this machine does not have.
fn edu(trace: &str, args: &[&str]) -> (Output, PathBuf) {
    let dir = scratch(&format!("edu-{trace}"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vm/edu_driver.c");
    let exe = dir.join("edu_driver");
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the end-to-end tests");
    assert!(st.success());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let log = dir.join("replay.log");
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(data.join(trace))
        .arg("-q")
        .arg("-o")
        .arg(&log)
        .arg("--")
        .arg(&exe)
        .arg("/sys/devices/pci0000:00/0000:00:03.0/resource0")
        .args(args)
        .output()
        .unwrap();
    (out, log)
}

#[test]
fn the_qemu_edu_driver_replays_outside_the_vm() {
    let (out, log) = edu("edu.mmiotrace", &[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "id 0x010000ed\nlive 0x12345678 0xedcba987\nfact 5 120\n"
    );
    let rep = read_log(&log);
    assert_eq!(
        accesses(&rep)
            .iter()
            .map(|a| (a.0, a.2 & 0xfff, a.3))
            .collect::<Vec<_>>(),
        [
            ('R', 0x0, 0x10000ed),
            ('W', 0x4, 0x12345678),
            ('R', 0x4, 0xedcba987),
            ('W', 0x8, 5),
            ('R', 0x20, 0),
            ('R', 0x8, 0x78),
        ]
    );
    // Moved by mremap half-way: still served.
    let (out, _) = edu("edu-mremap.mmiotrace", &["--mremap"]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "id 0x010000ed\nlive 0x12345678 0xedcba987\nmoved\nid 0x010000ed\nfact 5 120\n"
    );
    // Two threads taking turns under a lock, each answered from its own recording.
    let (out, _) = edu("edu-threads.mmiotrace", &["--threads"]);
    assert_exit(&out, 0);
    let want = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/edu-threads.expected"),
    )
    .unwrap();
    assert_eq!(sorted_lines(&stdout(&out)), sorted_lines(&want));
}

#[test]
fn every_fault_path_serves_the_model_and_checks_writes() {
    let r = recorded("paths", "single", &[]);
    let rec = accesses(&read_log(&r.trace));
    for path in ["emulate", "ool", "step"] {
        let out = r.replay(&[], "single", &[("MMIO_TRACE_PATH", path)]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), r.out, "{path}");
        assert_eq!(accesses(&r.replayed()), rec, "{path}");
        let out = r.replay(
            &[],
            "single",
            &[("MMIO_TRACE_PATH", path), ("REPLAY_DELTA", "2")],
        );
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("  got:      W4 +0x100 = 0x00000016"),
            "{path}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn export_writes_the_replay_model_as_documented_json() {
    let dir = scratch("export");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../registers/edu.toml");
    let out = dir.join("model.json");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["export", "--to", "replay-model"])
        .arg(data.join("edu-mremap.mmiotrace"))
        .arg("--db")
        .arg(&db)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let j = json_of(&out);
    assert_eq!(j["format"], "mmio-trace replay model");
    assert_eq!(j["version"], 1);
    // The mremap's continuation is the same map.
    let maps = j["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(m["trace_map"], 1);
    assert_eq!(m["file"], "/sys/devices/pci0000:00/0000:00:03.0/resource0");
    assert_eq!(m["file_offset"], 0);
    assert_eq!(m["phys"], "0xfea00000");
    assert_eq!(m["length"], "0x1000");
    let regs: Vec<(String, Value, Value, Value, bool, Value)> = m["registers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["offset"].as_str().unwrap().to_string(),
                r["name"].clone(),
                r["reads"].clone(),
                r["writes"].clone(),
                r["read_only"].as_bool().unwrap(),
                r["initial"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        regs,
        [
            (
                "0x0".into(),
                json!("ID"),
                json!(["0x10000ed", "0x10000ed"]),
                json!([]),
                true,
                json!("0x10000ed")
            ),
            (
                "0x4".into(),
                json!("LIVENESS"),
                json!(["0xedcba987"]),
                json!(["0x12345678"]),
                false,
                Value::Null
            ),
            (
                "0x8".into(),
                json!("FACTORIAL"),
                json!(["0x78"]),
                json!(["0x5"]),
                false,
                Value::Null
            ),
            (
                "0x20".into(),
                json!("STATUS"),
                json!(["0x0"]),
                json!([]),
                true,
                json!("0x0")
            ),
        ]
    );
    let t = &m["threads"][0];
    assert_eq!(t["trace_thread"], 134);
    assert_eq!(t["accesses"].as_array().unwrap().len(), 7);
    assert_eq!(
        t["accesses"][1],
        json!({"dir": "W", "width": 4, "offset": "0x4", "value": "0x12345678"})
    );
}

/// Writes an injection file into `dir`.
fn inject_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("inject.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn an_injected_error_bit_drives_the_driver_into_its_error_path() {
    let r = recorded("inject", "single", &[]);
    let inj = inject_file(&r.dir, "[[rule]]\noffset = 0x108\nset_bits = 4\n");
    let out = r.replay(&["--inject", inj.to_str().unwrap()], "single", &[]);
    // The status the driver first read when recorded (the simulator may still have been
    // busy then: it depends on timing), with the error bit set by the rule.
    let recorded = read_log(&r.trace);
    let first = recorded
        .iter()
        .find_map(|e| match e {
            mmio_trace_format::Event::Access(a)
                if a.phys == 0x108 && a.dir == mmio_trace_format::Direction::Read =>
            {
                Some(a.value)
            }
            _ => None,
        })
        .expect("the recording read STATUS");
    let injected = first | 4;
    // The driver took its error path (its own exit 3) and so left the recording's
    // conversation: the run diverged.
    assert_exit(&out, 1);
    assert_eq!(
        stdout(&out),
        format!(
            "id 0x594c5052 version 1.3\nchannel 0: device error (status {injected:#x}): error path\n"
        )
    );
    assert!(stderr(&out).contains("DIVERGED"), "{}", stderr(&out));
    // In the trace: the injection, then the read it changed.
    let rep = r.replayed();
    let mark = format!("inject: rule 1: R4 map 1 +0x108 = {first:#x} -> {injected:#x}");
    let i = rep
        .iter()
        .position(|e| matches!(e, mmio_trace_format::Event::Mark(m) if m.text == mark.as_bytes()))
        .expect("the injection's MARK");
    match &rep[i + 1] {
        mmio_trace_format::Event::Access(a) => assert_eq!((a.phys, a.value), (0x108, injected)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn record_inject_stands_in_for_a_device_that_never_answers() {
    // No simulator and no trace: the file's zeros, with STATUS and RESULT injected.
    let t = Fixture::new("record-inject", "replay_drv", 4096);
    std::fs::write(&t.dev, vec![0u8; 4096]).unwrap();
    let inj = inject_file(
        &t.dir,
        "seed = 1\n[[rule]]\noffset = 0x108\nvalue = 2\n[[rule]]\noffset = 0x10c\nvalue = 77\nwidth = 4\nfile = \"*/dev.bin\"\n[[rule]]\noffset = 0x10c\nvalue = 1\nfile = \"*/other\"\n",
    );
    let (out, ev) = t.record_with(&["--inject", inj.to_str().unwrap()], &[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "id 0 version 0.0\njob 1: 77\njob 2: 77\njob 3: 77\ndone\n"
    );
    let marks: Vec<String> = mark_texts(&ev)
        .into_iter()
        .filter(|m| m.starts_with("inject: "))
        .collect();
    assert_eq!(marks.len(), 6, "{marks:?}");
    assert_eq!(marks[0], "inject: rule 1: R4 map 1 +0x108 = 0x0 -> 0x2");
    assert_eq!(marks[1], "inject: rule 2: R4 map 1 +0x10c = 0x0 -> 0x4d");
    // The file itself was not changed by the injection (only what the reads returned).
    let status: Vec<u64> = accesses(&ev)
        .iter()
        .filter(|a| a.0 == 'R' && a.2 == 0x108)
        .map(|a| a.3)
        .collect();
    assert_eq!(status, [2, 2, 2]);
}

#[test]
fn sigbus_at_the_nth_access_ends_the_driver_as_a_gone_device_would() {
    let t = Fixture::new("inject-sigbus", "replay_drv", 4096);
    let inj = inject_file(&t.dir, "[[rule]]\noffset = 0x4\nsigbus_at = 1\n");
    let (out, ev) = t.record_with(&["--inject", inj.to_str().unwrap()], &[]);
    assert_exit(&out, 128 + libc::SIGBUS);
    assert!(mark_texts(&ev)
        .iter()
        .any(|m| m == "inject: rule 1: R4 map 1 +0x4: SIGBUS (device gone)"));
    assert_eq!(stdout(&out), "");
}

#[test]
fn probabilistic_injection_is_drawn_from_the_seed() {
    let t = Fixture::new("inject-prob", "paths_bench", 65536);
    let inj = inject_file(
        &t.dir,
        "seed = 42\n[[rule]]\noffset = 0\nflip_bits = 0x80000000\nprobability = 0.5\nfrom_read = 3\n",
    );
    let run = || {
        let (out, ev) = record_with(
            &t.dir,
            &t.dev,
            &["--inject", inj.to_str().unwrap()],
            &[os(&t.exe), "mov".as_ref(), os(&t.dev), "20480".as_ref()],
        );
        assert_exit(&out, 0);
        accesses(&ev)
            .iter()
            .filter(|a| a.2 == 0)
            .map(|a| a.3)
            .collect::<Vec<u64>>()
    };
    let a = run();
    assert_eq!(a.len(), 20);
    // The first two reads are never changed; of the others some are, some are not.
    assert_eq!(a[..2], [0x1000, 0x1000]);
    assert!(
        a[2..].contains(&0x1000) && a[2..].contains(&0x8000_1000),
        "{a:x?}"
    );
    assert_eq!(run(), a);
}

#[test]
fn malformed_injection_rules_are_bad_usage() {
    let t = Fixture::new("inject-bad", "replay_drv", 4096);
    for (text, says) in [
        ("[[rule]]\nvalue = 1\n", "missing field `offset`"),
        (
            "[[rule]]\noffset = 0\nvalue = 1\nset_bits = 2\n",
            "give one of",
        ),
        (
            "[[rule]]\noffset = 0\nvalue = 1\nprobability = 2.0\n",
            "probability",
        ),
        ("[[rule]]\noffset = 0\n", "it does nothing"),
        (
            "[[rule]]\noffset = 0\nvalue = 1\nbogus = 1\n",
            "unknown field",
        ),
        ("seed = 1\n", "no [[rule]]"),
    ] {
        let inj = inject_file(&t.dir, text);
        let out = record_cmd(&t.dir, &t.dev, &["--inject", inj.to_str().unwrap()])
            .arg(&t.exe)
            .arg(&t.dev)
            .output()
            .unwrap();
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{text}: {}", stderr(&out));
    }
}

#[test]
fn map_binds_a_device_at_another_path_and_kernel_logs_replay_by_order() {
    let r = recorded("map", "single", &[]);
    // The same driver on a device at another path: bound with --map NEW=OLD.
    let other = r.dir.join("other.regs");
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    let out = c
        .arg("replay")
        .arg(&r.trace)
        .args(["-q", "-o"])
        .arg(r.dir.join("replay.log"))
        .arg("--device")
        .arg(&other)
        .arg("--map")
        .arg(format!("{}={}", other.display(), r.dev.display()))
        .arg("--")
        .arg(&r.drv)
        .arg(&other)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    assert!(!other.exists(), "the stand-in is memory, not a file");
    // A kernel-style log (no MARK naming the file, no thread ids) binds by order.
    let before = std::fs::read(&r.dev).unwrap();
    let text = std::fs::read_to_string(&r.trace).unwrap();
    let kernel: String = text
        .lines()
        .filter(|l| !l.starts_with("MARK "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f[0] {
                "R" | "W" => format!("{} 0x0 0\n", f[..6].join(" ")),
                _ => format!("{l}\n"),
            }
        })
        .collect();
    let klog = r.dir.join("kernel.log");
    std::fs::write(&klog, kernel).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(&klog)
        .args(["-q", "-o"])
        .arg(r.dir.join("replay.log"))
        .arg("--device")
        .arg(&r.dev)
        .arg("--")
        .arg(&r.drv)
        .arg(&r.dev)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    // Not written: stood in for, as any device file is under a log that names none.
    assert_eq!(std::fs::read(&r.dev).unwrap(), before);
}

#[test]
fn the_demo_driver_records_then_replays_without_its_device() {
    let dir = scratch("demo");
    let exe = env!("CARGO_BIN_EXE_mmio-trace");
    let log = dir.join("demo.mmiotrace");
    let out = Command::new(exe)
        .arg("demo")
        .arg("-o")
        .arg(&log)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    // The demo's device file was temporary: gone now. The trace names it, which makes it
    // a device for the replay (no --device needed).
    let text = std::fs::read_to_string(&log).unwrap();
    let dev = text
        .lines()
        .find_map(|l| {
            l.split_once(" map 1 ")
                .map(|(_, r)| r.split(' ').next().unwrap().to_string())
        })
        .unwrap();
    assert!(!Path::new(&dev).exists());
    let out = Command::new(exe)
        .arg("replay")
        .arg(&log)
        .arg("-o")
        .arg(dir.join("replay.mmiotrace"))
        .args(["--", exe, "demo", "--driver", &dev])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("driver: DMA1 v1.2, transfer done, irq 0x1 acknowledged"),
        "{err}"
    );
    assert!(
        err.contains(
            "mmio-trace replay: the run matched the trace (12 recorded accesses, 1 mapping bound)"
        ),
        "{err}"
    );
    assert_eq!(
        accesses(&read_log(&dir.join("replay.mmiotrace"))),
        accesses(&read_log(&log))
    );
}

#[test]
fn an_unknown_access_of_the_trace_matches_any_access_at_its_offset() {
    let r = recorded("unknown", "single", &[]);
    // The trace as a single step would have logged the enable write (CTRL): UNKNOWN.
    let text = std::fs::read_to_string(&r.trace).unwrap();
    let mut done = false;
    let edited: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if !done && f[0] == "W" && f[4] == "0x10" {
                done = true;
                // W width ts id phys value pc pid -> UNKNOWN ts id phys bytes pc pid
                format!(
                    "UNKNOWN {} {} {} c7,00,01 {} {}\n",
                    f[2], f[3], f[4], f[6], f[7]
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(done);
    let edited_log = r.dir.join("unknown.log");
    std::fs::write(&edited_log, edited).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(&edited_log)
        .args(["-q", "-o"])
        .arg(r.dir.join("replay.log"))
        .arg("--")
        .arg(&r.drv)
        .arg(&r.dev)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    // The model keeps it as an access of unknown direction, width and value.
    let model = r.dir.join("model.json");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["export", "--to", "replay-model"])
        .arg(&edited_log)
        .arg("-o")
        .arg(&model)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let j = json_of(&model);
    let acc = j["maps"][0]["threads"][0]["accesses"].as_array().unwrap();
    assert!(acc
        .iter()
        .any(|a| a["dir"] == "UNKNOWN" && a["offset"] == "0x10" && a["width"] == 0));
}

#[test]
fn a_device_opened_relative_to_a_directory_descriptor_is_stood_in_for() {
    let dir = scratch("openat");
    let exe = build(&dir, "replay_openat");
    let sub = dir.join("bar");
    std::fs::create_dir_all(&sub).unwrap();
    let dev = sub.join("regs");
    let mut b = vec![0u8; 4096];
    b[..4].copy_from_slice(&0x1234u32.to_le_bytes());
    std::fs::write(&dev, b).unwrap();
    let (out, _) = record(&dir, &dev, &[os(&exe), os(&sub), "regs".as_ref()]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "id 0x1234\n");
    std::fs::remove_file(&dev).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(trace_log(&dir))
        .args(["-q", "-o"])
        .arg(dir.join("replay.log"))
        .arg("--")
        .arg(&exe)
        .arg(&sub)
        .arg("regs")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "id 0x1234\n");
}

#[test]
fn a_binary_trace_replays_into_a_binary_log_and_map_ids_bind() {
    let r = recorded("binary", "single", &[]);
    let bin = r.dir.join("recorded.bin");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["convert", "--to", "binary"])
        .arg(&r.trace)
        .arg(&bin)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    // The driver maps a device at another path, bound by the ids: the run's mapping 1 is
    // the trace's map 1 (without --map it would be bound to nothing, and wait for ever).
    let other = r.dir.join("elsewhere.regs");
    std::fs::write(&other, vec![0u8; 4096]).unwrap();
    let log = r.dir.join("replay.bin");
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(&bin)
        .args(["-q", "--format", "binary", "--map", "1=1", "--device"])
        .arg(&other)
        .arg("-o")
        .arg(&log)
        .arg("--")
        .arg(&r.drv)
        .arg(&other)
        .output()
        .unwrap();
    // The stand-in is for files the trace names: this one is opened as it is, and
    // served by the model all the same.
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), r.out);
    let first = std::fs::read(&log).unwrap();
    assert!(!first.starts_with(b"VERSION"), "a binary log");
    assert_eq!(accesses(&read_log(&log)), accesses(&read_log(&r.trace)));
}
