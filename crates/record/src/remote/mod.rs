//! The ptrace route: tracing a program from outside, with no code in it.
//!
//! [`Session`] holds what the recorder knows of the traced processes: their device
//! mappings (regions), each with an alias mapping of the same file *in the recorder*, and
//! one ring of the shared memory per traced thread. It handles the stops a driver loop
//! hands it, with the tracee stopped:
//! - [`Session::syscall_entry`] / [`Session::syscall_exit`]: `mmap`, `munmap`, `mremap`,
//!   `mprotect` (whether by libc or a raw `syscall`): a shared mapping of a device file
//!   becomes a region (its pages made `PROT_NONE` by an `mprotect` injected into the
//!   program, `MAP` logged), regions unmapped, moved or reprotected keep the table exact;
//! - [`Session::on_signal`]: a SIGSEGV of a region's page is completed by the x86
//!   emulator over the tracee's registers and a bus on the alias, logged with the same
//!   events as the in-process tracer, and the signal suppressed; an instruction the
//!   emulator cannot complete is single-stepped with the page opened and the process's
//!   other threads interrupted. Every other signal is the program's.
//! - [`Session::add_mapping`]: a device mapping that already exists (attach to a running
//!   process), [`Session::restore`]: every region given its protection back (detach).
//!
//! The supervisor that starts programs under this route (`record --route ptrace`) is
//! the crate-private `remote::supervisor` module.

pub(crate) mod supervisor;
pub(crate) mod sys;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use mmio_trace_ptrace::{self as pt, Pid, Process, Regs, Stop};
use mmio_trace_ring::{Kind, Producer, Record, Shm, MAX_STR_VALUES};
use mmio_trace_tracer::rules::{self, Rules};
use mmio_trace_x86 as x86;
use x86::{Bus, BusFault, Rmw};

const PAGE: u64 = 4096;

const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_MREMAP: u64 = 25;

/// The system calls the route must see (the seccomp filter traps these).
pub const TRAPPED_SYSCALLS: [u32; 4] = [
    SYS_MMAP as u32,
    SYS_MPROTECT as u32,
    SYS_MUNMAP as u32,
    SYS_MREMAP as u32,
];

/// Calls that hand the kernel a buffer the ptrace route makes device memory reachable
/// for (the injected core's list, `sysemu::BUFFER_SYSCALLS`): `read`, `write`, `pread64`,
/// `pwrite64`, `readv`, `writev`, `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `preadv`,
/// `pwritev`, `preadv2`, `pwritev2`; and those that write (or read) a structure or a
/// string there: `ioctl` (requests that encode their argument's size), `stat`, `fstat`,
/// `lstat`, `newfstatat`, `statx`, `getrandom`, `pipe`, `pipe2`, `socketpair`,
/// `readlink`, `readlinkat`, `getcwd`, `uname`.
pub const BUFFER_SYSCALLS: [u32; 28] = mmio_trace_tracer::sysemu::BUFFER_SYSCALLS;

/// An alias: the same file pages mapped in the recorder, read-write where possible.
struct Alias {
    base: u64,
    len: u64,
    /// The recorder's descriptor of the program's open file (for pages a growing
    /// `mremap` adds).
    file: Option<OwnedFd>,
    /// The file offset of `base`.
    off: u64,
}

impl Drop for Alias {
    fn drop(&mut self) {
        // SAFETY: the recorder's own mapping, made for this alias and referenced only
        // through it (regions hold it by `Rc`).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len as usize) };
    }
}

/// One traced piece of a device mapping of one process.
#[derive(Clone)]
struct Region {
    start: u64,
    len: u64,
    /// Physical address of `start`.
    phys: u64,
    map_id: u64,
    /// The protection the program asked for (the pages stay `PROT_NONE`).
    prot: i32,
    /// The file offset of `start`.
    off: u64,
    alias: Option<Rc<Alias>>,
}

impl Region {
    fn end(&self) -> u64 {
        self.start + self.len
    }
    fn contains(&self, a: u64) -> bool {
        a >= self.start && a < self.end()
    }
    /// The recorder's address of program address `a` (inside), if there is an alias.
    fn alias_of(&self, a: u64) -> Option<u64> {
        let al = self.alias.as_ref()?;
        let off = self.off + (a - self.start);
        (off >= al.off && off < al.off + al.len).then(|| al.base + (off - al.off))
    }
    fn piece(&self, from: u64, to: u64) -> Region {
        let mut r = self.clone();
        r.start = from;
        r.len = to - from;
        r.phys = self.phys + (from - self.start);
        r.off = self.off + (from - self.start);
        r
    }
}

/// A traced process (one address space).
struct Proc {
    regions: BTreeMap<u64, Region>,
    /// The process has the stacked filter for calls handed buffers (or could not get it).
    buffer_filter: bool,
    /// The engine's state for calls injected into it.
    engine: Process,
    /// Its threads.
    threads: Vec<i32>,
}

impl Proc {
    fn new(pid: Pid) -> Proc {
        Proc {
            regions: BTreeMap::new(),
            buffer_filter: false,
            engine: Process::new(pid),
            threads: Vec::new(),
        }
    }

    fn find(&self, a: u64) -> Option<&Region> {
        self.regions
            .range(..=a)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(a))
    }

    fn overlapping(&self, start: u64, end: u64) -> Vec<Region> {
        let mut v = Vec::new();
        if let Some((_, r)) = self.regions.range(..start).next_back() {
            if r.end() > start {
                v.push(r.clone());
            }
        }
        for (_, r) in self.regions.range(start..end) {
            v.push(r.clone());
        }
        v
    }

    /// Removes `[start, end)` from the table (pieces cut at the edges); returns the removed
    /// parts.
    fn cut(&mut self, start: u64, end: u64) -> Vec<Region> {
        let mut gone = Vec::new();
        for r in self.overlapping(start, end) {
            self.regions.remove(&r.start);
            if r.start < start {
                self.regions.insert(r.start, r.piece(r.start, start));
            }
            if r.end() > end {
                self.regions.insert(end, r.piece(end, r.end()));
            }
            gone.push(r.piece(r.start.max(start), r.end().min(end)));
        }
        gone
    }

    fn has_id(&self, id: u64) -> bool {
        self.regions.values().any(|r| r.map_id == id)
    }
}

/// A traced thread.
struct Thread {
    pid: i32,
    ring: Option<Producer>,
    /// The system call it entered, when it is one we handle at its exit.
    call: Option<(u64, [u64; 6])>,
}

/// What to do with a signal-delivery-stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The tracer completed the access: resume without the signal.
    Handled,
    /// The program's own signal: resume delivering it.
    Deliver(i32),
}

/// An existing device mapping to trace ([`Session::add_mapping`]).
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Start (page-aligned).
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// The program's protection.
    pub prot: i32,
    /// File offset.
    pub off: u64,
    /// The file's canonical path.
    pub path: Vec<u8>,
    /// The program's descriptor of the file, if it still has one (the alias is then made
    /// from it, so that per-open-file driver state is shared).
    pub fd: Option<i32>,
}

/// The ptrace route's state: see the module documentation.
pub struct Session {
    shm: Shm,
    rules: Rules,
    procs: HashMap<i32, Proc>,
    threads: HashMap<i32, Thread>,
    /// The filter to stack on a process at its first device mapping, for the calls handed
    /// buffers (the supervisor's; none for processes attached to, which get no filter).
    buffer_filter: Option<Vec<libc::sock_filter>>,
    /// Stops seen while the session waited for another (a thread stopped while the others
    /// were being paused): the driver handles them before waiting again.
    deferred: Vec<(Pid, Stop)>,
}

impl Session {
    /// A session writing into `shm`, recognising devices by `rules`.
    pub fn new(shm: Shm, rules: Rules) -> Session {
        x86::warm_up();
        Session {
            shm,
            rules,
            procs: HashMap::new(),
            threads: HashMap::new(),
            buffer_filter: None,
            deferred: Vec::new(),
        }
    }
    /// Sets the seccomp filter stacked on a process with its first device mapping (it must
    /// stop the calls of [`BUFFER_SYSCALLS`] with `SECCOMP_RET_TRACE` and hand them to
    /// [`Session::buffer_call`]); the process must be allowed to add one (no_new_privs or
    /// `CAP_SYS_ADMIN`). Never for a process that runs on without the recorder.
    pub fn set_buffer_filter(&mut self, prog: Vec<libc::sock_filter>) {
        self.buffer_filter = Some(prog);
    }

