//! `mmio-trace export` through the built binary, each output read back by a reader
//! that is not ours: DuckDB for Parquet, pyvcd for VCD, `protoc --decode` against
//! Perfetto's published `perfetto_trace.proto` (vendored under tests/vendor/perfetto)
//! for Perfetto. The readers are installed by `.ci/run` (scripts/test); a missing one
//! fails the test with the command that installs it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{scratch, Fixture};
use mmio_trace_format::{Direction, Event};
use serde_json::Value;

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);
const E1000_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../registers/e1000.toml");
const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vendor/perfetto");

fn mmio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Fails, naming the install command, when the Python module `m` is missing.
#[track_caller]
fn need_python(m: &str, pip: &str) {
    let found = Command::new("python3")
        .args(["-c", &format!("import {m}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "the export tests need python3 with the module `{m}`: \
         pip install --break-system-packages {pip} (scripts/test installs it)"
    );
}

/// Runs a Python script with `args`; its standard output parsed as JSON.
#[track_caller]
fn python_json(script: &str, args: &[&str]) -> Value {
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    serde_json::from_str(&ok(&o)).unwrap()
}

/// Rows of a DuckDB query as JSON arrays (numbers as numbers, blobs as hex).
#[track_caller]
fn duckdb(sql: &str) -> Vec<Vec<Value>> {
    need_python("duckdb", "duckdb");
    let script = r#"
import duckdb, json, sys, decimal
rows = duckdb.sql(sys.argv[1]).fetchall()
def conv(v):
    if isinstance(v, (bytes, bytearray)): return v.hex()
    if isinstance(v, decimal.Decimal): return int(v)
    return v
print(json.dumps([[conv(v) for v in r] for r in rows]))
"#;
    let v = python_json(script, &[sql]);
    serde_json::from_value(v).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// pyvcd's value of a vector, as decimal text.
fn dec(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal value: {v}"))
}

/// The accesses of a kernel text log, parsed here (not by mmio-trace): (dir, width,
/// phys, value) in order.
fn text_accesses(log: &str) -> Vec<(char, u8, u64, u64, u64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("R ") || l.starts_with("W "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            let (s, us) = f[2].split_once('.').unwrap();
            let ts_us = s.parse::<u64>().unwrap() * 1_000_000 + us.parse::<u64>().unwrap();
            (
                f[0].chars().next().unwrap(),
                f[1].parse().unwrap(),
                hex(f[4]),
                hex(f[5]),
                ts_us,
            )
        })
        .collect()
}

fn stats_json(args: &[&str]) -> Value {
    let mut a = vec!["stats", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(&mmio(&a))).unwrap()
}

#[test]
fn parquet_of_the_e1000_log_matches_stats_json_counts_and_value_sums() {
    let dir = scratch("pq-e1000");
    let out = dir.join("e1000.parquet");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        p(&out),
        "--db",
        E1000_DB,
    ]));
    let st = stats_json(&["--db", E1000_DB, E1000]);
    let f = p(&out);
    let totals = duckdb(&format!(
        "select count(*) filter (kind = 'access' and direction = 'R'), \
                count(*) filter (kind = 'access' and direction = 'W'), \
                count(*) filter (kind = 'mark'), count(*) filter (kind = 'map'), \
                count(*), min(time_ns) filter (kind = 'access'), \
                max(time_ns) filter (kind = 'access') from '{f}'"
    ));
    let t = &totals[0];
    assert_eq!(u(&t[0]), u(&st["reads"]));
    assert_eq!(u(&t[1]), u(&st["writes"]));
    assert_eq!(u(&t[2]), u(&st["marks"]));
    assert_eq!(u(&t[3]), 1);
    assert_eq!(u(&t[4]), u(&st["events"]));
    let acc = text_accesses(E1000);
    assert_eq!(u(&t[0]) + u(&t[1]), acc.len() as u64);
    assert_eq!(u(&t[5]), acc.iter().map(|a| a.4).min().unwrap() * 1000);
    assert_eq!(u(&t[6]), acc.iter().map(|a| a.4).max().unwrap() * 1000);

    // Per register, as `stats --db` counts them.
    let regs = duckdb(&format!(
        "select register, count(*) filter (direction = 'R'), count(*) filter (direction = 'W') \
         from '{f}' where kind = 'access' group by register order by register"
    ));
    let mut want: Vec<(String, u64, u64)> = st["registers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                u(&r["reads"]),
                u(&r["writes"]),
            )
        })
        .collect();
    want.sort();
    let got: Vec<(String, u64, u64)> = regs
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), u(&r[1]), u(&r[2])))
        .collect();
    assert!(want.len() > 20, "e1000.toml names many registers: {want:?}");
    assert_eq!(got, want);

    // Per address, and the offsets within BAR0.
    let addrs = duckdb(&format!(
        "select phys, min(map_offset), count(*) filter (direction = 'R'), \
         count(*) filter (direction = 'W') from '{f}' where kind = 'access' group by phys"
    ));
    let got: BTreeMap<u64, (u64, u64, u64)> = addrs
        .iter()
        .map(|r| (u(&r[0]), (u(&r[1]), u(&r[2]), u(&r[3]))))
        .collect();
    let want: BTreeMap<u64, (u64, u64, u64)> = st["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let phys = u64::from_str_radix(&a["addr"].as_str().unwrap()[2..], 16).unwrap();
            (phys, (phys - 0xfeb40000, u(&a["reads"]), u(&a["writes"])))
        })
        .collect();
    assert_eq!(got, want);

    // Sums of the values, per direction, against the log's own lines.
    let sums = duckdb(&format!(
        "select direction, sum(value)::varchar, count(value_bytes) filter (octet_length(value_bytes) = 4) \
         from '{f}' where kind = 'access' group by direction order by direction"
    ));
    for (row, d) in sums.iter().zip(['R', 'W']) {
        let want: u128 = acc.iter().filter(|a| a.0 == d).map(|a| a.3 as u128).sum();
        assert_eq!(
            row[1].as_str().unwrap(),
            want.to_string(),
            "sum of {d} values"
        );
        assert_eq!(u(&row[2]), acc.iter().filter(|a| a.0 == d).count() as u64);
    }
    let marks = duckdb(&format!(
        "select time_ns, marker from '{f}' where kind = 'mark' order by time_ns"
    ));
    assert_eq!(
        marks,
        vec![
            vec![
                Value::from(2306397000u64),
                "testbed: before insmod e1000".into()
            ],
            vec![
                Value::from(3920655000u64),
                "testbed: after insmod e1000 (probe done)".into()
            ],
            vec![
                Value::from(6963314000u64),
                "testbed: after ip link set eth0 up".into()
            ],
        ]
    );
}

