//! Replay: device mappings served by a model of a recorded trace instead of the device.
//!
//! `mmio-trace replay` puts a [`mmio_trace_replay::image`] in a memfd and names it in
//! [`ENV_REPLAY_FD`] / [`ENV_REPLAY_PATH`]. Each device mapping is bound at `mmap` to a
//! map of the trace (`on_map`); its alias is then only a *shadow* (the file, or the
//! memfd an open of the device file was diverted to, see [`open_stand_in`]): writes land there
//! and reads of registers the trace never read return what it holds, while every read
//! of a recorded register gets the trace's next value (`after_read`) and every access
//! is checked against the thread's recorded sequence (`after_write`). The fault path
//! calls these right after its alias access, so the emulated and out-of-line paths both
//! serve the model; the step path fills the shadow before a load it can name the value
//! of and checks a store after it (`before_step`, `after_step`); another stepped access
//! is served by the shadow, unchecked, and counted. Nothing on the fault path allocates
//! or locks: the image's tables are lock-free.

use std::sync::atomic::{AtomicUsize, Ordering};

use mmio_trace_replay::image::{Image, Injected, Verdict};

use crate::{emit, sys, MarkText};

/// The environment variable naming the replay image's descriptor.
pub const ENV_REPLAY_FD: &str = "MMIO_TRACE_REPLAY_FD";
/// The environment variable naming the replay image by path (`/proc/PID/fd/N`), for
/// images whose inherited descriptor was closed.
pub const ENV_REPLAY_PATH: &str = "MMIO_TRACE_REPLAY_PATH";

static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);

/// The image, when this process replays.
#[inline]
fn image() -> Option<Image> {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: set by `init_from_env` from a shared mapping that is never unmapped.
    unsafe { Image::from_raw(base as *mut u8, LEN.load(Ordering::Relaxed)) }
}

/// Whether this process replays a trace.
#[inline]
pub fn active() -> bool {
    BASE.load(Ordering::Relaxed) != 0
}

