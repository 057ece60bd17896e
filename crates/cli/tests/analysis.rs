//! `show`, `stats` and `convert` through the built binary: exact output bytes,
//! exit statuses and error messages.

use std::collections::{HashMap, HashSet};

use std::process::Output;

mod reading;

use reading::{run, s, tmp};

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

const SMALL: &str = "\
VERSION 20070824
PCIDEV 0020 8086100e b feb40000 c001 0 0 0 0 feb00000 20000 40 0 0 0 0 40000 e1000
MARK 1.000000 start
MAP 1.000001 1 0xfeb40000 0x7f0000001000 0x20000 0x401000 77
R 4 1.000002 1 0xfeb40008 0x80080783 0x401234 77
W 4 1.000003 1 0xfeb40010 0x1c8 0x401240 78
MAP 1.500000 2 0xfea00000 0x7f0000100000 0x1000 0x0 0
W 8 1.500001 2 0xfea00080 0xffffffff00000001 0x0 0
W 8 1.500001 2 0xfea00088 0x2 0x0 0
R 1 2.000000 2 0xfea00020 0x1 0x0 0
UNKNOWN 2.000001 2 0xfea00040 f3,48,a5 0x0 0
MARK 0.000000 Lost 5 events.
CPU:1 [LOST 7 EVENTS]
UNMAP 3.000000 2 0x0 0
";

#[test]
fn show_lists_every_event_kind_exactly() {
    let log = tmp("small.log", SMALL.as_bytes());
    let out = stdout(&run(&["show", "--color", "never", s(&log)]));
    assert_eq!(
        out,
        "\
mmiotrace log, format version 20070824
PCI 00:04.0 8086:100e irq 11 BAR0 0xfeb40000+0x20000 BAR1 io 0xc000+0x40 ROM 0xfeb00000+0x40000 driver e1000
      1.000000  MARK start
      1.000001  MAP #1 0xfeb40000+0x20000 at 0x7f0000001000  pid 77 pc 0x401000
      1.000002  R4  0xfeb40008 => 0x80080783  map 1  pid 77 pc 0x401234
      1.000003  W4  0xfeb40010 <= 0x000001c8  map 1  pid 78 pc 0x401240
      1.500000  MAP #2 0xfea00000+0x1000 at 0x7f0000100000
      1.500001  W8  0xfea00080 <= 0xffffffff00000001  map 2
      1.500001  W8  0xfea00088 <= 0x0000000000000002  map 2
      2.000000  R1  0xfea00020 => 0x01  map 2
      2.000001  ??  0xfea00040 undecoded instruction f3 48 a5  map 2
                LOST 5 events
                LOST 7 events on CPU 1
      3.000000  UNMAP #2
"
    );
}

#[test]
fn show_filters_by_map_address_direction_time_and_pid() {
    let log = tmp("filters.log", SMALL.as_bytes());
    let lines = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["show", s(&log)];
        a.extend_from_slice(args);
        stdout(&run(&a))
            .lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        lines(&["--reads"]),
        [
            "1.000000 MARK start",
            "1.000001 MAP #1",
            "1.000002 R4 0xfeb40008",
            "1.500000 MAP #2",
            "2.000000 R1 0xfea00020",
            "LOST 5 events",
            "LOST 7 events",
            "3.000000 UNMAP #2"
        ]
    );
    assert_eq!(
        lines(&["--map", "2", "--writes"]),
        [
            "1.000000 MARK start",
            "1.500000 MAP #2",
            "1.500001 W8 0xfea00080",
            "1.500001 W8 0xfea00088",
            "LOST 5 events",
            "LOST 7 events",
            "3.000000 UNMAP #2"
        ]
    );
    assert_eq!(
        lines(&["--addr", "0xfea00020..0xfea00088", "--time", "1.5..2"]),
        [
            "1.500000 MAP #2",
            "1.500001 W8 0xfea00080",
            "1.500001 W8 0xfea00088",
            "2.000000 R1 0xfea00020",
            "LOST 5 events",
            "LOST 7 events"
        ]
    );
    assert_eq!(
        lines(&["--pid", "78", "--time", "1..1.000003"]),
        [
            "1.000000 MARK start",
            "1.000003 W4 0xfeb40010",
            "LOST 5 events",
            "LOST 7 events"
        ]
    );
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let log = tmp("colour.log", SMALL.as_bytes());
    assert!(
        !stdout(&run(&["show", s(&log)])).contains('\x1b'),
        "stdout is a pipe: no colour"
    );
    assert!(stdout(&run(&["show", "--color", "always", s(&log)])).contains("\x1b[32mR4"));
}

