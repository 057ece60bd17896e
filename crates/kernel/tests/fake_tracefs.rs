//! `record` against a fake tracefs and CPU directory: the sequence of control-file
//! writes, the streamed bytes, and the restoring of the previous state.

use std::fs;
use std::path::{Path, PathBuf};

use mmio_trace_kernel::{record, KernelError, Options};

const LOG: &str = "VERSION 20070824\nPCIDEV 0020 8086100e b feb40000 c001 0 0 0 0 feb00000 20000 40 0 0 0 0 40000 e1000\nMAP 2.433310 1 0xfeb40000 0xffffd444c0400000 0x20000 0x0 0\nR 4 2.435055 1 0xfeb40008 0x80080783 0x0 0\nW 4 2.436236 1 0xfeb400d8 0xffffffff 0x0 0\nMARK 0.000000 Lost 12 events.\nUNMAP 3.577637 1 0x0 0\n";

fn fake(name: &str, tracers: &str, current: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("mmio-trace-kfake-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let t = root.join("tracing");
    let c = root.join("cpu");
    fs::create_dir_all(&t).unwrap();
    fs::create_dir_all(c.join("cpu1")).unwrap();
    fs::write(t.join("available_tracers"), tracers).unwrap();
    fs::write(t.join("current_tracer"), current).unwrap();
    fs::write(t.join("buffer_size_kb"), "1408\n").unwrap();
    fs::write(t.join("trace_marker"), "").unwrap();
    fs::write(t.join("trace_pipe"), LOG).unwrap();
    fs::write(c.join("online"), "0-1\n").unwrap();
    // As if mmiotrace had offlined CPU 1 and not brought it back.
    fs::write(c.join("cpu1/online"), "0\n").unwrap();
    (t, c, root.join("out.mmiotrace"))
}

fn opts(t: &Path, c: &Path, out: &Path, cmd: &[&str]) -> Options {
    let mut o = Options::new(out.to_path_buf(), cmd.iter().map(|s| s.into()).collect());
    o.tracefs = Some(t.to_path_buf());
    o.cpu_dir = c.to_path_buf();
    o.skip_root_check = true;
    o.active_file = None;
    o.buffer_kb = Some(4096);
    o.marks = vec!["before insmod".into()];
    o
}

#[test]
fn streams_trace_pipe_marks_and_restores_tracer_buffer_and_cpus() {
    let (t, c, out) = fake("ok", "blk mmiotrace function nop\n", "nop\n");
    let res = record(&opts(&t, &c, &out, &["sh", "-c", "exit 3"])).unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), LOG);
    assert_eq!(res.status.and_then(|s| s.code()), Some(3));
    assert_eq!((res.accesses, res.lost, res.buffer_kb), (2, 12, 4096));
    assert!(!res.interrupted);
    assert!(
        res.restore_warnings.is_empty(),
        "{:?}",
        res.restore_warnings
    );
    assert_eq!(fs::read_to_string(t.join("current_tracer")).unwrap(), "nop");
    assert_eq!(
        fs::read_to_string(t.join("buffer_size_kb")).unwrap(),
        "1408"
    );
    assert_eq!(fs::read_to_string(c.join("cpu1/online")).unwrap(), "1");
    assert_eq!(
        fs::read_to_string(t.join("trace_marker")).unwrap(),
        "before insmodmmio-trace: command ended"
    );
}

#[test]
fn refuses_kernels_without_mmiotrace_and_busy_tracers_without_touching_them() {
    let (t, c, out) = fake("none", "function nop\n", "nop\n");
    let e = record(&opts(&t, &c, &out, &["true"])).unwrap_err();
    assert!(matches!(e, KernelError::NoMmiotrace(_)));
    assert!(e.to_string().contains("CONFIG_MMIOTRACE"), "{e}");

    let (t, c, out) = fake("busy", "mmiotrace function nop\n", "function\n");
    let e = record(&opts(&t, &c, &out, &["true"])).unwrap_err();
    assert!(matches!(e, KernelError::Busy(..)), "{e}");
    assert_eq!(
        fs::read_to_string(t.join("current_tracer")).unwrap(),
        "function\n"
    );
    assert_eq!(
        fs::read_to_string(t.join("buffer_size_kb")).unwrap(),
        "1408\n"
    );
}

#[test]
fn a_command_that_cannot_start_still_restores_the_tracer() {
    let (t, c, out) = fake("spawn", "mmiotrace nop\n", "nop\n");
    let e = record(&opts(&t, &c, &out, &["/nonexistent/insmod"])).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot run /nonexistent/insmod"),
        "{e}"
    );
    assert_eq!(fs::read_to_string(t.join("current_tracer")).unwrap(), "nop");
    assert_eq!(
        fs::read_to_string(t.join("buffer_size_kb")).unwrap(),
        "1408"
    );
}
