//! [`RLock`]: a lock its owner may take again, where the owner is the guard.

use crate::error::{Error, Result};
use crate::hub::{Held, LockWord};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A re-entrant lock shared by processes: Python's `multiprocessing.RLock`.
///
/// # Who the owner is
/// Python's `RLock` belongs to a thread, and the thread may take it again. Async code has no
/// such identity: a task moves between threads, and two tasks on one thread are two owners. So
/// the owner here is explicit: the [`RLockGuard`] that [`RLock::acquire`] returns. Taking the
/// lock again is [`RLockGuard::reenter`], which needs no waiting (the lock is already held)
/// and gives a guard that borrows the one it came from. Acquiring through the `RLock` itself
/// while holding it is *another* owner and waits, as it would in another process.
///
/// Because each level borrows the level below, the levels are released innermost first, and
/// releasing more times than acquired (Python's `RuntimeError`) cannot be written: the
/// compiler refuses it.
///
/// ```compile_fail
/// # async fn f(lock: multiprocessing::sync::RLock) -> multiprocessing::Result<()> {
/// let outer = lock.acquire().await?;
/// let inner = outer.reenter();
/// drop(outer); // error: `outer` is borrowed by `inner`
/// drop(inner);
/// # Ok(())
/// # }
/// ```
///
/// Everything else is as [`Lock`](super::Lock): the same word in the root's lock arena (the
/// depth lives in the guards, not in the word, so re-entering costs nothing), the same
/// poisoning when the holder dies, not FIFO. An `RLock` is `Clone` and
/// `Serialize`/`Deserialize`.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::RLock;
/// let lock = RLock::new();
/// let outer = lock.acquire().await?;
/// {
///     let inner = outer.reenter();
///     assert_eq!(inner.depth(), 2);
///     assert!(lock.try_acquire().await?.is_none());
/// }
/// drop(outer);
/// assert!(lock.try_acquire().await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RLock(LockWord);

impl Default for RLock {
    fn default() -> Self {
        RLock::new()
    }
}

/// One level of a held [`RLock`]; the outermost releases the lock when dropped.
#[must_use = "the level is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    /// The held word, in the outermost level only.
    _held: Option<Held<'a>>,
    depth: u32,
    poisoned: bool,
}

impl RLockGuard<'_> {
    /// Takes the lock again, one level deeper; never waits (this guard holds it).
    pub fn reenter(&self) -> RLockGuard<'_> {
        RLockGuard {
            _held: None,
            depth: self.depth + 1,
            poisoned: self.poisoned,
        }
    }

    /// How many levels are held, this one included (1 for the outermost).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether the previous holder died holding the lock (and the hub released it). Only the
    /// first acquire after such a death says so (and every level it re-enters).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl RLock {
    /// A new, free re-entrant lock.
    pub fn new() -> RLock {
        RLock(LockWord::new())
    }

    /// The lock's word (a condition waits on it).
    pub(crate) fn word(&self) -> &LockWord {
        &self.0
    }

    fn guard(held: Held<'_>) -> RLockGuard<'_> {
        RLockGuard {
            poisoned: held.is_poisoned(),
            _held: Some(held),
            depth: 1,
        }
    }

    /// Waits until no other owner holds the lock and takes it: a new owner, at depth 1.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Lock::acquire`](super::Lock::acquire).
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn acquire(&self) -> Result<RLockGuard<'_>> {
        Ok(Self::guard(self.0.acquire().await?))
    }

    /// As [`RLock::acquire`], for at most `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`RLock::acquire`].
    ///
    /// # Errors
    /// `Timeout` when the lock was not free in time; otherwise as [`RLock::acquire`].
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        tokio::time::timeout(timeout, self.acquire())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Takes the lock if no owner holds it now, never waiting. `Ok(None)` when one does.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken unless it returns a guard.
    ///
    /// # Errors
    /// As [`RLock::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<RLockGuard<'_>>> {
        Ok(self.0.try_acquire().await?.map(Self::guard))
    }
}
