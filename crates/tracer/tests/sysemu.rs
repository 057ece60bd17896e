//! System-call virtualisation (`tracer::sysemu`): the seccomp filter's verdicts, checked
//! with a BPF interpreter, and the SIGSYS handler in real processes.
//!
//! A filter cannot be removed, so each process test runs in a fresh copy of this test
//! binary (`SYSEMU_CHILD` set, the one test selected): the copy starts the tracer, installs
//! the filter with the binary's own code as the exempt range, and makes raw system calls
//! through libc's `syscall()`, which lies outside that range, as a static program's or
//! Go's own `syscall` instructions would.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mmio_trace_ring::{Consumer, Kind, Record};
use mmio_trace_tracer as tracer;
use tracer::sysemu;

const PAGE: usize = 4096;
const DEV_LEN: usize = 2 * PAGE;

// ---------------------------------------------------------------------------------------
// The filter, interpreted.

/// `struct seccomp_data` as the kernel hands it to the filter.
#[derive(Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> u32 {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_le_bytes());
        b[4..8].copy_from_slice(&self.arch.to_le_bytes());
        b[8..16].copy_from_slice(&self.ip.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let o = off as usize;
        assert!(
            o % 4 == 0 && o + 4 <= 64,
            "load outside seccomp_data: {off}"
        );
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
}

/// Runs a classic BPF program as the kernel's seccomp does (the instructions a seccomp
/// filter may use), checking every jump lands inside the program.
fn run_bpf(prog: &[libc::sock_filter], d: &Data) -> u32 {
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        assert!(pc < prog.len(), "ran off the program's end");
        let i = prog[pc];
        let class = u32::from(i.code) & 0x07;
        match class {
            c if c == libc::BPF_LD => {
                assert_eq!(
                    u32::from(i.code),
                    libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
                );
                a = d.word(i.k);
                pc += 1;
            }
            c if c == libc::BPF_JMP => {
                let op = u32::from(i.code) & 0xf0;
                if op == libc::BPF_JA {
                    pc += 1 + i.k as usize;
                    continue;
                }
                assert_eq!(
                    u32::from(i.code) & 0x08,
                    libc::BPF_K,
                    "jumps compare with k"
                );
                let taken = match op {
                    o if o == libc::BPF_JEQ => a == i.k,
                    o if o == libc::BPF_JGT => a > i.k,
                    o if o == libc::BPF_JGE => a >= i.k,
                    o if o == libc::BPF_JSET => a & i.k != 0,
                    o => panic!("unexpected jump op {o:#x}"),
                };
                pc += 1 + usize::from(if taken { i.jt } else { i.jf });
            }
            c if c == libc::BPF_RET => {
                assert_eq!(u32::from(i.code) & 0x18, libc::BPF_K);
                return i.k;
            }
            c => panic!("unexpected instruction class {c:#x}"),
        }
    }
}

const ALLOW: u32 = 0x7fff_0000;
const TRAP: u32 = 0x0003_0000 | sysemu::FILTER_DATA;
const X86_64: u32 = 0xc000_003e;
const I386: u32 = 0x4000_0003;

fn verdict(lo: u64, hi: u64, nr: u32, arch: u32, ip: u64, args: [u64; 6]) -> u32 {
    let mut prog = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; sysemu::FILTER_MAX];
    let n = sysemu::filter(lo, hi, &mut prog);
    assert!(n > 0 && n <= sysemu::FILTER_MAX);
    run_bpf(&prog[..n], &Data { nr, arch, ip, args })
}

fn buffer_verdict(
    range: Option<(u64, u64)>,
    vectors: bool,
    nr: u32,
    ip: u64,
    args: [u64; 6],
) -> u32 {
    let mut prog = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; sysemu::FILTER_MAX];
    let (lo, hi) = (0x2aa0_0000_0000u64, 0x2aa0_0080_0000u64);
    let n = sysemu::filter_buffers(lo, hi, range, vectors, &mut prog);
    assert!(n > 0 && n <= sysemu::FILTER_MAX);
    run_bpf(
        &prog[..n],
        &Data {
            nr,
            arch: X86_64,
            ip,
            args,
        },
    )
}

#[test]
fn buffer_filter_traps_the_calls_aimed_at_its_region() {
    // A region across a 4 GiB line, and one inside one.
    for (rlo, rhi) in [
        (0x7f00_ffff_0000u64, 0x7f01_0000_2000u64),
        (0x7f12_3450_0000, 0x7f12_3451_0000),
    ] {
        let ip = 0x40_1000u64;
        let core = 0x2aa0_0000_1000u64;
        let r = Some((rlo, rhi));
        let v = |nr, args| buffer_verdict(r, false, nr, ip, args);
        // The pointer argument of each call, at the region's ends and just outside.
        for (nr, arg) in [
            (0u32, 1usize), // read
            (1, 1),         // write
            (17, 1),        // pread64
            (45, 1),        // recvfrom
            (16, 2),        // ioctl
            (262, 2),       // newfstatat
            (332, 4),       // statx
            (318, 0),       // getrandom
            (53, 3),        // socketpair
            (79, 0),        // getcwd
        ] {
            let at = |p: u64| {
                let mut a = [0u64; 6];
                a[arg] = p;
                // Another argument in the region proves nothing.
                a[(arg + 1) % 6] = rlo;
                a
            };
            assert_eq!(v(nr, at(rlo)), TRAP, "{nr} at the start");
            assert_eq!(v(nr, at(rhi - 1)), TRAP, "{nr} at the end");
            assert_eq!(v(nr, at(rhi)), ALLOW, "{nr} past the end");
            assert_eq!(v(nr, at(rlo - 1)), ALLOW, "{nr} below");
            assert_eq!(v(nr, at(0x7ffd_0000_0000)), ALLOW, "{nr} on a stack");
            // The core's own calls pass.
            assert_eq!(buffer_verdict(r, false, nr, core, at(rlo)), ALLOW);
        }
        // Vector calls: only in the filter that traps them, wherever they point.
        for nr in [19u32, 20, 295, 296, 327, 328, 46, 47] {
            assert_eq!(v(nr, [3, 0x7ffd_0000_0000, 1, 0, 0, 0]), ALLOW, "{nr}");
            assert_eq!(
                buffer_verdict(r, true, nr, ip, [3, 0x7ffd_0000_0000, 1, 0, 0, 0]),
                TRAP,
                "{nr}"
            );
        }
        // Other calls pass; so do other architectures.
        assert_eq!(v(9, [rlo, 4096, 3, 1, 3, 0]), ALLOW);
        assert_eq!(v(202, [rlo, 0, 0, 0, 0, 0]), ALLOW);
    }
    // Without a range: every such call traps.
    assert_eq!(
        buffer_verdict(None, false, 1, 0x40_1000, [1, 0x7ffd_0000_0000, 8, 0, 0, 0]),
        TRAP
    );
    assert_eq!(
        buffer_verdict(None, false, 9, 0x40_1000, [0, 4096, 3, 1, 3, 0]),
        ALLOW
    );
}

