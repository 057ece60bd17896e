//! `mmio-trace export`: a log as a Perfetto trace, a VCD waveform or Parquet rows, for
//! the tools people already use (the Perfetto UI, GTKWave and Surfer, DuckDB and Spark).
//!
//! Every exporter streams: it sees each event once, in log order, and keeps only what
//! is bounded by the device (one entry per register, map or thread), never by the
//! number of events. VCD needs its signals declared before the first change, so it
//! reads the log twice (a file, not standard input).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::Context as _;
use mmio_trace_format::{Access, Event};

use crate::analyse::{FilterArgs, Progress};
use crate::input::{BadInput, InputArgs, LogInput};
use crate::regnames::{DbArgs, Names};

/// Export a log for Perfetto (timelines), VCD viewers (waveforms) or Parquet readers
/// (DuckDB, Spark, Trino, DataFusion).
///
/// `--to perfetto`: a protobuf TrackEvent trace for ui.perfetto.dev and
/// trace_processor. One track per thread with every access as an instant named after
/// its register (with `--db`) or its offset in the map, carrying the register,
/// offset, width, value, physical address, map and PC; one counter track per register
/// with its value over time; markers on a track of their own; each map as a slice
/// from MAP to UNMAP on its own track; each run `show --fold` would fold (a polling loop,
/// a bit-banged group) as a slice over its accesses on its thread's track. Past 65536 registers (a frame buffer), further
/// registers' accesses are instants without a counter track (a warning says how many).
///
/// `--to vcd`: one signal per register (named from `--db`, otherwise `off_0xOFFSET`)
/// holding the last value read or written, in one scope per map (`map_ID`), and the
/// markers (and system calls' accesses, undecoded accesses and losses) as a string
/// signal `markers`; time in the log's resolution (1 us for
/// kernel text logs, 1 ns for binary ones). Reads the log twice, so LOG must be a file.
/// Past 65536 registers, further registers are left out (a warning says how many
/// accesses).
///
/// `--to parquet`: one row per event, zstd-compressed, in row groups of
/// `--row-group-rows`. Columns: time_ns (null for loss notices, which have no time);
/// kind (access, unknown, map, unmap, mark, kernel, lost); process (null: logs carry
/// thread ids only); thread (0 in kernel logs); pc; map_id; map_file (the mapped
/// file, where `record` named it); phys; map_offset (phys less the map's base);
/// width (bytes); direction (R or W); value (an access of up to 8 bytes, as logged);
/// value_bytes (the bytes on the bus, little-endian, up to 64); register (with
/// `--db`); marker (a marker's text, or what a system call's access, an undecoded
/// access or a loss notice says); length (a map's length, a system call's bytes, or
/// the events lost). With `--partition-by COLUMN`, OUT is a directory of Hive-style
/// partitions (`OUT/COLUMN=VALUE/part-0.parquet`, without COLUMN inside) that
/// DuckDB's `hive_partitioning` and Spark read as one table.
///
/// `--to replay-model`: the model `mmio-trace replay` serves, as one JSON object (the
/// input a QEMU replay device or a device cloner needs; the `show` filters do not
/// apply). `format` ("mmio-trace replay model"), `version` (1), `source` (LOG), and
/// `maps`, one per device mapping of the log in MAP order (an `mremap`'s continuation
/// folded into the map it continues): `trace_map` (its MAP id), `file` and
/// `file_offset` (null where the log does not name them: kernel logs), `phys`,
/// `length`, `registers` and `threads`. A register is an offset (within the map) and a
/// width: `offset`, `width`, `name` (with `--db`, else null), `reads` (every value read,
/// in order: what replay serves, the last one repeated after), `writes` (every value
/// written, in order), `read_only` (read, never written), `write_only`, `initial`
/// (the value of its first access when that was a read: the register's contents before
/// the driver touched it; else null). A thread is one thread's accesses of the map in
/// order (`trace_thread` and `accesses`: `dir` R, W or UNKNOWN (an access the trace
/// could not name the direction or value of; `width` 0), `width`, `offset`, `value`):
/// the write expectations replay checks. Offsets, values and addresses are hex strings
/// (values are 64-bit).
///
/// Exit status: 0 when the log was exported; 2 for bad arguments or a damaged log
/// (what came before the damage is exported and the output is complete and
/// readable; `--lenient` reads on past damage where it can); 1 when the output
/// cannot be written.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    input: InputArgs,

    #[command(flatten)]
    symbols: crate::symbols::SymbolArgs,

    /// The format to write.
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: ExportFormat,

    /// Where to write: a file (`-` for standard output), or a directory with
    /// `--partition-by` (created; it must not hold files already).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,

    #[command(flatten)]
    filter: FilterArgs,

    #[command(flatten)]
    db: DbArgs,

    /// Parquet only: write a directory with one subdirectory per value of COLUMN.
    #[arg(long, value_enum, value_name = "COLUMN")]
    partition_by: Option<crate::export_parquet::PartitionColumn>,

    /// Parquet only: rows per row group (the unit readers skip or read in parallel,
    /// and what the exporter holds in memory per open file).
    #[arg(long, value_name = "N", default_value_t = 131072,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    row_group_rows: u64,
}

