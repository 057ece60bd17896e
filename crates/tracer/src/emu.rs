//! The emulate step of the fault path: complete the faulting instruction through the alias.
//!
//! Decoding and instruction semantics are `mmio-trace-x86`'s ([`x86::decode`],
//! [`x86::emulate`] over the signal context with [`UcontextCpu`]); this module is the
//! [`Bus`] the emulator talks to: every access that falls in a traced region is performed
//! once, at its exact width, on the alias mapping, and logged; other accesses (the
//! non-device side of `MOVS`, the stack of `PUSH m`) go to ordinary memory unlogged.
//! Instructions it cannot complete are refused and take the step fallback; an access that
//! faults (see [`crate::guard`]) stops the instruction with nothing committed, and the
//! fault goes to the program.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use mmio_trace_x86 as x86;
use x86::ucontext::{UcontextCpu, XsaveLayout};
use x86::{AccessDir, Bus, BusFault, Cpu, Rmw};

use iced_x86::{Instruction, Register};

use crate::emit;
use crate::guard::{self, Fault, Locked};
use crate::regions::{self, Region};
use crate::sys;
use mmio_trace_ring::{Record, MAX_STR_VALUES};

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

/// The signal frame's XSAVE layout, detected once at start (CPUID: never on the fault
/// path, which reads it with one load and no `OnceLock`).
struct Layout {
    /// 0: not yet; 1: being written; 2: ready.
    state: AtomicU8,
    value: UnsafeCell<Option<XsaveLayout>>,
}

// SAFETY: `value` is written once, by the thread that moved `state` from 0 to 1, and
// read only after `state` is 2 (release/acquire).
unsafe impl Sync for Layout {}

static LAYOUT: Layout = Layout {
    state: AtomicU8::new(0),
    value: UnsafeCell::new(None),
};

impl Layout {
    fn get(&self) -> Option<&XsaveLayout> {
        if self.state.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: written before `state` became 2, never again.
        unsafe { (*self.value.get()).as_ref() }
    }

    fn init(&self) {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: this thread alone moved `state` to 1; no reader looks before 2.
            unsafe { *self.value.get() = Some(XsaveLayout::detect()) };
            self.state.store(2, Ordering::Release);
        }
    }
}

/// The CPU can make one 32-byte (AVX) / 64-byte (AVX-512) access: detected at start.
static AVX: AtomicBool = AtomicBool::new(false);
static AVX512F: AtomicBool = AtomicBool::new(false);

/// Prepares the emulator outside any signal handler: builds the decoder's tables (which
/// allocate once), reads the signal frame's XSAVE layout and caches the CPU features the
/// fault path needs.
pub(crate) fn warm_up() {
    x86::warm_up();
    LAYOUT.init();
    let f = sys::cpu_vector_features();
    AVX.store(f.avx, Ordering::Relaxed);
    AVX512F.store(f.avx512f, Ordering::Relaxed);
    crate::ool::warm_up();
}

/// Whether 32-byte accesses can be made as one (AVX), as read at [`warm_up`].
pub(crate) fn has_avx() -> bool {
    AVX.load(Ordering::Relaxed)
}

/// Whether 64-byte accesses can be made as one (AVX-512F), as read at [`warm_up`].
pub(crate) fn has_avx512() -> bool {
    AVX512F.load(Ordering::Relaxed)
}

/// Serialises the read and the write of an emulated `LOCK CMPXCHG16B` (the one locked form
/// the emulator issues as two bus calls) between the threads of this process. Every other
/// locked form is one [`Bus::atomic_rmw`], performed natively on the alias (see there).
static RMW_LOCK: AtomicBool = AtomicBool::new(false);

/// Whether one bus access of `n` bytes can be made as a single instruction of that width.
pub(crate) fn width_ok(n: usize) -> bool {
    match n {
        1 | 2 | 4 | 8 | 16 => true,
        32 => has_avx(),
        64 => has_avx512(),
        _ => false,
    }
}

/// For an opmask over a packed memory operand: whether its runs of selected elements can
/// each be accessed at once (`None`: no such mask).
fn masked_runs_ok<C: Cpu>(ins: &Instruction, cpu: &C) -> Option<bool> {
    let k = ins.op_mask();
    if k == Register::None || ins.is_broadcast() {
        return None;
    }
    let size = ins.memory_size();
    let (w, e) = (size.size(), size.element_size());
    if e == 0 || e >= w || w > 64 {
        return None;
    }
    let n = w / e;
    let sel = cpu.opmask((k as usize).wrapping_sub(Register::K0 as usize) & 7)
        & if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    let mut ok = true;
    for_runs(n, sel, |from, to| ok &= width_ok((to - from) * e));
    Some(ok)
}

