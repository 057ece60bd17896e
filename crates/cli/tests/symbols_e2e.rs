//! Symbolized call sites: `record` logs each traced process's loaded objects as
//! `object pid ...` markers, and `show` / `stats --by-site` print PCs as
//! `function+0xOFF (file:line)`, `function+0xOFF` or `object+0xOFF`.
//!
//! Expected values are computed independently of the implementation: line numbers from
//! the `SITE-...` comment on the accessing line, symbol addresses from `nm`, build ids
//! from `readelf -n`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mmio_trace_format::Event;

fn src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/programs")
        .join(format!("{name}.c"))
}

/// Compiles tests/programs/NAME.c into `out` with `flags`.
fn cc(name: &str, out: &Path, flags: &[&str]) {
    let st = Command::new("cc")
        .args(["-O1", "-pthread"])
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(src(name))
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) is needed for the end-to-end tests");
    assert!(st.success(), "compiling {name}");
}

/// A tool of binutils, which these tests need: a clear failure when it is missing.
fn tool(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} (binutils) is needed by these tests: {e}"));
    assert!(out.status.success(), "{name} failed: {}", stderr(&out));
    stdout(&out)
}

/// The 1-based line of tests/programs/NAME.c holding `SITE-tag`.
fn site_line(name: &str, tag: &str) -> u64 {
    let text = std::fs::read_to_string(src(name)).unwrap();
    let needle = format!("/* SITE-{tag} */");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "one line marked {needle}");
    lines[0] as u64
}

/// The address `nm` gives `sym` in `bin`.
fn nm_addr(bin: &Path, sym: &str) -> u64 {
    let out = tool("nm", &[bin.as_os_str()]);
    let addr = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == sym).then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .next();
    addr.unwrap_or_else(|| panic!("{sym} not in nm of {}", bin.display()))
}

/// The GNU build id `readelf -n` gives `bin`.
fn build_id(bin: &Path) -> String {
    let out = tool("readelf", &["-n".as_ref(), bin.as_os_str()]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in {}", bin.display()))
        .to_string()
}

fn mmio_trace(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(args)
        .output()
        .unwrap()
}

/// One `object` marker, parsed here by hand (the test's own reading of the syntax).
#[derive(Debug, Clone, PartialEq)]
struct Obj {
    ts_ns: u64,
    pid: u32,
    start: u64,
    end: u64,
    bias: u64,
    build: String,
    path: String,
}

/// Every `object` marker, checking the exact syntax of each:
/// `object pid PID 0xSTART-0xEND bias 0xBIAS build HEX|- PATH`.
fn objects(events: &[Event]) -> Vec<Obj> {
    let hex = |s: &str| -> u64 {
        let h = s
            .strip_prefix("0x")
            .unwrap_or_else(|| panic!("{s:?} not 0x hex"));
        assert!(
            !h.is_empty() && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{s:?}"
        );
        assert!(h == "0" || !h.starts_with('0'), "{s:?} has leading zeros");
        u64::from_str_radix(h, 16).unwrap()
    };
    events
        .iter()
        .filter_map(|e| match e {
            Event::Mark(m) if m.text.starts_with(b"object ") => Some((m.ts_ns, m.text.clone())),
            _ => None,
        })
        .map(|(ts_ns, text)| {
            let text = String::from_utf8(text).unwrap();
            let f: Vec<&str> = text.splitn(9, ' ').collect();
            assert_eq!(f.len(), 9, "{text}");
            assert_eq!(
                (f[0], f[1], f[4], f[6]),
                ("object", "pid", "bias", "build"),
                "{text}"
            );
            let (s, e) = f[3].split_once('-').unwrap();
            let o = Obj {
                ts_ns,
                pid: f[2].parse().unwrap(),
                start: hex(s),
                end: hex(e),
                bias: hex(f[5]),
                build: f[7].to_string(),
                path: f[8].to_string(),
            };
            assert!(
                o.start < o.end && o.start % 4096 == 0 && o.end % 4096 == 0,
                "{text}"
            );
            assert!(
                o.build == "-"
                    || (o.build.len() % 2 == 0
                        && o.build
                            .bytes()
                            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))),
                "{text}"
            );
            o
        })
        .collect()
}

