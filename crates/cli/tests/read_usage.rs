//! The reading commands' messages and counts, and decoding paths no other fixture
//! reaches: errors said once, `--addr` with one address, `--db` for a map the log
//! lacks, what `stats` counts, losses without a count, 8-byte accesses in stand-alone
//! binary records, and negative signed register fields. Exact bytes and statuses.

use std::path::Path;

use mmio_trace_format::{Access, AnyReader, Direction, Event};

mod reading;

use reading::*;

/// What `mmio-trace demo` writes: a header, a map with its file, markers, accesses.
const DEMO: &str = "\
VERSION 20070824
PCIDEV 0000 80860d57 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 
PCIDEV 0008 1af41045 0 4000000004 0 0 0 0 0 0 80000 0 0 0 0 0 0 virtio-pci
MAP 0.006201 1 0x0 0x7fe953d2e000 0x1000 0x0 27580
MARK 0.006217 map 1 /tmp/dma-engine.regs offset 0x0 length 0x1000
MARK 0.006227 probe
R 4 0.006289 1 0x0 0x31414d44 0x55d8b1f68aac 27580
R 4 0.006300 1 0x4 0x10002 0x55d8b1f68aac 27580
W 4 0.006311 1 0x10 0x1 0x55d8b1f68788 27580
R 4 0.006324 1 0x14 0x5 0x55d8b1f68aac 27580
W 8 0.006334 1 0x20 0x100000000 0x55d8b1f687ec 27580
W 4 0.006352 1 0x10 0x6 0x55d8b1f68788 27580
MARK 0.006379 done
UNMAP 0.006384 1 0x0 27580
";

