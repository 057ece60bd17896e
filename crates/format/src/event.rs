//! The event model: one variant per kind of line the kernel's mmiotrace writes.
//!
//! Timestamps are kept in nanoseconds so that the binary format can carry the
//! recorder's full resolution; the kernel text format prints microseconds, rounded
//! to nearest exactly as ftrace does, so a text log parsed and written again is
//! byte-identical.

/// The only version string the kernel's mmiotrace has ever written.
pub const KERNEL_VERSION: &str = "20070824";

/// The largest access width (bytes) the model carries: one AVX-512 register.
pub const MAX_WIDTH: usize = 64;

/// One record of an mmiotrace log.
#[derive(Clone, Debug, PartialEq, Eq)]
// An 8-byte tag: with the default 4-byte one, moving an event out of the
// `Result<Option<Event>>` that `next_event` returns copies it from offset 4, across the
// stores that wrote it, and the processor cannot forward them (`next_event` 1.3x faster
// for text logs, 1.55x for binary ones; same size, 64 bytes, and same `Option` niche).
#[repr(u64)]
pub enum Event {
    /// `VERSION 20070824`: the first line of a log read from `trace_pipe`.
    Version(Vec<u8>),
    /// `PCIDEV ...`: one PCI device of the traced machine, from the log header
    /// (boxed: it is rare and large, and every event moves through the readers).
    PciDev(Box<PciDev>),
    /// `MAP ...`: a device range was mapped and is traced from now on.
    Map(Map),
    /// `UNMAP ...`: a traced mapping went away.
    Unmap(Unmap),
    /// `R ...` / `W ...`: one access to device memory.
    Access(Access),
    /// `UNKNOWN ...`: an access whose instruction the tracer could not decode.
    Unknown(Unknown),
    /// `MARK ts text`: a marker written by the user or by a driver.
    Mark(Mark),
    /// `MARK 0.000000 Lost N events.`: the tracer dropped N events before this point.
    LostEvents(u64),
    /// `MARK ts kernel read|wrote N bytes of map ID at 0xPHYS (CALL) pid TID`: a system
    /// call read or wrote device memory on the program's behalf (user-space recordings).
    Kernel(KernelAccess),
    /// ftrace's `CPU:n [LOST m EVENTS]` (or `CPU:n [LOST EVENTS]` when the count is unknown).
    CpuLost {
        /// The CPU whose ring buffer overflowed.
        cpu: u32,
        /// How many events it lost, where ftrace knows.
        count: Option<u64>,
    },
    /// A line that carries no event but that kernel logs can contain: ftrace's `#`
    /// comment header (logs taken from `trace` rather than `trace_pipe`), the
    /// writer's `rw what?` / `map what?` fallbacks and the documented `LSPCI` lines.
    /// Kept byte for byte (without the newline) so that round trips stay exact.
    Verbatim(Vec<u8>),
}

/// A `PCIDEV` header line: the fields of `/proc/bus/pci/devices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDev {
    /// PCI bus number.
    pub bus: u8,
    /// `slot << 3 | function`.
    pub devfn: u8,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// Interrupt line.
    pub irq: u32,
    /// Start of BAR0..BAR5 and the expansion ROM, with the low four BAR flag bits OR-ed in.
    pub starts: [u64; 7],
    /// Sizes of the seven resources (0 when unused).
    pub sizes: [u64; 7],
    /// Name of the bound driver, if any.
    pub driver: Option<Vec<u8>>,
}

impl PciDev {
    /// The physical base of resource `i` (0..=6) with the flag bits masked off.
    pub fn base(&self, i: usize) -> u64 {
        let start = self.starts[i];
        if start & 1 != 0 {
            start & !0x3
        } else {
            start & !0xf
        }
    }

    /// The index of the memory resource (BAR or ROM) containing physical address `phys`.
    pub fn resource_of(&self, phys: u64) -> Option<usize> {
        (0..7).find(|&i| {
            let size = self.sizes[i];
            let base = self.base(i);
            self.starts[i] & 1 == 0 && size != 0 && phys >= base && phys - base < size
        })
    }
}