/// Calls `f(offset, len)` for each piece a masked vector operand of `width` bytes with
/// elements of `elem` bytes and selection `sel` is accessed as: one access per run of
/// selected elements (as the emulator's bus does), or one per element where the run's
/// length cannot be accessed at once (12 bytes, …).
pub(crate) fn masked_pieces(width: usize, elem: usize, sel: u64, mut f: impl FnMut(usize, usize)) {
    for_runs(width / elem, sel, |from, to| {
        let len = (to - from) * elem;
        if width_ok(len) {
            f(from * elem, len);
        } else {
            for k in from..to {
                f(k * elem, elem);
            }
        }
    });
}

/// Calls `f(from, to)` for each maximal run of set bits among the low `n` bits of `sel`.
fn for_runs(n: usize, sel: u64, mut f: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < n {
        if sel >> i & 1 == 0 {
            i += 1;
            continue;
        }
        let from = i;
        while i < n && sel >> i & 1 != 0 {
            i += 1;
        }
        f(from, i);
    }
}

struct AliasBus {
    pc: u64,
    locked: bool,
    holding: bool,
    /// The fault that stopped the instruction, with the program's address.
    fault: Option<Fault>,
    /// The region of the faulting access, as the fault path found it.
    region: Region,
    /// A string instruction's elements being gathered into runs (one event per run).
    run: Option<StrRun>,
}

/// A logged access of a string element.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct ElemAccess {
    write: bool,
    addr: u64,
    map_id: u64,
    value: u64,
}

/// A string instruction's device accesses, gathered element by element into runs that
/// are each published as one [`mmio_trace_ring::Kind::Str`] event instead of one event
/// per access. A run is consecutive elements of one shape: one access each (`STOS`,
/// `LODS`, `SCAS`, `MOVS` with one side in ordinary memory), or a read then a write of
/// the same value (`MOVS` between device addresses), at addresses stepping by the width
/// in one mapping. An element that does not continue the run ends it (published) and
/// starts the next; one of another shape (nothing logged, a partial element) is
/// published access by access, in order. The run's time is taken before its first
/// access (`emit::begin`), so the merge by time stays safe; a run started by an element
/// that ended the previous one takes it just after that element.
struct StrRun {
    width: u8,
    down: bool,
    /// The element in progress: its logged accesses so far.
    cur: [ElemAccess; 2],
    cur_n: usize,
    /// The event of the run (or of the element in progress when no run is open).
    pending: Option<emit::Pending>,
    /// The run's first element (its shape: `shape` accesses; 0: no run open).
    first: [ElemAccess; 2],
    shape: usize,
    count: u32,
    /// Every element so far had the first one's value.
    same: bool,
    /// The values of the first `MAX_STR_VALUES / width` elements.
    vals: [u8; MAX_STR_VALUES],
}

impl StrRun {
    fn new(width: u8, down: bool) -> StrRun {
        StrRun {
            width,
            down,
            cur: [ElemAccess::default(); 2],
            cur_n: 0,
            pending: None,
            first: [ElemAccess::default(); 2],
            shape: 0,
            count: 0,
            same: true,
            vals: [0; MAX_STR_VALUES],
        }
    }

