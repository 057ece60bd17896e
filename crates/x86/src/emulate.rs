//! Emulation recipes: bus accesses first (in CPU order), register commit last.

use crate::decode::{Decoded, Ext, Kind, Reason, StrOp, Unsupported};
use crate::native::{self, Bin, ARITH_FLAGS};
use crate::{AccessDir, Accesses, Bus, BusFault, Cpu, EmuError, Exception, Outcome, Rmw};
use iced_x86::{ConditionCode, Instruction, OpKind, Register};

const RSP: usize = 4;
const ZF: u64 = 1 << 6;
const DF: u64 = 1 << 10;

const R_AL: usize = Register::AL as usize;
const R_BL: usize = Register::BL as usize;
const R_AH: usize = Register::AH as usize;
const R_BH: usize = Register::BH as usize;
const R_SPL: usize = Register::SPL as usize;
const R_R15L: usize = Register::R15L as usize;
const R_AX: usize = Register::AX as usize;
const R_R15W: usize = Register::R15W as usize;
const R_EAX: usize = Register::EAX as usize;
const R_R15D: usize = Register::R15D as usize;
const R_RAX: usize = Register::RAX as usize;
const R_R15: usize = Register::R15 as usize;
const R_XMM0: usize = Register::XMM0 as usize;
const R_XMM31: usize = Register::XMM31 as usize;
const R_YMM0: usize = Register::YMM0 as usize;
const R_YMM31: usize = Register::YMM31 as usize;
const R_ZMM0: usize = Register::ZMM0 as usize;
const R_ZMM31: usize = Register::ZMM31 as usize;

/// Register value as iced-x86's address computation asks for it (see [`reg_get`]).
pub(crate) fn reg_value<C: Cpu>(cpu: &C, r: Register) -> Option<u64> {
    reg_get(cpu, r, None)
}

/// Where a GPR lives: (register number, bit shift, width in bytes).
fn reg_slot(r: Register) -> Option<(usize, u32, u32)> {
    let v = r as usize;
    Some(match v {
        R_AL..=R_BL => (v - R_AL, 0, 1),
        R_AH..=R_BH => (v - R_AH, 8, 1),
        R_SPL..=R_R15L => (v - R_SPL + 4, 0, 1),
        R_AX..=R_R15W => (v - R_AX, 0, 2),
        R_EAX..=R_R15D => (v - R_EAX, 0, 4),
        R_RAX..=R_R15 => (v - R_RAX, 0, 8),
        _ => return None,
    })
}

/// Reads a register by its iced name with the width it names (zero-extended); segment
/// registers give their base (0 except FS/GS, as in 64-bit mode). `rsp` replaces RSP.
fn reg_get<C: Cpu>(cpu: &C, r: Register, rsp: Option<u64>) -> Option<u64> {
    if let Some((n, shift, size)) = reg_slot(r) {
        let full = if n == RSP {
            rsp.unwrap_or_else(|| cpu.gpr(RSP))
        } else {
            cpu.gpr(n)
        };
        return Some((full >> shift) & mask(size));
    }
    Some(match r {
        Register::ES | Register::CS | Register::SS | Register::DS => 0,
        Register::FS => cpu.fs_base(),
        Register::GS => cpu.gs_base(),
        _ => return None,
    })
}

/// Writes a GPR with the CPU's width rules: 8/16-bit writes merge, 32-bit writes zero-extend.
fn reg_set<C: Cpu>(cpu: &mut C, r: Register, val: u64) {
    if let Some((n, shift, size)) = reg_slot(r) {
        cpu.set_gpr(n, merge(cpu.gpr(n), val, shift, size));
    }
}

fn merge(old: u64, val: u64, shift: u32, size: u32) -> u64 {
    match size {
        1 => (old & !(0xff << shift)) | ((val & 0xff) << shift),
        2 => (old & !0xffff) | (val & 0xffff),
        4 => val & 0xffff_ffff,
        _ => val,
    }
}

fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

