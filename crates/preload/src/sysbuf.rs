//! System calls handed a buffer in traced device memory.
//!
//! The kernel cannot touch a traced page (it is `PROT_NONE`): `read(fd, bar, n)` would
//! fail with `EFAULT` where it succeeds natively. These wrappers hand the kernel the
//! alias of the same device memory instead, so that the kernel touches each byte once,
//! as natively, and log what it read or wrote (`uaccess::record`):
//!
//! * a buffer in one traced region: the same call with the alias address;
//! * a buffer over several pieces (traced and untraced memory, two regions): the vector
//!   form of the call (`readv` for `read`, `preadv` for `pread`, `sendmsg` for `send`...)
//!   with one `iovec` per piece, so that the kernel still makes one transfer; calls with
//!   no vector form write a fixed-size structure (`fstat`, `pipe`, an `ioctl` argument)
//!   into a bounce buffer copied out once on success, or (`getrandom`) run once per piece;
//! * a traced piece without an alias (`--no-alias`, or the driver refused it): the call
//!   gets the program's pointer and fails with `EFAULT` as before (the device memory
//!   cannot be reached without opening its pages to every thread).
//!
//! A piece the program's own protection forbids (a `read` into pages it mapped
//! read-only) fails with `EFAULT`, as natively.
//!
//! The fast path of every wrapper is one comparison against the range of traced
//! addresses; the rest is out of line, so that a call from a small signal stack pays no
//! stack for it.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void};

use libc::{iovec, msghdr, size_t, ssize_t};
use mmio_trace_tracer::regions;
use mmio_trace_tracer::uaccess::{self, Piece, Split, MAX_PIECES};

use super::{real as real_of, resolve, set_errno};

reals!(
    read,
    write,
    pread,
    pread64,
    pwrite,
    pwrite64,
    readv,
    writev,
    preadv,
    preadv64,
    pwritev,
    pwritev64,
    preadv2,
    pwritev2,
    send,
    sendto,
    sendmsg,
    sendmmsg,
    recv,
    recvfrom,
    recvmsg,
    recvmmsg,
    syscall,
    getrandom,
    stat,
    fstat,
    lstat,
    fstatat,
    stat64,
    fstat64,
    lstat64,
    fstatat64,
    statx,
    pipe,
    pipe2,
    socketpair,
    getentropy,
    clock_gettime,
    fread,
    fwrite,
    fread_unlocked,
    fwrite_unlocked,
    readlink,
    readlinkat,
    getcwd,
    uname,
    poll,
    waitpid,
    wait4,
    __read_chk,
    __pread_chk,
    __pread64_chk,
    __recv_chk,
    __recvfrom_chk
);

/// libc's function `$name`, of type `$ty` (the C prototype of that name).
macro_rules! libc_fn {
    ($name:ident as $ty:ty) => {{
        let f: $ty = fn_at(real_of(&real::$name, concat!(stringify!($name), "\0")));
        f
    }};
}

/// The function at `p` (resolved by `dlsym`) as the function pointer type `F`; only
/// [`libc_fn!`] calls it, with the prototype of the function it resolved.
fn fn_at<F: Copy>(p: usize) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    // SAFETY: `F` is a function pointer type of the size of an address, and `p` the
    // address of a function of that type.
    unsafe { std::mem::transmute_copy::<usize, F>(&p) }
}

/// Whether `[p, p + n)` may lie in traced memory (one comparison; false when tracing is
/// off, as nothing is registered then).
#[inline]
fn touches(p: *const c_void, n: usize) -> bool {
    n != 0 && regions::maybe_overlaps(p as u64, n as u64)
}

/// What to hand the kernel for one buffer.
enum Plan {
    /// The program's own pointer (untraced, or nothing better: see the module doc).
    Pass,
    /// `EFAULT`: the program's protection forbids the access.
    Fault,
    /// The alias address of a buffer in one traced piece.
    One(u64),
    /// This many pieces, in the array given to [`plan_for`].
    Many(usize),
}