    /// Before a logged access of the element in progress: the run's event begins here
    /// (its time) unless one is open.
    fn before_access(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(emit::begin());
        }
    }

    /// A logged access of the element in progress happened.
    fn access(&mut self, a: ElemAccess, pc: u64) {
        if self.cur_n == self.cur.len() {
            // Not a shape a run holds (never for the instructions gathered): out now.
            self.flush(pc);
            self.publish_cur(pc);
        }
        self.cur[self.cur_n] = a;
        self.cur_n += 1;
    }

    /// Where element `k` of the run accesses, from the first element's address `a`.
    fn at(&self, a: u64, k: u32) -> u64 {
        let d = u64::from(k) * u64::from(self.width);
        if self.down {
            a.wrapping_sub(d)
        } else {
            a.wrapping_add(d)
        }
    }

    /// Whether the element in progress has a shape a run holds.
    fn gatherable(&self) -> bool {
        match self.cur_n {
            1 => true,
            2 => !self.cur[0].write && self.cur[1].write && self.cur[0].value == self.cur[1].value,
            _ => false,
        }
    }

    /// The element in progress is complete.
    fn element_done(&mut self, pc: u64) {
        if self.cur_n == 0 {
            // Nothing logged (ordinary memory): the run's addresses are no longer
            // consecutive in the log.
            self.flush(pc);
            return;
        }
        if self.shape != 0 && self.continues() {
            self.add_cur();
            return;
        }
        self.flush(pc);
        if !self.gatherable() {
            self.publish_cur(pc);
            return;
        }
        self.shape = self.cur_n;
        self.first = self.cur;
        self.count = 0;
        self.same = true;
        self.add_cur();
    }

    /// Whether the element in progress continues the open run.
    fn continues(&self) -> bool {
        let w = usize::from(self.width);
        if self.cur_n != self.shape || self.count == u32::MAX {
            return false;
        }
        for i in 0..self.shape {
            let (c, f) = (&self.cur[i], &self.first[i]);
            if c.write != f.write || c.map_id != f.map_id || c.addr != self.at(f.addr, self.count) {
                return false;
            }
        }
        if self.shape == 2 && self.cur[0].value != self.cur[1].value {
            return false;
        }
        let same = self.cur[0].value == self.first[0].value;
        // Past the room for values only while every value is the first one.
        (self.count as usize + 1) * w <= MAX_STR_VALUES || (self.same && same)
    }

    fn add_cur(&mut self) {
        let w = usize::from(self.width);
        let v = self.cur[0].value;
        self.same &= v == self.first[0].value;
        let at = self.count as usize * w;
        if let Some(d) = self.vals.get_mut(at..at + w) {
            d.copy_from_slice(&v.to_le_bytes()[..w]);
        }
        self.count += 1;
        self.cur_n = 0;
        if self.pending.is_none() {
            self.pending = Some(emit::begin());
        }
    }

    /// Publishes the open run, if any.
    fn flush(&mut self, pc: u64) {
        if self.shape == 0 {
            return;
        }
        let shape = self.shape;
        self.shape = 0;
        let Some(e) = self.pending.take() else {
            return;
        };
        let w = usize::from(self.width);
        let f = self.first;
        if self.count == 1 {
            // One element: the plain access events every other instruction makes.
            e.access_value(
                f[0].write,
                f[0].addr,
                f[0].map_id,
                self.width,
                f[0].value,
                pc,
            );
            if shape == 2 {
                let e = emit::begin();
                e.access_value(
                    f[1].write,
                    f[1].addr,
                    f[1].map_id,
                    self.width,
                    f[1].value,
                    pc,
                );
            }
            return;
        }
        let mut flags = 0;
        if f[0].write {
            flags |= Record::STR_WRITE;
        }
        if self.down {
            flags |= Record::STR_DOWN;
        }
        let n = if self.same {
            flags |= Record::STR_SAME;
            w
        } else {
            // At most MAX_STR_VALUES (`continues`).
            self.count as usize * w
        };
        let values = self.vals.get(..n).unwrap_or(&self.vals);
        let second = (shape == 2).then(|| Record::access_word(f[1].addr, f[1].map_id));
        e.string(
            Record::access_word(f[0].addr, f[0].map_id),
            second,
            self.width,
            self.count,
            flags,
            values,
            pc,
        );
    }

    /// Publishes the accesses of the element in progress one by one.
    fn publish_cur(&mut self, pc: u64) {
        for i in 0..self.cur_n {
            let c = self.cur[i];
            let e = self.pending.take().unwrap_or_else(emit::begin);
            e.access_value(c.write, c.addr, c.map_id, self.width, c.value, pc);
        }
        self.cur_n = 0;
    }

    /// The instruction ended (completed, faulted or refused): the open run, then the
    /// accesses of a partial element, are published.
    fn finish(&mut self, pc: u64) {
        self.flush(pc);
        self.publish_cur(pc);
        // An event begun for an access that did not happen ends here (dropped).
        self.pending = None;
    }
}

impl AliasBus {
    fn region_for(&self, addr: u64, len: usize) -> Result<Option<Region>, BusFault> {
        self.region_spanning(addr, len, width_ok(len))
    }

    /// As [`AliasBus::region_for`]; `one`: whether `len` bytes can be accessed at once.
    fn region_spanning(
        &self,
        addr: u64,
        len: usize,
        one: bool,
    ) -> Result<Option<Region>, BusFault> {
        let r = &self.region;
        if r.alias != 0 && r.contains(addr) && r.contains(addr + len as u64 - 1) && one {
            // The faulting access's region (the fault path looked it up, or its site's
            // snapshot is current): no second lookup.
            return Ok(Some(*r));
        }
        let mut failed = None;
        let found = regions::find_aliasing(addr, &mut failed);
        if let (Some(errno), Some(r)) = (failed, &found) {
            crate::no_alias_mark(r.map_id, r.start, r.len, errno);
        }
        match found {
            Some(r) if r.alias != 0 && r.contains(addr + len as u64 - 1) && one => Ok(Some(r)),
            Some(_) => Err(BusFault { addr }),
            None if regions::find(addr + len as u64 - 1).is_some() => Err(BusFault { addr }),
            None => Ok(None),
        }
    }

    fn lock_for_rmw(&mut self) {
        if self.locked && !self.holding {
            while RMW_LOCK
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            self.holding = true;
        }
    }

    /// Records a fault of the access the program made at `addr` (performed at `at`: the
    /// alias, or `addr` itself for ordinary memory) and stops the instruction. The fault
    /// address is translated back into the program's mapping. A SIGSEGV of the alias is
    /// not recorded (see below).
    fn faulted(&mut self, mut f: Fault, addr: u64, at: u64, len: usize) -> BusFault {
        if f.signo == libc::SIGSEGV && at != addr {
            // The alias refused what the program's own mapping may allow (or it is going
            // away under a concurrent munmap): not the program's fault. Refused: the step
            // path runs the program's instruction on its own mapping.
            return BusFault { addr };
        }
        let off = f.addr.wrapping_sub(at);
        f.addr = if off < len as u64 {
            addr.wrapping_add(off)
        } else {
            addr
        };
        self.fault = Some(f);
        BusFault { addr }
    }
}

