//! The lock word: what `sync::Lock` and the guards of `shm::Value`/`Array` stand on.
//!
//! A lock is one 32-bit word in a lock arena the root hosts (`objects/lock.rs`):
//!
//! | bits | meaning |
//! |---|---|
//! | 0..30 | the holder's pid, 0 when free |
//! | 30 | someone may be sleeping on the word (a release must wake one) |
//! | 31 | poisoned: the last holder died holding it (cleared by the next acquire, which reports it) |
//!
//! Acquire is one compare-and-swap of a free word to the caller's pid; release is one swap to 0,
//! plus a `FUTEX_WAKE` only when the waiters bit was set. Neither sends a message: the hub is
//! asked once per lock handle and process, for where the word is.
//!
//! # Waiting
//! A contended acquire spins briefly (the holder of a short critical section in another process
//! is usually done within microseconds), then sets the waiters bit and sleeps in `FUTEX_WAIT`
//! on a thread of tokio's blocking pool, so no runtime worker is ever blocked, and the wake-up
//! is the kernel's, not a poll. Each release that sees the waiters bit wakes one sleeper, which
//! then competes with newcomers (bounded unfairness, as a futex mutex and `std::sync::Mutex`
//! are: a newcomer may barge in, but a woken waiter keeps the waiters bit set so no later waiter
//! is forgotten). The cost of a sleep is one hand-off to a blocking thread (some microseconds);
//! the hub is never involved, so the root is not a bottleneck for contended locks.
//!
//! # Cancellation
//! The thread only sleeps; it never takes the lock. Dropping a waiting acquire wakes every
//! sleeper on the word (each checks again and sleeps again if it must), which ends the dropped
//! one's thread; nothing was taken, so nothing is lost.
//!
//! # Death
//! The word names its holder, and the host knows every process's pid (each says it when it
//! locates a lock). When a process's connection to the root ends, the host releases each word
//! that names it, sets the poisoned bit and wakes every sleeper (`release_dead`).

use super::handle::Handle;
use super::objects::lock_arena;
use super::objects::word::{try_lock, unlock, HOLDER, WAITERS};
use crate::error::{Error, Result};
use crate::protocol::{Answer, LockOp, LockReply, LockSpec, OpReply};
use crate::transport::segment::{futex_wait, futex_wake, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::sync::OnceCell;

/// Spins of the CPU between two looks at a contended word, and how many looks before sleeping.
const SPINS: u32 = 64;
const LOOKS: u32 = 8;

/// The arenas this process has mapped, by number (a process belongs to one root).
static MAPPED: Mutex<Option<HashMap<u32, Shared>>> = Mutex::new(None);

/// Where a lock's word is, in this process.
#[derive(Debug, Clone)]
struct Place {
    segment: Shared,
    index: usize,
    /// This process's pid, as the word records it (`getpid` is a syscall, which the
    /// uncontended path must not make). A place is made in the process that uses it.
    pid: u32,
}

impl Place {
    fn word(&self) -> &AtomicU32 {
        self.segment.word(self.index)
    }
}

/// A held lock word; dropping it releases the word.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    word: &'a AtomicU32,
    poisoned: bool,
}

impl Held<'_> {
    /// Whether the previous holder died holding the word.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        unlock(self.word);
    }
}

/// A handle to a lock word: what the user-facing locks wrap.
#[derive(Debug)]
pub(crate) struct LockWord {
    handle: Handle<LockSpec>,
    place: OnceCell<Place>,
}

impl LockWord {
    /// A new lock (its word is made by the host on first use).
    pub(crate) fn new() -> Self {
        LockWord {
            handle: Handle::new(LockSpec),
            place: OnceCell::new(),
        }
    }

    /// Where the word is: asked of the host once per handle.
    async fn place(&self) -> Result<&Place> {
        self.place
            .get_or_try_init(|| async {
                let pid = std::process::id();
                let reply = self.handle.call(LockOp::Locate { pid }).await?;
                let Answer::Op(OpReply::Lock(LockReply::Word { arena, index })) = reply.answer
                else {
                    return Err(Error::Protocol(format!(
                        "the root answered {:?} to a lock's locate",
                        reply.answer
                    )));
                };
                let segment = self.arena(arena).await?;
                Ok(Place {
                    segment,
                    index: index as usize,
                    pid,
                })
            })
            .await
    }