/// (pid, pc, offset in the device) of every access.
fn sites(events: &[Event]) -> Vec<(u32, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some((a.pid, a.pc, a.phys)),
            _ => None,
        })
        .collect()
}

/// The access at device offset `phys` (exactly one).
fn site_at(events: &[Event], phys: u64) -> (u32, u64) {
    let v: Vec<_> = sites(events).into_iter().filter(|s| s.2 == phys).collect();
    assert_eq!(v.len(), 1, "one access at {phys:#x}: {v:?}");
    (v[0].0, v[0].1)
}

/// The object of process `pid` named `path` (exactly one).
fn object(objs: &[Obj], pid: u32, path: &Path) -> Obj {
    let p = path.to_str().unwrap();
    let v: Vec<&Obj> = objs
        .iter()
        .filter(|o| o.pid == pid && o.path == p)
        .collect();
    assert_eq!(v.len(), 1, "one object {p} of pid {pid}: {objs:#?}");
    v[0].clone()
}

/// `show`'s line for the access at device offset `phys`.
fn show_line(show: &str, phys: u64) -> String {
    let addr = format!("{phys:#010x} ");
    let v: Vec<&str> = show
        .lines()
        .filter(|l| l.contains(&addr) && (l.contains(" R4 ") || l.contains(" W4 ")))
        .collect();
    assert_eq!(v.len(), 1, "one line at {addr}: {show}");
    v[0].to_string()
}

/// What `show` prints after `pc 0x..` on the line of the access at `phys`.
fn label(show: &str, phys: u64, pc: u64) -> String {
    let line = show_line(show, phys);
    let key = format!("pc {pc:#x}");
    let at = line.find(&key).unwrap_or_else(|| panic!("{key} in {line}"));
    line[at + key.len()..].trim().to_string()
}

struct Rec {
    dir: PathBuf,
    dev: PathBuf,
    exe: PathBuf,
}

impl Rec {
    /// sym_main built with `flags` (then `strip`ped if asked) in a fresh scratch dir.
    fn new(name: &str, flags: &[&str], strip: bool) -> Rec {
        let dir = scratch(name);
        let exe = dir.join("sym_main");
        cc("sym_main", &exe, flags);
        if strip {
            tool("strip", &[exe.as_os_str()]);
        }
        let dev = device(&dir, 4096);
        Rec { dir, dev, exe }
    }

    /// Records `sym_main DEV ARGS...` (exit 0 expected); the events.
    fn record(&self, args: &[&str]) -> Vec<Event> {
        self.record_in(Path::new("."), args)
    }

    /// As [`Rec::record`], run in directory `cwd`.
    fn record_in(&self, cwd: &Path, args: &[&str]) -> Vec<Event> {
        let out = record_cmd(&self.dir, &self.dev, &[])
            .current_dir(cwd)
            .arg(&self.exe)
            .arg(&self.dev)
            .args(args)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        read_log(&trace_log(&self.dir))
    }

    fn show(&self, extra: &[&str]) -> Output {
        let log = trace_log(&self.dir);
        let mut a: Vec<&std::ffi::OsStr> = vec!["show".as_ref()];
        a.extend(extra.iter().map(std::ffi::OsStr::new));
        a.push(log.as_os_str());
        let out = mmio_trace(&a);
        assert_exit(&out, 0);
        out
    }
}

