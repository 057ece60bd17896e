//! A process the core was put into while it ran (`record --pid --route inject`): no
//! seccomp filter (one could never be removed again), so the program's `mmap` calls are
//! not seen as they happen. Its device mappings are found in `/proc/self/maps` instead:
//! those it holds at start ([`start`]), and later ones by a helper thread that reads the
//! file again every few milliseconds ([`ENV_POLL_MS`]); mappings gone from the file are
//! forgotten. Accesses to a mapping made between two reads are not traced.
//!
//! Leaving ([`detach_begin`], [`busy`], [`release`], with the program's threads stopped
//! by the recorder): tracing stops (every traced page gets the program's protection back
//! and a fault already taken is retried natively), the helper thread ends, and once no
//! thread is inside a handler of ours, out of line or single-stepping, the program's own
//! signal actions are put back and the tracer's memory is given back.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::{regions, signals, sys};

/// Setting: how often (ms) the helper thread reads `/proc/self/maps` for new device
/// mappings (default [`DEFAULT_POLL_MS`]; 0: never, only the mappings held at start).
pub const ENV_POLL_MS: &str = "MMIO_TRACE_ATTACH_POLL_MS";
/// The default of [`ENV_POLL_MS`].
pub const DEFAULT_POLL_MS: u64 = 10;

static ATTACHED: AtomicBool = AtomicBool::new(false);
/// Handlers of ours running now (counted in attached processes only).
static IN_HANDLER: AtomicU32 = AtomicU32::new(0);
/// The helper thread's tid while it runs (0: none).
static POLLER: AtomicU32 = AtomicU32::new(0);
/// 1 once the helper thread is to end (a futex word: it sleeps on it).
static POLL_STOP: AtomicU32 = AtomicU32::new(0);
static POLL_NS: AtomicU64 = AtomicU64::new(DEFAULT_POLL_MS * 1_000_000);

/// Whether this process is an attached one (set before the handlers are installed).
#[inline]
pub fn is_attached() -> bool {
    ATTACHED.load(Ordering::Relaxed)
}

/// Marks this process as attached to: call before [`crate::init_from_vars`]. The calling
/// thread keeps its own alternate signal stack (none is put in at start).
pub fn set_attached() {
    ATTACHED.store(true, Ordering::Relaxed);
}

/// Counts a handler of ours as running, while alive (attached processes only: elsewhere
/// nothing waits for handlers to end). Per thread too, with the kernel's frame of the
/// outermost one: a program handler that [`crate::signals`] calls from ours may leave
/// with `siglongjmp`, and then neither count would ever come down. A thread found
/// running above that frame (its next handler's entry, or the recorder's
/// [`thread_busy`]) has left every handler it was counted in.
pub(crate) struct Inside(Option<&'static crate::threads::ThreadBlock>, bool);

impl Inside {
    /// `uc`: the handler's context (the interrupted stack pointer is read from it).
    ///
    /// # Safety
    /// Signal-handler context; `uc` is the kernel's context of this handler.
    #[inline]
    pub(crate) unsafe fn enter(uc: *mut libc::c_void) -> Inside {
        if !is_attached() {
            return Inside(None, false);
        }
        // A fork child's blocks are its parent's threads' until this says otherwise.
        crate::check_fork();
        let b = crate::threads::current();
        if let Some(b) = b {
            // SAFETY: the caller's contract.
            let sp = unsafe { crate::ctx::gregs(uc) }[libc::REG_RSP as usize] as u64;
            if b.handler_depth.load(Ordering::Relaxed) != 0 && !inside_frame(b, sp) {
                forget_handlers(b);
            }
            if b.handler_depth.load(Ordering::Relaxed) == 0 {
                b.handler_frame.store(uc as u64, Ordering::Relaxed);
            }
            b.handler_depth.fetch_add(1, Ordering::SeqCst);
        }
        IN_HANDLER.fetch_add(1, Ordering::SeqCst);
        Inside(b, true)
    }
}

impl Drop for Inside {
    #[inline]
    fn drop(&mut self) {
        if !self.1 {
            return;
        }
        if let Some(b) = self.0 {
            // Not below zero: the recorder may have found the thread gone from this
            // handler (see `thread_busy`) while it was stopped on its way out.
            let _ = b
                .handler_depth
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
        }
        let _ = IN_HANDLER.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
    }
}

/// Whether stack pointer `sp` of the calling thread (the owner of `b`) lies inside the
/// outermost handler of ours it was counted in: below its frame, on the same stack (the
/// alternate signal stack holding the frame, or within 8 MiB below it on a thread with
/// none).
fn inside_frame(b: &crate::threads::ThreadBlock, sp: u64) -> bool {
    let frame = b.handler_frame.load(Ordering::Relaxed);
    if sp >= frame {
        return false;
    }
    // SAFETY: zeroed stack_t is valid as an out value.
    let mut cur: libc::stack_t = unsafe { core::mem::zeroed() };
    if sys::sigaltstack(None, Some(&mut cur)) == 0 && cur.ss_flags & libc::SS_DISABLE == 0 {
        let lo = cur.ss_sp as u64;
        let hi = lo.wrapping_add(cur.ss_size as u64);
        if lo <= frame && frame < hi {
            return lo <= sp;
        }
    }
    frame - sp < 8 << 20
}

/// The thread of `b` is inside no handler of ours (it left them with `siglongjmp`):
/// its counts come off.
pub(crate) fn forget_handlers(b: &crate::threads::ThreadBlock) {
    let d = b.handler_depth.swap(0, Ordering::SeqCst);
    if d != 0 {
        let _ = IN_HANDLER.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(d))
        });
    }
}

