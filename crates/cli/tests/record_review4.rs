//! End-to-end tests of programs that tidy their file descriptors under `mmio-trace
//! record` (closefrom, close_range, dup2/dup3 onto every low descriptor): the tracer's
//! own descriptors survive or move, and the programs the tidy one execs are traced.
//! Program: tests/programs/rv4_fds.c. Needs `cc`.

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
}

#[test]
fn rv4_closefrom_and_close_range_spare_the_tracer() {
    tidy("close");
}

#[test]
fn rv4_dup2_and_dup3_onto_the_tracer_descriptors_move_them() {
    tidy("dup2");
}
