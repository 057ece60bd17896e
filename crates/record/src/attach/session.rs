//! The tracer thread of `record --pid`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use mmio_trace_ring::Shm;
use mmio_trace_tracer::rules::Rules;

use super::{Ended, Started, Target};
use crate::Error;

/// Set when the recording is to end; the tracer checks it whenever `waitpid` returns.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the tracer thread to detach.
pub(super) fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// What the tracer thread needs.
pub(super) struct Setup {
    pub target: Target,
    pub rules: Rules,
    pub shm: Shm,
}

// SAFETY: `Shm` is a view of the recorder's shared memory, which lives (in the
// `Consumer`) until after the tracer thread has been joined.
unsafe impl Send for Setup {}

/// Attaches, traces until asked to stop or the process ends, detaches.
pub(super) fn run(setup: Setup, started: Sender<Started>) -> Ended {
    STOP.store(false, Ordering::SeqCst);
    let _ = started.send(Started::Failed(Error::Attach {
        pid: setup.target.pid,
        reason: "attaching is not built yet".into(),
    }));
    Ended {
        exit: None,
        ts_ns: mmio_trace_ring::monotonic_ns(),
        notes: Vec::new(),
    }
}
