//! Which mappings are device memory, and where in physical memory they are.
//!
//! A mapping is traced when it is a shared mapping of a file descriptor whose path (as
//! `/proc/self/fd/N` names it, so the rule follows the descriptor through `dup`, `dup2`,
//! `fcntl(F_DUPFD)` and `SCM_RIGHTS` without interposing any of them) matches a device
//! rule. Paths are the kernel's canonical ones: sysfs BAR files appear as
//! `/sys/devices/pci0000:00/0000:00:02.0/resource0`, VFIO device fds as
//! `anon_inode:[vfio-device]`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Environment variable: extra device globs, separated by newlines.
pub const ENV_DEVICES: &str = "MMIO_TRACE_DEVICES";
/// Environment variable: `1` to drop the default device rules.
pub const ENV_NO_DEFAULTS: &str = "MMIO_TRACE_NO_DEFAULT_DEVICES";
/// Environment variable: offset ranges (`START-END`, `START+LEN`, comma separated) that are
/// traced; everything else in a device mapping runs untraced. Empty: all.
pub const ENV_RANGES: &str = "MMIO_TRACE_RANGES";
/// Environment variable: offset ranges never traced (large apertures).
pub const ENV_BYPASS: &str = "MMIO_TRACE_BYPASS";
/// Environment variable: `1` to map no device a second time (no alias mapping): every
/// access is single-stepped, as when a driver refuses the alias.
pub const ENV_NO_ALIAS: &str = "MMIO_TRACE_NO_ALIAS";
/// Environment variable: `1` to patch no hot site (`record --no-patch`): every access
/// traps.
pub const ENV_NO_PATCH: &str = "MMIO_TRACE_NO_PATCH";
/// Environment variable: how many traps make a site hot enough to patch (default
/// [`DEFAULT_PATCH_AFTER`]).
pub const ENV_PATCH_AFTER: &str = "MMIO_TRACE_PATCH_AFTER";
/// Traps at one instruction after which it is patched, unless the environment says.
pub const DEFAULT_PATCH_AFTER: u64 = 32;

/// The default device rules (globs over canonical paths; `*` also matches `/`).
pub const DEFAULT_DEVICES: &[&str] = &[
    "/dev/mem",
    "/sys/devices/*/resource[0-9]",
    "/sys/devices/*/resource[0-9]_wc",
    "/dev/uio[0-9]*",
    "anon_inode:?vfio-device?",
    "/dev/vfio/devices/vfio[0-9]*",
    "/dev/dri/*",
    "/dev/nvidia[0-9]*",
    "/dev/nvidiactl",
    "/dev/accel/*",
];

/// Paths never traced whatever the rules say (a second mapping of them fails, or they are
/// not device memory).
pub const NEVER: &[&str] = &["/dev/zero", "/dev/nvidia-uvm*"];

/// Device rules and range limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Globs; a path matching any is a device.
    pub devices: Vec<String>,
    /// Traced offset ranges `[start, end)` (empty: everything).
    pub ranges: Vec<(u64, u64)>,
    /// Offset ranges never traced.
    pub bypass: Vec<(u64, u64)>,
    /// Make no alias mappings (every access single-stepped).
    pub no_alias: bool,
    /// Patch no hot site (every access traps).
    pub no_patch: bool,
    /// Traps at one instruction after which it is patched.
    pub patch_after: u64,
}

impl Rules {
    /// Builds rules: the defaults (unless `no_defaults`) plus `extra` globs.
    pub fn new(extra: &[String], no_defaults: bool) -> Rules {
        let mut devices: Vec<String> = if no_defaults {
            Vec::new()
        } else {
            DEFAULT_DEVICES.iter().map(|s| s.to_string()).collect()
        };
        devices.extend(extra.iter().cloned());
        Rules {
            devices,
            ranges: Vec::new(),
            bypass: Vec::new(),
            no_alias: false,
            no_patch: false,
            patch_after: DEFAULT_PATCH_AFTER,
        }
    }

