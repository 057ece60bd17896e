//! Loading a freestanding ELF static-pie blob into a stopped tracee.
//!
//! The blob is what `cc -nostdlib -static-pie` (or a `no_std` Rust `cdylib`/static-pie) makes:
//! ET_DYN, no interpreter, no libraries, no TLS, only `R_X86_64_RELATIVE` relocations (RELA
//! or RELR), entry points exported in `.dynsym`. [`Blob::parse`] checks all of that and
//! computes the final layout; [`Process::load_image`] maps it:
//!
//! - one injected anonymous `mmap` reserves the whole span, `PROT_NONE` (at a chosen base with
//!   `MAP_FIXED_NOREPLACE`, or where the kernel likes);
//! - one injected anonymous `MAP_FIXED` `mmap` per run of pages with the same protections,
//!   with their **final** protections at once (never writable and executable, never changed
//!   later: systemd's `MemoryDenyWriteExecute` forbids a W→X `mprotect`, and the mmio-trace
//!   seccomp filter traps `mprotect` from outside the blob). `PT_GNU_RELRO` pages are mapped
//!   read-only from the start;
//! - the contents, already relocated in the recorder's memory, are written through
//!   `/proc/PID/mem`, which writes read-only pages too (the kernel's `FOLL_FORCE`); `.bss` is
//!   the anonymous memory's zeros;
//! - a last page, read+execute, holds `int3` bytes: [`Image::trap`], the return address of
//!   [`Process::call`](crate::Process::call); and a `syscall` instruction, where the
//!   injected system calls run during the load once it is there, and afterwards at
//!   [`Image::syscall`] (inside the image, which a seccomp filter can exempt).
//!
//! Only anonymous mappings are made, so a seccomp filter that lets anonymous `mmap` through
//! does not get in the way; if loading fails half-way, the reservation is unmapped again.

use std::collections::HashMap;

use crate::{Error, Pid, Process, Result, SyscallSite};

const PAGE: u64 = 4096;
/// Largest span accepted (the agent spans a few MiB): bounds the loader's own memory.
const MAX_SPAN: u64 = 1 << 32;
/// Offset of the `syscall` instruction in the trap page.
const TRAP_SYSCALL: u64 = 16;
/// The trap page's code: `int3` x16 (the return address of calls), then `syscall; int3`.
const TRAP_CODE: [u8; 19] = [
    0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
    0x0f, 0x05, 0xcc,
];

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;
const PT_GNU_RELRO: u32 = 0x6474_e552;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_PLTRELSZ: i64 = 2;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_RELAENT: i64 = 9;
const DT_STRSZ: i64 = 10;
const DT_SYMENT: i64 = 11;
const DT_INIT: i64 = 12;
const DT_REL: i64 = 17;
const DT_RELSZ: i64 = 18;
const DT_JMPREL: i64 = 23;
const DT_INIT_ARRAYSZ: i64 = 27;
const DT_PREINIT_ARRAYSZ: i64 = 33;
const DT_RELRSZ: i64 = 35;
const DT_RELR: i64 = 36;
const DT_RELRENT: i64 = 37;
const DT_GNU_HASH: i64 = 0x6fff_fef5;

const R_X86_64_NONE: u32 = 0;
const R_X86_64_RELATIVE: u32 = 8;

const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;

/// A run of pages of a loaded image with one set of protections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Start address in the tracee (page-aligned).
    pub addr: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
    /// `PROT_*` bits, never both `PROT_WRITE` and `PROT_EXEC`.
    pub prot: i32,
}

/// A validated blob: its layout relative to its load base, relocations applied for base 0,
/// and its dynamic symbols. Made by [`Blob::parse`]; [`Process::load_image`] parses for
/// itself, so this is for checking a blob early (e.g. when a program embeds it).
#[derive(Clone, Debug)]
pub struct Blob {
    /// Span in bytes, including the trailing trap page.
    span: u64,
    /// Page runs relative to the base (the trap page last).
    segments: Vec<Segment>,
    /// Bytes to write at offsets from the base (file contents), base 0.
    contents: Vec<(u64, Vec<u8>)>,
    /// Offsets from the base of 64-bit words to which the base must be added.
    relocs: Vec<u64>,
    symbols: HashMap<String, u64>,
    entry: u64,
    /// Offset of the first `0f 05` (`syscall`) in an executable segment's contents.
    text_syscall: Option<u64>,
}

