//! QA of the offline commands (`diff`, `analyze`, `show --fold`, `export`) through the
//! built binary, with the inputs a hostile user gives them: standard input named
//! twice, logs with only markers, huge values.

mod reading;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use reading::{s, text, tmp};

/// Runs `mmio-trace ARGS` with `input` on its standard input.
fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    // A command that refuses its arguments may exit before reading: ignore EPIPE.
    let _ = stdin.write_all(input);
    drop(stdin);
    c.wait_with_output().unwrap()
}

const LOG: &str = "VERSION 20070824\n\
MAP 1.000000 1 0xfeb40000 0xffffd444c0400000 0x20000 0x0 0\n\
R 4 1.000001 1 0xfeb40008 0x80080783 0x0 0\n\
W 4 1.000002 1 0xfeb400d8 0xffffffff 0x0 0\n";

#[test]
fn diff_of_standard_input_against_itself_is_refused_not_reported_different() {
    // Standard input can be read once: `diff - -` would compare the log with an
    // empty one and say they differ (exit 1).
    let o = run_stdin(&["diff", "-", "-"], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(2), "stdout: {}", text(&o.stdout));
    assert_eq!(text(&o.stdout), "");
    assert!(
        text(&o.stderr).contains("cannot both be `-`"),
        "{}",
        text(&o.stderr)
    );
    // One side from standard input is fine: a log equals itself.
    let a = tmp("stdin-a.log", LOG.as_bytes());
    let o = run_stdin(&["diff", s(&a), "-"], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run_stdin(&["diff", "-", s(&a)], LOG.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);

#[test]
fn analyze_refuses_a_script_written_over_its_input_log() {
    let log = std::fs::read(E1000).unwrap();
    let copy = tmp("script-over-log.log", &log);
    let link = reading::dir().join("script-over-log-link.log");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    for (opt, out) in [
        ("--script", &copy),
        ("--script-json", &copy),
        ("--script", &link),
        ("--script-json", &link),
    ] {
        let o = reading::run(&["analyze", s(&copy), opt, s(out)]);
        assert_eq!(o.status.code(), Some(2), "{opt} {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("is the input log"),
            "{}",
            text(&o.stderr)
        );
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            log,
            "{opt}: the log is intact"
        );
    }
    // The same file for both scripts: one would silently replace the other.
    let both = tmp("both.txt", b"");
    let o = reading::run(&[
        "analyze",
        s(&copy),
        "--script",
        s(&both),
        "--script-json",
        s(&both),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    // Distinct files: both written.
    let t = reading::dir().join("init.txt");
    let j = reading::dir().join("init.json");
    let o = reading::run(&[
        "analyze",
        s(&copy),
        "--script",
        s(&t),
        "--script-json",
        s(&j),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(std::fs::read_to_string(&t)
        .unwrap()
        .starts_with("# mmio-trace init script"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert!(v["maps"].is_array(), "{v}");
}

/// Runs `mmio-trace ARGS`, killed after `secs` seconds (then `None`): for commands
/// that must not block.
fn run_bounded(args: &[&str], secs: u64) -> Option<Output> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if c.try_wait().unwrap().is_some() {
            return Some(c.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

#[test]
fn an_object_marker_naming_a_fifo_or_dev_zero_degrades_to_object_offset() {
    let fifo = reading::dir().join("object-fifo");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success(), "mkfifo");
    for (path, short) in [(s(&fifo), "object-fifo"), ("/dev/zero", "zero")] {
        let log = format!(
            "VERSION 20070824\n\
             MARK 0.010000 object pid 10 0x5637c7d75000-0x5637c7d7a000 bias 0x5637c7d75000 \
             build eba92910ee7913fce9f70397bcda97da2e0a51fb {path}\n\
             MAP 0.012262 1 0xfeb40000 0x7fc5d2008000 0x1000 0x0 10\n\
             R 4 0.012400 1 0xfeb40018 0x80 0x5637c7d76823 10\n"
        );
        let log = tmp(&format!("object-{short}.log"), log.as_bytes());
        let out = reading::dir().join(format!("object-{short}.perfetto"));
        let site = format!("{short}+0x1823");
        for args in [
            vec!["show", s(&log)],
            vec!["stats", "--by-site", s(&log)],
            vec!["analyze", s(&log)],
            vec!["export", "--to", "perfetto", s(&log), "-o", s(&out)],
        ] {
            // Generous: the machine may be loaded; a blocked read never ends at all.
            let o = run_bounded(&args, 120).unwrap_or_else(|| panic!("{args:?} blocked on {path}"));
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
            if args[0] != "export" {
                assert!(
                    text(&o.stdout).contains(&site),
                    "{args:?}: {}",
                    text(&o.stdout)
                );
            }
            assert!(
                text(&o.stderr).contains("is not a regular file"),
                "{args:?}: {}",
                text(&o.stderr)
            );
        }
    }
}

/// Rows DuckDB counts in a Hive-partitioned Parquet directory, and its column names.
fn duckdb_table(dir: &std::path::Path) -> (u64, Vec<String>) {
    let found = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs python3 with the module `duckdb`: \
         pip install --break-system-packages duckdb (scripts/test installs it)"
    );
    let script = "import duckdb, json, sys\n\
        r = duckdb.sql(\"select * from read_parquet('\" + sys.argv[1] + \"/**/*.parquet', hive_partitioning=true)\")\n\
        print(json.dumps([len(r.fetchall()), r.columns]))";
    let o = Command::new("python3")
        .args(["-c", script, s(dir)])
        .output()
        .unwrap();
    assert!(o.status.success(), "DuckDB: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cols = v[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (v[0].as_u64().unwrap(), cols)
}

#[test]
fn a_partitioned_parquet_export_of_a_log_without_rows_is_an_empty_table_duckdb_reads() {
    let empty = tmp("part-empty.log", b"");
    let header = tmp("part-header.log", b"VERSION 20070824\n");
    let marks = tmp(
        "part-marks.log",
        b"VERSION 20070824\nMARK 1.000000 hello\nMARK 2.000000 world\n",
    );
    for (log, rows) in [(&empty, 0), (&header, 0), (&marks, 2)] {
        for col in ["map-id", "direction", "thread"] {
            let dir = reading::dir().join(format!(
                "part-{}-{col}",
                log.file_stem().unwrap().to_str().unwrap()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let o = reading::run(&[
                "export",
                "--to",
                "parquet",
                "--partition-by",
                col,
                s(log),
                "-o",
                s(&dir),
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            let (n, cols) = duckdb_table(&dir);
            assert_eq!(n, rows, "{log:?} by {col}");
            let col = col.replace('-', "_");
            assert!(cols.contains(&col), "{col} in {cols:?}");
            assert!(cols.contains(&"time_ns".to_string()), "{cols:?}");
        }
    }
}

const E1000_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../registers/e1000.toml");

#[test]
fn diff_ignore_value_with_a_name_no_access_has_is_an_error_not_a_silent_no_op() {
    // B: the e1000 log with the first STATUS read's value changed.
    let log = std::fs::read_to_string(E1000).unwrap();
    let changed = log.replacen("0xfeb40008 0x80080783", "0xfeb40008 0x80080787", 1);
    assert_ne!(changed, log);
    let b = tmp("ignore-b.log", changed.as_bytes());
    let diff = |extra: &[&str]| {
        let mut args = vec!["diff", "--db", E1000_DB];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[E1000, s(&b)]);
        reading::run(&args)
    };
    assert_eq!(diff(&[]).status.code(), Some(1));
    for ok in [
        &["--ignore-value", "STATUS"][..],
        &["--ignore-value", "0xfeb40008"],
        &["--ignore-value", "0xfeb40008", "--ignore-value", "STATUS"],
        &["--ignore-value", "STATUS", "--ignore-value", "0xfeb40008"],
        &["--ignore-base", "--ignore-value", "STATUS"],
        &["--ignore-base", "--ignore-value", "0x8"],
    ] {
        let o = diff(ok);
        assert_eq!(o.status.code(), Some(0), "{ok:?}: {}", text(&o.stderr));
    }
    // A misspelt name, or one in another case than the database's: exit 2, said why.
    for bad in [
        &["--ignore-value", "STATSU"][..],
        &["--ignore-value", "status"],
        &["--ignore-value", "STATUS", "--ignore-value", "NOPE"],
    ] {
        let o = diff(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o.stdout));
        assert!(
            text(&o.stderr).contains("no access of either log is to a register of that name"),
            "{bad:?}: {}",
            text(&o.stderr)
        );
    }
}

/// A polling loop whose last read is stamped before its first (two CPUs' clocks in a
/// kernel log, threads merged out of order): its duration is 0, not a panic or 584 years.
#[test]
fn a_polling_loop_whose_time_goes_backwards_lasts_zero_not_a_panic() {
    let log = tmp(
        "backwards.log",
        b"VERSION 20070824\n\
          R 4 1.000001 1 0xfeb40008 0x1 0x0 0\n\
          R 4 1.000002 1 0xfeb40008 0x1 0x0 0\n\
          R 4 1.000003 1 0xfeb40008 0x1 0x0 0\n\
          R 4 0.000001 1 0xfeb40008 0x2 0x0 0\n",
    );
    let other = tmp("backwards-other.log", b"VERSION 20070824\n");
    let o = reading::run(&["analyze", s(&log)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(
            "R4 0xfeb40008: 4 reads = 0x00000001 … until 0x00000002 (bit 1 set, bit 0 cleared), 0 ns, events 2..5"
        ),
        "{}",
        text(&o.stdout)
    );
    let o = reading::run(&["analyze", "--json", s(&log)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["maps"][0]["polls"][0]["ns"], 0, "{v}");
    let o = reading::run(&["diff", s(&log), s(&other)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(", 0 ns (polling)"),
        "{}",
        text(&o.stdout)
    );
    let o = reading::run(&["show", "--fold", s(&log)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
