//! Folding: runs of repeated accesses become one item, in one pass and in memory
//! bounded by what the folded output holds, not by the length of the log.
//!
//! A *run* is a group of `period` accesses (1 to [`MAX_PERIOD`]) whose *shapes* —
//! map, physical address, direction and width — repeat back to back: a status
//! register polled until a bit changes (period 1), or an EEPROM bit-banged through a
//! control register with a flushing read after each write (period 2, 5, ...). Values
//! may differ from one repetition to the next; each slot of the group keeps every
//! value it saw, run-length encoded, so folding hides no value, only repetition.
//! A run needs three accesses at period 1 and two full repetitions otherwise. A
//! pause of 1 ms or more ends a run whose group writes (a replay must sleep
//! there too); polls go on through pauses. Any
//! other event (a MARK, MAP, UNMAP, loss, undecoded or kernel access, an access
//! wider than 8 bytes) ends the run in progress and passes through unchanged.
//!
//! The detection looks ahead 128 accesses: at the oldest access not yet given
//! out, the period whose repetition covers the most of them (the smallest on a
//! tie) starts a run, which then goes on, with no limit and in constant memory,
//! while each access has the shape its position in the group expects. A
//! repetition cut short ends the run; its accesses are looked at again.
//!
//! Used by `show --fold`, `analyze` and `diff`; [`Folder`] is the whole API.

use std::collections::VecDeque;

use mmio_trace_format::{Access, Direction, Event};

/// The longest repeating group that folds.
pub const MAX_PERIOD: usize = 8;

/// A pause this long before an access ends a run with writes in its group: the
/// driver slept between two writes, which a replay must do too. Runs of reads
/// only (waits) go on through pauses: sleeping between polls is how they wait.
pub const SPLIT_GAP_NS: u64 = 1_000_000;

/// Accesses looked at before deciding where a run starts.
const LOOKAHEAD: usize = 16 * MAX_PERIOD;

/// What must repeat for accesses to fold: where and how, not the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Mapping id.
    pub map_id: i64,
    /// Physical address.
    pub phys: u64,
    /// Read or write.
    pub dir: Direction,
    /// Width in bytes.
    pub width: u8,
}

impl Shape {
    /// The shape of `a`.
    pub fn of(a: &Access) -> Shape {
        Shape {
            map_id: a.map_id,
            phys: a.phys,
            dir: a.dir,
            width: a.width,
        }
    }
}

/// One position of a repeating group: its shape, its first access and every value
/// it took, in order, as `(value, consecutive count)`.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The shape every access in this slot has.
    pub shape: Shape,
    /// The slot's first access (time, thread, program counter, value).
    pub first: Access,
    /// Values in order, consecutive equal values merged: `(value, count)`.
    pub values: Vec<(u64, u64)>,
}

impl Slot {
    fn push(&mut self, v: u64) {
        match self.values.last_mut() {
            Some((last, n)) if *last == v => *n += 1,
            _ => self.values.push((v, 1)),
        }
    }
}

/// A folded run: `reps` repetitions of a group of `slots.len()` accesses.
#[derive(Clone, Debug)]
pub struct Run {
    /// The group, in order.
    pub slots: Vec<Slot>,
    /// How many times the whole group repeated (at least 2; at least 3 for one slot).
    pub reps: u64,
    /// Index (1-based, counting every event of the log) of the run's first access.
    pub first_index: u64,
    /// Index of the run's last access.
    pub last_index: u64,
    /// Time of the first access, nanoseconds.
    pub first_ts: u64,
    /// Time of the last access, nanoseconds.
    pub last_ts: u64,
}

impl Run {
    /// Accesses in the run.
    pub fn accesses(&self) -> u64 {
        self.reps * self.slots.len() as u64
    }

    /// Whether this run is a polling loop, and which slot it polled: every write
    /// of the group writes one value throughout, and a read returned one value at
    /// least twice and then another one until the run ended (the value it waited
    /// for), or, in a group of reads only repeated at least 3 times, one value
    /// throughout (a wait that gave up, or that the next access ended).
    pub fn poll_slot(&self) -> Option<usize> {
        let writes = self
            .slots
            .iter()
            .filter(|s| s.shape.dir == Direction::Write)
            .count();
        if self
            .slots
            .iter()
            .any(|s| s.shape.dir == Direction::Write && s.values.len() > 1)
        {
            return None;
        }
        let reads = || {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.shape.dir == Direction::Read)
        };
        reads()
            .find(|(_, s)| s.values.len() == 2 && s.values[0].1 >= 2)
            .or_else(|| reads().find(|(_, s)| s.values.len() == 1 && writes == 0 && self.reps >= 3))
            .map(|(i, _)| i)
    }
}