/// A blob loaded into a tracee by [`Process::load_image`].
#[derive(Clone, Debug)]
pub struct Image {
    /// Where it starts (page-aligned; the ELF's virtual address 0).
    pub base: u64,
    /// Length of the whole span in bytes (`base..base + len`: every segment, the unmapped
    /// gaps between them, reserved `PROT_NONE`, and the trap page).
    pub len: u64,
    /// The mappings, in address order, with their protections (gaps not included).
    pub segments: Vec<Segment>,
    /// Address of an `int3` in the image's last page (read+execute): a return address that
    /// stops the calling thread with SIGTRAP.
    pub trap: u64,
    /// Address of a `syscall` instruction of the image: the first `0f 05` bytes of its
    /// executable segments (so inside the blob's own `__ehdr_start.._end` range), else one
    /// in the trap page. Loading makes it the process's
    /// [`SyscallSite`](crate::SyscallSite), so later injected system calls run inside the
    /// image (which a seccomp filter may exempt); unloading goes back to
    /// [`SyscallSite::Auto`](crate::SyscallSite::Auto), and so does an exec.
    pub syscall: u64,
    /// The ELF entry point (`e_entry`), relocated.
    pub entry: u64,
    symbols: HashMap<String, u64>,
}

impl Image {
    /// Address of the defined dynamic symbol `name` (`.dynsym`), relocated.
    pub fn sym(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|o| self.base + o)
    }

    /// Every defined dynamic symbol with its address.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.symbols
            .iter()
            .map(|(n, o)| (n.as_str(), self.base + o))
    }

    /// True if `addr` lies in the image's span.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }
}

/// A blob's memory image relocated for one base, in a sealed memfd of this process: a
/// process maps its segments from the file ([`Process::load_blob_mapped`]) instead of
/// having its contents written into fresh pages each time; the pages are then the page
/// cache's, shared by every process that maps them (written ones copied on write).
#[derive(Debug)]
pub struct ImageFile {
    fd: std::os::fd::OwnedFd,
    base: u64,
    span: u64,
}

impl ImageFile {
    /// The base the contents are relocated for.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The path another process opens it by (`/proc/PID/fd/N` of this process).
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }
}

/// How [`Process::load_image`] places the blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Load exactly here (page-aligned), failing if anything is mapped in the span
    /// (`MAP_FIXED_NOREPLACE`): e.g. after an exec, to put the blob where it was before.
    /// `None`: where the kernel chooses.
    pub base: Option<u64>,
}

fn bad(why: impl Into<String>) -> Error {
    Error::Image { why: why.into() }
}

/// Little-endian reads that fail cleanly on a truncated file.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn slice(&self, off: u64, len: u64, what: &str) -> Result<&[u8]> {
        let end = off.checked_add(len).filter(|&e| e <= self.0.len() as u64);
        match end {
            Some(e) => Ok(&self.0[off as usize..e as usize]),
            None => Err(bad(format!(
                "{what} ({len} bytes at file offset {off:#x}) lies beyond the end of the file ({} bytes)",
                self.0.len()
            ))),
        }
    }
    fn u16(&self, off: u64) -> Result<u16> {
        let b = self.slice(off, 2, "a header field")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, off: u64) -> Result<u32> {
        let b = self.slice(off, 4, "a header field")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&self, off: u64) -> Result<u64> {
        let b = self.slice(off, 8, "a header field")?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

#[derive(Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn prot_of(flags: u32) -> i32 {
    let mut p = 0;
    if flags & PF_R != 0 {
        p |= libc::PROT_READ;
    }
    if flags & PF_W != 0 {
        p |= libc::PROT_WRITE;
    }
    if flags & PF_X != 0 {
        p |= libc::PROT_EXEC;
    }
    p
}

const W_X: i32 = libc::PROT_WRITE | libc::PROT_EXEC;