    /// Lock arena `arena`, mapped in this process (asked of the host the first time).
    async fn arena(&self, arena: u32) -> Result<Shared> {
        if let Some(seg) = super::lock(&MAPPED)
            .get_or_insert_with(HashMap::new)
            .get(&arena)
        {
            return Ok(seg.clone());
        }
        // In the root (the only process that makes arenas) the arena is right here.
        let segment = match lock_arena(arena) {
            Some(seg) => seg,
            None => {
                let reply = self.handle.call(LockOp::Arena { arena }).await?;
                let body = reply.body.ok_or_else(|| {
                    Error::Protocol("the root sent a lock arena without its descriptor".into())
                })?;
                let bytes = body.to_vec();
                let seg = tokio::task::spawn_blocking(move || {
                    postcard::from_bytes::<Shared>(&bytes)
                        .map_err(|e| Error::decode("a lock arena", e))
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
                seg
            }
        };
        let mut mapped = super::lock(&MAPPED);
        let seg = mapped
            .get_or_insert_with(HashMap::new)
            .entry(arena)
            .or_insert(segment);
        Ok(seg.clone())
    }

    /// Takes the lock if it is free now; never waits for it (the first call on a handle may
    /// ask the host where the word is).
    pub(crate) async fn try_acquire(&self) -> Result<Option<Held<'_>>> {
        let place = self.place().await?;
        let word = place.word();
        Ok(try_lock(word, place.pid, false).map(|poisoned| Held { word, poisoned }))
    }

    /// Takes the lock, waiting as long as it takes. Cancel-safe (see the module docs).
    pub(crate) async fn acquire(&self) -> Result<Held<'_>> {
        // The uncontended path: one compare-and-swap once the word is known.
        if let Some(place) = self.place.get() {
            let word = place.word();
            if let Some(poisoned) = try_lock(word, place.pid, false) {
                return Ok(Held { word, poisoned });
            }
        }
        let place = self.place().await?;
        let (word, pid) = (place.word(), place.pid);
        let held = |poisoned| Held { word, poisoned };
        for look in 0..LOOKS {
            if let Some(poisoned) = try_lock(word, pid, false) {
                return Ok(held(poisoned));
            }
            for _ in 0..SPINS << look.min(4) {
                std::hint::spin_loop();
            }
            // The holder may be a task of this very runtime.
            tokio::task::yield_now().await;
        }
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur & HOLDER == 0 {
                if let Some(poisoned) = try_lock(word, pid, true) {
                    return Ok(held(poisoned));
                }
                continue;
            }
            let expected = cur | WAITERS;
            if cur != expected
                && word
                    .compare_exchange(cur, expected, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            sleep(place, expected).await?;
            if let Some(poisoned) = try_lock(word, pid, true) {
                return Ok(held(poisoned));
            }
        }
    }
}

/// Sleeps on the word while it holds `expected`, on a blocking-pool thread. Dropped early, it
/// wakes the word's sleepers so its thread ends.
async fn sleep(place: &Place, expected: u32) -> Result<()> {
    struct Sleeping<'a> {
        place: &'a Place,
        done: bool,
    }
    impl Drop for Sleeping<'_> {
        fn drop(&mut self) {
            if !self.done {
                futex_wake(self.place.word(), i32::MAX);
            }
        }
    }
    let mut sleeping = Sleeping { place, done: false };
    let owned = place.clone();
    tokio::task::spawn_blocking(move || futex_wait(owned.word(), expected, None))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    sleeping.done = true;
    Ok(())
}

impl Clone for LockWord {
    fn clone(&self) -> Self {
        let place = OnceCell::new();
        if let Some(p) = self.place.get() {
            let _ = place.set(p.clone());
        }
        LockWord {
            handle: self.handle.clone(),
            place,
        }
    }
}

impl Serialize for LockWord {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LockWord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(LockWord {
            handle: Handle::deserialize(d)?,
            place: OnceCell::new(),
        })
    }
}
