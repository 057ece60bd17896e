//! A new user's variants of `record` and `mark` that the other tests do not cover: a
//! script without a `#!` line (run by /bin/sh, as shells and `env` run it), a script
//! whose interpreter is missing (127, naming the interpreter), an empty program name,
//! `mark --pid` of no recording, and marker text that is not UTF-8. Needs `cc`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn qa2_a_script_without_a_shebang_runs_under_sh_and_is_traced() {
    let t = Fixture::new("noshebang", "regs", 8192);
    let s = t.dir.join("drive");
    // No `#!`: execve refuses it (ENOEXEC); a shell, env or execvp run it with /bin/sh.
    script(&s, "echo \"script $# $2\" >&2\nexec \"$1\" \"$2\"\n");
    let (out, events) = record(&t.dir, &t.dev, &[os(&s), os(&t.exe), os(&t.dev)]);
    // regs exits 7; the accesses it made through the script are in the log.
    assert_exit(&out, 7);
    assert!(
        stderr(&out).starts_with(&format!("script 2 {}\n", t.dev.display())),
        "{}",
        stderr(&out)
    );
    let acc = accesses(&events);
    assert!(
        acc.contains(&('W', 4, 0x4, 0xdeadbeef)),
        "accesses {acc:x?}; stderr {}",
        stderr(&out)
    );
}

#[test]
fn qa2_a_script_without_a_shebang_found_in_path_runs_under_sh() {
    let dir = scratch("noshebang-path");
    script(&dir.join("qa2-prog"), "echo \"ran $0 $1\" >&2\nexit 5\n");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = bin()
        .current_dir(std::env::temp_dir())
        .env("PATH", path)
        .args(["record", "-q", "-o"])
        .arg(dir.join("t.log"))
        .args(["qa2-prog", "arg"])
        .output()
        .unwrap();
    assert_exit(&out, 5);
    assert!(
        stderr(&out).starts_with(&format!("ran {}/qa2-prog arg\n", dir.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn qa2_a_binary_for_another_machine_is_not_handed_to_sh() {
    let dir = scratch("badelf");
    let p = dir.join("elf");
    std::fs::write(&p, b"\x7fELF\x02\x01\x01\0\0\0\0\0garbage\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["record", "-q", "--", "./elf"])
        .output()
        .unwrap();
    assert_exit(&out, 126);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot run ./elf: Exec format error (os error 8)\n"
    );
    assert!(!dir.join("mmiotrace.log").exists());
}

#[test]
fn qa2_a_script_whose_interpreter_is_missing_exits_127_naming_it() {
    let dir = scratch("nointerp");
    script(&dir.join("s"), "#!/nonexistent/qa2-interp -x\necho hi\n");
    let out = bin()
        .current_dir(&dir)
        .args(["record", "-q", "--", "./s"])
        .output()
        .unwrap();
    assert_exit(&out, 127);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot run ./s: its interpreter /nonexistent/qa2-interp (named on its \
         `#!` line) was not found: No such file or directory (os error 2)\n"
    );
    assert!(!dir.join("mmiotrace.log").exists());
}

#[test]
fn qa2_an_empty_program_name_is_shown_quoted() {
    let dir = scratch("emptyname");
    let out = bin()
        .current_dir(&dir)
        .args(["record", "-q", "--", ""])
        .output()
        .unwrap();
    assert_exit(&out, 127);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot run '': No such file or directory (os error 2)\n"
    );
}

#[test]
fn qa2_mark_with_a_pid_that_records_nothing_names_the_pid() {
    // This test process is no recorder.
    let pid = std::process::id();
    let out = bin()
        .args(["mark", "--pid", &pid.to_string(), "hello"])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        format!("mmio-trace: no running `mmio-trace record` with pid {pid} found\n")
    );
}

#[test]
fn qa2_mark_takes_text_that_is_not_utf8() {
    let dir = scratch("mark-bytes");
    let log = dir.join("t.log");
    let go = dir.join("go");
    let rec = bin()
        .args(["record", "-q", "-o"])
        .arg(&log)
        .args(["sh", "-c", "while [ ! -e \"$0\" ]; do sleep 0.05; done"])
        .arg(&go)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = OsStr::from_bytes(b"\xff\xfe ok \x80\tend");
    // The recorder takes markers once it is set up: try until it answers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = bin()
            .args(["mark", "--pid", &rec.id().to_string()])
            .arg(text)
            .output()
            .unwrap();
        if code(&out) == Some(0) {
            break;
        }
        assert_exit(&out, 1);
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&go, "").unwrap();
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let bytes = std::fs::read(&log).unwrap();
    let marks: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"MARK "))
        .map(|l| &l[l.iter().skip(5).position(|&b| b == b' ').unwrap() + 6..])
        .collect();
    // Bytes kept as they are, a control character escaped.
    assert_eq!(marks, vec![&b"\xff\xfe ok \x80\\x09end"[..]]);
    // The log stays readable.
    let stats = bin().args(["stats", "--json"]).arg(&log).output().unwrap();
    assert_exit(&stats, 0);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["marks"], 1);
}

