//! Event filters shared by `show` and `stats`, and a progress line for long runs.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use mmio_trace_format::{Direction, Event};

use crate::input::{parse_time_range, parse_u64_range};

/// Which events to keep.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only this mapping id (as in the MAP line).
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    pub map: Option<i64>,

    /// Only accesses at physical address ADDR, or in LO..HI (hex with 0x, or decimal;
    /// either end may be left out; HI is inclusive).
    #[arg(long, value_name = "ADDR|LO..HI", value_parser = parse_u64_range)]
    pub addr: Option<(u64, u64)>,

    /// Only reads.
    #[arg(long, conflicts_with = "writes")]
    pub reads: bool,

    /// Only writes.
    #[arg(long)]
    pub writes: bool,

    /// Only events with a timestamp in A..B seconds (inclusive; either end may be
    /// left out). Header lines have no time and are always kept.
    #[arg(long, value_name = "A..B", value_parser = parse_time_range)]
    pub time: Option<(u64, u64)>,

    /// Only events of this process or thread id (the PID column).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

impl FilterArgs {
    /// Whether `ev` passes. Markers, losses, MAP and UNMAP are kept for context
    /// unless a map, time or pid filter excludes them; address and direction filters
    /// apply to accesses only; the header (VERSION, PCIDEV) shows only unfiltered.
    pub fn keep(&self, ev: &Event) -> bool {
        if let (Some((lo, hi)), Some(ts)) = (self.time, ev.ts_ns()) {
            if ts < lo || ts > hi {
                return false;
            }
        }
        if let (Some(p), Some(pid)) = (self.pid, ev.pid()) {
            if p != pid {
                return false;
            }
        }
        match ev {
            Event::Access(a) => {
                if self.map.is_some_and(|m| m != a.map_id) {
                    return false;
                }
                if self.reads && a.dir != Direction::Read
                    || self.writes && a.dir != Direction::Write
                {
                    return false;
                }
                self.addr_ok(a.phys)
            }
            Event::Unknown(u) => {
                !self.reads
                    && !self.writes
                    && self.map.is_none_or(|m| m == u.map_id)
                    && self.addr_ok(u.phys)
            }
            Event::Kernel(k) => {
                self.map.is_none_or(|m| m == k.map_id)
                    && (!self.reads || k.dir == Direction::Read)
                    && (!self.writes || k.dir == Direction::Write)
                    && self.addr.is_none_or(|(lo, hi)| {
                        k.phys <= hi && k.phys.saturating_add(k.len - 1) >= lo
                    })
            }
            Event::Map(m) => self.map.is_none_or(|id| id == m.id),
            Event::Unmap(u) => self.map.is_none_or(|id| id == u.id),
            Event::Version(_) | Event::PciDev(_) | Event::Verbatim(_) => !self.is_active(),
            Event::Mark(_) | Event::LostEvents(_) | Event::CpuLost { .. } => true,
        }
    }

    /// Whether any filter was given.
    pub fn is_active(&self) -> bool {
        self.map.is_some()
            || self.addr.is_some()
            || self.reads
            || self.writes
            || self.time.is_some()
            || self.pid.is_some()
    }

    fn addr_ok(&self, phys: u64) -> bool {
        self.addr.is_none_or(|(lo, hi)| phys >= lo && phys <= hi)
    }
}

/// A one-line progress report on standard error, only when it is a terminal.
pub struct Progress {
    enabled: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    /// A progress line that stays silent unless standard error is a terminal.
    pub fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    /// Called for every event; redraws at most four times a second.
    #[inline]
    pub fn tick(&mut self, events: u64) {
        if self.enabled && events % 65536 == 0 && self.last.elapsed() >= Duration::from_millis(250)
        {
            self.last = Instant::now();
            self.shown = true;
            eprint!("\r{events} events read...");
        }
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}
