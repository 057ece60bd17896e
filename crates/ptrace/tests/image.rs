//! Loading a freestanding static-pie blob into stopped children and calling its functions:
//! relocations, .bss, raw system calls, vector registers preserved, faults and timeouts
//! reported with the thread restored, blocked system calls finishing exactly, non-leader
//! threads, the exec stop, the same base after exec, W^X mappings, bad ELF files.
//! The blob is `tests/programs/l_blob.c`, built at test time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{wait_blocked, Helper};
use mmio_trace_ptrace::{
    cont, detach, seize_all, syscall, syscall_stop, wait_tid, Blob, CallOptions, Error, Event,
    Image, LoadOptions, Options, Pid, Process, Regs, Stop, SyscallSite, SyscallStop,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Compiles tests/programs/`src`.c with `flags` into the target directory as `out`, once.
fn cc(src: &str, out: &str, flags: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = root().join("tests/programs").join(format!("{src}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ptrace-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(out);
    let fresh = std::fs::metadata(&exe)
        .and_then(|e| Ok(e.modified()? >= std::fs::metadata(&src)?.modified()?))
        .unwrap_or(false);
    if !fresh {
        let st = Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("a C compiler (cc) is needed for the ptrace engine tests");
        assert!(st.success(), "compiling {} with {flags:?}", src.display());
    }
    exe
}

const BLOB_FLAGS: [&str; 6] = [
    "-nostdlib",
    "-static-pie",
    "-fPIE",
    "-fno-stack-protector",
    "-O2",
    "-Wl,--export-dynamic",
];

fn blob() -> Vec<u8> {
    std::fs::read(cc("l_blob", "l_blob.so", &BLOB_FLAGS)).unwrap()
}

fn big_blob() -> Vec<u8> {
    let mut f = BLOB_FLAGS.to_vec();
    f.push("-DBIG");
    std::fs::read(cc("l_blob", "l_blob_big.so", &f)).unwrap()
}

/// The same blob linked with packed relative relocations (DT_RELR) instead of RELA.
fn relr_blob() -> Vec<u8> {
    let mut f = BLOB_FLAGS.to_vec();
    f.push("-Wl,-z,pack-relative-relocs");
    std::fs::read(cc("l_blob", "l_blob_relr.so", &f)).unwrap()
}

fn static_target() -> PathBuf {
    cc(
        "l_target",
        "l_target_static",
        &["-O1", "-static", "-pthread"],
    )
}

fn avx() -> bool {
    std::is_x86_feature_detected!("avx")
}

/// Little ELF reader for the tests' own checks and mutations.
struct Elf<'a>(&'a [u8]);

impl Elf<'_> {
    fn u16(&self, o: usize) -> u16 {
        u16::from_le_bytes(self.0[o..o + 2].try_into().unwrap())
    }
    fn u32(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap())
    }
    fn u64(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.0[o..o + 8].try_into().unwrap())
    }
    /// (header offset, p_type, p_flags, p_offset, p_vaddr, p_filesz)
    fn phdrs(&self) -> Vec<(usize, u32, u32, u64, u64, u64)> {
        let (off, n) = (self.u64(32) as usize, self.u16(56) as usize);
        (0..n)
            .map(|i| {
                let o = off + i * 56;
                (
                    o,
                    self.u32(o),
                    self.u32(o + 4),
                    self.u64(o + 8),
                    self.u64(o + 16),
                    self.u64(o + 32),
                )
            })
            .collect()
    }
    fn file_off(&self, va: u64) -> usize {
        let p = self
            .phdrs()
            .into_iter()
            .find(|p| p.1 == 1 && va >= p.4 && va < p.4 + p.5)
            .unwrap();
        (p.3 + va - p.4) as usize
    }
    /// (file offset of the entry, tag, value) of each dynamic entry.
    fn dyns(&self) -> Vec<(usize, i64, u64)> {
        let d = self.phdrs().into_iter().find(|p| p.1 == 2).unwrap();
        let mut v = Vec::new();
        for i in 0..(d.5 as usize / 16) {
            let o = d.3 as usize + i * 16;
            let tag = self.u64(o) as i64;
            v.push((o, tag, self.u64(o + 8)));
            if tag == 0 {
                break;
            }
        }
        v
    }
    fn dyn_val(&self, tag: i64) -> Option<u64> {
        self.dyns().into_iter().find(|d| d.1 == tag).map(|d| d.2)
    }
    /// The RELA entries: (r_offset, type).
    fn relas(&self) -> Vec<(u64, u32)> {
        let (a, sz) = (self.dyn_val(7).unwrap(), self.dyn_val(8).unwrap());
        let o = self.file_off(a);
        (0..sz as usize / 24)
            .map(|i| (self.u64(o + i * 24), self.u32(o + i * 24 + 8)))
            .collect()
    }
}

