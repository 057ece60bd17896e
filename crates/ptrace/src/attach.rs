//! Why attaching to a process would fail, said in advance and with what to change.
//!
//! The kernel's rules for `PTRACE_SEIZE` (facts from `__ptrace_may_access` and Yama): never
//! one's own thread group; never a task already traced; the tracer's real uid and gid must
//! equal all of the target's real, effective and saved ids, unless the tracer has
//! `CAP_SYS_PTRACE`; a non-dumpable target (set-uid program, `PR_SET_DUMPABLE` 0, changed
//! credentials) needs `CAP_SYS_PTRACE`; then Yama's `kernel.yama.ptrace_scope`: 0 classic,
//! 1 only descendants (or a tracer the target named with `PR_SET_PTRACER`) without the
//! capability, 2 only with the capability, 3 never.

use crate::Pid;

const CAP_SYS_PTRACE: u32 = 19;

/// A reason attaching to a process is impossible or not permitted; the message says what to
/// change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// No such process.
    #[error("no process {pid} (check the pid, e.g. `ps -p {pid}`)")]
    NoSuchProcess {
        /// The pid.
        pid: Pid,
    },
    /// The process has exited and waits to be reaped.
    #[error("process {pid} ({comm}) has already exited (a zombie waiting for its parent); there is nothing left to trace")]
    Zombie {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
    },
    /// The pid is the recorder itself.
    #[error("process {pid} is mmio-trace itself; give the pid of the program to trace")]
    OwnProcess {
        /// The pid.
        pid: Pid,
    },
    /// Another tracer holds the process.
    #[error("process {pid} ({comm}) is already traced by process {tracer} ({tracer_comm}); stop that tracer (debugger, strace, another mmio-trace) first")]
    AlreadyTraced {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
        /// The tracer's pid.
        tracer: Pid,
        /// The tracer's command name.
        tracer_comm: String,
    },
    /// The process runs as another user.
    #[error("process {pid} ({comm}) runs as user {target_uid} and mmio-trace as user {our_uid}; run mmio-trace as that user, or as root (CAP_SYS_PTRACE)")]
    OtherUser {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
        /// Its effective uid.
        target_uid: u32,
        /// The recorder's real uid.
        our_uid: u32,
    },
    /// A set-uid or set-gid program (its ids differ from each other).
    #[error("process {pid} ({comm}) is a set-uid or set-gid program (uids {uids:?}, gids {gids:?}: real, effective, saved); attaching to it needs root (CAP_SYS_PTRACE)")]
    SetId {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
        /// Real, effective, saved uid.
        uids: [u32; 3],
        /// Real, effective, saved gid.
        gids: [u32; 3],
    },
    /// The process is not dumpable.
    #[error("process {pid} ({comm}) is not dumpable (it called prctl(PR_SET_DUMPABLE, 0), changed its credentials, or runs a set-uid or unreadable program); attaching to it needs root (CAP_SYS_PTRACE)")]
    NotDumpable {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
    },
    /// Yama forbids it.
    #[error("{}", yama_message(*pid, comm, *scope))]
    Yama {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
        /// `kernel.yama.ptrace_scope`.
        scope: u8,
    },
    /// The kernel said no, for none of the reasons above.
    #[error("not permitted to attach to process {pid} ({comm}): no uid, dumpable or Yama reason found, so a security module (SELinux, AppArmor) or a user namespace probably forbids it; run mmio-trace as root, or start the program under `mmio-trace record -- PROGRAM` instead")]
    Denied {
        /// The pid.
        pid: Pid,
        /// Its command name.
        comm: String,
    },
}

fn yama_message(pid: Pid, comm: &str, scope: u8) -> String {
    let head = format!("attaching to process {pid} ({comm}) is restricted by Yama (kernel.yama.ptrace_scope = {scope}: ");
    match scope {
        1 => head + "only a tracer's own descendants, or a tracer the program named with prctl(PR_SET_PTRACER)); run mmio-trace as root (or give it CAP_SYS_PTRACE), allow attaching for all with `sudo sysctl kernel.yama.ptrace_scope=0`, or start the program under `mmio-trace record -- PROGRAM` instead",
        2 => head + "only tracers with CAP_SYS_PTRACE); run mmio-trace as root, or lower the setting with `sudo sysctl kernel.yama.ptrace_scope=1` (or 0)",
        _ => head + "no process may attach, and the setting cannot be lowered until reboot); start the program under `mmio-trace record -- PROGRAM` instead",
    }
}

/// What [`diagnose`] decides from: the target as `/proc` shows it and the recorder's own
/// credentials. [`AttachFacts::gather`] reads them; tests build them by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachFacts {
    /// The target pid.
    pub pid: Pid,
    /// `/proc/PID` exists.
    pub exists: bool,
    /// Its state letter (`Z` zombie, `X` dead, `R`, `S`, `T`, `t`...).
    pub state: char,
    /// Its command name.
    pub comm: String,
    /// The target belongs to the recorder's own process.
    pub own_process: bool,
    /// Its tracer (pid, command name), if traced.
    pub tracer: Option<(Pid, String)>,
    /// Real, effective, saved uid of the target.
    pub uids: [u32; 3],
    /// Real, effective, saved gid of the target.
    pub gids: [u32; 3],
    /// The recorder's real uid.
    pub our_uid: u32,
    /// The recorder's real gid.
    pub our_gid: u32,
    /// The recorder has CAP_SYS_PTRACE in its effective set.
    pub cap_sys_ptrace: bool,
    /// The target is dumpable (`None`: cannot tell, e.g. it runs as root).
    pub dumpable: Option<bool>,
    /// `kernel.yama.ptrace_scope` (`None`: Yama absent).
    pub yama_scope: Option<u8>,
    /// The target descends from the recorder.
    pub descendant: bool,
}

