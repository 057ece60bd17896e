//! `show --db` against `show` on the real e1000 log repeated 40 times, interleaved in
//! the same run (best of 5 each): the cost of naming every access.
//!
//! `cargo bench -p mmio-trace --bench show_db` (issue target: at least 0.5).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let log = std::fs::read_to_string(root.join("tests/data/e1000-probe.mmiotrace")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first_access = lines.iter().position(|l| l.starts_with("R ")).unwrap();
    let mut big = lines[..first_access].join("\n") + "\n";
    let body = lines[first_access..].join("\n");
    for _ in 0..40 {
        big.push_str(&body);
        big.push('\n');
    }
    let dir = std::env::temp_dir().join(format!("mmio-trace-show-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e1000x40.mmiotrace");
    std::fs::write(&path, big).unwrap();
    let path = path.to_str().unwrap();
    let db = root.join("registers/e1000.toml");
    let db = db.to_str().unwrap();

    let time = |args: &[&str]| -> Duration {
        let t = Instant::now();
        let st = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        t.elapsed()
    };
    let (mut plain, mut named) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        plain = plain.min(time(&["show", path]));
        named = named.min(time(&["show", "--db", db, path]));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "show: {plain:?}  show --db: {named:?}  speed of show --db relative to show: {:.2} (target >= 0.5)",
        plain.as_secs_f64() / named.as_secs_f64()
    );
}
