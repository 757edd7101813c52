//! One kind of hosted object: a lock's word, and what the host does when its holder dies.
//!
//! Every lock of the run is one 32-bit word in a *lock arena*: a shared memory segment of
//! [`ARENA_WORDS`] words that the root makes and keeps mapped. A lock object hands its word's
//! place to each process that asks (`Locate`), and the arena's descriptor to a process that has
//! not mapped that arena yet (`Arena`). From then on the process acquires and releases with
//! atomic operations on the word (`word.rs`); nothing about it comes here.
//!
//! What does come here is death. `Locate` says which pid the asking process has, so when a
//! process's connection ends the host knows its pid, and if the word names that pid as its
//! holder, the host releases it, marks it poisoned and wakes every waiter. The host can do this
//! because it maps every arena itself: no word a process could hold is out of its reach, and no
//! kernel help (robust futex lists, which belong to threads, not to an async task's process)
//! is needed.
//!
//! A word is given back to its arena when the lock object goes (its last handle, in any
//! process, is released), so a long run that makes and drops locks reuses a few arenas.

use super::word as lock_word;
use super::{Body, Caller, Hosted, Outcome, Owner, Reply, Waiting};
use crate::buffers::IntoShared;
use crate::hub::lock;
use crate::protocol::{LockOp, LockReply};
use crate::transport::segment::{Segment, Shared};
use std::collections::HashMap;
use std::sync::Mutex;

/// Words in one lock arena (16 KiB).
pub(crate) const ARENA_WORDS: usize = 4096;

/// Every arena the root made, and the words free in them.
#[derive(Default)]
struct Arenas {
    segments: Vec<Shared>,
    free: Vec<(u32, u32)>,
}

static ARENAS: Mutex<Arenas> = Mutex::new(Arenas {
    segments: Vec::new(),
    free: Vec::new(),
});

/// A word of an arena, free again when dropped.
#[derive(Debug)]
struct Slot {
    arena: u32,
    index: u32,
    segment: Shared,
}

impl Slot {
    /// A free word, from a new arena if every one is full. `None` when no arena can be made
    /// (the processes asking hear it as an error).
    fn take() -> Option<Slot> {
        let mut arenas = lock(&ARENAS);
        if arenas.free.is_empty() {
            let segment = Segment::create(ARENA_WORDS * 4).ok()?;
            let arena = u32::try_from(arenas.segments.len()).ok()?;
            arenas.segments.push(Shared::new(segment));
            // Reversed, so words are handed out from the start of the arena.
            arenas
                .free
                .extend((0..ARENA_WORDS as u32).rev().map(|i| (arena, i)));
        }
        let (arena, index) = arenas.free.pop()?;
        let segment = arenas.segments[arena as usize].clone();
        Some(Slot {
            arena,
            index,
            segment,
        })
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        self.segment.word(self.index as usize)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Nobody holds a handle any more, so nobody uses the word: reset it for its next lock.
        lock_word::reset(self.word());
        lock(&ARENAS).free.push((self.arena, self.index));
    }
}

/// The arena `arena`, if the root made it.
pub(crate) fn arena(arena: u32) -> Option<Shared> {
    lock(&ARENAS).segments.get(arena as usize).cloned()
}

/// A lock as the host sees it: where its word is, and the pid of every process that asked.
#[derive(Debug)]
pub(crate) struct LockState {
    slot: Option<Slot>,
    pids: HashMap<Owner, u32>,
}

impl LockState {
    pub(crate) fn new() -> Self {
        LockState {
            slot: Slot::take(),
            pids: HashMap::new(),
        }
    }

    pub(crate) fn apply(
        &mut self,
        caller: &mut Caller<'_>,
        op: LockOp,
        _: Option<Body>,
    ) -> Outcome {
        let Some(slot) = &self.slot else {
            return Outcome::Answer(Reply::failed(crate::protocol::HostError::Closed));
        };
        match op {
            LockOp::Locate { pid } => {
                self.pids.insert(caller.owner, pid);
                Outcome::Answer(Reply::op(
                    LockReply::Word {
                        arena: slot.arena,
                        index: slot.index,
                    },
                    None,
                ))
            }
            LockOp::Arena { arena: wanted } => {
                let ticket = arena(wanted).and_then(|segment| postcard::to_allocvec(&segment).ok());
                match ticket {
                    Some(bytes) => {
                        Outcome::Answer(Reply::op(LockReply::Arena, Some(bytes.into_shared())))
                    }
                    None => Outcome::Answer(Reply::failed(crate::protocol::HostError::Closed)),
                }
            }
        }
    }
}

impl Hosted for LockState {
    fn withdraw(&mut self, _: Owner, _: u64) -> Option<Waiting> {
        // Nobody waits here: waiting is on the word.
        None
    }

    fn owner_gone(&mut self, owner: Owner) {
        if let (Some(pid), Some(slot)) = (self.pids.remove(&owner), &self.slot) {
            lock_word::release_dead(slot.word(), pid);
        }
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn is_idle(&self) -> bool {
        // A word left poisoned (or held) outlives its handles: a handle on its way to another
        // process, or not yet used in the process that made it, still names this lock, and the
        // next holder must hear of the death.
        self.slot
            .as_ref()
            .is_none_or(|slot| slot.word().load(std::sync::atomic::Ordering::Acquire) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::objects::Waiter;
    use crate::protocol::{Answer, OpReply};
    use std::sync::atomic::Ordering::SeqCst;

    #[test]
    fn a_dead_holder_poisons_the_word_which_keeps_its_lock() {
        let mut state = LockState::new();
        let mut nobody = || -> Box<dyn Waiter> { unreachable!("a lock never waits") };
        let mut caller = Caller {
            owner: 3,
            req: 1,
            waiter: &mut nobody,
            ended: None,
        };
        let Outcome::Answer(reply) = state.apply(&mut caller, LockOp::Locate { pid: 4242 }, None)
        else {
            panic!("a locate is answered at once");
        };
        assert!(matches!(
            reply.answer,
            Answer::Op(OpReply::Lock(LockReply::Word { .. }))
        ));
        let segment = state.slot.as_ref().unwrap().segment.clone();
        let word = segment.word(state.slot.as_ref().unwrap().index as usize);
        // Process 4242 (owner 3) holds the lock, someone sleeps on it.
        word.store(4242 | lock_word::WAITERS, SeqCst);
        assert!(!state.is_idle());
        // Another owner going away changes nothing.
        state.owner_gone(5);
        assert_eq!(word.load(SeqCst), 4242 | lock_word::WAITERS);
        state.owner_gone(3);
        assert_eq!(word.load(SeqCst), lock_word::POISONED);
        assert!(!state.is_idle(), "the poison waits for the next holder");
        word.store(0, SeqCst);
        assert!(state.is_idle());
    }
}
