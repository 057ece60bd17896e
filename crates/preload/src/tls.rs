//! The initial-exec TLS slot that holds each thread's tracer block address, for generated
//! code (one `mov reg, fs:[OFFSET]`).
//!
//! Rust's `thread_local!` in a cdylib uses the general-dynamic model (a `__tls_get_addr`
//! call, which may allocate): not something generated code or a signal handler can use.
//! This slot is declared in assembly in `.tbss` and reached through a `@gottpoff` GOT
//! entry, which makes the library initial-exec (static TLS, fine for a library loaded
//! with `LD_PRELOAD` at start): its offset from the thread pointer is fixed at load time.

use core::arch::global_asm;

use mmio_trace_tracer as tracer;

global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".local mmio_trace_block_slot",
    ".type mmio_trace_block_slot, @object",
    ".size mmio_trace_block_slot, 8",
    "mmio_trace_block_slot:",
    ".zero 8",
    ".popsection",
    ".pushsection .text.mmio_trace_tls,\"ax\",@progbits",
    ".p2align 4",
    ".local mmio_trace_set_block_slot",
    ".type mmio_trace_set_block_slot, @function",
    // void set(const void *block): the calling thread's slot = block.
    "mmio_trace_set_block_slot:",
    "movq mmio_trace_block_slot@gottpoff(%rip), %rax",
    "movq %rdi, %fs:(%rax)",
    "ret",
    ".size mmio_trace_set_block_slot, . - mmio_trace_set_block_slot",
    ".p2align 4",
    ".local mmio_trace_block_slot_offset",
    ".type mmio_trace_block_slot_offset, @function",
    // long offset(void): the slot's offset from the thread pointer.
    "mmio_trace_block_slot_offset:",
    "movq mmio_trace_block_slot@gottpoff(%rip), %rax",
    "ret",
    ".size mmio_trace_block_slot_offset, . - mmio_trace_block_slot_offset",
    ".popsection",
    options(att_syntax)
);

extern "C" {
    fn mmio_trace_set_block_slot(block: *const core::ffi::c_void);
    fn mmio_trace_block_slot_offset() -> i64;
}

extern "C" fn set(block: *const tracer::threads::ThreadBlock) {
    // SAFETY: the assembly above: stores into the calling thread's static TLS slot (the
    // tracer calls this only in threads whose FS base is a libc TCB).
    unsafe { mmio_trace_set_block_slot(block.cast()) }
}

/// Registers the slot with the tracer (constructor, before tracing starts).
pub(crate) fn register() {
    tracer::threads::set_tls_publisher(set, mmio_trace_block_tls_offset());
}

/// The offset from the thread pointer of the slot holding the calling thread's tracer
/// block address (`mov rax, fs:[offset]`; 0 in the slot: no block), for code that runs in
/// traced programs (tests; tools that generate code). The block's layout is
/// `mmio_trace_tracer::threads`'s `OFF_*` constants; the slot is written only in threads
/// whose FS base is a libc TCB.
#[no_mangle]
pub extern "C" fn mmio_trace_block_tls_offset() -> i64 {
    // SAFETY: the assembly above: reads the GOT entry the dynamic linker filled.
    unsafe { mmio_trace_block_slot_offset() }
}