#[test]
fn filter_verdicts_for_each_case() {
    // Ranges whose bounds share their high halves, differ in them, and cross a 4 GiB line.
    for (lo, hi) in [
        (0x2aa0_0000_0000u64, 0x2aa0_0010_0000u64),
        (0x5555_ffff_f000, 0x5556_0000_3000),
        (0x1000, 0x2000),
    ] {
        let out = hi + 0x10_0000;
        let v = |nr, arch, ip, args| verdict(lo, hi, nr, arch, ip, args);
        let mmap_file = [0, 4096, 3, libc::MAP_SHARED as u64, 3, 0];
        // The core's own calls, at both ends of its range; just outside traps.
        assert_eq!(v(9, X86_64, lo, mmap_file), ALLOW, "{lo:#x}");
        assert_eq!(v(9, X86_64, hi - 1, mmap_file), ALLOW, "{lo:#x}");
        assert_eq!(v(9, X86_64, hi, mmap_file), TRAP, "{lo:#x}");
        assert_eq!(v(9, X86_64, lo - 1, mmap_file), TRAP, "{lo:#x}");
        assert_eq!(v(9, X86_64, lo ^ (1 << 40), mmap_file), TRAP, "{lo:#x}");
        assert_eq!(
            v(9, X86_64, (lo & 0xffff_ffff) | (1 << 32) << 8, mmap_file),
            TRAP
        );
        // i386 and x32 calls are not routed.
        assert_eq!(v(9, I386, out, mmap_file), ALLOW);
        assert_eq!(v(192, I386, out, mmap_file), ALLOW);
        assert_eq!(v(9 | 0x4000_0000, X86_64, out, mmap_file), ALLOW);
        // mmap: anonymous allowed (also private), file-backed trapped (shared or private).
        let anon = libc::MAP_PRIVATE as u64 | libc::MAP_ANONYMOUS as u64;
        assert_eq!(v(9, X86_64, out, [0, 4096, 3, anon, u64::MAX, 0]), ALLOW);
        let anon_shared = libc::MAP_SHARED as u64 | libc::MAP_ANONYMOUS as u64;
        assert_eq!(v(9, X86_64, out, [0, 4096, 3, anon_shared, 7, 0]), ALLOW);
        assert_eq!(v(9, X86_64, out, [0, 4096, 3, 2, 3, 0]), TRAP);
        // Anonymous with MAP_FIXED replaces what was there: trapped.
        let fixed = anon | libc::MAP_FIXED as u64;
        assert_eq!(
            v(9, X86_64, out, [0x7000, 4096, 3, fixed, u64::MAX, 0]),
            TRAP
        );
        let noreplace = anon | libc::MAP_FIXED_NOREPLACE as u64;
        assert_eq!(v(9, X86_64, out, [0x7000, 4096, 3, noreplace, 0, 0]), ALLOW);
        // Trapped, whatever their arguments.
        for nr in [11, 25, 10, 59, 322] {
            assert_eq!(v(nr, X86_64, out, [0; 6]), TRAP, "nr {nr}");
        }
        // Locking and populating: the kernel cannot do them on closed pages.
        for nr in [149, 150, 325, 329] {
            assert_eq!(
                v(nr, X86_64, out, [0x7000, 4096, 0, 0, 0, 0]),
                TRAP,
                "nr {nr}"
            );
        }
        for advice in [22, 23] {
            assert_eq!(v(28, X86_64, out, [0x7000, 4096, advice, 0, 0, 0]), TRAP);
            assert_eq!(v(28, X86_64, out, [lo, 4096, advice, 0, 0, 0]), ALLOW);
        }
        for advice in [0, 4, 8, 14, 21, 24] {
            assert_eq!(v(28, X86_64, out, [0x7000, 4096, advice, 0, 0, 0]), ALLOW);
        }
        // Memory calls at an address in the core's range are the injector's; the exec
        // calls are trapped wherever their arguments point.
        for nr in [9, 11, 25, 10, 329, 149, 150, 325] {
            let args = |addr| [addr, 4096, 5, 0x12, 3, 0];
            assert_eq!(v(nr, X86_64, out, args(lo)), ALLOW, "nr {nr} {lo:#x}");
            assert_eq!(v(nr, X86_64, out, args(hi - 4096)), ALLOW, "nr {nr}");
            assert_eq!(v(nr, X86_64, out, args(hi)), TRAP, "nr {nr} {hi:#x}");
            assert_eq!(v(nr, X86_64, out, args(lo - 4096)), TRAP, "nr {nr}");
            assert_eq!(v(nr, X86_64, out, args(lo ^ (1 << 45))), TRAP, "nr {nr}");
        }
        assert_eq!(v(9, X86_64, out, [lo, 4096, 5, fixed, u64::MAX, 0]), ALLOW);
        for nr in [59, 322] {
            assert_eq!(v(nr, X86_64, out, [lo, lo, lo, lo, 0, 0]), TRAP, "nr {nr}");
        }
        // rt_sigaction: the tracer's signals and SIGSYS...
        for sig in [4u64, 5, 7, 8, 11, 31, 63] {
            assert_eq!(v(13, X86_64, out, [sig, 0, 0, 8, 0, 0]), TRAP, "sig {sig}");
            assert_eq!(
                v(13, X86_64, out, [sig | 1 << 32, 1, 0, 8, 0, 0]),
                TRAP,
                "sig {sig}"
            );
            assert_eq!(v(13, X86_64, lo, [sig, 1, 0, 8, 0, 0]), ALLOW);
        }
        // ... and every other one too, queries included (the tracer's signals are kept
        // out of each handler's mask, and the program reads its own back).
        for sig in [1u64, 2, 10, 12, 14, 17, 32, 34, 62, 64, 0, 65] {
            assert_eq!(v(13, X86_64, out, [sig, 1, 0, 8, 0, 0]), TRAP, "sig {sig}");
            assert_eq!(v(13, X86_64, out, [sig, 0, 1, 8, 0, 0]), TRAP, "sig {sig}");
            assert_eq!(v(13, X86_64, lo, [sig, 1, 0, 8, 0, 0]), ALLOW, "sig {sig}");
        }
        // rt_sigprocmask with a new set or an old-set pointer (either half non-zero);
        // only a call with neither goes through.
        assert_eq!(v(14, X86_64, out, [0, 0, 0x7000, 8, 0, 0]), TRAP);
        assert_eq!(v(14, X86_64, out, [0, 0, 1 << 40, 8, 0, 0]), TRAP);
        assert_eq!(v(14, X86_64, out, [0, 0, 0, 8, 0, 0]), ALLOW);
        assert_eq!(v(14, X86_64, out, [0, 0x7000, 0, 8, 0, 0]), TRAP);
        assert_eq!(v(14, X86_64, out, [0, 1 << 40, 0, 8, 0, 0]), TRAP);
        assert_eq!(v(14, X86_64, lo, [0, 0x7000, 0, 8, 0, 0]), ALLOW);
        // sigaltstack is the kernel's.
        assert_eq!(v(131, X86_64, out, [0, 0x7000, 0, 0, 0, 0]), ALLOW);
        assert_eq!(v(131, X86_64, out, [0x7000, 0, 0, 0, 0, 0]), ALLOW);
        // Everything else.
        for nr in [
            0, 1, 39, 60, 110, 231, 56, 435, 12, 28, 317, 157, 26, 330, 151, 152,
        ] {
            assert_eq!(v(nr, X86_64, out, [1, 1, 1, 1, 1, 1]), ALLOW, "nr {nr}");
        }
    }
}

fn site_verdict(sites: &[u64], nr: u32, arch: u32, ip: u64, args: [u64; 6]) -> u32 {
    let mut prog = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; sysemu::FILTER_MAX];
    let n = sysemu::filter_sites(sites, &mut prog).expect("a filter");
    assert!(n > 0 && n <= sysemu::FILTER_MAX);
    run_bpf(&prog[..n], &Data { nr, arch, ip, args })
}

/// The preload route's filter for inline `syscall` instructions: only calls from the
/// sites trap (what `filter` traps, exec aside); with hundreds of sites (several runs of
/// comparisons) and sites whose upper address halves differ.
#[test]
fn site_filter_verdicts() {
    let mmap_file = [0, 4096, 3, libc::MAP_SHARED as u64, 3, 0];
    let base = 0x5555_5555_0000u64;
    let mut sites: Vec<u64> = (0..450).map(|i| base + 0x10 + 7 * i).collect();
    sites.push(0x7fff_0000_1234);
    sites.push(0x2_0000_0002);
    for &ip in &sites {
        let v = |nr, args| site_verdict(&sites, nr, X86_64, ip, args);
        assert_eq!(v(9, mmap_file), TRAP, "{ip:#x}");
        for nr in [11, 25, 10, 329] {
            assert_eq!(
                v(nr, [0x7000, 4096, 0, 0, 0, 0]),
                TRAP,
                "nr {nr} at {ip:#x}"
            );
        }
        assert_eq!(v(13, [11, 1, 0, 8, 0, 0]), TRAP);
        assert_eq!(v(14, [0, 0x7000, 0, 8, 0, 0]), TRAP);
        // Not routed from a site: exec (the libc wrappers see it), other calls, anonymous
        // memory, i386 and x32 calls.
        for nr in [59, 322, 0, 1, 39, 60, 231, 56, 12] {
            assert_eq!(v(nr, [1, 1, 1, 1, 1, 1]), ALLOW, "nr {nr} at {ip:#x}");
        }
        let anon = libc::MAP_PRIVATE as u64 | libc::MAP_ANONYMOUS as u64;
        assert_eq!(v(9, [0, 4096, 3, anon, u64::MAX, 0]), ALLOW);
        assert_eq!(site_verdict(&sites, 9, I386, ip, mmap_file), ALLOW);
        assert_eq!(
            site_verdict(&sites, 9 | 0x4000_0000, X86_64, ip, mmap_file),
            ALLOW
        );
    }
    // Anywhere else: allowed, next to a site, in another upper half, far away.
    for ip in [
        base + 0x11,
        base + 0x0f,
        base + 0x10 + 7 * 450,
        base,
        0x7fff_0000_1233,
        0x3_0000_0002,
        0x2_0000_0003,
        0,
        u64::MAX,
    ] {
        for nr in [9u32, 11, 25, 10, 13, 14] {
            assert_eq!(
                site_verdict(&sites, nr, X86_64, ip, mmap_file),
                ALLOW,
                "nr {nr} at {ip:#x}"
            );
        }
    }
    // Too many sites, or none: no filter.
    let mut none = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; sysemu::FILTER_MAX];
    let many: Vec<u64> = (0..=sysemu::MAX_SITES as u64)
        .map(|i| base + 2 * i)
        .collect();
    assert_eq!(sysemu::filter_sites(&many, &mut none), None);
    assert_eq!(sysemu::filter_sites(&[], &mut none), None);
    let groups: Vec<u64> = (0..9u64).map(|i| (i << 32) + 2).collect();
    assert_eq!(sysemu::filter_sites(&groups, &mut none), None);
    assert!(sysemu::filter_sites(&groups[..8], &mut none).is_some());
}

