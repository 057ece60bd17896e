//! End-to-end regression tests of the third review's defects under `mmio-trace record`:
//! the step fallback's pause scan at the program's descriptor limit, faults of a stepped
//! instruction, the recorder's liveness pipe. Programs:
//! tests/programs/rv3_*.c. Needs `cc`.

#![allow(dead_code)]

use mmio_trace_format::Event;

mod common;
use common::*;

#[test]
fn rv3_step_at_the_descriptor_limit_still_pauses_the_other_threads() {
    const K: u64 = 200;
    const N: u64 = 20_000;
    let d = scratch("nofile");
    let exe = build(&d, "rv3_nofile");
    let dev = device(&d, 4096);
    let (out, ev) = record(
        &d,
        &dev,
        &[
            os(&exe),
            os(&dev),
            K.to_string().as_ref(),
            N.to_string().as_ref(),
        ],
    );
    assert_eq!(code(&out), Some(0), "stderr: {}", stderr(&out));
    let writes: Vec<u64> = accesses(&ev)
        .iter()
        .filter(|a| a.0 == 'W')
        .map(|a| a.3)
        .collect();
    assert_eq!(writes, (0..N).collect::<Vec<_>>());
    let steps = ev
        .iter()
        .filter(|e| matches!(e, Event::Unknown(u) if u.phys == 0x100))
        .count();
    assert_eq!(steps as u64, K);
}

#[test]
fn rv3_a_fault_of_a_stepped_instruction_reaches_the_program_and_ends_the_step() {
    const FAULTS: u64 = 20;
    const K: u64 = 50;
    const N: u64 = 20_000;
    let d = scratch("stepfault");
    let exe = build(&d, "rv3_stepfault");
    let dev = device(&d, 4096);
    let (out, ev) = record(
        &d,
        &dev,
        &[
            os(&exe),
            os(&dev),
            FAULTS.to_string().as_ref(),
            K.to_string().as_ref(),
            N.to_string().as_ref(),
        ],
    );
    assert_eq!(code(&out), Some(0), "stderr: {}", stderr(&out));
    let writes: Vec<u64> = accesses(&ev)
        .iter()
        .filter(|a| a.0 == 'W')
        .map(|a| a.3)
        .collect();
    assert_eq!(writes, (0..N).collect::<Vec<_>>());
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
}

#[test]
fn rv3_the_recorder_liveness_pipe_reaches_the_program_and_survives_its_close() {
    let d = scratch("livefd");
    let exe = build(&d, "rv3_livefd");
    let dev = device(&d, 4096);
    let (out, ev) = record(&d, &dev, &[os(&exe), os(&dev)]);
    assert_eq!(code(&out), Some(0), "stderr: {}", stderr(&out));
    let w: Vec<(char, u8, u64, u64)> = accesses(&ev);
    assert_eq!(w, vec![('W', 4, 8, 42)]);
}
