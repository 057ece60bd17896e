//! Out-of-line execution: instructions the emulator does not complete (SSE/AVX compares
//! of glibc's string functions, `div`/`popcnt`/`lzcnt`/`crc32` with memory, `pinsrd`,
//! `vpbroadcastd`, `vpaddd m`, `addsd`/`cvtsi2sd m`, x87 loads and stores, `pextrd`,
//! `vpmaskmovd`, masked AVX-512 forms) run on a bounce buffer: exactly one device access of
//! the operand's width with its real value (no `UNKNOWN`), the program's results as natively,
//! and no other thread paused. Each form is also recorded through the step path
//! (`MMIO_TRACE_PATH=step`), which logs it `UNKNOWN`: what these tests see without
//! out-of-line execution.

mod common;

use std::process::{Command, Output};

use common::*;
use mmio_trace_format::Event;

/// The 64-byte string the string-function forms read (NUL at 0x140).
const STRING: &[u8; 64] = b"hello, device world! this string is sixty-four bytes long.......";

/// A fixture of tests/programs/PROGRAM.c whose device holds [`STRING`] at 0x100.
fn fixture(name: &str, program: &str) -> Fixture {
    let f = Fixture::new(name, program, 4096);
    let mut dev = std::fs::read(&f.dev).unwrap();
    dev[0x100..0x140].copy_from_slice(STRING);
    dev[0x140] = 0;
    std::fs::write(&f.dev, &dev).unwrap();
    f
}

/// Records `PROGRAM DEV ARGS` with `env` set in its environment.
fn record_env(f: &Fixture, env: &[(&str, &str)], args: &[&str]) -> (Output, Vec<Event>) {
    let mut c = record_cmd(&f.dir, &f.dev, &[]);
    c.arg(&f.exe).arg(&f.dev).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let events = read_log(&trace_log(&f.dir));
    (out, events)
}

/// Runs `PROGRAM DEV ARGS` natively (no tracing) on a copy of `dev` as it is now.
fn native(f: &Fixture, env: &[(&str, &str)], args: &[&str]) -> Output {
    let copy = f.dir.join("native.bin");
    std::fs::copy(&f.dev, &copy).unwrap();
    let mut c = Command::new(&f.exe);
    c.arg(&copy).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|w| w == flag))
}

/// Every logged read's value is what `dev` held at its address (the device bytes before
/// the run; the string forms do not write).
#[track_caller]
fn assert_reads_match(dev: &[u8], events: &[Event]) {
    for (dir, width, off, value) in accesses(events) {
        if dir != 'R' {
            continue;
        }
        let o = off as usize;
        let mut b = [0u8; 8];
        b[..width as usize].copy_from_slice(&dev[o..o + width as usize]);
        assert_eq!(value, u64::from_le_bytes(b), "read of {width} at {off:#x}");
    }
}

/// The glibc ISA levels: the tunable that selects each, and the first opcode byte of its
/// vector compares (EVEX, VEX, legacy SSE2 with its 66 prefix).
const LEVELS: &[(&str, &str, u8)] = &[
    ("evex", "", 0x62),
    ("avx2", "glibc.cpu.hwcaps=-AVX512VL", 0xc5),
    ("sse2", "glibc.cpu.hwcaps=-AVX512VL,-AVX2", 0x66),
];

/// The string functions and what ool_forms prints for [`STRING`].
const STRING_FORMS: &[(&str, &str)] = &[
    ("strlen", "64\n"),
    ("strchr", "19\n"),
    ("strcmp", "1\n"),
    (
        "strncpy",
        "hello, device world! this string is sixty-four bytes long.......|0\n",
    ),
    (
        "printf",
        "[hello, device world! this string is sixty-four bytes long.......]\n",
    ),
];

