//! (being written: see patch/mod.rs)
