//! String instructions (`REP MOVS/STOS/LODS/SCAS/CMPS` of every width, with DF=1,
//! 32-bit addresses, counts 0, 1 and large, device and ordinary operands, a string that
//! runs off the device mapping into ordinary memory, another mapping, a hole or past
//! the end of the device file) through the built binary
//! (tests/programs/strings_ops.c). For each: the log holds exactly the accesses the CPU
//! makes, element by element (read source, write destination), computed here from the
//! device's known contents; the program's output (registers after the instruction or at
//! its fault) and the device's final bytes are those of an untraced run; and the whole
//! instruction costs one trap (counted with strace), however many elements it has.
//! A binary log keeps a run of elements as one record: a 4096-element `REP STOSQ` is a
//! few dozen bytes, and reads back as the same accesses as the text log.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::{AnyReader, Direction, Event};

/// The program's device mapping (its tail page follows).
const LEN: u64 = 64 * 1024;
const PAGE: u64 = 4096;
/// The value the program puts in RAX (STOS stores it; SCAS compares with 0 instead).
const RAX: u64 = 0x1122_3344_5566_7788;

/// An operand of the string instruction: a device offset (the tail page at LEN..), an
/// offset in the program's ordinary buffer, or none.
#[derive(Clone, Copy, Debug)]
enum Op {
    D(u64),
    R(u64),
    No,
}

impl Op {
    fn arg(self) -> String {
        match self {
            Op::D(o) if o >= LEN => format!("t+{:#x}", o - LEN),
            Op::D(o) => format!("d+{o:#x}"),
            Op::R(o) => format!("r+{o:#x}"),
            Op::No => "-".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    op: &'static str,
    width: u8,
    /// RCX; `None`: no REP prefix.
    count: Option<u64>,
    src: Op,
    dst: Op,
    flags: &'static str,
    tail: &'static str,
}

fn case(op: &'static str, width: u8, count: Option<u64>, src: Op, dst: Op) -> Case {
    Case {
        op,
        width,
        count,
        src,
        dst,
        flags: "-",
        tail: "anon",
    }
}

impl Case {
    fn with(mut self, flags: &'static str, tail: &'static str) -> Case {
        self.flags = flags;
        self.tail = tail;
        self
    }

    fn args(&self) -> Vec<String> {
        vec![
            self.op.into(),
            self.width.to_string(),
            self.count.map_or("-".into(), |c| c.to_string()),
            self.src.arg(),
            self.dst.arg(),
            self.flags.into(),
            self.tail.into(),
        ]
    }

    fn name(&self) -> String {
        self.args().join(" ")
    }
}

/// The memories the program sees, and the device accesses the CPU makes.
struct Model {
    /// The device file (LEN + PAGE bytes, or LEN when the tail is past its end).
    dev: Vec<u8>,
    ram: Vec<u8>,
    tail: &'static str,
    /// (R/W, width, device offset, value).
    log: Accesses,
}

impl Model {
    fn new(file_len: u64, tail: &'static str) -> Model {
        let mut dev = Vec::new();
        for k in 0..file_len / 4 {
            dev.extend_from_slice(&(0x1000 + k as u32).to_le_bytes());
        }
        Model {
            dev,
            ram: (0..64 * 1024).map(|k| (k * 7 + 3) as u8).collect(),
            tail,
            log: vec![],
        }
    }

    /// Whether device offset `o` of `w` bytes is traced device memory; `Err`: it faults.
    fn device(&self, o: u64, w: u64) -> Result<bool, ()> {
        if o + w <= LEN {
            return Ok(true);
        }
        match self.tail {
            "dev" => Ok(true),
            "anon" => Ok(false),
            _ => Err(()),
        }
    }

    fn read(&mut self, op: Op, w: u8) -> Result<u64, ()> {
        let n = usize::from(w);
        let mut b = [0u8; 8];
        match op {
            Op::D(o) => {
                if self.device(o, u64::from(w))? {
                    b[..n].copy_from_slice(&self.dev[o as usize..o as usize + n]);
                    let v = u64::from_le_bytes(b);
                    self.log.push(('R', w, o, v));
                    return Ok(v);
                }
                // The ordinary tail page: 0x5a bytes.
                Ok(u64::from_le_bytes([0x5a; 8]) & mask(w))
            }
            Op::R(o) => {
                b[..n].copy_from_slice(&self.ram[o as usize..o as usize + n]);
                Ok(u64::from_le_bytes(b))
            }
            Op::No => unreachable!(),
        }
    }

    fn write(&mut self, op: Op, w: u8, v: u64) -> Result<(), ()> {
        let n = usize::from(w);
        let b = (v & mask(w)).to_le_bytes();
        match op {
            Op::D(o) => {
                if self.device(o, u64::from(w))? {
                    self.dev[o as usize..o as usize + n].copy_from_slice(&b[..n]);
                    self.log.push(('W', w, o, v & mask(w)));
                }
            }
            Op::R(o) => self.ram[o as usize..o as usize + n].copy_from_slice(&b[..n]),
            Op::No => unreachable!(),
        }
        Ok(())
    }

    /// Runs the case element by element as the CPU does; stops at a fault.
    fn run(&mut self, c: &Case) {
        let w = c.width;
        let down = c.flags.contains('d');
        let at = |op: Op, k: u64| {
            let d = k * u64::from(w);
            let f = |o: u64| if down { o.wrapping_sub(d) } else { o + d };
            match op {
                Op::D(o) => Op::D(f(o)),
                Op::R(o) => Op::R(f(o)),
                Op::No => Op::No,
            }
        };
        let acc = if c.op == "scas" { 0 } else { RAX & mask(w) };
        for k in 0..c.count.unwrap_or(1) {
            let (s, d) = (at(c.src, k), at(c.dst, k));
            let stop = match c.op {
                "stos" => self.write(d, w, acc).map(|_| false),
                "lods" => self.read(s, w).map(|_| false),
                "movs" => self
                    .read(s, w)
                    .and_then(|v| self.write(d, w, v))
                    .map(|_| false),
                "scas" => self.read(d, w).map(|v| {
                    let eq = v == acc;
                    (c.flags.contains('n') && eq) || (c.flags.contains('e') && !eq)
                }),
                "cmps" => self.read(s, w).and_then(|a| {
                    let b = self.read(d, w)?;
                    Ok((c.flags.contains('n') && a == b) || (c.flags.contains('e') && a != b))
                }),
                _ => unreachable!(),
            };
            match stop {
                Ok(false) => {}
                Ok(true) | Err(()) => break,
            }
        }
    }
}

fn mask(w: u8) -> u64 {
    if w >= 8 {
        u64::MAX
    } else {
        (1 << (8 * w)) - 1
    }
}

/// (R/W, width, device offset, value) of each access.
type Accesses = Vec<(char, u8, u64, u64)>;

/// The device accesses of a log, and the map id of each.
fn logged(events: &[Event]) -> (Accesses, Vec<i64>) {
    let ids = events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a.map_id),
            _ => None,
        })
        .collect();
    (accesses(events), ids)
}

