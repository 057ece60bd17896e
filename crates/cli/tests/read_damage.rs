//! Damaged logs through every reading command (`show`, `stats`, `convert`): a text
//! log cut in the middle of a line, garbage lines, a binary log cut in the middle of a
//! block or record, garbled and unknown binary records, compressed logs cut short;
//! and `convert` onto its own input. Exact output bytes, messages and exit statuses.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use mmio_trace_format::{AnyReader, BinaryWriter, Direction, Event};

mod reading;

use reading::*;

const HINT: &str = " (--lenient reads on past damage where it can)";

/// A user-space log: `n` accesses with pc and thread id, a marker in the middle.
fn user_log(n: usize) -> String {
    let mut s = String::from(
        "VERSION 20070824\nMAP 1.000000 1 0xfeb40000 0x7f0000001000 0x20000 0x401000 77\n",
    );
    for i in 0..n {
        if i == n / 2 {
            let _ = writeln!(s, "MARK 1.{:06} half way", i + 1);
        }
        let _ = writeln!(
            s,
            "{} 4 1.{:06} 1 {:#x} {:#x} 0x4010{:02x} 77",
            if i % 3 == 0 { 'W' } else { 'R' },
            i + 1,
            0xfeb40000 + (i % 16) * 4,
            i * 0x1001,
            i % 256
        );
    }
    s
}

#[test]
fn a_text_log_cut_inside_its_last_line_gives_every_complete_event_and_never_the_cut_one() {
    // Cut inside the thread id `77`: the line would read as thread 7.
    let whole = user_log(600);
    let last = whole.lines().last().unwrap();
    assert!(last.ends_with(" 77"), "{last}");
    let complete = &whole[..whole.len() - last.len() - 1];
    let cut = &whole[..whole.len() - 2];
    let cut_path = tmp("cut.log", cut.as_bytes());
    let good_path = tmp("cut-good.log", complete.as_bytes());
    let line = complete.lines().count() + 1;
    let col = last.len();
    let why = "expected a newline ending the line, found the end of the log (cut short?)";

    // Strict: every complete event, then the error, exit 2.
    let o = run(&["show", s(&cut_path)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&good_path)]));
    assert_eq!(
        text(&o.stderr),
        format!("mmio-trace: {}:{line}:{col}: {why}{HINT}\n", s(&cut_path))
    );

    // Lenient: the same events, the damage reported once, exit 0; in every command.
    let skipped = format!(
        "mmio-trace: {}: skipped 1 malformed line (first: line {line}, column {col}: {why})\n",
        s(&cut_path)
    );
    let o = run(&["show", "--lenient", s(&cut_path)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&good_path)]));
    assert_eq!(text(&o.stderr), skipped);

    let o = run(&["stats", "--lenient", s(&cut_path)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        quiet(&["stats", s(&good_path)]).replace(s(&good_path), s(&cut_path))
    );
    assert!(text(&o.stdout).starts_with(&format!(
        "{} (text): 601 events, 1 header line (VERSION, PCIDEV)\n\
         accesses: 599 (399 reads, 200 writes), 0 undecoded, 1 marker, 1 MAP, 0 UNMAP\n",
        s(&cut_path)
    )));
    assert_eq!(text(&o.stderr), skipped);

    let o = run(&["stats", "--lenient", "--json", s(&cut_path)]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["reads"].as_u64(), v["writes"].as_u64()),
        (Some(399), Some(200))
    );
    assert_eq!(v["lost"]["malformed_lines_skipped"], 1);

    let out = dir().join("cut.out.log");
    let o = run(&[
        "convert",
        "--lenient",
        "--to",
        "text",
        s(&cut_path),
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stderr), skipped);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), complete);
    let bin = dir().join("cut.out.mtb");
    let o = run(&[
        "convert",
        "--lenient",
        "--to",
        "binary",
        s(&cut_path),
        s(&bin),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(quiet(&["convert", "--to", "text", s(&bin), "-"]), complete);
}

#[test]
fn garbage_lines_in_a_text_log_are_skipped_counted_and_located() {
    let good = user_log(300);
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    // A line of zero bytes (a file system's hole), binary junk, and one line longer
    // than the reader buffers (1 MiB).
    lines.insert(10, "\0".repeat(4096));
    lines.insert(100, "\u{1}\u{2}garbage\t\u{7f}".into());
    lines.insert(200, "x".repeat(3 << 20));
    let bad = tmp("garbage.log", (lines.join("\n") + "\n").as_bytes());
    let good_path = tmp("garbage-good.log", good.as_bytes());
    let o = run(&["show", "--lenient", s(&bad)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&good_path)]));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {}: skipped 3 malformed lines (first: line 11, column 1: expected a \
             record keyword (VERSION, PCIDEV, MAP, UNMAP, R, W, UNKNOWN, MARK, CPU:), found \
             `\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0...`)\n",
            s(&bad)
        )
    );
    let o = run(&["stats", "--lenient", "--json", s(&bad)]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lost"]["malformed_lines_skipped"], 3);
    assert_eq!(v["lost"]["stopped_at_damage"], serde_json::Value::Null);
    assert_eq!(v["events"], 302);

    // Strict: the first one stops every command with exit 2.
    for cmd in ["show", "stats"] {
        let o = run(&[cmd, s(&bad)]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        assert!(text(&o.stderr).starts_with(&format!("mmio-trace: {}:11:1: ", s(&bad))));
    }
}

/// The events a strict reader gives one at a time before its error, and the error.
fn before_error(path: &Path) -> (Vec<Event>, mmio_trace_format::ParseError) {
    let mut r = AnyReader::open(path).unwrap();
    let mut events = Vec::new();
    loop {
        match r.next_event() {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => panic!("{}: no damage found", path.display()),
            Err(e) => return (events, e.as_parse().expect("a parse error").clone()),
        }
    }
}

/// What `--lenient` says of a binary log read up to damage `err` with `unread` bytes left.
fn stopped(path: &Path, err: impl std::fmt::Display, unread: u64) -> String {
    format!(
        "mmio-trace: {}: stopped at damage: {err}; the {unread} byte{} from there to the end \
         were not read\n",
        s(path),
        if unread == 1 { "" } else { "s" }
    )
}

fn as_text(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        mmio_trace_format::text::write_event(&mut out, ev);
    }
    out
}

