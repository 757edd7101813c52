//! The lock word's layout and the atomic operations on it, with no I/O: what the host (releasing
//! a dead holder's words, `lock.rs`) and every process (`hub/lock_word.rs`) share.

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
