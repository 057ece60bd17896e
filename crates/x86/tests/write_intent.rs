//! Which instructions write: the CPU faults on a read-only page exactly when the instruction
//! performs a write cycle (even one that stores the unchanged value, like a shift by 0 or a
//! failed CMPXCHG). The emulator must issue a bus write in exactly those cases, since a device
//! sees the write.

mod harness;

use harness::Regs;
use mmio_trace_x86::{decode, emulate, Bus, BusFault};

struct Recorder {
    wrote: bool,
}

impl Bus for Recorder {
    fn read(&mut self, _addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        buf.fill(0);
        buf[0] = 5;
        Ok(())
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), BusFault> {
        self.wrote = true;
        Ok(())
    }
}

/// Runs `insn` natively in a child process with RDI = RSI = a read-only page holding 5 and
/// RAX = RCX = 0; true if it faulted (a write cycle).
fn cpu_writes(insn: &[u8]) -> bool {
    // SAFETY: private anonymous mappings; the child only runs the stub and exits.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let code = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(page != libc::MAP_FAILED && code != libc::MAP_FAILED);
        *(page as *mut u32) = 5;
        libc::mprotect(page, 4096, libc::PROT_READ);
        // xor eax,eax; xor ecx,ecx; mov rsi,rdi; <insn>; ret
        let mut stub = vec![0x31, 0xc0, 0x31, 0xc9, 0x48, 0x89, 0xfe];
        stub.extend_from_slice(insn);
        stub.push(0xc3);
        std::ptr::copy_nonoverlapping(stub.as_ptr(), code as *mut u8, stub.len());
        let pid = libc::fork();
        if pid == 0 {
            let f: extern "C" fn(*mut libc::c_void) = std::mem::transmute(code);
            f(page);
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::munmap(page, 4096);
        libc::munmap(code, 4096);
        libc::WIFSIGNALED(status)
    }
}

fn emulator_writes(insn: &[u8]) -> bool {
    let d = decode(insn, 0x1000).unwrap_or_else(|u| panic!("{insn:02x?} not emulated: {u:?}"));
    let mut cpu = Regs::zeroed();
    cpu.gpr[7] = 0x5000;
    cpu.gpr[6] = 0x5000;
    let mut bus = Recorder { wrote: false };
    emulate(&d, &mut cpu, &mut bus).unwrap();
    bus.wrote
}

#[test]
fn emulator_writes_exactly_when_the_cpu_does() {
    let forms: &[(&str, &[u8])] = &[
        ("shl dword [rdi], cl (cl = 0)", &[0xd3, 0x27]),
        ("rol dword [rdi], 0", &[0xc1, 0x07, 0x00]),
        ("shld [rdi], ecx, 0", &[0x0f, 0xa4, 0x0f, 0x00]),
        ("or dword [rdi], 0", &[0x83, 0x0f, 0x00]),
        ("lock and dword [rdi], -1", &[0xf0, 0x83, 0x27, 0xff]),
        ("cmpxchg [rdi], ecx (fails)", &[0x0f, 0xb1, 0x0f]),
        ("xadd [rdi], eax (adds 0)", &[0x0f, 0xc1, 0x07]),
        (
            "bts dword [rdi], 0 (already set)",
            &[0x0f, 0xba, 0x2f, 0x00],
        ),
        ("cmp dword [rdi], 0", &[0x83, 0x3f, 0x00]),
        ("test dword [rdi], ecx", &[0x85, 0x0f]),
        ("bt dword [rdi], 1", &[0x0f, 0xba, 0x27, 0x01]),
        ("add eax, [rdi]", &[0x03, 0x07]),
        ("rep movsb (rcx = 0)", &[0xf3, 0xa4]),
        ("rep stosb (rcx = 0)", &[0xf3, 0xaa]),
        ("repe cmpsb (rcx = 0)", &[0xf3, 0xa6]),
    ];
    for (name, bytes) in forms {
        let cpu = cpu_writes(bytes);
        let emu = emulator_writes(bytes);
        eprintln!(
            "write-intent {name:<36} cpu {} emulator {}",
            if cpu { "writes" } else { "reads " },
            if emu { "writes" } else { "reads" }
        );
        assert_eq!(
            cpu, emu,
            "{name}: CPU write cycle {cpu}, emulator bus write {emu}"
        );
    }
}
