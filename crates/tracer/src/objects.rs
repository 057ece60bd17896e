//! The loaded objects of the traced process (executable, shared libraries, vDSO), logged
//! as `object` MARKs so that the reading commands can turn a PC into a function offline:
//!
//! `object pid PID 0xSTART-0xEND bias 0xBIAS build HEX|- PATH`
//!
//! `START`..`END` (end exclusive) is the extent of the object's loadable segments, `BIAS`
//! what was added to the file's virtual addresses (a PC's address in the file is
//! `PC - BIAS`), `build` the GNU build id read from the object's note in memory (no file
//! is opened), `PATH` the loader's name for it (`[vdso]` for the vDSO, the executable's
//! from `/proc/self/exe`, a relative one made absolute with the working directory when
//! the object is logged, `?` when unknown or longer than 1848 bytes).
//!
//! When: every object is logged (walking the loader's list with `dl_iterate_phdr`) before
//! the process's first mapping traced by the `mmap` hook and, for objects added since,
//! before each later one (a program that traces its own regions with `trace_region` logs
//! none). A fork child logs its parent's list again under its own pid, from a copy the
//! parent took in its atfork prepare handler: the child of a multi-threaded parent must
//! not take the loader's lock (another thread may have held it at the fork, and the
//! child's copy stays locked forever), so a fork child never walks the list itself (until
//! it execs; an exec'd image logs its own). An object
//! loaded after that (`dlopen`) is logged by the fault handler before the first access
//! whose PC lies in it (`_dl_find_object`, glibc 2.35+, which is lock-free and
//! async-signal-safe; the ELF header and notes are read from the object's own mapped
//! pages). Each object is logged once per process.
//!
//! Without std (the injected agent: no loader to ask, perhaps none at all) the list is
//! the ELF objects `/proc/self/maps` shows (`each_mapped_object`), walked at the same
//! points, also in a fork child (it takes no lock); objects loaded later are logged at
//! the next traced mapping, not by the fault handler.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::{emit, sys, MarkText};

/// Objects remembered as logged: lookups in the fault handler scan them, so the table is
/// small; past it, objects are still logged (perhaps more than once).
const MAX: usize = 256;

/// `[start, end)` of each object logged by this process.
static LOGGED: [(AtomicU64, AtomicU64); MAX] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX];
/// Entries of [`LOGGED`] in use (may run past `MAX`).
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The process [`LOGGED`] belongs to (a fork child starts afresh).
static OWNER: AtomicU32 = AtomicU32::new(0);
/// `dlpi_adds` at the last walk of the loader's list (0: not walked in this process).
static ADDS: AtomicU64 = AtomicU64::new(0);
/// glibc's `_dl_find_object`, where it has one.
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);
/// Set in a fork child: the loader's lock may be held forever there (see the module doc).
static NO_WALK: AtomicBool = AtomicBool::new(false);

/// The parent's objects at its last fork, for the child to log (see [`Snapshot`]).
static SNAP: SnapCell = SnapCell(UnsafeCell::new(Snapshot::EMPTY));
/// Held from a fork's prepare handler to its parent handler (and reset in the child):
/// two threads forking at once take their copies in turn.
static SNAP_LOCK: AtomicBool = AtomicBool::new(false);

/// Objects kept across a fork: at most this many, their names in `NAMES` bytes.
const SNAP_MAX: usize = 128;
const NAMES: usize = 32 << 10;

#[derive(Clone, Copy)]
struct SnapObj {
    start: u64,
    end: u64,
    bias: u64,
    build: [u8; 64],
    build_len: u8,
    name_at: u32,
    name_len: u32,
}

/// A copy of the loader's list taken in normal context, with the names copied in.
struct Snapshot {
    n: usize,
    objs: [SnapObj; SNAP_MAX],
    used: usize,
    names: [u8; NAMES],
}

impl Snapshot {
    const EMPTY: Snapshot = Snapshot {
        n: 0,
        objs: [SnapObj {
            start: 0,
            end: 0,
            bias: 0,
            build: [0; 64],
            build_len: 0,
            name_at: 0,
            name_len: 0,
        }; SNAP_MAX],
        used: 0,
        names: [0; NAMES],
    };
}

