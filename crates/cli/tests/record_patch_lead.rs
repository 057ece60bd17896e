//! Hot-site patching cases the lead wrote alongside the patcher: code unloaded and
//! replaced at the same address.

mod common;

use std::process::Command;

use common::*;

/// Builds a one-function shared library `touch` from C source `body`.
fn library(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(
        &src,
        format!(
            "#include <stdint.h>\nuint32_t touch(volatile uint32_t *p, uint32_t v) {{ {body} }}\n"
        ),
    )
    .unwrap();
    let lib = dir.join(format!("{name}.so"));
    let st = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success());
    lib
}

#[test]
fn a_site_unloaded_and_replaced_by_other_code_is_traced_as_the_new_code() {
    let f = Fixture::new("patch-lead-dl", "lead_dl", 4096);
    let a = library(&f.dir, "liba", "(void)v; return *p;");
    let b = library(&f.dir, "libb", "*p = v; return 0;");
    let n = 200u64;
    let (out, ev) = f.record_env(
        &[("MMIO_TRACE_PATCH_AFTER", "4")],
        &[],
        &[a.to_str().unwrap(), b.to_str().unwrap(), &n.to_string()],
    );
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("same\n"),
        "the second library was not loaded where the first was: {text}"
    );
    let mut want: Vec<(char, u8, u64, u64)> = (0..n)
        .map(|i| ('R', 4, 4 * (i % 16), u64::from(initial_word(4 * (i % 16)))))
        .collect();
    want.extend((0..n).map(|i| ('W', 4, 64 + 4 * (i % 16), 0x5000 + i)));
    // The program's own check of what it wrote.
    want.extend((n - 16..n).map(|j| ('R', 4, 64 + 4 * (j % 16), 0x5000 + j)));
    let got = accesses(&ev);
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(got.len(), want.len(), "first difference at {first:?}");
    assert_eq!(
        first,
        None,
        "{:?} vs {:?}",
        first.map(|i| got[i]),
        first.map(|i| want[i])
    );
}

#[test]
fn a_device_gone_under_a_patched_site_faults_as_natively() {
    // Without a handler the program dies of SIGBUS (128 + 7); with one, the handler gets
    // the program's own address, not the tracer's alias.
    for handle in [false, true] {
        let f = Fixture::new("patch-lead-gone", "lead_gone", 8192);
        let args: &[&str] = if handle { &["handle"] } else { &[] };
        let (out, ev) = f.record_env(&[("MMIO_TRACE_PATCH_AFTER", "4")], &[], args);
        if handle {
            assert_exit(&out, 0);
            assert_eq!(stdout(&out), "SIGBUS at the program's address\n");
        } else {
            assert_exit(&out, 135);
        }
        let want: Vec<(char, u8, u64, u64)> = (0..200u64)
            .map(|i| ('R', 4, 4 * (i % 16), u64::from(initial_word(4 * (i % 16)))))
            .collect();
        assert_eq!(accesses(&ev), want);
    }
}
