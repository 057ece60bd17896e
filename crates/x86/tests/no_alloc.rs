//! The fault path must not allocate: a counting global allocator proves that decode and
//! emulate of every family make zero allocations.

mod harness;

use harness::Regs;
use mmio_trace_x86::{decode, emulate, Bus, BusFault};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// Thread id whose allocations count (0 = none): the test harness's own threads may
/// allocate meanwhile. A raw gettid avoids TLS inside the allocator.
static COUNTING_TID: AtomicI32 = AtomicI32::new(0);

fn note_alloc() {
    let tid = COUNTING_TID.load(Ordering::SeqCst);
    // SAFETY: gettid has no preconditions.
    if tid != 0 && tid == unsafe { libc::gettid() } {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Flat([u8; 256]);

impl Bus for Flat {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        let off = (addr & 0x7f) as usize;
        buf.copy_from_slice(self.0.get(off..off + buf.len()).ok_or(BusFault { addr })?);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        let off = (addr & 0x7f) as usize;
        self.0
            .get_mut(off..off + data.len())
            .ok_or(BusFault { addr })?
            .copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn decode_and_emulate_allocate_nothing() {
    let forms: &[&[u8]] = &[
        &[0x8b, 0x07],                         // mov eax, [rdi]
        &[0x48, 0x89, 0x07],                   // mov [rdi], rax
        &[0xf0, 0x0f, 0xc1, 0x07],             // lock xadd [rdi], eax
        &[0xf0, 0x0f, 0xb1, 0x0f],             // lock cmpxchg [rdi], ecx
        &[0xf0, 0x48, 0x0f, 0xc7, 0x0f],       // lock cmpxchg16b [rdi]
        &[0x83, 0x07, 0x05],                   // add dword [rdi], 5
        &[0xd3, 0x27],                         // shl dword [rdi], cl
        &[0x0f, 0xab, 0x07],                   // bts [rdi], eax
        &[0xf3, 0xa5],                         // rep movsd
        &[0xf3, 0xa6],                         // repe cmpsb
        &[0xff, 0x37],                         // push qword [rdi]
        &[0x0f, 0x94, 0x07],                   // sete [rdi]
        &[0xc5, 0xfe, 0x6f, 0x07],             // vmovdqu ymm0, [rdi]
        &[0x62, 0xf1, 0xfe, 0x48, 0x6f, 0x07], // vmovdqu64 zmm0, [rdi]
        &[0xf7, 0x37],                         // div dword [rdi]: unsupported path
    ];
    let mut cpu = Regs {
        rip: 0x1000,
        ..Regs::zeroed()
    };
    let mut bus = Flat([0; 256]);
    // iced-x86 builds its decoder tables on first use (a one-time, process-wide allocation);
    // the tracer calls `warm_up` before installing its handler, and so do we.
    mmio_trace_x86::warm_up();
    let before = ALLOCS.load(Ordering::SeqCst);
    // SAFETY: gettid has no preconditions.
    COUNTING_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    for _ in 0..100 {
        for f in forms {
            cpu.gpr = [0; 16];
            cpu.gpr[1] = 3;
            cpu.gpr[4] = 0x40;
            match decode(f, 0x1000) {
                Ok(d) => {
                    let _ = d.accesses(&cpu);
                    emulate(&d, &mut cpu, &mut bus).expect("emulates");
                }
                Err(u) => {
                    let _ = (u.mnemonic, u.bytes());
                }
            }
        }
    }
    COUNTING_TID.store(0, Ordering::SeqCst);
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "the fault path allocated");
}