/// Where `[addr, addr + len)` lies and what the kernel is to be given; `writes`: the
/// kernel writes the buffer (else it reads it). A traced piece without an alias is logged
/// as one the kernel cannot reach by `call`.
fn plan_for(
    call: &str,
    addr: *const c_void,
    len: usize,
    writes: bool,
    pieces: &mut [Piece; MAX_PIECES],
) -> Plan {
    let n = match uaccess::split(addr as u64, len as u64, pieces) {
        Split::Untraced => return Plan::Pass,
        Split::TooMany => {
            if !call.is_empty() {
                uaccess::too_many_pieces(call, addr as u64, len as u64);
            }
            return Plan::Pass;
        }
        Split::Pieces(n) => n,
    };
    let ps = &pieces[..n];
    if ps.iter().any(|p| p.traced() && p.reach == 0) {
        if !call.is_empty() {
            uaccess::unreachable(call, ps);
        }
        return Plan::Pass;
    }
    let need = if writes {
        libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    if ps.iter().any(|p| p.traced() && p.prot & need == 0) {
        return Plan::Fault;
    }
    match ps {
        [p] => Plan::One(p.reach),
        _ => Plan::Many(n),
    }
}

fn fault<T: From<i8>>() -> T {
    set_errno(libc::EFAULT);
    T::from(-1)
}

/// Logs that the kernel accessed the first `done` bytes of `[addr, addr + len)`.
fn record(call: &str, writes: bool, addr: *const c_void, len: usize, done: u64) {
    if done == 0 {
        return;
    }
    let mut pieces = [Piece::default(); MAX_PIECES];
    if let Split::Pieces(n) = uaccess::split(addr as u64, len as u64, &mut pieces) {
        uaccess::record(uaccess::call_index(call), writes, &pieces[..n], done);
    }
}

/// An empty `iovec`, to fill arrays with before use.
const NO_IOV: iovec = iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// A call on one buffer: `direct` with the pointer to hand the kernel, or `vector` with
/// `iovec`s over the pieces. Returns the call's result (bytes transferred or -1).
#[inline(never)]
unsafe fn one_buf(
    call: &str,
    buf: *mut c_void,
    len: usize,
    writes: bool,
    direct: impl FnOnce(*mut c_void) -> ssize_t,
    vector: impl FnOnce(*const iovec, c_int) -> ssize_t,
) -> ssize_t {
    let mut pieces = [Piece::default(); MAX_PIECES];
    let r = match plan_for(call, buf, len, writes, &mut pieces) {
        Plan::Pass => return direct(buf),
        Plan::Fault => return fault(),
        Plan::One(reach) => direct(reach as *mut c_void),
        Plan::Many(n) => {
            let mut iov = [NO_IOV; MAX_PIECES];
            for (v, p) in iov.iter_mut().zip(&pieces[..n]) {
                v.iov_base = p.reach as *mut c_void;
                v.iov_len = p.len as usize;
            }
            vector(iov.as_ptr(), n as c_int)
        }
    };
    if r > 0 {
        record(call, writes, buf, len, r as u64);
    }
    r
}

/// Why an `iovec` array could not be translated.
enum Untranslated {
    Pass,
    Fault,
}

/// The most `iovec`s one call takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// `v` with every traced part replaced by its alias, into `out`; returns the count.
fn expand(call: &str, v: &[iovec], writes: bool, out: &mut [iovec]) -> Result<usize, Untranslated> {
    let mut n = 0;
    let mut pieces = [Piece::default(); MAX_PIECES];
    for e in v {
        let mut push = |base: u64, len: u64| match out.get_mut(n) {
            Some(slot) => {
                slot.iov_base = base as *mut c_void;
                slot.iov_len = len as usize;
                n += 1;
                Ok(())
            }
            None => Err(Untranslated::Pass),
        };
        if !touches(e.iov_base, e.iov_len) {
            push(e.iov_base as u64, e.iov_len as u64)?;
            continue;
        }
        match plan_for(call, e.iov_base, e.iov_len, writes, &mut pieces) {
            Plan::Pass => push(e.iov_base as u64, e.iov_len as u64)?,
            Plan::Fault => return Err(Untranslated::Fault),
            Plan::One(reach) => push(reach, e.iov_len as u64)?,
            Plan::Many(k) => {
                for p in &pieces[..k] {
                    push(p.reach, p.len)?;
                }
            }
        }
    }
    Ok(n)
}

/// Logs the kernel's accesses to the first `done` bytes of the buffers of `v`.
fn record_iov(call: &str, v: &[iovec], writes: bool, mut done: u64) {
    for e in v {
        if done == 0 {
            break;
        }
        let k = (e.iov_len as u64).min(done);
        done -= k;
        if touches(e.iov_base, e.iov_len) {
            record(call, writes, e.iov_base, e.iov_len, k);
        }
    }
}

/// The `iovec` array as a slice (empty when it cannot be one).
///
/// # Safety
/// `iov` null or `cnt` valid entries.
unsafe fn iovs<'a>(iov: *const iovec, cnt: usize) -> &'a [iovec] {
    if iov.is_null() || cnt == 0 || cnt > IOV_MAX {
        &[]
    } else {
        // SAFETY: the caller's array.
        unsafe { std::slice::from_raw_parts(iov, cnt) }
    }
}

/// A vectored call: `f` with the translated array.
///
/// # Safety
/// `iov` null or `cnt` valid entries.
#[inline]
unsafe fn vec_call(
    call: &str,
    iov: *const iovec,
    cnt: c_int,
    writes: bool,
    f: impl FnOnce(*const iovec, c_int) -> ssize_t,
) -> ssize_t {
    // SAFETY: the caller's array.
    let v = unsafe { iovs(iov, cnt.max(0) as usize) };
    if !v.iter().any(|e| touches(e.iov_base, e.iov_len)) {
        return f(iov, cnt);
    }
    vec_slow(call, v, writes, f)
}

#[inline(never)]
fn vec_slow(
    call: &str,
    v: &[iovec],
    writes: bool,
    f: impl FnOnce(*const iovec, c_int) -> ssize_t,
) -> ssize_t {
    let mut out = [NO_IOV; IOV_MAX];
    let r = match expand(call, v, writes, &mut out) {
        Ok(n) => f(out.as_ptr(), n as c_int),
        Err(Untranslated::Fault) => return fault(),
        Err(Untranslated::Pass) => f(v.as_ptr(), v.len() as c_int),
    };
    if r > 0 {
        record_iov(call, v, writes, r as u64);
    }
    r
}

/// A call on a `msghdr`: `f` with a copy whose `iovec`s are translated; what the kernel
/// writes back into the header (`recvmsg`) is copied to the program's.
///
/// # Safety
/// `msg` null or a valid header.
unsafe fn msg_call(
    call: &str,
    msg: *mut msghdr,
    writes: bool,
    f: impl FnOnce(*mut msghdr) -> ssize_t,
) -> ssize_t {
    if msg.is_null() {
        return f(msg);
    }
    // SAFETY: the caller's header and its array.
    let v = unsafe { iovs((*msg).msg_iov, (*msg).msg_iovlen) };
    if !v.iter().any(|e| touches(e.iov_base, e.iov_len)) {
        return f(msg);
    }
    // SAFETY: as above.
    unsafe { msg_slow(call, msg, v, writes, f) }
}

#[inline(never)]
unsafe fn msg_slow(
    call: &str,
    msg: *mut msghdr,
    v: &[iovec],
    writes: bool,
    f: impl FnOnce(*mut msghdr) -> ssize_t,
) -> ssize_t {
    let mut out = [NO_IOV; IOV_MAX];
    // SAFETY: the caller's header.
    let mut m = unsafe { *msg };
    match expand(call, v, writes, &mut out) {
        Ok(n) => {
            m.msg_iov = out.as_mut_ptr();
            m.msg_iovlen = n;
        }
        Err(Untranslated::Fault) => return fault(),
        Err(Untranslated::Pass) => return f(msg),
    }
    let r = f(&mut m);
    // SAFETY: the caller's header: what the kernel updates in it.
    unsafe {
        (*msg).msg_namelen = m.msg_namelen;
        (*msg).msg_controllen = m.msg_controllen;
        (*msg).msg_flags = m.msg_flags;
    }
    if r > 0 {
        record_iov(call, v, writes, r as u64);
    }
    r
}

/// A call that writes into the `size` bytes at `buf`: `f` with the alias, or with a
/// bounce buffer of `N` words whose first `written(r)` bytes are copied out once (a
/// buffer over several pieces that the bounce cannot hold is passed as it is);
/// `written(r)`: how many bytes a call that returned `r` wrote.
///
/// # Safety
/// `buf` as the call takes it.
#[inline]
unsafe fn out_buf<const N: usize, R: Copy + From<i8>>(
    call: &str,
    buf: *mut c_void,
    size: usize,
    f: impl FnOnce(*mut c_void) -> R,
    written: impl Fn(R) -> usize,
) -> R {
    let mut pieces = [Piece::default(); MAX_PIECES];
    let r = match plan_for(call, buf, size, true, &mut pieces) {
        Plan::Pass => return f(buf),
        Plan::Fault => return fault(),
        Plan::One(reach) => f(reach as *mut c_void),
        Plan::Many(_) if size > N * 8 => return f(buf),
        Plan::Many(n) => {
            let mut bounce = [0u64; N];
            let b = bounce.as_mut_ptr() as *mut u8;
            let r = f(b as *mut c_void);
            // SAFETY: the bytes the kernel wrote into the bounce, to where the program's
            // bytes live.
            unsafe { copy_out(b, &pieces[..n], written(r)) };
            r
        }
    };
    record(call, true, buf, size, written(r) as u64);
    r
}

/// A call that writes `size` bytes at `buf` and returns 0 on success (`fstat`, `pipe`).
///
/// # Safety
/// `buf` as the call takes it.
#[inline(never)]
unsafe fn out_struct(
    call: &str,
    buf: *mut c_void,
    size: usize,
    f: impl FnOnce(*mut c_void) -> c_int,
) -> c_int {
    // Every caller's structure fits the bounce (`uname`'s 390 bytes are the largest).
    // SAFETY: the caller's contract.
    unsafe { out_buf::<64, _>(call, buf, size, f, |r| if r == 0 { size } else { 0 }) }
}

macro_rules! one_buf_fn {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($fd:ident: c_int, $buf:ident: $bty:ty, $len:ident: size_t $(, $a:ident: $aty:ty)*)
            writes $writes:expr, vector |$iov:ident, $cnt:ident| $vec:expr;
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int, $buf: $bty, $len: size_t $(, $a: $aty)*) -> ssize_t {
            let f = libc_fn!($name as unsafe extern "C" fn(c_int, $bty, size_t $(, $aty)*) -> ssize_t);
            if !touches($buf as *const c_void, $len) {
                // SAFETY: libc's function with the caller's arguments.
                return unsafe { f($fd, $buf, $len $(, $a)*) };
            }
            // SAFETY: libc's functions with the caller's arguments, the buffer translated.
            unsafe {
                one_buf(
                    stringify!($name),
                    $buf as *mut c_void,
                    $len,
                    $writes,
                    |p| f($fd, p as $bty, $len $(, $a)*),
                    |$iov: *const iovec, $cnt: c_int| $vec,
                )
            }
        }
    )*};
}

/// A header with just the `iovec` array, for the `msghdr` forms of `send`/`recv`.
fn msg_of(iov: *const iovec, cnt: c_int) -> msghdr {
    // SAFETY: zeroed is a valid, empty header.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov as *mut iovec;
    m.msg_iovlen = cnt as usize;
    m
}

