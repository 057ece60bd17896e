//! The two synchronisation primitives the tracer's normal-context code needs, without std
//! (the freestanding agent has no `std::sync`): a once-set cell and a futex mutex.
//!
//! Neither may be used on the fault path: the cell's readers never wait once it is set,
//! but a signal that interrupts the thread setting it and reads it would spin for ever, and
//! the mutex is not re-entrant. Their users take them in normal context only (start,
//! the preload library's hooks, the patcher thread).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::sys;

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const SET: u8 = 2;

/// A value set once and then read for ever (std's `OnceLock`, minus blocking: a reader
/// that finds it being set yields until it is).
pub struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the thread that moved `state` from EMPTY to BUSY,
// and published with release (SET); readers only read after acquiring SET. So it is shared
// as `&T` between threads (needs `Sync`) and may be set from any thread (needs `Send`).
unsafe impl<T: Send + Sync> Sync for Once<T> {}
// SAFETY: owning the cell owns the value.
unsafe impl<T: Send> Send for Once<T> {}

impl<T> Default for Once<T> {
    fn default() -> Once<T> {
        Once::new()
    }
}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Once<T> {
        Once {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, if set.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == SET {
            // SAFETY: SET is stored (release) only after the value was written, and the
            // value is never written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// Sets the value unless it is set (or being set); gives `v` back then.
    pub fn set(&self, v: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            return Err(v);
        }
        // SAFETY: the EMPTY -> BUSY exchange makes this thread the only writer, and no
        // reader reads before SET.
        unsafe { (*self.value.get()).write(v) };
        self.state.store(SET, Ordering::Release);
        Ok(())
    }

    /// The value, set first by `f` if the cell is empty. A caller that finds another
    /// thread setting it waits (yielding) until it is set.
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        if self
            .state
            .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: as in `set`.
            unsafe { (*self.value.get()).write(f()) };
            self.state.store(SET, Ordering::Release);
        }
        loop {
            if let Some(v) = self.get() {
                return v;
            }
            sys::sched_yield();
        }
    }
}

impl<T> Drop for Once<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == SET {
            // SAFETY: SET means initialised; `&mut self` means no reader is left.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

/// A mutual-exclusion lock over a futex word (0 free, 1 held, 2 held with waiters):
/// waiters sleep in the kernel, as with std's `Mutex`. No poisoning (a panic aborts in the
/// agent, and the preload library's users never relied on poison: they took the value
/// back). Process-private futex operations.
pub struct Mutex<T> {
    word: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, and a guard exists for one holder at
// a time (the futex word's 0 -> 1/2 transitions).
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: owning the lock owns the value.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Holds a [`Mutex`] until dropped.
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `v`.
    pub const fn new(v: T) -> Mutex<T> {
        Mutex {
            word: AtomicU32::new(0),
            value: UnsafeCell::new(v),
        }
    }

    /// Waits until the lock is free and takes it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Contended: mark waiters (2) and sleep until a holder's unlock wakes us.
            while self.word.swap(2, Ordering::Acquire) != 0 {
                futex(&self.word, FUTEX_WAIT_PRIVATE, 2);
            }
        }
        MutexGuard { lock: self }
    }
}

const FUTEX_WAIT_PRIVATE: usize = 128;
const FUTEX_WAKE_PRIVATE: usize = 129;

fn futex(word: &AtomicU32, op: usize, val: u32) {
    const SYS_FUTEX: usize = 202;
    // SAFETY: a futex operation on a live, aligned u32; no timeout (null).
    unsafe { sys::syscall6(SYS_FUTEX, word.as_ptr() as usize, op, val as usize, 0, 0, 0) };
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        if self.lock.word.swap(0, Ordering::Release) == 2 {
            futex(&self.lock.word, FUTEX_WAKE_PRIVATE, 1);
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &mut *self.lock.value.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_is_set_once() {
        let c: Once<u32> = Once::new();
        assert_eq!(c.get(), None);
        assert_eq!(c.get_or_init(|| 7), &7);
        assert_eq!(c.set(8), Err(8));
        assert_eq!(c.get_or_init(|| 9), &7);
    }

    #[test]
    fn the_mutex_excludes_across_threads() {
        static M: Mutex<u64> = Mutex::new(0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..20_000 {
                        let mut g = M.lock();
                        // A non-atomic read-modify-write: lost updates without exclusion.
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*M.lock(), 80_000);
    }
}
