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
//!
//! The other primitives (`SyncSpec`: events, semaphores, conditions, barriers) are objects of
//! this same kind, with a word laid out as `word.rs` says. A semaphore or a barrier also gives
//! each process that locates it a word of its own, where the process records the permits it
//! holds, or the barrier generation it waits in; at the process's death the host gives those
//! permits back (and marks the semaphore poisoned), or breaks the barrier.

use super::word as lock_word;
use super::{Body, Caller, Hosted, Outcome, Owner, Reply, Waiting};
use crate::buffers::IntoShared;
use crate::hub::lock;
use crate::protocol::{HostError, LockOp, LockReply, SyncSpec};
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

/// A lock (or another primitive) as the host sees it: where its word is, the pid of every
/// process that asked, and each process's own word for the kinds that have them.
#[derive(Debug)]
pub(crate) struct LockState {
    /// `None` for a lock.
    kind: Option<SyncSpec>,
    slot: Option<Slot>,
    pids: HashMap<Owner, u32>,
    own: HashMap<Owner, Slot>,
}

impl LockState {
    pub(crate) fn new() -> Self {
        LockState {
            kind: None,
            slot: Slot::take(),
            pids: HashMap::new(),
            own: HashMap::new(),
        }
    }

    /// Another primitive than a lock; a semaphore's word starts with its permits.
    pub(crate) fn sync(kind: SyncSpec) -> Self {
        let state = LockState {
            kind: Some(kind),
            ..LockState::new()
        };
        if let (SyncSpec::Semaphore { value, .. }, Some(slot)) = (kind, &state.slot) {
            slot.word().store(
                value.min(lock_word::COUNT),
                std::sync::atomic::Ordering::Release,
            );
        }
        state
    }

    /// Whether each process gets a word of its own.
    fn has_own(&self) -> bool {
        matches!(
            self.kind,
            Some(SyncSpec::Semaphore { .. } | SyncSpec::Barrier { .. })
        )
    }

    /// The word of the whole object as it is when nothing is held or pending.
    fn at_rest(&self) -> u32 {
        match self.kind {
            Some(SyncSpec::Semaphore { value, .. }) => value.min(lock_word::COUNT),
            _ => 0,
        }
    }