impl Drop for AliasBus {
    fn drop(&mut self) {
        if self.holding {
            RMW_LOCK.store(false, Ordering::Release);
        }
    }
}

impl Bus for AliasBus {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BusFault> {
        let len = buf.len();
        match self.region_for(addr, len)? {
            Some(r) if self.run.is_some() && len <= 8 => {
                let pc = self.pc;
                let Some(run) = self.run.as_mut() else {
                    return Err(BusFault { addr });
                };
                run.before_access();
                let at = r.alias_of(addr);
                // SAFETY: the alias maps the whole region readable; width checked.
                match unsafe { guard::read(at, buf) } {
                    Ok(()) => run.access(
                        ElemAccess {
                            write: false,
                            addr,
                            map_id: r.map_id,
                            value: le_value(buf),
                        },
                        pc,
                    ),
                    Err(f) => return Err(self.faulted(f, addr, at, len)),
                }
            }
            Some(r) => {
                self.lock_for_rmw();
                let e = emit::begin();
                let at = r.alias_of(addr);
                // SAFETY: the alias maps the whole region readable; width checked.
                match unsafe { guard::read(at, buf) } {
                    Ok(()) => {
                        crate::model::after_read(r.map_id, addr, buf, self.pc);
                        e.access(false, addr, r.map_id, buf, self.pc)
                    }
                    Err(f) => {
                        e.cancel();
                        return Err(self.faulted(f, addr, at, len));
                    }
                }
            }
            // SAFETY: ordinary memory the instruction itself would have read.
            None => unsafe { guard::copy(buf.as_mut_ptr() as u64, addr, len) }
                .map_err(|f| self.faulted(f, addr, addr, len))?,
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        let len = data.len();
        match self.region_for(addr, len)? {
            Some(r) => {
                if r.prot & libc::PROT_WRITE == 0 {
                    return Err(BusFault { addr });
                }
                if len <= 8 {
                    if let Some(run) = self.run.as_mut() {
                        run.before_access();
                        let at = r.alias_of(addr);
                        // SAFETY: as below.
                        return match unsafe { guard::write(at, data) } {
                            Ok(()) => {
                                let a = ElemAccess {
                                    write: true,
                                    addr,
                                    map_id: r.map_id,
                                    value: le_value(data),
                                };
                                run.access(a, self.pc);
                                Ok(())
                            }
                            Err(f) => Err(self.faulted(f, addr, at, len)),
                        };
                    }
                }
                self.lock_for_rmw();
                let e = emit::begin();
                let at = r.alias_of(addr);
                // SAFETY: the alias maps the whole region writable when the program's
                // protection allows writes; width checked.
                match unsafe { guard::write(at, data) } {
                    Ok(()) => {
                        crate::model::after_write(r.map_id, addr, data, self.pc);
                        e.access(true, addr, r.map_id, data, self.pc)
                    }
                    Err(f) => {
                        e.cancel();
                        return Err(self.faulted(f, addr, at, len));
                    }
                }
            }
            // SAFETY: ordinary memory the instruction itself would have written.
            None => unsafe { guard::copy(addr, data.as_ptr() as u64, len) }
                .map_err(|f| self.faulted(f, addr, addr, len))?,
        }
        Ok(())
    }

    fn string_element_done(&mut self) {
        let pc = self.pc;
        if let Some(run) = self.run.as_mut() {
            run.element_done(pc);
        }
    }

