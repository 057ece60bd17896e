//! Program counters as call sites, offline: `function+0xOFF (file:line)` where the
//! binary's debug information allows, `function+0xOFF` from its symbol table, and
//! `object+0xOFF` otherwise.
//!
//! `record` logs each traced process's loaded objects as markers
//! (`object pid PID 0xSTART-0xEND bias 0xBIAS build HEX|- PATH`, see [`ObjectMark`]).
//! A PC is looked up among the objects of the event's process; an event of another thread
//! (whose id is not its process's) falls back to the objects of every process holding that
//! address, when they all agree on it. A binary is used only if its build id is the one
//! recorded: a missing file, a changed one or an object without a build id prints
//! `object+0xOFF`, with a note on standard error once per object; never another binary's
//! name. Logs without object markers (kernel logs) print no labels.

use std::collections::HashMap;
use std::path::Path;

use addr2line::gimli;
use mmio_trace_format::text::unescape_marker;
use mmio_trace_format::Event;
use object::{Object, ObjectSection, ObjectSymbol};

/// Options of the commands that print call sites.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct SymbolArgs {
    /// Print program counters as recorded, without looking up functions in the traced
    /// binaries (by default each PC is followed by `function+0xOFF (file:line)`, or
    /// `object+0xOFF`, where the log holds the objects `record` saw loaded).
    #[arg(long)]
    pub no_symbols: bool,
}

/// One `object` marker: a loaded object of a traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMark {
    /// The process id.
    pub pid: u32,
    /// First address of the object's loaded segments.
    pub start: u64,
    /// End (exclusive) of its loaded segments.
    pub end: u64,
    /// What the loader added to the file's addresses.
    pub bias: u64,
    /// GNU build id, if the object has one.
    pub build: Option<Vec<u8>>,
    /// The loader's path (`[vdso]` for the vDSO, `?` when unknown).
    pub path: Vec<u8>,
}

impl ObjectMark {
    /// Parses a marker's text (as logged: escaped); `None` if it is not an object marker.
    pub fn parse(text: &[u8]) -> Option<ObjectMark> {
        let r = text.strip_prefix(b"object pid ")?;
        let (pid, r) = split_word(r)?;
        let pid = std::str::from_utf8(pid).ok()?.parse().ok()?;
        let (range, r) = split_word(r)?;
        let dash = range.iter().position(|&c| c == b'-')?;
        let start = hex(&range[..dash])?;
        let end = hex(&range[dash + 1..])?;
        let r = r.strip_prefix(b"bias ")?;
        let (bias, r) = split_word(r)?;
        let bias = hex(bias)?;
        let r = r.strip_prefix(b"build ")?;
        let (build, path) = split_word(r)?;
        let build = if build == b"-" {
            None
        } else {
            if build.len() % 2 != 0 {
                return None;
            }
            let s = std::str::from_utf8(build).ok()?;
            Some(
                (0..s.len() / 2)
                    .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()?,
            )
        };
        if start >= end || path.is_empty() {
            return None;
        }
        Some(ObjectMark {
            pid,
            start,
            end,
            bias,
            build,
            path: unescape_marker(path),
        })
    }
}

fn split_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&c| c == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

fn hex(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s.strip_prefix(b"0x")?).ok()?;
    u64::from_str_radix(s, 16).ok()
}

/// A function symbol: `[addr, addr+size)` in file addresses.
struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

/// The largest object file read for symbols (debug builds of big programs reach a few
/// GiB).
const MAX_BINARY: u64 = 16 << 30;

/// A binary opened for lookups.
struct Binary {
    syms: Vec<Sym>,
    dwarf: Option<addr2line::Context<gimli::EndianSlice<'static, gimli::RunTimeEndian>>>,
}

