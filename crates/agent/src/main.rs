//! The injected fault-path core: the tracer (`mmio-trace-tracer` without its `std` feature)
//! linked into one freestanding, position-independent ELF that the recorder maps into a
//! program the preload library cannot reach (static, Go, set-uid) and calls.
//!
//! Freestanding: no libc, no C runtime, no dynamic loader, no thread-local storage. Its
//! only relocations are `R_X86_64_RELATIVE`, which the loader applies; then it runs at
//! any base. Everything it needs from the system it asks the kernel for with raw system
//! calls; memory comes from its own allocator over `mmap` (`tracer::heap`).
//!
//! Entry points (C ABI, exported in `.dynsym`, all `mmio_trace_agent_*`):
//! - [`mmio_trace_agent_init`]`(params, len) -> 0 | -errno`: starts tracing with the
//!   recorder's settings, given as `NAME=VALUE` strings separated by NUL bytes (the same
//!   variables a preloaded program gets in its environment); the recorder writes them into
//!   [`mmio_trace_agent_params`] and passes that address;
//! - the memory-map hooks ([`mmio_trace_agent_after_mmap`] and the others), which the
//!   system-call virtualisation calls around the program's `mmap`, `munmap`, `mprotect`
//!   and `mremap`, as the preload library's wrappers do.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod mem;
mod thread;

use mmio_trace_tracer as tracer;

#[global_allocator]
static HEAP: tracer::heap::Heap = tracer::heap::Heap::new();

/// Size of [`mmio_trace_agent_params`].
pub const PARAMS_LEN: usize = 16384;

/// Where the recorder writes the `NAME=VALUE\0...` settings before calling
/// [`mmio_trace_agent_init`] (through `/proc/PID/mem` or ptrace: the blob has no other
/// memory the recorder knows the address of before the agent runs).
#[no_mangle]
#[used]
pub static mut mmio_trace_agent_params: [u8; PARAMS_LEN] = [0; PARAMS_LEN];

const EINVAL: i64 = 22;
const ENOENT: i64 = 2;
const ENOMEM: i64 = 12;
const EPIPE: i64 = 32;
const EPERM: i64 = 1;
const EBUSY: i64 = 16;

