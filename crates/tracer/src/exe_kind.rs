//! What kind of program a file is, for the choice of route: whether `LD_PRELOAD` reaches
//! it (a dynamically linked ELF that runs with the caller's identity) or only the ptrace
//! route does (statically linked, a Go program, set-uid/set-gid, file capabilities, a
//! program whose dynamic loader is not glibc's).
//!
//! One implementation for the recorder (which picks the route of the program it starts)
//! and the preload library (which hands a process over to the recorder before it execs
//! such a program). It allocates nothing and calls the kernel directly, so that it can run
//! in a `vfork` child between `vfork` and `execve`; it reads the ELF header, program
//! headers, notes and section names with `pread` into buffers on the stack.

use crate::sys::{self, syscall6};

/// Why a program needs the ptrace route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No `PT_INTERP`: no dynamic loader, so nothing reads `LD_PRELOAD`.
    Static,
    /// Built by the Go toolchain: its runtime (and `syscall.Mmap`) maps memory with raw
    /// system calls that no interposed `mmap` sees.
    Go,
    /// Set-uid to another user: the loader runs it in secure mode and drops `LD_PRELOAD`.
    SetUid,
    /// Set-gid to another group: likewise.
    SetGid,
    /// File capabilities (`security.capability`): likewise.
    Capabilities,
    /// Linked against musl (its loader, `ld-musl-*`, as on Alpine): the preload library,
    /// built against glibc, cannot be loaded there, and the program would not start.
    Musl,
    /// Another loader than glibc's or musl's (uClibc's, a custom one): likewise.
    OtherLoader,
}

impl Why {
    /// A few words for messages: `static executable`, `Go program`...
    pub fn text(self) -> &'static str {
        match self {
            Why::Static => "static executable",
            Why::Go => "Go program",
            Why::SetUid => "set-uid program",
            Why::SetGid => "set-gid program",
            Why::Capabilities => "file capabilities",
            Why::Musl => "musl program",
            Why::OtherLoader => "program whose loader is not glibc's",
        }
    }
}

/// What a file is, as far as the route goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A dynamically linked x86-64 ELF the loader will preload into.
    Dynamic,
    /// Needs the ptrace route.
    Ptrace(Why),
    /// Could not be read (`errno`): exec will fail or behave as it does.
    Unreadable(i32),
    /// Not an ELF file (nor a `#!` script whose interpreter is one).
    NotElf,
    /// An ELF file for another machine or class (32-bit): neither route traces it.
    Foreign,
}

/// A verdict and whether it is that of a `#!` script's interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exe {
    /// The verdict on the program (or on the interpreter of a script).
    pub verdict: Verdict,
    /// The file is a `#!` script and `verdict` is its interpreter's.
    pub script: bool,
}

impl Exe {
    /// Why the ptrace route is needed, if it is.
    pub fn needs_ptrace(&self) -> Option<Why> {
        match self.verdict {
            Verdict::Ptrace(w) => Some(w),
            _ => None,
        }
    }
}

/// The longest path handled (longer ones are [`Verdict::Unreadable`] with `ENAMETOOLONG`).
pub const PATH_MAX: usize = 4096;

const SYS_FGETXATTR: usize = 193;
const SYS_FSTAT: usize = 5;
const SYS_GETUID: usize = 102;
const SYS_GETGID: usize = 104;

/// Judges the program at `path` (as `execve` would find it: relative to the current
/// directory, no `PATH` search). A `#!` script is judged by its interpreter, followed
/// once (the kernel ignores set-uid bits of scripts).
pub fn classify(path: &[u8]) -> Exe {
    let mut buf = [0u8; PATH_MAX + 1];
    let Some(p) = nul_terminated(path, &mut buf) else {
        return Exe {
            verdict: Verdict::Unreadable(libc::ENAMETOOLONG),
            script: false,
        };
    };
    let fd = sys::open_read(p);
    if fd < 0 {
        return Exe {
            verdict: Verdict::Unreadable(-fd as i32),
            script: false,
        };
    }
    let r = classify_fd(fd as i32);
    sys::close(fd as i32);
    r
}

/// As [`classify`], for a file open as `fd` (`fexecve`, `execveat` with
/// `AT_EMPTY_PATH`). The descriptor's offset is not used.
pub fn classify_fd(fd: i32) -> Exe {
    let mut head = [0u8; 256];
    let n = sys::pread(fd, &mut head, 0);
    if n < 0 {
        return Exe {
            verdict: Verdict::Unreadable(-n as i32),
            script: false,
        };
    }
    let head = &head[..n as usize];
    if let Some(interp) = shebang(head) {
        let mut buf = [0u8; PATH_MAX + 1];
        let verdict = match nul_terminated(interp, &mut buf) {
            None => Verdict::Unreadable(libc::ENAMETOOLONG),
            Some(p) => {
                let ifd = sys::open_read(p);
                if ifd < 0 {
                    Verdict::Unreadable(-ifd as i32)
                } else {
                    let v = verdict_of(ifd as i32, false);
                    sys::close(ifd as i32);
                    v
                }
            }
        };
        return Exe {
            verdict,
            script: true,
        };
    }
    Exe {
        verdict: verdict_of(fd, true),
        script: false,
    }
}