#[test]
fn debug_info_gives_function_offset_and_line() {
    let r = Rec::new("sym-g", &["-g"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc_read) = site_at(&ev, 4);
    let (_, pc_write) = site_at(&ev, 8);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    assert_eq!(exe.build, build_id(&r.exe));
    let off_read = pc_read - exe.bias - nm_addr(&r.exe, "sym_read_status");
    let off_write = pc_write - exe.bias - nm_addr(&r.exe, "sym_write_ctrl");
    let show = stdout(&r.show(&[]));
    assert_eq!(
        label(&show, 4, pc_read),
        format!(
            "sym_read_status+{off_read:#x} (sym_main.c:{})",
            site_line("sym_main", "read")
        )
    );
    assert_eq!(
        label(&show, 8, pc_write),
        format!(
            "sym_write_ctrl+{off_write:#x} (sym_main.c:{})",
            site_line("sym_main", "write")
        )
    );
    // Off: the PC as recorded, nothing after it.
    let plain = stdout(&r.show(&["--no-symbols"]));
    assert_eq!(label(&plain, 4, pc_read), "");
    assert_eq!(label(&plain, 8, pc_write), "");
}

#[test]
fn object_markers_list_every_loaded_object_before_the_first_map() {
    let r = Rec::new("sym-marks", &["-g"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, _) = site_at(&ev, 4);
    assert!(objs.iter().all(|o| o.pid == pid), "{objs:#?}");
    // The executable, the vDSO, libc, the loader: each once.
    let exe = r.exe.canonicalize().unwrap();
    object(&objs, pid, &exe);
    object(&objs, pid, Path::new("[vdso]"));
    let libc: Vec<&Obj> = objs
        .iter()
        .filter(|o| o.path.contains("/libc.so"))
        .collect();
    assert_eq!(libc.len(), 1, "{objs:#?}");
    assert_eq!(libc[0].build, build_id(Path::new(&libc[0].path)));
    assert!(
        objs.iter().any(|o| o.path.contains("/ld-linux")),
        "{objs:#?}"
    );
    let mut starts: Vec<_> = objs.iter().map(|o| o.start).collect();
    starts.dedup();
    assert_eq!(starts.len(), objs.len(), "each object once: {objs:#?}");
    // All of them before the MAP, in the text log as MARK lines.
    let map_at = ev.iter().position(|e| matches!(e, Event::Map(_))).unwrap();
    let last_obj = ev
        .iter()
        .rposition(|e| matches!(e, Event::Mark(m) if m.text.starts_with(b"object ")))
        .unwrap();
    assert!(last_obj < map_at, "objects logged before the MAP");
    let text = std::fs::read_to_string(trace_log(&r.dir)).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" object pid "))
        .collect();
    assert_eq!(lines.len(), objs.len());
    for (l, o) in lines.iter().zip(&objs) {
        let ts = format!(
            "{}.{:06}",
            o.ts_ns / 1_000_000_000,
            o.ts_ns / 1000 % 1_000_000
        );
        assert_eq!(
            *l,
            format!(
                "MARK {ts} object pid {} {:#x}-{:#x} bias {:#x} build {} {}",
                o.pid, o.start, o.end, o.bias, o.build, o.path
            )
        );
    }
}

#[test]
fn symbols_without_debug_info_give_function_offset() {
    let r = Rec::new("sym-nodebug", &["-g0"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 4);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    let off = pc - exe.bias - nm_addr(&r.exe, "sym_read_status");
    let show = stdout(&r.show(&[]));
    assert_eq!(label(&show, 4, pc), format!("sym_read_status+{off:#x}"));
}

#[test]
fn stripped_binary_gives_object_offset() {
    let r = Rec::new("sym-stripped", &["-g"], true);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 4);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    let out = r.show(&[]);
    assert_eq!(
        label(&stdout(&out), 4, pc),
        format!("sym_main+{:#x}", pc - exe.bias)
    );
    assert_eq!(stderr(&out), "", "a stripped binary is no error");
}

#[test]
fn stripped_binary_keeps_its_dynamic_symbols_and_names_nothing_else() {
    // Exported functions (-rdynamic) keep their names in .dynsym after strip; a static
    // one has none, and must not take the name of the function before it.
    let r = Rec::new("sym-dynsym", &["-g", "-rdynamic"], true);
    let ev = r.record(&["static"]);
    let objs = objects(&ev);
    let (pid, pc_read) = site_at(&ev, 4);
    let (_, pc_static) = site_at(&ev, 20);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    let dynsym = tool(
        "nm",
        &["-D".as_ref(), "--defined-only".as_ref(), r.exe.as_os_str()],
    );
    let addr = |sym: &str| {
        dynsym
            .lines()
            .find(|l| l.ends_with(&format!(" {sym}")))
            .map(|l| u64::from_str_radix(l.split(' ').next().unwrap(), 16).unwrap())
            .unwrap_or_else(|| panic!("{sym} in nm -D: {dynsym}"))
    };
    assert!(!dynsym.contains("sym_static_read"), "{dynsym}");
    // Some exported function lies before the static one (else this test proves nothing).
    let before = dynsym
        .lines()
        .filter(|l| l.contains(" T "))
        .filter(|l| {
            u64::from_str_radix(l.split(' ').next().unwrap(), 16).unwrap() < pc_static - exe.bias
        })
        .count();
    assert!(before > 0, "{dynsym}");
    let show = stdout(&r.show(&[]));
    let off = pc_read - exe.bias - addr("sym_read_status");
    assert_eq!(
        label(&show, 4, pc_read),
        format!("sym_read_status+{off:#x}")
    );
    assert_eq!(
        label(&show, 20, pc_static),
        format!("sym_main+{:#x}", pc_static - exe.bias)
    );
}