/// Records tests/programs/exp_threads.c in the binary format (16-byte accesses stay
/// whole); the fixture and the log.
fn recorded(scratch_name: &str) -> (Fixture, PathBuf, Vec<Event>) {
    let fx = Fixture::new(scratch_name, "exp_threads", 4096);
    let log = fx.dir.join("t.mtb");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args([
            "record",
            "-q",
            "--format",
            "binary",
            "-o",
            p(&log),
            "--device",
        ])
        .arg(&fx.dev)
        .arg("--")
        .arg(&fx.exe)
        .arg(&fx.dev)
        .output()
        .unwrap();
    ok(&o);
    let events = common::read_log(&log);
    (fx, log, events)
}

#[test]
fn parquet_of_a_recorded_program_has_every_access_with_thread_pc_file_and_wide_bytes() {
    let (fx, log, events) = recorded("pq-rec");
    let out = fx.dir.join("t.parquet");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        p(&log),
        "-o",
        p(&out),
    ]));
    let st = stats_json(&[p(&log)]);
    let f = p(&out);
    let rows = duckdb(&format!(
        "select thread, direction, width, phys, map_offset, pc, value, value_bytes, map_file, time_ns \
         from read_parquet('{f}', file_row_number = true) where kind = 'access' \
         order by file_row_number"
    ));
    let acc: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), acc.len());
    assert_eq!(
        rows.len() as u64,
        u(&st["reads"]) + u(&st["writes"]),
        "as many access rows as stats counts"
    );
    let map_phys = events
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(m.phys),
            _ => None,
        })
        .unwrap();
    for (r, a) in rows.iter().zip(&acc) {
        assert_eq!(u(&r[0]), a.pid as u64);
        assert_eq!(
            r[1].as_str().unwrap(),
            if a.dir == Direction::Read { "R" } else { "W" }
        );
        assert_eq!(u(&r[2]), a.width as u64);
        assert_eq!(u(&r[3]), a.phys);
        assert_eq!(u(&r[4]), a.phys - map_phys);
        assert_eq!(u(&r[5]), a.pc);
        let bytes: String = a.bytes()[..a.width as usize]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(r[7].as_str().unwrap(), bytes);
        if a.width <= 8 {
            assert_eq!(u(&r[6]), a.value());
        } else {
            assert!(r[6].is_null(), "no integer for {} bytes", a.width);
        }
        assert_eq!(r[8].as_str().unwrap(), fx.dev.to_str().unwrap());
        assert_eq!(u(&r[9]), a.ts_ns);
    }
    // The program's shapes: three threads, a 16-byte store and load of all ones.
    let threads: std::collections::BTreeSet<u64> = rows.iter().map(|r| u(&r[0])).collect();
    assert_eq!(threads.len(), 3);
    let wide = rows.iter().filter(|r| u(&r[2]) == 16).count();
    assert_eq!(wide, 2);
    assert!(rows
        .iter()
        .filter(|r| u(&r[2]) == 16)
        .all(|r| r[7].as_str().unwrap() == "ff".repeat(16)));
    let marks = duckdb(&format!(
        "select marker from '{f}' where kind = 'mark' and marker like 'workers%' order by time_ns"
    ));
    assert_eq!(
        marks,
        vec![
            vec![Value::from("workers start")],
            vec![Value::from("workers done")]
        ]
    );
    let maps = duckdb(&format!(
        "select kind, map_id, length, map_file from '{f}' where kind in ('map', 'unmap') order by time_ns"
    ));
    assert_eq!(maps[0][0], "map");
    assert_eq!(u(&maps[0][2]), 4096);
    assert_eq!(maps[1][0], "unmap");
    assert_eq!(maps[1][3].as_str().unwrap(), fx.dev.to_str().unwrap());
}

#[test]
fn parquet_partitions_and_row_groups_hold_the_same_rows_as_one_file() {
    let dir = scratch("pq-parts");
    let one = dir.join("one.parquet");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        p(&one),
        "--db",
        E1000_DB,
        "--row-group-rows",
        "1000",
    ]));
    let groups = duckdb(&format!(
        "select count(distinct row_group_id), max(row_group_num_rows) from parquet_metadata('{}')",
        p(&one)
    ));
    // 13105 accesses, 3 markers and a MAP: 14 row groups of at most 1000 rows.
    assert_eq!((u(&groups[0][0]), u(&groups[0][1])), (14, 1000));

    let parts = dir.join("by-register");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        p(&parts),
        "--db",
        E1000_DB,
        "--partition-by",
        "register",
        "--row-group-rows",
        "1000",
    ]));
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains("register=EECD"), "{names:?}");
    assert!(
        names.contains("register=__HIVE_DEFAULT_PARTITION__"),
        "markers and MAP: {names:?}"
    );
    let q = |from: &str| {
        duckdb(&format!(
            "select register, kind, count(*), sum(value)::varchar from {from} \
             group by all order by all"
        ))
    };
    let from_parts = q(&format!(
        "read_parquet('{}/*/*.parquet', hive_partitioning = true)",
        p(&parts)
    ));
    assert_eq!(from_parts, q(&format!("'{}'", p(&one))));
    let eecd_groups = duckdb(&format!(
        "select count(distinct row_group_id) from parquet_metadata('{}/register=EECD/part-0.parquet')",
        p(&parts)
    ));
    // 6651 EECD accesses in row groups of 1000.
    assert_eq!(u(&eecd_groups[0][0]), 7);

    // By thread on a recorded program: one directory per thread.
    let (fx, log, events) = recorded("pq-parts-rec");
    let by_thread = fx.dir.join("by-thread");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        p(&log),
        "-o",
        p(&by_thread),
        "--partition-by",
        "thread",
    ]));
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        if let Event::Access(a) = e {
            *want.entry(format!("thread={}", a.pid)).or_default() += 1;
        }
    }
    let got = duckdb(&format!(
        "select 'thread=' || thread, count(*) from read_parquet('{}/*/*.parquet', \
         hive_partitioning = true) where kind = 'access' group by all order by all",
        p(&by_thread)
    ));
    let got: BTreeMap<String, u64> = got
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), u(&r[1])))
        .collect();
    assert_eq!(got, want);
}