/// The interpreter path of a `#!` line in `head` (the file's first bytes).
fn shebang(head: &[u8]) -> Option<&[u8]> {
    let rest = head.strip_prefix(b"#!")?;
    let start = rest.iter().position(|&c| c != b' ' && c != b'\t')?;
    let rest = &rest[start..];
    let end = rest
        .iter()
        .position(|&c| c == b' ' || c == b'\t' || c == b'\n' || c == 0)
        .unwrap_or(rest.len());
    (end > 0).then_some(&rest[..end])
}

/// `path` with a NUL after it in `buf`; `None` when too long or holding a NUL.
fn nul_terminated<'a>(path: &[u8], buf: &'a mut [u8; PATH_MAX + 1]) -> Option<&'a [u8]> {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    if path.len() > PATH_MAX || path.contains(&0) {
        return None;
    }
    buf[..path.len()].copy_from_slice(path);
    buf[path.len()] = 0;
    Some(&buf[..=path.len()])
}

/// The verdict on the ELF file open as `fd`; `ids`: the file's own set-id bits and
/// capabilities count (not for a script's interpreter: the kernel honours neither).
fn verdict_of(fd: i32, ids: bool) -> Verdict {
    if ids {
        if let Some(why) = identity_change(fd) {
            return Verdict::Ptrace(why);
        }
    }
    elf_verdict(fd)
}

/// Whether exec of the file `fd` runs it as another user or group, or with file
/// capabilities: the loader then ignores `LD_PRELOAD`.
fn identity_change(fd: i32) -> Option<Why> {
    // SAFETY: a plain struct of integers, filled by the kernel.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`.
    let r = unsafe {
        syscall6(
            SYS_FSTAT,
            fd as usize,
            &mut st as *mut _ as usize,
            0,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return None;
    }
    // SAFETY: no arguments.
    let (uid, gid) = unsafe {
        (
            syscall6(SYS_GETUID, 0, 0, 0, 0, 0, 0) as u32,
            syscall6(SYS_GETGID, 0, 0, 0, 0, 0, 0) as u32,
        )
    };
    // The secure mode follows a change of identity: a set-uid file of our own user runs
    // as we do, with LD_PRELOAD honoured.
    if st.st_mode & libc::S_ISUID != 0 && st.st_uid != uid {
        return Some(Why::SetUid);
    }
    // Set-gid without group execute is mandatory locking, not set-gid.
    if st.st_mode & libc::S_ISGID != 0 && st.st_mode & libc::S_IXGRP != 0 && st.st_gid != gid {
        return Some(Why::SetGid);
    }
    let name = b"security.capability\0";
    // SAFETY: NUL-terminated name; a zero-size query writes nothing.
    let r = unsafe {
        syscall6(
            SYS_FGETXATTR,
            fd as usize,
            name.as_ptr() as usize,
            0,
            0,
            0,
            0,
        )
    };
    (r > 0).then_some(Why::Capabilities)
}

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
/// The Go toolchain's build-id note type (name "Go").
const NT_GO_BUILDID: u32 = 4;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads exactly `buf.len()` bytes at `off`.
fn pread_exact(fd: i32, buf: &mut [u8], off: u64) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread(fd, &mut buf[done..], off + done as u64);
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// The ELF checks: class and machine, `PT_INTERP`, the Go build-id note, the Go
/// build-info section.
fn elf_verdict(fd: i32) -> Verdict {
    let mut eh = [0u8; 64];
    if !pread_exact(fd, &mut eh, 0) || &eh[..4] != b"\x7fELF" {
        return Verdict::NotElf;
    }
    // 64-bit, little-endian, x86-64.
    if eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 18) != EM_X86_64 {
        return Verdict::Foreign;
    }
    let phoff = u64_at(&eh, 32);
    let phentsize = u16_at(&eh, 54) as u64;
    let phnum = u16_at(&eh, 56) as u64;
    let mut interp = None;
    let mut go = false;
    if phentsize >= 56 {
        for i in 0..phnum.min(256) {
            let mut ph = [0u8; 56];
            if !pread_exact(fd, &mut ph, phoff + i * phentsize) {
                return Verdict::NotElf;
            }
            match u32_at(&ph, 0) {
                PT_INTERP => interp = Some((u64_at(&ph, 8), u64_at(&ph, 32))),
                PT_NOTE if !go => go = go_note(fd, u64_at(&ph, 8), u64_at(&ph, 32)),
                _ => {}
            }
        }
    }
    if !go {
        go = go_section(fd, &eh);
    }
    match (go, interp) {
        (true, _) => Verdict::Ptrace(Why::Go),
        (false, Some((off, len))) => match loader(fd, off, len) {
            Some(why) => Verdict::Ptrace(why),
            None => Verdict::Dynamic,
        },
        (false, None) => Verdict::Ptrace(Why::Static),
    }
}

