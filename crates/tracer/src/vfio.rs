//! Physical addresses of VFIO mappings.
//!
//! A VFIO device fd (`anon_inode:[vfio-device]`) does not say which PCI device it is; the
//! program learnt it with `ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0")`, which
//! the preload library reports here ([`device_fd_opened`]). The iommufd character device
//! (`/dev/vfio/devices/vfioN`) names its PCI device in sysfs. vfio-pci puts region `i` at
//! mmap offset `i << 40`, so a BAR mapping's physical address is the BAR base (sysfs
//! `resource` table) plus the offset within the region.

use std::sync::Mutex;

/// `VFIO_GROUP_GET_DEVICE_FD` (`_IO(';', 100 + 6)`).
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = 0x3b6a;

/// vfio-pci's region index shift in the mmap offset.
const REGION_SHIFT: u32 = 40;

static DEVICES: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// Records that `fd` is the VFIO device fd of PCI device `bdf` (e.g. `0000:01:00.0`).
pub fn device_fd_opened(fd: i32, bdf: &str) {
    if let Ok(mut d) = DEVICES.lock() {
        d.retain(|(f, _)| *f != fd);
        d.push((fd, bdf.to_string()));
    }
}

/// The PCI device of a VFIO mapping's fd and path, if known.
fn bdf_of(fd: i32, path: &[u8]) -> Option<String> {
    if path == b"anon_inode:[vfio-device]" {
        return DEVICES
            .lock()
            .ok()?
            .iter()
            .find(|(f, _)| *f == fd)
            .map(|(_, b)| b.clone());
    }
    let name = path.strip_prefix(b"/dev/vfio/devices/")?;
    let name = std::str::from_utf8(name).ok()?;
    let link = std::fs::read_link(format!("/sys/class/vfio-dev/{name}/device")).ok()?;
    Some(link.file_name()?.to_str()?.to_string())
}

/// The physical address of mmap offset `off` of VFIO `fd` (`path` its canonical name).
pub fn phys_of(fd: i32, path: &[u8], off: u64) -> Option<u64> {
    let bdf = bdf_of(fd, path)?;
    let table = std::fs::read(format!("/sys/bus/pci/devices/{bdf}/resource")).ok()?;
    vfio_phys(&table, off)
}

/// BAR base (line `off >> 40` of a sysfs `resource` table) plus the offset in the region.
pub fn vfio_phys(table: &[u8], off: u64) -> Option<u64> {
    let region = (off >> REGION_SHIFT) as usize;
    if region > 5 {
        return None;
    }
    let base = crate::rules::resource_start(table, region)?;
    Some(base + (off & ((1u64 << REGION_SHIFT) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_index_selects_the_bar_line() {
        let t = b"0x00000000fe000000 0x00000000fe7fffff 0x0000000000040200\n\
                  0x00000000fd000000 0x00000000fdffffff 0x0000000000040200\n";
        assert_eq!(vfio_phys(t, 0x1000), Some(0xfe00_1000));
        assert_eq!(vfio_phys(t, (1 << 40) | 0x20), Some(0xfd00_0020));
        assert_eq!(vfio_phys(t, 7 << 40), None);
    }

    #[test]
    fn a_reported_device_fd_is_found() {
        device_fd_opened(77, "0000:01:00.0");
        assert_eq!(
            bdf_of(77, b"anon_inode:[vfio-device]").as_deref(),
            Some("0000:01:00.0")
        );
        assert_eq!(bdf_of(78, b"anon_inode:[vfio-device]"), None);
    }
}
