//! `mmio-trace demo`: an example driver for a simulated DMA engine.
//!
//! The "device" is a 4 KiB file whose registers hold what a real engine would show after
//! reset (an id, READY and DONE status bits, a pending interrupt). The driver maps it like
//! a sysfs BAR and programs one transfer; run under `record` with the file declared a
//! device, every register access and the driver's markers are in the trace.

use std::io;
use std::path::Path;

/// Size of the simulated register window.
pub const DEVICE_SIZE: usize = 4096;

/// Register offsets of the simulated DMA engine.
pub mod reg {
    /// Identification, reads "DMA1".
    pub const ID: usize = 0x00;
    /// Version, major << 16 | minor.
    pub const VERSION: usize = 0x04;
    /// Control: bit 0 reset, bit 1 enable, bit 2 interrupt enable.
    pub const CTRL: usize = 0x10;
    /// Status: bit 0 ready, bit 1 busy, bit 2 done.
    pub const STATUS: usize = 0x14;
    /// Source bus address (64 bits).
    pub const SRC: usize = 0x20;
    /// Destination bus address (64 bits).
    pub const DST: usize = 0x28;
    /// Transfer length in bytes.
    pub const LEN: usize = 0x30;
    /// Write 1 to start.
    pub const DOORBELL: usize = 0x34;
    /// Interrupt status, write 1 to clear.
    pub const IRQ_STATUS: usize = 0x40;
}

/// Writes the simulated device's power-on register contents to `path`.
pub fn create_device(path: &Path) -> io::Result<()> {
    let mut b = vec![0u8; DEVICE_SIZE];
    let mut put = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(reg::ID, u32::from_le_bytes(*b"DMA1"));
    put(reg::VERSION, 0x0001_0002);
    put(reg::STATUS, 0b101);
    put(reg::IRQ_STATUS, 1);
    std::fs::write(path, b)
}

struct Regs(*mut u8);

impl Regs {
    fn rd32(&self, off: usize) -> u32 {
        // SAFETY: `off` is inside the mapped window; volatile makes it one real load.
        unsafe { (self.0.add(off) as *const u32).read_volatile() }
    }
    fn wr32(&self, off: usize, v: u32) {
        // SAFETY: as rd32.
        unsafe { (self.0.add(off) as *mut u32).write_volatile(v) }
    }
    fn wr64(&self, off: usize, v: u64) {
        // SAFETY: as rd32; the offsets used are 8-byte aligned.
        unsafe { (self.0.add(off) as *mut u64).write_volatile(v) }
    }
}

/// `mmio_trace_mark` from the preload library when it is loaded (under `record`).
fn mark(text: &str) {
    type MarkFn = unsafe extern "C" fn(*const libc::c_char);
    // SAFETY: looking up a symbol by a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mmio_trace_mark".as_ptr()) };
    if !f.is_null() {
        let t = std::ffi::CString::new(text).unwrap_or_default();
        // SAFETY: the preload library's `void mmio_trace_mark(const char *)`.
        unsafe { std::mem::transmute::<*mut libc::c_void, MarkFn>(f)(t.as_ptr()) };
    }
}

/// The example driver: probes the engine, resets it, runs one 4 KiB transfer and
/// acknowledges its interrupt. Returns a one-line summary.
pub fn run_driver(path: &Path) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // SAFETY: a fresh shared mapping of the device file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            DEVICE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let r = Regs(p as *mut u8);
    mark("probe");
    let id = r.rd32(reg::ID);
    let version = r.rd32(reg::VERSION);
    mark("reset");
    r.wr32(reg::CTRL, 1);
    while r.rd32(reg::STATUS) & 1 == 0 {}
    mark("dma: copy 4 KiB from 0x100000000 to 0x200000000");
    r.wr64(reg::SRC, 0x1_0000_0000);
    r.wr64(reg::DST, 0x2_0000_0000);
    r.wr32(reg::LEN, 4096);
    r.wr32(reg::CTRL, 0b110);
    r.wr32(reg::DOORBELL, 1);
    while r.rd32(reg::STATUS) & 0b100 == 0 {}
    let irq = r.rd32(reg::IRQ_STATUS);
    r.wr32(reg::IRQ_STATUS, irq);
    mark("done");
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(p, DEVICE_SIZE) };
    let name = String::from_utf8_lossy(&id.to_le_bytes()).into_owned();
    Ok(format!(
        "driver: {name} v{}.{}, transfer done, irq {irq:#x} acknowledged",
        version >> 16,
        version & 0xffff
    ))
}
