//! Writers for both formats behind one type.

use std::io::{self, Write};

use crate::binary::BinaryWriter;
use crate::event::Event;
use crate::reader::Format;
use crate::strings::StringAccesses;
use crate::text::write_event;

/// Writes the kernel text format through an internal buffer.
pub struct TextWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> TextWriter<W> {
    /// A writer into `out`. It writes no header of its own: the `VERSION` and
    /// `PCIDEV` lines are events like any other.
    pub fn new(out: W) -> Self {
        TextWriter {
            out,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Appends one event.
    pub fn write_event(&mut self, ev: &Event) -> io::Result<()> {
        write_event(&mut self.buf, ev);
        if self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends the accesses of one string instruction's run, one line each (the
    /// kernel's per-element lines).
    pub fn write_strings(&mut self, s: &StringAccesses) -> io::Result<()> {
        for a in s.accesses() {
            self.write_event(&Event::Access(a))?;
        }
        Ok(())
    }

    /// Writes out everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// A writer of either format.
pub enum AnyWriter<W: Write> {
    /// Kernel text.
    Text(TextWriter<W>),
    /// Compact binary.
    Binary(BinaryWriter<W>),
}

impl<W: Write> AnyWriter<W> {
    /// A writer of `format` into `out` (the binary header is written at once).
    pub fn new(out: W, format: Format) -> io::Result<Self> {
        Ok(match format {
            Format::Text => AnyWriter::Text(TextWriter::new(out)),
            Format::Binary => AnyWriter::Binary(BinaryWriter::new(out)?),
        })
    }

    /// Appends one event.
    pub fn write_event(&mut self, ev: &Event) -> io::Result<()> {
        match self {
            AnyWriter::Text(w) => w.write_event(ev),
            AnyWriter::Binary(w) => w.write_event(ev),
        }
    }

    /// Appends one string instruction's run of accesses: one string record in the
    /// binary format, the per-element lines in the text format (readers of either give
    /// back the same accesses).
    pub fn write_strings(&mut self, s: &StringAccesses) -> io::Result<()> {
        match self {
            AnyWriter::Text(w) => w.write_strings(s),
            AnyWriter::Binary(w) => w.write_strings(s),
        }
    }

    /// Writes out everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            AnyWriter::Text(w) => w.flush(),
            AnyWriter::Binary(w) => w.flush(),
        }
    }
}