/// A `MAP` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Map {
    /// Time of the mapping, nanoseconds.
    pub ts_ns: u64,
    /// Mapping id, referenced by accesses and by the `UNMAP`.
    pub id: i64,
    /// Physical address of the first byte (or the file offset when unknown).
    pub phys: u64,
    /// Virtual address the mapping got.
    pub virt: u64,
    /// Length in bytes as requested.
    pub len: u64,
    /// Program counter of the mapping call (0 in kernel logs).
    pub pc: u64,
    /// Thread id (0 in kernel logs).
    pub pid: u32,
}

/// An `UNMAP` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmap {
    /// Time, nanoseconds.
    pub ts_ns: u64,
    /// Id of the mapping torn down; -1 when the tracer did not know it.
    pub id: i64,
    /// Program counter (0 in kernel logs).
    pub pc: u64,
    /// Thread id (0 in kernel logs).
    pub pid: u32,
}

/// Direction of an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `R`: the device was read.
    Read,
    /// `W`: the device was written.
    Write,
}

/// An `R` or `W` line, or (in the binary format) one access of up to 64 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read or write.
    pub dir: Direction,
    /// Width in bytes, 1..=64.
    pub width: u8,
    /// Thread id (0 in kernel logs).
    pub pid: u32,
    /// Time, nanoseconds.
    pub ts_ns: u64,
    /// Id of the mapping the access fell in.
    pub map_id: i64,
    /// Physical address of the first byte.
    pub phys: u64,
    /// The logged value. For the kernel's MOVSX reads this is the sign-extended
    /// register, hence a full `u64` whatever the width. For accesses wider than 8
    /// bytes, the first 8 bus bytes (little-endian); all of them are in `wide`.
    pub value: u64,
    /// Program counter of the instruction (0 in kernel logs unless `trace_pc=1`).
    pub pc: u64,
    /// The bus bytes of an access wider than 8 bytes (the first `width` are valid).
    /// Boxed so that the common narrow access stays small to move around.
    pub wide: Option<Box<[u8; MAX_WIDTH]>>,
}

impl Access {
    /// An access of at most 8 bytes.
    pub fn new(dir: Direction, width: u8, ts_ns: u64, map_id: i64, phys: u64, value: u64) -> Self {
        Access {
            dir,
            width,
            pid: 0,
            ts_ns,
            map_id,
            phys,
            value,
            pc: 0,
            wide: None,
        }
    }

    /// An access of any width up to 64 bytes, from the bytes that crossed the bus
    /// (`bytes.len()` is the width).
    ///
    /// # Panics
    /// If `bytes` is empty or longer than [`MAX_WIDTH`].
    pub fn from_bytes(dir: Direction, ts_ns: u64, map_id: i64, phys: u64, bytes: &[u8]) -> Self {
        assert!(
            (1..=MAX_WIDTH).contains(&bytes.len()),
            "access width must be 1..=64"
        );
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        let mut a = Access::new(
            dir,
            bytes.len() as u8,
            ts_ns,
            map_id,
            phys,
            u64::from_le_bytes(first),
        );
        if bytes.len() > 8 {
            let mut wide = Box::new([0u8; MAX_WIDTH]);
            wide[..bytes.len()].copy_from_slice(bytes);
            a.wide = Some(wide);
        }
        a
    }

    /// The logged value of an access of at most 8 bytes (the first 8 bytes otherwise).
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The bus bytes, little-endian: `width` of them are meaningful.
    pub fn bytes(&self) -> [u8; MAX_WIDTH] {
        match &self.wide {
            Some(w) => **w,
            None => {
                let mut out = [0u8; MAX_WIDTH];
                out[..8].copy_from_slice(&self.value.to_le_bytes());
                out
            }
        }
    }
}

/// An `UNKNOWN` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown {
    /// Time, nanoseconds.
    pub ts_ns: u64,
    /// Mapping id.
    pub map_id: i64,
    /// Physical address of the access.
    pub phys: u64,
    /// The first three bytes of the instruction.
    pub opcode: [u8; 3],
    /// Program counter.
    pub pc: u64,
    /// Thread id.
    pub pid: u32,
}

/// A `MARK` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Time, nanoseconds.
    pub ts_ns: u64,
    /// The marker text, raw bytes; embedded newlines are kept (the log then holds
    /// continuation lines), the final newline is not part of the text.
    pub text: Vec<u8>,
}

