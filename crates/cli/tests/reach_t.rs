//! The programs LD_PRELOAD cannot reach, recorded by plain `record -- PROGRAM` (the route
//! chosen automatically) and compared with the preload route where both apply: static
//! glibc and musl programs, a Go program on several OS threads, raw `mmap`/`munmap`
//! system calls, a set-uid program, `sh -c` chains that cross routes, and the program's
//! own SIGSEGV handlers under each route.
//!
//! Tools these tests need (installed by scripts/test): cc, musl-gcc (musl-tools), go
//! (golang-go), setpriv (util-linux); the set-uid test runs as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::Event;

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/programs")
}

/// Compiles tests/programs/SRC.c into DIR/OUT with `compiler` and `flags`.
#[track_caller]
fn cc(dir: &Path, src: &str, out: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let exe = dir.join(out);
    let st = Command::new(compiler)
        .args(["-O1", "-pthread"])
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(programs().join(format!("{src}.c")))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{compiler} is needed for this test ({e}); Debian: apt-get install {}",
                if compiler == "musl-gcc" {
                    "musl-tools"
                } else {
                    "gcc"
                }
            )
        });
    assert!(st.success(), "{compiler} {flags:?} {src}.c");
    exe
}

/// Records `program args...` (the device declared) with `opts`; output and events.
fn rec(
    dir: &Path,
    dev: &Path,
    opts: &[&str],
    program: &[&std::ffi::OsStr],
) -> (Output, Vec<Event>) {
    record_with(dir, dev, opts, program)
}

/// What t_regs does to its device, in order.
fn regs_accesses() -> Vec<(char, u8, u64, u64)> {
    vec![
        ('W', 4, 0x10, 0x1122_3344),
        ('W', 1, 0x20, 0xab),
        ('W', 2, 0x22, 0xbeef),
        ('W', 8, 0x28, 0x0102_0304_0506_0708),
        ('R', 4, 0x10, 0x1122_3344),
        ('R', 4, 0x1000, 0x1400),
        ('R', 2, 0x22, 0xbeef),
    ]
}

/// Asserts one clean run of t_regs (or `runs` of them in a chain): status, what it
/// printed, the exact accesses, the device after.
#[track_caller]
fn assert_regs_run(out: &Output, ev: &[Event], runs: usize, status: i32) {
    assert_exit(out, status);
    let line = "read 11223344 1400 beef euid 0\n";
    assert_eq!(stdout(out), line.repeat(runs), "stderr {}", stderr(out));
    let want: Vec<_> = (0..runs).flat_map(|_| regs_accesses()).collect();
    assert_eq!(accesses(ev), want, "stderr {}", stderr(out));
    assert_eq!(count_maps(ev), runs);
    assert_none_lost(ev);
    assert!(
        !stderr(out).contains("never attached"),
        "an image ran untraced: {}",
        stderr(out)
    );
}

/// Runs `sh -c SCRIPT` recorded, a chain of t_regs runs ending with `echo sh-after $?`,
/// and asserts `runs` clean runs of t_regs in it (status, output, accesses, mappings).
#[track_caller]
fn sh_chain(dir: &Path, dev: &Path, script: &str, runs: usize) -> (Output, Vec<Event>) {
    let (out, ev) = rec(
        dir,
        dev,
        &[],
        &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
    );
    assert_exit(&out, 0);
    let line = "read 11223344 1400 beef euid 0\n";
    assert_eq!(
        stdout(&out),
        format!("{}sh-after 7\n", line.repeat(runs)),
        "stderr {}",
        stderr(&out)
    );
    let want: Vec<_> = (0..runs).flat_map(|_| regs_accesses()).collect();
    assert_eq!(accesses(&ev), want, "stderr {}", stderr(&out));
    assert_eq!(count_maps(&ev), runs);
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
    (out, ev)
}

#[test]
fn a_static_glibc_program_is_traced_like_its_dynamic_build() {
    let dir = scratch("t-static");
    let dev = device(&dir, 8192);
    let dynamic = cc(&dir, "t_regs", "dyn", "cc", &[]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&dynamic), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    // The usual route is not named: such a trace is as it always was.
    assert_eq!(route_marks(&ev), Vec::<String>::new());
    let preload = accesses(&ev);

    let dev = device(&dir, 8192);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&stat), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (static executable)"]
    );
    assert_eq!(accesses(&ev), preload);
    assert_device_after(&dev, &writes_of(&preload));
}