/// Runs the program on `dev` without the tracer.
fn native(exe: &Path, dev: &Path, args: &[String]) -> Output {
    Command::new(exe).arg(dev).args(args).output().unwrap()
}

/// A fixture whose device file suits the case's tail (`bus`: the file ends with the
/// mapping's first LEN bytes).
fn fixture(name: &str, c: &Case) -> (Fixture, u64) {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let exe = EXE
        .get_or_init(|| build(&scratch("strings_exe"), "strings_ops"))
        .clone();
    let file_len = if c.tail == "bus" { LEN } else { LEN + PAGE };
    let dir = scratch(name);
    let dev = device(&dir, file_len as usize);
    (Fixture { dir, exe, dev }, file_len)
}

/// Records the case (with `env`), and checks the log against the model, the output and
/// device against an untraced run. Returns the events.
#[track_caller]
fn check(name: &str, c: &Case, env: &[(&str, &str)]) -> Vec<Event> {
    check_path(name, c, env, false)
}

/// As [`check`]; `stepped`: the instruction is single-stepped (the step path).
#[track_caller]
fn check_path(name: &str, c: &Case, env: &[(&str, &str)], stepped: bool) -> Vec<Event> {
    let (t, file_len) = fixture(name, c);
    let args = c.args();
    let native_dev = t.dir.join("native.bin");
    std::fs::copy(&t.dev, &native_dev).unwrap();
    let want_out = native(&t.exe, &native_dev, &args);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, ev) = t.record_env(env, &[], &a);
    let what = format!("case `{}` env {env:?}", c.name());
    assert_eq!(
        code(&out),
        code(&want_out),
        "{what}: status; {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), stdout(&want_out), "{what}: program output");
    assert_eq!(
        std::fs::read(&t.dev).unwrap(),
        std::fs::read(&native_dev).unwrap(),
        "{what}: device contents"
    );
    let mut m = Model::new(file_len, c.tail);
    m.run(c);
    assert_eq!(
        std::fs::read(&t.dev).unwrap(),
        m.dev,
        "{what}: device contents as the model has them"
    );
    if stepped && !step_knows(c) {
        // The step path logs one event per element it single-steps: an UNKNOWN at its
        // first device address (the values are in no register).
        let want: Vec<u64> = first_accesses(c, &m);
        let got: Vec<u64> = unknowns(&ev).iter().map(|u| u.0).collect();
        assert_eq!(got, want, "{what}: step path UNKNOWN addresses");
    } else {
        let (got, ids) = logged(&ev);
        assert_eq!(got, m.log, "{what}: accesses");
        // A string into the second mapping (tail `dev`) logs those accesses in map 2.
        let want_ids: Vec<i64> = m.log.iter().map(|a| 1 + (a.2 >= LEN) as i64).collect();
        assert_eq!(ids, want_ids, "{what}: map ids");
        assert!(unknowns(&ev).is_empty(), "{what}: UNKNOWN events");
    }
    assert_time_ordered(&ev);
    assert_none_lost(&ev);
    ev
}

