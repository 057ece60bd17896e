//! Raw system calls made with inline `syscall` instructions (the program's own assembly,
//! a statically linked system-call crate, a runtime of its own): no interposed libc
//! function sees them, so a device `mmap`ed, unmapped, moved or re-protected that way, or
//! a SIGSEGV action set that way, would escape the tracer. At start, the executable and
//! the libraries loaded with it (not glibc's own, whose calls the wrappers see, nor this
//! library) are scanned for `syscall` instructions (`tracer::syscall_sites`), and a
//! seccomp filter sends the memory and signal calls made from exactly those instructions
//! to the tracer as SIGSYS (`tracer::sysemu::install_sites`), as on the inject route.
//! Every other call, from anywhere else, runs untouched; a program without such
//! instructions gets no filter at all.

use std::ffi::{c_void, CStr};

use mmio_trace_tracer::{syscall_sites, sysemu};

/// Objects whose system calls the interposed functions see (glibc and its loader).
fn skipped(name: &[u8]) -> bool {
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    const GLIBC: [&[u8]; 14] = [
        b"libc.so",
        b"ld-linux",
        b"libm.so",
        b"libmvec.so",
        b"libpthread.so",
        b"libdl.so",
        b"librt.so",
        b"libresolv.so",
        b"libutil.so",
        b"libanl.so",
        b"libnss_",
        b"libthread_db.so",
        b"libBrokenLocale.so",
        b"linux-vdso.so",
    ];
    GLIBC.iter().any(|g| base.starts_with(g))
}

unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> i32 {
    // SAFETY: the loader's entry, valid during the callback; `data` is our Vec.
    let (info, sites) = unsafe { (&*info, &mut *(data as *mut Vec<u64>)) };
    let name = if info.dlpi_name.is_null() {
        &b""[..]
    } else {
        // SAFETY: the loader's NUL-terminated name.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    if skipped(name) || info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: the loader's program headers of this object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    // This library itself (its raw calls are the tracer's).
    let me = each as *const () as u64;
    let ours = phdrs.iter().any(|ph| {
        let lo = info.dlpi_addr.wrapping_add(ph.p_vaddr);
        ph.p_type == libc::PT_LOAD && lo <= me && me < lo.wrapping_add(ph.p_memsz)
    });
    if ours {
        return 0;
    }
    for ph in phdrs {
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 || ph.p_memsz == 0 {
            continue;
        }
        let start = info.dlpi_addr.wrapping_add(ph.p_vaddr);
        // SAFETY: a loaded, executable (and so readable) segment of this object; the
        // file part only (the rest is zero fill, no code).
        let code = unsafe {
            std::slice::from_raw_parts(start as *const u8, ph.p_filesz.min(ph.p_memsz) as usize)
        };
        syscall_sites::scan(code, start, &mut |ip| sites.push(ip));
    }
    0
}

/// Scans the loaded objects and, if they hold inline `syscall` instructions, routes the
/// calls made from them to the tracer. Says on stderr when that is not possible (the
/// calls are then not seen).
pub(crate) fn install() {
    let mut sites: Vec<u64> = Vec::new();
    // SAFETY: `each` only reads the loader's entries; `sites` outlives the walk.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut sites as *mut Vec<u64> as *mut c_void) };
    sites.sort_unstable();
    sites.dedup();
    if sites.is_empty() {
        return;
    }
    let why = if sites.len() > sysemu::MAX_SITES {
        format!("{} of them, more than {}", sites.len(), sysemu::MAX_SITES)
    } else {
        match sysemu::install_sites(&sites) {
            Ok(()) => return,
            Err(e) => format!("{e:?}"),
        }
    };
    let prog = std::env::args().next().unwrap_or_default();
    let msg = format!(
        "mmio-trace: warning: {prog} makes system calls with inline `syscall` instructions that cannot be routed to the tracer ({why}): a device mapped that way is not traced; record it with --route inject\n"
    );
    // (Not eprintln!, which panics when stderr is closed: this runs in a constructor.)
    mmio_trace_tracer::sys::write_all(2, msg.as_bytes());
}
