//! The embedded agent blob is freestanding: an ELF the recorder can map anywhere in a
//! program that has no libc or loader of its own, relocate with base + addend and call. A
//! libc call, a thread-local, an IFUNC, a constructor or an imported symbol added to the
//! tracer's no_std build fails here (most already fail the blob's link).

use object::elf;
use object::read::elf::{
    Dyn as _, FileHeader as _, ProgramHeader as _, Rela as _, SectionHeader as _, Sym as _,
};
use object::Endianness;

use mmio_trace_record::agent;

/// What makes `data` unfit to be loaded as the agent: one line per problem (empty: fit).
fn problems(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let h = match elf::FileHeader64::<Endianness>::parse(data) {
        Ok(h) => h,
        Err(e) => return vec![format!("not an ELF64 file: {e}")],
    };
    let e = h.endian().expect("endianness");
    if h.e_machine(e) != elf::EM_X86_64 {
        out.push(format!("machine {} is not x86-64", h.e_machine(e)));
    }
    if h.e_type(e) != elf::ET_DYN {
        out.push(format!(
            "type {} is not ET_DYN (position-independent)",
            h.e_type(e)
        ));
    }
    let phs = h.program_headers(e, data).expect("program headers");
    let mut dynamic = None;
    for ph in phs {
        let (t, f) = (ph.p_type(e), ph.p_flags(e));
        match t {
            elf::PT_INTERP => out.push("PT_INTERP: asks for a dynamic loader".into()),
            elf::PT_TLS => out.push("PT_TLS: has thread-local storage".into()),
            elf::PT_DYNAMIC => dynamic = ph.dynamic(e, data).expect("dynamic section"),
            _ => {}
        }
        if f & elf::PF_W != 0 && f & elf::PF_X != 0 {
            out.push(format!("segment type {t:#x} is writable and executable"));
        }
        if t == elf::PT_GNU_STACK && f & elf::PF_X != 0 {
            out.push("asks for an executable stack".into());
        }
    }
    for d in dynamic.unwrap_or_default() {
        let (tag, val) = (d.d_tag(e) as u32, d.d_val(e));
        match tag {
            elf::DT_NEEDED => out.push("DT_NEEDED: depends on a shared library".into()),
            elf::DT_TEXTREL => out.push("DT_TEXTREL: relocates code".into()),
            elf::DT_FLAGS if val & u64::from(elf::DF_TEXTREL) != 0 => {
                out.push("DF_TEXTREL: relocates code".into())
            }
            elf::DT_JMPREL => out.push("DT_JMPREL: has PLT relocations".into()),
            elf::DT_REL => out.push("DT_REL: has REL relocations".into()),
            elf::DT_INIT | elf::DT_INIT_ARRAY | elf::DT_PREINIT_ARRAY => {
                out.push(format!("dynamic tag {tag:#x}: code that must run at load"))
            }
            _ => {}
        }
    }
    let sections = h.sections(e, data).expect("section headers");
    for s in sections.iter() {
        if let Some((relas, _)) = s.rela(e, data).expect("relocations") {
            for r in relas {
                let t = r.r_type(e, false);
                if t != elf::R_X86_64_RELATIVE {
                    out.push(format!(
                        "relocation type {t} at {:#x} (only R_X86_64_RELATIVE is applied)",
                        r.r_offset(e)
                    ));
                }
            }
        }
    }
    let syms = sections
        .symbols(e, data, elf::SHT_DYNSYM)
        .expect("dynamic symbols");
    for (i, s) in syms.iter().enumerate().skip(1) {
        if s.st_shndx(e) == elf::SHN_UNDEF {
            let name = syms.symbol_name(e, s).unwrap_or(b"?");
            out.push(format!(
                "undefined dynamic symbol {} (#{i})",
                String::from_utf8_lossy(name)
            ));
        }
    }
    out
}