type Iov = unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t;
type IovOff = unsafe extern "C" fn(c_int, *const iovec, c_int, libc::off_t) -> ssize_t;
type Msg = unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t;
type MsgMut = unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t;

one_buf_fn! {
    /// Interposed `read`.
    fn read(fd: c_int, buf: *mut c_void, n: size_t)
        writes true, vector |iov, cnt| libc_fn!(readv as Iov)(fd, iov, cnt);
    /// Interposed `write`.
    fn write(fd: c_int, buf: *const c_void, n: size_t)
        writes false, vector |iov, cnt| libc_fn!(writev as Iov)(fd, iov, cnt);
    /// Interposed `pread`.
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: libc::off_t)
        writes true, vector |iov, cnt| libc_fn!(preadv as IovOff)(fd, iov, cnt, off);
    /// Interposed `pread64`.
    fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: libc::off_t)
        writes true, vector |iov, cnt| libc_fn!(preadv as IovOff)(fd, iov, cnt, off);
    /// Interposed `pwrite`.
    fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: libc::off_t)
        writes false, vector |iov, cnt| libc_fn!(pwritev as IovOff)(fd, iov, cnt, off);
    /// Interposed `pwrite64`.
    fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: libc::off_t)
        writes false, vector |iov, cnt| libc_fn!(pwritev as IovOff)(fd, iov, cnt, off);
    /// Interposed `send`.
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int)
        writes false, vector |iov, cnt| libc_fn!(sendmsg as Msg)(fd, &msg_of(iov, cnt), flags);
    /// Interposed `recv`.
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int)
        writes true, vector |iov, cnt| libc_fn!(recvmsg as MsgMut)(fd, &mut msg_of(iov, cnt), flags);
    /// Interposed `sendto`.
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const libc::sockaddr, alen: libc::socklen_t)
        writes false, vector |iov, cnt| {
            let mut m = msg_of(iov, cnt);
            m.msg_name = addr as *mut c_void;
            m.msg_namelen = alen;
            libc_fn!(sendmsg as Msg)(fd, &m, flags)
        };
    /// Interposed `recvfrom`.
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut libc::sockaddr, alen: *mut libc::socklen_t)
        writes true, vector |iov, cnt| {
            let mut m = msg_of(iov, cnt);
            if !addr.is_null() && !alen.is_null() {
                m.msg_name = addr as *mut c_void;
                m.msg_namelen = *alen;
            }
            let r = libc_fn!(recvmsg as MsgMut)(fd, &mut m, flags);
            if r >= 0 && !addr.is_null() && !alen.is_null() {
                *alen = m.msg_namelen;
            }
            r
        };
}

macro_rules! chk_fn {
    ($($(#[$doc:meta])* fn $name:ident => $plain:ident($fd:ident, $buf:ident, $n:ident, $cap:ident $(, $a:ident: $aty:ty)*);)*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int, $buf: *mut c_void, $n: size_t, $cap: size_t $(, $a: $aty)*) -> ssize_t {
            if $n > $cap || !touches($buf, $n) {
                let f = libc_fn!($name as unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t $(, $aty)*) -> ssize_t);
                // SAFETY: libc's checking function (it aborts on an overflow).
                return unsafe { f($fd, $buf, $n, $cap $(, $a)*) };
            }
            // SAFETY: the caller's arguments, checked as libc would.
            unsafe { $plain($fd, $buf, $n $(, $a)*) }
        }
    )*};
}

chk_fn! {
    /// `read` of `_FORTIFY_SOURCE`.
    fn __read_chk => read(fd, buf, n, cap);
    /// `pread` of `_FORTIFY_SOURCE`.
    fn __pread_chk => pread(fd, buf, n, cap, off: libc::off_t);
    /// `pread64` of `_FORTIFY_SOURCE`.
    fn __pread64_chk => pread64(fd, buf, n, cap, off: libc::off_t);
    /// `recv` of `_FORTIFY_SOURCE`.
    fn __recv_chk => recv(fd, buf, n, cap, flags: c_int);
    /// `recvfrom` of `_FORTIFY_SOURCE`.
    fn __recvfrom_chk => recvfrom(fd, buf, n, cap, flags: c_int, addr: *mut libc::sockaddr, alen: *mut libc::socklen_t);
}

macro_rules! iov_fn {
    ($($(#[$doc:meta])* fn $name:ident($($a:ident: $aty:ty),*) writes $writes:expr;)*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, iov: *const iovec, cnt: c_int $(, $a: $aty)*) -> ssize_t {
            let f = libc_fn!($name as unsafe extern "C" fn(c_int, *const iovec, c_int $(, $aty)*) -> ssize_t);
            // SAFETY: libc's function with the caller's arguments, the buffers translated.
            unsafe { vec_call(stringify!($name), iov, cnt, $writes, |v, n| f(fd, v, n $(, $a)*)) }
        }
    )*};
}

iov_fn! {
    /// Interposed `readv`.
    fn readv() writes true;
    /// Interposed `writev`.
    fn writev() writes false;
    /// Interposed `preadv`.
    fn preadv(off: libc::off_t) writes true;
    /// Interposed `preadv64`.
    fn preadv64(off: libc::off_t) writes true;
    /// Interposed `pwritev`.
    fn pwritev(off: libc::off_t) writes false;
    /// Interposed `pwritev64`.
    fn pwritev64(off: libc::off_t) writes false;
    /// Interposed `preadv2`.
    fn preadv2(off: libc::off_t, flags: c_int) writes true;
    /// Interposed `pwritev2`.
    fn pwritev2(off: libc::off_t, flags: c_int) writes false;
}

/// Interposed `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let f = libc_fn!(sendmsg as Msg);
    // SAFETY: libc's function with the caller's arguments, the buffers translated.
    unsafe { msg_call("sendmsg", msg as *mut msghdr, false, |m| f(fd, m, flags)) }
}

/// Interposed `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let f = libc_fn!(recvmsg as MsgMut);
    // SAFETY: as in `sendmsg`.
    unsafe { msg_call("recvmsg", msg, true, |m| f(fd, m, flags)) }
}

/// `sendmmsg`/`recvmmsg`: each message's `iovec`s translated (in an allocated copy:
/// neither call is async-signal-safe), what the kernel writes back copied out.
///
/// # Safety
/// `msgs` null or `vlen` valid messages.
unsafe fn mmsg_call(
    call: &str,
    msgs: *mut libc::mmsghdr,
    vlen: c_uint,
    writes: bool,
    f: impl FnOnce(*mut libc::mmsghdr, c_uint) -> c_int,
) -> c_int {
    if msgs.is_null() || vlen == 0 || vlen as usize > IOV_MAX {
        return f(msgs, vlen);
    }
    // SAFETY: the caller's messages.
    let ms = unsafe { std::slice::from_raw_parts_mut(msgs, vlen as usize) };
    // SAFETY: each message's array.
    let any = ms.iter().any(|m| {
        unsafe { iovs(m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen) }
            .iter()
            .any(|e| touches(e.iov_base, e.iov_len))
    });
    if !any {
        return f(msgs, vlen);
    }
    let mut copies: Vec<libc::mmsghdr> = ms.to_vec();
    let mut backing: Vec<Vec<iovec>> = Vec::with_capacity(ms.len());
    for (c, m) in copies.iter_mut().zip(ms.iter()) {
        // SAFETY: the message's array.
        let v = unsafe { iovs(m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen) };
        let mut out = vec![NO_IOV; IOV_MAX];
        match expand(call, v, writes, &mut out) {
            Ok(n) => out.truncate(n),
            Err(Untranslated::Fault) => return fault(),
            Err(Untranslated::Pass) => return f(msgs, vlen),
        }
        c.msg_hdr.msg_iov = out.as_mut_ptr();
        c.msg_hdr.msg_iovlen = out.len();
        backing.push(out);
    }
    let r = f(copies.as_mut_ptr(), vlen);
    for (i, (c, m)) in copies.iter().zip(ms.iter_mut()).enumerate() {
        if (i as c_int) >= r {
            break;
        }
        m.msg_len = c.msg_len;
        m.msg_hdr.msg_namelen = c.msg_hdr.msg_namelen;
        m.msg_hdr.msg_controllen = c.msg_hdr.msg_controllen;
        m.msg_hdr.msg_flags = c.msg_hdr.msg_flags;
        // SAFETY: the message's array.
        let v = unsafe { iovs(m.msg_hdr.msg_iov, m.msg_hdr.msg_iovlen) };
        record_iov(call, v, writes, c.msg_len as u64);
    }
    drop(backing);
    r
}