    /// The locked forms of 1..8 bytes (`XCHG`, `LOCK CMPXCHG/XADD/ADD/OR/BTS/INC`…): performed
    /// with the native locked instruction on the alias, so it is atomic with respect to every
    /// other access to the word, plain stores of other threads (and processes) included.
    /// `XCHG`, `XADD` and `CMPXCHG` are the same single instruction the program made (a
    /// failed `LOCK CMPXCHG` therefore makes the device see what the hardware makes it see:
    /// one locked read and write-back of the current value). The other forms are a plain
    /// load then a `LOCK CMPXCHG` loop computing the new value from the old (on a race the
    /// device sees one more locked compare-exchange per lost race). Logged as the read of
    /// the old value and the write of the new one. A misaligned word is refused (nothing
    /// was accessed; the step path runs the instruction natively).
    fn atomic_rmw(&mut self, addr: u64, width: u32, op: &mut Rmw<'_>) -> Result<u64, BusFault> {
        let w = width as usize;
        if !matches!(w, 1 | 2 | 4 | 8) || addr % u64::from(width) != 0 {
            return Err(BusFault { addr });
        }
        match self.region_for(addr, w)? {
            Some(r) => {
                if r.prot & libc::PROT_WRITE == 0 {
                    return Err(BusFault { addr });
                }
                let e = emit::begin();
                let at = r.alias_of(addr);
                crate::model::before_rmw(r.map_id, addr, at, width as u8, self.pc);
                // SAFETY: the alias maps the whole region read-write (the program may
                // write); aligned, width 1/2/4/8.
                match unsafe { native_rmw(at, width, op) } {
                    Ok((old, new)) => {
                        crate::model::after_rmw(r.map_id, addr, width as u8, new, self.pc);
                        e.access_value(false, addr, r.map_id, width as u8, old, self.pc);
                        emit::begin().access_value(true, addr, r.map_id, width as u8, new, self.pc);
                        Ok(old)
                    }
                    Err(f) => {
                        e.cancel();
                        Err(self.faulted(f, addr, at, w))
                    }
                }
            }
            // SAFETY: ordinary memory the instruction itself would have modified; aligned.
            None => match unsafe { native_rmw(addr, width, op) } {
                Ok((old, _)) => Ok(old),
                Err(f) => Err(self.faulted(f, addr, addr, w)),
            },
        }
    }
}

/// The little-endian value of at most 8 bytes.
fn le_value(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = b.len().min(8);
    v[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(v)
}

/// A locked read-modify-write of the aligned `width`-byte word at `p`: (old, new).
///
/// # Safety
/// `p` aligned to `width` (1, 2, 4 or 8) and mapped read-write (a fault is returned).
unsafe fn native_rmw(p: u64, width: u32, op: &mut Rmw<'_>) -> Result<(u64, u64), Fault> {
    let m = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (width * 8)) - 1
    };
    // SAFETY (all guard calls below): caller's contract.
    Ok(match op {
        Rmw::Xchg(v) => {
            let v = *v & m;
            (unsafe { guard::locked(p, width, Locked::Xchg(v)) }?, v)
        }
        Rmw::Add(v) => {
            let old = unsafe { guard::locked(p, width, Locked::Xadd(*v)) }?;
            (old, old.wrapping_add(*v) & m)
        }
        Rmw::Cmpxchg { expected, new } => {
            let (e, n) = (*expected & m, *new & m);
            let old = unsafe { guard::locked(p, width, Locked::Cas(e, n)) }?;
            (old, if old == e { n } else { old })
        }
        Rmw::Update(_) => {
            let mut b = [0u8; 8];
            unsafe { guard::read(p, &mut b[..width as usize]) }?;
            let mut cur = u64::from_le_bytes(b);
            loop {
                let n = op.apply(cur, width);
                let old = unsafe { guard::locked(p, width, Locked::Cas(cur, n)) }?;
                if old == cur {
                    break (cur, n);
                }
                cur = old;
            }
        }
    })
}

/// What [`emulate`] did with the instruction.
pub(crate) enum Emulated {
    /// Completed: every access performed and logged, the context updated.
    Done,
    /// Not emulated, nothing accessed or changed: single-step it.
    Refused,
    /// An access faulted (with the program's address): what the kernel would have raised
    /// for the program's own instruction. Accesses before it happened (and are logged);
    /// the context is as before the instruction (a `REP` string instruction: after the
    /// elements completed), RIP on it.
    Fault(Fault),
}