/// The defined dynamic symbol `name`: (value, size, type).
fn export(data: &[u8], name: &str) -> Option<(u64, u64, u8)> {
    let h = elf::FileHeader64::<Endianness>::parse(data).ok()?;
    let e = h.endian().ok()?;
    let sections = h.sections(e, data).ok()?;
    let syms = sections.symbols(e, data, elf::SHT_DYNSYM).ok()?;
    syms.iter().find_map(|s| {
        (syms.symbol_name(e, s).ok()? == name.as_bytes()
            && s.st_shndx(e) != elf::SHN_UNDEF
            && s.st_bind() == elf::STB_GLOBAL)
            .then(|| (s.st_value(e), s.st_size(e), s.st_type()))
    })
}

#[test]
fn the_blob_is_a_freestanding_static_pie() {
    assert!(
        agent::BLOB.len() > 4096,
        "blob of {} bytes",
        agent::BLOB.len()
    );
    let p = problems(agent::BLOB);
    assert!(
        p.is_empty(),
        "the agent blob is not freestanding:\n{}",
        p.join("\n")
    );
}

#[test]
fn the_blob_exports_its_entry_points() {
    for name in agent::EXPORTS {
        let Some((value, size, kind)) = export(agent::BLOB, name) else {
            panic!("{name} is not exported by the agent blob");
        };
        assert_ne!(value, 0, "{name}");
        let want = if *name == agent::PARAMS {
            elf::STT_OBJECT
        } else {
            elf::STT_FUNC
        };
        assert_eq!(kind, want, "{name}: symbol type");
        if *name == agent::PARAMS {
            assert_eq!(size, agent::PARAMS_LEN as u64, "{name}: size");
        }
    }
    // Nothing else: the blob's own memcpy & co. must not be found by a loader that
    // resolves a program's symbols.
    let h = elf::FileHeader64::<Endianness>::parse(agent::BLOB).unwrap();
    let e = h.endian().unwrap();
    let sections = h.sections(e, agent::BLOB).unwrap();
    let syms = sections.symbols(e, agent::BLOB, elf::SHT_DYNSYM).unwrap();
    let mut names: Vec<String> = syms
        .iter()
        .skip(1)
        .map(|s| String::from_utf8_lossy(syms.symbol_name(e, s).unwrap()).into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = agent::EXPORTS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

/// The checker itself finds what it looks for: an ordinary dynamic program (this test)
/// has a loader, libraries, imports and PLT relocations.
#[test]
fn the_checks_reject_an_ordinary_program() {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let p = problems(&exe).join("\n");
    for want in [
        "PT_INTERP",
        "DT_NEEDED",
        "undefined dynamic symbol",
        "relocation type",
    ] {
        assert!(
            p.contains(want),
            "{want} not reported for a dynamic program:\n{p}"
        );
    }
    assert!(problems(b"not an elf")
        .iter()
        .any(|l| l.contains("not an ELF64")));
}

/// The agent has its own lock file (it is not a workspace member); the crates it shares
/// with the workspace must be the same versions, or the two builds would diverge (and an
/// offline build of the agent need crates the workspace never fetched).
#[test]
fn the_agent_lock_file_agrees_with_the_workspace() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let versions = |path: &str| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let mut out = Vec::new();
        let mut name = None;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_string());
            } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
                out.push((n, v.trim_matches('"').to_string()));
            }
        }
        out
    };
    let workspace = versions("Cargo.lock");
    let agent = versions("crates/agent/Cargo.lock");
    assert!(agent.iter().any(|(n, _)| n == "iced-x86"), "{agent:?}");
    for (n, v) in &agent {
        if n == "mmio-trace-agent" {
            continue;
        }
        assert!(
            workspace.iter().any(|(wn, wv)| wn == n && wv == v),
            "crates/agent/Cargo.lock has {n} {v}, the workspace's Cargo.lock does not: \
             run `cargo update --manifest-path crates/agent/Cargo.toml -p {n} --precise ...`"
        );
    }
}