/// Interposed `sendmmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    type F = unsafe extern "C" fn(c_int, *mut libc::mmsghdr, c_uint, c_int) -> c_int;
    let f = libc_fn!(sendmmsg as F);
    // SAFETY: libc's function, the buffers translated.
    unsafe { mmsg_call("sendmmsg", msgs, vlen, false, |m, n| f(fd, m, n, flags)) }
}

/// Interposed `recvmmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    type F = unsafe extern "C" fn(
        c_int,
        *mut libc::mmsghdr,
        c_uint,
        c_int,
        *mut libc::timespec,
    ) -> c_int;
    let f = libc_fn!(recvmmsg as F);
    // SAFETY: as in `sendmmsg`.
    unsafe {
        mmsg_call("recvmmsg", msgs, vlen, true, |m, n| {
            f(fd, m, n, flags, timeout)
        })
    }
}

/// Interposed `getrandom`: no vector form, so once per piece (random bytes are random
/// bytes however many calls make them); stops at the first short or failed piece.
#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t {
    type F = unsafe extern "C" fn(*mut c_void, size_t, c_uint) -> ssize_t;
    let f = libc_fn!(getrandom as F);
    if !touches(buf, n) {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { f(buf, n, flags) };
    }
    // SAFETY: as above, the buffer translated.
    unsafe { getrandom_slow(f, buf, n, flags) }
}

#[inline(never)]
unsafe fn getrandom_slow(
    f: unsafe extern "C" fn(*mut c_void, size_t, c_uint) -> ssize_t,
    buf: *mut c_void,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    let mut pieces = [Piece::default(); MAX_PIECES];
    // SAFETY: libc's function with the pieces of the caller's buffer.
    let r = unsafe {
        match plan_for("getrandom", buf, n, true, &mut pieces) {
            Plan::Pass => return f(buf, n, flags),
            Plan::Fault => return fault(),
            Plan::One(reach) => f(reach as *mut c_void, n, flags),
            Plan::Many(k) => {
                let mut done: ssize_t = 0;
                for p in &pieces[..k] {
                    let r = f(p.reach as *mut c_void, p.len as usize, flags);
                    if r < 0 {
                        if done == 0 {
                            return r;
                        }
                        break;
                    }
                    done += r;
                    if (r as u64) < p.len {
                        break;
                    }
                }
                done
            }
        }
    };
    if r > 0 {
        record("getrandom", true, buf, n, r as u64);
    }
    r
}

/// Interposed `getentropy` (glibc's calls its internal `getrandom`): our `getrandom`
/// until the buffer is full, as glibc's does.
#[no_mangle]
pub unsafe extern "C" fn getentropy(buf: *mut c_void, n: size_t) -> c_int {
    if !touches(buf, n) {
        let f = libc_fn!(getentropy as unsafe extern "C" fn(*mut c_void, size_t) -> c_int);
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { f(buf, n) };
    }
    if n > 256 {
        set_errno(libc::EIO);
        return -1;
    }
    let mut done = 0;
    while done < n {
        // SAFETY: the rest of the caller's buffer, through our wrapper.
        let r = unsafe { getrandom((buf as *mut u8).add(done) as *mut c_void, n - done, 0) };
        if r < 0 {
            // SAFETY: this thread's errno.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return -1;
        }
        done += r as usize;
    }
    0
}

/// Interposed `clock_gettime`: the clocks the vDSO serves write the result in user space
/// (into device memory that is a traced store, as any other); the others are system
/// calls, which cannot write a traced page. Those get a local result, stored into the
/// program's memory the way the vDSO stores it (two 8-byte stores, traced accesses).
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> c_int {
    type F = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;
    let f = libc_fn!(clock_gettime as F);
    if !touches(ts as *const c_void, std::mem::size_of::<libc::timespec>()) {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { f(clock, ts) };
    }
    let mut local = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: libc's function with a local result.
    let r = unsafe { f(clock, &mut local) };
    if r == 0 {
        // SAFETY: the caller's result pointer; each store is completed (and logged) by the
        // tracer's fault handler where it lies in a traced page.
        unsafe {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*ts).tv_sec), local.tv_sec);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*ts).tv_nsec), local.tv_nsec);
        }
    }
    r
}

/// A call that writes up to `size` bytes at `buf` and returns how many (`readlink`),
/// through a bounce of up to a page.
///
/// # Safety
/// `buf` as the call takes it.
#[inline(never)]
unsafe fn out_count(
    call: &str,
    buf: *mut c_void,
    size: usize,
    f: impl FnOnce(*mut c_void) -> ssize_t,
) -> ssize_t {
    // SAFETY: the caller's contract.
    unsafe { out_buf::<512, _>(call, buf, size, f, |r| r.max(0) as usize) }
}

/// Copies the first `n` bytes of `b` to the pieces (the alias for traced ones).
///
/// # Safety
/// `b` holds `n` bytes; the pieces are reachable.
unsafe fn copy_out(b: *const u8, pieces: &[Piece], mut n: usize) {
    let mut off = 0;
    for p in pieces {
        let k = (p.len as usize).min(n);
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(b.add(off), p.reach as *mut u8, k) };
        off += k;
        n -= k;
    }
}

/// Copies the pieces' bytes (through the alias for traced ones), in order, into `b`:
/// each device byte is read once.
///
/// # Safety
/// `b` holds the pieces' total length; the pieces are reachable.
unsafe fn copy_in(pieces: &[Piece], b: *mut u8) {
    let mut off = 0;
    for p in pieces {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(p.reach as *const u8, b.add(off), p.len as usize) };
        off += p.len as usize;
    }
}

/// Interposed `getcwd`: a buffer in device memory gets the path through a local one
/// (the kernel's count is not returned by libc's, and reading it back from the device
/// would be a read the native call does not make). `NULL` (allocated by libc) as is.
#[no_mangle]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    type F = unsafe extern "C" fn(*mut c_char, size_t) -> *mut c_char;
    let f = libc_fn!(getcwd as F);
    if buf.is_null() || !touches(buf as *const c_void, size) {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { f(buf, size) };
    }
    let mut pieces = [Piece::default(); MAX_PIECES];
    match plan_for("getcwd", buf as *const c_void, size, true, &mut pieces) {
        // SAFETY: as above.
        Plan::Pass => return unsafe { f(buf, size) },
        Plan::Fault => return fault::<isize>() as *mut c_char,
        _ => {}
    }
    let mut local = [0u8; 4096];
    // SAFETY: libc's function with a local buffer of at most its size.
    let r = unsafe { f(local.as_mut_ptr() as *mut c_char, size.min(local.len())) };
    if r.is_null() {
        return r;
    }
    let n = local
        .iter()
        .position(|&c| c == 0)
        .map_or(local.len(), |z| z + 1);
    // The pieces again, over exactly the bytes written.
    if let Split::Pieces(k) = uaccess::split(buf as u64, n as u64, &mut pieces) {
        // SAFETY: `n` bytes of the local result, to where the program's bytes live.
        unsafe { copy_out(local.as_ptr(), &pieces[..k], n) };
        record("getcwd", true, buf as *const c_void, n, n as u64);
    }
    buf
}

