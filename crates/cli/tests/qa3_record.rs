//! QA of `record` through the built binary: a trace file that would destroy the device,
//! and instruction forms on the device compared with a native run on every fault path
//! (program output and device bytes).

mod common;

use std::os::unix::process::ExitStatusExt as _;
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

fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|w| w == flag))
}

/// Forms of qa3_forms.c: name, the CPU flags it needs, and whether it must complete
/// without single-stepping on the default path (`false`: documented step-path forms:
/// gathers, compress stores, masked expands, `xlat`'s implicit operand, `fnstenv`'s
/// 28 bytes).
const FORMS: &[(&str, &[&str], bool)] = &[
    ("bcst", &["avx512f"], true),
    ("pmovzx", &["avx2"], true),
    ("cvtph", &["f16c", "avx"], true),
    ("inserti", &["avx2"], true),
    ("pshufd", &["avx"], true),
    ("movhps", &["sse"], true),
    ("movhps_st", &["sse2"], true),
    ("pcmpestri", &["sse4_2"], true),
    ("kstore", &["avx512bw"], true),
    ("cmov", &[], true),
    ("movsxd", &[], true),
    ("bextr", &["bmi1"], true),
    ("adcx", &["adx"], true),
    ("xlat", &[], false),
    ("compress", &["avx512f"], false),
    ("expand", &["avx512f"], false),
    ("gather", &["avx2"], false),
    ("fnstenv", &[], false),
    ("ro_store", &["sse4_1"], false),
    ("none_read", &["popcnt"], false),
    ("fpe_jumps", &["popcnt"], true),
    ("vfork", &["popcnt", "sse4_1"], true),
    ("unmapped_meanwhile", &["popcnt"], true),
];

