//! The tracer started the injected agent's way: settings handed over as `NAME=VALUE`
//! strings (`init_from_vars`), never read from the environment. (The agent blob calls the
//! same function, built without std.) One test: the tracer is process-wide.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mmio_trace_ring::{Clock, Consumer, Kind, Layout, Record};
use mmio_trace_tracer::InitError;

#[test]
fn init_from_vars_traces_with_the_settings_it_is_given_and_not_the_environment() {
    // What the environment says must not count once strings were handed over: this range
    // excludes the page the accesses touch, and the path names no file.
    std::env::set_var("MMIO_TRACE_RANGES", "0x100000-0x101000");
    std::env::set_var("MMIO_TRACE_DEVICES", "/nonexistent/device");

    // Settings without a recorder, or with one that cannot be reached: nothing starts.
    assert_eq!(
        mmio_trace_tracer::init_from_vars(b""),
        Err(InitError::NoRecorder)
    );
    assert_eq!(
        mmio_trace_tracer::init_from_vars(b"MMIO_TRACE_SHM_FD=987\0"),
        Err(InitError::Unreachable { map_failed: 0 })
    );
    assert!(!mmio_trace_tracer::is_active());

    let mut consumer = Consumer::with_clock(Layout::uniform(8, 4096), Clock::Monotonic).unwrap();
    let path = std::env::temp_dir().join(format!("mmio-trace-agent-vars-{}", std::process::id()));
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
         MMIO_TRACE_NO_PATCH=1\0MMIO_TRACE_AT_HWCAP2=0\0",
        consumer.fd(),
        canonical.display()
    );
    assert_eq!(mmio_trace_tracer::init_from_vars(vars.as_bytes()), Ok(()));
    assert!(mmio_trace_tracer::is_active());
    // The auxiliary vector's values handed over count instead of the process's own: no
    // FSGSBASE in an AT_HWCAP2 of 0, whatever this machine has.
    assert!(!mmio_trace_tracer::sys::fsgsbase());

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
    mmio_trace_tracer::after_mmap(base, 8192, rw, libc::MAP_SHARED, f.as_raw_fd(), 0, 0);
    let reg = (base + 0x10) as *mut u32;
    // SAFETY: inside the mapping; volatile, as the tracer requires of traced memory.
    let read = unsafe {
        reg.write_volatile(0xdead_beef);
        reg.read_volatile()
    };
    assert_eq!(read, 0xdead_beef);
    // The file got the write (through the alias).
    mmio_trace_tracer::untrace_region(p.cast());
    assert_eq!(
        std::fs::read(&path).unwrap()[0x10..0x14],
        0xdead_beefu32.to_le_bytes()
    );

    let mut recs: Vec<Record> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let accesses = |recs: &[Record]| -> Vec<(Kind, u64, u8, u64)> {
        recs.iter()
            .filter_map(|r| match r.kind() {
                Some(k @ (Kind::Read | Kind::Write)) => Some((k, r.addr(), r.width(), r.value())),
                _ => None,
            })
            .collect()
    };
    while accesses(&recs).len() < 2 && Instant::now() < deadline {
        consumer.poll(|d| recs.extend_from_slice(d.records));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        accesses(&recs),
        vec![
            (Kind::Write, base + 0x10, 4, 0xdead_beef),
            (Kind::Read, base + 0x10, 4, 0xdead_beef),
        ]
    );
    assert!(
        recs.iter()
            .any(|r| r.kind() == Some(Kind::Map) && r.addr() == base),
        "no MAP of the mapping"
    );
}