#[test]
fn glibc_string_functions_run_out_of_line_at_every_isa_level() {
    let f = fixture("strings", "ool_forms");
    let dev = std::fs::read(&f.dev).unwrap();
    for &(level, tunable, opcode) in LEVELS {
        // glibc 2.36 selects its EVEX and AVX2 string functions only with BMI2 too.
        if level == "evex" && !(cpu_has("avx512vl") && cpu_has("avx512bw") && cpu_has("bmi2")) {
            eprintln!("NOT RUN: the EVEX level (this CPU has no AVX512VL/BW or BMI2)");
            continue;
        }
        if level == "avx2" && !(cpu_has("avx2") && cpu_has("bmi2")) {
            eprintln!("NOT RUN: the AVX2 level (this CPU has no AVX2 or BMI2)");
            continue;
        }
        let env: Vec<(&str, &str)> = if tunable.is_empty() {
            vec![]
        } else {
            vec![("GLIBC_TUNABLES", tunable)]
        };
        for &(func, want) in STRING_FORMS {
            let what = format!("{func} at {level}");
            let nat = native(&f, &env, &[func]);
            assert_exit(&nat, 0);
            assert_eq!(stdout(&nat), want, "{what} natively");

            // The step path: the vector compares are stepped and logged UNKNOWN.
            let mut step_env = env.clone();
            step_env.push(("MMIO_TRACE_PATH", "step"));
            let (out, stepped) = record_env(&f, &step_env, &[func]);
            assert_exit(&out, 0);
            assert_eq!(stdout(&out), want, "{what} stepped");
            let steps = unknowns(&stepped);
            if func == "strlen" {
                // (Under the step path every instruction but plain moves is UNKNOWN.)
                assert!(
                    steps.iter().any(|(_, op)| op[0] == opcode),
                    "{what}: the tunable selects this ISA level: {steps:x?}"
                );
            }

            // Out of line: the same program output, every read with its value, no UNKNOWN,
            // and every address the step path stepped is read.
            let (out, events) = record_env(&f, &env, &[func]);
            assert_exit(&out, 0);
            assert_eq!(stdout(&out), want, "{what} traced");
            assert_eq!(unknowns(&events), vec![], "{what}: nothing stepped");
            assert_reads_match(&dev, &events);
            let reads: Vec<u64> = accesses(&events)
                .iter()
                .filter(|a| a.0 == 'R')
                .map(|a| a.2)
                .collect();
            assert!(!reads.is_empty(), "{what}: reads logged");
            for (off, _) in &steps {
                assert!(
                    reads.contains(off),
                    "{what}: the read at {off:#x} is logged"
                );
            }
            // Each read covers bytes of the string or just past it (never beyond the
            // 64-byte block that holds the NUL).
            assert!(
                reads.iter().all(|&o| (0x100..0x180).contains(&o)),
                "{what}: {reads:x?}"
            );
            assert_none_lost(&events);
        }
    }
}

type Acc = (char, u8, u64, u64);