    pub(crate) fn apply(
        &mut self,
        caller: &mut Caller<'_>,
        op: LockOp,
        _: Option<Body>,
    ) -> Outcome {
        let Some(slot) = &self.slot else {
            return Outcome::Answer(Reply::failed(HostError::Closed));
        };
        match op {
            LockOp::Locate { pid } => {
                self.pids.insert(caller.owner, pid);
                let (arena, index) = (slot.arena, slot.index);
                if !self.has_own() {
                    return Outcome::Answer(Reply::op(LockReply::Word { arena, index }, None));
                }
                let own = match self.own.entry(caller.owner) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match Slot::take() {
                        Some(own) => v.insert(own),
                        None => return Outcome::Answer(Reply::failed(HostError::Closed)),
                    },
                };
                let words = LockReply::Words {
                    arena,
                    index,
                    own_arena: own.arena,
                    own_index: own.index,
                };
                Outcome::Answer(Reply::op(words, None))
            }
            LockOp::Arena { arena: wanted } => {
                let ticket = arena(wanted).and_then(|segment| postcard::to_allocvec(&segment).ok());
                match ticket {
                    Some(bytes) => {
                        Outcome::Answer(Reply::op(LockReply::Arena, Some(bytes.into_shared())))
                    }
                    None => Outcome::Answer(Reply::failed(HostError::Closed)),
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
        let pid = self.pids.remove(&owner);
        let own = self.own.remove(&owner);
        let Some(slot) = &self.slot else { return };
        let mine = own.map_or(0, |own| {
            own.word().load(std::sync::atomic::Ordering::Acquire)
        });
        match self.kind {
            None => {
                if let Some(pid) = pid {
                    lock_word::release_dead(slot.word(), pid);
                }
            }
            Some(SyncSpec::Semaphore { .. }) if mine > 0 => {
                lock_word::return_permits(slot.word(), mine);
            }
            Some(SyncSpec::Barrier { .. }) if mine > 0 => {
                lock_word::break_barrier(slot.word(), mine - 1);
            }
            Some(_) => {}
        }
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn is_idle(&self) -> bool {
        // A word left poisoned (or held) outlives its handles: a handle on its way to another
        // process, or not yet used in the process that made it, still names this lock, and the
        // next holder must hear of the death.
        // The same holds for a semaphore whose permits are out, a set event and a barrier
        // with parties in it or broken.
        self.slot.as_ref().is_none_or(|slot| {
            let word = slot.word().load(std::sync::atomic::Ordering::Acquire);
            match self.kind {
                None => word == 0,
                Some(SyncSpec::Barrier { .. }) => {
                    word & (lock_word::BARRIER_COUNT | lock_word::BARRIER_BROKEN) == 0
                }
                Some(SyncSpec::Semaphore { .. }) => word & !lock_word::WAITERS == self.at_rest(),
                Some(SyncSpec::Event) => word & lock_word::EVENT_SET == 0,
                Some(SyncSpec::Condition) => true,
            }
        })
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

    fn locate(state: &mut LockState, owner: Owner, pid: u32) -> LockReply {
        let mut nobody = || -> Box<dyn Waiter> { unreachable!("a lock never waits") };
        let mut caller = Caller {
            owner,
            req: 1,
            waiter: &mut nobody,
            ended: None,
        };
        match state.apply(&mut caller, LockOp::Locate { pid }, None) {
            Outcome::Answer(Reply {
                answer: Answer::Op(OpReply::Lock(reply)),
                ..
            }) => reply,
            other => panic!("a locate is answered at once, not {other:?}"),
        }
    }

    fn own_word(reply: LockReply) -> (Shared, usize) {
        let LockReply::Words {
            own_arena,
            own_index,
            ..
        } = reply
        else {
            panic!("a semaphore or barrier gives each process a word of its own");
        };
        (arena(own_arena).unwrap(), own_index as usize)
    }

    #[test]
    fn a_dead_holders_permits_come_back_poisoned() {
        let mut state = LockState::sync(SyncSpec::Semaphore {
            value: 3,
            bounded: false,
        });
        let (seg, own) = own_word(locate(&mut state, 3, 4242));
        // The same owner asking again gets the same word of its own.
        assert_eq!(own_word(locate(&mut state, 3, 4242)).1, own);
        let main = state.slot.as_ref().unwrap().segment.clone();
        let word = main.word(state.slot.as_ref().unwrap().index as usize);
        assert_eq!(word.load(SeqCst), 3);
        assert!(state.is_idle());
        // Process 4242 took two permits.
        word.store(1, SeqCst);
        seg.word(own).store(2, SeqCst);
        assert!(!state.is_idle());
        state.owner_gone(5);
        assert_eq!(word.load(SeqCst), 1);
        state.owner_gone(3);
        assert_eq!(word.load(SeqCst), 3 | lock_word::POISONED);
        assert!(!state.is_idle(), "the poison waits for the next acquirer");
    }

    #[test]
    fn a_dead_waiter_breaks_its_round_of_a_barrier_only() {
        let mut state = LockState::sync(SyncSpec::Barrier { parties: 3 });
        let (seg_a, own_a) = own_word(locate(&mut state, 3, 100));
        let (seg_b, own_b) = own_word(locate(&mut state, 4, 101));
        assert_ne!(
            (seg_a.word(own_a) as *const _),
            (seg_b.word(own_b) as *const _)
        );
        let main = state.slot.as_ref().unwrap().segment.clone();
        let word = main.word(state.slot.as_ref().unwrap().index as usize);
        // Owner 3 waited in round 0, which completed: now round 1, one party in it (owner 4).
        seg_a.word(own_a).store(1, SeqCst);
        seg_b.word(own_b).store(2, SeqCst);
        word.store((1 << 15) | 1, SeqCst);
        state.owner_gone(3);
        assert_eq!(word.load(SeqCst), (1 << 15) | 1, "round 0 is over");
        state.owner_gone(4);
        assert_eq!(word.load(SeqCst), (1 << 15) | 1 | lock_word::BARRIER_BROKEN);
        assert!(!state.is_idle());
    }
}
