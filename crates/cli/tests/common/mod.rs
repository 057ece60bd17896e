//! Helpers shared by the end-to-end tests of `mmio-trace record`: build a test program
//! from tests/programs/, make a file-backed device, record, and read the log back.
// Each test binary uses a different subset of these. The helpers that assert are
// #[track_caller], so that a failure names the line of the test, not of this file.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use mmio_trace_format::{AnyReader, Direction, Event};

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mmio-trace-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles tests/programs/NAME.c into `dir`.
pub fn build(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/programs")
        .join(format!("{name}.c"));
    let exe = dir.join(name);
    let st = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the end-to-end tests");
    assert!(st.success(), "compiling {}", src.display());
    exe
}

/// A device file of `len` bytes whose 32-bit word k holds 0x1000 + k.
pub fn device(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("dev.bin");
    let mut v = Vec::with_capacity(len);
    for k in 0..len / 4 {
        v.extend_from_slice(&(0x1000 + k as u32).to_le_bytes());
    }
    std::fs::write(&p, v).unwrap();
    p
}

/// A test program built into its own scratch directory, beside a device file for it.
pub struct Fixture {
    /// The scratch directory (the trace is written there).
    pub dir: PathBuf,
    /// The built program.
    pub exe: PathBuf,
    /// The device file, as [`device`] makes it.
    pub dev: PathBuf,
}

impl Fixture {
    /// Builds tests/programs/PROGRAM.c in a fresh scratch directory `scratch_name` and
    /// makes a device of `dev_len` bytes there.
    pub fn new(scratch_name: &str, program: &str, dev_len: usize) -> Fixture {
        let dir = scratch(scratch_name);
        let exe = build(&dir, program);
        let dev = device(&dir, dev_len);
        Fixture { dir, exe, dev }
    }

    /// Records `PROGRAM DEV ARGS...`; returns the recorder's output and the events.
    pub fn record(&self, args: &[&str]) -> (Output, Vec<Event>) {
        self.record_with(&[], args)
    }

    /// As [`Fixture::record`], with extra `record` options.
    pub fn record_with(&self, opts: &[&str], args: &[&str]) -> (Output, Vec<Event>) {
        let mut program = vec![os(&self.exe), os(&self.dev)];
        program.extend(args.iter().map(OsStr::new));
        record_with(&self.dir, &self.dev, opts, &program)
    }

    /// Starts recording `PROGRAM DEV ARGS...`; returns the recorder once the program has
    /// created `ready`.
    #[track_caller]
    pub fn spawn_until(&self, ready: &Path, args: &[&OsStr]) -> Child {
        let mut rec = record_cmd(&self.dir, &self.dev, &[])
            .args([os(&self.exe), os(&self.dev)])
            .args(args)
            .spawn()
            .unwrap();
        wait_for_file(&mut rec, ready);
        rec
    }
}

/// The trace file that the recorder writes in `dir`.
pub fn trace_log(dir: &Path) -> PathBuf {
    dir.join("trace.log")
}

/// `mmio-trace record -q -o DIR/trace.log --device DEV OPTS --`: the program and its
/// arguments still to be added.
pub fn record_cmd(dir: &Path, dev: &Path, opts: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"));
    c.arg("record")
        .arg("-q")
        .arg("-o")
        .arg(trace_log(dir))
        .arg("--device")
        .arg(dev)
        .args(opts)
        .arg("--");
    c
}

/// Runs `mmio-trace record` with `dev` declared a device; returns its output and the events.
pub fn record(dir: &Path, dev: &Path, program: &[&OsStr]) -> (Output, Vec<Event>) {
    record_with(dir, dev, &[], program)
}

/// As [`record`], with extra `record` options.
pub fn record_with(
    dir: &Path,
    dev: &Path,
    opts: &[&str],
    program: &[&OsStr],
) -> (Output, Vec<Event>) {
    let out = record_cmd(dir, dev, opts).args(program).output().unwrap();
    // A recorder that failed before writing a log says why on stderr.
    let r = AnyReader::open(&trace_log(dir))
        .unwrap_or_else(|e| panic!("trace not readable: {e}; stderr {}", stderr(&out)));
    (out, events(r))
}

/// Every event of the log at `path`.
pub fn read_log(path: &Path) -> Vec<Event> {
    events(AnyReader::open(path).expect("trace readable"))
}

/// Every event left in `r`.
fn events(mut r: AnyReader) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(e) = r.next_event().expect("the trace file is valid") {
        events.push(e);
    }
    events
}