/// Whether the step path knows the values of the case's elements: `STOS` (the
/// accumulator), `LODS` (the accumulator after the step), `MOVS` with one side in
/// ordinary memory (read there); not `MOVS` between device addresses, `SCAS`, `CMPS`.
fn step_knows(c: &Case) -> bool {
    match c.op {
        "stos" | "lods" => true,
        "movs" => !matches!((c.src, c.dst), (Op::D(_), Op::D(_))),
        _ => false,
    }
}

/// The address of each element's first device access, as the step path logs them.
fn first_accesses(c: &Case, m: &Model) -> Vec<u64> {
    let per = if c.op == "movs" || c.op == "cmps" {
        // Two accesses per element when both operands are device memory.
        match (c.src, c.dst) {
            (Op::D(_), Op::D(_)) => 2,
            _ => 1,
        }
    } else {
        1
    };
    m.log.iter().step_by(per).map(|a| a.2).collect()
}

use Op::{No, D, R};

/// Every form, width, direction and operand kind.
fn forms() -> Vec<Case> {
    let mut v = vec![];
    for w in [1u8, 2, 4, 8] {
        v.push(case("stos", w, Some(37), No, D(0x100)));
        v.push(case("movs", w, Some(21), D(0x200), D(0x3000)));
        v.push(case("movs", w, Some(19), D(0x400), R(0x40)));
        v.push(case("movs", w, Some(17), R(0x80), D(0x500)));
        v.push(case("lods", w, Some(13), D(0x600), No));
        v.push(case("stos", w, Some(9), No, D(0x800)).with("d", "anon"));
        v.push(case("movs", w, Some(11), D(0x900), D(0xa00)).with("d", "anon"));
        v.push(case("movs", w, Some(13), D(0x900), R(0x200)).with("d", "anon"));
        v.push(case("movs", w, Some(15), R(0x300), D(0xb00)).with("d", "anon"));
        v.push(case("stos", w, Some(1), No, D(0xc00)));
        v.push(case("movs", w, Some(1), R(0x300), D(0xc10)));
    }
    v.extend([
        // Overlapping MOVS (a memmove done wrong, as the CPU does it).
        case("movs", 1, Some(40), D(0x1000), D(0x1003)),
        // Without REP: one element.
        case("stos", 4, None, No, D(0x40)),
        case("movs", 8, None, D(0x48), D(0x2048)),
        case("lods", 1, None, D(0x13), No),
        // Count 0: nothing.
        case("stos", 8, Some(0), No, D(0x40)),
        case("movs", 8, Some(0), D(0x40), D(0x80)),
        // 32-bit addresses (mappings below 4 GiB).
        case("stos", 4, Some(16), No, D(0x100)).with("a", "anon"),
        case("movs", 2, Some(10), D(0x200), D(0x300)).with("a", "anon"),
        case("movs", 8, Some(5), R(0x40), D(0x400)).with("ad", "anon"),
        // SCAS / CMPS stop on their condition.
        case("scas", 1, Some(64), No, D(0x700)).with("n", "anon"),
        case("scas", 2, Some(64), No, D(0x700)).with("e", "anon"),
        case("cmps", 1, Some(16), D(0x800), D(0x800)).with("e", "anon"),
        case("cmps", 4, Some(16), D(0x800), D(0x900)).with("e", "anon"),
    ]);
    v
}