fn sign_extend(v: u64, size: u32) -> u64 {
    match size {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

/// The accumulator register of a given width.
fn acc(size: u32) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

// Fixed-size buffers per width, so a bus implementation that gets inlined copies a constant
// number of bytes (no memmove call on the hot path).
#[inline]
fn rd<B: Bus>(bus: &mut B, addr: u64, size: u32) -> Result<u64, BusFault> {
    Ok(match size {
        1 => {
            let mut b = [0u8; 1];
            bus.read(addr, &mut b)?;
            u64::from(b[0])
        }
        2 => {
            let mut b = [0u8; 2];
            bus.read(addr, &mut b)?;
            u64::from(u16::from_le_bytes(b))
        }
        4 => {
            let mut b = [0u8; 4];
            bus.read(addr, &mut b)?;
            u64::from(u32::from_le_bytes(b))
        }
        _ => {
            let mut b = [0u8; 8];
            bus.read(addr, &mut b)?;
            u64::from_le_bytes(b)
        }
    })
}

#[inline]
fn wr<B: Bus>(bus: &mut B, addr: u64, size: u32, val: u64) -> Result<(), BusFault> {
    match size {
        1 => bus.write(addr, &[val as u8]),
        2 => bus.write(addr, &(val as u16).to_le_bytes()),
        4 => bus.write(addr, &(val as u32).to_le_bytes()),
        _ => bus.write(addr, &val.to_le_bytes()),
    }
}

/// A read-modify-write of `size` (1..=8) bytes: one [`Bus::atomic_rmw`] when locked, else a
/// read and a write. Returns the old value.
#[inline]
fn rmw<B: Bus>(
    bus: &mut B,
    locked: bool,
    addr: u64,
    size: u32,
    mut op: Rmw<'_>,
) -> Result<u64, BusFault> {
    if locked {
        bus.atomic_rmw(addr, size, &mut op)
    } else {
        let old = rd(bus, addr, size)?;
        wr(bus, addr, size, op.apply(old, size))?;
        Ok(old)
    }
}

fn unsupported(d: &Decoded) -> EmuError {
    EmuError::Unsupported(Unsupported::new(&d.ins, &[], Reason::NotEmulated))
}

/// Linear address of memory operand `op`, with RSP optionally replaced (POP m).
fn ea<C: Cpu>(d: &Decoded, op: u32, cpu: &C, rsp: Option<u64>) -> Result<u64, EmuError> {
    d.ins
        .virtual_address(op, 0, |r, _, _| reg_get(cpu, r, rsp))
        .ok_or_else(|| unsupported(d))
}

fn op_reg(ins: &Instruction, op: u32) -> Register {
    ins.op_register(op)
}

fn set_arith<C: Cpu>(cpu: &mut C, flags: u64) {
    cpu.set_rflags((cpu.rflags() & !ARITH_FLAGS) | (flags & ARITH_FLAGS));
}

fn gp(addr: u64) -> EmuError {
    EmuError::Exception(Exception::GeneralProtection { addr })
}

/// Second operand of an ALU/shift/bit instruction: register value or immediate.
fn src_value<C: Cpu>(d: &Decoded, op: u32, cpu: &C) -> Result<u64, EmuError> {
    let ins = &d.ins;
    if ins.op_kind(op) == OpKind::Register {
        reg_get(cpu, ins.op_register(op), None).ok_or_else(|| unsupported(d))
    } else {
        Ok(ins.immediate(op))
    }
}

fn cond(cc: ConditionCode, f: u64) -> bool {
    let cf = f & 1 != 0;
    let pf = f & 4 != 0;
    let zf = f & ZF != 0;
    let sf = f & 0x80 != 0;
    let of = f & 0x800 != 0;
    match cc {
        ConditionCode::o => of,
        ConditionCode::no => !of,
        ConditionCode::b => cf,
        ConditionCode::ae => !cf,
        ConditionCode::e => zf,
        ConditionCode::ne => !zf,
        ConditionCode::be => cf || zf,
        ConditionCode::a => !cf && !zf,
        ConditionCode::s => sf,
        ConditionCode::ns => !sf,
        ConditionCode::p => pf,
        ConditionCode::np => !pf,
        ConditionCode::l => sf != of,
        ConditionCode::ge => sf == of,
        ConditionCode::le => zf || sf != of,
        ConditionCode::g => !zf && sf == of,
        _ => false,
    }
}

/// For BT* with a register bit offset the operand is a bit string: the CPU accesses the
/// operand-sized word that holds the bit. Returns (address, bit offset within the word).
fn bit_target<C: Cpu>(d: &Decoded, cpu: &C, size: u32) -> Result<(u64, u64), EmuError> {
    let base = ea(d, 0, cpu, None)?;
    let bits = u64::from(size) * 8;
    let off = src_value(d, 1, cpu)?;
    if d.ins.op1_kind() == OpKind::Register {
        let off = sign_extend(off, size) as i64;
        let word = off >> bits.trailing_zeros();
        let addr = base.wrapping_add((word.wrapping_mul(i64::from(size))) as u64);
        Ok((addr, (off as u64) & (bits - 1)))
    } else {
        Ok((base, off & (bits - 1)))
    }
}

/// Address-size facts of a string instruction: (counter/index mask, is 32-bit).
fn str_mask(ins: &Instruction) -> u64 {
    let k = ins.op0_kind();
    let k1 = if ins.op_count() > 1 {
        ins.op1_kind()
    } else {
        k
    };
    if matches!(k, OpKind::MemorySegESI | OpKind::MemoryESEDI)
        || matches!(k1, OpKind::MemorySegESI | OpKind::MemoryESEDI)
    {
        0xffff_ffff
    } else {
        u64::MAX
    }
}

/// Emulates the decoded instruction: performs its memory accesses through `bus` and updates
/// `cpu` (registers, arithmetic flags, RIP). See the crate documentation for the commit rule.
pub fn emulate<C: Cpu, B: Bus>(d: &Decoded, cpu: &mut C, bus: &mut B) -> Result<Outcome, EmuError> {
    let ins = &d.ins;
    let size = ins.memory_size().size() as u32;
    let next = ins.next_ip();
    let mut iterations = 1;
    let locked = d.is_locked();
    match d.kind {
        Kind::Load { ext, swap } => {
            let dst = op_reg(ins, 0);
            let addr = ea(d, 1, cpu, None)?;
            let mut v = rd(bus, addr, size)?;
            if swap {
                v = v.swap_bytes() >> (64 - size * 8);
            }
            if ext == Ext::Sign {
                v = sign_extend(v, size);
            }
            reg_set(cpu, dst, v);
        }
        Kind::Store { swap } => {
            let addr = ea(d, 0, cpu, None)?;
            let mut v = src_value(d, 1, cpu)?;
            if swap {
                v = v.swap_bytes() >> (64 - size * 8);
            }
            wr(bus, addr, size, v)?;
        }
        Kind::StoreImm => {
            let addr = ea(d, 0, cpu, None)?;
            wr(bus, addr, size, ins.immediate(1))?;
        }
        Kind::Xlat => {
            let addr = ea(d, 0, cpu, None)?;
            let v = rd(bus, addr, 1)?;
            reg_set(cpu, Register::AL, v);
        }
        Kind::Movdir64b => {
            let dst = reg_get(cpu, op_reg(ins, 0), None).ok_or_else(|| unsupported(d))?;
            let src = ea(d, 1, cpu, None)?;
            if dst % 64 != 0 {
                return Err(gp(dst));
            }
            let mut buf = [0u8; 64];
            bus.read(src, &mut buf)?;
            bus.write(dst, &buf)?;
        }
        Kind::Xchg => {
            // Either operand order decodes; find the memory and register operands.
            let (mop, rop) = if ins.op0_kind() == OpKind::Memory {
                (0, 1)
            } else {
                (1, 0)
            };
            let addr = ea(d, mop, cpu, None)?;
            let r = op_reg(ins, rop);
            let rv = reg_get(cpu, r, None).ok_or_else(|| unsupported(d))?;
            // XCHG with memory is locked with or without the prefix.
            let old = rmw(bus, true, addr, size, Rmw::Xchg(rv))?;
            reg_set(cpu, r, old);
        }
        Kind::Cmpxchg => {
            let addr = ea(d, 0, cpu, None)?;
            let src = src_value(d, 1, cpu)?;
            let a = reg_get(cpu, acc(size), None).ok_or_else(|| unsupported(d))?;
            // The hardware always writes: the old value goes back on failure.
            let op = Rmw::Cmpxchg {
                expected: a,
                new: src,
            };
            let old = rmw(bus, locked, addr, size, op)?;
            let (_, f) = native::bin(Bin::Sub, size, a, old, cpu.rflags());
            if f & ZF == 0 {
                reg_set(cpu, acc(size), old);
            }
            set_arith(cpu, f);
        }
        Kind::CmpxchgWide => {
            let addr = ea(d, 0, cpu, None)?;
            if size == 16 && addr % 16 != 0 {
                return Err(gp(addr));
            }
            // size is 8 or 16 (decode guarantees); halves are EDX:EAX / RDX:RAX etc.
            let half = (size / 2).min(8) as usize;
            let n = half * 2;
            let join = |lo: u64, hi: u64| {
                let mut buf = [0u8; 16];
                buf[..half].copy_from_slice(&lo.to_le_bytes()[..half]);
                buf[half..n].copy_from_slice(&hi.to_le_bytes()[..half]);
                buf
            };
            let expect = join(cpu.gpr(0), cpu.gpr(2));
            let new = join(cpu.gpr(3), cpu.gpr(1));
            let mut old = [0u8; 16];
            // LOCK CMPXCHG8B is one 8-byte locked compare-exchange; CMPXCHG16B (and the
            // unlocked forms) a read and a write.
            let atomic8 = locked && n == 8;
            if atomic8 {
                let le = |b: &[u8; 16]| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[..8]);
                    u64::from_le_bytes(w)
                };
                let mut op = Rmw::Cmpxchg {
                    expected: le(&expect),
                    new: le(&new),
                };
                let o = bus.atomic_rmw(addr, 8, &mut op)?;
                old[..8].copy_from_slice(&o.to_le_bytes());
            } else {
                bus.read(addr, &mut old[..n])?;
            }
            let equal = old[..n] == expect[..n];
            if !atomic8 {
                // The hardware always writes: the old value goes back on failure.
                bus.write(addr, if equal { &new[..n] } else { &old[..n] })?;
            }
            if !equal {
                let mut lo = [0u8; 8];
                let mut hi = [0u8; 8];
                lo[..half].copy_from_slice(&old[..half]);
                hi[..half].copy_from_slice(&old[half..n]);
                // 32-bit halves are written as EAX/EDX: zero-extended, like any 32-bit write.
                cpu.set_gpr(0, u64::from_le_bytes(lo));
                cpu.set_gpr(2, u64::from_le_bytes(hi));
            }
            let f = cpu.rflags();
            cpu.set_rflags(if equal { f | ZF } else { f & !ZF });
        }
        Kind::Xadd => {
            let addr = ea(d, 0, cpu, None)?;
            let r = op_reg(ins, 1);
            let rv = reg_get(cpu, r, None).ok_or_else(|| unsupported(d))?;
            let old = rmw(bus, locked, addr, size, Rmw::Add(rv))?;
            let (_, f) = native::bin(Bin::Add, size, old, rv, cpu.rflags());
            reg_set(cpu, r, old);
            set_arith(cpu, f);
        }
        Kind::AluMem { op, write } => {
            let addr = ea(d, 0, cpu, None)?;
            let b = src_value(d, 1, cpu)?;
            let fl = cpu.rflags();
            let a = if write {
                let mut f = |old| native::bin(op, size, old, b, fl).0;
                rmw(bus, locked, addr, size, Rmw::Update(&mut f))?
            } else {
                rd(bus, addr, size)?
            };
            let (_, f) = native::bin(op, size, a, b, fl);
            set_arith(cpu, f);
        }
        Kind::AluReg { op, write } => {
            let dst = op_reg(ins, 0);
            let addr = ea(d, 1, cpu, None)?;
            let a = reg_get(cpu, dst, None).ok_or_else(|| unsupported(d))?;
            let b = rd(bus, addr, size)?;
            let (r, f) = native::bin(op, size, a, b, cpu.rflags());
            if write {
                reg_set(cpu, dst, r);
            }
            set_arith(cpu, f);
        }
        Kind::Unary(op) => {
            let addr = ea(d, 0, cpu, None)?;
            let fl = cpu.rflags();
            let mut upd = |old| native::un(op, size, old, fl).0;
            let a = rmw(bus, locked, addr, size, Rmw::Update(&mut upd))?;
            let (_, f) = native::un(op, size, a, fl);
            if op != native::Un::Not {
                set_arith(cpu, f);
            }
        }
        Kind::Shift(op) => {
            let addr = ea(d, 0, cpu, None)?;
            let count = src_value(d, 1, cpu)?;
            let a = rd(bus, addr, size)?;
            let (r, f) = native::bin(op, size, a, count, cpu.rflags());
            wr(bus, addr, size, r)?;
            set_arith(cpu, f);
        }
        Kind::ShiftD { left } => {
            let addr = ea(d, 0, cpu, None)?;
            let b = src_value(d, 1, cpu)?;
            let count = src_value(d, 2, cpu)? as u8;
            let a = rd(bus, addr, size)?;
            let (r, f) = native::dshift(left, size, a, b, count, cpu.rflags());
            wr(bus, addr, size, r)?;
            set_arith(cpu, f);
        }
        Kind::Bit { op, write } => {
            let (addr, bit) = bit_target(d, cpu, size)?;
            let fl = cpu.rflags();
            let a = if write {
                let mut upd = |old| native::bin(op, size, old, bit, fl).0;
                rmw(bus, locked, addr, size, Rmw::Update(&mut upd))?
            } else {
                rd(bus, addr, size)?
            };
            let (_, f) = native::bin(op, size, a, bit, fl);
            set_arith(cpu, f);
        }
        Kind::Setcc => {
            let addr = ea(d, 0, cpu, None)?;
            let v = u64::from(cond(ins.condition_code(), cpu.rflags()));
            wr(bus, addr, 1, v)?;
        }
        Kind::PushM => {
            let addr = ea(d, 0, cpu, None)?;
            let v = rd(bus, addr, size)?;
            let sp = cpu.gpr(RSP).wrapping_sub(u64::from(size));
            wr(bus, sp, size, v)?;
            cpu.set_gpr(RSP, sp);
        }
        Kind::PopM => {
            let sp = cpu.gpr(RSP);
            let v = rd(bus, sp, size)?;
            let new_sp = sp.wrapping_add(u64::from(size));
            // The destination address is computed with the incremented RSP (Intel SDM, POP).
            let addr = ea(d, 0, cpu, Some(new_sp))?;
            wr(bus, addr, size, v)?;
            cpu.set_gpr(RSP, new_sp);
        }
        Kind::Str(op) => {
            iterations = string_op(d, op, size, cpu, bus)?;
        }
        Kind::VecLoad {
            width,
            zero_to,
            align,
            esize,
        } => {
            let dst = vec_index(op_reg(ins, 0)).ok_or_else(|| unsupported(d))?;
            let addr = ea(d, 1, cpu, None)?;
            if addr % u64::from(align) != 0 {
                return Err(gp(addr));
            }
            let mut v = cpu.vec(dst);
            let w = usize::from(width).min(64);
            if esize == 0 {
                bus.read(addr, &mut v[..w])?;
            } else {
                let e = usize::from(esize);
                let mask = opmask_value(ins, cpu);
                let mut buf = [0u8; 64];
                for_runs(mask, w / e, |from, to| {
                    bus.read(
                        addr.wrapping_add((from * e) as u64),
                        &mut buf[from * e..to * e],
                    )
                })?;
                for i in 0..w / e {
                    let r = i * e..(i + 1) * e;
                    if mask >> i & 1 != 0 {
                        v[r.clone()].copy_from_slice(&buf[r]);
                    } else if ins.zeroing_masking() {
                        v[r].fill(0);
                    }
                }
            }
            if let Some(z) = v.get_mut(w..usize::from(zero_to).max(w)) {
                z.fill(0);
            }
            cpu.set_vec(dst, &v);
        }
        Kind::HalfLoad { high, vex } => {
            let dst = vec_index(op_reg(ins, 0)).ok_or_else(|| unsupported(d))?;
            let (mop, other) = if vex {
                (2, vec_index(op_reg(ins, 1)).ok_or_else(|| unsupported(d))?)
            } else {
                (1, dst)
            };
            let addr = ea(d, mop, cpu, None)?;
            let mut half = [0u8; 8];
            bus.read(addr, &mut half)?;
            let src = cpu.vec(other);
            let mut v = cpu.vec(dst);
            if vex {
                // VEX/EVEX: the other half from the second source, bits 128+ cleared.
                v = [0u8; 64];
                v[..16].copy_from_slice(&src[..16]);
            }
            let at = if high { 8 } else { 0 };
            v[at..at + 8].copy_from_slice(&half);
            cpu.set_vec(dst, &v);
        }
        Kind::HalfStore { high } => {
            let src = vec_index(op_reg(ins, 1)).ok_or_else(|| unsupported(d))?;
            let addr = ea(d, 0, cpu, None)?;
            let v = cpu.vec(src);
            let at = if high { 8 } else { 0 };
            bus.write(addr, &v[at..at + 8])?;
        }
        Kind::Cmov => {
            let dst = op_reg(ins, 0);
            let addr = ea(d, 1, cpu, None)?;
            let v = rd(bus, addr, size)?;
            if cond(ins.condition_code(), cpu.rflags()) {
                reg_set(cpu, dst, v);
            } else if size == 4 {
                // A 32-bit CMOV writes its destination either way: the upper half clears.
                let old = reg_get(cpu, dst, None).unwrap_or(0);
                reg_set(cpu, dst, old);
            }
        }
        Kind::Imul { three } => {
            let dst = op_reg(ins, 0);
            let addr = ea(d, 1, cpu, None)?;
            let m = rd(bus, addr, size)?;
            let other = if three {
                ins.immediate(2)
            } else {
                reg_get(cpu, dst, None).ok_or_else(|| unsupported(d))?
            };
            let (r, f) = native::imul2(size, m, other, cpu.rflags());
            reg_set(cpu, dst, r);
            set_arith(cpu, f);
        }
        Kind::MulM { signed } => {
            let addr = ea(d, 0, cpu, None)?;
            let m = rd(bus, addr, size)?;
            let (rax, rdx, f) = native::mul1(signed, size, cpu.gpr(0), cpu.gpr(2), m, cpu.rflags());
            if size == 1 {
                reg_set(cpu, Register::AX, rax);
            } else {
                reg_set(cpu, acc(size), rax);
                let dx = match size {
                    2 => Register::DX,
                    4 => Register::EDX,
                    _ => Register::RDX,
                };
                reg_set(cpu, dx, rdx);
            }
            set_arith(cpu, f);
        }
        Kind::MmxLoad => {
            let n = mmx_index(op_reg(ins, 0)).ok_or_else(|| unsupported(d))?;
            let addr = ea(d, 1, cpu, None)?;
            let v = rd(bus, addr, size)?;
            mmx_enter(cpu);
            mmx_write(cpu, n, v);
        }
        Kind::MmxStore => {
            let n = mmx_index(op_reg(ins, 1)).ok_or_else(|| unsupported(d))?;
            let addr = ea(d, 0, cpu, None)?;
            let v = mmx_read(cpu, n);
            wr(bus, addr, size, v)?;
            mmx_enter(cpu);
        }
        Kind::VecStore {
            width,
            align,
            esize,
        } => {
            let src = vec_index(op_reg(ins, 1)).ok_or_else(|| unsupported(d))?;
            let addr = ea(d, 0, cpu, None)?;
            if addr % u64::from(align) != 0 {
                return Err(gp(addr));
            }
            let v = cpu.vec(src);
            let w = usize::from(width).min(64);
            if esize == 0 {
                bus.write(addr, &v[..w])?;
            } else {
                let e = usize::from(esize);
                for_runs(opmask_value(ins, cpu), w / e, |from, to| {
                    bus.write(addr.wrapping_add((from * e) as u64), &v[from * e..to * e])
                })?;
            }
        }
    }
    cpu.set_rip(next);
    Ok(Outcome {
        next_rip: next,
        iterations,
    })
}

