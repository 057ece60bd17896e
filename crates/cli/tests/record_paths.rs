//! Every instruction form the x86 differential suite knows (and the forms the emulator does
//! not complete, issue 14) run on a device mapping through the built binary, with each
//! fault path forced in turn (`MMIO_TRACE_PATH=emulate|ool|step`). For each path the
//! recorded sequence (direction, width, offset, bytes, in order) must be exactly the one
//! computed here from the device's known contents and each instruction's semantics, and
//! the program's output and the device's final bytes must be those of an untraced run on a
//! plain file. tests/programs/diff_forms.c runs the forms, in the order of `forms()`.
//!
//! What each path can log differs today, and the table says it per form: the emulator
//! logs every access with its value; the step path logs one event per instruction (per
//! iteration of a `REP` string instruction), with the value only for the plain moves it
//! knows (`Step::Known`; `STOS`, `LODS` and `MOVS` with one side in ordinary memory
//! among the string instructions), else as `UNKNOWN` at the operand's address. Out-of-line
//! execution completes the forms marked `ool: true` exactly, on the `ool` path and on the
//! default path for the forms the emulator does not do; it refuses the rest (stack-moving,
//! LOCKed, `xchg`/`cmpxchg`, a bit offset in a register, `fs:`/`gs:`, 32-bit addresses,
//! string instructions), which then take the step path.

mod common;

use std::process::Command;

use common::*;
use mmio_trace_format::{Direction, Event};

const A: u64 = 0x8f7e6d5c4b3a2918;
const B: u64 = 0x0123456789abcdef;
/// Device size the program maps.
const DEV_LEN: usize = 16384;

/// diff_forms.c's pat(): what its set() stores at each 8-byte word.
fn pat(off: u64) -> u64 {
    0x9e3779b97f4a7c15u64.wrapping_mul(off + 1)
}

/// diff_forms.c's vin[] (the vector registers' starting contents).
fn vin() -> [u8; 64] {
    std::array::from_fn(|i| 0xa5 ^ (i as u8).wrapping_mul(7))
}

/// One expected (or recorded) event: an access with its bytes, or an `UNKNOWN` at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    A(char, u8, u64, Vec<u8>),
    U(u64),
}

/// The device as the program sees it, and the accesses the CPU makes to it.
struct Dev {
    mem: Vec<u8>,
    /// Where the thread's part of the device starts (diff_forms' pat() and slots are
    /// relative to it).
    base: u64,
    ev: Vec<Ev>,
    /// Index in `ev` where the form's instruction starts (after its setup stores), and
    /// where each further iteration of a `REP` string instruction starts.
    iters: Vec<usize>,
}

fn mask(w: u8) -> u64 {
    if w >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * w)) - 1
    }
}

impl Dev {
    /// The device as tests/common's device() makes it, seen by the thread whose part
    /// starts at `base`.
    fn new(len: usize, base: u64) -> Dev {
        let mut mem = Vec::with_capacity(len);
        for k in 0..len / 4 {
            mem.extend_from_slice(&(0x1000 + k as u32).to_le_bytes());
        }
        Dev {
            mem,
            base,
            ev: vec![],
            iters: vec![],
        }
    }
    fn peek(&self, o: u64, w: u8) -> u64 {
        let mut b = [0u8; 8];
        b[..w as usize].copy_from_slice(&self.mem[o as usize..o as usize + w as usize]);
        u64::from_le_bytes(b)
    }
    fn rd(&mut self, o: u64, w: u8) -> u64 {
        let v = self.peek(o, w);
        self.rdv(o, w as usize);
        v
    }
    fn rdv(&mut self, o: u64, n: usize) -> Vec<u8> {
        let b = self.mem[o as usize..o as usize + n].to_vec();
        self.ev.push(Ev::A('R', n as u8, o, b.clone()));
        b
    }
    fn wr(&mut self, o: u64, w: u8, v: u64) {
        self.wrv(o, &(v & mask(w)).to_le_bytes()[..w as usize]);
    }
    fn wrv(&mut self, o: u64, b: &[u8]) {
        self.mem[o as usize..o as usize + b.len()].copy_from_slice(b);
        self.ev.push(Ev::A('W', b.len() as u8, o, b.to_vec()));
    }
    /// diff_forms.c's pat() at device offset `o`.
    fn pat(&self, o: u64) -> u64 {
        pat(o - self.base)
    }
    /// diff_forms.c's set(): plain 8-byte stores of pat().
    fn set(&mut self, o: u64, n: u64) {
        for j in (0..n).step_by(8) {
            self.wr(o + j, 8, self.pat(o + j));
        }
    }
    /// The instruction (or the next iteration of a string instruction) starts here.
    fn insn(&mut self) {
        self.iters.push(self.ev.len());
    }
    /// A read-modify-write of `w` bytes at `o`.
    fn rmw(&mut self, o: u64, w: u8, f: impl Fn(u64) -> u64) {
        let old = self.rd(o, w);
        self.wr(o, w, f(old));
    }
}

