//! The tracer in this very process: trace a memfd mapping, make accesses, read the ring.
//!
//! One test function, because tracing is process-wide state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::arch::asm;
use std::sync::atomic::{AtomicU64, Ordering};

use mmio_trace_ring::{Consumer, Kind, Record};
use mmio_trace_tracer as tracer;

/// Counts allocations, to prove the fault path makes none.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: caller's contract.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn drain(c: &mut Consumer) -> Vec<Record> {
    let mut v = Vec::new();
    c.poll(|d| v.extend_from_slice(d.records));
    v
}

/// (kind, addr offset, width, value) of the access records, skipping MAP/UNMAP.
fn accesses(recs: &[Record], base: u64) -> Vec<(Kind, u64, u8, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < recs.len() {
        let r = recs[i];
        if let Some(k @ (Kind::Read | Kind::Write | Kind::Unknown)) = r.kind() {
            out.push((k, r.addr() - base, r.width(), r.value()));
        }
        i += 1 + r.extra();
    }
    out
}

#[test]
fn traced_accesses_are_emulated_stepped_and_logged_in_order() {
    let mut c = Consumer::create(16, 1024).unwrap();
    tracer::init(c.shm(), tracer::Rules::new(&[], true));
    // SAFETY: plain libc calls on a fresh memfd.
    let (dev, alias) = unsafe {
        let fd = libc::memfd_create(c"dev".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, 8192), 0);
        let m = |_| {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        (m(0) as *mut u8, m(1) as *mut u8)
    };
    // Device contents: word k holds 0x1000 + k.
    for k in 0..2048u32 {
        // SAFETY: inside the 8 KiB mapping.
        unsafe { (dev as *mut u32).add(k as usize).write(0x1000 + k) };
    }
    // SAFETY: our own mapping; accessed only through asm below.
    let id = unsafe {
        tracer::trace_region(
            dev,
            8192,
            0xfe00_0000,
            Some(alias),
            libc::PROT_READ | libc::PROT_WRITE,
        )
    }
    .unwrap();
    let base = dev as u64;
    let (mut a, mut b): (u64, u64);
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    // SAFETY: the asm accesses the traced mapping; the fault path completes each access.
    unsafe {
        asm!("mov {a:e}, dword ptr [{p} + 8]", p = in(reg) dev, a = out(reg) a); // R4 0x1002
        asm!("mov byte ptr [{p} + 0x10], 0x5a", p = in(reg) dev); // W1 imm
        asm!("mov qword ptr [{p} + 0x18], {v}", p = in(reg) dev, v = in(reg) 0x1122_3344_5566_7788u64); // W8
        asm!("movzx {b:e}, word ptr [{p} + 0x18]", p = in(reg) dev, b = out(reg) b); // R2 0x7788
        asm!("add dword ptr [{p} + 0x1000], 5", p = in(reg) dev); // RMW: R4 then W4
        asm!("mov {a:e}, dword ptr [{p} + 0x1000]", p = in(reg) dev, a = lateout(reg) _);
        // R4
    }
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        allocs_before,
        "the fault path (decode, emulate, log) allocated"
    );
    a &= 0xffff_ffff;
    assert_eq!(a, 0x1002);
    assert_eq!(b, 0x7788);
    let recs = drain(&mut c);
    assert_eq!(recs[0].kind(), Some(Kind::Map));
    assert_eq!(recs[1].0[1], id);
    assert_eq!(recs[1].0[0], 0xfe00_0000);
    let got = accesses(&recs, base);
    assert_eq!(
        got,
        [
            (Kind::Read, 8, 4, 0x1002),
            (Kind::Write, 0x10, 1, 0x5a),
            (Kind::Write, 0x18, 8, 0x1122_3344_5566_7788),
            (Kind::Read, 0x18, 2, 0x7788),
            (Kind::Read, 0x1000, 4, 0x1400),
            (Kind::Write, 0x1000, 4, 0x1405),
            (Kind::Read, 0x1000, 4, 0x1405),
        ]
    );
    assert_eq!(
        c.header()
            .slow_steps
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The device saw every write once, through the alias.
    // SAFETY: reading the alias.
    unsafe {
        assert_eq!((alias.add(0x10)).read_volatile(), 0x5a);
        assert_eq!((alias.add(0x1000) as *const u32).read_volatile(), 0x1405);
    }
    // An instruction the emulator does not do (`crc32` with a memory operand) runs out of
    // line on a bounce buffer: one read of the device, logged with its value, no step, and
    // no allocation on the way.
    let v: u64;
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    // SAFETY: as above.
    unsafe {
        asm!("xor eax, eax", "crc32 eax, dword ptr [{p} + 4]", p = in(reg) dev, out("rax") v)
    };
    assert_eq!(ALLOCS.load(Ordering::Relaxed), allocs_before);
    let mut want = 0u64;
    // SAFETY: plain register computation of the expected result.
    unsafe { asm!("crc32 {w:e}, {x:e}", w = inout(reg) want, x = in(reg) 0x1001u32) };
    assert_eq!(v, want);
    let got = accesses(&drain(&mut c), base);
    assert_eq!(got, [(Kind::Read, 4, 4, 0x1001)]);
    assert_eq!(
        c.header()
            .slow_steps
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The thread's block publishes its ring for generated code: the ring's control block,
    // records and mask, as the ring's own handle has them.
    let block = tracer::threads::current().expect("a block");
    let p = block.producer().expect("a ring");
    let (ctl, data, mask) = p.raw_parts();
    let rs = &block.ring_state;
    assert_eq!(rs.ctl.load(Ordering::Acquire), ctl as u64);
    assert_eq!(rs.data.load(Ordering::Relaxed), data as u64);
    assert_eq!(rs.mask.load(Ordering::Relaxed), mask);
    assert_eq!(mask, 1023);
    tracer::untrace_region(dev);
    let recs = drain(&mut c);
    assert_eq!(recs[0].kind(), Some(Kind::Unmap));
    // Untraced now: a plain access does not fault.
    // SAFETY: the mapping is accessible again.
    unsafe { assert_eq!((dev as *const u32).read_volatile(), 0x1000) };
}