// ---------------------------------------------------------------------------------------
// Processes.

fn child_mode() -> bool {
    std::env::var_os("SYSEMU_CHILD").is_some()
}

/// Runs test `name` alone in a fresh copy of this binary; its exit status and output.
/// Runs a child copy of this binary to its end and removes the files it made (a child
/// that dies or execs leaves them).
fn output_and_clean(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mmio-sysemu-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SYSEMU_CHILD", "1");
    let out = output_and_clean(&mut cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A test whose body runs in a child process that must succeed.
macro_rules! child_test {
    ($(#[$m:meta])* $name:ident, $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            if child_mode() {
                $body
                return;
            }
            let (st, out) = run_child(stringify!($name));
            println!("{out}");
            assert!(st.success() && out.contains("1 passed"), "child {st:?}:\n{out}");
        }
    };
}

extern "C" {
    static __executable_start: u8;
    static etext: u8;
}

/// This binary's code: the tracer's, and nothing of libc's.
fn text_range() -> (u64, u64) {
    // SAFETY: linker-defined symbols; only their addresses are taken.
    unsafe {
        (
            &__executable_start as *const u8 as u64,
            &etext as *const u8 as u64,
        )
    }
}

/// `syscall(nr, args...)` through libc (outside the exempt range): the raw result, `-errno`
/// on failure.
fn raw(nr: i64, a: [u64; 6]) -> i64 {
    // SAFETY: each test passes what the call expects; failures come back as errors.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        r
    }
}

struct Env {
    /// Never dropped: the tracer (its patcher thread) writes into the rings until the
    /// process ends, as in a traced program, whose recorder outlives it.
    c: std::mem::ManuallyDrop<Consumer>,
    dir: std::path::PathBuf,
    fd: i32,
}

/// A directory of its own with device file `dev0` (word k holds 0x1000 + k) and plain
/// file `plain0` (word k holds 0x2000 + k).
fn files() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mmio-sysemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, base) in [("dev0", 0x1000u32), ("plain0", 0x2000)] {
        let v: Vec<u8> = (0..(DEV_LEN / 4) as u32)
            .flat_map(|k| (base + k).to_le_bytes())
            .collect();
        std::fs::write(dir.join(name), v).unwrap();
    }
    dir
}

fn open(path: &std::path::Path) -> i32 {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    fd
}

/// Waits until no other thread of this process has SIGSYS blocked: the test harness's
/// main thread may still be inside `pthread_create`, which blocks every signal around
/// `clone`; with the filter given to it there (TSYNC), its next trapped call would kill
/// the process (the kernel forces the default action of a blocked SIGSYS). The injector,
/// which stops every thread, must see to the same (see `sysemu::install`).
fn wait_sigsys_unblocked() {
    let me = std::fs::read_link("/proc/thread-self").unwrap();
    let me = me.file_name().unwrap().to_owned();
    for _ in 0..2000 {
        let blocked = std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            let t = t.unwrap();
            t.file_name() != me
                && std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                    s.lines()
                        .find(|l| l.starts_with("SigBlk:"))
                        .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
                        .is_some_and(|m| m & (1 << (libc::SIGSYS - 1)) != 0)
                })
        });
        if !blocked {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("a thread keeps SIGSYS blocked");
}