/// What the step path logs for a form.
#[derive(Clone, Copy)]
enum Step {
    /// Every access with its value (plain moves: one access).
    Known,
    /// `UNKNOWN` at the first access of each iteration.
    Unknown,
    /// `UNKNOWN` at slot offset + this (the operand's address, where the first access is
    /// elsewhere: bit tests with a register offset, masked moves).
    At(u64),
}

/// CPU features a form needs (the program skips it without, and says so).
#[derive(Clone, Copy, PartialEq)]
enum Need {
    Base,
    Sse41,
    Sse42,
    Avx,
    Avx2,
    Avx512bw,
    Movbe,
    Cx16,
    Popcnt,
    Lzcnt,
    Movdiri,
    Movdir64b,
}

fn has(n: Need) -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU and has no side effects.
    let ecx7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.ecx;
    match n {
        Need::Base => true,
        Need::Sse41 => std::is_x86_feature_detected!("sse4.1"),
        Need::Sse42 => std::is_x86_feature_detected!("sse4.2"),
        Need::Avx => std::is_x86_feature_detected!("avx"),
        Need::Avx2 => std::is_x86_feature_detected!("avx2"),
        Need::Avx512bw => {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
        }
        Need::Movbe => std::is_x86_feature_detected!("movbe"),
        Need::Cx16 => std::is_x86_feature_detected!("cmpxchg16b"),
        Need::Popcnt => std::is_x86_feature_detected!("popcnt"),
        Need::Lzcnt => std::is_x86_feature_detected!("lzcnt"),
        Need::Movdiri => ecx7 & (1 << 27) != 0,
        Need::Movdir64b => ecx7 & (1 << 28) != 0,
    }
}

struct Form {
    name: &'static str,
    need: Need,
    /// The emulator completes it.
    emu: bool,
    step: Step,
    /// Out-of-line execution is to complete it (one explicit memory operand of known
    /// size, not masked, not locked: see issue 14 item 1).
    ool: bool,
    /// Setup stores, then `d.insn()`, then the instruction's accesses; `o` is the slot.
    run: fn(&mut Dev, u64),
}

macro_rules! f {
    ($name:literal, $need:ident, $emu:literal, $step:expr, $ool:literal, $run:expr) => {
        Form {
            name: $name,
            need: Need::$need,
            emu: $emu,
            step: $step,
            ool: $ool,
            run: $run,
        }
    };
}

use Step::{At, Known, Unknown};

/// Loads of `n` bytes at o+at after set(o, setn); stores of vin[from..from+n] at o+at.
fn vload(d: &mut Dev, o: u64, setn: u64, at: u64, n: usize) {
    d.set(o, setn);
    d.insn();
    d.rdv(o + at, n);
}
fn vstore(d: &mut Dev, o: u64, at: u64, from: usize, n: usize) {
    d.insn();
    d.wrv(o + at, &vin()[from..from + n]);
}

/// Dwords of vin[from..from+len] whose sign bit selects them (VMASKMOV's mask).
fn dword_mask(from: usize, len: usize) -> Vec<usize> {
    (0..len / 4)
        .filter(|i| vin()[from + 4 * i + 3] & 0x80 != 0)
        .collect()
}

/// Runs of selected elements as one access each (the differential suite's convention).
fn masked(d: &mut Dev, o: u64, elem: u64, sel: &[usize], write_from: Option<usize>) {
    let mut i = 0;
    while i < sel.len() {
        let mut j = i;
        while j + 1 < sel.len() && sel[j + 1] == sel[j] + 1 {
            j += 1;
        }
        let at = o + sel[i] as u64 * elem;
        let n = ((j - i + 1) as u64 * elem) as usize;
        match write_from {
            None => {
                d.rdv(at, n);
            }
            Some(f) => {
                let s = f + sel[i] * elem as usize;
                d.wrv(at, &vin()[s..s + n]);
            }
        }
        i = j + 1;
    }
}

fn bits(k: u64) -> Vec<usize> {
    (0..64).filter(|i| k >> i & 1 == 1).collect()
}