/// One form: its name, the CPU flag it needs, what it prints, and its exact accesses
/// (R/W, width, offset, value; 32-byte reads appear as four 8-byte lines in the text log).
fn forms() -> Vec<(&'static str, &'static str, &'static str, Vec<Acc>)> {
    vec![
        ("div", "", "24 1312\n", vec![('R', 4, 0x40, 0x1010)]),
        ("popcnt", "popcnt", "3\n", vec![('R', 4, 0x44, 0x1011)]),
        (
            "lzcnt",
            "abm",
            "19\n",
            vec![('R', 8, 0x48, 0x1013_0000_1012)],
        ),
        (
            "crc32",
            "sse4_2",
            "4c7cf1b6\n",
            vec![('R', 4, 0x4c, 0x1013)],
        ),
        (
            "pinsrd",
            "sse4_1",
            "0 0 1014 0\n",
            vec![('R', 4, 0x50, 0x1014)],
        ),
        (
            "vpbroadcastd",
            "avx2",
            "1015 1015\n",
            vec![('R', 4, 0x54, 0x1015)],
        ),
        (
            "vpaddd",
            "avx2",
            "1021 1023 1025 1027 1029 102b 102d 102f \n",
            vec![
                ('R', 8, 0x80, 0x1021_0000_1020),
                ('R', 8, 0x88, 0x1023_0000_1022),
                ('R', 8, 0x90, 0x1025_0000_1024),
                ('R', 8, 0x98, 0x1027_0000_1026),
            ],
        ),
        (
            "addsd",
            "",
            "addsd 00 00 00 00 00 00 f8 3f\n",
            vec![('R', 8, 0x58, 0x1017_0000_1016)],
        ),
        ("cvtsi2sd", "", "4120.0\n", vec![('R', 4, 0x60, 0x1018)]),
        ("fld", "", "fld 19 10 00 00\n", vec![('R', 4, 0x64, 0x1019)]),
        ("fild", "", "4122.0\n", vec![('R', 4, 0x68, 0x101a)]),
        (
            "fldt",
            "",
            "fldt 00 00 00 00 00 00 f8 ff\n",
            vec![('R', 8, 0x70, 0x101d_0000_101c), ('R', 2, 0x78, 0x101e)],
        ),
        (
            "fstp",
            "",
            "4004000000000000\n",
            vec![
                ('W', 8, 0x90, 0x4004_0000_0000_0000),
                ('R', 8, 0x90, 0x4004_0000_0000_0000),
            ],
        ),
        (
            "fstps",
            "",
            "c0500000\n",
            vec![('W', 4, 0x98, 0xc050_0000), ('R', 4, 0x98, 0xc050_0000)],
        ),
        (
            "fstpt",
            "",
            "8000000000000000 3fff\n",
            vec![
                ('W', 8, 0xa0, 0x8000_0000_0000_0000),
                ('W', 2, 0xa8, 0x3fff),
                ('R', 8, 0xa0, 0x8000_0000_0000_0000),
                ('R', 2, 0xa8, 0x3fff),
            ],
        ),
        (
            "pextrd",
            "sse4_1",
            "deadbeef\n",
            vec![('W', 4, 0xb0, 0xdead_beef), ('R', 4, 0xb0, 0xdead_beef)],
        ),
        (
            "vmaskmov_load",
            "avx2",
            "1030 0 1032 0 0 0 0 1037 \n",
            vec![
                ('R', 4, 0xc0, 0x1030),
                ('R', 4, 0xc8, 0x1032),
                ('R', 4, 0xdc, 0x1037),
            ],
        ),
        (
            "vmaskmov_store",
            "avx2",
            "1038 a1 103a 103b a4 103d 103e 103f \n",
            [('W', 4, 0xe4, 0xa1), ('W', 4, 0xf0, 0xa4)]
                .into_iter()
                .chain((0..8).map(|i| {
                    let v = match i {
                        1 => 0xa1,
                        4 => 0xa4,
                        _ => 0x1038 + i,
                    };
                    ('R', 4, 0xe0 + 4 * i, v)
                }))
                .collect(),
        ),
        (
            "avx512_load",
            "avx512f",
            "1080 0 0 0 0 1585 0 0 0 0 1a8a 0 0 0 0 1f8f \n",
            vec![
                ('R', 4, 0x200, 0x1080),
                ('R', 4, 0x214, 0x1085),
                ('R', 4, 0x228, 0x108a),
                ('R', 4, 0x23c, 0x108f),
            ],
        ),
        (
            "avx512_perm",
            "avx512f",
            "10af 10ae 0 0 0 0 0 0 0 0 0 0 0 0 0 0 \n",
            (0..8u64)
                .map(|i| {
                    let lo = 0x10a0 + 2 * i;
                    ('R', 8, 0x280 + 8 * i, ((lo + 1) << 32) | lo)
                })
                .collect(),
        ),
        (
            "avx512_store",
            "avx512f",
            "b4 1091 b6 1093 \n",
            vec![
                ('W', 4, 0x240, 0xb4),
                ('W', 4, 0x248, 0xb6),
                ('R', 4, 0x240, 0xb4),
                ('R', 4, 0x244, 0x1091),
                ('R', 4, 0x248, 0xb6),
                ('R', 4, 0x24c, 0x1093),
            ],
        ),
    ]
}

