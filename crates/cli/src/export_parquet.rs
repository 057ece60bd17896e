//! `export --to parquet`: one row per event, for DuckDB on a laptop and Spark, Trino
//! or DataFusion on a cluster.
//!
//! Written with the `parquet` crate's column writers: rows are gathered column by
//! column up to `--row-group-rows`, then written as one row group, so memory holds
//! one row group per open file whatever the log's length. With `--partition-by`,
//! one file per value of the column (Hive layout `COLUMN=VALUE/part-0.parquet`,
//! the column itself left out of the files as Hive readers expect); the rows
//! buffered over all partitions are capped too (the fullest is written early).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context as _;
use mmio_trace_format::{Direction, Event};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;

use crate::export::{Context, Exporter};
use crate::input::BadInput;

/// Partitions a directory may hold: each is an open file with a row group buffered.
const MAX_PARTITIONS: usize = 1024;

/// A column `--partition-by` can split on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionColumn {
    /// The event kind (access, mark, map, ...).
    Kind,
    /// The thread id.
    Thread,
    /// The map id.
    MapId,
    /// The mapped file.
    MapFile,
    /// `R` or `W`.
    Direction,
    /// The register name (`--db`).
    Register,
}

/// The columns, in file order: name, Parquet declaration.
const COLUMNS: [(&str, &str); N] = [
    ("time_ns", "OPTIONAL INT64 time_ns"),
    ("kind", "REQUIRED BYTE_ARRAY kind (UTF8)"),
    ("process", "OPTIONAL INT64 process"),
    ("thread", "OPTIONAL INT64 thread"),
    ("pc", "OPTIONAL INT64 pc (INTEGER(64,false))"),
    ("map_id", "OPTIONAL INT64 map_id"),
    ("map_file", "OPTIONAL BYTE_ARRAY map_file (UTF8)"),
    ("phys", "OPTIONAL INT64 phys (INTEGER(64,false))"),
    (
        "map_offset",
        "OPTIONAL INT64 map_offset (INTEGER(64,false))",
    ),
    ("width", "OPTIONAL INT32 width"),
    ("direction", "OPTIONAL BYTE_ARRAY direction (UTF8)"),
    ("value", "OPTIONAL INT64 value (INTEGER(64,false))"),
    ("value_bytes", "OPTIONAL BYTE_ARRAY value_bytes"),
    ("register", "OPTIONAL BYTE_ARRAY register (UTF8)"),
    ("marker", "OPTIONAL BYTE_ARRAY marker (UTF8)"),
    ("length", "OPTIONAL INT64 length (INTEGER(64,false))"),
];

/// Columns in a row.
const N: usize = 16;

impl PartitionColumn {
    fn index(self) -> usize {
        match self {
            PartitionColumn::Kind => 1,
            PartitionColumn::Thread => 3,
            PartitionColumn::MapId => 5,
            PartitionColumn::MapFile => 6,
            PartitionColumn::Direction => 10,
            PartitionColumn::Register => 13,
        }
    }
}

/// One cell. Byte strings are borrowed or held inline where they can be, so that
/// building a row allocates nothing for an access without `--db`.
enum Cell<'a> {
    Null,
    I64(i64),
    I32(i32),
    Static(&'static str),
    /// Up to 8 bytes (a narrow access's value).
    Inline([u8; 8], u8),
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    Shared(Rc<str>),
}

impl Cell<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Cell::Static(s) => Some(s.as_bytes()),
            Cell::Inline(b, n) => Some(&b[..*n as usize]),
            Cell::Borrowed(b) => Some(b),
            Cell::Owned(v) => Some(v),
            Cell::Shared(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The partition directory's value, Hive style.
    fn partition_value(&self) -> String {
        match self {
            Cell::Null => "__HIVE_DEFAULT_PARTITION__".into(),
            Cell::I64(v) => v.to_string(),
            Cell::I32(v) => v.to_string(),
            other => {
                let b = other.bytes().unwrap_or_default();
                let mut s = String::new();
                for &c in b {
                    if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-') {
                        s.push(c as char);
                    } else {
                        s.push_str(&format!("%{c:02X}"));
                    }
                }
                if s.is_empty() {
                    s.push_str("__HIVE_DEFAULT_PARTITION__");
                } else if s.bytes().all(|c| c == b'.') {
                    s = s.replace('.', "%2E");
                }
                s
            }
        }
    }
}

