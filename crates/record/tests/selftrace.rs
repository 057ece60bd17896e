//! The Rust self-tracing API: a program traces a region of its own and records it.

use mmio_trace_format::{AnyReader, Direction, Event, Format};
use mmio_trace_record::SelfRecorder;

#[test]
fn a_program_traces_its_own_region_into_a_file() {
    let path =
        std::env::temp_dir().join(format!("mmio-trace-selftrace-{}.log", std::process::id()));
    let rec = SelfRecorder::start(&path, Format::Text).unwrap();
    // SAFETY: plain libc calls on a fresh memfd standing in for a device BAR.
    let bar = unsafe {
        let fd = libc::memfd_create(c"bar0".as_ptr(), 0);
        assert_eq!(libc::ftruncate(fd, 4096), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p as *mut u32
    };
    // SAFETY: our own shared mapping, accessed only with volatile operations below.
    let id = unsafe {
        mmio_trace_tracer::trace_region(
            bar as *mut u8,
            4096,
            0xfe00_0000,
            None,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    }
    .unwrap();
    // SAFETY: inside the traced mapping; each volatile access is one instruction.
    let v = unsafe {
        bar.add(1).write_volatile(0x1234_5678);
        bar.add(1).read_volatile()
    };
    assert_eq!(v, 0x1234_5678);
    mmio_trace_tracer::mark(b"self-traced");
    mmio_trace_tracer::untrace_region(bar as *mut u8);
    assert_eq!(rec.finish().unwrap(), 5);

    let mut r = AnyReader::open(&path).unwrap();
    let mut got = Vec::new();
    while let Some(e) = r.next_event().unwrap() {
        match e {
            Event::Map(m) => got.push(format!("MAP {} {:#x} {:#x}", m.id, m.phys, m.len)),
            Event::Access(a) => got.push(format!(
                "{} {} {:#x} {:#x}",
                if a.dir == Direction::Read { "R" } else { "W" },
                a.width,
                a.phys,
                a.value
            )),
            Event::Mark(m) => got.push(format!("MARK {}", String::from_utf8_lossy(&m.text))),
            Event::Unmap(u) => got.push(format!("UNMAP {}", u.id)),
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        got,
        [
            format!("MAP {id} 0xfe000000 0x1000"),
            "W 4 0xfe000004 0x12345678".into(),
            "R 4 0xfe000004 0x12345678".into(),
            "MARK self-traced".into(),
            format!("UNMAP {id}"),
        ]
    );
}
