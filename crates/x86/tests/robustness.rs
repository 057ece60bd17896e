//! No panics on any byte sequence, the commit rule on bus faults, #GP on misalignment,
//! unsupported reporting, and the forms the CI CPU cannot run natively (MOVDIRI, MOVDIR64B).

mod harness;

use harness::{Regs, Rng};
use mmio_trace_x86::{decode, emulate, AccessDir, Bus, BusFault, EmuError, Exception, Reason};

/// Accepts everything; reads return pseudo-random bytes.
struct AnyBus {
    rng: Rng,
    accesses: usize,
}

impl Bus for AnyBus {
    fn read(&mut self, _addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        self.rng.fill(buf);
        self.accesses += 1;
        Ok(())
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), BusFault> {
        self.accesses += 1;
        Ok(())
    }
}

/// Logs accesses over a flat memory at `base`; faults at and above `fault_from`.
struct LogBus {
    base: u64,
    mem: Vec<u8>,
    fault_from: u64,
    log: Vec<(bool, u64, usize)>,
}

impl LogBus {
    fn new(base: u64, len: usize) -> Self {
        LogBus {
            base,
            mem: (0..len).map(|i| i as u8).collect(),
            fault_from: u64::MAX,
            log: vec![],
        }
    }
    fn slot(&mut self, addr: u64, len: usize) -> Result<&mut [u8], BusFault> {
        if addr >= self.fault_from {
            return Err(BusFault { addr });
        }
        let off = addr.checked_sub(self.base).ok_or(BusFault { addr })? as usize;
        self.mem.get_mut(off..off + len).ok_or(BusFault { addr })
    }
}

impl Bus for LogBus {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        buf.copy_from_slice(self.slot(addr, buf.len())?);
        self.log.push((false, addr, buf.len()));
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        self.slot(addr, data.len())?.copy_from_slice(data);
        self.log.push((true, addr, data.len()));
        Ok(())
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(7);
    // Opcode bytes that lead into the emulated families, so decode succeeds often.
    const LEADS: &[&[u8]] = &[
        &[],
        &[0x48],
        &[0x66],
        &[0xf3],
        &[0xf2],
        &[0xf0],
        &[0x67],
        &[0x64],
        &[0x65],
        &[0x0f],
        &[0x66, 0x0f],
        &[0xf3, 0x0f],
        &[0xc5],
        &[0xc4],
        &[0x62],
        &[0xf3, 0x48, 0xa5],
    ];
    let mut decoded = 0;
    let mut emulated = 0;
    let n = 200_000;
    for _ in 0..n {
        let mut bytes = [0u8; 20];
        rng.fill(&mut bytes);
        let lead = LEADS[rng.below(LEADS.len() as u64) as usize];
        bytes[..lead.len()].copy_from_slice(lead);
        let len = rng.below(21) as usize;
        let rip = rng.next();
        let Ok(d) = decode(&bytes[..len], rip) else {
            continue;
        };
        decoded += 1;
        let mut cpu = Regs::zeroed();
        for g in cpu.gpr.iter_mut() {
            *g = rng.next();
        }
        cpu.gpr[1] &= 0x3f; // keep REP counts short
        cpu.rflags = 0x202 | (rng.next() & 0xcd5);
        let _ = d.accesses(&cpu);
        let mut bus = AnyBus {
            rng: Rng::new(rng.next()),
            accesses: 0,
        };
        if emulate(&d, &mut cpu, &mut bus).is_ok() {
            emulated += 1;
        }
    }
    eprintln!("robustness: {n} random byte sequences, {decoded} decoded as emulatable, {emulated} emulated");
    assert!(emulated > 1000);
}

