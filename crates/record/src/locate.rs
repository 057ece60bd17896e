//! Finding the preload library.
//!
//! Decision: the library is a file next to the `mmio-trace` executable
//! (`libmmio_trace_preload.so`), which is where `cargo build` puts it; installed layouts
//! may put it in `../lib/mmio-trace/` or `../lib/`. The user sets no path or variable.
//! (Embedding it in the executable would need a build step Cargo cannot express without
//! nested builds; see the crate notes.)

use std::path::{Path, PathBuf};

/// The library's file name.
pub const LIB_NAME: &str = "libmmio_trace_preload.so";

/// Where to look, relative to the executable's directory, in order.
const PLACES: &[&str] = &[".", "deps", "..", "../lib/mmio-trace", "../lib"];

/// The preload library for the running executable.
pub fn preload_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    find_near(exe.parent()?)
}

/// The preload library near directory `dir`: the most recently built of the candidates
/// (in a Cargo target directory, `deps/` holds the copy built along with the binary, while
/// the top-level copy is refreshed only when the library package itself is built).
pub fn find_near(dir: &Path) -> Option<PathBuf> {
    PLACES
        .iter()
        .map(|p| dir.join(p).join(LIB_NAME))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .and_then(|(_, p)| p.canonicalize().ok())
}