    /// A stop the session took while waiting for another thread: to handle as if
    /// [`mmio_trace_ptrace::wait`] returned it now.
    pub fn take_deferred(&mut self) -> Option<(Pid, Stop)> {
        if self.deferred.is_empty() {
            None
        } else {
            Some(self.deferred.remove(0))
        }
    }

    /// Whether `tid` is a thread the session knows.
    pub fn knows(&self, tid: i32) -> bool {
        self.threads.contains_key(&tid)
    }

    /// The process of thread `tid`, if known.
    pub fn pid_of(&self, tid: i32) -> Option<i32> {
        self.threads.get(&tid).map(|t| t.pid)
    }

    /// Registers process `pid` (a new image: no region yet) with its thread `pid`, and
    /// logs a `MARK` saying it is traced by ptrace.
    pub fn add_process(&mut self, pid: i32) {
        self.procs.insert(pid, Proc::new(pid));
        self.add_thread(pid, pid);
        self.shm
            .header()
            .attached
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text =
            format!("mmio-trace: pid {pid} traced by ptrace (accesses emulated from the recorder)");
        self.mark(pid, text.as_bytes());
    }

    /// Registers thread `tid` of process `pid`.
    pub fn add_thread(&mut self, pid: i32, tid: i32) {
        self.procs.entry(pid).or_insert_with(|| Proc::new(pid));
        if let Some(p) = self.procs.get_mut(&pid) {
            if !p.threads.contains(&tid) {
                p.threads.push(tid);
            }
        }
        self.threads.entry(tid).or_insert(Thread {
            pid,
            ring: None,
            call: None,
        });
    }

    /// Process `child` was forked from `parent`'s thread `tid`: it has the parent's
    /// traced mappings (the same mapping ids, as the in-process tracer keeps them).
    pub fn fork(&mut self, parent: i32, child: i32) {
        let mut p = Proc::new(child);
        if let Some(from) = self.procs.get(&parent) {
            p.regions = from.regions.clone();
            // Filters are inherited.
            p.buffer_filter = from.buffer_filter;
        }
        self.procs.insert(child, p);
        self.add_thread(child, child);
    }

    /// Process `pid` exec'd a new image (its thread `pid` goes on, the others are gone):
    /// its regions are forgotten (no `UNMAP`, as the in-process route logs none at exec).
    pub fn exec(&mut self, pid: i32) {
        let filtered = self.procs.get(&pid).is_some_and(|p| p.buffer_filter);
        if let Some(p) = self.procs.remove(&pid) {
            for t in p.threads {
                if t != pid {
                    self.retire(t);
                }
            }
        }
        self.add_process(pid);
        if let Some(p) = self.procs.get_mut(&pid) {
            // Filters survive exec.
            p.buffer_filter = filtered;
        }
    }