#[test]
fn mutated_valid_encodings_never_panic() {
    // Valid forms of every family, then 1-3 random byte changes each: reaches the odd corners
    // (EVEX bits, prefixes, operand kinds) that uniform random bytes rarely hit.
    const SEEDS: &[&[u8]] = &[
        &[0x8b, 0x44, 0xb7, 0x08],
        &[0x48, 0xa1, 1, 2, 3, 4, 5, 6, 7, 8],
        &[0x66, 0xc7, 0x07, 0x34, 0x12],
        &[0x0f, 0xb6, 0x07],
        &[0x48, 0x63, 0x07],
        &[0x0f, 0x38, 0xf0, 0x07],
        &[0xf0, 0x0f, 0xb1, 0x0f],
        &[0xf0, 0x48, 0x0f, 0xc7, 0x0f],
        &[0x81, 0x47, 0x10, 1, 2, 3, 4],
        &[0xd3, 0x27],
        &[0x0f, 0xa5, 0x0f],
        &[0x0f, 0xab, 0x07],
        &[0x0f, 0x94, 0x07],
        &[0xff, 0x74, 0x24, 0x08],
        &[0x8f, 0x44, 0x24, 0x08],
        &[0xf3, 0x48, 0xa5],
        &[0xf2, 0xae],
        &[0x66, 0x0f, 0x6f, 0x07],
        &[0x0f, 0x16, 0x07],
        &[0xc5, 0xf8, 0x16, 0x07],
        &[0xc5, 0xfe, 0x6f, 0x07],
        &[0x62, 0xf1, 0xfe, 0x48, 0x6f, 0x07],
        &[0x62, 0xf1, 0x7e, 0x4b, 0x6f, 0x07],
        &[0x62, 0xf1, 0x7e, 0xcb, 0x6f, 0x07],
        &[0x0f, 0x6f, 0x07],
        &[0x66, 0x0f, 0x38, 0xf8, 0x06],
        &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],
    ];
    let mut rng = Rng::new(11);
    let mut emulated = 0;
    for _ in 0..200_000 {
        let seed = SEEDS[rng.below(SEEDS.len() as u64) as usize];
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        bytes[..seed.len()].copy_from_slice(seed);
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(seed.len() as u64) as usize;
            bytes[i] ^= 1 << rng.below(8);
        }
        let Ok(d) = decode(&bytes, rng.next()) else {
            continue;
        };
        let mut cpu = Regs::zeroed();
        for g in cpu.gpr.iter_mut() {
            *g = rng.next();
        }
        cpu.gpr[1] &= 0x3f;
        for k in cpu.k.iter_mut() {
            *k = rng.next();
        }
        cpu.fx[2] = rng.next() as u8;
        cpu.fx[3] = rng.next() as u8;
        let _ = d.accesses(&cpu);
        let mut bus = AnyBus {
            rng: Rng::new(rng.next()),
            accesses: 0,
        };
        if emulate(&d, &mut cpu, &mut bus).is_ok() {
            emulated += 1;
        }
    }
    eprintln!("robustness: 200000 mutated encodings, {emulated} emulated");
    assert!(emulated > 10_000);
}

