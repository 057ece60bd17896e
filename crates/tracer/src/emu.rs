//! The emulate step of the fault path: complete the faulting instruction through the alias.
//!
//! This is a deliberately small stand-in until the `mmio-trace-x86` emulator lands: it
//! handles the forms that make up almost all register traffic (`MOV` load/store of 1, 2,
//! 4 and 8 bytes to and from general-purpose registers, `MOV` of an immediate, `MOVZX`,
//! `MOVSX`, `MOVSXD`), all through one call, [`emulate`]. Everything else returns `false`
//! and takes the step fallback, which handles any instruction.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::emit;
use crate::regions::Region;

/// The `gregs` index of a 64-bit general-purpose register.
pub(crate) fn greg_index(full: Register) -> Option<usize> {
    Some(match full {
        Register::RAX => libc::REG_RAX,
        Register::RCX => libc::REG_RCX,
        Register::RDX => libc::REG_RDX,
        Register::RBX => libc::REG_RBX,
        Register::RSP => libc::REG_RSP,
        Register::RBP => libc::REG_RBP,
        Register::RSI => libc::REG_RSI,
        Register::RDI => libc::REG_RDI,
        Register::R8 => libc::REG_R8,
        Register::R9 => libc::REG_R9,
        Register::R10 => libc::REG_R10,
        Register::R11 => libc::REG_R11,
        Register::R12 => libc::REG_R12,
        Register::R13 => libc::REG_R13,
        Register::R14 => libc::REG_R14,
        Register::R15 => libc::REG_R15,
        _ => return None,
    } as usize)
}

/// A general-purpose register operand: gregs index, size in bytes, high-byte (AH..BH).
pub(crate) fn gpr(reg: Register) -> Option<(usize, u8, bool)> {
    if !reg.is_gpr() {
        return None;
    }
    let high = matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    );
    Some((greg_index(reg.full_register())?, reg.size() as u8, high))
}

