//! `kernel record`'s trace file is created readable by its owner only, as `record`'s:
//! a trace holds what drivers wrote to their devices.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use mmio_trace_kernel::{record, Options};

#[test]
fn the_kernel_trace_file_is_created_0600() {
    let root = std::env::temp_dir().join(format!("mmio-trace-kmode-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (t, c) = (root.join("tracing"), root.join("cpu"));
    fs::create_dir_all(&t).unwrap();
    fs::create_dir_all(&c).unwrap();
    fs::write(t.join("available_tracers"), "mmiotrace nop\n").unwrap();
    fs::write(t.join("current_tracer"), "nop\n").unwrap();
    fs::write(t.join("buffer_size_kb"), "1408\n").unwrap();
    fs::write(t.join("trace_marker"), "").unwrap();
    fs::write(t.join("trace_pipe"), "VERSION 20070824\n").unwrap();
    fs::write(c.join("online"), "0\n").unwrap();
    let out = root.join("out.mmiotrace");
    let mut o = Options::new(out.clone(), vec!["true".into()]);
    o.tracefs = Some(t);
    o.cpu_dir = c;
    o.skip_root_check = true;
    o.active_file = None;
    record(&o).unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), "VERSION 20070824\n");
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = fs::remove_dir_all(&root);
}