#[test]
fn a_static_pie_program_is_traced() {
    let dir = scratch("t-spie");
    let dev = device(&dir, 8192);
    let exe = cc(&dir, "t_regs", "spie", "cc", &["-static-pie"]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (static executable)"]
    );
}

#[test]
fn a_static_musl_program_is_traced() {
    let dir = scratch("t-musl");
    let dev = device(&dir, 8192);
    let exe = cc(&dir, "t_regs", "musl", "musl-gcc", &["-static"]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (static executable)"]
    );
    assert_device_after(&dev, &writes_of(&regs_accesses()));
}

#[test]
fn a_dynamic_musl_program_is_traced_alone_and_from_a_glibc_shell() {
    // musl's loader cannot load the preload library (built against glibc): such a
    // program, started by the recorder or exec'd by a program on the preload route, goes
    // the inject route instead of failing to start.
    let dir = scratch("t-musl-dyn");
    let dev = device(&dir, 8192);
    let exe = cc(&dir, "t_regs", "musld", "musl-gcc", &[]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (musl program)"]
    );
    assert_device_after(&dev, &writes_of(&regs_accesses()));

    // glibc's sh (preload) runs it, then a glibc build of the same driver, which execs it.
    let dev = device(&dir, 8192);
    let glibc = cc(&dir, "t_regs", "dyn", "cc", &[]);
    let script = format!(
        "{m} {d}; {g} {d} {m} {d}; echo sh-after $?",
        m = exe.display(),
        g = glibc.display(),
        d = dev.display()
    );
    let (out, ev) = sh_chain(&dir, &dev, &script, 3);
    assert!(!stderr(&out).contains("Error"), "{}", stderr(&out));
    assert_none_lost(&ev);

    // The preload route forced on it: said before the loader refuses.
    let (out, _) = rec(&dir, &dev, &["--route", "preload"], &[os(&exe), os(&dev)]);
    assert!(
        stderr(&out).starts_with(&format!(
            "mmio-trace: warning: {} is a musl program: its loader cannot load the preload library (built against glibc) and will not start it (--route inject traces it)\n",
            exe.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_go_program_on_several_threads_is_traced_register_by_register() {
    let dir = scratch("t-go");
    let dev = device(&dir, 4096);
    let exe = go_build(&dir, "t_go");
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev)]);
    assert_exit(&out, 5);
    assert_eq!(
        stdout(&out),
        "got [a002 a012 a022 a032 feed] threads 4\n",
        "stderr {}",
        stderr(&out)
    );
    assert_eq!(route_marks(&ev), ["mmio-trace: route inject (Go program)"]);
    assert_go_trace(&dev, &ev);
}

/// What t_munmap logs: the write and read before the raw unmap, nothing after.
fn munmap_accesses() -> Vec<(char, u8, u64, u64)> {
    vec![('W', 4, 0x40, 0x55), ('R', 4, 0x40, 0x55)]
}

#[track_caller]
fn assert_munmap_run(dev: &Path, out: &Output, ev: &[Event]) {
    assert_exit(out, 9);
    assert_eq!(
        stdout(out),
        "before 55 heap deadbeef cafef00d\n",
        "stderr {}",
        stderr(out)
    );
    assert_eq!(accesses(ev), munmap_accesses());
    assert_eq!(count_maps(ev), 1);
    // The heap's writes stayed in the heap.
    assert_device_after(dev, &[(0x40, 0x55, 4)]);
}

/// `asm` too: inline `syscall` instructions are routed to the tracer on the preload
/// route (a filter on those instructions only).
#[test]
fn raw_mmap_and_munmap_through_libc_syscall_under_the_automatic_route() {
    for mode in ["libc", "sys", "asm"] {
        let dir = scratch(&format!("t-munmap-{mode}"));
        let dev = device(&dir, 4096);
        let exe = cc(&dir, "t_munmap", "t_munmap", "cc", &[]);
        let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev), mode.as_ref()]);
        assert_munmap_run(&dev, &out, &ev);
        assert_eq!(route_marks(&ev), Vec::<String>::new());
    }
}

