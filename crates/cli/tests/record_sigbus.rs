//! End-to-end tests of faults raised by device accesses the tracer completes for the
//! program: a device removed under the driver (its file truncated: SIGBUS, BUS_ADRERR)
//! and real SIGSEGVs (writes to a read-only device mapping, an ordinary MOVS operand that
//! faults). Each program runs natively, under `record` and under `record --no-alias`
//! (every access single-stepped): the output (what the program's handler saw in its
//! siginfo and context, what the registers held after) and the device's final contents
//! must be the same. Programs: tests/programs/sigbus_*.c. Needs a C compiler (`cc`).

use std::path::Path;
use std::process::{Command, Output};

use mmio_trace_format::Event;

mod common;
use common::*;

/// Two pages: the program truncates the file to one after mapping both.
const DEV_LEN: usize = 8192;
const SIGBUS: i32 = 7;

/// One program run three ways on identical fresh devices.
struct Runs {
    native: Output,
    rec: Output,
    rec_ev: Vec<Event>,
    noalias: Output,
    noalias_ev: Vec<Event>,
    /// The device file after each run.
    dev: [Vec<u8>; 3],
}

fn reset(dev: &Path, pristine: &[u8]) {
    std::fs::write(dev, pristine).unwrap();
}

/// Runs `PROGRAM DEV ARGS` natively, under `record`, and under `record --no-alias`, each on
/// a fresh copy of the device.
fn run_three(t: &Fixture, args: &[&str]) -> Runs {
    let pristine = std::fs::read(&t.dev).unwrap();
    let native = Command::new(&t.exe)
        .arg(&t.dev)
        .args(args)
        .output()
        .unwrap();
    let d0 = std::fs::read(&t.dev).unwrap();
    reset(&t.dev, &pristine);
    let (rec, rec_ev) = t.record(args);
    let d1 = std::fs::read(&t.dev).unwrap();
    reset(&t.dev, &pristine);
    let (noalias, noalias_ev) = t.record_with(&["--no-alias"], args);
    let d2 = std::fs::read(&t.dev).unwrap();
    reset(&t.dev, &pristine);
    Runs {
        native,
        rec,
        rec_ev,
        noalias,
        noalias_ev,
        dev: [d0, d1, d2],
    }
}

/// Asserts that the three runs agree: exit status (a signal death as 128 + signal),
/// output, device contents; returns the native output.
#[track_caller]
fn assert_same(r: &Runs) -> String {
    let want = stdout(&r.native);
    assert_eq!(
        stdout(&r.rec),
        want,
        "under record; stderr {}",
        stderr(&r.rec)
    );
    assert_eq!(
        stdout(&r.noalias),
        want,
        "under record --no-alias; stderr {}",
        stderr(&r.noalias)
    );
    assert_eq!(code(&r.rec), code(&r.native), "stderr {}", stderr(&r.rec));
    assert_eq!(
        code(&r.noalias),
        code(&r.native),
        "stderr {}",
        stderr(&r.noalias)
    );
    assert!(
        r.dev[1] == r.dev[0],
        "device after record differs from native"
    );
    assert!(
        r.dev[2] == r.dev[0],
        "device after record --no-alias differs from native"
    );
    assert_none_lost(&r.rec_ev);
    assert_none_lost(&r.noalias_ev);
    want
}

/// [`run_three`] of a program that exits 0 under `record`, the runs agreeing
/// ([`assert_same`]); returns the runs and the output.
#[track_caller]
fn run_agreeing(t: &Fixture, args: &[&str]) -> (Runs, String) {
    let r = run_three(t, args);
    assert_exit(&r.rec, 0);
    let out = assert_same(&r);
    (r, out)
}

/// The 8-byte accesses at device offset 0x100 (MOVS's operand) in `ev`.
fn movs_accesses(ev: &[Event]) -> Vec<(char, u8, u64, u64)> {
    accesses(ev)
        .into_iter()
        .filter(|a| a.2 == 0x100 && a.1 == 8)
        .collect()
}

/// The report of one instruction whose access to the gone page at `off` raised SIGBUS with
/// the registers of the plain forms (RSI = the address).
/// `err`: the page-fault error code (4: a user read, 6: a user write, RMW included).
fn sigbus_at(name: &str, off: &str, err: u32, len: u32) -> String {
    format!(
        "{name}\n  sig 7 code 2 addr {off} cr2 {off} err {err:#x} rip =insn len {len}\n  \
         ctx rax 0x1111 rcx 0x2222 rdx 0x1122334455667788 rsi {off} rdi +0x1048 \
         xmm0 0x1122334455667788\n"
    )
}

