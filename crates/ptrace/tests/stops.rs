//! Injection from every kind of stop: each leaves the thread in a stop from which it goes
//! on exactly as it would have (signal info kept, entry stops kept, the call still runs).

mod common;

use common::{build, wait_blocked, Helper};
use mmio_trace_ptrace::{
    cont, detach, seize, seize_all, syscall, syscall_stop, wait_tid, Event, Options, Process, Stop,
    SyscallStop,
};

/// Queues SIGUSR1 with SI_QUEUE and value `v` to thread `tid` of `pid`.
fn sigqueue(pid: i32, tid: i32, v: i32) {
    sigqueue_sig(pid, tid, libc::SIGUSR1, v)
}

/// Queues `sig` with SI_QUEUE and value `v` to thread `tid` of `pid`.
fn sigqueue_sig(pid: i32, tid: i32, sig: i32, v: i32) {
    // SAFETY: an all-zero siginfo_t is valid; the fields set below are the sigqueue layout.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    si.si_signo = sig;
    si.si_code = libc::SI_QUEUE;
    // si_pid, si_uid, si_value follow the three ints at the start (x86-64 layout).
    let words = &mut si as *mut libc::siginfo_t as *mut i32;
    // SAFETY: offsets 4..6 (pid, uid) and 6 (sival_int) lie inside the 128-byte siginfo.
    unsafe {
        *words.add(4) = std::process::id() as i32;
        *words.add(5) = libc::getuid() as i32;
        *words.add(6) = v;
    }
    // SAFETY: the kernel reads one siginfo_t.
    let r = unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, &si) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_signal_arriving_during_an_injection_is_delivered_afterwards_with_its_siginfo() {
    let mut h = Helper::start("e_sig", &[]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    // Queued while the thread is stopped: the first resume of the injection's step meets it.
    sigqueue(pid, pid, 1234);
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    let rq = p.take_requeued();
    assert_eq!(rq.len(), 1, "{rq:?}");
    assert_eq!(
        (rq[0].tid, rq[0].signal, rq[0].exact),
        (pid, libc::SIGUSR1, true)
    );
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"hello");
    assert_eq!(
        h.line(),
        "ret=5 errno=0 data=hello usr1=1 code=-1 value=1234 rt="
    );
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn realtime_signals_arriving_during_an_injection_keep_their_order_and_values() {
    let mut h = Helper::start("e_sig", &[]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let rt = libc::SIGRTMIN() + 1;
    for v in [11, 22, 33] {
        sigqueue_sig(pid, pid, rt, v);
    }
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    let rq = p.take_requeued();
    assert_eq!(
        rq.iter().map(|r| (r.signal, r.exact)).collect::<Vec<_>>(),
        vec![(rt, true); 3],
        "{rq:?}"
    );
    // A second injection meets them again and puts them back again, in order.
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    assert_eq!(p.take_requeued().len(), 3);
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"rt");
    assert_eq!(
        h.line(),
        "ret=2 errno=0 data=rt usr1=0 code=0 value=0 rt=11,22,33"
    );
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_a_signal_delivery_stop_keeps_the_siginfo_to_deliver() {
    let mut h = Helper::start("e_sig", &[]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    sigqueue(pid, pid, 77);
    cont(pid, 0).unwrap();
    let s = wait_tid(pid).unwrap();
    let Stop::Signal {
        signal: libc::SIGUSR1,
        info: Some(i),
    } = s
    else {
        panic!("{s:?}")
    };
    assert_eq!(i.code(), libc::SI_QUEUE);
    let mut p = Process::new(pid);
    let a = p
        .remote_mmap(
            pid,
            0,
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
        .unwrap();
    p.remote_munmap(pid, a, 4096).unwrap();
    assert!(p.take_requeued().is_empty());
    detach(pid, libc::SIGUSR1).unwrap();
    h.write_stdin(b"abc");
    assert_eq!(
        h.line(),
        "ret=3 errno=0 data=abc usr1=1 code=-1 value=77 rt="
    );
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_a_syscall_entry_stop_returns_to_that_entry() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    // The interrupted read restarts: the next stop is its entry.
    syscall(pid, 0).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    let SyscallStop::Entry { nr: 0, args } = syscall_stop(pid).unwrap() else {
        panic!()
    };
    let before = mmio_trace_ptrace::Regs::read(pid).unwrap();
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    assert_eq!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Entry { nr: 0, args }
    );
    let after = mmio_trace_ptrace::Regs::read(pid).unwrap();
    assert_eq!(
        format!("{:?}", before.user()),
        format!("{:?}", after.user())
    );
    // Its exit follows, then the read goes on.
    syscall(pid, 0).unwrap();
    h.write_stdin(b"entry");
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    assert_eq!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Exit {
            rval: 5,
            is_error: false
        }
    );
    detach(pid, 0).unwrap();
    assert_eq!(h.line(), "ret=5 errno=0 data=entry");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_a_syscall_entry_stop_without_tracesysgood() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::NONE).unwrap();
    syscall(pid, 0).unwrap();
    let s = wait_tid(pid).unwrap();
    assert!(matches!(s, Stop::Syscall), "{s:?}");
    let before = mmio_trace_ptrace::Regs::read(pid).unwrap();
    assert_eq!(before.user().orig_rax, 0);
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    let after = mmio_trace_ptrace::Regs::read(pid).unwrap();
    assert_eq!(
        format!("{:?}", before.user()),
        format!("{:?}", after.user())
    );
    detach(pid, 0).unwrap();
    h.write_stdin(b"plain");
    assert_eq!(h.line(), "ret=5 errno=0 data=plain");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_the_exit_stop_of_an_interrupted_read_keeps_its_restart() {
    let mut h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    syscall(pid, 0).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    // From its entry into the kernel, where it blocks again; interrupted there, it stops
    // at the exit with the kernel's restart code.
    syscall(pid, 0).unwrap();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    mmio_trace_ptrace::interrupt(pid).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    assert_eq!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Exit {
            rval: -512,
            is_error: true
        }
    );
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_gettid, [0; 6]).unwrap(),
        pid as i64
    );
    detach(pid, 0).unwrap();
    h.write_stdin(b"exit");
    assert_eq!(h.line(), "ret=4 errno=0 data=exit");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn epoll_wait_broken_off_at_a_syscall_exit_stop_is_restarted() {
    let mut h = Helper::start("e_block", &["epoll"]);
    let pid = h.pid();
    wait_blocked(
        pid,
        pid,
        &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441],
    );
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    syscall(pid, 0).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    assert!(matches!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Entry { .. }
    ));
    syscall(pid, 0).unwrap();
    wait_blocked(
        pid,
        pid,
        &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441],
    );
    mmio_trace_ptrace::interrupt(pid).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    assert_eq!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Exit {
            rval: -(libc::EINTR as i64),
            is_error: true
        }
    );
    assert!(mmio_trace_ptrace::restart_interrupted_call(pid).unwrap());
    // Only once: the registers now hold the restart code.
    assert!(!mmio_trace_ptrace::restart_interrupted_call(pid).unwrap());
    detach(pid, 0).unwrap();
    h.write_stdin(b"ep");
    assert_eq!(h.line(), "ret=1 errno=0 data=ep");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_a_seccomp_stop_returns_to_it_and_the_call_still_runs() {
    let mut h = Helper::start("e_seccomp", &[]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize(pid, Options::TRACESECCOMP | Options::TRACESYSGOOD).unwrap();
    h.write_stdin(b"x");
    let s = wait_tid(pid).unwrap();
    assert!(
        matches!(s, Stop::Event(Event::Seccomp { data: 0x42 })),
        "{s:?}"
    );
    let mut p = Process::new(pid);
    // The injected call itself (getppid) meets the filter too.
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getppid, [0; 6]).unwrap(),
        std::process::id() as i64
    );
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    assert!(matches!(
        syscall_stop(pid).unwrap(),
        SyscallStop::Seccomp {
            nr: 110,
            data: 0x42,
            ..
        }
    ));
    detach(pid, 0).unwrap();
    assert_eq!(h.line(), format!("ppid={} errno=0", std::process::id()));
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn injection_at_an_exec_event_runs_in_the_new_program() {
    let exe = build("e_block");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("read line; exec \"$0\" read")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACEEXEC | Options::TRACESYSGOOD).unwrap();
    assert_eq!(stops.len(), 1);
    // The same Process before and after the exec, without telling it about the exec: its
    // remembered `syscall` address (in the shell's vDSO) must not be trusted blindly.
    let mut p = Process::new(pid);
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    cont(pid, 0).unwrap();
    use std::io::Write;
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let s = wait_tid(pid).unwrap();
    assert!(
        matches!(s, Stop::Event(Event::Exec { former_tid }) if former_tid == pid),
        "{s:?}"
    );
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("e_block"), "the new program is mapped");
    detach(pid, 0).unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut l = String::new();
    use std::io::BufRead;
    out.read_line(&mut l).unwrap();
    assert_eq!(l, "ready\n");
    stdin.write_all(b"new").unwrap();
    stdin.flush().unwrap();
    l.clear();
    out.read_line(&mut l).unwrap();
    assert_eq!(l, "ret=3 errno=0 data=new\n");
    assert!(child.wait().unwrap().success());
}
