//! The device mappings a running process already holds, found in `/proc/PID/maps`, and
//! a second mapping of each in the recorder (the alias the fault emulation goes through).
//!
//! A mapping is a device mapping under the same rules as the in-process tracer's `mmap`
//! hook: a shared file mapping whose canonical path (as the kernel prints it: the link of
//! `/proc/PID/map_files/START-END`, which is what `/proc/self/fd/N` gave the tracer)
//! matches a device rule.
//!
//! The alias is made, in this order of preference, from
//! 1. the program's own open file (drivers keep per-open-file state, so a reopened path
//!    may map something else): a descriptor of the program naming the same file (same
//!    device and inode, same path), taken with `pidfd_getfd`;
//! 2. `/proc/PID/map_files/START-END` (the mapping's own file, reopened; needs
//!    `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`);
//! 3. the path itself, reopened.
//!
//! Which open file description backs a mapping cannot be asked of the kernel: when the
//! program holds several descriptors of the file, the lowest-numbered is taken.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mmio_trace_tracer::rules::Rules;

/// Page size (x86-64).
pub const PAGE: u64 = 4096;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `PROT_*` of the mapping.
    pub prot: i32,
    /// `MAP_SHARED` (`s`), not private (`p`).
    pub shared: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device of the file (`major:minor` as the kernel encodes it, `makedev`).
    pub dev: u64,
    /// Inode of the file (0: anonymous memory).
    pub inode: u64,
    /// The path column, as printed (newlines escaped as `\012`; may end in ` (deleted)`).
    pub path: Vec<u8>,
}

/// Parses one line of `/proc/PID/maps`; `None` for a line of another shape.
pub fn parse_line(line: &[u8]) -> Option<MapsLine> {
    // Five space-separated fields, then spaces, then the path (which may hold spaces).
    let mut rest = line;
    let mut field = || {
        let at = rest.iter().position(|&c| c == b' ')?;
        let f = &rest[..at];
        rest = &rest[at + 1..];
        Some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = match field() {
        Some(f) => f,
        None => {
            // No path column at all: the inode is the last field.
            let f = rest;
            rest = b"";
            f
        }
    };
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    let (s, e) = range.iter().position(|&c| c == b'-').map(|i| range.split_at(i))?;
    let (start, end) = (hex(s)?, hex(&e[1..])?);
    if perms.len() != 4 {
        return None;
    }
    let mut prot = 0;
    if perms[0] == b'r' {
        prot |= libc::PROT_READ;
    }
    if perms[1] == b'w' {
        prot |= libc::PROT_WRITE;
    }
    if perms[2] == b'x' {
        prot |= libc::PROT_EXEC;
    }
    let (maj, min) = dev.iter().position(|&c| c == b':').map(|i| dev.split_at(i))?;
    let (maj, min) = (hex(maj)?, hex(&min[1..])?);
    let inode = std::str::from_utf8(inode).ok()?.trim().parse().ok()?;
    let path = rest.iter().skip_while(|&&c| c == b' ').copied().collect::<Vec<u8>>();
    Some(MapsLine {
        start,
        end,
        prot,
        shared: perms[3] == b's',
        offset: hex(offset)?,
        dev: libc::makedev(maj as u32, min as u32),
        inode,
        path,
    })
}

/// The lines of `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> io::Result<Vec<MapsLine>> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))?;
    Ok(text.split(|&c| c == b'\n').filter_map(parse_line).collect())
}

/// The canonical path of a mapping, as the tracer's `readlink /proc/self/fd/N` gives it:
/// the link of `/proc/PID/map_files/START-END` (the exact bytes, newlines and all), or,
/// where that cannot be read, the path column of `maps` unescaped.
pub fn mapping_path(pid: i32, m: &MapsLine) -> Vec<u8> {
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    match std::fs::read_link(link) {
        Ok(p) => p.into_os_string().into_vec(),
        Err(_) => unescape(&m.path),
    }
}

trait IntoVec {
    fn into_vec(self) -> Vec<u8>;
}

impl IntoVec for std::ffi::OsString {
    fn into_vec(self) -> Vec<u8> {
        std::os::unix::ffi::OsStringExt::into_vec(self)
    }
}

/// The `maps` path column with the kernel's `\012` (newline) escapes undone.
pub fn unescape(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'\\' && p.len() >= i + 4 && p[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = p[i + 1..i + 4].iter().fold(0u32, |a, &c| a * 8 + u32::from(c - b'0'));
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(p[i]);
        i += 1;
    }
    out
}