/// A VCD file read by pyvcd: timescale, signals by scope path, last value of each,
/// marker strings, time of the last change.
fn read_vcd(path: &Path) -> Value {
    need_python("vcd", "pyvcd");
    let script = r#"
import json, sys
from vcd.reader import TokenKind, tokenize
scope, names, last, marks, sizes, ts, t = [], {}, {}, [], {}, None, 0
with open(sys.argv[1], 'rb') as f:
    for tok in tokenize(f):
        k = tok.kind
        if k is TokenKind.TIMESCALE:
            ts = f"{int(tok.timescale.magnitude.value) if hasattr(tok.timescale.magnitude, 'value') else tok.timescale.magnitude} {tok.timescale.unit.value}"
        elif k is TokenKind.SCOPE:
            scope.append(tok.scope.ident)
        elif k is TokenKind.UPSCOPE:
            scope.pop()
        elif k is TokenKind.VAR:
            names[tok.var.id_code] = ".".join(scope + [tok.var.reference])
            sizes[".".join(scope + [tok.var.reference])] = tok.var.size
        elif k is TokenKind.CHANGE_TIME:
            t = tok.time_change
        elif k is TokenKind.CHANGE_VECTOR:
            last[names[tok.vector_change.id_code]] = [str(tok.vector_change.value), t]  # decimal text: may pass 64 bits
        elif k is TokenKind.CHANGE_STRING:
            marks.append([tok.string_change.value, t])
print(json.dumps({"timescale": ts, "last": last, "marks": marks, "sizes": sizes}))
"#;
    python_json(script, &[p(path)])
}

#[test]
fn vcd_of_the_e1000_log_holds_each_registers_last_value_at_its_time() {
    let dir = scratch("vcd-e1000");
    let acc = text_accesses(E1000);
    let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for a in &acc {
        last.insert(a.2, (a.3, a.4));
    }

    // By offset, without a database.
    let out = dir.join("plain.vcd");
    ok(&mmio(&["export", "--to", "vcd", E1000, "-o", p(&out)]));
    let v = read_vcd(&out);
    assert_eq!(v["timescale"], "1 us");
    let got = v["last"].as_object().unwrap();
    assert_eq!(got.len(), last.len(), "one signal per address: {got:?}");
    for (phys, (value, _)) in &last {
        let name = format!("mmio.map_1.off_{:#06x}", phys - 0xfeb40000);
        assert_eq!(dec(&got[&name][0]), *value as u128, "{name}");
        assert_eq!(u(&v["sizes"][&name]), 32, "{name}");
    }
    // The time of a signal's last change is the first access that gave it its
    // last value (repeated values are no change).
    let status = &got["mmio.map_1.off_0x0008"];
    let first_of_last = acc
        .iter()
        .rev()
        .take_while(|a| a.2 != 0xfeb40008 || a.3 == last[&0xfeb40008].0)
        .filter(|a| a.2 == 0xfeb40008)
        .map(|a| a.4)
        .last()
        .unwrap();
    assert_eq!(u(&status[1]), first_of_last);
    let marks: Vec<(String, u64)> = v["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m[0].as_str().unwrap().to_string(), u(&m[1])))
        .collect();
    assert_eq!(
        marks,
        vec![
            ("testbed:_before_insmod_e1000".to_string(), 2306397),
            (
                "testbed:_after_insmod_e1000_(probe_done)".to_string(),
                3920655
            ),
            ("testbed:_after_ip_link_set_eth0_up".to_string(), 6963314),
        ]
    );

    // Named from the database.
    let named = dir.join("named.vcd");
    ok(&mmio(&[
        "export",
        "--to",
        "vcd",
        E1000,
        "-o",
        p(&named),
        "--db",
        E1000_DB,
    ]));
    let v = read_vcd(&named);
    let got = v["last"].as_object().unwrap();
    assert_eq!(
        dec(&got["mmio.map_1.STATUS"][0]),
        last[&0xfeb40008].0 as u128
    );
    assert_eq!(dec(&got["mmio.map_1.EECD"][0]), last[&0xfeb40010].0 as u128);
    assert_eq!(dec(&got["mmio.map_1.CTRL"][0]), last[&0xfeb40000].0 as u128);
}

#[test]
fn vcd_of_a_recorded_program_has_nanosecond_time_and_wide_registers() {
    let (fx, log, events) = recorded("vcd-rec");
    let out = fx.dir.join("t.vcd");
    ok(&mmio(&["export", "--to", "vcd", p(&log), "-o", p(&out)]));
    let v = read_vcd(&out);
    assert_eq!(v["timescale"], "1 ns");
    let map_phys = events
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(m.phys),
            _ => None,
        })
        .unwrap();
    let mut last: HashMap<u64, (u128, u8)> = HashMap::new();
    for e in &events {
        if let Event::Access(a) = e {
            let b = a.bytes();
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[..16]);
            let val = if a.width <= 8 {
                a.value() as u128
            } else {
                u128::from_le_bytes(v)
            };
            last.insert(a.phys, (val, a.width));
        }
    }
    let got = v["last"].as_object().unwrap();
    assert_eq!(got.len(), last.len());
    for (phys, (value, width)) in &last {
        let name = format!("mmio.map_1.off_{:#06x}", phys - map_phys);
        assert_eq!(dec(&got[&name][0]), *value, "{name}");
        assert_eq!(u(&v["sizes"][&name]), (*width as u64 * 8).max(8), "{name}");
    }
    assert_eq!(u(&v["sizes"]["mmio.map_1.off_0x0030"]), 128);
}