/// Leaving, per thread, with the thread stopped by the recorder at `pc` with stack
/// pointer `sp` and `uc` in its third argument register (called in it): whether it is
/// inside a handler of ours (1) or not (0; counts of handlers it left with `siglongjmp`
/// come off, so that [`busy`] can say 0). A thread stopped at a handler's first
/// instruction is judged by the code the signal interrupted (`uc`'s stack pointer): the
/// handler has not counted itself yet, and its frame lies where a stale one may.
///
/// # Safety
/// When `pc` is a handler's entry, `uc` must be the context the kernel passed it.
pub unsafe fn thread_busy(pc: u64, sp: u64, uc: u64) -> u64 {
    let Some(b) = crate::threads::existing() else {
        return 0;
    };
    if b.handler_depth.load(Ordering::SeqCst) == 0 {
        return 0;
    }
    let sp = if crate::signals::is_handler_entry(pc) && uc != 0 {
        // SAFETY: the caller's contract: the kernel's context of that handler.
        let g = unsafe { crate::ctx::gregs(uc as *mut libc::c_void) };
        g[libc::REG_RSP as usize] as u64
    } else {
        sp
    };
    if inside_frame(b, sp) {
        return 1;
    }
    forget_handlers(b);
    0
}

/// One line of `/proc/self/maps` that may be a device mapping.
struct Line<'a> {
    start: u64,
    end: u64,
    prot: i32,
    shared: bool,
    off: u64,
    dev: (u64, u64),
    ino: u64,
    path: &'a [u8],
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = v << 4 | d as u64;
    }
    Some(v)
}

fn dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        v = v
            .checked_mul(10)?
            .checked_add((c as char).to_digit(10)? as u64)?;
    }
    Some(v)
}

/// `start-end perms offset major:minor inode   path`.
fn parse(l: &[u8]) -> Option<Line<'_>> {
    let mut f = l.splitn(6, |&b| b == b' ');
    let range = f.next()?;
    let perms = f.next()?;
    let off = hex(f.next()?)?;
    let dev = f.next()?;
    let ino = dec(f.next()?)?;
    let path = f.next().unwrap_or(b"");
    let path = &path[path.iter().position(|&b| b != b' ').unwrap_or(path.len())..];
    let dash = range.iter().position(|&b| b == b'-')?;
    let colon = dev.iter().position(|&b| b == b':')?;
    if perms.len() < 4 {
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
    Some(Line {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        prot,
        shared: perms[3] == b's',
        off,
        dev: (hex(&dev[..colon])?, hex(&dev[colon + 1..])?),
        ino,
        path,
    })
}

/// `makedev` of the kernel's `major:minor` as `stat`'s `st_dev` encodes it.
fn makedev(major: u64, minor: u64) -> u64 {
    (major & 0xfff) << 8 | (major & !0xfff) << 32 | (minor & 0xff) | (minor & !0xff) << 12
}

