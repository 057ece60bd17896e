//! The agent blob runs: loaded into this process as a loader without libc's help would load
//! it (map its segments at a base of our choosing, add the base to each RELATIVE
//! relocation, nothing else), started with `mmio_trace_agent_init` and told of a device
//! mapping, its own no_std tracer (allocator, settings, signal handler, emulator, rings)
//! traces the accesses exactly. The agent's handlers are process-wide: each start is in a
//! process of its own (the first test; the others run this binary again).

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use object::elf;
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _, Rela as _, Sym as _};
use object::{Endianness, Object as _};

use mmio_trace_record::agent;
use mmio_trace_ring::{Clock, Consumer, Kind, Layout, Record};

const PAGE: u64 = 4096;

/// A loaded copy of the blob.
struct Loaded {
    base: u64,
    data: &'static [u8],
}

impl Loaded {
    /// Maps `data`'s PT_LOAD segments at a fresh base, applies its relocations (only
    /// RELATIVE ones exist: tests/agent_blob.rs checks) and gives each segment its
    /// protection.
    fn load(data: &'static [u8]) -> Loaded {
        let h = elf::FileHeader64::<Endianness>::parse(data).unwrap();
        let e = h.endian().unwrap();
        let phs = h.program_headers(e, data).unwrap();
        let loads: Vec<_> = phs.iter().filter(|p| p.p_type(e) == elf::PT_LOAD).collect();
        let span = loads
            .iter()
            .map(|p| (p.p_vaddr(e) + p.p_memsz(e) + PAGE - 1) & !(PAGE - 1))
            .max()
            .unwrap();
        // SAFETY: a fresh reservation the kernel places.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        let seg = |p: &elf::ProgramHeader64<Endianness>| {
            let lo = base + (p.p_vaddr(e) & !(PAGE - 1));
            let hi = base + ((p.p_vaddr(e) + p.p_memsz(e) + PAGE - 1) & !(PAGE - 1));
            (lo, hi)
        };
        for p in &loads {
            let (lo, hi) = seg(p);
            // SAFETY: inside our reservation; fresh zeroed pages.
            let r = unsafe {
                libc::mmap(
                    lo as *mut _,
                    (hi - lo) as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            assert_eq!(r as u64, lo);
            let (off, len) = (p.p_offset(e) as usize, p.p_filesz(e) as usize);
            // SAFETY: the segment's file bytes into its writable pages.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data[off..off + len].as_ptr(),
                    (base + p.p_vaddr(e)) as *mut u8,
                    len,
                )
            };
        }
        let dynamic = phs
            .iter()
            .find_map(|p| p.dynamic(e, data).unwrap())
            .expect("PT_DYNAMIC");
        let tag = |t: u32| {
            dynamic
                .iter()
                .find(|d| d.d_tag(e) == u64::from(t))
                .map(|d| d.d_val(e))
        };
        if let (Some(rela), Some(size)) = (tag(elf::DT_RELA), tag(elf::DT_RELASZ)) {
            let n = size as usize / std::mem::size_of::<elf::Rela64<Endianness>>();
            // SAFETY: the relocation table, in the read-only segment just copied.
            let relas = unsafe {
                std::slice::from_raw_parts((base + rela) as *const elf::Rela64<Endianness>, n)
            };
            for r in relas {
                assert_eq!(r.r_type(e, false), elf::R_X86_64_RELATIVE);
                let at = (base + r.r_offset(e)) as *mut u64;
                // SAFETY: a relocated word inside the image's writable pages.
                unsafe { at.write_unaligned(base.wrapping_add(r.r_addend(e) as u64)) };
            }
        }
        for p in &loads {
            let (lo, hi) = seg(p);
            let f = p.p_flags(e);
            let mut prot = 0;
            if f & elf::PF_R != 0 {
                prot |= libc::PROT_READ;
            }
            if f & elf::PF_W != 0 {
                prot |= libc::PROT_WRITE;
            }
            if f & elf::PF_X != 0 {
                prot |= libc::PROT_EXEC;
            }
            // SAFETY: our own pages.
            assert_eq!(
                unsafe { libc::mprotect(lo as *mut _, (hi - lo) as usize, prot) },
                0
            );
        }
        Loaded { base, data }
    }

    /// The address of dynamic symbol `name`.
    fn sym(&self, name: &str) -> u64 {
        let h = elf::FileHeader64::<Endianness>::parse(self.data).unwrap();
        let e = h.endian().unwrap();
        let sections = h.sections(e, self.data).unwrap();
        let syms = sections.symbols(e, self.data, elf::SHT_DYNSYM).unwrap();
        let s = syms
            .iter()
            .find(|s| syms.symbol_name(e, s).unwrap() == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} not exported"));
        self.base + s.st_value(e)
    }
}

