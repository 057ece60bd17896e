//! Differential test harness: runs one instruction natively on an ordinary page and emulated
//! on a copy of the same memory, from the same registers, and compares everything.
#![allow(dead_code)]

use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
use mmio_trace_x86::{Bus, BusFault, Cpu};

/// Small deterministic RNG (xorshift64*), so failures reproduce from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Vector state the host can load and store natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VecLevel {
    Sse,
    Avx,
    Avx512,
}

pub fn vec_level() -> VecLevel {
    if std::is_x86_feature_detected!("avx512f") {
        VecLevel::Avx512
    } else if std::is_x86_feature_detected!("avx") {
        VecLevel::Avx
    } else {
        VecLevel::Sse
    }
}

/// Register file in the layout the native stub loads and stores.
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rflags: u64,
    pub rip: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub k: [u64; 8],
    pub zmm: [[u8; 64]; 32],
    /// FXSAVE image: the stub loads the x87/MMX state from it (FXRSTOR) and stores it back.
    pub fx: [u8; 512],
}

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const N: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        for (n, v) in N.iter().zip(self.gpr.iter()) {
            write!(f, "{n}={v:#x} ")?;
        }
        write!(f, "rflags={:#x} rip={:#x}", self.rflags, self.rip)
    }
}

impl Regs {
    pub fn zeroed() -> Self {
        Regs {
            gpr: [0; 16],
            rflags: 0x202,
            rip: 0,
            fs_base: 0,
            gs_base: 0,
            k: [0; 8],
            zmm: [[0; 64]; 32],
            fx: {
                let mut fx = [0u8; 512];
                fx[..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW default
                fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR default
                fx
            },
        }
    }
}

impl Cpu for Regs {
    fn gpr(&self, n: usize) -> u64 {
        self.gpr[n]
    }
    fn set_gpr(&mut self, n: usize, value: u64) {
        self.gpr[n] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
    fn fs_base(&self) -> u64 {
        self.fs_base
    }
    fn gs_base(&self) -> u64 {
        self.gs_base
    }
    fn vec(&self, n: usize) -> [u8; 64] {
        self.zmm[n]
    }
    fn set_vec(&mut self, n: usize, value: &[u8; 64]) {
        self.zmm[n] = *value;
    }
    fn opmask(&self, n: usize) -> u64 {
        self.k[n]
    }
    fn set_opmask(&mut self, n: usize, value: u64) {
        self.k[n] = value;
    }
    fn x87_status(&self) -> u16 {
        u16::from_le_bytes([self.fx[2], self.fx[3]])
    }
    fn set_x87_status(&mut self, value: u16) {
        self.fx[2..4].copy_from_slice(&value.to_le_bytes());
    }
    fn x87_tags(&self) -> u8 {
        self.fx[4]
    }
    fn set_x87_tags(&mut self, value: u8) {
        self.fx[4] = value;
    }
    fn x87_slot(&self, i: usize) -> [u8; 10] {
        let o = 32 + 16 * i;
        self.fx[o..o + 10].try_into().unwrap()
    }
    fn set_x87_slot(&mut self, i: usize, value: &[u8; 10]) {
        let o = 32 + 16 * i;
        self.fx[o..o + 10].copy_from_slice(value);
    }
}

/// The x87/MMX part of the state: FCW, FSW, abridged FTW and the eight 80-bit registers
/// (the FPU instruction/data pointers are not compared).
pub fn x87_equal(a: &Regs, b: &Regs) -> bool {
    a.fx[..5] == b.fx[..5] && (0..8).all(|i| a.x87_slot(i) == b.x87_slot(i))
}

/// One bus access as the test bus saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub write: bool,
    pub addr: u64,
    pub data: Vec<u8>,
}

/// A bus over a copy of the data area: logs every access, refuses anything outside it.
pub struct TestBus {
    pub base: u64,
    pub mem: Vec<u8>,
    pub log: Vec<Seen>,
}

impl TestBus {
    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, BusFault> {
        let off = addr.checked_sub(self.base).ok_or(BusFault { addr })? as usize;
        let end = off.checked_add(len).ok_or(BusFault { addr })?;
        if end > self.mem.len() {
            return Err(BusFault { addr });
        }
        Ok(off..end)
    }
}

impl Bus for TestBus {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        self.log.push(Seen {
            write: false,
            addr,
            data: buf.to_vec(),
        });
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        let r = self.range(addr, data.len())?;
        self.mem[r].copy_from_slice(data);
        self.log.push(Seen {
            write: true,
            addr,
            data: data.to_vec(),
        });
        Ok(())
    }
}

