//! The lock word: what `sync::Lock` and the guards of `shm::Value`/`Array` stand on, and the
//! place and the waiting that the other primitives of `sync` share ([`SyncWord`], [`park`]).
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
//! The thread only sleeps; it never takes the lock. Dropping a waiting acquire marks its sleep
//! cancelled and wakes every sleeper on the word (each checks again and sleeps again if it
//! must), which ends the dropped one's thread; nothing was taken, so nothing is lost. A
//! cancelled sleep whose thread was woken by a release (`FUTEX_WAKE` of one) passes that
//! wake-up on to another sleeper, so a dropped waiter never swallows one; and a thread that
//! went to sleep just after its cancellation's wake-up looks at its flag again within
//! [`RECHECK`].
//!
//! # Death
//! The word names its holder, and the host knows every process's pid (each says it when it
//! locates a lock). When a process's connection to the root ends, the host releases each word
//! that names it, sets the poisoned bit and wakes every sleeper (`release_dead`).

use super::handle::Handle;
use super::objects::lock_arena;
use super::objects::word::{try_lock, unlock, HOLDER, WAITERS};
use crate::error::{Error, Result};
use crate::protocol::{Answer, LockOp, LockReply, LockSpec, OpReply, Spec};
use crate::transport::segment::{futex_wait, futex_wake, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Spins of the CPU between two looks at a contended word, and how many looks before sleeping.
const SPINS: u32 = 64;
const LOOKS: u32 = 8;

/// How long a sleeping thread sleeps before it looks whether its waiter was dropped (only
/// matters when the drop's wake-up came before the thread fell asleep).
const RECHECK: Duration = Duration::from_secs(1);

/// The arenas this process has mapped, by number (a process belongs to one root).
static MAPPED: Mutex<Option<HashMap<u32, Shared>>> = Mutex::new(None);

/// Where a primitive's word is, in this process.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    segment: Shared,
    index: usize,
    /// This process's own word (semaphores and barriers), as `objects/word.rs` says.
    own: Option<(Shared, usize)>,
    /// This process's pid, as the word records it (`getpid` is a syscall, which the
    /// uncontended path must not make). A place is made in the process that uses it.
    pid: u32,
}

impl Place {
    /// The primitive's word.
    pub(crate) fn word(&self) -> &AtomicU32 {
        self.segment.word(self.index)
    }

