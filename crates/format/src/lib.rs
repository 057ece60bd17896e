//! Trace formats of mmio-trace.
//!
//! * the Linux kernel's mmiotrace text format (`VERSION 20070824`), read and written
//!   byte for byte as the kernel writes it, so envytools' `demmio` and every other
//!   consumer of kernel logs reads ours, and we read theirs;
//! * a compact binary format that keeps what text cannot (accesses up to 64 bytes
//!   wide, nanosecond timestamps) and is several times smaller and faster to read.
//!
//! Readers stream in constant memory; [`AnyReader`] detects the format and any
//! gzip/xz/zstd compression from the content. Every reader gives events one at a
//! time (`next_event`, or as an `Iterator`) or, fastest, in batches: `read_batch`
//! fills a reused `Vec<Event>`, parsing accesses in place without moving events around.
//!
//! This crate has no `unsafe` code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binary;
pub mod error;
pub mod event;
pub mod reader;
pub mod strings;
pub mod text;
pub mod writer;

pub use binary::{BinaryReader, BinaryWriter};
pub use error::{Error, ParseError, Stop};
pub use event::*;
pub use reader::{AnyReader, Compression, Format, TextReader};
pub use strings::{Stream, StringAccesses};
pub use writer::{AnyWriter, TextWriter};
