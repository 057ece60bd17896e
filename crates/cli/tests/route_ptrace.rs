//! `record --route ptrace` (issue 16): the program is traced from outside with ptrace and
//! a seccomp filter, with no code of ours in it. Where both routes apply, the trace must
//! be the one the preload route gives: the same accesses per thread (direction, width,
//! device offset, value, instruction address), the same mappings, the same device file
//! and output and exit status. Programs run with address-space randomisation off
//! (`setarch -R`) so that instruction addresses are comparable between the two runs.
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::{Direction, Event};

/// One thread's (or process's) view of a trace: its accesses and mapping events, in order.
type Seq = Vec<String>;

/// Runs `mmio-trace record ROUTE_OPTS -- PROGRAM DEV ARGS` under `setarch -R`, with the
/// device file reset to `orig` first; returns the output, the events and the device
/// bytes afterwards.
fn run(f: &Fixture, orig: &[u8], route: &[&str], args: &[&str]) -> (Output, Vec<Event>, Vec<u8>) {
    std::fs::write(&f.dev, orig).unwrap();
    let log = trace_log(&f.dir);
    let _ = std::fs::remove_file(&log);
    let out = Command::new("setarch")
        .arg("-R")
        .arg(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["record", "-q", "-o"])
        .arg(&log)
        .arg("--device")
        .arg(&f.dev)
        .args(route)
        .arg("--")
        .arg(&f.exe)
        .arg(&f.dev)
        .args(args)
        .output()
        .expect("setarch (util-linux) is needed to run programs without address randomisation");
    let ev = read_log(&log);
    (out, ev, std::fs::read(&f.dev).unwrap())
}

/// The events of each thread, keyed by the order in which threads first appear (thread
/// ids differ between runs): accesses with direction, width, offset, value and pc;
/// `MAP`s with offset and length; `UNMAP`s; `UNKNOWN`s.
fn per_thread(ev: &[Event]) -> Vec<Seq> {
    let mut by: BTreeMap<u32, Seq> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut put = |pid: u32, s: String| {
        if !order.contains(&pid) {
            order.push(pid);
        }
        by.entry(pid).or_default().push(s);
    };
    for e in ev {
        match e {
            Event::Access(a) => {
                let d = if a.dir == Direction::Read { 'R' } else { 'W' };
                let v = match &a.wide {
                    Some(w) => format!("{:02x?}", &w[..a.width as usize]),
                    None => format!("{:#x}", a.value),
                };
                put(
                    a.pid,
                    format!("{d}{} {:#x} {v} pc {:#x}", a.width, a.phys, a.pc),
                );
            }
            Event::Map(m) => put(m.pid, format!("MAP {:#x} +{:#x}", m.phys, m.len)),
            Event::Unmap(u) => put(u.pid, "UNMAP".to_string()),
            Event::Unknown(u) => put(u.pid, format!("UNKNOWN {:#x} {:02x?}", u.phys, u.opcode)),
            _ => {}
        }
    }
    order
        .iter()
        .map(|p| by.remove(p).unwrap_or_default())
        .collect()
}

/// Records PROGRAM with both routes and asserts the same per-thread traces (as a set of
/// threads when `any_order`, else in order of appearance), output, exit status and device
/// bytes. Returns the ptrace route's events.
#[track_caller]
fn same_as_preload(
    name: &str,
    program: &str,
    dev_len: usize,
    args: &[&str],
    any_order: bool,
) -> Vec<Event> {
    same_as_preload_with(name, program, dev_len, args, any_order, &[])
}

/// As [`same_as_preload`], with more `record` options for both routes.
#[track_caller]
fn same_as_preload_with(
    name: &str,
    program: &str,
    dev_len: usize,
    args: &[&str],
    any_order: bool,
    opts: &[&str],
) -> Vec<Event> {
    let f = Fixture::new(name, program, dev_len);
    let orig = std::fs::read(&f.dev).unwrap();
    let preload = [&["--no-patch"], opts].concat();
    let ptrace = [&["--route", "ptrace"], opts].concat();
    let (pout, pev, pdev) = run(&f, &orig, &preload, args);
    let (tout, tev, tdev) = run(&f, &orig, &ptrace, args);
    assert_eq!(
        code(&tout),
        code(&pout),
        "exit status; stderr {}",
        stderr(&tout)
    );
    assert_eq!(stdout(&tout), stdout(&pout));
    let (mut p, mut t) = (per_thread(&pev), per_thread(&tev));
    if any_order {
        p.sort();
        t.sort();
    }
    assert!(
        !p.iter().all(Vec::is_empty),
        "the preload route traced nothing"
    );
    assert_eq!(t, p, "per-thread traces differ (ptrace route first)");
    assert!(tdev == pdev, "the device files differ");
    tev
}

