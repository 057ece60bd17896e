//! `analyze`, `show --fold` and `diff` on recordings of tests/programs/story_init.c,
//! a bring-up whose story is known: reset, a wait for bit 3 of STATUS (51 reads),
//! three configuration writes, then a steady state.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{code, record, stderr, stdout, Fixture};
use mmio_trace_format::Event;

/// Resets the device file: two identical 4 KiB pages whose word k holds 0x1000 + k.
fn fresh_device(dev: &Path) {
    let mut v = Vec::new();
    for _ in 0..2 {
        for k in 0..1024u32 {
            v.extend_from_slice(&(0x1000 + k).to_le_bytes());
        }
    }
    std::fs::write(dev, v).unwrap();
}

/// Records `story_init DEV ARGS` on a fresh device into `DIR/NAME`; returns the
/// log's path and its events.
fn recording(f: &Fixture, name: &str, args: &[&str]) -> (PathBuf, Vec<Event>) {
    fresh_device(&f.dev);
    let mut program = vec![f.exe.as_os_str(), f.dev.as_os_str()];
    program.extend(args.iter().map(std::ffi::OsStr::new));
    let (out, events) = record(&f.dir, &f.dev, &program);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let path = f.dir.join(name);
    std::fs::rename(common::trace_log(&f.dir), &path).unwrap();
    (path, events)
}

fn mmio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Events before the first MAP (VERSION, the machine's PCIDEV lines).
fn header_len(events: &[Event]) -> u64 {
    events
        .iter()
        .position(|e| matches!(e, Event::Map(_)))
        .unwrap() as u64
}

#[test]
fn analyze_finds_the_wait_and_the_init_order_of_a_recorded_program() {
    let f = Fixture::new("analyze", "story_init", 8192);
    let (log, events) = recording(&f, "a.log", &[]);
    let h = header_len(&events);

    let o = mmio(&["show", "--fold", s(&log)]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("R4  0x00000008 ×51 = 0x00001002 … until 0x0000100a (bit 3 set), "),
        "{text}"
    );

    let script = f.dir.join("init.txt");
    let script_json = f.dir.join("init.json");
    let o = mmio(&[
        "analyze",
        "--json",
        "--script",
        s(&script),
        "--script-json",
        s(&script_json),
        s(&log),
    ]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let map = &v["maps"][0];
    let polls = map["polls"].as_array().unwrap();
    assert_eq!(polls.len(), 1, "{polls:?}");
    let p = &polls[0];
    assert_eq!(p["phys"], 8);
    assert_eq!(p["reads"], 51);
    assert_eq!(p["from"], 0x1002);
    assert_eq!(p["until"], 0x100a);
    assert_eq!(p["mask"], 8);
    assert_eq!(p["change"], "bit 3 set");
    // MAP, MARK, W CTRL, then the 51 reads.
    assert_eq!(p["first_index"].as_u64(), Some(h + 4));
    assert_eq!(p["last_index"].as_u64(), Some(h + 54));
    assert_ne!(p["pc"], 0);
    let init = &map["init"];
    // W CTRL, 51 reads, W CFG0, W CFG1, W DOORBELL: the last first write.
    assert_eq!(init["last_index"].as_u64(), Some(h + 57));
    assert_eq!(init["last_write"]["phys"], 0x18);
    assert_eq!(init["writes"], 4);
    assert_eq!(init["waits"], 1);
    // Hot registers: STATUS (51 + 4 reads), then DOORBELL (5 writes).
    let hot = map["hot_registers"].as_array().unwrap();
    assert_eq!(
        (hot[0]["phys"].as_u64(), hot[0]["reads"].as_u64()),
        (Some(8), Some(55))
    );
    assert_eq!(
        (hot[1]["phys"].as_u64(), hot[1]["writes"].as_u64()),
        (Some(0x18), Some(5))
    );
    // The hottest call site is the polling read, 51 times.
    assert_eq!(map["hot_sites"][0]["accesses"], 51);
    assert_eq!(map["hot_sites"][0]["pc"], p["pc"]);

    // The script: writes and the wait, offsets within the map. A loaded machine
    // may pause the program for a millisecond between two steps (a `delay`).
    let text = std::fs::read_to_string(&script).unwrap();
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("delay "))
        .map(|l| l.split("  #").next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "map 1 0x0 0x1000",
            "write32 0x0000 0x00000001",
            "wait32 0x0008 0x00000008 0x00000008",
            "write32 0x0010 0x00000abc",
            "write32 0x0014 0x00000005",
            "write32 0x0018 0x00000001",
        ]
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&script_json).unwrap()).unwrap();
    let ops: Vec<String> = j["maps"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["op"] != "delay")
        .map(|s| match s["op"].as_str().unwrap() {
            "write" => format!("w {} {}", s["offset"], s["value"]),
            "wait" => format!(
                "wait {} {} {} {}",
                s["offset"], s["mask"], s["value"], s["polls"]
            ),
            o => panic!("{o}"),
        })
        .collect();
    assert_eq!(
        ops,
        ["w 0 1", "wait 8 8 8 51", "w 16 2748", "w 20 5", "w 24 1"]
    );
}