fn map_image(fd: i32) -> Option<(usize, usize)> {
    // SAFETY: a fresh shared read-only view of one page, to read the header.
    let p = unsafe { sys::mmap(0, 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    if p < 0 {
        return None;
    }
    // SAFETY: the page just mapped.
    let head = unsafe { std::slice::from_raw_parts(p as *const u8, 4096) };
    let size = Image::size_from_header(head);
    // SAFETY: unmapping what we mapped.
    unsafe { sys::munmap(p as usize, 4096) };
    let size = size?;
    // SAFETY: shared mapping of the whole image; never unmapped.
    let base = unsafe {
        sys::mmap(
            0,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (base >= 0).then_some((base as usize, size))
}

/// Maps the replay image named in the environment (normal context, at start).
pub(crate) fn init_from_env() {
    let fd = std::env::var(ENV_REPLAY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let mut mapped = fd.and_then(map_image);
    if mapped.is_none() {
        if let Some(path) = std::env::var_os(ENV_REPLAY_PATH) {
            let mut p = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
            p.push(0);
            // SAFETY: a NUL-terminated path.
            let n = unsafe { libc::open(p.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
            if n >= 0 {
                mapped = map_image(n);
                sys::close(n);
            }
        }
    }
    match mapped {
        Some((base, len)) => {
            LEN.store(len, Ordering::Relaxed);
            BASE.store(base, Ordering::Release);
        }
        None if fd.is_some() => {
            let msg = b"mmio-trace: this process cannot reach the replay model: its device accesses go to the device file as it is\n";
            // SAFETY: a static buffer to stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
        None => {}
    }
}

/// Binds a new traced mapping (`map_id`, whose first byte has physical address `phys`,
/// of `path` at file offset `off`) to a map of the trace, and says so in the log.
/// Offsets into it are counted in physical addresses, which an `mremap` keeps.
pub(crate) fn on_map(map_id: u64, phys: u64, path: &[u8], off: u64) {
    let Some(img) = image() else { return };
    // The injection rules whose file glob names this file.
    let mut rules = 0u64;
    let mut buf = [0u8; 256];
    for i in 0..img.nrules().min(64) {
        let hit = match img.rule_file(i, &mut buf) {
            Some(glob) => crate::rules::glob_match(glob, path),
            None => true,
        };
        rules |= u64::from(hit) << i;
    }
    let bound = img.bind(map_id, phys, path, off, rules);
    if !img.has_trace() {
        return;
    }
    let mut t = MarkText::new();
    t.put(b"replay: map ");
    t.num(map_id, false);
    match bound {
        Some(i) => {
            t.put(b" is served by the trace's map #");
            t.num(i as u64 + 1, false);
        }
        None => t.put(b" matches no map of the trace: served by its file as it is"),
    }
    emit::mark(t.text());
}

/// Mapping `id` continues mapping `from` (an `mremap` moved, grew or duplicated it):
/// it is served by the same map of the trace.
pub(crate) fn on_continue(id: u64, from: u64) {
    let Some(img) = image() else { return };
    img.bind_as(id, from);
}

/// The offset of `addr` in the mapping whose first byte's physical address is `base`.
#[inline]
fn rel_of(addr: u64, base: u64) -> u64 {
    match crate::regions::find(addr) {
        Some(r) => r
            .phys
            .wrapping_add(addr.wrapping_sub(r.start))
            .wrapping_sub(base),
        None => u64::MAX,
    }
}

/// The calling thread's id: from its block (no system call on the fault path, where one
/// more kernel entry would cost a third of a trap).
fn tid() -> u32 {
    match crate::threads::current().map(|b| b.tid()) {
        Some(t) if t != 0 => t,
        _ => sys::gettid(),
    }
}

/// After the fault path read `buf` at `addr` of mapping `map_id` from its alias: the
/// trace's next value of that register replaces it, and the access is checked.
/// Signal context: no allocation, no lock.
#[inline]
pub(crate) fn after_read(map_id: u64, addr: u64, buf: &mut [u8], pc: u64) {
    let Some(img) = image() else { return };
    if img.stopping() {
        stop_now();
    }
    let Some(b) = img.binding(map_id) else {
        if img.has_trace() {
            img.note_unbound();
        }
        return;
    };
    let rel = rel_of(addr, b.base);
    let width = buf.len().min(64) as u8;
    if let Some(map) = b.map {
        let (v, checked) = img.read(map, tid(), width, rel, pc);
        // Accesses wider than 8 bytes keep the shadow's bytes (the model holds 8 of them).
        if let (Some(v), true) = (v, buf.len() <= 8) {
            buf.copy_from_slice(&v.to_le_bytes()[..buf.len()]);
        }
        let value = first_word(buf);
        verdict(img, checked, false, width, rel, value, map_id, pc);
    } else if img.has_trace() {
        img.note_unbound();
    }
    if b.rules != 0 {
        let mut v = first_word(buf);
        let before = v;
        let inj = img.inject(b.rules, rel, width, false, &mut v);
        if inj.changed && buf.len() <= 8 {
            buf.copy_from_slice(&v.to_le_bytes()[..buf.len()]);
        }
        injected(inj, false, width, rel, before, v, map_id);
    }
}

/// Marks an injection in the log (before the access it changed, delayed or ended),
/// then delays, or sends SIGBUS to the thread (delivered once the instruction
/// completes: the device is gone from then on).
fn injected(inj: Injected, write: bool, width: u8, rel: u64, before: u64, after: u64, map_id: u64) {
    if let (Some(rule), true) = (inj.rule, inj.changed || inj.sigbus) {
        let mut t = MarkText::new();
        t.put(b"inject: rule ");
        t.num(rule as u64 + 1, false);
        t.put(b": ");
        t.put(if write { b"W" } else { b"R" });
        t.num(u64::from(width), false);
        t.put(b" map ");
        t.num(map_id, false);
        t.put(b" +");
        t.num(rel, true);
        if inj.changed {
            t.put(b" = ");
            t.num(before, true);
            t.put(b" -> ");
            t.num(after, true);
        }
        if inj.sigbus {
            t.put(b": SIGBUS (device gone)");
        }
        emit::mark(t.text());
    }
    if inj.delay_ns > 0 {
        let ts = libc::timespec {
            tv_sec: (inj.delay_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (inj.delay_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: a plain system call on a local timespec (async-signal-safe).
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
    if inj.sigbus {
        sys::tgkill(crate::pid(), sys::gettid(), libc::SIGBUS);
    }
}

/// After the fault path wrote `data` at `addr` of mapping `map_id` (to its shadow): the
/// access is checked against the trace. Signal context: no allocation, no lock.
#[inline]
pub(crate) fn after_write(map_id: u64, addr: u64, data: &[u8], pc: u64) {
    let Some(img) = image() else { return };
    if img.stopping() {
        stop_now();
    }
    let Some(b) = img.binding(map_id) else {
        if img.has_trace() {
            img.note_unbound();
        }
        return;
    };
    let rel = rel_of(addr, b.base);
    let width = data.len().min(64) as u8;
    let mut value = first_word(data);
    if let Some(map) = b.map {
        let checked = img.check(map, tid(), true, width, rel, value, pc);
        verdict(img, checked, true, width, rel, value, map_id, pc);
    } else if img.has_trace() {
        img.note_unbound();
    }
    if b.rules != 0 {
        let inj = img.inject(b.rules, rel, width, true, &mut value);
        injected(inj, true, width, rel, value, value, map_id);
    }
}

/// Before a locked read-modify-write at `addr` (alias `at`) of mapping `map_id`: the
/// trace's next value of the register is put in the shadow, so that the native locked
/// instruction reads it, and the read is checked. Signal context.
pub(crate) fn before_rmw(map_id: u64, addr: u64, at: u64, width: u8, pc: u64) {
    let Some(img) = image() else { return };
    let Some((map, base)) = img.lookup(map_id) else {
        img.note_unbound();
        return;
    };
    let rel = rel_of(addr, base);
    let w = usize::from(width.min(8));
    let (v, checked) = img.read(map, tid(), width, rel, pc);
    let value = match v {
        Some(v) => {
            let b = v.to_le_bytes();
            // SAFETY: the alias maps the region read-write (the caller checked the
            // program may write); a fault is returned, not raised.
            if unsafe { crate::guard::write(at, &b[..w]) }.is_err() {
                return;
            }
            v
        }
        None => {
            let mut b = [0u8; 8];
            // SAFETY: as above, readable.
            if unsafe { crate::guard::read(at, &mut b[..w]) }.is_err() {
                return;
            }
            u64::from_le_bytes(b)
        }
    };
    verdict(img, checked, false, width, rel, value, map_id, pc);
}

/// After a locked read-modify-write stored `new`: the write is checked. Signal context.
pub(crate) fn after_rmw(map_id: u64, addr: u64, width: u8, new: u64, pc: u64) {
    let b = new.to_le_bytes();
    after_write(map_id, addr, &b[..usize::from(width.clamp(1, 8))], pc);
}

/// Before a single step of an access at `addr` of region `r` (`dir`: 1 a load of
/// `width` bytes whose value the step path takes from its destination, 2 a store, 0
/// anything else): a load gets the trace's next value of the register put in the
/// shadow, which the program's page maps, and is checked. Signal context.
pub(crate) fn before_step(r: &crate::Region, addr: u64, width: u8, dir: u8, pc: u64) {
    let Some(img) = image() else { return };
    let Some((map, base)) = img.lookup(r.map_id) else {
        img.note_unbound();
        return;
    };
    if dir != 1 || !(1..=8).contains(&width) || r.alias == 0 {
        return;
    }
    let rel = rel_of(addr, base);
    let (v, checked) = img.read(map, tid(), width, rel, pc);
    let w = usize::from(width);
    let value = match v {
        Some(v) => {
            // SAFETY: the alias maps the region; a fault is returned, not raised. A
            // read-only alias cannot be filled: the shadow's value is then what is read.
            if unsafe { crate::guard::write(r.alias_of(addr), &v.to_le_bytes()[..w]) }.is_err() {
                img.note_stepped();
            }
            v
        }
        None => 0,
    };
    verdict(img, checked, false, width, rel, value, r.map_id, pc);
}

/// After a single step (see [`before_step`]): a store with a known value is checked;
/// an access whose value the step path cannot know (logged `UNKNOWN`) is counted, as
/// it was served by the shadow and not checked. Signal context.
pub(crate) fn after_step(map_id: u64, addr: u64, width: u8, dir: u8, value: u64, pc: u64) {
    let Some(img) = image() else { return };
    if img.lookup(map_id).is_none() {
        return;
    }
    match dir {
        2 => {
            let b = value.to_le_bytes();
            after_write(map_id, addr, &b[..usize::from(width.clamp(1, 8))], pc);
        }
        1 => {}
        _ => img.note_stepped(),
    }
}

fn first_word(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = b.len().min(8);
    v[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(v)
}

/// Logs the run's first divergence (the access it names follows the marker) and, under
/// `--strict`, stops this process at any divergence.
#[allow(clippy::too_many_arguments)]
fn verdict(
    img: Image,
    v: Verdict,
    write: bool,
    width: u8,
    rel: u64,
    value: u64,
    map_id: u64,
    pc: u64,
) {
    let Verdict::Diverged { first } = v else {
        return;
    };
    if first {
        let mut t = MarkText::new();
        t.put(b"replay: diverged: ");
        t.put(if write { b"W" } else { b"R" });
        t.num(u64::from(width), false);
        t.put(b" map ");
        t.num(map_id, false);
        t.put(b" +");
        t.num(rel, true);
        t.put(b" = ");
        t.num(value, true);
        t.put(b" at pc ");
        t.num(pc, true);
        t.put(b" is not what the trace has next");
        emit::mark(t.text());
    }
    if img.strict() {
        img.stop();
        stop_now();
    }
}

/// Under `--strict`, once the program diverged: this process ends (SIGKILL), before
/// its access reaches the shadow or the log.
fn stop_now() {
    let msg = b"mmio-trace replay: --strict: the program diverged from the trace; stopped\n";
    // SAFETY: a static buffer to stderr, then the process ends itself.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// The most device files stood in for in one process.
const DIVERTED: usize = 64;
const PATH_MAX: usize = 256;

struct Diverted {
    /// The stand-in memfd, kept (at 200 or above) so that every open of the path shares
    /// one shadow, as every open of a device reaches the same registers.
    fd: i32,
    dev: u64,
    ino: u64,
    len: usize,
    path: [u8; PATH_MAX],
}

static DIVERT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
static DIVERT_N: AtomicUsize = AtomicUsize::new(0);
static mut DIVERT: [Diverted; DIVERTED] = [const {
    Diverted {
        fd: -1,
        dev: 0,
        ino: 0,
        len: 0,
        path: [0; PATH_MAX],
    }
}; DIVERTED];

fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: an all-zero stat is a valid out buffer; fstat fails on a closed number.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

/// A new stand-in of `size` bytes, kept at a descriptor from 200 up.
fn new_stand_in(size: u64) -> Option<(i32, libc::stat)> {
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"mmio-trace-replay-device".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: plain calls on our descriptor.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 200) };
    let fd = if high >= 0 {
        sys::close(fd);
        high
    } else {
        fd
    };
    // SAFETY: our descriptor.
    if unsafe { libc::ftruncate(fd, size.max(4096) as libc::off_t) } != 0 {
        sys::close(fd);
        return None;
    }
    Some((fd, fstat(fd)?))
}

/// Under replay, the program opens `path`: when the device rules name it and the trace
/// maps that file, returns a descriptor of a memfd of the trace's size standing in for
/// it (its mappings are then traced as `path`; the file itself, there or not, is never
/// touched). Every open of one path shares one stand-in (the same registers). Normal
/// context.
pub fn open_stand_in(path: &[u8], flags: i32) -> Option<i32> {
    let img = image()?;
    if path.len() >= PATH_MAX || path.first() != Some(&b'/') {
        return None;
    }
    if !crate::rules_is_device(path) {
        return None;
    }
    let size = img.file_size(path)?;
    let _g = DIVERT_LOCK.lock().ok()?;
    let n = DIVERT_N.load(Ordering::Relaxed);
    let dup = |fd: i32| {
        let cmd = if flags & libc::O_CLOEXEC != 0 {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        // SAFETY: duplicating a descriptor number (fails if it is not open).
        let d = unsafe { libc::fcntl(fd, cmd, 0) };
        (d >= 0).then_some(d)
    };
    // SAFETY: writers hold DIVERT_LOCK; readers read entries below DIVERT_N only (its
    // release store publishes a new entry; a replaced entry's fields are rewritten
    // under the lock, and readers only compare them).
    let table = unsafe { &mut *std::ptr::addr_of_mut!(DIVERT) };
    if let Some(d) = table[..n].iter_mut().find(|d| &d.path[..d.len] == path) {
        // The kept descriptor is still ours (the program may have closed it).
        if fstat(d.fd).is_some_and(|st| st.st_dev == d.dev && st.st_ino == d.ino) {
            return dup(d.fd);
        }
        let (fd, st) = new_stand_in(size)?;
        (d.fd, d.dev, d.ino) = (fd, st.st_dev, st.st_ino);
        return dup(fd);
    }
    if n >= DIVERTED {
        return None;
    }
    let (fd, st) = new_stand_in(size)?;
    let d = &mut table[n];
    (d.fd, d.dev, d.ino, d.len) = (fd, st.st_dev, st.st_ino, path.len());
    d.path[..path.len()].copy_from_slice(path);
    DIVERT_N.store(n + 1, Ordering::Release);
    dup(fd)
}

/// The path a diverted descriptor stands for (copied into `buf`), for the device rules
/// at `mmap`.
pub(crate) fn diverted_path(fd: i32, buf: &mut [u8; PATH_MAX]) -> Option<usize> {
    let n = DIVERT_N.load(Ordering::Acquire);
    if n == 0 {
        return None;
    }
    let st = fstat(fd)?;
    // SAFETY: entries below DIVERT_N are written once, before it was raised.
    let table = unsafe { &*std::ptr::addr_of!(DIVERT) };
    table[..n.min(DIVERTED)]
        .iter()
        .find(|d| d.dev == st.st_dev && d.ino == st.st_ino)
        .map(|d| {
            buf[..d.len].copy_from_slice(&d.path[..d.len]);
            d.len
        })
}

/// The length of a diverted path buffer.
pub(crate) const DIVERTED_PATH_MAX: usize = PATH_MAX;