/// A decoded track event: type, track uuid, name, counter value, annotation fields
/// (`uint_value=8`, ...).
type TrackEv = (String, u64, String, Option<i64>, Vec<String>);

/// One decoded Perfetto trace: descriptors by uuid, events in order.
struct Decoded {
    /// uuid -> (name, is a counter track)
    tracks: HashMap<u64, (String, bool)>,
    /// (type, track, name, counter value, annotation fields)
    events: Vec<TrackEv>,
    packets: usize,
}

fn decode_perfetto(path: &Path) -> Decoded {
    let proto = Path::new(PROTO_DIR).join("perfetto_trace.proto");
    assert!(
        proto.exists(),
        "{} is vendored with the tests",
        proto.display()
    );
    let o = Command::new("protoc")
        .arg(format!("--proto_path={PROTO_DIR}"))
        .args(["--decode=perfetto.protos.Trace", "perfetto_trace.proto"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("the export tests need protoc: apt-get install protobuf-compiler ({e})")
        });
    let text = ok(&o);
    // protoc's text format, one field per line: walk it with a stack of message names.
    let mut stack: Vec<String> = Vec::new();
    let mut d = Decoded {
        tracks: HashMap::new(),
        events: Vec::new(),
        packets: 0,
    };
    let mut interned: HashMap<u64, String> = HashMap::new();
    let (mut uuid, mut tname, mut counter) = (0u64, String::new(), false);
    let mut ev: Option<TrackEv> = None;
    let mut iid = 0u64;
    let unq = |s: &str| s.trim().trim_matches('"').to_string();
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_suffix(" {") {
            if name == "counter" && stack.last().map(String::as_str) == Some("track_descriptor") {
                counter = true;
            }
            stack.push(name.to_string());
            match name {
                "packet" => d.packets += 1,
                "track_descriptor" => (uuid, tname, counter) = (0, String::new(), false),
                "track_event" => ev = Some((String::new(), 0, String::new(), None, Vec::new())),
                _ => {}
            }
            continue;
        }
        if l == "}" {
            match stack.pop().as_deref() {
                Some("track_descriptor") => {
                    d.tracks.insert(uuid, (tname.clone(), counter));
                }
                Some("track_event") => d.events.push(ev.take().unwrap()),
                _ => {}
            }
            continue;
        }
        let (k, v) = l.split_once(": ").unwrap();
        let top = stack.last().map(String::as_str);
        match (top, k) {
            (Some("track_descriptor"), "uuid") => uuid = v.parse().unwrap(),
            (Some("track_descriptor"), "name") => tname = unq(v),
            (Some("event_names"), "iid") => iid = v.parse().unwrap(),
            (Some("event_names"), "name") => {
                interned.insert(iid, unq(v));
            }
            (Some("track_event"), "type") => ev.as_mut().unwrap().0 = v.to_string(),
            (Some("track_event"), "track_uuid") => ev.as_mut().unwrap().1 = v.parse().unwrap(),
            (Some("track_event"), "name") => ev.as_mut().unwrap().2 = unq(v),
            (Some("track_event"), "name_iid") => {
                // The packet's interned_data comes after its track_event.
                ev.as_mut().unwrap().2 = format!("\0iid {v}")
            }
            (Some("track_event"), "counter_value") => {
                ev.as_mut().unwrap().3 = Some(v.parse().unwrap())
            }
            (Some("debug_annotations"), _) => ev.as_mut().unwrap().4.push(format!("{k}={v}")),
            _ => {}
        }
    }
    for e in &mut d.events {
        if let Some(iid) = e.2.strip_prefix("\0iid ") {
            e.2 = interned[&iid.parse::<u64>().unwrap()].clone();
        }
    }
    d
}