    /// Thread `tid` is gone (exited or killed).
    pub fn thread_gone(&mut self, tid: i32) {
        let Some(pid) = self.pid_of(tid) else { return };
        self.retire(tid);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.threads.retain(|&t| t != tid);
            if p.threads.is_empty() {
                self.procs.remove(&pid);
            }
        }
    }

    fn retire(&mut self, tid: i32) {
        if let Some(t) = self.threads.remove(&tid) {
            if let Some(r) = t.ring {
                r.retire();
            }
        }
    }

    /// The ring of thread `tid`, claimed on its first event.
    fn ring(&mut self, tid: i32) -> Option<Producer> {
        let t = self.threads.get_mut(&tid)?;
        if t.ring.is_none() {
            t.ring = self.shm.claim_wait(t.pid as u32, tid as u32, u64::MAX);
        }
        t.ring
    }

    fn push(&mut self, tid: i32, recs: &mut [Record]) {
        match self.ring(tid) {
            Some(p) => {
                let open = p.begin();
                recs[0].0[0] = open.ts;
                if p.finish(open, recs).is_err() {
                    self.lost();
                }
            }
            None => self.lost(),
        }
    }

    fn lost(&self) {
        self.shm
            .header()
            .lost
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Logs a `MARK` from thread `tid`.
    pub fn mark(&mut self, tid: i32, text: &[u8]) {
        if let Some(p) = self.ring(tid) {
            let open = p.begin();
            let r = p.push_mark(open.ts, text);
            p.end(open);
            if r.is_err() {
                self.lost();
            }
        }
    }

    fn emit_map(&mut self, tid: i32, virt: u64, len: u64, phys: u64, id: u64, pc: u64) {
        let mut recs = [
            Record::new(0, virt, len, pc, 0, Kind::Map),
            Record([phys, id, 0, 0]),
        ];
        self.push(tid, &mut recs);
    }

    fn emit_unmap(&mut self, tid: i32, id: u64, pc: u64) {
        let mut recs = [Record::new(0, 0, id, pc, 0, Kind::Unmap)];
        self.push(tid, &mut recs);
    }

    /// At a system call's entry stop of thread `tid` (registers `regs`): whether it is one
    /// the session handles at its exit ([`Session::syscall_exit`]): the driver then runs
    /// the thread to the exit stop (`PTRACE_SYSCALL`).
    pub fn syscall_entry(&mut self, tid: i32, regs: &libc::user_regs_struct) -> bool {
        let nr = regs.orig_rax;
        if !matches!(nr, SYS_MMAP | SYS_MUNMAP | SYS_MREMAP | SYS_MPROTECT) {
            return false;
        }
        let Some(t) = self.threads.get_mut(&tid) else {
            return false;
        };
        let pid = t.pid;
        t.call = Some((
            nr,
            [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
        ));
        self.procs.contains_key(&pid)
    }

    /// At the exit stop of a call [`Session::syscall_entry`] accepted: updates the region
    /// table from its result (and traces a new device mapping).
    pub fn syscall_exit(&mut self, tid: i32, regs: &libc::user_regs_struct) {
        let Some((nr, a)) = self.threads.get_mut(&tid).and_then(|t| t.call.take()) else {
            return;
        };
        let ret = regs.rax as i64;
        if (-4095..0).contains(&ret) {
            // The kernel refused it: nothing changed.
            return;
        }
        // The in-process route logs MAP/UNMAP with pc 0 (its hooks have no caller pc).
        let pc = 0;
        match nr {
            SYS_MMAP => {
                let len = page_up(a[1]);
                self.unmapped(tid, ret as u64, len, pc);
                let flags = a[3] as i32;
                let fd = a[4] as i32;
                let shared = flags & 3 == libc::MAP_SHARED || flags & 3 == 0x3;
                if fd >= 0 && shared && len > 0 {
                    self.mapped(tid, ret as u64, len, a[2] as i32, fd, a[5], pc);
                }
            }
            // (A misaligned or empty munmap the kernel refused changed nothing.)
            SYS_MUNMAP if a[0] % PAGE == 0 && a[1] > 0 => {
                self.unmapped(tid, a[0], page_up(a[1]), pc)
            }
            SYS_MPROTECT => self.reprotect(tid, a[0], page_up(a[1]), a[2] as i32),
            SYS_MREMAP => self.remapped(tid, a, ret as u64, pc),
            _ => {}
        }
    }

    /// Pages `[start, start+len)` of thread `tid`'s process are gone: `UNMAP` for each
    /// mapping no piece of which is left.
    fn unmapped(&mut self, tid: i32, start: u64, len: u64, pc: u64) {
        let Some(pid) = self.pid_of(tid) else { return };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let gone = p.cut(start, start + len);
        let mut ids: Vec<u64> = Vec::new();
        for r in &gone {
            if !p.has_id(r.map_id) && !ids.contains(&r.map_id) {
                ids.push(r.map_id);
            }
        }
        for id in ids {
            self.emit_unmap(tid, id, pc);
        }
    }

    /// A new shared mapping of descriptor `fd`: traced if the device rules name its file.
    #[allow(clippy::too_many_arguments)]
    fn mapped(&mut self, tid: i32, addr: u64, len: u64, prot: i32, fd: i32, off: u64, pc: u64) {
        let Some(pid) = self.pid_of(tid) else { return };
        let Ok(path) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
            return;
        };
        let path = path.as_os_str().as_encoded_bytes().to_vec();
        if !self.rules.is_device(&path) {
            self.unmatched(tid, pid, fd, &path);
            return;
        }
        let m = Mapping {
            addr,
            len,
            prot,
            off,
            path,
            fd: Some(fd),
        };
        let _ = self.trace(tid, &m, pc);
    }

    /// At the seccomp stop of a call of [`BUFFER_SYSCALLS`] (registers `regs`): if a buffer
    /// it hands the kernel lies in traced pages (which would make it fail with `EFAULT`),
    /// opens those pages with the program's protection, runs the call to its exit and
    /// closes them again, then logs a `KERNEL` record per traced piece the kernel read or
    /// wrote (as the preload route does). The process's other threads are paused meanwhile
    /// when the descriptor is a regular file; a call on a pipe, socket or device may block
    /// on another thread, so they run on (their accesses to those pages during the call
    /// are then not logged). Otherwise leaves the thread at the stop.
    pub fn buffer_call(&mut self, tid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
        let Some(pid) = self.pid_of(tid) else {
            return Ok(());
        };
        let a = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        use mmio_trace_tracer::sysemu::{buffer_shape, Shape};
        let Some((call, shape)) = buffer_shape(regs.orig_rax as u32, &a) else {
            return Ok(());
        };
        let writes = match shape {
            Shape::One {
                arg,
                len,
                reads,
                writes,
                by_result,
                ..
            } => {
                let fd = a[0] as i32;
                return self.buffer_call_at(
                    tid,
                    pid,
                    fd,
                    call,
                    &[(a[arg], len)],
                    (reads, writes),
                    by_result,
                );
            }
            Shape::Iov { writes } | Shape::Msg { writes } => writes,
        };
        // The iovec array (address, count) of the vector calls.
        let (at, n) = match shape {
            Shape::Msg { .. } => {
                // struct msghdr: msg_iov at byte 16, msg_iovlen at byte 24.
                let mut m = [0u8; 16];
                if sys::read_mem(pid, a[1].wrapping_add(16), &mut m) != 16 {
                    return Ok(());
                }
                let base = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
                let n = u64::from_le_bytes(m[8..].try_into().unwrap_or_default());
                (base, n)
            }
            _ => (a[1], a[2]),
        };
        let n = (n as usize).min(1024);
        let mut raw = vec![0u8; n * 16];
        if sys::read_mem(pid, at, &mut raw) != raw.len() {
            return Ok(());
        }
        let bufs: Vec<(u64, u64)> = raw
            .chunks_exact(16)
            .map(|c| {
                let base = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                let len = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
                (base, len)
            })
            .collect();
        self.buffer_call_at(tid, pid, a[0] as i32, call, &bufs, (!writes, writes), true)
    }

    /// [`Session::buffer_call`] for buffers `bufs` of a call on descriptor `fd`: `dirs`
    /// (the kernel reads them, writes them); `by_result`: the call's result is the number
    /// of bytes it went through (else all of them, when it succeeded).
    #[allow(clippy::too_many_arguments)]
    fn buffer_call_at(
        &mut self,
        tid: i32,
        pid: i32,
        fd: i32,
        call: u8,
        bufs: &[(u64, u64)],
        dirs: (bool, bool),
        by_result: bool,
    ) -> io::Result<()> {
        // The buffers in order, cut where traced memory begins and ends: (addr, len,
        // region) with region `None` for ordinary memory.
        let Some(p) = self.procs.get(&pid) else {
            return Ok(());
        };
        let mut pieces: Vec<(u64, u64, Option<Region>)> = Vec::new();
        for &(base, len) in bufs {
            let end = base.saturating_add(len);
            let mut at = base;
            for r in p.overlapping(base, end) {
                let (from, to) = (r.start.max(base), r.end().min(end));
                if from > at {
                    pieces.push((at, from - at, None));
                }
                pieces.push((from, to - from, Some(r)));
                at = to;
            }
            if end > at {
                pieces.push((at, end - at, None));
            }
        }
        if !pieces.iter().any(|p| p.2.is_some()) {
            return Ok(());
        }
        let regular = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|m| m.is_file());
        let others = if regular {
            self.pause_others(tid, pid)
        } else {
            Vec::new()
        };
        let mut opened: Vec<(u64, u64, i32)> = Vec::new();
        for (at, len, r) in &pieces {
            let Some(r) = r else { continue };
            let lo = at & !(PAGE - 1);
            let hi = page_up(at + len);
            if !opened.iter().any(|o| o.0 == lo && o.1 == hi) {
                opened.push((lo, hi, r.prot));
            }
        }
        let mut result = Ok(());
        for &(lo, hi, prot) in &opened {
            if let Err(e) = self.inject(tid, SYS_MPROTECT, [lo, hi - lo, prot as u64, 0, 0, 0]) {
                result = Err(e);
            }
        }
        let mut done: Option<i64> = None;
        if result.is_ok() {
            match pt::syscall(tid, 0).and_then(|()| pt::wait_tid(tid)) {
                Ok(Stop::Syscall) => {
                    done = Regs::read(tid).ok().map(|r| r.user().rax as i64);
                }
                Ok(other) => self.deferred.push((tid, other)),
                Err(e) => result = Err(io::Error::other(e.to_string())),
            }
        }
        if done.is_some() {
            for &(lo, hi, _) in &opened {
                let _ = self.inject(tid, SYS_MPROTECT, [lo, hi - lo, 0, 0, 0, 0]);
            }
        }
        self.resume_others(others);
        let total: u64 = bufs.iter().map(|b| b.1).sum();
        let n = match done {
            Some(n) if by_result && n > 0 => n as u64,
            Some(n) if !by_result && n >= 0 => total,
            _ => return result,
        };
        // The kernel went through the buffers in order: the first `n` bytes (read, then
        // written back, for an ioctl argument that goes both ways).
        for wrote in [false, true] {
            if !(if wrote { dirs.1 } else { dirs.0 }) {
                continue;
            }
            let mut left = n;
            for (at, len, r) in &pieces {
                if left == 0 {
                    break;
                }
                let k = (*len).min(left);
                left -= k;
                if let Some(r) = r {
                    let w2 = (k & ((1 << 48) - 1)) | u64::from(wrote) << 63;
                    let w1 = Record::access_word(*at, r.map_id);
                    self.push(tid, &mut [Record::new(0, w1, w2, 0, call, Kind::Kernel)]);
                }
            }
        }
        result
    }

    /// Tells the recorder of a shared mapping of a named file no device rule matched (for
    /// its warning when nothing was traced), as the in-process tracer does.
    fn unmatched(&mut self, tid: i32, pid: i32, fd: i32, path: &[u8]) {
        let interesting = path.first() == Some(&b'/')
            && !path.starts_with(b"/memfd:")
            && !path.starts_with(b"/dmabuf:")
            && !rules::NEVER
                .iter()
                .any(|g| rules::glob_match(g.as_bytes(), path));
        if !interesting {
            return;
        }
        let path = &path[..path.len().min(512)];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in path {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        use std::os::unix::fs::FileTypeExt;
        let kind = match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Ok(m) if m.file_type().is_char_device() => 1,
            Ok(m) if m.file_type().is_block_device() => 2,
            _ => 0,
        };
        let mut recs = vec![Record::new(
            0,
            h.max(1),
            path.len() as u64 | 1 << 32,
            0,
            kind,
            Kind::Unmatched,
        )];
        recs.extend(path.chunks(32).map(Record::data));
        self.push(tid, &mut recs);
    }

    /// Traces an existing device mapping of thread `tid`'s process (stopped): makes the
    /// alias, logs `MAP` (and the `map ID PATH ...` marker), and makes the traced pages
    /// `PROT_NONE` by an `mprotect` injected into the thread. Returns the mapping id.
    pub fn add_mapping(&mut self, tid: i32, m: &Mapping) -> io::Result<u64> {
        self.trace(tid, m, 0)
    }

    fn trace(&mut self, tid: i32, m: &Mapping, pc: u64) -> io::Result<u64> {
        let pid = self.pid_of(tid).ok_or(io::ErrorKind::NotFound)?;
        let len = page_up(m.len);
        let phys = rules::phys_of(&m.path, m.off);
        let alias = if self.rules.no_alias {
            None
        } else {
            make_alias(pid, m.fd, &m.path, m.addr, m.off, len, m.prot)
        };
        let map_id = self.shm.next_map_id();
        let r = Region {
            start: m.addr,
            len,
            phys,
            map_id,
            prot: m.prot,
            off: m.off,
            alias: alias.map(Rc::new),
        };
        let has_alias = r.alias.is_some();
        if let Some(p) = self.procs.get_mut(&pid) {
            p.cut(m.addr, m.addr + len);
            p.regions.insert(m.addr, r);
        }
        self.emit_map(tid, m.addr, len, phys, map_id, pc);
        let mut text = format!("map {map_id} ").into_bytes();
        text.extend_from_slice(&m.path);
        text.extend_from_slice(format!(" offset {:#x} length {len:#x}", m.off).as_bytes());
        if !has_alias {
            text.extend_from_slice(b" (no alias mapping: every access single-stepped)");
        }
        self.mark(tid, &text);
        self.close_pages(tid, m.addr, len, m.off)?;
        if self.procs.get(&pid).is_some_and(|p| !p.buffer_filter) {
            self.install_buffer_filter(tid, pid);
        }
        Ok(map_id)
    }

    /// Stacks the filter for calls handed buffers on process `pid` (thread `tid` stopped):
    /// from its first device mapping on, those calls stop for [`Session::buffer_call`].
    /// If the kernel refuses, says so (those calls then fail with `EFAULT` on device
    /// memory).
    fn install_buffer_filter(&mut self, tid: i32, pid: i32) {
        let Some(prog) = self.buffer_filter.clone() else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.buffer_filter = true;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let r = match p.engine.remote_mmap(tid, 0, PAGE, rw, flags, -1, 0) {
            Ok(page) => {
                // struct sock_fprog { u16 len; (pad); sock_filter *filter } then the code.
                let mut b = Vec::with_capacity(16 + prog.len() * 8);
                b.extend_from_slice(&(prog.len() as u64).to_le_bytes());
                b.extend_from_slice(&(page + 16).to_le_bytes());
                for i in &prog {
                    b.extend_from_slice(&i.code.to_le_bytes());
                    b.push(i.jt);
                    b.push(i.jf);
                    b.extend_from_slice(&i.k.to_le_bytes());
                }
                let r = if b.len() as u64 <= PAGE && sys::write_mem(pid, page, &b) {
                    // seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)
                    self.inject(tid, 317, [1, 0, page, 0, 0, 0])
                } else {
                    Ok(-i64::from(libc::EFAULT))
                };
                if let Some(p) = self.procs.get_mut(&pid) {
                    let _ = p.engine.remote_munmap(tid, page, PAGE);
                }
                r
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        let why = match r {
            Ok(0) => return,
            Ok(e) => io::Error::from_raw_os_error(-e as i32).to_string(),
            Err(e) => e.to_string(),
        };
        let text = format!(
            "mmio-trace: process {pid}: cannot add the seccomp filter for system calls on device memory ({why}): such calls fail with EFAULT"
        );
        eprintln!("{text}");
        self.mark(tid, text.as_bytes());
    }

    /// Makes the traced pages of `[addr, addr+len)` (file offset `off`) `PROT_NONE` in the
    /// program, honouring `--range`/`--bypass`.
    fn close_pages(&mut self, tid: i32, addr: u64, len: u64, off: u64) -> io::Result<()> {
        if self.rules.ranges.is_empty() && self.rules.bypass.is_empty() {
            self.inject(tid, SYS_MPROTECT, [addr, len, 0, 0, 0, 0])?;
            return Ok(());
        }
        let mut p = 0;
        while p < len {
            if self.rules.traced(off + p, PAGE) {
                self.inject(tid, SYS_MPROTECT, [addr + p, PAGE, 0, 0, 0, 0])?;
            }
            p += PAGE;
        }
        Ok(())
    }

    /// The program's `mprotect` of `[start, start+len)` succeeded: the traced pages
    /// remember the new protection and are closed again.
    fn reprotect(&mut self, tid: i32, start: u64, len: u64, prot: i32) {
        let Some(pid) = self.pid_of(tid) else { return };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let pieces = p.cut(start, start + len);
        if pieces.is_empty() {
            return;
        }
        for mut r in pieces.clone() {
            r.prot = prot;
            p.regions.insert(r.start, r);
        }
        for r in pieces {
            let _ = self.close_pages(tid, r.start, r.len, r.off);
        }
    }

    /// The program's `mremap` succeeded (`new`: its result): what moved is traced at its
    /// new place under a new id per original id (`MAP`, and a `continues` marker), what
    /// stayed stays, ids left without pieces are unmapped; grown pages continue the last
    /// piece.
    fn remapped(&mut self, tid: i32, a: [u64; 6], new: u64, pc: u64) {
        let (old, old_len, new_len) = (a[0], page_up(a[1]), page_up(a[2]));
        let Some(pid) = self.pid_of(tid) else { return };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if old_len == 0 {
            // A duplicate view (old length 0): not traced here (see NOTES.md).
            return;
        }
        if new != old {
            // MREMAP_FIXED over traced pages ended their tracing first.
            let replaced = p.cut(new, new + new_len);
            let mut ids = Vec::new();
            for r in replaced {
                if !p.has_id(r.map_id) && !ids.contains(&r.map_id) {
                    ids.push(r.map_id);
                }
            }
            for id in ids {
                self.emit_unmap(tid, id, pc);
            }
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let kept = old_len.min(new_len);
        let moved_pieces = if new == old {
            Vec::new()
        } else {
            p.cut(old, old + kept)
        };
        let gone = if new == old {
            p.cut(old + kept, old + old_len)
        } else {
            p.cut(old, old + old_len)
        };
        let last = if new == old {
            p.overlapping(old, old + kept).into_iter().last()
        } else {
            moved_pieces.last().cloned()
        };
        // New ids for what moved: (old id, new id, start, end, phys at start).
        let mut ids: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
        let old_ids: Vec<u64> = moved_pieces.iter().chain(&gone).map(|r| r.map_id).collect();
        for mut r in moved_pieces {
            let at = new + (r.start - old);
            let k = match ids.iter().position(|e| e.0 == r.map_id) {
                Some(k) => k,
                None => {
                    ids.push((r.map_id, self.shm.next_map_id(), u64::MAX, 0, 0));
                    ids.len() - 1
                }
            };
            let e = &mut ids[k];
            if at < e.2 {
                e.2 = at;
                e.4 = r.phys;
            }
            e.3 = e.3.max(at + r.len);
            r.start = at;
            r.map_id = e.1;
            p.regions.insert(at, r);
        }
        let mut ended = Vec::new();
        for id in old_ids {
            if !p.has_id(id) && !ended.contains(&id) {
                ended.push(id);
            }
        }
        // Grown pages continue the last piece.
        let mut grown = None;
        if new_len > old_len {
            if let Some(r) = last {
                let at = new + old_len;
                let glen = new_len - old_len;
                let off = r.off + r.len;
                let id = match ids.iter_mut().find(|e| e.0 == r.map_id) {
                    Some(e) => {
                        e.3 = new + new_len;
                        e.1
                    }
                    None => self.shm.next_map_id(),
                };
                let alias = r
                    .alias
                    .as_ref()
                    .and_then(|al| al.file.as_ref())
                    .and_then(|f| map_file(f.as_raw_fd(), off, glen, r.prot))
                    .map(|base| {
                        Rc::new(Alias {
                            base,
                            len: glen,
                            file: None,
                            off,
                        })
                    });
                let g = Region {
                    start: at,
                    len: glen,
                    phys: r.phys + r.len,
                    map_id: id,
                    prot: r.prot,
                    off,
                    alias,
                };
                grown = Some((g, r.map_id, ids.iter().any(|e| e.1 == id)));
            }
        }
        for id in ended {
            self.emit_unmap(tid, id, pc);
        }
        if let Some((g, from, part_of_moved)) = grown {
            let (start, len, phys, id, off) = (g.start, g.len, g.phys, g.map_id, g.off);
            if let Some(p) = self.procs.get_mut(&pid) {
                p.regions.insert(start, g);
            }
            if !part_of_moved {
                self.emit_map(tid, start, len, phys, id, pc);
                self.mark(tid, format!("map {id} continues map {from}").as_bytes());
            }
            let _ = self.close_pages(tid, start, len, off);
        }
        for e in ids {
            self.emit_map(tid, e.2, e.3 - e.2, e.4, e.1, pc);
            self.mark(tid, format!("map {} continues map {}", e.1, e.0).as_bytes());
        }
    }

    /// Runs system call `nr` with `args` in thread `tid` (stopped), which is left exactly
    /// as it was (the engine's [`Process::inject_syscall`]). Returns the call's result.
    fn inject(&mut self, tid: i32, nr: u64, args: [u64; 6]) -> io::Result<i64> {
        let pid = self.pid_of(tid).ok_or(io::ErrorKind::NotFound)?;
        let p = self.procs.get_mut(&pid).ok_or(io::ErrorKind::NotFound)?;
        let r = p.engine.inject_syscall(tid, nr as i64, args);
        // Signals that came meanwhile are queued again for the thread: nothing to do.
        p.engine.take_requeued();
        r.map_err(|e| io::Error::other(e.to_string()))
    }

    /// At a signal-delivery-stop of thread `tid` for `si`: completes a traced access
    /// ([`Signal::Handled`]) or hands the signal to the program.
    pub fn on_signal(&mut self, tid: i32, si: &libc::siginfo_t) -> Signal {
        let sig = si.si_signo;
        if sig != libc::SIGSEGV || si.si_code != 2 {
            // Not a protection fault (SEGV_ACCERR): the program's.
            return Signal::Deliver(sig);
        }
        // SAFETY: a SIGSEGV's siginfo carries the fault address.
        let addr = unsafe { si.si_addr() } as u64;
        let Some(pid) = self.pid_of(tid) else {
            return Signal::Deliver(sig);
        };
        let Some(region) = self.procs.get(&pid).and_then(|p| p.find(addr)).cloned() else {
            return Signal::Deliver(sig);
        };
        match self.complete(tid, pid, addr, &region) {
            Ok(s) => s,
            Err(_) => Signal::Deliver(sig),
        }
    }

    fn complete(&mut self, tid: i32, pid: i32, addr: u64, region: &Region) -> io::Result<Signal> {
        let fail = |e: pt::Error| io::Error::other(e.to_string());
        let mut regs = Regs::read(tid).map_err(fail)?;
        let rip = regs.user().rip;
        let mut code = [0u8; 16];
        let n = read_code(pid, rip, &mut code);
        if rip == addr || (addr & !(PAGE - 1)) == (rip & !(PAGE - 1)) && n == 0 {
            return self.exec_fault(tid, pid, addr, rip, region);
        }
        if n == 0 {
            // No code to read: the program's fault.
            return Ok(Signal::Deliver(libc::SIGSEGV));
        }
        let d = match x86::decode(&code[..n], rip) {
            Ok(d) => d,
            Err(u) => {
                let ins = u.instruction().copied();
                return self.step(tid, pid, region, &code[..n], addr, ins.as_ref());
            }
        };
        let Some(proc_) = self.procs.get(&pid) else {
            return Ok(Signal::Deliver(libc::SIGSEGV));
        };
        let accesses = d.accesses(&regs);
        if !accesses
            .as_slice()
            .iter()
            .all(|a| match proc_.find(a.addr) {
                Some(r) => {
                    let need = match a.dir {
                        x86::AccessDir::Read => libc::PROT_READ,
                        _ => libc::PROT_WRITE,
                    };
                    r.prot & need != 0
                }
                None => true,
            })
        {
            // The program's own protection forbids the access: its fault, as natively.
            return Ok(Signal::Deliver(libc::SIGSEGV));
        }
        let mut bus = RemoteBus {
            proc_,
            pid,
            pc: rip,
            events: Vec::new(),
            run: d
                .string_run_width()
                .map(|w| Gather::new(w, regs.user().eflags & 0x400 != 0)),
        };
        // Every access of the instruction must be doable: inside one region with an alias,
        // or outside all regions; else it is stepped.
        let outcome = accesses
            .as_slice()
            .iter()
            .all(|a| bus.doable(a.addr, a.size as usize))
            .then(|| x86::emulate(&d, &mut regs, &mut bus));
        let events = bus.finish();
        for mut e in events {
            self.push(tid, &mut e);
        }
        match outcome {
            Some(Ok(_)) => {
                regs.write_back().map_err(fail)?;
                Ok(Signal::Handled)
            }
            other => {
                if other.is_some() {
                    // A `REP` instruction keeps the elements it completed.
                    regs.write_back().map_err(fail)?;
                }
                let ins = *d.instruction();
                self.step(tid, pid, region, &code[..n], addr, Some(&ins))
            }
        }
    }

    /// An instruction fetch from a traced page: if the program mapped it executable, the
    /// page gets the program's protection back and is no longer traced (code cannot run
    /// from a page that traps every access, nor from the alias), as the in-process route
    /// does, with the same marker; otherwise the fault is the program's.
    fn exec_fault(
        &mut self,
        tid: i32,
        pid: i32,
        addr: u64,
        rip: u64,
        region: &Region,
    ) -> io::Result<Signal> {
        if region.prot & libc::PROT_EXEC == 0 {
            return Ok(Signal::Deliver(libc::SIGSEGV));
        }
        let page = addr & !(PAGE - 1);
        self.inject(tid, SYS_MPROTECT, [page, PAGE, region.prot as u64, 0, 0, 0])?;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.cut(page, page + PAGE);
        }
        let text = format!(
            "map {}: code executed at {rip:#x}: page {page:#x} (phys {:#x}) is no longer traced",
            region.map_id,
            region.phys + (page - region.start)
        );
        self.mark(tid, text.as_bytes());
        Ok(Signal::Handled)
    }

    /// Single-steps the faulting instruction of thread `tid` with its page opened (the
    /// program's protection) and the process's other threads interrupted; logs what it
    /// can know, as the in-process step path does: the value of a `MOV` of a
    /// general-purpose register or an immediate (a store's before the step, a load's
    /// after it), else `UNKNOWN` with the opcode. A real fault during the step is the
    /// program's.
    fn step(
        &mut self,
        tid: i32,
        pid: i32,
        region: &Region,
        code: &[u8],
        fault: u64,
        ins: Option<&iced_x86::Instruction>,
    ) -> io::Result<Signal> {
        let before = Regs::read(tid).map_err(|e| io::Error::other(e.to_string()))?;
        let rip = before.user().rip;
        let proc_ = self.procs.get(&pid);
        let known = match (ins, proc_) {
            (Some(i), Some(p)) => step_value(i, &before, p, pid),
            _ => Known::Nothing,
        };
        let others = self.pause_others(tid, pid);
        // The faulting page first; another traced page the instruction touches opens on
        // its own fault.
        let mut opened: Vec<u64> = Vec::new();
        let mut open = fault & !(PAGE - 1);
        let mut prot = region.prot;
        let mut result = Ok(Signal::Handled);
        for _ in 0..4 {
            if let Err(e) = self.inject(tid, SYS_MPROTECT, [open, PAGE, prot as u64, 0, 0, 0]) {
                result = Err(e);
                break;
            }
            opened.push(open);
            let stop = pt::singlestep(tid, 0).and_then(|()| pt::wait_tid(tid));
            let stop = match stop {
                Ok(s) => s,
                Err(e) => {
                    result = Err(io::Error::other(e.to_string()));
                    break;
                }
            };
            match stop {
                Stop::Signal {
                    signal: libc::SIGTRAP,
                    ..
                } => {
                    let after = Regs::read(tid).ok();
                    let unknown = || {
                        let w1 = Record::access_word(fault, region.map_id);
                        vec![Record::new(0, w1, le_value(code), rip, 0, Kind::Unknown)]
                    };
                    let id = region.map_id;
                    let mut rec = match (known, after) {
                        (Known::Store(a, w, v), _) => {
                            access_event(true, a, id, &v[..usize::from(w)], rip)
                        }
                        (Known::LoadReg(a, w, reg), Some(after)) => {
                            let v = reg_value(&after, reg) & width_mask(w);
                            access_event(false, a, id, &v.to_le_bytes()[..usize::from(w)], rip)
                        }
                        (Known::LoadVec(a, w, n), Some(after)) => {
                            use x86::Cpu;
                            access_event(false, a, id, &after.vec(n)[..usize::from(w)], rip)
                        }
                        (Known::LoadMem(a, w, from), _) => {
                            let mut b = [0u8; 8];
                            let w = usize::from(w).min(8);
                            if sys::read_mem(pid, from, &mut b[..w]) == w {
                                access_event(false, a, id, &b[..w], rip)
                            } else {
                                unknown()
                            }
                        }
                        _ => unknown(),
                    };
                    self.push(tid, &mut rec);
                    self.shm
                        .header()
                        .slow_steps
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Stop::Signal {
                    signal: libc::SIGSEGV,
                    info: Some(info),
                } if info.code() == 2 => {
                    let a = info.fault_addr().unwrap_or(0);
                    let page = a & !(PAGE - 1);
                    let other = self.procs.get(&pid).and_then(|p| p.find(a)).cloned();
                    match other {
                        Some(r) if !opened.contains(&page) => {
                            open = page;
                            prot = r.prot;
                            continue;
                        }
                        // The program's own fault (the pages close first; the thread stays
                        // in this signal-delivery-stop with its siginfo).
                        _ => result = Ok(Signal::Deliver(libc::SIGSEGV)),
                    }
                    break;
                }
                Stop::Signal { signal, .. } => {
                    // A real fault of the instruction (or a signal that came first): the
                    // program's, delivered once the pages are closed.
                    result = Ok(Signal::Deliver(signal));
                    break;
                }
                other => {
                    self.deferred.push((tid, other));
                    result = Err(io::Error::other("the thread stopped otherwise"));
                    break;
                }
            }
        }
        for p in opened {
            let _ = self.inject(tid, SYS_MPROTECT, [p, PAGE, 0, 0, 0, 0]);
        }
        self.resume_others(others);
        result
    }

    /// Interrupts the other threads of process `pid` (for a step: none of them may reach
    /// the opened page). Returns those to resume, and how (`true`: listen, they were in a
    /// group-stop).
    fn pause_others(&mut self, tid: i32, pid: i32) -> Vec<(i32, bool)> {
        let others: Vec<i32> = self
            .procs
            .get(&pid)
            .map(|p| p.threads.iter().copied().filter(|&t| t != tid).collect())
            .unwrap_or_default();
        let mut paused = Vec::new();
        for t in others {
            if pt::interrupt(t).is_err() {
                continue;
            }
            match pt::wait_tid(t) {
                Ok(Stop::Interrupt) => {
                    // A call our interrupt broke off (epoll_wait & co. would return EINTR)
                    // resumes as if nothing happened.
                    let _ = pt::restart_interrupted_call(t);
                    paused.push((t, false))
                }
                Ok(Stop::Group { .. }) => paused.push((t, true)),
                // Another stop came first (the thread is stopped all the same): the driver
                // handles it later; our interrupt's stop comes when it resumes.
                Ok(other) => self.deferred.push((t, other)),
                Err(_) => {}
            }
        }
        paused
    }

    fn resume_others(&mut self, paused: Vec<(i32, bool)>) {
        for (t, listen) in paused {
            let _ = if listen {
                pt::listen(t)
            } else {
                pt::cont(t, 0)
            };
        }
    }

    /// Gives every region of thread `tid`'s process (stopped) the program's protection
    /// back and forgets them, without `UNMAP` (detach: the mappings stay).
    pub fn restore(&mut self, tid: i32) -> io::Result<()> {
        let pid = self.pid_of(tid).ok_or(io::ErrorKind::NotFound)?;
        let regions: Vec<Region> = self
            .procs
            .get_mut(&pid)
            .map(|p| std::mem::take(&mut p.regions).into_values().collect())
            .unwrap_or_default();
        for r in regions {
            self.inject(tid, SYS_MPROTECT, [r.start, r.len, r.prot as u64, 0, 0, 0])?;
        }
        Ok(())
    }
}

/// The bus of an emulated instruction: device accesses on the alias in the recorder (each
/// once, at its width), logged; other accesses to the program's memory, not logged.
struct RemoteBus<'a> {
    proc_: &'a Proc,
    pid: i32,
    pc: u64,
    /// The events, in order (timestamps filled when pushed).
    events: Vec<Vec<Record>>,
    run: Option<Gather>,
}

impl RemoteBus<'_> {
    /// Whether an access of `len` bytes at `addr` can be made: inside one region that has
    /// an alias (and a width doable in one instruction), or outside every region.
    fn doable(&self, addr: u64, len: usize) -> bool {
        let last = addr + len.max(1) as u64 - 1;
        match self.proc_.find(addr) {
            Some(r) => r.alias.is_some() && r.contains(last) && width_ok(len),
            None => {
                self.proc_.find(last).is_none() && self.proc_.overlapping(addr, last + 1).is_empty()
            }
        }
    }

    fn region(&self, addr: u64, len: usize) -> Result<Option<(u64, u64, i32)>, BusFault> {
        let last = addr + len.max(1) as u64 - 1;
        match self.proc_.find(addr) {
            Some(r) if r.contains(last) && width_ok(len) => match r.alias_of(addr) {
                Some(at) => Ok(Some((at, r.map_id, r.prot))),
                None => Err(BusFault { addr }),
            },
            Some(_) => Err(BusFault { addr }),
            None if self.proc_.find(last).is_some() => Err(BusFault { addr }),
            None => Ok(None),
        }
    }

    fn log(&mut self, write: bool, addr: u64, id: u64, bytes: &[u8]) {
        if let Some(g) = self.run.as_mut() {
            if bytes.len() <= 8 {
                g.access(ElemAccess {
                    write,
                    addr,
                    map_id: id,
                    value: le_value(bytes),
                });
                return;
            }
        }
        self.events
            .push(access_event(write, addr, id, bytes, self.pc));
    }

    fn finish(mut self) -> Vec<Vec<Record>> {
        if let Some(mut g) = self.run.take() {
            g.finish(self.pc, &mut self.events);
        }
        self.events
    }
}