#[test]
fn ptrace_route_logs_what_the_preload_route_logs_for_every_instruction_form() {
    let ev = same_as_preload("forms", "s_forms", 8192, &[], false);
    // The route is named once for the process, and nothing else of ours ran in it.
    let marks = mark_texts(&ev);
    assert_eq!(
        marks
            .iter()
            .filter(|m| m.contains("traced by ptrace"))
            .count(),
        1,
        "{marks:?}"
    );
}

#[test]
fn ptrace_route_logs_string_instructions_as_the_preload_route_does() {
    // (op, width, count, src, dst, flags): device, ordinary memory, both directions.
    for (i, c) in [
        ["stos", "1", "37", "-", "d0x100", "-"],
        ["stos", "8", "600", "-", "d0x10", "-"],
        ["stos", "2", "9", "-", "d0x800", "d"],
        ["movs", "2", "21", "d0x200", "d0x3000", "-"],
        ["movs", "8", "19", "d0x400", "r0x40", "-"],
        ["movs", "4", "17", "r0x80", "d0x500", "-"],
        ["movs", "8", "11", "d0x900", "d0xa00", "d"],
        ["lods", "4", "13", "d0x600", "-", "-"],
        ["scas", "1", "64", "-", "d0x701", "n"],
        ["cmps", "4", "5", "d0x100", "r0x0", "e"],
    ]
    .iter()
    .enumerate()
    {
        same_as_preload(
            &format!("str{i}"),
            "strings_ops",
            64 * 1024 + 4096,
            c,
            false,
        );
    }
}

#[test]
fn ptrace_route_without_alias_steps_and_logs_what_the_preload_route_logs() {
    // Every access single-stepped: MOVs, vector moves and string elements with their
    // values, the rest UNKNOWN, as the in-process step path logs them.
    let ev = same_as_preload_with("noalias", "s_forms", 8192, &[], false, &["--no-alias"]);
    assert!(unknowns(&ev).len() > 3, "some accesses are UNKNOWN");
    assert!(accesses(&ev).len() > 10, "the moves have their values");
    for (i, c) in [
        ["stos", "4", "9", "-", "d0x100", "-"],
        ["movs", "8", "5", "d0x400", "r0x40", "-"],
        ["movs", "4", "7", "r0x80", "d0x500", "-"],
        ["lods", "2", "5", "d0x600", "-", "-"],
    ]
    .iter()
    .enumerate()
    {
        let name = format!("noalias-str{i}");
        same_as_preload_with(
            &name,
            "strings_ops",
            64 * 1024 + 4096,
            c,
            false,
            &["--no-alias"],
        );
    }
}

#[test]
fn ptrace_route_follows_threads() {
    let ev = same_as_preload("threads", "threads", 4096, &["4", "300"], true);
    let writers: std::collections::HashSet<u32> =
        accesses_by_pid(&ev).iter().map(|a| a.0).collect();
    assert_eq!(writers.len(), 4, "one thread id per writing thread");
}

#[test]
fn ptrace_route_follows_fork_and_exec() {
    let ev = same_as_preload("forkexec", "forkexec", 4096, &[], false);
    assert_eq!(write_values(&ev), [1, 2, 3, 4]);
    let pids: Vec<u32> = accesses_by_pid(&ev).iter().map(|a| a.0).collect();
    assert_eq!(pids[0], pids[3], "parent");
    assert_eq!(
        pids[1], pids[2],
        "the fork child is the process that exec'd"
    );
    assert_ne!(pids[0], pids[1]);
    // One mark per traced image: the program, and the image its child exec'd.
    let marks = mark_texts(&ev);
    assert_eq!(
        marks
            .iter()
            .filter(|m| m.contains("traced by ptrace"))
            .count(),
        2,
        "{marks:?}"
    );
}

#[test]
fn ptrace_route_keeps_the_table_exact_through_mremap_mprotect_and_munmap() {
    same_as_preload("mremap", "rv2_mremap", 3 * 4096, &["sub"], false);
    same_as_preload("mprot", "mprot", 4 * 4096, &[], false);
    same_as_preload("partial", "partial", 3 * 4096, &[], false);
}