/// What `export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Perfetto protobuf trace (open in ui.perfetto.dev).
    Perfetto,
    /// Value change dump (open in GTKWave or Surfer).
    Vcd,
    /// Apache Parquet (query with DuckDB, Spark, ...).
    Parquet,
    /// The replay model `mmio-trace replay` serves, as JSON (for a QEMU replay device,
    /// a device cloner): see `mmio-trace export --help`.
    ReplayModel,
}

/// How a program counter is shown. The one place where PCs become text, so that
/// symbolization can plug in here.
pub fn pc_text(pid: u32, pc: u64) -> String {
    match crate::symbols::symbol_of(pid, pc) {
        Some(label) => format!("{pc:#x} {label}"),
        None => format!("{pc:#x}"),
    }
}

/// What the exporters know about a mapping, from its MAP line and the marker that
/// `record` writes after it (the mapped file).
#[derive(Clone, Debug, Default)]
pub struct MapInfo {
    /// Physical address of its first byte.
    pub phys: u64,
    /// Length in bytes.
    pub len: u64,
    /// The mapped file, where the log names it.
    pub file: Option<Rc<str>>,
}

/// The mappings live at this point of the log, and register names: what every
/// exporter needs beside the event itself.
pub struct Context {
    /// Live mappings by id; an UNMAP removes its entry, so the table is bounded by
    /// the mappings alive at once, not by the log's length.
    pub maps: HashMap<i64, MapInfo>,
    names: Option<Names>,
    filter: FilterArgs,
}

impl Context {
    fn new(names: Option<Names>, filter: FilterArgs) -> Context {
        Context {
            maps: HashMap::new(),
            names,
            filter,
        }
    }

    /// Updates the mappings and the register databases for `ev`; whether the
    /// filters keep it.
    fn observe(&mut self, ev: &Event) -> bool {
        if let Some(n) = self.names.as_mut() {
            n.observe(ev);
        }
        match ev {
            Event::Map(m) => {
                self.maps.insert(
                    m.id,
                    MapInfo {
                        phys: m.phys,
                        len: m.len,
                        file: None,
                    },
                );
            }
            Event::Mark(m) => {
                if let Some((id, file, _)) = crate::stats::map_mark(&m.text) {
                    if let Some(info) = self.maps.get_mut(&id) {
                        info.file = Some(file.into());
                    }
                } else if let Some((id, from)) = crate::stats::continues_mark(&m.text) {
                    let file = self.maps.get(&from).and_then(|f| f.file.clone());
                    if let Some(info) = self.maps.get_mut(&id) {
                        info.file = file;
                    }
                }
            }
            _ => {}
        }
        self.filter.keep(ev)
    }

    /// Forgets a mapping once its UNMAP was exported.
    fn after(&mut self, ev: &Event) {
        if let Event::Unmap(u) = ev {
            self.maps.remove(&u.id);
        }
    }

    /// The register an access touches, with `--db`.
    pub fn register(&self, a: &Access) -> Option<String> {
        self.names.as_ref().and_then(|n| n.register_name(a))
    }

    /// The access's offset in its mapping, where the MAP line was seen.
    pub fn offset(&self, a: &Access) -> Option<u64> {
        let m = self.maps.get(&a.map_id)?;
        a.phys.checked_sub(m.phys).filter(|&o| o < m.len.max(1))
    }

    /// The mapping `id`, if it is live.
    pub fn map(&self, id: i64) -> Option<&MapInfo> {
        self.maps.get(&id)
    }
}

/// A label for an access's location when no register name is known: its offset in
/// the map (`0x00d8`), or its physical address when the map is unknown.
pub fn location(ctx: &Context, a: &Access) -> String {
    match ctx.offset(a) {
        Some(o) => format!("{o:#06x}"),
        None => format!("phys {:#x}", a.phys),
    }
}