#[test]
fn perfetto_of_the_e1000_log_decodes_with_one_instant_per_access_and_a_counter_per_register() {
    let dir = scratch("pf-e1000");
    let out = dir.join("e1000.pftrace");
    ok(&mmio(&[
        "export",
        "--to",
        "perfetto",
        E1000,
        "-o",
        p(&out),
        "--db",
        E1000_DB,
    ]));
    let st = stats_json(&["--db", E1000_DB, E1000]);
    let d = decode_perfetto(&out);
    let acc = text_accesses(E1000);
    let regs: HashMap<String, (u64, u64)> = st["registers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                (u(&r["reads"]), u(&r["writes"])),
            )
        })
        .collect();

    let counters: HashMap<u64, String> = d
        .tracks
        .iter()
        .filter(|t| t.1 .1)
        .map(|(u, t)| (*u, t.0.clone()))
        .collect();
    assert_eq!(counters.len(), regs.len(), "one counter track per register");
    let plain: Vec<&String> = d.tracks.values().filter(|t| !t.1).map(|t| &t.0).collect();
    let mut plain: Vec<&str> = plain.iter().map(|s| s.as_str()).collect();
    plain.sort();
    assert_eq!(
        plain,
        ["accesses (no thread id in the log)", "map 1", "markers"]
    );
    let track = |name: &str| *d.tracks.iter().find(|t| t.1 .0 == name).unwrap().0;

    let thread = track("accesses (no thread id in the log)");
    let instants: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.1 == thread && e.0 == "TYPE_INSTANT")
        .collect();
    assert_eq!(instants.len(), acc.len());
    // Folded runs are slices over their accesses on the same track: balanced, and the
    // EEPROM's 5-access bit-read loop of 15 repetitions is one slice per word read in
    // one go (69 of the 70 words; see story_fold.rs).
    let begins: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.1 == thread && e.0 == "TYPE_SLICE_BEGIN")
        .collect();
    let ends = d
        .events
        .iter()
        .filter(|e| e.1 == thread && e.0 == "TYPE_SLICE_END")
        .count();
    assert_eq!(begins.len(), ends);
    assert_eq!(
        // protoc prints the UTF-8 of `×` as octal escapes.
        begins
            .iter()
            .filter(|e| e.2 == "\\303\\22715 of 5 accesses")
            .count(),
        69
    );
    assert!(begins
        .iter()
        .all(|e| e.4.contains(&"name_iid=9".to_string())));
    assert_eq!(
        d.events.iter().filter(|e| e.1 == thread).count(),
        acc.len() + 2 * begins.len(),
        "instants and slices only"
    );
    // Instants are named `R REG` / `W REG`, as many as stats counts.
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for e in &instants {
        *by_name.entry(e.2.as_str()).or_default() += 1;
    }
    for (reg, (r, w)) in &regs {
        assert_eq!(
            by_name
                .get(format!("R {reg}").as_str())
                .copied()
                .unwrap_or(0),
            *r,
            "{reg}"
        );
        assert_eq!(
            by_name
                .get(format!("W {reg}").as_str())
                .copied()
                .unwrap_or(0),
            *w,
            "{reg}"
        );
    }
    // The first instant carries the first access's fields.
    let (_, _, phys, value, _) = acc[0];
    let first = &instants[0].4;
    assert!(
        first.contains(&"string_value=\"STATUS\"".to_string()),
        "{first:?}"
    );
    assert!(
        first.contains(&format!("uint_value={}", phys - 0xfeb40000)),
        "{first:?}"
    );
    assert!(first.contains(&format!("uint_value={value}")), "{first:?}");
    assert!(
        first.contains(&format!("pointer_value={phys}")),
        "{first:?}"
    );

    // Counter tracks: one event per access, the last value last.
    for (uuid, name) in &counters {
        let vals: Vec<i64> = d
            .events
            .iter()
            .filter(|e| e.1 == *uuid)
            .map(|e| e.3.unwrap())
            .collect();
        let (r, w) = regs[name];
        assert_eq!(vals.len() as u64, r + w, "{name}");
    }
    let last_of = |phys: u64| acc.iter().rev().find(|a| a.2 == phys).unwrap().3 as i64;
    for (name, phys) in [
        ("STATUS", 0xfeb40008u64),
        ("EECD", 0xfeb40010),
        ("CTRL", 0xfeb40000),
    ] {
        let t = track(name);
        let last = d.events.iter().rev().find(|e| e.1 == t).unwrap();
        assert_eq!(last.3, Some(last_of(phys)), "{name}");
    }

    let markers = track("markers");
    let marks: Vec<(&str, &str)> = d
        .events
        .iter()
        .filter(|e| e.1 == markers)
        .map(|e| (e.0.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        marks,
        [
            ("TYPE_INSTANT", "testbed: before insmod e1000"),
            ("TYPE_INSTANT", "testbed: after insmod e1000 (probe done)"),
            ("TYPE_INSTANT", "testbed: after ip link set eth0 up"),
        ]
    );
    let map = track("map 1");
    let slices: Vec<(&str, &str)> = d
        .events
        .iter()
        .filter(|e| e.1 == map)
        .map(|e| (e.0.as_str(), e.2.as_str()))
        .collect();
    // Never unmapped in the log: the slice ends with it.
    assert_eq!(
        slices,
        [
            ("TYPE_SLICE_BEGIN", "map 1 0xfeb40000+0x20000"),
            ("TYPE_SLICE_END", "")
        ]
    );
    // Every event is a packet, besides the descriptors and the interning packet.
    assert_eq!(d.packets, 1 + d.tracks.len() + d.events.len());
}

#[test]
fn perfetto_of_a_recorded_program_has_a_track_per_thread_and_wide_bytes() {
    let (fx, log, events) = recorded("pf-rec");
    let out = fx.dir.join("t.pftrace");
    ok(&mmio(&[
        "export",
        "--to",
        "perfetto",
        p(&log),
        "-o",
        p(&out),
    ]));
    let d = decode_perfetto(&out);
    let mut per_thread: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        if let Event::Access(a) = e {
            *per_thread.entry(format!("thread {}", a.pid)).or_default() += 1;
        }
    }
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for e in &d.events {
        let name = &d.tracks[&e.1].0;
        if name.starts_with("thread ") && e.0 == "TYPE_INSTANT" {
            *got.entry(name.clone()).or_default() += 1;
        }
    }
    assert_eq!(got, per_thread);
    let wide: Vec<_> = d
        .events
        .iter()
        .filter(|e| {
            e.4.contains(&format!("string_value=\"{}\"", "ff".repeat(16)))
        })
        .collect();
    assert_eq!(wide.len(), 2, "the 16-byte store and load");
    let pc = events
        .iter()
        .find_map(|e| match e {
            Event::Access(a) => Some(a.pc),
            _ => None,
        })
        .unwrap();
    let first = d
        .events
        .iter()
        .find(|e| e.0 == "TYPE_INSTANT" && e.2.starts_with("W "))
        .unwrap();
    assert!(
        // The PC, symbolized from the object markers `record` wrote.
        first
            .4
            .iter()
            .any(|a| a.starts_with(&format!("string_value=\"{pc:#x} main+0x"))),
        "{:?}",
        first.4
    );
}