#[test]
fn removed_binary_gives_object_offset_and_one_note() {
    let r = Rec::new("sym-removed", &["-g"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc_read) = site_at(&ev, 4);
    let (_, pc_write) = site_at(&ev, 8);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    std::fs::remove_file(&r.exe).unwrap();
    let out = r.show(&[]);
    let show = stdout(&out);
    assert_eq!(
        label(&show, 4, pc_read),
        format!("sym_main+{:#x}", pc_read - exe.bias)
    );
    assert_eq!(
        label(&show, 8, pc_write),
        format!("sym_main+{:#x}", pc_write - exe.bias)
    );
    let err = stderr(&out);
    let path = r.exe.canonicalize().unwrap_or(r.exe.clone());
    let _ = path;
    assert_eq!(err.lines().count(), 1, "one note for the object: {err}");
    assert!(
        err.starts_with(&format!("mmio-trace: {}: cannot be read", exe.path))
            && err.contains("sym_main+0xOFF"),
        "{err}"
    );
}

#[test]
fn replaced_binary_never_gives_a_wrong_name() {
    let r = Rec::new("sym-replaced", &["-g"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 4);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    // Another build at the same path: other code, other build id.
    cc("sym_main", &r.exe, &["-g", "-O0"]);
    assert_ne!(build_id(&r.exe), exe.build);
    let out = r.show(&[]);
    let show = stdout(&out);
    assert_eq!(
        label(&show, 4, pc),
        format!("sym_main+{:#x}", pc - exe.bias)
    );
    assert!(!show.contains("sym_read_status"), "{show}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another build id"), "{err}");
}

#[test]
fn library_loaded_where_a_closed_one_was_gets_its_own_names() {
    // dlopen LIB, access, dlclose, dlopen LIB2 (the loader puts it at LIB's address, the
    // same PC), access: each access is named after its own library, in show and stats.
    let r = Rec::new("sym-reload", &["-g"], false);
    let (lib, lib2) = (r.dir.join("libsym.so"), r.dir.join("libsym2.so"));
    cc("sym_lib", &lib, &["-g", "-shared", "-fPIC"]);
    cc("sym_lib2", &lib2, &["-g", "-shared", "-fPIC"]);
    let ev = r.record(&["reload", lib.to_str().unwrap(), lib2.to_str().unwrap()]);
    let objs = objects(&ev);
    let (pid, pc1) = site_at(&ev, 16);
    let (_, pc2) = site_at(&ev, 24);
    let (o1, o2) = (object(&objs, pid, &lib), object(&objs, pid, &lib2));
    assert_eq!(
        o1.start, o2.start,
        "LIB2 at LIB's address (else this proves nothing)"
    );
    let want1 = format!(
        "sym_lib_poke+{:#x} (sym_lib.c:{})",
        pc1 - o1.bias - nm_addr(&lib, "sym_lib_poke"),
        site_line("sym_lib", "lib")
    );
    let want2 = format!(
        "sym_lib2_poke+{:#x} (sym_lib2.c:{})",
        pc2 - o2.bias - nm_addr(&lib2, "sym_lib2_poke"),
        site_line("sym_lib2", "lib2")
    );
    let show = stdout(&r.show(&[]));
    assert_eq!(label(&show, 16, pc1), want1);
    assert_eq!(label(&show, 24, pc2), want2);
    let log = trace_log(&r.dir);
    let out = mmio_trace(&["stats".as_ref(), "--by-site".as_ref(), log.as_os_str()]);
    let text = stdout(&out);
    for want in [&want1, &want2] {
        assert!(
            text.lines().any(|l| l.ends_with(&format!("  {want}"))
                && l.split_whitespace().take(2).eq(["0", "1"])),
            "{want} in {text}"
        );
    }
}

#[test]
fn binary_without_build_id_is_not_trusted() {
    // Nothing ties the file to what ran: object+offset, with a note, even though the
    // file is the very one recorded.
    let r = Rec::new("sym-noid", &["-g", "-Wl,--build-id=none"], false);
    let ev = r.record(&[]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 4);
    let exe = object(&objs, pid, &r.exe.canonicalize().unwrap());
    assert_eq!(exe.build, "-");
    let out = r.show(&[]);
    assert_eq!(
        label(&stdout(&out), 4, pc),
        format!("sym_main+{:#x}", pc - exe.bias)
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no build id"), "{err}");
}

#[test]
fn library_opened_after_the_first_map_is_symbolized() {
    let r = Rec::new("sym-dlopen", &["-g"], false);
    let lib = r.dir.join("libsym.so");
    cc("sym_lib", &lib, &["-g", "-shared", "-fPIC"]);
    let ev = r.record(&["dlopen", lib.to_str().unwrap()]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 16);
    let o = object(&objs, pid, &lib.canonicalize().unwrap());
    assert_eq!(o.build, build_id(&lib));
    // Logged after the MAP (it was not loaded then) and before the library's access.
    let at = |f: &dyn Fn(&Event) -> bool| ev.iter().position(f).unwrap();
    let map = at(&|e| matches!(e, Event::Map(_)));
    let mark =
        at(&|e| matches!(e, Event::Mark(m) if m.text.ends_with(lib.to_str().unwrap().as_bytes())));
    let access = at(&|e| matches!(e, Event::Access(a) if a.phys == 16));
    assert!(map < mark && mark < access, "{map} {mark} {access}");
    let off = pc - o.bias - nm_addr(&lib, "sym_lib_poke");
    let show = stdout(&r.show(&[]));
    assert_eq!(
        label(&show, 16, pc),
        format!(
            "sym_lib_poke+{off:#x} (sym_lib.c:{})",
            site_line("sym_lib", "lib")
        )
    );
}

#[test]
fn library_opened_by_a_relative_path_is_logged_with_an_absolute_one() {
    let r = Rec::new("sym-relative", &["-g"], false);
    let lib = r.dir.join("libsym.so");
    cc("sym_lib", &lib, &["-g", "-shared", "-fPIC"]);
    // The program runs in the library's directory and opens it as ./libsym.so; `show`
    // runs elsewhere.
    let ev = r.record_in(&r.dir, &["dlopen", "./libsym.so"]);
    let objs = objects(&ev);
    let (pid, pc) = site_at(&ev, 16);
    let o = object(
        &objs,
        pid,
        &r.dir.canonicalize().unwrap().join("./libsym.so"),
    );
    let off = pc - o.bias - nm_addr(&lib, "sym_lib_poke");
    let out = r.show(&[]);
    assert_eq!(
        label(&stdout(&out), 16, pc),
        format!(
            "sym_lib_poke+{off:#x} (sym_lib.c:{})",
            site_line("sym_lib", "lib")
        )
    );
    assert_eq!(stderr(&out), "");
}

/// The fork and exec children: their own `object` markers under their own pid, and
/// their accesses symbolized.
fn assert_child_symbolized(mode: &str) {
    let r = Rec::new(&format!("sym-{mode}"), &["-g"], false);
    let ev = r.record(&[mode]);
    let objs = objects(&ev);
    let (parent, _) = site_at(&ev, 4);
    let (child, pc) = site_at(&ev, 12);
    assert_ne!(parent, child);
    let exe = r.exe.canonicalize().unwrap();
    object(&objs, parent, &exe);
    let c = if mode == "exec" {
        // Logged twice under the child's pid: the parent's image it ran after the fork
        // (until exec), then its own image after exec.
        let v: Vec<&Obj> = objs
            .iter()
            .filter(|o| o.pid == child && Path::new(&o.path) == exe)
            .collect();
        assert_eq!(v.len(), 2, "{objs:#?}");
        v[1].clone()
    } else {
        object(&objs, child, &exe)
    };
    if mode == "fork" {
        // The child's objects are the parent's, logged again under its pid.
        let strip = |o: &Obj| (o.start, o.end, o.bias, o.build.clone(), o.path.clone());
        let of = |pid| {
            let mut v: Vec<_> = objs.iter().filter(|o| o.pid == pid).map(strip).collect();
            v.sort();
            v
        };
        assert_eq!(of(parent), of(child));
    }
    let off = pc - c.bias - nm_addr(&r.exe, "sym_child_read");
    let show = stdout(&r.show(&[]));
    assert_eq!(
        label(&show, 12, pc),
        format!(
            "sym_child_read+{off:#x} (sym_main.c:{})",
            site_line("sym_main", "child")
        )
    );
}

#[test]
fn fork_child_is_symbolized() {
    assert_child_symbolized("fork");
}

#[test]
fn exec_child_is_symbolized() {
    assert_child_symbolized("exec");
}

#[test]
fn fork_children_of_a_threaded_parent_are_symbolized_and_never_hang() {
    // Two threads keep making traced maps (each walks the loader's list under its lock)
    // while the main thread forks: a child born while the lock was held must not take it.
    let r = Rec::new("sym-forks", &["-g"], false);
    let mut child = record_cmd(&r.dir, &r.dev, &[])
        .arg(&r.exe)
        .arg(&r.dev)
        .args(["forks", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the recording hung (a fork child waiting for the loader's lock?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let ev = read_log(&trace_log(&r.dir));
    let objs = objects(&ev);
    let parent = ev
        .iter()
        .find_map(|e| match e {
            Event::Access(a) if a.phys == 4 => Some(a.pid),
            _ => None,
        })
        .unwrap();
    let exe = r.exe.canonicalize().unwrap();
    let p = object(&objs, parent, &exe);
    let kids: Vec<(u32, u64)> = sites(&ev)
        .into_iter()
        .filter(|s| s.2 == 12)
        .map(|s| (s.0, s.1))
        .collect();
    assert_eq!(kids.len(), 60);
    let off = kids[0].1 - p.bias - nm_addr(&r.exe, "sym_child_read");
    let want = format!(
        "sym_child_read+{off:#x} (sym_main.c:{})",
        site_line("sym_main", "child")
    );
    let show = stdout(&r.show(&[]));
    let lines: Vec<&str> = show
        .lines()
        .filter(|l| l.contains(" 0x0000000c "))
        .collect();
    assert_eq!(lines.len(), 60);
    for ((pid, pc), line) in kids.iter().zip(&lines) {
        // Each child logged the parent's objects under its own pid.
        assert_eq!(object(&objs, *pid, &exe).bias, p.bias);
        assert!(line.ends_with(&format!("pc {pc:#x} {want}")), "{line}");
    }
}

#[test]
fn thread_accesses_are_symbolized() {
    let r = Rec::new("sym-thread", &["-g"], false);
    let ev = r.record(&["thread"]);
    let (parent, _) = site_at(&ev, 4);
    let (tid, pc) = site_at(&ev, 12);
    assert_ne!(parent, tid, "the thread's own id");
    let objs = objects(&ev);
    let exe = object(&objs, parent, &r.exe.canonicalize().unwrap());
    let off = pc - exe.bias - nm_addr(&r.exe, "sym_child_read");
    let show = stdout(&r.show(&[]));
    assert_eq!(
        label(&show, 12, pc),
        format!(
            "sym_child_read+{off:#x} (sym_main.c:{})",
            site_line("sym_main", "child")
        )
    );
}

#[test]
fn binary_log_round_trip_keeps_objects_and_labels() {
    let r = Rec::new("sym-binary", &["-g"], false);
    let lib = r.dir.join("libsym.so");
    cc("sym_lib", &lib, &["-g", "-shared", "-fPIC"]);
    let ev = r.record(&["dlopen", lib.to_str().unwrap()]);
    let text = trace_log(&r.dir);
    let bin = r.dir.join("trace.bin");
    let back = r.dir.join("back.log");
    for (from, to, fmt) in [(&text, &bin, "binary"), (&bin, &back, "text")] {
        let out = mmio_trace(&[
            "convert".as_ref(),
            "--to".as_ref(),
            fmt.as_ref(),
            from.as_os_str(),
            to.as_os_str(),
        ]);
        assert_exit(&out, 0);
    }
    assert_eq!(objects(&read_log(&bin)), objects(&ev));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&text).unwrap());
    let show_text = stdout(&r.show(&[]));
    let show_bin = stdout(&mmio_trace(&["show".as_ref(), bin.as_os_str()]));
    assert_eq!(show_text, show_bin);
    let (_, pc) = site_at(&ev, 16);
    assert!(
        label(&show_bin, 16, pc).starts_with("sym_lib_poke+0x"),
        "{show_bin}"
    );
}

#[test]
fn stats_by_site_counts_per_call_site() {
    let r = Rec::new("sym-stats", &["-g"], false);
    let lib = r.dir.join("libsym.so");
    cc("sym_lib", &lib, &["-g", "-shared", "-fPIC"]);
    let ev = r.record(&["dlopen", lib.to_str().unwrap()]);
    let show = stdout(&r.show(&[]));
    let want: Vec<String> = [(4, "1 0"), (8, "0 1"), (16, "0 1")]
        .iter()
        .map(|&(phys, rw)| {
            let (_, pc) = site_at(&ev, phys);
            format!("{rw} {}", label(&show, phys, pc))
        })
        .collect();
    let log = trace_log(&r.dir);
    let out = mmio_trace(&["stats".as_ref(), "--by-site".as_ref(), log.as_os_str()]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let at = text
        .find("Call sites (3 of 3, hottest first):\n")
        .expect(&text);
    let rows: Vec<String> = text[at..]
        .lines()
        .skip(2)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[2..].join(" "))
        })
        .collect();
    let mut sorted = want.clone();
    // Equal counts: by label.
    sorted.sort_by(|a, b| a[4..].cmp(&b[4..]));
    assert_eq!(rows, sorted);
    let out = mmio_trace(&[
        "stats".as_ref(),
        "--by-site".as_ref(),
        "--json".as_ref(),
        log.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sites = v["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 3);
    let (_, pc) = site_at(&ev, 4);
    let s = sites
        .iter()
        .find(|s| s["pcs"][0] == format!("{pc:#x}"))
        .unwrap();
    assert_eq!(
        (s["reads"].as_u64(), s["writes"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(s["site"].as_str().unwrap(), &want[0][4..]);
    // Off: the PCs as recorded.
    let out = mmio_trace(&[
        "stats".as_ref(),
        "--by-site".as_ref(),
        "--no-symbols".as_ref(),
        log.as_os_str(),
    ]);
    assert!(
        stdout(&out).contains(&format!("  {pc:#x}\n")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn logs_without_object_markers_print_pcs_as_before() {
    // A kernel-format log with PCs and no objects: nothing is looked up.
    let dir = scratch("sym-kernel");
    let log = dir.join("k.log");
    std::fs::write(
        &log,
        "VERSION 20070824\nMAP 0.000001 1 0xfe000000 0xffffc90000000000 0x1000 0x0 0\n\
         R 4 0.000002 1 0xfe000004 0x5 0xffffffff81234567 0\n",
    )
    .unwrap();
    let a = mmio_trace(&["show".as_ref(), log.as_os_str()]);
    let b = mmio_trace(&["show".as_ref(), "--no-symbols".as_ref(), log.as_os_str()]);
    assert_exit(&a, 0);
    assert_eq!(stdout(&a), stdout(&b));
    assert!(
        stdout(&a).contains("pc 0xffffffff81234567\n"),
        "{}",
        stdout(&a)
    );
    assert_eq!(stderr(&a), "");
}

/// Rust call sites print demangled, without the hash: the demo driver runs inside the
/// `mmio-trace` binary itself (built with debug information).
#[test]
fn rust_call_sites_print_demangled() {
    let dir = std::env::temp_dir().join(format!("mmio-trace-symbols-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("demo.log");
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["demo", "-o"])
        .arg(&log)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_mmio-trace"))
        .args(["stats", "--by-site"])
        .arg(&log)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    // The driver's accessors (inlined into run_driver in a release build).
    let sites: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Call sites"))
        .skip(2)
        .collect();
    assert!(!sites.is_empty(), "{text}");
    assert!(
        sites
            .iter()
            .any(|l| l.contains("mmio_trace_record::demo::") && l.contains("(demo.rs:")),
        "{text}"
    );
    for l in sites {
        assert!(!l.contains("_ZN") && !l.contains("17h"), "{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