#[test]
fn ptrace_route_runs_code_from_an_executable_device_page_as_the_preload_route_does() {
    let f = Fixture::new("exec", "regions_exec", 2 * 4096);
    let orig = std::fs::read(&f.dev).unwrap();
    let (pout, pev, _) = run(&f, &orig, &["--no-patch"], &[]);
    let (tout, tev, _) = run(&f, &orig, &["--route", "ptrace"], &[]);
    assert_exit(&tout, 0);
    assert_eq!(stdout(&tout), stdout(&pout));
    assert_eq!(per_thread(&tev), per_thread(&pev));
    // The mark, but the addresses (the preload library's own mappings move the device
    // mapping's).
    let executed = |ev: &[Event]| -> Vec<String> {
        mark_texts(ev)
            .into_iter()
            .filter(|m| m.contains("code executed"))
            .map(|m| {
                let (head, _) = m.split_once(" at ").unwrap_or_default();
                let (_, phys) = m.split_once(" (phys ").unwrap_or_default();
                format!("{head} .. (phys {phys}")
            })
            .collect()
    };
    assert_eq!(executed(&tev).len(), 1);
    assert_eq!(executed(&tev), executed(&pev));
    // Without PROT_EXEC the fetch is the program's fault, as natively.
    same_as_preload("noexec", "regions_exec", 2 * 4096, &["noexec"], false);
}

#[test]
fn ptrace_route_honours_range_and_bypass() {
    let ev = same_as_preload_with(
        "range",
        "pages",
        3 * 4096,
        &[],
        false,
        &["--range", "0x1000-0x2000"],
    );
    assert_eq!(accesses(&ev).len(), 2, "the pages at 0x1000 and 0x2000");
    let ev = same_as_preload_with(
        "bypass",
        "pages",
        3 * 4096,
        &[],
        false,
        &["--bypass", "0x1000+0x1000"],
    );
    assert_eq!(accesses(&ev).len(), 2);
}

#[test]
fn ptrace_route_exit_statuses_are_the_preload_routes() {
    // An exit code, a SIGKILL (every completed write still logged) and a SIGSEGV.
    same_as_preload("exit7", "s_forms", 8192, &[], false);
    let ev = same_as_preload("killme", "killme", 4096, &["25"], false);
    assert_eq!(write_values(&ev), (0..25).collect::<Vec<u64>>());
    same_as_preload("crash", "segv", 4096, &["crash"], false);
}

#[test]
fn ptrace_route_traces_a_raw_syscall_mapping_and_leaves_the_heap_after_a_raw_munmap_alone() {
    // A raw munmap then an anonymous mmap at the address; or MAP_FIXED straight over it.
    for how in ["munmap", "fixed"] {
        let f = Fixture::new(&format!("raw-{how}"), "s_raw", 8192);
        let orig = std::fs::read(&f.dev).unwrap();
        let (out, ev, dev) = run(&f, &orig, &["--route", "ptrace"], &[how]);
        assert_exit(&out, 0);
        // The heap mapped where the device was holds what the program wrote there.
        assert_eq!(stdout(&out), "a=1401 b=dead c=beef\n", "{how}");
        // Only the accesses to the device, none to the heap; the mapping ended where it
        // was unmapped or replaced (before the write to the other mapping).
        let seq: Vec<String> = per_thread(&ev)
            .concat()
            .iter()
            .map(|e| e.split(" pc ").next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            seq,
            [
                "MAP 0x0 +0x1000",
                "MAP 0x0 +0x2000",
                "W4 0x10 0x1234",
                "R4 0x1004 0x1401",
                "UNMAP",
                "W4 0x20 0x77",
            ]
            .map(String::from),
            "{how}"
        );
        // The device holds the writes made to it; the heap writes never reached it.
        let mut want = orig.clone();
        want[0x10..0x14].copy_from_slice(&0x1234u32.to_le_bytes());
        want[0x20..0x24].copy_from_slice(&0x77u32.to_le_bytes());
        assert!(
            dev == want,
            "{how}: the device file holds exactly the traced writes"
        );
    }
}

#[test]
fn ptrace_route_hands_the_program_its_own_segfaults() {
    let ev = same_as_preload("segv", "s_segv", 4096, &[], false);
    assert_eq!(write_values(&ev), [1, 2, 3]);
}