#[test]
fn export_refuses_bad_arguments_with_status_2_and_keeps_what_precedes_damage() {
    let dir = scratch("exp-errors");
    let out = dir.join("x");
    let o = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["export", "--to", "vcd", "-", "-o", p(&out)])
        .stdin(std::fs::File::open(E1000).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give LOG as a file"));

    let o = mmio(&[
        "export",
        "--to",
        "perfetto",
        E1000,
        "-o",
        p(&out),
        "--partition-by",
        "kind",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "mmio-trace: --partition-by applies to --to parquet only\n"
    );

    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep"), "x").unwrap();
    let o = mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        p(&full),
        "--partition-by",
        "kind",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not empty"));
    assert_eq!(std::fs::read_to_string(full.join("keep")).unwrap(), "x");

    let o = mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        "/nonexistent-dir/x.parquet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot create /nonexistent-dir/x.parquet"));

    // The log itself as output (here through a link): refused, the log left whole.
    let copy = dir.join("copy.mmiotrace");
    std::fs::copy(E1000, &copy).unwrap();
    let link = dir.join("link.mmiotrace");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    for to in ["parquet", "vcd", "perfetto"] {
        let o = mmio(&["export", "--to", to, p(&copy), "-o", p(&link)]);
        assert_eq!(o.status.code(), Some(2), "{to}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            format!(
                "mmio-trace: {} is the input log: write the export to another file\n",
                link.display()
            )
        );
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(E1000).unwrap());
    }

    // A damaged line after 1000 accesses: those are exported, in a readable file.
    let text = std::fs::read_to_string(E1000).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("R ") || l.starts_with("W "))
        .nth(1000)
        .unwrap()
        .0;
    let mut damaged = lines[..at].join("\n");
    damaged.push_str("\nR 4 not-a-time\n");
    damaged.push_str(&lines[at..].join("\n"));
    damaged.push('\n');
    let bad = dir.join("damaged.mmiotrace");
    std::fs::write(&bad, damaged).unwrap();
    for to in ["parquet", "vcd", "perfetto"] {
        let o = mmio(&[
            "export",
            "--to",
            to,
            p(&bad),
            "-o",
            p(&dir.join(format!("d.{to}"))),
        ]);
        assert_eq!(o.status.code(), Some(2), "{to}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("damaged.mmiotrace:{}:", at + 1)),
            "{to}: {err}"
        );
    }
    let n = duckdb(&format!(
        "select count(*) filter (kind = 'access'), count(*) from '{}'",
        p(&dir.join("d.parquet"))
    ));
    assert_eq!((u(&n[0][0]), u(&n[0][1])), (1000, 1000 + 2));
    let d = decode_perfetto(&dir.join("d.perfetto"));
    assert_eq!(
        d.events.iter().filter(|e| e.0 == "TYPE_INSTANT").count(),
        1000 + 1
    );
    // --lenient skips the line and exports everything else.
    let o = mmio(&[
        "export",
        "--to",
        "parquet",
        "--lenient",
        p(&bad),
        "-o",
        p(&dir.join("l.parquet")),
    ]);
    ok(&o);
    let n = duckdb(&format!(
        "select count(*) filter (kind = 'access') from '{}'",
        p(&dir.join("l.parquet"))
    ));
    assert_eq!(u(&n[0][0]), text_accesses(E1000).len() as u64);
}

/// Every kind of event: two maps (one unmapped), threads, an undecoded access, a
/// system call's access, markers and both kinds of loss notice.
const SMALL: &str = "\
VERSION 20070824
PCIDEV 0020 8086100e b feb40000 c001 0 0 0 0 feb00000 20000 40 0 0 0 0 40000 e1000
MARK 1.000000 start
MAP 1.000001 1 0xfeb40000 0x7f0000001000 0x20000 0x401000 77
R 4 1.000002 1 0xfeb40008 0x80080783 0x401234 77
W 4 1.000003 1 0xfeb40010 0x1c8 0x401240 78
MAP 1.500000 2 0xfea00000 0x7f0000100000 0x1000 0x0 0
W 8 1.500001 2 0xfea00080 0xffffffff00000001 0x0 0
R 1 2.000000 2 0xfea00020 0x1 0x0 0
UNKNOWN 2.000001 2 0xfea00040 f3,48,a5 0x0 0
MARK 2.100000 kernel read 8 bytes of map 2 at 0xfea00080 (write) pid 78
MARK 0.000000 Lost 5 events.
CPU:1 [LOST 7 EVENTS]
UNMAP 3.000000 2 0x0 0
W 4 3.500000 1 0xfeb40010 0x1c9 0x401240 78
";

