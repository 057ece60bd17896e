//! Ring protocol v3: a same-thread signal handler that writes events, interrupting a writer
//! at every instruction of the publish sequence (single-stepping: TF and a SIGTRAP handler)
//! or at random ones (a 20 µs timer aimed at the writing thread), loses and corrupts
//! nothing: both streams arrive whole, each in its own order, the consumer hands events out
//! in reservation order with non-decreasing times, and no event comes out below a
//! watermark handed out before it. Both clocks; and the TSC clock's conversion to
//! `CLOCK_MONOTONIC`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mmio_trace_ring::clock::invariant_tsc;
use mmio_trace_ring::{monotonic_ns, Clock, Consumer, Kind, Layout, Producer, Record, Shm};

/// One signal-driven test at a time (they share the process's signal dispositions).
static ONE: Mutex<()> = Mutex::new(());

/// The ring the handler writes into (base, len, index) and what it counted.
static SHM_BASE: AtomicUsize = AtomicUsize::new(0);
static SHM_LEN: AtomicUsize = AtomicUsize::new(0);
static RING: AtomicUsize = AtomicUsize::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

const MAIN: u64 = 0;
const NESTED: u64 = 1;
/// Every third main event is a 64-byte access: one record and two data records.
const WIDE_EVERY: u64 = 3;

fn producer() -> Producer {
    // SAFETY: the mapping of the test's live consumer, checked when it was created; the
    // ring was claimed by the writing thread, which is the one the signal interrupts.
    unsafe {
        let shm = Shm::from_checked(
            SHM_BASE.load(Ordering::Relaxed) as *mut u8,
            SHM_LEN.load(Ordering::Relaxed),
        );
        Producer::from_index(shm, RING.load(Ordering::Relaxed) as u32)
    }
}

fn wide_bytes(seq: u64) -> [u8; 64] {
    core::array::from_fn(|k| (seq as u8).wrapping_mul(31).wrapping_add(k as u8))
}

/// One event of `stream` with sequence number `seq`, published through the whole
/// protocol (begin, reserve, fill, commit, end); word 1 keeps its stamp (in the
/// recording's clock) and stream.
#[inline(never)]
fn publish(p: &Producer, stream: u64, seq: u64) {
    let e = p.begin();
    if stream == MAIN && seq % WIDE_EVERY == 0 {
        let b = wide_bytes(seq);
        p.finish(
            e,
            &[
                Record::new(e.ts, e.ts << 1 | stream, seq, 0x1000, 64, Kind::ReadWide),
                Record::data(&b[..32]),
                Record::data(&b[32..]),
            ],
        )
        .unwrap();
    } else {
        let r = Record::new(e.ts, e.ts << 1 | stream, seq, 0x1000, 8, Kind::Read);
        p.finish(e, &[r]).unwrap();
    }
}

extern "C" fn nested_writer(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let n = HANDLED.load(Ordering::Relaxed);
    HANDLED.store(n + 1, Ordering::Relaxed);
    publish(&producer(), NESTED, n);
}

