//! The recorder side: create the shared memory, drain the rings, compute the watermark.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::{self, monotonic_ns, Clock, TscMap};
use crate::producer::Shm;
use crate::record::Record;
use crate::{state, sys, Header, Layout, BUSY, IDLE, MAGIC, RECORD_SIZE, VERSION};

/// The recorder's end: owns the memfd and its mapping.
pub struct Consumer {
    fd: OwnedFd,
    /// Read end of the liveness pipe (inherited by traced processes).
    live_read: OwnedFd,
    /// Write end of the liveness pipe (close-on-exec, held for the consumer's lifetime:
    /// when it closes, on drop or on the recorder's death, producers see a hang-up).
    live_write: Option<OwnedFd>,
    shm: Shm,
    /// Consumer-private copy of each ring's tail.
    tails: Vec<u64>,
    scratch: Vec<Record>,
    /// The last watermark, in the recording's clock.
    last_watermark: u64,
    /// The last watermark handed out (`CLOCK_MONOTONIC` ns).
    last_watermark_ns: u64,
    /// Per ring: the time of the last event handed out (ns), for the per-ring clamp.
    last_ts: Vec<u64>,
    /// A TSC recording's map to `CLOCK_MONOTONIC`.
    tsc: Option<TscMap>,
    /// Per ring: a non-idle `pending` value and when it was first seen, to notice a
    /// producer killed in the middle of an event (its ring would hold the watermark back).
    stuck: Vec<(u64, u64)>,
    /// When owned rings were last checked for dead owners.
    last_reap: u64,
}

/// What one ring yielded in one [`Consumer::poll`].
#[derive(Clone, Copy, Debug)]
pub struct Drained<'a> {
    /// Ring index.
    pub ring: u32,
    /// Owning process.
    pub pid: u32,
    /// Owning thread.
    pub tid: u32,
    /// Whole events, in the thread's order (their reservation order), timestamps (word
    /// 0 of each event's first record) in `CLOCK_MONOTONIC` ns and non-decreasing.
    pub records: &'a [Record],
}

/// Gives the memfd its size. A file-size limit (`ulimit -f`) applies to a memfd too, and
/// the channel is large (address space; only written pages cost memory): within a soft
/// limit that is too low, the hard one is used for this one call, so that a recording
/// still works where the user limited only the size of the files it writes.
fn size_memfd(fd: &OwnedFd, size: usize) -> io::Result<()> {
    // SAFETY: valid fd.
    let resize = || unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } == 0;
    if resize() {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EFBIG) {
        return Err(err);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } != 0 {
        return Err(err);
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: raising the soft limit up to the hard one is always allowed.
    let ok = lim.rlim_cur < lim.rlim_max
        && unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &raised) } == 0
        && resize();
    // SAFETY: puts back the limit read above.
    unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) };
    if ok {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::StorageFull,
        format!(
            "the file-size limit (ulimit -f: {} bytes) is below the {} MiB of the shared \
             memory (only written pages cost memory); raise it, or set MMIO_TRACE_RINGS lower",
            lim.rlim_max,
            size >> 20
        ),
    ))
}

impl Consumer {
    /// Creates the shared memory: `nrings` rings of `capacity` records (a power of two).
    /// The memfd is created without close-on-exec, so traced programs inherit it.
    pub fn create(nrings: u32, capacity: u32) -> io::Result<Consumer> {
        Consumer::with_layout(Layout::uniform(nrings, capacity))
    }

    /// Creates the shared memory divided as `layout` says (an invalid layout is an
    /// `InvalidInput` error), for a `CLOCK_MONOTONIC` recording. Only the pages rings write
    /// to ever cost memory.
    pub fn with_layout(layout: Layout) -> io::Result<Consumer> {
        Consumer::with_clock(layout, Clock::Monotonic)
    }