#[rustfmt::skip]
fn forms() -> Vec<Form> {
    vec![
        // MOV loads and stores.
        f!("mov r8,m8", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 5, 1); }),
        f!("mov ah,m8", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 3, 1); }),
        f!("mov r16,m16", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 2, 2); }),
        f!("mov r32,m32 sib", Base, true, Known, true, |d, o| { d.set(o, 16); d.insn(); d.rd(o + 12, 4); }),
        f!("mov r64,m64", Base, true, Known, true, |d, o| { d.set(o, 16); d.insn(); d.rd(o + 8, 8); }),
        f!("mov m8,r8", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 3, 1, A); }),
        f!("mov m16,r16", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 6, 2, A); }),
        f!("mov m32,r32", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 8, 4, A); }),
        f!("mov m64,r64", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 16, 8, A); }),
        f!("mov m8,imm8", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 1, 1, 0x9c); }),
        f!("mov m32,imm32", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 4, 4, 0xdead_beef); }),
        f!("mov m64,imm32sx", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 8, 8, (-0x1234_5678i64) as u64); }),
        f!("mov r32,gs:m32", Base, true, Known, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("mov gs:m64,r64", Base, true, Known, false, |d, o| { d.insn(); d.wr(o + 8, 8, B); }),
        // Zero/sign extension, MOVBE, MOVDIRI, MOVDIR64B.
        f!("movzx r32,m8", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 7, 1); }),
        f!("movzx r64,m16", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 6, 2); }),
        f!("movsx r32,m8", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 7, 1); }),
        f!("movsx r64,m16", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 6, 2); }),
        f!("movsxd r64,m32", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("movbe r32,m32", Movbe, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("movbe m64,r64", Movbe, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 8, 8, B.swap_bytes()); }),
        f!("movdiri m32,r32", Movdiri, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 4, 4, B); }),
        // Two memory operands (the source is ordinary memory): not bounced.
        f!("movdir64b", Movdir64b, true, Unknown, false, |d, o| { vstore(d, o, 0, 0, 64); }),
        // MMX; MOVLPS/MOVHPS/MOVHPD.
        f!("movq mm,m64", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("movd m32,mm", Base, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 4, 4, B); }),
        f!("movntq m64,mm", Base, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 8, 8, B); }),
        f!("movlps xmm,m64", Base, true, Unknown, true, |d, o| { vload(d, o, 8, 0, 8) }),
        f!("movhps m64,xmm", Base, true, Unknown, true, |d, o| { vstore(d, o, 8, 8, 8) }),
        f!("movhpd xmm,m64", Base, true, Unknown, true, |d, o| { vload(d, o, 16, 8, 8) }),
        // CMOVcc (reads whether or not taken), MUL/IMUL, MOVNTI.
        f!("cmove r32,m32 taken", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 4); }),
        f!("cmovne r64,m64 not taken", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("mul m32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("imul r64,m64", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("movnti m64,r64", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 16, 8, B); }),
        // XCHG, CMPXCHG (a failed one writes the old value back), XADD. Locked: stay on the
        // alias as today, not bounced.
        f!("xchg m32,r32", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |_| B); }),
        f!("lock cmpxchg m32 equal", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |_| B); }),
        f!("lock cmpxchg m64 differ", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v); }),
        f!("cmpxchg m16 equal", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 2, |_| B); }),
        f!("lock cmpxchg8b equal", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |_| 0x3333_4444_1111_2222); }),
        f!("lock cmpxchg16b differ", Cx16, true, Unknown, false, |d, o| { d.set(o, 16); d.insn(); let v = d.rdv(o, 16); d.wrv(o, &v); }),
        f!("xadd m32,r32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v.wrapping_add(B)); }),
        f!("lock xadd m64,r64", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v.wrapping_add(A)); }),
        // ALU.
        f!("add m32,r32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v.wrapping_add(B)); }),
        f!("lock add m64,r64", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v.wrapping_add(A)); }),
        f!("add r32,m32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("or m16,imm16", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 2, 2, |v| v | 0x1234); }),
        f!("adc m8,r8 cf=1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 1, 1, |v| v + (B & 0xff) + 1); }),
        f!("sbb m32,imm8 cf=1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v.wrapping_add(2)); }),
        f!("and m64,imm32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v & (-0x0f0f_0f10i64 as u64)); }),
        f!("sub m32,r32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |v| v.wrapping_sub(A & 0xffff_ffff)); }),
        f!("xor m8,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 6, 1, |v| v ^ 0x5a); }),
        f!("lock or m32,r32", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v | B); }),
        f!("cmp m32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 4); }),
        f!("test m64,r64", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("inc m8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 2, 1, |v| v + 1); }),
        f!("dec m16", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 2, |v| v.wrapping_sub(1)); }),
        f!("not m32", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| !v); }),
        f!("neg m64", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v.wrapping_neg()); }),
        f!("lock inc m32", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |v| v + 1); }),
        // Shifts and rotates.
        f!("shl m32,1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v << 1); }),
        f!("shr m64,cl", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v >> 13); }),
        f!("rol m16,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 2, 2, |v| (v as u16).rotate_left(5) as u64); }),
        f!("rcl m8,1 cf=1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 5, 1, |v| v << 1 | 1); }),
        f!("sar m32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |v| ((v as u32 as i32) >> 7) as u32 as u64); }),
        f!("shld m32,r32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v << 9 | (B & 0xffff_ffff) >> 23); }),
        f!("shrd m64,r64,cl", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v >> 20 | A << 44); }),
        // Bit tests (a register offset selects another word), SETcc.
        f!("bt m32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("bt m64,r64 bit 70", Base, true, At(0), false, |d, o| { d.set(o, 16); d.insn(); d.rd(o + 8, 8); }),
        f!("bts m32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 4, |v| v | 8); }),
        f!("btr m16,r16 bit 20", Base, true, At(0), false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 2, 2, |v| v & !0x10); }),
        f!("btc m64,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v ^ 1 << 62); }),
        f!("lock bts m32,r32 bit 35", Base, true, At(0), false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |v| v | 8); }),
        f!("sete m8 zf=1", Base, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 3, 1, 1); }),
        f!("setb m8 cf=0", Base, true, Unknown, true, |d, o| { d.insn(); d.wr(o + 5, 1, 0); }),
        // PUSH m / POP m (the stack is ordinary memory).
        f!("push m64", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("pop m64", Base, true, Unknown, false, |d, o| { d.insn(); d.wr(o + 8, 8, B); }),
        // SSE moves (loads into xmm0 = vin; stores of xmm1 = vin).
        f!("movd xmm,m32", Base, true, Known, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("movd m32,xmm", Base, true, Known, true, |d, o| vstore(d, o, 4, 0, 4)),
        f!("movq xmm,m64", Base, true, Known, true, |d, o| vload(d, o, 16, 8, 8)),
        f!("movq m64,xmm", Base, true, Known, true, |d, o| vstore(d, o, 8, 0, 8)),
        f!("movss xmm,m32", Base, true, Unknown, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("movss m32,xmm", Base, true, Unknown, true, |d, o| vstore(d, o, 12, 0, 4)),
        f!("movsd xmm,m64", Base, true, Unknown, true, |d, o| vload(d, o, 16, 8, 8)),
        f!("movsd m64,xmm", Base, true, Unknown, true, |d, o| vstore(d, o, 16, 0, 8)),
        f!("movaps xmm,m128", Base, true, Known, true, |d, o| vload(d, o, 32, 16, 16)),
        f!("movaps m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 32, 0, 16)),
        f!("movups xmm,m128", Base, true, Known, true, |d, o| vload(d, o, 24, 1, 16)),
        f!("movups m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 3, 0, 16)),
        f!("movapd xmm,m128", Base, true, Known, true, |d, o| vload(d, o, 16, 0, 16)),
        f!("movupd m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 8, 0, 16)),
        f!("movdqa xmm,m128", Base, true, Known, true, |d, o| vload(d, o, 32, 16, 16)),
        f!("movdqu m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 5, 0, 16)),
        f!("movntdq m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 16, 0, 16)),
        f!("movntdqa xmm,m128", Sse41, true, Unknown, true, |d, o| vload(d, o, 48, 32, 16)),
        f!("movntps m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 0, 0, 16)),
        f!("movntpd m128,xmm", Base, true, Known, true, |d, o| vstore(d, o, 48, 0, 16)),
        f!("lddqu xmm,m128", Sse41, true, Known, true, |d, o| vload(d, o, 24, 2, 16)),
        // VEX moves.
        f!("vmovdqu ymm,m256", Avx, true, Known, true, |d, o| vload(d, o, 40, 1, 32)),
        f!("vmovdqu m256,ymm", Avx, true, Known, true, |d, o| vstore(d, o, 8, 0, 32)),
        f!("vmovaps ymm,m256", Avx, true, Known, true, |d, o| vload(d, o, 64, 32, 32)),
        f!("vmovups m128,xmm", Avx, true, Known, true, |d, o| vstore(d, o, 4, 0, 16)),
        f!("vmovd xmm,m32", Avx, true, Known, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("vmovq m64,xmm", Avx, true, Known, true, |d, o| vstore(d, o, 8, 0, 8)),
        f!("vmovss xmm,m32", Avx, true, Unknown, true, |d, o| vload(d, o, 16, 8, 4)),
        f!("vmovsd m64,xmm", Avx, true, Unknown, true, |d, o| vstore(d, o, 16, 0, 8)),
        f!("vmovntdq m256,ymm", Avx, true, Known, true, |d, o| vstore(d, o, 32, 0, 32)),
        f!("vmovntdqa ymm,m256", Avx2, true, Unknown, true, |d, o| vload(d, o, 32, 0, 32)),
        f!("vlddqu ymm,m256", Avx, true, Known, true, |d, o| vload(d, o, 40, 3, 32)),
        f!("vmovlps xmm,xmm,m64", Avx, true, Unknown, true, |d, o| vload(d, o, 16, 8, 8)),
        // EVEX moves; masked ones touch each run of selected elements once.
        f!("vmovdqu64 zmm,m512", Avx512bw, true, Known, true, |d, o| vload(d, o, 64, 0, 64)),
        f!("vmovdqu64 m512,zmm", Avx512bw, true, Known, true, |d, o| { d.set(o, 64); vstore(d, o, 0, 0, 64) }),
        // KNOWN DIVERGENCE (reported): the emulator does this one (two runs of 16 bytes),
        // but the fault path's pre-check sees the span of the enabled elements (48 bytes,
        // not a width of one access) and refuses it, so it is stepped and logged UNKNOWN on
        // every path. Set `emu` to true when the pre-check checks each run.
        f!("vmovdqu32 zmm{k1},m512 mask f0f0", Avx512bw, true, At(0), true, |d, o| { d.set(o, 64); d.insn(); masked(d, o, 4, &bits(0xf0f0), None) }),
        f!("vmovdqu64 zmm{k1}{z},m512 mask 3c", Avx512bw, true, At(0), true, |d, o| { d.set(o, 64); d.insn(); masked(d, o, 8, &bits(0x3c), None) }),
        f!("vmovdqu8 m128{k1},xmm mask ff0", Avx512bw, true, At(16), true, |d, o| { d.set(o, 64); d.insn(); masked(d, o + 16, 1, &bits(0xff0), Some(0)) }),
        f!("vmovaps zmm,m512", Avx512bw, true, Known, true, |d, o| vload(d, o, 64, 0, 64)),
        // String instructions: one step per iteration; the step path knows the values of
        // STOS, LODS and MOVS with one side in ordinary memory.
        f!("movsb dev->ram", Base, true, Known, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 2, 1); }),
        f!("movsl ram->dev", Base, true, Known, false, |d, o| { d.insn(); d.wr(o + 4, 4, B); }),
        f!("movsq dev->dev", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); let v = d.rd(o, 8); d.wr(o + 32, 8, v); }),
        f!("rep movsb dev->dev n=3", Base, true, Unknown, false, |d, o| {
            d.set(o, 8);
            for i in 0..3 { d.insn(); let v = d.rd(o + 1 + i, 1); d.wr(o + 40 + i, 1, v); }
        }),
        f!("std rep movsw dev->ram n=2", Base, true, Known, false, |d, o| {
            d.set(o, 8);
            for at in [6, 4] { d.insn(); d.rd(o + at, 2); }
        }),
        f!("stosl", Base, true, Known, false, |d, o| { d.insn(); d.wr(o + 8, 4, A); }),
        f!("rep stosw n=3", Base, true, Known, false, |d, o| { for i in 0..3 { d.insn(); d.wr(o + 2 + 2 * i, 2, B); } }),
        f!("rep stosq n=2", Base, true, Known, false, |d, o| { for i in 0..2 { d.insn(); d.wr(o + 16 + 8 * i, 8, A); } }),
        f!("lodsw", Base, true, Known, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 2, 2); }),
        f!("cmpsb dev,ram", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 1, 1); }),
        f!("repe cmpsb dev,dev n=4", Base, true, Unknown, false, |d, o| {
            d.set(o, 8);
            d.wr(o + 32, 2, d.pat(o));
            d.wr(o + 34, 2, 0xffff);
            for i in 0..4 {
                d.insn();
                let (x, y) = (d.rd(o + i, 1), d.rd(o + 32 + i, 1));
                if x != y { break; }
            }
        }),
        f!("scasl", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("repne scasb n=8", Base, true, Unknown, false, |d, o| {
            d.set(o, 8);
            for i in 0..8 {
                d.insn();
                if d.rd(o + i, 1) == d.pat(o) >> 24 & 0xff { break; }
            }
        }),
        // More operand sizes and encodings of the classes above.
        f!("movzx r16,m8", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 3, 1); }),
        f!("mov m16,imm16", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 2, 2, 0xbeef); }),
        f!("imul r32,m32,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("mul m8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 5, 1); }),
        f!("xchg m8,r8", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 6, 1, |_| B); }),
        f!("lock cmpxchg m8 equal", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 1, 1, |_| B); }),
        f!("xadd m16,r16", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 2, 2, |v| v.wrapping_add(B)); }),
        f!("sbb r64,m64 cf=1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("test m8,imm8", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 7, 1); }),
        f!("lock neg m16", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 2, |v| v.wrapping_neg()); }),
        f!("lock btr m64,imm8", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v & !(1 << 60)); }),
        f!("sal m8,cl", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 1, 1, |v| v << 3); }),
        f!("ror m64,1", Base, true, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rmw(o, 8, |v| v.rotate_right(1)); }),
        f!("rcr m32,imm8 cf=1", Base, true, Unknown, true, |d, o| {
            d.set(o, 8);
            d.insn();
            // A 33-bit rotation of CF:value, right by 4.
            d.rmw(o, 4, |v| { let x = 1 << 32 | v; (x >> 4 | x << 29) & 0xffff_ffff });
        }),
        // Addressing: RIP-relative and moffs64 (generated code), addr32, FS-relative.
        f!("mov r32,[rip+d32]", Base, true, Known, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("mov [rip+d32],r32", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 8, 4, B); }),
        f!("mov eax,moffs64", Base, true, Known, true, |d, o| { d.set(o, 16); d.insn(); d.rd(o + 12, 4); }),
        f!("mov moffs64,rax", Base, true, Known, true, |d, o| { d.insn(); d.wr(o + 16, 8, A); }),
        f!("mov r32,m32 addr32", Base, true, Known, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("add m16,r16 addr32 sib", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 2, |v| v + (B & 0xffff)); }),
        f!("mov r64,fs:m64", Base, true, Known, false, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("xor fs:m32,imm32", Base, true, Unknown, false, |d, o| { d.set(o, 8); d.insn(); d.rmw(o + 4, 4, |v| v ^ 0x0ff0_0ff0); }),
        // Accesses across the boundary of two device pages (at 12288, past every slot).
        f!("mov r32,m32 page-straddle", Base, true, Known, true, |d, _| { let x = d.base + 12288; d.set(x - 8, 16); d.insn(); d.rd(x - 2, 4); }),
        f!("add m64,r64 page-straddle", Base, true, Unknown, true, |d, _| { let x = d.base + 12288; d.set(x - 8, 16); d.insn(); d.rmw(x - 3, 8, |v| v.wrapping_add(B)); }),
        f!("movdqu m128,xmm page-straddle", Base, true, Known, true, |d, _| { let x = d.base + 12288; d.insn(); d.wrv(x - 8, &vin()[..16]); }),
        f!("rep movsb page-straddle n=4", Base, true, Unknown, false, |d, _| {
            let x = d.base + 12288;
            d.set(x - 8, 16);
            for i in 0..4 { d.insn(); let v = d.rd(x - 2 + i, 1); d.wr(x + 6 + i, 1, v); }
        }),
        // Forms the emulator does not complete (issue 14, "Why").
        f!("div m32", Base, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("idiv m64", Base, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("popcnt r32,m32", Popcnt, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("popcnt r64,m64", Popcnt, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("lzcnt r64,m64", Lzcnt, false, Unknown, true, |d, o| { d.set(o, 8); d.wr(o + 4, 4, 0x12345); d.insn(); d.rd(o, 8); }),
        f!("crc32 r32,m8", Sse42, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 3, 1); }),
        f!("crc32 r64,m64", Sse42, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o, 8); }),
        f!("pinsrd xmm,m32,imm8", Sse41, false, Unknown, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("pextrd m32,xmm,imm8", Sse41, false, Unknown, true, |d, o| vstore(d, o, 8, 12, 4)),
        f!("pcmpeqb xmm,m128", Base, false, Unknown, true, |d, o| vload(d, o, 16, 0, 16)),
        f!("pminub xmm,m128", Base, false, Unknown, true, |d, o| vload(d, o, 32, 16, 16)),
        f!("addsd xmm,m64", Base, false, Unknown, true, |d, o| vload(d, o, 16, 8, 8)),
        f!("cvtsi2sd xmm,m32", Base, false, Unknown, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("vpbroadcastd xmm,m32", Avx2, false, Unknown, true, |d, o| vload(d, o, 8, 4, 4)),
        f!("vpaddd ymm,ymm,m256", Avx2, false, Unknown, true, |d, o| vload(d, o, 32, 0, 32)),
        f!("vpcmpeqb ymm,ymm,m256", Avx2, false, Unknown, true, |d, o| vload(d, o, 32, 0, 32)),
        // Masked: how out-of-line execution logs them is its author's call; not pinned.
        f!("vmaskmovps ymm,ymm,m256", Avx, false, At(0), true, |d, o| { d.set(o, 32); d.insn(); masked(d, o, 4, &dword_mask(0, 32), None) }),
        f!("vmaskmovps m128,xmm,xmm", Avx, false, At(16), true, |d, o| { d.insn(); masked(d, o + 16, 4, &dword_mask(0, 16), Some(16)) }),
        f!("vpcmpb k,zmm,m512", Avx512bw, false, Unknown, true, |d, o| vload(d, o, 64, 0, 64)),
        f!("fld m32", Base, false, Unknown, true, |d, o| { d.set(o, 8); d.wr(o + 4, 4, 0x4049_0fdb); d.insn(); d.rd(o + 4, 4); }),
        f!("fild m32", Base, false, Unknown, true, |d, o| { d.set(o, 8); d.insn(); d.rd(o + 4, 4); }),
        f!("fstp m64", Base, false, Unknown, true, |d, o| { d.insn(); d.wr(o + 8, 8, 2.5f64.to_bits()); }),
        f!("fstps m32", Base, false, Unknown, true, |d, o| { d.insn(); d.wr(o + 4, 4, (-0.75f32).to_bits() as u64); }),
    ]
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    Emulate,
    Ool,
    Step,
}

/// The accesses and UNKNOWNs the recording of `path` must hold for thread `t` (of
/// `threads`), form by form (the forms this CPU runs).
fn expected(path: Path, t: usize, threads: usize) -> Vec<(&'static str, Vec<Ev>)> {
    let base = (DEV_LEN * t) as u64;
    let mut d = Dev::new(DEV_LEN * threads, base);
    let mut out = vec![];
    for (k, f) in forms().into_iter().enumerate() {
        let o = base + 64 * k as u64;
        if !has(f.need) {
            continue;
        }
        d.ev.clear();
        d.iters.clear();
        (f.run)(&mut d, o);
        assert!(!d.iters.is_empty(), "{}: no d.insn()", f.name);
        let start = d.iters[0];
        let mut ev = d.ev[..start].to_vec();
        let exact = d.ev[start..].to_vec();
        let stepped: Vec<Ev> = match f.step {
            Step::Known => exact.clone(),
            Step::At(off) => vec![Ev::U(o + off)],
            Step::Unknown => d
                .iters
                .iter()
                .map(|&i| match &d.ev[i] {
                    Ev::A(_, _, off, _) => Ev::U(*off),
                    Ev::U(off) => Ev::U(*off),
                })
                .collect(),
        };
        let bounced = f.ool;
        ev.extend(match path {
            Path::Emulate if f.emu || bounced => exact,
            Path::Ool if bounced => exact,
            _ => stepped,
        });
        out.push((f.name, ev));
    }
    out
}

/// The accesses and UNKNOWNs of a recording, as [`Ev`]s with the thread's id.
fn recorded(events: &[Event]) -> Vec<(u32, Ev)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => {
                let dir = if a.dir == Direction::Read { 'R' } else { 'W' };
                let n = a.width as usize;
                let bytes = match &a.wide {
                    Some(w) => w[..n].to_vec(),
                    None => a.value.to_le_bytes()[..n.min(8)].to_vec(),
                };
                Some((a.pid, Ev::A(dir, a.width, a.phys, bytes)))
            }
            Event::Unknown(u) => Some((u.pid, Ev::U(u.phys))),
            _ => None,
        })
        .collect()
}

