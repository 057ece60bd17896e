//! Bad databases: every problem is an error naming file, line and what is wrong.

use std::path::PathBuf;

use mmio_trace_regdb::{load, Error};

/// Writes `files` (name, text) into a fresh folder and loads the first.
fn load_files(tag: &str, files: &[(&str, &str)]) -> Result<mmio_trace_regdb::Database, Error> {
    let dir: PathBuf = std::env::temp_dir().join(format!("regdb-bad-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let r = load(&dir.join(files[0].0));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn err(tag: &str, files: &[(&str, &str)]) -> (String, Option<u32>, String) {
    let e = load_files(tag, files).expect_err("the database is bad");
    let file = PathBuf::from(&e.file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (file, e.line, e.message)
}

#[test]
fn toml_syntax_error_names_its_line() {
    let (f, line, msg) = err(
        "syntax",
        &[("d.toml", "name = \"x\"\n\n[[register]\nname = \"A\"\n")],
    );
    assert_eq!((f.as_str(), line), ("d.toml", Some(3)));
    assert!(!msg.is_empty());
}

#[test]
fn toml_field_outside_register_names_register_field_and_line() {
    let text = "[[register]]\nname = \"CTRL\"\noffset = 0\nfields = [\n  { name = \"EN\", bits = 0 },\n  { name = \"BIG\", bits = \"40:33\" },\n]\n";
    let (f, line, msg) = err("bits", &[("d.toml", text)]);
    assert_eq!((f.as_str(), line), ("d.toml", Some(6)));
    assert_eq!(
        msg,
        "register CTRL, field BIG: bit 40 is outside the 32-bit register"
    );
}

#[test]
fn toml_unknown_key_and_bad_values_are_reported() {
    let (_, line, msg) = err(
        "key",
        &[("d.toml", "[[register]]\nname = \"A\"\noffest = 4\n")],
    );
    assert_eq!(line, Some(3));
    assert!(msg.contains("offest"), "{msg}");

    let (_, line, msg) = err(
        "width",
        &[(
            "d.toml",
            "[[register]]\nname = \"A\"\noffset = 0\nwidth = 24\n",
        )],
    );
    assert_eq!(line, Some(1));
    assert_eq!(msg, "width 24: must be 8, 16, 32 or 64 bits");

    let text = "[[register]]\nname = \"A\"\noffset = 0\n\n[[register]]\nname = \"B\"\noffset = 2\n";
    let (_, line, msg) = err("overlap", &[("d.toml", text)]);
    assert_eq!(line, Some(5));
    assert_eq!(msg, "B at 0x2 overlaps A (0x0..0x4)");

    let (_, line, msg) = err("pci", &[("d.toml", "pci = [\"8086\"]\n")]);
    assert_eq!(line, Some(1));
    assert!(msg.starts_with("bad PCI id \"8086\""), "{msg}");

    let text = "[[register]]\nname = \"A\"\noffset = 0\nfields = [{ name = \"M\", bits = \"3:1\", values = { 9 = \"X\" } }]\n";
    let (_, line, msg) = err("value", &[("d.toml", text)]);
    assert_eq!(line, Some(4));
    assert_eq!(msg, "register A, field M: value 9 does not fit in 3 bits");
}

#[test]
fn rnndb_malformed_xml_names_its_line() {
    let text = "<?xml version=\"1.0\"?>\n<database>\n<domain name=\"D\">\n<reg32 offset=\"0\" name=\"A\">\n</domain>\n</database>\n";
    let (f, line, msg) = err("xml", &[("d.xml", text)]);
    assert_eq!((f.as_str(), line), ("d.xml", Some(5)));
    assert!(msg.starts_with("not well-formed XML"), "{msg}");
}

#[test]
fn rnndb_semantic_errors_name_file_and_line() {
    let text = "<database>\n<domain name=\"D\">\n  <reg32 offset=\"0\" name=\"A\" colour=\"red\"/>\n</domain>\n</database>\n";
    let (_, line, msg) = err("attr", &[("d.xml", text)]);
    assert_eq!(line, Some(3));
    assert_eq!(msg, "unknown attribute \"colour\" on <reg32>");

    let text = "<database>\n<import file=\"missing.xml\"/>\n</database>\n";
    let (_, line, msg) = err("import", &[("d.xml", text)]);
    assert_eq!(line, Some(2));
    assert!(
        msg.starts_with("imported file \"missing.xml\" not found"),
        "{msg}"
    );

    // The error is in the imported file, and says so.
    let top = "<database>\n<import file=\"sub/regs.xml\"/>\n</database>\n";
    let sub = "<database>\n<enum name=\"chip\"><value name=\"A\"/><value name=\"B\"/></enum>\n<domain name=\"D\" varset=\"chip\">\n\n  <reg32 offset=\"0\" name=\"X\" variants=\"A:Q\"/>\n</domain>\n</database>\n";
    let (f, line, msg) = err("variant", &[("top.xml", top), ("sub/regs.xml", sub)]);
    assert_eq!((f.as_str(), line), ("regs.xml", Some(5)));
    assert_eq!(msg, "variant \"Q\" is not in enum chip");

    let text = "<database>\n<domain name=\"D\">\n  <array offset=\"0\" name=\"A\" length=\"2\"/>\n</domain>\n</database>\n";
    let (_, line, msg) = err("stride", &[("d.xml", text)]);
    assert_eq!(line, Some(3));
    assert_eq!(msg, "array A: stride is missing or 0");

    let text = "<database>\n<domain name=\"D\">\n  <reg32 offset=\"0\" name=\"A\" type=\"nosuch\"/>\n</domain>\n</database>\n";
    let (_, line, msg) = err("type", &[("d.xml", text)]);
    assert_eq!(line, Some(3));
    assert_eq!(msg, "unknown type \"nosuch\"");
}

#[test]
fn svd_errors_name_the_line() {
    let text = "<?xml version=\"1.0\"?>\n<device>\n  <name>X</name>\n  <peripherals>\n    <peripheral>\n      <name>P</name>\n      <baseAddress>zz</baseAddress>\n    </peripheral>\n  </peripherals>\n</device>\n";
    let (f, line, msg) = err("svd", &[("d.svd", text)]);
    assert_eq!(f, "d.svd");
    assert!(line.is_some(), "{msg}");
    assert!(msg.contains("zz") || msg.contains("baseAddress"), "{msg}");
}

#[test]
fn unknown_formats_and_missing_files_are_errors() {
    let (_, _, msg) = err("fmt", &[("d.xml", "<?xml version=\"1.0\"?>\n<html/>\n")]);
    assert!(msg.contains("root element <html>"), "{msg}");
    let e = load(std::path::Path::new("/nonexistent/regs.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/regs.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn extreme_numbers_do_not_panic() {
    let text = "[[register]]\nname = \"TOP\"\noffset = 0xfffffffffffffff0\ncount = 0xffffffffffff\nstride = 0x10\nfields = [{ name = \"F\", bits = \"31:0\", type = \"uint\", shr = 200 }]\n\n[[block]]\nname = \"B\"\noffset = 0xffffffffffffff00\ncount = 3\nstride = 0x40\n[[block.register]]\nname = \"R\"\noffset = 0\n";
    if let Ok(db) = load_files("extreme", &[("d.toml", text)]) {
        let v = mmio_trace_regdb::Variants::default();
        for off in [0, 0xffffffffffffff00, 0xfffffffffffffff0, u64::MAX] {
            if let Some(h) = db.lookup(off, &v) {
                if let Some(r) = h.register {
                    let _ = r.decode_access(h.within, 8, u64::MAX, &v);
                }
            }
        }
    }
    let (_, line, msg) = err("bar", &[("d.toml", "bar = 9\n")]);
    assert_eq!(line, None);
    assert!(msg.starts_with("bar 9:"), "{msg}");
}
