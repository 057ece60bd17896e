//! `show --fold` and `analyze` on the real kernel e1000 probe log, checked against
//! what the test itself reads from the log's lines (not through mmio-trace's
//! readers or folding): every access kept with its value, the EEPROM's bit-banged
//! word reads, the init sequence's end and the reset's sleeps.

mod reading;

use reading::{quiet, run, text};
use serde_json::Value;

const E1000: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/e1000-probe.mmiotrace"
);
const DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../registers/e1000.toml");

const EECD: u64 = 0xfeb40010;
const STATUS: u64 = 0xfeb40008;

/// One access line of the log: (line number = event index, R/W, address, value, µs).
type Line = (u64, char, u64, u64, u64);

/// The log's access lines, parsed here: `R|W WIDTH SECS MAP ADDR VALUE PC PID`.
fn log_accesses() -> Vec<Line> {
    let log = std::fs::read_to_string(E1000).unwrap();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    log.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dir = match f.first() {
                Some(&"R") => 'R',
                Some(&"W") => 'W',
                _ => return None,
            };
            let (s, us) = f[2].split_once('.').unwrap();
            let us = s.parse::<u64>().unwrap() * 1_000_000 + us.parse::<u64>().unwrap();
            Some((i as u64 + 1, dir, hex(f[4]), hex(f[5]), us))
        })
        .collect()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The accesses that `show --fold --json` describes, runs expanded repetition by
/// repetition (each slot's values in order, as [value, count] pairs).
fn expand(items: &[Value]) -> Vec<(u64, char, u64, u64)> {
    let mut v = Vec::new();
    for it in items {
        match it["kind"].as_str().unwrap() {
            "access" => {
                let value = it["value"].as_str().unwrap().trim_start_matches("0x");
                v.push((
                    it["index"].as_u64().unwrap(),
                    it["dir"].as_str().unwrap().chars().next().unwrap(),
                    it["phys"].as_u64().unwrap(),
                    u64::from_str_radix(value, 16).unwrap(),
                ));
            }
            "run" => {
                let slots = it["slots"].as_array().unwrap();
                let mut values: Vec<Vec<u64>> = slots
                    .iter()
                    .map(|s| {
                        let mut all = Vec::new();
                        for pair in s["values"].as_array().unwrap() {
                            let n = pair[1].as_u64().unwrap();
                            assert!(n >= 1, "{it}");
                            for _ in 0..n {
                                all.push(pair[0].as_u64().unwrap());
                            }
                        }
                        all.reverse();
                        all
                    })
                    .collect();
                let reps = it["reps"].as_u64().unwrap();
                let first = it["first_index"].as_u64().unwrap();
                let mut index = first;
                for _ in 0..reps {
                    for (s, vals) in slots.iter().zip(values.iter_mut()) {
                        v.push((
                            index,
                            s["dir"].as_str().unwrap().chars().next().unwrap(),
                            s["phys"].as_u64().unwrap(),
                            vals.pop().expect("a value for every repetition"),
                        ));
                        index += 1;
                    }
                }
                assert!(
                    values.iter().all(|v| v.is_empty()),
                    "values left over: {it}"
                );
                assert_eq!(it["last_index"].as_u64().unwrap(), index - 1, "{it}");
                assert_eq!(it["accesses"].as_u64().unwrap(), index - first, "{it}");
            }
            _ => {}
        }
    }
    v
}

#[test]
fn folding_the_e1000_log_keeps_every_access_and_value_in_order() {
    let out = quiet(&["show", "--fold", "--json", E1000]);
    let items = json_lines(&out);
    let want: Vec<(u64, char, u64, u64)> = log_accesses()
        .into_iter()
        .map(|(i, d, a, v, _)| (i, d, a, v))
        .collect();
    assert_eq!(want.len(), 13105);
    assert_eq!(expand(&items), want);
    // Folded, the 13,117 lines are fewer than a third as many items.
    assert!(items.len() < 13117 / 3, "{} items", items.len());
    // Runs start and end where their accesses are in the log (times in µs).
    let ts: std::collections::HashMap<u64, u64> = log_accesses()
        .iter()
        .map(|&(i, _, _, _, us)| (i, us))
        .collect();
    for it in items.iter().filter(|it| it["kind"] == "run") {
        let first = it["first_index"].as_u64().unwrap();
        let last = it["last_index"].as_u64().unwrap();
        assert_eq!(it["first_ts_ns"].as_u64().unwrap(), ts[&first] * 1000);
        assert_eq!(it["last_ts_ns"].as_u64().unwrap(), ts[&last] * 1000);
    }
}