/// Starts tracing in this process: `params[..len]` holds the settings (`NAME=VALUE`
/// strings separated by NUL bytes). Installs the tracer's signal handlers. Returns 0, or
/// `-errno`: `-EINVAL` no recorder named (or `params` null with a length), `-ENOENT` the
/// recorder's shared memory cannot be reached, `-ENOMEM` it cannot be mapped (address
/// space), `-EPIPE` the recorder has ended.
///
/// # Safety
/// `params` must point at `len` readable bytes (or be null with `len` 0). Call once, with
/// the program's other threads stopped, in normal context.
#[no_mangle]
pub unsafe extern "C" fn mmio_trace_agent_init(params: *const u8, len: usize) -> i64 {
    if params.is_null() && len != 0 {
        return -EINVAL;
    }
    let vars = if len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::slice::from_raw_parts(params, len) }
    };
    // Helper threads (the hot-site patcher) by raw clone, unless the runtime registered
    // its own way.
    tracer::thread::set_default_spawner(thread::spawn);
    let attach = tracer::setting(vars, VAR_FILTER) == Some(b"attach");
    // What the program has blocked at its exec stop: the tracer unblocks its own signals
    // for real, the program goes on believing them blocked.
    let mut blocked = 0u64;
    tracer::sys::sigprocmask(0 /* SIG_BLOCK */, Some(&0), Some(&mut blocked));
    if attach {
        tracer::attached::set_attached();
    } else {
        // No TLS slot of ours in this process: trampolines of hot sites find their
        // thread's block by probing the table. Not when attached: leaving would have to
        // unpatch the program's text (and the recorder turns patching off there anyway).
        tracer::threads::enable_table_lookup();
    }
    match tracer::init_from_vars(vars) {
        Ok(()) => {}
        Err(tracer::InitError::NoRecorder) => return -EINVAL,
        Err(tracer::InitError::Unreachable { map_failed: 0 }) => return -ENOENT,
        Err(tracer::InitError::Unreachable { .. }) => return -ENOMEM,
        Err(tracer::InitError::RecorderGone) => return -EPIPE,
    }
    if attach {
        // A running process: no filter (it could never be removed), no exec hook; its
        // device mappings are found in /proc/self/maps, now and every few ms.
        let poll = tracer::setting(vars, tracer::attached::ENV_POLL_MS)
            .and_then(|v| core::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(tracer::attached::DEFAULT_POLL_MS);
        tracer::attached::start(poll);
        return 0;
    }
    // SAFETY: written once here, before the filter can route an exec to the hook.
    unsafe { set_handoff(tracer::setting(vars, tracer::handoff::ENV_HANDOFF).unwrap_or(b"")) };
    // The connection the exec hook asks on: an earlier image's, else one made now, while
    // the program cannot yet have forbidden itself sockets or used up its descriptors.
    let path = handoff_path();
    if let Some(fd) =
        tracer::handoff::find_connection(path).or_else(|| tracer::handoff::connect(path))
    {
        HANDOFF_FD.store(fd, core::sync::atomic::Ordering::Relaxed);
    }
    let (lo, hi) = own_range();
    // At the exec stop no thread has a signal stack of the program's: every one keeps
    // the tracer's, and the program's become virtual.
    tracer::sysemu::set_virtual_altstack(true);
    if tracer::setting(vars, VAR_FILTER) == Some(b"1") {
        if let Err(e) = tracer::sysemu::install(lo, hi, Some(exec_hook)) {
            use tracer::sysemu::InstallError as E;
            return match e {
                E::Range => -EINVAL,
                E::Seccomp(n) | E::NoNewPrivs(n) => -(n as i64),
                E::Tsync(_) => -EBUSY,
            };
        }
    } else {
        // The filter this image inherited exempts the same range (the recorder put the
        // core at the same base).
        tracer::sysemu::set_exec_hook(Some(exec_hook));
        tracer::sysemu::install_handler();
    }
    tracer::sysemu::believe_blocked(blocked);
    0
}

/// Set to `1` by the recorder when this process has no filter yet (its first core): the
/// agent installs it. `0`: an inherited one exempts this core's range already.
/// `attach`: a running process (`record --pid`): no filter at all, see
/// `tracer::attached`.
const VAR_FILTER: &str = "MMIO_TRACE_AGENT_FILTER";

extern "C" {
    /// The first byte of the blob (its ELF header), as the linker places it.
    static __ehdr_start: u8;
    /// The end of the blob's last segment (`.bss` included).
    static _end: u8;
}

/// The blob's own address range, and the page after it, where the recorder's loader puts
/// its return trap and the `syscall` its injected calls run at (`mmio-trace-ptrace`'s
/// image layout): the filter lets system calls made from there through, and memory calls
/// at those addresses (the loader maps that page from outside, after an exec, under the
/// inherited filter and before any handler).
fn own_range() -> (u64, u64) {
    const PAGE: u64 = 4096;
    // Only the addresses of the linker-defined symbols are taken (no read: safe).
    let (lo, end) = (
        core::ptr::addr_of!(__ehdr_start) as u64,
        core::ptr::addr_of!(_end) as u64,
    );
    (lo, ((end + PAGE - 1) & !(PAGE - 1)) + PAGE)
}

/// The kept connection to the recorder's hand-off socket (-1: none; see
/// `tracer::handoff::connect`).
static HANDOFF_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

/// Asks the recorder on the kept connection, else on a connection made for the request.
fn ask(req: tracer::handoff::Request) -> Option<u8> {
    let fd = HANDOFF_FD.load(core::sync::atomic::Ordering::Relaxed);
    let path = handoff_path();
    (fd >= 0)
        .then(|| tracer::handoff::ask_on(fd, path, req))
        .flatten()
        .or_else(|| tracer::handoff::ask(path, req))
}

