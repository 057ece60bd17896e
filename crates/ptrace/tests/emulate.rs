//! `Regs` as the emulator's `Cpu`: faults on a PROT_NONE page completed from outside the
//! process, as the ptrace route does, with exact register results in the program.

mod common;

use common::Helper;
use mmio_trace_ptrace::{cont, read_mem, seize, wait_tid, write_mem, Mem, Options, Regs, Stop};
use mmio_trace_x86::{decode, emulate, Bus, BusFault, Cpu};

/// A device whose byte at offset i is `i * 3 + 1`; records writes.
struct Dev {
    base: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Bus for Dev {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = ((addr - self.base + k as u64) * 3 + 1) as u8;
        }
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        self.writes.push((addr - self.base, data.to_vec()));
        Ok(())
    }
}

fn dev_bytes(off: u64, n: u64) -> Vec<u8> {
    (off..off + n).map(|i| (i * 3 + 1) as u8).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn faults_emulated_through_regs_give_the_program_exact_values() {
    assert!(
        std::arch::is_x86_feature_detected!("avx2"),
        "the test program uses AVX"
    );
    let mut h = Helper::start("e_emul", &[]);
    let pid = h.pid();
    let l = h.line();
    let base = u64::from_str_radix(l.strip_prefix("addr=").unwrap(), 16).unwrap();
    seize(pid, Options::TRACESYSGOOD).unwrap();
    // The PROT_NONE page is readable and writable from outside (/proc/PID/mem, where
    // process_vm_readv fails).
    write_mem(pid, base + 4000, b"outside").unwrap();
    let mut back = [0u8; 7];
    read_mem(pid, base + 4000, &mut back).unwrap();
    assert_eq!(&back, b"outside");
    let e = read_mem(pid, 8, &mut back).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot read 7 bytes at 0x8 in process {pid}: Input/output error (os error 5) (is the range mapped?)")
    );
    h.write_stdin(b"g");
    let mut mem = Mem::new(pid);
    let mut dev = Dev {
        base,
        writes: Vec::new(),
    };
    let mut emulated = 0;
    loop {
        match wait_tid(pid).unwrap() {
            Stop::Signal {
                signal: libc::SIGSEGV,
                info,
            } => {
                let addr = info.unwrap().fault_addr().unwrap();
                assert!((base..base + 4096).contains(&addr), "{addr:#x}");
                let mut regs = Regs::read(pid).unwrap();
                let mut code = [0u8; 15];
                mem.read(regs.rip(), &mut code).unwrap();
                let d = decode(&code, regs.rip()).unwrap();
                let out = emulate(&d, &mut regs, &mut dev).unwrap();
                assert_eq!(regs.rip(), out.next_rip);
                regs.write_back().unwrap();
                emulated += 1;
                cont(pid, 0).unwrap();
            }
            Stop::Exited(code) => {
                h.mark_reaped();
                assert_eq!(code, 0);
                break;
            }
            s => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!(emulated, 5);
    let mut want_rax = [0u8; 8];
    want_rax.copy_from_slice(&dev_bytes(0, 8));
    assert_eq!(
        h.line(),
        format!(
            "rax={:016x} xmm3={} ymm5={}",
            u64::from_le_bytes(want_rax),
            hex(&dev_bytes(16, 16)),
            hex(&dev_bytes(32, 32))
        )
    );
    let z: Vec<u8> = (0..32).map(|i| 0xd0 + i as u8).collect();
    let old = u64::from_le_bytes(dev_bytes(128, 8).try_into().unwrap());
    assert_eq!(
        dev.writes,
        vec![(96, z), (128, (old.wrapping_add(5)).to_le_bytes().to_vec())]
    );
}