#[test]
fn the_eeprom_word_reads_fold_into_one_run_each() {
    // Independently: each data bit the driver reads from the EEPROM is a read of
    // EECD after a flushing read of STATUS after a write of EECD with SK (bit 0) up;
    // 16 bits a word.
    let acc = log_accesses();
    let bits = acc
        .windows(3)
        .filter(|w| {
            (w[0].1, w[0].2) == ('W', EECD)
                && w[0].3 & 1 == 1
                && (w[1].1, w[1].2) == ('R', STATUS)
                && (w[2].1, w[2].2) == ('R', EECD)
        })
        .count() as u64;
    assert_eq!(bits % 16, 0);
    let words = bits / 16;
    assert_eq!(words, 70);
    let out = quiet(&["analyze", "--json", "--db", DB, E1000]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let groups = v["maps"][0]["groups"].as_array().unwrap();
    let shape = |g: &Value| -> Vec<String> {
        g["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["dir"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let read_bits = groups
        .iter()
        .find(|g| shape(g) == ["W EECD", "R STATUS", "R EECD", "W EECD", "R STATUS"])
        .expect("the EEPROM's bit-read loop");
    assert!(read_bits["runs"].as_u64().unwrap() >= words, "{read_bits}");
    // Each word's bits (all but the one read while checking that the EEPROM
    // answered) in one run of 15, but for one word whose loop the driver left for
    // 1.05 ms (before event 296): a pause ends a run that writes, so that word's
    // loop is two runs, of 8 and 6, on either side of the pause.
    let text = quiet(&["show", "--fold", "--db", DB, E1000]);
    assert_eq!(text.matches("×15 of 5 accesses").count() as u64, words - 1);
    let items = json_lines(&quiet(&["show", "--fold", "--json", E1000]));
    let runs: Vec<(u64, u64, u64, usize)> = items
        .iter()
        .filter(|it| it["kind"] == "run")
        .map(|it| {
            (
                it["first_index"].as_u64().unwrap(),
                it["last_index"].as_u64().unwrap(),
                it["reps"].as_u64().unwrap(),
                it["slots"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert!(runs.contains(&(254, 293, 8, 5)), "{runs:?}");
    assert!(runs.contains(&(296, 325, 6, 5)), "{runs:?}");
    let gap = acc.iter().position(|a| a.0 == 296).unwrap();
    assert_eq!(acc[gap].4 - acc[gap - 1].4, 1051);
}

#[test]
fn the_init_sequence_ends_at_the_last_first_write_and_keeps_the_reset_sleeps() {
    let acc = log_accesses();
    // The rule, applied here: the last write to an address no earlier access wrote.
    let mut written = std::collections::HashSet::new();
    let mut end = 0;
    for &(i, d, a, _, _) in &acc {
        if d == 'W' && written.insert(a) {
            end = i;
        }
    }
    assert_eq!(end, 12186);
    let writes = acc.iter().filter(|a| a.1 == 'W' && a.0 <= end).count() as u64;
    // Pauses of 1 ms or more between two accesses, up to the end of init: the
    // reset's (17.2 ms and 15.9 ms after the driver asks for it) among them.
    let mut sleeps = Vec::new();
    for w in acc.windows(2).filter(|w| w[1].0 <= end) {
        if w[1].4 - w[0].4 >= 1000 {
            sleeps.push((w[1].0, (w[1].4 - w[0].4) * 1000));
        }
    }
    assert_eq!(sleeps[..2], [(20, 17_195_000), (21, 15_928_000)]);

    let out = quiet(&["analyze", "--json", "--db", DB, E1000]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let init = &v["maps"][0]["init"];
    assert_eq!(init["last_index"].as_u64(), Some(end));
    assert_eq!(init["last_write"]["name"], "ICS");
    assert_eq!(init["writes"].as_u64(), Some(writes));
    assert_eq!(init["waits"].as_u64(), Some(0));
    let got: Vec<(u64, u64)> = init["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "sleep")
        .map(|s| (s["index"].as_u64().unwrap(), s["ns"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, sleeps);
    // QEMU's e1000 answers at once: no polling loop in the log.
    assert_eq!(v["maps"][0]["polls"].as_array().unwrap().len(), 0);

    // The script replays every write of init in order, with the sleeps.
    let dir = reading::dir();
    let script = dir.join("e1000.script");
    quiet(&["analyze", "--script", reading::s(&script), E1000]);
    let script = std::fs::read_to_string(&script).unwrap();
    let ops: Vec<&str> = script
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("map "))
        .collect();
    let want: Vec<String> = {
        let mut w = Vec::new();
        let mut s = sleeps.iter().peekable();
        for &(i, d, a, val, _) in acc.iter().filter(|a| a.0 <= end) {
            if let Some(&&(si, ns)) = s.peek() {
                if si == i {
                    w.push(format!("delay {}", ns / 1000));
                    s.next();
                }
            }
            if d == 'W' {
                w.push(format!("write32 {:#06x} {val:#010x}", a - 0xfeb40000));
            }
        }
        w
    };
    assert_eq!(ops, want);
    assert!(script.contains("\nmap 1 0xfeb40000 0x20000\n"), "{script}");
}

#[test]
fn analyze_and_show_fold_say_what_is_wrong_with_their_input() {
    let o = run(&["analyze", "/nonexistent/x.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot open /nonexistent/x.log"));
    let bad = reading::tmp("bad.log", b"VERSION 20070824\nR 4 x\n");
    let o = run(&["analyze", reading::s(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let o = run(&["show", "--json", E1000]);
    assert_eq!(o.status.code(), Some(2), "--json needs --fold");
}

#[test]
fn diff_names_registers_and_ignores_what_it_is_told_to() {
    let log = std::fs::read_to_string(E1000).unwrap();
    // The probe's last first write (ICS, line 12186) with another value.
    let line = "W 4 3.935916 1 0xfeb400c8 0x4 0x0 0";
    assert_eq!(log.lines().nth(12185), Some(line));
    let changed = reading::tmp(
        "e1000-ics5.log",
        log.replace(line, "W 4 3.935916 1 0xfeb400c8 0x5 0x0 0")
            .as_bytes(),
    );
    let changed = reading::s(&changed);
    // The same log in the binary format: equal.
    let bin = reading::dir().join("e1000.mtb");
    quiet(&["convert", "--to", "binary", E1000, reading::s(&bin)]);
    assert_eq!(quiet(&["diff", E1000, reading::s(&bin)]), "");

    let o = run(&[
        "diff",
        "--db",
        DB,
        "--ignore-times",
        "-U",
        "1",
        E1000,
        changed,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let hunk: Vec<&str> = out.lines().skip(2).collect();
    // The hunk's item numbers count diff's folded items (folded as `show --fold` folds,
    // but never split at pauses: diff does not compare times), the same on both sides.
    let header = hunk[0]
        .strip_prefix("@@ -")
        .and_then(|h| h.strip_suffix(",3 @@"))
        .and_then(|h| h.split_once(",3 +"))
        .expect("a hunk header");
    assert_eq!(header.0, header.1, "{}", hunk[0]);
    let k: u64 = header.0.parse().unwrap();
    assert!((2000..12186).contains(&k), "{}", hunk[0]);
    assert_eq!(
        hunk,
        [
            format!("@@ -{k},3 +{k},3 @@").as_str(),
            " R4 0xfeb40008 STATUS => 0x80080783  #12185",
            "-W4 0xfeb400c8 ICS <= 0x00000004  #12186",
            "+W4 0xfeb400c8 ICS <= 0x00000005  #12186",
            " R4 0xfeb400c0 ICR => 0x00000004  #12187",
        ]
    );
    // Told to ignore ICS's values (by name, or by address): equal.
    for reg in ["ICS", "0xfeb400c8"] {
        let o = run(&["diff", "--db", DB, "--ignore-value", reg, E1000, changed]);
        assert_eq!(o.status.code(), Some(0), "{reg}: {}", text(&o.stdout));
    }
}

#[test]
fn diff_does_not_see_a_pause_that_only_timing_made() {
    // The same accesses, but every access after the 400th line 5 ms later (a scheduling
    // hiccup in the middle of the EEPROM's bit-banging): `show --fold` splits the run
    // there, `diff` must still find the logs equal.
    let log = std::fs::read_to_string(E1000).unwrap();
    let shifted: String = log
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(' ').collect();
            if i > 400 && (f[0] == "R" || f[0] == "W") {
                let ts: f64 = f[2].parse().unwrap();
                let mut g = f.clone();
                let t = format!("{:.6}", ts + 0.005);
                g[2] = &t;
                g.join(" ") + "\n"
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let late = reading::tmp("late.log", shifted.as_bytes());
    let folded = |p: &str| quiet(&["show", "--fold", p]).lines().count();
    assert_ne!(
        folded(E1000),
        folded(reading::s(&late)),
        "the pause splits a run"
    );
    let o = run(&["diff", E1000, reading::s(&late)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}
