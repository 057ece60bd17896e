//! `export --to perfetto`: the protobuf TrackEvent format that the Perfetto UI and
//! trace_processor read.
//!
//! The messages below are the few of Perfetto's `perfetto_trace.proto` this writer
//! needs, declared by hand with their field numbers (no protoc at build time). A
//! trace is `repeated TracePacket packet = 1`, so the file is a run of
//! length-delimited packets, written as they are made: memory holds the interning
//! tables and one track per thread, register and map, never the events.
//!
//! Accesses are also folded as `show --fold` folds them: each folded run (a polling
//! loop, a bit-banged group) becomes a slice over its accesses on its thread's track,
//! `poll STATUS ×51 = 0x1002 … until 0x100a` or `×15 of 5 accesses`, with its
//! repetitions and accesses as annotations.

use std::collections::HashMap;
use std::io::Write;

use mmio_trace_format::{Access, Direction, Event};

use crate::export::{location, pc_text, Context, Exporter};
use crate::fold::{fmt_values, Folded, Folder, Run};

#[derive(Clone, PartialEq, prost::Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "12")]
    interned_data: Option<InternedData>,
    #[prost(uint32, optional, tag = "13")]
    sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CounterDescriptor {}

#[derive(Clone, PartialEq, prost::Message)]
struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    /// `TrackEvent.Type`: SLICE_BEGIN 1, SLICE_END 2, INSTANT 3, COUNTER 4.
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    counter_value: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
    #[prost(uint64, optional, tag = "7")]
    pointer_value: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InternedData {
    #[prost(message, repeated, tag = "2")]
    event_names: Vec<InternedName>,
    #[prost(message, repeated, tag = "3")]
    debug_annotation_names: Vec<InternedName>,
}

/// `EventName` and `DebugAnnotationName` have the same fields.
#[derive(Clone, PartialEq, prost::Message)]
struct InternedName {
    #[prost(uint64, optional, tag = "1")]
    iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const COUNTER: i32 = 4;
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
const SEQUENCE: u32 = 1;

/// Debug annotation names, interned once in the first packet (iid = index + 1).
const ARG_NAMES: [&str; 10] = [
    "register",
    "offset",
    "width",
    "value",
    "phys",
    "map",
    "pc",
    "bytes",
    "repetitions",
    "accesses",
];
const ARG_REGISTER: u64 = 1;
const ARG_OFFSET: u64 = 2;
const ARG_WIDTH: u64 = 3;
const ARG_VALUE: u64 = 4;
const ARG_PHYS: u64 = 5;
const ARG_MAP: u64 = 6;
const ARG_PC: u64 = 7;
const ARG_BYTES: u64 = 8;
const ARG_REPS: u64 = 9;
const ARG_ACCESSES: u64 = 10;

/// Registers given a counter track: beyond, accesses are instants only, so that a
/// trace of a frame buffer (millions of addresses) neither grows the tables without
/// bound nor gives the UI millions of tracks.
pub const MAX_REGISTERS: usize = 65536;

/// Bytes of encoded packets gathered before a write.
const FLUSH_AT: usize = 1 << 16;

/// A register's counter track and interned event names for its reads and writes.
struct Reg {
    counter: u64,
    /// `R NAME`, `W NAME`.
    iids: [u64; 2],
}

/// The Perfetto writer.
pub struct Perfetto {
    out: Box<dyn Write + Send>,
    name: String,
    buf: Vec<u8>,
    next_uuid: u64,
    threads: HashMap<u32, u64>,
    markers: Option<u64>,
    /// Map id to its track and whether a MAP slice is open on it.
    maps: HashMap<i64, (u64, bool)>,
    /// Registers by (map id, physical address) when no database names them.
    regs_at: HashMap<(i64, u64), Reg>,
    /// Registers by (map id, name) with `--db`.
    regs_named: HashMap<(i64, String), Reg>,
    event_names: HashMap<String, u64>,
    /// Names given to counter tracks so far.
    counter_names: std::collections::HashSet<String>,
    /// Event names made since the last packet, for its `interned_data`.
    new_names: Vec<InternedName>,
    last_ts: u64,
    started: bool,
    /// Accesses past [`MAX_REGISTERS`], without a counter.
    uncounted: u64,
    /// Folds the accesses as `show --fold` does: each folded run (a polling loop, a
    /// bit-banged group) also becomes a slice on its thread's track.
    folder: Folder,
    /// Events handed to `folder`.
    seen: u64,
}

impl Perfetto {
    /// A writer of `out`, named `name` in messages.
    pub fn new(out: Box<dyn Write + Send>, name: String) -> Perfetto {
        Perfetto {
            out,
            name,
            buf: Vec::with_capacity(FLUSH_AT * 2),
            next_uuid: 1,
            threads: HashMap::new(),
            markers: None,
            maps: HashMap::new(),
            regs_at: HashMap::new(),
            regs_named: HashMap::new(),
            event_names: HashMap::new(),
            counter_names: Default::default(),
            new_names: Vec::new(),
            last_ts: 0,
            started: false,
            uncounted: 0,
            folder: Folder::default(),
            seen: 0,
        }
    }