    /// Reads the rules the recorder put in the environment (or handed over, see
    /// [`crate::init_from_vars`]).
    pub fn from_env() -> Rules {
        let extra: Vec<String> = crate::env::var(ENV_DEVICES)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let no_defaults = crate::env::var(ENV_NO_DEFAULTS).is_some_and(|v| v == "1");
        let mut r = Rules::new(&extra, no_defaults);
        r.ranges =
            parse_ranges(&crate::env::var(ENV_RANGES).unwrap_or_default()).unwrap_or_default();
        r.bypass =
            parse_ranges(&crate::env::var(ENV_BYPASS).unwrap_or_default()).unwrap_or_default();
        r.no_alias = crate::env::var(ENV_NO_ALIAS).is_some_and(|v| v == "1");
        r.no_patch = crate::env::var(ENV_NO_PATCH).is_some_and(|v| v == "1");
        r.patch_after = crate::env::var(ENV_PATCH_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_PATCH_AFTER);
        r
    }

    /// Whether `path` (canonical) is device memory.
    pub fn is_device(&self, path: &[u8]) -> bool {
        if NEVER.iter().any(|g| glob_match(g.as_bytes(), path)) {
            return false;
        }
        self.devices.iter().any(|g| glob_match(g.as_bytes(), path))
    }

    /// Whether the page at file offset `off` (of `len` bytes) is traced.
    pub fn traced(&self, off: u64, len: u64) -> bool {
        let hit = |v: &[(u64, u64)]| v.iter().any(|&(s, e)| s < off + len && off < e);
        (self.ranges.is_empty() || hit(&self.ranges)) && !hit(&self.bypass)
    }
}

/// A number of a range: decimal, or hex with `0x`.
pub fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `START-END` / `START+LEN` ranges (decimal or `0x` hex), comma separated.
pub fn parse_ranges(s: &str) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('+') {
            let a = parse_num(a)?;
            out.push((a, a.checked_add(parse_num(b)?)?));
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (parse_num(a)?, parse_num(b)?);
            if b < a {
                return None;
            }
            out.push((a, b));
        } else {
            return None;
        }
    }
    Some(out)
}

