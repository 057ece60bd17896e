//! Helpers shared by the format's integration tests.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use mmio_trace_format::{BinaryWriter, Event, TextWriter};

/// `events` written as a text log.
pub fn to_text(events: &[Event]) -> Vec<u8> {
    let mut w = TextWriter::new(Vec::new());
    for e in events {
        w.write_event(e).unwrap();
    }
    w.into_inner().unwrap()
}

/// `events` written as a binary log.
pub fn to_binary(events: &[Event]) -> Vec<u8> {
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    for e in events {
        w.write_event(e).unwrap();
    }
    w.into_inner().unwrap()
}