/// Interposed `poll`: an array in device memory is read once into a local copy (logged
/// as the kernel's read) and each entry's `revents` written back once (logged as the
/// kernel's 2-byte writes), as the kernel does.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    type F = unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int;
    let f = libc_fn!(poll as F);
    let size = (n as usize).saturating_mul(8);
    if n as usize > 512 || !touches(fds as *const c_void, size) {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { f(fds, n, timeout) };
    }
    // SAFETY: as above, the array translated.
    unsafe { poll_slow(f, fds, n as usize, timeout) }
}

#[inline(never)]
unsafe fn poll_slow(
    f: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int,
    fds: *mut libc::pollfd,
    n: usize,
    timeout: c_int,
) -> c_int {
    let size = n * 8;
    let mut pieces = [Piece::default(); MAX_PIECES];
    let k = match plan_for("poll", fds as *const c_void, size, true, &mut pieces) {
        // SAFETY: libc's function with the caller's arguments.
        Plan::Pass => return unsafe { f(fds, n as libc::nfds_t, timeout) },
        Plan::Fault => return fault(),
        Plan::One(_) => 1,
        Plan::Many(k) => k,
    };
    let mut local = [libc::pollfd {
        fd: 0,
        events: 0,
        revents: 0,
    }; 512];
    // SAFETY: the program's array (through the alias when traced), read once into a
    // local array of at least its size.
    unsafe { copy_in(&pieces[..k], local.as_mut_ptr() as *mut u8) };
    record("poll", false, fds as *const c_void, size, size as u64);
    // SAFETY: libc's function with the local copy.
    let r = unsafe { f(local.as_mut_ptr(), n as libc::nfds_t, timeout) };
    if r >= 0 {
        for (i, e) in local[..n].iter().enumerate() {
            let at = (fds as u64) + (i * 8 + 6) as u64;
            let mut one = [Piece::default(); MAX_PIECES];
            if let Split::Pieces(m) = uaccess::split(at, 2, &mut one) {
                let v = e.revents.to_ne_bytes();
                // SAFETY: two bytes, to where the program's `revents` lives.
                unsafe { copy_out(v.as_ptr(), &one[..m], 2) };
                uaccess::record(uaccess::call_index("poll"), true, &one[..m], 2);
            } else {
                // SAFETY: untraced memory of the program's array.
                unsafe { std::ptr::write_unaligned(at as *mut i16, e.revents) };
            }
        }
    }
    r
}

macro_rules! wait_fn {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(pid: libc::pid_t, status: *mut c_int, options: c_int $(, $a:ident: $aty:ty)*);
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            pid: libc::pid_t,
            status: *mut c_int,
            options: c_int
            $(, $a: $aty)*
        ) -> libc::pid_t {
            type F = unsafe extern "C" fn(libc::pid_t, *mut c_int, c_int $(, $aty)*) -> libc::pid_t;
            let f = libc_fn!($name as F);
            if status.is_null() || !touches(status as *const c_void, 4) {
                // SAFETY: libc's function with the caller's arguments.
                return unsafe { f(pid, status, options $(, $a)*) };
            }
            // SAFETY: as above, the status translated.
            unsafe { status_call(stringify!($name), status, |s| f(pid, s, options $(, $a)*)) }
        }
    )*};
}

wait_fn! {
    /// Interposed `waitpid`: a status word in device memory is written once, through the
    /// alias, when a child is reported.
    fn waitpid(pid: libc::pid_t, status: *mut c_int, options: c_int);
    /// Interposed `wait4` (its `rusage` as is).
    fn wait4(pid: libc::pid_t, status: *mut c_int, options: c_int, ru: *mut libc::rusage);
}

/// Interposed `wait`.
#[no_mangle]
pub unsafe extern "C" fn wait(status: *mut c_int) -> libc::pid_t {
    // SAFETY: `wait(s)` is `waitpid(-1, s, 0)`.
    unsafe { waitpid(-1, status, 0) }
}

/// A wait call's status word in device memory: through a local word, stored once.
#[inline(never)]
unsafe fn status_call(
    call: &str,
    status: *mut c_int,
    f: impl FnOnce(*mut c_int) -> libc::pid_t,
) -> libc::pid_t {
    let mut pieces = [Piece::default(); MAX_PIECES];
    let k = match plan_for(call, status as *const c_void, 4, true, &mut pieces) {
        // SAFETY: the caller's pointer.
        Plan::Pass => return f(status),
        Plan::Fault => return fault(),
        Plan::One(_) => 1,
        Plan::Many(k) => k,
    };
    let mut local: c_int = 0;
    let r = f(&mut local);
    // The kernel writes the status only when it reports a child.
    if r > 0 {
        let v = local.to_ne_bytes();
        // SAFETY: four bytes, to where the program's status lives.
        unsafe { copy_out(v.as_ptr(), &pieces[..k], 4) };
        uaccess::record(uaccess::call_index(call), true, &pieces[..k], 4);
    }
    r
}

type Stdio = unsafe extern "C" fn(*mut c_void, size_t, size_t, *mut libc::FILE) -> size_t;

macro_rules! stdio_fn {
    ($($(#[$doc:meta])* fn $name:ident writes $writes:expr;)*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(buf: *mut c_void, size: size_t, n: size_t, f: *mut libc::FILE) -> size_t {
            let real = libc_fn!($name as Stdio);
            let total = size.saturating_mul(n);
            if !touches(buf, total) {
                // SAFETY: libc's function with the caller's arguments.
                return unsafe { real(buf, size, n, f) };
            }
            // SAFETY: as above, the buffer handed over in pieces of a local copy.
            unsafe { stdio_slow(stringify!($name), real, $writes, buf, size, n, f) }
        }
    )*};
}

stdio_fn! {
    /// Interposed `fread`: glibc reads a large request straight into the caller's buffer
    /// with its internal `read`, which the kernel cannot do into a traced page.
    fn fread writes true;
    /// Interposed `fread_unlocked`.
    fn fread_unlocked writes true;
    /// Interposed `fwrite`: glibc writes a large request straight from the caller's
    /// buffer.
    fn fwrite writes false;
    /// Interposed `fwrite_unlocked`.
    fn fwrite_unlocked writes false;
}

/// `fread`/`fwrite` of a buffer in device memory, through a local chunk: each device byte
/// is written (read) once, through the alias, and logged as the call's access. The stream
/// sees byte-sized items in order, as libc's own loop over the request does.
#[inline(never)]
unsafe fn stdio_slow(
    call: &str,
    real: Stdio,
    writes: bool,
    buf: *mut c_void,
    size: size_t,
    n: size_t,
    f: *mut libc::FILE,
) -> size_t {
    let total = size * n;
    let mut pieces = [Piece::default(); MAX_PIECES];
    match plan_for(call, buf, total, writes, &mut pieces) {
        // SAFETY: the caller's arguments.
        Plan::Pass => return unsafe { real(buf, size, n, f) },
        Plan::Fault => {
            set_errno(libc::EFAULT);
            return 0;
        }
        _ => {}
    }
    let mut local = [0u64; 2048];
    let b = local.as_mut_ptr() as *mut u8;
    let chunk = local.len() * 8;
    let mut done = 0usize;
    while done < total {
        let want = chunk.min(total - done);
        let at = buf as u64 + done as u64;
        let mut ps = [Piece::default(); MAX_PIECES];
        let k = match uaccess::split(at, want as u64, &mut ps) {
            Split::Pieces(k) => k,
            _ => {
                // Untraced from here on (or too cut up): the rest as the caller asked.
                // SAFETY: the rest of the caller's buffer.
                let r = unsafe {
                    real(
                        (buf as *mut u8).add(done) as *mut c_void,
                        1,
                        total - done,
                        f,
                    )
                };
                done += r;
                break;
            }
        };
        let got = if writes {
            // SAFETY: libc's function with the local chunk.
            let r = unsafe { real(b as *mut c_void, 1, want, f) };
            // SAFETY: the bytes read, to where the program's bytes live.
            unsafe { copy_out(b, &ps[..k], r) };
            uaccess::record(uaccess::call_index(call), true, &ps[..k], r as u64);
            r
        } else {
            // SAFETY: the program's bytes (through the alias when traced), read once into
            // the chunk (`want` bytes at most).
            unsafe { copy_in(&ps[..k], b) };
            uaccess::record(uaccess::call_index(call), false, &ps[..k], want as u64);
            // SAFETY: libc's function with the local chunk.
            unsafe { real(b as *mut c_void, 1, want, f) }
        };
        done += got;
        if got < want {
            break;
        }
    }
    done / size
}