#[test]
fn the_init_sequence_takes_the_wait_right_after_its_last_first_write() {
    let f = Fixture::new("wait", "story_init", 8192);
    let (log, _) = recording(&f, "w.log", &["w"]);
    let script = f.dir.join("init.txt");
    let o = mmio(&["analyze", "--script", s(&script), s(&log)]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&script).unwrap();
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("delay "))
        .map(|l| l.split("  #").next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "map 1 0x0 0x1000",
            "write32 0x0000 0x00000001",
            "wait32 0x0008 0x00000008 0x00000008",
            "write32 0x0010 0x00000abc",
            "write32 0x0014 0x00000005",
            "write32 0x0018 0x00000001",
            "wait32 0x001c 0x00000001 0x00000000",
        ]
    );
    assert!(
        text.contains("wait32 0x001c 0x00000001 0x00000000  # 21 polls, "),
        "{text}"
    );
}

#[test]
fn diff_of_two_recordings_shows_the_changed_value_and_the_added_access() {
    let f = Fixture::new("diff", "story_init", 8192);
    let (a, events) = recording(&f, "a.log", &[]);
    let (a2, _) = recording(&f, "a2.log", &[]);
    let (b, _) = recording(&f, "b.log", &["b"]);
    let h = header_len(&events);

    // A trace against itself, and against another run of the same program.
    for other in [&a, &a2] {
        let o = mmio(&["diff", s(&a), s(other)]);
        assert_eq!(code(&o), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), "");
    }

    // A device that took longer to answer: the same story.
    let (slow, _) = recording(&f, "slow.log", &["a", "0", "300"]);
    let o = mmio(&["diff", s(&a), s(&slow)]);
    assert_eq!(code(&o), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = mmio(&["show", "--fold", s(&slow)]);
    assert!(stdout(&o).contains("×301 = 0x00001002 … until 0x0000100a (bit 3 set)"));

    // Items: header (less the loaded objects' markers, which diff leaves out), MAP,
    // MARK, W CTRL, the folded wait, W CFG0, then W CFG1.
    let objects = events[..h as usize]
        .iter()
        .filter(|e| matches!(e, Event::Mark(m) if m.text.starts_with(b"object pid ")))
        .count() as u64;
    assert!(objects >= 3, "the executable, libc and the vDSO at least");
    let item = h - objects + 6;
    let event = h + 56;
    let o = mmio(&["diff", "--ignore-times", "-U", "0", s(&a), s(&b)]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "--- {}\n+++ {}\n@@ -{item} +{item},2 @@\n\
             -W4 0x00000014 <= 0x00000005  #{event}\n\
             +W4 0x00000014 <= 0x00000006  #{event}\n\
             +R4 0x00000020 => 0x00001008  #{}\n",
            s(&a),
            s(&b),
            event + 1
        )
    );

    // The same as JSON.
    let o = mmio(&["diff", "--json", "--ignore-times", "-U", "0", s(&a), s(&b)]);
    assert_eq!(code(&o), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["equal"], false);
    let hunks = v["hunks"].as_array().unwrap();
    assert_eq!(hunks.len(), 1);
    let ops: Vec<(&str, Option<u64>, Option<u64>)> = hunks[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["op"].as_str().unwrap(),
                l["a_index"].as_u64(),
                l["b_index"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("delete", Some(event), None),
            ("insert", None, Some(event)),
            ("insert", None, Some(event + 1))
        ]
    );

    // Ignoring CFG1's value leaves only the added read.
    let o = mmio(&[
        "diff",
        "--ignore-times",
        "-U",
        "0",
        "--ignore-value",
        "0x14",
        s(&a),
        s(&b),
    ]);
    assert_eq!(code(&o), Some(1));
    let out = stdout(&o);
    let body: Vec<&str> = out.lines().skip(3).collect();
    assert_eq!(
        body,
        [format!("+R4 0x00000020 => 0x00001008  #{}", event + 1)]
    );

    // Trouble: exit status 2.
    let o = mmio(&["diff", s(&a), "/nonexistent/b.log"]);
    assert_eq!(code(&o), Some(2));
    assert!(
        stderr(&o).contains("cannot open /nonexistent/b.log"),
        "{}",
        stderr(&o)
    );
    let o = mmio(&["diff", "--ignore-value", "CFG1", s(&a), s(&b)]);
    assert_eq!(code(&o), Some(2));
    assert!(stderr(&o).contains("needs --db"), "{}", stderr(&o));
}

#[test]
fn diff_of_two_recordings_mapped_at_different_addresses() {
    let f = Fixture::new("bases", "story_init", 8192);
    let (a, _) = recording(&f, "a.log", &[]);
    let (c, events) = recording(&f, "c.log", &["a", "4096"]);
    // The second run's map starts at file offset 0x1000: every address differs.
    let map = events
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(*m),
            _ => None,
        })
        .unwrap();
    assert_eq!(map.phys, 0x1000);
    let o = mmio(&["diff", "--ignore-times", s(&a), s(&c)]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("+W4 0x00001000 <= 0x00000001"),
        "{}",
        stdout(&o)
    );
    // Offsets within the map agree.
    let o = mmio(&["diff", "--ignore-base", s(&a), s(&c)]);
    assert_eq!(code(&o), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "");
}