/// The accesses in the log, with the plain reads and writes the program makes itself to
/// print its results (`rd32`…, emulated) included: the list in [`forms`] has them.
#[test]
fn instruction_forms_run_out_of_line_with_exact_values() {
    let f = fixture("forms", "ool_forms");
    let pristine = std::fs::read(&f.dev).unwrap();
    let mut not_run = vec![];
    for (form, flag, want, accs) in forms() {
        if !flag.is_empty() && !cpu_has(flag) {
            not_run.push(form);
            continue;
        }
        std::fs::write(&f.dev, &pristine).unwrap();
        let nat = native(&f, &[], &[form]);
        assert_exit(&nat, 0);
        assert_eq!(stdout(&nat), want, "{form} natively");

        // Without out-of-line execution the form's own access is stepped: UNKNOWN.
        std::fs::write(&f.dev, &pristine).unwrap();
        let (out, stepped) = record_env(&f, &[("MMIO_TRACE_PATH", "step")], &[form]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), want, "{form} stepped");
        assert!(
            !unknowns(&stepped).is_empty() || accesses(&stepped) != accs,
            "{form}: the step path does not log it exactly"
        );

        std::fs::write(&f.dev, &pristine).unwrap();
        let (out, events) = record_env(&f, &[], &[form]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), want, "{form} traced");
        assert_eq!(unknowns(&events), vec![], "{form}: nothing stepped");
        assert_eq!(accesses(&events), accs, "{form}: the exact accesses");
        assert_none_lost(&events);
        // Stores reached the device with exactly the logged bytes, nothing else changed.
        let mut want_dev = pristine.clone();
        for &(d, w, off, v) in &accs {
            if d == 'W' {
                let o = off as usize;
                want_dev[o..o + w as usize].copy_from_slice(&v.to_le_bytes()[..w as usize]);
            }
        }
        assert!(
            std::fs::read(&f.dev).unwrap() == want_dev,
            "{form}: the device holds exactly the logged stores"
        );
    }
    if !not_run.is_empty() {
        eprintln!("NOT RUN (the CPU lacks their feature): {not_run:?}");
    }
}

/// A read-modify-write forced out of line reads and writes the device once each, as the
/// emulator does.
#[test]
fn read_modify_write_out_of_line_matches_the_emulator() {
    let f = fixture("rmw", "ool_forms");
    let pristine = std::fs::read(&f.dev).unwrap();
    let want = vec![
        ('R', 4, 0x340, 0x10d0),
        ('W', 4, 0x340, 0x10d5),
        ('R', 4, 0x340, 0x10d5),
    ];
    for path in ["emulate", "ool"] {
        std::fs::write(&f.dev, &pristine).unwrap();
        let (out, events) = record_env(&f, &[("MMIO_TRACE_PATH", path)], &["rmw"]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), "10d5\n", "{path}");
        assert_eq!(accesses(&events), want, "{path}");
        assert_eq!(unknowns(&events), vec![], "{path}");
    }
}