/// Size of `struct stat` (x86-64).
const STAT_SIZE: usize = std::mem::size_of::<libc::stat>();
/// Size of `struct statx`.
const STATX_SIZE: usize = 256;

macro_rules! out_fn {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($a:ident: $aty:ty),*; $buf:ident: $bty:ty; $($b:ident: $bty2:ty),*) -> $ret:ty
            = $via:ident($size:expr, log $log:literal);
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $aty,)* $buf: $bty $(, $b: $bty2)*) -> $ret {
            let f = libc_fn!($name as unsafe extern "C" fn($($aty,)* $bty $(, $bty2)*) -> $ret);
            if !touches($buf as *const c_void, $size) {
                // SAFETY: libc's function with the caller's arguments.
                return unsafe { f($($a,)* $buf $(, $b)*) };
            }
            // SAFETY: as above, the output translated.
            unsafe { $via($log, $buf as *mut c_void, $size, |p| f($($a,)* p as $bty $(, $b)*)) }
        }
    )*};
}

out_fn! {
    /// Interposed `stat`.
    fn stat(path: *const c_char; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "stat");
    /// Interposed `fstat`.
    fn fstat(fd: c_int; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "fstat");
    /// Interposed `lstat`.
    fn lstat(path: *const c_char; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "lstat");
    /// Interposed `stat64`.
    fn stat64(path: *const c_char; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "stat");
    /// Interposed `fstat64`.
    fn fstat64(fd: c_int; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "fstat");
    /// Interposed `lstat64`.
    fn lstat64(path: *const c_char; buf: *mut libc::stat;) -> c_int
        = out_struct(STAT_SIZE, log "lstat");
    /// Interposed `fstatat`.
    fn fstatat(dirfd: c_int, path: *const c_char; buf: *mut libc::stat; flags: c_int) -> c_int
        = out_struct(STAT_SIZE, log "fstatat");
    /// Interposed `fstatat64`.
    fn fstatat64(dirfd: c_int, path: *const c_char; buf: *mut libc::stat; flags: c_int) -> c_int
        = out_struct(STAT_SIZE, log "fstatat");
    /// Interposed `statx`.
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint; buf: *mut c_void;) -> c_int
        = out_struct(STATX_SIZE, log "statx");
    /// Interposed `pipe`.
    fn pipe(; fds: *mut c_int;) -> c_int = out_struct(8, log "pipe");
    /// Interposed `pipe2`.
    fn pipe2(; fds: *mut c_int; flags: c_int) -> c_int = out_struct(8, log "pipe2");
    /// Interposed `socketpair`.
    fn socketpair(domain: c_int, ty: c_int, proto: c_int; sv: *mut c_int;) -> c_int
        = out_struct(8, log "socketpair");
    /// Interposed `uname`.
    fn uname(; buf: *mut libc::utsname;) -> c_int
        = out_struct(std::mem::size_of::<libc::utsname>(), log "uname");
    /// Interposed `readlink`.
    fn readlink(path: *const c_char; buf: *mut c_char; size: size_t) -> ssize_t
        = out_count(size, log "readlink");
    /// Interposed `readlinkat`.
    fn readlinkat(dirfd: c_int, path: *const c_char; buf: *mut c_char; size: size_t) -> ssize_t
        = out_count(size, log "readlinkat");
}

/// The argument of an `ioctl` whose request number encodes its size and direction
/// (`_IOC`): handed to the kernel through the alias, or a bounce buffer filled from the
/// program's bytes and copied back once. Requests without a size (or with a pointer
/// that is not the argument itself) are passed on as they are.
///
/// # Safety
/// libc's `ioctl` at `p`, with the caller's arguments.
pub(crate) unsafe fn ioctl(p: usize, fd: c_int, request: libc::c_ulong, arg: *mut c_void) -> c_int {
    type F = unsafe extern "C" fn(c_int, libc::c_ulong, *mut c_void) -> c_int;
    // SAFETY: libc's ioctl.
    let f = unsafe { std::mem::transmute::<usize, F>(p) };
    let dir = (request >> 30) & 3;
    let size = ((request >> 16) & 0x3fff) as usize;
    if dir == 0 || size == 0 || !touches(arg, size) {
        // SAFETY: the caller's arguments.
        return unsafe { f(fd, request, arg) };
    }
    // SAFETY: as above.
    unsafe { ioctl_slow(f, fd, request, arg, dir, size) }
}

/// `_IOC_WRITE`: the kernel reads the argument; `_IOC_READ`: it writes it.
const IOC_WRITE: libc::c_ulong = 1;
const IOC_READ: libc::c_ulong = 2;

#[inline(never)]
unsafe fn ioctl_slow(
    f: unsafe extern "C" fn(c_int, libc::c_ulong, *mut c_void) -> c_int,
    fd: c_int,
    request: libc::c_ulong,
    arg: *mut c_void,
    dir: libc::c_ulong,
    size: usize,
) -> c_int {
    let mut pieces = [Piece::default(); MAX_PIECES];
    let reads = dir & IOC_WRITE != 0;
    let writes = dir & IOC_READ != 0;
    let mut n = 0;
    for (w, on, call) in [(true, writes, "ioctl"), (false, reads, "")] {
        if !on {
            continue;
        }
        let call = if writes { call } else { "ioctl" };
        match plan_for(call, arg, size, w, &mut pieces) {
            // SAFETY: the caller's arguments.
            Plan::Pass => return unsafe { f(fd, request, arg) },
            Plan::Fault => return fault(),
            Plan::One(_) => n = 1,
            Plan::Many(k) => n = k,
        }
    }
    let r = if n == 1 {
        // SAFETY: the alias of the whole argument.
        unsafe { f(fd, request, pieces[0].reach as *mut c_void) }
    } else {
        let mut bounce = [0u64; 0x4000 / 8];
        let b = bounce.as_mut_ptr() as *mut u8;
        // Filled from the program's bytes only when the kernel reads them (`_IOC_WRITE`),
        // so that the device sees no read the native call would not make; an `_IOR`
        // request's kernel writes the whole argument.
        if reads {
            // SAFETY: the program's bytes (through the alias when traced): each device
            // byte is read once, on the kernel's behalf, into a bounce of `size` bytes.
            unsafe { copy_in(&pieces[..n], b) };
        }
        // SAFETY: the caller's request with a bounce of the size it names.
        let r = unsafe { f(fd, request, b as *mut c_void) };
        if r >= 0 && writes {
            // SAFETY: back to the program's bytes, once.
            unsafe { copy_out(b, &pieces[..n], size) };
        }
        r
    };
    if r >= 0 {
        if reads {
            record("ioctl", false, arg, size, size as u64);
        }
        if writes {
            record("ioctl", true, arg, size, size as u64);
        }
    }
    r
}

