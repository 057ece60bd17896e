//! Hot-site patching: an instruction that has trapped often is rewritten to jump to
//! generated code (a trampoline) that makes the same access on the alias and writes the
//! same event the trap path would, so repeat accesses cost nanoseconds, not a trap.
//!
//! Pieces: `pun` plans the jump that replaces an instruction's own bytes (E9Patch's
//! instruction punning: no other instruction boundary moves), `arena` finds memory for a
//! trampoline where that jump can reach, `text` writes program text with the int3-first
//! protocol, `flags` says whether the flags are live after a site, `gen` generates the
//! trampolines, and this module decides what to patch (from a patcher thread, never in
//! the signal handler) and keeps the fault path's view of patched sites.

pub(crate) mod arena;
pub(crate) mod flags;
pub(crate) mod gen;
pub(crate) mod pun;
pub(crate) mod text;