#[test]
fn an_error_whose_cause_repeats_is_said_once() {
    let d = dir().join("a-directory");
    std::fs::create_dir_all(&d).unwrap();
    let o = run(&["show", s(&d)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: reading {}: Is a directory (os error 21)\n",
            s(&d)
        )
    );
    let log = tmp("demo-err.log", DEMO.as_bytes());
    let o = run(&["convert", "--to", "text", s(&log), s(&d)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: cannot create {}: Is a directory (os error 21)\n",
            s(&d)
        )
    );
    // The program is named once, and the cause is said once (125: the trace could not
    // be written).
    let o = run(&["record", "-o", s(&d), "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("mmio-trace: cannot write the trace to "),
        "{err}"
    );
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert_eq!(err.matches("mmio-trace: ").count(), 1, "{err}");
}

#[test]
fn addr_takes_one_address_as_well_as_a_range_and_bad_ones_exit_2() {
    let log = tmp("demo-addr.log", DEMO.as_bytes());
    let one = quiet(&["show", "--addr", "0x10", "--reads", s(&log)]);
    assert_eq!(
        one,
        "      0.006201  MAP #1 0x0+0x1000 at 0x7fe953d2e000  pid 27580 pc 0x0\n\
         \x20     0.006217  MARK map 1 /tmp/dma-engine.regs offset 0x0 length 0x1000\n\
         \x20     0.006227  MARK probe\n\
         \x20     0.006379  MARK done\n\
         \x20     0.006384  UNMAP #1  pid 27580 pc 0x0\n"
    );
    let writes = quiet(&["show", "--addr", "16", "--writes", s(&log)]);
    assert_eq!(
        writes
            .lines()
            .filter(|l| l.contains("  W"))
            .collect::<Vec<_>>(),
        [
            "      0.006311  W4  0x00000010 <= 0x00000001  map 1  pid 27580 pc 0x55d8b1f68788",
            "      0.006352  W4  0x00000010 <= 0x00000006  map 1  pid 27580 pc 0x55d8b1f68788",
        ]
    );
    assert_eq!(
        quiet(&["show", "--addr", "0x10..0x10", s(&log)]),
        quiet(&["show", "--addr", "0x10", s(&log)])
    );
    let json: serde_json::Value =
        serde_json::from_str(&quiet(&["stats", "--json", "--addr", "0x14", s(&log)])).unwrap();
    assert_eq!(
        (json["reads"].as_u64(), json["writes"].as_u64()),
        (Some(1), Some(0))
    );

    for bad in ["0xzz", "5..4", "ten", ""] {
        let o = run(&["show", "--addr", bad, s(&log)]);
        assert_eq!(o.status.code(), Some(2), "--addr {bad:?}");
        assert_eq!(text(&o.stdout), "");
        assert!(
            text(&o.stderr).starts_with(&format!(
                "error: invalid value '{bad}' for '--addr <ADDR|LO..HI>': "
            )),
            "{}",
            text(&o.stderr)
        );
    }
}

#[test]
fn a_database_for_a_map_the_log_lacks_is_warned_about_naming_the_maps_it_has() {
    let db = tmp(
        "regs.toml",
        b"name = \"regs\"\n[[register]]\nname = \"CTRL\"\noffset = 0x10\n",
    );
    let log = tmp("demo-db.log", DEMO.as_bytes());
    let spec = format!("{}@9", s(&db));
    let o = run(&["show", "--db", &spec, s(&log)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), quiet(&["show", s(&log)]), "nothing named");
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {spec}: the log has no map 9; its maps: 1 at 0x0+0x1000\n"
        )
    );
    let o = run(&["stats", "--db", &spec, s(&log)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {spec}: the log has no map 9; its maps: 1 at 0x0+0x1000\n"
        )
    );
    // The right map names, without a word.
    let o = quiet(&["show", "--db", &format!("{}@1", s(&db)), s(&log)]);
    assert!(
        o.contains("<= 0x00000001  map 1  CTRL = 0x1  pid 27580"),
        "{o}"
    );

    // A PCI id or an address range the log does not have.
    let spec = format!("{}@8086:100e", s(&db));
    let o = run(&["stats", "--db", &spec, s(&log)]);
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {spec}: the log has no PCI device 8086:100e; its PCI \
             devices: 8086:0d57, 1af4:1045\n"
        )
    );
    let spec = format!("{}@0xfeb40000", s(&db));
    let o = run(&["show", "--db", &spec, s(&log)]);
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {spec}: no mapping of the log overlaps \
             0xfeb40000..0xfeb40014; its maps: 1 at 0x0+0x1000\n"
        )
    );
    // No selector, and two mappings at different addresses: which one is unknown.
    let two = tmp(
        "two-maps.log",
        format!("{DEMO}MAP 0.007000 2 0x1000 0x7fe953d2f000 0x1000 0x0 27580\n").as_bytes(),
    );
    let o = run(&["show", "--db", s(&db), s(&two)]);
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {}: the log maps 2 different addresses, so say which map \
             it describes with FILE@MAP_ID; its maps: 1 at 0x0+0x1000, 2 at 0x1000+0x1000\n",
            s(&db)
        )
    );
}

#[test]
fn stats_counts_events_apart_from_header_lines_and_labels_them() {
    let log = tmp("demo-stats.log", DEMO.as_bytes());
    let out = quiet(&["stats", s(&log)]);
    let head: Vec<&str> = out.lines().take(4).collect();
    assert_eq!(
        head,
        [
            format!(
                "{} (text): 11 events, 3 header lines (VERSION, PCIDEV)",
                s(&log)
            )
            .as_str(),
            "accesses: 6 (3 reads, 3 writes), 0 undecoded, 3 markers, 1 MAP, 1 UNMAP",
            "time: 0.006201 .. 0.006384 (0.000183 s)",
            "losses: none reported in the log",
        ]
    );
    let v: serde_json::Value = serde_json::from_str(&quiet(&["stats", "--json", s(&log)])).unwrap();
    assert_eq!(
        (
            v["events"].as_u64(),
            v["header_lines"].as_u64(),
            v["other_lines"].as_u64()
        ),
        (Some(11), Some(3), Some(0))
    );
    // A comment is neither; one event is singular.
    let one = tmp(
        "one.log",
        b"VERSION 20070824\n# a comment\nMARK 1.000000 alone\n",
    );
    assert!(quiet(&["stats", s(&one)]).starts_with(&format!(
        "{} (text): 1 event, 1 header line (VERSION, PCIDEV), 1 other line (comments, kernel \
         notes)\naccesses: 0 (0 reads, 0 writes), 0 undecoded, 1 marker, 0 MAP, 0 UNMAP\n",
        s(&one)
    )));
    // The same counts from the binary form.
    let bin = dir().join("demo-stats.mtb");
    quiet(&["convert", "--to", "binary", s(&log), s(&bin)]);
    assert_eq!(
        quiet(&["stats", s(&bin)]),
        out.replace(s(&log), s(&bin)).replace("(text)", "(binary)")
    );
}