impl Blob {
    /// Validates an ELF static-pie blob and prepares its layout. Errors
    /// ([`Error::Image`]) say what is wrong: not ELF64 little-endian x86-64, not ET_DYN, an
    /// interpreter, needed libraries, TLS, constructors (the loader runs none), a relocation
    /// other than `R_X86_64_RELATIVE`, a segment (or a page shared by segments) both writable
    /// and executable, a truncated file.
    pub fn parse(elf: &[u8]) -> Result<Blob> {
        let f = Bytes(elf);
        let id = f.slice(0, 16, "the ELF identification")?;
        if id[..4] != *b"\x7fELF" {
            return Err(bad("not an ELF file (no \\x7fELF magic)"));
        }
        if id[4] != 2 {
            return Err(bad(format!(
                "not a 64-bit ELF (EI_CLASS {}); the blob must be ELF64 x86-64",
                id[4]
            )));
        }
        if id[5] != 1 {
            return Err(bad(
                "not a little-endian ELF; the blob must be ELF64 x86-64",
            ));
        }
        let etype = f.u16(16)?;
        let machine = f.u16(18)?;
        if machine != 62 {
            return Err(bad(format!("ELF machine {machine} is not x86-64 (62)")));
        }
        if etype != 3 {
            return Err(bad(format!(
                "ELF type {etype} is not ET_DYN (3): link the blob with -static-pie"
            )));
        }
        let entry = f.u64(24)?;
        let phoff = f.u64(32)?;
        let shoff = f.u64(40)?;
        let phentsize = f.u16(54)? as u64;
        let phnum = f.u16(56)? as u64;
        let shentsize = f.u16(58)? as u64;
        let shnum = f.u16(60)? as u64;
        if phentsize < 56 {
            return Err(bad(format!("program header size {phentsize} < 56")));
        }
        let mut phdrs = Vec::new();
        for i in 0..phnum {
            let o = phoff.saturating_add(i * phentsize);
            f.slice(o, 56, "a program header")?;
            phdrs.push(Phdr {
                kind: f.u32(o)?,
                flags: f.u32(o + 4)?,
                offset: f.u64(o + 8)?,
                vaddr: f.u64(o + 16)?,
                filesz: f.u64(o + 32)?,
                memsz: f.u64(o + 40)?,
            });
        }
        let loads: Vec<Phdr> = phdrs
            .iter()
            .copied()
            .filter(|p| p.kind == PT_LOAD)
            .collect();
        if loads.is_empty() {
            return Err(bad("no PT_LOAD segment"));
        }
        for p in &phdrs {
            match p.kind {
                PT_INTERP => {
                    return Err(bad(
                        "has an interpreter (PT_INTERP): the blob must be static-pie, loaded by no dynamic linker",
                    ))
                }
                PT_TLS => {
                    return Err(bad(
                        "has thread-local storage (PT_TLS), which an injected blob cannot have (it would use the program's FS base)",
                    ))
                }
                _ => {}
            }
        }
        for (i, p) in loads.iter().enumerate() {
            if p.flags & PF_W != 0 && p.flags & PF_X != 0 {
                return Err(bad(format!(
                    "PT_LOAD segment {i} at {:#x} is both writable and executable (W+X)",
                    p.vaddr
                )));
            }
            if p.filesz > p.memsz {
                return Err(bad(format!(
                    "PT_LOAD segment {i} has a file size above its memory size"
                )));
            }
            p.vaddr
                .checked_add(p.memsz)
                .filter(|&e| e <= MAX_SPAN)
                .ok_or_else(|| {
                    bad(format!(
                        "PT_LOAD segment {i} ends beyond {} GiB ({:#x} + {:#x}): not a blob to inject",
                        MAX_SPAN >> 30,
                        p.vaddr,
                        p.memsz
                    ))
                })?;
            f.slice(p.offset, p.filesz, "a PT_LOAD segment's contents")?;
        }

        // Protections page by page; a page shared by two segments gets both.
        let top = loads.iter().map(|p| p.vaddr + p.memsz).max().unwrap_or(0);
        let pages = top.div_ceil(PAGE);
        let mut prot: Vec<Option<i32>> = vec![None; pages as usize];
        for p in &loads {
            if p.memsz == 0 {
                continue;
            }
            for pg in p.vaddr / PAGE..(p.vaddr + p.memsz).div_ceil(PAGE) {
                let slot = &mut prot[pg as usize];
                let v = slot.unwrap_or(0) | prot_of(p.flags);
                if v & W_X == W_X {
                    return Err(bad(format!(
                        "the page at {:#x} is shared by a writable and an executable segment (W+X): link with -z separate-code",
                        pg * PAGE
                    )));
                }
                *slot = Some(v);
            }
        }
        if let Some(r) = phdrs.iter().find(|p| p.kind == PT_GNU_RELRO) {
            // As the dynamic linker does: whole pages from the start's page to the end's.
            let (s, e) = (r.vaddr / PAGE, (r.vaddr + r.memsz) / PAGE);
            for pg in s..e.min(pages) {
                if let Some(v) = &mut prot[pg as usize] {
                    *v &= !libc::PROT_WRITE;
                }
            }
        }
        let mut segments: Vec<Segment> = Vec::new();
        for (pg, p) in prot.iter().enumerate() {
            let Some(p) = *p else { continue };
            let addr = pg as u64 * PAGE;
            match segments.last_mut() {
                Some(s) if s.addr + s.len == addr && s.prot == p => s.len += PAGE,
                _ => segments.push(Segment {
                    addr,
                    len: PAGE,
                    prot: p,
                }),
            }
        }
        let trap_page = pages * PAGE;
        segments.push(Segment {
            addr: trap_page,
            len: PAGE,
            prot: libc::PROT_READ | libc::PROT_EXEC,
        });

        // Contents: the file bytes of each segment, extended with zeros where a relocation
        // lands in its .bss part.
        let mut contents: Vec<(u64, Vec<u8>)> = loads
            .iter()
            .filter(|p| p.filesz > 0)
            .map(|p| {
                let b = &elf[p.offset as usize..(p.offset + p.filesz) as usize];
                (p.vaddr, b.to_vec())
            })
            .collect();

        let vaddr_to_off = |va: u64, len: u64, what: &str| -> Result<u64> {
            loads
                .iter()
                .find(|p| va >= p.vaddr && va.saturating_add(len) <= p.vaddr + p.filesz)
                .map(|p| p.offset + (va - p.vaddr))
                .ok_or_else(|| {
                    bad(format!(
                        "{what} at {va:#x} is not in the file part of any PT_LOAD segment"
                    ))
                })
        };

        let mut symbols = HashMap::new();
        let mut relocs = Vec::new();
        if let Some(d) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) {
            let mut dyns: HashMap<i64, u64> = HashMap::new();
            let mut needed = false;
            let dynb = f.slice(d.offset, d.filesz, "the dynamic section")?;
            for e in dynb.chunks_exact(16) {
                let tag = i64::from_le_bytes(e[..8].try_into().expect("8"));
                let val = u64::from_le_bytes(e[8..].try_into().expect("8"));
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_NEEDED {
                    needed = true;
                }
                dyns.insert(tag, val);
            }
            if needed {
                return Err(bad(
                    "needs shared libraries (DT_NEEDED): link the blob with -nostdlib -static-pie",
                ));
            }
            if dyns.contains_key(&DT_REL) && dyns.get(&DT_RELSZ).copied().unwrap_or(0) > 0 {
                return Err(bad("has REL relocations (DT_REL); x86-64 blobs use RELA"));
            }
            if dyns.get(&DT_PLTRELSZ).copied().unwrap_or(0) > 0 && dyns.contains_key(&DT_JMPREL) {
                return Err(bad(
                    "has PLT relocations (DT_JMPREL): it imports functions, which nothing would resolve",
                ));
            }
            if dyns.contains_key(&DT_INIT)
                || dyns.get(&DT_INIT_ARRAYSZ).copied().unwrap_or(0) > 0
                || dyns.get(&DT_PREINIT_ARRAYSZ).copied().unwrap_or(0) > 0
            {
                return Err(bad(
                    "has constructors (DT_INIT/DT_INIT_ARRAY), which the loader does not run",
                ));
            }
            if let (Some(&rela), Some(&sz)) = (dyns.get(&DT_RELA), dyns.get(&DT_RELASZ)) {
                let ent = dyns.get(&DT_RELAENT).copied().unwrap_or(24);
                if ent < 24 {
                    return Err(bad(format!("RELA entry size {ent} < 24")));
                }
                let off = vaddr_to_off(rela, sz, "the RELA table")?;
                let tab = f.slice(off, sz, "the RELA table")?;
                for (i, r) in tab.chunks_exact(ent as usize).enumerate() {
                    let at = u64::from_le_bytes(r[..8].try_into().expect("8"));
                    let info = u64::from_le_bytes(r[8..16].try_into().expect("8"));
                    let addend = u64::from_le_bytes(r[16..24].try_into().expect("8"));
                    match info as u32 {
                        R_X86_64_NONE => {}
                        R_X86_64_RELATIVE => {
                            put_word(&mut contents, at, addend)?;
                            relocs.push(at);
                        }
                        t => {
                            return Err(bad(format!(
                                "relocation {i} (at {at:#x}) has type {t} ({}), but only R_X86_64_RELATIVE (8) can be applied without a dynamic linker",
                                reloc_name(t)
                            )))
                        }
                    }
                }
            }
            if let (Some(&relr), Some(&sz)) = (dyns.get(&DT_RELR), dyns.get(&DT_RELRSZ)) {
                let ent = dyns.get(&DT_RELRENT).copied().unwrap_or(8);
                if ent != 8 {
                    return Err(bad(format!("RELR entry size {ent} is not 8")));
                }
                let off = vaddr_to_off(relr, sz, "the RELR table")?;
                let tab = f.slice(off, sz, "the RELR table")?;
                let mut next = 0u64;
                for e in tab.chunks_exact(8) {
                    let w = u64::from_le_bytes(e.try_into().expect("8"));
                    if w & 1 == 0 {
                        // An address; the word there is the addend.
                        relocs.push(w);
                        next = w.wrapping_add(8);
                    } else {
                        // A bitmap of the 63 words from `next`.
                        for bit in 0..63 {
                            if w >> (bit + 1) & 1 != 0 {
                                relocs.push(next.wrapping_add(bit * 8));
                            }
                        }
                        next = next.wrapping_add(63 * 8);
                    }
                }
            }
            symbols = dynsyms(&f, &dyns, shoff, shentsize, shnum, &vaddr_to_off)?;
        }
        for &at in &relocs {
            // A relocated word has an initial value, so it is in a segment's file part.
            if !loads
                .iter()
                .any(|p| at >= p.vaddr && at.saturating_add(8) <= p.vaddr + p.filesz)
            {
                return Err(bad(format!(
                    "a relocation targets {at:#x}, outside the file contents of every PT_LOAD segment"
                )));
            }
        }
        // Bytes a relocation rewrites are not code to run.
        let text_syscall = loads.iter().filter(|p| p.flags & PF_X != 0).find_map(|p| {
            let b = &elf[p.offset as usize..(p.offset + p.filesz) as usize];
            b.windows(2)
                .enumerate()
                .filter(|(_, w)| *w == [0x0f, 0x05])
                .map(|(i, _)| p.vaddr + i as u64)
                .find(|&a| !relocs.iter().any(|&r| r < a + 2 && a < r + 8))
        });
        Ok(Blob {
            text_syscall,
            span: trap_page + PAGE,
            segments,
            contents,
            relocs,
            symbols,
            entry,
        })
    }

    /// Bytes the loaded image spans (all segments, gaps and the trap page).
    pub fn span(&self) -> u64 {
        self.span
    }

    /// Offset from the load base of the defined dynamic symbol `name`.
    pub fn sym_offset(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The page runs the image maps, relative to its base (the trap page last).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The contents relocated for `base`: (offset, bytes) pairs.
    /// The memory image relocated for `base` (page-aligned) as a sealed memfd: each
    /// segment's bytes at its offset from the base, zeros elsewhere.
    pub fn image_file(&self, base: u64) -> Result<ImageFile> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        if base % PAGE != 0 {
            return Err(bad(format!("the base {base:#x} is not page-aligned")));
        }
        let sys_err = |what: &str| {
            bad(format!(
                "cannot make the image file ({what}: {})",
                std::io::Error::last_os_error()
            ))
        };
        // SAFETY: a NUL-terminated name; the descriptor is owned at once.
        let fd = unsafe {
            libc::memfd_create(
                c"mmio-trace-image".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(sys_err("memfd_create"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), self.span as libc::off_t) } != 0 {
            return Err(sys_err("ftruncate"));
        }
        for (off, bytes) in self.relocated(base) {
            let mut done = 0;
            while done < bytes.len() {
                // SAFETY: `bytes[done..]` is valid for its length.
                let n = unsafe {
                    libc::pwrite(
                        fd.as_raw_fd(),
                        bytes[done..].as_ptr().cast(),
                        bytes.len() - done,
                        (off + done as u64) as libc::off_t,
                    )
                };
                if n <= 0 {
                    return Err(sys_err("pwrite"));
                }
                done += n as usize;
            }
        }
        // Nobody changes it from now on (a process maps it executable).
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: our own memfd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(sys_err("F_ADD_SEALS"));
        }
        Ok(ImageFile {
            fd,
            base,
            span: self.span,
        })
    }

    fn relocated(&self, base: u64) -> Vec<(u64, Vec<u8>)> {
        let mut c = self.contents.clone();
        for &at in &self.relocs {
            if let Some((va, b)) = c
                .iter_mut()
                .find(|(va, b)| at >= *va && at + 8 <= *va + b.len() as u64)
            {
                let i = (at - *va) as usize;
                let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
                b[i..i + 8].copy_from_slice(&w.wrapping_add(base).to_le_bytes());
            }
        }
        c
    }
}