fn install(sig: i32) {
    // SAFETY: a plain SA_SIGINFO handler that only writes events (signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nested_writer as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sets the trap flag: a SIGTRAP after every instruction from here on.
#[inline(always)]
fn trap_flag_on() {
    // SAFETY: sets EFLAGS.TF; the handler installed for SIGTRAP takes every step.
    unsafe { core::arch::asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq") };
}

#[inline(always)]
fn trap_flag_off() {
    // SAFETY: clears EFLAGS.TF.
    unsafe { core::arch::asm!("pushfq", "and qword ptr [rsp], -257", "popfq") };
}

/// What a recording of both streams must look like, checked on everything the consumer
/// handed out (in its order), with the watermark each poll returned before it.
struct Check {
    next: [u64; 2],
    last_ts: u64,
    /// The watermark the previous poll returned: nothing may come out below it.
    wm: u64,
    /// Main events with at least one nested event right after them (the handler ran
    /// between their reservation and their commit, or just after).
    interleaved: u64,
    last_stream: u64,
    /// The first thing found wrong (asserted once the writer is done: the consumer must
    /// outlive it).
    wrong: Option<String>,
}

impl Check {
    fn new() -> Check {
        Check {
            next: [0, 0],
            last_ts: 0,
            wm: 0,
            interleaved: 0,
            last_stream: NESTED,
            wrong: None,
        }
    }

    fn events(&mut self, recs: &[Record], to_ns: impl Fn(u64) -> u64, slack: u64) {
        if self.wrong.is_none() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.check(recs, to_ns, slack)
            }));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.wrong = Some(msg);
            }
        }
    }

    /// `to_ns`: the consumer's conversion of a stamp; `slack`: how far (ns) a time handed
    /// out may be above its converted stamp, or its ring's previous time, whichever is
    /// later (0 for `CLOCK_MONOTONIC`: only the per-ring clamp may move a time).
    fn check(&mut self, recs: &[Record], to_ns: impl Fn(u64) -> u64, slack: u64) {
        let mut k = 0;
        while k < recs.len() {
            let r = recs[k];
            let stream = r.0[1] & 1;
            let floor = to_ns(r.0[1] >> 1).max(self.last_ts);
            assert!(
                r.ts() <= floor + slack,
                "event stamped {} (converted {}) came out at {}, not at most {slack} ns after {floor}: \
                 held back by a watermark that passed it?",
                r.0[1] >> 1,
                to_ns(r.0[1] >> 1),
                r.ts()
            );
            assert!(stream <= NESTED, "not an event of either stream: {r:?}");
            let seq = r.value();
            assert_eq!(
                seq, self.next[stream as usize],
                "stream {stream}: event lost, repeated or out of order (after {:?})",
                self.next
            );
            self.next[stream as usize] += 1;
            assert!(r.ts() >= self.last_ts, "a ring's times went backwards");
            assert!(
                r.ts() >= self.wm,
                "event at {} came out after watermark {}",
                r.ts(),
                self.wm
            );
            self.last_ts = r.ts();
            if stream == MAIN && seq % WIDE_EVERY == 0 {
                assert_eq!(
                    (r.kind(), r.width(), r.extra()),
                    (Some(Kind::ReadWide), 64, 2)
                );
                let mut got = [0u8; 64];
                got[..32].copy_from_slice(&recs[k + 1].bytes());
                got[32..].copy_from_slice(&recs[k + 2].bytes());
                assert_eq!(got, wide_bytes(seq), "main event {seq}: data corrupted");
            } else {
                assert_eq!((r.kind(), r.width(), r.extra()), (Some(Kind::Read), 8, 0));
            }
            if stream == NESTED && self.last_stream == MAIN {
                self.interleaved += 1;
            }
            self.last_stream = stream;
            k += 1 + r.extra();
        }
    }
}

/// Runs `writer` on its own thread against a fresh recording with `clock` while this
/// thread drains; returns the check and the number of main events.
fn run(clock: Clock, sig: i32, writer: fn(&Producer, u32) -> u64) -> (Check, u64) {
    let mut c = Consumer::with_clock(Layout::uniform(2, 1 << 12), clock).unwrap();
    let shm = c.shm();
    SHM_BASE.store(shm.base() as usize, Ordering::Relaxed);
    SHM_LEN.store(shm.len(), Ordering::Relaxed);
    HANDLED.store(0, Ordering::Relaxed);
    install(sig);
    let w = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let p = shm.claim(1, tid).unwrap();
        RING.store(p.index() as usize, Ordering::Relaxed);
        ARMED.store(true, Ordering::SeqCst);
        let n = writer(&p, tid);
        ARMED.store(false, Ordering::SeqCst);
        p.retire();
        n
    });
    let mut check = Check::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let slack = if clock == Clock::Tsc { 1_000 } else { 0 };
    let mut got = Vec::new();
    let mut drain = |c: &mut Consumer, check: &mut Check| {
        got.clear();
        let wm = c.poll(|d| got.extend_from_slice(d.records));
        check.events(&got, |t| c.to_ns(t), slack);
        check.wm = wm;
    };
    while !w.is_finished() {
        assert!(Instant::now() < deadline, "the writer never finished");
        drain(&mut c, &mut check);
    }
    let main = w.join().unwrap();
    drain(&mut c, &mut check);
    // Nothing left behind an uncommitted reservation.
    c.poll(|d| panic!("{} records after the last poll", d.records.len()));
    if let Some(w) = &check.wrong {
        panic!("{w}");
    }
    (check, main)
}