/// Word k of the test device holds 0x1000 + k: the 8 bytes at `off` as one value.
fn qword(off: u64) -> u64 {
    u64::from(initial_word(off)) | u64::from(initial_word(off + 4)) << 32
}

#[test]
fn sigbus_handler_sees_the_instruction_and_skips_it() {
    let t = Fixture::new("skip", "sigbus_ops", DEV_LEN);
    let (r, out) = run_agreeing(&t, &["skip"]);
    // What the kernel gives natively, and so the tracer must: si_addr and CR2 in the
    // program's mapping, RIP on the instruction, registers (vector ones too) untouched by
    // the faulting load, store, RMW or locked op; skipping it continues correctly.
    let after = "  after rax 0x1111 rcx 0x2222 rdx 0x1122334455667788 rsi +0x1040 rdi +0x1048\n";
    for (name, err, len) in [
        ("load32", 4, 2),
        ("load64", 4, 3),
        ("store32", 6, 2),
        ("store-imm", 6, 6),
        ("add-rmw", 6, 2),
        ("inc-rmw", 6, 3),
        ("lock-xadd", 6, 4),
        ("xchg", 6, 3),
        ("lock-cmpxchg", 6, 5),
        ("lock-or", 6, 7),
        ("cmpxchg16b", 6, 5),
        ("sse-load", 4, 4),
        ("sse-store", 6, 4),
    ] {
        let want = sigbus_at(name, "+0x1040", err, len) + after;
        assert!(out.contains(&want), "{name}: want\n{want}in\n{out}");
    }
    // The second access of MOVS faults: RSI/RDI not advanced. REP MOVSB from page 0 into
    // the gone page: the 16 bytes before the boundary done, RCX/RSI/RDI say so.
    assert!(out.contains(
        "movs-to-gone\n  sig 7 code 2 addr +0x1040 cr2 +0x1040 err 0x6 rip =insn len 2\n  \
         ctx rax 0x1111 rcx 0x2222 rdx 0x1122334455667788 rsi +0x100 rdi +0x1040"
    ));
    assert!(out.contains(
        "rep-movsb\n  sig 7 code 2 addr +0x1000 cr2 +0x1000 err 0x6 rip =insn len 2\n  \
         ctx rax 0x1111 rcx 0x10 rdx 0x1122334455667788 rsi +0x110 rdi +0x1000"
    ));
    assert!(out.contains("split-load64\n  sig 7 code 2 addr +0x1000 cr2 +0x1000 err 0x4 rip =insn"));
    // A store across the boundary: nothing of it reaches page 0 (see "page0" below).
    assert!(
        out.contains("split-store64\n  sig 7 code 2 addr +0x1000 cr2 +0x1000 err 0x6 rip =insn")
    );
    assert!(out.contains(
        "lock-add-misaligned\n  sig 7 code 2 addr +0x103e cr2 +0x103e err 0x6 rip =insn"
    ));
    assert!(!out.contains("elsewhere"));
    // The log: only the accesses that happened. MOVS's read before its faulting write;
    // REP MOVSB's 16 bytes and the 17th read; REP MOVSL's 2 words and the 3rd read; REP
    // STOSL's 2 words; the program's final two reads. Nothing of a faulting access.
    let mut want = vec![('R', 8, 0x100, qword(0x100))];
    for i in 0..16u64 {
        let b = qword(0x100 + (i & !7)) >> ((i & 7) * 8) & 0xff;
        want.push(('R', 1, 0x100 + i, b));
        want.push(('W', 1, 0xff0 + i, b));
    }
    want.push(('R', 1, 0x110, u64::from(initial_word(0x110) & 0xff)));
    for i in 0..2u64 {
        let w = u64::from(initial_word(0x100 + 4 * i));
        want.push(('R', 4, 0x100 + 4 * i, w));
        want.push(('W', 4, 0xff8 + 4 * i, w));
    }
    want.push(('R', 4, 0x108, u64::from(initial_word(0x108))));
    want.push(('W', 4, 0xff8, 0x5151));
    want.push(('W', 4, 0xffc, 0x5151));
    let lo = qword(0x100);
    want.push(('R', 8, 0xff0, lo));
    want.push(('R', 8, 0xff8, 0x5151_0000_5151));
    assert_eq!(accesses(&r.rec_ev), want);
    assert!(out.ends_with(&format!("page0 {lo:016x} {:016x}\n", 0x5151_0000_5151u64)));
    // What the REP forms left on the device (the same natively, compared above).
    let dev = &r.dev[1];
    assert_eq!(
        dev.len(),
        4096,
        "the program truncates the device to one page"
    );
    assert_eq!(&dev[0xff0..0xff8], &lo.to_le_bytes());
    assert_eq!(&dev[0xff8..0x1000], &0x5151_0000_5151u64.to_le_bytes());
}