#[test]
fn raw_syscall_instructions_are_traced_by_the_ptrace_route() {
    for mode in ["libc", "sys", "asm"] {
        let dir = scratch(&format!("t-munmap-pt-{mode}"));
        let dev = device(&dir, 4096);
        let exe = cc(&dir, "t_munmap", "t_munmap", "cc", &[]);
        let (out, ev) = rec(
            &dir,
            &dev,
            &["--route", "ptrace"],
            &[os(&exe), os(&dev), mode.as_ref()],
        );
        assert_munmap_run(&dev, &out, &ev);
        assert_eq!(
            route_marks(&ev),
            ["mmio-trace: route ptrace (forced by --route)"]
        );
    }
}

#[test]
fn a_static_program_with_raw_munmap_keeps_its_heap() {
    let dir = scratch("t-munmap-static");
    let dev = device(&dir, 4096);
    let exe = cc(&dir, "t_munmap", "t_munmap", "cc", &["-static"]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev), "asm".as_ref()]);
    assert_munmap_run(&dev, &out, &ev);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (static executable)"]
    );
}

#[test]
fn a_sh_chain_crosses_routes() {
    // Dynamic sh (preload) runs a static driver (handed over to ptrace), which execs
    // the dynamic build (still ptrace; the preload library it inherits stays dormant).
    let dir = scratch("t-chain");
    let dev = device(&dir, 8192);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let dynamic = cc(&dir, "t_regs", "dyn", "cc", &[]);
    let script = format!(
        "{} {} {} {}; echo sh-after $?",
        stat.display(),
        dev.display(),
        dynamic.display(),
        dev.display()
    );
    let (_, ev) = sh_chain(&dir, &dev, &script, 2);
    // Both images are one process: the static one, and what it exec'd.
    let pids: Vec<u32> = accesses_by_pid(&ev).iter().map(|a| a.0).collect();
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "{pids:?}");
    assert_eq!(route_marks(&ev), Vec::<String>::new());
    assert_none_lost(&ev);
}

#[test]
fn a_shell_loop_of_static_and_dynamic_drivers_is_traced_whole() {
    // Three static and three dynamic runs, alternating, from one shell.
    let dir = scratch("t-chain-loop");
    let dev = device(&dir, 8192);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let dynamic = cc(&dir, "t_regs", "dyn", "cc", &[]);
    let script = format!(
        "for i in 1 2 3; do {s} {d}; {y} {d}; done; exit 3",
        s = stat.display(),
        y = dynamic.display(),
        d = dev.display()
    );
    let (out, ev) = rec(
        &dir,
        &dev,
        &[],
        &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
    );
    assert_exit(&out, 3);
    let want: Vec<_> = (0..6).flat_map(|_| regs_accesses()).collect();
    assert_eq!(accesses(&ev), want, "stderr {}", stderr(&out));
    assert_eq!(count_maps(&ev), 6);
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
}

#[test]
fn a_set_uid_program_run_by_another_user_is_traced_and_really_set_uid() {
    // SAFETY: getuid cannot fail.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test makes a set-uid-root copy and runs it as another user: run it as root"
    );
    let dir = scratch("t-setuid");
    let dev = device(&dir, 8192);
    let exe = cc(&dir, "t_regs", "suid", "cc", &[]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Only root may open the device: the program must really run as root.
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setpriv = which("setpriv");
    let (out, ev) = rec(
        &dir,
        &dev,
        &[],
        &[
            os(&setpriv),
            "--reuid=65534".as_ref(),
            "--regid=65534".as_ref(),
            "--clear-groups".as_ref(),
            "--".as_ref(),
            os(&exe),
            os(&dev),
        ],
    );
    // "euid 0": it ran set-uid; every access is in the trace.
    assert_regs_run(&out, &ev, 1, 7);
}