#[test]
fn every_event_kind_of_a_small_log_becomes_rows_tracks_and_markers() {
    let dir = scratch("exp-small");
    let log = dir.join("small.mmiotrace");
    std::fs::write(&log, SMALL).unwrap();
    let pq = dir.join("s.parquet");
    ok(&mmio(&["export", "--to", "parquet", p(&log), "-o", p(&pq)]));
    let rows = duckdb(&format!(
        "select kind, time_ns, thread, pc, map_id, phys, map_offset, width, direction, value, \
         value_bytes, length, marker from read_parquet('{}', file_row_number = true) \
         order by file_row_number",
        p(&pq)
    ));
    let j = |s: &str| -> Vec<Value> { serde_json::from_str(s).unwrap() };
    assert_eq!(
        rows,
        vec![
            j(
                r#"["mark", 1000000000, null, null, null, null, null, null, null, null, null, null, "start"]"#
            ),
            j(
                r#"["map", 1000001000, 77, 4198400, 1, 4273209344, null, null, null, null, null, 131072, null]"#
            ),
            j(
                r#"["access", 1000002000, 77, 4198964, 1, 4273209352, 8, 4, "R", 2148009859, "83070880", null, null]"#
            ),
            j(
                r#"["access", 1000003000, 78, 4198976, 1, 4273209360, 16, 4, "W", 456, "c8010000", null, null]"#
            ),
            j(
                r#"["map", 1500000000, 0, 0, 2, 4271898624, null, null, null, null, null, 4096, null]"#
            ),
            j(
                r#"["access", 1500001000, 0, 0, 2, 4271898752, 128, 8, "W", 18446744069414584321, "01000000ffffffff", null, null]"#
            ),
            j(r#"["access", 2000000000, 0, 0, 2, 4271898656, 32, 1, "R", 1, "01", null, null]"#),
            j(
                r#"["unknown", 2000001000, 0, 0, 2, 4271898688, 64, null, null, null, "f348a5", null, "opcode f3 48 a5"]"#
            ),
            j(
                r#"["kernel", 2100000000, 78, null, 2, 4271898752, 128, null, "R", null, null, 8, "kernel read 8 bytes of map 2 at 0xfea00080 (write) pid 78"]"#
            ),
            j(
                r#"["lost", null, null, null, null, null, null, null, null, null, null, 5, "Lost 5 events."]"#
            ),
            j(
                r#"["lost", null, null, null, null, null, null, null, null, null, null, 7, "CPU 1 lost 7 events"]"#
            ),
            j(
                r#"["unmap", 3000000000, 0, 0, 2, 4271898624, null, null, null, null, null, null, null]"#
            ),
            j(
                r#"["access", 3500000000, 78, 4198976, 1, 4273209360, 16, 4, "W", 457, "c9010000", null, null]"#
            ),
        ]
    );

    let pf = dir.join("s.pftrace");
    ok(&mmio(&[
        "export",
        "--to",
        "perfetto",
        p(&log),
        "-o",
        p(&pf),
    ]));
    let d = decode_perfetto(&pf);
    let on = |track: &str| -> Vec<(String, String)> {
        let t = *d.tracks.iter().find(|t| t.1 .0 == track).unwrap().0;
        d.events
            .iter()
            .filter(|e| e.1 == t)
            .map(|e| (e.0.clone(), e.2.clone()))
            .collect()
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        on("markers"),
        [
            s("TYPE_INSTANT", "start"),
            s("TYPE_INSTANT", "Lost 5 events"),
            s("TYPE_INSTANT", "CPU 1 lost 7 events"),
        ]
    );
    assert_eq!(
        on("map 2"),
        [
            s("TYPE_SLICE_BEGIN", "map 2 0xfea00000+0x1000"),
            s("TYPE_SLICE_END", "")
        ]
    );
    assert_eq!(
        on("map 1"),
        [
            s("TYPE_SLICE_BEGIN", "map 1 0xfeb40000+0x20000"),
            s("TYPE_SLICE_END", "")
        ]
    );
    assert_eq!(
        on("thread 78"),
        [
            s("TYPE_INSTANT", "W 0x0010"),
            s(
                "TYPE_INSTANT",
                "kernel read 8 bytes of map 2 at 0xfea00080 (write) pid 78"
            ),
            s("TYPE_INSTANT", "W 0x0010"),
        ]
    );
    assert_eq!(
        on("accesses (no thread id in the log)"),
        [
            s("TYPE_INSTANT", "W 0x0080"),
            s("TYPE_INSTANT", "R 0x0020"),
            s("TYPE_INSTANT", "UNKNOWN f3 48 a5"),
        ]
    );
    // Two maps: counter tracks say which.
    let counters: std::collections::BTreeSet<&str> = d
        .tracks
        .values()
        .filter(|t| t.1)
        .map(|t| t.0.as_str())
        .collect();
    assert_eq!(
        counters,
        [
            "map 1 0x0008",
            "map 1 0x0010",
            "map 2 0x0020",
            "map 2 0x0080"
        ]
        .into()
    );
    // The map slice ends at the UNMAP (3 s), and the lost notices sit at the last time seen.
    let ts = |name: &str| -> Vec<u64> {
        let out = Command::new("protoc")
            .arg(format!("--proto_path={PROTO_DIR}"))
            .args(["--decode=perfetto.protos.Trace", "perfetto_trace.proto"])
            .stdin(std::fs::File::open(&pf).unwrap())
            .output()
            .unwrap();
        let text = ok(&out);
        text.split("packet {")
            .filter(|pk| pk.contains(name))
            .filter_map(|pk| {
                pk.lines()
                    .find_map(|l| l.trim().strip_prefix("timestamp: "))
                    .map(|v| v.parse().unwrap())
            })
            .collect()
    };
    assert_eq!(ts("CPU 1 lost 7 events"), [2100000000]);

    let vcd = dir.join("s.vcd");
    ok(&mmio(&["export", "--to", "vcd", p(&log), "-o", p(&vcd)]));
    let v = read_vcd(&vcd);
    let marks: Vec<(String, u64)> = v["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m[0].as_str().unwrap().to_string(), u(&m[1])))
        .collect();
    let m = |a: &str, t: u64| (a.to_string(), t);
    assert_eq!(
        marks,
        [
            m("start", 1000000),
            m("UNKNOWN_f3_48_a5_at_0xfea00040_(map_2)", 2000001),
            m(
                "kernel_read_8_bytes_of_map_2_at_0xfea00080_(write)_pid_78",
                2100000
            ),
            m("Lost_5_events", 2100000),
            m("CPU_1_lost_7_events", 2100000),
        ]
    );
    let last: BTreeMap<String, (u128, u64)> = v["last"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| (k.clone(), (dec(&x[0]), u(&x[1]))))
        .collect();
    let want: BTreeMap<String, (u128, u64)> = [
        ("mmio.map_1.off_0x0008", (0x80080783, 1000002)),
        ("mmio.map_1.off_0x0010", (0x1c9, 3500000)),
        ("mmio.map_2.off_0x0020", (0x1, 2000000)),
        ("mmio.map_2.off_0x0080", (0xffffffff00000001, 1500001)),
    ]
    .into_iter()
    .map(|(k, x)| (k.to_string(), x))
    .collect();
    assert_eq!(last, want);
}

#[test]
fn parquet_partitions_by_any_column_read_back_as_the_single_file() {
    let dir = scratch("pq-anycol");
    let one = dir.join("one.parquet");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        E1000,
        "-o",
        p(&one),
        "--db",
        E1000_DB,
    ]));
    let all = |from: &str| {
        duckdb(&format!(
            "select kind, time_ns, thread, map_id, phys, direction, value, register, marker \
             from {from} order by all"
        ))
    };
    let want = all(&format!("'{}'", p(&one)));
    assert_eq!(want.len(), 13105 + 3 + 1);
    // Row groups of 5 rows: the many small partitions of `register` are held to 10
    // buffered rows in all, written early; nothing is lost or repeated.
    for (col, rows) in [
        ("register", "5"),
        ("kind", "100000"),
        ("direction", "64"),
        ("map-id", "1000"),
        ("thread", "7"),
    ] {
        let out = dir.join(col);
        ok(&mmio(&[
            "export",
            "--to",
            "parquet",
            E1000,
            "-o",
            p(&out),
            "--db",
            E1000_DB,
            "--partition-by",
            col,
            "--row-group-rows",
            rows,
        ]));
        let got = all(&format!(
            "read_parquet('{}/*/*.parquet', hive_partitioning = true)",
            p(&out)
        ));
        assert_eq!(got, want, "--partition-by {col}");
    }
    // A path as a partition value: escaped in the directory name, whole in the column.
    let (fx, log, _) = recorded("pq-mapfile");
    let out = fx.dir.join("by-file");
    ok(&mmio(&[
        "export",
        "--to",
        "parquet",
        p(&log),
        "-o",
        p(&out),
        "--partition-by",
        "map-file",
    ]));
    let got = duckdb(&format!(
        "select distinct map_file from read_parquet('{}/*/*.parquet', hive_partitioning = true) \
         where kind = 'access'",
        p(&out)
    ));
    assert_eq!(got, vec![vec![Value::from(fx.dev.to_str().unwrap())]]);
}

