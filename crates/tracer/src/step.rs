//! The step fallback: for instructions the emulator cannot complete.
//!
//! Pause every other thread of the process (they wait in [`PAUSE_SIGNAL`]'s handler), open
//! the device page(s) with the program's protection, set the trap flag and let the CPU run
//! the one instruction; on SIGTRAP close the pages, clear the flag, record the access and
//! release the other threads. Other threads never see the page open, so nothing goes
//! untraced. Costly (a #DB trap, two mprotects, a signal per thread), so counted in the
//! header's `slow_steps`.

use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use mmio_trace_ring::sys as rsys;

use crate::ctx::{gregs, uc_mask, Gregs, HANDLER_MASK, PAUSE_SIGNAL, TF};
use crate::regions::{self, Region};
use crate::threads::{self, StepState};
use crate::{emit, emu, guard, sys};

/// Tid of the thread stepping now (0: none).
static STEP_OWNER: AtomicU32 = AtomicU32::new(0);
/// Bumped to release paused threads (futex word).
static RELEASE: AtomicU32 = AtomicU32::new(0);
/// The RELEASE value paused threads wait to see change.
static PAUSE_AT: AtomicU32 = AtomicU32::new(0);
/// Nonzero while a step is pausing threads.
static PAUSING: AtomicU32 = AtomicU32::new(0);
/// Threads that acknowledged the pause.
static ACKS: AtomicU32 = AtomicU32::new(0);

const PAGE: u64 = 4096;

/// `/proc/self/task`, opened at init (and again in a fork child) and kept: a step must be
/// able to find the other threads even when the program has no free descriptor left
/// (at its `RLIMIT_NOFILE`), when opening it on demand would fail. -1: not open.
static TASK_FD: AtomicI32 = AtomicI32::new(-1);

/// Opens the task directory the pause scan reads (at init, and in a fork child, where the
/// inherited one lists the parent's threads and shares its file offset with the parent).
pub(crate) fn open_task_dir() {
    let fd = sys::open_dir(b"/proc/self/task\0");
    let old = TASK_FD.swap(if fd < 0 { -1 } else { fd as i32 }, Ordering::AcqRel);
    if old >= 0 {
        sys::close(old);
    }
}

/// Records that the task directory's descriptor is now `fd` (it was moved to another
/// number; the old one is the program's to reuse). A scan running meanwhile may read
/// the old number, fail, and be logged as a step that paused nobody.
pub(crate) fn set_task_fd(fd: i32) {
    TASK_FD.store(fd, Ordering::Release);
}

/// The task directory's descriptor (to keep the program from closing it).
pub fn task_fd() -> Option<i32> {
    let fd = TASK_FD.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

fn slot_state() -> Option<&'static mut StepState> {
    // SAFETY: the step state is only touched by its own thread (handlers of that thread).
    threads::current().map(|s| unsafe { &mut *s.step.get() })
}

/// Whether the calling thread is in the middle of a step.
pub(crate) fn in_step() -> bool {
    slot_state().is_some_and(|s| s.active)
}

/// The signal mask of the program code being stepped (the context's own mask is the
/// step's); `None` when the calling thread is not stepping.
pub(crate) fn program_mask() -> Option<u64> {
    slot_state().filter(|s| s.active).map(|s| s.saved_mask)
}

/// Tag in the high half of a tracer pause's `si_value` (the low half is the generation).
const PAUSE_TAG: u64 = 0x6d6d_696f << 32;

/// The generation a tagged pause value `v` asks to pause, if it is the tracer's.
pub(crate) fn pause_generation(v: u64) -> Option<u32> {
    (v & !0xffff_ffff == PAUSE_TAG).then_some(v as u32)
}