    fn uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    fn packet(&mut self, mut p: TracePacket) -> std::io::Result<()> {
        use prost::Message;
        p.trusted_packet_sequence_id = Some(SEQUENCE);
        if !self.started {
            // The first packet clears the sequence's interning state and interns
            // the annotation names every access uses.
            self.started = true;
            let first = TracePacket {
                trusted_packet_sequence_id: Some(SEQUENCE),
                sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
                interned_data: Some(InternedData {
                    event_names: Vec::new(),
                    debug_annotation_names: ARG_NAMES
                        .iter()
                        .enumerate()
                        .map(|(i, n)| InternedName {
                            iid: Some(i as u64 + 1),
                            name: Some((*n).into()),
                        })
                        .collect(),
                }),
                ..Default::default()
            };
            self.buf.push(0x0a);
            first
                .encode_length_delimited(&mut self.buf)
                .expect("a Vec grows");
        }
        if p.track_event.is_some() {
            p.sequence_flags = Some(SEQ_NEEDS_INCREMENTAL_STATE);
            if !self.new_names.is_empty() {
                p.interned_data = Some(InternedData {
                    event_names: std::mem::take(&mut self.new_names),
                    debug_annotation_names: Vec::new(),
                });
            }
        }
        // Field 1 of `Trace`, length-delimited.
        self.buf.push(0x0a);
        p.encode_length_delimited(&mut self.buf)
            .expect("a Vec grows");
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn descriptor(&mut self, uuid: u64, name: String, counter: bool) -> std::io::Result<()> {
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name),
                counter: counter.then_some(CounterDescriptor {}),
            }),
            ..Default::default()
        })
    }

    fn track_event(&mut self, ts: u64, ev: TrackEvent) -> std::io::Result<()> {
        self.packet(TracePacket {
            timestamp: Some(ts),
            track_event: Some(ev),
            ..Default::default()
        })
    }

    fn intern(&mut self, name: String) -> u64 {
        if let Some(&iid) = self.event_names.get(&name) {
            return iid;
        }
        let iid = self.event_names.len() as u64 + 1;
        self.event_names.insert(name.clone(), iid);
        self.new_names.push(InternedName {
            iid: Some(iid),
            name: Some(name),
        });
        iid
    }

    fn thread_track(&mut self, tid: u32) -> std::io::Result<u64> {
        if let Some(&u) = self.threads.get(&tid) {
            return Ok(u);
        }
        let u = self.uuid();
        self.threads.insert(tid, u);
        let name = if tid == 0 {
            "accesses (no thread id in the log)".to_string()
        } else {
            format!("thread {tid}")
        };
        self.descriptor(u, name, false)?;
        Ok(u)
    }

    fn markers_track(&mut self) -> std::io::Result<u64> {
        if let Some(u) = self.markers {
            return Ok(u);
        }
        let u = self.uuid();
        self.markers = Some(u);
        self.descriptor(u, "markers".into(), false)?;
        Ok(u)
    }

    fn map_track(&mut self, id: i64) -> std::io::Result<u64> {
        if let Some(&(u, _)) = self.maps.get(&id) {
            return Ok(u);
        }
        let u = self.uuid();
        self.maps.insert(id, (u, false));
        self.descriptor(u, format!("map {id}"), false)?;
        Ok(u)
    }

    /// The counter track and event names of the register `a` touches.
    /// `None` past [`MAX_REGISTERS`] registers.
    fn reg(
        &mut self,
        a: &Access,
        ctx: &Context,
        name: Option<&str>,
    ) -> std::io::Result<Option<&Reg>> {
        let known = match name {
            Some(n) => self.regs_named.contains_key(&(a.map_id, n.to_string())),
            None => self.regs_at.contains_key(&(a.map_id, a.phys)),
        };
        if !known && self.regs_named.len() + self.regs_at.len() >= MAX_REGISTERS {
            self.uncounted += 1;
            return Ok(None);
        }
        if !known {
            let label = match name {
                Some(n) => n.to_string(),
                None => location(ctx, a),
            };
            let counter = self.uuid();
            // A register's own name where it is the first of that name (a second
            // device's register of the same name says its map), else map and offset.
            let track = match name {
                Some(n) if self.counter_names.insert(n.to_string()) => n.to_string(),
                _ => format!("map {} {label}", a.map_id),
            };
            self.descriptor(counter, track, true)?;
            let reg = Reg {
                counter,
                iids: [
                    self.intern(format!("R {label}")),
                    self.intern(format!("W {label}")),
                ],
            };
            match name {
                Some(n) => {
                    self.regs_named.insert((a.map_id, n.to_string()), reg);
                }
                None => {
                    self.regs_at.insert((a.map_id, a.phys), reg);
                }
            }
        }
        Ok(Some(match name {
            Some(n) => &self.regs_named[&(a.map_id, n.to_string())],
            None => &self.regs_at[&(a.map_id, a.phys)],
        }))
    }

    fn access(&mut self, a: &Access, ctx: &Context) -> std::io::Result<()> {
        let thread = self.thread_track(a.pid)?;
        let name = ctx.register(a);
        let dir = (a.dir == Direction::Write) as usize;
        let (counter, iid) = match self.reg(a, ctx, name.as_deref())? {
            Some(reg) => (Some(reg.counter), Some(reg.iids[dir])),
            None => (None, None),
        };
        // Past the cap: the instant names its register in full, uninterned.
        let plain = iid.is_none().then(|| {
            let label = name.clone().unwrap_or_else(|| location(ctx, a));
            format!("{} {label}", ["R", "W"][dir])
        });
        let mut args = Vec::with_capacity(8);
        if let Some(n) = name {
            args.push(str_arg(ARG_REGISTER, n));
        }
        if let Some(off) = ctx.offset(a) {
            args.push(uint_arg(ARG_OFFSET, off));
        }
        args.push(uint_arg(ARG_WIDTH, a.width as u64));
        if a.width <= 8 {
            args.push(uint_arg(ARG_VALUE, a.value()));
        } else {
            let bytes = a.bytes();
            let hex: String = bytes[..a.width as usize]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            args.push(str_arg(ARG_BYTES, hex));
        }
        args.push(DebugAnnotation {
            name_iid: Some(ARG_PHYS),
            pointer_value: Some(a.phys),
            ..Default::default()
        });
        args.push(DebugAnnotation {
            name_iid: Some(ARG_MAP),
            int_value: Some(a.map_id),
            ..Default::default()
        });
        if a.pc != 0 {
            args.push(str_arg(ARG_PC, pc_text(a.pid, a.pc)));
        }
        self.track_event(
            a.ts_ns,
            TrackEvent {
                debug_annotations: args,
                r#type: Some(INSTANT),
                name_iid: iid,
                name: plain,
                track_uuid: Some(thread),
                ..Default::default()
            },
        )?;
        let Some(counter) = counter else {
            return Ok(());
        };
        self.track_event(
            a.ts_ns,
            TrackEvent {
                r#type: Some(COUNTER),
                track_uuid: Some(counter),
                counter_value: Some(a.value() as i64),
                ..Default::default()
            },
        )
    }

    fn instant(
        &mut self,
        ts: u64,
        track: u64,
        name: String,
        args: Vec<DebugAnnotation>,
    ) -> std::io::Result<()> {
        self.track_event(
            ts,
            TrackEvent {
                debug_annotations: args,
                r#type: Some(INSTANT),
                track_uuid: Some(track),
                name: Some(name),
                ..Default::default()
            },
        )
    }

    /// A folded run as a slice over its accesses on its thread's track: a polling loop
    /// named `poll REGISTER ×N` with the values it read, another run `×N of K accesses`.
    /// Written when the run ends, so after its instants (trace_processor sorts by time).
    fn run_slice(&mut self, run: &Run, ctx: &Context) -> std::io::Result<()> {
        let first = &run.slots[0].first;
        let track = self.thread_track(first.pid)?;
        let name = match run.poll_slot() {
            Some(k) => {
                let s = &run.slots[k];
                let label = ctx
                    .register(&s.first)
                    .unwrap_or_else(|| location(ctx, &s.first));
                format!("poll {label} ×{} {}", run.reps, fmt_values(s))
            }
            None => format!("×{} of {} accesses", run.reps, run.slots.len()),
        };
        let mut args = vec![
            uint_arg(ARG_REPS, run.reps),
            uint_arg(ARG_ACCESSES, run.accesses()),
        ];
        if first.pc != 0 {
            args.push(str_arg(ARG_PC, pc_text(first.pid, first.pc)));
        }
        self.track_event(
            run.first_ts,
            TrackEvent {
                debug_annotations: args,
                r#type: Some(SLICE_BEGIN),
                track_uuid: Some(track),
                name: Some(name),
                ..Default::default()
            },
        )?;
        self.track_event(
            run.last_ts,
            TrackEvent {
                r#type: Some(SLICE_END),
                track_uuid: Some(track),
                ..Default::default()
            },
        )
    }

    /// Feeds `ev` (or, with `None`, the end of the log) to the folder and writes the runs
    /// that ended as slices.
    fn fold(&mut self, ev: Option<&Event>, ctx: &Context) -> std::io::Result<()> {
        let mut runs: Vec<Run> = Vec::new();
        let mut take = |item: Folded<'_>| -> Result<(), std::convert::Infallible> {
            if let Folded::Run(r) = item {
                runs.push(r.clone());
            }
            Ok(())
        };
        let _ = match ev {
            Some(ev) => {
                self.seen += 1;
                self.folder.push(ev, self.seen, &mut take)
            }
            None => self.folder.finish(&mut take),
        };
        for r in &runs {
            self.run_slice(r, ctx)?;
        }
        Ok(())
    }

    fn export(&mut self, ev: &Event, ctx: &Context) -> std::io::Result<()> {
        if let Some(ts) = ev.ts_ns() {
            self.last_ts = self.last_ts.max(ts);
        }
        match ev {
            Event::Access(a) => self.access(a, ctx)?,
            Event::Map(m) => {
                let track = self.map_track(m.id)?;
                if let Some(e) = self.maps.get_mut(&m.id) {
                    if e.1 {
                        // A MAP of an id still mapped: close the first.
                        self.track_event(
                            m.ts_ns,
                            TrackEvent {
                                r#type: Some(SLICE_END),
                                track_uuid: Some(track),
                                ..Default::default()
                            },
                        )?;
                    }
                }
                self.maps.insert(m.id, (track, true));
                let mut args = vec![
                    DebugAnnotation {
                        name_iid: Some(ARG_PHYS),
                        pointer_value: Some(m.phys),
                        ..Default::default()
                    },
                    DebugAnnotation {
                        name_iid: Some(ARG_MAP),
                        int_value: Some(m.id),
                        ..Default::default()
                    },
                ];
                if m.pc != 0 {
                    args.push(str_arg(ARG_PC, pc_text(m.pid, m.pc)));
                }
                self.track_event(
                    m.ts_ns,
                    TrackEvent {
                        debug_annotations: args,
                        r#type: Some(SLICE_BEGIN),
                        track_uuid: Some(track),
                        name: Some(format!("map {} {:#x}+{:#x}", m.id, m.phys, m.len)),
                        ..Default::default()
                    },
                )?;
            }
            Event::Unmap(u) => {
                if let Some(&(track, true)) = self.maps.get(&u.id) {
                    self.maps.insert(u.id, (track, false));
                    self.track_event(
                        u.ts_ns,
                        TrackEvent {
                            r#type: Some(SLICE_END),
                            track_uuid: Some(track),
                            ..Default::default()
                        },
                    )?;
                }
            }
            Event::Mark(m) => {
                let track = self.markers_track()?;
                self.instant(
                    m.ts_ns,
                    track,
                    String::from_utf8_lossy(&m.text).into_owned(),
                    Vec::new(),
                )?;
            }
            Event::Kernel(k) => {
                let track = self.thread_track(k.pid)?;
                let name = String::from_utf8_lossy(&k.text()).into_owned();
                let args = vec![
                    DebugAnnotation {
                        name_iid: Some(ARG_PHYS),
                        pointer_value: Some(k.phys),
                        ..Default::default()
                    },
                    DebugAnnotation {
                        name_iid: Some(ARG_MAP),
                        int_value: Some(k.map_id),
                        ..Default::default()
                    },
                    uint_arg(ARG_WIDTH, k.len),
                ];
                self.instant(k.ts_ns, track, name, args)?;
            }
            Event::Unknown(u) => {
                let track = self.thread_track(u.pid)?;
                let o = u.opcode;
                let name = format!("UNKNOWN {:02x} {:02x} {:02x}", o[0], o[1], o[2]);
                let mut args = vec![
                    DebugAnnotation {
                        name_iid: Some(ARG_PHYS),
                        pointer_value: Some(u.phys),
                        ..Default::default()
                    },
                    DebugAnnotation {
                        name_iid: Some(ARG_MAP),
                        int_value: Some(u.map_id),
                        ..Default::default()
                    },
                ];
                if u.pc != 0 {
                    args.push(str_arg(ARG_PC, pc_text(u.pid, u.pc)));
                }
                self.instant(u.ts_ns, track, name, args)?;
            }
            Event::LostEvents(n) => {
                let track = self.markers_track()?;
                self.instant(self.last_ts, track, format!("Lost {n} events"), Vec::new())?;
            }
            Event::CpuLost { cpu, count } => {
                let track = self.markers_track()?;
                let name = match count {
                    Some(n) => format!("CPU {cpu} lost {n} events"),
                    None => format!("CPU {cpu} lost events"),
                };
                self.instant(self.last_ts, track, name, Vec::new())?;
            }
            Event::Version(_) | Event::PciDev(_) | Event::Verbatim(_) => {}
        }
        Ok(())
    }
}

