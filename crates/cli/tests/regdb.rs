//! `show --db` and `stats --db` end to end, on the e1000 kernel log, an NVIDIA
//! log against rnndb and an nRF51 log against its SVD.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("mmio-trace runs")
}

fn stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const E1000_LOG: &str = "tests/data/e1000-probe.mmiotrace";
const E1000_DB: &str = "registers/e1000.toml";

#[test]
fn show_names_every_status_and_eecd_access_of_the_e1000_log() {
    let text = stdout(&["show", "--db", E1000_DB, E1000_LOG]);
    let status: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" 0xfeb40008 "))
        .collect();
    let eecd: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" 0xfeb40010 "))
        .collect();
    assert_eq!(status.len(), 4992);
    assert_eq!(eecd.len(), 6651);
    for l in &status {
        assert!(
            l.ends_with(
                "  STATUS = FD | LU | FUNC_ID = 0 | SPEED = 1000MBS | ASDV = 1000MBS | MTXCKOK | PCIXSPD = 50_66MHZ | 0x80080000"
            ),
            "{l}"
        );
    }
    for l in &eecd {
        assert!(l.contains("  EECD = "), "{l}");
    }
    assert!(text.contains(
        "      2.470202  W4  0xfeb40010 <= 0x000001c6  map 1  EECD = CS | DI | FWE = 0 | EE_REQ | EE_GNT | EE_PRES\n"
    ));
    assert!(text.contains("  RAH[0x0] = RAH = 0x5634 | ASEL = DEST | AV\n"));
}

#[test]
fn selectors_bind_the_same_way() {
    let auto = stdout(&["show", "--db", E1000_DB, E1000_LOG]);
    for sel in ["@1", "@8086:100e", "@0xfeb40000"] {
        let spec = format!("{E1000_DB}{sel}");
        assert_eq!(stdout(&["show", "--db", &spec, E1000_LOG]), auto, "{sel}");
    }
    // A selector that matches nothing leaves the accesses unnamed.
    let other = stdout(&["show", "--db", &format!("{E1000_DB}@2"), E1000_LOG]);
    assert!(!other.contains("STATUS"));
    // Two databases bind by their PCI ids.
    let two = stdout(&[
        "show",
        "--db",
        "registers/edu.toml",
        "--db",
        E1000_DB,
        E1000_LOG,
    ]);
    assert_eq!(two, auto);
}

#[test]
fn stats_lists_the_hottest_registers_by_name() {
    let text = stdout(&["stats", "--db", E1000_DB, "--top", "3", E1000_LOG]);
    let i = text
        .find("hottest 3 of 384 registers:")
        .expect("a register table");
    let table: Vec<&str> = text[i..].lines().collect();
    let rows: Vec<Vec<&str>> = table[2..5]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["EECD", "1611", "5040"]);
    assert_eq!(rows[1], ["STATUS", "4992", "0"]);
    assert_eq!(rows[2], ["MDIC", "59", "59"]);
}

const NV_DB: &str = "crates/regdb/tests/data/rnndb/nv_mmio.xml";
const NV_LOG: &str = "crates/regdb/tests/data/nv-g84.mmiotrace";

#[test]
fn show_with_rnndb_detects_the_chipset_and_names_nvidia_registers() {
    let text = stdout(&["show", "--db", NV_DB, NV_LOG]);
    assert!(text.contains(
        "R4  0xfd000000 => 0x084300a2  map 1  PMC.ID = STEPPING = 0xa2 | DEVICE_ID = 0x3 | CHIPSET = G84 | FOUNDRY = TSMC\n"
    ), "{text}");
    assert!(
        text.contains("W4  0xfd000200 <= 0x00001101  map 1  PMC.ENABLE = UNK0 | PFIFO | PGRAPH\n")
    );
    assert!(text.contains("  PFIFO.CHAN_TABLE[0x3] = RAMFC_ADDR = 0x1234500 | RAMFC_TARGET = VRAM | UNK26 = 0 | ENABLE\n"));
    assert!(text.contains("  PMC+0xa00\n"));
    let g94 = stdout(&["show", "--db", NV_DB, "--variant", "G94", NV_LOG]);
    assert!(g94
        .contains("  PMC.NEW_ID = DEVICE_ID = 0x1 | BOOT_2 = 0 | STEPPING = 0 | CHIPSET = G84\n"));
}

#[test]
fn show_with_svd_names_physical_addresses() {
    let text = stdout(&[
        "show",
        "--db",
        "crates/regdb/tests/data/svd/nrf51.svd",
        "crates/regdb/tests/data/nrf51.mmiotrace",
    ]);
    assert!(
        text.contains("W4  0x40009508 <= 0x00000003  map 1  TIMER1.BITMODE = BITMODE = 32Bit\n"),
        "{text}"
    );
    assert!(text.contains("  GPIO.PIN_CNF3 = DIR = Output | INPUT = Disconnect | PULL = Disabled | DRIVE = S0S1 | SENSE = Disabled\n"));
}

fn bad(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_databases_exit_2_naming_file_line_and_problem() {
    let dir = std::env::temp_dir().join(format!("mmio-trace-regdb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("bad.toml");
    std::fs::write(
        &toml,
        "name = \"bad\"\n\n[[register]]\nname = \"CTRL\"\noffset = 0\nfields = [{ name = \"BIG\", bits = \"40:33\" }]\n",
    )
    .unwrap();
    let err = bad(&["show", "--db", toml.to_str().unwrap(), E1000_LOG]);
    assert_eq!(
        err,
        format!(
            "mmio-trace: {}:6: register CTRL, field BIG: bit 40 is outside the 32-bit register\n",
            toml.display()
        )
    );
    let xml = dir.join("bad.xml");
    std::fs::write(&xml, "<database>\n<domain name=\"D\">\n<reg32 offset=\"zz\" name=\"A\"/>\n</domain>\n</database>\n").unwrap();
    let err = bad(&["stats", "--db", xml.to_str().unwrap(), E1000_LOG]);
    assert_eq!(
        err,
        format!("mmio-trace: {}:3: \"zz\" is not a number\n", xml.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let err = bad(&["show", "--db", "registers/nosuch.toml", E1000_LOG]);
    assert!(
        err.starts_with("mmio-trace: registers/nosuch.toml: cannot read"),
        "{err}"
    );
    let err = bad(&["show", "--db", "registers/e1000.toml@zz", E1000_LOG]);
    assert!(err.contains("bad selector \"zz\""), "{err}");
    let err = bad(&["show", "--db", NV_DB, "--variant", "NV999", NV_LOG]);
    assert!(err.contains("unknown variant \"NV999\""), "{err}");
    bad(&["show", "--variant", "G84", NV_LOG]);
}