/// Pause handler body: if the pause of `generation` is still live, acknowledge and wait for
/// the release; otherwise (a pause delivered late, after its step ended because the thread
/// had the signal blocked) do nothing.
///
/// The pause signal is `SA_NODEFER` (a thread inside a pause handler must still look
/// unblocked to the next step's scan, or that step would leave it running), so a starved
/// thread can get step g+1's pause while still inside step g's handler. Nested frames
/// that each waited piled up on the alternate stack until it overflowed (one per step);
/// instead, a handler nested in the thread's own pause handler only acknowledges and
/// returns, and the outermost one waits for the newest generation the thread
/// acknowledged.
pub(crate) fn paused(generation: u32) {
    let at = PAUSE_AT.load(Ordering::Acquire);
    if PAUSING.load(Ordering::Acquire) == 0 || at != generation {
        return;
    }
    let Some(b) = threads::current() else {
        ACKS.fetch_add(1, Ordering::AcqRel);
        wait_release(at);
        return;
    };
    b.pause_acked.store(at, Ordering::SeqCst);
    let nested = b.pause_depth.fetch_add(1, Ordering::SeqCst) > 0;
    ACKS.fetch_add(1, Ordering::AcqRel);
    if nested {
        // The outer frame sees `pause_acked` changed when it is about to leave.
        b.pause_depth.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let mut g = at;
    loop {
        wait_release(g);
        b.pause_depth.fetch_sub(1, Ordering::SeqCst);
        // A handler that ran nested before the line above acknowledged a newer step and
        // left the waiting to this frame.
        let newest = b.pause_acked.load(Ordering::SeqCst);
        if newest == g {
            return;
        }
        b.pause_depth.fetch_add(1, Ordering::SeqCst);
        g = newest;
    }
}

/// Waits until the step of generation `g` releases its paused threads.
fn wait_release(g: u32) {
    while RELEASE.load(Ordering::Acquire) == g {
        rsys::futex_wait(&RELEASE, g, 50_000_000);
    }
}

/// Called by every new thread before it runs program code. A pause scan skips threads
/// that have the pause signal blocked, and a thread between `clone` and glibc restoring
/// its signal mask has everything blocked: such a thread must not run program code while
/// the step's page is open (its accesses would go untraced), so it waits here for the
/// step to end. It does not acknowledge: the stepper did not count it.
pub(crate) fn wait_out_step() {
    if PAUSING.load(Ordering::Acquire) == 0 {
        return;
    }
    let at = PAUSE_AT.load(Ordering::Acquire);
    while PAUSING.load(Ordering::Acquire) != 0 && RELEASE.load(Ordering::Acquire) == at {
        rsys::futex_wait(&RELEASE, at, 50_000_000);
    }
}

/// Sends the tagged pause signal for `generation` to thread `tid` (`rt_tgsigqueueinfo`
/// with our own pid as sender, so the handler can tell it from the program's own uses).
fn send_pause(pid: u32, tid: u32, generation: u32) -> isize {
    const SYS_RT_TGSIGQUEUEINFO: usize = 297;
    // siginfo_t: signo, errno, code, pad; then pid, uid, value (the SI_QUEUE layout).
    let mut info = [0u64; 16];
    info[0] = PAUSE_SIGNAL as u32 as u64;
    info[1] = libc::SI_QUEUE as u32 as u64;
    info[2] = pid as u64;
    info[3] = PAUSE_TAG | generation as u64;
    // SAFETY: a valid 128-byte siginfo; signalling a thread of our own process.
    unsafe {
        sys::syscall6(
            SYS_RT_TGSIGQUEUEINFO,
            pid as usize,
            tid as usize,
            PAUSE_SIGNAL as usize,
            info.as_ptr() as usize,
            0,
            0,
        )
    }
}

/// Whether thread `tid` has the pause signal blocked (`SigBlk` in its `status`): it could
/// not answer before the deadline, so the step does not wait for it (glibc's `SIGEV_THREAD`
/// helper thread, for one, blocks every signal for its whole life). Reads without
/// allocating, in small pieces (this may run on a small signal stack).
fn pause_blocked(tid: u32) -> bool {
    let mut path = [0u8; 40];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut t = tid;
    loop {
        digits[d] = b'0' + (t % 10) as u8;
        d += 1;
        t /= 10;
        if t == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    let suffix = b"/status\0";
    path[n..n + suffix.len()].copy_from_slice(suffix);
    let fd = sys::open_read(&path[..n + suffix.len()]);
    if fd < 0 {
        return false;
    }
    let key = b"\nSigBlk:\t";
    let mut buf = [0u8; 256];
    let mut off = 0u64;
    let mut blocked = false;
    loop {
        let r = sys::pread(fd as i32, &mut buf, off);
        if r <= 0 {
            break;
        }
        let got = &buf[..r as usize];
        if let Some(p) = got.windows(key.len()).position(|w| w == key) {
            let hex = &got[p + key.len()..];
            if hex.len() >= 16 {
                // 16 hex digits, signal 64 first: signal 63 is bit 62, in the first digit.
                let first = hex[0];
                let v = match first {
                    b'0'..=b'9' => first - b'0',
                    b'a'..=b'f' => first - b'a' + 10,
                    _ => 0,
                };
                blocked = v & 0x4 != 0;
                break;
            }
            // The value is cut by the buffer's end: read again from the key.
            off += p as u64;
            continue;
        }
        if (r as usize) < buf.len() {
            break;
        }
        off += (buf.len() - key.len()) as u64;
    }
    sys::close(fd as i32);
    blocked
}

/// The kept task directory, rewound for a fresh scan; reopened once if it is missing or
/// unusable (never opened, or the program replaced the descriptor). `None`: unavailable.
/// Only the step owner calls this, so the shared file offset is not raced.
fn task_dir() -> Option<i32> {
    let fd = TASK_FD.load(Ordering::Acquire);
    if fd >= 0 && sys::rewind(fd) == 0 {
        return Some(fd);
    }
    open_task_dir();
    let fd = TASK_FD.load(Ordering::Acquire);
    (fd >= 0 && sys::rewind(fd) == 0).then_some(fd)
}

/// Sends the pause signal to every other thread that can answer; returns how many were
/// signalled, or `None` if the threads cannot be listed (then nobody is paused).
fn pause_others(me: u32, generation: u32) -> Option<u32> {
    let pid = crate::pid();
    let mut sent = 0;
    let fd = task_dir()?;
    // Small: this runs on the signal stack, which may be the program's own small one.
    let mut buf = [0u8; 1024];
    loop {
        let n = sys::getdents64(fd, &mut buf);
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..(off + reclen).min(n as usize)];
            let mut tid = 0u32;
            let mut ok = false;
            for &c in name {
                if c == 0 {
                    break;
                }
                if !c.is_ascii_digit() {
                    ok = false;
                    break;
                }
                tid = tid.wrapping_mul(10).wrapping_add((c - b'0') as u32);
                ok = true;
            }
            if ok && tid != me && !pause_blocked(tid) && send_pause(pid, tid, generation) == 0 {
                sent += 1;
            }
            if reclen == 0 {
                break;
            }
            off += reclen;
        }
    }
    Some(sent)
}

