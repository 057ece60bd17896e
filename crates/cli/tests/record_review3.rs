//! End-to-end regression tests of the third review's defects under `mmio-trace record`:
//! the step fallback's pause scan at the program's descriptor limit, faults of a stepped
//! instruction, the recorder's liveness pipe. Programs:
//! tests/programs/rv3_*.c. Needs `cc`.

use mmio_trace_format::Event;

mod common;
use common::*;

#[test]
fn rv3_step_at_the_descriptor_limit_still_pauses_the_other_threads() {
    assert_steps_lose_no_writes("nofile", "rv3_nofile", 200, 20_000);
}

#[test]
fn rv3_a_fault_of_a_stepped_instruction_reaches_the_program_and_ends_the_step() {
    const FAULTS: u64 = 20;
    const K: u64 = 50;
    const N: u64 = 20_000;
    let t = Fixture::new("stepfault", "rv3_stepfault", 4096);
    let (out, ev) = t.record_env(
        &[NO_OOL],
        &[],
        &[&FAULTS.to_string(), &K.to_string(), &N.to_string()],
    );
    assert_exit(&out, 0);
    assert_eq!(write_values(&ev), (0..N).collect::<Vec<_>>());
    // Only the completed steps are logged (a faulting one is undone, not logged): the
    // DIVs and the straddling CRC32s leave nothing, the K CRC32s at 0x100 one each.
    let unknown: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Unknown(u) => Some(u.phys),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, vec![0x100; K as usize]);
    assert_device_after(&t.dev, &[(0, N - 1, 4)]);
}

#[test]
fn rv3_the_recorder_liveness_pipe_reaches_the_program_and_survives_its_close() {
    let t = Fixture::new("livefd", "rv3_livefd", 4096);
    let (out, ev) = t.record(&[]);
    assert_exit(&out, 0);
    let w: Vec<(char, u8, u64, u64)> = accesses(&ev);
    assert_eq!(w, vec![('W', 4, 8, 42)]);
    assert_device_after(&t.dev, &[(8, 42, 4)]);
}
