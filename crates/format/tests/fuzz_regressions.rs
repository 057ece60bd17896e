//! Every input the fuzzer (`fuzz/fuzz_targets/reader.rs`) ever found a fault with,
//! checked against the same property: no panic, and whatever the strict reader
//! accepts is written back byte for byte (text) or event for event (binary).

use mmio_trace_format::*;

fn check(data: &[u8]) {
    for lenient in [true, false] {
        let Ok(mut r) = AnyReader::new(std::io::Cursor::new(data.to_vec())) else {
            return;
        };
        r.set_lenient(lenient);
        let format = r.format();
        let events: Result<Vec<Event>, Error> = r.by_ref().take(100_000).collect();
        let (Ok(events), false) = (events, lenient) else {
            continue;
        };
        match format {
            Format::Text => {
                let mut w = TextWriter::new(Vec::new());
                events.iter().for_each(|e| w.write_event(e).unwrap());
                let mut expect = data.to_vec();
                if !expect.is_empty() && !expect.ends_with(b"\n") {
                    expect.push(b'\n');
                }
                assert_eq!(w.into_inner().unwrap(), expect);
            }
            Format::Binary => {
                let mut w = BinaryWriter::new(Vec::new()).unwrap();
                events.iter().for_each(|e| w.write_event(e).unwrap());
                let out = w.into_inner().unwrap();
                let again: Vec<Event> = AnyReader::new(std::io::Cursor::new(out))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(again, events);
            }
        }
    }
}

#[test]
fn fuzzer_findings_stay_fixed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "the regression corpus is missing");
}
