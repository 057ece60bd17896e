//! `analyze` on the conversation of QEMU's `edu` device with its user-space driver
//! (tests/vm/edu_driver.c, as `scripts/vm-test` records it): identification, a liveness
//! write and read-back, a factorial started by a write and waited for by polling STATUS
//! until bit 0 clears — a wait the second read already satisfies, too short to fold.

mod reading;

use reading::*;

const DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../registers/edu.toml");

/// The accesses of a recording of edu_driver (times, PCs and thread from a real run).
const EDU: &str = "\
VERSION 20070824
MAP 0.079258 1 0xfea00000 0x7fc49fca0000 0x1000 0x0 118
R 4 0.083023 1 0xfea00000 0x10000ed 0x5638953ad1f6 118
W 4 0.086238 1 0xfea00004 0x12345678 0x5638953ad223 118
R 4 0.086449 1 0xfea00004 0xedcba987 0x5638953ad22a 118
W 4 0.086660 1 0xfea00008 0x5 0x5638953ad248 118
R 4 0.086765 1 0xfea00020 0x1 0x5638953ad250 118
R 4 0.086882 1 0xfea00020 0x0 0x5638953ad250 118
R 4 0.086948 1 0xfea00008 0x78 0x5638953ad257 118
UNMAP 0.087001 1 0x0 118
";

#[test]
fn the_edu_init_sequence_waits_for_the_factorial() {
    let log = tmp("edu.log", EDU.as_bytes());
    let script = dir().join("edu-script.txt");
    let out = quiet(&["analyze", "--db", DB, s(&log), "--script", s(&script)]);
    assert!(
        out.contains("init sequence: 2 writes, 1 waits and 1 sleeps, up to event 6"),
        "{out}"
    );
    assert!(
        out.contains("wait: R4 0xfea00020 STATUS: 2 reads = 0x00000001, 0x00000000"),
        "{out}"
    );
    assert!(out.contains("polling loops: 1"), "{out}");
    let steps: Vec<String> = std::fs::read_to_string(&script)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split("  #").next().unwrap().to_string())
        .collect();
    assert_eq!(
        steps,
        [
            "map 1 0xfea00000 0x1000",
            "delay 3215",
            "write32 0x0004 0x12345678",
            "write32 0x0008 0x00000005",
            "wait32 0x0020 0x00000001 0x00000000",
        ]
    );
}

#[test]
fn two_reads_of_one_value_or_of_two_registers_are_no_wait() {
    // STATUS read twice with the same value, then another register: plain reads.
    let same = EDU.replace(
        "R 4 0.086882 1 0xfea00020 0x0",
        "R 4 0.086882 1 0xfea00020 0x1",
    );
    // A read of another register between the two STATUS reads.
    let between = EDU.replace(
        "R 4 0.086882 1 0xfea00020 0x0 0x5638953ad250 118\n",
        "R 4 0.086870 1 0xfea00000 0x10000ed 0x5638953ad1f6 118\nR 4 0.086882 1 0xfea00020 0x0 0x5638953ad250 118\n",
    );
    for (name, text) in [("same.log", same), ("between.log", between)] {
        let log = tmp(name, text.as_bytes());
        let out = quiet(&["analyze", s(&log)]);
        assert!(out.contains("1 maps") || out.contains("1 map"), "{out}");
        assert!(out.contains("polling loops: 0"), "{name}: {out}");
        assert!(out.contains("2 writes, 0 waits"), "{name}: {out}");
    }
}