/// Whether one access of `n` bytes can be made as one instruction here.
fn width_ok(n: usize) -> bool {
    match n {
        1 | 2 | 4 | 8 | 16 => true,
        32 => std::arch::is_x86_feature_detected!("avx"),
        64 => std::arch::is_x86_feature_detected!("avx512f"),
        _ => false,
    }
}

/// Reads `buf.len()` (1..=64) bytes at `p` with single accesses of that width.
///
/// # Safety
/// `p..p+len` readable.
unsafe fn read_exact(p: u64, buf: &mut [u8]) {
    use std::arch::x86_64::*;
    // SAFETY (each arm): the caller's range, read once at its width.
    unsafe {
        match buf.len() {
            1 => buf[0] = (p as *const u8).read_volatile(),
            2 => buf.copy_from_slice(&(p as *const u16).read_volatile().to_le_bytes()),
            4 => buf.copy_from_slice(&(p as *const u32).read_volatile().to_le_bytes()),
            8 => buf.copy_from_slice(&(p as *const u64).read_volatile().to_le_bytes()),
            16 => {
                let v = _mm_loadu_si128(p as *const __m128i);
                _mm_storeu_si128(buf.as_mut_ptr() as *mut __m128i, v);
            }
            _ => {
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = ((p + k as u64) as *const u8).read_volatile();
                }
            }
        }
    }
}

