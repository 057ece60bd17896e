//! What the preload library does around exec and system calls: every exec path puts the
//! tracer back into the new image's environment (its accesses are in the log), an image
//! that never loads the tracer is named in a warning, and system calls handed device
//! memory behave as natively, with the kernel's accesses in the log.

mod common;

use std::process::Command;

use common::*;
use mmio_trace_format::{Direction, Event, KernelAccess};

/// The accesses of `sys_exec DEV HOW`: the parent's write, then the exec'd child's.
fn exec_accesses() -> Vec<(char, u8, u64, u64)> {
    vec![('W', 4, 0, 0xa0), ('W', 4, 4, 1), ('R', 4, 8, 0x1002)]
}

#[test]
fn sys_every_exec_path_traces_the_new_image_after_the_environment_lost_the_tracer() {
    let t = Fixture::new("exec", "sys_exec", 4096);
    for how in [
        "execv",
        "execvp",
        "execl",
        "execlp",
        "execle",
        "execve",
        "execve_null",
        "execvpe",
        "execveat",
        "fexecve",
        "syscall_execve",
        "vfork_execv",
        "posix_spawn",
        "posix_spawnp_environ",
        "env_i",
        "env_u",
        "sh",
    ] {
        let (out, ev) = t.record(&[how]);
        assert_exit(&out, 0);
        assert_eq!(accesses(&ev), exec_accesses(), "{how}: {}", stderr(&out));
        assert_eq!(count_maps(&ev), 2, "{how}");
        assert_eq!(
            stdout(&out),
            "child 1 read 0x1002\nrc 1792\n",
            "{how}: the child's output and exit status 7"
        );
        assert!(!stderr(&out).contains("warning"), "{how}: {}", stderr(&out));
    }
}

#[test]
fn sys_system_and_popen_trace_the_command_after_the_environment_lost_the_tracer() {
    let t = Fixture::new("system", "sys_exec", 4096);
    let (out, ev) = t.record(&["system"]);
    assert_exit(&out, 0);
    assert_eq!(accesses(&ev), exec_accesses(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "child 1 read 0x1002\nrc 1792\n");
    let (out, ev) = t.record(&["popen"]);
    assert_exit(&out, 0);
    assert_eq!(accesses(&ev), exec_accesses(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "popen got child 1 read 0x1002\nrc 1792\n");
}

#[test]
fn sys_an_exec_of_an_image_that_never_loads_the_tracer_is_named() {
    let t = Fixture::new("static", "sys_exec", 4096);
    let stat = t.dir.join("sys_exec.static");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs/sys_exec.c");
    let ok = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&stat)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "a static libc is needed (libc6-dev)");
    for how in ["execv", "posix_spawn", "system"] {
        let (out, ev) = t.record(&[how, stat.to_str().unwrap()]);
        assert_exit(&out, 0);
        // The static child's accesses are not in the log: the warning says so.
        assert_eq!(accesses(&ev), vec![('W', 4, 0, 0xa0)], "{how}");
        let err = stderr(&out);
        let want = format!(
            "exec'd {}, which never loaded the tracer (statically linked, set-uid, or not a \
             program for this machine): its accesses are not in the log",
            stat.display()
        );
        assert_eq!(err.matches(&want).count(), 1, "{how}: {err}");
        assert!(err.contains("mmio-trace: warning: process "), "{how}: {err}");
    }
    // A failed exec is no untraced image.
    let (out, _) = t.record(&["execv", "/nonexistent/prog"]);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("never loaded"), "{}", stderr(&out));
}