#[test]
fn every_form_logs_each_element_in_order() {
    for (i, c) in forms().iter().enumerate() {
        check(&format!("form{i}"), c, &[]);
    }
}

/// A string that leaves the device mapping: into ordinary memory (not logged), into a
/// second mapping of the device (logged in its map), into a hole (SIGSEGV at the first
/// element there: the elements before it happened and are logged, RSI/RDI/RCX point at
/// it) or past the end of the device file (SIGBUS likewise); with and without a handler.
fn edges() -> Vec<Case> {
    let near = LEN - 0x40;
    vec![
        case("stos", 8, Some(16), No, D(near)).with("-", "anon"),
        case("stos", 8, Some(16), No, D(near)).with("-", "dev"),
        case("movs", 4, Some(40), D(near), D(0x100)).with("-", "dev"),
        case("movs", 8, Some(16), D(0x100), D(near)).with("-", "anon"),
        case("stos", 8, Some(16), No, D(near)).with("-", "none"),
        case("movs", 8, Some(16), D(near), R(0)).with("-", "none"),
        case("movs", 8, Some(16), D(0x100), D(near)).with("-", "none"),
        case("stos", 2, Some(64), No, D(near)).with("-", "bus"),
        case("movs", 8, Some(16), D(near), D(0x100)).with("-", "bus"),
        case("lods", 4, Some(32), D(near), No).with("-", "bus"),
        case("movs", 4, Some(40), D(near), R(0x100)).with("-", "bus"),
        case("movs", 4, Some(40), R(0x100), D(near)).with("-", "bus"),
        case("movs", 2, Some(40), R(0x100), D(near + 0x3e)).with("d", "bus"),
        case("stos", 8, Some(16), No, D(near)).with("d", "none"),
        case("movs", 8, Some(16), R(0x100), D(near)).with("-", "none"),
        // No handler: killed at the element, as natively.
        case("stos", 8, Some(16), No, D(near)).with("x", "none"),
        case("movs", 8, Some(16), D(near), D(0x100)).with("x", "bus"),
        case("stos", 4, Some(40), No, D(near)).with("x", "bus"),
        case("movs", 1, Some(200), R(0), D(near)).with("x", "bus"),
    ]
}

#[test]
fn strings_that_leave_the_mapping() {
    for (i, c) in edges().iter().enumerate() {
        check(&format!("edge{i}"), c, &[]);
    }
}

#[test]
fn a_large_count_is_exact() {
    // 8190 quadwords: nearly all of the device, in runs of many ring events.
    check("large_stos", &case("stos", 8, Some(8190), No, D(0x10)), &[]);
    check(
        "large_movs",
        &case("movs", 4, Some(8000), D(0x8000), D(0x10)),
        &[],
    );
    check(
        "large_down",
        &case("lods", 2, Some(20000), D(0xfffe), No).with("d", "anon"),
        &[],
    );
}

#[test]
fn the_step_path_steps_each_element() {
    let step = [("MMIO_TRACE_PATH", "step")];
    for c in [
        case("stos", 8, Some(5), No, D(0x100)),
        case("movs", 2, Some(4), D(0x200), D(0x3000)),
        case("movs", 4, Some(3), D(0x200), R(0)),
        case("lods", 1, Some(6), D(0x13), No).with("d", "anon"),
        case("stos", 4, Some(8), No, LEN_NEAR).with("-", "none"),
        case("movs", 8, Some(5), R(0x40), D(0x400)).with("d", "anon"),
        case("movs", 1, Some(7), D(0x123), R(0x40)).with("a", "anon"),
        case("stos", 2, Some(6), No, D(0x200)).with("a", "anon"),
        case("lods", 8, Some(3), D(LEN - 8), No).with("-", "dev"),
        case("stos", 1, None, No, D(0x3)),
        case("scas", 1, Some(16), No, D(0x701)).with("n", "anon"),
        case("cmps", 2, Some(4), D(0x800), D(0x800)).with("e", "anon"),
    ] {
        check_path(
            &format!("step_{}_{}_{}", c.op, c.width, c.flags),
            &c,
            &step,
            true,
        );
    }
    // The other paths the switch names: the emulator completes string instructions
    // (`emulate`, `no-ool`); out-of-line execution does not run them (`ool`): stepped.
    for (p, stepped) in [("emulate", false), ("no-ool", false), ("ool", true)] {
        let env = [("MMIO_TRACE_PATH", p)];
        let c = case("movs", 8, Some(7), D(0x200), D(0x3000));
        check_path(&format!("path_{p}"), &c, &env, stepped);
    }
}