    /// As [`Consumer::with_layout`], for a recording stamped with `clock` (a TSC recording
    /// measures the counter's rate first: a few ms).
    pub fn with_clock(layout: Layout, clock: Clock) -> io::Result<Consumer> {
        if !layout.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid ring layout {layout:?}"),
            ));
        }
        let nrings = layout.rings;
        let size = layout.total_size();
        // SAFETY: plain syscall with a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"mmio-trace".as_ptr(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        size_memfd(&fd, size)?;
        // SAFETY: a fresh shared mapping of the whole memfd.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ends = [0i32; 2];
        // SAFETY: a valid out array of two ints.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both ends were just created and are owned by nobody else.
        let (live_read, live_write) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        // The read end is inherited across exec (like the memfd); the write end is not.
        // SAFETY: valid fd.
        if unsafe { libc::fcntl(live_read.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        clock::init();
        let (start_clock, start_ns, clock_mult, tsc) = match clock {
            Clock::Monotonic => {
                let t = monotonic_ns();
                (t, t, 1u64 << 32, None)
            }
            Clock::Tsc => {
                // The tightest of a few samples at each end (a preempted one is wide).
                let tight = || {
                    let (t, n, _) = (0..16)
                        .map(|_| clock::sample())
                        .min_by_key(|s| s.2)
                        .expect("16 samples");
                    (t, n)
                };
                let (t0, n0) = tight();
                sys::sleep_ns(2_000_000);
                let (t1, n1) = tight();
                let mult = clock::rate(t0, n0, t1, n1).unwrap_or(1 << 32);
                let mut map = TscMap::new(t0, n0, mult);
                map.add(t1, n1);
                (t0, n0, mult, Some(map))
            }
        };
        let h = Header {
            magic: MAGIC,
            version: VERSION,
            nrings,
            capacity: layout.capacity,
            record_size: RECORD_SIZE as u32,
            start_ns,
            clock: clock as u32,
            start_clock,
            clock_mult,
            recorder_pid: std::process::id(),
            closed: Default::default(),
            next_map_id: 1.into(),
            slow_steps: 0.into(),
            attached: 0.into(),
            full_waits: 0.into(),
            lost: 0.into(),
            unpaused_steps: 0.into(),
            big_rings: layout.big_rings,
            small_capacity: layout.small_capacity,
            hwm: 0.into(),
            ring_waits: 0.into(),
        };
        // SAFETY: the mapping is at least a page, zero-filled, aligned; rings start FREE (0).
        unsafe { (base as *mut Header).write(h) };
        // SAFETY: initialised just above; the mapping lives as long as self.
        let shm = unsafe { Shm::from_raw(base as *mut u8, size) }.expect("fresh header is valid");
        Ok(Consumer {
            fd,
            live_read,
            live_write: Some(live_write),
            shm,
            tails: vec![0; nrings as usize],
            scratch: Vec::new(),
            last_watermark: 0,
            last_watermark_ns: 0,
            last_ts: vec![0; nrings as usize],
            tsc,
            stuck: vec![(IDLE, 0); nrings as usize],
            last_reap: 0,
        })
    }

    /// The memfd (to pass to traced processes by number).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The read end of the liveness pipe (to pass to traced processes by number).
    pub fn live_fd(&self) -> RawFd {
        self.live_read.as_raw_fd()
    }

    /// Closes this process's write end of the liveness pipe: producers then see the
    /// recorder as gone once no other process holds it (tests stand in for a death).
    pub fn hang_up(&mut self) {
        self.live_write = None;
    }

    /// The shared memory, as a producer in this process would see it (tests, self-tracing).
    pub fn shm(&self) -> Shm {
        self.shm
    }

    /// The header.
    pub fn header(&self) -> &Header {
        self.shm.header()
    }

    /// Tells producers to stop waiting for room (called when the recorder stops draining).
    pub fn close(&self) {
        self.header().closed.store(1, Ordering::SeqCst);
        for i in 0..self.rings_in_use() {
            let c = self.shm.ctl(i);
            c.tail_seq.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&c.tail_seq);
        }
    }

    /// The recording's clock reading `t` in `CLOCK_MONOTONIC` ns.
    pub fn to_ns(&self, t: u64) -> u64 {
        match &self.tsc {
            Some(m) => m.to_ns(t),
            None => t,
        }
    }

    /// Drains every ring once, handing each ring's new whole events to `f` (timestamps in
    /// `CLOCK_MONOTONIC` ns), and returns the watermark: a `CLOCK_MONOTONIC` time such
    /// that every event with a smaller timestamp has been handed out by this or an earlier
    /// poll.
    ///
    /// Why it holds: the clock is read *before* the rings' `pending` words. A ring that is
    /// idle then can only publish events whose timestamps are read after its outermost
    /// writer marks it busy, which is after our read of `pending`, so after our clock
    /// read; a nested writer's timestamp is read after the outer one's. A busy ring with a
    /// known timestamp bounds the watermark by it; one whose timestamp is not yet known
    /// keeps the watermark where it was. The conversion to ns is monotonic, and so is the
    /// per-ring clamp (an event's time raised to its predecessor's), so the bound carries
    /// over to the times handed out.
    pub fn poll(&mut self, mut f: impl FnMut(Drained<'_>)) -> u64 {
        let (t0, t0_ns) = match self.tsc.as_mut() {
            Some(map) => {
                let (pt, pns, width) = clock::sample();
                map.add_sample(pt, pns, width);
                std::sync::atomic::fence(Ordering::SeqCst);
                // Read after the pair: later than every clock read the pair saw.
                (clock::rdtsc_before_loads(), pns)
            }
            None => {
                let t0 = monotonic_ns();
                // The clock read must complete before the `pending` loads below: the
                // vDSO's RDTSC is ordered after earlier instructions (LFENCE; RDTSC) but
                // not before later loads, which could otherwise see an idle ring whose
                // event is stamped before t0.
                std::sync::atomic::fence(Ordering::SeqCst);
                // SAFETY: LFENCE only orders instruction execution; SSE2 is baseline.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    core::arch::asm!("lfence", options(nostack, preserves_flags))
                };
                (t0, t0)
            }
        };
        let mut wm = t0;
        // Loaded after the clock: a ring claimed since is stamped after t0 (see `claim`).
        let shm = self.shm;
        for i in 0..self.rings_in_use() {
            let c = shm.ctl(i);
            let st = c.state.load(Ordering::Acquire);
            if st == state::FREE || st == state::CLAIMING {
                continue;
            }
            let mut pending = c.pending.load(Ordering::SeqCst);
            if pending != IDLE {
                let (v, since) = self.stuck[i];
                if v != pending {
                    self.stuck[i] = (pending, t0_ns);
                } else if t0_ns.saturating_sub(since) > 200_000_000
                    && !sys::process_exists(c.tid.load(Ordering::Relaxed))
                {
                    // Killed inside an event: that event was never published.
                    pending = IDLE;
                }
            }
            match pending {
                IDLE => {}
                BUSY => wm = wm.min(self.last_watermark),
                ts => wm = wm.min(ts),
            }
            let tail = self.tails[i];
            let end = self.read_ring(i, tail);
            if end != tail {
                f(Drained {
                    ring: i as u32,
                    pid: c.pid.load(Ordering::Relaxed),
                    tid: c.tid.load(Ordering::Relaxed),
                    records: &self.scratch,
                });
                self.tails[i] = end;
                c.tail.store(end, Ordering::Release);
                c.tail_seq.fetch_add(1, Ordering::SeqCst);
                if c.waiters.swap(0, Ordering::SeqCst) != 0 {
                    sys::futex_wake(&c.tail_seq);
                }
            }
            if st == state::RETIRED
                && pending == IDLE
                && c.head.load(Ordering::Acquire) == self.tails[i]
            {
                c.state.store(state::FREE, Ordering::Release);
            }
        }
        if t0_ns.saturating_sub(self.last_reap) > 1_000_000_000 {
            self.last_reap = t0_ns;
            self.reap_dead_owners();
        }
        self.last_watermark = self.last_watermark.max(wm);
        if let Some(map) = self.tsc.as_mut() {
            map.forget_before(self.last_watermark);
        }
        self.last_watermark_ns = self.last_watermark_ns.max(self.to_ns(self.last_watermark));
        self.last_watermark_ns
    }

    /// Reads ring `i`'s committed events from record `tail` on into `scratch` (times in
    /// ns, clamped non-decreasing), zeroing word 3 of every slot read (so that it reads
    /// as uncommitted until written again); returns the record after the last one read.
    fn read_ring(&mut self, i: usize, tail: u64) -> u64 {
        self.scratch.clear();
        let data = self.shm.data(i);
        let cap = self.shm.capacity(i);
        let word = |k: u64, w: usize| {
            // SAFETY: masked into ring i's records; word w < 4 of a 32-byte record.
            unsafe { (data.add((k & (cap - 1)) as usize) as *mut u64).add(w) }
        };
        let mut pos = tail;
        while pos - tail < cap {
            // SAFETY: an aligned u64 in the shared mapping (see `word`).
            let w3 = unsafe { AtomicU64::from_ptr(word(pos, 3)) }.load(Ordering::Acquire);
            if w3 == 0 {
                break; // not committed yet
            }
            // SAFETY: the committed first record's other words, written before the commit.
            let mut first = unsafe {
                Record([
                    word(pos, 0).read_volatile(),
                    word(pos, 1).read_volatile(),
                    word(pos, 2).read_volatile(),
                    w3,
                ])
            };
            let n = (1 + first.extra() as u64).min(tail + cap - pos);
            // Raised to the ring's previous time (a handler that interrupted a writer
            // between its stamp and its reservation publishes first, with a later time),
            // and, for TSC times, to the last watermark handed out (the map's last segment
            // moves by a few ns from poll to poll): handed-out times never go back.
            let mut ts = self.to_ns(first.0[0]).max(self.last_ts[i]);
            if self.tsc.is_some() {
                ts = ts.max(self.last_watermark_ns);
            }
            self.last_ts[i] = ts;
            first.0[0] = ts;
            self.scratch.push(first);
            for k in 1..n {
                // SAFETY: the event's data records, written before its commit.
                let r = unsafe { data.add(((pos + k) & (cap - 1)) as usize).read_volatile() };
                self.scratch.push(r);
            }
            for k in 0..n {
                // SAFETY: a slot just read; the producer may not write it before the tail
                // store that follows in `poll`.
                unsafe { AtomicU64::from_ptr(word(pos + k, 3)) }.store(0, Ordering::Relaxed);
            }
            pos += n;
        }
        pos
    }
}

impl Consumer {
    /// Rings ever claimed (the high-water mark): the only ones a poll scans.
    pub fn rings_in_use(&self) -> usize {
        let h = self.shm.header();
        (h.hwm.load(Ordering::SeqCst).min(h.nrings)) as usize
    }

    /// Frees drained rings whose thread no longer exists (threads that ended without
    /// retiring their ring: `pthread_exit` from a thread the tracer did not start, a
    /// process killed by a signal), so that new threads can claim them.
    fn reap_dead_owners(&mut self) {
        for i in 0..self.rings_in_use() {
            let c = self.shm.ctl(i);
            if c.state.load(Ordering::Acquire) == state::OWNED
                && c.pending.load(Ordering::SeqCst) == IDLE
                && c.head.load(Ordering::Acquire) == self.tails[i]
                && !sys::process_exists(c.tid.load(Ordering::Relaxed))
            {
                c.state.store(state::FREE, Ordering::Release);
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
        // SAFETY: the mapping made in create; no Producer from this Consumer may outlive it
        // (documented on `shm`).
        unsafe { libc::munmap(self.shm.base() as *mut libc::c_void, self.shm.len()) };
    }
}