/// Stores a RELA addend at `at` (base 0) in the contents of the segment holding it.
fn put_word(contents: &mut [(u64, Vec<u8>)], at: u64, v: u64) -> Result<()> {
    let Some((va, b)) = contents
        .iter_mut()
        .find(|(va, b)| at >= *va && at.saturating_add(8) <= *va + b.len() as u64)
    else {
        return Err(bad(format!(
            "a relocation targets {at:#x}, outside the file contents of every PT_LOAD segment"
        )));
    };
    let i = (at - *va) as usize;
    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn reloc_name(t: u32) -> &'static str {
    match t {
        1 => "R_X86_64_64",
        2 => "R_X86_64_PC32",
        5 => "R_X86_64_COPY",
        6 => "R_X86_64_GLOB_DAT",
        7 => "R_X86_64_JUMP_SLOT",
        16 => "R_X86_64_DTPMOD64",
        17 => "R_X86_64_DTPOFF64",
        18 => "R_X86_64_TPOFF64",
        37 => "R_X86_64_IRELATIVE",
        _ => "unknown",
    }
}

/// The defined symbols of `.dynsym`: their count from the section headers when present,
/// else from DT_HASH, else from DT_GNU_HASH's chains.
fn dynsyms(
    f: &Bytes,
    dyns: &HashMap<i64, u64>,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    vaddr_to_off: &dyn Fn(u64, u64, &str) -> Result<u64>,
) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let (Some(&symtab), Some(&strtab)) = (dyns.get(&DT_SYMTAB), dyns.get(&DT_STRTAB)) else {
        return Ok(out);
    };
    let syment = dyns.get(&DT_SYMENT).copied().unwrap_or(24);
    if syment != 24 {
        return Err(bad(format!("symbol entry size {syment} is not 24")));
    }
    let strsz = dyns.get(&DT_STRSZ).copied().unwrap_or(0);
    let mut count = None;
    if shoff != 0 && shentsize >= 64 {
        for i in 0..shnum {
            let o = shoff.saturating_add(i * shentsize);
            if f.slice(o, 64, "a section header").is_err() {
                break;
            }
            if f.u32(o + 4)? == SHT_DYNSYM {
                count = Some(f.u64(o + 32)? / syment);
            }
        }
    }
    if count.is_none() {
        if let Some(&h) = dyns.get(&DT_HASH) {
            count = Some(f.u32(vaddr_to_off(h, 8, "DT_HASH")? + 4)? as u64);
        } else if let Some(&h) = dyns.get(&DT_GNU_HASH) {
            let o = vaddr_to_off(h, 16, "DT_GNU_HASH")?;
            let (nb, symoff, bloom) =
                (f.u32(o)? as u64, f.u32(o + 4)? as u64, f.u32(o + 8)? as u64);
            let buckets = o + 16 + bloom * 8;
            let mut last = 0u64;
            for i in 0..nb {
                last = last.max(f.u32(buckets + i * 4)? as u64);
            }
            let mut n = symoff;
            if last >= symoff {
                let chains = buckets + nb * 4;
                let mut i = last;
                while f.u32(chains + (i - symoff) * 4)? & 1 == 0 {
                    i += 1;
                }
                n = i + 1;
            }
            count = Some(n);
        }
    }
    let count = count.unwrap_or(0);
    let so = vaddr_to_off(symtab, count * syment, "the dynamic symbol table")?;
    let stro = vaddr_to_off(strtab, strsz.max(1), "the dynamic string table")?;
    let strs = f.slice(stro, strsz, "the dynamic string table")?;
    for i in 1..count {
        let o = so + i * syment;
        let name = f.u32(o)? as usize;
        let shndx = f.u16(o + 6)?;
        let value = f.u64(o + 8)?;
        if shndx == SHN_UNDEF || name >= strs.len() {
            continue;
        }
        let end = strs[name..]
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(strs.len() - name);
        if let Ok(s) = std::str::from_utf8(&strs[name..name + end]) {
            if !s.is_empty() {
                out.insert(s.to_string(), value);
            }
        }
    }
    Ok(out)
}