struct SnapCell(UnsafeCell<Snapshot>);
// SAFETY: only touched under SNAP_LOCK (or in a fork child, which has one thread).
unsafe impl Sync for SnapCell {}

/// The executable's path (`/proc/self/exe`), read once (the loader names it "").
static EXE: crate::sync::Once<([u8; 1024], usize)> = crate::sync::Once::new();

/// Resolves what the fault handler needs later (normal context: `dlsym` may allocate).
/// Without std there is no loader to ask: the fault handler logs no object (see the
/// module doc).
pub(crate) fn init() {
    #[cfg(feature = "std")]
    {
        // SAFETY: a NUL-terminated name.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
        FIND_OBJECT.store(p as usize, Ordering::Relaxed);
    }
    exe();
}

/// Calls `cb` for each object of the dynamic loader's list (`dl_iterate_phdr`); without
/// std, for each ELF object mapped (`each_mapped_object`).
///
/// # Safety
/// `cb` must be safe to call with any entry the loader passes.
unsafe fn each_object(
    cb: unsafe extern "C" fn(*mut libc::dl_phdr_info, usize, *mut c_void) -> i32,
) {
    #[cfg(feature = "std")]
    // SAFETY: the caller's contract.
    unsafe {
        libc::dl_iterate_phdr(Some(cb), core::ptr::null_mut())
    };
    #[cfg(not(feature = "std"))]
    // SAFETY: the caller's contract.
    unsafe {
        each_mapped_object(cb)
    };
}

/// [`each_object`] without a loader to ask: the ELF objects `/proc/self/maps` shows, each
/// passed as the loader would pass it (bias, program headers, name). An object is a private
/// mapping of a file (or the vDSO) at file offset 0 whose first bytes are an ELF header
/// with a loadable segment at offset 0. Headers and notes are read with
/// `process_vm_readv` first, so a mapping that is not what it seems cannot fault here;
/// shared mappings and files under `/dev` and `/sys` are never read (device memory).
/// Safe in a fork child (no lock is taken), so a child walks its own list.
///
/// # Safety
/// As [`each_object`].
#[cfg(not(feature = "std"))]
unsafe fn each_mapped_object(
    cb: unsafe extern "C" fn(*mut libc::dl_phdr_info, usize, *mut c_void) -> i32,
) {
    use crate::patch::text;
    const MAX_PH: usize = 64;
    for m in text::maps() {
        let name = m.name.as_bytes();
        let file = name.first() == Some(&b'/')
            && !name.starts_with(b"/dev/")
            && !name.starts_with(b"/sys/")
            && !name.ends_with(b" (deleted)");
        if m.offset != 0 || m.perms[0] != b'r' || m.perms[3] != b'p' || !(file || name == b"[vdso]")
        {
            continue;
        }
        // SAFETY: a zeroed ELF header is a valid value; `text::read` fills what it can.
        let mut eh: libc::Elf64_Ehdr = unsafe { core::mem::zeroed() };
        let eh_len = core::mem::size_of::<libc::Elf64_Ehdr>();
        // SAFETY: viewing the header's bytes as a buffer of its size.
        let eh_buf =
            unsafe { core::slice::from_raw_parts_mut((&mut eh as *mut _) as *mut u8, eh_len) };
        if text::read(m.start, eh_buf) != eh_len
            || eh.e_ident[..4] != *b"\x7fELF"
            || !matches!(eh.e_type, libc::ET_EXEC | libc::ET_DYN)
            || usize::from(eh.e_phentsize) != core::mem::size_of::<libc::Elf64_Phdr>()
        {
            continue;
        }
        let n = usize::from(eh.e_phnum).min(MAX_PH);
        // SAFETY: zeroed program headers are valid values.
        let mut ph: [libc::Elf64_Phdr; MAX_PH] = unsafe { core::mem::zeroed() };
        let ph_len = n * core::mem::size_of::<libc::Elf64_Phdr>();
        // SAFETY: viewing the first `n` headers' bytes as a buffer of their size.
        let ph_buf = unsafe { core::slice::from_raw_parts_mut(ph.as_mut_ptr() as *mut u8, ph_len) };
        if text::read(m.start.saturating_add(eh.e_phoff), ph_buf) != ph_len {
            continue;
        }
        let ph = &ph[..n];
        // The bias: where the segment at file offset 0 (this mapping) was put.
        let Some(first) = ph
            .iter()
            .find(|p| p.p_type == libc::PT_LOAD && p.p_offset == 0)
        else {
            continue;
        };
        let bias = m.start.wrapping_sub(first.p_vaddr & !(crate::PAGE - 1));
        // `describe` reads the notes in place: only when they are readable now.
        let notes_readable = ph.iter().filter(|p| p.p_type == libc::PT_NOTE).all(|p| {
            let mut probe = [0u8; 4096];
            let (at, len) = (bias.wrapping_add(p.p_vaddr), p.p_memsz);
            (0..len).step_by(probe.len()).all(|off| {
                let n = (len - off).min(probe.len() as u64) as usize;
                text::read(at.wrapping_add(off), &mut probe[..n]) == n
            })
        });
        if !notes_readable {
            continue;
        }
        let mut cname = alloc::vec::Vec::with_capacity(name.len() + 1);
        cname.extend_from_slice(name);
        cname.push(0);
        // SAFETY: a zeroed `dl_phdr_info` is valid (null pointers, zero counts).
        let mut info: libc::dl_phdr_info = unsafe { core::mem::zeroed() };
        info.dlpi_addr = bias;
        info.dlpi_name = cname.as_ptr().cast();
        info.dlpi_phdr = ph.as_ptr();
        info.dlpi_phnum = n as u16;
        info.dlpi_adds = 1;
        // SAFETY: the entry describes a mapped object whose headers were copied and whose
        // notes are readable; the callback's contract is the caller's.
        if unsafe {
            cb(
                &mut info,
                core::mem::size_of::<libc::dl_phdr_info>(),
                core::ptr::null_mut(),
            )
        } != 0
        {
            break;
        }
    }
}

