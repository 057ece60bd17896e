//! The fixed 32-byte record and the event encodings built from it.
//!
//! ```text
//! word 0: timestamp in the recording's clock (Header::clock: TSC ticks or CLOCK_MONOTONIC
//!         ns); the consumer hands records out with it in absolute CLOCK_MONOTONIC ns
//! word 1: kind-specific (accesses: virtual address | low 16 bits of the map id << 48)
//! word 2: kind-specific (accesses: value, zero-extended)
//! word 3: pc (low 48 bits) | width << 48 | kind << 56: never zero in an event's first
//!         record (kind >= 1), and stored last: the event's commit word
//! ```
//! Multi-record events: the first record says how many follow (derivable from its fields:
//! [`Record::extra`]); the followers carry raw bytes.

/// Size of one record in bytes.
pub const RECORD_SIZE: usize = 32;

/// One ring slot.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record(pub [u64; 4]);

/// Event kinds (byte 7 of word 3).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Continuation data of the previous record.
    Data = 0,
    /// A read of at most 8 bytes.
    Read = 1,
    /// A write of at most 8 bytes.
    Write = 2,
    /// A read wider than 8 bytes: word 2 unused; `ceil(width/32)` data records follow.
    ReadWide = 3,
    /// A write wider than 8 bytes; as [`Kind::ReadWide`].
    WriteWide = 4,
    /// A mapping: word 1 virt, word 2 len; one data record `[phys, map_id, 0, 0]` follows.
    Map = 5,
    /// An unmapping: word 2 = map id.
    Unmap = 6,
    /// A marker: word 2 = text length; `ceil(len/32)` data records follow.
    Mark = 7,
    /// An access whose instruction could not be decoded: word 1 as accesses, word 2 =
    /// the first instruction bytes (little-endian).
    Unknown = 8,
    /// A system call's access to device memory on the program's behalf: word 1 as
    /// accesses (the program's address), word 2 = byte count | 1 << 63 when the kernel
    /// wrote the memory; width = the call's index in [`Kind::KERNEL_CALLS`].
    Kernel = 9,
    /// This process is about to exec an image (word 1 = pid; word 2 = path length,
    /// `ceil(len/32)` data records follow): the recorder expects that pid to attach.
    /// Width 1: the exec failed (no path), the expectation is withdrawn.
    Exec = 10,
    /// An image started by a traced exec attached (word 1 = pid).
    Attach = 11,
    /// Shared mappings of a file that no device rule names (not traced), for the
    /// recorder's warning only (never logged): word 1 = a 64-bit hash of the path (FNV-1a,
    /// never 0), word 2 = path length | the number of mappings this note adds << 32;
    /// `ceil(len/32)` data records hold the path (length 0: a path this process already
    /// sent). Width: 1 a character device, 2 a block device, 0 anything else (or unknown).
    Unmatched = 12,
    /// A run of one string instruction's elements (`REP MOVS/STOS/LODS/SCAS`), all
    /// logged with this record's time: word 1 as accesses (the first element's access of
    /// the first stream), word 2 = element count (bits 0..32) | `Record::STR_*` flags
    /// << 32, width = the element width (1, 2, 4, 8). Data records follow: with
    /// `STR_SECOND`, one holding word 1 of the second stream's first access (each
    /// element's second access, with the same value: `MOVS` between two device
    /// addresses); then the values, `width` bytes per element (`ceil(count * width /
    /// 32)` records), or, with `STR_SAME`, one record whose word 0 is every element's
    /// value. Element k's access is at the first address ± k * width.
    Str = 13,
    /// The hot-site patcher's report on one site, for the recorder's summary only (never
    /// logged): word 1 = the site's pc (0: the whole process), word 2 = status (bits 0-7:
    /// 0 patched, 1 not patched, 2 patching is off, 3 void: a trampoline's reservation it
    /// made again) | reason length << 8 (16 bits); `ceil(len/32)` data records hold the
    /// reason (a void one's are unused). The recorder counts traps per site itself.
    Patch = 14,
}

impl Kind {
    /// Names of the system calls a [`Kind::Kernel`] record can name, by index.
    pub const KERNEL_CALLS: &'static [&'static str] = &[
        "read",
        "write",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "preadv",
        "pwritev",
        "preadv2",
        "pwritev2",
        "send",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "recv",
        "recvfrom",
        "recvmsg",
        "recvmmsg",
        "futex",
        "ioctl",
        "stat",
        "fstat",
        "lstat",
        "fstatat",
        "statx",
        "getrandom",
        "pipe",
        "pipe2",
        "socketpair",
        "pread",
        "pwrite",
        "preadv64",
        "pwritev64",
        "readlink",
        "readlinkat",
        "getcwd",
        "uname",
        "poll",
        "waitpid",
        "wait4",
        "fread",
        "fwrite",
        "fread_unlocked",
        "fwrite_unlocked",
        "syscall",
    ];
}

impl Kind {
    /// The kind with this number.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Data,
            1 => Kind::Read,
            2 => Kind::Write,
            3 => Kind::ReadWide,
            4 => Kind::WriteWide,
            5 => Kind::Map,
            6 => Kind::Unmap,
            7 => Kind::Mark,
            8 => Kind::Unknown,
            9 => Kind::Kernel,
            10 => Kind::Exec,
            11 => Kind::Attach,
            12 => Kind::Unmatched,
            13 => Kind::Str,
            14 => Kind::Patch,
            _ => return None,
        })
    }
}