/// Whether `addr` is one of the tracer's own alias mappings.
fn is_alias(addr: u64) -> bool {
    let mut hit = false;
    regions::overlapping(0, u64::MAX, |r| hit |= r.alias != 0 && r.alias == addr);
    hit || regions::in_alias_arena(addr)
}

/// A descriptor of the program's own for the file `l` maps (drivers keep per-open-file
/// state, so the alias must come from the same open file), opened for writing when the
/// mapping is writable; else the path opened anew (`-1`: neither). `opened`: whether the
/// descriptor is ours to close.
fn fd_for(l: &Line<'_>, opened: &mut bool) -> i32 {
    *opened = false;
    let want = makedev(l.dev.0, l.dev.1);
    let mut best = -1;
    let dir = sys::open_dir(b"/proc/self/fd\0");
    if dir >= 0 {
        let dir = dir as i32;
        let mut buf = [0u8; 2048];
        loop {
            let n = sys::getdents64(dir, &mut buf);
            if n <= 0 {
                break;
            }
            let mut p = 0usize;
            while p + 19 <= n as usize {
                let reclen = u16::from_ne_bytes([buf[p + 16], buf[p + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let name = &buf[p + 19..p + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                p += reclen;
                let Some(fd) = dec(name).map(|v| v as i32) else {
                    continue;
                };
                if fd == dir || crate::owns_fd(fd) {
                    continue;
                }
                let Some(st) = sys::fstat(fd) else { continue };
                if st.st_ino != l.ino || st.st_dev != want {
                    continue;
                }
                let mode = sys::fcntl(fd, libc::F_GETFL, 0);
                let writable = mode >= 0 && mode as i32 & libc::O_ACCMODE == libc::O_RDWR;
                if best < 0 || (writable && l.prot & libc::PROT_WRITE != 0) {
                    best = fd;
                    if writable || l.prot & libc::PROT_WRITE == 0 {
                        break;
                    }
                }
            }
        }
        sys::close(dir);
    }
    if best >= 0 {
        return best;
    }
    let mut path = Vec::with_capacity(l.path.len() + 1);
    path.extend_from_slice(l.path);
    path.push(0);
    let Ok(c) = core::ffi::CStr::from_bytes_with_nul(&path) else {
        return -1;
    };
    let flags = if l.prot & libc::PROT_WRITE != 0 {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let fd = sys::open(c, flags | libc::O_CLOEXEC);
    if fd < 0 {
        return -1;
    }
    // Only the same file will do.
    let same = sys::fstat(fd as i32).is_some_and(|st| st.st_ino == l.ino && st.st_dev == want);
    if !same {
        sys::close(fd as i32);
        return -1;
    }
    *opened = true;
    fd as i32
}

/// Reads `/proc/self/maps` once: traces the device mappings not traced yet, forgets
/// traced regions whose mapping is gone. Normal context (allocates).
pub fn scan() {
    if crate::stop::stopped() || !crate::is_active() {
        return;
    }
    let Some(maps) = sys::read_file(c"/proc/self/maps") else {
        return;
    };
    let lines: Vec<Line<'_>> = maps.split(|&b| b == b'\n').filter_map(parse).collect();
    // Regions whose pages are no longer a shared mapping: the program unmapped them.
    let mut gone = Vec::new();
    regions::overlapping(0, u64::MAX, |r| {
        let held = lines
            .iter()
            .any(|l| l.shared && l.start <= r.start && r.start < l.end);
        if !held {
            gone.push((r.start, r.len));
        }
    });
    for (start, len) in gone {
        crate::before_munmap(start, len, 0);
    }
    for l in &lines {
        if !l.shared || l.ino == 0 || l.path.first() != Some(&b'/') {
            continue;
        }
        if regions::any_overlapping(l.start, l.end - l.start) || is_alias(l.start) {
            continue;
        }
        if !crate::rules_match(l.path) {
            continue;
        }
        let mut opened = false;
        let fd = fd_for(l, &mut opened);
        if fd < 0 {
            let mut t = crate::MarkText::new();
            t.put(b"NOT TRACED: mapping of ");
            t.put(l.path);
            t.put(b" at ");
            t.num(l.start, true);
            t.put(b": neither a descriptor of the process nor the path opens that file");
            crate::emit::mark(t.text());
            continue;
        }
        crate::after_mmap(
            l.start,
            l.end - l.start,
            l.prot,
            libc::MAP_SHARED,
            fd,
            l.off as i64,
            0,
        );
        if opened {
            sys::close(fd);
        }
    }
}

/// Traces the device mappings the process holds now, and starts the helper thread that
/// looks for new ones every `poll_ms` (0: none). Normal context, after
/// [`crate::init_from_vars`].
pub fn start(poll_ms: u64) {
    scan();
    if poll_ms == 0 {
        return;
    }
    POLL_NS.store(poll_ms.saturating_mul(1_000_000), Ordering::Relaxed);
    POLL_STOP.store(0, Ordering::SeqCst);
    // The thread inherits our mask: every signal blocked (it must take none of the
    // program's, and fault on no device page).
    let all = !0u64;
    let mut old = 0u64;
    sys::sigprocmask(libc::SIG_SETMASK, Some(&all), Some(&mut old));
    let started = crate::thread::spawn("mmio-trace-maps", 64 << 10, poller);
    sys::sigprocmask(libc::SIG_SETMASK, Some(&old), None);
    if !started {
        crate::emit::mark(
            b"mmio-trace: no helper thread: device mappings made after the attach are not traced",
        );
    }
}

fn poller() {
    POLLER.store(sys::gettid(), Ordering::SeqCst);
    while POLL_STOP.load(Ordering::SeqCst) == 0 {
        let ns = POLL_NS.load(Ordering::Relaxed);
        mmio_trace_ring::sys::futex_wait(&POLL_STOP, 0, ns);
        if POLL_STOP.load(Ordering::SeqCst) != 0 {
            break;
        }
        // A recorder gone (killed) is noticed here too, without waiting for a device
        // access: tracing stops, and so does this thread (it blocks every signal, which
        // a later attach would take for a thread that cannot take device faults).
        if crate::stop::check_now() {
            break;
        }
        let taken = signals::reclaim();
        if taken != 0 {
            let mut t = crate::MarkText::new();
            t.put(b"mmio-trace: the program set its own action for signals ");
            t.num(taken, true);
            t.put(b" (bit n-1: signal n) while attached: taken as its own, the tracer's handler put back (device faults in between went to it)");
            crate::emit::mark(t.text());
        }
        scan();
    }
    // The last thing before the thread's exit: the recorder waits for the exit itself.
    POLLER.store(0, Ordering::SeqCst);
}

/// Stops tracing (the program's protections back on every traced page, silently) and
/// tells the helper thread to end. The recorder then lets the threads run a moment, so
/// that faults already taken are retried natively and the helper ends.
pub fn detach_begin() {
    POLL_STOP.store(1, Ordering::SeqCst);
    mmio_trace_ring::sys::futex_wake(&POLL_STOP);
    crate::stop::stop_quietly();
}

/// What still runs in the tracer's code: handlers of ours (bit 0), out-of-line slots in
/// use (bit 1), a single step (bit 2), the helper thread (bit 3). 0: nothing; then,
/// with the threads stopped, [`release`] may give the memory back.
pub fn busy() -> u64 {
    let mut b = 0;
    if IN_HANDLER.load(Ordering::SeqCst) != 0 {
        b |= 1;
    }
    if crate::threads::any_ool_busy() {
        b |= 2;
    }
    if crate::threads::any_step() {
        b |= 4;
    }
    if POLLER.load(Ordering::SeqCst) != 0 {
        b |= 8;
    }
    b
}

/// The tid of the helper thread while it runs (0: none).
pub fn poller_tid() -> u32 {
    POLLER.load(Ordering::SeqCst)
}

/// Puts the program's own signal actions back. `memory`: also unmaps the aliases and
/// the recorder's shared memory and closes the tracer's descriptors (only when [`busy`]
/// said 0 with every thread stopped, and after each thread's [`crate::threads`] exit
/// call). The image itself is unmapped by the recorder.
pub fn release(memory: bool) {
    signals::uninstall();
    if memory {
        crate::release_all();
    }
}