fn exe() -> &'static [u8] {
    let (b, n) = EXE.get_or_init(|| {
        let mut b = [0u8; 1024];
        let n = sys::readlink(b"/proc/self/exe\0", &mut b);
        (
            b,
            if n > 0 && (n as usize) < b.len() {
                n as usize
            } else {
                0
            },
        )
    });
    &b[..*n]
}

/// Forgets the parent's list in a fork child (its objects are logged again under its pid).
fn own_table() {
    let pid = crate::pid();
    if OWNER.swap(pid, Ordering::Relaxed) != pid {
        COUNT.store(0, Ordering::Relaxed);
        ADDS.store(0, Ordering::Relaxed);
    }
}

fn logged(pc: u64) -> bool {
    let n = COUNT.load(Ordering::Acquire).min(MAX);
    LOGGED[..n].iter().any(|(s, e)| {
        let (s, e) = (s.load(Ordering::Relaxed), e.load(Ordering::Relaxed));
        pc >= s && pc < e
    })
}

fn remember(start: u64, end: u64) {
    let i = COUNT.fetch_add(1, Ordering::AcqRel);
    if let Some((s, e)) = LOGGED.get(i) {
        // End first: a reader seeing the start already sees a non-empty range or none.
        e.store(end, Ordering::Relaxed);
        s.store(start, Ordering::Release);
    }
}