/// A system call's access to device memory, made by the kernel for the program (the
/// buffer of a `read`, `write`, `stat`, ... lay in a traced mapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelAccess {
    /// Time the call returned, nanoseconds.
    pub ts_ns: u64,
    /// [`Direction::Read`]: the kernel read the device memory (e.g. `write(2)` from it);
    /// [`Direction::Write`]: it wrote it (e.g. `read(2)` into it).
    pub dir: Direction,
    /// Bytes accessed, at least 1.
    pub len: u64,
    /// Id of the mapping.
    pub map_id: i64,
    /// Physical address of the first byte, as in `R`/`W` lines.
    pub phys: u64,
    /// The call's name (`write`, `recvmsg`, `fstat`, ...): ASCII lowercase letters,
    /// digits and `_`, 1 to 32 of them.
    pub call: Vec<u8>,
    /// Thread id of the caller.
    pub pid: u32,
}

impl KernelAccess {
    /// The marker text of this access (without `MARK ts `).
    pub fn text(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(64);
        t.extend_from_slice(match self.dir {
            Direction::Read => b"kernel read ",
            Direction::Write => b"kernel wrote ",
        });
        t.extend_from_slice(self.len.to_string().as_bytes());
        t.extend_from_slice(b" bytes of map ");
        t.extend_from_slice(self.map_id.to_string().as_bytes());
        t.extend_from_slice(format!(" at {:#x} (", self.phys).as_bytes());
        t.extend_from_slice(&self.call);
        t.extend_from_slice(b") pid ");
        t.extend_from_slice(self.pid.to_string().as_bytes());
        t
    }

    /// Parses marker text written by [`KernelAccess::text`]: only its canonical form
    /// (no leading zeros, lowercase hex, single spaces), so that every text it accepts is
    /// written back byte for byte. `None` for any other text.
    pub fn parse(ts_ns: u64, text: &[u8]) -> Option<KernelAccess> {
        let (dir, r) = if let Some(r) = text.strip_prefix(b"kernel read ") {
            (Direction::Read, r)
        } else {
            (Direction::Write, text.strip_prefix(b"kernel wrote ")?)
        };
        let (len, r) = dec(r)?;
        let r = r.strip_prefix(b" bytes of map ")?;
        let (map_id, r) = match r.strip_prefix(b"-") {
            Some(r) => {
                let (v, r) = dec(r)?;
                (i64::try_from(v).ok().filter(|&v| v != 0)?.checked_neg()?, r)
            }
            None => {
                let (v, r) = dec(r)?;
                (i64::try_from(v).ok()?, r)
            }
        };
        let r = r.strip_prefix(b" at 0x")?;
        let n = r
            .iter()
            .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .count();
        if n == 0 || n > 16 || (n > 1 && r[0] == b'0') {
            return None;
        }
        let phys = u64::from_str_radix(std::str::from_utf8(&r[..n]).ok()?, 16).ok()?;
        let r = r[n..].strip_prefix(b" (")?;
        let n = r
            .iter()
            .take_while(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_'))
            .count();
        if n == 0 || n > 32 {
            return None;
        }
        let call = r[..n].to_vec();
        let r = r[n..].strip_prefix(b") pid ")?;
        let (pid, r) = dec(r)?;
        if !r.is_empty() || len == 0 {
            return None;
        }
        Some(KernelAccess {
            ts_ns,
            dir,
            len,
            map_id,
            phys,
            call,
            pid: u32::try_from(pid).ok()?,
        })
    }
}

/// A canonical decimal number (no leading zeros) at the start of `s`, and the rest.
fn dec(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 || (n > 1 && s[0] == b'0') {
        return None;
    }
    let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
    Some((v, &s[n..]))
}

impl Event {
    /// The event's timestamp in nanoseconds, for events that have one.
    pub fn ts_ns(&self) -> Option<u64> {
        match self {
            Event::Map(m) => Some(m.ts_ns),
            Event::Unmap(u) => Some(u.ts_ns),
            Event::Access(a) => Some(a.ts_ns),
            Event::Unknown(u) => Some(u.ts_ns),
            Event::Mark(m) => Some(m.ts_ns),
            Event::Kernel(k) => Some(k.ts_ns),
            _ => None,
        }
    }

    /// The thread id of the event, for events that carry one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Event::Map(m) => Some(m.pid),
            Event::Unmap(u) => Some(u.pid),
            Event::Access(a) => Some(a.pid),
            Event::Unknown(u) => Some(u.pid),
            Event::Kernel(k) => Some(k.pid),
            _ => None,
        }
    }
}