#[test]
fn a_binary_log_cut_anywhere_gives_every_event_before_the_cut_in_every_command() {
    let good = user_log(2000);
    let txt = tmp("bin-cut-src.log", good.as_bytes());
    let bin = dir().join("bin-cut-src.mtb");
    quiet(&["convert", "--to", "binary", s(&txt), s(&bin)]);
    let bytes = std::fs::read(&bin).unwrap();
    // Inside the first block, inside later blocks, one byte short, inside a record
    // with a length (the MARK), and inside the header's MAP record.
    let mark_at = bytes
        .windows(8)
        .position(|w| w == b"half way")
        .expect("the marker record")
        + 2;
    let cuts = [
        1610usize,
        bytes.len() / 2,
        bytes.len() - 1,
        mark_at,
        bytes.len() - 500,
    ];
    for cut in cuts {
        let path = tmp(&format!("bin-cut-{cut}.mtb"), &bytes[..cut]);
        let (events, err) = before_error(&path);
        let unread = cut as u64 - err.column;
        let reference = tmp(&format!("bin-cut-{cut}-before.log"), &as_text(&events));
        let stopped = stopped(&path, &err, unread);

        // Strict: exit 2 after the events before the damage.
        let o = run(&["show", s(&path)]);
        assert_eq!(o.status.code(), Some(2), "cut {cut}");
        assert_eq!(
            text(&o.stdout),
            quiet(&["show", s(&reference)]),
            "cut {cut}"
        );
        assert_eq!(
            text(&o.stderr),
            format!("mmio-trace: {}: {err}{HINT}\n", s(&path))
        );
        let o = run(&["stats", s(&path)]);
        assert_eq!(o.status.code(), Some(2), "cut {cut}");
        assert_eq!(text(&o.stdout), "");

        // Lenient: the same events, the damage reported once, exit 0.
        let o = run(&["show", "--lenient", s(&path)]);
        assert_eq!(o.status.code(), Some(0), "cut {cut}");
        assert_eq!(
            text(&o.stdout),
            quiet(&["show", s(&reference)]),
            "cut {cut}"
        );
        assert_eq!(text(&o.stderr), stopped, "cut {cut}");

        let o = run(&["stats", "--lenient", "--json", s(&path)]);
        assert_eq!(o.status.code(), Some(0), "cut {cut}");
        assert_eq!(text(&o.stderr), stopped, "cut {cut}");
        let mut want: serde_json::Value =
            serde_json::from_str(&quiet(&["stats", "--json", s(&reference)])).unwrap();
        want["file"] = s(&path).into();
        want["format"] = "binary".into();
        want["lost"]["stopped_at_damage"] = err.to_string().into();
        want["lost"]["unread_bytes"] = unread.into();
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got, want, "cut {cut}");
        if cut > bytes.len() / 2 {
            assert!(got["reads"].as_u64().unwrap() > 600, "cut {cut}");
        }

        let out = dir().join(format!("bin-cut-{cut}.out.log"));
        let o = run(&["convert", "--lenient", "--to", "text", s(&path), s(&out)]);
        assert_eq!(o.status.code(), Some(0), "cut {cut}");
        assert_eq!(text(&o.stderr), stopped, "cut {cut}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap()
        );
    }
}