/// One object's MARK.
fn log(start: u64, end: u64, bias: u64, build: Option<&[u8]>, name: &[u8]) {
    let mut t = MarkText::<2048>::empty();
    t.put(b"object pid ");
    t.num(u64::from(crate::pid()), false);
    t.put(b" ");
    t.num(start, true);
    t.put(b"-");
    t.num(end, true);
    t.put(b" bias ");
    t.num(bias, true);
    t.put(b" build ");
    match build {
        Some(id) if !id.is_empty() => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for &b in id {
                t.put(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
        _ => t.put(b"-"),
    }
    t.put(b" ");
    let vdso = sys::auxval(libc::AT_SYSINFO_EHDR).unwrap_or(0);
    let name = if vdso != 0 && vdso >= start && vdso < end {
        &b"[vdso]"[..]
    } else if name.is_empty() {
        exe()
    } else {
        name
    };
    // A relative name (`dlopen("./lib.so")`) is the loader's, relative to the working
    // directory: made absolute with the directory of now.
    let mut cwd = [0u8; 1024];
    let dir = if name.first().is_some_and(|&c| c != b'/' && c != b'[') {
        const SYS_GETCWD: usize = 79;
        // SAFETY: the kernel writes at most `cwd.len()` bytes into our buffer.
        let n =
            unsafe { sys::syscall6(SYS_GETCWD, cwd.as_mut_ptr() as usize, cwd.len(), 0, 0, 0, 0) };
        // The length counts the final NUL; a directory that is gone reads "(unreachable)".
        (n > 1 && cwd[0] == b'/').then(|| &cwd[..n as usize - 1])
    } else {
        None
    };
    let room = 2048 - 200;
    if name.is_empty()
        || name.len() + dir.map_or(0, |d| d.len() + 1) > room
        || (dir.is_none() && !name.starts_with(b"/") && !name.starts_with(b"["))
    {
        // Unknown, or too long to keep whole: a cut path would name another file.
        t.put(b"?");
    } else {
        if let Some(d) = dir {
            t.put(d);
            if d != b"/" {
                t.put(b"/");
            }
        }
        t.put(name);
    }
    emit::mark(t.text());
    remember(start, end);
}

/// The GNU build id in the notes `[p, p+len)` of a mapped object (at most 64 bytes).
///
/// # Safety
/// `[p, p+len)` is mapped readable memory.
unsafe fn build_id(p: u64, len: u64, out: &mut [u8; 64]) -> usize {
    const NT_GNU_BUILD_ID: u32 = 3;
    let mut off = 0u64;
    while off + 12 <= len {
        // SAFETY: within the note segment (the caller's promise), 4-byte aligned fields.
        let (namesz, descsz, ty) = unsafe {
            let h = (p + off) as *const u32;
            (
                h.read_unaligned(),
                h.add(1).read_unaligned(),
                h.add(2).read_unaligned(),
            )
        };
        let name_at = off + 12;
        let desc_at = name_at + u64::from(namesz).div_ceil(4) * 4;
        let next = desc_at + u64::from(descsz).div_ceil(4) * 4;
        if next > len {
            return 0;
        }
        if ty == NT_GNU_BUILD_ID && namesz == 4 {
            // SAFETY: within the note segment.
            let name = unsafe { core::slice::from_raw_parts((p + name_at) as *const u8, 4) };
            if name == b"GNU\0" {
                let n = (descsz as usize).min(out.len());
                // SAFETY: within the note segment.
                let d = unsafe { core::slice::from_raw_parts((p + desc_at) as *const u8, n) };
                out[..n].copy_from_slice(d);
                return n;
            }
        }
        off = next;
    }
    0
}

/// Extent and build id of the object whose program headers are `phdrs`, loaded at `bias`.
///
/// # Safety
/// `phdrs` points at `n` program headers of a loaded object.
unsafe fn describe(
    bias: u64,
    phdrs: *const libc::Elf64_Phdr,
    n: usize,
    id: &mut [u8; 64],
) -> Option<(u64, u64, usize)> {
    // SAFETY: the caller's promise.
    let ph = unsafe { core::slice::from_raw_parts(phdrs, n) };
    let loads = ph.iter().filter(|p| p.p_type == libc::PT_LOAD);
    let lo = loads.clone().map(|p| p.p_vaddr).min()?;
    let hi = loads.map(|p| p.p_vaddr + p.p_memsz).max()?;
    let page = crate::PAGE;
    let (start, end) = (
        bias + (lo & !(page - 1)),
        bias + ((hi + page - 1) & !(page - 1)),
    );
    let mut k = 0;
    for p in ph.iter().filter(|p| p.p_type == libc::PT_NOTE) {
        let at = bias + p.p_vaddr;
        if at < start || at + p.p_memsz > end {
            continue;
        }
        // SAFETY: a note segment inside the object's loaded extent.
        k = unsafe { build_id(at, p.p_memsz, id) };
        if k > 0 {
            break;
        }
    }
    Some((start, end, k))
}

unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, _: *mut c_void) -> i32 {
    // SAFETY: the loader passes a valid entry for the call's duration.
    let i = unsafe { &*info };
    let mut id = [0u8; 64];
    // SAFETY: the loader's program headers of a loaded object.
    let Some((start, end, k)) =
        (unsafe { describe(i.dlpi_addr, i.dlpi_phdr, usize::from(i.dlpi_phnum), &mut id) })
    else {
        return 0;
    };
    ADDS.store(i.dlpi_adds.max(1), Ordering::Relaxed);
    if logged(start) {
        return 0;
    }
    let name = if i.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: the loader's NUL-terminated name.
        unsafe { core::ffi::CStr::from_ptr(i.dlpi_name) }.to_bytes()
    };
    log(start, end, i.dlpi_addr, Some(&id[..k]), name);
    0
}

