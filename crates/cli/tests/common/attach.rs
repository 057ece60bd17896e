//! The harness of the `record --pid` end-to-end tests (attach_a.rs by the ptrace route,
//! attach_inject.rs by the inject route): targets started directly, the recorder run to
//! its end or in the background, and what a_loop.c logs. Each test binary includes it
//! with `#[path]` and names its route in `crate::ROUTE`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use mmio_trace_format::Event;

/// A program started directly (not under `record`), ready once it wrote DIR/ready.
pub struct Target {
    pub child: Option<Child>,
    pub pid: i32,
}

impl Target {
    /// Starts `exe ARGS` and waits for `dir/ready`.
    #[track_caller]
    pub fn start(exe: &Path, dir: &Path, args: &[&std::ffi::OsStr]) -> Target {
        let _ = std::fs::remove_file(dir.join("ready"));
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !dir.join("ready").exists() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("the target ended before it was ready: {st:?}");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "target never ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.id() as i32;
        Target {
            child: Some(child),
            pid,
        }
    }

    /// Creates `dir/NAME` and waits for the target to end; its output.
    pub fn finish(mut self, dir: &Path, name: &str) -> Output {
        std::fs::write(dir.join(name), b"").unwrap();
        wait_output(self.child.take().unwrap(), Duration::from_secs(120))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `child` (up to `limit`: a generous bound for a loaded machine), reading its
/// output meanwhile (a trace on a pipe must not fill it); its output.
#[track_caller]
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill of our own child.
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("process {id} did not end within {limit:?}");
        }
    }
}

/// `mmio-trace record --pid PID -o LOG --device DEV... ROUTE OPTS` (`ROUTE`: the test
/// binary's `crate::ROUTE`).
pub fn attach_cmd(pid: i32, log: &Path, devs: &[&Path], opts: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    c.arg("record")
        .arg("--pid")
        .arg(pid.to_string())
        .arg("-o")
        .arg(log);
    for d in devs {
        c.arg("--device").arg(d);
    }
    c.args(crate::ROUTE);
    c.args(opts);
    c
}

/// Runs `record --pid` to its end.
pub fn attach_run(pid: i32, log: &Path, devs: &[&Path], opts: &[&str]) -> Output {
    let child = attach_cmd(pid, log, devs, opts)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// A `record --pid` running in the background, returned once it said it attached.
pub struct Recorder {
    child: Option<Child>,
    /// What it said on stderr up to and including the attach line.
    pub said: String,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Recorder {
    #[track_caller]
    pub fn start(pid: i32, log: &Path, devs: &[&Path], opts: &[&str]) -> Recorder {
        let mut child = attach_cmd(pid, log, devs, opts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            let n = err.read_line(&mut line).unwrap();
            said.push_str(&line);
            if n == 0 {
                let out = wait_output(child, Duration::from_secs(60));
                panic!(
                    "record --pid ended before attaching: {:?}; stderr {said}",
                    out.status
                );
            }
            if line.starts_with("mmio-trace: attached to ") {
                break;
            }
        }
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Recorder {
            child: Some(child),
            said,
            rest: Some(rest),
        }
    }

    /// Sends `sig` to the recorder.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill of our own child.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the recorder's end: (status as a shell says it, all of its stderr).
    pub fn wait(mut self) -> (Option<i32>, String) {
        let child = self.child.take().unwrap();
        let out = wait_output(child, Duration::from_secs(120));
        let rest = self.rest.take().unwrap().join().unwrap();
        (code(&out), format!("{}{rest}", self.said))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The main-thread accesses of a_loop's iteration `i`: (R/W, width, offset, value).
pub fn loop_iteration(i: u64) -> [(char, u8, u64, u64); 4] {
    let w = (i << 32) | 0xabc;
    [
        ('W', 4, 0x10, i & 0xffff_ffff),
        ('R', 4, 0x10, i & 0xffff_ffff),
        ('W', 8, 0x20, w),
        ('R', 8, 0x20, w),
    ]
}

/// Asserts that `got` (a_loop main-thread accesses) are exactly the accesses of a run of
/// consecutive iterations, the first and last possibly cut by the attach and the detach
/// (the process is stopped wherever it is); returns (first, last) iteration.
#[track_caller]
pub fn assert_consecutive_iterations(got: &[(char, u8, u64, u64)]) -> (u64, u64) {
    assert!(got.len() >= 8, "too few accesses logged: {got:?}");
    // Where the first access falls in its iteration: find the first W 0x10 and go back.
    let k = got
        .iter()
        .position(|a| a.0 == 'W' && a.2 == 0x10)
        .expect("a write of 0x10 in the log");
    assert!(
        k < 4,
        "the log starts with more than an iteration's tail: {:?}",
        &got[..8]
    );
    let first = got[k].3;
    let start = first.saturating_sub(u64::from(k > 0));
    let skip = if k > 0 { 4 - k } else { 0 };
    let want: Vec<_> = (start..)
        .flat_map(loop_iteration)
        .skip(skip)
        .take(got.len())
        .collect();
    assert_eq!(got, &want[..], "not consecutive iterations");
    let last = start + ((skip + got.len() - 1) / 4) as u64;
    (start, last)
}

/// The value in `a_loop`'s line `iterations N last L errors E usr1 U` named `key`.
pub fn loop_result(out: &Output, key: &str) -> i64 {
    let s = stdout(out);
    let mut words = s.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next().unwrap().parse().unwrap();
        }
    }
    panic!(
        "no {key} in the target's output {s:?}; stderr {}",
        stderr(out)
    );
}

/// The accesses of `events` by threads of `tid` only.
pub fn accesses_of_tid(events: &[Event], tid: u32) -> Vec<(char, u8, u64, u64)> {
    accesses_by_pid(events)
        .into_iter()
        .filter(|a| a.0 == tid)
        .map(|(_, d, w, p, v)| (d, w, p, v))
        .collect()
}

pub fn fixture(name: &str, program: &str) -> Fixture {
    Fixture::new(name, program, 4096)
}

pub fn log(t: &Fixture, n: u32) -> PathBuf {
    t.dir.join(format!("attach{n}.log"))
}