/// Value of the instruction's opmask register (all ones without one).
fn opmask_value<C: Cpu>(ins: &Instruction, cpu: &C) -> u64 {
    let k = ins.op_mask();
    if k == Register::None {
        return u64::MAX;
    }
    cpu.opmask((k as usize).wrapping_sub(Register::K0 as usize) & 7)
}

/// Calls `f(from, to)` for each maximal run of set bits among the low `n` bits of `mask`, in
/// ascending order. A masked vector access touches exactly the enabled elements (masked-out
/// elements are not accessed and cannot fault, as on the CPU), one bus access per run.
fn for_runs(
    mask: u64,
    n: usize,
    mut f: impl FnMut(usize, usize) -> Result<(), BusFault>,
) -> Result<(), BusFault> {
    let mut i = 0;
    while i < n {
        if mask >> i & 1 == 0 {
            i += 1;
            continue;
        }
        let from = i;
        while i < n && mask >> i & 1 != 0 {
            i += 1;
        }
        f(from, i)?;
    }
    Ok(())
}

fn mmx_index(r: Register) -> Option<usize> {
    let v = (r as usize).wrapping_sub(Register::MM0 as usize);
    (v < 8).then_some(v)
}

fn x87_top<C: Cpu>(cpu: &C) -> usize {
    usize::from((cpu.x87_status() >> 11) & 7)
}