/// Runs diff_forms untraced on a fresh plain device file: its stdout and final device.
fn untraced(t: &Fixture, threads: usize) -> (String, Vec<u8>) {
    let plain = t.dir.join("plain.bin");
    std::fs::copy(&t.dev, &plain).unwrap();
    let out = Command::new(&t.exe)
        .arg(&plain)
        .arg(threads.to_string())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    (stdout(&out), std::fs::read(&plain).unwrap())
}

/// `MMIO_TRACE_PATH` for `path`.
fn env_of(path: Path) -> Option<String> {
    Some(format!("{path:?}").to_lowercase())
}

/// Records diff_forms in `threads` threads with `MMIO_TRACE_PATH` set to `env` (`None`:
/// unset), which must take `path`, and checks everything (see the file's comment).
/// Returns the recorder's stderr.
fn check_path(path: Path, env: Option<String>, threads: usize) -> String {
    check_path_with(path, env, threads, &[])
}

/// As [`check_path`], with extra `record` options.
fn check_path_with(path: Path, env: Option<String>, threads: usize, opts: &[&str]) -> String {
    let name = format!("{path:?}").to_lowercase();
    let t = Fixture::new(
        &format!(
            "paths-{name}-{}-{threads}{}",
            env.as_deref().unwrap_or("unset"),
            opts.concat()
        ),
        "diff_forms",
        DEV_LEN * threads,
    );
    let (want_out, want_dev) = untraced(&t, threads);

    // The program ran each form this CPU has, and said which it skipped (each thread).
    let ran: Vec<&str> = want_out
        .lines()
        .filter(|l| !l.ends_with(" skipped"))
        .collect();
    let want: Vec<Vec<_>> = (0..threads).map(|k| expected(path, k, threads)).collect();
    assert_eq!(ran.len(), want.concat().len(), "forms run:\n{want_out}");
    for (line, (form, _)) in ran.iter().zip(want.concat().iter()) {
        assert!(
            line == form || line.starts_with(&format!("{form} ")),
            "the program ran {line:?} where the test expects {form:?}"
        );
    }

    let mut rec = record_cmd(&t.dir, &t.dev, &[&["--format", "binary"], opts].concat());
    match &env {
        Some(v) => rec.env("MMIO_TRACE_PATH", v),
        None => rec.env_remove("MMIO_TRACE_PATH"),
    };
    let out = rec
        .arg(&t.exe)
        .arg(&t.dev)
        .arg(threads.to_string())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        want_out,
        "program output, {name} path vs untraced"
    );
    let got_dev = std::fs::read(&t.dev).unwrap();
    if let Some(i) = (0..DEV_LEN * threads).find(|&i| got_dev[i] != want_dev[i]) {
        panic!(
            "{name} path: the device differs from the untraced run's first at {i:#x} (form {})",
            forms().get(i % DEV_LEN / 64).map_or("?", |f| f.name)
        );
    }

    // Each thread's events, told apart by pid; the thread is the part of the device its
    // first event is in.
    let all = recorded(&read_log(&trace_log(&t.dir)));
    let mut pids: Vec<u32> = vec![];
    for (pid, _) in &all {
        if !pids.contains(pid) {
            pids.push(*pid);
        }
    }
    assert_eq!(pids.len(), threads, "{name} path: threads seen in the log");
    for pid in pids {
        let got: Vec<Ev> = all
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, e)| e.clone())
            .collect();
        let first = match &got[0] {
            Ev::A(_, _, off, _) | Ev::U(off) => *off,
        };
        let k = first as usize / DEV_LEN;
        // Compare form by form, so that a failure names the form.
        let mut at = 0;
        for (form, ev) in &want[k] {
            let end = (at + ev.len()).min(got.len());
            assert_eq!(
                &got[at..end],
                &ev[..],
                "{name} path, thread {k}, form {form:?} (events {at}..): recorded vs expected"
            );
            at = end;
        }
        assert_eq!(
            &got[at..],
            &[][..],
            "{name} path, thread {k}: events after the last form"
        );
    }
    stderr(&out)
}