const LEN_NEAR: Op = D(LEN - 0x10);

/// The traps (SIGSEGV, SIGBUS, SIGTRAP deliveries) of the traced program, counted by
/// strace, and the log's accesses.
fn traps(name: &str, c: &Case) -> (usize, Accesses) {
    let (t, _) = fixture(name, c);
    let st = t.dir.join("strace.txt");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=none",
        "-e",
        "signal=SIGSEGV,SIGBUS,SIGTRAP",
        "-o",
    ])
    .arg(&st)
    .arg(env!("CARGO_BIN_EXE_mmio-trace"))
    .args(["record", "-q", "-o"])
    .arg(trace_log(&t.dir))
    .arg("--device")
    .arg(&t.dev)
    .arg("--")
    .arg(&t.exe)
    .arg(&t.dev)
    .args(c.args());
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "strace is needed to count the traps of string instructions (apt-get install \
             strace): {e}"
        ),
    };
    assert!(out.status.success(), "strace: {}", stderr(&out));
    let text = std::fs::read_to_string(&st).unwrap();
    let n = text.lines().filter(|l| l.contains("--- SIG")).count();
    (n, accesses(&read_log(&trace_log(&t.dir))))
}

#[test]
fn one_trap_per_string_instruction() {
    for (i, (c, want)) in [
        (case("stos", 8, Some(4096), No, D(0)), 1),
        (case("stos", 1, Some(3000), No, D(0x20)), 1),
        (case("movs", 8, Some(512), D(0), D(0x8000)), 1),
        (case("movs", 4, Some(1000), D(0x10), R(0)), 1),
        (case("movs", 2, Some(1000), R(0), D(0x10)), 1),
        (case("lods", 8, Some(300), D(0x1000), No), 1),
        (
            case("stos", 4, Some(700), No, D(0x2000)).with("d", "anon"),
            1,
        ),
        (
            case("movs", 2, Some(500), D(0x100), D(0x900)).with("a", "anon"),
            1,
        ),
        (
            case("stos", 8, Some(64), No, D(LEN - 0x100)).with("-", "dev"),
            1,
        ),
        (
            case("stos", 8, Some(64), No, D(LEN - 0x100)).with("-", "anon"),
            1,
        ),
        // The tracer's own access faults in the hole (one more SIGSEGV), then the
        // program's handler gets the fault.
        (
            case("stos", 8, Some(64), No, D(LEN - 0x100)).with("-", "none"),
            2,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (n, log) = traps(&format!("traps{i}"), &c);
        let mut m = Model::new(LEN + PAGE, c.tail);
        m.run(&c);
        assert_eq!(log, m.log, "case `{}`: accesses", c.name());
        assert_eq!(n, want, "case `{}`: traps", c.name());
    }
}

#[test]
fn binary_log_keeps_one_record_per_string_instruction() {
    let c = case("stos", 8, Some(4096), No, D(0));
    let (t, _) = fixture("binary", &c);
    let args = c.args();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let text_dev = t.dir.join("text.bin");
    std::fs::copy(&t.dev, &text_dev).unwrap();
    // The text log of the same program, on a copy of the device.
    let text_log = t.dir.join("text.log");
    let out = record_cmd(&t.dir, &text_dev, &[])
        .arg(&t.exe)
        .arg(&text_dev)
        .args(&a)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    std::fs::rename(trace_log(&t.dir), &text_log).unwrap();
    let (out, bin_events) = t.record_with(&["--format", "binary"], &a);
    assert_exit(&out, 0);
    let text_events = read_log(&text_log);
    let (text_acc, bin_acc) = (accesses(&text_events), accesses(&bin_events));
    assert_eq!(text_acc.len(), 4096);
    assert_eq!(bin_acc, text_acc);
    let mut m = Model::new(LEN + PAGE, "anon");
    m.run(&c);
    assert_eq!(bin_acc, m.log);
    // Every access of the binary log: same time, pc and thread (one instruction).
    let acc: Vec<_> = bin_events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some((a.ts_ns, a.pc, a.pid, a.dir)),
            _ => None,
        })
        .collect();
    assert!(acc.iter().all(|x| x == &acc[0] && x.3 == Direction::Write));
    // Its size: the header (schema) and a few non-access records, plus the string
    // record(s). The accesses one per record would take at least 2 bytes each (a tag
    // and a size byte; blocks: tag and size byte per access, plus a time and a value):
    // 8192 bytes. Allow the header and 1 KiB for MAP/MARK records and the run.
    let size = std::fs::metadata(trace_log(&t.dir)).unwrap().len();
    let header = 14 + mmio_trace_format::binary::SCHEMA.len() as u64;
    let non_access: u64 = {
        // The same log less its accesses, rewritten: what the other records take.
        let mut w = mmio_trace_format::BinaryWriter::new(Vec::new()).unwrap();
        for e in bin_events.iter().filter(|e| !matches!(e, Event::Access(_))) {
            w.write_event(e).unwrap();
        }
        w.into_inner().unwrap().len() as u64 - header
    };
    let strings = size - header - non_access;
    assert!(
        strings <= 64,
        "the 4096 accesses take {strings} bytes (file {size}, header {header}, other \
         records {non_access})"
    );
    assert!(size < header + non_access + 2 * 4096);
    // Read as text through the reader: the same lines as the text log, but the times.
    let mut r = AnyReader::open(&trace_log(&t.dir)).unwrap();
    let mut n = 0;
    while let Some(e) = r.next_event().unwrap() {
        n += matches!(e, Event::Access(_)) as usize;
    }
    assert_eq!(n, 4096);
}

