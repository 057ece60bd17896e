//! Which route traces a program: the preload library where the dynamic loader will load
//! it, the inject route where it will not (a static executable, a Go program, a program
//! that runs set-uid, set-gid or with file capabilities). The ptrace route is only ever
//! chosen by `--route ptrace`, or when the inject route's core cannot be put into a
//! program.
//!
//! The program is found as `execvp` finds it (through `PATH` when its name has no `/`),
//! and judged by `mmio_trace_tracer::exe_kind`, the check the preload library also makes
//! before a traced process execs (to hand it over to the recorder).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mmio_trace_tracer::exe_kind::{self, Verdict, Why};

pub use crate::Route;

impl Route {
    /// The route's name, as `--route` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Route::Preload => "preload",
            Route::Ptrace => "ptrace",
            Route::Inject => "inject",
        }
    }
}

/// The route chosen for a program, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The route.
    pub route: Route,
    /// Why, in a few words (`static executable`, `Go program`...).
    pub reason: String,
    /// The program gains privileges at exec (set-uid, set-gid, file capabilities): under
    /// ptrace it keeps them only when the recorder may trace privileged programs.
    pub privileged: bool,
    /// The program exists but could not be read to be judged (an execute-only file):
    /// the preload route was taken by default.
    pub unreadable: bool,
}

impl Choice {
    /// The start marker: `mmio-trace: route ptrace (static executable)`.
    pub fn mark(&self) -> String {
        format!("mmio-trace: route {} ({})", self.route.name(), self.reason)
    }
}

/// The route for `program` (as given on the command line); `forced` is `--route`'s
/// choice when it is not `auto`. A program that cannot be read goes the preload route
/// (the exec then fails or runs as it would anyway), with the reason saying so.
pub fn choose(program: &OsStr, forced: Option<Route>) -> Choice {
    if let Some(route) = forced {
        return Choice {
            route,
            reason: "forced by --route".to_string(),
            privileged: false,
            unreadable: false,
        };
    }
    let Some(path) = resolve(program, std::env::var_os("PATH").as_deref()) else {
        return Choice {
            route: Route::Preload,
            reason: format!("{} not found in PATH", program.to_string_lossy()),
            privileged: false,
            unreadable: false,
        };
    };
    let exe = exe_kind::classify(path.as_os_str().as_bytes());
    let script = |what: String| {
        if exe.script {
            format!("script whose interpreter is a {what}")
        } else {
            what
        }
    };
    let choice = |route, reason| Choice {
        route,
        reason,
        privileged: false,
        unreadable: false,
    };
    match exe.verdict {
        Verdict::Ptrace(why) => Choice {
            route: Route::Inject,
            reason: script(why.text().to_string()),
            privileged: matches!(why, Why::SetUid | Why::SetGid | Why::Capabilities),
            unreadable: false,
        },
        Verdict::Dynamic => choice(Route::Preload, script("dynamic executable".to_string())),
        Verdict::Unreadable(errno) => Choice {
            route: Route::Preload,
            reason: format!(
                "cannot read {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(errno)
            ),
            privileged: false,
            // Only a file we may not read (execute-only) runs with its route unknown; a
            // missing file or a directory is the exec's error to report.
            unreadable: errno == libc::EACCES || errno == libc::EPERM,
        },
        Verdict::NotElf => choice(
            Route::Preload,
            script("file that is not an ELF executable".to_string()),
        ),
        Verdict::Foreign => choice(
            Route::Preload,
            script("program for another architecture (not x86-64)".to_string()),
        ),
    }
}

/// Why the dynamic loader of `program` (found as [`choose`] finds it) cannot load the
/// preload library, if it cannot (a musl program): for `--route preload` forced on it.
pub fn foreign_loader(program: &OsStr) -> Option<Why> {
    let path = resolve(program, std::env::var_os("PATH").as_deref())?;
    match exe_kind::classify(path.as_os_str().as_bytes()).needs_ptrace() {
        Some(why @ (Why::Musl | Why::OtherLoader)) => Some(why),
        _ => None,
    }
}