/// An exporter: sees the kept events in log order, then finishes its output.
pub trait Exporter {
    /// Exports one event; `ctx` already knows the mappings up to and including it.
    fn event(&mut self, ev: &Event, ctx: &Context) -> anyhow::Result<()>;
    /// Completes the output (called also after a read error, so that what was
    /// exported before the damage is a complete, readable file).
    fn finish(self: Box<Self>, ctx: &Context) -> anyhow::Result<()>;
}

/// Runs `export`.
pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let bad = |m: String| -> anyhow::Error { BadInput(m).into() };
    if args.to != ExportFormat::Parquet && args.partition_by.is_some() {
        return Err(bad("--partition-by applies to --to parquet only".into()));
    }
    let stdout = args.output == Path::new("-");
    if stdout && args.partition_by.is_some() {
        return Err(bad(
            "--partition-by writes a directory: name it with -o DIR, not `-`".into(),
        ));
    }
    if args.to == ExportFormat::Vcd && args.input.log == Path::new("-") {
        return Err(bad(
            "--to vcd reads the log twice (VCD declares every signal before the first \
             change): give LOG as a file, not `-`"
                .into(),
        ));
    }
    let out_name = args.output.display().to_string();
    if args.to == ExportFormat::ReplayModel && args.partition_by.is_some() {
        return Err(bad("--partition-by applies to --to parquet only".into()));
    }
    if !stdout && same_file(&args.input.log, &args.output) {
        // Creating the output would truncate the log before it is read.
        return Err(bad(format!(
            "{out_name} is the input log: write the export to another file"
        )));
    }
    if args.to == ExportFormat::ReplayModel {
        let out = if stdout {
            None
        } else {
            Some(args.output.as_path())
        };
        crate::replay::export_model(&args.input.log, out, &args.db)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut input = LogInput::open(&args.input)?;
    let mut ctx = Context::new(args.db.load()?, args.filter.clone());

    let exporter: Box<dyn Exporter> = match args.to {
        ExportFormat::Perfetto => Box::new(crate::export_perfetto::Perfetto::new(
            open_output(&args.output)?,
            out_name.clone(),
        )),
        ExportFormat::Vcd => {
            // First pass: which signals there are, and how wide each is.
            let mut scan_ctx = Context::new(args.db.load()?, args.filter.clone());
            let mut scan = crate::export_vcd::Scan::default();
            let mut first = LogInput::open(&args.input)?;
            // A damaged log is reported by the second pass, which exports up to it.
            let _ = first.for_each_event(|ev, _| {
                if scan_ctx.observe(ev) {
                    scan.event(ev, &scan_ctx);
                }
                scan_ctx.after(ev);
                Ok(())
            });
            Box::new(crate::export_vcd::Vcd::new(
                open_output(&args.output)?,
                out_name.clone(),
                scan,
                input.format(),
            )?)
        }
        ExportFormat::Parquet => match args.partition_by {
            None => Box::new(crate::export_parquet::ParquetOut::single(
                open_output(&args.output)?,
                out_name.clone(),
                args.row_group_rows as usize,
            )?),
            Some(col) => Box::new(crate::export_parquet::ParquetOut::partitioned(
                &args.output,
                col,
                args.row_group_rows as usize,
            )?),
        },
        ExportFormat::ReplayModel => unreachable!("written above"),
    };
    let mut exporter = exporter;
    let mut progress = Progress::new();
    crate::symbols::use_symbols(args.symbols);
    let read = input.for_each_event(|ev, seen| {
        crate::symbols::observe_symbols(ev);
        progress.tick(seen);
        if ctx.observe(ev) {
            exporter.event(ev, &ctx)?;
        }
        ctx.after(ev);
        Ok(())
    });
    progress.finish();
    // What came before damage is kept as a complete file, as `convert` does.
    let finished = exporter
        .finish(&ctx)
        .with_context(|| format!("writing {out_name}"));
    read?;
    finished?;
    if let Some(n) = &ctx.names {
        n.report_unbound();
    }
    input.report_skipped();
    Ok(ExitCode::SUCCESS)
}

/// Whether `a` and `b` name the same existing file (also through links).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The output file (readable by its owner only, as traces show what a program did),
/// or standard output for `-`.
fn open_output(path: &Path) -> anyhow::Result<Box<dyn Write + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdout()));
    }
    Ok(Box::new(create_file(path)?))
}

/// Creates (or truncates) `path` with mode 0600.
pub fn create_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}
