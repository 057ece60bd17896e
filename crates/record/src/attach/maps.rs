//! The device mappings a running process already holds, found in `/proc/PID/maps`, and
//! the program's own descriptor of each file (for the alias the fault emulation goes
//! through).
//!
//! A mapping is a device mapping under the same rules as the in-process tracer's `mmap`
//! hook: a shared file mapping whose canonical path (as the kernel prints it: the link of
//! `/proc/PID/map_files/START-END`, which is what `/proc/self/fd/N` gave the tracer)
//! matches a device rule.
//!
//! The alias is made from the program's own open file where it still holds one (drivers
//! keep per-open-file state, so a reopened path may map something else): a descriptor of
//! the program naming the same file (same device and inode, same path), taken with
//! `pidfd_getfd`; else from the path. Which open file description backs a mapping cannot
//! be asked of the kernel: when the program holds several descriptors of the file, the
//! lowest-numbered is taken.

use std::io;
use std::os::unix::fs::MetadataExt;

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
    let (s, e) = range
        .iter()
        .position(|&c| c == b'-')
        .map(|i| range.split_at(i))?;
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
    let (maj, min) = dev
        .iter()
        .position(|&c| c == b':')
        .map(|i| dev.split_at(i))?;
    let (maj, min) = (hex(maj)?, hex(&min[1..])?);
    let inode = std::str::from_utf8(inode).ok()?.trim().parse().ok()?;
    let path = rest
        .iter()
        .skip_while(|&&c| c == b' ')
        .copied()
        .collect::<Vec<u8>>();
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
        if p[i] == b'\\'
            && p.len() >= i + 4
            && p[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = p[i + 1..i + 4]
                .iter()
                .fold(0u32, |a, &c| a * 8 + u32::from(c - b'0'));
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Device of the file (`makedev`).
    pub dev: u64,
    /// Inode of the file.
    pub inode: u64,
}

/// Whether `m` is a mapping the rules trace; its canonical path if so.
pub fn device_path(pid: i32, m: &MapsLine, rules: &Rules) -> Option<Vec<u8>> {
    if !m.shared || m.inode == 0 && !m.path.starts_with(b"anon_inode:") {
        return None;
    }
    let path = mapping_path(pid, m);
    rules.is_device(&path).then_some(path)
}

/// The device mappings of process `pid`. Lines of one mapping split by the kernel
/// (different protections of its pages) are kept apart: each gets its own protection
/// back.
pub fn find(pid: i32, rules: &Rules) -> io::Result<Vec<DeviceMapping>> {
    Ok(read_maps(pid)?
        .into_iter()
        .filter_map(|m| {
            let path = device_path(pid, &m, rules)?;
            // A PCI BAR mapped through sysfs shows the BAR's physical address plus the
            // file offset (the kernel moves the mapping's page offset there).
            let offset = match mmio_trace_tracer::rules::bar_start(&path) {
                Some(b) if m.offset >= b => m.offset - b,
                _ => m.offset,
            };
            Some(DeviceMapping {
                start: m.start,
                len: m.end - m.start,
                prot: m.prot,
                offset,
                path,
                dev: m.dev,
                inode: m.inode,
            })
        })
        .collect())
}

/// A descriptor of the program's: its number, the device and inode of its file, its
/// canonical path.
pub type ProgramFd = (i32, u64, u64, Vec<u8>);

/// The program's descriptors, lowest number first.
pub fn program_fds(pid: i32) -> Vec<ProgramFd> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<_> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let md = std::fs::metadata(e.path()).ok()?;
            let link = std::fs::read_link(e.path())
                .ok()?
                .into_os_string()
                .into_vec();
            Some((n, md.dev(), md.ino(), link))
        })
        .collect();
    v.sort_by_key(|f| f.0);
    v
}

/// The program's own descriptor of the file `d` maps (same device, inode and path: an
/// anonymous inode is shared by unrelated files), the lowest-numbered if several: the
/// alias is made from it, so that per-open-file driver state is the program's.
pub fn own_fd(fds: &[ProgramFd], d: &DeviceMapping) -> Option<i32> {
    fds.iter()
        .find(|f| f.1 == d.dev && f.2 == d.inode && f.3 == d.path)
        .map(|f| f.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let l = parse_line(
            b"7f0000001000-7f0000003000 rw-s 00002000 08:01 1234567    /tmp/a b/dev.bin",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.prot, l.shared, l.offset, l.inode),
            (
                0x7f00_0000_1000,
                0x7f00_0000_3000,
                libc::PROT_READ | libc::PROT_WRITE,
                true,
                0x2000,
                1234567
            )
        );
        assert_eq!(l.dev, libc::makedev(8, 1));
        assert_eq!(l.path, b"/tmp/a b/dev.bin");
        let l = parse_line(b"7ffd1000-7ffd2000 r-xp 00000000 00:00 0 ").unwrap();
        assert_eq!(
            (l.prot, l.shared, l.inode, l.path.len()),
            (libc::PROT_READ | libc::PROT_EXEC, false, 0, 0)
        );
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
        use std::os::fd::AsRawFd;
        let dir =
            std::env::temp_dir().join(format!("mmio-trace-attach-maps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("dev.bin");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        // SAFETY: a fresh shared mapping of our own file, unmapped below.
        let a = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                4096,
            )
        };
        assert_ne!(a, libc::MAP_FAILED);
        let canon = std::fs::canonicalize(&p).unwrap();
        let rules = Rules::new(&[canon.to_string_lossy().into_owned()], true);
        let me = std::process::id() as i32;
        let found = find(me, &rules).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(
            (d.start, d.len, d.prot, d.offset),
            (a as u64, 8192, libc::PROT_READ, 4096)
        );
        assert_eq!(d.path, canon.as_os_str().as_encoded_bytes());
        assert_eq!(own_fd(&program_fds(me), d), Some(f.as_raw_fd()));
        // SAFETY: unmapping our own mapping made above.
        unsafe { libc::munmap(a, 8192) };
        drop(f);
        assert_eq!(own_fd(&program_fds(me), d), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