/// Tracing on, `dev*` in the test directory the device, the filter installed.
fn setup() -> Env {
    let dir = files();
    let c = Consumer::create(16, 1024).unwrap();
    let rules = tracer::Rules::new(&[format!("{}/dev*", dir.display())], true);
    tracer::init(c.shm(), rules);
    let (lo, hi) = text_range();
    wait_sigsys_unblocked();
    sysemu::install(lo, hi, None).unwrap();
    assert!(sysemu::active());
    let fd = open(&dir.join("dev0"));
    Env {
        c: std::mem::ManuallyDrop::new(c),
        dir,
        fd,
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Ev {
    Map { addr: u64, len: u64, phys: u64 },
    Unmap,
    Read(u64, u8, u64),
    Write(u64, u8, u64),
}

impl Env {
    /// The events so far (marks left out), addresses as they are.
    fn events(&mut self) -> Vec<Ev> {
        let mut recs: Vec<Record> = Vec::new();
        self.c.poll(|d| recs.extend_from_slice(d.records));
        let mut out = Vec::new();
        let mut i = 0;
        while i < recs.len() {
            let r = recs[i];
            match r.kind() {
                Some(Kind::Map) => out.push(Ev::Map {
                    addr: r.addr(),
                    len: r.0[2],
                    phys: recs[i + 1].0[0],
                }),
                Some(Kind::Unmap) => out.push(Ev::Unmap),
                Some(Kind::Read) => out.push(Ev::Read(r.addr(), r.width(), r.value())),
                Some(Kind::Write) => out.push(Ev::Write(r.addr(), r.width(), r.value())),
                _ => {}
            }
            i += 1 + r.extra();
        }
        out
    }

    /// A raw shared read-write mapping of the device file.
    fn map_dev(&self) -> u64 {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let p = raw(
            libc::SYS_mmap,
            [
                0,
                DEV_LEN as u64,
                rw,
                libc::MAP_SHARED as u64,
                self.fd as u64,
                0,
            ],
        );
        assert!(p > 0, "raw mmap of the device: {p}");
        p as u64
    }

    /// Word `k` of the device file, read from the file.
    fn file_word(&self, k: u64) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: a valid buffer.
        let n = unsafe { libc::pread(self.fd, b.as_mut_ptr().cast(), 4, (4 * k) as i64) };
        assert_eq!(n, 4);
        u32::from_le_bytes(b)
    }
}

fn rd(p: u64) -> u32 {
    // SAFETY: the tests read mappings they made.
    unsafe { std::ptr::read_volatile(p as *const u32) }
}

fn wr(p: u64, v: u32) {
    // SAFETY: the tests write mappings they made.
    unsafe { std::ptr::write_volatile(p as *mut u32, v) }
}

child_test!(raw_mmap_of_a_device_is_traced_exactly, {
    let mut e = setup();
    let p = e.map_dev();
    assert_eq!(rd(p + 8), 0x1002);
    wr(p + 0x10, 0xabcd);
    assert_eq!(rd(p + 0x1004), 0x1401);
    assert_eq!(
        e.events(),
        [
            Ev::Map {
                addr: p,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Read(p + 8, 4, 0x1002),
            Ev::Write(p + 0x10, 4, 0xabcd),
            Ev::Read(p + 0x1004, 4, 0x1401),
        ]
    );
    assert_eq!(e.file_word(4), 0xabcd);
    // The pages stay closed: the kernel's view of the mapping.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{p:x}-")))
        .unwrap();
    assert!(line.contains(" ---s "), "{line}");
});

child_test!(
    raw_munmap_drops_the_region_and_anonymous_memory_there_is_the_programs,
    {
        let mut e = setup();
        let p = e.map_dev();
        assert_eq!(rd(p), 0x1000);
        assert_eq!(raw(libc::SYS_munmap, [p, DEV_LEN as u64, 0, 0, 0, 0]), 0);
        assert_eq!(
            e.events(),
            [
                Ev::Map {
                    addr: p,
                    len: DEV_LEN as u64,
                    phys: 0
                },
                Ev::Read(p, 4, 0x1000),
                Ev::Unmap,
            ]
        );
        // Anonymous memory at the same address (a hint, not MAP_FIXED: the call is not
        // trapped; the kernel gives the free range asked for).
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let q = raw(libc::SYS_mmap, [p, DEV_LEN as u64, rw, flags, u64::MAX, 0]);
        assert_eq!(q as u64, p);
        wr(p, 0x55aa);
        wr(p + 0x1000, 0x77);
        // Closed and opened again by the program (a collector's write barrier, a guard
        // page): still its own memory, not a stale device region.
        assert_eq!(raw(libc::SYS_mprotect, [p, DEV_LEN as u64, 0, 0, 0, 0]), 0);
        assert_eq!(raw(libc::SYS_mprotect, [p, DEV_LEN as u64, rw, 0, 0, 0]), 0);
        assert_eq!(rd(p), 0x55aa);
        assert_eq!(rd(p + 0x1000), 0x77);
        wr(p + 8, 0x99);
        assert_eq!(e.file_word(0), 0x1000, "the heap write reached the device");
        assert_eq!(e.file_word(2), 0x1002, "the heap write reached the device");
        assert_eq!(e.file_word(0x400), 0x1400);
        assert_eq!(e.events(), []);
    }
);

child_test!(
    raw_anonymous_map_fixed_over_a_device_mapping_drops_the_region,
    {
        let mut e = setup();
        let p = e.map_dev();
        assert_eq!(rd(p + 4), 0x1001);
        // No munmap first: the new mapping replaces the device's pages (the first one only).
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let q = raw(libc::SYS_mmap, [p, PAGE as u64, rw, flags, u64::MAX, 0]);
        assert_eq!(q as u64, p);
        wr(p + 4, 0x66);
        assert_eq!(rd(p + 4), 0x66);
        assert_eq!(e.file_word(1), 0x1001, "the heap write reached the device");
        // The rest of the device mapping stays traced.
        assert_eq!(rd(p + 0x1004), 0x1401);
        // Its own protection, not the tracer's: a program that closes the page and takes its
        // own faults (a garbage collector's barrier) must not have them taken as the device's.
        assert_eq!(raw(libc::SYS_mprotect, [p, PAGE as u64, 0, 0, 0, 0]), 0);
        assert_eq!(raw(libc::SYS_mprotect, [p, PAGE as u64, rw, 0, 0, 0]), 0);
        assert_eq!(rd(p + 4), 0x66);
        assert_eq!(
            e.events(),
            [
                Ev::Map {
                    addr: p,
                    len: DEV_LEN as u64,
                    phys: 0
                },
                Ev::Read(p + 4, 4, 0x1001),
                Ev::Read(p + 0x1004, 4, 0x1401),
            ]
        );
    }
);

child_test!(raw_mremap_moves_a_device_mapping_traced, {
    let mut e = setup();
    let p = e.map_dev();
    // A place to move to (anonymous: not trapped).
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let q = raw(libc::SYS_mmap, [0, DEV_LEN as u64, 0, flags, u64::MAX, 0]) as u64;
    let mv = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let r = raw(
        libc::SYS_mremap,
        [p, DEV_LEN as u64, DEV_LEN as u64, mv, q, 0],
    );
    assert_eq!(r as u64, q);
    assert_eq!(rd(q + 4), 0x1001);
    wr(q + 0x1008, 9);
    assert_eq!(e.file_word(0x402), 9);
    assert_eq!(
        e.events(),
        [
            Ev::Map {
                addr: p,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Unmap,
            Ev::Map {
                addr: q,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Read(q + 4, 4, 0x1001),
            Ev::Write(q + 0x1008, 4, 9),
        ]
    );
});

child_test!(raw_mprotect_of_a_device_mapping_keeps_it_traced, {
    let mut e = setup();
    let p = e.map_dev();
    assert_eq!(
        raw(
            libc::SYS_mprotect,
            [p, PAGE as u64, libc::PROT_READ as u64, 0, 0, 0]
        ),
        0
    );
    assert_eq!(rd(p + 12), 0x1003);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{p:x}-")))
        .unwrap();
    assert!(line.contains(" ---s "), "{line}");
    // The kernel still judges the call: misaligned.
    assert_eq!(
        raw(
            libc::SYS_mprotect,
            [p + 1, 4, libc::PROT_READ as u64, 0, 0, 0]
        ),
        -i64::from(libc::EINVAL)
    );
    assert_eq!(
        e.events(),
        [
            Ev::Map {
                addr: p,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Read(p + 12, 4, 0x1003),
        ]
    );
});

/// After `mprotect(PROT_READ)`, the program's write to the device is its own fault: it
/// dies of SIGSEGV as it would natively (checked by the parent below).
#[test]
#[ignore = "run by write_to_a_read_only_device_page_is_the_programs_fault"]
fn dies_writing_a_read_only_device_page() {
    if !child_mode() {
        return;
    }
    {
        let e = setup();
        let p = e.map_dev();
        raw(
            libc::SYS_mprotect,
            [p, PAGE as u64, libc::PROT_READ as u64, 0, 0, 0],
        );
        wr(p, 1);
        std::process::exit(0);
    }
}

#[test]
fn write_to_a_read_only_device_page_is_the_programs_fault() {
    if child_mode() {
        return;
    }
    let out = output_and_clean(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "dies_writing_a_read_only_device_page",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env("SYSEMU_CHILD", "1"),
    );
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
}

child_test!(raw_file_mmap_of_a_plain_file_is_not_traced, {
    let mut e = setup();
    let fd = open(&e.dir.join("plain0"));
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let p = raw(
        libc::SYS_mmap,
        [0, DEV_LEN as u64, rw, libc::MAP_SHARED as u64, fd as u64, 0],
    ) as u64;
    assert_eq!(rd(p + 4), 0x2001);
    wr(p + 8, 5);
    assert_eq!(rd(p + 8), 5);
    assert_eq!(e.events(), []);
});

/// The program's SIGSEGV handler (an `SA_SIGINFO` one): records the fault address and
/// opens the page, so the access is retried.
static FAULT_AT: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn program_segv(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's (or the tracer's) siginfo of a fault.
    let a = unsafe { (*info).si_addr() } as u64;
    FAULTS.fetch_add(1, Ordering::SeqCst);
    FAULT_AT.store(a, Ordering::SeqCst);
    // A trapped call from inside the handler (libc's mprotect is outside the range).
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: the test's own anonymous page.
    let r = unsafe { libc::mprotect((a & !(PAGE as u64 - 1)) as *mut libc::c_void, PAGE, rw) };
    if r != 0 {
        eprintln!(
            "program handler: fault at {a:#x} (code {}), mprotect failed",
            // SAFETY: as above.
            unsafe { (*info).si_code }
        );
        // SAFETY: leaving at once.
        unsafe { libc::_exit(90) };
    }
}

/// The kernel's `struct sigaction`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct KAction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

fn rt_sigaction(sig: i32, act: Option<&KAction>, old: Option<&mut KAction>) -> i64 {
    raw(
        libc::SYS_rt_sigaction,
        [
            sig as u64,
            act.map_or(0, |a| a as *const KAction as u64),
            old.map_or(0, |a| a as *mut KAction as u64),
            8,
            0,
            0,
        ],
    )
}

const SA_RESTORER: u64 = 0x0400_0000;

child_test!(
    raw_rt_sigaction_of_sigsegv_is_the_programs_and_the_device_stays_traced,
    {
        // The action before the tracer (Rust's std has a stack-overflow handler) is the one
        // the program reads back after it.
        let mut native = KAction::default();
        assert_eq!(rt_sigaction(libc::SIGSEGV, None, Some(&mut native)), 0);
        let mut e = setup();
        let mut old = KAction {
            handler: 99,
            ..Default::default()
        };
        assert_eq!(rt_sigaction(libc::SIGSEGV, None, Some(&mut old)), 0);
        assert_eq!(old, native, "the program's handler from before");
        let bit = |s: i32| 1u64 << (s - 1);
        let act = KAction {
            handler: program_segv as *const () as u64,
            flags: libc::SA_SIGINFO as u64 | SA_RESTORER,
            restorer: 0x1234_5678,
            mask: bit(libc::SIGUSR1) | bit(libc::SIGKILL),
        };
        assert_eq!(rt_sigaction(libc::SIGSEGV, Some(&act), None), 0);
        let mut back = KAction::default();
        assert_eq!(rt_sigaction(libc::SIGSEGV, None, Some(&mut back)), 0);
        assert_eq!(
            back,
            KAction {
                mask: bit(libc::SIGUSR1),
                ..act
            },
            "the action reads back as set (SIGKILL dropped, as the kernel does)"
        );
        // The device is still the tracer's.
        let p = e.map_dev();
        assert_eq!(rd(p + 16), 0x1004);
        // The program's own fault is its handler's.
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let g = raw(libc::SYS_mmap, [0, PAGE as u64, 0, flags, u64::MAX, 0]) as u64;
        wr(g + 8, 7);
        assert_eq!(FAULTS.load(Ordering::SeqCst), 1);
        assert_eq!(FAULT_AT.load(Ordering::SeqCst), g + 8);
        assert_eq!(rd(g + 8), 7);
        assert_eq!(rd(p + 20), 0x1005);
        assert_eq!(
            e.events(),
            [
                Ev::Map {
                    addr: p,
                    len: DEV_LEN as u64,
                    phys: 0
                },
                Ev::Read(p + 16, 4, 0x1004),
                Ev::Read(p + 20, 4, 0x1005),
            ]
        );
    }
);

fn sigprocmask(how: i32, set: Option<u64>, old: Option<&mut u64>) -> i64 {
    let s = set.unwrap_or(0);
    raw(
        libc::SYS_rt_sigprocmask,
        [
            how as u64,
            set.map_or(0, |_| &s as *const u64 as u64),
            old.map_or(0, |o| o as *mut u64 as u64),
            8,
            0,
            0,
        ],
    )
}

/// The calling thread's blocked signals as the kernel has them.
fn kernel_blocked() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    u64::from_str_radix(l[7..].trim(), 16).unwrap()
}

child_test!(raw_rt_sigprocmask_blocking_sigsegv_and_sigsys_is_virtual, {
    let mut e = setup();
    let bit = |s: i32| 1u64 << (s - 1);
    let mut start = u64::MAX;
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(0), Some(&mut start)), 0);
    let set = bit(libc::SIGSEGV) | bit(libc::SIGSYS) | bit(libc::SIGTRAP) | bit(libc::SIGUSR1);
    let mut old = u64::MAX;
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(set), Some(&mut old)), 0);
    assert_eq!(old, start);
    // Still trapped (SIGSYS is not blocked for real) and still traced (nor SIGSEGV).
    let p = e.map_dev();
    assert_eq!(rd(p + 4), 0x1001);
    let real = kernel_blocked();
    assert_eq!(real & set, bit(libc::SIGUSR1), "kernel mask {real:#x}");
    let mut now = 0;
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(0), Some(&mut now)), 0);
    assert_eq!(now, start | set, "what the program set reads back");
    assert_eq!(
        sigprocmask(libc::SIG_UNBLOCK, Some(bit(libc::SIGSEGV)), Some(&mut now)),
        0
    );
    assert_eq!(now, start | set);
    assert_eq!(
        sigprocmask(libc::SIG_SETMASK, Some(bit(libc::SIGSYS)), Some(&mut now)),
        0
    );
    assert_eq!(now, (start | set) & !bit(libc::SIGSEGV));
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(0), Some(&mut now)), 0);
    assert_eq!(now, bit(libc::SIGSYS));
    assert_eq!(kernel_blocked() & set, 0);
    assert_eq!(
        e.events(),
        [
            Ev::Map {
                addr: p,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Read(p + 4, 4, 0x1001),
        ]
    );
});

