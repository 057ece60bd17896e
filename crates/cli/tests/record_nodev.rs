//! A recording that traced nothing because no device rule matched names the files the
//! program did map shared (and how often), so that the user knows what to pass to
//! `--device`; one that traced something says nothing of the other files.

use std::path::PathBuf;
use std::process::{Command, Output};

use mmio_trace_format::Event;

mod common;
use common::*;

const HINT: &str = "; name its device with --device PATH or GLOB\n";
const PREFIX: &str =
    "mmio-trace: warning: no device mapping matched, nothing was traced: the program mapped ";

/// A scratch directory with nodev_map built and files f1, f2 (and g0..g10) to map.
struct T {
    dir: PathBuf,
    exe: PathBuf,
}

impl T {
    fn new(name: &str) -> T {
        let dir = std::fs::canonicalize(scratch(name)).unwrap();
        let exe = build(&dir, "nodev_map");
        for f in ["f1", "f2"] {
            std::fs::write(dir.join(f), vec![0u8; 8192]).unwrap();
        }
        T { dir, exe }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// `mmio-trace record -q -o DIR/trace.log OPTS -- nodev_map ARGS` (run in DIR, so that
    /// the arguments may name the files relatively).
    fn record(&self, opts: &[&str], args: &[&str]) -> (Output, Vec<Event>) {
        let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .current_dir(&self.dir)
            .args(["record", "-q", "-o"])
            .arg(trace_log(&self.dir))
            .args(opts)
            .arg("--")
            .arg(&self.exe)
            .args(args)
            .output()
            .unwrap();
        let ev = read_log(&trace_log(&self.dir));
        (out, ev)
    }
}

/// The events of a recording that traced nothing: the header's and the recorder's own
/// only, never a note about the files (those are for the warning).
#[track_caller]
fn assert_nothing_logged(ev: &[Event], t: &T) {
    for e in ev {
        assert!(
            !matches!(e, Event::Map(_) | Event::Access(_) | Event::Unknown(_)),
            "{e:?}"
        );
        if let Event::Mark(m) = e {
            assert!(
                !String::from_utf8_lossy(&m.text).contains(t.dir.to_str().unwrap()),
                "{m:?}"
            );
        }
    }
}

#[test]
fn nodev_files_mapped_shared_are_named_with_their_counts() {
    let t = T::new("named");
    // f1 three times, f2 once; /dev/zero, a memfd, anonymous memory shared and f2 private
    // are not listed.
    let args = ["f1", "3", "-z", "f2", "1", "-p", "f2"];
    let want = format!(
        "{PREFIX}{} (shared, 3 times), {} (shared){HINT}",
        t.path("f1"),
        t.path("f2")
    );
    for opts in [&[][..], &["--no-default-devices"][..]] {
        let (out, ev) = t.record(opts, &args);
        assert_exit(&out, 0);
        assert_eq!(stderr(&out), want, "{opts:?}");
        assert_nothing_logged(&ev, &t);
    }
    // A --device that matches something else changes nothing.
    let (out, _) = t.record(&["--device", "/nonexistent/dev*"], &args);
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), want);
}

#[test]
fn nodev_a_file_mapped_a_thousand_times_is_one_path_with_its_count() {
    let t = T::new("thousand");
    let want = format!("{PREFIX}{} (shared, 1000 times){HINT}", t.path("f1"));
    // Ended by exit, by _exit (no exit handlers), from 4 threads, and in a fork child
    // whose parent mapped the file before: the counts add up.
    for args in [
        &["f1", "1000"][..],
        &["f1", "1000", "-x"][..],
        &["f1", "200", "-t", "200"][..],
        &["f1", "500", "-f", "f1", "500", "-x"][..],
    ] {
        let (out, ev) = t.record(&[], args);
        assert_exit(&out, 0);
        assert_eq!(stderr(&out), want, "{args:?}");
        assert_nothing_logged(&ev, &t);
    }
}

#[test]
fn nodev_mappings_of_exec_d_images_add_up() {
    let t = T::new("exec");
    let exe = t.exe.display().to_string();
    // Shell children, and an image that execs another after mapping (its last mappings,
    // after the last power of two, are told before the exec).
    let script = format!("{exe} f1 7 && {exe} f1 3 f2 2 -e {exe} f1 4 && exec {exe} f2 1 -x");
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .current_dir(&t.dir)
        .args(["record", "-q", "-o"])
        .arg(trace_log(&t.dir))
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        stderr(&out),
        format!(
            "{PREFIX}{} (shared, 14 times), {} (shared, 3 times){HINT}",
            t.path("f1"),
            t.path("f2")
        )
    );
}

#[test]
fn nodev_more_than_eight_files_are_counted() {
    let t = T::new("many");
    let mut args = Vec::new();
    for i in 0..11 {
        std::fs::write(t.dir.join(format!("g{i}")), [0u8; 4096]).unwrap();
        args.push(format!("g{i}"));
        args.push(if i == 1 { "2" } else { "1" }.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _) = t.record(&[], &args);
    assert_exit(&out, 0);
    let mut listed: Vec<String> = (0..8)
        .map(|i| {
            let times = if i == 1 { ", 2 times" } else { "" };
            format!("{} (shared{times})", t.path(&format!("g{i}")))
        })
        .collect();
    listed.push("and 3 other files".to_string());
    assert_eq!(stderr(&out), format!("{PREFIX}{}{HINT}", listed.join(", ")));
}

#[test]
fn nodev_a_program_that_maps_no_file_is_told_so() {
    let t = T::new("none");
    // Private and anonymous mappings, /dev/zero and a memfd are no device files.
    let (out, ev) = t.record(&[], &["-z", "-p", "f1"]);
    assert_exit(&out, 0);
    assert_eq!(
        stderr(&out),
        format!(
            "{PREFIX}no file shared (device registers are mapped shared from a device file: \
             /dev/mem, a sysfs PCI resource, /dev/uio*, VFIO, /dev/dri/*, /dev/nvidia*, \
             /dev/accel/*, or one --device names)\n"
        )
    );
    assert_nothing_logged(&ev, &t);
    let (out, _) = t.record(&["--no-default-devices"], &[]);
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), format!("{PREFIX}no file shared\n"));
}

#[test]
fn nodev_a_traced_program_is_not_told_of_its_other_files() {
    let t = T::new("traced");
    let dev = t.path("f1");
    // f1 traced (one write), f2 mapped shared 3 times and not traced: no warning.
    for opts in [
        &["--device", &dev][..],
        &["--no-default-devices", "--device", &dev][..],
    ] {
        let (out, ev) = t.record(opts, &["f2", "3", "f1", "1", "-w", "8", "f2", "1"]);
        assert_exit(&out, 0);
        assert_eq!(stderr(&out), "", "{opts:?}");
        assert_eq!(count_maps(&ev), 1);
        assert_eq!(writes_of(&accesses(&ev)), vec![(8, 1, 1)]);
        assert_nothing_logged_of(&ev, &t.path("f2"));
    }
}

/// No event names `path`.
#[track_caller]
fn assert_nothing_logged_of(ev: &[Event], path: &str) {
    for e in ev {
        if let Event::Mark(m) = e {
            assert!(!String::from_utf8_lossy(&m.text).contains(path), "{m:?}");
        }
    }
}