/// A column being gathered: definition levels for every row, values for non-null
/// ones; byte strings end to end in one buffer, cut into values when written.
#[derive(Default)]
struct Col {
    defs: Vec<i16>,
    i64s: Vec<i64>,
    i32s: Vec<i32>,
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Col {
    fn push(&mut self, c: &Cell) {
        match c {
            Cell::Null => self.defs.push(0),
            Cell::I64(v) => {
                self.defs.push(1);
                self.i64s.push(*v);
            }
            Cell::I32(v) => {
                self.defs.push(1);
                self.i32s.push(*v);
            }
            other => {
                self.defs.push(1);
                self.data
                    .extend_from_slice(other.bytes().unwrap_or_default());
                self.ends.push(self.data.len());
            }
        }
    }

    /// The byte-string values, sharing one buffer.
    fn byte_arrays(&mut self) -> Vec<ByteArray> {
        let buf = bytes::Bytes::from(std::mem::take(&mut self.data));
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let v = ByteArray::from(buf.slice(start..end));
                start = end;
                v
            })
            .collect()
    }

    fn clear(&mut self) {
        self.defs.clear();
        self.i64s.clear();
        self.i32s.clear();
        self.data.clear();
        self.ends.clear();
    }
}

/// One Parquet file being written, with the row group it gathers.
struct File {
    writer: SerializedFileWriter<Box<dyn Write + Send>>,
    /// Indices into [`COLUMNS`] of the columns this file has.
    columns: Vec<usize>,
    cols: Vec<Col>,
    rows: usize,
    name: String,
}

impl File {
    fn new(out: Box<dyn Write + Send>, name: String, skip: Option<usize>) -> anyhow::Result<File> {
        let columns: Vec<usize> = (0..COLUMNS.len()).filter(|&i| Some(i) != skip).collect();
        let mut schema = String::from("message mmio_trace_event {\n");
        for &i in &columns {
            schema.push_str(COLUMNS[i].1);
            schema.push_str(";\n");
        }
        schema.push('}');
        let schema =
            parquet::schema::parser::parse_message_type(&schema).expect("the schema is a constant");
        let props = WriterProperties::builder()
            .set_created_by(concat!("mmio-trace ", env!("CARGO_PKG_VERSION")).into())
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1")))
            // Unique per row: a dictionary would only be tried and dropped.
            .set_column_dictionary_enabled("time_ns".into(), false)
            .set_column_dictionary_enabled("value_bytes".into(), false)
            // Counters and data take many values: the dictionary overflows and is
            // dropped after costing a hash per value; zstd finds the repeats anyway.
            .set_column_dictionary_enabled("value".into(), false)
            .set_column_dictionary_enabled("marker".into(), false)
            // Bytes' order says nothing: no min/max to compare for every value.
            .set_column_statistics_enabled("value_bytes".into(), EnabledStatistics::None)
            .set_column_statistics_enabled("marker".into(), EnabledStatistics::None)
            .set_column_encoding(
                "time_ns".into(),
                parquet::basic::Encoding::DELTA_BINARY_PACKED,
            )
            .build();
        let writer = SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props))
            .with_context(|| format!("writing {name}"))?;
        let cols = columns.iter().map(|_| Col::default()).collect();
        Ok(File {
            writer,
            columns,
            cols,
            rows: 0,
            name,
        })
    }

    fn push(&mut self, row: &[Cell<'_>; N]) {
        for (col, &i) in self.cols.iter_mut().zip(&self.columns) {
            col.push(&row[i]);
        }
        self.rows += 1;
    }

    /// Writes the gathered rows as one row group.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let name = self.name.clone();
        (|| -> parquet::errors::Result<()> {
            let mut rg = self.writer.next_row_group()?;
            for (col, &i) in self.cols.iter_mut().zip(&self.columns) {
                let mut w = rg.next_column()?.expect("one writer per schema column");
                let defs = Some(col.defs.as_slice());
                match COLUMNS[i].1.split(' ').nth(1) {
                    Some("INT64") => {
                        w.typed::<Int64Type>().write_batch(&col.i64s, defs, None)?;
                    }
                    Some("INT32") => {
                        w.typed::<Int32Type>().write_batch(&col.i32s, defs, None)?;
                    }
                    _ => {
                        let values = col.byte_arrays();
                        w.typed::<ByteArrayType>()
                            .write_batch(&values, Some(&col.defs), None)?;
                    }
                }
                w.close()?;
            }
            rg.close()?;
            Ok(())
        })()
        .with_context(|| format!("writing {name}"))?;
        for c in &mut self.cols {
            c.clear();
        }
        self.rows = 0;
        Ok(())
    }

    fn close(mut self) -> anyhow::Result<()> {
        self.flush()?;
        let name = self.name.clone();
        let mut out = self
            .writer
            .into_inner()
            .with_context(|| format!("writing {name}"))?;
        out.flush().with_context(|| format!("writing {name}"))?;
        Ok(())
    }
}