/// Waits until the program under `rec` creates `path`; fails if it ends first.
#[track_caller]
pub fn wait_for_file(rec: &mut Child, path: &Path) {
    while !path.exists() {
        assert!(rec.try_wait().unwrap().is_none(), "the program ended early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// (R/W, width, offset in the device, value) of every access, in file order.
pub fn accesses(events: &[Event]) -> Vec<(char, u8, u64, u64)> {
    accesses_by_pid(events)
        .into_iter()
        .map(|(_, dir, width, phys, value)| (dir, width, phys, value))
        .collect()
}

/// The text of every marker, in file order, but the loaded objects' (`object pid ...`).
pub fn mark_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Mark(m) if !m.text.starts_with(b"object pid ") => {
                Some(String::from_utf8_lossy(&m.text).into_owned())
            }
            _ => None,
        })
        .collect()
}

/// (offset, first opcode bytes) of every `UNKNOWN`, in file order.
pub fn unknowns(events: &[Event]) -> Vec<(u64, [u8; 3])> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Unknown(u) => Some((u.phys, u.opcode)),
            _ => None,
        })
        .collect()
}

/// (pid, R/W, width, offset, value) of every access, in file order.
pub fn accesses_by_pid(events: &[Event]) -> Vec<(u32, char, u8, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some((
                a.pid,
                if a.dir == Direction::Read { 'R' } else { 'W' },
                a.width,
                a.phys,
                a.value,
            )),
            _ => None,
        })
        .collect()
}

/// The value of every access, in file order.
pub fn values(events: &[Event]) -> Vec<u64> {
    accesses(events).iter().map(|a| a.3).collect()
}

/// The value of every write, in file order.
pub fn write_values(events: &[Event]) -> Vec<u64> {
    accesses(events)
        .iter()
        .filter(|a| a.0 == 'W')
        .map(|a| a.3)
        .collect()
}

/// (value, pid) of every write, in file order.
pub fn writes_with_pid(events: &[Event]) -> Vec<(u64, u32)> {
    accesses_by_pid(events)
        .into_iter()
        .filter(|a| a.1 == 'W')
        .map(|a| (a.4, a.0))
        .collect()
}

/// How many MAP events there are.
pub fn count_maps(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Map(_))).count()
}

/// How many UNKNOWN events (instructions single-stepped, not emulated) are at `phys`.
pub fn count_steps_at(events: &[Event], phys: u64) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Unknown(u) if u.phys == phys))
        .count()
}

/// Records `PROGRAM K N` (tests/programs/stepthreads.c and its variants: one thread makes
/// K accesses at 0x100 that the tracer single-steps, another writes 0..N) on a 4 KiB
/// device; asserts that it succeeds, that every write is logged in order, and every step.
#[track_caller]
pub fn assert_steps_lose_no_writes(scratch_name: &str, program: &str, k: u64, n: u64) {
    let t = Fixture::new(scratch_name, program, 4096);
    let (out, ev) = t.record_env(&[NO_OOL], &[], &[&k.to_string(), &n.to_string()]);
    assert_exit(&out, 0);
    assert_eq!(write_values(&ev), (0..n).collect::<Vec<_>>());
    assert_eq!(count_steps_at(&ev, 0x100) as u64, k);
    assert_device_after(&t.dev, &[(0, n.saturating_sub(1), 4)]);
}

/// Asserts that the events' timestamps never go backwards (they are merged by time).
#[track_caller]
pub fn assert_time_ordered(events: &[Event]) {
    let ts: Vec<u64> = events.iter().filter_map(Event::ts_ns).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
}

/// Asserts that the log reports no lost events.
#[track_caller]
pub fn assert_none_lost(events: &[Event]) {
    assert!(!events.iter().any(|e| matches!(e, Event::LostEvents(_))));
}

