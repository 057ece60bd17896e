//! Replay: a recorded trace stands in for the device.
//!
//! [`Model`] is what a trace says about each of its device mappings: the read values of
//! every register (offset and width) in order, and each thread's sequence of accesses
//! (what a replayed run is checked against). [`image::build`] lays a model out as one
//! flat block of 64-bit words for shared memory; [`image::Image`] serves it without
//! allocating or locking (the fault path of every replayed process uses it at once) and
//! keeps the divergence state the launcher reports after the run.
//!
//! The crate has no dependencies, so that the preload library can carry the server; the
//! command line feeds [`ModelBuilder`] from any log the readers read.
#![warn(missing_docs)]

pub mod image;
mod model;

pub use model::{Model, ModelBuilder, Reg, SeqEntry, Stream, TraceMap};