impl Process {
    /// Loads the ELF static-pie `elf` into the process, injecting the `mmap`s into thread
    /// `tid` (in any ptrace stop; see [`Process::inject_syscall`]), and returns where it
    /// went. Validates first ([`Blob::parse`]: nothing is mapped for a bad blob); maps every
    /// page with its final protections (never W+X, no `mprotect`), writes the relocated
    /// contents through `/proc/PID/mem`. Constructors are not run: call an entry point
    /// with [`Process::call`]. If a step after the reservation fails, the span is unmapped
    /// again. The image's trap becomes the return address of later calls.
    pub fn load_image(&mut self, tid: Pid, elf: &[u8], opts: &LoadOptions) -> Result<Image> {
        let blob = Blob::parse(elf)?;
        self.load_blob(tid, &blob, opts)
    }

    /// Reserves the blob's span (`PROT_NONE`): exactly at `base` when given (nothing may
    /// be mapped there), else where the kernel chooses. Its start.
    fn reserve(&mut self, tid: Pid, blob: &Blob, base: Option<u64>) -> Result<u64> {
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        Ok(match base {
            Some(b) => {
                if b % PAGE != 0 || b == 0 {
                    return Err(bad(format!(
                        "the requested base {b:#x} is not a page-aligned, non-zero address"
                    )));
                }
                let got = self
                    .remote_mmap(
                        tid,
                        b,
                        blob.span,
                        libc::PROT_NONE,
                        anon | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                    .map_err(|e| match e.errno() {
                        Some(libc::EEXIST) => bad(format!(
                            "cannot load at {b:#x}: something is already mapped in {b:#x}..{:#x}",
                            b + blob.span
                        )),
                        _ => e,
                    })?;
                if got != b {
                    // A kernel before 4.17 takes MAP_FIXED_NOREPLACE as a hint.
                    let _ = self.remote_munmap(tid, got, blob.span);
                    return Err(bad(format!(
                        "cannot load at {b:#x}: the kernel placed the reservation at {got:#x} (MAP_FIXED_NOREPLACE needs Linux 4.17)"
                    )));
                }
                b
            }
            None => self.remote_mmap(tid, 0, blob.span, libc::PROT_NONE, anon, -1, 0)?,
        })
    }

    /// [`Process::load_image`] of an already parsed blob.
    pub fn load_blob(&mut self, tid: Pid, blob: &Blob, opts: &LoadOptions) -> Result<Image> {
        let base = self.reserve(tid, blob, opts.base)?;
        self.fill_or_undo(tid, blob, base, None)
    }

    /// [`Process::fill`]s the span reserved at `base`; the image's trap becomes the
    /// return address of later calls. On failure the span is unmapped again and the
    /// syscall site is what it was.
    fn fill_or_undo(
        &mut self,
        tid: Pid,
        blob: &Blob,
        base: u64,
        file: Option<i32>,
    ) -> Result<Image> {
        let site = self.syscall_site();
        match self.fill(tid, blob, base, file) {
            Ok(img) => {
                self.set_trap(Some(img.trap));
                Ok(img)
            }
            Err(e) => {
                let _ = self.remote_munmap(tid, base, blob.span);
                self.set_syscall_site(site);
                Err(e)
            }
        }
    }

    /// [`Process::load_blob`] at `file`'s base, with the segments mapped (private) from
    /// `file` — `blob`'s image relocated for that base ([`Blob::image_file`]), which the
    /// process opens by its path — instead of written into fresh pages: no copy of the
    /// blob per process. When the process cannot open the file (its path names this
    /// process's descriptor: it needs the right to ptrace-read this process), the
    /// contents are written as by `load_blob`.
    pub fn load_blob_mapped(&mut self, tid: Pid, blob: &Blob, file: &ImageFile) -> Result<Image> {
        if file.span != blob.span {
            return Err(bad("the image file is not this blob's"));
        }
        let base = self.reserve(tid, blob, Some(file.base))?;
        let opened = self.remote_open(tid, &file.path(), base).ok();
        let r = self.fill_or_undo(tid, blob, base, opened);
        if let Some(fd) = opened {
            let _ = self.remote_close(tid, fd);
        }
        r
    }

    /// Opens `path` read-only in the process (an injected `openat`; the path is written
    /// into the first page of the reserved span at `at`, made readable for the call).
    fn remote_open(&mut self, tid: Pid, path: &str, at: u64) -> Result<i32> {
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
        self.remote_mmap(
            tid,
            at,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            anon,
            -1,
            0,
        )?;
        let mut b = path.as_bytes().to_vec();
        b.push(0);
        let r = self.mem().write(at, &b).and_then(|()| {
            let r = self.inject_syscall(
                tid,
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as i64 as u64,
                    at,
                    (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                    0,
                    0,
                    0,
                ],
            )?;
            if (-4095..0).contains(&r) {
                return Err(Error::Remote {
                    name: "openat",
                    pid: self.pid(),
                    errno: -r as i32,
                });
            }
            Ok(r as i32)
        });
        // The page goes back to the reservation (fill maps over it).
        let _ = self.remote_mmap(tid, at, PAGE, libc::PROT_NONE, anon, -1, 0);
        r
    }

    fn fill(&mut self, tid: Pid, blob: &Blob, base: u64, file: Option<i32>) -> Result<Image> {
        let trap = base + blob.span - PAGE;
        // The trap page first: from then on the injected calls run at its `syscall`, inside
        // the span (which a seccomp filter of the process may exempt).
        let mut order: Vec<&Segment> = blob.segments.iter().collect();
        order.rotate_right(1);
        for s in order {
            let addr = base + s.addr;
            let got = match file.filter(|_| addr != trap) {
                Some(fd) => {
                    let flags = libc::MAP_PRIVATE | libc::MAP_FIXED;
                    self.remote_mmap(tid, addr, s.len, s.prot, flags, fd, s.addr)?
                }
                None => {
                    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                    self.remote_mmap(tid, addr, s.len, s.prot, flags, -1, 0)?
                }
            };
            if got != addr {
                return Err(bad(format!(
                    "mmap of a segment at {addr:#x} returned {got:#x}"
                )));
            }
            if addr == trap {
                self.mem().write(trap, &TRAP_CODE)?;
                self.set_syscall_site(SyscallSite::At(trap + TRAP_SYSCALL));
            }
        }
        let written = if file.is_some() {
            Vec::new()
        } else {
            blob.relocated(base)
        };
        for (off, bytes) in written {
            self.mem().write(base + off, &bytes).map_err(|e| {
                bad(format!(
                    "cannot write the blob's contents into process {} ({e}); writing read-only pages through /proc/PID/mem needs the kernel's proc_mem.force_override to allow it for a tracer",
                    self.pid()
                ))
            })?;
        }
        let syscall = match blob.text_syscall {
            Some(o) => base + o,
            None => trap + TRAP_SYSCALL,
        };
        self.set_syscall_site(SyscallSite::At(syscall));
        Ok(Image {
            base,
            len: blob.span,
            segments: blob
                .segments
                .iter()
                .map(|s| Segment {
                    addr: base + s.addr,
                    ..*s
                })
                .collect(),
            trap,
            syscall,
            entry: base + blob.entry,
            symbols: blob.symbols.clone(),
        })
    }

    /// Unmaps a loaded image (`munmap` injected into thread `tid`): for the attach/detach
    /// case, once nothing in the process uses it any more.
    pub fn unload_image(&mut self, tid: Pid, image: &Image) -> Result<()> {
        if self.trap().is_some_and(|t| image.contains(t)) {
            self.set_trap(None);
        }
        // The munmap itself may still run at the image's `syscall` (the step reports at
        // the call's exit, before the unmapped next instruction is fetched).
        let r = self.remote_munmap(tid, image.base, image.len);
        if let SyscallSite::At(a) = self.syscall_site() {
            if image.contains(a) {
                self.set_syscall_site(SyscallSite::Auto);
            }
        }
        r
    }
}