/// Asserts that the recorder's [`code`] is `want`, showing its output otherwise.
#[track_caller]
pub fn assert_exit(out: &Output, want: i32) {
    assert_eq!(
        code(out),
        Some(want),
        "status {:?}; stdout {}; stderr {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// `s` as an argument.
pub fn os(s: &Path) -> &OsStr {
    s.as_os_str()
}

/// The exit code, or 128 + the signal that killed the process (as a shell reports it).
pub fn code(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.code().or(out.status.signal().map(|s| 128 + s))
}

/// Standard output, lossily as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error, lossily as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts what the device file `dev` holds at byte offsets: each `(offset, value)` is the
/// 32-bit little-endian word there (what the program's own 32-bit read would see).
#[track_caller]
pub fn assert_device_words(dev: &Path, want: &[(u64, u32)]) {
    let bytes = std::fs::read(dev).unwrap();
    let got: Vec<(u64, u32)> = want
        .iter()
        .map(|&(off, _)| {
            let at = off as usize;
            let w = bytes
                .get(at..at + 4)
                .unwrap_or_else(|| panic!("offset {off:#x} is beyond the device's end"));
            (off, u32::from_le_bytes(w.try_into().unwrap()))
        })
        .collect();
    let hex = |v: &[(u64, u32)]| {
        v.iter()
            .map(|(o, w)| format!("{o:#x}={w:#x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(hex(&got), hex(want), "device words of {}", dev.display());
}

/// Asserts that the device file `dev` holds `want` at byte offset `off`.
#[track_caller]
pub fn assert_device_bytes(dev: &Path, off: u64, want: &[u8]) {
    let bytes = std::fs::read(dev).unwrap();
    let at = off as usize;
    assert_eq!(
        bytes.get(at..at + want.len()),
        Some(want),
        "device bytes of {} at {off:#x}",
        dev.display()
    );
}

/// The initial contents of a device made by [`device`] (word k = 0x1000 + k) at the 32-bit
/// word offset `off`.
pub fn initial_word(off: u64) -> u32 {
    0x1000 + (off / 4) as u32
}

/// Asserts that the device file `dev`, made by [`device`], holds exactly its initial
/// contents with `writes` applied in order, each `(offset, value, width in bytes)`, and
/// every other byte unchanged: what the program's own reads would see after its writes.
#[track_caller]
pub fn assert_device_after(dev: &Path, writes: &[(u64, u64, u8)]) {
    let got = std::fs::read(dev).unwrap();
    let mut want: Vec<u8> = (0..got.len() as u64 / 4)
        .flat_map(|k| initial_word(4 * k).to_le_bytes())
        .collect();
    for &(off, value, width) in writes {
        let at = off as usize;
        let w = usize::from(width);
        assert!(at + w <= want.len(), "write at {off:#x} beyond the device");
        want[at..at + w].copy_from_slice(&value.to_le_bytes()[..w]);
    }
    if got != want {
        let diff: Vec<String> = (0..got.len() / 4)
            .filter(|k| got[4 * k..4 * k + 4] != want[4 * k..4 * k + 4])
            .take(8)
            .map(|k| {
                let word = |b: &[u8]| u32::from_le_bytes(b[4 * k..4 * k + 4].try_into().unwrap());
                format!("{:#x}: {:#x}, want {:#x}", 4 * k, word(&got), word(&want))
            })
            .collect();
        panic!("device {} differs: {}", dev.display(), diff.join("; "));
    }
}

/// The writes among `accesses` (as [`accesses`] lists them), as [`assert_device_after`]
/// takes them.
pub fn writes_of(accesses: &[(char, u8, u64, u64)]) -> Vec<(u64, u64, u8)> {
    accesses
        .iter()
        .filter(|a| a.0 == 'W')
        .map(|&(_, width, off, value)| (off, value, width))
        .collect()
}

/// The tracer's test switch (`MMIO_TRACE_PATH`) set to skip out-of-line execution: the
/// emulator, then the step path. For tests of the step path whose programs use a form
/// (`crc32 m`…) that out-of-line execution now completes.
pub const NO_OOL: (&str, &str) = ("MMIO_TRACE_PATH", "no-ool");

impl Fixture {
    /// As [`Fixture::record_with`], with `env` added to the environment (the program
    /// inherits it from the recorder).
    pub fn record_env(
        &self,
        env: &[(&str, &str)],
        opts: &[&str],
        args: &[&str],
    ) -> (Output, Vec<Event>) {
        let mut c = record_cmd(&self.dir, &self.dev, opts);
        c.arg(&self.exe).arg(&self.dev).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let r = AnyReader::open(&trace_log(&self.dir))
            .unwrap_or_else(|e| panic!("trace not readable: {e}; stderr {}", stderr(&out)));
        (out, events(r))
    }
}

/// Builds the Go program `tests/programs/NAME/main.go` into DIR/NAME with the Go
/// toolchain (no network, no module, no cgo: a statically linked Go binary).
#[track_caller]
pub fn go_build(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/programs")
        .join(name)
        .join("main.go");
    let st = Command::new("go")
        .current_dir(dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the Go toolchain is needed for this test ({e}); Debian: apt-get install golang-go"
            )
        });
    assert!(st.success(), "go build {name}");
    exe
}

/// The route markers that open a trace (the recording's start; not the per-process notes
/// of the ptrace route).
pub fn route_marks(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Mark(m)
                if m.text.starts_with(b"mmio-trace: route ")
                    && !m.text.windows(5).any(|w| w == b"(pid ") =>
            {
                Some(String::from_utf8_lossy(&m.text).into_owned())
            }
            _ => None,
        })
        .collect()
}