/// A binary log of `events` (through the writer), as bytes.
fn binary(events: &[Event]) -> Vec<u8> {
    let mut w = BinaryWriter::new(Vec::new()).unwrap();
    for ev in events {
        w.write_event(ev).unwrap();
    }
    w.into_inner().unwrap()
}

fn access(dir: Direction, ts_us: u64, phys: u64, value: u64) -> Event {
    let mut a = mmio_trace_format::Access::new(dir, 4, ts_us * 1000, 1, phys, value);
    a.pc = 0x401000 + phys;
    a.pid = 77;
    Event::Access(a)
}

#[test]
fn a_garbled_binary_record_is_skipped_and_an_unknown_one_noted_and_the_rest_read_exactly() {
    let a = access(Direction::Read, 1_000_001, 0xfeb40008, 0x80080783);
    let b = access(Direction::Write, 1_000_002, 0xfeb40010, 0x1c8);
    let c = access(Direction::Read, 1_000_003, 0xfeb40010, 0x1ca);
    let events = [a.clone(), Event::LostEvents(5), b.clone(), c.clone()];
    let bytes = binary(&events);
    // The LOST record (tag 0x86, length 1, count 5) gets a byte too many: its
    // length still says where the next record starts. A record of a kind from a
    // later version (tag 0x9f) follows it.
    let lost = bytes.windows(3).position(|w| w == [0x86, 1, 5]).unwrap();
    let mut damaged = bytes[..lost].to_vec();
    damaged.extend_from_slice(&[0x86, 2, 5, 0xee, 0x9f, 3, 1, 2, 3]);
    damaged.extend_from_slice(&bytes[lost + 3..]);
    let path = tmp("garbled.mtb", &damaged);
    let reference = tmp("garbled-ref.log", &as_text(&[a, b, c]));
    let unknown = format!(
        "mmio-trace: {}: skipped 1 record of a kind this version does not know (first: tag \
         0x9f; written by a later version?)\n",
        s(&path)
    );
    let at = format!("record 2, byte offset {lost}: expected the end of the record, found bytes [86, 02, 05, ee, 9f, 03, 01, 02]");

    let o = run(&["show", "--lenient", s(&path)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&reference)]));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {}: skipped 1 damaged record (first: {at})\n{unknown}",
            s(&path)
        )
    );
    let o = run(&["stats", "--lenient", s(&path)]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).starts_with(&format!(
        "{} (binary): 3 events\naccesses: 3 (2 reads, 1 writes), 0 undecoded, 0 markers, 0 MAP, \
         0 UNMAP\n",
        s(&path)
    )));

    let o = run(&["stats", "--lenient", "--json", s(&path)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lost"]["malformed_lines_skipped"], 1);
    assert_eq!(v["lost"]["unknown_records_skipped"], 1);
    assert_eq!(
        v["lost"]["events_lost"], 0,
        "the garbled LOST record counts nothing"
    );

    // Strict: the garbled record is an error, after the access before it.
    let o = run(&["show", s(&path)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stdout),
        "      1.000001  R4  0xfeb40008 => 0x80080783  map 1  pid 77 pc 0xfef41008\n"
    );
    assert_eq!(
        text(&o.stderr),
        format!("mmio-trace: {}: {at}{HINT}\n", s(&path))
    );

    // Only the unknown record: read in both modes, and said.
    let mut unknown_only = bytes[..lost + 3].to_vec();
    unknown_only.extend_from_slice(&[0x9f, 3, 1, 2, 3]);
    unknown_only.extend_from_slice(&bytes[lost + 3..]);
    let path2 = tmp("unknown.mtb", &unknown_only);
    let reference2 = tmp("unknown-ref.log", &as_text(&events));
    let o = run(&["show", s(&path2)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&reference2)]));
    assert_eq!(text(&o.stderr), unknown.replace(s(&path), s(&path2)));
}