#[test]
fn qa2_a_pipe_closed_early_counts_what_went_into_it_and_claims_no_whole_record() {
    use std::io::Read;
    let t = Fixture::new("pipe-count", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let mut rec = bin()
        .args(["record", "-q", "-o", "-", "--device"])
        .arg(&t.dev)
        .arg("--")
        .args([os(&t.exe), os(&t.dev), OsStr::new("100000"), os(&sentinel)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader takes 100 bytes and leaves (as `| head -c 100` does).
    let mut got = [0u8; 100];
    rec.stdout.take().unwrap().read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"VERSION 20070824\n"));
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 125);
    let err = stderr(&out);
    // The program's own standard output comes on standard error too.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mmio-trace"))
        .collect();
    assert_eq!(
        lines[0],
        "mmio-trace: cannot write the trace to standard output: Broken pipe (os error 32)",
        "{err}"
    );
    // cli_writes exits 3 once it made all its writes.
    let (written, rest) = lines[1]
        .strip_prefix("mmio-trace: the trace is incomplete: ")
        .and_then(|l| l.split_once(" bytes written"))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        rest,
        " (to a pipe or device: the last record may be cut); the program ran to its end \
         and exited with status 3",
        "{err}"
    );
    // At least what the reader read went into the pipe.
    assert!(written.parse::<u64>().unwrap() >= 100, "{err}");
    assert!(sentinel.exists());
    assert_eq!(lines.len(), 2, "{err}");
}

#[test]
fn qa2_a_device_output_that_takes_nothing_says_nothing_was_written() {
    let t = Fixture::new("devfull", "cli_writes", 4096);
    let sentinel = t.dir.join("sentinel");
    let out = bin()
        .args(["record", "-q", "-o", "/dev/full", "--device"])
        .arg(&t.dev)
        .arg("--")
        .args([os(&t.exe), os(&t.dev), OsStr::new("1000"), os(&sentinel)])
        .output()
        .unwrap();
    assert_exit(&out, 125);
    assert_eq!(
        stderr(&out),
        "mmio-trace: cannot write the trace to /dev/full: No space left on device (os error \
         28)\nmmio-trace: the trace is incomplete: 0 bytes written; the program ran to its end \
         and exited with status 3\n"
    );
}

#[test]
fn qa2_each_commands_help_carries_its_own_long_description() {
    // What each command's `--help` must say (from the command's own description, which
    // a one-line summary in the command list once replaced).
    for (cmd, wants) in [
        (
            "record",
            &[
                "Runs PROGRAM with mmio-trace's preload library injected",
                "Exit status",
            ][..],
        ),
        (
            "mark",
            &[
                "A marker is always one line",
                "[marker cut: N bytes, the first M kept]",
            ][..],
        ),
        ("convert", &["OUT may be the input itself", "mode 0600"][..]),
        ("show", &["ADDRESS => VALUE", "--lenient"][..]),
        (
            "stats",
            &[
                "lost.stopped_at_damage",
                "kernel_bytes",
                "counted apart from the header",
            ][..],
        ),
    ] {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        assert_exit(&out, 0);
        let help = stdout(&out)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for want in wants {
            assert!(help.contains(want), "{cmd} --help lacks {want:?}:\n{help}");
        }
    }
    // The command list keeps its one-line summaries.
    let out = bin().arg("--help").output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains(
        "  convert  Convert a log between the kernel text format and the compact binary format\n"
    ));
}

#[test]
fn qa2_an_empty_device_glob_is_a_usage_error() {
    let dir = scratch("emptydev");
    let out = bin()
        .current_dir(&dir)
        .args(["record", "-q", "--device", "", "--", "true"])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).starts_with(
            "error: invalid value '' for '--device <GLOB>': an empty GLOB names no device file\n"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("mmiotrace.log").exists());
}