/// Shell-style glob: `*` any run of bytes (including `/`), `?` one byte, `[...]` a class
/// with ranges and `!`/`^` negation.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star_p, mut star_i) = (usize::MAX, 0usize);
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star_p = p;
                    star_i = i;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&pat[p..], s[i]) {
                        if ok {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        if star_p != usize::MAX {
            p = star_p + 1;
            star_i += 1;
            i = star_i;
            continue;
        }
        return false;
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Matches `c` against the class at the start of `pat` (`[...]`); returns (matched, class
/// length), or `None` if the bracket is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut k = 1;
    let neg = matches!(pat.get(1), Some(b'!') | Some(b'^'));
    if neg {
        k += 1;
    }
    let mut hit = false;
    let mut first = true;
    while k < pat.len() {
        if pat[k] == b']' && !first {
            return Some((hit != neg, k + 1));
        }
        first = false;
        if k + 2 < pat.len() && pat[k + 1] == b'-' && pat[k + 2] != b']' {
            if pat[k] <= c && c <= pat[k + 2] {
                hit = true;
            }
            k += 3;
        } else {
            if pat[k] == c {
                hit = true;
            }
            k += 1;
        }
    }
    None
}

/// The canonical path of `fd` (`readlink /proc/self/fd/N`) into `buf`; no allocation.
pub fn fd_path(fd: i32, buf: &mut [u8; 512]) -> Option<&[u8]> {
    let mut p = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    p[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut d = [0u8; 64];
    let d = crate::sys::digits(fd as u32 as u64, 10, &mut d);
    p[n..n + d.len()].copy_from_slice(d);
    n += d.len();
    p[n] = 0;
    let len = crate::sys::readlink(&p[..=n], buf);
    (len > 0).then(|| &buf[..len as usize])
}

/// The physical address of file offset `off` of the device at `path`, where knowable:
/// sysfs `resourceN` → BAR base from the sibling `resource` table plus `off`; `/dev/mem` →
/// `off`; anything else → `off` (the file offset). No allocation.
pub fn phys_of(path: &[u8], off: u64) -> u64 {
    bar_start(path).map_or(off, |s| s + off)
}

/// The BAR base of a sysfs `resourceN`/`resourceN_wc` file (from the sibling `resource`
/// table); `None` for any other path. (The kernel shows such a mapping's offset in
/// `/proc/PID/maps` as this base plus the file offset.) No allocation.
pub fn bar_start(path: &[u8]) -> Option<u64> {
    let slash = path.iter().rposition(|&c| c == b'/')?;
    let name = &path[slash + 1..];
    let rest = name.strip_prefix(b"resource")?;
    let digits: &[u8] = rest.split(|&c| c == b'_').next().unwrap_or(&[]);
    if !path.starts_with(b"/sys/") || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let bar = digits
        .iter()
        .fold(0usize, |a, &c| a * 10 + (c - b'0') as usize);
    let mut file = [0u8; 520];
    let dir = &path[..=slash];
    if dir.len() + 9 > file.len() {
        return None;
    }
    file[..dir.len()].copy_from_slice(dir);
    file[dir.len()..dir.len() + 8].copy_from_slice(b"resource");
    file[dir.len() + 8] = 0;
    let fd = crate::sys::open_read(&file[..dir.len() + 9]);
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 2048];
    let n = crate::sys::read(fd as i32, &mut buf);
    crate::sys::close(fd as i32);
    if n <= 0 {
        return None;
    }
    resource_start(&buf[..n as usize], bar)
}

/// The start address on line `bar` of a sysfs `resource` table.
pub fn resource_start(table: &[u8], bar: usize) -> Option<u64> {
    let line = table.split(|&c| c == b'\n').nth(bar)?;
    let first = line.split(|&c| c == b' ').next()?;
    let hex = first.strip_prefix(b"0x")?;
    let mut v = 0u64;
    for &c in hex {
        v = v.checked_mul(16)? + (c as char).to_digit(16)? as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_match_canonical_device_paths_only() {
        let r = Rules::new(&[], false);
        assert!(r.is_device(b"/dev/mem"));
        assert!(r.is_device(b"/sys/devices/pci0000:00/0000:00:02.0/resource0"));
        assert!(r.is_device(b"/sys/devices/pci0000:00/0000:00:02.0/resource2_wc"));
        assert!(r.is_device(b"anon_inode:[vfio-device]"));
        assert!(r.is_device(b"/dev/vfio/devices/vfio0"));
        assert!(!r.is_device(b"/dev/vfio/vfio"));
        assert!(r.is_device(b"/dev/uio0"));
        assert!(r.is_device(b"/dev/dri/card0"));
        assert!(r.is_device(b"/dev/nvidia0"));
        assert!(r.is_device(b"/dev/nvidiactl"));
        assert!(!r.is_device(b"/dev/nvidia-uvm"));
        assert!(!r.is_device(b"/dev/zero"));
        assert!(!r.is_device(b"/sys/devices/pci0000:00/0000:00:02.0/resource"));
        assert!(!r.is_device(b"/home/u/data.bin"));
        assert!(!r.is_device(b"/memfd:x (deleted)"));
    }

    #[test]
    fn extra_globs_and_no_defaults() {
        let r = Rules::new(&["/tmp/*.dev".into()], true);
        assert!(r.is_device(b"/tmp/a/b.dev"));
        assert!(!r.is_device(b"/dev/mem"));
    }

    #[test]
    fn glob_classes() {
        assert!(glob_match(b"a[0-9]b", b"a7b"));
        assert!(!glob_match(b"a[!0-9]b", b"a7b"));
        assert!(glob_match(b"*x?", b"abcxy"));
        assert!(!glob_match(b"*x?", b"abcx"));
    }

    #[test]
    fn ranges_parse_and_limit() {
        assert_eq!(
            parse_ranges("0x1000-0x2000, 16+16"),
            Some(vec![(0x1000, 0x2000), (16, 32)])
        );
        assert_eq!(parse_ranges("5-3"), None);
        let mut r = Rules {
            bypass: vec![(0x1000, 0x2000)],
            ..Default::default()
        };
        assert!(r.traced(0, 4096));
        assert!(!r.traced(0x1000, 4096));
        r.ranges = vec![(0x3000, 0x4000)];
        assert!(!r.traced(0, 4096));
        assert!(r.traced(0x3000, 4096));
    }

    #[test]
    fn resource_table_line() {
        let t = b"0x00000000fe000000 0x00000000fe7fffff 0x0000000000042208\n0x00000000fd000000 0x0000000000000000 0x0\n";
        assert_eq!(resource_start(t, 0), Some(0xfe00_0000));
        assert_eq!(resource_start(t, 1), Some(0xfd00_0000));
    }
}