/// A device mapping of the program to trace.
#[derive(Debug)]
pub struct DeviceMapping {
    /// First byte (page-aligned).
    pub start: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
    /// The program's protection of it (restored at detach).
    pub prot: i32,
    /// File offset of `start`.
    pub offset: u64,
    /// Canonical path (what the rules matched).
    pub path: Vec<u8>,
    /// Physical address of `start` where knowable (else the file offset), as the tracer
    /// computes it.
    pub phys: u64,
    /// Where the alias came from, or why there is none.
    pub alias_from: AliasFrom,
    /// The alias in the recorder: address, or 0 when none could be made (every access of
    /// the mapping then takes the step path).
    pub alias: u64,
    /// The descriptor the alias was mapped from, kept open for the recorder's lifetime of
    /// the mapping (the fault emulation and later `mremap`s need the same file).
    pub fd: Option<OwnedFd>,
}

/// Where an alias's file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasFrom {
    /// The program's own descriptor N, taken with `pidfd_getfd`.
    ProgramFd(i32),
    /// `/proc/PID/map_files/START-END`.
    MapFiles,
    /// The path reopened.
    Path,
    /// None could be made (the reasons, in the order tried), or `--no-alias`.
    None(String),
}

impl Drop for DeviceMapping {
    fn drop(&mut self) {
        if self.alias != 0 {
            // SAFETY: the recorder's own alias mapping, made by `alias_map`, not used past
            // here (the mapping is being dropped).
            unsafe { libc::munmap(self.alias as *mut libc::c_void, self.len as usize) };
        }
    }
}

/// Whether `m` is a mapping the rules trace; its canonical path if so.
pub fn device_path(pid: i32, m: &MapsLine, rules: &Rules) -> Option<Vec<u8>> {
    if !m.shared || m.inode == 0 && !m.path.starts_with(b"anon_inode:") {
        return None;
    }
    let path = mapping_path(pid, m);
    rules.is_device(&path).then_some(path)
}

/// The device mappings of process `pid`, with an alias made for each (unless `no_alias`).
/// Lines of one mapping split by the kernel (different protections of its pages) are
/// kept apart: each is restored to its own protection.
pub fn find(pid: i32, pidfd: Option<i32>, rules: &Rules, no_alias: bool) -> io::Result<Vec<DeviceMapping>> {
    let lines = read_maps(pid)?;
    let mut fds = None;
    let mut out = Vec::new();
    for m in lines {
        let Some(path) = device_path(pid, &m, rules) else { continue };
        let len = m.end - m.start;
        let phys = phys_of(&path, m.offset);
        let mut d = DeviceMapping {
            start: m.start,
            len,
            prot: m.prot,
            offset: m.offset,
            path,
            phys,
            alias_from: AliasFrom::None("--no-alias".into()),
            alias: 0,
            fd: None,
        };
        if !no_alias {
            let fds = fds.get_or_insert_with(|| program_fds(pid));
            make_alias(pid, pidfd, &m, fds, &mut d);
        }
        out.push(d);
    }
    Ok(out)
}

/// Physical address of file offset `off` of `path`, as the tracer computes it (sysfs
/// `resourceN`: the BAR's base plus `off`; else `off`).
pub fn phys_of(path: &[u8], off: u64) -> u64 {
    mmio_trace_tracer::rules::phys_of(path, off)
}

/// The program's descriptors: (number, device, inode, canonical path).
fn program_fds(pid: i32) -> Vec<(i32, u64, u64, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<_> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let md = std::fs::metadata(e.path()).ok()?;
            let link = std::fs::read_link(e.path()).ok()?.into_os_string().into_vec();
            Some((n, md.dev(), md.ino(), link))
        })
        .collect();
    v.sort_by_key(|f| f.0);
    v
}

/// Maps `len` bytes of `fd` at `off` shared: read-write, else read-only, else with the
/// program's own protection (as the tracer's alias). The address, or the errno.
fn alias_map(fd: i32, len: u64, off: u64, prot: i32) -> Result<u64, i32> {
    let mut err = 0;
    for p in [libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ, prot] {
        if p == libc::PROT_NONE {
            continue;
        }
        // SAFETY: a new mapping at an address of the kernel's choosing; touches nothing
        // of ours.
        let a = unsafe {
            libc::mmap(std::ptr::null_mut(), len as usize, p, libc::MAP_SHARED, fd, off as libc::off_t)
        };
        if a != libc::MAP_FAILED {
            return Ok(a as u64);
        }
        err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    }
    Err(err)
}