impl Binary {
    /// Opens `path` if its build id is `want`; else why not.
    fn open(path: &Path, want: &[u8]) -> Result<Binary, String> {
        // The path comes from the log: a FIFO or a character device there (/dev/zero)
        // would block or never end, and a /proc file can claim a size no binary has.
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read ({e})"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        if meta.len() > MAX_BINARY {
            return Err(format!("is larger than {} GiB", MAX_BINARY >> 30));
        }
        let data = std::fs::read(path).map_err(|e| format!("cannot be read ({e})"))?;
        // Kept for the run's life: the DWARF context borrows it (one per object used).
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        let file =
            object::File::parse(data).map_err(|e| format!("is not a readable ELF file ({e})"))?;
        match file.build_id() {
            Ok(Some(id)) if id == want => {}
            Ok(Some(_)) => return Err(
                "has another build id than the recorded one (the binary changed since recording)"
                    .into(),
            ),
            _ => {
                return Err("has no build id, so it cannot be checked against the recording".into())
            }
        }
        let mut syms: Vec<Sym> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0 && s.is_definition())
            .filter_map(|s| {
                Some(Sym {
                    addr: s.address(),
                    size: s.size(),
                    name: demangle(s.name().ok()?),
                })
            })
            .collect();
        syms.sort_by_key(|s| (s.addr, std::cmp::Reverse(s.size)));
        syms.dedup_by_key(|s| s.addr);
        let endian = if file.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let has_debug = file.section_by_name(".debug_info").is_some();
        let dwarf = if has_debug {
            let load = |id: gimli::SectionId| -> Result<_, gimli::Error> {
                let d = file
                    .section_by_name(id.name())
                    .and_then(|s| s.data().ok())
                    .unwrap_or(&[]);
                Ok(gimli::EndianSlice::new(d, endian))
            };
            gimli::Dwarf::load(load)
                .ok()
                .and_then(|d| addr2line::Context::from_dwarf(d).ok())
        } else {
            None
        };
        Ok(Binary { syms, dwarf })
    }

    fn function(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        // The last symbol starting at or before `addr` that still covers it (nested ones
        // are rare; look back a few).
        self.syms[..i]
            .iter()
            .rev()
            .take(8)
            .find(|s| addr - s.addr < s.size)
            .map(|s| (s.name.as_str(), addr - s.addr))
    }

    /// `file:line` of `addr` in the function that holds it (through inlined calls: the
    /// line of the outermost, non-inlined, function).
    fn line(&self, addr: u64) -> Option<String> {
        let ctx = self.dwarf.as_ref()?;
        let mut frames = ctx.find_frames(addr).skip_all_loads().ok()?;
        let mut last = None;
        while let Ok(Some(f)) = frames.next() {
            if let Some(loc) = f.location {
                if let (Some(file), Some(line)) = (loc.file, loc.line) {
                    last = Some((file.to_string(), line));
                }
            }
        }
        let (file, line) = last?;
        let base = file.rsplit('/').next().unwrap_or(&file).to_string();
        Some(format!("{base}:{line}"))
    }
}

/// Index of an object in [`Symbolizer::objects`].
type ObjId = usize;

/// A binary's identity: its path and recorded build id.
type BinaryKey = (Vec<u8>, Option<Vec<u8>>);

/// Turns PCs into call-site labels using the `object` markers of a log.
#[derive(Default)]
pub struct Symbolizer {
    off: bool,
    objects: Vec<ObjectMark>,
    /// Per process: its objects, latest last.
    procs: HashMap<u32, Vec<ObjId>>,
    /// Per (path, build id): the opened binary, or `None` once it failed.
    binaries: HashMap<BinaryKey, Option<Binary>>,
    labels: HashMap<(ObjId, u64), String>,
    /// (thread, PC) -> its object, as last looked up (cleared when an object is learnt).
    found: HashMap<(u32, u64), Option<ObjId>>,
}

impl Symbolizer {
    /// An empty symbolizer; `args.no_symbols` turns every lookup off.
    pub fn new(args: SymbolArgs) -> Symbolizer {
        Symbolizer {
            off: args.no_symbols,
            ..Default::default()
        }
    }

    /// A symbolizer that knows the objects among `events`.
    // For commands that hold their events (`analyze`); the streaming ones `observe`.
    #[allow(dead_code)]
    pub fn from_events<'a>(
        args: SymbolArgs,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Symbolizer {
        let mut s = Symbolizer::new(args);
        for e in events {
            s.observe(e);
        }
        s
    }

    /// Learns the object an `object` marker names (other events are ignored).
    pub fn observe(&mut self, ev: &Event) {
        if self.off {
            return;
        }
        if let Event::Mark(m) = ev {
            if let Some(o) = ObjectMark::parse(&m.text) {
                let list = self.procs.entry(o.pid).or_default();
                let same = list.iter().any(|&i| self.objects[i] == o);
                if !same {
                    list.push(self.objects.len());
                    self.objects.push(o);
                    self.found.clear();
                }
            }
        }
    }

    /// The object holding `pc` for thread or process `pid`.
    fn object_of(&self, pid: u32, pc: u64) -> Option<ObjId> {
        let holds = |&i: &ObjId| {
            let o = &self.objects[i];
            pc >= o.start && pc < o.end
        };
        if let Some(list) = self.procs.get(&pid) {
            return list.iter().rev().copied().find(holds);
        }
        // A thread other than its process's first: every process's objects at that
        // address must agree.
        let mut found: Option<ObjId> = None;
        for list in self.procs.values() {
            if let Some(i) = list.iter().rev().copied().find(holds) {
                match found {
                    None => found = Some(i),
                    Some(j) => {
                        let (a, b) = (&self.objects[i], &self.objects[j]);
                        if (&a.path, &a.build, a.bias) != (&b.path, &b.build, b.bias) {
                            return None;
                        }
                    }
                }
            }
        }
        found
    }

    /// The call-site label of `pc` in thread `pid`: `function+0xOFF (file:line)`,
    /// `function+0xOFF` or `object+0xOFF`; `None` when the log names no object holding it
    /// (or symbols are off). The objects are those observed so far: call it as the events
    /// pass (an address may hold another object after a `dlclose`, or after an exec).
    pub fn label(&mut self, pid: u32, pc: u64) -> Option<String> {
        let id = self.object_at(pid, pc)?;
        Some(self.label_in(id, pc))
    }

