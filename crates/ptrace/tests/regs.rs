//! Registers read through `Regs` (an `mmio_trace_x86::Cpu`) equal those a child loaded, and
//! registers changed through it are those the child then sees.

mod common;

use common::Helper;
use mmio_trace_ptrace::{cont, detach, interrupt, seize, wait_tid, Options, Regs, Stop};
use mmio_trace_x86::Cpu;

const FLAG: u64 = 0x0f0f_0f0f_0f0f_0f0f;

fn pattern(n: usize) -> [u8; 64] {
    let mut v = [0u8; 64];
    for (j, b) in v.iter_mut().enumerate() {
        *b = ((n * 64 + j) * 7 + 3) as u8;
    }
    v
}

fn gpr_value(n: usize) -> u64 {
    let b = 0xa0 + n as u64;
    let v = b * 0x0101_0101_0101_0100 + n as u64;
    if n == 11 {
        0xabab_abab_abab_0b0b
    } else {
        v
    }
}

/// Stops the child inside its spin loop (R15 = FLAG) and returns its registers.
fn stop_in_loop(pid: i32) -> Regs {
    seize(pid, Options::NONE).unwrap();
    loop {
        interrupt(pid).unwrap();
        let s = wait_tid(pid).unwrap();
        assert!(matches!(s, Stop::Interrupt), "{s:?}");
        let r = Regs::read(pid).unwrap();
        if r.gpr(15) == FLAG {
            return r;
        }
        cont(pid, 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn parse(out: &str, tag: &str) -> Vec<u8> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("{tag} in {out}"));
    let h = line.split_whitespace().nth(1).unwrap();
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn check_common(r: &Regs) {
    for n in [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] {
        assert_eq!(r.gpr(n), gpr_value(n), "gpr {n}");
    }
    // fninit; fld1; fldpi; fldl2t: three pushes, TOP = 5, physical registers 5..7 valid.
    assert_eq!(r.x87_status(), 5 << 11);
    assert_eq!(r.x87_tags(), 0xe0);
    assert_eq!(
        r.x87_slot(2),
        [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f],
        "ST(2) = 1.0"
    );
    assert_eq!(
        r.x87_slot(1),
        [0x35, 0xc2, 0x68, 0x21, 0xa2, 0xda, 0x0f, 0xc9, 0x00, 0x40],
        "ST(1) = pi"
    );
    assert_eq!(r.fs_base(), r.user().fs_base);
    assert_ne!(r.fs_base(), 0, "glibc sets FS for TLS");
}

#[test]
fn avx512_registers_read_and_written() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("no AVX-512 on this CPU: the AVX2 test covers YMM");
        return;
    }
    let mut h = Helper::start("e_regs", &["avx512"]);
    let pid = h.pid();
    let mut r = stop_in_loop(pid);
    check_common(&r);
    assert!(r.has_xsave());
    for n in 0..32 {
        assert_eq!(r.vec(n), pattern(n), "zmm{n}");
    }
    for n in 0..8 {
        assert_eq!(
            r.opmask(n),
            0x0101_0101_0101_0101 * (n as u64 + 1) + 0x10,
            "k{n}"
        );
    }
    let x: [u8; 64] = std::array::from_fn(|i| 0xc0 ^ i as u8);
    let y: [u8; 64] = std::array::from_fn(|i| 0x5a ^ (3 * i) as u8);
    r.set_vec(5, &x);
    r.set_vec(20, &y);
    r.set_opmask(3, 0x1234_5678_9abc_def0);
    r.set_gpr(0, 0x7777_6666_5555_4444);
    r.set_gpr(15, 0);
    r.write_back().unwrap();
    // Read back from the kernel before letting it go.
    let r2 = Regs::read(pid).unwrap();
    assert_eq!(r2.vec(5), x);
    assert_eq!(r2.vec(20), y);
    assert_eq!(r2.vec(6), pattern(6));
    detach(pid, 0).unwrap();
    let out = h.rest();
    assert_eq!(parse(&out, "v5"), x.to_vec());
    assert_eq!(parse(&out, "v20"), y.to_vec());
    assert_eq!(parse(&out, "v4"), pattern(4).to_vec());
    assert_eq!(parse(&out, "v31"), pattern(31).to_vec());
    assert_eq!(
        parse(&out, "k3"),
        0x1234_5678_9abc_def0u64.to_le_bytes().to_vec()
    );
    assert_eq!(
        parse(&out, "k2"),
        (0x0303_0303_0303_0303u64 + 0x10).to_le_bytes().to_vec()
    );
    assert_eq!(
        parse(&out, "g0"),
        0x7777_6666_5555_4444u64.to_le_bytes().to_vec()
    );
    assert_eq!(parse(&out, "g7"), gpr_value(7).to_le_bytes().to_vec());
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn avx2_registers_read_and_written() {
    assert!(
        std::arch::is_x86_feature_detected!("avx2"),
        "the register test needs an AVX2 CPU"
    );
    let mut h = Helper::start("e_regs", &["avx2"]);
    let pid = h.pid();
    let mut r = stop_in_loop(pid);
    check_common(&r);
    for n in 0..16 {
        let mut want = pattern(n);
        want[32..].fill(0);
        assert_eq!(r.vec(n), want, "ymm{n}");
    }
    let mut x = [0u8; 64];
    for (i, b) in x.iter_mut().take(32).enumerate() {
        *b = 0x90 + i as u8;
    }
    r.set_vec(9, &x);
    r.set_gpr(13, 42);
    r.set_gpr(15, 0);
    r.write_back().unwrap();
    detach(pid, 0).unwrap();
    let out = h.rest();
    assert_eq!(parse(&out, "v9"), x[..32].to_vec());
    assert_eq!(parse(&out, "v8"), pattern(8)[..32].to_vec());
    assert_eq!(parse(&out, "g13"), 42u64.to_le_bytes().to_vec());
    assert_eq!(h.exit_code(), 0);
}

#[test]
fn writing_a_vector_component_in_its_initial_state_makes_it_live() {
    assert!(
        std::arch::is_x86_feature_detected!("avx2"),
        "the register test needs an AVX2 CPU"
    );
    let mut h = Helper::start("e_regs", &["vzeroupper"]);
    let pid = h.pid();
    let mut r = stop_in_loop(pid);
    for n in 0..16 {
        let mut want = pattern(n);
        want[16..].fill(0);
        assert_eq!(r.vec(n), want, "ymm{n} after vzeroupper");
    }
    let x: [u8; 64] = std::array::from_fn(|i| if i < 32 { 0x40 + i as u8 } else { 0 });
    r.set_vec(9, &x);
    r.set_gpr(15, 0);
    r.write_back().unwrap();
    detach(pid, 0).unwrap();
    let out = h.rest();
    assert_eq!(parse(&out, "v9"), x[..32].to_vec());
    let mut v8 = pattern(8)[..32].to_vec();
    v8[16..].fill(0);
    assert_eq!(parse(&out, "v8"), v8);
    assert_eq!(h.exit_code(), 0);
}