/// A `div` by a device value of 0 run out of line raises SIGFPE at the program's own
/// instruction (`si_addr` and the handler's return point), and the thread goes on.
#[test]
fn a_fault_inside_the_slot_is_the_programs_at_its_instruction() {
    let f = fixture("divzero", "ool_forms");
    let (out, events) = record_env(&f, &[], &["divzero"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "SIGFPE at the instruction: 1\n3\n");
    assert_eq!(
        accesses(&events),
        vec![
            ('W', 4, 0x300, 0),
            ('R', 4, 0x300, 0),
            ('R', 4, 0x44, 0x1011)
        ]
    );
    assert_eq!(unknowns(&events), vec![]);
}

/// A legacy SSE operand that is not 16-byte aligned faults (#GP, SIGSEGV) as natively: the
/// aligned bounce buffer must not make it succeed.
#[test]
fn a_misaligned_sse_operand_still_faults() {
    let f = fixture("misaligned", "ool_forms");
    let nat = native(&f, &[], &["misaligned"]);
    assert_exit(&nat, 139);
    for path in ["emulate", "ool"] {
        let (out, events) = record_env(&f, &[("MMIO_TRACE_PATH", path)], &["misaligned"]);
        // The recorder exits as the program did: 128 + SIGSEGV.
        assert_exit(&out, 139);
        assert_eq!(stdout(&out), "", "{path}");
        assert_eq!(accesses(&events), vec![], "{path}");
    }
}

/// A timer handler that touches the device (out of line itself) interrupts the main
/// thread's out-of-line accesses at every point, its slots included: every access is
/// logged once with its value, and both see the right value every time.
#[test]
fn nested_faults_from_a_signal_handler_take_their_own_frames() {
    let f = fixture("nested", "ool_forms");
    let (out, events) = record_env(&f, &[], &["nested"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let hits: usize = text
        .strip_prefix("bad 0 0 hits ")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(hits > 0, "the timer fired during the accesses");
    let accs = accesses(&events);
    assert_eq!(accs.len(), 20000 + hits);
    assert!(accs.iter().all(|a| *a == ('R', 4, 0x44, 0x1011)));
    assert_eq!(unknowns(&events), vec![]);
    assert_none_lost(&events);
}

/// The calls of README's EINTR list, each blocked in a thread of its own while main runs
/// `strlen` on the device 300 times: none returns early out of line; stepped, every one
/// does (the control that shows the test can see it).
#[test]
fn blocking_calls_are_not_interrupted_by_out_of_line_accesses() {
    let f = fixture("eintr", "ool_eintr");
    let calls = [
        "nanosleep",
        "poll",
        "epoll_wait",
        "select",
        "msgrcv",
        "semop",
        "sigtimedwait",
        "clock_nanosleep",
        "recv(SO_RCVTIMEO)",
    ];
    let report = |out: &Output| -> Vec<(String, String)> {
        stdout(out)
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    };
    let all = |state: &str| -> Vec<(String, String)> {
        calls
            .iter()
            .map(|c| (c.to_string(), state.to_string()))
            .chain([("strlen 64 wrong".to_string(), "0".to_string())])
            .collect()
    };
    let (out, events) = record_env(&f, &[], &[]);
    assert_exit(&out, 0);
    assert_eq!(report(&out), all("ok"));
    assert_eq!(unknowns(&events), vec![]);
    assert!(accesses(&events).len() >= 301, "every strlen is traced");
    assert_reads_match(&std::fs::read(&f.dev).unwrap(), &events);

    let (out, _) = record_env(&f, &[("MMIO_TRACE_PATH", "step")], &[]);
    assert_exit(&out, 0);
    assert_eq!(report(&out), all("early"));
}

/// tests/programs/regs.c's `crc32 m`, which the step path logs `UNKNOWN`, is now an
/// exact read among the emulated accesses, in the same place.
#[test]
fn regs_crc32_is_a_read_with_its_value_where_the_step_path_had_unknown() {
    let f = Fixture::new("regs", "regs", 8192);
    let pristine = std::fs::read(&f.dev).unwrap();
    let (out, stepped) = f.record_env(&[NO_OOL], &[], &[]);
    let (status, printed) = (code(&out), stdout(&out));
    assert_eq!(unknowns(&stepped), [(4, [0xf2, 0x0f, 0x38])]);
    let want: Vec<Acc> = stepped
        .iter()
        .filter_map(|e| match e {
            Event::Access(_) => accesses(std::slice::from_ref(e)).pop(),
            Event::Unknown(u) => Some(('R', 4, u.phys, 0xdead_beef)),
            _ => None,
        })
        .collect();
    std::fs::write(&f.dev, &pristine).unwrap();
    let (out, events) = f.record(&[]);
    assert_eq!(code(&out), status);
    assert_eq!(stdout(&out), printed);
    assert_eq!(unknowns(&events), vec![]);
    assert_eq!(accesses(&events), want);
}

/// An out-of-line store's epilogue calls into the tracer: every register the program had
/// (general, flags, the red zone, all vector registers in full, the x87 stack) is as
/// natively afterwards, and the store is logged with its value.
#[test]
fn an_out_of_line_store_preserves_the_programs_registers_and_red_zone() {
    let f = fixture("preserve", "ool_forms");
    let pristine = std::fs::read(&f.dev).unwrap();
    let forms: &[&str] = if cpu_has("avx512f") {
        &["preserve", "preserve512"]
    } else {
        eprintln!("NOT RUN: preserve512 (this CPU has no AVX-512F)");
        &["preserve"]
    };
    if !cpu_has("avx2") {
        eprintln!("NOT RUN: the preserve forms need AVX2");
        return;
    }
    for form in forms {
        std::fs::write(&f.dev, &pristine).unwrap();
        let nat = native(&f, &[], &[form]);
        assert_exit(&nat, 0);
        assert!(stdout(&nat).contains(" cf 1 rz 5555 6666 x87 -7.5 1.25 dev c8ac9074"));
        let (out, events) = record_env(&f, &[], &[form]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), stdout(&nat), "{form}");
        assert_eq!(
            accesses(&events),
            vec![('W', 4, 0x380, 0xc8ac_9074), ('R', 4, 0x380, 0xc8ac_9074)]
        );
    }
}

/// The same fault without a handler kills the program with SIGFPE as natively (exit 136),
/// and the device is read once: the instruction is not re-run on the device.
#[test]
fn a_fatal_fault_inside_the_slot_kills_as_natively_after_one_read() {
    let f = fixture("divzero_fatal", "ool_forms");
    let nat = native(&f, &[], &["divzero_fatal"]);
    assert_exit(&nat, 136);
    let (out, events) = record_env(&f, &[], &["divzero_fatal"]);
    assert_exit(&out, 136);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        accesses(&events),
        vec![('W', 4, 0x300, 0), ('R', 4, 0x300, 0)]
    );
    assert_eq!(unknowns(&events), vec![]);
}

/// A 32-bit address (0x67 prefix, device mapped below 4 GiB) is not rewritten to the
/// bounce buffer, whose address would be truncated: it keeps the step path, with the
/// right result (the same `popcnt` without the prefix runs out of line).
#[test]
fn a_32_bit_address_keeps_the_step_path() {
    let f = fixture("addr32", "ool_forms");
    let (out, events) = record_env(&f, &[], &["addr32"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "3\n");
    assert_eq!(accesses(&events), vec![('R', 4, 0x44, 0x1011)]);
    assert_eq!(unknowns(&events), vec![(0x44, [0x67, 0xf3, 0x0f])]);
}

/// Out-of-line accesses from four threads at once, in five batches of threads that come
/// and go (each thread maps its own frames, unmapped when it ends), then from a fork
/// child beside its parent: every result right, every access logged once with its value
/// under its own thread id.
#[test]
fn threads_that_come_and_go_and_a_fork_child_run_out_of_line() {
    let f = fixture("threads", "ool_forms");
    let dev = std::fs::read(&f.dev).unwrap();
    let (out, events) = record_env(&f, &[], &["threads"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "wrong 0 child 0\n");
    assert_eq!(unknowns(&events), vec![]);
    assert_none_lost(&events);
    assert_reads_match(&dev, &events);
    let popcnts: Vec<u32> = accesses_by_pid(&events)
        .into_iter()
        .filter(|a| (a.1, a.2, a.3) == ('R', 4, 0x44))
        .map(|a| a.0)
        .collect();
    // 20 threads, the parent and the child, 200 each.
    assert_eq!(popcnts.len(), 22 * 200);
    let mut tids = popcnts.clone();
    tids.sort_unstable();
    tids.dedup();
    assert_eq!(tids.len(), 22);
    for t in tids {
        assert_eq!(popcnts.iter().filter(|&&p| p == t).count(), 200);
    }
}

/// A #GP raised inside the slot (`ldmxcsr` of a device value with reserved bits) reaches
/// the program's SIGSEGV handler at its own instruction, with its frame released: 20
/// faults left with `siglongjmp`, then the thread still runs out of line. Natively the
/// same.
#[test]
fn a_general_protection_fault_inside_the_slot_is_the_programs() {
    let f = fixture("gp_in_slot", "ool_forms");
    let nat = native(&f, &[], &["gp_in_slot"]);
    assert_exit(&nat, 0);
    assert_eq!(stdout(&nat), "at the instruction 20 of 20, then 3\n");
    let (out, events) = record_env(&f, &[], &["gp_in_slot"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), stdout(&nat));
    let mut want = vec![('W', 4, 0x310, 0xffff_0000)];
    want.extend([('R', 4, 0x310, 0xffff_0000); 20]);
    want.push(('R', 4, 0x44, 0x1011));
    assert_eq!(accesses(&events), want);
    assert_eq!(unknowns(&events), vec![]);
}