/// Starts stepping the instruction that faulted at `addr` in `r`. `false` if it cannot
/// (the fault is then delivered to the program).
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn begin(
    r: &Region,
    addr: u64,
    decoded: Option<(Instruction, [u8; 16])>,
    uc: *mut libc::c_void,
) -> bool {
    let Some(st) = slot_state() else { return false };
    let me = threads::current().map_or(0, |s| s.tid());
    // The step's event is written before the others are released (see `finish`): the
    // thread's ring is claimed now, since waiting for a free ring while every other thread
    // of the process is paused could wait for ever.
    let _ = threads::current().and_then(|s| s.producer());
    // One step at a time in the process; waiting threads still answer pause requests.
    while STEP_OWNER
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        sys::sched_yield();
    }
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    let mut s = StepState {
        active: true,
        page: addr & !(PAGE - 1),
        pages_len: PAGE,
        addr,
        phys: r.phys_of(addr),
        map_id: r.map_id,
        // A patched site steps its trampoline's copy: the site's address is logged.
        pc: crate::patch::site_of_copy(g[libc::REG_RIP as usize] as u64)
            .unwrap_or(g[libc::REG_RIP as usize] as u64),
        ..Default::default()
    };
    if let Some((instr, bytes)) = &decoded {
        s.opcode = u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]);
        // SAFETY: handler context.
        unsafe { describe(instr, g, uc, r, &mut s) };
    }
    crate::model::before_step(r, s.addr, s.width, s.dir, s.pc);
    // Pause the others before opening anything.
    let generation = RELEASE.load(Ordering::Relaxed);
    PAUSE_AT.store(generation, Ordering::Release);
    ACKS.store(0, Ordering::Release);
    PAUSING.store(1, Ordering::Release);
    // Without a thread list nobody can be paused: the step still has to run (the program
    // must progress), but its access is logged as UNKNOWN and counted, so the trace says
    // that other threads' accesses during it may be missing.
    let sent = match pause_others(me, generation) {
        Some(n) => n,
        None => {
            s.unpaused = true;
            0
        }
    };
    let deadline = sys::now_ns() + 500_000_000;
    while ACKS.load(Ordering::Acquire) < sent && sys::now_ns() < deadline {
        sys::sched_yield();
    }
    // SAFETY: the page belongs to a traced mapping; protection as the program asked.
    unsafe { sys::mprotect(s.page as usize, s.pages_len as usize, r.prot) };
    // No asynchronous handler may run on this thread while the page is open (the pause
    // signal included: only the program's own uses of it could arrive). Synchronous faults
    // stay deliverable, as in HANDLER_MASK: a blocked one would make the kernel force the
    // default action on a fault of the stepped instruction; the tracer's handlers for them
    // end the step before the program's handler runs.
    // SAFETY: handler context.
    let m = unsafe { uc_mask(uc) };
    s.saved_mask = *m;
    *m = HANDLER_MASK | (1u64 << (PAUSE_SIGNAL - 1));
    g[libc::REG_EFL as usize] |= TF;
    *st = s;
    true
}