#[test]
fn the_test_blob_has_relative_relocations_bss_and_no_interpreter() {
    let b = blob();
    let e = Elf(&b);
    assert_eq!(e.u16(16), 3, "ET_DYN");
    let relas = e.relas();
    assert!(relas.len() >= 8, "{relas:?}");
    assert!(relas.iter().all(|r| r.1 == 8), "only RELATIVE: {relas:?}");
    let ph = e.phdrs();
    assert!(
        ph.iter().all(|p| p.1 != 3 && p.1 != 7),
        "no PT_INTERP/PT_TLS"
    );
    assert!(ph.iter().any(|p| p.1 == 0x6474_e552), "has PT_GNU_RELRO");
    assert!(e.dyns().iter().all(|d| d.1 != 1), "no DT_NEEDED");
    // .bss: a PT_LOAD whose memory size exceeds its file size by the 64 KiB array.
    let off = e.u64(32) as usize;
    let bss = (0..e.u16(56) as usize)
        .map(|i| off + i * 56)
        .filter(|&o| e.u32(o) == 1)
        .map(|o| e.u64(o + 40) - e.u64(o + 32))
        .max()
        .unwrap();
    assert!(bss >= 1 << 16, "bss {bss}");
    let blob = Blob::parse(&b).unwrap();
    for s in [
        "add",
        "via_table",
        "bss_get",
        "raw_getpid",
        "clobber_vec",
        "fault_at",
    ] {
        assert!(blob.sym_offset(s).is_some(), "{s}");
    }
}

/// Perms of the /proc/PID/maps lines inside `img`'s span: (start, end, "r-xp").
fn maps_in(pid: Pid, img: &Image) -> Vec<(u64, u64, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next()?.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            let perms = f.next()?.to_string();
            (a >= img.base && b <= img.base + img.len).then_some((a, b, perms))
        })
        .collect()
}

fn perms_at(maps: &[(u64, u64, String)], addr: u64) -> &str {
    &maps.iter().find(|m| addr >= m.0 && addr < m.1).unwrap().2
}

/// No page both writable and executable; each segment is one mapping with the
/// protections the ELF asks for (text r-x, relocated read-only data r--, data rw-, the
/// headers r--, the trap r-x); the whole span is accounted for.
fn check_w_xor_x(pid: Pid, img: &Image) {
    let maps = maps_in(pid, img);
    for m in &maps {
        assert!(!(m.2.contains('w') && m.2.contains('x')), "W+X: {maps:x?}");
    }
    assert_eq!(maps.first().unwrap().0, img.base, "{maps:x?}");
    assert_eq!(maps.last().unwrap().1, img.base + img.len, "{maps:x?}");
    for w in maps.windows(2) {
        assert_eq!(w[0].1, w[1].0, "the span is contiguous: {maps:x?}");
    }
    for s in &img.segments {
        let p = format!(
            "{}{}{}p",
            if s.prot & libc::PROT_READ != 0 {
                'r'
            } else {
                '-'
            },
            if s.prot & libc::PROT_WRITE != 0 {
                'w'
            } else {
                '-'
            },
            if s.prot & libc::PROT_EXEC != 0 {
                'x'
            } else {
                '-'
            }
        );
        assert!(
            maps.iter()
                .any(|m| m.0 == s.addr && m.1 == s.addr + s.len && m.2 == p),
            "segment {s:x?} in {maps:x?}"
        );
    }
    assert_eq!(perms_at(&maps, img.base), "r--p", "ELF headers");
    assert_eq!(perms_at(&maps, img.sym("add").unwrap()), "r-xp");
    assert_eq!(
        perms_at(&maps, img.sym("table_ro").unwrap()),
        "r--p",
        "RELRO"
    );
    assert_eq!(perms_at(&maps, img.sym("table_rw").unwrap()), "rw-p");
    assert_eq!(perms_at(&maps, img.trap), "r-xp");
}

/// Every function of the blob, called in thread `tid` of process `pid`.
fn exercise(p: &mut Process, pid: Pid, tid: Pid, img: &Image) {
    let s = |n: &str| img.sym(n).unwrap_or_else(|| panic!("no symbol {n}"));
    assert_eq!(p.call(tid, s("add"), &[2, 40]).unwrap(), 42);
    assert_eq!(p.call(tid, s("sub"), &[2, 40]).unwrap() as i64, -38);
    assert_eq!(
        p.call(tid, s("sum6"), &[1, 10, 100, 1000, 10000, 100000])
            .unwrap(),
        1 + 20 + 300 + 4000 + 50000 + 600000
    );
    // Through the relocated pointer tables (v0, v1, v2 = 11, 22, 33; table_rw reversed).
    assert_eq!(p.call(tid, s("via_table"), &[0]).unwrap(), 11033);
    assert_eq!(p.call(tid, s("via_table"), &[2]).unwrap(), 33011);
    assert_eq!(p.call(tid, s("call_fn"), &[0, 5, 3]).unwrap(), 8);
    assert_eq!(p.call(tid, s("call_fn"), &[1, 5, 3]).unwrap(), 2);
    // .bss zeroed, state kept between calls.
    assert_eq!(p.call(tid, s("bss_sum"), &[]).unwrap(), 0);
    assert_eq!(p.call(tid, s("bss_get"), &[]).unwrap(), 0);
    assert_eq!(p.call(tid, s("bss_put"), &[0x1234_5678_9abc]).unwrap(), 0);
    assert_eq!(p.call(tid, s("bss_get"), &[]).unwrap(), 0x1234_5678_9abc);
    assert_eq!(p.call(tid, s("bss_sum"), &[]).unwrap(), 1);
    assert_eq!(p.call(tid, s("raw_getpid"), &[]).unwrap(), pid as u64);
    assert_eq!(p.call(tid, s("raw_gettid"), &[]).unwrap(), tid as u64);
    assert_eq!(p.call(tid, s("clobber_vec"), &[avx() as u64]).unwrap(), 7);
    let sp = p.call(tid, s("sp_at_entry"), &[]).unwrap();
    assert_eq!(sp & 15, 8, "ABI alignment at entry: {sp:#x}");
    let rsp = Regs::read(tid).unwrap().user().rsp;
    assert!(sp < rsp - 128, "below the red zone: {sp:#x} vs {rsp:#x}");
    assert!(p.take_requeued().is_empty());
}