    /// This process's own word, for the kinds that have one (a word of nobody's otherwise).
    pub(crate) fn own(&self) -> &AtomicU32 {
        match &self.own {
            Some((segment, index)) => segment.word(*index),
            None => self.segment.word(self.index),
        }
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

/// A handle to a primitive's word: what the user-facing primitives wrap. `S` is its shape.
#[derive(Debug)]
pub(crate) struct SyncWord<S> {
    handle: Handle<S>,
    place: OnceCell<Place>,
}

/// A handle to a lock word.
pub(crate) type LockWord = SyncWord<LockSpec>;

impl<S: Copy + Into<Spec>> SyncWord<S> {
    /// A new primitive of shape `spec` (its word is made by the host on first use).
    pub(crate) fn with_spec(spec: S) -> Self {
        SyncWord {
            handle: Handle::new(spec),
            place: OnceCell::new(),
        }
    }

    /// The primitive's shape.
    pub(crate) fn spec(&self) -> S {
        self.handle.spec()
    }

    /// Where the word is, if this handle knows already (no I/O).
    pub(crate) fn placed(&self) -> Option<&Place> {
        self.place.get()
    }

    /// Where the word is: asked of the host once per handle.
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub(crate) async fn place(&self) -> Result<&Place> {
        self.place
            .get_or_try_init(|| async {
                let pid = std::process::id();
                let reply = self.handle.call(LockOp::Locate { pid }).await?;
                let (arena, index, own) = match reply.answer {
                    Answer::Op(OpReply::Lock(LockReply::Word { arena, index })) => {
                        (arena, index, None)
                    }
                    Answer::Op(OpReply::Lock(LockReply::Words {
                        arena,
                        index,
                        own_arena,
                        own_index,
                    })) => (arena, index, Some((own_arena, own_index))),
                    answer => {
                        return Err(Error::Protocol(format!(
                            "the root answered {answer:?} to a lock's locate"
                        )))
                    }
                };
                let segment = self.arena(arena).await?;
                let own = match own {
                    Some((arena, index)) => Some((self.arena(arena).await?, index as usize)),
                    None => None,
                };
                Ok(Place {
                    segment,
                    index: index as usize,
                    own,
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
}

impl LockWord {
    /// A new lock (its word is made by the host on first use).
    pub(crate) fn new() -> Self {
        Self::with_spec(LockSpec)
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
        let poisoned = take(
            place,
            |contended| try_lock(word, pid, contended),
            |cur| cur & HOLDER != 0,
        )
        .await?;
        Ok(Held { word, poisoned })
    }
}

/// Takes what `try_take` takes from the word at `place`, waiting as long as it takes: a few
/// looks with a spin between them, then sleeps (with the waiters bit set) while `blocked` says
/// the word's value cannot be taken. `try_take(contended)` keeps the waiters bit set when
/// `contended` (the caller has slept, so others may sleep behind it). Cancel-safe: nothing is
/// taken unless it returns.
///
/// # Errors
/// `Io` when the runtime cannot run the sleeping thread.
pub(crate) async fn take<T>(
    place: &Place,
    mut try_take: impl FnMut(bool) -> Option<T>,
    blocked: impl Fn(u32) -> bool,
) -> Result<T> {
    let word = place.word();
    for look in 0..LOOKS {
        if let Some(taken) = try_take(false) {
            return Ok(taken);
        }
        for _ in 0..SPINS << look.min(4) {
            std::hint::spin_loop();
        }
        // The holder may be a task of this very runtime.
        tokio::task::yield_now().await;
    }
    loop {
        let cur = word.load(Ordering::Relaxed);
        if !blocked(cur) {
            if let Some(taken) = try_take(true) {
                return Ok(taken);
            }
            continue;
        }
        let Some(expected) = mark_waiting(word, cur) else {
            continue;
        };
        park(place, expected).await?;
        if let Some(taken) = try_take(true) {
            return Ok(taken);
        }
    }
}

/// Sets the waiters bit of `word`, which holds `cur`; the value to sleep on, or `None` if the
/// word changed meanwhile (look again).
pub(crate) fn mark_waiting(word: &AtomicU32, cur: u32) -> Option<u32> {
    let expected = cur | WAITERS;
    (cur == expected
        || word
            .compare_exchange(cur, expected, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok())
    .then_some(expected)
}

/// Sleeps while the word at `place` holds `expected`, on a blocking-pool thread, until a
/// `FUTEX_WAKE` (or the value was already another). Returns when the thread woke; the caller
/// looks at the word again. Cancel-safe: dropped early, it wakes the word's sleepers so its
/// thread ends, and its thread passes on a wake-up it may have taken meanwhile.
///
/// # Errors
/// `Io` when the runtime cannot run the sleeping thread.
pub(crate) async fn park(place: &Place, expected: u32) -> Result<()> {
    struct Parked<'a> {
        place: &'a Place,
        cancelled: Arc<AtomicBool>,
        done: bool,
    }
    impl Drop for Parked<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.cancelled.store(true, Ordering::SeqCst);
                futex_wake(self.place.word(), i32::MAX);
            }
        }
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut parked = Parked {
        place,
        cancelled: Arc::clone(&cancelled),
        done: false,
    };
    let owned = place.clone();
    tokio::task::spawn_blocking(move || {
        let word = owned.word();
        while !cancelled.load(Ordering::SeqCst) && word.load(Ordering::Acquire) == expected {
            futex_wait(word, expected, Some(RECHECK));
        }
        if cancelled.load(Ordering::SeqCst) {
            // This thread may have taken a wake-up meant for a waiter still waiting.
            futex_wake(word, 1);
        }
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    parked.done = true;
    Ok(())
}

impl<S: Copy> Clone for SyncWord<S> {
    fn clone(&self) -> Self {
        let place = OnceCell::new();
        if let Some(p) = self.place.get() {
            let _ = place.set(p.clone());
        }
        SyncWord {
            handle: self.handle.clone(),
            place,
        }
    }
}

impl<S: Serialize + Copy> Serialize for SyncWord<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, S: Deserialize<'de>> Deserialize<'de> for SyncWord<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SyncWord {
            handle: Handle::deserialize(d)?,
            place: OnceCell::new(),
        })
    }
}