const SYS_READ: c_long = 0;
const SYS_WRITE: c_long = 1;
const SYS_STAT: c_long = 4;
const SYS_FSTAT: c_long = 5;
const SYS_LSTAT: c_long = 6;
const SYS_IOCTL: c_long = 16;
const SYS_PREAD64: c_long = 17;
const SYS_PWRITE64: c_long = 18;
const SYS_READV: c_long = 19;
const SYS_WRITEV: c_long = 20;
const SYS_PIPE: c_long = 22;
const SYS_SENDTO: c_long = 44;
const SYS_RECVFROM: c_long = 45;
const SYS_SENDMSG: c_long = 46;
const SYS_RECVMSG: c_long = 47;
const SYS_SOCKETPAIR: c_long = 53;
const SYS_EXECVE: c_long = 59;
const SYS_FUTEX: c_long = 202;
const SYS_NEWFSTATAT: c_long = 262;
const SYS_PIPE2: c_long = 293;
const SYS_PREADV: c_long = 295;
const SYS_PWRITEV: c_long = 296;
const SYS_RECVMMSG: c_long = 299;
const SYS_SENDMMSG: c_long = 307;
const SYS_GETRANDOM: c_long = 318;
const SYS_EXECVEAT: c_long = 322;
const SYS_PREADV2: c_long = 327;
const SYS_PWRITEV2: c_long = 328;
const SYS_STATX: c_long = 332;
const SYS_POLL: c_long = 7;
const SYS_MMAP: c_long = 9;
const SYS_MPROTECT: c_long = 10;
const SYS_MUNMAP: c_long = 11;
const SYS_MREMAP: c_long = 25;
const SYS_SIGALTSTACK: c_long = 131;
const SYS_RT_SIGACTION: c_long = 13;
const SYS_RT_SIGPROCMASK: c_long = 14;
const SYS_WAIT4: c_long = 61;
const SYS_UNAME: c_long = 63;
const SYS_READLINK: c_long = 89;
const SYS_READLINKAT: c_long = 267;

/// Interposed `syscall` (variadic in C; on x86-64 its integer arguments arrive in fixed
/// parameters alike): the numbers of the calls above, `mmap`/`munmap`/`mremap`/`mprotect`/
/// `sigaltstack`/`rt_sigaction`/`rt_sigprocmask` and `execve`/`execveat` go through their wrappers (a device mapped,
/// unmapped or moved by `syscall(SYS_...)` is tracked like one through libc's own calls: a
/// raw munmap must not leave a stale region that anonymous memory mapped there later would
/// be redirected through); `futex` gets the alias of a device word; the rest goes to the
/// kernel as libc's would send it.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> c_long {
    let p = |v: usize| v as *mut c_void;
    // SAFETY: each call's own wrapper with the caller's arguments, reinterpreted as the
    // kernel would.
    unsafe {
        match n {
            // The kernel takes these as (unsigned) longs; the wrappers' C types are what
            // libc passes on.
            SYS_MMAP => crate::mmap(
                p(a1),
                a2,
                a3 as c_int,
                a4 as c_int,
                a5 as c_int,
                a6 as libc::off_t,
            ) as c_long,
            SYS_MUNMAP => crate::munmap(p(a1), a2) as c_long,
            SYS_MPROTECT => crate::mprotect(p(a1), a2, a3 as c_int) as c_long,
            SYS_MREMAP => crate::mremap(p(a1), a2, a3, a4 as c_int, p(a5)) as c_long,
            SYS_RT_SIGACTION => raw_sigaction(
                a1 as c_int,
                a2 as *const KSigaction,
                a3 as *mut KSigaction,
                a4,
            ),
            SYS_RT_SIGPROCMASK => {
                raw_sigprocmask(a1 as c_int, a2 as *const u64, a3 as *mut u64, a4)
            }
            SYS_SIGALTSTACK => {
                crate::sigaltstack(a1 as *const libc::stack_t, a2 as *mut libc::stack_t) as c_long
            }
            SYS_READ => read(a1 as c_int, p(a2), a3) as c_long,
            SYS_WRITE => write(a1 as c_int, p(a2), a3) as c_long,
            SYS_PREAD64 => pread64(a1 as c_int, p(a2), a3, a4 as libc::off_t) as c_long,
            SYS_PWRITE64 => pwrite64(a1 as c_int, p(a2), a3, a4 as libc::off_t) as c_long,
            SYS_READV => readv(a1 as c_int, a2 as *const iovec, a3 as c_int) as c_long,
            SYS_WRITEV => writev(a1 as c_int, a2 as *const iovec, a3 as c_int) as c_long,
            // The kernel's (pos_l, pos_h) pair is one 64-bit offset on x86-64.
            SYS_PREADV => preadv(
                a1 as c_int,
                a2 as *const iovec,
                a3 as c_int,
                a4 as libc::off_t,
            ) as c_long,
            SYS_PWRITEV => pwritev(
                a1 as c_int,
                a2 as *const iovec,
                a3 as c_int,
                a4 as libc::off_t,
            ) as c_long,
            SYS_PREADV2 => preadv2(
                a1 as c_int,
                a2 as *const iovec,
                a3 as c_int,
                a4 as libc::off_t,
                a6 as c_int,
            ) as c_long,
            SYS_PWRITEV2 => pwritev2(
                a1 as c_int,
                a2 as *const iovec,
                a3 as c_int,
                a4 as libc::off_t,
                a6 as c_int,
            ) as c_long,
            SYS_SENDTO => sendto(
                a1 as c_int,
                p(a2),
                a3,
                a4 as c_int,
                a5 as *const libc::sockaddr,
                a6 as libc::socklen_t,
            ) as c_long,
            SYS_RECVFROM => recvfrom(
                a1 as c_int,
                p(a2),
                a3,
                a4 as c_int,
                a5 as *mut libc::sockaddr,
                a6 as *mut libc::socklen_t,
            ) as c_long,
            SYS_SENDMSG => sendmsg(a1 as c_int, a2 as *const msghdr, a3 as c_int) as c_long,
            SYS_RECVMSG => recvmsg(a1 as c_int, a2 as *mut msghdr, a3 as c_int) as c_long,
            SYS_SENDMMSG => sendmmsg(
                a1 as c_int,
                a2 as *mut libc::mmsghdr,
                a3 as c_uint,
                a4 as c_int,
            ) as c_long,
            SYS_RECVMMSG => recvmmsg(
                a1 as c_int,
                a2 as *mut libc::mmsghdr,
                a3 as c_uint,
                a4 as c_int,
                a5 as *mut libc::timespec,
            ) as c_long,
            SYS_STAT => stat(a1 as *const c_char, a2 as *mut libc::stat) as c_long,
            SYS_FSTAT => fstat(a1 as c_int, a2 as *mut libc::stat) as c_long,
            SYS_LSTAT => lstat(a1 as *const c_char, a2 as *mut libc::stat) as c_long,
            SYS_NEWFSTATAT => fstatat(
                a1 as c_int,
                a2 as *const c_char,
                a3 as *mut libc::stat,
                a4 as c_int,
            ) as c_long,
            SYS_STATX => statx(
                a1 as c_int,
                a2 as *const c_char,
                a3 as c_int,
                a4 as c_uint,
                p(a5),
            ) as c_long,
            SYS_PIPE => pipe(a1 as *mut c_int) as c_long,
            SYS_PIPE2 => pipe2(a1 as *mut c_int, a2 as c_int) as c_long,
            SYS_SOCKETPAIR => {
                socketpair(a1 as c_int, a2 as c_int, a3 as c_int, a4 as *mut c_int) as c_long
            }
            SYS_GETRANDOM => getrandom(p(a1), a2, a3 as c_uint) as c_long,
            SYS_IOCTL => super::ioctl(a1 as c_int, a2 as libc::c_ulong, p(a3)) as c_long,
            SYS_EXECVE => super::execve(
                a1 as *const c_char,
                a2 as *const *const c_char,
                a3 as *const *const c_char,
            ) as c_long,
            SYS_EXECVEAT => super::execveat(
                a1 as c_int,
                a2 as *const c_char,
                a3 as *const *const c_char,
                a4 as *const *const c_char,
                a5 as c_int,
            ) as c_long,
            SYS_FUTEX => futex(a1, a2, a3, a4, a5, a6),
            SYS_POLL => poll(a1 as *mut libc::pollfd, a2 as libc::nfds_t, a3 as c_int) as c_long,
            SYS_WAIT4 => wait4(
                a1 as libc::pid_t,
                a2 as *mut c_int,
                a3 as c_int,
                a4 as *mut libc::rusage,
            ) as c_long,
            SYS_UNAME => uname(a1 as *mut libc::utsname) as c_long,
            SYS_READLINK => readlink(a1 as *const c_char, a2 as *mut c_char, a3) as c_long,
            SYS_READLINKAT => {
                readlinkat(a1 as c_int, a2 as *const c_char, a3 as *mut c_char, a4) as c_long
            }
            _ => raw(n, [a1, a2, a3, a4, a5, a6]),
        }
    }
}

