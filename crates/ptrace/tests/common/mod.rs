//! Helpers of the ptrace engine's tests: build the C helper programs, start them, wait
//! until a thread is blocked in a system call.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmio_trace_ptrace::Pid;

/// Builds tests/programs/NAME.c once per test binary into the target directory.
pub fn build(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let src = root.join("tests/programs").join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ptrace-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let fresh = std::fs::metadata(&exe)
        .and_then(|e| Ok(e.modified()? >= std::fs::metadata(&src)?.modified()?))
        .unwrap_or(false);
    if !fresh {
        let st = Command::new("cc")
            .args(["-O1", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("a C compiler (cc) is needed for the ptrace engine tests");
        assert!(st.success(), "compiling {}", src.display());
    }
    exe
}

/// A started helper program with piped stdin/stdout. A watchdog kills it after
/// [`WATCHDOG`] so that a tracer waiting for a stop that never comes fails instead of
/// hanging the test run.
pub struct Helper {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    done: Arc<AtomicBool>,
    reaped: bool,
}

/// How long a helper may live (generous: the machine may be loaded).
pub const WATCHDOG: Duration = Duration::from_secs(180);

fn watchdog(pid: Pid, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < WATCHDOG {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !done.load(Ordering::SeqCst) {
            eprintln!("watchdog: killing helper {pid} after {WATCHDOG:?}");
            // SAFETY: kill takes integers; the helper is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    /// Starts `name` with `args`; waits for its "ready" line.
    pub fn start(name: &str, args: &[&str]) -> Helper {
        let exe = build(name);
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let done = Arc::new(AtomicBool::new(false));
        watchdog(child.id() as Pid, done.clone());
        let mut h = Helper {
            child,
            out,
            done,
            reaped: false,
        };
        let l = h.line();
        assert_eq!(l, "ready", "first line of {name}");
        h
    }

    pub fn pid(&self) -> Pid {
        self.child.id() as Pid
    }

    /// Next line of its stdout (without the newline).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).unwrap();
        s.trim_end_matches('\n').to_string()
    }

    /// The rest of stdout.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        self.out.read_to_string(&mut s).unwrap();
        s
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        use std::io::Write;
        let i = self.child.stdin.as_mut().unwrap();
        i.write_all(data).unwrap();
        i.flush().unwrap();
    }

    /// Records that the test reaped the helper itself (its tracer's wait saw it exit): its
    /// pid may be reused, so it must not be killed or waited for.
    pub fn mark_reaped(&mut self) {
        self.reaped = true;
        self.done.store(true, Ordering::SeqCst);
    }

    /// Exit code (panics if killed by a signal).
    pub fn exit_code(&mut self) -> i32 {
        let st = self.child.wait().unwrap();
        self.done.store(true, Ordering::SeqCst);
        st.code()
            .unwrap_or_else(|| panic!("helper ended by {st:?}"))
    }
}

/// Waits until thread `tid` of `pid` sleeps inside system call `nr` (from
/// /proc/PID/task/TID/syscall and its state).
pub fn wait_blocked(pid: Pid, tid: Pid, nrs: &[i64]) {
    let t0 = Instant::now();
    loop {
        let sc =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        let nr: Option<i64> = sc.split_whitespace().next().and_then(|s| s.parse().ok());
        if state == "S" && nr.is_some_and(|n| nrs.contains(&n)) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "thread {tid} never blocked in {nrs:?}: {sc:?} {state}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Helper {
    /// Starts the program `exe` (built by the test itself, e.g. statically linked) with
    /// `args`; waits for its "ready" line.
    pub fn start_exe(exe: &Path, args: &[&str]) -> Helper {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let done = Arc::new(AtomicBool::new(false));
        watchdog(child.id() as Pid, done.clone());
        let mut h = Helper {
            child,
            out,
            done,
            reaped: false,
        };
        let l = h.line();
        assert_eq!(l, "ready", "first line of {}", exe.display());
        h
    }
}