/// The writer single-steps through `MAIN_EVENTS` publishes: the handler writes an event
/// at every instruction boundary of each (and of the loop around it).
fn stepped_writer(p: &Producer, _tid: u32) -> u64 {
    const MAIN_EVENTS: u64 = 20;
    for i in 0..MAIN_EVENTS {
        trap_flag_on();
        publish(p, MAIN, i);
        trap_flag_off();
    }
    MAIN_EVENTS
}

fn single_stepped(clock: Clock) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let (check, main) = run(clock, libc::SIGTRAP, stepped_writer);
    let steps = HANDLED.load(Ordering::Relaxed);
    eprintln!(
        "{clock:?}: {main} publishes single-stepped, {steps} nested events, {} interleavings",
        check.interleaved
    );
    assert_eq!(
        check.next,
        [main, steps],
        "every event of both streams, once"
    );
    // Every instruction of every publish was interrupted (tens per publish at least).
    assert!(
        steps >= main * 20,
        "only {steps} steps for {main} publishes: was the writer single-stepped?"
    );
    // The handler's events land between main events, not only around them.
    assert!(
        check.interleaved >= main - 1,
        "{} interleavings",
        check.interleaved
    );
}

#[test]
fn a_handler_writing_at_every_step_of_a_publish_loses_and_corrupts_nothing_monotonic() {
    single_stepped(Clock::Monotonic);
}

#[test]
fn a_handler_writing_at_every_step_of_a_publish_loses_and_corrupts_nothing_tsc() {
    assert!(
        invariant_tsc(),
        "this CPU has no invariant TSC (CPUID 0x80000007 EDX bit 8): the TSC clock cannot be tested here"
    );
    single_stepped(Clock::Tsc);
}

/// The writer publishes as fast as it can while a 20 µs timer aimed at its thread
/// interrupts it wherever it is.
fn timed_writer(p: &Producer, tid: u32) -> u64 {
    const MAIN_EVENTS: u64 = 150_000;
    // SAFETY: a CLOCK_MONOTONIC timer whose signal goes to this thread only; deleted below.
    let timer = unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGUSR2;
        sev.sigev_notify_thread_id = tid as i32;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer),
            0
        );
        let every = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        assert_eq!(
            libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()),
            0
        );
        timer
    };
    // At least MAIN_EVENTS, and on until the timer has interrupted the writer often
    // enough to mean something (a fast machine publishes MAIN_EVENTS in a few timer
    // periods; a loaded one may run the thread seldom), for at most a minute.
    let until = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while i < MAIN_EVENTS || (HANDLED.load(Ordering::Relaxed) < MIN_TICKS && Instant::now() < until)
    {
        publish(p, MAIN, i);
        i += 1;
    }
    // SAFETY: the timer created above.
    unsafe { libc::timer_delete(timer) };
    i
}

/// Timer signals a timed run waits for.
const MIN_TICKS: u64 = 200;

fn timer_interrupted(clock: Clock) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let (check, main) = run(clock, libc::SIGUSR2, timed_writer);
    let ticks = HANDLED.load(Ordering::Relaxed);
    eprintln!(
        "{clock:?}: {main} publishes, {ticks} timer events, {} interleavings",
        check.interleaved
    );
    assert_eq!(
        check.next,
        [main, ticks],
        "every event of both streams, once"
    );
    assert!(ticks >= MIN_TICKS, "only {ticks} timer signals");
}

#[test]
fn a_timer_handler_writing_events_interrupts_a_busy_writer_losslessly_monotonic() {
    timer_interrupted(Clock::Monotonic);
}

#[test]
fn a_timer_handler_writing_events_interrupts_a_busy_writer_losslessly_tsc() {
    assert!(
        invariant_tsc(),
        "this CPU has no invariant TSC (CPUID 0x80000007 EDX bit 8): the TSC clock cannot be tested here"
    );
    timer_interrupted(Clock::Tsc);
}