/// libc's `syscall` with the caller's arguments: the system call with its conventions
/// (-1 and `errno`), and its behaviour for calls that return twice (a `clone` onto a new
/// stack returns there through libc's `ret`, never into this frame).
fn raw(n: c_long, a: [usize; 6]) -> c_long {
    type F = unsafe extern "C" fn(c_long, usize, usize, usize, usize, usize, usize) -> c_long;
    let f = libc_fn!(syscall as F);
    // SAFETY: the program's own system call, as it asked for it.
    unsafe { f(n, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

const FUTEX_WAIT: usize = 0;
const FUTEX_REQUEUE: usize = 3;
const FUTEX_CMP_REQUEUE: usize = 4;
const FUTEX_WAKE_OP: usize = 5;
const FUTEX_WAIT_BITSET: usize = 9;
const FUTEX_WAIT_REQUEUE_PI: usize = 11;
const FUTEX_CMP_REQUEUE_PI: usize = 12;
const FUTEX_CMD_MASK: usize = 0x7f;

/// `futex` on a device word: the kernel is given the alias (the same memory, so the same
/// key for shared futexes); a wait's or compare's read of the word, and `FUTEX_WAKE_OP`'s
/// read-modify-write of the second one, are logged.
fn futex(uaddr: usize, op: usize, val: usize, t: usize, uaddr2: usize, val3: usize) -> c_long {
    let cmd = op & FUTEX_CMD_MASK;
    let second = matches!(
        cmd,
        FUTEX_REQUEUE
            | FUTEX_CMP_REQUEUE
            | FUTEX_WAKE_OP
            | FUTEX_WAIT_REQUEUE_PI
            | FUTEX_CMP_REQUEUE_PI
    );
    let t1 = touches(uaddr as *const c_void, 4);
    let t2 = second && touches(uaddr2 as *const c_void, 4);
    if !t1 && !t2 {
        return raw(SYS_FUTEX, [uaddr, op, val, t, uaddr2, val3]);
    }
    let alias = |a: usize, on: bool| -> Option<usize> {
        if !on {
            return Some(a);
        }
        let mut pieces = [Piece::default(); MAX_PIECES];
        match plan_for("futex", a as *const c_void, 4, false, &mut pieces) {
            Plan::One(reach) => Some(reach as usize),
            Plan::Fault => None,
            _ => Some(a),
        }
    };
    let (Some(k1), Some(k2)) = (alias(uaddr, t1), alias(uaddr2, t2)) else {
        return fault();
    };
    let r = raw(SYS_FUTEX, [k1, op, val, t, k2, val3]);
    // SAFETY: libc's errno of this thread.
    let e = unsafe { *libc::__errno_location() };
    let compared = r >= 0 || matches!(e, libc::EAGAIN | libc::ETIMEDOUT | libc::EINTR);
    if t1
        && compared
        && matches!(
            cmd,
            FUTEX_WAIT
                | FUTEX_WAIT_BITSET
                | FUTEX_CMP_REQUEUE
                | FUTEX_WAIT_REQUEUE_PI
                | FUTEX_CMP_REQUEUE_PI
        )
    {
        record("futex", false, uaddr as *const c_void, 4, 4);
    }
    if t2 && cmd == FUTEX_WAKE_OP && r >= 0 {
        record("futex", false, uaddr2 as *const c_void, 4, 4);
        record("futex", true, uaddr2 as *const c_void, 4, 4);
    }
    set_errno(e);
    r
}

/// `SA_RESTORER` (x86-64; not exported by the libc crate).
const SA_RESTORER: u64 = 0x0400_0000;

/// The kernel's `struct sigaction` on x86-64 (what `rt_sigaction` takes).
#[repr(C)]
#[derive(Clone, Copy)]
struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// A kernel signal set as libc's (the first 64 signals; the rest empty).
fn libc_set(k: u64) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is the empty set.
    let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset_t is at least 8 bytes, the kernel's set its first 8 (little-endian
    // words of signal bits, as libc keeps them on x86-64).
    unsafe { *(&mut s as *mut libc::sigset_t as *mut u64) = k };
    s
}

/// The first 64 signals of libc's set, as the kernel's.
fn kernel_set(s: &libc::sigset_t) -> u64 {
    // SAFETY: as in `libc_set`.
    unsafe { *(s as *const libc::sigset_t as *const u64) }
}

/// `syscall(SYS_rt_sigaction, ...)` through the interposed `sigaction`: a program that sets
/// its SIGSEGV handler by a raw call must not take the tracer's away.
///
/// # Safety
/// The caller's pointers, as for the system call.
unsafe fn raw_sigaction(
    sig: c_int,
    act: *const KSigaction,
    old: *mut KSigaction,
    size: usize,
) -> c_long {
    if size != 8 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let mut a: Option<libc::sigaction> = None;
    if !act.is_null() {
        // SAFETY: the caller's struct.
        let k = unsafe { *act };
        // SAFETY: all-zero is a valid sigaction.
        let mut s: libc::sigaction = unsafe { std::mem::zeroed() };
        s.sa_sigaction = k.handler;
        s.sa_mask = libc_set(k.mask);
        // libc installs its own restorer (the kernel needs one on x86-64; the program's
        // does the same `rt_sigreturn`).
        s.sa_flags = (k.flags & !SA_RESTORER) as c_int;
        a = Some(s);
    }
    // SAFETY: all-zero is a valid sigaction.
    let mut o: libc::sigaction = unsafe { std::mem::zeroed() };
    let ap = a
        .as_ref()
        .map_or(std::ptr::null(), |a| a as *const libc::sigaction);
    // SAFETY: valid pointers.
    let rc = unsafe { crate::sigaction(sig, ap, &mut o) };
    if rc == 0 && !old.is_null() {
        let k = KSigaction {
            handler: o.sa_sigaction,
            flags: o.sa_flags as u32 as u64,
            restorer: o.sa_restorer.map_or(0, |f| f as usize),
            mask: kernel_set(&o.sa_mask),
        };
        // SAFETY: the caller's struct.
        unsafe { *old = k };
    }
    rc as c_long
}

/// `syscall(SYS_rt_sigprocmask, ...)` through the interposed `sigprocmask` (the tracer's
/// signals stay deliverable).
///
/// # Safety
/// The caller's pointers, as for the system call.
unsafe fn raw_sigprocmask(how: c_int, set: *const u64, old: *mut u64, size: usize) -> c_long {
    if size != 8 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's set.
    let s = (!set.is_null()).then(|| libc_set(unsafe { *set }));
    let mut o = libc_set(0);
    let sp = s
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const libc::sigset_t);
    // SAFETY: valid pointers.
    let rc = unsafe { crate::sigprocmask(how, sp, &mut o) };
    if rc == 0 && !old.is_null() {
        // SAFETY: the caller's set.
        unsafe { *old = kernel_set(&o) };
    }
    rc as c_long
}
