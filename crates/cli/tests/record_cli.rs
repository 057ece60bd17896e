//! End-to-end tests of the recorder process and its command line: what `record` does
//! with its output before, while and after the program runs (a program that cannot be
//! started, `-o -`, a full disk, a closed pipe, a file-size limit, file modes), the
//! signals it passes on, markers that could pass for records or are too long, the
//! command line's usage errors and the messages of a recording that traced nothing.
//! Programs: tests/programs/cli_*.c. Needs `cc`, and `script` for the terminal test.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmio_trace_format::Event;

mod common;
use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    // SAFETY: only async-signal-safe calls between fork and exec: whatever the test
    // runner ignores (a background CI job ignores INT and QUIT), the recorder starts
    // with the default dispositions a shell in the foreground gives it.
    unsafe {
        c.pre_exec(|| {
            for s in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    c
}

/// `record OPTS -o OUT --device DEV -- PROGRAM DEV` of the fixture, as [`bin`] starts
/// it: the program's own arguments still to be added.
fn record_fixture(t: &Fixture, opts: &[&str], out: impl AsRef<OsStr>) -> Command {
    let mut c = bin();
    c.arg("record")
        .args(opts)
        .arg("-o")
        .arg(out)
        .arg("--device")
        .arg(&t.dev)
        .arg("--")
        .arg(&t.exe)
        .arg(&t.dev);
    c
}

/// Starts `cmd` with its output piped; returns it once its program has created `ready`.
#[track_caller]
fn spawn_until_ready(cmd: &mut Command, ready: &Path) -> std::process::Child {
    let mut rec = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&mut rec, ready);
    rec
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Waits (a minute at most) until `cond` holds.
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---- a program that cannot be started ----

#[test]
fn cli_a_program_not_found_exits_127_and_leaves_the_previous_trace_alone() {
    let dir = scratch("notfound");
    let log = dir.join("mmiotrace.log");
    std::fs::write(&log, "VERSION 20070824\nMARK 1.000000 precious\n").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["record", "-q", "--", "./typo", "arg"])
        .output()
        .unwrap();
    assert_exit(&out, 127);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot run ./typo: No such file or directory (os error 2)\n"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "VERSION 20070824\nMARK 1.000000 precious\n"
    );
    assert_eq!(mode(&log), 0o640);
    // A new output file is not left behind either.
    let fresh = dir.join("fresh.log");
    let out = bin()
        .args(["record", "-q", "-o"])
        .arg(&fresh)
        .arg(dir.join("no-such-program"))
        .output()
        .unwrap();
    assert_exit(&out, 127);
    assert!(!fresh.exists());
}

#[test]
fn cli_a_program_that_cannot_be_executed_exits_126() {
    let dir = scratch("noexec");
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.join("t.log");
    for program in [script.as_path(), dir.as_path()] {
        let out = bin()
            .args(["record", "-q", "-o"])
            .arg(&log)
            .arg("--")
            .arg(program)
            .output()
            .unwrap();
        assert_exit(&out, 126);
        assert_eq!(
            stderr(&out),
            format!(
                "mmio-trace: cannot run {}: Permission denied (os error 13)\n",
                program.display()
            )
        );
        assert!(!log.exists());
    }
}

// ---- files and modes ----

