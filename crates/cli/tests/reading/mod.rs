//! Helpers shared by the tests of the reading commands (`show`, `stats`, `convert`):
//! run the built binary, make input files in a scratch folder of the test binary.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `mmio-trace ARGS` (colour as it would choose it, `NO_COLOR` unset).
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

/// Bytes that must be UTF-8, as a string.
pub fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Standard output of a run that must succeed with nothing on standard error.
#[track_caller]
pub fn quiet(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "{args:?}");
    text(&o.stdout)
}

/// The scratch folder of this test binary.
pub fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mmio-trace-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A file `name` in the scratch folder holding `contents`.
pub fn tmp(name: &str, contents: &[u8]) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
