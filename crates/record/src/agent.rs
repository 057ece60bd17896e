//! The injected fault-path core: the freestanding agent blob (`crates/agent`, built by this
//! crate's build script), which the inject route maps into a program the preload library
//! cannot reach and then calls.
//!
//! The blob is an ELF static-pie (`ET_DYN`, no interpreter, no needed libraries, no TLS,
//! only `R_X86_64_RELATIVE` relocations) whose entry points are in its dynamic symbol
//! table. The recorder writes the settings (`NAME=VALUE` strings separated by NUL bytes,
//! the variables a preloaded program gets in its environment) into [`PARAMS`], at most
//! [`PARAMS_LEN`] bytes, then calls [`INIT`]`(params, len)`, which returns 0 or `-errno`.

/// The agent blob, as built (an ELF file image), page-aligned: ELF readers want its
/// headers aligned, and a page-aligned image can be copied page by page.
pub static BLOB: &[u8] = &ALIGNED.0;

#[repr(C, align(4096))]
struct Aligned<B: ?Sized>(B);

static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/mmio-trace-agent"
)));

/// `i64 mmio_trace_agent_init(const u8 *params, usize len)`: starts tracing; 0 or
/// `-errno` (`-EINVAL` no recorder named, `-ENOENT` its shared memory unreachable,
/// `-ENOMEM` not mappable, `-EPIPE` the recorder has ended).
pub const INIT: &str = "mmio_trace_agent_init";

/// `u8 mmio_trace_agent_params[PARAMS_LEN]`: where the recorder writes the settings.
pub const PARAMS: &str = "mmio_trace_agent_params";

/// The size of [`PARAMS`].
pub const PARAMS_LEN: usize = 16384;

/// `void mmio_trace_agent_after_mmap(u64 addr, u64 len, i32 prot, i32 flags, i32 fd,
/// i64 off, u64 pc)`: after the program's successful `mmap`.
pub const AFTER_MMAP: &str = "mmio_trace_agent_after_mmap";

/// `void mmio_trace_agent_before_munmap(u64 addr, u64 len, u64 pc)`.
pub const BEFORE_MUNMAP: &str = "mmio_trace_agent_before_munmap";

/// `i64 mmio_trace_agent_mprotect(u64 addr, u64 len, i32 prot)`: the kernel's result
/// when the agent made the call, `i64::MIN` when the caller must make it.
pub const MPROTECT: &str = "mmio_trace_agent_mprotect";

/// `void mmio_trace_agent_after_mremap(u64 old, u64 old_len, u64 new, u64 new_len,
/// u64 pc)`.
pub const AFTER_MREMAP: &str = "mmio_trace_agent_after_mremap";

/// `void mmio_trace_agent_detach_begin(void)`: leaving an attached process, first step
/// (tracing stops, protections back, the helper thread told to end).
pub const DETACH_BEGIN: &str = "mmio_trace_agent_detach_begin";

/// `u64 mmio_trace_agent_busy(void)`: what still runs in the core (low 32 bits, 0:
/// nothing), the helper thread's tid in the high 32 bits while it runs.
pub const BUSY: &str = "mmio_trace_agent_busy";

/// `u64 mmio_trace_agent_thread_busy(u64 pc, u64 sp, u64 rdx)`: leaving, per thread
/// stopped at `pc`, stack pointer `sp`, `rdx` (its registers): 1 while it is inside a
/// handler of the core's; 0 if not (handlers it left with `siglongjmp` are forgotten).
pub const THREAD_BUSY: &str = "mmio_trace_agent_thread_busy";

/// `void mmio_trace_agent_thread_detach(void)`: the calling thread's block given back.
pub const THREAD_DETACH: &str = "mmio_trace_agent_thread_detach";

/// `void mmio_trace_agent_release(u64 memory)`: the program's signal actions back (and,
/// with `memory`, the core's aliases, shared memory and descriptors).
pub const RELEASE: &str = "mmio_trace_agent_release";

/// Every entry point the blob exports (the tests check each is there).
pub const EXPORTS: &[&str] = &[
    INIT,
    PARAMS,
    AFTER_MMAP,
    BEFORE_MUNMAP,
    MPROTECT,
    AFTER_MREMAP,
    "mmio_trace_agent_after_fork_child",
    "mmio_trace_agent_thread_start",
    "mmio_trace_agent_set_spawner",
    "mmio_trace_agent_set_tls_publisher",
    "mmio_trace_agent_mark",
    DETACH_BEGIN,
    BUSY,
    THREAD_BUSY,
    THREAD_DETACH,
    RELEASE,
];