#[test]
fn cli_trace_files_are_created_private() {
    let t = Fixture::new("modes", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    for format in ["text", "binary"] {
        let log = trace_log(&t.dir);
        let _ = std::fs::remove_file(&log);
        let (out, ev) = t.record_with(&["--format", format], &["2", sentinel.to_str().unwrap()]);
        assert_exit(&out, 3);
        assert_eq!(mode(&log), 0o600, "{format}");
        assert_eq!(write_values(&ev), vec![0, 1]);
    }
    // An existing file is emptied and rewritten, and keeps the mode its owner gave it.
    let log = trace_log(&t.dir);
    std::fs::write(&log, vec![b'x'; 100_000]).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (out, ev) = t.record(&["1", sentinel.to_str().unwrap()]);
    assert_exit(&out, 3);
    assert_eq!(write_values(&ev), vec![0]);
    assert_eq!(mode(&log), 0o640);
}

#[test]
fn cli_demo_output_is_private_and_its_scratch_folder_is_removed() {
    let dir = scratch("demo");
    let log = dir.join("demo.log");
    let child = bin()
        .arg("demo")
        .arg("-o")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(mode(&log), 0o600);
    let events = read_log(&log);
    assert_eq!(
        mark_texts(&events)
            .into_iter()
            .filter(|m| !m.starts_with("map "))
            .collect::<Vec<_>>(),
        vec![
            "probe",
            "reset",
            "dma: copy 4 KiB from 0x100000000 to 0x200000000",
            "done"
        ]
    );
    let scratch = std::env::temp_dir().join(format!("mmio-trace-demo-{pid}"));
    assert!(!scratch.exists(), "{} left behind", scratch.display());
}

// ---- -o - ----

#[test]
fn cli_with_dash_o_the_programs_stdout_goes_to_stderr() {
    let t = Fixture::new("dash", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let out = record_fixture(&t, &["-q"], "-")
        .args(["2", sentinel.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    assert!(
        out.stdout.starts_with(b"VERSION 20070824\n"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("program stdout"));
    assert!(
        stderr(&out).contains("program stdout\n"),
        "{}",
        stderr(&out)
    );
    let mut r = mmio_trace_format::TextReader::new(&out.stdout[..]);
    let mut ev = Vec::new();
    while let Some(e) = r.next_event().unwrap() {
        ev.push(e);
    }
    assert_eq!(write_values(&ev), vec![0, 1]);
}

// ---- output failures ----

/// Asserts what `record` says after a failed write: the error, the program's status;
/// and that the program ran to its end (it wrote so into `sentinel`).
#[track_caller]
fn assert_reported(out: &std::process::Output, path: &str, error: &str, sentinel: &Path) {
    assert_exit(out, 125);
    // The program's own output (on stderr with `-o -`) comes first.
    let err = stderr(out);
    let err = err.strip_prefix("program stdout\n").unwrap_or(&err);
    assert!(
        err.starts_with(&format!(
            "mmio-trace: cannot write the trace to {path}: {error}\n"
        )),
        "{err}"
    );
    assert!(
        err.contains("; the program ran to its end and exited with status 3\n"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(sentinel).unwrap(),
        "ran to the end\n"
    );
}

#[test]
fn cli_a_full_device_fails_the_trace_not_the_program() {
    let t = Fixture::new("full", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let out = record_fixture(&t, &["-q"], "/dev/full")
        .args(["20000", sentinel.to_str().unwrap()])
        .output()
        .unwrap();
    assert_reported(
        &out,
        "/dev/full",
        "No space left on device (os error 28)",
        &sentinel,
    );
    assert_eq!(stdout(&out), "program stdout\n");
}

#[test]
fn cli_a_closed_pipe_fails_the_trace_not_the_program() {
    let t = Fixture::new("pipe", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let (ready, go) = (t.dir.join("ready"), t.dir.join("go"));
    let mut rec = spawn_until_ready(
        record_fixture(&t, &["-q"], "-")
            .args(["50000", sentinel.to_str().unwrap()])
            .arg(&ready)
            .arg(&go),
        &ready,
    );
    std::fs::write(&go, "").unwrap();
    // The reader takes the first bytes (once the recorder writes, 64 KiB at a time) and
    // leaves while the program is still writing.
    let mut reader = rec.stdout.take().unwrap();
    let mut first = [0u8; 17];
    reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"VERSION 20070824\n");
    drop(reader);
    let out = rec.wait_with_output().unwrap();
    assert_reported(
        &out,
        "standard output",
        "Broken pipe (os error 32)",
        &sentinel,
    );
}

/// Records 100,000 writes, the recorder limited to files of 200,000 bytes once the
/// program runs; returns the log's bytes and path.
fn record_limited(name: &str, format: &str) -> (Vec<u8>, PathBuf) {
    let t = Fixture::new(name, "cli_writes", 4096);
    let (sentinel, ready, go) = (
        t.dir.join("sentinel"),
        t.dir.join("ready"),
        t.dir.join("go"),
    );
    let log = trace_log(&t.dir);
    let rec = spawn_until_ready(
        record_fixture(&t, &["-q", "--format", format], &log)
            .args(["100000", sentinel.to_str().unwrap()])
            .arg(&ready)
            .arg(&go),
        &ready,
    );
    let lim = libc::rlimit {
        rlim_cur: 200_000,
        rlim_max: 200_000,
    };
    // SAFETY: setting a limit of the recorder we started (the program keeps its own).
    let r = unsafe {
        libc::prlimit(
            rec.id() as i32,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0);
    std::fs::write(&go, "").unwrap();
    let out = rec.wait_with_output().unwrap();
    assert_reported(
        &out,
        log.to_str().unwrap(),
        "File too large (os error 27)",
        &sentinel,
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(
        stderr(&out).contains(&format!(
            ": {} bytes written, ending on a whole record;",
            bytes.len()
        )),
        "{}",
        stderr(&out)
    );
    (bytes, log)
}

#[test]
fn cli_a_text_trace_cut_by_a_size_limit_ends_on_a_whole_line() {
    let (bytes, log) = record_limited("fsize-text", "text");
    // Whole 64 KiB chunks went in; the one that crossed the limit was taken back.
    assert!(
        bytes.len() <= 200_000 && bytes.len() > 130_000,
        "{}",
        bytes.len()
    );
    assert_eq!(bytes.last(), Some(&b'\n'));
    let last_line = bytes[..bytes.len() - 1]
        .rsplit(|&b| b == b'\n')
        .next()
        .unwrap();
    let ev = read_log(&log);
    let values = write_values(&ev);
    // Every write up to the last whole line, in order, and that line is the last one.
    assert_eq!(values, (0..values.len() as u64).collect::<Vec<_>>());
    let last = format!(" 0x40 {:#x} ", values.len() - 1);
    let last_line = String::from_utf8_lossy(last_line);
    assert!(
        last_line.starts_with("W 4 ") && last_line.contains(&last),
        "{last_line}"
    );
}

#[test]
fn cli_a_binary_trace_cut_by_a_size_limit_ends_on_a_whole_record() {
    let (bytes, log) = record_limited("fsize-bin", "binary");
    assert!(
        bytes.len() <= 200_000 && bytes.len() > 130_000,
        "{}",
        bytes.len()
    );
    // The reader finds no partial record at the end.
    let ev = read_log(&log);
    let values = write_values(&ev);
    assert!(values.len() > 1000);
    assert_eq!(values, (0..values.len() as u64).collect::<Vec<_>>());
}

// ---- signals ----

/// Starts `cli_signals` under `record`; returns the recorder, the acks file, the log.
fn start_signals(t: &Fixture, extra: &[&str]) -> (std::process::Child, PathBuf) {
    let (ready, acks) = (t.dir.join("ready"), t.dir.join("acks"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&acks);
    let rec = spawn_until_ready(
        record_fixture(t, &["-q"], trace_log(&t.dir))
            .arg(&ready)
            .arg(&acks)
            .args(extra),
        &ready,
    );
    (rec, acks)
}

#[test]
fn cli_every_signal_sent_to_the_recorder_reaches_the_program_once() {
    let t = Fixture::new("signals", "cli_signals", 4096);
    let (rec, acks) = start_signals(&t, &[]);
    let pid = rec.id() as i32;
    let mut sigs = vec![
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGURG,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGPWR,
        libc::SIGPIPE,
        libc::SIGRTMIN(),
        libc::SIGRTMIN() + 5,
        libc::SIGRTMAX(),
    ];
    for (n, &s) in sigs.iter().enumerate() {
        // SAFETY: a signal to the recorder we started.
        assert_eq!(unsafe { libc::kill(pid, s) }, 0);
        wait_until(&format!("signal {s} acknowledged"), || {
            lines(&acks).len() > n
        });
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    sigs.push(libc::SIGTERM);
    let want: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
    assert_eq!(lines(&acks), want);
    // The program logged each one on the device, and the log is complete.
    let ev = read_log(&trace_log(&t.dir));
    assert_eq!(
        write_values(&ev),
        sigs.iter().map(|&s| s as u64).collect::<Vec<_>>()
    );
}

#[test]
fn cli_a_signal_that_kills_the_program_leaves_a_finished_log() {
    let t = Fixture::new("sigdie", "cli_signals", 4096);
    let (rec, acks) = start_signals(&t, &["die"]);
    let pid = rec.id() as i32;
    // SAFETY: a signal to the recorder we started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_until("SIGHUP acknowledged", || lines(&acks).len() == 1);
    // SAFETY: as above; the program has no handler for it.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 128 + libc::SIGUSR1);
    assert_eq!(lines(&acks), vec![libc::SIGHUP.to_string()]);
    let ev = read_log(&trace_log(&t.dir));
    assert_eq!(write_values(&ev), vec![libc::SIGHUP as u64]);
}

#[test]
fn cli_ctrl_c_on_a_terminal_reaches_the_program_once() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to run the recorder on a terminal");
        return;
    }
    let t = Fixture::new("tty", "cli_signals", 4096);
    let (ready, acks, pidfile) = (t.dir.join("ready"), t.dir.join("acks"), t.dir.join("pid"));
    let q = |p: &Path| format!("'{}'", p.display());
    // The recorder runs on a new terminal, in its foreground process group with the
    // program; ^C typed there goes to both.
    let inner = format!(
        "echo $$ > {}; exec {} record -q -o {} --device {} -- {} {} {} {}",
        q(&pidfile),
        q(Path::new(env!("CARGO_BIN_EXE_mmio-trace"))),
        q(&trace_log(&t.dir)),
        q(&t.dev),
        q(&t.exe),
        q(&t.dev),
        q(&ready),
        q(&acks)
    );
    let mut script = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&mut script, &ready);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut tty = script.stdin.take().unwrap();
    tty.write_all(b"\x03").unwrap();
    tty.flush().unwrap();
    wait_until("SIGINT acknowledged", || !lines(&acks).is_empty());
    // A SIGINT passed on a second time would be delivered before this one.
    // SAFETY: a signal to the recorder (the shell exec'd it).
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    wait_until("SIGUSR1 acknowledged", || lines(&acks).len() >= 2);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = script.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        lines(&acks),
        vec![
            libc::SIGINT.to_string(),
            libc::SIGUSR1.to_string(),
            libc::SIGTERM.to_string()
        ]
    );
}

// ---- markers ----

/// The MARK lines of a text log, as bytes, without the time.
fn mark_lines(log: &[u8]) -> Vec<String> {
    log.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"MARK "))
        .map(|l| {
            let l = String::from_utf8_lossy(l).into_owned();
            l.splitn(3, ' ').nth(2).unwrap_or_default().to_string()
        })
        .filter(|m| !m.starts_with("map ") && !m.starts_with("object pid "))
        .collect()
}

fn alphabet(n: usize) -> String {
    (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

#[test]
fn cli_markers_are_one_line_whatever_their_text() {
    let t = Fixture::new("marks", "cli_marks", 4096);
    let (ready, go) = (t.dir.join("ready"), t.dir.join("go"));
    let fake = "x\\nW 4 0.000001 1 0x40 0xdead 0x0 0";
    let rec = spawn_until_ready(
        record_fixture(&t, &["-q"], trace_log(&t.dir))
            .arg(&ready)
            .args([
                fake,
                "tab\\there\\r\\e[31mred",
                "back\\\\slash \\\\x41 C:\\\\dir",
                "LONG:4096",
                "LONG:10000",
            ])
            .arg(format!("WAIT:{}", go.display())),
        &ready,
    );
    // The same from another shell, to this recorder.
    let sent = bin()
        .args(["mark", "--pid", &rec.id().to_string()])
        .arg("y\nR 4 0.000002 1 0x44 0xbeef 0x0 0\n")
        .output()
        .unwrap();
    assert_exit(&sent, 0);
    let long = bin()
        .args(["mark", "--pid", &rec.id().to_string()])
        .arg(alphabet(5000))
        .output()
        .unwrap();
    assert_exit(&long, 0);
    std::fs::write(&go, "").unwrap();
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let log = std::fs::read(trace_log(&t.dir)).unwrap();
    assert_eq!(
        mark_lines(&log),
        vec![
            "x\\x0aW 4 0.000001 1 0x40 0xdead 0x0 0".to_string(),
            "tab\\x09here\\x0d\\x1b[31mred".to_string(),
            "back\\slash \\\\x41 C:\\dir".to_string(),
            alphabet(4096),
            format!(
                "{} [marker cut: 10000 bytes, the first 4096 kept]",
                alphabet(4096)
            ),
            // A trailing newline (as `echo` sends) is not part of the text.
            "y\\x0aR 4 0.000002 1 0x44 0xbeef 0x0 0".to_string(),
            format!(
                "{} [marker cut: 5000 bytes, the first 4096 kept]",
                alphabet(4096)
            ),
        ]
    );
    // No access but the program's own.
    let ev = read_log(&trace_log(&t.dir));
    assert_eq!(write_values(&ev), vec![3, 4, 5, 6, 7, 0xff]);
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::Access(a) if a.value == 0xdead || a.value == 0xbeef)));
    // The log reads back and is written again byte for byte, in both formats.
    let bin_log = t.dir.join("trace.bin");
    let text_again = t.dir.join("again.log");
    for (from, to, format) in [
        (trace_log(&t.dir), bin_log.clone(), "binary"),
        (bin_log.clone(), text_again.clone(), "text"),
    ] {
        let c = bin()
            .args(["convert", "--to", format])
            .arg(&from)
            .arg(&to)
            .output()
            .unwrap();
        assert_exit(&c, 0);
    }
    assert_eq!(std::fs::read(&text_again).unwrap(), log);
}

// ---- the command line ----

#[test]
fn cli_usage_errors_exit_2_and_options_before_the_program_are_options() {
    let dir = scratch("usage");
    let log = dir.join("t.log");
    let run = |args: &[&str]| {
        bin()
            .current_dir(&dir)
            .args(["record", "-q", "-o"])
            .arg(&log)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--devcie", "X", "--", "true"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("unexpected argument '--devcie'"),
        "{}",
        stderr(&out)
    );
    for opt in ["--range", "--bypass"] {
        let out = run(&[opt, "0x10-zz", "--", "true"]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("bad range \"0x10-zz\""),
            "{}",
            stderr(&out)
        );
    }
    // Numbers in the wrong order, or a length past the end, are said as such.
    for (arg, why) in [
        (
            "0x10-0x5",
            "its end 0x5 is before its start 0x10 in \"0x10-0x5\"",
        ),
        (
            "0-0x1000,0xffffffffffffff00+0x200",
            "\"0xffffffffffffff00+0x200\" runs past the end of the address space",
        ),
    ] {
        let out = run(&["--range", arg, "--", "true"]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains(&format!("bad range {arg:?}: {why}\n")),
            "{}",
            stderr(&out)
        );
    }
    assert!(!log.exists());
    // The statuses are documented.
    let help = bin().args(["record", "--help"]).output().unwrap();
    assert_exit(&help, 0);
    for status in [
        "127  PROGRAM was not found, 126  it could not be run",
        "125  the trace could not be written",
        "2  bad usage",
    ] {
        assert!(
            stdout(&help).contains(status),
            "{status}: {}",
            stdout(&help)
        );
    }
    // Without `--`, the program's own options stay its own.
    let out = run(&["sh", "-c", "echo \"$0 $1\"; exit 7", "-x", "--device"]);
    assert_exit(&out, 7);
    assert_eq!(stdout(&out), "-x --device\n");
}

#[test]
fn cli_errors_are_said_once_and_name_the_output() {
    let dir = scratch("errors");
    for (output, error) in [
        (
            "/nonexistent/dir/x.log".to_string(),
            "No such file or directory (os error 2)",
        ),
        (dir.display().to_string(), "Is a directory (os error 21)"),
    ] {
        let out = bin()
            .args(["record", "-q", "-o", &output, "--", "true"])
            .output()
            .unwrap();
        assert_exit(&out, 125);
        assert_eq!(
            stderr(&out),
            format!("mmio-trace: cannot write the trace to {output}: {error}\n")
        );
    }
}

#[test]
fn cli_a_recording_that_matched_no_device_says_so() {
    let t = Fixture::new("nodev", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let out = bin()
        .args(["record", "-q", "-o"])
        .arg(trace_log(&t.dir))
        .arg("--")
        .arg(&t.exe)
        .arg(&t.dev)
        .args(["3", sentinel.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    assert!(
        stderr(&out)
            .starts_with("mmio-trace: warning: no device mapping matched, nothing was traced"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--device"), "{}", stderr(&out));
    // With the device named, no such warning.
    let (out, ev) = t.record(&["3", sentinel.to_str().unwrap()]);
    assert_exit(&out, 3);
    assert_eq!(stderr(&out), "");
    assert_eq!(write_values(&ev), vec![0, 1, 2]);
}

#[test]
fn cli_no_alias_summary_names_no_alias_as_the_reason() {
    let t = Fixture::new("noalias", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let out = record_fixture(&t, &["--no-alias"], trace_log(&t.dir))
        .args(["3", sentinel.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    assert_eq!(
        stderr(&out),
        "mmio-trace: 3 accesses were single-stepped (--no-alias: every access is; they \
         were logged as UNKNOWN where the value could not be known)\n"
    );
}

/// Kills process group `.0` when dropped: nothing stays stopped if the test fails.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group the test made (gone when it passed).
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// The state letter of process `pid` (`/proc/PID/stat`).
fn state(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

#[test]
fn cli_tstp_to_the_recorder_stops_the_program_with_it_and_cont_resumes_both() {
    let t = Fixture::new("tstp", "cli_signals", 4096);
    let (ready, acks) = (t.dir.join("ready"), t.dir.join("acks"));
    // A process group of its own, whose parent (this test) is outside it: not orphaned,
    // so that the kernel lets SIGTSTP stop its members (it would discard it otherwise).
    let mut cmd = record_fixture(&t, &["-q"], trace_log(&t.dir));
    // SAFETY: setpgid between fork and exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let mut rec = cmd
        .arg(&ready)
        .arg(&acks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _cleanup = KillGroup(rec.id() as i32);
    wait_for_file(&mut rec, &ready);
    let pid = rec.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let program: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: signals to the recorder we started.
    unsafe { libc::kill(pid as i32, libc::SIGTSTP) };
    wait_until("both stopped", || {
        state(pid) == 'T' && state(program) == 'T'
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    wait_until("SIGCONT acknowledged", || !lines(&acks).is_empty());
    assert_ne!(state(program), 'T');
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        lines(&acks),
        vec![libc::SIGCONT.to_string(), libc::SIGTERM.to_string()]
    );
}

#[test]
fn cli_the_status_line_gives_sizes_for_people_and_counts_in_the_singular() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to run the recorder on a terminal");
        return;
    }
    let t = Fixture::new("status", "cli_writes", 4096);
    let log = trace_log(&t.dir);
    let q = |p: &Path| format!("'{}'", p.display());
    let inner = format!(
        "exec {} record -o {} --device {} -- {} {} 2000 {}",
        q(Path::new(env!("CARGO_BIN_EXE_mmio-trace"))),
        q(&log),
        q(&t.dev),
        q(&t.exe),
        q(&t.dev),
        q(&t.dir.join("sentinel")),
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let screen = stdout(&out);
    let last = screen
        .rsplit("\x1b[K")
        .next()
        .unwrap()
        .split(['\r', '\n'])
        .next()
        .unwrap()
        .to_string();
    let size = std::fs::metadata(&log).unwrap().len();
    let human = format!("{:.1} KiB", size as f64 / 1024.0);
    assert!(size > 50_000 && size < 1 << 20, "{size}");
    assert!(
        last.starts_with("mmio-trace: ")
            && last.ends_with(&format!(" events/s, {human}, 1 process")),
        "{last:?}"
    );
}

#[test]
fn cli_signals_reach_what_the_program_left_running_once_it_has_ended() {
    let t = Fixture::new("orphan", "cli_orphan", 4096);
    let (ready, acks) = (t.dir.join("ready"), t.dir.join("acks"));
    let rec = spawn_until_ready(
        record_fixture(&t, &["-q"], trace_log(&t.dir))
            .arg(&ready)
            .arg(&acks),
        &ready,
    );
    // The program has ended; the recorder waits for the child it left. A supervisor's
    // TERM (`timeout`) reaches that child, and the recording ends.
    // SAFETY: a signal to the recorder we started.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(lines(&acks), vec!["15"]);
    let ev = read_log(&trace_log(&t.dir));
    assert_eq!(accesses(&ev), vec![('W', 4, 0x20, 15)]);
}