/// The Parquet exporter: one file, or a directory of partitions.
pub struct ParquetOut {
    row_group_rows: usize,
    single: Option<File>,
    dir: Option<(PathBuf, PartitionColumn)>,
    parts: HashMap<String, File>,
    buffered: usize,
}

impl ParquetOut {
    fn with(row_group_rows: usize) -> ParquetOut {
        ParquetOut {
            row_group_rows,
            single: None,
            dir: None,
            parts: HashMap::new(),
            buffered: 0,
        }
    }

    /// One file written to `out`.
    pub fn single(
        out: Box<dyn Write + Send>,
        name: String,
        row_group_rows: usize,
    ) -> anyhow::Result<ParquetOut> {
        let mut p = ParquetOut::with(row_group_rows);
        p.single = Some(File::new(out, name, None)?);
        Ok(p)
    }

    /// A directory `dir` of partitions by `col`.
    pub fn partitioned(
        dir: &Path,
        col: PartitionColumn,
        row_group_rows: usize,
    ) -> anyhow::Result<ParquetOut> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BadInput(format!(
                        "{} is not empty: --partition-by writes a new directory",
                        dir.display()
                    ))
                    .into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot use {}", dir.display())))
            }
        }
        let mut p = ParquetOut::with(row_group_rows);
        p.dir = Some((dir.to_path_buf(), col));
        Ok(p)
    }

    /// Fills `row` (all null) with the cells of `ev`; false for events without a row.
    fn row<'a>(row: &mut [Cell<'a>; N], ev: &'a Event, ctx: &Context) -> bool {
        use Cell::*;
        let text = |t: &[u8]| Owned(String::from_utf8_lossy(t).into_owned().into_bytes());
        let u = |v: u64| I64(v as i64);
        let map_file = |id: i64| match ctx.map(id).and_then(|m| m.file.as_ref()) {
            Some(f) => Shared(f.clone()),
            None => Null,
        };
        match ev {
            Event::Access(a) => {
                row[0] = u(a.ts_ns);
                row[1] = Static("access");
                row[3] = I64(a.pid as i64);
                row[4] = u(a.pc);
                row[5] = I64(a.map_id);
                row[6] = map_file(a.map_id);
                row[7] = u(a.phys);
                row[8] = ctx.offset(a).map_or(Null, u);
                row[9] = I32(a.width as i32);
                row[10] = Static(match a.dir {
                    Direction::Read => "R",
                    Direction::Write => "W",
                });
                if a.width <= 8 {
                    row[11] = u(a.value());
                }
                row[12] = match &a.wide {
                    Some(w) => Borrowed(&w[..a.width as usize]),
                    None => Inline(a.value().to_le_bytes(), a.width.min(8)),
                };
                if let Some(n) = ctx.register(a) {
                    row[13] = Owned(n.into_bytes());
                }
            }
            Event::Unknown(x) => {
                row[0] = u(x.ts_ns);
                row[1] = Static("unknown");
                row[3] = I64(x.pid as i64);
                row[4] = u(x.pc);
                row[5] = I64(x.map_id);
                row[6] = map_file(x.map_id);
                row[7] = u(x.phys);
                if let Some(m) = ctx.map(x.map_id) {
                    row[8] = x.phys.checked_sub(m.phys).map_or(Null, u);
                }
                row[12] = Borrowed(&x.opcode);
                let o = x.opcode;
                row[14] = text(format!("opcode {:02x} {:02x} {:02x}", o[0], o[1], o[2]).as_bytes());
            }
            Event::Map(m) => {
                row[0] = u(m.ts_ns);
                row[1] = Static("map");
                row[3] = I64(m.pid as i64);
                row[4] = u(m.pc);
                row[5] = I64(m.id);
                row[7] = u(m.phys);
                row[15] = u(m.len);
            }
            Event::Unmap(m) => {
                row[0] = u(m.ts_ns);
                row[1] = Static("unmap");
                row[3] = I64(m.pid as i64);
                row[4] = u(m.pc);
                row[5] = I64(m.id);
                row[6] = map_file(m.id);
                if let Some(info) = ctx.map(m.id) {
                    row[7] = u(info.phys);
                }
            }
            Event::Mark(m) => {
                row[0] = u(m.ts_ns);
                row[1] = Static("mark");
                row[14] = text(&m.text);
            }
            Event::Kernel(k) => {
                row[0] = u(k.ts_ns);
                row[1] = Static("kernel");
                row[3] = I64(k.pid as i64);
                row[5] = I64(k.map_id);
                row[6] = map_file(k.map_id);
                row[7] = u(k.phys);
                if let Some(m) = ctx.map(k.map_id) {
                    row[8] = k.phys.checked_sub(m.phys).map_or(Null, u);
                }
                row[15] = u(k.len);
                row[10] = Static(match k.dir {
                    Direction::Read => "R",
                    Direction::Write => "W",
                });
                row[14] = text(&k.text());
            }
            Event::LostEvents(n) => {
                row[1] = Static("lost");
                row[15] = u(*n);
                row[14] = text(format!("Lost {n} events.").as_bytes());
            }
            Event::CpuLost { cpu, count } => {
                row[1] = Static("lost");
                row[15] = count.map_or(Null, u);
                let t = match count {
                    Some(n) => format!("CPU {cpu} lost {n} events"),
                    None => format!("CPU {cpu} lost events"),
                };
                row[14] = text(t.as_bytes());
            }
            Event::Version(_) | Event::PciDev(_) | Event::Verbatim(_) => return false,
        }
        true
    }
}

