//! Helpers shared by the end-to-end tests of `mmio-trace record`: build a test program
//! from tests/programs/, make a file-backed device, record, and read the log back.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs `mmio-trace record` with `dev` declared a device; returns its output and the events.
pub fn record(dir: &Path, dev: &Path, program: &[&std::ffi::OsStr]) -> (Output, Vec<Event>) {
    record_with(dir, dev, &[], program)
}

/// As [`record`], with extra `record` options.
pub fn record_with(
    dir: &Path,
    dev: &Path,
    opts: &[&str],
    program: &[&std::ffi::OsStr],
) -> (Output, Vec<Event>) {
    let log = dir.join("trace.log");
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("record")
        .arg("-q")
        .arg("-o")
        .arg(&log)
        .arg("--device")
        .arg(dev)
        .args(opts)
        .arg("--")
        .args(program)
        .output()
        .unwrap();
    let mut r = AnyReader::open(&log).unwrap_or_else(|e| {
        panic!(
            "trace not readable: {e}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut events = Vec::new();
    while let Some(e) = r.next_event().expect("the trace file is valid") {
        events.push(e);
    }
    (out, events)
}

/// (R/W, width, offset in the device, value) of every access, in file order.
pub fn accesses(events: &[Event]) -> Vec<(char, u8, u64, u64)> {
    accesses_by_pid(events)
        .into_iter()
        .map(|(_, dir, width, phys, value)| (dir, width, phys, value))
        .collect()
}

pub fn os(s: &Path) -> &std::ffi::OsStr {
    s.as_os_str()
}

pub fn code(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.code().or(out.status.signal().map(|s| 128 + s))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