#[test]
fn cpu_loss_lines_without_a_count_are_an_unknown_number_not_zero() {
    let only = tmp(
        "cpu-nocount.log",
        b"VERSION 20070824\nR 4 1.000000 1 0x10 0x1 0x0 0\nCPU:3 [LOST EVENTS]\nCPU:0 [LOST EVENTS]\n",
    );
    let out = quiet(&["stats", s(&only)]);
    assert_eq!(
        out.lines().nth(3),
        Some(
            "losses: an unknown number of events lost by ftrace (2 `CPU:N [LOST EVENTS]` lines \
             without a count)"
        ),
        "{out}"
    );
    let mixed = tmp(
        "cpu-mixed.log",
        b"VERSION 20070824\nCPU:1 [LOST 7 EVENTS]\nMARK 0.000000 Lost 5 events.\nCPU:2 [LOST EVENTS]\n",
    );
    let out = quiet(&["stats", s(&mixed)]);
    assert_eq!(
        out.lines().nth(2),
        Some(
            "losses: 5 events lost (1 `Lost N events.` marker); 7 events lost by ftrace (1 \
             `CPU:N [LOST M EVENTS]` line); an unknown number of events lost by ftrace (1 \
             `CPU:N [LOST EVENTS]` line without a count)"
        ),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&quiet(&["stats", "--json", s(&mixed)])).unwrap();
    assert_eq!(v["lost"]["cpu_lost_events"], 7);
    assert_eq!(v["lost"]["cpu_lost_unknown_count_lines"], 1);
    assert_eq!(v["lost"]["events_lost"], 5);
    // `show` says so too.
    assert_eq!(
        quiet(&["show", s(&only)]).lines().nth(2),
        Some("                LOST some events on CPU 3")
    );
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes and size code of a time field (1, 2, 4 or 8 bytes).
fn code2(v: u64) -> (usize, u8) {
    match v {
        0..=0xff => (1, 0),
        0x100..=0xffff => (2, 1),
        0x1_0000..=0xffff_ffff => (4, 2),
        _ => (8, 3),
    }
}

/// Bytes and size code of an address or value field (0..=6 or 8 bytes).
fn code3(v: u64) -> (usize, u8) {
    let n = (64 - v.leading_zeros()).div_ceil(8) as usize;
    if n >= 7 {
        (8, 7)
    } else {
        (n, n as u8)
    }
}

/// A version 1 binary log (stand-alone access records, no blocks) of `accesses`,
/// encoded here from the format's description, independently of the writer.
fn v1_log(accesses: &[Access]) -> Vec<u8> {
    let schema = b"test fixture";
    let mut b = b"\x89MMT\r\n\x1a\n".to_vec();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&(schema.len() as u32).to_le_bytes());
    b.extend_from_slice(schema);
    let (mut ts, mut phys, mut map, mut pc, mut pid) = (0u64, 0u64, 0i64, 0u64, 0u32);
    for a in accesses {
        assert!(a.width == 8 || a.width == 4 || a.width == 2 || a.width == 1);
        let mut tag = 0x10 | a.width.trailing_zeros() as u8;
        if a.dir == Direction::Write {
            tag |= 0x08;
        }
        if a.map_id != map {
            tag |= 0x20;
        }
        if a.pc != pc || a.pid != pid {
            tag |= 0x40;
        }
        let dt = a.ts_ns.wrapping_sub(ts) as i64;
        let t = if dt % 1000 == 0 {
            zz(dt / 1000) << 1 | 1
        } else {
            zz(dt) << 1
        };
        let p = zz(a.phys.wrapping_sub(phys) as i64);
        let ((tn, tc), (pn, pcode), (vn, vc)) = (code2(t), code3(p), code3(a.value()));
        b.push(tag);
        b.push(tc | pcode << 2 | vc << 5);
        b.extend_from_slice(&t.to_le_bytes()[..tn]);
        b.extend_from_slice(&p.to_le_bytes()[..pn]);
        b.extend_from_slice(&a.value().to_le_bytes()[..vn]);
        if tag & 0x20 != 0 {
            var(&mut b, zz(a.map_id.wrapping_sub(map)));
        }
        if tag & 0x40 != 0 {
            var(&mut b, zz(a.pc.wrapping_sub(pc) as i64));
            var(&mut b, a.pid as u64);
        }
        (ts, phys, map, pc, pid) = (a.ts_ns, a.phys, a.map_id, a.pc, a.pid);
    }
    b
}

