//! What can be told about a process before trying to attach to it, with what to change.

use crate::Error;

/// The process `record --pid` attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its thread group id (the pid given, or the process of the thread id given).
    pub pid: i32,
    /// Its name (`/proc/PID/comm`).
    pub comm: String,
}

/// Field `name` of `/proc/PID/status` (`Tgid`, `TracerPid`, `State`...).
fn status_field(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    })
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Whether `pid` runs mmio-trace's preload tracer attached to a recording: the library
/// is loaded and the recording's shared memory (a memfd named `mmio-trace`) is mapped. A
/// library left dormant (its recording over, or its process on the ptrace route) does not
/// count.
fn traced_by_preload(pid: i32) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let mut lib = false;
    let mut shm = false;
    for l in maps.lines() {
        let path = l.split_whitespace().nth(5).unwrap_or("");
        lib |= path.ends_with(&format!("/{}", crate::locate::LIB_NAME));
        shm |= path == "/memfd:mmio-trace";
    }
    lib && shm
}

/// The pid of a live recorder whose recording process `pid` maps (the shared memory of
/// a `record` run: the preload library's, or a core's put in by `--route inject`), read
/// from the recording's header through `/proc/PID/mem`. A recording that ended (closed,
/// or its recorder gone: a core left inactive by a detach) does not count.
fn recorded_by(pid: i32) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let header = std::mem::size_of::<mmio_trace_ring::Header>();
    for l in maps.lines() {
        if l.split_whitespace().nth(5) != Some("/memfd:mmio-trace") {
            continue;
        }
        let Some(start) = l
            .split('-')
            .next()
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        else {
            continue;
        };
        let mut h = vec![0u8; header];
        if mem.read_exact_at(&mut h, start).is_err() {
            continue;
        }
        let word = |off: usize| u32::from_ne_bytes(h[off..off + 4].try_into().expect("4 bytes"));
        let recorder = word(std::mem::offset_of!(mmio_trace_ring::Header, recorder_pid));
        let closed = word(std::mem::offset_of!(mmio_trace_ring::Header, closed));
        if closed == 0
            && recorder != 0
            && std::path::Path::new(&format!("/proc/{recorder}")).exists()
        {
            return Some(recorder);
        }
    }
    None
}

/// Checks what makes an attach fail for certain before trying it: no such process, the
/// recorder itself, a process that has ended (a zombie), one already traced (a debugger,
/// strace, another `record --pid`), and what the kernel would not permit (another user's
/// process, one not dumpable, Yama's `ptrace_scope`: the engine's `check_attach`).
pub fn preflight(pid: i32) -> Result<Target, Error> {
    let refuse = |reason: String| Error::Attach { pid, reason };
    if pid <= 0 {
        return Err(refuse("not a process id (give a number above 0)".into()));
    }
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse("no such process".into()))
        }
        Err(e) => return Err(refuse(format!("cannot read /proc/{pid}/status: {e}"))),
    };
    let tgid: i32 = status_field(&status, "Tgid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(pid);
    let me = std::process::id() as i32;
    if tgid == me {
        return Err(refuse(
            "that is this recorder itself (give the pid of the program to trace)".into(),
        ));
    }
    if status_field(&status, "State").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return Err(refuse(
            "it has already exited (a zombie waiting for its parent)".into(),
        ));
    }
    let tracer: i32 = status_field(&status, "TracerPid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if tracer != 0 {
        // TracerPid names the tracing thread: say its process.
        let tracer = std::fs::read_to_string(format!("/proc/{tracer}/status"))
            .ok()
            .and_then(|s| status_field(&s, "Tgid")?.parse().ok())
            .unwrap_or(tracer);
        let name = comm(tracer);
        return Err(refuse(format!(
            "it is already traced by process {tracer} ({name}); a process can have one \
             tracer at a time (a debugger, strace, another `mmio-trace record --pid`): \
             detach that one first"
        )));
    }
    if traced_by_preload(tgid) {
        return Err(refuse(
            "it is already being recorded by `mmio-trace record` (its preload library is \
             loaded and attached to a recording): its accesses go to that recording; a \
             second tracer would take them away from it"
                .into(),
        ));
    }
    // What else the kernel would refuse (another user's process, one not dumpable, Yama's
    // ptrace_scope), said with what to change, before any file is touched.
    if let Some(r) = recorded_by(tgid) {
        return Err(refuse(format!(
            "it is already being recorded by `mmio-trace record` (process {r}; the tracer's \
             core is in it): its accesses go to that recording; a second tracer would take \
             them away from it"
        )));
    }
    if let Err(e) = mmio_trace_ptrace::check_attach(tgid) {
        return Err(refuse(e.to_string()));
    }
    Ok(Target {
        pid: tgid,
        comm: comm(tgid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(pid: i32) -> String {
        match preflight(pid) {
            Err(Error::Attach { reason, .. }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_targets_are_refused_with_the_reason() {
        assert_eq!(reason(0), "not a process id (give a number above 0)");
        assert_eq!(reason(-3), "not a process id (give a number above 0)");
        // Above the kernel's PID_MAX_LIMIT (4194304): never a process.
        assert_eq!(reason(4_194_305), "no such process");
        assert!(reason(std::process::id() as i32).starts_with("that is this recorder itself"));
    }
}
