//! Shared mappings of files no device rule names: told to the recorder (ring notes of
//! kind [`Kind::Unmatched`], never written to the log) so that a recording that traced
//! nothing can say which files the program did map.
//!
//! Per process, a fixed table of path hashes with a count each: the first mapping of a
//! path sends the path; later ones send only when the count reaches a power of two (the
//! mappings since the last note), and [`flush`] sends the rest at exit and before an exec.
//! A program that maps one file 40,000 times sends 17 notes. Normal context, no
//! allocation (the `mmap` wrapper runs this, and malloc calls `mmap`), no lock.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mmio_trace_ring::{Kind, Record};

use crate::rules::NEVER;

const SLOTS: usize = 64;

struct Slot {
    /// FNV-1a hash of the path (0: free).
    hash: AtomicU64,
    /// Mappings of the path by this process.
    count: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    hash: AtomicU64::new(0),
    count: AtomicU32::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

fn fnv1a(path: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // 0 marks a free slot.
    h.max(1)
}

/// Whether a shared mapping of `path` is worth telling: a file with a name (not an
/// anonymous inode, socket, memfd or DMA buffer) that no rule could make traced.
fn interesting(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
        && !path.starts_with(b"/memfd:")
        && !path.starts_with(b"/dmabuf:")
        && !NEVER
            .iter()
            .any(|g| crate::rules::glob_match(g.as_bytes(), path))
}

/// Notes a shared mapping of `path` (open as `fd`) that no device rule matched.
pub(crate) fn mapped(fd: i32, path: &[u8]) {
    if !interesting(path) {
        return;
    }
    let h = fnv1a(path);
    let mut i = (h as usize) & (SLOTS - 1);
    let mut slot = None;
    for _ in 0..SLOTS {
        let s = &TABLE[i];
        let k = s.hash.load(Ordering::Acquire);
        if k == h
            || (k == 0
                && match s
                    .hash
                    .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => true,
                    Err(k) => k == h,
                })
        {
            slot = Some(s);
            break;
        }
        i = (i + 1) & (SLOTS - 1);
    }
    let Some(s) = slot else {
        // The table is full (a program mapping more than 64 distinct files): each
        // mapping of a further file is a note of its own.
        send(h, fd, path, 1);
        return;
    };
    let c = s.count.fetch_add(1, Ordering::Relaxed) + 1;
    if c == 1 {
        send(h, fd, path, 1);
    } else if c.is_power_of_two() {
        // The mappings since the last note (at c / 2).
        send(h, -1, &[], (c / 2) as u64);
    }
}

/// Sends the mappings not yet told (those after each path's last power of two): at exit
/// and before an exec.
pub fn flush() {
    for s in &TABLE {
        let h = s.hash.load(Ordering::Acquire);
        if h == 0 {
            continue;
        }
        let c = s.count.swap(0, Ordering::Relaxed);
        if c == 0 {
            continue;
        }
        // The notes so far told the largest power of two not above `c`.
        let told = 1u32 << (31 - c.leading_zeros());
        if c > told {
            send(h, -1, &[], (c - told) as u64);
        }
        // Counting restarts (the recorder adds up notes by path hash): the slot is free.
        s.hash.store(0, Ordering::Release);
    }
}

/// In a fork child: the parent's table and counts are the parent's to tell.
pub(crate) fn after_fork_child() {
    for s in &TABLE {
        s.count.store(0, Ordering::Relaxed);
        s.hash.store(0, Ordering::Relaxed);
    }
}

/// One note: `more` mappings of the path hashing to `h`; the path itself (and whether it
/// is a character or block device) on its first note.
fn send(h: u64, fd: i32, path: &[u8], more: u64) {
    let path = &path[..path.len().min(512)];
    let kind = if fd < 0 {
        0
    } else {
        match crate::sys::file_type(fd) {
            libc::S_IFCHR => 1,
            libc::S_IFBLK => 2,
            _ => 0,
        }
    };
    let first = Record::new(
        0,
        h,
        path.len() as u64 | more << 32,
        0,
        kind,
        Kind::Unmatched,
    );
    crate::emit::note(first, path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_files_that_a_rule_could_match_are_told() {
        for p in [
            "/dev/foo0",
            "/sys/devices/pci0000:00/0000:00:02.0/resource0",
            "/tmp/data (deleted)",
            "/dev/shm/cache",
        ] {
            assert!(interesting(p.as_bytes()), "{p}");
        }
        for p in [
            "/memfd:ring (deleted)",
            "/dmabuf:",
            "/dev/zero",
            "/dev/nvidia-uvm",
            "anon_inode:[eventfd]",
            "socket:[123]",
            "",
        ] {
            assert!(!interesting(p.as_bytes()), "{p}");
        }
        assert_ne!(fnv1a(b""), 0);
        assert_ne!(fnv1a(b"/dev/foo0"), fnv1a(b"/dev/foo1"));
    }
}