child_test!(raw_sigaltstack_is_the_kernels_and_the_tracer_runs_on_it, {
    let mut e = setup();
    let size = 64 << 10;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let sp = raw(libc::SYS_mmap, [0, size, rw, flags, u64::MAX, 0]) as u64;
    let mut old = [1u64, 1, 1];
    let alt = |ss: Option<&[u64; 3]>, old: &mut [u64; 3]| {
        raw(
            libc::SYS_sigaltstack,
            [
                ss.map_or(0, |s| s.as_ptr() as u64),
                old.as_mut_ptr() as u64,
                0,
                0,
                0,
                0,
            ],
        )
    };
    assert_eq!(alt(Some(&[sp, 0, size]), &mut old), 0);
    let mut cur = [0u64; 3];
    assert_eq!(alt(None, &mut cur), 0);
    assert_eq!(cur, [sp, 0, size]);
    // The tracer's handlers run on the program's 64 KiB stack.
    let p = e.map_dev();
    assert_eq!(rd(p), 0x1000);
    wr(p + 4, 3);
    // Disabled and freed, as Rust's std does at a thread's end: no signal lands there.
    assert_eq!(alt(Some(&[0, libc::SS_DISABLE as u64, 0]), &mut cur), 0);
    assert_eq!(raw(libc::SYS_munmap, [sp, size, 0, 0, 0, 0]), 0);
    assert_eq!(rd(p + 4), 3);
    assert_eq!(e.events().len(), 4);
});

/// A call made before and after the filter: the same result.
fn error_calls() -> Vec<i64> {
    let bad = 1u64; // a pointer into nothing
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let mut mask_out = 0u64;
    let zero = 0u64;
    let act = KAction::default();
    vec![
        raw(
            libc::SYS_mmap,
            [0, 4096, rw, libc::MAP_SHARED as u64, 999, 0],
        ),
        raw(libc::SYS_mmap, [0, 0, rw, libc::MAP_SHARED as u64, 0, 0]),
        raw(libc::SYS_munmap, [0x1001, 4096, 0, 0, 0, 0]),
        raw(libc::SYS_mprotect, [0x1001, 4096, 1, 0, 0, 0]),
        raw(libc::SYS_mprotect, [0x1000, 4096, 1, 0, 0, 0]),
        raw(libc::SYS_mremap, [0x1001, 4096, 8192, 0, 0, 0]),
        raw(
            libc::SYS_rt_sigaction,
            [
                libc::SIGSEGV as u64,
                &act as *const KAction as u64,
                0,
                4,
                0,
                0,
            ],
        ),
        raw(
            libc::SYS_rt_sigaction,
            [libc::SIGSEGV as u64, bad, 0, 8, 0, 0],
        ),
        raw(
            libc::SYS_rt_sigaction,
            [libc::SIGSEGV as u64, 0, bad, 8, 0, 0],
        ),
        raw(
            libc::SYS_rt_sigprocmask,
            [99, &zero as *const u64 as u64, 0, 8, 0, 0],
        ),
        raw(libc::SYS_rt_sigprocmask, [0, bad, 0, 8, 0, 0]),
        raw(
            libc::SYS_rt_sigprocmask,
            [
                0,
                &zero as *const u64 as u64,
                &mut mask_out as *mut u64 as u64,
                4,
                0,
                0,
            ],
        ),
        raw(
            libc::SYS_rt_sigprocmask,
            [0, &zero as *const u64 as u64, bad, 8, 0, 0],
        ),
        raw(
            libc::SYS_execve,
            [c"/nonexistent/x".as_ptr() as u64, 0, 0, 0, 0, 0],
        ),
        raw(libc::SYS_execveat, [999, c"x".as_ptr() as u64, 0, 0, 0, 0]),
    ]
}

child_test!(errors_are_the_kernels_exactly, {
    let before = error_calls();
    let _e = setup();
    let after = error_calls();
    assert_eq!(before, after);
    assert!(before.iter().all(|&r| r < 0), "{before:?}");
});