#[test]
fn ptrace_route_puts_nothing_in_the_program() {
    let f = Fixture::new("env", "s_env", 4096);
    let orig = std::fs::read(&f.dev).unwrap();
    let (out, ev, _) = run(&f, &orig, &["--route", "ptrace"], &[]);
    assert_exit(&out, 0);
    // LD_PRELOAD as the recorder had it (unset here), no library, no variable of ours.
    assert_eq!(stdout(&out), "preload=- lib=0 shm=n\n");
    assert_eq!(accesses(&ev), [('W', 4, 0, 1)]);
}

#[test]
fn ptrace_route_reports_a_missing_program_as_the_preload_route_does() {
    let dir = scratch("missing");
    let dev = device(&dir, 4096);
    for route in ["preload", "ptrace"] {
        let out = record_cmd(&dir, &dev, &["--route", route])
            .arg(dir.join("no-such-program"))
            .output()
            .unwrap();
        assert_exit(&out, 127);
    }
}

#[test]
fn ptrace_route_passes_signals_and_job_control_through() {
    // A queued signal keeps its value; a child's SIGSTOP is seen by its parent, SIGCONT
    // continues it.
    let ev = same_as_preload("jobctl", "s_jobctl", 4096, &[], false);
    assert_eq!(write_values(&ev), [1, 2, 4]);
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn ptrace_route_program_dies_with_its_recorder() {
    // SIGKILL of the recorder kills the program (PTRACE_O_EXITKILL): it could not run on
    // with its device pages trapping into a tracer that is gone.
    let f = Fixture::new("exitkill", "s_wait", 4096);
    let ready = f.dir.join("ready");
    let mut rec = record_cmd(&f.dir, &f.dev, &["--route", "ptrace"])
        .arg(&f.exe)
        .arg(&f.dev)
        .arg(&ready)
        .spawn()
        .unwrap();
    wait_for_file(&mut rec, &ready);
    let pid: i32 = std::fs::read_to_string(&ready)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!ended(pid));
    rec.kill().unwrap();
    rec.wait().unwrap();
    let t = std::time::Instant::now();
    while !ended(pid) && t.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(ended(pid), "the program outlived its recorder");
}

#[test]
fn ptrace_route_ignored_signals_do_not_break_off_blocking_calls() {
    // Under ptrace an ignored signal still stops the thread, which breaks off epoll_wait
    // with EINTR unless the supervisor restarts it: the program must see the timeout.
    let f = Fixture::new("eintr", "s_eintr", 4096);
    let orig = std::fs::read(&f.dev).unwrap();
    let (out, ev, _) = run(&f, &orig, &["--route", "ptrace"], &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "0 0\n");
    assert_eq!(write_values(&ev), [1, 2]);
}