/// Loads the blob into the child blocked in `read`, runs everything, detaches, and checks
/// the child's exact result.
fn reader_case(h: Helper) {
    reader_case_with(h, &blob())
}

fn reader_case_with(mut h: Helper, elf: &[u8]) {
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let before = *Regs::read(pid).unwrap().user();
    let img = p.load_image(pid, elf, &LoadOptions::default()).unwrap();
    check_w_xor_x(pid, &img);
    // Injected system calls now run at the image's own `syscall` instruction, one of its
    // text (raw_getpid has one), not the trap page's.
    assert!(img.contains(img.syscall));
    let text = img
        .segments
        .iter()
        .find(|s| s.addr <= img.sym("add").unwrap() && img.sym("add").unwrap() < s.addr + s.len)
        .unwrap();
    assert!(
        img.syscall >= text.addr && img.syscall < text.addr + text.len,
        "{img:x?}"
    );
    let mut insn = [0u8; 2];
    p.mem().read(img.syscall, &mut insn).unwrap();
    assert_eq!(insn, [0x0f, 0x05]);
    assert_eq!(p.syscall_site(), SyscallSite::At(img.syscall));
    assert_eq!(
        p.inject_syscall(pid, libc::SYS_getpid, [0; 6]).unwrap(),
        pid as i64
    );
    exercise(&mut p, pid, pid, &img);
    let after = *Regs::read(pid).unwrap().user();
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "registers restored"
    );
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"hello");
    assert_eq!(h.line(), "ret=5 data=hello vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

/// The blob mapped from its image file (relocated once for a base) instead of written:
/// the same protections, every function runs the same, the child's `read` ends exactly,
/// and the pages are the file's (every segment but the trap page is a mapping of it).
#[test]
fn a_blob_mapped_from_its_image_file_runs_the_same() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let blob = Blob::parse(&blob()).unwrap();
    let base = 0x2b10_0000_0000;
    let file = blob.image_file(base).unwrap();
    assert_eq!(file.base(), base);
    let mut p = Process::new(pid);
    let img = p.load_blob_mapped(pid, &blob, &file).unwrap();
    assert_eq!(img.base, base);
    check_w_xor_x(pid, &img);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let of_file: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("/memfd:mmio-trace-image"))
        .collect();
    assert_eq!(of_file.len(), img.segments.len() - 1, "{maps}");
    // The file was closed in the child once mapped.
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    for fd in fds {
        let link = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert!(
            !link.to_string_lossy().contains("mmio-trace-image"),
            "{link:?}"
        );
    }
    exercise(&mut p, pid, pid, &img);
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"hello");
    assert_eq!(h.line(), "ret=5 data=hello vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_dynamic_child_blocked_in_read_runs_the_blob_and_reads_exactly() {
    reader_case(Helper::start("l_target", &["read"]));
}

#[test]
fn a_static_child_blocked_in_read_runs_the_blob_and_reads_exactly() {
    reader_case(Helper::start_exe(&static_target(), &["read"]));
}

#[test]
fn a_blob_with_packed_relr_relocations_loads_and_runs() {
    let b = relr_blob();
    let e = Elf(&b);
    assert!(e.dyn_val(36).is_some(), "DT_RELR");
    assert_eq!(e.dyn_val(8).unwrap_or(0), 0, "no RELA left");
    reader_case_with(Helper::start("l_target", &["read"]), &b);
}

