//! The agent's helper threads (the hot-site patcher) without a thread library: a raw
//! `clone` on a stack of our own, with an FS base of its own.
//!
//! The tracer keys per-thread state by FS base, so a helper must not share the creating
//! thread's (as a `clone` without `CLONE_SETTLS` would). Its FS base points into a zeroed
//! page: `%fs:0` reads 0, so the tracer never takes it for a libc TCB (nothing is
//! published in a TLS slot there), and any small offset from it stays in that page. The
//! thread inherits the creating thread's signal mask (the tracer blocks every signal
//! around the spawn). Its memory is given back by [`release_exited`] once it has exited
//! (the kernel clears a word of its first page then: `CLONE_CHILD_CLEARTID`), when the
//! recorder takes the core out of a running process; elsewhere a helper lives as long as
//! the process.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use mmio_trace_tracer::sys;

const PAGE: usize = 4096;

const CLONE_VM: usize = 0x100;
const CLONE_FS: usize = 0x200;
const CLONE_FILES: usize = 0x400;
const CLONE_SIGHAND: usize = 0x800;
const CLONE_THREAD: usize = 0x10000;
const CLONE_SYSVSEM: usize = 0x40000;
const CLONE_SETTLS: usize = 0x80000;
const CLONE_CHILD_CLEARTID: usize = 0x200000;

/// The helpers' memory, for [`release_exited`]: address and length (0: a free entry).
const HELPERS: usize = 8;
static HELPER_MEM: [AtomicUsize; HELPERS] = [const { AtomicUsize::new(0) }; HELPERS];
static HELPER_LEN: [AtomicUsize; HELPERS] = [const { AtomicUsize::new(0) }; HELPERS];

/// Unmaps the memory of every helper thread that has exited (its first word cleared by
/// the kernel after its last use of the stack). Normal context.
pub fn release_exited() {
    for (mem, len) in HELPER_MEM.iter().zip(&HELPER_LEN) {
        let p = mem.load(Ordering::Acquire);
        if p == 0 {
            continue;
        }
        // SAFETY: the first word of the helper's own first page, alive until unmapped here.
        let word = unsafe { &*(p as *const AtomicU32) };
        if word.load(Ordering::Acquire) != 0 || mem.swap(0, Ordering::AcqRel) != p {
            continue;
        }
        // SAFETY: the thread has exited: nothing uses its pages any more.
        unsafe { sys::munmap(p, len.load(Ordering::Relaxed)) };
    }
}

/// A [`mmio_trace_tracer::thread::Spawner`]: starts a thread running `entry(arg)` on a
/// fresh stack of `stack_size` bytes (rounded up to pages); it exits (`SYS_exit`, this
/// thread only) when `entry` returns. Whether the thread started.
///
/// # Safety
/// `entry` must be safe to run on another thread with `arg`, without thread-local
/// storage of any library.
pub unsafe extern "C" fn spawn(entry: extern "C" fn(usize), arg: usize, stack_size: usize) -> bool {
    let stack = (stack_size.max(PAGE) + PAGE - 1) & !(PAGE - 1);
    // One page for the FS base, a guard page, then the stack.
    let len = 2 * PAGE + stack;
    let Some(mem) = sys::map_anon(len) else {
        return false;
    };
    // SAFETY: our own fresh pages; PROT_NONE on the guard page only.
    unsafe { sys::mprotect(mem + PAGE, PAGE, 0) };
    // The word the kernel clears when the thread has exited: non-zero until then.
    // SAFETY: the first word of our fresh page (the FS base's word is at PAGE / 2).
    unsafe { (*(mem as *const AtomicU32)).store(u32::MAX, Ordering::Release) };
    let tls = mem + PAGE / 2;
    let top = (mem + len) & !15;
    // The child pops `entry` and `arg` off its new stack.
    let sp = top - 16;
    // SAFETY: the two words below `top`, inside the new stack.
    unsafe {
        (sp as *mut usize).write(entry as usize);
        ((sp + 8) as *mut usize).write(arg);
    }
    const SYS_CLONE: usize = 56;
    const SYS_EXIT: usize = 60;
    let flags = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_CHILD_CLEARTID;
    let ret: isize;
    // SAFETY: clone(flags, sp, NULL, NULL, tls). The child starts at the next instruction
    // on its own stack with every register as the parent had it but rax = 0; it never
    // returns into this function (it calls `entry`, then exits), so nothing of the
    // parent's frame is used by it. At the `call`, rsp = top (16-byte aligned), as the
    // ABI wants.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "pop rax",
            "pop rdi",
            "xor ebp, ebp",
            "call rax",
            "mov eax, {exit}",
            "xor edi, edi",
            "syscall",
            "ud2",
            "2:",
            exit = const SYS_EXIT,
            inlateout("rax") SYS_CLONE as isize => ret,
            in("rdi") flags,
            in("rsi") sp,
            in("rdx") 0usize,
            in("r10") mem,
            in("r8") tls,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        // SAFETY: the thread never started; the memory is ours alone.
        unsafe { sys::munmap(mem, len) };
        return false;
    }
    for (m, l) in HELPER_MEM.iter().zip(&HELPER_LEN) {
        if m.compare_exchange(0, mem, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            l.store(len, Ordering::Release);
            break;
        }
    }
    true
}
