//! Which blocking calls of other threads a single step interrupts: README's list of them
//! (section "Side effects a program can notice") is exactly what the kernel does here.
//! The step pauses the process's other threads with a signal, and a call that the kernel
//! does not restart after a signal handler returns early, as after any signal of the
//! program's. tests/programs/eintr.c blocks in each call in a thread of its own while
//! main accesses the device for about a second (every access stepped under `--no-alias`).

mod common;

use common::*;

/// The calls that return early (tests/programs/eintr.c's names), in its order.
const INTERRUPTED: &[&str] = &[
    "nanosleep",
    "clock_nanosleep",
    "sleep",
    "usleep",
    "poll",
    "ppoll",
    "select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "recv(SO_RCVTIMEO)",
    "msgrcv",
    "semop",
    "semtimedop",
    "sem_timedwait",
    "futex(FUTEX_WAIT, timeout)",
    "sigtimedwait",
    "sigwaitinfo",
    "pause",
    "sigsuspend",
    "io_getevents",
    "msgsnd",
    "send(SO_SNDTIMEO)",
    "accept(SO_RCVTIMEO)",
    "epoll_pwait2",
    "clock_nanosleep(TIMER_ABSTIME)",
];

/// The names eintr.c printed with `early`, and how many calls it printed.
fn early(out: &std::process::Output) -> (Vec<String>, usize) {
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    let early = lines
        .iter()
        .filter_map(|l| l.strip_suffix(" early"))
        .map(str::to_owned)
        .collect();
    (early, lines.len())
}

#[test]
fn steps_interrupt_exactly_the_calls_the_readme_lists() {
    let f = Fixture::new("eintr", "eintr", 4096);

    let native = std::process::Command::new(&f.exe)
        .arg(&f.dev)
        .output()
        .unwrap();
    assert_exit(&native, 0);
    let (native_early, calls) = early(&native);
    assert_eq!(
        native_early,
        Vec::<String>::new(),
        "natively nothing returns early"
    );
    assert_eq!(calls, 37);

    // With the alias, plain stores are emulated: nothing is stepped, nothing interrupted.
    let (out, events) = f.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(early(&out), (vec![], calls));
    assert_eq!(write_values(&events), (0..400).collect::<Vec<u64>>());

    let (out, events) = f.record_with(&["--no-alias"], &[]);
    assert_exit(&out, 0);
    let (stepped_early, n) = early(&out);
    assert_eq!(n, calls);
    assert_eq!(stepped_early, INTERRUPTED);
    assert_eq!(write_values(&events), (0..400).collect::<Vec<u64>>());

    // README names each of them (the part before any parenthesis, in backquotes).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("A single step pauses")
        .nth(1)
        .expect("README's bullet on single steps and EINTR")
        .split("\n- ")
        .next()
        .unwrap();
    for name in INTERRUPTED {
        let base = name.split('(').next().unwrap();
        assert!(
            section.contains(&format!("`{base}`")),
            "README does not list `{base}`"
        );
    }
}
