//! Attach diagnostics: each reason attaching fails, with the exact message saying what to
//! change; and pidfd_getfd.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;

use common::{wait_blocked, Helper};
use mmio_trace_ptrace::{
    check_attach, detach, diagnose, interrupt, pidfd_getfd, seize, seize_all, wait_tid,
    AttachError, AttachFacts, Error, Options, Stop,
};

fn gone_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

#[test]
fn no_such_process() {
    let pid = gone_pid();
    let e = check_attach(pid).unwrap_err();
    assert_eq!(e, AttachError::NoSuchProcess { pid });
    assert_eq!(
        e.to_string(),
        format!("no process {pid} (check the pid, e.g. `ps -p {pid}`)")
    );
    let e = seize(pid, Options::NONE).unwrap_err();
    assert!(
        matches!(e, Error::Attach(AttachError::NoSuchProcess { pid: p }) if p == pid),
        "{e}"
    );
}

#[test]
fn the_recorder_itself() {
    let me = std::process::id() as i32;
    let e = check_attach(me).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("process {me} is mmio-trace itself; give the pid of the program to trace")
    );
    // SAFETY: gettid has no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    assert_eq!(
        check_attach(tid).unwrap_err(),
        AttachError::OwnProcess { pid: tid }
    );
    // The kernel refuses too (EPERM), explained the same way.
    let e = seize(tid, Options::NONE).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("process {tid} is mmio-trace itself; give the pid of the program to trace")
    );
}

#[test]
fn zombie() {
    let c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    let t0 = std::time::Instant::now();
    loop {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if st.contains(") Z ") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 60, "{st}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let e = check_attach(pid).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("process {pid} (true) has already exited (a zombie waiting for its parent); there is nothing left to trace")
    );
    drop(c);
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

#[test]
fn already_traced_names_the_tracer() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize(pid, Options::NONE).unwrap();
    // SAFETY: gettid has no arguments.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let comm = std::fs::read_to_string(format!("/proc/{me}/comm"))
        .unwrap()
        .trim()
        .to_string();
    let want = format!(
        "process {pid} (e_block) is already traced by process {me} ({comm}); stop that tracer (debugger, strace, another mmio-trace) first"
    );
    // From another thread (as another tracer would see it) and from the kernel's EPERM.
    let other = std::thread::spawn(move || check_attach(pid).unwrap_err().to_string())
        .join()
        .unwrap();
    assert_eq!(other, want);
    assert_eq!(seize(pid, Options::NONE).unwrap_err().to_string(), want);
    interrupt(pid).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Interrupt));
    detach(pid, 0).unwrap();
    assert_eq!(check_attach(pid), Ok(()));
    h.write_stdin(b"ok");
    assert_eq!(h.line(), "ret=2 errno=0 data=ok");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn not_dumpable_is_detected() {
    let mut h = Helper::start("e_nodump", &[]);
    let pid = h.pid();
    let f = AttachFacts::gather(pid);
    assert_eq!(f.dumpable, Some(false), "{f:?}");
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(f.uids, [65534; 3]);
        // Root may attach anyway.
        assert_eq!(check_attach(pid), Ok(()));
        // As that user without CAP_SYS_PTRACE it would be refused:
        let as_user = AttachFacts {
            our_uid: 65534,
            our_gid: 65534,
            cap_sys_ptrace: false,
            ..f.clone()
        };
        assert_eq!(
            diagnose(&as_user),
            Some(AttachError::NotDumpable {
                pid,
                comm: "e_nodump".into()
            })
        );
    } else {
        assert_eq!(
            check_attach(pid),
            Err(AttachError::NotDumpable {
                pid,
                comm: "e_nodump".into()
            })
        );
    }
    assert_eq!(
        AttachError::NotDumpable { pid, comm: "e_nodump".into() }.to_string(),
        format!("process {pid} (e_nodump) is not dumpable (it called prctl(PR_SET_DUMPABLE, 0), changed its credentials, or runs a set-uid or unreadable program); attaching to it needs root (CAP_SYS_PTRACE)")
    );
    h.write_stdin(b"x");
    assert_eq!(h.exit_code(), 0);
}

fn facts() -> AttachFacts {
    AttachFacts {
        pid: 4242,
        exists: true,
        state: 'S',
        comm: "daemon".into(),
        uids: [1000; 3],
        gids: [1000; 3],
        our_uid: 1000,
        our_gid: 1000,
        dumpable: Some(true),
        ..AttachFacts::default()
    }
}