#[test]
fn the_loaded_blob_traces_a_device_mapping() {
    let blob: &'static [u8] = agent::BLOB;
    let a = Loaded::load(blob);
    type Init = unsafe extern "C" fn(*const u8, usize) -> i64;
    type AfterMmap = unsafe extern "C" fn(u64, u64, i32, i32, i32, i64, u64);
    // SAFETY: the blob's documented signatures (record::agent).
    let (init, after_mmap) = unsafe {
        (
            std::mem::transmute::<u64, Init>(a.sym(agent::INIT)),
            std::mem::transmute::<u64, AfterMmap>(a.sym(agent::AFTER_MMAP)),
        )
    };

    // No recorder named: -EINVAL, nothing started.
    // SAFETY: an empty parameter list.
    assert_eq!(unsafe { init(std::ptr::null(), 0) }, -22);

    let mut consumer = Consumer::with_clock(Layout::uniform(8, 4096), Clock::Monotonic).unwrap();
    let path = std::env::temp_dir().join(format!("mmio-trace-agent-load-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0u8; 8192]).unwrap();
    let canonical = std::fs::canonicalize(&path).unwrap();
    let vars = format!(
        "MMIO_TRACE_SHM_FD={}\0MMIO_TRACE_DEVICES={}\0MMIO_TRACE_NO_DEFAULT_DEVICES=1\0\
         MMIO_TRACE_NO_PATCH=1\0",
        consumer.fd(),
        canonical.display()
    );
    assert!(vars.len() <= agent::PARAMS_LEN);
    let params = a.sym(agent::PARAMS) as *mut u8;
    // SAFETY: the blob's writable parameter area, PARAMS_LEN bytes.
    unsafe { std::ptr::copy_nonoverlapping(vars.as_ptr(), params, vars.len()) };
    // SAFETY: `vars.len()` bytes written there.
    assert_eq!(unsafe { init(params, vars.len()) }, 0);

    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a fresh shared mapping of our own file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            rw,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p as u64;
    // SAFETY: the hook's contract: a successful mmap's arguments and result.
    unsafe { after_mmap(base, 8192, rw, libc::MAP_SHARED, f.as_raw_fd(), 0, 0) };
    let reg = (base + 0x1008) as *mut u64;
    // SAFETY: inside the mapping; volatile, as the tracer requires of traced memory.
    let (first, second) = unsafe {
        reg.write_volatile(0x0123_4567_89ab_cdef);
        let first = reg.read_volatile();
        (reg as *mut u16).write_volatile(0xfeed);
        (first, reg.read_volatile())
    };
    assert_eq!(first, 0x0123_4567_89ab_cdef);
    assert_eq!(second, 0x0123_4567_89ab_feed);

    let accesses = |recs: &[Record]| -> Vec<(Kind, u64, u8, u64)> {
        recs.iter()
            .filter_map(|r| match r.kind() {
                Some(k @ (Kind::Read | Kind::Write)) => Some((k, r.addr(), r.width(), r.value())),
                _ => None,
            })
            .collect()
    };
    let mut recs: Vec<Record> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accesses(&recs).len() < 4 && Instant::now() < deadline {
        consumer.poll(|d| recs.extend_from_slice(d.records));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&path);
    let at = base + 0x1008;
    assert_eq!(
        accesses(&recs),
        vec![
            (Kind::Write, at, 8, 0x0123_4567_89ab_cdef),
            (Kind::Read, at, 8, 0x0123_4567_89ab_cdef),
            (Kind::Write, at, 2, 0xfeed),
            (Kind::Read, at, 8, 0x0123_4567_89ab_feed),
        ]
    );
    assert!(
        recs.iter()
            .any(|r| r.kind() == Some(Kind::Map) && r.addr() == base),
        "no MAP of the mapping"
    );

    // Before its first MAP the agent logs the process's objects (for offline
    // symbolization), found without a loader to ask: from /proc/self/maps and the ELF
    // headers in memory. This test's executable: where it is mapped, with its build id.
    let marks = marks(&recs);
    let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let exe_data = std::fs::read(&exe).unwrap();
    let build: String = object::read::File::parse(&*exe_data)
        .unwrap()
        .build_id()
        .unwrap()
        .expect("the test binary has a build id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let exe_start = maps
        .lines()
        .find(|l| {
            l.ends_with(&*exe.to_string_lossy()) && l.split_whitespace().nth(2) == Some("00000000")
        })
        .and_then(|l| l.split('-').next())
        .map(|a| u64::from_str_radix(a, 16).unwrap())
        .expect("the executable in /proc/self/maps");
    let want = format!("object pid {} {exe_start:#x}-", std::process::id());
    let line = marks
        .iter()
        .find(|m| m.starts_with(&want))
        .unwrap_or_else(|| panic!("no MARK {want}...; marks: {marks:#?}"));
    assert!(
        line.ends_with(&format!(" build {build} {}", exe.display())),
        "{line}"
    );
    assert!(
        marks
            .iter()
            .any(|m| m.starts_with("object pid ") && m.ends_with(" [vdso]")),
        "{marks:#?}"
    );
    assert!(
        marks
            .iter()
            .any(|m| m.starts_with("object pid ") && m.contains("/libc.so")),
        "{marks:#?}"
    );
}

/// The texts of the `MARK` events in `recs` (each a first record with the length in word
/// 2, then the text in the data records after it).
fn marks(recs: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        if r.kind() == Some(Kind::Mark) {
            let len = r.value() as usize;
            let bytes: Vec<u8> = recs[i + 1..]
                .iter()
                .take(len.div_ceil(32))
                .flat_map(|d| d.bytes())
                .take(len)
                .collect();
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// The accesses each thread of the scenario makes at its own register (offset `0x100 *
/// (t + 1)`), as (kind, width, value): what the log must hold, whatever the path.
fn expected(t: u64) -> Vec<(Kind, u8, u64)> {
    let v = 0x1111_2222_3333_4444u64.wrapping_mul(t + 1);
    vec![
        (Kind::Write, 8, v),
        (Kind::Read, 8, v),
        (Kind::Write, 4, 0x5566_7788),
        (Kind::Read, 1, 0x88),
        (Kind::Write, 2, 0x99aa),
        (Kind::Read, 8, (v & !0xffff_ffff) | 0x5566_99aa),
    ]
}

/// Thread `t`'s accesses (volatile, in `expected`'s order); returns the last value read.
///
/// # Safety
/// `reg` must be 8 bytes of a traced mapping.
unsafe fn accesses(reg: *mut u64, t: u64) -> u64 {
    let v = 0x1111_2222_3333_4444u64.wrapping_mul(t + 1);
    // SAFETY: the caller's contract.
    unsafe {
        reg.write_volatile(v);
        assert_eq!(reg.read_volatile(), v);
        (reg as *mut u32).write_volatile(0x5566_7788);
        assert_eq!((reg as *const u8).read_volatile(), 0x88);
        (reg as *mut u16).write_volatile(0x99aa);
        reg.read_volatile()
    }
}

const SCENARIO: &str = "MMIO_TRACE_AGENT_LOAD_SCENARIO";

/// Runs in a fresh copy of this binary (see `every_path_of_the_loaded_blob_...`): loads
/// the blob, starts it with `MMIO_TRACE_PATH` from the scenario variable, makes three
/// threads' accesses and prints the recorded accesses, one `ACCESS t kind width value`
/// line each.
#[test]
#[ignore = "a helper: runs only in a child process"]
fn scenario_helper() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    // "patch": hot-site patching left on (the default path), so the patcher thread starts.
    let patching = scenario == "patch";
    let path_setting = if patching { "emulate" } else { &scenario };
    let a = Loaded::load(agent::BLOB);
    type Init = unsafe extern "C" fn(*const u8, usize) -> i64;
    type AfterMmap = unsafe extern "C" fn(u64, u64, i32, i32, i32, i64, u64);
    type ThreadStart = unsafe extern "C" fn();
    // SAFETY: the blob's documented signatures (record::agent).
    let (init, after_mmap, thread_start) = unsafe {
        (
            std::mem::transmute::<u64, Init>(a.sym(agent::INIT)),
            std::mem::transmute::<u64, AfterMmap>(a.sym(agent::AFTER_MMAP)),
            std::mem::transmute::<u64, ThreadStart>(a.sym("mmio_trace_agent_thread_start")),
        )
    };
    let mut consumer = Consumer::with_clock(Layout::uniform(8, 4096), Clock::Monotonic).unwrap();
    let path =
        std::env::temp_dir().join(format!("mmio-trace-agent-scenario-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    let canonical = std::fs::canonicalize(&path).unwrap();
    let vars = format!(
        "MMIO_TRACE_SHM_FD={}\0MMIO_TRACE_DEVICES={}\0MMIO_TRACE_NO_DEFAULT_DEVICES=1\0\
         MMIO_TRACE_PATH={path_setting}\0{}",
        consumer.fd(),
        canonical.display(),
        if patching {
            ""
        } else {
            "MMIO_TRACE_NO_PATCH=1\0"
        }
    );
    if patching {
        // A slot for generated code (never read here: the recording's clock is not the
        // TSC, so nothing is patched).
        extern "C" fn publish(_block: *const std::ffi::c_void) {}
        type SetTls = unsafe extern "C" fn(extern "C" fn(*const std::ffi::c_void), i64);
        // SAFETY: the blob's documented signature (the block pointer is opaque here).
        let set_tls = unsafe {
            std::mem::transmute::<u64, SetTls>(a.sym("mmio_trace_agent_set_tls_publisher"))
        };
        // SAFETY: a publisher that ignores its argument.
        unsafe { set_tls(publish, -8) };
    }
    let params = a.sym(agent::PARAMS) as *mut u8;
    // SAFETY: the blob's writable parameter area; then `vars.len()` bytes there.
    let r = unsafe {
        std::ptr::copy_nonoverlapping(vars.as_ptr(), params, vars.len());
        init(params, vars.len())
    };
    assert_eq!(r, 0);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a fresh shared mapping of our own file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            rw,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p as u64;
    // SAFETY: the hook's contract: a successful mmap's arguments and result.
    unsafe { after_mmap(base, 4096, rw, libc::MAP_SHARED, f.as_raw_fd(), 0, 0) };
    let threads: Vec<_> = (1..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                // SAFETY: the runtime's call at a new thread's start.
                unsafe { thread_start() };
                // SAFETY: 8 bytes of the traced mapping.
                unsafe { accesses((base + 0x100 * (t + 1)) as *mut u64, t) }
            })
        })
        .collect();
    // SAFETY: 8 bytes of the traced mapping.
    let mut last = vec![unsafe { accesses((base + 0x100) as *mut u64, 0) }];
    last.extend(threads.into_iter().map(|t| t.join().unwrap()));
    for (t, v) in last.iter().enumerate() {
        assert_eq!(Some(v), expected(t as u64).last().map(|e| &e.2));
    }
    let mut recs: Vec<Record> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |recs: &[Record]| {
        recs.iter()
            .filter(|r| matches!(r.kind(), Some(Kind::Read | Kind::Write)))
            .count()
    };
    let patch_notes = |recs: &[Record]| {
        recs.iter()
            .filter(|r| r.kind() == Some(Kind::Patch))
            .count()
    };
    while (count(&recs) < 18 || (patching && patch_notes(&recs) == 0)) && Instant::now() < deadline
    {
        consumer.poll(|d| recs.extend_from_slice(d.records));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&path);
    for (i, r) in recs.iter().enumerate() {
        if r.kind() == Some(Kind::Patch) {
            let w2 = r.value();
            let len = ((w2 >> 8) & 0xffff) as usize;
            let text: Vec<u8> = recs[i + 1..]
                .iter()
                .take(len.div_ceil(32))
                .flat_map(|d| d.bytes())
                .take(len)
                .collect();
            println!("PATCH {} {}", w2 & 0xff, String::from_utf8_lossy(&text));
        }
        if let Some(k @ (Kind::Read | Kind::Write)) = r.kind() {
            let off = r.addr() - base;
            println!(
                "ACCESS {} {k:?} {} {:#x} at {off:#x}",
                off / 0x100 - 1,
                r.width(),
                r.value()
            );
        }
    }
}

/// The emulator, out-of-line execution and the single step of the blob's own tracer each
/// record every access of three threads exactly (the same events as the preload route's
/// tracer would).
#[test]
fn every_path_of_the_loaded_blob_records_the_same_accesses() {
    for path in ["emulate", "ool", "step"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "scenario_helper", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(SCENARIO, path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{path}: {text}");
        for t in 0..3u64 {
            let got: Vec<String> = text
                .lines()
                // (The harness's "test ... " may precede the first line.)
                .filter_map(|l| l.split_once("ACCESS ").map(|(_, rest)| rest))
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(str::to_string)
                .collect();
            let want: Vec<String> = expected(t)
                .into_iter()
                .map(|(k, w, v)| format!("{k:?} {w} {v:#x} at {:#x}", 0x100 * (t + 1)))
                .collect();
            assert_eq!(got, want, "{path}, thread {t}:\n{text}");
        }
    }
}

/// The blob starts its hot-site patcher as a thread of its own (a raw `clone`: no thread
/// library) once a TLS slot for generated code is registered, and the thread reports
/// through its own ring: here that patching is off, for the first reason after the slot
/// (the kernel's FSGSBASE, else the recording's clock).
#[test]
fn the_blob_starts_its_patcher_thread_without_a_thread_library() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "scenario_helper", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(SCENARIO, "patch")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let notes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("PATCH ").map(|(_, rest)| rest))
        .collect();
    // Status 2: patching off, said once per process, with the reason.
    let fsgsbase = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|w| w == "fsgsbase");
    let why = if fsgsbase {
        "the recording's clock is not the TSC"
    } else {
        "the kernel does not allow rdfsbase (FSGSBASE)"
    };
    assert_eq!(notes, [format!("2 {why}")], "{text}");
}