const PC_MASK: u64 = (1 << 48) - 1;
/// Bit 47 of word 3: an access written by a hot-site trampoline rather than the trap path
/// (user-space PCs are below 2^47).
pub const VIA_TRAMPOLINE: u64 = 1 << 47;

/// The most value bytes one [`Kind::Str`] event carries (producers split longer runs).
pub const MAX_STR_VALUES: usize = 4096;

/// The largest marker text carried (longer text is cut; the first record keeps the
/// whole length, for the consumer to say so).
pub const MAX_MARK: usize = 4096;

impl Record {
    /// [`Kind::Str`] flag: the first stream's accesses are writes (else reads).
    pub const STR_WRITE: u64 = 1;
    /// [`Kind::Str`] flag: each element has a second access, a write of the same value
    /// (its first address in the first data record).
    pub const STR_SECOND: u64 = 2;
    /// [`Kind::Str`] flag: addresses go down (DF = 1).
    pub const STR_DOWN: u64 = 4;
    /// [`Kind::Str`] flag: every element has one value, in the first value record.
    pub const STR_SAME: u64 = 8;

    /// The first record of an event.
    #[inline]
    pub const fn new(ts: u64, w1: u64, w2: u64, pc: u64, width: u8, kind: Kind) -> Record {
        Record([
            ts,
            w1,
            w2,
            (pc & PC_MASK) | (width as u64) << 48 | (kind as u64) << 56,
        ])
    }

    /// Word 1 of an access: the virtual address and the low 16 bits of the map id.
    #[inline]
    pub const fn access_word(addr: u64, map_id: u64) -> u64 {
        (addr & PC_MASK) | (map_id & 0xffff) << 48
    }

    /// A data record holding up to 32 raw bytes.
    #[inline]
    pub fn data(bytes: &[u8]) -> Record {
        let mut b = [0u8; 32];
        let n = bytes.len().min(32);
        b[..n].copy_from_slice(&bytes[..n]);
        let mut w = [0u64; 4];
        for (i, c) in b.chunks_exact(8).enumerate() {
            w[i] = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        }
        Record(w)
    }

    /// The raw bytes of a data record.
    pub fn bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, w) in self.0.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Timestamp (in a record the consumer handed out: absolute `CLOCK_MONOTONIC` ns).
    pub fn ts(&self) -> u64 {
        self.0[0]
    }
    /// Kind, if known.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8((self.0[3] >> 56) as u8)
    }
    /// Width in bytes (accesses).
    pub fn width(&self) -> u8 {
        (self.0[3] >> 48) as u8
    }
    /// Program counter.
    pub fn pc(&self) -> u64 {
        self.0[3] & PC_MASK & !VIA_TRAMPOLINE
    }
    /// Whether an access was written by a hot-site trampoline (bit 47 of word 3).
    pub fn via_trampoline(&self) -> bool {
        self.0[3] & VIA_TRAMPOLINE != 0
    }
    /// Virtual address of an access.
    pub fn addr(&self) -> u64 {
        self.0[1] & PC_MASK
    }
    /// Low 16 bits of an access's map id.
    pub fn map_low(&self) -> u16 {
        (self.0[1] >> 48) as u16
    }
    /// Value of an access of at most 8 bytes.
    pub fn value(&self) -> u64 {
        self.0[2]
    }

    /// How many data records follow this first record.
    pub fn extra(&self) -> usize {
        match self.kind() {
            Some(Kind::ReadWide) | Some(Kind::WriteWide) => (self.width() as usize).div_ceil(32),
            Some(Kind::Map) => 1,
            Some(Kind::Mark) | Some(Kind::Exec) => (self.0[2] as usize).min(MAX_MARK).div_ceil(32),
            Some(Kind::Unmatched) => (self.0[2] as u32 as usize).min(MAX_MARK).div_ceil(32),
            Some(Kind::Str) => {
                let flags = self.0[2] >> 32;
                let second = (flags & Record::STR_SECOND != 0) as usize;
                let values = if flags & Record::STR_SAME != 0 {
                    1
                } else {
                    (self.0[2] as u32 as usize * self.width() as usize)
                        .min(MAX_STR_VALUES)
                        .div_ceil(32)
                };
                second + values
            }
            Some(Kind::Patch) => ((self.0[2] >> 8) as u16 as usize).min(512).div_ceil(32),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_events_count_their_data_records() {
        let str_rec = |count: u64, width: u8, flags: u64| {
            Record::new(1, 0x1000, count | flags << 32, 0, width, Kind::Str)
        };
        // Values: ceil(count * width / 32) records.
        assert_eq!(str_rec(1, 1, 0).extra(), 1);
        assert_eq!(str_rec(32, 1, 0).extra(), 1);
        assert_eq!(str_rec(33, 1, 0).extra(), 2);
        assert_eq!(str_rec(512, 8, 0).extra(), 128);
        // A second stream's address first.
        assert_eq!(str_rec(5, 2, Record::STR_SECOND).extra(), 2);
        // One value for all, however many elements.
        assert_eq!(str_rec(u32::MAX as u64, 8, Record::STR_SAME).extra(), 1);
        let both = Record::STR_SAME | Record::STR_SECOND | Record::STR_WRITE | Record::STR_DOWN;
        assert_eq!(str_rec(9, 4, both).extra(), 2);
        // Never more than the values one event may carry.
        assert_eq!(str_rec(u32::MAX as u64, 8, 0).extra(), MAX_STR_VALUES / 32);
        assert_eq!(Kind::from_u8(13), Some(Kind::Str));
    }
}
