//! The kernel's accesses to device memory on the program's behalf, and the exec notes.
//!
//! A system call handed a pointer into a traced mapping cannot touch its pages (they are
//! `PROT_NONE`): natively the call would succeed, under the tracer it fails with `EFAULT`.
//! The preload library's wrappers ask [`split`] where a buffer lies: in untraced memory,
//! in traced regions with an alias (the kernel is handed the alias instead: the same
//! device memory, touched once by the kernel as natively), or in traced regions without
//! one. After the call they log, with [`record`], which bytes of which mapping the kernel
//! read or wrote (a `Kind::Kernel` record; the recorder resolves map and physical address
//! as for accesses).
//!
//! Exec notes: an image exec'd through the preload library's wrappers carries
//! [`ENV_EXECED`] in its environment and says [`attached`] when its tracer starts; the
//! exec-ing process says [`exec_note`] first. The recorder names every exec no attach
//! followed: that image ran untraced (static, set-uid, a 32-bit program, ...).

use mmio_trace_ring::{Kind, Record};

use crate::rules::Rules;
use crate::{emit, is_active, regions, sys, MarkText, PAGE, RULES};

/// Set in the environment of images exec'd by a traced process: their tracer then says
/// [`attached`].
pub const ENV_EXECED: &str = "MMIO_TRACE_EXECED";

/// The most pieces [`split`] cuts one buffer into.
pub const MAX_PIECES: usize = 16;

/// A run of a buffer's bytes that lie alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// The program's address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the kernel can reach these bytes: `addr` itself for untraced memory, the
    /// alias for traced memory; 0 when it cannot (traced, no alias).
    pub reach: u64,
    /// The traced region's mapping id (`None`: untraced memory).
    pub map_id: Option<u64>,
    /// The physical address (or file offset) of traced bytes.
    pub phys: u64,
    /// The program's protection of traced bytes (`PROT_*`).
    pub prot: i32,
}

impl Piece {
    /// `len` bytes of untraced memory at `addr` (the kernel reaches them there).
    pub(crate) fn untraced(addr: u64, len: u64) -> Piece {
        Piece {
            addr,
            len,
            reach: addr,
            map_id: None,
            phys: 0,
            prot: 0,
        }
    }

    /// Whether the piece lies in traced device memory.
    pub fn traced(&self) -> bool {
        self.map_id.is_some()
    }
}

/// Where a buffer lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Wholly outside traced memory (or tracing is off): the call needs nothing.
    Untraced,
    /// In this many pieces (at least one traced).
    Pieces(usize),
    /// Over more than [`MAX_PIECES`] pieces.
    TooMany,
}

/// The device rules, when their `--range`/`--bypass` leave some pages of a region open.
fn page_rules() -> Option<&'static Rules> {
    RULES
        .get()
        .filter(|x| !x.ranges.is_empty() || !x.bypass.is_empty())
}

/// Whether the page holding `addr` of region `r` is closed.
fn page_traced(r: &regions::Region, addr: u64) -> bool {
    match page_rules() {
        Some(rules) => rules.traced(r.off_of(addr & !(PAGE - 1)), PAGE),
        None => true,
    }
}