#[test]
fn binary_and_text_logs_agree_for_every_form() {
    for (i, c) in forms().iter().chain(edges().iter()).enumerate().step_by(3) {
        let (t, _) = fixture(&format!("agree{i}"), c);
        let args = c.args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, ev) = t.record_with(&["--format", "binary"], &a);
        let mut m = Model::new(if c.tail == "bus" { LEN } else { LEN + PAGE }, c.tail);
        m.run(c);
        assert_eq!(accesses(&ev), m.log, "case `{}` (binary)", c.name());
    }
}

/// Each run of elements is one ring event and one string record, all its accesses with
/// the time of that event; so the distinct times of a binary log's accesses count the
/// runs: one per instruction, more where the values exceed what one event carries
/// (4096 bytes, unless they are all one value) or where the string enters another
/// mapping.
#[test]
fn runs_are_one_record_each() {
    let near = LEN - 0x40;
    for (i, (c, runs)) in [
        (case("stos", 1, Some(37), No, D(0x100)), 1),
        (case("stos", 8, Some(8190), No, D(0x10)), 1),
        (case("movs", 2, Some(21), D(0x200), D(0x3000)), 1),
        (case("movs", 8, Some(19), D(0x400), R(0x40)), 1),
        (case("movs", 4, Some(17), R(0x80), D(0x500)), 1),
        (case("lods", 4, Some(13), D(0x600), No), 1),
        (case("scas", 1, Some(64), No, D(0x701)).with("n", "anon"), 1),
        (case("stos", 2, Some(9), No, D(0x800)).with("d", "anon"), 1),
        (
            case("movs", 8, Some(11), D(0x900), D(0xa00)).with("d", "anon"),
            1,
        ),
        (
            case("movs", 2, Some(10), D(0x200), D(0x300)).with("a", "anon"),
            1,
        ),
        // 32000 value bytes: runs of 1024 elements.
        (case("movs", 4, Some(8000), D(0x8000), D(0x10)), 8),
        // 40000 value bytes: runs of 2048 elements.
        (
            case("lods", 2, Some(20000), D(0xfffe), No).with("d", "anon"),
            10,
        ),
        // Map 1, then map 2.
        (case("stos", 8, Some(16), No, D(near)).with("-", "dev"), 2),
        // Ordinary memory after the device: not logged.
        (case("stos", 8, Some(16), No, D(near)).with("-", "anon"), 1),
    ]
    .into_iter()
    .enumerate()
    {
        let (t, _) = fixture(&format!("runs{i}"), &c);
        let args = c.args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, ev) = t.record_with(&["--format", "binary"], &a);
        assert_exit(&out, 0);
        let mut m = Model::new(LEN + PAGE, c.tail);
        m.run(&c);
        assert_eq!(accesses(&ev), m.log, "case `{}`", c.name());
        let mut times: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) => Some(a.ts_ns),
                _ => None,
            })
            .collect();
        times.dedup();
        assert_eq!(times.len(), runs, "case `{}`: runs", c.name());
    }
}

