//! Any bytes into the readers: no panic, and every log the strict reader accepts is
//! written back byte for byte (text) or event for event (binary).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmio_trace_format::{AnyReader, BinaryWriter, Event, Format, TextWriter};

fn read(data: &[u8], lenient: bool) -> Option<(Format, Result<Vec<Event>, String>)> {
    let mut r = AnyReader::new(std::io::Cursor::new(data.to_vec())).ok()?;
    r.set_lenient(lenient);
    let format = r.format();
    let mut events = Vec::new();
    for ev in r.by_ref().take(100_000) {
        match ev {
            Ok(e) => events.push(e),
            Err(e) => return Some((format, Err(e.to_string()))),
        }
    }
    Some((format, Ok(events)))
}

fuzz_target!(|data: &[u8]| {
    let _ = read(data, true);
    let Some((format, Ok(events))) = read(data, false) else { return };
    match format {
        Format::Text => {
            let mut w = TextWriter::new(Vec::new());
            for e in &events {
                w.write_event(e).unwrap();
            }
            let out = w.into_inner().unwrap();
            let mut expect = data.to_vec();
            if !expect.is_empty() && !expect.ends_with(b"\n") {
                expect.push(b'\n');
            }
            assert_eq!(out, expect, "text round trip changed the bytes");
        }
        Format::Binary => {
            let mut w = BinaryWriter::new(Vec::new()).unwrap();
            for e in &events {
                w.write_event(e).unwrap();
            }
            let out = w.into_inner().unwrap();
            let (_, again) = read(&out, false).expect("our own output opens");
            assert_eq!(again.expect("our own output parses"), events);
        }
    }
});