#[test]
fn sigbus_hot_unplug_handler_maps_dummy_memory_and_the_instruction_reruns() {
    let t = Fixture::new("map", "sigbus_ops", DEV_LEN);
    let (r, out) = run_agreeing(&t, &["map"]);
    // The handler found the mapping by si_addr, mapped 0x5a bytes over the page, and the
    // load re-ran against them; a store went there.
    assert!(out.contains(&(sigbus_at("load32", "+0x1040", 4, 2) + "  after rax 0x5a5a5a5a ")));
    assert!(out.contains(
        &(sigbus_at("store64", "+0x1040", 6, 3)
            + "  after rax 0x1111 rcx 0x2222 rdx 0x1122334455667788 \
               rsi +0x1040 rdi +0x1048\n  page1 1122334455667788 5a5a5a5a5a5a5a5a\n")
    ));
    assert!(out.contains(
        &(sigbus_at("sse-load", "+0x1040", 4, 4)
            + "  after rax 0x1111 rcx 0x2222 rdx 0x5a5a5a5a5a5a5a5a")
    ));
    assert!(!out.contains("no mapping"));
    // MOVS to the gone page reads page 0 twice (once before the fault, once when it
    // re-runs), as on the hardware; the write lands in the dummy page. MOVS from the gone
    // page re-runs reading the dummy page and writes its bytes to the device.
    let movs = movs_accesses(&r.rec_ev);
    let dummy = 0x5a5a_5a5a_5a5a_5a5a;
    let read = ('R', 8, 0x100, qword(0x100));
    assert_eq!(movs, vec![read, read, ('W', 8, 0x100, dummy)]);
    assert_eq!(&r.dev[1][0x100..0x108], &dummy.to_le_bytes());

    // As DPDK does: dummy memory over the whole mapping (the tracer sees a MAP_FIXED
    // over the traced region; the instruction then re-runs untraced, on the dummy).
    let (r, out) = run_agreeing(&t, &["mapall"]);
    assert!(out.contains(&(sigbus_at("load32", "+0x1040", 4, 2) + "  after rax 0x5a5a5a5a ")));
    assert!(!out.contains("no mapping"));
    // MOVS to the gone page: the read before the fault; its re-run reads the dummy.
    let movs = movs_accesses(&r.rec_ev);
    assert_eq!(movs, vec![read]);
}

#[test]
fn sigbus_handler_may_leave_with_siglongjmp() {
    let t = Fixture::new("jmp", "sigbus_ops", DEV_LEN);
    let (_, out) = run_agreeing(&t, &["jmp"]);
    assert!(out.contains(&(sigbus_at("lock-or", "+0x1040", 6, 7) + "  jumped out\n")));
    assert!(out.contains(&(sigbus_at("sse-store", "+0x1040", 6, 4) + "  jumped out\n")));
    // The fault path holds nothing after a siglongjmp: every instruction after it is
    // handled (and REP's partial work is there).
    assert!(out.contains("faults "));
    assert_eq!(
        out.matches("jumped out\n").count(),
        out.matches("  sig 7 ").count()
    );
}

#[test]
fn sigbus_without_a_handler_kills_as_natively() {
    let t = Fixture::new("none", "sigbus_ops", DEV_LEN);
    for op in [
        "load32",
        "store64",
        "lock-xadd",
        "sse-store",
        "movs-to-gone",
        "rep-movsb",
        "lock-add-misaligned",
    ] {
        // No handler; or a handler, but SIGBUS blocked: the kernel kills either way.
        for mode in ["none", "blocked"] {
            let r = run_three(&t, &[mode, op]);
            assert_eq!(code(&r.native), Some(128 + SIGBUS), "{op} natively");
            assert_exit(&r.rec, 128 + SIGBUS);
            assert_eq!(assert_same(&r), format!("{op}\n"), "{mode} {op}");
        }
    }
}