child_test!(
    /// The thread gets the tracer's alternate stack first, as the injector must give every
    /// thread it finds: std's own (8 KiB) is too small for the tracer's handlers in a debug
    /// build (the SIGSYS handler overflowed it into its guard page).
    a_thread_started_before_the_filter_traps_too,
    {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<(i32, std::path::PathBuf)>();
    let (res_tx, res_rx) = std::sync::mpsc::channel::<(u64, u32, String)>();
    let t = std::thread::spawn(move || {
        tracer::signals::setup_altstack();
        let (fd, _dir) = go_rx.recv().unwrap();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let seccomp = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .unwrap()
            .to_string();
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let p = raw(
            libc::SYS_mmap,
            [0, DEV_LEN as u64, rw, libc::MAP_SHARED as u64, fd as u64, 0],
        ) as u64;
        let v = rd(p + 0x1000);
        res_tx.send((p, v, seccomp)).unwrap();
    });
    let mut e = setup();
    go_tx.send((e.fd, e.dir.clone())).unwrap();
    let (p, v, seccomp) = res_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the thread's raw mmap and access did not finish");
    t.join().unwrap();
    assert_eq!(seccomp.split_whitespace().nth(1), Some("2"), "{seccomp}");
    assert_eq!(v, 0x1400);
    assert_eq!(
        e.events(),
        [
            Ev::Map {
                addr: p,
                len: DEV_LEN as u64,
                phys: 0
            },
            Ev::Read(p + 0x1000, 4, 0x1400),
        ]
    );
    }
);

/// The program's own SIGSYS handler: counts, and answers a trapped call with 4242.
static SYS_SEEN: AtomicU64 = AtomicU64::new(0);
static SYS_ERRNO: AtomicU64 = AtomicU64::new(0);

extern "C" fn program_sigsys(_: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo and context.
    unsafe {
        let p = info as *const i32;
        SYS_SEEN.fetch_add(1, Ordering::SeqCst);
        SYS_ERRNO.store(*p.add(1) as u64, Ordering::SeqCst);
        if *p.add(2) == 1 {
            let uc = uc as *mut libc::ucontext_t;
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = 4242;
        }
    }
}

/// The program's own filter: `getppid` traps with data 7.
fn program_filter() {
    let f = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_getppid as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0x0003_0000 | 7,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: f.len() as u16,
        filter: f.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl and seccomp with a valid program.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::syscall(libc::SYS_seccomp, 1, 0, &prog), 0);
    }
}

child_test!(the_programs_own_seccomp_traps_reach_its_sigsys_handler, {
    let mut e = setup();
    let act = KAction {
        handler: program_sigsys as *const () as u64,
        flags: libc::SA_SIGINFO as u64,
        restorer: 0,
        mask: 0,
    };
    let mut old = KAction {
        handler: 5,
        ..Default::default()
    };
    assert_eq!(rt_sigaction(libc::SIGSYS, Some(&act), Some(&mut old)), 0);
    assert_eq!(old, KAction::default());
    program_filter();
    assert_eq!(raw(libc::SYS_getppid, [0; 6]), 4242);
    assert_eq!(SYS_SEEN.load(Ordering::SeqCst), 1);
    assert_eq!(SYS_ERRNO.load(Ordering::SeqCst), 7);
    // Ours still trap (into the tracer, not the program's handler).
    let p = e.map_dev();
    assert_eq!(rd(p + 4), 0x1001);
    assert_eq!(SYS_SEEN.load(Ordering::SeqCst), 1);
    // A SIGSYS sent by someone is the program's too.
    // SAFETY: a signal to this very thread (delivered before tgkill returns).
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            libc::SIGSYS,
        )
    };
    assert_eq!(SYS_SEEN.load(Ordering::SeqCst), 2);
    assert_eq!(e.events().len(), 2);
});

#[test]
#[ignore = "run by a_foreign_seccomp_trap_without_a_handler_kills_as_natively"]
fn dies_of_a_foreign_trap() {
    if !child_mode() {
        return;
    }
    let _e = setup();
    program_filter();
    raw(libc::SYS_getppid, [0; 6]);
    std::process::exit(0);
}

#[test]
fn a_foreign_seccomp_trap_without_a_handler_kills_as_natively() {
    if child_mode() {
        return;
    }
    let out = output_and_clean(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "dies_of_a_foreign_trap",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env("SYSEMU_CHILD", "1"),
    );
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
}

/// A static executable that exits with 7 when it starts with no signal blocked, else 3.
/// Its code lies at the start of this binary's exempt range (the filter it inherits
/// traps a mask query from anywhere else, and it has no handler).
fn exit7_elf() -> Vec<u8> {
    let code: [u8; 59] = [
        0x48, 0x83, 0xec, 0x08, 0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00, 0x31, 0xff, 0x31,
        0xf6, 0x48, 0x89, 0xe2, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0xb8, 0x0e, 0x00, 0x00, 0x00,
        0x0f, 0x05, 0x48, 0x8b, 0x04, 0x24, 0xbf, 0x07, 0x00, 0x00, 0x00, 0xb9, 0x03, 0x00, 0x00,
        0x00, 0x48, 0x85, 0xc0, 0x0f, 0x45, 0xf9, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
    ];
    let base = text_range().0 & !0xfff;
    let total = (64 + 56 + code.len()) as u64;
    let mut v = Vec::new();
    v.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&0x3eu16.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&(base + 120).to_le_bytes()); // entry
    v.extend_from_slice(&64u64.to_le_bytes()); // phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // shoff
    v.extend_from_slice(&0u32.to_le_bytes());
    for h in [64u16, 56, 1, 64, 0, 0] {
        v.extend_from_slice(&h.to_le_bytes());
    }
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    v.extend_from_slice(&5u32.to_le_bytes()); // R X
    for w in [0, base, base, total, total, 0x1000u64] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(&code);
    v
}

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);
static HOOK_FAILED: AtomicU64 = AtomicU64::new(0);
static HOOK_FD: AtomicUsize = AtomicUsize::new(0);

fn exec_hook(call: &sysemu::ExecCall, failed: Option<isize>) -> isize {
    HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    if let Some(rc) = failed {
        HOOK_FAILED.store(rc as u64, Ordering::SeqCst);
        return 0;
    }
    // SAFETY: the program's NUL-terminated path.
    let first = unsafe { *call.path };
    // Tell the parent the hook ran before the exec: the first path byte.
    // SAFETY: a write to our pipe.
    unsafe {
        let b = [b'H', first];
        libc::write(HOOK_FD.load(Ordering::SeqCst) as i32, b.as_ptr().cast(), 2);
    }
    // A file named `R...` is refused (as when the recorder would not take the thread
    // over).
    // SAFETY: the program's NUL-terminated path, read up to its NUL.
    let name = unsafe {
        let mut p = call.path;
        let mut name = p;
        while *p != 0 {
            if *p == b'/' {
                name = p.add(1);
            }
            p = p.add(1);
        }
        *name
    };
    if name == b'R' {
        -(libc::EPERM as isize)
    } else {
        0
    }
}

#[test]
#[ignore = "run by raw_execve_calls_the_hook_and_execs_with_the_programs_mask"]
fn execs_after_the_hook() {
    if !child_mode() {
        return;
    }
    {
        let e = setup();
        sysemu::set_exec_hook(Some(exec_hook));
        HOOK_FD.store(
            std::env::var("SYSEMU_HOOK_FD").unwrap().parse().unwrap(),
            Ordering::SeqCst,
        );
        // Refused by the hook: its -errno (not the exec's -ENOENT), no exec made.
        let refused = c"/nonexistent/Refused";
        assert_eq!(
            raw(libc::SYS_execve, [refused.as_ptr() as u64, 0, 0, 0, 0, 0]),
            -i64::from(libc::EPERM)
        );
        assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 1);
        // A failed exec: -ENOENT, and the hook hears it.
        let missing = c"/nonexistent/x";
        assert_eq!(
            raw(libc::SYS_execve, [missing.as_ptr() as u64, 0, 0, 0, 0, 0]),
            -i64::from(libc::ENOENT)
        );
        assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 3);
        assert_eq!(
            HOOK_FAILED.load(Ordering::SeqCst) as i64,
            -i64::from(libc::ENOENT)
        );
        let path = e.dir.join("exit7");
        std::fs::write(&path, exit7_elf()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let argv = [p.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // The program's mask is empty; the handler's is not.
        assert_eq!(sigprocmask(libc::SIG_SETMASK, Some(0), None), 0);
        let r = raw(
            libc::SYS_execve,
            [
                p.as_ptr() as u64,
                argv.as_ptr() as u64,
                envp.as_ptr() as u64,
                0,
                0,
                0,
            ],
        );
        panic!("execve returned {r}");
    }
}