/// Completes the instruction at `rip` (bytes `code`) that faulted on a traced region:
/// every access performed and logged, registers and RIP updated in `uc`. `Refused`:
/// nothing was accessed or changed (unsupported instruction, an access straddling a region
/// edge, a width that cannot be done in one access); the caller single-steps instead.
/// `Fault`: an access raised SIGBUS or SIGSEGV (a truncated device file, an unmapped
/// ordinary operand); the caller hands it to the program.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn emulate(
    d: &x86::Decoded,
    rip: u64,
    uc: *mut libc::c_void,
    region: &Region,
) -> Emulated {
    let Some(layout) = LAYOUT.get() else {
        return Emulated::Refused;
    };
    // The fault address (the kernel's `si_addr` of a page fault, in the context's CR2).
    // SAFETY: the kernel's ucontext of this handler.
    let fault =
        unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_CR2 as usize] }
            as u64;
    // Segment-relative operands need the real bases (rare: one arch_prctl each); the FS
    // base (one `rdfsbase`) stands in for everything else (unused there).
    let ins = d.instruction();
    let (fs, gs) = if matches!(ins.segment_prefix(), Register::FS | Register::GS)
        || matches!(ins.memory_segment(), Register::FS | Register::GS)
    {
        x86::ucontext::thread_segment_bases()
    } else {
        (sys::fs_base(), 0)
    };
    // SAFETY: the kernel's ucontext of this handler, used only through `cpu` below.
    let mut cpu = unsafe { UcontextCpu::new(&mut *(uc as *mut libc::ucontext_t), layout, fs, gs) };
    let mut bus = AliasBus {
        pc: rip,
        locked: d.is_locked(),
        holding: false,
        fault: None,
        region: *region,
        run: d
            .string_run_width()
            .map(|w| StrRun::new(w, cpu.rflags() & DF != 0)),
    };
    // Refuse up front anything the bus would refuse half-way: a read with side effects
    // must not happen and then be repeated by the step fallback. And the faulting access
    // must be one of those computed (a wrong segment base or decode would otherwise make
    // the emulator touch some other address): else the step path runs it natively.
    let mut covers = false;
    let accesses = d.accesses(&cpu);
    // A masked vector operand is summarised as the span of its selected elements, but is
    // accessed one run of them at a time: each run must be one access.
    let runs_ok = masked_runs_ok(ins, &cpu);
    for a in accesses.as_slice() {
        let len = a.size as usize;
        match bus.region_spanning(a.addr, len, runs_ok.unwrap_or_else(|| width_ok(len))) {
            Err(_) => return Emulated::Refused,
            Ok(Some(r)) => {
                covers |= fault.wrapping_sub(a.addr) < u64::from(a.size);
                if a.dir != AccessDir::Read && r.prot & libc::PROT_WRITE == 0 {
                    return Emulated::Refused;
                }
            }
            Ok(None) => {}
        }
    }
    if !covers {
        return Emulated::Refused;
    }
    // A SIGBUS of an access below must reach our handler (which makes the access return
    // it): were it blocked (the program blocked it, and the handler runs with the
    // interrupted mask), the kernel would kill the process right away, from inside the
    // tracer. The handler's return restores the program's mask.
    // SAFETY: the kernel's ucontext of this handler.
    if unsafe { *crate::ctx::uc_mask(uc) } & SIGBUS_BIT != 0 {
        sys::sigprocmask(libc::SIG_UNBLOCK, Some(&SIGBUS_BIT), None);
    }
    // Whole stretches of a REP STOS/MOVS between one region and ordinary memory run as
    // the CPU's own instruction on the alias; what is left (another region, a string
    // between two device addresses, the other forms) goes element by element below.
    while bus.run.is_some() {
        match bulk_string(d, &mut cpu, &bus, rip) {
            Bulk::No => break,
            Bulk::Done => {
                if cpu.gpr(1) == 0 {
                    cpu.set_rip(ins.next_ip());
                    return Emulated::Done;
                }
            }
            Bulk::Refused => return Emulated::Refused,
            Bulk::Fault(f) => return Emulated::Fault(f),
        }
    }
    let result = x86::emulate(d, &mut cpu, &mut bus);
    if let Some(run) = bus.run.as_mut() {
        run.finish(rip);
    }
    match result {
        Ok(_) => Emulated::Done,
        Err(_) => match bus.fault {
            Some(mut f) => {
                // The CPU reports a read-modify-write's fault as a write, whichever half
                // of it the emulation was doing.
                let rmw = accesses.as_slice().iter().any(|a| {
                    a.dir == AccessDir::ReadWrite && f.addr.wrapping_sub(a.addr) < u64::from(a.size)
                });
                if rmw {
                    f.err |= 2;
                }
                Emulated::Fault(f)
            }
            None => Emulated::Refused,
        },
    }
}

const SIGBUS_BIT: u64 = 1 << (libc::SIGBUS - 1);

/// What [`bulk_string`] did.
enum Bulk {
    /// Nothing (not a form it runs, or nothing to run): the emulator goes on.
    No,
    /// Some elements ran and are logged, the registers say how many (RCX 0: all).
    Done,
    /// The alias refused an access the program's mapping may allow (a concurrent
    /// `munmap`): the elements before it are done; the rest is stepped.
    Refused,
    /// The string faulted (with the program's address) at the element RSI/RDI/RCX now
    /// name; the elements before it are done and logged.
    Fault(Fault),
}

/// The most bytes of ordinary memory one [`bulk_string`] covers (its pages are checked
/// to be untraced first).
const BULK_MAX: u64 = 64 << 20;

