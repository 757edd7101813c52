//! Cross-process synchronization: [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`],
//! [`Event`], [`Condition`] and [`Barrier`], each a word in shared memory with the same waiting
//! and the same death notice.
//!
//! Use these to order work between *processes*. Inside one process, `tokio::sync` is cheaper
//! and has more shapes; these cost the same when uncontended (an atomic operation on a word in
//! shared memory) but a contended wait is a futex sleep on a blocking-pool thread.
//!
//! # Compared with `tokio::sync`
//! - A [`Lock`] guards nothing by itself (as Python's `Lock`): it orders processes around data
//!   that lives elsewhere, in shared memory (`Value`, `Array`, `SharedMemory`) or in a file.
//!   `Value::lock()` / `Array::lock()` give a guard that derefs to the data.
//! - Hand-off is not FIFO: a newcomer may take a lock just released before the sleeper that was
//!   woken for it (as `std::sync::Mutex` on Linux). No sleeper is forgotten. The same holds for
//!   a semaphore's permits; an event's `set`, a barrier's last party and `notify_all` wake
//!   everyone at once; `notify(n)` wakes `n` in the kernel's order and may wake more (see
//!   [`Condition`]).
//! - An [`RLock`]'s owner is its guard, not a thread: [`RLockGuard::reenter`] takes it again.
//! - Every primitive is `Clone + Serialize + Deserialize` with a plain, infallible `new`; a
//!   handle's first operation in a process asks the root's hub where its word is (one round
//!   trip), which is why even `Event::is_set` is `async`. A waiter never blocks a runtime
//!   thread: it sleeps in the kernel on a blocking-pool thread.
//!
//! # Owner death and poisoning
//! A lock's word names the process that holds it. When a process dies (its connection to the
//! root's hub ends), the hub releases every lock it held and marks each poisoned; the next
//! acquire gets a guard whose [`LockGuard::is_poisoned`] is `true`, once, so the program can
//! repair what the dead process left half-written. Python's `Lock` stays held forever there
//! (cpython#88304). The release comes as soon as the hub hears of the death, which for a killed
//! process is at once (its socket closes with it).
//!
//! The other primitives: an [`RLock`] and a [`Condition`]'s lock are lock words, poisoned the
//! same way; the permits a dead process held through [`SemaphorePermit`]s come back, and the
//! next permit says [`SemaphorePermit::is_poisoned`]; a process that dies while waiting at a
//! [`Barrier`] breaks it ([`Error::BrokenBarrier`](crate::Error::BrokenBarrier) for every
//! waiter); a dead waiter of a [`Condition`] leaves the kernel's queue, so it takes no
//! notification; an [`Event`] holds nothing for anyone.
//!
//! # How it works
//! `src/sync/README.md` and `src/hub/lock_word.rs` describe the word, the waiting and the
//! hub's part.

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphorePermit};