#[test]
fn raw_execve_calls_the_hook_and_execs_with_the_programs_mask() {
    if child_mode() {
        return;
    }
    let mut fds = [0i32; 2];
    // SAFETY: a pipe into a local array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "execs_after_the_hook",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("SYSEMU_CHILD", "1")
        .env("SYSEMU_HOOK_FD", fds[1].to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mmio-sysemu-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    // Left behind by the image that exec'd.
    let _ = std::fs::remove_dir_all(dir);
    // SAFETY: our descriptors.
    unsafe { libc::close(fds[1]) };
    let mut b = [0u8; 8];
    // SAFETY: a valid buffer.
    let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 8) };
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(
        &b[..n.max(0) as usize],
        b"H/H/H/",
        "the hook ran before each exec"
    );
}

/// Median of `runs` timings of `n` calls of `f`, in ns per call.
fn per_call(n: u32, runs: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[runs / 2]
}

child_test!(
    /// `cargo test -p mmio-trace-tracer --test sysemu -- --ignored --nocapture cost`
    #[ignore = "a measurement: run with --ignored --nocapture"]
    cost_of_a_trapped_call_and_of_the_filter_on_other_calls,
    {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let page = raw(libc::SYS_mmap, [0, PAGE as u64, rw, flags, u64::MAX, 0]) as u64;
        let mprotect = || {
            raw(libc::SYS_mprotect, [page, PAGE as u64, rw, 0, 0, 0]);
        };
        let getppid = || {
            raw(libc::SYS_getppid, [0; 6]);
        };
        let (n, runs) = (20_000, 9);
        let m0 = per_call(n, runs, mprotect);
        let g0 = per_call(n, runs, getppid);
        let _e = setup();
        let m1 = per_call(n, runs, mprotect);
        let g1 = per_call(n, runs, getppid);
        println!(
            "mprotect: plain {m0:.0} ns, trapped (SIGSYS round trip) {m1:.0} ns ({:.1}x, +{:.0} ns)",
            m1 / m0,
            m1 - m0
        );
        println!(
            "getppid: plain {g0:.0} ns, under the filter {g1:.0} ns (+{:.0} ns)",
            g1 - g0
        );
    }
);

/// With SIGSEGV blocked (virtually) and a handler of its own, the program's own fault
/// kills it, as the kernel does natively with a blocked synchronous fault.
#[test]
#[ignore = "run by own_fault_with_sigsegv_blocked_kills_as_natively"]
fn dies_blocked_fault() {
    if !child_mode() {
        return;
    }
    let _e = setup();
    let act = KAction {
        handler: program_segv as *const () as u64,
        flags: libc::SA_SIGINFO as u64,
        restorer: 0,
        mask: 0,
    };
    assert_eq!(rt_sigaction(libc::SIGSEGV, Some(&act), None), 0);
    let set = 1u64 << (libc::SIGSEGV - 1);
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(set), None), 0);
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let g = raw(libc::SYS_mmap, [0, PAGE as u64, 0, flags, u64::MAX, 0]) as u64;
    wr(g, 1);
    std::process::exit(0);
}

#[test]
fn own_fault_with_sigsegv_blocked_kills_as_natively() {
    if child_mode() {
        return;
    }
    let out = output_and_clean(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "dies_blocked_fault",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env("SYSEMU_CHILD", "1"),
    );
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
}

/// The calling thread's `NoNewPrivs` and whether `CAP_SYS_ADMIN` is in its effective set
/// (both per thread).
fn nnp_and_sys_admin() -> (bool, bool) {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap()
    };
    let cap = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (field("NoNewPrivs:") == "1", cap & (1 << 21) != 0)
}

child_test!(no_new_privs_is_left_alone_with_cap_sys_admin, {
    let (nnp, admin) = nnp_and_sys_admin();
    assert!(!nnp);
    if !admin {
        println!("skipped: no CAP_SYS_ADMIN (not root)");
        return;
    }
    let mut e = setup();
    assert_eq!(nnp_and_sys_admin(), (false, true));
    let p = e.map_dev();
    assert_eq!(rd(p), 0x1000);
    assert_eq!(e.events().len(), 2);
});

child_test!(no_new_privs_is_set_without_cap_sys_admin, {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset of this process with valid buffers.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &h, d.as_mut_ptr()), 0);
        d[0].effective &= !(1 << 21);
        assert_eq!(libc::syscall(libc::SYS_capset, &h, d.as_ptr()), 0);
    }
    assert_eq!(nnp_and_sys_admin(), (false, false));
    let mut e = setup();
    assert_eq!(nnp_and_sys_admin(), (true, false));
    let p = e.map_dev();
    assert_eq!(rd(p), 0x1000);
    assert_eq!(e.events().len(), 2);
});

/// The program's SIGUSR1 handler: touches the device and makes trapped calls, with every
/// signal in its `sa_mask`.
static USR1_DEV: AtomicU64 = AtomicU64::new(0);
static USR1_SEEN: AtomicU64 = AtomicU64::new(0);

extern "C" fn program_usr1(_: i32) {
    let p = USR1_DEV.load(Ordering::SeqCst);
    let v = rd(p + 0x40);
    // A trapped call from inside the handler.
    let r = raw(
        libc::SYS_mprotect,
        [
            p,
            PAGE as u64,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            0,
            0,
            0,
        ],
    );
    USR1_SEEN.store(u64::from(v) | (r as u64) << 32, Ordering::SeqCst);
}

/// libc's signal restorer (`__restore_rt`), which a handler installed with a raw
/// `rt_sigaction` must name: the kernel returns to it.
fn libc_restorer() -> u64 {
    // SAFETY: a zeroed sigaction with a handler, through libc (which adds its restorer).
    unsafe {
        let mut a: libc::sigaction = std::mem::zeroed();
        a.sa_sigaction = program_usr1 as *const () as usize;
        assert_eq!(libc::sigaction(libc::SIGUSR2, &a, std::ptr::null_mut()), 0);
    }
    let mut k = KAction::default();
    assert_eq!(rt_sigaction(libc::SIGUSR2, None, Some(&mut k)), 0);
    assert!(k.restorer != 0);
    k.restorer
}

fn usr1_to_self() {
    // SAFETY: a signal to this very thread (delivered before tgkill returns).
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            libc::SIGUSR1,
        )
    };
}

child_test!(a_handler_blocking_every_signal_still_reaches_the_device, {
    let mut e = setup();
    let p = e.map_dev();
    USR1_DEV.store(p, Ordering::SeqCst);
    let all = !0u64;
    let act = KAction {
        handler: program_usr1 as *const () as u64,
        flags: 0x0400_0000, // SA_RESTORER
        restorer: libc_restorer(),
        mask: all,
    };
    let mut old = KAction {
        handler: 9,
        ..Default::default()
    };
    assert_eq!(rt_sigaction(libc::SIGUSR1, Some(&act), Some(&mut old)), 0);
    assert_eq!(old, KAction::default());
    let unblockable = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));
    let mut back = KAction::default();
    assert_eq!(rt_sigaction(libc::SIGUSR1, None, Some(&mut back)), 0);
    assert_eq!(
        back,
        KAction {
            mask: all & !unblockable,
            ..act
        },
        "its own mask reads back"
    );
    usr1_to_self();
    assert_eq!(
        USR1_SEEN.load(Ordering::SeqCst),
        0x1010,
        "the handler ran to its end"
    );
    // Replaced: the old action reads back whole.
    let plain = KAction { mask: 0, ..act };
    assert_eq!(rt_sigaction(libc::SIGUSR1, Some(&plain), Some(&mut old)), 0);
    assert_eq!(old.mask, all & !unblockable);
    assert_eq!(rt_sigaction(libc::SIGUSR1, None, Some(&mut back)), 0);
    assert_eq!(back.mask, 0);
    // The kernel's errors, as they are.
    assert_eq!(
        rt_sigaction(libc::SIGKILL, Some(&plain), None),
        -i64::from(libc::EINVAL)
    );
    assert_eq!(
        rt_sigaction(65, None, Some(&mut back)),
        -i64::from(libc::EINVAL)
    );
    let ev = e.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1], Ev::Read(p + 0x40, 4, 0x1010));
});