/// The recorder's hand-off socket (`@name`), as the settings gave it; read by the exec
/// hook in signal context, so kept in a fixed buffer.
static mut HANDOFF: [u8; 108] = [0; 108];
static mut HANDOFF_LEN: usize = 0;

/// # Safety
/// Normal context, before the exec hook can run.
unsafe fn set_handoff(path: &[u8]) {
    let n = path.len().min(107);
    // SAFETY: the caller's contract: nothing reads these meanwhile.
    unsafe {
        let buf = &mut *core::ptr::addr_of_mut!(HANDOFF);
        buf[..n].copy_from_slice(&path[..n]);
        HANDOFF_LEN = n;
    }
}

fn handoff_path() -> &'static [u8] {
    // SAFETY: written once at init, before the hook could run; read-only after.
    let (buf, n): (&'static [u8; 108], usize) =
        unsafe { (&*core::ptr::addr_of!(HANDOFF), HANDOFF_LEN) };
    &buf[..n]
}

/// Around the program's `execve`: the recorder must seize the thread first, so that the
/// new image gets a core at its exec stop (it inherits this process's filter, which
/// would kill it at its first routed call without one). Refused or unanswered, the exec
/// fails with `EPERM` and the program is told why on stderr. After a failed exec the
/// recorder lets the thread go.
fn exec_hook(_call: &tracer::sysemu::ExecCall, failed: Option<isize>) -> isize {
    use tracer::handoff::{Request, SEIZED};
    let tid = tracer::sys::gettid();
    match failed {
        None => match ask(Request::Seize(tid)) {
            Some(SEIZED) => 0,
            _ => {
                tracer::sys::write_all(
                    2,
                    b"mmio-trace: the recorder did not take this process over before its exec: the exec is refused (EPERM)\n",
                );
                -(EPERM as isize)
            }
        },
        Some(_) => {
            let _ = ask(Request::Release(tid));
            0
        }
    }
}

/// Leaving an attached process, first step (every thread stopped by the recorder):
/// tracing stops, every traced page gets the program's protection back, the helper
/// thread is told to end. See `tracer::attached`.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_detach_begin() {
    tracer::attached::detach_begin();
}

/// What still runs in the core (0: nothing; see `tracer::attached::busy`), and in the
/// upper 32 bits the helper thread's tid while it runs.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_busy() -> u64 {
    tracer::attached::busy() | (tracer::attached::poller_tid() as u64) << 32
}

/// Leaving an attached process, per thread, called in the thread the recorder stopped at
/// `pc` with stack pointer `sp` and `rdx` in its third argument register: 1 while it is
/// inside a handler of the core's, else 0 (a handler a program handler left with
/// `siglongjmp` no longer counts; see `tracer::attached::thread_busy`).
///
/// # Safety
/// The three values must be the stopped thread's own.
#[no_mangle]
pub unsafe extern "C" fn mmio_trace_agent_thread_busy(pc: u64, sp: u64, rdx: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { tracer::attached::thread_busy(pc, sp, rdx) }
}

/// Leaving an attached process, per thread (once [`mmio_trace_agent_busy`] said 0): the
/// calling thread's ring, alternate signal stack (when it is still the tracer's) and
/// out-of-line area are given back.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_thread_detach() {
    tracer::threads::thread_exiting();
}

/// Leaving an attached process, last step: the program's signal actions back; with
/// `memory` non-zero (only once [`mmio_trace_agent_busy`] said 0, after each thread's
/// [`mmio_trace_agent_thread_detach`]) the aliases, the shared memory, the descriptors
/// and the core's own memory (its heap, its exited helper threads' stacks) too.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_release(memory: u64) {
    tracer::attached::release(memory != 0);
    if memory != 0 {
        // The core's own memory too: its helper thread has ended (the recorder saw it
        // gone) and nothing of the heap is used again (the image is unmapped next).
        thread::release_exited();
        // SAFETY: as said; every other thread is stopped outside the core.
        unsafe { HEAP.release_all() };
    }
}