#[test]
fn a_log_touching_more_registers_than_the_caps_keeps_every_access_with_a_warning() {
    // 65536 registers get counter tracks (Perfetto) and signals (VCD); two more do not.
    let dir = scratch("exp-caps");
    let log = dir.join("fb.mmiotrace");
    let mut text =
        String::from("VERSION 20070824\nMAP 1.000000 1 0xe0000000 0x7f0000000000 0x100000 0x0 0\n");
    for k in 0..65538u64 {
        text.push_str(&format!(
            "W 4 1.{:06} 1 {:#x} {:#x} 0x0 0\n",
            k / 100,
            0xe0000000u64 + 4 * k,
            k + 1
        ));
    }
    std::fs::write(&log, text).unwrap();

    let pf = dir.join("fb.pftrace");
    let o = mmio(&["export", "--to", "perfetto", p(&log), "-o", p(&pf)]);
    ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "mmio-trace: warning: {}: more than 65536 registers: 2 accesses to the others \
             are instants without a counter track\n",
            pf.display()
        )
    );
    let d = decode_perfetto(&pf);
    assert_eq!(d.tracks.values().filter(|t| t.1).count(), 65536);
    let instants: Vec<&str> = d
        .events
        .iter()
        .filter(|e| e.0 == "TYPE_INSTANT")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(instants.len(), 65538);
    assert_eq!(instants[65535..], ["W 0x3fffc", "W 0x40000", "W 0x40004"]);
    assert_eq!(
        d.events.iter().filter(|e| e.0 == "TYPE_COUNTER").count(),
        65536
    );

    let vcd = dir.join("fb.vcd");
    let o = mmio(&["export", "--to", "vcd", p(&log), "-o", p(&vcd)]);
    ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "mmio-trace: warning: {}: more than 65536 registers: 2 accesses to the others \
             are not in the VCD\n",
            vcd.display()
        )
    );
    let v = read_vcd(&vcd);
    let last = v["last"].as_object().unwrap();
    assert_eq!(last.len(), 65536);
    assert_eq!(dec(&last["mmio.map_1.off_0x3fffc"][0]), 65536);

    // Parquet keeps no state per register: every row, no warning.
    let pq = dir.join("fb.parquet");
    let o = mmio(&["export", "--to", "parquet", p(&log), "-o", p(&pq)]);
    assert_eq!(ok(&o), "");
    assert!(o.stderr.is_empty());
    let n = duckdb(&format!(
        "select count(*), count(distinct phys), sum(value)::varchar from '{}' where kind = 'access'",
        p(&pq)
    ));
    assert_eq!(
        n,
        vec![vec![
            Value::from(65538),
            Value::from(65538),
            Value::from("2147647491")
        ]]
    );
}

#[test]
fn exports_read_compressed_logs_and_write_to_standard_output() {
    let dir = scratch("exp-stdio");
    let gz = dir.join("e1000.mmiotrace.gz");
    let o = Command::new("gzip")
        .args(["-c", E1000])
        .output()
        .expect("gzip is needed for this test");
    std::fs::write(&gz, &o.stdout).unwrap();
    // Parquet to standard output, from a compressed log.
    let o = mmio(&["export", "--to", "parquet", p(&gz), "-o", "-", "--writes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pq = dir.join("w.parquet");
    std::fs::write(&pq, &o.stdout).unwrap();
    let n = duckdb(&format!(
        "select direction, count(*) from '{}' where kind = 'access' group by all",
        p(&pq)
    ));
    let writes = text_accesses(E1000).iter().filter(|a| a.0 == 'W').count() as u64;
    assert_eq!(n, vec![vec![Value::from("W"), Value::from(writes)]]);
    // VCD reads a compressed log twice, as it reads a plain one.
    let vcd = dir.join("e.vcd");
    ok(&mmio(&["export", "--to", "vcd", p(&gz), "-o", p(&vcd)]));
    let plain = dir.join("p.vcd");
    ok(&mmio(&["export", "--to", "vcd", E1000, "-o", p(&plain)]));
    assert_eq!(std::fs::read(&vcd).unwrap(), std::fs::read(&plain).unwrap());
    let v = read_vcd(&vcd);
    let addrs: std::collections::BTreeSet<u64> = text_accesses(E1000).iter().map(|a| a.2).collect();
    assert_eq!(v["last"].as_object().unwrap().len(), addrs.len());
}