#[test]
fn garbage_inside_a_binary_access_block_ends_the_log_there_and_says_how_much_was_left() {
    let good = user_log(1000);
    let txt = tmp("blockjunk-src.log", good.as_bytes());
    let bin = dir().join("blockjunk-src.mtb");
    quiet(&["convert", "--to", "binary", s(&txt), s(&bin)]);
    let mut bytes = std::fs::read(&bin).unwrap();
    // Zero 16 access tags of the first block past the middle of the file. (The format
    // has no checksum: junk among the data bytes of a block would read as other
    // values.)
    let mut p = 14 + u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let tags = loop {
        assert!(bytes[p] >= 0x80, "a record with a length at {p}");
        let mut len = 0usize;
        let mut q = p + 1;
        for shift in (0..).step_by(7) {
            len |= ((bytes[q] & 0x7f) as usize) << shift;
            q += 1;
            if bytes[q - 1] & 0x80 == 0 {
                break;
            }
        }
        if p > bytes.len() / 2 && matches!(bytes[p], 0x89 | 0x8a) {
            break q + 1;
        }
        p = q + len;
    };
    bytes[tags..tags + 16].fill(0);
    let path = tmp("blockjunk.mtb", &bytes);
    let (events, err) = before_error(&path);
    assert!(
        events.len() > 100 && events.len() < 1000,
        "{}",
        events.len()
    );
    let reference = tmp("blockjunk-ref.log", &as_text(&events));
    let o = run(&["show", "--lenient", s(&path)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&reference)]));
    assert_eq!(
        text(&o.stderr),
        stopped(&path, &err, bytes.len() as u64 - err.column)
    );
    // No access of the damaged block is given.
    let shown = text(&o.stdout).lines().count();
    assert_eq!(shown, events.len());
}

#[test]
fn a_compressed_log_cut_short_reads_up_to_the_cut_with_lenient() {
    let good = user_log(5000);
    let txt = tmp("gz-src.log", good.as_bytes());
    let gz = dir().join("gz-src.log.gz");
    let st = Command::new("gzip")
        .args(["-c", "-n", s(&txt)])
        .stdout(std::fs::File::create(&gz).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&gz).unwrap();
    let cut = tmp("gz-cut.log.gz", &bytes[..bytes.len() / 2]);

    assert_compressed_cut(&run(&["stats", s(&cut)]), &cut, "incomplete deflate stream");

    let o = run(&["show", "--lenient", s(&cut)]);
    assert_eq!(o.status.code(), Some(0));
    let shown = text(&o.stdout);
    let n = shown.lines().count();
    assert!(n > 100 && n < 5000, "{n}");
    // Every line shown is the show of a complete line of the original, in order.
    let whole = quiet(&["show", s(&txt)]);
    assert!(whole.starts_with(&shown));
    let err = text(&o.stderr);
    assert!(
        stopped_in_compressed(&err, &cut, "line ", "incomplete deflate stream")
            && err.lines().count() == 1,
        "{err}"
    );
    let o = run(&["stats", "--lenient", "--json", s(&cut)]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // `show` lists the VERSION line too; the MAP and the marker are events.
    assert_eq!(v["events"].as_u64().unwrap() + 1, n as u64);
    assert!(v["lost"]["stopped_at_damage"]
        .as_str()
        .unwrap()
        .ends_with("(incomplete deflate stream)"));
    assert_eq!(v["lost"]["unread_bytes"], serde_json::Value::Null);
}

/// Asserts the strict error for a compressed log cut short (`why`: the decoder's words):
/// exit 2.
#[track_caller]
fn assert_compressed_cut(o: &std::process::Output, path: &Path, why: &str) {
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {}: the compressed data is damaged or cut short: {why}{HINT}\n",
            s(path)
        )
    );
}

