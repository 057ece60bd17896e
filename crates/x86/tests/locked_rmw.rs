//! Locked read-modify-writes reach the bus as one `Bus::atomic_rmw` call (so a bus shared
//! between threads can make them atomic against other threads' plain stores), with the
//! width and operation of the instruction; unlocked ones stay a read and a write. The
//! result (memory, registers, flags) equals the provided read + write fallback's.

mod harness;

use harness::Regs;
use mmio_trace_x86::{decode, emulate, Bus, BusFault, Cpu, Rmw};

/// One 8-byte word of memory at 0x5000; records which bus calls were made.
struct Word {
    mem: u64,
    calls: Vec<String>,
    /// Whether atomic_rmw is overridden (false: the provided read + write fallback).
    atomic: bool,
}

impl Bus for Word {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        self.calls.push(format!("R{}@{:x}", buf.len(), addr));
        buf.copy_from_slice(&self.mem.to_le_bytes()[..buf.len()]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        self.calls.push(format!("W{}@{:x}", data.len(), addr));
        let mut b = self.mem.to_le_bytes();
        b[..data.len()].copy_from_slice(data);
        self.mem = u64::from_le_bytes(b);
        Ok(())
    }
    fn atomic_rmw(&mut self, addr: u64, width: u32, op: &mut Rmw<'_>) -> Result<u64, BusFault> {
        if !self.atomic {
            let mut b = [0u8; 8];
            self.read(addr, &mut b[..width as usize])?;
            let old = u64::from_le_bytes(b);
            let new = op.apply(old, width);
            self.write(addr, &new.to_le_bytes()[..width as usize])?;
            return Ok(old);
        }
        let kind = match op {
            Rmw::Xchg(_) => "xchg",
            Rmw::Add(_) => "add",
            Rmw::Cmpxchg { .. } => "cmpxchg",
            Rmw::Update(_) => "update",
        };
        self.calls.push(format!("A{width}@{addr:x}:{kind}"));
        let m = if width == 8 {
            u64::MAX
        } else {
            (1u64 << (width * 8)) - 1
        };
        let old = self.mem & m;
        // Pure: calling it twice (as a CAS loop may) gives the same value.
        let new = op.apply(old, width);
        assert_eq!(new, op.apply(old, width));
        self.mem = (self.mem & !m) | new;
        Ok(old)
    }
}

/// Emulates `insn` with RDI = 0x5000, RAX = 0x11, RCX = 0x22, RDX = 0, RBX = 0x33 and
/// memory 0x44; returns (bus calls, memory, RAX, RCX, RDX, flags).
fn run(insn: &[u8], atomic: bool) -> (Vec<String>, u64, u64, u64, u64, u64) {
    run_with(insn, atomic, 0x44)
}

fn run_with(insn: &[u8], atomic: bool, mem: u64) -> (Vec<String>, u64, u64, u64, u64, u64) {
    let d = decode(insn, 0x1000).unwrap_or_else(|u| panic!("{insn:02x?} not emulated: {u:?}"));
    let mut cpu = Regs::zeroed();
    cpu.gpr[7] = 0x5000;
    cpu.gpr[0] = 0x11;
    cpu.gpr[1] = 0x22;
    cpu.gpr[3] = 0x33;
    let mut bus = Word {
        mem,
        calls: Vec::new(),
        atomic,
    };
    emulate(&d, &mut cpu, &mut bus).unwrap();
    let f = cpu.rflags() & 0x8d5;
    (bus.calls, bus.mem, cpu.gpr(0), cpu.gpr(1), cpu.gpr(2), f)
}