/// Cuts `[addr, addr + len)` into pieces of untraced memory and of traced memory
/// (one region and one traced-or-not state of its pages each), in address order, into
/// `out`. No allocation, no lock: usable from any context.
pub fn split(addr: u64, len: u64, out: &mut [Piece; MAX_PIECES]) -> Split {
    if len == 0 || !is_active() || !regions::maybe_overlaps(addr, len) {
        return Split::Untraced;
    }
    let end = addr.saturating_add(len);
    // The regions the buffer overlaps, by start address.
    let mut regs = [None::<regions::Region>; MAX_PIECES];
    let mut nregs = 0;
    let mut too_many = false;
    regions::overlapping(addr, len, |r| {
        if nregs < MAX_PIECES {
            regs[nregs] = Some(r);
            nregs += 1;
        } else {
            too_many = true;
        }
    });
    if too_many {
        return Split::TooMany;
    }
    if nregs == 0 {
        return Split::Untraced;
    }
    regs[..nregs].sort_unstable_by_key(|r| r.map_or(0, |r| r.start));
    let mut n = 0;
    let mut any = false;
    let mut cur = addr;
    let mut push = |p: Piece, n: &mut usize| -> bool {
        if p.len == 0 {
            return true;
        }
        // Continues the previous piece?
        if let Some(prev) = n.checked_sub(1).and_then(|i| out.get_mut(i)) {
            let reach_next = if prev.reach == 0 {
                0
            } else {
                prev.reach + prev.len
            };
            let phys_next = if prev.map_id.is_some() {
                prev.phys + prev.len
            } else {
                0
            };
            if prev.map_id == p.map_id
                && reach_next == p.reach
                && prev.prot == p.prot
                && phys_next == p.phys
            {
                prev.len += p.len;
                return true;
            }
        }
        match out.get_mut(*n) {
            Some(slot) => {
                *slot = p;
                *n += 1;
                true
            }
            None => false,
        }
    };
    for r in regs[..nregs].iter().flatten() {
        // A region whose alias is made on its first access gets it now: the kernel is
        // about to access it.
        let made;
        let r = if r.alias == 0 && r.lazy != 0 {
            made = crate::site::find_aliased(r.start.max(addr)).unwrap_or(*r);
            &made
        } else {
            r
        };
        let rend = r.start + r.len;
        if cur < r.start {
            let to = r.start.min(end);
            if !push(Piece::untraced(cur, to - cur), &mut n) {
                return Split::TooMany;
            }
            cur = to;
        }
        // Page by page through the region (one step when no device rule opens pages).
        while cur < end && cur < rend {
            let step_end = if page_rules().is_some() {
                ((cur & !(PAGE - 1)) + PAGE).min(rend).min(end)
            } else {
                rend.min(end)
            };
            let p = if page_traced(r, cur) {
                any = true;
                Piece {
                    addr: cur,
                    len: step_end - cur,
                    reach: if r.alias != 0 { r.alias_of(cur) } else { 0 },
                    map_id: Some(r.map_id),
                    phys: r.phys_of(cur),
                    prot: r.prot,
                }
            } else {
                Piece::untraced(cur, step_end - cur)
            };
            if !push(p, &mut n) {
                return Split::TooMany;
            }
            cur = step_end;
        }
    }
    if cur < end && !push(Piece::untraced(cur, end - cur), &mut n) {
        return Split::TooMany;
    }
    if any {
        Split::Pieces(n)
    } else {
        Split::Untraced
    }
}

/// The index of `call` in the ring's list of call names (the last, `syscall`, for
/// names it does not list).
pub fn call_index(call: &str) -> u8 {
    Kind::KERNEL_CALLS
        .iter()
        .position(|&c| c == call)
        .unwrap_or(Kind::KERNEL_CALLS.len() - 1) as u8
}

/// Logs that the kernel read (`wrote` false) or wrote the first `done` bytes of the
/// buffer cut into `pieces`, in `call`: one record per traced piece it reached.
pub fn record(call: u8, wrote: bool, pieces: &[Piece], done: u64) {
    let mut left = done;
    for p in pieces {
        if left == 0 {
            break;
        }
        let k = p.len.min(left);
        left -= k;
        if let Some(id) = p.map_id {
            let w2 = k & ((1 << 48) - 1) | (wrote as u64) << 63;
            let first = Record::new(
                0,
                Record::access_word(p.addr, id),
                w2,
                0,
                call,
                Kind::Kernel,
            );
            emit::publish_one(first);
        }
    }
}

/// The start of the marker [`unreachable()`] writes.
pub const UNREACHABLE: &[u8] = b"kernel cannot reach ";

/// Logs, for each traced piece without an alias, that `call` cannot reach it: the call
/// is made with the program's pointer and fails with `EFAULT` (a marker
/// `kernel cannot reach N bytes of map ID at 0xPHYS (CALL): no alias mapping, the call
/// fails with EFAULT`; the recorder counts them and warns).
pub fn unreachable(call: &str, pieces: &[Piece]) {
    for p in pieces.iter().filter(|p| p.traced() && p.reach == 0) {
        let mut t = MarkText::<200>::empty();
        t.put(UNREACHABLE);
        t.num(p.len, false);
        t.put(b" bytes of map ");
        t.num(p.map_id.unwrap_or(0), false);
        t.put(b" at ");
        t.num(p.phys, true);
        t.put(b" (");
        t.put(call.as_bytes());
        t.put(b"): no alias mapping, the call fails with EFAULT");
        crate::mark(t.text());
    }
}