/// Why the loader named by `PT_INTERP` (`len` bytes at `off`) cannot load the preload
/// library, if it cannot: glibc's loaders are named `ld-linux*` (`ld-linux-x86-64.so.2`,
/// wherever it lies: `/lib64`, a Nix store...). A name that cannot be read is taken for
/// glibc's (the exec will tell).
fn loader(fd: i32, off: u64, len: u64) -> Option<Why> {
    let mut name = [0u8; 512];
    let len = (len as usize).min(name.len());
    if len == 0 || !pread_exact(fd, &mut name[..len], off) {
        return None;
    }
    let path = &name[..len];
    let path = &path[..path.iter().position(|&c| c == 0).unwrap_or(len)];
    let base = &path[path.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1)..];
    loader_by_name(base)
}

/// [`loader`] for the loader's file name (no directory).
fn loader_by_name(base: &[u8]) -> Option<Why> {
    if base.starts_with(b"ld-linux") {
        None
    } else if base.starts_with(b"ld-musl") {
        Some(Why::Musl)
    } else {
        Some(Why::OtherLoader)
    }
}

/// Whether the notes at `off` (`len` bytes) hold the Go build id.
fn go_note(fd: i32, off: u64, len: u64) -> bool {
    let mut at = off;
    let end = off.saturating_add(len.min(64 * 1024));
    while at + 12 <= end {
        let mut h = [0u8; 16];
        if !pread_exact(fd, &mut h, at) {
            return false;
        }
        let (namesz, descsz, ty) = (u32_at(&h, 0) as u64, u32_at(&h, 4) as u64, u32_at(&h, 8));
        if namesz == 3 && ty == NT_GO_BUILDID && &h[12..15] == b"Go\0" {
            return true;
        }
        at += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
    }
    false
}

/// Whether a section is named `.go.buildinfo` or `.note.go.buildid` (a stripped note
/// segment, or an external link that moved it).
fn go_section(fd: i32, eh: &[u8; 64]) -> bool {
    let shoff = u64_at(eh, 40);
    let shentsize = u16_at(eh, 58) as u64;
    let shnum = u16_at(eh, 60) as u64;
    let shstrndx = u16_at(eh, 62) as u64;
    if shoff == 0 || shentsize < 64 || shstrndx >= shnum {
        return false;
    }
    let mut sh = [0u8; 64];
    if !pread_exact(fd, &mut sh, shoff + shstrndx * shentsize) {
        return false;
    }
    let (stroff, strsize) = (u64_at(&sh, 24), u64_at(&sh, 32));
    for i in 0..shnum.min(4096) {
        if !pread_exact(fd, &mut sh, shoff + i * shentsize) {
            return false;
        }
        let name = u32_at(&sh, 0) as u64;
        if name >= strsize {
            continue;
        }
        let mut n = [0u8; 18];
        let got = sys::pread(fd, &mut n, stroff + name);
        if got <= 0 {
            continue;
        }
        let n = &n[..got as usize];
        let is = |want: &[u8]| n.len() > want.len() && n.starts_with(want) && n[want.len()] == 0;
        if is(b".go.buildinfo") || is(b".note.go.buildid") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some(&b"/bin/sh"[..]));
        assert_eq!(
            shebang(b"#! /usr/bin/env python3\n"),
            Some(&b"/usr/bin/env"[..])
        );
        assert_eq!(shebang(b"#!\t/x -e"), Some(&b"/x"[..]));
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    #[test]
    fn loaders_by_name() {
        assert_eq!(loader_by_name(b"ld-linux-x86-64.so.2"), None);
        assert_eq!(loader_by_name(b"ld-musl-x86_64.so.1"), Some(Why::Musl));
        assert_eq!(loader_by_name(b"ld64-uClibc.so.0"), Some(Why::OtherLoader));
        assert_eq!(loader_by_name(b""), Some(Why::OtherLoader));
    }

    #[test]
    fn missing_files_and_long_paths_are_unreadable() {
        let e = classify(b"/nonexistent/program");
        assert_eq!(e.verdict, Verdict::Unreadable(libc::ENOENT));
        let long = [b'a'; PATH_MAX + 1];
        assert_eq!(
            classify(&long).verdict,
            Verdict::Unreadable(libc::ENAMETOOLONG)
        );
    }
}
