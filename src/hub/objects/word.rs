//! The layouts of the words every synchronization primitive is, and the atomic operations on
//! them that the host needs too, with no I/O: what the host (undoing what a dead process held,
//! `lock.rs`) and every process (`hub/lock_word.rs`, `sync/`) share.
//!
//! | primitive | bits 0..30 | bit 30 | bit 31 |
//! |---|---|---|---|
//! | lock | holder's pid | waiters | poisoned |
//! | semaphore | free permits | waiters | poisoned (a dead holder's permits came back) |
//! | event | bit 0: set; bits 1..30: generation, bumped by each `set` of a clear event | waiters | — |
//! | condition | notification counter | waiters | — |
//! | barrier | bits 0..15: parties arrived; bits 15..30: generation | last change was a reset | broken |
//!
//! A semaphore's and a barrier's users each have a word of their own besides: the number of
//! permits the process holds, or `1 + generation` while it waits at the barrier (0 otherwise).

use crate::transport::segment::futex_wake;
use std::sync::atomic::{AtomicU32, Ordering};

/// The holder's pid.
pub(crate) const HOLDER: u32 = (1 << 30) - 1;
/// Someone may sleep on the word.
pub(crate) const WAITERS: u32 = 1 << 30;
/// The last holder died holding it.
pub(crate) const POISONED: u32 = 1 << 31;

/// Makes a word free and unpoisoned (for a word given to a new lock).
pub(crate) fn reset(word: &AtomicU32) {
    word.store(0, Ordering::SeqCst);
}

/// Releases `word` if process `pid` (which is gone) holds it, marks it poisoned and wakes every
/// sleeper. Returns whether it did.
pub(crate) fn release_dead(word: &AtomicU32, pid: u32) -> bool {
    let mut cur = word.load(Ordering::Acquire);
    while cur & HOLDER == pid & HOLDER && pid != 0 {
        match word.compare_exchange(cur, POISONED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                futex_wake(word, i32::MAX);
                return true;
            }
            Err(now) => cur = now,
        }
    }
    false
}

/// Takes `word` for `pid` if it is free; `Some(poisoned)` if taken. A caller that has slept on
/// the word keeps the waiters bit set (`contended`), so the sleepers behind it are still woken.
pub(crate) fn try_lock(word: &AtomicU32, pid: u32, contended: bool) -> Option<bool> {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & HOLDER != 0 {
            return None;
        }
        let waiters = if contended { WAITERS } else { cur & WAITERS };
        match word.compare_exchange_weak(cur, pid | waiters, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Some(cur & POISONED != 0),
            Err(now) => cur = now,
        }
    }
}

/// Releases `word`, waking one sleeper if there may be one.
pub(crate) fn unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        futex_wake(word, 1);
    }
}

/// The free permits of a semaphore's word (and the most it can count).
pub(crate) const COUNT: u32 = HOLDER;

/// Gives `n` permits held by a dead process back to a semaphore's word, marks it poisoned (the
/// next acquirer hears of it) and wakes every sleeper.
pub(crate) fn return_permits(word: &AtomicU32, n: u32) {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        let count = (cur & COUNT).saturating_add(n).min(COUNT);
        let new = count | (cur & WAITERS) | POISONED;
        match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    futex_wake(word, i32::MAX);
}

/// An event's flag.
pub(crate) const EVENT_SET: u32 = 1;
/// An event's generation (bits 1..30).
pub(crate) const EVENT_GEN: u32 = HOLDER & !EVENT_SET;

/// A barrier's count of parties arrived.
pub(crate) const BARRIER_COUNT: u32 = (1 << 15) - 1;
/// A barrier's generation (bits 15..30).
pub(crate) const BARRIER_GEN: u32 = HOLDER & !BARRIER_COUNT;
/// The generation of a barrier's word.
pub(crate) fn barrier_gen(word: u32) -> u32 {
    (word & BARRIER_GEN) >> 15
}
/// The last generation change of a barrier was a reset, not a trip.
pub(crate) const BARRIER_RESET: u32 = 1 << 30;
/// A barrier is broken (until reset).
pub(crate) const BARRIER_BROKEN: u32 = 1 << 31;

/// Breaks a barrier whose generation is still `gen` (a party waiting in it died, or gave up)
/// and wakes every waiter. Returns whether it did.
pub(crate) fn break_barrier(word: &AtomicU32, gen: u32) -> bool {
    let mut cur = word.load(Ordering::Acquire);
    while barrier_gen(cur) == gen && cur & BARRIER_BROKEN == 0 {
        match word.compare_exchange(
            cur,
            cur | BARRIER_BROKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                futex_wake(word, i32::MAX);
                return true;
            }
            Err(now) => cur = now,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::segment::Segment;

    #[test]
    fn a_word_is_taken_once_and_a_dead_holder_poisons_it() {
        let seg = Segment::create(4).unwrap();
        let word = seg.word(0);
        assert_eq!(try_lock(word, 7, false), Some(false));
        assert_eq!(try_lock(word, 8, false), None);
        assert!(!release_dead(word, 8));
        assert!(release_dead(word, 7));
        assert_eq!(try_lock(word, 8, false), Some(true));
        unlock(word);
        assert_eq!(try_lock(word, 8, false), Some(false));
        unlock(word);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