child_test!(
    a_handler_installed_before_the_filter_loses_the_tracers_signals_too,
    {
        let dir = files();
        let act = KAction {
            handler: program_usr1 as *const () as u64,
            flags: 0x0400_0000,
            restorer: libc_restorer(),
            mask: !0,
        };
        assert_eq!(rt_sigaction(libc::SIGUSR1, Some(&act), None), 0);
        let _ = std::fs::remove_dir_all(dir);
        let mut e = setup();
        let p = e.map_dev();
        USR1_DEV.store(p, Ordering::SeqCst);
        usr1_to_self();
        assert_eq!(
            USR1_SEEN.load(Ordering::SeqCst),
            0x1010,
            "the handler ran to its end"
        );
        let mut back = KAction::default();
        assert_eq!(rt_sigaction(libc::SIGUSR1, None, Some(&mut back)), 0);
        let unblockable = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));
        assert_eq!(back.mask, !unblockable, "its own mask reads back");
        assert_eq!(e.events().len(), 2);
    }
);

child_test!(a_posix_spawn_child_leaves_the_programs_actions_alone, {
    let e = setup();
    // A SIGBUS handler of the program's (a signal the tracer owns: its action is
    // virtual, in memory the spawn's vfork child shares).
    let act = KAction {
        handler: program_usr1 as *const () as u64,
        flags: 0x0400_0000,
        restorer: libc_restorer(),
        mask: 0,
    };
    assert_eq!(rt_sigaction(libc::SIGBUS, Some(&act), None), 0);
    let path = e.dir.join("exit7");
    std::fs::write(&path, exit7_elf()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let argv = [p.as_ptr() as *mut libc::c_char, std::ptr::null_mut()];
    let envp = [std::ptr::null_mut::<libc::c_char>()];
    let mut pid = 0;
    // SAFETY: valid path, argument and environment vectors; default attributes.
    let r = unsafe {
        libc::posix_spawn(
            &mut pid,
            p.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    assert_eq!(r, 0);
    let mut st = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(libc::WIFEXITED(st), "{st:#x}");
    // The child reset its handlers to SIG_DFL (glibc does, for the signals it blocks);
    // the program's are untouched.
    let mut back = KAction::default();
    assert_eq!(rt_sigaction(libc::SIGBUS, None, Some(&mut back)), 0);
    assert_eq!(back, act);
});

/// This process's locked memory (`VmLck`), in KiB.
fn locked_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    l[6..].trim().trim_end_matches("kB").trim().parse().unwrap()
}

child_test!(
    raw_mlock_madvise_and_pkey_mprotect_of_a_device_answer_as_natively,
    {
        let mut e = setup();
        let p = e.map_dev();
        let len = DEV_LEN as u64;
        // The alias exists once the device was touched: it is locked and unlocked too.
        assert_eq!(rd(p + 8), 0x1002);
        assert_eq!(raw(libc::SYS_mlock, [p, len, 0, 0, 0, 0]), 0);
        assert_eq!(raw(libc::SYS_munlock, [p, len, 0, 0, 0, 0]), 0);
        assert_eq!(raw(libc::SYS_mlock2, [p, len, 0, 0, 0, 0]), 0);
        assert!(
            locked_kib() >= 8,
            "the device's pages (its alias) are locked"
        );
        assert_eq!(raw(libc::SYS_munlock, [p, len, 0, 0, 0, 0]), 0);
        assert_eq!(locked_kib(), 0, "unlocked, the alias too");
        for advice in [22u64, 23] {
            assert_eq!(raw(libc::SYS_madvise, [p, len, advice, 0, 0, 0]), 0);
        }
        // The kernel's own answers still come through: unaligned.
        assert_eq!(
            raw(libc::SYS_mlock2, [p, len, 0x55, 0, 0, 0]),
            -i64::from(libc::EINVAL)
        );
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        assert_eq!(
            raw(
                libc::SYS_pkey_mprotect,
                [p, PAGE as u64, rw, u64::MAX, 0, 0]
            ),
            0
        );
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.starts_with(&format!("{p:x}-")))
            .unwrap();
        assert!(line.contains(" ---s "), "{line}");
        assert_eq!(rd(p + 8), 0x1002);
        assert_eq!(
            e.events(),
            [
                Ev::Map {
                    addr: p,
                    len,
                    phys: 0
                },
                Ev::Read(p + 8, 4, 0x1002),
                Ev::Read(p + 8, 4, 0x1002),
            ]
        );
    }
);

/// What the vfork child execs.
struct VforkJob {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

/// The vfork child: unblocks everything, resets SIGBUS and SIGSYS (its exec must still be
/// trapped, not kill it), then execs.
extern "C" fn vfork_child(job: *mut libc::c_void) -> libc::c_int {
    let zero = 0u64;
    let dfl = KAction::default();
    // SAFETY: raw system calls with pointers to the parent's data, alive while it waits.
    unsafe {
        let job = &*(job as *const VforkJob);
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &zero, 0, 8);
        libc::syscall(libc::SYS_rt_sigaction, libc::SIGBUS, &dfl, 0, 8);
        libc::syscall(libc::SYS_rt_sigaction, libc::SIGSYS, &dfl, 0, 8);
        libc::syscall(libc::SYS_execve, job.path, job.argv, job.envp);
        libc::_exit(99)
    }
}

child_test!(a_vfork_child_leaves_the_programs_mask_and_actions_alone, {
    let e = setup();
    let segv = 1u64 << (libc::SIGSEGV - 1);
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(segv), None), 0);
    let act = KAction {
        handler: program_usr1 as *const () as u64,
        flags: 0x0400_0000,
        restorer: libc_restorer(),
        mask: 0,
    };
    assert_eq!(rt_sigaction(libc::SIGBUS, Some(&act), None), 0);
    // Everything the child uses is made before the clone.
    let path = e.dir.join("exit7");
    std::fs::write(&path, exit7_elf()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let argv = [p.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let job = VforkJob {
        path: p.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    // The child's own stack (as posix_spawn gives its child); CLONE_VFORK: the parent
    // waits for its exec.
    let mut stack = vec![0u8; 256 << 10];
    // SAFETY: the stack is ours and outlives the child's use of it (the parent is
    // suspended until the exec); the child makes raw system calls only.
    let pid = unsafe {
        libc::clone(
            vfork_child,
            stack.as_mut_ptr().add(stack.len()).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &job as *const VforkJob as *mut libc::c_void,
        )
    };
    assert!(pid > 0);
    let mut st = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert_eq!(
        libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)),
        Some(7),
        "{st:#x}"
    );
    let mut now = 0;
    assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(0), Some(&mut now)), 0);
    assert_eq!(
        now & segv,
        segv,
        "the parent still believes SIGSEGV blocked"
    );
    let mut back = KAction::default();
    assert_eq!(rt_sigaction(libc::SIGBUS, None, Some(&mut back)), 0);
    assert_eq!(back, act);
});

child_test!(
    an_image_started_with_sigsys_blocked_is_not_killed_by_its_first_trap,
    {
        let sys = 1u64 << (libc::SIGSYS - 1);
        // Before the filter: the kernel's own call.
        assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(sys), None), 0);
        let mut e = setup();
        let p = e.map_dev();
        assert_eq!(rd(p), 0x1000);
        let mut now = 0;
        assert_eq!(sigprocmask(libc::SIG_BLOCK, Some(0), Some(&mut now)), 0);
        assert_eq!(now & sys, sys, "the program still believes SIGSYS blocked");
        assert_eq!(kernel_blocked() & sys, 0);
        assert_eq!(e.events().len(), 2);
    }
);

child_test!(
    a_thread_with_a_filter_of_its_own_makes_install_fail_with_its_id,
    {
        let dir = files();
        let c = Consumer::create(16, 1024).unwrap();
        let rules = tracer::Rules::new(&[format!("{}/dev*", dir.display())], true);
        tracer::init(c.shm(), rules);
        std::mem::forget(c);
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // This thread alone gets a filter (no TSYNC): the process's threads no longer
            // share one filter tree, and a TSYNC install must name this thread.
            program_filter();
            // SAFETY: plain gettid.
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let (lo, hi) = text_range();
        let err = sysemu::install(lo, hi, None).unwrap_err();
        assert_eq!(err, sysemu::InstallError::Tsync(tid as u32));
        assert_eq!(
            err.to_string(),
            format!("thread {tid} cannot take the filter (it has a seccomp filter of its own)")
        );
        assert!(!sysemu::active());
        assert_eq!(
            sysemu::install(hi, lo, None),
            Err(sysemu::InstallError::Range)
        );
        // This thread has no filter: a raw getppid is the kernel's.
        // SAFETY: plain getppid.
        assert_eq!(
            raw(libc::SYS_getppid, [0; 6]),
            i64::from(unsafe { libc::getppid() })
        );
        done_tx.send(()).unwrap();
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
);
