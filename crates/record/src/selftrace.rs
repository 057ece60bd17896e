//! Recording a program's own regions (the Rust API for self-tracing drivers).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mmio_trace_format::{AnyWriter, Event, Format};
use mmio_trace_ring::Consumer;

use crate::decode::Merger;

/// Records the calling process's own traced regions into a file, from a background
/// thread. Start it, then trace mappings with `mmio_trace_tracer::trace_region`:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mmio_trace_record::SelfRecorder;
/// let rec = SelfRecorder::start("bar0.mmiotrace".as_ref(), mmio_trace_format::Format::Text)?;
/// # let (bar, len, phys, alias) = (std::ptr::null_mut(), 4096, 0xfe00_0000, None);
/// // `bar`: a shared mapping of the device (e.g. VFIO region 0); `alias`: a second one.
/// let id = unsafe { mmio_trace_tracer::trace_region(bar, len, phys, alias, libc::PROT_READ | libc::PROT_WRITE)? };
/// // ... volatile accesses to `bar` are traced ...
/// let events = rec.finish()?;
/// # let _ = (id, events); Ok(()) }
/// ```
///
/// One per process (the tracer is process-wide). The shared memory stays mapped after
/// [`SelfRecorder::finish`], since tracing code may still hold it.
pub struct SelfRecorder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<u64>>,
}

impl SelfRecorder {
    /// Creates the rings, starts tracing in this process and a thread that writes `path`.
    pub fn start(path: &Path, format: Format) -> io::Result<SelfRecorder> {
        let file = crate::output::create_private(path)?;
        let clock = mmio_trace_ring::Clock::choose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let consumer = Consumer::with_clock(mmio_trace_ring::Layout::uniform(64, 16384), clock)?;
        mmio_trace_tracer::init(consumer.shm(), mmio_trace_tracer::Rules::new(&[], true));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mmio-trace-drain".into())
            .spawn(move || drain(consumer, io::BufWriter::new(file), format, &stop2))?;
        Ok(SelfRecorder { stop, thread })
    }

    /// Stops recording: drains what is left, writes and closes the file; returns the number
    /// of events written. Accesses made after this are still emulated but not recorded.
    pub fn finish(self) -> io::Result<u64> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| io::Error::other("drain thread panicked"))?
    }
}

fn drain<W: Write>(
    consumer: Consumer,
    out: W,
    format: Format,
    stop: &AtomicBool,
) -> io::Result<u64> {
    // The tracer keeps pointers into the shared memory for the rest of the process.
    let consumer: &'static mut Consumer = Box::leak(Box::new(consumer));
    let mut w = AnyWriter::new(out, format)?;
    for e in crate::header_events() {
        w.write_event(&e)?;
    }
    let nrings = consumer.header().nrings as usize;
    let mut merger = Merger::new(nrings, consumer.header().start_ns);
    let mut err = None;
    loop {
        let done = stop.load(Ordering::Acquire);
        let wm = consumer.poll(|d| merger.add(d));
        merger.emit(if done { None } else { Some(wm) }, |e: Event| {
            if err.is_none() {
                err = w.write_event(&e).err();
            }
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(e) = err {
        return Err(e);
    }
    w.flush()?;
    Ok(merger.emitted)
}