    /// The object holding `pc` for thread `pid` among those observed so far (an id for
    /// [`Symbolizer::label_in`]), for callers that label later what they saw now.
    pub fn object_at(&mut self, pid: u32, pc: u64) -> Option<usize> {
        if self.off || pc == 0 {
            return None;
        }
        match self.found.get(&(pid, pc)) {
            Some(&id) => id,
            None => {
                let id = self.object_of(pid, pc);
                self.found.insert((pid, pc), id);
                id
            }
        }
    }

    /// The label of `pc` in object `id` (from [`Symbolizer::object_at`]).
    pub fn label_in(&mut self, id: usize, pc: u64) -> String {
        if let Some(l) = self.labels.get(&(id, pc)) {
            return l.clone();
        }
        let o = &self.objects[id];
        let addr = pc.wrapping_sub(o.bias);
        let name = String::from_utf8_lossy(o.path.rsplit(|&c| c == b'/').next().unwrap_or(&o.path))
            .into_owned();
        let key = (o.path.clone(), o.build.clone());
        if !self.binaries.contains_key(&key) {
            let bin = if o.path.starts_with(b"[") || o.path == b"?" {
                None
            } else {
                use std::os::unix::ffi::OsStrExt;
                let path = Path::new(std::ffi::OsStr::from_bytes(&o.path));
                let r = match &o.build {
                    Some(b) => Binary::open(path, b),
                    None => Err("has no build id in the recording, so it cannot be checked".into()),
                };
                match r {
                    Ok(b) => Some(b),
                    Err(why) => {
                        eprintln!(
                            "mmio-trace: {}: {why}; its call sites print as {name}+0xOFF",
                            path.display()
                        );
                        None
                    }
                }
            };
            self.binaries.insert(key.clone(), bin);
        }
        let label = match self.binaries.get(&key).and_then(|b| b.as_ref()) {
            Some(b) => match b.function(addr) {
                Some((f, off)) => match b.line(addr) {
                    Some(l) => format!("{f}+{off:#x} ({l})"),
                    None => format!("{f}+{off:#x}"),
                },
                None => format!("{name}+{addr:#x}"),
            },
            None => format!("{name}+{addr:#x}"),
        };
        self.labels.insert((id, pc), label.clone());
        label
    }
}

thread_local! {
    /// The symbolizer of the command running on this thread (`analyze`, `show --fold`),
    /// which has seen the log's object markers so far: call sites are labelled deep inside
    /// folded runs and per-map summaries, which would otherwise all carry it.
    static SYMBOLS: std::cell::RefCell<Option<Symbolizer>> = const { std::cell::RefCell::new(None) };
}

/// Makes `args` the call-site labelling of this command (`analyze::site_label`, `export::pc_text`).
pub fn use_symbols(args: SymbolArgs) {
    SYMBOLS.with(|s| *s.borrow_mut() = Some(Symbolizer::new(args)));
}

/// Feeds an event to the command's symbolizer (object markers tell it what was loaded).
pub fn observe_symbols(ev: &Event) {
    SYMBOLS.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.observe(ev);
        }
    });
}

/// The function (or object) holding `pc` in thread `pid`, if the command's symbolizer
/// knows it.
pub fn symbol_of(pid: u32, pc: u64) -> Option<String> {
    SYMBOLS.with(|s| s.borrow_mut().as_mut().and_then(|s| s.label(pid, pc)))
}

/// A symbol's name as its source spells it: Rust and C++ names demangled (without
/// Rust's hash suffix), others as they are.
fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return d;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rust_and_cpp_names_are_demangled_others_kept() {
        assert_eq!(
            demangle("_ZN17mmio_trace_record4demo10run_driver17hcb63abaf39f19131E"),
            "mmio_trace_record::demo::run_driver"
        );
        assert_eq!(
            demangle("_ZNK3gpu3Dev6statusEv"),
            "gpu::Dev::status() const"
        );
        assert_eq!(demangle("main"), "main");
        // Not a valid mangling: kept as it is, never a wrong name.
        assert_eq!(demangle("_Zfoo"), "_Zfoo");
    }

    use super::*;

    #[test]
    fn object_markers_parse_exactly() {
        let m =
            ObjectMark::parse(b"object pid 42 0x1000-0x3000 bias 0x1000 build 0aff /a b/c\\x0a")
                .unwrap();
        assert_eq!(
            m,
            ObjectMark {
                pid: 42,
                start: 0x1000,
                end: 0x3000,
                bias: 0x1000,
                build: Some(vec![0x0a, 0xff]),
                path: b"/a b/c\n".to_vec()
            }
        );
        let m = ObjectMark::parse(b"object pid 1 0x0-0x10 bias 0x0 build - [vdso]").unwrap();
        assert_eq!(m.build, None);
        for bad in [
            &b"object pid 1 0x10-0x10 bias 0x0 build - x"[..],
            b"object pid x 0x0-0x10 bias 0x0 build - x",
            b"object pid 1 0x0-0x10 bias 0x0 build abc x",
            b"object pid 1 0x0-0x10 build - x",
            b"object pid 1 0x0-0x10 bias 0x0 build - ",
        ] {
            assert_eq!(
                ObjectMark::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