#[test]
fn bus_fault_leaves_context_untouched() {
    // add [rdi], eax
    let d = decode(&[0x01, 0x07], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[7] = 0x5000;
    cpu.rip = 0x1000;
    let before = cpu;
    let mut bus = LogBus::new(0x5000, 64);
    bus.fault_from = 0x5000;
    assert_eq!(
        emulate(&d, &mut cpu, &mut bus),
        Err(EmuError::Bus(BusFault { addr: 0x5000 }))
    );
    assert_eq!(cpu, before);
}

#[test]
fn xadd_write_fault_commits_nothing() {
    // xadd [rdi], eax; the write faults after the read succeeded
    struct WriteFails;
    impl Bus for WriteFails {
        fn read(&mut self, _: u64, buf: &mut [u8]) -> Result<(), BusFault> {
            buf.fill(1);
            Ok(())
        }
        fn write(&mut self, addr: u64, _: &[u8]) -> Result<(), BusFault> {
            Err(BusFault { addr })
        }
    }
    let d = decode(&[0x0f, 0xc1, 0x07], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[0] = 5;
    cpu.rip = 0x1000;
    let before = cpu;
    assert!(emulate(&d, &mut cpu, &mut WriteFails).is_err());
    assert_eq!(cpu, before);
}

#[test]
fn rep_movs_fault_reflects_completed_elements() {
    // rep movsd: 4 elements from 0x5000 to 0x5100, the third destination faults.
    let d = decode(&[0xf3, 0xa5], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.rip = 0x1000;
    cpu.gpr[1] = 4;
    cpu.gpr[6] = 0x5000;
    cpu.gpr[7] = 0x5100;
    let mut bus = LogBus::new(0x5000, 0x200);
    bus.fault_from = 0x5108;
    assert_eq!(
        emulate(&d, &mut cpu, &mut bus),
        Err(EmuError::Bus(BusFault { addr: 0x5108 }))
    );
    assert_eq!((cpu.gpr[1], cpu.gpr[6], cpu.gpr[7]), (2, 0x5008, 0x5108));
    assert_eq!(
        cpu.rip, 0x1000,
        "RIP stays on the instruction so it can be restarted"
    );
    assert_eq!(
        bus.log,
        vec![
            (false, 0x5000, 4),
            (true, 0x5100, 4),
            (false, 0x5004, 4),
            (true, 0x5104, 4),
            (false, 0x5008, 4)
        ]
    );
}

#[test]
fn page_crossing_access_is_one_bus_access() {
    // mov rax, [rdi] with rdi 3 bytes before a page end
    let d = decode(&[0x48, 0x8b, 0x07], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[7] = 0x5ffd;
    let mut bus = LogBus::new(0x5000, 0x2000);
    emulate(&d, &mut cpu, &mut bus).unwrap();
    assert_eq!(bus.log, vec![(false, 0x5ffd, 8)]);
}

#[test]
fn failed_cmpxchg_writes_old_value_back() {
    // lock cmpxchg [rdi], ecx with eax != [rdi]
    let d = decode(&[0xf0, 0x0f, 0xb1, 0x0f], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[0] = 0xdead;
    cpu.gpr[7] = 0x5000;
    let mut bus = LogBus::new(0x5000, 16);
    emulate(&d, &mut cpu, &mut bus).unwrap();
    assert_eq!(bus.log, vec![(false, 0x5000, 4), (true, 0x5000, 4)]);
    assert_eq!(cpu.gpr[0], 0x0302_0100);
    assert_eq!(&bus.mem[..4], &[0, 1, 2, 3]);
    assert!(d.is_locked());
}

#[test]
fn misaligned_movaps_is_general_protection() {
    // movaps xmm0, [rdi]
    let d = decode(&[0x0f, 0x28, 0x07], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[7] = 0x5008;
    let mut bus = LogBus::new(0x5000, 64);
    assert_eq!(
        emulate(&d, &mut cpu, &mut bus),
        Err(EmuError::Exception(Exception::GeneralProtection {
            addr: 0x5008
        }))
    );
    assert!(bus.log.is_empty());
}

#[test]
fn unsupported_reports_mnemonic_and_bytes() {
    // div dword [rdi]
    let u = decode(&[0xf7, 0x37, 0x90], 0x1000).unwrap_err();
    assert_eq!(u.mnemonic, iced_x86::Mnemonic::Div);
    assert_eq!(u.bytes(), &[0xf7, 0x37]);
    assert_eq!(u.reason, Reason::NotEmulated);
    let u = decode(&[0x0f], 0).unwrap_err();
    assert_eq!(u.reason, Reason::Invalid);
    let u = decode(&[0x01, 0xc0], 0).unwrap_err(); // add eax, eax
    assert_eq!(u.reason, Reason::NoMemoryOperand);
}

#[test]
fn movdiri_is_one_store() {
    // movdiri [rdi], rax (REX.W 0F 38 F9 /r)
    let d = decode(&[0x48, 0x0f, 0x38, 0xf9, 0x07], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[0] = 0x1122_3344_5566_7788;
    cpu.gpr[7] = 0x5008;
    let mut bus = LogBus::new(0x5000, 64);
    emulate(&d, &mut cpu, &mut bus).unwrap();
    assert_eq!(bus.log, vec![(true, 0x5008, 8)]);
    assert_eq!(&bus.mem[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(cpu.rip, 0x1005);
}

#[test]
fn movdir64b_reads_64_then_writes_64() {
    // movdir64b rax, [rsi] (66 0F 38 F8 /r)
    let d = decode(&[0x66, 0x0f, 0x38, 0xf8, 0x06], 0x1000).unwrap();
    let mut cpu = Regs::zeroed();
    cpu.gpr[0] = 0x5080;
    cpu.gpr[6] = 0x5001;
    let mut bus = LogBus::new(0x5000, 0x100);
    let acc = d.accesses(&cpu);
    assert_eq!(acc.as_slice().len(), 2);
    assert_eq!(
        (acc.as_slice()[1].addr, acc.as_slice()[1].dir),
        (0x5080, AccessDir::Write)
    );
    emulate(&d, &mut cpu, &mut bus).unwrap();
    assert_eq!(bus.log, vec![(false, 0x5001, 64), (true, 0x5080, 64)]);
    let expect: Vec<u8> = (1..65).collect();
    assert_eq!(&bus.mem[0x80..0xc0], &expect[..]);
    // A misaligned destination is #GP before any access.
    cpu.gpr[0] = 0x5090;
    bus.log.clear();
    assert!(matches!(
        emulate(&d, &mut cpu, &mut bus),
        Err(EmuError::Exception(_))
    ));
    assert!(bus.log.is_empty());
}

#[test]
fn unsupported_gives_the_memory_operand_for_the_step_fallback() {
    // div qword [rbx + rcx*4 + 0x10]
    let u = decode(&[0x48, 0xf7, 0x74, 0x8b, 0x10], 0x1000).unwrap_err();
    let mut cpu = Regs::zeroed();
    cpu.gpr[3] = 0x5000;
    cpu.gpr[1] = 2;
    assert_eq!(u.memory_operand(&cpu), Some((0x5018, 8)));
    assert!(u.instruction().is_some());
    // fs: prefixed
    let u = decode(&[0x64, 0xf7, 0x33], 0).unwrap_err(); // div dword fs:[rbx]
    cpu.fs_base = 0x7000_0000;
    assert_eq!(u.memory_operand(&cpu), Some((0x7000_5000, 4)));
}

#[test]
fn decoded_is_small_enough_to_cache_per_site() {
    let size = std::mem::size_of::<mmio_trace_x86::Decoded>();
    eprintln!("size_of::<Decoded>() = {size}");
    assert!(size <= 64, "Decoded grew to {size} bytes");
}