/// glibc's memset/memcpy/memmove on the device (whatever instructions they use: `rep
/// stosb`/`rep movsb` for large sizes where the CPU has ERMS): the program's results
/// are those of an untraced run, and the log is exact: replayed over the device's
/// initial contents, every read finds the value it logged, and the writes give the
/// device's final contents.
#[test]
fn libc_string_functions_log_exactly() {
    let t = Fixture::new("libc", "strings_libc", LEN as usize);
    let native_dev = t.dir.join("native.bin");
    std::fs::copy(&t.dev, &native_dev).unwrap();
    let initial = std::fs::read(&t.dev).unwrap();
    let want = native(&t.exe, &native_dev, &[]);
    assert_eq!(code(&want), Some(0));
    for format in ["text", "binary"] {
        std::fs::write(&t.dev, &initial).unwrap();
        let (out, ev) = t.record_with(&["--format", format], &[]);
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), stdout(&want), "{format}");
        let fin = std::fs::read(&t.dev).unwrap();
        assert_eq!(fin, std::fs::read(&native_dev).unwrap(), "{format}");
        let mut mem = initial.clone();
        let mut n = 0;
        for (i, e) in ev.iter().enumerate() {
            let Event::Access(a) = e else { continue };
            n += 1;
            let w = usize::from(a.width);
            let r = a.phys as usize..a.phys as usize + w;
            let bytes = &a.bytes()[..w];
            match a.dir {
                Direction::Read => assert_eq!(
                    &mem[r.clone()],
                    bytes,
                    "{format}: event {i}: R {w} {:#x}",
                    a.phys
                ),
                Direction::Write => mem[r].copy_from_slice(bytes),
            }
        }
        assert!(n > 1000, "{format}: {n} accesses");
        assert!(
            mem == fin,
            "{format}: the log's writes do not give the device's contents"
        );
    }
}

/// Threads doing string instructions on the device at once: each thread's accesses are
/// exactly its own, in its order (W of the value 64 times, then R of it 64 times, per
/// iteration), whatever the interleaving, in both formats.
#[test]
fn threads_each_log_their_own_strings() {
    let t = Fixture::new("threads", "strings_threads", 16 * 0x1000);
    let (threads, iters) = (4u64, 200u64);
    for format in ["text", "binary"] {
        let (out, ev) = t.record_with(
            &["--format", format],
            &[&threads.to_string(), &iters.to_string()],
        );
        assert_exit(&out, 0);
        assert_eq!(stdout(&out), "ok\n");
        assert_none_lost(&ev);
        assert_time_ordered(&ev);
        let mut by: std::collections::BTreeMap<u32, Vec<(char, u8, u64, u64)>> = Default::default();
        for (pid, d, w, off, v) in accesses_by_pid(&ev) {
            by.entry(pid).or_default().push((d, w, off, v));
        }
        assert_eq!(by.len() as u64, threads, "{format}");
        let mut seen = vec![];
        for list in by.values() {
            let th = list[0].2 / 0x1000;
            seen.push(th);
            let mut want = vec![];
            for i in 0..iters {
                let v = th << 32 | i;
                want.extend((0..64).map(|k| ('W', 8, th * 0x1000 + 8 * k, v)));
                want.extend((0..64).map(|k| ('R', 8, th * 0x1000 + 8 * k, v)));
            }
            assert!(*list == want, "{format}: thread {th}'s accesses");
        }
        seen.sort();
        assert_eq!(seen, (0..threads).collect::<Vec<_>>());
    }
}