#[test]
fn ptrace_route_names_the_shared_files_it_did_not_trace_as_the_preload_route_does() {
    let f = Fixture::new("unmatched", "s_env", 4096);
    let warn = |route: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(["record", "-o"])
            .arg(trace_log(&f.dir))
            .args(["--route", route, "--"])
            .arg(&f.exe)
            .arg(&f.dev)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        stderr(&out)
            .lines()
            .filter(|l| l.contains("no device mapping matched"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let want = warn("preload");
    assert_eq!(want.len(), 1, "{want:?}");
    assert!(want[0].contains(&*f.dev.to_string_lossy()), "{want:?}");
    assert_eq!(warn("ptrace"), want);
}

/// (direction, bytes, map, offset, call) of every kernel access, in order, the call named
/// by its system call (the preload route names the libc function: `pread` for `pread64`,
/// `send` for `sendto`, `stat` for the `newfstatat` glibc makes...).
fn kernel_accesses(ev: &[Event]) -> Vec<(char, u64, i64, u64, String)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Kernel(k) => {
                let call = String::from_utf8_lossy(&k.call).into_owned();
                let call = match call.as_str() {
                    "pread" => "pread64",
                    "pwrite" => "pwrite64",
                    "send" => "sendto",
                    "recv" => "recvfrom",
                    "fstat" | "stat" | "lstat" => "fstatat",
                    "pipe" => "pipe2",
                    c => c,
                }
                .to_string();
                let d = if k.dir == Direction::Read { 'R' } else { 'W' };
                Some((d, k.len, k.map_id, k.phys, call))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn ptrace_route_system_calls_reach_device_buffers_as_on_the_preload_route() {
    // read/write, positional and vector forms, sockets, structures the kernel fills
    // (ioctl, stat, pipe, uname...), raw syscall(2): the same results, device bytes and
    // kernel records as the preload route (which hands the kernel the alias); without the
    // supervisor's help they would fail with EFAULT.
    let f = Fixture::new("sysbuf", "s_sysbuf", 8192);
    let orig = std::fs::read(&f.dev).unwrap();
    let (pout, pev, pdev) = run(&f, &orig, &["--no-patch"], &[]);
    let (tout, tev, tdev) = run(&f, &orig, &["--route", "ptrace"], &[]);
    assert_exit(&tout, 0);
    assert_eq!(stdout(&tout), stdout(&pout));
    assert!(!stdout(&tout).contains("errno 14"), "{}", stdout(&tout));
    // But the random bytes getrandom put there, and the descriptor numbers pipe and
    // socketpair put there (the preload route keeps descriptors of its own open).
    let (mut tdev, mut pdev) = (tdev, pdev);
    for r in [0x800..0x820, 0x900..0x918] {
        tdev[r.clone()].fill(0);
        pdev[r].fill(0);
    }
    assert!(tdev == pdev, "the device files differ");
    let want = kernel_accesses(&pev);
    assert!(want.len() > 15, "{want:?}");
    assert_eq!(kernel_accesses(&tev), want);
}

#[test]
fn inject_route_system_calls_reach_device_buffers_as_on_the_preload_route() {
    // The same program on the inject route (forced; a static build gets the same core):
    // its calls trap into the core once a device is mapped, which hands the kernel the
    // alias (structures over two pieces through a bounce buffer): the same results,
    // device bytes and kernel records.
    let f = Fixture::new("sysbuf-inject", "s_sysbuf", 8192);
    let orig = std::fs::read(&f.dev).unwrap();
    let (pout, pev, pdev) = run(&f, &orig, &["--no-patch"], &[]);
    let (iout, iev, idev) = run(&f, &orig, &["--route", "inject"], &[]);
    assert_exit(&iout, 0);
    assert_eq!(stdout(&iout), stdout(&pout));
    assert!(!stdout(&iout).contains("errno 14"), "{}", stdout(&iout));
    assert!(!stderr(&iout).contains("EFAULT"), "{}", stderr(&iout));
    let (mut idev, mut pdev) = (idev, pdev);
    for r in [0x800..0x820, 0x900..0x918] {
        idev[r.clone()].fill(0);
        pdev[r].fill(0);
    }
    assert!(idev == pdev, "the device files differ");
    let want = kernel_accesses(&pev);
    assert!(want.len() > 15, "{want:?}");
    assert_eq!(kernel_accesses(&iev), want);
}

#[test]
fn ptrace_route_says_it_cannot_trace_32_bit_system_calls() {
    // int $0x80 uses the i386 ABI: the filter stops its mmap family, the supervisor lets
    // the call run and says, once per process, that such mappings are not traced.
    let f = Fixture::new("int80", "s_int80", 4096);
    let out = record_cmd(&f.dir, &f.dev, &["--route", "ptrace"])
        .arg(&f.exe)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "mmap2 ok\n");
    let said = |t: &str| t.contains("NOT TRACED") && t.contains("32-bit (int 0x80)");
    assert_eq!(
        stderr(&out).lines().filter(|l| said(l)).count(),
        1,
        "{}",
        stderr(&out)
    );
    let ev = read_log(&trace_log(&f.dir));
    assert_eq!(mark_texts(&ev).iter().filter(|m| said(m)).count(), 1);
}

#[test]
fn ptrace_route_follows_what_the_program_left_running() {
    // The program exits, leaving a child (reparented to the recorder, still traced); a
    // TERM to the recorder reaches it, its access is traced, and the recording ends.
    let f = Fixture::new("orphan", "cli_orphan", 4096);
    let (ready, acks) = (f.dir.join("ready"), f.dir.join("acks"));
    let mut rec = record_cmd(&f.dir, &f.dev, &["--route", "ptrace"])
        .arg(&f.exe)
        .arg(&f.dev)
        .arg(&ready)
        .arg(&acks)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&mut rec, &ready);
    // SAFETY: a signal to the recorder we started.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let out = rec.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(&acks).unwrap().trim(), "15");
    let ev = read_log(&trace_log(&f.dir));
    assert_eq!(accesses(&ev), [('W', 4, 0x20, 15)]);
}
