// i_rust DEV: a Rust program, built statically by the test (std, two threads), maps DEV
// and writes and reads a register from its main thread and from a spawned one. Rust's std
// gives every thread a small alternate signal stack (8 KiB and a guard page) for its
// stack-overflow handler: the tracer's fault path must not run on it.
use std::os::unix::io::AsRawFd;

extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: i_rust DEV");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open DEV");
    // SAFETY: a shared read-write mapping of the device file, kept for the process's life.
    let p = unsafe { mmap(std::ptr::null_mut(), 4096, 3, 1, f.as_raw_fd(), 0) } as usize;
    let reg = move |off: usize| (p + off) as *mut u32;
    // SAFETY: inside the mapping.
    let main_read = unsafe {
        reg(0x10).write_volatile(0x1234);
        reg(0x10).read_volatile()
    };
    let t = std::thread::spawn(move || {
        // SAFETY: inside the mapping, which outlives the thread.
        unsafe {
            reg(0x20).write_volatile(7);
            reg(0x20).read_volatile()
        }
    });
    let thread_read = t.join().expect("thread");
    println!("read {main_read:x} thread {thread_read}");
    std::process::exit(3);
}