/// `REP STOS` into a traced region, or `REP MOVS` between one and ordinary memory
/// (64-bit addresses, no segment override): the elements that stay inside the region
/// run at once as the CPU's own string instruction on the alias (each element one
/// access of its width, as natively) and are logged as runs of elements (values: the
/// accumulator, or the ordinary side's bytes, read there). Registers are committed for
/// the elements done; a fault stops the string on the faulting element, as the CPU
/// does.
fn bulk_string<C: Cpu>(d: &x86::Decoded, cpu: &mut C, bus: &AliasBus, pc: u64) -> Bulk {
    use iced_x86::{Mnemonic as M, OpKind};
    let ins = d.instruction();
    let stos = matches!(ins.mnemonic(), M::Stosb | M::Stosw | M::Stosd | M::Stosq);
    let movs = matches!(ins.mnemonic(), M::Movsb | M::Movsw | M::Movsd | M::Movsq);
    let plain = |k: OpKind| matches!(k, OpKind::MemorySegRSI | OpKind::MemoryESRDI);
    let rcx = cpu.gpr(1);
    if !ins.is_string_instruction()
        || !(stos || movs)
        || !(ins.has_rep_prefix() || ins.has_repne_prefix())
        || !plain(ins.op0_kind())
        || (movs && !plain(ins.op1_kind()))
        || matches!(ins.memory_segment(), Register::FS | Register::GS)
        || rcx == 0
    {
        return Bulk::No;
    }
    let Some(width) = d.string_run_width() else {
        return Bulk::No;
    };
    let w = u64::from(width);
    let down = cpu.rflags() & DF != 0;
    let (rsi, rdi) = (cpu.gpr(6), cpu.gpr(7));
    // The device side, and the ordinary one (MOVS), which no region may hold.
    let (dev, dev_writes, ord) = if stos {
        (rdi, true, None)
    } else {
        match (regions::find(rsi).is_some(), regions::find(rdi).is_some()) {
            (true, false) => (rsi, false, Some(rdi)),
            (false, true) => (rdi, true, Some(rsi)),
            _ => return Bulk::No,
        }
    };
    let Ok(Some(r)) = bus.region_spanning(dev, width as usize, true) else {
        return Bulk::No;
    };
    if dev_writes && r.prot & libc::PROT_WRITE == 0 {
        return Bulk::No;
    }
    // Elements whose device access lies wholly inside the region.
    let end = r.start + r.len;
    if !r.contains(dev) || dev + w > end {
        return Bulk::No;
    }
    let fit = if down {
        (dev - r.start) / w + 1
    } else {
        (end - dev) / w
    };
    let mut k = rcx.min(fit).min(BULK_MAX / w);
    if let Some(o) = ord {
        let (lo, hi) = if down {
            (o.wrapping_sub((k - 1) * w), o.wrapping_add(w))
        } else {
            (o, o.wrapping_add(k * w))
        };
        if hi <= lo {
            return Bulk::No;
        }
        // A traced page on the ordinary side: only the elements before it, in the
        // string's order.
        let (first_page, last_page) = (lo >> 12, (hi - 1) >> 12);
        let traced = |n: &u64| regions::find(n << 12).is_some();
        if down {
            if let Some(n) = (first_page..=last_page).rev().find(traced) {
                let above = (n + 1) << 12;
                k = k.min(if o >= above { (o - above) / w + 1 } else { 0 });
            }
        } else if let Some(n) = (first_page..=last_page).find(traced) {
            k = k.min((n << 12).saturating_sub(o) / w);
        }
        if !dev_writes {
            // A write fault on the ordinary side would come after the element's device
            // read, whose value the CPU then drops: the pages written are probed first
            // (an atomic add of 0: a write access that changes nothing), and the string
            // stops short of one that refuses, for the emulator to fault on exactly.
            let (lo, hi) = if down {
                (o.wrapping_sub(k.saturating_sub(1) * w), o.wrapping_add(w))
            } else {
                (o, o.wrapping_add(k * w))
            };
            let probe = |n: u64| {
                let a = (n << 12).max(lo);
                // SAFETY: a byte the string is about to write; a fault is returned.
                unsafe { guard::locked(a, 1, guard::Locked::Xadd(0)) }.is_err()
            };
            let pages = (lo >> 12)..=((hi - 1) >> 12);
            if down {
                if let Some(n) = pages.rev().find(|&n| probe(n)) {
                    let above = (n + 1) << 12;
                    k = k.min(if o >= above { (o - above) / w + 1 } else { 0 });
                }
            } else if let Some(n) = pages.into_iter().find(|&n| probe(n)) {
                k = k.min((n << 12).saturating_sub(o) / w);
            }
        }
        if k == 0 {
            return Bulk::No;
        }
    }
    let at = |a: u64, e: u64| {
        if down {
            a.wrapping_sub(e * w)
        } else {
            a.wrapping_add(e * w)
        }
    };
    let acc = cpu.gpr(0) & if w >= 8 { u64::MAX } else { (1 << (8 * w)) - 1 };
    let alias = r.alias_of(dev);
    let first = emit::begin();
    let (op, dst) = match ord {
        None => (guard::RepOp::Stos(acc), alias),
        Some(o) if dev_writes => (guard::RepOp::Movs(o), alias),
        Some(o) => (guard::RepOp::Movs(alias), o),
    };
    // SAFETY: the alias maps the region (writable when the program may write it); the
    // ordinary side is the program's own operand (a fault comes back as an error).
    let (left, res) = unsafe { guard::rep_string(op, width, dst, k, down) };
    let done = k - left;
    if movs {
        cpu.set_gpr(6, at(rsi, done));
    }
    cpu.set_gpr(7, at(rdi, done));
    cpu.set_gpr(1, rcx - done);
    log_bulk(first, &r, dev, dev_writes, ord, acc, width, done, down, pc);
    match res {
        Ok(()) => Bulk::Done,
        Err(f) if f.signo == libc::SIGSEGV && f.addr.wrapping_sub(r.alias) < r.len => {
            // The alias refused what the program's mapping may allow: not the program's.
            Bulk::Refused
        }
        Err(mut f) => {
            if f.addr.wrapping_sub(r.alias) < r.len {
                f.addr = r.start + (f.addr - r.alias);
            }
            Bulk::Fault(f)
        }
    }
}

