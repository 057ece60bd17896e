//! `record --pid PID`: attach to a running process, trace it for a while, detach.
pub mod maps;