/// Runs `form` natively and then recorded on every fault path, with `env` set:
/// the same output, exit status and device bytes each time; with `ool`, the default
/// path steps nothing and logs every read with the device's value.
fn check_form(f: &Fixture, initial: &[u8], form: &str, env: &[(&str, &str)], ool: bool) {
    let native_dev = f.dir.join("native.bin");
    std::fs::write(&native_dev, initial).unwrap();
    let nat = Command::new(&f.exe)
        .arg(&native_dev)
        .arg(form)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let nat_dev = std::fs::read(&native_dev).unwrap();
    for path in ["default", "emulate", "ool", "step"] {
        std::fs::write(&f.dev, initial).unwrap();
        let mut c = record_cmd(&f.dir, &f.dev, &[]);
        c.arg(&f.exe)
            .arg(&f.dev)
            .arg(form)
            .envs(env.iter().copied());
        if path != "default" {
            c.env("MMIO_TRACE_PATH", path);
        }
        let out = c.output().unwrap();
        let what = format!("{form} on the {path} path with {env:?}");
        // The recorder exits 128+N where the program dies of signal N.
        let want = nat
            .status
            .code()
            .or_else(|| nat.status.signal().map(|s| 128 + s));
        assert_eq!(code(&out), want, "{what}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&nat), "{what}");
        assert_eq!(
            std::fs::read(&f.dev).unwrap(),
            nat_dev,
            "{what}: device bytes"
        );
        let events = read_log(&trace_log(&f.dir));
        if path == "default" && ool {
            assert_eq!(unknowns(&events), vec![], "{what}: nothing stepped");
            let mut dev = initial.to_vec();
            for (dir, width, off, value) in accesses(&events) {
                let (o, w) = (off as usize, width as usize);
                let bytes = &value.to_le_bytes()[..w.min(8)];
                if dir == 'R' {
                    assert_eq!(&dev[o..o + bytes.len()], bytes, "{what}: read at {off:#x}");
                } else {
                    dev[o..o + bytes.len()].copy_from_slice(bytes);
                }
            }
        }
    }
}

/// Each form on every fault path gives the program the results, exit status and device
/// bytes it gets natively; on the default path the forms that run out of line log every
/// read with the device's value and nothing `UNKNOWN`.
#[test]
fn instruction_forms_on_every_path_match_a_native_run() {
    let f = Fixture::new("qa3-forms", "qa3_forms", 4096);
    let initial = std::fs::read(&f.dev).unwrap();
    for &(form, flags, ool) in FORMS {
        if let Some(flag) = flags.iter().find(|fl| !cpu_has(fl)) {
            eprintln!("NOT RUN: {form} (this CPU has no {flag})");
            continue;
        }
        check_form(&f, &initial, form, &[], ool);
    }
}

/// glibc's memset, memcpy and memmove (overlapping, device to device), memcmp, memchr,
/// strrchr, strnlen, strlen and strcpy on the device, at every ISA level
/// `GLIBC_TUNABLES` selects: the program's results and the device's bytes as natively,
/// every read with its value, nothing stepped.
#[test]
fn glibc_memory_functions_at_every_isa_level_match_a_native_run() {
    let f = Fixture::new("qa3-libc", "qa3_forms", 4096);
    let initial = std::fs::read(&f.dev).unwrap();
    for tunable in [
        "",
        "glibc.cpu.hwcaps=-AVX512VL",
        "glibc.cpu.hwcaps=-AVX512VL,-AVX2",
        "glibc.cpu.hwcaps=-AVX512VL,-AVX2,-SSE4_2,-SSSE3,-SSE4_1",
        "glibc.cpu.hwcaps=-ERMS,-FSRM,-AVX512F",
    ] {
        check_form(
            &f,
            &initial,
            "libc_mem",
            &[("GLIBC_TUNABLES", tunable)],
            true,
        );
    }
}

/// A timer's handler forks while the main thread reads the device out of line (the
/// handler runs where the signal was pending: at a slot's first instruction); each child
/// reads the device in the handler and exits. Every read has its value, each child's
/// read is logged under the child's pid, nothing is stepped.
#[test]
fn fork_from_a_handler_interrupting_out_of_line_reads() {
    if !cpu_has("popcnt") {
        eprintln!("NOT RUN: this CPU has no popcnt");
        return;
    }
    let f = Fixture::new("qa3-fork-slot", "qa3_forms", 4096);
    let (out, events) = f.record(&["fork_in_slot"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "fork_in_slot forks 20 bad 0 wrong 0\n");
    assert_eq!(unknowns(&events), vec![]);
    assert_none_lost(&events);
    let acc = accesses_by_pid(&events);
    let parent = acc[0].0;
    let mut children = std::collections::HashSet::new();
    for &(pid, dir, width, off, value) in &acc {
        assert_eq!((dir, width), ('R', 4));
        if pid == parent {
            assert_eq!((off, value), (0x44, 0x1011));
        } else {
            assert_eq!((off, value), (0x48, 0x1012), "child {pid}");
            assert!(children.insert(pid), "one read per child: {pid}");
        }
    }
    assert_eq!(children.len(), 20);
}

/// `xlat` reads `[rbx + al]`: one byte of the device with a known address and width.
#[test]
fn xlat_is_a_read_with_its_value() {
    let f = Fixture::new("qa3-xlat", "qa3_forms", 4096);
    let (out, events) = f.record(&["xlat"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "xlat 10\n");
    assert_eq!(unknowns(&events), vec![]);
    // Byte 0xa5 of the device: word 0x29 (0x1029) byte 1.
    assert_eq!(accesses(&events), vec![('R', 1, 0xa5, 0x10)]);
}

/// `analyze` of a binary log with 64- and 32-byte writes: the init sequence, the
/// replayable script and the JSON give each write's whole value, never its first
/// 8 bytes as if they were all of it.
#[test]
fn analyze_keeps_the_whole_value_of_writes_wider_than_8_bytes() {
    if !cpu_has("avx512f") {
        eprintln!("NOT RUN: this CPU has no AVX-512");
        return;
    }
    let f = Fixture::new("qa3-wide", "qa3_wide", 4096);
    let log = f.dir.join("wide.mtb");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "--format", "binary", "-o"])
        .arg(&log)
        .arg("--device")
        .arg(&f.dev)
        .arg("--")
        .arg(&f.exe)
        .arg(&f.dev)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    // Device words k = 0x1000 + k: bytes 0..64 hold words 0..16, most significant first.
    let full = |words: u32| -> String {
        let mut s = String::from("0x");
        for k in (0..words).rev() {
            s.push_str(&format!("{:08x}", 0x1000 + k));
        }
        s
    };
    let (w64, w32) = (full(16), full(8));
    let script = f.dir.join("init.txt");
    let json = f.dir.join("init.json");
    let a = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .arg("analyze")
        .arg(&log)
        .arg("--script")
        .arg(&script)
        .arg("--script-json")
        .arg(&json)
        .output()
        .unwrap();
    assert_exit(&a, 0);
    let grouped = |v: &str| {
        // show's form: 8-byte words separated by `_`.
        let digits = &v[2..];
        let words: Vec<&str> = (0..digits.len() / 16)
            .map(|i| &digits[i * 16..i * 16 + 16])
            .collect();
        format!("0x{}", words.join("_"))
    };
    let text = stdout(&a);
    assert!(
        text.contains(&format!("W64 0x00000040 <= {}", grouped(&w64))),
        "{text}"
    );
    assert!(
        text.contains(&format!("W32 0x00000080 <= {}", grouped(&w32))),
        "{text}"
    );
    let script = std::fs::read_to_string(&script).unwrap();
    let writes: Vec<&str> = script.lines().filter(|l| l.starts_with("write")).collect();
    let mut want = vec![format!("write512 0x0040 {w64}"); 5];
    want.push(format!("write256 0x0080 {w32}"));
    assert_eq!(writes, want);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // (Its delay steps depend on how the machine ran the program.)
    let steps: Vec<&serde_json::Value> = v["maps"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["op"] != "delay")
        .collect();
    assert_eq!(steps.len(), 6, "{v}");
    assert_eq!(steps[0]["value"], serde_json::Value::Null);
    assert_eq!(steps[0]["value_hex"], w64.as_str());
    assert_eq!(steps[5]["value_hex"], w32.as_str());
}

/// Records qa3_wide into `log` (binary) with the fixture's device holding `dev`.
fn record_wide(f: &Fixture, dev: &[u8], log: &std::path::Path) {
    std::fs::write(&f.dev, dev).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "--format", "binary", "-o"])
        .arg(log)
        .arg("--device")
        .arg(&f.dev)
        .arg("--")
        .arg(&f.exe)
        .arg(&f.dev)
        .output()
        .unwrap();
    assert_exit(&o, 0);
}

