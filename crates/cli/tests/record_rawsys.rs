//! Device mappings made, unmapped, moved and re-protected by `syscall(SYS_...)` in a
//! dynamic program (the preload route): traced exactly, and a raw munmap leaves no stale
//! region behind (memory mapped there later stays the program's own); the ptrace route
//! gives the same trace.

mod common;
use common::*;

fn run(mode: &str, opts: &[&str]) -> std::process::Output {
    let t = Fixture::new(
        &format!("rawsys-{mode}-{}", opts.join("")),
        "lead_rawsys",
        8192,
    );
    let (out, ev) = t.record_with(opts, &[mode]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "device 0x11223344\nown memory ok\nread-only 0x66\ndone\n"
    );
    let acc = accesses(&ev);
    let mut want = Vec::new();
    for _ in 0..40 {
        want.push(('W', 4, 0x10, 0x11223344));
        want.push(('R', 4, 0x10, 0x11223344));
    }
    // Nothing of the anonymous memory; the second mapping's store, moved store, read
    // under PROT_READ and the store after PROT_READ|PROT_WRITE.
    want.extend([
        ('W', 4, 0x20, 0x55),
        ('W', 4, 0x24, 0x66),
        ('R', 4, 0x24, 0x66),
        ('W', 4, 0x28, 0x77),
    ]);
    assert_eq!(acc, want);
    // Two mappings and their ends: MAP, UNMAP (raw munmap), MAP, and the moved one.
    assert_eq!(count_maps(&ev), 3, "{ev:?}");
    assert_device_words(
        &t.dev,
        &[(0x10, 0x11223344), (0x20, 0x55), (0x24, 0x66), (0x28, 0x77)],
    );
    out
}

#[test]
fn raw_syscalls_then_anonymous_memory_from_libc_mmap() {
    run("libc", &[]);
}

#[test]
fn the_same_raw_syscalls_on_the_ptrace_route() {
    run("raw", &["--route", "ptrace"]);
}

/// `--route inject`: the core in the (dynamic) program, told of the raw calls by its
/// seccomp filter: the same trace, named in its MARK, no warning.
#[test]
fn the_same_raw_syscalls_on_the_inject_route() {
    for mode in ["raw", "stale", "libc"] {
        let out = run(mode, &["--route", "inject"]);
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    }
}

/// The raw signal calls under the inject route: the program's SIGSEGV handler and mask
/// set by `syscall(SYS_rt_sigaction/rt_sigprocmask)` go through the filter.
#[test]
fn raw_signal_calls_on_the_inject_route() {
    let t = Fixture::new("rawsig-inject", "lead_rawsig", 4096);
    let (out, ev) = t.record_with(&["--route", "inject"], &[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "value 0xcafe, own fault handled, byte 0, segv blocked 0\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(
        accesses(&ev),
        [('W', 4, 0x40, 0xcafe), ('R', 4, 0x40, 0xcafe)]
    );
}

#[test]
fn raw_syscalls_then_anonymous_memory_from_a_raw_mmap() {
    run("raw", &[]);
}

#[test]
fn a_device_mapped_by_libc_and_unmapped_by_a_raw_munmap_leaves_no_stale_region() {
    run("stale", &[]);
}

#[test]
fn raw_syscalls_without_patching() {
    run("raw", &["--no-patch"]);
}

#[test]
fn a_segv_handler_and_mask_set_by_raw_system_calls_keep_tracing_and_get_their_own_faults() {
    let t = Fixture::new("rawsig", "lead_rawsig", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "value 0xcafe, own fault handled, byte 0, segv blocked 0\n"
    );
    assert_eq!(
        accesses(&ev),
        [('W', 4, 0x40, 0xcafe), ('R', 4, 0x40, 0xcafe)]
    );
}