/// Writes `data` (1..=64 bytes) at `p` with single accesses of that width.
///
/// # Safety
/// `p..p+len` writable.
unsafe fn write_exact(p: u64, data: &[u8]) {
    use std::arch::x86_64::*;
    let a8 = |d: &[u8]| {
        let mut b = [0u8; 8];
        b[..d.len()].copy_from_slice(d);
        u64::from_le_bytes(b)
    };
    // SAFETY (each arm): the caller's range, written once at its width.
    unsafe {
        match data.len() {
            1 => (p as *mut u8).write_volatile(data[0]),
            2 => (p as *mut u16).write_volatile(a8(data) as u16),
            4 => (p as *mut u32).write_volatile(a8(data) as u32),
            8 => (p as *mut u64).write_volatile(a8(data)),
            16 => {
                let v = _mm_loadu_si128(data.as_ptr() as *const __m128i);
                _mm_storeu_si128(p as *mut __m128i, v);
            }
            _ => {
                for (k, b) in data.iter().enumerate() {
                    ((p + k as u64) as *mut u8).write_volatile(*b);
                }
            }
        }
    }
}

impl Bus for RemoteBus<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        match self.region(addr, buf.len())? {
            Some((at, id, _)) => {
                // SAFETY: the alias maps the whole region readable; width checked.
                unsafe { read_exact(at, buf) };
                self.log(false, addr, id, buf);
            }
            None => {
                if sys::read_mem(self.pid, addr, buf) != buf.len() {
                    return Err(BusFault { addr });
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        match self.region(addr, data.len())? {
            Some((at, id, prot)) => {
                if prot & libc::PROT_WRITE == 0 {
                    return Err(BusFault { addr });
                }
                // SAFETY: the alias maps the region writable when the program may write.
                unsafe { write_exact(at, data) };
                self.log(true, addr, id, data);
            }
            None => {
                if !sys::write_mem(self.pid, addr, data) {
                    return Err(BusFault { addr });
                }
            }
        }
        Ok(())
    }

    fn string_element_done(&mut self) {
        let pc = self.pc;
        if let Some(g) = self.run.as_mut() {
            g.element_done(pc, &mut self.events);
        }
    }

    fn atomic_rmw(&mut self, addr: u64, width: u32, op: &mut Rmw<'_>) -> Result<u64, BusFault> {
        use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
        let w = width as usize;
        if !matches!(w, 1 | 2 | 4 | 8) || addr % u64::from(width) != 0 {
            return Err(BusFault { addr });
        }
        let Some((at, id, prot)) = self.region(addr, w)? else {
            // Ordinary memory of the program (the other threads are running: not atomic
            // with respect to them; rare: a locked form with a device operand has that
            // operand in the region).
            let mut b = [0u8; 8];
            if sys::read_mem(self.pid, addr, &mut b[..w]) != w {
                return Err(BusFault { addr });
            }
            let old = u64::from_le_bytes(b);
            let new = op.apply(old, width);
            if !sys::write_mem(self.pid, addr, &new.to_le_bytes()[..w]) {
                return Err(BusFault { addr });
            }
            return Ok(old);
        };
        if prot & libc::PROT_WRITE == 0 {
            return Err(BusFault { addr });
        }
        // The native locked instruction on the alias: atomic with respect to every other
        // access to the word (other processes' included).
        macro_rules! locked {
            ($t:ty, $a:ty) => {{
                // SAFETY: aligned, inside the alias, mapped read-write.
                let a = unsafe { &*(at as *const $a) };
                match op {
                    Rmw::Xchg(v) => {
                        let v = *v as $t;
                        (a.swap(v, SeqCst) as u64, v as u64)
                    }
                    Rmw::Add(v) => {
                        let old = a.fetch_add(*v as $t, SeqCst);
                        (old as u64, old.wrapping_add(*v as $t) as u64)
                    }
                    Rmw::Cmpxchg { expected, new } => {
                        let (e, n) = (*expected as $t, *new as $t);
                        match a.compare_exchange(e, n, SeqCst, SeqCst) {
                            Ok(old) => (old as u64, n as u64),
                            Err(old) => (old as u64, old as u64),
                        }
                    }
                    Rmw::Update(_) => {
                        let mut cur = a.load(SeqCst);
                        loop {
                            let n = op.apply(cur as u64, width) as $t;
                            match a.compare_exchange(cur, n, SeqCst, SeqCst) {
                                Ok(_) => break (cur as u64, n as u64),
                                Err(o) => cur = o,
                            }
                        }
                    }
                }
            }};
        }
        let (old, new) = match w {
            1 => locked!(u8, AtomicU8),
            2 => locked!(u16, AtomicU16),
            4 => locked!(u32, AtomicU32),
            _ => locked!(u64, AtomicU64),
        };
        self.events.push(access_event(
            false,
            addr,
            id,
            &old.to_le_bytes()[..w],
            self.pc,
        ));
        self.events.push(access_event(
            true,
            addr,
            id,
            &new.to_le_bytes()[..w],
            self.pc,
        ));
        Ok(old)
    }
}

/// The records of one access event (as the in-process tracer writes them).
fn access_event(write: bool, addr: u64, id: u64, bytes: &[u8], pc: u64) -> Vec<Record> {
    let width = bytes.len().min(64);
    let w1 = Record::access_word(addr, id);
    if width <= 8 {
        let kind = if write { Kind::Write } else { Kind::Read };
        return vec![Record::new(0, w1, le_value(bytes), pc, width as u8, kind)];
    }
    let kind = if write {
        Kind::WriteWide
    } else {
        Kind::ReadWide
    };
    let mut v = vec![Record::new(0, w1, 0, pc, width as u8, kind)];
    for c in bytes[..width].chunks(32) {
        v.push(Record::data(c));
    }
    v
}

/// A logged access of a string element.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct ElemAccess {
    write: bool,
    addr: u64,
    map_id: u64,
    value: u64,
}