/// Two runs whose 64-byte accesses differ only past their first 8 bytes differ.
#[test]
fn diff_compares_the_whole_value_of_accesses_wider_than_8_bytes() {
    if !cpu_has("avx512f") {
        eprintln!("NOT RUN: this CPU has no AVX-512");
        return;
    }
    let f = Fixture::new("qa3-wide-diff", "qa3_wide", 4096);
    let initial = std::fs::read(&f.dev).unwrap();
    let mut changed = initial.clone();
    changed[0x3e] = 0xee; // word 15, byte 2: inside the 64-byte reads, past byte 8
    let (a, a2, b) = (
        f.dir.join("a.mtb"),
        f.dir.join("a2.mtb"),
        f.dir.join("b.mtb"),
    );
    record_wide(&f, &initial, &a);
    record_wide(&f, &initial, &a2);
    record_wide(&f, &changed, &b);
    let diff = |x: &std::path::Path, y: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(["diff", "--ignore-base"])
            .arg(x)
            .arg(y)
            .output()
            .unwrap()
    };
    let same = diff(&a, &a2);
    assert_exit(&same, 0);
    let o = diff(&a, &b);
    assert_exit(&o, 1);
    let text = stdout(&o);
    // Five R64 and W64 pairs differ (the W32 of the first 32 bytes does not).
    let minus = text.lines().filter(|l| l.starts_with("-  ")).count();
    let plus = text.lines().filter(|l| l.starts_with("+  ")).count();
    assert_eq!((minus, plus), (10, 10), "{text}");
    assert!(text.contains("=> 0x0000100f0000100e_"), "{text}");
    assert!(text.contains("=> 0x00ee100f0000100e_"), "{text}");
}
