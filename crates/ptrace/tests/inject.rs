//! Syscall injection: a thread stopped inside a blocking system call runs injected calls and
//! afterwards finishes its own call exactly as it would have (no EINTR, no errno 516, the
//! same result and data).

mod common;

use common::{wait_blocked, Helper};
use mmio_trace_ptrace::{detach, seize_all, Options, Process, Regs, Stop, SyscallSite};

/// Seizes every thread of the helper, runs getpid, an anonymous mmap + a write through
/// /proc/PID/mem + munmap in thread `tid`, and detaches everything.
fn inject_into(h: &Helper, tid: i32) {
    inject_at(h, tid, SyscallSite::Auto)
}

fn inject_at(h: &Helper, tid: i32, site: SyscallSite) {
    let pid = h.pid();
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    assert!(stops.iter().any(|(t, _)| *t == tid), "{stops:?}");
    for (_, s) in &stops {
        assert!(matches!(s, Stop::Interrupt), "{stops:?}");
    }
    let mut p = Process::new(pid);
    p.set_syscall_site(site);
    let rip = Regs::read(tid).unwrap().user().rip;
    let mut code = [0u8; 16];
    p.mem().read(rip, &mut code).unwrap();
    assert_eq!(
        p.inject_syscall(tid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    let a = p
        .remote_mmap(
            tid,
            0,
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
        .unwrap();
    p.mem().write(a, b"abc").unwrap();
    let mut b = [0u8; 3];
    p.mem().read(a, &mut b).unwrap();
    assert_eq!(&b, b"abc");
    p.remote_munmap(tid, a, 8192).unwrap();
    assert!(p.take_requeued().is_empty());
    let mut after = [0u8; 16];
    p.mem().read(rip, &mut after).unwrap();
    assert_eq!(code, after, "the program's code is unchanged");
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
}

fn blocked_case(mode: &str, nrs: &[i64]) -> (Helper, i32) {
    let h = Helper::start("e_block", &[mode]);
    let pid = h.pid();
    wait_blocked(pid, pid, nrs);
    inject_into(&h, pid);
    (h, pid)
}

#[test]
fn nanosleep_keeps_its_deadline_and_returns_zero() {
    let (mut h, _) = blocked_case(
        "nanosleep",
        &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep],
    );
    let l = h.line();
    let ms: i64 = l.rsplit('=').next().unwrap().parse().unwrap();
    assert!(l.starts_with("ret=0 errno=0 ms="), "{l}");
    assert!(ms >= 300, "{l}");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn clock_nanosleep_returns_zero() {
    let (mut h, _) = blocked_case("clock_nanosleep", &[libc::SYS_clock_nanosleep]);
    let l = h.line();
    let ms: i64 = l.rsplit('=').next().unwrap().parse().unwrap();
    assert!(l.starts_with("ret=0 errno=0 ms="), "{l}");
    assert!(ms >= 300, "{l}");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn read_on_a_pipe_reads_the_bytes_written_after() {
    let (mut h, _) = blocked_case("read", &[libc::SYS_read]);
    h.write_stdin(b"hello");
    assert_eq!(h.line(), "ret=5 errno=0 data=hello");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn poll_returns_one_ready_descriptor() {
    let (mut h, _) = blocked_case("poll", &[libc::SYS_poll, libc::SYS_ppoll]);
    h.write_stdin(b"hi");
    assert_eq!(h.line(), "ret=1 errno=0 data=hi");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn ppoll_keeps_its_signal_mask_handling() {
    let (mut h, _) = blocked_case("ppoll", &[libc::SYS_ppoll]);
    h.write_stdin(b"hi");
    assert_eq!(h.line(), "ret=1 errno=0 data=hi usr1_blocked=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn epoll_wait_returns_one_event() {
    let (mut h, _) = blocked_case("epoll", &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441]);
    h.write_stdin(b"ep");
    assert_eq!(h.line(), "ret=1 errno=0 data=ep");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn futex_wait_returns_zero_when_woken() {
    let h = Helper::start("e_block", &["futex"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_futex]);
    let mut h = h;
    inject_into(&h, pid);
    // The wait restarts: wake it once it is back in the kernel (a futex word changed while
    // the thread is stopped makes the restarted wait return EAGAIN, as under any debugger).
    wait_blocked(pid, pid, &[libc::SYS_futex]);
    h.write_stdin(b"w");
    assert_eq!(h.line(), "ret=0 errno=0 word=1");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn patching_the_current_instruction_also_keeps_a_sleep_exact() {
    let h = Helper::start("e_block", &["nanosleep"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep]);
    inject_at(&h, pid, SyscallSite::PatchRip);
    let mut h = h;
    let l = h.line();
    let ms: i64 = l.rsplit('=').next().unwrap().parse().unwrap();
    assert!(l.starts_with("ret=0 errno=0 ms="), "{l}");
    assert!(ms >= 300, "{l}");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn patching_the_current_instruction_in_a_read() {
    let h = Helper::start("e_block", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    inject_at(&h, pid, SyscallSite::PatchRip);
    let mut h = h;
    h.write_stdin(b"patched");
    assert_eq!(h.line(), "ret=7 errno=0 data=patched");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn every_thread_blocked_in_its_own_call_finishes_it_exactly() {
    let mut h = Helper::start("e_multi", &[]);
    let pid = h.pid();
    let tids: Vec<i32> = h
        .line()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let calls: [&[i64]; 5] = [
        &[libc::SYS_clock_nanosleep, libc::SYS_nanosleep],
        &[libc::SYS_poll, libc::SYS_ppoll],
        &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441],
        &[libc::SYS_futex],
        &[libc::SYS_select, libc::SYS_pselect6],
    ];
    for (t, nrs) in tids.iter().zip(calls) {
        wait_blocked(pid, *t, nrs);
    }
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACECLONE | Options::TRACESYSGOOD).unwrap();
    assert_eq!(stops.len(), 6, "{stops:?}");
    let mut p = Process::new(pid);
    for (t, s) in &stops {
        assert!(matches!(s, Stop::Interrupt), "{t}: {s:?}");
        assert_eq!(
            p.inject_syscall(*t, libc::SYS_gettid, [0; 6]).unwrap(),
            *t as i64
        );
        let a = p
            .remote_mmap(
                *t,
                0,
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
            .unwrap();
        p.remote_mprotect(*t, a, 4096, libc::PROT_NONE).unwrap();
        p.remote_munmap(*t, a, 4096).unwrap();
    }
    for (t, _) in &stops {
        detach(*t, 0).unwrap();
    }
    // Each call is back in the kernel before the program's main thread ends the waits
    // (a futex word changed while its waiter is stopped would make the wait return EAGAIN).
    // (poll and sleeps come back as restart_syscall, which keeps their deadlines.)
    for (t, nrs) in tids.iter().zip(calls).skip(1) {
        let mut nrs = nrs.to_vec();
        nrs.push(libc::SYS_restart_syscall);
        wait_blocked(pid, *t, &nrs);
    }
    h.write_stdin(b"g");
    assert_eq!(
        h.rest(),
        "main ret=1 errno=0\n\
         sleep ret=0 errno=0 ms>=1500=1\n\
         poll ret=1 errno=0\n\
         epoll ret=1 errno=0\n\
         futex ret=0 errno=0\n\
         select ret=1 errno=0\n"
    );
    assert_eq!(h.exit_code(), 0);
}