/// Logs the objects not logged yet by this process. Normal context (takes the loader's
/// lock); allocation-free with std (called from the `mmap` hook, under the program's
/// `malloc`); without std it reads `/proc/self/maps` into the agent's own heap.
pub(crate) fn refresh() {
    // Without std the walk reads /proc/self/maps, which takes no lock a fork could have
    // left held: a fork child walks its own list.
    if !crate::is_active() || (cfg!(feature = "std") && NO_WALK.load(Ordering::Relaxed)) {
        return;
    }
    own_table();
    // SAFETY: a callback that only reads the entries it is passed.
    unsafe { each_object(each) };
}

unsafe extern "C" fn snap_each(info: *mut libc::dl_phdr_info, _: usize, _: *mut c_void) -> i32 {
    // SAFETY: the loader passes a valid entry for the call's duration.
    let i = unsafe { &*info };
    // SAFETY: SNAP_LOCK is ours (the prepare handler took it).
    let snap = unsafe { &mut *SNAP.0.get() };
    if snap.n == SNAP_MAX {
        return 1;
    }
    let mut id = [0u8; 64];
    // SAFETY: the loader's program headers of a loaded object.
    let Some((start, end, k)) =
        (unsafe { describe(i.dlpi_addr, i.dlpi_phdr, usize::from(i.dlpi_phnum), &mut id) })
    else {
        return 0;
    };
    let name = if i.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: the loader's NUL-terminated name.
        unsafe { core::ffi::CStr::from_ptr(i.dlpi_name) }.to_bytes()
    };
    if snap.used + name.len() > NAMES {
        return 1;
    }
    snap.names[snap.used..snap.used + name.len()].copy_from_slice(name);
    snap.objs[snap.n] = SnapObj {
        start,
        end,
        bias: i.dlpi_addr,
        build: id,
        build_len: k as u8,
        name_at: snap.used as u32,
        name_len: name.len() as u32,
    };
    snap.used += name.len();
    snap.n += 1;
    0
}

/// Fork prepare handler (normal context, in the parent): copies the list of a process
/// that has logged its objects, for the child.
pub(crate) fn fork_prepare() {
    while SNAP_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        sys::sched_yield();
    }
    if !crate::is_active() || NO_WALK.load(Ordering::Relaxed) {
        // A fork child forking again keeps the copy it was born with.
        return;
    }
    // SAFETY: under SNAP_LOCK.
    let snap = unsafe { &mut *SNAP.0.get() };
    snap.n = 0;
    snap.used = 0;
    if ADDS.load(Ordering::Relaxed) != 0 && OWNER.load(Ordering::Relaxed) == crate::pid() {
        // SAFETY: a callback that copies what it is passed.
        unsafe { each_object(snap_each) };
    }
}

/// Fork parent handler.
pub(crate) fn fork_parent() {
    SNAP_LOCK.store(false, Ordering::Release);
}