pub const PAGE: usize = 4096;
/// Code page, two state pages, then the data area the instructions touch.
const CODE_OFF: usize = 0;
const STATE_OFF: usize = PAGE;
const DATA_OFF: usize = 4 * PAGE;
pub const DATA_LEN: usize = 2 * PAGE;
const MAP_LEN: usize = DATA_OFF + DATA_LEN;
/// Offset of the 16-byte slot where the instruction under test goes.
const SLOT_LEN: usize = 16;

/// The native side: an executable stub that loads a `Regs`, runs the slot, stores a `Regs`.
pub struct Native {
    map: *mut u8,
    slot: usize,
    level: VecLevel,
}

// State page layout.
const HOST_RSP: usize = 0;
const SCRATCH_TOP: usize = 512;
const IN_REGS: usize = 1024;
const OUT_REGS: usize = IN_REGS + std::mem::size_of::<Regs>().next_multiple_of(64);

fn k_reg(i: usize) -> Register {
    [
        Register::K0,
        Register::K1,
        Register::K2,
        Register::K3,
        Register::K4,
        Register::K5,
        Register::K6,
        Register::K7,
    ][i]
}

fn gpr64(i: usize) -> Register {
    [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ][i]
}

impl Native {
    pub fn new() -> Self {
        // SAFETY: anonymous private mapping; MAP_32BIT keeps it below 2 GiB so 32-bit address
        // size and absolute disp32 operands can reach the data area.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        let mut n = Native {
            map: map as *mut u8,
            slot: 0,
            level: vec_level(),
        };
        n.build();
        n
    }

    pub fn data_base(&self) -> u64 {
        self.map as u64 + DATA_OFF as u64
    }

    pub fn slot_addr(&self) -> u64 {
        self.map as u64 + self.slot as u64
    }

    fn state(&self, off: usize) -> u64 {
        self.map as u64 + (STATE_OFF + off) as u64
    }

    fn build(&mut self) {
        let base = self.map as u64 + CODE_OFF as u64;
        let mut code: Vec<u8> = Vec::new();
        let mut enc = Encoder::new(64);
        let rip_mem = |a: u64| MemoryOperand::with_base_displ(Register::RIP, a as i64);
        let mut emit = |code: &mut Vec<u8>, i: Instruction| {
            let ip = base + code.len() as u64;
            enc.encode(&i, ip).expect("stub encodes");
            code.extend_from_slice(&enc.take_buffer());
        };
        let regs_field = |which: usize, field: usize| self.state(which) + field as u64;
        let gpr_off = |i: usize| i * 8;
        let rflags_off = 16 * 8;
        let k_off = std::mem::offset_of!(Regs, k);
        let zmm_off = std::mem::offset_of!(Regs, zmm);
        for r in [
            Register::RBX,
            Register::RBP,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ] {
            emit(&mut code, Instruction::with1(Code::Push_r64, r).unwrap());
        }
        emit(
            &mut code,
            Instruction::with2(
                Code::Mov_rm64_r64,
                rip_mem(self.state(HOST_RSP)),
                Register::RSP,
            )
            .unwrap(),
        );
        let fx_off = std::mem::offset_of!(Regs, fx);
        emit(
            &mut code,
            Instruction::with1(
                Code::Fxrstor64_m512byte,
                rip_mem(regs_field(IN_REGS, fx_off)),
            )
            .unwrap(),
        );
        self.vec_io(&mut code, &mut emit, IN_REGS, zmm_off, k_off, true);
        emit(
            &mut code,
            Instruction::with2(
                Code::Lea_r64_m,
                Register::RSP,
                rip_mem(self.state(SCRATCH_TOP)),
            )
            .unwrap(),
        );
        emit(
            &mut code,
            Instruction::with1(Code::Push_rm64, rip_mem(regs_field(IN_REGS, rflags_off))).unwrap(),
        );
        emit(&mut code, Instruction::with(Code::Popfq));
        for i in 0..16 {
            emit(
                &mut code,
                Instruction::with2(
                    Code::Mov_r64_rm64,
                    gpr64(i),
                    rip_mem(regs_field(IN_REGS, gpr_off(i))),
                )
                .unwrap(),
            );
        }
        let slot = CODE_OFF + code.len();
        code.extend_from_slice(&[0x90; SLOT_LEN]);
        for i in 0..16 {
            emit(
                &mut code,
                Instruction::with2(
                    Code::Mov_rm64_r64,
                    rip_mem(regs_field(OUT_REGS, gpr_off(i))),
                    gpr64(i),
                )
                .unwrap(),
            );
        }
        emit(
            &mut code,
            Instruction::with2(
                Code::Lea_r64_m,
                Register::RSP,
                rip_mem(self.state(SCRATCH_TOP)),
            )
            .unwrap(),
        );
        emit(&mut code, Instruction::with(Code::Pushfq));
        emit(
            &mut code,
            Instruction::with1(Code::Pop_rm64, rip_mem(regs_field(OUT_REGS, rflags_off))).unwrap(),
        );
        emit(&mut code, Instruction::with(Code::Cld));
        // Save the x87/MMX state, then leave the x87 stack empty as the ABI requires.
        emit(
            &mut code,
            Instruction::with1(
                Code::Fxsave64_m512byte,
                rip_mem(regs_field(OUT_REGS, fx_off)),
            )
            .unwrap(),
        );
        emit(&mut code, Instruction::with(Code::Fninit));
        self.vec_io(&mut code, &mut emit, OUT_REGS, zmm_off, k_off, false);
        if self.level != VecLevel::Sse {
            emit(&mut code, Instruction::with(Code::VEX_Vzeroupper));
        }
        emit(
            &mut code,
            Instruction::with2(
                Code::Mov_r64_rm64,
                Register::RSP,
                rip_mem(self.state(HOST_RSP)),
            )
            .unwrap(),
        );
        for r in [
            Register::R15,
            Register::R14,
            Register::R13,
            Register::R12,
            Register::RBP,
            Register::RBX,
        ] {
            emit(&mut code, Instruction::with1(Code::Pop_r64, r).unwrap());
        }
        emit(&mut code, Instruction::with(Code::Retnq));
        assert!(code.len() < PAGE);
        self.slot = slot;
        // SAFETY: the code page is ours and writable.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), self.map.add(CODE_OFF), code.len()) };
    }

    fn vec_io(
        &self,
        code: &mut Vec<u8>,
        emit: &mut impl FnMut(&mut Vec<u8>, Instruction),
        which: usize,
        zmm_off: usize,
        k_off: usize,
        load: bool,
    ) {
        let m = |off: usize| {
            MemoryOperand::with_base_displ(Register::RIP, (self.state(which) + off as u64) as i64)
        };
        match self.level {
            VecLevel::Avx512 => {
                for i in 0..32 {
                    let r = Register::ZMM0 as u32 + i as u32;
                    // SAFETY-free: Register is a plain enum; iterate via transmute-free table.
                    let reg: Register = zmm_reg(r);
                    let ins = if load {
                        Instruction::with2(
                            Code::EVEX_Vmovdqu64_zmm_k1z_zmmm512,
                            reg,
                            m(zmm_off + 64 * i),
                        )
                    } else {
                        Instruction::with2(
                            Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
                            m(zmm_off + 64 * i),
                            reg,
                        )
                    };
                    emit(code, ins.unwrap());
                }
                for i in 0..8 {
                    let ins = if load {
                        Instruction::with2(Code::VEX_Kmovq_kr_km64, k_reg(i), m(k_off + 8 * i))
                    } else {
                        Instruction::with2(Code::VEX_Kmovq_m64_kr, m(k_off + 8 * i), k_reg(i))
                    };
                    emit(code, ins.unwrap());
                }
            }
            VecLevel::Avx => {
                for i in 0..16 {
                    let reg = ymm_reg(i);
                    let ins = if load {
                        Instruction::with2(Code::VEX_Vmovdqu_ymm_ymmm256, reg, m(zmm_off + 64 * i))
                    } else {
                        Instruction::with2(Code::VEX_Vmovdqu_ymmm256_ymm, m(zmm_off + 64 * i), reg)
                    };
                    emit(code, ins.unwrap());
                }
            }
            VecLevel::Sse => {
                for i in 0..16 {
                    let reg = xmm_reg(i);
                    let ins = if load {
                        Instruction::with2(Code::Movdqu_xmm_xmmm128, reg, m(zmm_off + 64 * i))
                    } else {
                        Instruction::with2(Code::Movdqu_xmmm128_xmm, m(zmm_off + 64 * i), reg)
                    };
                    emit(code, ins.unwrap());
                }
            }
        }
    }

    /// Runs `insn` (at most 15 bytes) natively from `regs` with the data area holding `data`;
    /// returns the registers and the data area afterwards.
    pub fn run(&mut self, insn: &[u8], regs: &Regs, data: &[u8]) -> (Regs, Vec<u8>) {
        assert!(insn.len() <= SLOT_LEN && data.len() == DATA_LEN);
        // SAFETY: all offsets are inside our mapping; the stub preserves the callee-saved
        // registers and RSP, and the instruction under test only touches the data area (the
        // generators guarantee it).
        unsafe {
            let slot = self.map.add(self.slot);
            std::ptr::write_bytes(slot, 0x90, SLOT_LEN);
            std::ptr::copy_nonoverlapping(insn.as_ptr(), slot, insn.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.add(DATA_OFF), DATA_LEN);
            std::ptr::write(self.map.add(STATE_OFF + IN_REGS) as *mut Regs, *regs);
            let f: extern "C" fn() = std::mem::transmute(self.map.add(CODE_OFF));
            f();
            let mut out: Regs = std::ptr::read(self.map.add(STATE_OFF + OUT_REGS) as *const Regs);
            out.rip = regs.rip;
            out.fs_base = regs.fs_base;
            out.gs_base = regs.gs_base;
            let mem = std::slice::from_raw_parts(self.map.add(DATA_OFF), DATA_LEN).to_vec();
            (out, mem)
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping we created.
        unsafe { libc::munmap(self.map as *mut libc::c_void, MAP_LEN) };
    }
}