impl Exporter for ParquetOut {
    fn event(&mut self, ev: &Event, ctx: &Context) -> anyhow::Result<()> {
        let mut row: [Cell; N] = [const { Cell::Null }; N];
        if !Self::row(&mut row, ev, ctx) {
            return Ok(());
        }
        if let Some(f) = self.single.as_mut() {
            f.push(&row);
            if f.rows >= self.row_group_rows {
                f.flush()?;
            }
            return Ok(());
        }
        let (dir, col) = self.dir.clone().expect("a file or a directory");
        let value = row[col.index()].partition_value();
        if !self.parts.contains_key(&value) {
            if self.parts.len() >= MAX_PARTITIONS {
                return Err(BadInput(format!(
                    "--partition-by {}: more than {MAX_PARTITIONS} distinct values; \
                     partition by a column with fewer",
                    COLUMNS[col.index()].0
                ))
                .into());
            }
            let file = open_part(&dir, col, &value)?;
            self.parts.insert(value.clone(), file);
        }
        let f = self.parts.get_mut(&value).expect("inserted above");
        f.push(&row);
        self.buffered += 1;
        if f.rows >= self.row_group_rows {
            self.buffered -= f.rows;
            f.flush()?;
        } else if self.buffered >= 2 * self.row_group_rows {
            // Many partitions each short of a row group: write the fullest.
            if let Some(f) = self.parts.values_mut().max_by_key(|f| f.rows) {
                self.buffered -= f.rows;
                f.flush()?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _ctx: &Context) -> anyhow::Result<()> {
        let mut this = *self;
        if let Some(f) = this.single {
            f.close()?;
        }
        if let Some((dir, col)) = &this.dir {
            if this.parts.is_empty() {
                // No rows: one empty partition still gives readers the table's columns
                // (DuckDB and Spark refuse a directory without a file).
                let value = Cell::Null.partition_value();
                let file = open_part(dir, *col, &value)?;
                this.parts.insert(value, file);
            }
        }
        let mut parts: Vec<(String, File)> = this.parts.into_iter().collect();
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, f) in parts {
            f.close()?;
        }
        Ok(())
    }
}

/// The file of partition `value` of `col` in `dir` (Hive layout), created.
fn open_part(dir: &Path, col: PartitionColumn, value: &str) -> anyhow::Result<File> {
    let sub = dir.join(format!("{}={value}", COLUMNS[col.index()].0));
    std::fs::create_dir_all(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
    let path = sub.join("part-0.parquet");
    let out = crate::export::create_file(&path)?;
    let out: Box<dyn Write + Send> = Box::new(std::io::BufWriter::with_capacity(1 << 16, out));
    File::new(out, path.display().to_string(), Some(col.index()))
}