/// Events stamped with the TSC come out in `CLOCK_MONOTONIC` ns, within a few µs of
/// `clock_gettime` readings taken on either side of their stamp, and in order.
#[test]
fn tsc_times_come_out_as_monotonic_ns_next_to_clock_gettime() {
    assert!(
        invariant_tsc(),
        "this CPU has no invariant TSC (CPUID 0x80000007 EDX bit 8): the TSC clock cannot be tested here"
    );
    let mut c = Consumer::with_clock(Layout::uniform(1, 1 << 12), Clock::Tsc).unwrap();
    assert_eq!(c.header().clock(), Clock::Tsc);
    let p = c.shm().claim(1, 1).unwrap();
    let mut worst = 0u64;
    let mut last = 0u64;
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        for _ in 0..50 {
            let before = monotonic_ns();
            let e = p.begin();
            let after = monotonic_ns();
            p.finish(
                e,
                &[Record::new(e.ts, before, after, 0x1000, 4, Kind::Read)],
            )
            .unwrap();
        }
        c.poll(|d| {
            for r in d.records {
                let (ts, before, after) = (r.ts(), r.0[1], r.0[2]);
                // Off by how much from the interval the stamp was taken in?
                let off = before.saturating_sub(ts).max(ts.saturating_sub(after));
                worst = worst.max(off);
                assert!(ts >= last, "times went backwards");
                last = ts;
                n += 1;
            }
        });
        std::thread::sleep(Duration::from_micros(700));
    }
    assert!(n > 1000, "{n} events");
    eprintln!("TSC conversion: {n} events, worst distance from clock_gettime {worst} ns");
    assert!(
        worst <= 5_000,
        "a TSC time converted {worst} ns away from clock_gettime"
    );
}

/// The documented order, step by step: a writer that has reserved its slot but not yet
/// committed holds back the events a handler published after it (none is skipped, none
/// read half-written); once it commits, both come out in reservation order, the earlier
/// writer's time raised to its ring's previous one when the handler's was later.
#[test]
fn an_open_reservation_holds_back_later_events_until_it_commits() {
    let mut c = Consumer::with_clock(Layout::uniform(1, 16), Clock::Monotonic).unwrap();
    let shm = c.shm();
    let p = shm.claim(1, 1).unwrap();
    let ctl = shm.ctl(0);
    // The outer writer, by hand: stamp 1000, reserve one slot, fill words 0..3 only.
    let slot = ctl.head.fetch_add(1, Ordering::Relaxed);
    let rec = shm.header().layout().ring_offset(0) + slot as usize * 32;
    // SAFETY: inside the consumer's live mapping (ring 0's slot `slot`, < 16).
    let words = unsafe { shm.base().add(rec) as *mut u64 };
    let outer = Record::new(1000, 7, 70, 0x1000, 4, Kind::Write);
    // SAFETY: the slot reserved just above, inside ring 0.
    unsafe {
        for w in 0..3 {
            words.add(w).write_volatile(outer.0[w]);
        }
    }
    // A handler's event, reserved after it, at a later time.
    p.push(&[Record::new(2000, 8, 80, 0x1000, 4, Kind::Read)])
        .unwrap();
    let mut got = Vec::new();
    c.poll(|d| got.extend_from_slice(d.records));
    assert_eq!(got, vec![], "read past an open reservation");
    // The outer writer commits: word 3, last.
    // SAFETY: as above.
    unsafe { AtomicU64::from_ptr(words.add(3)) }.store(outer.0[3], Ordering::Release);
    c.poll(|d| got.extend_from_slice(d.records));
    let seen: Vec<(u64, u64, u64)> = got.iter().map(|r| (r.0[1], r.value(), r.ts())).collect();
    assert_eq!(seen, vec![(7, 70, 1000), (8, 80, 2000)]);
    // Reversed times (the handler ran between the outer stamp and its reservation): the
    // later-reserved event keeps the ring's times non-decreasing.
    p.push(&[Record::new(5000, 9, 90, 0x1000, 4, Kind::Read)])
        .unwrap();
    p.push(&[Record::new(4000, 10, 100, 0x1000, 4, Kind::Write)])
        .unwrap();
    got.clear();
    c.poll(|d| got.extend_from_slice(d.records));
    let seen: Vec<(u64, u64, u64)> = got.iter().map(|r| (r.0[1], r.value(), r.ts())).collect();
    assert_eq!(seen, vec![(9, 90, 5000), (10, 100, 5000)]);
}