fn uint_arg(name: u64, v: u64) -> DebugAnnotation {
    DebugAnnotation {
        name_iid: Some(name),
        uint_value: Some(v),
        ..Default::default()
    }
}

fn str_arg(name: u64, v: String) -> DebugAnnotation {
    DebugAnnotation {
        name_iid: Some(name),
        string_value: Some(v),
        ..Default::default()
    }
}

impl Exporter for Perfetto {
    fn event(&mut self, ev: &Event, ctx: &Context) -> anyhow::Result<()> {
        use anyhow::Context as _;
        self.export(ev, ctx)
            .and_then(|()| self.fold(Some(ev), ctx))
            .with_context(|| format!("writing {}", self.name))
    }

    fn finish(mut self: Box<Self>, ctx: &Context) -> anyhow::Result<()> {
        // Runs still open at the end of the log end there.
        self.fold(None, ctx)?;
        // Maps still mapped at the end of the log end there.
        let open: Vec<u64> = self
            .maps
            .values()
            .filter(|(_, open)| *open)
            .map(|(t, _)| *t)
            .collect();
        let end = self.last_ts;
        for track in open {
            self.track_event(
                end,
                TrackEvent {
                    r#type: Some(SLICE_END),
                    track_uuid: Some(track),
                    ..Default::default()
                },
            )?;
        }
        if !self.started {
            // An empty log still gives a valid (empty) trace.
            self.buf.clear();
        }
        let buf = std::mem::take(&mut self.buf);
        self.out.write_all(&buf)?;
        self.out.flush()?;
        if self.uncounted > 0 {
            eprintln!(
                "mmio-trace: warning: {}: more than {MAX_REGISTERS} registers: {} access{} to \
                 the others are instants without a counter track",
                self.name,
                self.uncounted,
                if self.uncounted == 1 { "" } else { "es" }
            );
        }
        Ok(())
    }
}