/// Reads a register operand's value from the saved context.
pub(crate) fn get_reg(gregs: &[i64; 23], r: (usize, u8, bool)) -> u64 {
    let v = gregs.get(r.0).copied().unwrap_or(0) as u64;
    if r.2 {
        return (v >> 8) & 0xff;
    }
    match r.1 {
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

/// Writes a register operand with the CPU's merge rules (32-bit writes zero the top half).
pub(crate) fn set_reg(gregs: &mut [i64; 23], r: (usize, u8, bool), value: u64) {
    let Some(slot) = gregs.get_mut(r.0) else {
        return;
    };
    let old = *slot as u64;
    let new = if r.2 {
        (old & !0xff00) | ((value & 0xff) << 8)
    } else {
        match r.1 {
            1 => (old & !0xff) | (value & 0xff),
            2 => (old & !0xffff) | (value & 0xffff),
            4 => value & 0xffff_ffff,
            _ => value,
        }
    };
    *slot = new as i64;
}

/// The effective address of the instruction's memory operand, from the saved registers.
/// `None` for segment-relative (`fs:`/`gs:`) operands.
pub(crate) fn effective_address(instr: &Instruction, gregs: &[i64; 23]) -> Option<u64> {
    if matches!(instr.memory_segment(), Register::FS | Register::GS) {
        return None;
    }
    if instr.is_ip_rel_memory_operand() {
        return Some(instr.ip_rel_memory_address());
    }
    let mut ea = instr.memory_displacement64();
    let base = instr.memory_base();
    if base != Register::None {
        ea = ea.wrapping_add(get_reg(gregs, gpr(base)?));
    }
    let index = instr.memory_index();
    if index != Register::None {
        let i = get_reg(gregs, gpr(index)?);
        ea = ea.wrapping_add(i.wrapping_mul(instr.memory_index_scale() as u64));
    }
    if instr.memory_base().size() == 4 {
        ea &= 0xffff_ffff;
    }
    Some(ea)
}

/// One access of 1, 2, 4 or 8 bytes through the alias, as a single instruction of that width.
///
/// # Safety
/// `addr..addr+width` must be mapped readable (reads) / writable (writes).
unsafe fn bus_read(addr: u64, width: u8) -> u64 {
    // SAFETY: caller's contract; volatile keeps the access single and at this width.
    unsafe {
        match width {
            1 => (addr as *const u8).read_volatile() as u64,
            2 => (addr as *const u16).read_unaligned_volatile_or_plain() as u64,
            4 => (addr as *const u32).read_unaligned_volatile_or_plain() as u64,
            _ => (addr as *const u64).read_unaligned_volatile_or_plain(),
        }
    }
}

/// # Safety
/// As [`bus_read`].
unsafe fn bus_write(addr: u64, width: u8, v: u64) {
    // SAFETY: caller's contract.
    unsafe {
        match width {
            1 => (addr as *mut u8).write_volatile(v as u8),
            2 => (addr as *mut u16).write_unaligned_volatile_or_plain(v as u16),
            4 => (addr as *mut u32).write_unaligned_volatile_or_plain(v as u32),
            _ => (addr as *mut u64).write_unaligned_volatile_or_plain(v),
        }
    }
}

/// Unaligned single-instruction accesses: x86 `mov` handles any alignment, and
/// `read_volatile` requires alignment, so use inline asm of the exact width.
trait Unaligned<T> {
    unsafe fn read_unaligned_volatile_or_plain(self) -> T;
}
trait UnalignedW<T> {
    unsafe fn write_unaligned_volatile_or_plain(self, v: T);
}

macro_rules! unaligned {
    ($t:ty, $reg:ident, $ptr:literal) => {
        impl Unaligned<$t> for *const $t {
            #[inline(always)]
            unsafe fn read_unaligned_volatile_or_plain(self) -> $t {
                let v: $t;
                // SAFETY: caller guarantees the address is readable for the width.
                unsafe {
                    core::arch::asm!(concat!("mov {v:", stringify!($reg), "}, ", $ptr, " ptr [{p}]"),
                        p = in(reg) self, v = out(reg) v, options(nostack, preserves_flags))
                };
                v
            }
        }
        impl UnalignedW<$t> for *mut $t {
            #[inline(always)]
            unsafe fn write_unaligned_volatile_or_plain(self, v: $t) {
                // SAFETY: caller guarantees the address is writable for the width.
                unsafe {
                    core::arch::asm!(concat!("mov ", $ptr, " ptr [{p}], {v:", stringify!($reg), "}"),
                        p = in(reg) self, v = in(reg) v, options(nostack, preserves_flags))
                };
            }
        }
    };
}
unaligned!(u16, x, "word");
unaligned!(u32, e, "dword");
unaligned!(u64, r, "qword");

/// Tries to complete `instr` (which faulted on `region`) through the alias; on success the
/// access is done, its event published and RIP advanced. `false`: nothing was done.
pub(crate) fn emulate(instr: &Instruction, gregs: &mut [i64; 23], region: &Region) -> bool {
    if region.alias == 0
        || instr.has_lock_prefix()
        || instr.has_rep_prefix()
        || instr.has_repne_prefix()
    {
        return false;
    }
    let m = instr.mnemonic();
    if !matches!(
        m,
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
    ) || instr.op_count() != 2
    {
        return false;
    }
    let width = instr.memory_size().size() as u8;
    if !matches!(width, 1 | 2 | 4 | 8) {
        return false;
    }
    let Some(ea) = effective_address(instr, gregs) else {
        return false;
    };
    if !region.contains(ea) || !region.contains(ea + width as u64 - 1) {
        return false;
    }
    let pc = instr.ip();
    let alias = region.alias_of(ea);
    match (instr.op0_kind(), instr.op1_kind()) {
        (OpKind::Register, OpKind::Memory) => {
            let Some(dst) = gpr(instr.op0_register()) else {
                return false;
            };
            let e = emit::begin();
            // SAFETY: the alias maps the region's memory readable for its whole length.
            let raw = unsafe { bus_read(alias, width) };
            e.access_value(false, ea, region.map_id, width, raw, pc);
            let v = match m {
                Mnemonic::Movsx | Mnemonic::Movsxd => match width {
                    1 => raw as u8 as i8 as i64 as u64,
                    2 => raw as u16 as i16 as i64 as u64,
                    4 => raw as u32 as i32 as i64 as u64,
                    _ => raw,
                },
                _ => raw,
            };
            set_reg(gregs, dst, v);
        }
        (OpKind::Memory, src) if m == Mnemonic::Mov => {
            let v = match src {
                OpKind::Register => match gpr(instr.op1_register()) {
                    Some(r) => get_reg(gregs, r),
                    None => return false,
                },
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate32to64 => instr.immediate(1),
                _ => return false,
            };
            let e = emit::begin();
            // SAFETY: the alias maps the region's memory writable (a write fault reached
            // here only if the program's protection allows writes, and the alias was made
            // with that protection).
            unsafe { bus_write(alias, width, v) };
            e.access_value(true, ea, region.map_id, width, v, pc);
        }
        _ => return false,
    }
    gregs[libc::REG_RIP as usize] = instr.next_ip() as i64;
    true
}