/// SSE/AVX moves whose value the step path takes from the vector register: before the
/// step for a store, after it for a load (not the masked EVEX forms, which move only
/// some elements).
const VEC_MOVES: [Mnemonic; 28] = [
    Mnemonic::Movdqu,
    Mnemonic::Movdqa,
    Mnemonic::Movups,
    Mnemonic::Movaps,
    Mnemonic::Movupd,
    Mnemonic::Movapd,
    Mnemonic::Movntdq,
    Mnemonic::Movntps,
    Mnemonic::Movntpd,
    Mnemonic::Lddqu,
    Mnemonic::Movq,
    Mnemonic::Movd,
    Mnemonic::Vmovdqu,
    Mnemonic::Vmovdqa,
    Mnemonic::Vmovups,
    Mnemonic::Vmovaps,
    Mnemonic::Vmovupd,
    Mnemonic::Vmovapd,
    Mnemonic::Vmovntdq,
    Mnemonic::Vmovntps,
    Mnemonic::Vmovntpd,
    Mnemonic::Vlddqu,
    Mnemonic::Vmovq,
    Mnemonic::Vmovd,
    Mnemonic::Vmovdqu8,
    Mnemonic::Vmovdqu16,
    Mnemonic::Vmovdqu32,
    Mnemonic::Vmovdqu64,
];

/// What the instruction accesses, as far as the step path logs it.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
unsafe fn describe(
    instr: &Instruction,
    g: &Gregs,
    uc: *mut libc::c_void,
    r: &Region,
    s: &mut StepState,
) {
    let width = instr.memory_size().size();
    if let Some(ea) = emu::effective_address(instr, g) {
        if r.contains(ea) {
            s.addr = ea;
            s.phys = r.phys_of(ea);
        }
    }
    if !(1..=64).contains(&width) || instr.op_count() == 0 {
        return;
    }
    s.width = width as u8;
    if instr.is_string_instruction() {
        describe_string(instr, g, r, s);
        return;
    }
    let plain_move = matches!(
        instr.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movnti | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
    );
    if !plain_move {
        if VEC_MOVES.contains(&instr.mnemonic()) && instr.op_mask() == Register::None {
            if instr.op0_kind() == OpKind::Memory {
                let n = emu::vec_number(instr.op1_register());
                // SAFETY: handler context.
                if let Some(v) = n.and_then(|n| unsafe { emu::vec_reg(uc, n) }) {
                    s.dir = 2;
                    s.vec = n;
                    s.wide = words(&v);
                }
            } else if instr.op1_kind() == OpKind::Memory {
                if let Some(n) = emu::vec_number(instr.op0_register()) {
                    s.dir = 1;
                    s.vec = Some(n);
                }
            }
        }
        return;
    }
    if instr.op0_kind() == OpKind::Memory {
        s.dir = 2;
        s.value = match instr.op1_kind() {
            OpKind::Register => emu::gpr(instr.op1_register()).map_or(0, |r| emu::get_reg(g, r)),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64 => instr.immediate(1),
            _ => {
                s.dir = 0;
                0
            }
        };
    } else if instr.op1_kind() == OpKind::Memory {
        if let Some(d) = emu::gpr(instr.op0_register()) {
            s.dir = 1;
            s.dest = d;
        }
    }
}