/// Whether `err` is `--lenient`'s report of a compressed log cut short: stopped at
/// `at` (the start of the place), the decoder's `why`.
fn stopped_in_compressed(err: &str, path: &Path, at: &str, why: &str) -> bool {
    err.starts_with(&format!("mmio-trace: {}: stopped at damage: {at}", s(path)))
        && err.ends_with(&format!(
            ": expected more of the log, found data that does not decompress ({why})\n"
        ))
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn convert_onto_its_own_input_through_any_name_replaces_it_whole_or_leaves_it() {
    use std::os::unix::fs::PermissionsExt;
    let good = user_log(3000);
    let src = tmp("inplace-src.log", good.as_bytes());
    let expected_bin = dir().join("inplace-expected.mtb");
    quiet(&["convert", "--to", "binary", s(&src), s(&expected_bin)]);
    // A new output is its owner's only.
    assert_eq!(mode(&expected_bin), 0o600);
    let expected_bin = std::fs::read(&expected_bin).unwrap();

    // The same path.
    let log = tmp("inplace.log", good.as_bytes());
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(quiet(&["convert", "--to", "binary", s(&log), s(&log)]), "");
    assert_eq!(std::fs::read(&log).unwrap(), expected_bin);
    assert_eq!(mode(&log), 0o640, "a log converted in place keeps its mode");
    // Back, through a symbolic link to it.
    let link = dir().join("inplace-link.log");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&log, &link).unwrap();
    assert_eq!(quiet(&["convert", "--to", "text", s(&link), s(&log)]), "");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), good);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // Through a hard link: the named file is replaced, the other name keeps the input.
    let hard = dir().join("inplace-hard.log");
    let _ = std::fs::remove_file(&hard);
    std::fs::hard_link(&log, &hard).unwrap();
    assert_eq!(quiet(&["convert", "--to", "binary", s(&log), s(&hard)]), "");
    assert_eq!(std::fs::read(&hard).unwrap(), expected_bin);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), good);
    // Nothing left beside it.
    let leftovers: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("mmio-trace-convert"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // Standard output appending to the input would read its own output: refused.
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["convert", "--to", "text", s(&log), "-"])
        .stdout(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: standard output is the input log {}: write to another file, or name \
             it as OUT to convert it in place\n",
            s(&log)
        )
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), good);

    // A damaged input is never replaced: strict or lenient, it stays byte for byte.
    let cut = &good[..good.len() - 3];
    let damaged = tmp("inplace-damaged.log", cut.as_bytes());
    let line = good.lines().count();
    let col = good.lines().last().unwrap().len() - 1;
    let why = "expected a newline ending the line, found the end of the log (cut short?)";
    let o = run(&["convert", "--to", "binary", s(&damaged), s(&damaged)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {d}:{line}:{col}: {why}{HINT}; {d} was left as it was\n",
            d = s(&damaged)
        )
    );
    assert_eq!(std::fs::read(&damaged).unwrap(), cut.as_bytes());
    let o = run(&[
        "convert",
        "--lenient",
        "--to",
        "binary",
        s(&damaged),
        s(&damaged),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {d}: skipped 1 malformed line (first: line {line}, column {col}: {why})\n\
             mmio-trace: {d} was left as it was: converting it in place would lose what could \
             not be read; convert it to another file\n",
            d = s(&damaged)
        )
    );
    assert_eq!(std::fs::read(&damaged).unwrap(), cut.as_bytes());
}

#[test]
fn a_tiny_binary_log_cut_inside_its_header_reads_as_empty_with_lenient() {
    let a = access(Direction::Read, 1_000_001, 0xfeb40008, 0x80080783);
    let bytes = binary(&[a]);
    let half = &bytes[..bytes.len() / 2];
    let path = tmp("tiny-half.mtb", half);
    let err = "record 0, byte offset 14: expected the whole schema text, found bytes \
               [6d, 6d, 69, 6f, 2d, 74, 72, 61]";
    let o = run(&["stats", s(&path)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), "");
    assert_eq!(
        text(&o.stderr),
        format!("mmio-trace: {}: {err}{HINT}\n", s(&path))
    );
    let o = run(&["stats", "--lenient", s(&path)]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).starts_with(&format!(
        "{} (binary): 0 events\naccesses: 0 (0 reads, 0 writes)",
        s(&path)
    )));
    assert_eq!(
        text(&o.stderr),
        stopped(&path, err, (half.len() - 14) as u64)
    );
    // Only the magic and part of the version: still a binary log, cut short.
    let path = tmp("tiny-magic.mtb", &bytes[..10]);
    let o = run(&["show", "--lenient", s(&path)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "");
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: {}: stopped at damage: record 0, byte offset 0: expected the binary log \
             header (magic, version, schema length), found bytes [89, 4d, 4d, 54, 0d, 0a, 1a, \
             0a]; the 10 bytes from there to the end were not read\n",
            s(&path)
        )
    );
}

#[test]
fn a_tiny_compressed_log_cut_before_its_first_bytes_decompress_reads_as_empty_with_lenient() {
    let src = tmp(
        "tiny-src.log",
        b"VERSION 20070824\nR 4 1.000000 1 0x10 0x1 0x0 0\n",
    );
    let zst = dir().join("tiny-src.log.zst");
    let st = Command::new("zstd")
        .args(["-q", "-f", "-o", s(&zst), s(&src)])
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&zst).unwrap();
    // The magic and part of the frame header: nothing decompresses.
    let cut = tmp("tiny-cut.log.zst", &bytes[..6]);
    assert_compressed_cut(&run(&["show", s(&cut)]), &cut, "incomplete frame");
    let o = run(&["show", "--lenient", s(&cut)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "");
    let err = text(&o.stderr);
    assert!(
        stopped_in_compressed(&err, &cut, "line 1, ", "incomplete frame"),
        "{err}"
    );
}