/// 8-byte accesses whose values need all 8 bytes (and some fewer), with pc and
/// thread changes, nanosecond and microsecond time steps.
fn wide_narrow_accesses() -> Vec<Access> {
    (0..120u64)
        .map(|i| {
            let dir = if i % 2 == 0 {
                Direction::Write
            } else {
                Direction::Read
            };
            let value = match i % 4 {
                0 => 0x8877_6655_4433_2211u64.rotate_left(i as u32 * 8),
                1 => 0xfedc_ba98_7654_3210 ^ i,
                2 => 0x0000_00ff_0000_0001 + i,
                _ => u64::MAX - i,
            };
            let mut a = Access::new(
                dir,
                8,
                2_000_000_000 + i * 1_000 + (i % 3) * 7,
                1 + (i / 60) as i64,
                0x3_8000_0000 + (i % 8) * 8,
                value,
            );
            a.pc = 0x55d8_b1f6_8000 + (i % 5) * 0x10;
            a.pid = 4000 + (i % 2) as u32;
            a
        })
        .collect()
}

#[test]
fn eight_byte_accesses_in_stand_alone_binary_records_read_back_exactly() {
    let accesses = wide_narrow_accesses();
    let bytes = v1_log(&accesses);
    // Long enough that most records are decoded by the batch loop's fast path, and
    // the last ones (near the end of the buffer) by the general one.
    assert!(bytes.len() > 1200, "{}", bytes.len());
    let path = tmp("narrow8.mtb", &bytes);
    let want: Vec<Event> = accesses.iter().cloned().map(Event::Access).collect();

    // As the commands read: in batches; and one at a time.
    let mut r = AnyReader::open(&path).unwrap();
    let (mut got, mut batch) = (Vec::new(), Vec::new());
    while r.read_batch(&mut batch, 256).unwrap() > 0 {
        got.extend(batch.iter().cloned());
    }
    assert_eq!(got, want);
    let one: Vec<Event> = AnyReader::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(one, want);

    // Through the binary: every value, all 16 digits.
    let shown = quiet(&["show", s(&path)]);
    let expect: String = accesses
        .iter()
        .map(|a| {
            let (l, arrow) = match a.dir {
                Direction::Read => ('R', "=>"),
                Direction::Write => ('W', "<="),
            };
            format!(
                "{:>14}  {l}8  {:#010x} {arrow} 0x{:016x}  map {}  pid {} pc {:#x}\n",
                format!(
                    "{}.{:06}",
                    a.ts_ns / 1_000_000_000,
                    a.ts_ns / 1000 % 1_000_000
                ),
                a.phys,
                a.value(),
                a.map_id,
                a.pid,
                a.pc
            )
        })
        .collect();
    assert_eq!(shown, expect);
    assert!(shown.contains(" <= 0x8877665544332211  map 1  pid 4000 pc 0x55d8b1f68000\n"));

    // And in access blocks, as the writer puts them: the same events back.
    let blocks = dir().join("narrow8-blocks.mtb");
    quiet(&["convert", "--to", "binary", s(&path), s(&blocks)]);
    assert!(
        std::fs::read(&blocks).unwrap().contains(&0x8a),
        "a context block"
    );
    assert_eq!(quiet(&["show", s(&blocks)]), expect);
}