/// One element of a string instruction, as far as its value is known before or after
/// the step: `STOS` stores the accumulator, `LODS` loads it, a `MOVS` with one side in
/// ordinary memory copies from or to bytes the tracer can read there. `MOVS` between
/// device addresses, `SCAS` and `CMPS` stay `UNKNOWN` (the value is in no register, and
/// reading the device again is not allowed).
fn describe_string(instr: &Instruction, g: &Gregs, r: &Region, s: &mut StepState) {
    if matches!(instr.memory_segment(), Register::FS | Register::GS) || s.width > 8 {
        return;
    }
    let a32 = [instr.op0_kind(), instr.op1_kind()]
        .iter()
        .any(|k| matches!(k, OpKind::MemorySegESI | OpKind::MemoryESEDI));
    let amask = if a32 { 0xffff_ffff } else { u64::MAX };
    let rsi = g[libc::REG_RSI as usize] as u64 & amask;
    let rdi = g[libc::REG_RDI as usize] as u64 & amask;
    let w = usize::from(s.width);
    let acc = match w {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    // Only the accesses of the faulting region are logged (at the fault's address).
    let traced = |a: u64| regions::find(a).is_some();
    let at = |a: u64, dir: u8, st: &mut StepState| {
        if r.contains(a) {
            st.addr = a;
            st.phys = r.phys_of(a);
            st.dir = dir;
        }
    };
    match instr.mnemonic() {
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => {
            s.value = emu::gpr(acc).map_or(0, |r| emu::get_reg(g, r));
            at(rdi, 2, s);
        }
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => {
            if let Some(d) = emu::gpr(acc) {
                s.dest = d;
                at(rsi, 1, s);
            }
        }
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => {
            match (traced(rsi), traced(rdi)) {
                (true, false) => {
                    // The value is read after the step where it was copied to.
                    s.dest = (0, 0, false);
                    s.value = rdi;
                    at(rsi, 1, s);
                }
                (false, true) => {
                    let mut b = [0u8; 8];
                    // SAFETY: the ordinary bytes the instruction itself is about to read.
                    if unsafe { guard::copy(b.as_mut_ptr() as u64, rsi, w) }.is_ok() {
                        s.value = u64::from_le_bytes(b);
                        at(rdi, 2, s);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// The stepped instruction touched another page of a traced region: open it too.
///
/// # Safety
/// Signal-handler context.
pub(crate) unsafe fn extend(addr: u64) -> bool {
    let Some(st) = slot_state() else { return false };
    let page = addr & !(PAGE - 1);
    if page >= st.page && page < st.page + st.pages_len {
        return false;
    }
    let Some(r) = regions::find(addr) else {
        return false;
    };
    // SAFETY: a traced page; program protection.
    unsafe { sys::mprotect(page as usize, PAGE as usize, r.prot) };
    let lo = st.page.min(page);
    let hi = (st.page + st.pages_len).max(page + PAGE);
    st.page = lo;
    st.pages_len = hi - lo;
    true
}

fn close_and_release(st: &mut StepState, uc: *mut libc::c_void) {
    // SAFETY: re-closing pages the step opened.
    unsafe { sys::mprotect(st.page as usize, st.pages_len as usize, libc::PROT_NONE) };
    // Tracing stopped meanwhile (the recorder is gone): they stay open.
    crate::stop::after_close(st.page, st.pages_len);
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    g[libc::REG_EFL as usize] &= !TF;
    // SAFETY: handler context.
    unsafe { *uc_mask(uc) = st.saved_mask };
    st.active = false;
    PAUSING.store(0, Ordering::Release);
    RELEASE.fetch_add(1, Ordering::AcqRel);
    rsys::futex_wake(&RELEASE);
    STEP_OWNER.store(0, Ordering::Release);
}

/// SIGTRAP after the step: log, close the pages, release the others.
///
/// # Safety
/// Signal-handler context.
pub(crate) unsafe fn finish(uc: *mut libc::c_void) {
    let Some(st) = slot_state() else { return };
    let mut s = *st;
    // SAFETY: handler context.
    let g = unsafe { gregs(uc) };
    if s.dir == 1 && s.vec.is_some() {
        // SAFETY: handler context.
        match s.vec.and_then(|n| unsafe { emu::vec_reg(uc, n) }) {
            Some(v) => s.wide = words(&v),
            None => s.dir = 0,
        }
    } else if s.dir == 1 && s.dest.1 == 0 {
        // A `MOVS` to ordinary memory: its bytes there (`value` is their address).
        let mut b = [0u8; 8];
        let w = usize::from(s.width).min(8);
        // SAFETY: the ordinary bytes the stepped instruction just wrote.
        match unsafe { guard::copy(b.as_mut_ptr() as u64, s.value, w) } {
            Ok(()) => s.value = u64::from_le_bytes(b),
            Err(_) => s.dir = 0,
        }
    } else if s.dir == 1 {
        s.value = emu::get_reg(g, s.dest);
        s.value &= if s.width >= 8 {
            u64::MAX
        } else {
            (1u64 << (s.width * 8)) - 1
        };
    }
    // The event is written before the other threads are released: an access of theirs
    // after the step then has a later timestamp (the log keeps the device's order), and a
    // thread that ends the process (exit_group) right after its release cannot kill this
    // one between its access reaching the device and its event.
    if let Some(shm) = crate::shm() {
        shm.header().slow_steps.fetch_add(1, Ordering::Relaxed);
    }
    if s.unpaused {
        if let Some(shm) = crate::shm() {
            shm.header().unpaused_steps.fetch_add(1, Ordering::Relaxed);
        }
        s.dir = 0;
    }
    let stored = if s.vec.is_some() { s.wide[0] } else { s.value };
    crate::model::after_step(s.map_id, s.addr, s.width, s.dir, stored, s.pc);
    let e = emit::begin();
    match s.dir {
        1 | 2 if s.vec.is_some() => {
            let mut b = [0u8; 64];
            for (c, w) in b.chunks_exact_mut(8).zip(s.wide) {
                c.copy_from_slice(&w.to_le_bytes());
            }
            let n = (s.width as usize).min(64);
            e.access(s.dir == 2, s.addr, s.map_id, &b[..n], s.pc);
        }
        1 | 2 => e.access_value(s.dir == 2, s.addr, s.map_id, s.width, s.value, s.pc),
        _ => e.unknown(s.addr, s.map_id, s.opcode, s.pc),
    }
    close_and_release(st, uc);
}

/// 64 bytes as little-endian words (the step state keeps words: arrays of them have a
/// `Default`).
fn words(v: &[u8; 64]) -> [u64; 8] {
    let mut w = [0u64; 8];
    for (w, c) in w.iter_mut().zip(v.chunks_exact(8)) {
        *w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
    }
    w
}

/// The stepped instruction faulted for real: undo the step; the caller delivers the fault.
///
/// # Safety
/// Signal-handler context.
pub(crate) unsafe fn abort(uc: *mut libc::c_void) {
    if let Some(st) = slot_state() {
        close_and_release(st, uc);
    }
}

/// In a fork child: the step state of threads that do not exist there is void.
pub(crate) fn after_fork_child() {
    STEP_OWNER.store(0, Ordering::Relaxed);
    PAUSING.store(0, Ordering::Relaxed);
    ACKS.store(0, Ordering::Relaxed);
}