#[test]
fn emulate_path_logs_every_form_exactly() {
    check_path(Path::Emulate, env_of(Path::Emulate), 1);
}

#[test]
fn default_path_is_the_emulate_path() {
    check_path(Path::Emulate, None, 1);
}

#[test]
fn ool_path_logs_every_form_as_expected() {
    check_path(Path::Ool, env_of(Path::Ool), 1);
}

#[test]
fn step_path_logs_every_form_as_expected() {
    check_path(Path::Step, env_of(Path::Step), 1);
}

/// A value that names no path is said once on stderr and ignored: the default path.
#[test]
fn unknown_path_value_is_reported_and_ignored() {
    let err = check_path(Path::Emulate, Some("fast".into()), 1);
    assert_eq!(
        err.matches(
            "mmio-trace: MMIO_TRACE_PATH=\"fast\" is not one of emulate, ool, step, no-ool; ignored"
        )
        .count(),
        1,
        "stderr: {err}"
    );
}

/// Without an alias mapping every access is single-stepped: the step path's stream.
#[test]
fn no_alias_is_the_step_path() {
    check_path_with(Path::Step, None, 1, &["--no-alias"]);
}

/// Two threads run every form at once, each on its own part of the device: each thread's
/// stream is its exact expected one (the step path pauses the other thread while it
/// steps, whatever that one is doing).
#[test]
fn two_threads_emulate_path() {
    check_path(Path::Emulate, env_of(Path::Emulate), 2);
}

#[test]
fn two_threads_step_path() {
    check_path(Path::Step, env_of(Path::Step), 2);
}

/// The expectations themselves: every form has a slot of its own in the device, names are
/// unique and match diff_forms.c's order (checked against its output above).
#[test]
fn forms_table_is_consistent() {
    let f = forms();
    // The slots end before the page-straddling forms' bytes at 12280..12304.
    assert!(64 * f.len() <= 12280);
    let mut names: Vec<_> = f.iter().map(|f| f.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), f.len());
}