/// A string instruction's device accesses gathered into runs, one [`Kind::Str`] event per
/// run, exactly as the in-process tracer gathers them (so both routes log the same).
struct Gather {
    width: u8,
    down: bool,
    cur: Vec<ElemAccess>,
    first: Vec<ElemAccess>,
    count: u32,
    same: bool,
    vals: Vec<u8>,
}

impl Gather {
    fn new(width: u8, down: bool) -> Gather {
        Gather {
            width,
            down,
            cur: Vec::new(),
            first: Vec::new(),
            count: 0,
            same: true,
            vals: Vec::new(),
        }
    }

    fn access(&mut self, a: ElemAccess) {
        self.cur.push(a);
    }

    fn at(&self, a: u64, k: u32) -> u64 {
        let d = u64::from(k) * u64::from(self.width);
        if self.down {
            a.wrapping_sub(d)
        } else {
            a.wrapping_add(d)
        }
    }

    fn gatherable(&self) -> bool {
        match self.cur.len() {
            1 => true,
            2 => !self.cur[0].write && self.cur[1].write && self.cur[0].value == self.cur[1].value,
            _ => false,
        }
    }

    fn continues(&self) -> bool {
        let w = usize::from(self.width);
        if self.first.is_empty() || self.cur.len() != self.first.len() || self.count == u32::MAX {
            return false;
        }
        for (c, f) in self.cur.iter().zip(&self.first) {
            if c.write != f.write || c.map_id != f.map_id || c.addr != self.at(f.addr, self.count) {
                return false;
            }
        }
        if self.cur.len() == 2 && self.cur[0].value != self.cur[1].value {
            return false;
        }
        let same = self.cur[0].value == self.first[0].value;
        (self.count as usize + 1) * w <= MAX_STR_VALUES || (self.same && same)
    }