/// After the program's successful `mmap` (see `tracer::after_mmap`): traces it if it is a
/// shared mapping of a device.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_after_mmap(
    addr: u64,
    len: u64,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
    pc: u64,
) {
    tracer::after_mmap(addr, len, prot, flags, fd, off, pc);
}

/// Before the program's `munmap` (see `tracer::before_munmap`).
#[no_mangle]
pub extern "C" fn mmio_trace_agent_before_munmap(addr: u64, len: u64, pc: u64) {
    tracer::before_munmap(addr, len, pc);
}

/// The program's `mprotect` (see `tracer::mprotect`): the kernel's result when the tracer
/// did the call itself (the range holds traced pages), else `i64::MIN`: the caller makes
/// the call.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_mprotect(addr: u64, len: u64, prot: i32) -> i64 {
    tracer::mprotect(addr, len, prot).map_or(i64::MIN, |r| r as i64)
}

/// After the program's successful `mremap` (see `tracer::after_mremap`).
#[no_mangle]
pub extern "C" fn mmio_trace_agent_after_mremap(
    old: u64,
    old_len: u64,
    new: u64,
    new_len: u64,
    pc: u64,
) {
    tracer::after_mremap(old, old_len, new, new_len, pc);
}

/// In a fork child, first thing (see `tracer::after_fork_child`).
#[no_mangle]
pub extern "C" fn mmio_trace_agent_after_fork_child() {
    tracer::after_fork_child();
    tracer::after_fork_child_started();
}

/// A new thread's first call (its per-thread block and alternate signal stack).
#[no_mangle]
pub extern "C" fn mmio_trace_agent_thread_start() {
    tracer::signals::thread_start();
}

/// Registers how the agent starts a helper thread (the hot-site patcher); see
/// `tracer::thread::Spawner`. Without it, a raw `clone` of the agent's own (registered by
/// [`mmio_trace_agent_init`]).
#[no_mangle]
pub extern "C" fn mmio_trace_agent_set_spawner(f: tracer::thread::Spawner) {
    tracer::thread::set_spawner(f);
}

/// Registers where generated code (hot-site trampolines) finds the calling thread's block:
/// `publish` stores it in a TLS slot at `offset` from the thread pointer (see
/// `tracer::threads::set_tls_publisher`). Without one, no site is patched.
#[no_mangle]
pub extern "C" fn mmio_trace_agent_set_tls_publisher(
    publish: extern "C" fn(*const tracer::threads::ThreadBlock),
    offset: i64,
) {
    tracer::threads::set_tls_publisher(publish, offset);
}

/// A `MARK` with `text[..len]` in the calling thread's stream.
///
/// # Safety
/// `text` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn mmio_trace_agent_mark(text: *const u8, len: usize) {
    if !text.is_null() {
        // SAFETY: the caller's contract.
        tracer::mark(unsafe { core::slice::from_raw_parts(text, len) });
    }
}

/// A panic in the agent: said on stderr, then the process exits (no unwinding exists;
/// continuing could lose or forge events). Status 134, as an abort.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut buf = Buf([0; 512], 0);
    let _ = core::fmt::write(&mut buf, format_args!("mmio-trace agent: panic: {info}\n"));
    tracer::sys::write_all(2, &buf.0[..buf.1]);
    const SYS_EXIT_GROUP: usize = 231;
    loop {
        // SAFETY: exit_group ends the process; it takes no pointers.
        unsafe { tracer::sys::syscall6(SYS_EXIT_GROUP, 134, 0, 0, 0, 0, 0) };
    }
}

/// Referenced by landing pads in the precompiled `core`/`alloc` (built to unwind), never
/// called: every panic aborts (above), so no unwinding ever starts.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    panic!("unwinding in the agent")
}

/// As [`_Unwind_Resume`]: the personality routine the precompiled crates' unwind tables
/// name, never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// A fixed buffer `core::fmt` writes into (truncating: the message is best effort).
struct Buf([u8; 512], usize);

impl core::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}
