//! Inline `syscall` instructions in a dynamically linked program (no libc function at
//! all): the preload route sees the device mappings made, moved, re-protected and
//! unmapped that way, and the signal calls, through a seccomp filter that traps only
//! those instructions; the trace is the one the inject route gives. A program
//! without such instructions gets no filter.

mod common;
use common::*;

/// What lead_inline does to the device, in order.
fn inline_accesses() -> Vec<(char, u8, u64, u64)> {
    vec![
        ('W', 4, 0x10, 0x1234),
        ('R', 4, 0x10, 0x1234),
        ('W', 4, 0x14, 0x5678),
        ('R', 4, 0x14, 0x5678),
        ('W', 4, 0x18, 0x9abc),
        ('W', 4, 0x1c, 0xdef0),
        ('W', 4, 0x20, 0x2222),
    ]
}

#[track_caller]
fn check(t: &Fixture, opts: &[&str]) -> Vec<mmio_trace_format::Event> {
    let (out, ev) = t.record_with(opts, &[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "ok own-fault 1 heap 0x77777777\n",
        "stderr {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(accesses(&ev), inline_accesses(), "{opts:?}");
    // The first mapping, the one mremap made of it, the second thread's; each unmapped.
    assert_eq!(count_maps(&ev), 3, "{opts:?}: {ev:?}");
    let unmaps = ev
        .iter()
        .filter(|e| matches!(e, mmio_trace_format::Event::Unmap(_)))
        .count();
    assert_eq!(unmaps, 3, "{opts:?}: {ev:?}");
    assert_device_words(
        &t.dev,
        &[
            (0x10, 0x1234),
            (0x14, 0x5678),
            (0x18, 0x9abc),
            (0x1c, 0xdef0),
            (0x20, 0x2222),
        ],
    );
    ev
}

#[test]
fn inline_system_calls_are_traced_by_the_automatic_preload_route() {
    let t = Fixture::new("inline-auto", "lead_inline", 4096);
    let ev = check(&t, &[]);
    // Still the preload route (no route MARK).
    assert_eq!(route_marks(&ev), Vec::<String>::new());
}

/// (Not the ptrace route: a device access made while the program blocks SIGSEGV is a
/// forced SIGSEGV there, and the kernel resets the program's action to the default on
/// the way; its own fault later kills it.)
#[test]
fn the_inject_route_gives_the_same_trace() {
    let t = Fixture::new("inline-inject", "lead_inline", 4096);
    check(&t, &["--route", "inject"]);
}

#[test]
fn without_patching_too() {
    let t = Fixture::new("inline-nopatch", "lead_inline", 4096);
    check(&t, &["--no-patch"]);
}

#[test]
fn a_program_without_inline_system_calls_gets_no_filter() {
    let t = Fixture::new("inline-none", "lead_seccomp", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "read 0x33 seccomp 0\n",
        "stderr {}",
        stderr(&out)
    );
    assert_eq!(accesses(&ev), [('W', 4, 0x30, 0x33), ('R', 4, 0x30, 0x33)]);
}
