//! [`Barrier`]: parties in several processes wait until all of them have come.

use crate::error::{Error, Result};
use crate::hub::sync_word::{
    barrier_gen, break_barrier, BARRIER_BROKEN, BARRIER_COUNT, BARRIER_GEN, BARRIER_RESET,
};
use crate::hub::{park, Place, SyncWord};
use crate::protocol::SyncSpec;
use crate::transport::segment::futex_wake;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A barrier for a fixed number of parties, in any processes: Python's
/// `multiprocessing.Barrier`.
///
/// `Barrier::new(n)` is plain and infallible; the barrier's word (how many have come, a
/// generation, a reset bit and a broken bit, in the root's lock arena) is made on first use.
/// A `Barrier` is `Clone` and `Serialize`/`Deserialize`. At most 32,767 parties (more, or 0,
/// fails the first operation).
///
/// [`Barrier::wait`] counts the caller in with one atomic operation; the last of the `n`
/// parties moves the generation on and wakes everyone (one `FUTEX_WAKE`); the others sleep in
/// the kernel on a blocking-pool thread, never polling. The barrier is then ready for the next
/// round. Each party of a round gets a distinct index, `0..n` in the order they came; the last
/// one, which released the others, is the leader ([`BarrierWaitResult::is_leader`]).
///
/// # Breaking
/// The barrier breaks — every waiter, and every later `wait` until [`Barrier::reset`], gets
/// [`Error::BrokenBarrier`] — when a wait times out ([`Barrier::wait_timeout`], as Python),
/// when [`Barrier::abort`] is called, and when a process dies while one of its tasks waits at
/// it: each process records, in a word of its own, the generation it waits in, and the root's
/// hub breaks that generation when the process's connection ends. [`Barrier::reset`] also
/// sends the waiters of the moment away with `BrokenBarrier`, then leaves the barrier empty
/// and whole.
///
/// # Fairness
/// Everyone is released at once; there is no order among them.
///
/// Cancelling a wait (dropping it) counts the party out again, unless the round was complete.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::Barrier;
/// let barrier = Barrier::new(2);
/// let other = {
///     let barrier = barrier.clone();
///     tokio::spawn(async move { barrier.wait().await })
/// };
/// let mine = barrier.wait().await?;
/// let theirs = other.await.expect("the other party")?;
/// assert_eq!(mine.index() + theirs.index(), 1);
/// assert!(mine.is_leader() != theirs.is_leader());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Barrier(SyncWord<SyncSpec>);

/// What [`Barrier::wait`] tells one party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    index: u32,
    leader: bool,
}

impl BarrierWaitResult {
    /// This party's place in its round, `0..n` in the order they came (Python's return value).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether this party was the last to come, which released the others: one per round.
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// Counts an arrived party out again if its wait is dropped before the round completes.
struct Arrived<'a> {
    word: &'a AtomicU32,
    gen: u32,
}