/// A descriptor of the program's, as one of the recorder's (`pidfd_getfd`).
pub fn take_fd(pidfd: i32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result, when not negative, is a new descriptor of
    // ours.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A pidfd of process `pid` (`pidfd_open`).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn make_alias(
    pid: i32,
    pidfd: Option<i32>,
    m: &MapsLine,
    fds: &[(i32, u64, u64, Vec<u8>)],
    d: &mut DeviceMapping,
) {
    let mut why = Vec::new();
    let mut try_fd = |fd: OwnedFd, from: AliasFrom, why: &mut Vec<String>| -> bool {
        match alias_map(fd.as_raw_fd(), d.len, d.offset, d.prot) {
            Ok(a) => {
                d.alias = a;
                d.alias_from = from;
                d.fd = Some(fd);
                true
            }
            Err(e) => {
                why.push(format!("{from:?}: mmap: {}", io::Error::from_raw_os_error(e)));
                false
            }
        }
    };
    // 1. The program's own descriptor of the same file.
    let own = fds
        .iter()
        .find(|f| f.1 == m.dev && f.2 == m.inode && f.3 == d.path)
        .map(|f| f.0);
    match (own, pidfd) {
        (Some(n), Some(pfd)) => match take_fd(pfd, n) {
            Ok(fd) => {
                if try_fd(fd, AliasFrom::ProgramFd(n), &mut why) {
                    return;
                }
            }
            Err(e) => why.push(format!("pidfd_getfd of its fd {n}: {e}")),
        },
        (Some(n), None) => why.push(format!("its fd {n}: no pidfd")),
        (None, _) => why.push("the program holds no descriptor of the file".into()),
    }
    // 2. The mapping's own file.
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    match File::options().read(true).write(true).open(&link).or_else(|_| File::open(&link)) {
        Ok(f) => {
            if try_fd(f.into(), AliasFrom::MapFiles, &mut why) {
                return;
            }
        }
        Err(e) => why.push(format!("{link}: {e}")),
    }
    // 3. The path, reopened (not a deleted file, not an anonymous inode).
    if d.path.starts_with(b"/") && !d.path.ends_with(b" (deleted)") {
        let p: PathBuf = Path::new(OsStr::from_bytes(&d.path)).to_path_buf();
        match File::options().read(true).write(true).open(&p).or_else(|_| File::open(&p)) {
            Ok(f) => {
                // Only if it is still the same file.
                let same = f.metadata().is_ok_and(|md| md.dev() == m.dev && md.ino() == m.inode);
                if same {
                    if try_fd(f.into(), AliasFrom::Path, &mut why) {
                        return;
                    }
                } else {
                    why.push(format!("{}: another file now", p.display()));
                }
            }
            Err(e) => why.push(format!("{}: {e}", p.display())),
        }
    }
    d.alias_from = AliasFrom::None(why.join("; "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let l = parse_line(b"7f0000001000-7f0000003000 rw-s 00002000 08:01 1234567    /tmp/a b/dev.bin").unwrap();
        assert_eq!(
            (l.start, l.end, l.prot, l.shared, l.offset, l.inode),
            (0x7f00_0000_1000, 0x7f00_0000_3000, libc::PROT_READ | libc::PROT_WRITE, true, 0x2000, 1234567)
        );
        assert_eq!(l.dev, libc::makedev(8, 1));
        assert_eq!(l.path, b"/tmp/a b/dev.bin");
        let l = parse_line(b"7ffd1000-7ffd2000 r-xp 00000000 00:00 0 ").unwrap();
        assert_eq!((l.prot, l.shared, l.inode, l.path.len()), (libc::PROT_READ | libc::PROT_EXEC, false, 0, 0));
        let l = parse_line(b"7ffd1000-7ffd2000 ---s 00000000 00:0e 9").unwrap();
        assert_eq!((l.prot, l.inode), (libc::PROT_NONE, 9));
        assert_eq!(parse_line(b"garbage"), None);
    }

    #[test]
    fn maps_paths_unescape() {
        assert_eq!(unescape(b"/tmp/a\\012b"), b"/tmp/a\nb");
        assert_eq!(unescape(b"/tmp/a\\b"), b"/tmp/a\\b");
    }

    #[test]
    fn own_device_mapping_is_found_with_its_fd() {
        let dir = std::env::temp_dir().join(format!("mmio-trace-attach-maps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("dev.bin");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let f = File::options().read(true).write(true).open(&p).unwrap();
        // SAFETY: a fresh shared mapping of our own file, unmapped below.
        let a = unsafe {
            libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 4096)
        };
        assert_ne!(a, libc::MAP_FAILED);
        let canon = std::fs::canonicalize(&p).unwrap();
        let rules = Rules::new(&[canon.to_string_lossy().into_owned()], true);
        let me = std::process::id() as i32;
        let pidfd = pidfd_open(me).unwrap();
        let found = find(me, Some(pidfd.as_raw_fd()), &rules, false).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!((d.start, d.len, d.prot, d.offset), (a as u64, 8192, libc::PROT_READ, 4096));
        assert_eq!(d.alias_from, AliasFrom::ProgramFd(f.as_raw_fd()));
        assert_ne!(d.alias, 0);
        // SAFETY: the alias is a live mapping of at least one page, readable.
        assert_eq!(unsafe { *(d.alias as *const u8) }, 7);
        drop(found);
        // SAFETY: unmapping our own mapping made above.
        unsafe { libc::munmap(a, 8192) };
        let _ = std::fs::remove_dir_all(&dir);
    }
}
