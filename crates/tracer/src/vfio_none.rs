//! VFIO physical addresses without std (the freestanding agent): unknown, so a VFIO
//! mapping gets the device rules' address (`rules::phys_of`). The std module learns the
//! PCI device from the preload library's `ioctl` hook and reads sysfs.

/// Always `None` here.
pub(crate) fn phys_of(_fd: i32, _path: &[u8], _off: u64) -> Option<u64> {
    None
}