#[test]
fn reasons_and_their_messages() {
    assert_eq!(diagnose(&facts()), None);
    let e = diagnose(&AttachFacts {
        uids: [0; 3],
        gids: [0; 3],
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "process 4242 (daemon) runs as user 0 and mmio-trace as user 1000; run mmio-trace as that user, or as root (CAP_SYS_PTRACE)"
    );
    let e = diagnose(&AttachFacts {
        uids: [1000, 0, 0],
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "process 4242 (daemon) is a set-uid or set-gid program (uids [1000, 0, 0], gids [1000, 1000, 1000]: real, effective, saved); attaching to it needs root (CAP_SYS_PTRACE)"
    );
    // Root passes the uid and dumpable checks.
    assert_eq!(
        diagnose(&AttachFacts {
            uids: [0; 3],
            cap_sys_ptrace: true,
            dumpable: Some(false),
            ..facts()
        }),
        None
    );
    let e = diagnose(&AttachFacts {
        yama_scope: Some(1),
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "attaching to process 4242 (daemon) is restricted by Yama (kernel.yama.ptrace_scope = 1: only a tracer's own descendants, or a tracer the program named with prctl(PR_SET_PTRACER)); run mmio-trace as root (or give it CAP_SYS_PTRACE), allow attaching for all with `sudo sysctl kernel.yama.ptrace_scope=0`, or start the program under `mmio-trace record -- PROGRAM` instead"
    );
    assert_eq!(
        diagnose(&AttachFacts {
            yama_scope: Some(1),
            descendant: true,
            ..facts()
        }),
        None
    );
    assert_eq!(
        diagnose(&AttachFacts {
            yama_scope: Some(1),
            cap_sys_ptrace: true,
            ..facts()
        }),
        None
    );
    let e = diagnose(&AttachFacts {
        yama_scope: Some(2),
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "attaching to process 4242 (daemon) is restricted by Yama (kernel.yama.ptrace_scope = 2: only tracers with CAP_SYS_PTRACE); run mmio-trace as root, or lower the setting with `sudo sysctl kernel.yama.ptrace_scope=1` (or 0)"
    );
    assert_eq!(
        diagnose(&AttachFacts {
            yama_scope: Some(2),
            cap_sys_ptrace: true,
            ..facts()
        }),
        None
    );
    let e = diagnose(&AttachFacts {
        yama_scope: Some(3),
        cap_sys_ptrace: true,
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "attaching to process 4242 (daemon) is restricted by Yama (kernel.yama.ptrace_scope = 3: no process may attach, and the setting cannot be lowered until reboot); start the program under `mmio-trace record -- PROGRAM` instead"
    );
    let e = diagnose(&AttachFacts {
        tracer: Some((77, "gdb".into())),
        ..facts()
    })
    .unwrap();
    assert_eq!(
        e.to_string(),
        "process 4242 (daemon) is already traced by process 77 (gdb); stop that tracer (debugger, strace, another mmio-trace) first"
    );
    assert_eq!(
        AttachError::Denied { pid: 4242, comm: "daemon".into() }.to_string(),
        "not permitted to attach to process 4242 (daemon): no uid, dumpable or Yama reason found, so a security module (SELinux, AppArmor) or a user namespace probably forbids it; run mmio-trace as root, or start the program under `mmio-trace record -- PROGRAM` instead"
    );
}

#[test]
fn pidfd_getfd_duplicates_the_targets_open_file() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    // The child's stdout is our pipe: writing through its duplicated fd 1 reaches us.
    let fd = pidfd_getfd(pid, 1).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(b"through its fd\n").unwrap();
    assert_eq!(h.line(), "through its fd");
    assert!(f.as_raw_fd() > 2);
    let e = pidfd_getfd(pid, 999).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("process {pid} has no file descriptor 999: Bad file descriptor (os error 9)")
    );
    let gone = gone_pid();
    assert_eq!(
        pidfd_getfd(gone, 0).unwrap_err().to_string(),
        format!("no process {gone} (check the pid, e.g. `ps -p {gone}`)")
    );
    h.write_stdin(b"z");
    assert_eq!(h.line(), "ret=1 errno=0 data=z");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn seize_all_reports_why_it_cannot_start() {
    let me = std::process::id() as i32;
    let e = seize_all(me, Options::NONE).unwrap_err();
    assert!(
        matches!(e, Error::Attach(AttachError::OwnProcess { pid }) if pid == me),
        "{e}"
    );
    let gone = gone_pid();
    let e = seize_all(gone, Options::NONE).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no process {gone} (check the pid, e.g. `ps -p {gone}`)")
    );
}
