//! One string instruction's accesses (`REP MOVS`, `REP STOS`, `REP LODS`, ...) kept as one
//! item: the binary format stores it as one record (tag `0x8c`), readers and the text
//! writer expand it into the per-element [`Access`] events it stands for.

use crate::event::{Access, Direction};

/// The largest element count of one [`StringAccesses`] a reader accepts from a file (a
/// `REP STOS` of 4 G elements is 32 GiB; recorders split longer runs).
pub const MAX_STRING_COUNT: u64 = u32::MAX as u64;

/// One stream of a string instruction's accesses: the `k`-th element's access is at
/// `phys ± k * width` (minus when [`StringAccesses::down`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Read or write.
    pub dir: Direction,
    /// Id of the mapping the stream lies in.
    pub map_id: i64,
    /// Physical address of the first element's access.
    pub phys: u64,
}

/// The accesses of `count` consecutive elements of one string instruction, all made by
/// one thread at one instruction: per element, an access of `first` and, when there is
/// one, an access of `second` (a `MOVS` from one device address to another: the read,
/// then the write of the same value). Every access carries the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringAccesses {
    /// Time of the first access, nanoseconds (every element's access is logged with it).
    pub ts_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Program counter of the string instruction.
    pub pc: u64,
    /// Element width in bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// Number of elements (at least 1).
    pub count: u64,
    /// Addresses go down (DF = 1).
    pub down: bool,
    /// The stream every element has.
    pub first: Stream,
    /// The second access of each element, after the first, with the same value.
    pub second: Option<Stream>,
    /// The elements' values, `width` bytes each, little-endian: `count * width` bytes,
    /// or `width` bytes when every element has that value (`same`).
    pub values: Vec<u8>,
    /// Every element has the value `values` holds once.
    pub same: bool,
}

impl StringAccesses {
    /// How many accesses it stands for.
    pub fn accesses_len(&self) -> u64 {
        self.count * if self.second.is_some() { 2 } else { 1 }
    }

    /// Whether its fields are consistent: width 1, 2, 4 or 8, a count of at least 1,
    /// and as many value bytes as `same` says.
    pub fn is_valid(&self) -> bool {
        let w = u64::from(self.width);
        matches!(self.width, 1 | 2 | 4 | 8)
            && self.count >= 1
            && self.count <= MAX_STRING_COUNT
            && self.values.len() as u64 == if self.same { w } else { self.count * w }
    }

    /// The value of element `k`.
    pub fn value(&self, k: u64) -> u64 {
        let w = usize::from(self.width);
        let at = if self.same { 0 } else { k as usize * w };
        let mut b = [0u8; 8];
        if let Some(s) = self.values.get(at..at + w) {
            b[..w].copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }

    /// Access number `i` (`0..accesses_len()`), in the order the CPU made them.
    pub fn access(&self, i: u64) -> Access {
        let (k, s) = match self.second {
            Some(s) if i % 2 == 1 => (i / 2, s),
            Some(_) => (i / 2, self.first),
            None => (i, self.first),
        };
        let step = k.wrapping_mul(u64::from(self.width));
        let phys = if self.down {
            s.phys.wrapping_sub(step)
        } else {
            s.phys.wrapping_add(step)
        };
        let mut a = Access::new(s.dir, self.width, self.ts_ns, s.map_id, phys, self.value(k));
        a.pc = self.pc;
        a.pid = self.pid;
        a
    }

    /// Every access it stands for, in order.
    pub fn accesses(&self) -> impl Iterator<Item = Access> + '_ {
        (0..self.accesses_len()).map(|i| self.access(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_movs_between_two_streams_descending() {
        let s = StringAccesses {
            ts_ns: 5,
            pid: 7,
            pc: 0x400,
            width: 2,
            count: 2,
            down: true,
            first: Stream {
                dir: Direction::Read,
                map_id: 1,
                phys: 0x100,
            },
            second: Some(Stream {
                dir: Direction::Write,
                map_id: 2,
                phys: 0x200,
            }),
            values: vec![0x34, 0x12, 0x78, 0x56],
            same: false,
        };
        assert!(s.is_valid());
        let got: Vec<_> = s
            .accesses()
            .map(|a| (a.dir, a.map_id, a.phys, a.value, a.pc, a.pid, a.ts_ns))
            .collect();
        use Direction::{Read as R, Write as W};
        assert_eq!(
            got,
            vec![
                (R, 1, 0x100, 0x1234, 0x400, 7, 5),
                (W, 2, 0x200, 0x1234, 0x400, 7, 5),
                (R, 1, 0xfe, 0x5678, 0x400, 7, 5),
                (W, 2, 0x1fe, 0x5678, 0x400, 7, 5),
            ]
        );
    }

    #[test]
    fn same_value_and_validity() {
        let mut s = StringAccesses {
            ts_ns: 0,
            pid: 0,
            pc: 0,
            width: 8,
            count: 3,
            down: false,
            first: Stream {
                dir: Direction::Write,
                map_id: 1,
                phys: 0,
            },
            second: None,
            values: 0x1122u64.to_le_bytes().to_vec(),
            same: true,
        };
        assert!(s.is_valid());
        let v: Vec<_> = s.accesses().map(|a| (a.phys, a.value)).collect();
        assert_eq!(v, vec![(0, 0x1122), (8, 0x1122), (16, 0x1122)]);
        s.same = false;
        assert!(!s.is_valid());
        s.same = true;
        s.width = 3;
        assert!(!s.is_valid());
    }
}