/// Logs that `call` cannot hand the kernel `[addr, addr + len)`: it spans more than
/// [`MAX_PIECES`] pieces (mappings, and pages the device rules leave open); the call is
/// made with the program's pointer and fails with `EFAULT` (a `kernel cannot reach`
/// marker, counted by the recorder as the others).
pub fn too_many_pieces(call: &str, addr: u64, len: u64) {
    let mut t = MarkText::<200>::empty();
    t.put(UNREACHABLE);
    t.num(len, false);
    t.put(b" bytes at virtual address ");
    t.num(addr, true);
    t.put(b" (");
    t.put(call.as_bytes());
    t.put(b"): the buffer spans more than 16 pieces, the call fails with EFAULT");
    crate::mark(t.text());
}

/// The length of the C string at `p` (its NUL within `max` bytes) if all of it can be
/// read: `None` where reading it would fault (a bad pointer, which the call it was given
/// to fails with `EFAULT` natively) or it is longer. Guarded loads, one byte at a time:
/// only once the tracer's handlers are installed.
pub fn cstr_len(p: *const u8, max: usize) -> Option<usize> {
    for i in 0..=max {
        let mut b = [0u8; 1];
        // SAFETY: a guarded load: a fault comes back as an error.
        unsafe { crate::guard::read((p as u64).wrapping_add(i as u64), &mut b) }.ok()?;
        if b[0] == 0 {
            return Some(i);
        }
    }
    None
}

/// The pointer-sized word at `p`, if it can be read (guarded, as [`cstr_len`]).
pub fn word(p: *const u8) -> Option<u64> {
    let mut b = [0u8; 8];
    // SAFETY: a guarded load: a fault comes back as an error.
    unsafe { crate::guard::read(p as u64, &mut b) }.ok()?;
    Some(u64::from_le_bytes(b))
}

/// Whether `v` (null, or a NULL-terminated array of C strings, as `execve`'s `argv` and
/// `envp`) can be read whole, within `max` bytes of strings.
pub fn strings_readable(v: *const *const u8, max: usize) -> bool {
    if v.is_null() {
        return true;
    }
    let mut left = max;
    for i in 0.. {
        let Some(s) = word(v.wrapping_add(i) as *const u8) else {
            return false;
        };
        if s == 0 {
            return true;
        }
        match cstr_len(s as *const u8, left) {
            Some(n) => left -= n,
            None => return false,
        }
    }
    true
}

/// Says that process `pid` is about to exec `path` (timed `ts`, or now): the recorder
/// then expects `pid` to attach, and warns if it never does. Without `ts` (the calling
/// process execs) the calling thread's ring is given up after the note.
pub fn exec_note(pid: u32, ts: Option<u64>, path: &[u8]) {
    if !is_active() {
        return;
    }
    if ts.is_none() {
        // The new image starts counting afresh: tell the old one's last mappings.
        crate::unmatched::flush();
    }
    let path = &path[..path.len().min(4096)];
    let first = Record::new(0, pid as u64, path.len() as u64, 0, 0, Kind::Exec);
    emit::publish(ts, first, path);
    if ts.is_none() {
        // This process execs: its new image will not use this thread's ring.
        crate::threads::retire_ring();
    }
}

/// Before an exec handed over to the recorder's ptrace route
/// ([`crate::handoff`]): what [`exec_note`] does for the old image, without the note
/// (the new image is the recorder's to trace, it never attaches).
pub fn exec_handed_off() {
    if !is_active() {
        return;
    }
    crate::unmatched::flush();
    crate::threads::retire_ring();
}

/// Withdraws the last [`exec_note`] of this process: the exec failed.
pub fn exec_failed() {
    if !is_active() {
        return;
    }
    let first = Record::new(0, sys::getpid() as u64, 0, 0, 1, Kind::Exec);
    emit::publish_one(first);
}

/// Says that this image, exec'd by a traced process, attached.
pub fn attached() {
    if !is_active() {
        return;
    }
    let first = Record::new(0, sys::getpid() as u64, 0, 0, 0, Kind::Attach);
    emit::publish_one(first);
    // Most exec'd images (shells, helpers) never touch the device: hold no ring for them.
    crate::threads::retire_ring();
}

/// The time now, for an [`exec_note`] written after the event it notes (`posix_spawn`
/// learns the child's pid only once the child may have attached).
pub fn now() -> u64 {
    // The recording's clock: the note is an event like any other.
    crate::emit::now()
}