#[test]
fn locked_forms_are_one_atomic_rmw_with_the_fallbacks_result() {
    let cases: &[(&[u8], &str)] = &[
        (&[0xf0, 0x01, 0x0f], "A4@5000:update"), // lock add [rdi], ecx
        (&[0xf0, 0x48, 0x09, 0x0f], "A8@5000:update"), // lock or [rdi], rcx
        (&[0xf0, 0x66, 0x21, 0x0f], "A2@5000:update"), // lock and [rdi], cx
        (&[0xf0, 0x30, 0x0f], "A1@5000:update"), // lock xor [rdi], cl
        (&[0xf0, 0x29, 0x0f], "A4@5000:update"), // lock sub [rdi], ecx
        (&[0xf0, 0x83, 0x17, 0x05], "A4@5000:update"), // lock adc dword [rdi], 5
        (&[0xf0, 0xff, 0x07], "A4@5000:update"), // lock inc dword [rdi]
        (&[0xf0, 0xff, 0x0f], "A4@5000:update"), // lock dec dword [rdi]
        (&[0xf0, 0xf7, 0x1f], "A4@5000:update"), // lock neg dword [rdi]
        (&[0xf0, 0xf7, 0x17], "A4@5000:update"), // lock not dword [rdi]
        (&[0xf0, 0x0f, 0xab, 0x0f], "A4@5004:update"), // lock bts [rdi], ecx (bit 34)
        (&[0xf0, 0x0f, 0xba, 0x37, 0x02], "A4@5000:update"), // lock btr dword [rdi], 2
        (&[0xf0, 0x0f, 0xbb, 0x0f], "A4@5004:update"), // lock btc [rdi], ecx (bit 34)
        (&[0x87, 0x0f], "A4@5000:xchg"),         // xchg [rdi], ecx (implicit lock)
        (&[0x48, 0x87, 0x0f], "A8@5000:xchg"),   // xchg [rdi], rcx
        (&[0xf0, 0x0f, 0xc1, 0x0f], "A4@5000:add"), // lock xadd [rdi], ecx
        (&[0xf0, 0x0f, 0xb1, 0x0f], "A4@5000:cmpxchg"), // lock cmpxchg [rdi], ecx (fails)
        (&[0xf0, 0x0f, 0xb0, 0x0f], "A1@5000:cmpxchg"), // lock cmpxchg [rdi], cl
        (&[0xf0, 0x0f, 0xc7, 0x0f], "A8@5000:cmpxchg"), // lock cmpxchg8b [rdi]
    ];
    for &(insn, call) in cases {
        let (calls, mem, rax, rcx, rdx, f) = run(insn, true);
        assert_eq!(calls, vec![call.to_string()], "{insn:02x?}");
        let (fcalls, fmem, frax, frcx, frdx, ff) = run(insn, false);
        assert_eq!(
            fcalls.len(),
            2,
            "{insn:02x?}: fallback is a read and a write"
        );
        assert_eq!(
            (mem, rax, rcx, rdx, f),
            (fmem, frax, frcx, frdx, ff),
            "{insn:02x?}"
        );
    }
}

#[test]
fn cmpxchg_success_and_failure_through_the_atomic_path() {
    // lock cmpxchg [rdi], ecx with eax = 0x11.
    let insn = [0xf0, 0x0f, 0xb1, 0x0f];
    // Memory 0x44: fails; EAX gets the old value, memory unchanged, ZF clear.
    let (_, mem, rax, _, _, f) = run_with(&insn, true, 0x44);
    assert_eq!((mem, rax, f & 0x40), (0x44, 0x44, 0));
    // Memory 0x11: succeeds; memory gets ECX, EAX unchanged, ZF set.
    let (_, mem, rax, _, _, f) = run_with(&insn, true, 0x11);
    assert_eq!((mem, rax, f & 0x40), (0x22, 0x11, 0x40));
    // lock cmpxchg8b [rdi]: EDX:EAX = 0:0x11 against 0x11 succeeds, stores ECX:EBX.
    let (_, mem, _, _, _, f) = run_with(&[0xf0, 0x0f, 0xc7, 0x0f], true, 0x11);
    assert_eq!((mem, f & 0x40), (0x22_0000_0033, 0x40));
    // ... and against 0x44 fails: EDX:EAX get the old value.
    let (_, mem, rax, _, rdx, f) = run_with(&[0xf0, 0x0f, 0xc7, 0x0f], true, 0x44);
    assert_eq!((mem, rax, rdx, f & 0x40), (0x44, 0x44, 0, 0));
}

#[test]
fn unlocked_rmw_stays_a_read_and_a_write() {
    for insn in [
        &[0x01, 0x0f][..],
        &[0x0f, 0xc1, 0x0f],
        &[0x0f, 0xb1, 0x0f],
        &[0xff, 0x07],
    ] {
        let (calls, ..) = run(insn, true);
        assert_eq!(
            calls,
            vec!["R4@5000".to_string(), "W4@5000".to_string()],
            "{insn:02x?}"
        );
    }
}