fn reg_from(n: u32) -> Register {
    // Register is a fieldless enum with contiguous values; find by search to stay safe.
    Register::values()
        .find(|r| *r as u32 == n)
        .unwrap_or(Register::None)
}

pub fn zmm_reg(n: u32) -> Register {
    reg_from(n)
}
pub fn ymm_reg(i: usize) -> Register {
    reg_from(Register::YMM0 as u32 + i as u32)
}
pub fn xmm_reg(i: usize) -> Register {
    reg_from(Register::XMM0 as u32 + i as u32)
}
pub fn reg_n(first: Register, i: usize) -> Register {
    reg_from(first as u32 + i as u32)
}

/// FS and GS bases of the current thread (arch_prctl), so `fs:`/`gs:` operands can be aimed
/// at the data area.
pub fn seg_bases() -> (u64, u64) {
    let mut fs = 0u64;
    let mut gs = 0u64;
    // SAFETY: ARCH_GET_FS/GS write one u64 to the pointer we pass.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64);
        libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut gs as *mut u64);
    }
    (fs, gs)
}

/// Compares the vector state the host could load (XMM/YMM/ZMM, opmasks).
pub fn vec_equal(level: VecLevel, a: &Regs, b: &Regs) -> bool {
    let (n, w) = match level {
        VecLevel::Avx512 => (32, 64),
        VecLevel::Avx => (16, 32),
        VecLevel::Sse => (16, 16),
    };
    (0..n).all(|i| a.zmm[i][..w] == b.zmm[i][..w]) && (level != VecLevel::Avx512 || a.k == b.k)
}