/// The first reason, in the kernel's order of checks, that attaching described by `facts`
/// would fail; `None` if nothing visible forbids it.
pub fn diagnose(f: &AttachFacts) -> Option<AttachError> {
    let (pid, comm) = (f.pid, f.comm.clone());
    if !f.exists {
        return Some(AttachError::NoSuchProcess { pid });
    }
    if f.own_process {
        return Some(AttachError::OwnProcess { pid });
    }
    if matches!(f.state, 'Z' | 'X') {
        return Some(AttachError::Zombie { pid, comm });
    }
    if let Some((tracer, tracer_comm)) = &f.tracer {
        return Some(AttachError::AlreadyTraced {
            pid,
            comm,
            tracer: *tracer,
            tracer_comm: tracer_comm.clone(),
        });
    }
    if !f.cap_sys_ptrace {
        let same_ids =
            f.uids.iter().all(|&u| u == f.our_uid) && f.gids.iter().all(|&g| g == f.our_gid);
        if !same_ids {
            let set_id =
                f.uids.iter().any(|&u| u != f.uids[0]) || f.gids.iter().any(|&g| g != f.gids[0]);
            if set_id {
                return Some(AttachError::SetId {
                    pid,
                    comm,
                    uids: f.uids,
                    gids: f.gids,
                });
            }
            return Some(AttachError::OtherUser {
                pid,
                comm,
                target_uid: f.uids[1],
                our_uid: f.our_uid,
            });
        }
        if f.dumpable == Some(false) {
            return Some(AttachError::NotDumpable { pid, comm });
        }
    }
    match f.yama_scope {
        Some(3) => Some(AttachError::Yama {
            pid,
            comm,
            scope: 3,
        }),
        Some(2) if !f.cap_sys_ptrace => Some(AttachError::Yama {
            pid,
            comm,
            scope: 2,
        }),
        Some(1) if !f.cap_sys_ptrace && !f.descendant => Some(AttachError::Yama {
            pid,
            comm,
            scope: 1,
        }),
        _ => None,
    }
}

/// Fields of `/proc/PID/status`.
struct Status {
    name: String,
    state: char,
    ppid: Pid,
    tgid: Pid,
    tracer: Pid,
    uids: [u32; 3],
    gids: [u32; 3],
    cap_eff: u64,
}

fn status(pid: Pid) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut s = Status {
        name: String::new(),
        state: '?',
        ppid: 0,
        tgid: 0,
        tracer: 0,
        uids: [0; 3],
        gids: [0; 3],
        cap_eff: 0,
    };
    let ids = |v: &str| {
        let mut a = [0u32; 3];
        for (slot, x) in a.iter_mut().zip(v.split_whitespace()) {
            *slot = x.parse().unwrap_or(0);
        }
        a
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Name" => s.name = v.to_string(),
            "State" => s.state = v.chars().next().unwrap_or('?'),
            "PPid" => s.ppid = v.parse().unwrap_or(0),
            "Tgid" => s.tgid = v.parse().unwrap_or(0),
            "TracerPid" => s.tracer = v.parse().unwrap_or(0),
            "Uid" => s.uids = ids(v),
            "Gid" => s.gids = ids(v),
            "CapEff" => s.cap_eff = u64::from_str_radix(v, 16).unwrap_or(0),
            _ => {}
        }
    }
    Some(s)
}

impl AttachFacts {
    /// Reads the facts about `pid` and the calling process from `/proc`.
    pub fn gather(pid: Pid) -> AttachFacts {
        let me = std::process::id() as Pid;
        let mine = status(me);
        let mut f = AttachFacts {
            pid,
            our_uid: mine.as_ref().map_or(0, |s| s.uids[0]),
            our_gid: mine.as_ref().map_or(0, |s| s.gids[0]),
            cap_sys_ptrace: mine
                .as_ref()
                .is_some_and(|s| s.cap_eff & (1 << CAP_SYS_PTRACE) != 0),
            yama_scope: std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            ..AttachFacts::default()
        };
        let Some(st) = (pid > 0).then(|| status(pid)).flatten() else {
            return f;
        };
        f.exists = true;
        f.state = st.state;
        f.comm = st.name.clone();
        f.own_process = st.tgid == me;
        f.uids = st.uids;
        f.gids = st.gids;
        if st.tracer != 0 {
            let tc = status(st.tracer)
                .map(|s| s.name)
                .unwrap_or_else(|| "?".into());
            f.tracer = Some((st.tracer, tc));
        }
        // /proc/PID/* belongs to root while the process is not dumpable; for a process running
        // as root that tells nothing.
        if st.uids[1] != 0 {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/mem")) {
                f.dumpable = Some(m.uid() != 0);
            }
        }
        let mut p = st.ppid;
        for _ in 0..4096 {
            if p <= 1 {
                break;
            }
            if p == me {
                f.descendant = true;
                break;
            }
            p = status(p).map_or(0, |s| s.ppid);
        }
        f
    }
}

/// Checks, before seizing, whether process `pid` can be attached to; the error says what to
/// change. Passing is no guarantee (a security module may still refuse).
pub fn check_attach(pid: Pid) -> Result<(), AttachError> {
    match diagnose(&AttachFacts::gather(pid)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The most likely reason for an `EPERM` from `PTRACE_SEIZE` of `pid`.
pub(crate) fn explain_eperm(pid: Pid) -> AttachError {
    let f = AttachFacts::gather(pid);
    diagnose(&f).unwrap_or(AttachError::Denied { pid, comm: f.comm })
}