#[test]
fn stats_json_matches_counts_taken_independently_from_the_real_e1000_log() {
    // Count with nothing but whitespace splitting, independent of our reader.
    let text = std::fs::read_to_string(E1000).unwrap();
    let (mut reads, mut writes) = (0u64, 0u64);
    let mut per: HashMap<String, (u64, u64, HashSet<String>)> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "R" || f[0] == "W" {
            let e = per.entry(f[4].to_string()).or_default();
            if f[0] == "R" {
                reads += 1;
                e.0 += 1;
            } else {
                writes += 1;
                e.1 += 1;
            }
            e.2.insert(f[5].to_string());
        }
    }
    let out = stdout(&run(&["stats", "--json", E1000]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reads"], reads);
    assert_eq!(v["writes"], writes);
    assert_eq!((reads, writes), (6991, 6114));
    assert_eq!(v["unknown"], 0);
    assert_eq!(v["marks"], 3);
    assert_eq!(v["lost"]["events_lost"], 0);
    let addrs = v["addresses"].as_array().unwrap();
    assert_eq!(addrs.len(), per.len());
    for a in addrs {
        let (r, w, vals) = &per[a["addr"].as_str().unwrap()];
        assert_eq!(
            (a["reads"].as_u64().unwrap(), a["writes"].as_u64().unwrap()),
            (*r, *w),
            "{a}"
        );
        assert_eq!(
            a["distinct_values"].as_u64().unwrap(),
            vals.len() as u64,
            "{a}"
        );
        assert_eq!(a["widths"], serde_json::json!([4]));
    }
    // Hottest first: EECD (0x10), then STATUS (0x8).
    assert_eq!(addrs[0]["addr"], "0xfeb40010");
    assert_eq!(addrs[1]["addr"], "0xfeb40008");
    assert_eq!(addrs[1]["first_ns"], 2_435_055_000u64);
    assert_eq!(v["maps"][0]["phys"], "0xfeb40000");
}

#[test]
fn stats_reports_losses_and_per_map_totals() {
    let log = tmp("losses.log", SMALL.as_bytes());
    let out = stdout(&run(&["stats", s(&log)]));
    assert!(
        out.contains("accesses: 5 (2 reads, 3 writes), 1 undecoded, 1 marker, 2 MAP, 1 UNMAP\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "losses: 5 events lost (1 `Lost N events.` marker); 7 events lost by ftrace \
             (1 `CPU:N [LOST M EVENTS]` line)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "      2          0xfea00000      0x1000           1           2  (unmapped)\n"
        ),
        "{out}"
    );
}

#[test]
fn stats_names_each_map_s_file_from_record_s_markers() {
    let log = tmp(
        "named.log",
        b"\
VERSION 20070824
MAP 1.000000 1 0x0 0x7f0000001000 0x1000 0x0 7
MARK 1.000001 map 1 /dev/nvidia0 offset 0x0 length 0x1000
MAP 1.000002 2 0x1000 0x7f0000002000 0x2000 0x0 7
MARK 1.000003 map 2 /dev/nvidiactl offset 0x1000 length 0x2000 (no alias mapping: every access single-stepped)
MAP 1.000004 3 0x0 0x7f0000004000 0x1000 0x0 7
MARK 1.000005 map 3 made by hand
MARK 1.000006 map 3 /dev/x offset 0xzz length 0x1000
W 4 1.000007 1 0x10 0x1 0x401000 7
R 4 1.000008 2 0x1010 0x2 0x401000 7
UNMAP 1.000009 1 0x0 7
MAP 1.000009 4 0x0 0x7f0000008000 0x1000 0x0 7
MARK 1.000009 map 4 continues map 1
",
    );
    let out = stdout(&run(&["stats", s(&log)]));
    assert!(
        out.contains(
            "      1                 0x0      0x1000           0           1  /dev/nvidia0  (unmapped)\n\
             \x20     2              0x1000      0x2000           1           0  \
             /dev/nvidiactl (no alias: single-stepped)\n\
             \x20     3                 0x0      0x1000           0           0\n\
             \x20     4                 0x0      0x1000           0           0  /dev/nvidia0\n"
        ),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["stats", "--json", s(&log)]))).unwrap();
    let files: Vec<_> = (0..4)
        .map(|i| {
            (
                json["maps"][i]["file"].clone(),
                json["maps"][i]["alias"].clone(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("/dev/nvidia0".into(), true.into()),
            ("/dev/nvidiactl".into(), false.into()),
            (serde_json::Value::Null, serde_json::Value::Null),
            ("/dev/nvidia0".into(), true.into()),
        ]
    );
}

#[test]
fn convert_text_to_binary_and_back_is_byte_identical() {
    let bin = std::env::temp_dir().join(format!("e1000-{}.mtb", std::process::id()));
    let txt = std::env::temp_dir().join(format!("e1000-{}.txt", std::process::id()));
    stdout(&run(&["convert", "--to", "binary", E1000, s(&bin)]));
    stdout(&run(&["convert", "--to", "text", s(&bin), s(&txt)]));
    let original = std::fs::read(E1000).unwrap();
    assert_eq!(std::fs::read(&txt).unwrap(), original);
    assert!(std::fs::metadata(&bin).unwrap().len() * 3 <= original.len() as u64);
    // Every command reads the binary form too.
    assert_eq!(
        stdout(&run(&["stats", "--json", s(&bin)])).replace(s(&bin), "X"),
        stdout(&run(&["stats", "--json", E1000]))
            .replace(E1000, "X")
            .replace("\"text\"", "\"binary\"")
    );
}

#[test]
fn malformed_input_names_file_line_and_column_and_exits_2() {
    let log = tmp(
        "bad.log",
        b"VERSION 20070824\nR 4 1.000000 1 0x10 0x1 0x0 0\nR 4 1.000000 1 0x10 0xZZ 0x0 0\n",
    );
    let o = run(&["stats", s(&log)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:3:23: expected value", s(&log))),
        "{err}"
    );

    let o = run(&["stats", "--lenient", s(&log)]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipped 1 malformed line (first: line 3, column 23"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("accesses: 1 (1 reads, 0 writes)"));

    let o = run(&["show", "/nonexistent/log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open /nonexistent/log"));

    let o = run(&["show", "--addr", "5..4", s(&log)]);
    assert_eq!(o.status.code(), Some(2));
}

/// A log of `n` reads after a VERSION line.
fn reads_log(n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("VERSION 20070824\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "R 4 1.{i:06} 1 {:#x} {i:#x} 0x0 0",
            0xfeb40000 + (i % 64) * 4
        );
    }
    s
}

/// What a strict reading command's error about damage ends with.
const HINT: &str = " (--lenient reads on past damage where it can)";

const BAD_LINE: &str = "R 4 9.000000 1 0x10 0xZZ 0x0 0\n";
const BAD_WHY: &str =
    "expected value (lowercase hexadecimal, no leading zeros, at most 16 digits), found `ZZ 0x0 0`";

// Logs are read in batches of 256 events: the counts straddle the batch boundaries.
const AROUND_BATCHES: [usize; 8] = [0, 1, 255, 256, 257, 511, 512, 700];

#[test]
fn every_event_before_a_malformed_line_is_shown_then_it_exits_2() {
    for n in AROUND_BATCHES {
        let good = reads_log(n);
        let good_path = tmp(&format!("before-bad-{n}.log"), good.as_bytes());
        let after = "R 4 9.000001 1 0x10 0x1 0x0 0\n";
        let bad = tmp(
            &format!("bad-after-{n}.log"),
            format!("{good}{BAD_LINE}{after}").as_bytes(),
        );
        let expected = stdout(&run(&["show", "--color", "never", s(&good_path)]));
        let o = run(&["show", "--color", "never", s(&bad)]);
        assert_eq!(o.status.code(), Some(2), "n = {n}");
        assert_eq!(String::from_utf8(o.stdout).unwrap(), expected, "n = {n}");
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            format!("mmio-trace: {}:{}:23: {BAD_WHY}{HINT}\n", s(&bad), n + 2)
        );

        let o = run(&["stats", s(&bad)]);
        assert_eq!(o.status.code(), Some(2), "n = {n}");
        assert!(o.stdout.is_empty());

        // Everything before the bad line is converted and kept.
        let o = run(&["convert", "--to", "text", s(&bad), "-"]);
        assert_eq!(o.status.code(), Some(2), "n = {n}");
        assert_eq!(String::from_utf8(o.stdout).unwrap(), good, "n = {n}");
        let bin = tmp(&format!("bad-after-{n}.bin"), b"");
        let o = run(&["convert", "--to", "binary", s(&bad), s(&bin)]);
        assert_eq!(o.status.code(), Some(2), "n = {n}");
        let back = stdout(&run(&["convert", "--to", "text", s(&bin), "-"]));
        assert_eq!(back, good, "n = {n}");
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            format!("mmio-trace: {}:{}:23: {BAD_WHY}{HINT}\n", s(&bad), n + 2)
        );

        // Lenient: the line is skipped and counted, everything after it still read.
        let o = run(&["show", "--color", "never", "--lenient", s(&bad)]);
        assert_eq!(o.status.code(), Some(0), "n = {n}");
        let out = String::from_utf8(o.stdout).unwrap();
        assert_eq!(
            out,
            format!("{expected}      9.000001  R4  0x00000010 => 0x00000001  map 1\n")
        );
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            format!(
                "mmio-trace: {}: skipped 1 malformed line (first: line {}, column 23: {BAD_WHY})\n",
                s(&bad),
                n + 2
            )
        );
    }
}

#[test]
fn lenient_counts_malformed_lines_in_every_batch() {
    let good = reads_log(1000);
    let mut lines: Vec<&str> = good.lines().collect();
    // Line numbers (1-based) of the bad lines once inserted, in ascending order.
    let at = [3, 258, 259, 600, 1003];
    for &l in &at {
        lines.insert(l - 1, BAD_LINE.trim_end());
    }
    let bad = tmp("lenient-batches.log", (lines.join("\n") + "\n").as_bytes());
    let good_path = tmp("lenient-batches-good.log", good.as_bytes());
    let o = run(&["show", "--lenient", "--color", "never", s(&bad)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        stdout(&run(&["show", "--color", "never", s(&good_path)]))
    );
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!(
            "mmio-trace: {}: skipped 5 malformed lines (first: line 3, column 23: {BAD_WHY})\n",
            s(&bad)
        )
    );
    let json = stdout(&run(&["stats", "--lenient", "--json", s(&bad)]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["reads"], 1000);
    assert_eq!(v["lost"]["malformed_lines_skipped"], 5);
}

#[test]
fn a_damaged_binary_log_shows_what_reading_one_event_at_a_time_gives_then_exits_2() {
    use mmio_trace_format::AnyReader;
    for n in AROUND_BATCHES.into_iter().filter(|&n| n > 0) {
        let text = tmp(&format!("damaged-{n}.log"), reads_log(n).as_bytes());
        let bin = tmp(&format!("damaged-{n}.mtb"), b"");
        stdout(&run(&["convert", "--to", "binary", s(&text), s(&bin)]));
        let bytes = std::fs::read(&bin).unwrap();
        std::fs::write(&bin, &bytes[..bytes.len() - 1]).unwrap();

        // The reference: the events `next_event` gives before its error, as text.
        // What a damaged record costs is the binary format's business; the commands
        // must show exactly what the reader gives.
        let mut reader = AnyReader::open(&bin).unwrap();
        let mut before = Vec::new();
        let err = loop {
            match reader.next_event() {
                Ok(Some(ev)) => mmio_trace_format::text::write_event(&mut before, &ev),
                Ok(None) => panic!("n = {n}: a truncated log read to the end"),
                Err(e) => break e.as_parse().expect("a parse error").to_string(),
            }
        };
        let before = tmp(&format!("damaged-{n}-before.log"), &before);

        let o = run(&["show", "--color", "never", s(&bin)]);
        assert_eq!(o.status.code(), Some(2), "n = {n}");
        assert_eq!(
            String::from_utf8(o.stdout).unwrap(),
            stdout(&run(&["show", "--color", "never", s(&before)])),
            "n = {n}"
        );
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            format!("mmio-trace: {}: {err}{HINT}\n", s(&bin))
        );
    }
}
