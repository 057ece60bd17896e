//! QA of `record` through the built binary: a trace file that would destroy the device,
//! and instruction forms on the device compared with a native run on every fault path
//! (program output and device bytes).

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_trace_written_over_the_device_file_is_refused_and_the_device_kept() {
    let f = Fixture::new("qa3-out-dev", "qa3_forms", 4096);
    let before = std::fs::read(&f.dev).unwrap();
    let link = f.dir.join("dev-link.bin");
    std::os::unix::fs::symlink(&f.dev, &link).unwrap();
    let glob = format!("{}/*.bin", f.dir.display());
    for (out, device) in [
        (f.dev.clone(), f.dev.to_str().unwrap().to_string()),
        (link.clone(), f.dev.to_str().unwrap().to_string()),
        (f.dev.clone(), glob.clone()),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(["record", "-q", "-o"])
            .arg(&out)
            .args(["--device", &device, "--"])
            .arg(&f.exe)
            .arg(&f.dev)
            .arg("cmov")
            .output()
            .unwrap();
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains("is a --device"),
            "{out:?} {device}: {}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "", "the program did not run");
        assert_eq!(
            std::fs::read(&f.dev).unwrap(),
            before,
            "the device is intact"
        );
    }
    // Another file is fine.
    let (o, events) = f.record(&["cmov"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "cmov 100900001008\n");
    assert_eq!(accesses(&events), vec![('R', 8, 0x20, 0x1009_0000_1008)]);
}