/// MMn is the low 64 bits of x87 physical register n, which the FXSAVE image keeps in slot
/// ST((n - TOP) mod 8).
fn mmx_read<C: Cpu>(cpu: &C, n: usize) -> u64 {
    let slot = cpu.x87_slot((n + 8 - x87_top(cpu)) & 7);
    let mut b = [0u8; 8];
    b.copy_from_slice(&slot[..8]);
    u64::from_le_bytes(b)
}

/// What every MMX instruction does to the x87 state: TOP = 0 and all registers valid. With
/// TOP = 0, slot i holds physical register i, so the slots rotate when TOP was not 0.
fn mmx_enter<C: Cpu>(cpu: &mut C) {
    let top = x87_top(cpu);
    if top != 0 {
        let old: [[u8; 10]; 8] = core::array::from_fn(|i| cpu.x87_slot(i));
        for (i, _) in old.iter().enumerate() {
            cpu.set_x87_slot(i, &old[(i + 8 - top) & 7]);
        }
    }
    cpu.set_x87_status(cpu.x87_status() & !(7 << 11));
    cpu.set_x87_tags(0xff);
}

/// Writes MMn (after `mmx_enter`): the value with the exponent field all ones, as the CPU does.
fn mmx_write<C: Cpu>(cpu: &mut C, n: usize, v: u64) {
    let mut slot = [0xffu8; 10];
    slot[..8].copy_from_slice(&v.to_le_bytes());
    cpu.set_x87_slot(n & 7, &slot);
}