/// Logs `done` elements [`bulk_string`] ran, as runs: one of the accumulator's value
/// (`STOS`), or runs of at most `MAX_STR_VALUES` bytes of the values the ordinary side
/// holds (`MOVS`, in element order).
#[allow(clippy::too_many_arguments)]
fn log_bulk(
    first: emit::Pending,
    r: &Region,
    dev: u64,
    dev_writes: bool,
    ord: Option<u64>,
    acc: u64,
    width: u8,
    done: u64,
    down: bool,
    pc: u64,
) {
    let w = u64::from(width);
    let mut flags = 0;
    if dev_writes {
        flags |= Record::STR_WRITE;
    }
    if down {
        flags |= Record::STR_DOWN;
    }
    let at = |a: u64, e: u64| {
        if down {
            a.wrapping_sub(e * w)
        } else {
            a.wrapping_add(e * w)
        }
    };
    let mut pending = Some(first);
    let mut e0 = 0u64;
    let per = match ord {
        None => u64::from(u32::MAX),
        Some(_) => MAX_STR_VALUES as u64 / w,
    };
    while e0 < done {
        let n = (done - e0).min(per);
        let e = pending.take().unwrap_or_else(emit::begin);
        let word = Record::access_word(at(dev, e0), r.map_id);
        let mut vals = [0u8; MAX_STR_VALUES];
        let values = match ord {
            None => {
                vals[..8].copy_from_slice(&acc.to_le_bytes());
                if n == 1 {
                    e.access_value(dev_writes, at(dev, e0), r.map_id, width, acc, pc);
                    e0 += n;
                    continue;
                }
                flags |= Record::STR_SAME;
                &vals[..width as usize]
            }
            Some(o) => {
                let len = (n * w) as usize;
                // The ordinary bytes of elements e0..e0+n, lowest address first.
                let lo = if down { at(o, e0 + n - 1) } else { at(o, e0) };
                // SAFETY: the ordinary bytes the string just read or wrote.
                if unsafe { guard::copy(vals.as_mut_ptr() as u64, lo, len) }.is_err() {
                    // Unmapped by another thread since: those values are gone.
                    e.cancel();
                    emit::lost_events(n);
                    e0 += n;
                    continue;
                }
                if down {
                    // Element order is descending addresses.
                    let wu = width as usize;
                    let elems = &mut vals[..len];
                    elems.reverse();
                    for c in elems.chunks_exact_mut(wu) {
                        c.reverse();
                    }
                }
                if n == 1 {
                    let mut b = [0u8; 8];
                    b[..width as usize].copy_from_slice(&vals[..width as usize]);
                    let v = u64::from_le_bytes(b);
                    e.access_value(dev_writes, at(dev, e0), r.map_id, width, v, pc);
                    e0 += n;
                    continue;
                }
                &vals[..len]
            }
        };
        e.string(word, None, width, n as u32, flags, values, pc);
        e0 += n;
    }
}
/// The direction flag in RFLAGS.
const DF: u64 = 1 << 10;

/// In a fork child: a locked RMW of a thread that does not exist there holds nothing.
pub(crate) fn after_fork_child() {
    RMW_LOCK.store(false, Ordering::Relaxed);
}

/// The number (0..=31) of vector register `r` (XMM, YMM or ZMM), for [`vec_reg`].
pub(crate) fn vec_number(r: Register) -> Option<u8> {
    let v = r as u32;
    [Register::XMM0, Register::YMM0, Register::ZMM0]
        .into_iter()
        .find_map(|base| {
            (base as u32..base as u32 + 32)
                .contains(&v)
                .then(|| (v - base as u32) as u8)
        })
}

/// Vector register `n` (0..=31) of the interrupted context `uc`: 64 bytes, of which an
/// XMM register is the first 16.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn vec_reg(uc: *mut libc::c_void, n: u8) -> Option<[u8; 64]> {
    let layout = LAYOUT.get()?;
    // SAFETY: the kernel's ucontext of this handler, read through `cpu` only.
    let cpu = unsafe { UcontextCpu::new(&mut *(uc as *mut libc::ucontext_t), layout, 0, 0) };
    Some(cpu.vec(n as usize))
}

/// Opmask register `n` (0..=7) of the interrupted context `uc`.
///
/// # Safety
/// Signal-handler context; `uc` is the handler's context.
pub(crate) unsafe fn opmask(uc: *mut libc::c_void, n: usize) -> Option<u64> {
    let layout = LAYOUT.get()?;
    // SAFETY: the kernel's ucontext of this handler, read through `cpu` only.
    let cpu = unsafe { UcontextCpu::new(&mut *(uc as *mut libc::ucontext_t), layout, 0, 0) };
    Some(cpu.opmask(n))
}