#[test]
fn own_sigsegv_handlers_get_their_own_faults_under_each_route() {
    let dir = scratch("t-segv");
    let dynamic = cc(&dir, "t_segv", "dyn", "cc", &[]);
    let stat = cc(&dir, "t_segv", "stat", "cc", &["-static"]);
    for (exe, opts, mark) in [
        (
            &dynamic,
            &["--route", "preload"][..],
            "mmio-trace: route preload (forced by --route)",
        ),
        (
            &dynamic,
            &["--route", "ptrace"][..],
            "mmio-trace: route ptrace (forced by --route)",
        ),
        (
            &stat,
            &[][..],
            "mmio-trace: route inject (static executable)",
        ),
    ] {
        let dev = device(&dir, 4096);
        let (out, ev) = rec(&dir, &dev, opts, &[os(exe), os(&dev)]);
        // The program checks every si_addr itself: status 0.
        assert_exit(&out, 0);
        let o = stdout(&out);
        assert!(
            o.starts_with("h1 ") && o.contains(" h2 ") && o.ends_with(" reg 77 77\n"),
            "{o}"
        );
        assert_eq!(
            accesses(&ev),
            [
                ('W', 4, 0x30, 0x77),
                ('R', 4, 0x30, 0x77),
                ('R', 4, 0x30, 0x77)
            ],
            "{mark}"
        );
        assert_eq!(route_marks(&ev), [mark]);
    }
}

/// The full path of a program in PATH.
#[track_caller]
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is needed for this test (Debian: util-linux)"))
}

#[test]
fn a_static_program_started_by_posix_spawnp_is_traced_and_so_is_its_parent() {
    // Libc's posix_spawn runs the exec in a child that runs none of the preload
    // library's code: the spawning thread is handed over first, the route follows its
    // child. The parent's own accesses are still traced, before and after.
    let dir = scratch("t-spawn");
    let dev = device(&dir, 8192);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    cc(&bin, "t_regs", "t-static-driver", "cc", &["-static"]);
    let parent = cc(&dir, "t_spawn", "t_spawn", "cc", &[]);
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = record_cmd(&dir, &dev, &[])
        .env("PATH", &path)
        .args([os(&parent), os(&dev), "t-static-driver".as_ref()])
        .output()
        .unwrap();
    let ev = read_log(&trace_log(&dir));
    assert_exit(&out, 7);
    assert_eq!(
        stdout(&out),
        "read 11223344 1400 beef euid 0\nparent read 2\n",
        "stderr {}",
        stderr(&out)
    );
    let mut want = vec![('W', 4, 0x300, 1)];
    want.extend(regs_accesses());
    want.extend([('W', 4, 0x300, 2), ('R', 4, 0x300, 2)]);
    assert_eq!(accesses(&ev), want, "stderr {}", stderr(&out));
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
    assert_none_lost(&ev);
}

#[test]
fn replay_refuses_a_program_only_the_ptrace_route_reaches() {
    // Replay's model answers inside the preload library: a static program would touch the
    // real file instead. Said, nothing run.
    let dir = scratch("t-replay");
    let dev = device(&dir, 8192);
    let dynamic = cc(&dir, "t_regs", "dyn", "cc", &[]);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let (out, _) = rec(&dir, &dev, &[], &[os(&dynamic), os(&dev)]);
    assert_exit(&out, 7);
    let before = std::fs::read(&dev).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("replay")
        .arg(trace_log(&dir))
        .arg("-q")
        .arg("-o")
        .arg(dir.join("replay.log"))
        .arg("--device")
        .arg(&dev)
        .arg("--")
        .arg(&stat)
        .arg(&dev)
        .output()
        .unwrap();
    assert_exit(&out, 126);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "mmio-trace: cannot replay into {}: it is a static executable, which the preload library cannot reach, and replay needs the preload route (a dynamically linked glibc build)\n",
            stat.display()
        )
    );
    assert_eq!(std::fs::read(&dev).unwrap(), before);
    assert!(!dir.join("replay.log").exists());
}