#[test]
fn a_call_from_a_signal_delivery_stop_leaves_the_signal_to_deliver() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    // SAFETY: kill takes integers; the helper is our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    cont(pid, 0).unwrap();
    match wait_tid(pid).unwrap() {
        Stop::Signal {
            signal: libc::SIGUSR1,
            ..
        } => {}
        s => panic!("{s:?}"),
    }
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    exercise(&mut p, pid, pid, &img);
    // The stop's siginfo is the signal's again (sender: this process).
    // SAFETY: all-zero is a valid siginfo_t; GETSIGINFO writes one.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is valid for the call.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0, &mut si) };
    assert_eq!(r, 0);
    assert_eq!((si.si_signo, si.si_code), (libc::SIGUSR1, libc::SI_USER));
    // SAFETY: kill() fills the _kill member.
    assert_eq!(unsafe { si.si_pid() }, std::process::id() as Pid);
    // Detaching with the signal delivers it: the handler runs once, the read restarts.
    detach(pid, libc::SIGUSR1).unwrap();
    h.write_stdin(b"s");
    assert_eq!(h.line(), "ret=1 data=s vec=OK usr1=1");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_call_from_a_syscall_entry_stop_returns_to_that_stop() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    // Resumed with PTRACE_SYSCALL, the interrupted read restarts: its entry stop.
    syscall(pid, 0).unwrap();
    assert!(matches!(wait_tid(pid).unwrap(), Stop::Syscall));
    let entry = syscall_stop(pid).unwrap();
    assert!(
        matches!(entry, SyscallStop::Entry { nr, .. } if nr == libc::SYS_read),
        "{entry:?}"
    );
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    exercise(&mut p, pid, pid, &img);
    // Back at the same entry stop, same arguments.
    assert_eq!(
        format!("{:?}", syscall_stop(pid).unwrap()),
        format!("{entry:?}")
    );
    detach(pid, 0).unwrap();
    h.write_stdin(b"n");
    assert_eq!(h.line(), "ret=1 data=n vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

/// A thread stopped inside an rseq critical section keeps its section armed across calls
/// and injected system calls: its `rseq_cs` pointer is as before, so the kernel still aborts
/// the section when the thread resumes.
#[test]
fn a_thread_inside_an_rseq_critical_section_keeps_it_armed() {
    let mut h = Helper::start("l_rseq", &[]);
    let pid = h.pid();
    let rs: u64 = h.line().parse().unwrap();
    let mut p = Process::new(pid);
    // Seize until the thread is stopped inside the section (RIP in it, rseq_cs set).
    let read_cs = |p: &mut Process| {
        let mut b = [0u8; 8];
        p.mem().read(rs + 8, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let mut tries = 0;
    let (stops, cs) = loop {
        let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
        let cs = read_cs(&mut p);
        if cs != 0 {
            let mut d = [0u8; 32];
            p.mem().read(cs, &mut d).unwrap();
            let start = u64::from_le_bytes(d[8..16].try_into().unwrap());
            let len = u64::from_le_bytes(d[16..24].try_into().unwrap());
            let rip = Regs::read(pid).unwrap().user().rip;
            if rip >= start && rip < start + len {
                break (stops, cs);
            }
        }
        for (t, _) in stops {
            detach(t, 0).unwrap();
        }
        tries += 1;
        assert!(tries < 1000, "never stopped inside the section");
        std::thread::sleep(Duration::from_millis(1));
    };
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    let after_mmaps = read_cs(&mut p);
    let r = p.call(pid, img.sym("add").unwrap(), &[1, 2]).unwrap();
    let after_call = read_cs(&mut p);
    // (Checked once detached: a failing test must not leave a traced two-thread zombie.)
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    assert_eq!(r, 3);
    assert_eq!(after_mmaps, cs, "after the injected mmaps");
    assert_eq!(after_call, cs, "after a call");
    h.write_stdin(b"x");
    assert_eq!(h.line(), "aborts>0=1");
    assert_eq!(h.exit_code(), 0);
}

/// Under a seccomp filter that traps munmap/mprotect from outside the blob's range (as the
/// inject route's does): the load's anonymous mmaps pass, and once loaded, injected
/// munmap/mprotect run from the blob's own `syscall` and pass too; before the load, the
/// filter's SIGSYS for an injected munmap is an error, not passed on: the program never sees
/// a SIGSYS it did not cause.
#[test]
fn under_a_filter_exempting_the_blob_injected_calls_run_from_the_blob() {
    const BASE: u64 = 0x2aa0_0000_0000;
    let mut h = Helper::start("l_target", &["filter"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    // From the vDSO (no image yet) the filter traps the munmap: an error, and the SIGSYS is
    // not passed on to the program.
    let a0 = p.alloc_scratch(pid, 4096).unwrap();
    let trapped = p.remote_munmap(pid, a0, 4096);
    let requeued0 = p.take_requeued();
    let img = p
        .load_image(pid, &blob(), &LoadOptions { base: Some(BASE) })
        .unwrap();
    assert_eq!(img.base, BASE);
    let a = p.alloc_scratch(pid, 4096).unwrap();
    let mprotect = p.remote_mprotect(pid, a, 4096, libc::PROT_READ);
    let munmap = p.remote_munmap(pid, a, 4096);
    let add = p.call(pid, img.sym("add").unwrap(), &[4, 5]);
    let unload = p.unload_image(pid, &img);
    let requeued = p.take_requeued();
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    match trapped {
        Err(Error::BadStop { why, .. }) => assert!(why.contains("seccomp filter"), "{why}"),
        r => panic!("{r:?}"),
    }
    assert!(requeued0.is_empty(), "{requeued0:?}");
    mprotect.unwrap();
    munmap.unwrap();
    assert_eq!(add.unwrap(), 9);
    unload.unwrap();
    assert!(requeued.is_empty(), "{requeued:?}");
    h.write_stdin(b"f");
    assert_eq!(h.line(), "ret=1 data=f vec=OK usr1=0");
    assert_eq!(h.line(), "sigsys=1", "only the program's own");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_call_from_a_group_stop_leaves_the_process_stopped() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    seize_all(pid, Options::TRACESYSGOOD).unwrap();
    // SAFETY: kill takes integers; the helper is our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    cont(pid, 0).unwrap();
    loop {
        match wait_tid(pid).unwrap() {
            Stop::Signal {
                signal: libc::SIGSTOP,
                ..
            } => cont(pid, libc::SIGSTOP).unwrap(),
            Stop::Group {
                signal: libc::SIGSTOP,
            } => break,
            s => panic!("{s:?}"),
        }
    }
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    exercise(&mut p, pid, pid, &img);
    detach(pid, 0).unwrap();
    // Still stopped (the group-stop is re-armed at detach) until SIGCONT.
    let t0 = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if state == "T" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "state {state}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    h.write_stdin(b"g");
    assert_eq!(h.line(), "ret=1 data=g vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_load_that_fails_half_way_unmaps_what_it_mapped() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let maps0 = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    // RLIMIT_DATA below what the process already uses: the PROT_NONE reservation and the
    // read-only and executable segments map, the writable one fails with ENOMEM.
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // (One page, not 0: a limit of 0 is ignored for Valgrind's sake.)
    let low = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads one rlimit and writes one, both valid for the call.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_DATA, &low, &mut old) },
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    match p.load_image(pid, &blob(), &LoadOptions::default()) {
        Err(Error::Remote { name, errno, .. }) => {
            assert_eq!((name, errno), ("mmap", libc::ENOMEM))
        }
        r => panic!("{r:?}"),
    }
    let maps1 = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert_eq!(
        maps0, maps1,
        "the reservation and the segments made are gone"
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_DATA, &old, std::ptr::null_mut()) },
        0
    );
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    assert_eq!(p.call(pid, img.sym("add").unwrap(), &[3, 4]).unwrap(), 7);
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"h");
    assert_eq!(h.line(), "ret=1 data=h vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_child_in_nanosleep_sleeps_its_full_time_and_sees_no_eintr() {
    let mut h = Helper::start("l_target", &["nanosleep"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    exercise(&mut p, pid, pid, &img);
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    assert_eq!(h.line(), "ret=0 errno=0 ms>=300=1");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_call_on_a_non_leader_thread_runs_on_that_thread() {
    let mut h = Helper::start("l_target", &["thread"]);
    let pid = h.pid();
    let tid: Pid = h.line().parse().unwrap();
    assert_ne!(tid, pid);
    wait_blocked(pid, tid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let img = p.load_image(tid, &blob(), &LoadOptions::default()).unwrap();
    exercise(&mut p, pid, tid, &img);
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"abc");
    assert_eq!(h.line(), "ret=3 data=abc vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn faults_and_timeouts_are_reported_and_the_thread_is_restored() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let before = *Regs::read(pid).unwrap().user();
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    let s = |n: &str| img.sym(n).unwrap();
    match p.call(pid, s("fault_at"), &[0x18]) {
        Err(Error::CallFault {
            tid,
            signal,
            addr,
            rip,
        }) => {
            assert_eq!((tid, signal, addr), (pid, libc::SIGSEGV, 0x18));
            assert!(img.contains(rip), "{rip:#x}");
        }
        r => panic!("{r:?}"),
    }
    match p.call(pid, s("illegal"), &[]) {
        Err(Error::CallFault { signal, rip, .. }) => {
            assert_eq!(signal, libc::SIGILL);
            assert!(img.contains(rip));
        }
        r => panic!("{r:?}"),
    }
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        ..CallOptions::default()
    };
    let t0 = Instant::now();
    match p.call_with(pid, s("spin"), &[], &opts) {
        Err(Error::CallTimeout { tid, after, rip }) => {
            assert_eq!((tid, after), (pid, Duration::from_millis(300)));
            assert!(img.contains(rip), "{rip:#x}");
        }
        r => panic!("{r:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
    match p.call(pid, s("add"), &[1, 2, 3, 4, 5, 6, 7]) {
        Err(Error::Invalid(m)) => assert!(m.contains("at most 6"), "{m}"),
        r => panic!("{r:?}"),
    }
    // Still usable, registers as before, and the read finishes exactly.
    assert_eq!(p.call(pid, s("add"), &[20, 22]).unwrap(), 42);
    assert_eq!(p.call(pid, s("clobber_vec"), &[avx() as u64]).unwrap(), 7);
    let after = *Regs::read(pid).unwrap().user();
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"xyz");
    assert_eq!(h.line(), "ret=3 data=xyz vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_signal_arriving_during_a_call_is_delivered_afterwards() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    let r = p
        .call(pid, img.sym("raise_sig").unwrap(), &[libc::SIGUSR1 as u64])
        .unwrap();
    assert_eq!(r, 0, "tgkill's result");
    let q = p.take_requeued();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].tid, q[0].signal), (pid, libc::SIGUSR1));
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    // The handler (SA_RESTART) runs once; the raw read restarts and reads the data.
    h.write_stdin(b"sig");
    assert_eq!(h.line(), "ret=3 data=sig vec=OK usr1=1");
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn a_scratch_stack_and_a_data_block_are_used() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    let stack = p.alloc_scratch(pid, 65536).unwrap();
    let opts = CallOptions {
        stack: Some(stack + 65536),
        ..CallOptions::default()
    };
    let sp = p
        .call_with(pid, img.sym("sp_at_entry").unwrap(), &[], &opts)
        .unwrap();
    assert_eq!(
        sp,
        stack + 65536 - 8,
        "return address at the top of the scratch stack"
    );
    let data: Vec<u8> = (0..200u8).collect();
    let buf = p.alloc_scratch(pid, data.len() as u64).unwrap();
    p.mem().write(buf, &data).unwrap();
    let sum: u64 = data.iter().map(|&b| b as u64).sum();
    assert_eq!(
        p.call_with(pid, img.sym("sum_bytes").unwrap(), &[buf, 200], &opts)
            .unwrap(),
        sum
    );
    // A stack that cannot be written: a clear error, the thread untouched.
    let before = *Regs::read(pid).unwrap().user();
    let bad = CallOptions {
        stack: Some(0x2000),
        ..CallOptions::default()
    };
    match p.call_with(pid, img.sym("add").unwrap(), &[1, 2], &bad) {
        Err(Error::Invalid(m)) => assert!(m.contains("return address"), "{m}"),
        r => panic!("{r:?}"),
    }
    let after = *Regs::read(pid).unwrap().user();
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
    // A Process that loaded nothing makes its own trap page (r-x, anonymous) to return to.
    let mut fresh = Process::new(pid);
    assert_eq!(
        fresh.call(pid, img.sym("add").unwrap(), &[5, 6]).unwrap(),
        11
    );
    // A return address that is no int3 is refused; an explicit one is used.
    let not_trap = CallOptions {
        return_to: Some(img.sym("add").unwrap()),
        ..CallOptions::default()
    };
    match fresh.call_with(pid, img.sym("add").unwrap(), &[1, 2], &not_trap) {
        Err(Error::Invalid(m)) => assert!(m.contains("int3"), "{m}"),
        r => panic!("{r:?}"),
    }
    let explicit = CallOptions {
        return_to: Some(img.trap + 3),
        ..CallOptions::default()
    };
    assert_eq!(
        fresh
            .call_with(pid, img.sym("add").unwrap(), &[7, 8], &explicit)
            .unwrap(),
        15
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let anon_rx = maps
        .lines()
        .filter(|l| {
            l.split_whitespace().nth(1) == Some("r-xp") && l.split_whitespace().count() == 5
        })
        .filter(|l| {
            let a = u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap();
            !img.contains(a)
        })
        .count();
    assert_eq!(anon_rx, 1, "{maps}");
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"ok");
    assert_eq!(h.line(), "ret=2 data=ok vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

/// Runs the traced `l_exec` child from its current stop to its next exec stop.
fn to_exec_stop(h: &mut Helper, pid: Pid, resume: bool) {
    if resume {
        cont(pid, 0).unwrap();
    }
    h.write_stdin(b"x");
    loop {
        match wait_tid(pid).unwrap() {
            Stop::Event(Event::Exec { .. }) => return,
            Stop::Signal { signal, .. } => cont(pid, signal).unwrap(),
            s if s.is_gone() => panic!("{s:?}"),
            _ => cont(pid, 0).unwrap(),
        }
    }
}

#[test]
fn at_the_exec_stop_the_blob_loads_runs_and_goes_to_the_same_base_after_the_next_exec() {
    exec_case(Helper::start("l_exec", &["2"]));
}

#[test]
fn at_the_exec_stop_of_a_static_program_the_blob_loads_and_runs() {
    let exe = cc("l_exec", "l_exec_static", &["-O1", "-static"]);
    exec_case(Helper::start_exe(&exe, &["2"]));
}

/// Where a freshly exec'd process starts: the interpreter's entry point (AT_BASE plus its
/// e_entry), or the program's (AT_ENTRY) when it has none.
fn first_instruction(pid: Pid) -> u64 {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap();
    let get = |key: u64| {
        auxv.chunks_exact(16)
            .find(|e| u64::from_le_bytes(e[..8].try_into().unwrap()) == key)
            .map(|e| u64::from_le_bytes(e[8..].try_into().unwrap()))
            .unwrap_or(0)
    };
    let (base, entry) = (get(7), get(9));
    if base == 0 {
        return entry;
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let interp = maps
        .lines()
        .find(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap() == base)
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap();
    let elf = std::fs::read(interp).unwrap();
    base + Elf(&elf).u64(24)
}

fn exec_case(mut h: Helper) {
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD | Options::TRACEEXEC).unwrap();
    assert_eq!(stops.len(), 1);
    to_exec_stop(&mut h, pid, true);
    let mut p = Process::new(pid);
    p.exec_happened();
    let before = *Regs::read(pid).unwrap().user();
    assert_eq!(before.rip, first_instruction(pid), "nothing ran yet");
    let mut argc = [0u8; 8];
    p.mem().read(before.rsp, &mut argc).unwrap();
    assert_eq!(
        u64::from_le_bytes(argc),
        2,
        "RSP points at argc: nothing ran yet"
    );
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    check_w_xor_x(pid, &img);
    exercise(&mut p, pid, pid, &img);
    // At the exec event the call has not stored its result yet (RAX = -ENOSYS); the first
    // injection ran it to its exit, where RAX = 0. Everything else is as it was.
    let mut after = *Regs::read(pid).unwrap().user();
    assert_eq!((before.rax as i64, after.rax), (-libc::ENOSYS as i64, 0));
    after.rax = before.rax;
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
    p.mem().read(before.rsp, &mut argc).unwrap();
    assert_eq!(u64::from_le_bytes(argc), 2);

    // The program runs (its "ready"), execs again: the same base is free and used.
    cont(pid, 0).unwrap();
    assert_eq!(h.line(), "ready");
    to_exec_stop(&mut h, pid, false);
    p.exec_happened();
    let opts = LoadOptions {
        base: Some(img.base),
    };
    let again = p.load_image(pid, &blob(), &opts).unwrap();
    assert_eq!(again.base, img.base);
    assert_eq!(again.len, img.len);
    check_w_xor_x(pid, &again);
    exercise(&mut p, pid, pid, &again);
    // Loading there a second time: the span is taken, nothing changes.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    match p.load_image(pid, &blob(), &opts) {
        Err(Error::Image { why }) => assert!(why.contains("already mapped"), "{why}"),
        r => panic!("{r:?}"),
    }
    assert_eq!(
        maps,
        std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
    );
    detach(pid, 0).unwrap();
    assert_eq!(h.line(), "done");
    assert_eq!(h.exit_code(), 7);
}

#[test]
fn unload_image_unmaps_the_whole_span() {
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let maps0 = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let img = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    assert_eq!(p.call(pid, img.sym("add").unwrap(), &[1, 1]).unwrap(), 2);
    p.unload_image(pid, &img).unwrap();
    assert!(maps_in(pid, &img).is_empty());
    assert_eq!(p.syscall_site(), SyscallSite::Auto);
    // The call trap went with it; the next image brings its own.
    let img2 = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    assert_eq!(p.call(pid, img2.sym("add").unwrap(), &[2, 2]).unwrap(), 4);
    p.unload_image(pid, &img2).unwrap();
    // An image unmapped behind the Process's back: its stale trap is noticed, a new one made.
    let a = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    let b = p.load_image(pid, &blob(), &LoadOptions::default()).unwrap();
    p.remote_munmap(pid, b.base, b.len).unwrap();
    assert_eq!(p.call(pid, a.sym("add").unwrap(), &[3, 3]).unwrap(), 6);
    p.unload_image(pid, &a).unwrap();
    let maps_extra = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert_eq!(
        maps_extra.lines().count(),
        maps0.lines().count() + 1,
        "the new trap page"
    );
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"u");
    assert_eq!(h.line(), "ret=1 data=u vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

/// Each bad blob gives its own error, and nothing is mapped in the process.
#[test]
fn bad_blobs_are_refused_with_their_reason_and_nothing_is_mapped() {
    let good = blob();
    let e = Elf(&good);
    let ph = e.phdrs();
    let stack_ph = ph.iter().find(|p| p.1 == 0x6474_e551).unwrap().0; // PT_GNU_STACK
    let rw_ph = ph.iter().find(|p| p.1 == 1 && p.2 == 6).unwrap().0; // the RW PT_LOAD
    let debug = e.dyns().into_iter().find(|d| d.1 == 21).unwrap().0; // DT_DEBUG
    let rela0 = e.file_off(e.dyn_val(7).unwrap());
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut m = |what: &'static str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        cases.push((what, b));
    };
    m("no \\x7fELF magic", &|b| b[0] = 0);
    m("not a 64-bit ELF", &|b| b[4] = 1);
    m("not a little-endian", &|b| b[5] = 2);
    m("not x86-64", &|b| {
        b[18..20].copy_from_slice(&3u16.to_le_bytes())
    });
    m("not ET_DYN", &|b| {
        b[16..18].copy_from_slice(&2u16.to_le_bytes())
    });
    m("interpreter (PT_INTERP)", &|b| {
        b[stack_ph..stack_ph + 4].copy_from_slice(&3u32.to_le_bytes())
    });
    m("thread-local storage (PT_TLS)", &|b| {
        b[stack_ph..stack_ph + 4].copy_from_slice(&7u32.to_le_bytes())
    });
    m("needs shared libraries (DT_NEEDED)", &|b| {
        b[debug..debug + 8].copy_from_slice(&1u64.to_le_bytes())
    });
    m("constructors", &|b| {
        b[debug..debug + 8].copy_from_slice(&12u64.to_le_bytes())
    });
    m("type 1 (R_X86_64_64)", &|b| {
        b[rela0 + 8..rela0 + 16].copy_from_slice(&1u64.to_le_bytes())
    });
    m("type 37 (R_X86_64_IRELATIVE)", &|b| {
        b[rela0 + 8..rela0 + 16].copy_from_slice(&37u64.to_le_bytes())
    });
    m("both writable and executable (W+X)", &|b| {
        b[rw_ph + 4..rw_ph + 8].copy_from_slice(&7u32.to_le_bytes())
    });
    m("beyond the end of the file", &|b| b.truncate(b.len() / 3));
    cases.push(("beyond the end of the file", b"\x7fELF".to_vec()));

    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let maps0 = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for (what, bytes) in &cases {
        match p.load_image(pid, bytes, &LoadOptions::default()) {
            Err(Error::Image { why }) => assert!(why.contains(what), "{what}: {why}"),
            r => panic!("{what}: {r:?}"),
        }
        assert!(Blob::parse(bytes).is_err(), "{what}");
    }
    // A base where something is mapped already: the first mapping of the process.
    let first = u64::from_str_radix(maps0.split('-').next().unwrap(), 16).unwrap();
    match p.load_image(pid, &good, &LoadOptions { base: Some(first) }) {
        Err(Error::Image { why }) => assert!(why.contains("already mapped"), "{why}"),
        r => panic!("{r:?}"),
    }
    match p.load_image(
        pid,
        &good,
        &LoadOptions {
            base: Some(first + 1),
        },
    ) {
        Err(Error::Image { why }) => assert!(why.contains("page-aligned"), "{why}"),
        r => panic!("{r:?}"),
    }
    let maps1 = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert_eq!(maps0, maps1, "nothing mapped");
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"e");
    assert_eq!(h.line(), "ret=1 data=e vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
}

/// Corrupted headers, tables and relocations never make the parser panic (overflow checks
/// are on in test builds) or accept a blob with a relocation outside its contents.
#[test]
fn corrupted_blobs_never_panic_the_parser() {
    for good in [blob(), relr_blob()] {
        let e = Elf(&good);
        // Where the interesting bytes are: ELF and program headers, .dynamic, .dynsym,
        // .gnu.hash, the relocation tables, the section headers.
        let d = e.phdrs().into_iter().find(|p| p.1 == 2).unwrap();
        let shoff = e.u64(40) as usize;
        let regions = [
            (0usize, 64 + 56 * e.u16(56) as usize),
            (d.3 as usize, d.5 as usize),
            (0x200, 0x600),
            (shoff, good.len() - shoff),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for _ in 0..8000 {
            let mut b = good.clone();
            for _ in 0..1 + next() % 4 {
                let (start, len) = regions[(next() % regions.len() as u64) as usize];
                let at = start + (next() as usize) % len.max(1);
                if at < b.len() {
                    b[at] = match next() % 4 {
                        0 => 0,
                        1 => 0xff,
                        2 => b[at] ^ (1 << (next() % 8)),
                        _ => next() as u8,
                    };
                }
            }
            if let Ok(blob) = Blob::parse(&b) {
                accepted += 1;
                assert!(blob.span() <= 1 << 32);
            }
        }
        // Most single-byte changes hit bytes that do not matter (padding, names).
        assert!(accepted > 0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Figures for the notes: `cargo test --release -p mmio-trace-ptrace --test image --
/// --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_load_image_and_call() {
    let big = big_blob();
    let mut h = Helper::start("l_target", &["read"]);
    let pid = h.pid();
    wait_blocked(pid, pid, &[libc::SYS_read]);
    let stops = seize_all(pid, Options::TRACESYSGOOD).unwrap();
    let mut p = Process::new(pid);
    let mut load = Vec::new();
    let mut parse = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        Blob::parse(&big).unwrap();
        parse.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let img = p.load_image(pid, &big, &LoadOptions::default()).unwrap();
        load.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(p.call(pid, img.sym("big").unwrap(), &[0]).unwrap(), 2);
        p.unload_image(pid, &img).unwrap();
    }
    let img = p.load_image(pid, &big, &LoadOptions::default()).unwrap();
    let add = img.sym("add").unwrap();
    let mut timed = Vec::new();
    let mut blocking = Vec::new();
    let none = CallOptions {
        timeout: None,
        ..CallOptions::default()
    };
    for _ in 0..2000 {
        let t0 = Instant::now();
        p.call(pid, add, &[1, 2]).unwrap();
        timed.push(t0.elapsed().as_secs_f64() * 1e6);
        let t0 = Instant::now();
        p.call_with(pid, add, &[1, 2], &none).unwrap();
        blocking.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    for (t, _) in stops {
        detach(t, 0).unwrap();
    }
    h.write_stdin(b"b");
    assert_eq!(h.line(), "ret=1 data=b vec=OK usr1=0");
    assert_eq!(h.exit_code(), 0);
    println!(
        "blob {} bytes: Blob::parse {:.3} ms, load_image {:.3} ms (median of 20); call(add) {:.1} us with the default timeout (polling), {:.1} us without (blocking wait) (median of 2000)",
        big.len(),
        median(parse),
        median(load),
        median(timed),
        median(blocking)
    );
}
