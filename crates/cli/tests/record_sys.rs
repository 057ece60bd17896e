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
    let mut failed = Vec::new();
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
        "execveat_fd",
        "syscall_execve",
        "vfork_execv",
        "posix_spawn",
        "posix_spawnp_environ",
        "env_i",
        "env_u",
        "sh",
    ] {
        let (out, ev) = t.record(&[how]);
        let ok = code(&out) == Some(0)
            && accesses(&ev) == exec_accesses()
            && count_maps(&ev) == 2
            // The child's output and exit status 7.
            && stdout(&out) == "child 1 read 0x1002\nrc 1792\n"
            && !stderr(&out).contains("warning");
        if !ok {
            failed.push(format!(
                "{how}: {:?} {:?} {:?} {}",
                code(&out),
                accesses(&ev),
                stdout(&out),
                stderr(&out)
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
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
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs/sys_exec.c");
    let ok = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&stat)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "a static libc is needed (libc6-dev)");
    // An exec made by the program (or its shell) hands the process over to the ptrace
    // route first (posix_spawn: the spawning thread, whose child the route follows):
    // the static child is traced, nothing is reported.
    for how in ["execv", "posix_spawn", "system", "fexecve", "execveat_fd"] {
        let (out, ev) = t.record(&[how, stat.to_str().unwrap()]);
        assert_exit(&out, 0);
        assert_eq!(accesses(&ev), exec_accesses(), "{how}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("never attached"),
            "{how}: {}",
            stderr(&out)
        );
    }
    // Forced onto the preload route, none is: the warning names each.
    for how in ["execv", "posix_spawn", "system", "fexecve", "execveat_fd"] {
        let (out, ev) = t.record_with(&["--route", "preload"], &[how, stat.to_str().unwrap()]);
        assert_exit(&out, 0);
        // The static child's accesses are not in the log: the warning says so.
        assert_eq!(accesses(&ev), vec![('W', 4, 0, 0xa0)], "{how}");
        let err = stderr(&out);
        let want = format!(
            "exec'd {}, which never attached to the recording (statically linked, set-uid, \
             not a program for this machine, or it could not reach the recorder): its \
             accesses are not in the log",
            stat.display()
        );
        assert_eq!(err.matches(&want).count(), 1, "{how}: {err}");
        // And the log says it too, in its last marker.
        let marks = mark_texts(&ev);
        let last = marks.last().map(String::as_str).unwrap_or("");
        assert!(
            last.starts_with("process ") && last.ends_with(&want),
            "{how}: {marks:?}"
        );
        assert!(
            err.contains("mmio-trace: warning: process "),
            "{how}: {err}"
        );
    }
    // A failed exec is no untraced image (nor a failed spawn, nor a shell's failed exec).
    for how in ["execv", "posix_spawn", "system", "popen"] {
        let (out, _) = t.record(&[how, "/nonexistent/prog"]);
        assert_exit(&out, 0);
        assert!(
            !stderr(&out).contains("never loaded"),
            "{how}: {}",
            stderr(&out)
        );
    }
}

/// (direction, bytes, map, physical address, call) of every kernel access, in order.
fn kernel_accesses(events: &[Event]) -> Vec<(char, u64, i64, u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Kernel(k) => Some((
                if k.dir == Direction::Read { 'R' } else { 'W' },
                k.len,
                k.map_id,
                k.phys,
                String::from_utf8_lossy(&k.call).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The kernel accesses `sys_buf` makes (see its source), in order, run in this test's
/// working directory.
fn sys_buf_kernel_accesses() -> Vec<(char, u64, i64, u64, String)> {
    // The bytes of the working directory, NUL included (`getcwd`).
    #[allow(non_snake_case)]
    let CWD_LEN = std::env::current_dir().unwrap().as_os_str().len() as u64 + 1;
    let list: &[(char, u64, i64, u64, &str)] = &[
        ('R', 64, 1, 0x40, "write"),
        ('W', 32, 1, 0x100, "read"),
        ('R', 32, 1, 0x0, "write"),
        ('W', 8, 1, 0xff8, "read"),
        ('W', 8, 2, 0x1000, "read"),
        ('W', 3, 2, 0x1030, "read"),
        ('R', 16, 2, 0x1010, "pwrite"),
        ('W', 16, 2, 0x1020, "pread"),
        ('R', 8, 2, 0x1040, "pwritev"),
        ('W', 6, 1, 0x48, "preadv"),
        ('R', 8, 2, 0x1040, "pwritev2"),
        ('W', 6, 1, 0x48, "preadv2"),
        ('R', 8, 2, 0x1040, "writev"),
        ('W', 6, 1, 0x48, "readv"),
        ('R', 12, 1, 0x200, "send"),
        ('W', 12, 2, 0x1200, "recv"),
        ('R', 4, 1, 0x210, "sendto"),
        ('W', 4, 2, 0x1210, "recvfrom"),
        ('R', 4, 1, 0x220, "sendmsg"),
        ('R', 2, 1, 0xffe, "sendmsg"),
        ('R', 2, 2, 0x1000, "sendmsg"),
        ('W', 8, 2, 0x1230, "recvmsg"),
        ('R', 4, 1, 0x240, "sendmmsg"),
        ('R', 2, 1, 0x244, "sendmmsg"),
        ('W', 4, 2, 0x1240, "recvmmsg"),
        ('W', 2, 2, 0x1248, "recvmmsg"),
        ('R', 4, 1, 0x400, "futex"),
        ('R', 4, 1, 0x400, "futex"),
        ('W', 4, 1, 0x500, "ioctl"),
        ('W', 2, 1, 0xffe, "ioctl"),
        ('W', 2, 2, 0x1000, "ioctl"),
        ('W', 144, 1, 0x600, "fstat"),
        ('W', 64, 1, 0xfc0, "stat"),
        ('W', 80, 2, 0x1000, "stat"),
        ('W', 144, 2, 0x1600, "lstat"),
        ('W', 144, 2, 0x1700, "fstatat"),
        ('W', 256, 2, 0x1800, "statx"),
        ('W', 32, 1, 0x800, "getrandom"),
        ('W', 8, 1, 0x900, "pipe"),
        ('W', 8, 1, 0x908, "pipe2"),
        ('W', 8, 1, 0x910, "socketpair"),
        ('R', 8, 1, 0xa00, "write"),
        ('W', 8, 2, 0x1a00, "read"),
        ('W', 144, 2, 0x1b00, "fstat"),
        ('W', 8, 2, 0x1c00, "getrandom"),
        ('W', 16, 2, 0x1e40, "getrandom"),
        ('W', 15, 1, 0xb00, "readlink"),
        ('W', 4, 1, 0xffc, "readlinkat"),
        ('W', 11, 2, 0x1000, "readlinkat"),
        ('W', CWD_LEN, 2, 0x1d00, "getcwd"),
        ('W', 256, 2, 0x1f00, "uname"),
        ('R', 16, 1, 0xc00, "poll"),
        ('W', 2, 1, 0xc06, "poll"),
        ('W', 2, 1, 0xc0e, "poll"),
        ('W', 4, 2, 0x1e80, "waitpid"),
        ('R', 4096, 1, 0x0, "fwrite"),
        ('W', 4096, 2, 0x1000, "fread"),
        ('R', 8, 1, 0xd00, "write"),
    ];
    list.iter()
        .map(|&(d, n, m, p, c)| (d, n, m, p, c.to_string()))
        .collect()
}

/// The `kernel cannot reach` markers of `events`, in order.
fn unreached_marks(events: &[Event]) -> Vec<String> {
    mark_texts(events)
        .into_iter()
        .filter(|m| m.starts_with("kernel cannot reach "))
        .collect()
}

/// The bytes of the scratch file the program keeps beside device `dev`.
fn scratch_of(dev: &std::path::Path) -> Vec<u8> {
    std::fs::read(format!("{}.scratch", dev.display())).unwrap()
}

/// Device bytes that differ between any two runs: random bytes and descriptor numbers
/// (map 1's page is copied over map 2's by `fwrite` and `fread` at the end).
const VARYING: [std::ops::Range<usize>; 7] = [
    0x800..0x820,
    0x1800..0x1820,
    0x1900..0x1918,
    0x900..0x918,
    0x1c00..0x1c08,
    0x1e00..0x1e10,
    0x1e40..0x1e50,
];

#[test]
fn sys_calls_on_device_memory_return_what_they_return_natively_and_are_logged() {
    let t = Fixture::new("buf", "sys_buf", 8192);
    let initial = std::fs::read(&t.dev).unwrap();
    let native_dev = t.dir.join("native.bin");
    std::fs::write(&native_dev, &initial).unwrap();
    let native = Command::new(&t.exe).arg(&native_dev).output().unwrap();
    assert!(native.status.success(), "{}", stderr(&native));

    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), stdout(&native), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("write = 64\n"));
    assert!(stdout(&out).contains("read into read-only = -1 errno 14\n"));

    let mut traced = std::fs::read(&t.dev).unwrap();
    let mut nat = std::fs::read(&native_dev).unwrap();
    for r in VARYING {
        assert_ne!(traced[r.clone()], initial[r.clone()], "{r:x?} written");
        traced[r.clone()].fill(0);
        nat[r].fill(0);
    }
    assert_eq!(traced, nat, "the device's final contents");
    assert_ne!(traced, initial);
    assert_eq!(scratch_of(&t.dev), scratch_of(&native_dev));

    // The program never touches the device itself: only the kernel does, and
    // clock_gettime's two stores (as the vDSO makes them for the clocks it serves).
    let stores: Vec<_> = accesses(&ev).iter().map(|a| (a.0, a.1, a.2)).collect();
    assert_eq!(stores, vec![('W', 8, 0x1e00), ('W', 8, 0x1e08)]);
    assert_eq!(kernel_accesses(&ev), sys_buf_kernel_accesses());
    let pid = ev
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(m.pid),
            _ => None,
        })
        .unwrap();
    assert!(ev
        .iter()
        .all(|e| !matches!(e, Event::Kernel(KernelAccess { pid: p, .. }) if *p != pid)));
    assert_time_ordered(&ev);
}

