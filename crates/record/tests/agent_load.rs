//! The agent blob runs: loaded into this process as a loader without libc's help would load
//! it (map its segments at a base of our choosing, add the base to each RELATIVE
//! relocation, nothing else), started with `mmio_trace_agent_init` and told of a device
//! mapping, its own no_std tracer (allocator, settings, signal handler, emulator, rings)
//! traces the accesses exactly. One test: the agent's handlers are process-wide.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use object::elf;
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _, Rela as _, Sym as _};
use object::Endianness;

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
}
