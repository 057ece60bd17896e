//! QA of the offline commands (`diff`, `analyze`, `show --fold`, `export`) through the
//! built binary, with the inputs a hostile user gives them: standard input named
//! twice, logs with only markers, huge values.

mod reading;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use reading::{s, text, tmp};

/// Runs `mmio-trace ARGS` with `input` on its standard input.
fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    // A command that refuses its arguments may exit before reading: ignore EPIPE.
    let _ = stdin.write_all(input);
    drop(stdin);
    c.wait_with_output().unwrap()
}

const LOG: &str = "VERSION 20070824\n\
MAP 1.000000 1 0xfeb40000 0xffffd444c0400000 0x20000 0x0 0\n\
R 4 1.000001 1 0xfeb40008 0x80080783 0x0 0\n\
W 4 1.000002 1 0xfeb400d8 0xffffffff 0x0 0\n";

#[test]
fn diff_of_standard_input_against_itself_is_refused_not_reported_different() {
    // Standard input can be read once: `diff - -` would compare the log with an
    // empty one and say they differ (exit 1).
    let o = run_stdin(&["diff", "-", "-"], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(2), "stdout: {}", text(&o.stdout));
    assert_eq!(text(&o.stdout), "");
    assert!(
        text(&o.stderr).contains("cannot both be `-`"),
        "{}",
        text(&o.stderr)
    );
    // One side from standard input is fine: a log equals itself.
    let a = tmp("stdin-a.log", LOG.as_bytes());
    let o = run_stdin(&["diff", s(&a), "-"], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run_stdin(&["diff", "-", s(&a)], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