/// Asserts what t_go did to its device, exactly, register by register.
#[track_caller]
fn assert_go_trace(dev: &Path, ev: &[Event]) {
    assert_none_lost(ev);
    let all = accesses(ev);
    // Each register's own sequence, exactly (the goroutines interleave in any order).
    // Go's atomic store is an `xchg`: it reads the old value as it writes the new one.
    for i in 0..4u64 {
        let reg = 0x100 + 4 * i;
        let mine: Vec<_> = all.iter().filter(|a| a.2 == reg).copied().collect();
        let v = |k| 0xa000 + 0x10 * i + k;
        assert_eq!(
            mine,
            [
                ('R', 4, reg, u64::from(initial_word(reg))),
                ('W', 4, reg, v(0)),
                ('R', 4, reg, v(0)),
                ('W', 4, reg, v(1)),
                ('R', 4, reg, v(1)),
                ('W', 4, reg, v(2)),
                ('R', 4, reg, v(2))
            ],
            "register {reg:#x}"
        );
    }
    let fifth: Vec<_> = all.iter().filter(|a| a.2 == 0x200).copied().collect();
    assert_eq!(
        fifth,
        [
            ('R', 4, 0x200, u64::from(initial_word(0x200))),
            ('W', 4, 0x200, 0xfeed),
            ('R', 4, 0x200, 0xfeed)
        ]
    );
    assert_eq!(all.len(), 31, "{all:?}");
    // The locked goroutines ran on four OS threads at once: their accesses name them.
    let mut tids: Vec<u32> = accesses_by_pid(ev)
        .into_iter()
        .filter(|a| (0x100..0x110).contains(&a.3))
        .map(|a| a.0)
        .collect();
    tids.sort_unstable();
    tids.dedup();
    assert_eq!(tids.len(), 4, "{tids:?}");
    assert_device_words(
        dev,
        &[
            (0x100, 0xa002),
            (0x104, 0xa012),
            (0x108, 0xa022),
            (0x10c, 0xa032),
            (0x200, 0xfeed),
        ],
    );
}

#[test]
fn a_go_program_started_by_a_shell_is_handed_over() {
    let dir = scratch("t-go-sh");
    let dev = device(&dir, 4096);
    let exe = go_build(&dir, "t_go");
    let script = format!("{} {}; echo after $?", exe.display(), dev.display());
    let (out, ev) = rec(
        &dir,
        &dev,
        &[],
        &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
    );
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "got [a002 a012 a022 a032 feed] threads 4\nafter 5\n",
        "stderr {}",
        stderr(&out)
    );
    assert_go_trace(&dev, &ev);
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
}

#[test]
fn an_unprivileged_recorder_says_a_set_uid_program_runs_without_its_privileges() {
    // SAFETY: getuid cannot fail.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test makes a set-uid-root copy and runs the recorder as another user: run it as root"
    );
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("t-setuid-unpriv");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dev = device(&dir, 8192);
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o666)).unwrap();
    let exe = cc(&dir, "t_regs", "suid", "cc", &[]);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = Command::new(which("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "-o"])
        .arg(trace_log(&dir))
        .arg("--device")
        .arg(&dev)
        .arg("--")
        .arg(&exe)
        .arg(&dev)
        .output()
        .unwrap();
    assert_exit(&out, 7);
    // It ran as the caller (65534), and every access is in the trace all the same.
    assert_eq!(
        stdout(&out),
        "read 11223344 1400 beef euid 65534\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out),
        format!(
            "mmio-trace: warning: {} is a set-uid program: traced by ptrace from a recorder without CAP_SYS_PTRACE, it runs without those privileges (run the recorder as root to keep them)\n",
            exe.display()
        )
    );
    let ev = read_log(&trace_log(&dir));
    assert_eq!(accesses(&ev), regs_accesses());
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (set-uid program)"]
    );
}

#[test]
fn a_static_program_execvp_d_by_name_is_traced() {
    let dir = scratch("t-execvp");
    let dev = device(&dir, 8192);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    cc(&bin, "t_regs", "t-static-driver", "cc", &["-static"]);
    let parent = cc(&dir, "t_spawn", "t_spawn", "cc", &[]);
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = record_cmd(&dir, &dev, &[])
        .env("PATH", &path)
        .args([
            os(&parent),
            os(&dev),
            "t-static-driver".as_ref(),
            "execvp".as_ref(),
        ])
        .output()
        .unwrap();
    let ev = read_log(&trace_log(&dir));
    assert_exit(&out, 7);
    assert_eq!(
        stdout(&out),
        "read 11223344 1400 beef euid 0\n",
        "{}",
        stderr(&out)
    );
    let mut want = vec![('W', 4, 0x300, 1)];
    want.extend(regs_accesses());
    assert_eq!(accesses(&ev), want, "stderr {}", stderr(&out));
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
}