fn vec_index(r: Register) -> Option<usize> {
    let v = r as usize;
    match v {
        R_XMM0..=R_XMM31 => Some(v - R_XMM0),
        R_YMM0..=R_YMM31 => Some(v - R_YMM0),
        R_ZMM0..=R_ZMM31 => Some(v - R_ZMM0),
        _ => None,
    }
}

/// Runs a (REP) string instruction element by element, committing RSI/RDI/RCX (and flags,
/// accumulator) after each element so a bus fault leaves the architectural state a CPU
/// would have after an exception mid-REP. Returns the number of elements processed.
fn string_op<C: Cpu, B: Bus>(
    d: &Decoded,
    op: StrOp,
    size: u32,
    cpu: &mut C,
    bus: &mut B,
) -> Result<u64, EmuError> {
    let ins = &d.ins;
    let amask = str_mask(ins);
    // With REPNE, MOVS/STOS/LODS repeat like REP; only CMPS/SCAS test ZF.
    let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
    let step = if cpu.rflags() & DF != 0 {
        u64::from(size).wrapping_neg()
    } else {
        u64::from(size)
    };
    let seg = reg_get(cpu, ins.memory_segment(), None).ok_or_else(|| unsupported(d))?;
    // Writes to ESI/EDI/ECX under a 32-bit address size zero-extend, as any 32-bit write.
    let upd = |new: u64| new & amask;
    let mut done = 0u64;
    loop {
        if rep && cpu.gpr(1) & amask == 0 {
            break;
        }
        let rsi = cpu.gpr(6);
        let rdi = cpu.gpr(7);
        let src = seg.wrapping_add(rsi & amask);
        let dst = rdi & amask;
        let mut flags = None;
        match op {
            StrOp::Movs => {
                let v = rd(bus, src, size)?;
                wr(bus, dst, size, v)?;
                cpu.set_gpr(6, upd(rsi.wrapping_add(step)));
                cpu.set_gpr(7, upd(rdi.wrapping_add(step)));
            }
            StrOp::Stos => {
                let v = reg_get(cpu, acc(size), None).unwrap_or(0);
                wr(bus, dst, size, v)?;
                cpu.set_gpr(7, upd(rdi.wrapping_add(step)));
            }
            StrOp::Lods => {
                let v = rd(bus, src, size)?;
                reg_set(cpu, acc(size), v);
                cpu.set_gpr(6, upd(rsi.wrapping_add(step)));
            }
            StrOp::Cmps => {
                let a = rd(bus, src, size)?;
                let b = rd(bus, dst, size)?;
                let (_, f) = native::bin(Bin::Sub, size, a, b, cpu.rflags());
                flags = Some(f);
                cpu.set_gpr(6, upd(rsi.wrapping_add(step)));
                cpu.set_gpr(7, upd(rdi.wrapping_add(step)));
            }
            StrOp::Scas => {
                let a = reg_get(cpu, acc(size), None).unwrap_or(0);
                let b = rd(bus, dst, size)?;
                let (_, f) = native::bin(Bin::Sub, size, a, b, cpu.rflags());
                flags = Some(f);
                cpu.set_gpr(7, upd(rdi.wrapping_add(step)));
            }
        }
        if let Some(f) = flags {
            set_arith(cpu, f);
        }
        bus.string_element_done();
        done += 1;
        if !rep {
            break;
        }
        let rcx = cpu.gpr(1);
        cpu.set_gpr(1, upd(rcx.wrapping_sub(1)));
        if let Some(f) = flags {
            let zf = f & ZF != 0;
            if (ins.has_repe_prefix() && !zf) || (ins.has_repne_prefix() && zf) {
                break;
            }
        }
    }
    Ok(done)
}