impl Drop for Arrived<'_> {
    fn drop(&mut self) {
        let mut cur = self.word.load(Ordering::Acquire);
        while barrier_gen(cur) == self.gen && cur & BARRIER_BROKEN == 0 && cur & BARRIER_COUNT > 0 {
            match self
                .word
                .compare_exchange(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }
}

/// A word of generation `gen` with no party in it and neither bit set.
fn fresh(gen: u32) -> u32 {
    (gen << 15) & BARRIER_GEN
}

impl Barrier {
    /// A new barrier for `parties` parties.
    pub fn new(parties: u32) -> Barrier {
        Barrier(SyncWord::with_spec(SyncSpec::Barrier { parties }))
    }

    /// How many parties the barrier is for.
    pub fn parties(&self) -> u32 {
        match self.0.spec() {
            SyncSpec::Barrier { parties } => parties,
            _ => 0,
        }
    }

    async fn place(&self) -> Result<&Place> {
        let parties = self.parties();
        if parties == 0 || parties > BARRIER_COUNT {
            return Err(Error::InvalidArgument(format!(
                "a barrier of {parties} parties (it takes 1 to {BARRIER_COUNT})"
            )));
        }
        self.0.place().await
    }

    /// Comes to the barrier and waits until every party has come.
    ///
    /// # Cancel safety
    /// Dropped while waiting, the party is counted out again (unless its round completed
    /// meanwhile); nothing else changes.
    ///
    /// # Errors
    /// `BrokenBarrier` when the barrier is or becomes broken (see "Breaking");
    /// `InvalidArgument` for 0 or more than 32,767 parties; `NotLaunched` outside a launch;
    /// `Closed` when the root's hub is gone; `Io` when the runtime cannot run the sleeping
    /// thread.
    pub async fn wait(&self) -> Result<BarrierWaitResult> {
        self.wait_until(None).await
    }

    /// As [`Barrier::wait`], for at most `timeout`; when the time runs out the barrier breaks
    /// for everyone (as in Python).
    ///
    /// # Cancel safety
    /// As [`Barrier::wait`].
    ///
    /// # Errors
    /// `BrokenBarrier` also when the time ran out; otherwise as [`Barrier::wait`].
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.wait_until(Some(Instant::now() + timeout)).await
    }

    async fn wait_until(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult> {
        let place = self.place().await?;
        let parties = self.parties();
        let word = place.word();
        let (gen, index) = loop {
            let cur = word.load(Ordering::Acquire);
            if cur & BARRIER_BROKEN != 0 {
                return Err(Error::BrokenBarrier);
            }
            let (count, gen) = (cur & BARRIER_COUNT, barrier_gen(cur));
            if count + 1 >= parties {
                let next = fresh(gen.wrapping_add(1));
                if word
                    .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    futex_wake(word, i32::MAX);
                    return Ok(BarrierWaitResult {
                        index: count,
                        leader: true,
                    });
                }
                continue;
            }
            // Recorded before coming: from here, this process's death breaks the round.
            place.own().store(gen + 1, Ordering::Release);
            if word
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break (gen, count);
            }
        };
        // Counts this party out if the wait is dropped while the round is open (a no-op once
        // the round ended, however it ended).
        let _arrived = Arrived { word, gen };
        let tripped = match released(place, gen, deadline).await {
            Some(r) => r?,
            None => {
                // Out of time: break the round for everyone (unless it completed just now).
                break_barrier(word, gen);
                ended_well(word.load(Ordering::Acquire), gen) == Some(true)
            }
        };
        if tripped {
            Ok(BarrierWaitResult {
                index,
                leader: false,
            })
        } else {
            Err(Error::BrokenBarrier)
        }
    }

    /// Breaks the barrier: every waiter, and every wait until [`Barrier::reset`], gets
    /// `BrokenBarrier`.
    ///
    /// # Cancel safety
    /// Cancel-safe: it waits only to locate the word (the first time), before anything changes.
    ///
    /// # Errors
    /// As [`Barrier::wait`], but never `BrokenBarrier`.
    pub async fn abort(&self) -> Result<()> {
        let word = self.place().await?.word();
        word.fetch_or(BARRIER_BROKEN, Ordering::AcqRel);
        futex_wake(word, i32::MAX);
        Ok(())
    }

    /// Sends the waiters of the moment away with `BrokenBarrier` and makes the barrier empty
    /// and whole again.
    ///
    /// # Cancel safety
    /// As [`Barrier::abort`].
    ///
    /// # Errors
    /// As [`Barrier::abort`].
    pub async fn reset(&self) -> Result<()> {
        let word = self.place().await?.word();
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let next = fresh(barrier_gen(cur).wrapping_add(1)) | BARRIER_RESET;
            match word.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        futex_wake(word, i32::MAX);
        Ok(())
    }

    /// How many parties wait at the barrier now (0 when it is broken).
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    ///
    /// # Errors
    /// As [`Barrier::abort`].
    pub async fn n_waiting(&self) -> Result<u32> {
        let cur = self.place().await?.word().load(Ordering::Acquire);
        Ok(if cur & BARRIER_BROKEN != 0 {
            0
        } else {
            cur & BARRIER_COUNT
        })
    }

    /// Whether the barrier is broken.
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    ///
    /// # Errors
    /// As [`Barrier::abort`].
    pub async fn is_broken(&self) -> Result<bool> {
        let cur = self.place().await?.word().load(Ordering::Acquire);
        Ok(cur & BARRIER_BROKEN != 0)
    }
}

/// How round `gen` ended, seen in `cur`: `Some(true)` tripped, `Some(false)` broken or reset,
/// `None` still open. (A round tripped and then reset before this waiter looked reads as
/// reset: the waiter hears `BrokenBarrier`, as a waiter of the reset round would.)
fn ended_well(cur: u32, gen: u32) -> Option<bool> {
    if barrier_gen(cur) != gen {
        let next = (gen.wrapping_add(1) << 15) & BARRIER_GEN;
        Some(cur & BARRIER_GEN == next && cur & BARRIER_RESET == 0)
    } else if cur & BARRIER_BROKEN != 0 {
        Some(false)
    } else {
        None
    }
}

/// Sleeps until round `gen` ends: `Some(Ok(tripped))`, or `None` when `deadline` came first.
async fn released(place: &Place, gen: u32, deadline: Option<Instant>) -> Option<Result<bool>> {
    let word = place.word();
    loop {
        let cur = word.load(Ordering::Acquire);
        if let Some(tripped) = ended_well(cur, gen) {
            return Some(Ok(tripped));
        }
        let parked = park(place, cur);
        let slept = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, parked).await.ok()?,
            None => parked.await,
        };
        if let Err(e) = slept {
            return Some(Err(e));
        }
    }
}