    fn add_cur(&mut self) {
        let w = usize::from(self.width);
        let v = self.cur[0].value;
        self.same &= v == self.first[0].value;
        if self.vals.len() + w <= MAX_STR_VALUES {
            self.vals.extend_from_slice(&v.to_le_bytes()[..w]);
        }
        self.count += 1;
        self.cur.clear();
    }

    fn element_done(&mut self, pc: u64, out: &mut Vec<Vec<Record>>) {
        if self.cur.is_empty() {
            self.flush(pc, out);
            return;
        }
        if self.continues() {
            self.add_cur();
            return;
        }
        self.flush(pc, out);
        if !self.gatherable() {
            self.publish_cur(pc, out);
            return;
        }
        self.first = self.cur.clone();
        self.count = 0;
        self.same = true;
        self.vals.clear();
        self.add_cur();
    }

    fn flush(&mut self, pc: u64, out: &mut Vec<Vec<Record>>) {
        if self.first.is_empty() {
            return;
        }
        let f = std::mem::take(&mut self.first);
        let w = usize::from(self.width);
        let b = |v: u64| v.to_le_bytes()[..w].to_vec();
        if self.count == 1 {
            for a in &f {
                out.push(access_event(a.write, a.addr, a.map_id, &b(a.value), pc));
            }
            return;
        }
        let mut flags = 0;
        if f[0].write {
            flags |= Record::STR_WRITE;
        }
        if self.down {
            flags |= Record::STR_DOWN;
        }
        let values = if self.same {
            flags |= Record::STR_SAME;
            self.vals[..w].to_vec()
        } else {
            self.vals.clone()
        };
        let second = (f.len() == 2).then(|| Record::access_word(f[1].addr, f[1].map_id));
        if second.is_some() {
            flags |= Record::STR_SECOND;
        }
        let w2 = u64::from(self.count) | flags << 32;
        let mut recs = vec![Record::new(
            0,
            Record::access_word(f[0].addr, f[0].map_id),
            w2,
            pc,
            self.width,
            Kind::Str,
        )];
        if let Some(s) = second {
            recs.push(Record([s, 0, 0, 0]));
        }
        for c in values.chunks(32) {
            recs.push(Record::data(c));
        }
        out.push(recs);
    }

    fn publish_cur(&mut self, pc: u64, out: &mut Vec<Vec<Record>>) {
        let w = usize::from(self.width);
        for a in self.cur.drain(..) {
            out.push(access_event(
                a.write,
                a.addr,
                a.map_id,
                &a.value.to_le_bytes()[..w],
                pc,
            ));
        }
    }

    fn finish(&mut self, pc: u64, out: &mut Vec<Vec<Record>>) {
        self.flush(pc, out);
        self.publish_cur(pc, out);
    }
}

fn page_up(n: u64) -> u64 {
    n.saturating_add(PAGE - 1) & !(PAGE - 1)
}

/// What a stepped instruction's access is known to be (its address, width and value, or
/// where the value is after the step).
#[derive(Clone, Copy)]
enum Known {
    /// A store of these bytes.
    Store(u64, u8, [u8; 64]),
    /// A load into this general-purpose register.
    LoadReg(u64, u8, iced_x86::Register),
    /// A load into this vector register (its low bytes).
    LoadVec(u64, u8, usize),
    /// A load copied to this address of ordinary memory (`MOVS`).
    LoadMem(u64, u8, u64),
    /// Nothing: logged `UNKNOWN`.
    Nothing,
}