/// See [`Decoded::accesses`].
pub(crate) fn accesses<C: Cpu>(d: &Decoded, cpu: &C) -> Accesses {
    let mut list = Accesses::EMPTY;
    let ins = &d.ins;
    let size = ins.memory_size().size() as u32;
    let at = |op: u32| ea(d, op, cpu, None).ok();
    use AccessDir::{Read as R, ReadWrite as RW, Write as W};
    let mut one = |addr: Option<u64>, size: u32, dir: AccessDir| {
        if let Some(a) = addr {
            list.push(a, size, dir);
        }
    };
    match d.kind {
        Kind::Load { .. }
        | Kind::AluReg { .. }
        | Kind::MmxLoad
        | Kind::Cmov
        | Kind::Imul { .. } => one(at(1), size, R),
        Kind::MulM { .. } => one(at(0), size, R),
        Kind::MmxStore | Kind::HalfStore { .. } => one(at(0), size, W),
        Kind::HalfLoad { vex, .. } => one(at(if vex { 2 } else { 1 }), size, R),
        Kind::VecLoad { esize: 0, .. } => one(at(1), size, R),
        Kind::VecStore { esize: 0, .. } => one(at(0), size, W),
        Kind::VecLoad { esize, .. } | Kind::VecStore { esize, .. } => {
            // Masked: summarised as the span from the first to the last enabled element.
            let load = matches!(d.kind, Kind::VecLoad { .. });
            let e = u32::from(esize.max(1));
            let n = size / e;
            let m = opmask_value(ins, cpu) & if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
            if m != 0 {
                let first = m.trailing_zeros();
                let last = 63 - m.leading_zeros();
                let addr =
                    at(if load { 1 } else { 0 }).map(|a| a.wrapping_add(u64::from(first * e)));
                one(addr, (last - first + 1) * e, if load { R } else { W });
            }
        }
        Kind::Store { .. } | Kind::StoreImm => one(at(0), size, W),
        Kind::Setcc => one(at(0), 1, W),
        Kind::AluMem { write: false, .. } => one(at(0), size, R),
        Kind::Xchg => {
            let mop = if ins.op0_kind() == OpKind::Memory {
                0
            } else {
                1
            };
            one(at(mop), size, RW)
        }
        Kind::AluMem { .. }
        | Kind::Cmpxchg
        | Kind::CmpxchgWide
        | Kind::Xadd
        | Kind::Unary(_)
        | Kind::Shift(_)
        | Kind::ShiftD { .. } => one(at(0), size, RW),
        Kind::Bit { write, .. } => one(
            bit_target(d, cpu, size).ok().map(|t| t.0),
            size,
            if write { RW } else { R },
        ),
        Kind::Xlat => one(at(0), 1, R),
        Kind::Movdir64b => {
            one(at(1), 64, R);
            one(reg_get(cpu, op_reg(ins, 0), None), 64, W);
        }
        Kind::PushM => {
            one(at(0), size, R);
            one(Some(cpu.gpr(RSP).wrapping_sub(u64::from(size))), size, W);
        }
        Kind::PopM => {
            let sp = cpu.gpr(RSP);
            one(Some(sp), size, R);
            one(
                ea(d, 0, cpu, Some(sp.wrapping_add(u64::from(size)))).ok(),
                size,
                W,
            );
        }
        Kind::Str(op) => {
            let amask = str_mask(ins);
            let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
            if rep && cpu.gpr(1) & amask == 0 {
                return list;
            }
            let seg = reg_get(cpu, ins.memory_segment(), None).unwrap_or(0);
            let src = Some(seg.wrapping_add(cpu.gpr(6) & amask));
            let dst = Some(cpu.gpr(7) & amask);
            match op {
                StrOp::Movs => {
                    one(src, size, R);
                    one(dst, size, W);
                }
                StrOp::Stos => one(dst, size, W),
                StrOp::Lods => one(src, size, R),
                StrOp::Cmps => {
                    one(src, size, R);
                    one(dst, size, R);
                }
                StrOp::Scas => one(dst, size, R),
            }
        }
    }
    list
}
