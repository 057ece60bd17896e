//! End-to-end tests of programs that tidy their file descriptors under `mmio-trace
//! record` (closefrom, close_range, dup2/dup3 onto every low descriptor): the tracer's
//! own descriptors survive or move, and the programs the tidy one execs are traced; and
//! where a cut cannot be intercepted (posix_spawn file actions, a vfork child's dup2, raw
//! system calls), the exec'd image reaches the recorder again through its paths.
//! Programs: tests/programs/rv4_fds.c, rv4_cut.c. Needs `cc`.

mod common;
use common::*;

fn tidy(mode: &str) {
    let t = Fixture::new(&format!("fds-{mode}"), "rv4_fds", 4096);
    let (out, ev) = t.record(&[mode]);
    assert_exit(&out, 0);
    let writes = writes_with_pid(&ev);
    let values: Vec<u64> = writes.iter().map(|w| w.0).collect();
    assert_eq!(values, vec![1, 2, 3, 4], "{mode}");
    assert_eq!(writes[0].1, writes[3].1, "{mode}: the parent");
    assert_eq!(
        writes[1].1, writes[2].1,
        "{mode}: the child and the image it execs"
    );
    assert_ne!(writes[0].1, writes[1].1, "{mode}");
    assert_device_after(&t.dev, &[(0x10, 4, 4)]);
}

#[test]
fn rv4_closefrom_and_close_range_spare_the_tracer() {
    tidy("close");
}

#[test]
fn rv4_dup2_and_dup3_onto_the_tracer_descriptors_move_them() {
    tidy("dup2");
}

/// `rv4_cut MODE`: the parent's 1 and 3, and between them the 2 of the image its child
/// execs, in another process.
fn cut(mode: &str) {
    let t = Fixture::new(&format!("cut-{mode}"), "rv4_cut", 4096);
    let (out, ev) = t.record(&[mode]);
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), "", "{mode}");
    let writes = writes_with_pid(&ev);
    let values: Vec<u64> = writes.iter().map(|w| w.0).collect();
    assert_eq!(values, vec![1, 2, 3], "{mode}");
    assert_eq!(writes[0].1, writes[2].1, "{mode}: the parent");
    assert_ne!(writes[0].1, writes[1].1, "{mode}: the exec'd child");
    assert_device_after(&t.dev, &[(0x10, 3, 4)]);
}

#[test]
fn rv4_posix_spawn_closefrom_action_child_reopens_the_recorder() {
    cut("spawn");
}

#[test]
fn rv4_vfork_child_dup2_onto_the_tracer_descriptors_child_reopens_the_recorder() {
    cut("vfork");
}

#[test]
fn rv4_raw_close_range_syscall_child_reopens_the_recorder() {
    cut("syscall");
}