#[test]
fn negative_signed_register_fields_decode_with_their_sign() {
    let db = tmp(
        "signed.toml",
        br#"name = "sensor"
[[register]]
name = "TEMP"
offset = 0x0
fields = [
  { name = "LO", bits = "7:0", type = "int" },
  { name = "HI", bits = "15:8", type = "int" },
  { name = "WIDE", bits = "31:16", type = "int" },
]
[[register]]
name = "OFFSET"
offset = 0x8
width = 64
type = "int"
[[register]]
name = "COUNT"
offset = 0x10
type = "uint"
"#,
    );
    let log = tmp(
        "signed.log",
        b"VERSION 20070824\n\
          MAP 1.000000 1 0xfe000000 0x7f0000000000 0x1000 0x0 0\n\
          R 4 1.000001 1 0xfe000000 0x80017ffe 0x0 0\n\
          R 4 1.000002 1 0xfe000000 0x7fff807f 0x0 0\n\
          R 8 1.000003 1 0xfe000008 0xffffffffffffffff 0x0 0\n\
          R 8 1.000004 1 0xfe000008 0x8000000000000000 0x0 0\n\
          R 8 1.000005 1 0xfe000008 0x7fffffffffffffff 0x0 0\n\
          R 4 1.000006 1 0xfe000010 0xffffffff 0x0 0\n",
    );
    let shown = quiet(&["show", "--db", s(&db), s(&log)]);
    let described: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.split_once("map 1  ").map(|(_, d)| d))
        .collect();
    assert_eq!(
        described,
        [
            "TEMP = LO = -2 | HI = 127 | WIDE = -32767",
            "TEMP = LO = 127 | HI = -128 | WIDE = 32767",
            "OFFSET = -1",
            "OFFSET = -9223372036854775808",
            "OFFSET = 9223372036854775807",
            "COUNT = 4294967295",
        ]
    );
}

#[test]
fn an_nvidia_database_whose_chipset_was_never_detected_is_warned_about() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let db = root.join("crates/regdb/tests/data/rnndb/nv_mmio.xml");
    let whole =
        std::fs::read_to_string(root.join("crates/regdb/tests/data/nv-g84.mmiotrace")).unwrap();
    // Without its read of PMC.ID (BAR0 offset 0) no chipset is detected.
    let pmc_id = "R 4 0.100010 1 0xfd000000 0x84300a2 0x0 0\n";
    assert!(whole.contains(pmc_id));
    let log = tmp("nv-no-id.log", whole.replace(pmc_id, "").as_bytes());
    let o = run(&["show", "--db", s(&db), s(&log)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stderr),
        format!(
            "mmio-trace: warning: --db {}: the NVIDIA chipset was not detected (the log has no \
             read of PMC.ID, BAR0 offset 0): accesses were named as if every chipset's \
             registers applied; give the chipset with --variant NAME\n",
            s(&db)
        )
    );
    // Given, or detected: not a word.
    quiet(&["show", "--variant", "G84", "--db", s(&db), s(&log)]);
    let full = tmp("nv-full.log", whole.as_bytes());
    quiet(&["stats", "--db", s(&db), s(&full)]);
}