/// Fork child handler (normal context, the child's only thread): logs the parent's
/// objects under the child's pid.
pub(crate) fn fork_child() {
    NO_WALK.store(true, Ordering::Relaxed);
    own_table();
    // SAFETY: the child's only thread; the parent's lock holder was the forking thread.
    let snap = unsafe { &*SNAP.0.get() };
    for o in &snap.objs[..snap.n] {
        let name = &snap.names[o.name_at as usize..(o.name_at + o.name_len) as usize];
        log(
            o.start,
            o.end,
            o.bias,
            Some(&o.build[..o.build_len as usize]),
            name,
        );
    }
    if snap.n > 0 {
        ADDS.store(1, Ordering::Relaxed);
    }
    SNAP_LOCK.store(false, Ordering::Release);
}

/// After `dlclose`: forgets what was logged, so that an object loaded where an unloaded
/// one was is logged (the symbolizer takes a process's latest object at an address). The
/// next traced map logs the list again; the fault handler logs what it meets before.
pub(crate) fn forget() {
    COUNT.store(0, Ordering::Release);
}

/// In the child of any fork (also those that ran no atfork handler): never walk the
/// loader's list here.
pub(crate) fn after_fork_child() {
    NO_WALK.store(true, Ordering::Relaxed);
}

/// Layout of glibc's `struct dl_find_object` (with room for its reserved words).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *const LinkMap,
    eh_frame: *mut c_void,
    reserved: [u64; 16],
}

/// The public head of glibc's `struct link_map`.
#[repr(C)]
struct LinkMap {
    l_addr: u64,
    l_name: *const libc::c_char,
}

/// Fault handler: logs the object holding `pc` if this process has not yet (an object
/// loaded after its last traced mapping). Allocation-free and lock-free; call before the
/// access's event is begun.
pub(crate) fn note_pc(pc: u64) {
    if ADDS.load(Ordering::Relaxed) == 0 && OWNER.load(Ordering::Relaxed) != crate::pid() {
        // A fork child whose parent logged nothing: its first traced mapping will.
        return;
    }
    own_table();
    if logged(pc) {
        return;
    }
    let f = FIND_OBJECT.load(Ordering::Relaxed);
    if f == 0 {
        return;
    }
    // SAFETY: glibc's `int _dl_find_object(void *, struct dl_find_object *)`.
    let find: unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> i32 =
        unsafe { core::mem::transmute(f) };
    let mut r = DlFindObject {
        flags: 0,
        map_start: core::ptr::null_mut(),
        map_end: core::ptr::null_mut(),
        link_map: core::ptr::null(),
        eh_frame: core::ptr::null_mut(),
        reserved: [0; 16],
    };
    // SAFETY: async-signal-safe by glibc's documentation; `r` is large enough.
    if unsafe { find(pc as *mut c_void, &mut r) } != 0 || r.link_map.is_null() {
        return;
    }
    let (mut start, mut end) = (r.map_start as u64, r.map_end as u64);
    // SAFETY: the loader's link map of an object that holds the running code.
    let (bias, name) = unsafe {
        let l = &*r.link_map;
        let name = if l.l_name.is_null() {
            &[][..]
        } else {
            core::ffi::CStr::from_ptr(l.l_name).to_bytes()
        };
        (l.l_addr, name)
    };
    // The program headers, from the ELF header at the start of the first segment: the
    // same extent and build id as the loader's list gives.
    let mut id = [0u8; 64];
    let mut k = 0;
    if end.saturating_sub(start) >= core::mem::size_of::<libc::Elf64_Ehdr>() as u64 {
        // SAFETY: the first bytes of the object's first loaded page.
        let eh = unsafe { &*(start as *const libc::Elf64_Ehdr) };
        let ph_len = u64::from(eh.e_phnum) * core::mem::size_of::<libc::Elf64_Phdr>() as u64;
        let ph_at = start.checked_add(eh.e_phoff).filter(|&a| {
            eh.e_ident[..4] == *b"\x7fELF" && a.checked_add(ph_len).is_some_and(|e| e <= end)
        });
        if let Some(at) = ph_at {
            // SAFETY: headers inside the object's loaded extent.
            let d = unsafe {
                describe(
                    bias,
                    at as *const libc::Elf64_Phdr,
                    usize::from(eh.e_phnum),
                    &mut id,
                )
            };
            if let Some((s, e, n)) = d {
                (start, end, k) = (s, e, n);
            }
        }
    }
    log(start, end, bias, Some(&id[..k]), name);
}