/// One item of the folded stream.
pub enum Folded<'a> {
    /// An event that did not fold, with its index (1-based) in the log.
    Event(&'a Event, u64),
    /// A run of repeated accesses.
    Run(&'a Run),
}

/// Folds a stream of events; feed it with [`Folder::push`] and end with
/// [`Folder::finish`]. Each call hands the items that became final to `out`, in
/// log order.
pub struct Folder {
    /// Accesses not yet part of a run nor given out: fewer than LOOKAHEAD
    /// between calls, none while a run goes on.
    pending: VecDeque<(Event, u64)>,
    /// The run in progress.
    run: Option<Run>,
    /// Accesses of the run's current, incomplete repetition.
    partial: Vec<(Event, u64)>,
    max_period: usize,
    /// Whether the run in progress has a write in its group.
    run_writes: bool,
    /// Time of the run's last access (in `partial` or merged).
    run_last_ts: u64,
    /// A pause this long ends a run that writes ([`SPLIT_GAP_NS`]; never for
    /// [`Folder::ignoring_time`]).
    split_gap_ns: u64,
}

impl Default for Folder {
    fn default() -> Self {
        Folder::new(MAX_PERIOD)
    }
}

fn shape_of(ev: &Event) -> Shape {
    match ev {
        Event::Access(a) => Shape::of(a),
        _ => unreachable!("only accesses are pending"),
    }
}

fn access(ev: &Event) -> &Access {
    match ev {
        Event::Access(a) => a,
        _ => unreachable!("only accesses are pending"),
    }
}

impl Folder {
    /// A folder for groups of up to `max_period` (1..=[`MAX_PERIOD`]) accesses.
    pub fn new(max_period: usize) -> Folder {
        let max_period = max_period.clamp(1, MAX_PERIOD);
        Folder {
            pending: VecDeque::with_capacity(4 * MAX_PERIOD),
            run: None,
            partial: Vec::with_capacity(MAX_PERIOD),
            max_period,
            run_writes: false,
            run_last_ts: 0,
            split_gap_ns: SPLIT_GAP_NS,
        }
    }

    /// A folder whose runs do not end at pauses: the same accesses fold the same way
    /// whatever the timing (`diff`, which never compares times: a scheduling hiccup in
    /// one recording must not make its runs differ from the other's).
    pub fn ignoring_time() -> Folder {
        Folder {
            split_gap_ns: u64::MAX,
            ..Folder::default()
        }
    }

    /// Feeds the event with index `index` (1-based, in log order).
    pub fn push<E>(
        &mut self,
        ev: &Event,
        index: u64,
        out: &mut impl FnMut(Folded<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match ev {
            Event::Access(a) if a.width <= 8 => self.step((ev.clone(), index), out),
            // Folding needs one value per access; wide ones stay as they are.
            _ => {
                self.flush(out)?;
                out(Folded::Event(ev, index))
            }
        }
    }

    /// Gives out everything still held; call once at the end of the log.
    pub fn finish<E>(
        &mut self,
        out: &mut impl FnMut(Folded<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.flush(out)
    }

    fn flush<E>(&mut self, out: &mut impl FnMut(Folded<'_>) -> Result<(), E>) -> Result<(), E> {
        self.end_run(out)?;
        while !self.pending.is_empty() {
            self.decide(out)?;
            self.end_run(out)?;
        }
        Ok(())
    }

    /// Gives out the run in progress; its cut-short repetition becomes pending.
    /// (While a run goes on nothing is pending: runs start at the oldest pending
    /// access and take every pending access after it.)
    fn end_run<E>(&mut self, out: &mut impl FnMut(Folded<'_>) -> Result<(), E>) -> Result<(), E> {
        if let Some(run) = self.run.take() {
            out(Folded::Run(&run))?;
            for item in self.partial.drain(..).rev() {
                self.pending.push_front(item);
            }
        }
        Ok(())
    }

    fn step<E>(
        &mut self,
        item: (Event, u64),
        out: &mut impl FnMut(Folded<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(run) = &mut self.run {
            let a = access(&item.0);
            let paused =
                self.run_writes && a.ts_ns.saturating_sub(self.run_last_ts) >= self.split_gap_ns;
            if Shape::of(a) == run.slots[self.partial.len()].shape && !paused {
                self.run_last_ts = a.ts_ns;
                self.partial.push(item);
                if self.partial.len() == run.slots.len() {
                    for (slot, (ev, i)) in run.slots.iter_mut().zip(self.partial.drain(..)) {
                        let a = access(&ev);
                        slot.push(a.value);
                        run.last_index = i;
                        run.last_ts = a.ts_ns;
                    }
                    run.reps += 1;
                }
                return Ok(());
            }
            self.end_run(out)?;
        }
        self.pending.push_back(item);
        while self.pending.len() >= LOOKAHEAD {
            self.decide(out)?;
        }
        Ok(())
    }

    /// Decides about the oldest pending access: the start of the run that covers
    /// the most of the pending accesses (the smallest period on a tie), or an
    /// access on its own. Looking ahead rather than taking the first repetition
    /// seen keeps a long group (an EEPROM's five accesses per bit) from being cut
    /// into the short one its tail looks like.
    fn decide<E>(&mut self, out: &mut impl FnMut(Folded<'_>) -> Result<(), E>) -> Result<(), E> {
        let n = self.pending.len();
        // (covered by whole repetitions, period, matched up to the last pending)
        let mut best: Option<(usize, usize, bool)> = None;
        let gap = self.split_gap_ns;
        let paused = |pending: &VecDeque<(Event, u64)>, i: usize| {
            access(&pending[i].0)
                .ts_ns
                .saturating_sub(access(&pending[i - 1].0).ts_ns)
                >= gap
        };
        for p in 1..=self.max_period.min(n / 2) {
            let writes = (0..p).any(|i| access(&self.pending[i].0).dir == Direction::Write);
            if writes && (1..p).any(|i| paused(&self.pending, i)) {
                continue;
            }
            let mut k = 0;
            while p + k < n
                && shape_of(&self.pending[p + k].0) == shape_of(&self.pending[k].0)
                && !(writes && paused(&self.pending, p + k))
            {
                k += 1;
            }
            let reps = (p + k) / p;
            let min = if p == 1 { 3 } else { 2 };
            if reps >= min && best.is_none_or(|(c, _, _)| reps * p > c) {
                best = Some((reps * p, p, p + k == n));
            }
        }
        let Some((covered, p, goes_on)) = best else {
            let (ev, i) = self.pending.pop_front().expect("pending");
            return out(Folded::Event(&ev, i));
        };
        let mut slots: Vec<Slot> = self
            .pending
            .iter()
            .take(p)
            .map(|(ev, _)| {
                let a = access(ev);
                Slot {
                    shape: Shape::of(a),
                    first: a.clone(),
                    values: Vec::new(),
                }
            })
            .collect();
        let (first, last) = (&self.pending[0], &self.pending[covered - 1]);
        let mut run = Run {
            slots: Vec::new(),
            reps: (covered / p) as u64,
            first_index: first.1,
            last_index: last.1,
            first_ts: access(&first.0).ts_ns,
            last_ts: access(&last.0).ts_ns,
        };
        for (k, (ev, _)) in self.pending.drain(..covered).enumerate() {
            slots[k % p].push(access(&ev).value);
        }
        run.slots = slots;
        if !goes_on {
            // It ended within the pending accesses: the rest stays pending.
            return out(Folded::Run(&run));
        }
        // Every pending access matched: the rest (less than one repetition)
        // starts the next repetition, and the run goes on with the next access.
        self.run_writes = run.slots.iter().any(|s| s.shape.dir == Direction::Write);
        self.run_last_ts = self
            .pending
            .back()
            .map_or(run.last_ts, |(ev, _)| access(ev).ts_ns);
        self.partial.extend(self.pending.drain(..));
        self.run = Some(run);
        Ok(())
    }
}

/// `3.2 ms`, `41.0 µs`, `120 ns`, `2.50 s`.
pub fn fmt_duration(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// What changed from `from` to `to`: `bit 3 set`, `bits 0,4 cleared`, `bit 2 set,
/// bit 0 cleared`, or masks when many bits changed.
pub fn describe_change(from: u64, to: u64) -> String {
    let set = to & !from;
    let cleared = from & !to;
    let part = |mask: u64, what: &str| -> Option<String> {
        match mask.count_ones() {
            0 => None,
            1 => Some(format!("bit {} {what}", mask.trailing_zeros())),
            2..=4 => {
                let bits: Vec<String> = (0..64)
                    .filter(|b| mask >> b & 1 == 1)
                    .map(|b| b.to_string())
                    .collect();
                Some(format!("bits {} {what}", bits.join(",")))
            }
            _ => Some(format!("bits {mask:#x} {what}")),
        }
    };
    let parts: Vec<String> = [part(set, "set"), part(cleared, "cleared")]
        .into_iter()
        .flatten()
        .collect();
    parts.join(", ")
}

/// `0x` and the value zero-padded to the access width.
pub fn hex(v: u64, width: u8) -> String {
    format!("0x{:0w$x}", v, w = 2 * width.min(8) as usize)
}

/// A slot's values: `= 0x00` when one value held; `= 0x00 … until 0x08 (bit 3
/// set)` when one value held until a last, different one; otherwise every value in
/// order with its count, `= 0x1c6 ×2, 0x1c7, 0x1c6 ×3`.
pub fn fmt_values(slot: &Slot) -> String {
    let w = slot.shape.width;
    let v = &slot.values;
    match v.as_slice() {
        [(a, _)] => format!("= {}", hex(*a, w)),
        [(a, n), (b, 1)] if *n >= 2 => format!(
            "= {} … until {} ({})",
            hex(*a, w),
            hex(*b, w),
            describe_change(*a, *b)
        ),
        _ => {
            let parts: Vec<String> = v
                .iter()
                .map(|&(x, n)| {
                    if n == 1 {
                        hex(x, w)
                    } else {
                        format!("{} ×{n}", hex(x, w))
                    }
                })
                .collect();
            format!("= {}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(dir: Direction, phys: u64, value: u64, ts: u64) -> Event {
        Event::Access(Access::new(dir, 4, ts, 1, phys, value))
    }

    /// Folds `evs` and returns a compact picture: `E<index>` for a single event,
    /// `Run(p×reps first..last)` for a run.
    fn fold(evs: &[Event]) -> Vec<String> {
        let mut f = Folder::default();
        let mut items = Vec::new();
        let mut out = |it: Folded<'_>| -> Result<(), ()> {
            items.push(match it {
                Folded::Event(_, i) => format!("E{i}"),
                Folded::Run(r) => format!(
                    "Run({}x{} {}..{})",
                    r.slots.len(),
                    r.reps,
                    r.first_index,
                    r.last_index
                ),
            });
            Ok(())
        };
        for (i, ev) in evs.iter().enumerate() {
            f.push(ev, i as u64 + 1, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        items
    }

    use Direction::{Read as R, Write as W};

    #[test]
    fn a_poll_folds_and_keeps_the_changed_value() {
        let mut evs = vec![acc(W, 0, 1, 0)];
        evs.extend((0..10).map(|t| acc(R, 8, 0, t)));
        evs.push(acc(R, 8, 8, 11));
        evs.push(acc(W, 0, 2, 12));
        assert_eq!(fold(&evs), ["E1", "Run(1x11 2..12)", "E13"]);
        let mut f = Folder::default();
        let mut seen = Vec::new();
        let mut out = |it: Folded<'_>| -> Result<(), ()> {
            if let Folded::Run(r) = it {
                seen.push(fmt_values(&r.slots[0]));
                assert_eq!(r.poll_slot(), Some(0));
            }
            Ok(())
        };
        for (i, ev) in evs.iter().enumerate() {
            f.push(ev, i as u64 + 1, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        assert_eq!(seen, ["= 0x00000000 … until 0x00000008 (bit 3 set)"]);
    }

    #[test]
    fn two_reads_do_not_fold_and_a_cut_repetition_is_looked_at_again() {
        assert_eq!(fold(&[acc(R, 8, 0, 0), acc(R, 8, 0, 1)]), ["E1", "E2"]);
        // W a, R s repeated three times, then W a, W b, W b, W b.
        let mut evs = Vec::new();
        for t in 0..3 {
            evs.push(acc(W, 0x10, t, t));
            evs.push(acc(R, 8, 0, t));
        }
        evs.push(acc(W, 0x10, 9, 9));
        evs.extend((0..3).map(|t| acc(W, 0x20, t, 10 + t)));
        assert_eq!(fold(&evs), ["Run(2x3 1..6)", "E7", "Run(1x3 8..10)"]);
    }

    #[test]
    fn other_events_end_a_run_and_pass_through() {
        let mut evs: Vec<Event> = (0..4).map(|t| acc(R, 8, 0, t)).collect();
        evs.push(Event::LostEvents(3));
        evs.extend((0..2).map(|t| acc(R, 8, 0, t)));
        assert_eq!(fold(&evs), ["Run(1x4 1..4)", "E5", "E6", "E7"]);
    }

    #[test]
    fn changes_are_described() {
        assert_eq!(describe_change(0, 8), "bit 3 set");
        assert_eq!(describe_change(0b101, 0b010), "bit 1 set, bits 0,2 cleared");
        assert_eq!(describe_change(0, 0xff), "bits 0xff set");
    }
}