/// The file `execvp` would run for `program`: itself when its name has a `/`, else the
/// first executable regular file of that name in `path` (the `PATH` value; unset, the
/// default search list of glibc's `execvp`). An empty entry is the current directory.
pub fn resolve(program: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = path.map_or_else(|| OsString::from("/bin:/usr/bin"), OsStr::to_owned);
    path.as_bytes()
        .split(|&c| c == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(program)
        })
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("mmio-trace-route-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Builds a C program that prints its euid with `cc EXTRA`.
    fn cc(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
        let src = dir.join("p.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"%d\\n\",(int)geteuid());return 0;}\n",
        )
        .unwrap();
        let exe = dir.join(name);
        let st = Command::new("cc")
            .args(extra)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("a C compiler (cc) is needed");
        assert!(st.success(), "cc {extra:?}");
        exe
    }

    fn auto(p: &Path) -> Choice {
        choose(p.as_os_str(), None)
    }

    fn inject(reason: &str) -> Choice {
        Choice {
            route: Route::Inject,
            reason: reason.to_string(),
            privileged: ["set-uid program", "set-gid program", "file capabilities"]
                .contains(&reason),
            unreadable: false,
        }
    }

    fn preload(reason: &str) -> Choice {
        Choice {
            route: Route::Preload,
            reason: reason.to_string(),
            privileged: false,
            unreadable: false,
        }
    }

    #[test]
    fn dynamic_and_static_c_programs() {
        let d = scratch("c");
        assert_eq!(auto(&cc(&d, "dyn", &[])), preload("dynamic executable"));
        assert_eq!(
            auto(&cc(&d, "stat", &["-static"])),
            inject("static executable")
        );
        // Static and position-independent: still no PT_INTERP.
        assert_eq!(
            auto(&cc(&d, "spie", &["-static-pie"])),
            inject("static executable")
        );
        assert_eq!(
            auto(&cc(&d, "stat2", &["-static"])).mark(),
            "mmio-trace: route inject (static executable)"
        );
        assert_eq!(
            choose(
                cc(&d, "stat3", &["-static"]).as_os_str(),
                Some(Route::Preload)
            ),
            preload("forced by --route")
        );
    }

    #[test]
    fn musl_static_program() {
        let d = scratch("musl");
        let src = d.join("m.c");
        std::fs::write(&src, "int main(void){return 0;}\n").unwrap();
        let exe = d.join("m");
        let st = Command::new("musl-gcc")
            .args(["-static", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("musl-gcc is needed (Debian: apt-get install musl-tools)");
        assert!(st.success());
        assert_eq!(auto(&exe), inject("static executable"));
        // Dynamic: musl's loader cannot load the preload library (built against glibc).
        let dynamic = d.join("md");
        let st = Command::new("musl-gcc")
            .arg("-o")
            .arg(&dynamic)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(auto(&dynamic), inject("musl program"));
        assert_eq!(
            auto(&dynamic).mark(),
            "mmio-trace: route inject (musl program)"
        );
    }

    #[test]
    fn go_programs_static_and_cgo() {
        let d = scratch("go");
        std::fs::write(
            d.join("main.go"),
            "package main\nimport \"fmt\"\nfunc main(){ fmt.Println(1) }\n",
        )
        .unwrap();
        let build = |out: &str, cgo: &str, extra: &[&str]| {
            let st = Command::new("go")
                .current_dir(&d)
                .env("GOCACHE", d.join("cache"))
                .env("GOPATH", d.join("gopath"))
                .env("GO111MODULE", "off")
                .env("CGO_ENABLED", cgo)
                .arg("build")
                .args(extra)
                .args(["-o", out, "main.go"])
                .status()
                .expect("the Go toolchain is needed (Debian: apt-get install golang-go)");
            assert!(st.success(), "go build {out}");
            d.join(out)
        };
        assert_eq!(auto(&build("plain", "0", &[])), inject("Go program"));
        // Dynamic (has PT_INTERP), yet its runtime still maps by raw syscall.
        assert_eq!(
            auto(&build("cgo", "1", &["-ldflags=-linkmode=external"])),
            inject("Go program")
        );
        // Stripped: no section headers to name, the note segment still says Go.
        assert_eq!(
            auto(&build("stripped", "0", &["-ldflags=-s -w"])),
            inject("Go program")
        );
    }

    #[test]
    fn set_id_bits_and_capabilities() {
        use std::os::unix::fs::{chown, PermissionsExt};
        let d = scratch("ids");
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // Set-uid to ourselves: no change of identity, LD_PRELOAD is honoured.
        let own = cc(&d, "own", &[]);
        mode(&own, 0o4755);
        assert_eq!(auto(&own), preload("dynamic executable"));
        if uid != 0 {
            eprintln!("not root: cannot make set-uid files of another user; skipped the rest");
            return;
        }
        let other = cc(&d, "other", &[]);
        chown(&other, Some(65534), None).unwrap();
        mode(&other, 0o4755);
        assert_eq!(auto(&other), inject("set-uid program"));
        let grp = cc(&d, "grp", &[]);
        chown(&grp, None, Some(gid + 1)).unwrap();
        mode(&grp, 0o2755);
        assert_eq!(auto(&grp), inject("set-gid program"));
        // Set-gid without group execute is mandatory locking, not an identity change.
        mode(&grp, 0o2745);
        assert_eq!(auto(&grp), preload("dynamic executable"));
        let caps = cc(&d, "caps", &[]);
        let st = Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(&caps)
            .status()
            .expect("setcap is needed (Debian: apt-get install libcap2-bin)");
        assert!(st.success());
        assert_eq!(auto(&caps), inject("file capabilities"));
    }

    #[test]
    fn scripts_follow_their_interpreter_once() {
        let d = scratch("script");
        let stat = cc(&d, "stat", &["-static"]);
        let s1 = d.join("s1");
        std::fs::write(&s1, format!("#!{} -x\n", stat.display())).unwrap();
        assert_eq!(
            auto(&s1),
            inject("script whose interpreter is a static executable")
        );
        let s2 = d.join("s2");
        std::fs::write(&s2, "#!/bin/sh\necho\n").unwrap();
        assert_eq!(
            auto(&s2),
            preload("script whose interpreter is a dynamic executable")
        );
        // A script whose interpreter is a script: followed once only, not an ELF file.
        let s3 = d.join("s3");
        std::fs::write(&s3, format!("#!{}\n", s2.display())).unwrap();
        assert_eq!(
            auto(&s3),
            preload("script whose interpreter is a file that is not an ELF executable")
        );
    }

    #[test]
    fn path_search_and_unreadable_programs() {
        let d = scratch("path");
        let stat = cc(&d, "mystatic", &["-static"]);
        let empty = d.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        // Not executable: skipped, as execvp does.
        std::fs::write(empty.join("mystatic"), "x").unwrap();
        let path = std::env::join_paths([&empty, &d]).unwrap();
        assert_eq!(resolve(OsStr::new("mystatic"), Some(&path)), Some(stat));
        assert_eq!(resolve(OsStr::new("nope-not-here"), Some(&path)), None);
        assert_eq!(
            resolve(OsStr::new("./rel/x"), Some(&path)),
            Some(PathBuf::from("./rel/x"))
        );
        let missing = d.join("missing");
        assert_eq!(
            auto(&missing),
            preload(&format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ))
        );
        let text = d.join("text");
        std::fs::write(&text, "hello").unwrap();
        assert_eq!(auto(&text), preload("file that is not an ELF executable"));
    }
}