#[test]
fn sys_calls_on_device_memory_without_an_alias_fail_and_say_so() {
    let t = Fixture::new("noalias", "sys_buf", 8192);
    let (out, ev) = t.record_with(&["--no-alias"], &[]);
    assert_exit(&out, 0);
    // The kernel cannot reach pages that are closed and have no alias: EFAULT, as before,
    // but never silently.
    assert!(
        stdout(&out).starts_with("write = -1 errno 14\n"),
        "{}",
        stdout(&out)
    );
    let unreached = unreached_marks(&ev);
    assert_eq!(
        unreached.first().map(String::as_str),
        Some("kernel cannot reach 64 bytes of map 1 at 0x40 (write): no alias mapping, the call fails with EFAULT")
    );
    assert!(unreached.len() > 20, "{unreached:#?}");
    assert!(
        stderr(&out).contains(&format!(
            "mmio-trace: warning: {} system calls could not be handed device memory (a mapping \
             without an alias, or a buffer over too many pieces) and failed with EFAULT (see \
             the `kernel cannot reach` markers)",
            unreached.len()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(kernel_accesses(&ev), vec![]);
}

#[test]
fn sys_kernel_accesses_convert_exactly_and_show_and_stats_know_them() {
    let t = Fixture::new("tools", "sys_buf", 8192);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    let n = kernel_accesses(&ev).len();
    let bytes: u64 = kernel_accesses(&ev).iter().map(|k| k.1).sum();
    let text = trace_log(&t.dir);
    let bin = t.dir.join("trace.mmtb");
    let back = t.dir.join("back.log");
    let tool = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    tool(&[
        "convert".as_ref(),
        "--to".as_ref(),
        "binary".as_ref(),
        os(&text),
        os(&bin),
    ]);
    tool(&[
        "convert".as_ref(),
        "--to".as_ref(),
        "text".as_ref(),
        os(&bin),
        os(&back),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&text).unwrap());
    assert_eq!(read_log(&bin), ev);
    let stats = tool(&["stats".as_ref(), os(&text)]);
    assert!(
        stats.contains(&format!(
            "system calls' accesses to device memory: {n} ({bytes} bytes)\n"
        )),
        "{stats}"
    );
    let show = tool(&["show".as_ref(), os(&bin)]);
    let pid = ev.iter().find_map(|e| e.pid()).unwrap();
    assert!(
        show.contains(&format!(
            "KERNEL wrote 32 bytes at 0x00000100 by read()  map 1  pid {pid}\n"
        )),
        "{show}"
    );
    assert_eq!(show.matches("KERNEL ").count(), n);
    // Recorded straight into the binary format: the same kernel accesses.
    let (out, ev) = t.record_with(&["--format", "binary"], &[]);
    assert_exit(&out, 0);
    assert_eq!(kernel_accesses(&ev), sys_buf_kernel_accesses());
}

#[test]
fn sys_buffers_over_pages_the_rules_leave_open_and_over_too_many_pieces() {
    let t = Fixture::new("many", "sys_many", 8 * 4096);
    let initial = std::fs::read(&t.dev).unwrap();
    // Every other page traced: 8 pieces, one vectored call; only traced pages logged.
    let (out, ev) = t.record_with(
        &[
            "--range",
            "0x0-0x1000,0x2000-0x3000,0x4000-0x5000,0x6000-0x7000",
        ],
        &["range"],
    );
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "write 32768\npread 32768\n",
        "{}",
        stderr(&out)
    );
    let mut want = Vec::new();
    for (d, call) in [('R', "write"), ('W', "pread")] {
        for p in [0x0, 0x2000, 0x4000, 0x6000] {
            want.push((d, 4096, 1, p, call.to_string()));
        }
    }
    assert_eq!(kernel_accesses(&ev), want);
    assert_eq!(std::fs::read(&t.dev).unwrap(), initial);
    assert_eq!(scratch_of(&t.dev), initial);

    // 17 pieces: passed as it is; the kernel fails it, and the log and stderr say so.
    let (out, ev) = t.record(&["many"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "write -1 errno 14\n");
    let marks = unreached_marks(&ev);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(
        marks[0].starts_with("kernel cannot reach 69632 bytes at virtual address 0x")
            && marks[0].ends_with(
                " (write): the buffer spans more than 16 pieces, the call fails with EFAULT"
            ),
        "{}",
        marks[0]
    );
    assert!(
        stderr(&out).contains("warning: 1 system calls could not be handed device memory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sys_exec_notes_hold_no_ring_for_images_that_never_touch_the_device() {
    // 300 exec'd processes alive at once (more than the recorder's 256 rings), then a
    // device access: its event must find a ring at once.
    let t = Fixture::new("live", "sys_live", 4096);
    let (out, ev) = t.record(&["300"]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "300 ready 300 ended well\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(accesses(&ev), vec![('W', 4, 0, 0x5a)]);
    assert_none_lost(&ev);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