/// SSE/AVX moves whose value a step takes from the vector register: before the step for a
/// store, after it for a load (not the masked EVEX forms, which move only some elements).
const VEC_MOVES: [iced_x86::Mnemonic; 28] = {
    use iced_x86::Mnemonic::*;
    [
        Movdqu, Movdqa, Movups, Movaps, Movupd, Movapd, Movntdq, Movntps, Movntpd, Lddqu, Movq,
        Movd, Vmovdqu, Vmovdqa, Vmovups, Vmovaps, Vmovupd, Vmovapd, Vmovntdq, Vmovntps, Vmovntpd,
        Vlddqu, Vmovq, Vmovd, Vmovdqu8, Vmovdqu16, Vmovdqu32, Vmovdqu64,
    ]
};

/// What a single step can know of the instruction's device access, as the in-process step
/// path knows it: a `MOV` (`MOVNTI`, `MOVZX`, `MOVSX`, `MOVSXD`) between memory and a
/// general-purpose register or an immediate; an unmasked vector move; a string element
/// whose value is in a register or ordinary memory (`STOS`, `LODS`, `MOVS` with one side
/// in ordinary memory).
fn step_value(ins: &iced_x86::Instruction, regs: &Regs, p: &Proc, pid: i32) -> Known {
    use iced_x86::{Mnemonic as M, OpKind, Register};
    use x86::Cpu;
    let width = ins.memory_size().size();
    if !(1..=64).contains(&width) || ins.op_count() == 0 {
        return Known::Nothing;
    }
    let w = width as u8;
    let store = |v: &[u8]| {
        let mut b = [0u8; 64];
        let n = v.len().min(64);
        b[..n].copy_from_slice(&v[..n]);
        b
    };
    if ins.is_string_instruction() {
        if w > 8 || matches!(ins.memory_segment(), Register::FS | Register::GS) {
            return Known::Nothing;
        }
        let a32 = [ins.op0_kind(), ins.op1_kind()]
            .iter()
            .any(|k| matches!(k, OpKind::MemorySegESI | OpKind::MemoryESEDI));
        let amask = if a32 { 0xffff_ffff } else { u64::MAX };
        let (rsi, rdi) = (regs.gpr(6) & amask, regs.gpr(7) & amask);
        let traced = |a: u64| p.find(a).is_some();
        return match ins.mnemonic() {
            M::Stosb | M::Stosw | M::Stosd | M::Stosq if traced(rdi) => {
                Known::Store(rdi, w, store(&regs.gpr(0).to_le_bytes()[..usize::from(w)]))
            }
            M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq if traced(rsi) => {
                let acc = [Register::AL, Register::AX, Register::EAX, Register::RAX];
                Known::LoadReg(rsi, w, acc[w.trailing_zeros() as usize & 3])
            }
            M::Movsb | M::Movsw | M::Movsd | M::Movsq => match (traced(rsi), traced(rdi)) {
                (true, false) => Known::LoadMem(rsi, w, rdi),
                (false, true) => {
                    let mut b = [0u8; 8];
                    if sys::read_mem(pid, rsi, &mut b[..usize::from(w)]) == usize::from(w) {
                        Known::Store(rdi, w, store(&b[..usize::from(w)]))
                    } else {
                        Known::Nothing
                    }
                }
                _ => Known::Nothing,
            },
            _ => Known::Nothing,
        };
    }
    let Some(ea) = ins.virtual_address(
        (0..ins.op_count())
            .find(|&i| ins.op_kind(i) == OpKind::Memory)
            .unwrap_or(0),
        0,
        |r, _, _| {
            Some(match r {
                Register::FS => regs.fs_base(),
                Register::GS => regs.gs_base(),
                Register::ES | Register::CS | Register::SS | Register::DS => 0,
                Register::RIP => ins.next_ip(),
                r if r.is_gpr() => reg_value(regs, r),
                _ => return None,
            })
        },
    ) else {
        return Known::Nothing;
    };
    if VEC_MOVES.contains(&ins.mnemonic()) && ins.op_mask() == Register::None {
        let vec_no = |r: Register| (r.is_xmm() || r.is_ymm() || r.is_zmm()).then(|| r.number());
        if ins.op0_kind() == OpKind::Memory {
            if let Some(n) = vec_no(ins.op1_register()) {
                return Known::Store(ea, w, store(&regs.vec(n)[..width]));
            }
        } else if ins.op1_kind() == OpKind::Memory {
            if let Some(n) = vec_no(ins.op0_register()) {
                return Known::LoadVec(ea, w, n);
            }
        }
        return Known::Nothing;
    }
    if w > 8
        || !matches!(
            ins.mnemonic(),
            M::Mov | M::Movnti | M::Movzx | M::Movsx | M::Movsxd
        )
    {
        return Known::Nothing;
    }
    if ins.op0_kind() == OpKind::Memory {
        match ins.op1_kind() {
            OpKind::Register if ins.op1_register().is_gpr() => {
                let v = reg_value(regs, ins.op1_register()) & width_mask(w);
                Known::Store(ea, w, store(&v.to_le_bytes()[..usize::from(w)]))
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64 => {
                let v = ins.immediate(1) & width_mask(w);
                Known::Store(ea, w, store(&v.to_le_bytes()[..usize::from(w)]))
            }
            _ => Known::Nothing,
        }
    } else if ins.op1_kind() == OpKind::Memory && ins.op0_register().is_gpr() {
        Known::LoadReg(ea, w, ins.op0_register())
    } else {
        Known::Nothing
    }
}

/// The value of general-purpose register `r` (any size, AH..BH included).
fn reg_value(regs: &Regs, r: iced_x86::Register) -> u64 {
    use iced_x86::Register;
    use x86::Cpu;
    let n = (r.full_register() as usize).wrapping_sub(Register::RAX as usize);
    if n > 15 {
        return 0;
    }
    let v = regs.gpr(n);
    if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
        // AH..BH: bits 8..16 of RAX..RBX.
        return regs.gpr(n) >> 8 & 0xff;
    }
    v & width_mask(r.size() as u8)
}

fn width_mask(w: u8) -> u64 {
    if w >= 8 {
        u64::MAX
    } else {
        (1u64 << (w * 8)) - 1
    }
}

/// The little-endian value of at most 8 bytes.
fn le_value(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = b.len().min(8);
    v[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(v)
}

/// Maps `len` bytes of `fd` at `off` shared in the recorder: read-write, else read-only,
/// else with the program's protection. Returns the address.
fn map_file(fd: i32, off: u64, len: u64, prot: i32) -> Option<u64> {
    for p in [libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ, prot] {
        if p == libc::PROT_NONE {
            continue;
        }
        // SAFETY: a fresh shared mapping of a file at an address of the kernel's choosing.
        let a = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                p,
                libc::MAP_SHARED,
                fd,
                off as libc::off_t,
            )
        };
        if a != libc::MAP_FAILED {
            return Some(a as u64);
        }
    }
    None
}

/// The alias of a device mapping of process `pid` at `addr`: the program's own open file
/// (`pidfd_getfd`: drivers keep per-open-file state), else the file reopened by its
/// `/proc/PID/fd` link, else the mapping's own file (`/proc/PID/map_files`, when the
/// program closed its descriptor; needs `CAP_SYS_ADMIN`), else its path.
fn make_alias(
    pid: i32,
    fd: Option<i32>,
    path: &[u8],
    addr: u64,
    off: u64,
    len: u64,
    prot: i32,
) -> Option<Alias> {
    use std::os::unix::ffi::OsStrExt;
    let mut file = None;
    if let Some(fd) = fd {
        file = pt::pidfd_getfd(pid, fd).ok();
        if file.is_none() {
            file = open_rw(std::path::Path::new(&format!("/proc/{pid}/fd/{fd}")));
        }
    }
    if file.is_none() {
        let p = format!("/proc/{pid}/map_files/{addr:x}-{:x}", addr + len);
        file = open_rw(std::path::Path::new(&p));
    }
    if file.is_none() {
        file = open_rw(std::path::Path::new(std::ffi::OsStr::from_bytes(path)));
    }
    let file = file?;
    let base = map_file(file.as_raw_fd(), off, len, prot)?;
    Some(Alias {
        base,
        len,
        file: Some(file),
        off,
    })
}

fn open_rw(p: &std::path::Path) -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .or_else(|_| std::fs::File::open(p))
        .ok()
        .map(Into::into)
}

/// Reads the instruction bytes at `rip` (fewer near the end of readable memory).
fn read_code(pid: i32, rip: u64, buf: &mut [u8; 16]) -> usize {
    let n = sys::read_mem(pid, rip, buf);
    if n > 0 {
        return n;
    }
    // Across a page boundary into an unreadable page: the part before it.
    let first = ((rip | (PAGE - 1)) + 1 - rip) as usize;
    sys::read_mem(pid, rip, &mut buf[..first.min(16)])
}