#[test]
fn sigbus_real_sigsegv_of_emulated_and_stepped_accesses_is_delivered_as_natively() {
    let t = Fixture::new("segv", "sigbus_ops", DEV_LEN);
    let (r, out) = run_agreeing(&t, &["segv"]);
    for (name, len) in [
        ("segv-store-ro", 2),
        ("segv-add-ro", 2),
        ("segv-lock-ro", 4),
        ("segv-sse-store-ro", 4),
    ] {
        let want = format!(
            "{name}\n  sig 11 code 2 addr ro+0x10 cr2 ro+0x10 err 0x6 rip =insn len {len}\n  \
             ctx rax 0x77 rcx 0 rdx 0x1122334455667788 rsi ro+0x10 rdi 0\n"
        );
        assert!(
            out.contains(&want[..want.len() - 1]),
            "{name}: want\n{want}in\n{out}"
        );
    }
    // MOVS from the device to a read-only ordinary page: the device read happened, the
    // ordinary write faulted (SEGV_ACCERR at the ordinary address), RSI/RDI not advanced.
    assert!(out.contains(
        "segv-movs-to-ro\n  sig 11 code 2 addr plain+0x20 cr2 plain+0x20 err 0x6 rip =insn len 2\n  \
         ctx rax 0x77 rcx 0 rdx 0x1122334455667788 rsi +0x100 rdi plain+0x20"
    ));
    assert!(out.contains("faults 6\n"));
    assert_eq!(
        accesses(&r.rec_ev),
        vec![
            ('R', 8, 0x100, qword(0x100)),
            ('R', 4, 0x100, u64::from(initial_word(0x100))),
            ('R', 4, 0x10, u64::from(initial_word(0x10))),
        ]
    );
    // Nothing was written: the device is as it was (its first page).
    let pristine = std::fs::read(&t.dev).unwrap();
    assert!(r.dev[1] == pristine[..4096]);
}

#[test]
fn sigbus_without_a_handler_dies_at_the_instruction_with_its_registers() {
    // What the core dump would hold: the kernel's last fault before the death, seen by a
    // ptrace parent. Natively that is the program's instruction; under record it must be
    // too, not the tracer's access through the alias.
    let t = Fixture::new("death", "sigbus_death", DEV_LEN);
    for (op, regs) in [
        (
            "load32",
            "+0x1040 rip =insn rsi +0x1040 rdi +0 rcx 0x2222 rax 0x1111 rdx 0x3333",
        ),
        (
            "store64",
            "+0x1040 rip =insn rsi +0x1040 rdi +0 rcx 0x2222 rax 0x1111 rdx 0x1122334455667788",
        ),
        (
            "movs",
            "+0x1040 rip =insn rsi +0x100 rdi +0x1040 rcx 0x2222 rax 0x1111 rdx 0x3333",
        ),
        (
            "rep-movsb",
            "+0x1000 rip =insn rsi +0x110 rdi +0x1000 rcx 0x10 rax 0x1111 rdx 0x3333",
        ),
        (
            "sse-store",
            "+0x1040 rip =insn rsi +0x1040 rdi +0 rcx 0x2222 rax 0x1111 rdx 0x3333",
        ),
        (
            "lock-xadd",
            "+0x1040 rip =insn rsi +0x1040 rdi +0 rcx 0x2222 rax 0x1111 rdx 0x5",
        ),
        (
            "misaligned-lock",
            "+0x103e rip =insn rsi +0x103e rdi +0 rcx 0x2222 rax 0x1111 rdx 0x5",
        ),
    ] {
        let r = run_three(&t, &[op]);
        assert_exit(&r.rec, 0);
        let want = format!("{op}: killed by signal 7\nlast fault sig 7 code 2 addr {regs}\n");
        assert_eq!(assert_same(&r), want);
    }
}

#[test]
fn sigbus_on_one_thread_loses_nothing_of_another_threads_accesses() {
    // The main thread faults K times on the gone page (its handler leaves with
    // siglongjmp) while a writer thread writes 0..N-1 to a register of the page still
    // there: the fault path (emulated, or stepped with the other threads paused under
    // --no-alias) must leave nothing held: every write traced in order, none lost.
    const K: u64 = 200;
    const N: u64 = 20_000;
    let t = Fixture::new("threads", "sigbus_threads", DEV_LEN);
    let (r, out) = run_agreeing(&t, &[&K.to_string(), &N.to_string()]);
    assert_eq!(out, format!("faults {K} bad 0 last {:#x}\n", N - 1));
    for ev in [&r.rec_ev, &r.noalias_ev] {
        let writes: Vec<u64> = accesses(ev)
            .iter()
            .filter(|a| a.0 == 'W' && a.2 == 0x10)
            .map(|a| a.3)
            .collect();
        assert_eq!(writes, (0..N).collect::<Vec<_>>());
        assert_time_ordered(ev);
    }
    assert_eq!(&r.dev[1][0x10..0x14], &((N - 1) as u32).to_le_bytes());
}