#[test]
fn a_program_with_file_capabilities_is_traced_by_ptrace() {
    let dir = scratch("t-caps");
    let dev = device(&dir, 8192);
    let exe = cc(&dir, "t_regs", "caps", "cc", &[]);
    let st = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(&exe)
        .status()
        .expect("setcap is needed for this test (Debian: apt-get install libcap2-bin)");
    assert!(st.success(), "setcap (run as root)");
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev)]);
    assert_regs_run(&out, &ev, 1, 7);
    assert_eq!(
        route_marks(&ev),
        ["mmio-trace: route inject (file capabilities)"]
    );
}

#[test]
fn a_static_program_execd_by_a_second_thread_is_traced() {
    let dir = scratch("t-threadexec");
    let dev = device(&dir, 8192);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let exe = cc(&dir, "t_threadexec", "t_threadexec", "cc", &[]);
    let (out, ev) = rec(&dir, &dev, &[], &[os(&exe), os(&dev), os(&stat)]);
    assert_exit(&out, 7);
    assert_eq!(
        stdout(&out),
        "read 11223344 1400 beef euid 0\n",
        "{}",
        stderr(&out)
    );
    let mut want = vec![('W', 4, 0x300, 5)];
    want.extend(regs_accesses());
    assert_eq!(accesses(&ev), want, "stderr {}", stderr(&out));
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
}

#[test]
fn static_drivers_started_in_parallel_by_a_shell_are_each_traced_exactly() {
    // Six hand-overs at once: six supervisor threads, each with its own tracee.
    let dir = scratch("t-parallel");
    let dev = device(&dir, 8192);
    let stat = cc(&dir, "t_regs", "stat", "cc", &["-static"]);
    let script = format!(
        "for i in 1 2 3 4 5 6; do {s} {d} > /dev/null & done; wait; exit 4",
        s = stat.display(),
        d = dev.display()
    );
    let (out, ev) = rec(
        &dir,
        &dev,
        &[],
        &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
    );
    assert_exit(&out, 4);
    let all = accesses_by_pid(&ev);
    let mut pids: Vec<u32> = all.iter().map(|a| a.0).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 6, "stderr {}", stderr(&out));
    for pid in pids {
        let mine: Vec<_> = all
            .iter()
            .filter(|a| a.0 == pid)
            .map(|a| (a.1, a.2, a.3, a.4))
            .collect();
        assert_eq!(mine, regs_accesses(), "pid {pid}");
    }
    assert_eq!(count_maps(&ev), 6);
    assert_none_lost(&ev);
    assert!(!stderr(&out).contains("never attached"), "{}", stderr(&out));
}

#[test]
fn a_program_the_recorder_cannot_read_goes_the_preload_route_with_a_note() {
    // An execute-only program: the kernel runs it, the recorder cannot look inside.
    // SAFETY: getuid cannot fail.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test runs the recorder as another user: run it as root"
    );
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("t-unreadable");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dev = device(&dir, 8192);
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o666)).unwrap();
    let exe = cc(&dir, "t_regs", "xonly", "cc", &[]);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = Command::new(which("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "-o"])
        .arg(trace_log(&dir))
        .arg("--device")
        .arg(&dev)
        .arg("--")
        .arg(&exe)
        .arg(&dev)
        .output()
        .unwrap();
    assert_exit(&out, 7);
    assert_eq!(
        stderr(&out),
        format!(
            "mmio-trace: note: cannot read {}: Permission denied (os error 13); the preload route is used (a static, Go or set-uid program would not be traced: --route ptrace traces it)\n",
            exe.display()
        )
    );
    let ev = read_log(&trace_log(&dir));
    assert_eq!(accesses(&ev), regs_accesses());
    assert_eq!(route_marks(&ev), Vec::<String>::new());
}
