//! Builds the freestanding agent blob (`crates/agent`, its own workspace) and puts it in
//! `OUT_DIR` for `src/agent.rs` to embed.
//!
//! The agent is always built in release (LTO, `panic = "abort"`: it is the fault path of
//! traced programs) into one target directory next to this build's (`<target>/agent`),
//! shared by debug, release, test and clippy builds, so it is built once and then only
//! checked; Cargo's lock on that directory serialises concurrent builds.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crates/record is two levels below the repository root");
    let agent = root.join("crates/agent");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));

    for p in [
        "crates/agent/src",
        "crates/agent/build.rs",
        "crates/agent/Cargo.toml",
        "crates/agent/Cargo.lock",
        "crates/tracer/src",
        "crates/tracer/Cargo.toml",
        "crates/x86/src",
        "crates/x86/Cargo.toml",
        "crates/ring/src",
        "crates/ring/Cargo.toml",
        // The workspace's dependency table (iced-x86's features, libc's version).
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_NET_OFFLINE");

    let target_dir = agent_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(agent.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&agent);
    if env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true" || v == "1") {
        cmd.arg("--offline");
    }
    // What cargo sets for this build script, or the user for the outer build, must not
    // reach the nested one: flags meant for the workspace (RUSTFLAGS with
    // `-C target-cpu=native`, `-D warnings`, coverage), a wrapper (sccache, clippy-driver
    // when this runs under `cargo clippy`), the outer target directory, target or profile.
    // The jobserver (CARGO_MAKEFLAGS) stays: the nested build shares the outer's job
    // slots. The toolchain stays the same: RUSTC, RUSTUP_TOOLCHAIN are kept.
    for (k, _) in env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        let keep = matches!(
            name,
            "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE" | "CARGO_TERM_COLOR"
        ) || name.starts_with("CARGO_REGISTRIES_")
            || name.starts_with("CARGO_HTTP_")
            || name.starts_with("CARGO_NET_");
        let drop = (name.starts_with("CARGO_") && !keep)
            || matches!(
                name,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_LINKER"
                    | "CLIPPY_ARGS"
                    | "CLIPPY_CONF_DIR"
            );
        if drop {
            cmd.env_remove(&k);
        }
    }
    // PIE code generation, whatever the target's default.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=pie");

    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run cargo to build the agent ({}): {e}",
            agent.display()
        )
    });
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!(
            "building the agent blob failed ({}; command: {cmd:?})",
            out.status
        );
    }
    let built = target_dir.join("release").join("mmio-trace-agent");
    let dest = out_dir.join("mmio-trace-agent");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| {
        panic!(
            "cannot copy the agent blob {} to {}: {e}",
            built.display(),
            dest.display()
        )
    });
}

/// `<target>/agent` for this build's target directory (`OUT_DIR` is
/// `<target>[/<triple>]/<profile>/build/<package>-<hash>/out`); a directory in `OUT_DIR`
/// when that layout is not recognised.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
    let target = env::var_os("TARGET");
    out_dir
        .ancestors()
        .find(|p| p.file_name() == Some(OsStr::new("build")))
        .and_then(Path::parent) // <profile>
        .and_then(Path::parent) // <target> or <target>/<triple>
        .and_then(|t| {
            if target
                .as_deref()
                .is_some_and(|tr| t.file_name() == Some(tr))
            {
                t.parent()
            } else {
                Some(t)
            }
        })
        .map(|t| t.join("agent"))
        .unwrap_or_else(|| out_dir.join("agent-target"))
}
