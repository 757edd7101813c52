//! [`Lock`]: an async, cross-process mutex with an RAII guard.

use crate::error::{Error, Result};
use crate::hub::{Held, LockWord};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An async lock shared by processes: Python's `multiprocessing.Lock`.
///
/// `Lock::new()` is plain and infallible, as in Python; the lock's word is made in the root's
/// lock arena on the first acquire. A `Lock` is `Clone` (another handle to the same lock) and
/// `Serialize`/`Deserialize`: hand it to an entry, a pool task or a queue.
///
/// Acquiring a free lock and releasing it are atomic operations on a word in shared memory: no
/// message, no syscall. The first acquire through a handle asks the root's hub where the word
/// is (one round trip, none in the root).
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// let lock = multiprocessing::sync::Lock::new();
/// {
///     let _guard = lock.acquire().await?;
///     assert!(lock.try_acquire().await?.is_none());
/// }
/// assert!(lock.try_acquire().await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock(LockWord);

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

/// A held [`Lock`]; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct LockGuard<'a> {
    held: Held<'a>,
}

impl LockGuard<'_> {
    /// Whether the previous holder died holding the lock (and the hub released it). Only the
    /// first guard after such a death says so.
    pub fn is_poisoned(&self) -> bool {
        self.held.is_poisoned()
    }
}

impl Lock {
    /// A new, free lock.
    pub fn new() -> Lock {
        Lock(LockWord::new())
    }

    /// The lock's word (a condition waits on it).
    pub(crate) fn word(&self) -> &LockWord {
        &self.0
    }

    /// Waits until the lock is free and takes it.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped acquire has not taken the lock and leaves nothing behind (there is
    /// no queue place to lose; hand-off is not FIFO).
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn acquire(&self) -> Result<LockGuard<'_>> {
        Ok(LockGuard {
            held: self.0.acquire().await?,
        })
    }

    /// As [`Lock::acquire`], for at most `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Lock::acquire`].
    ///
    /// # Errors
    /// `Timeout` when the lock was not free in time; otherwise as [`Lock::acquire`].
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        tokio::time::timeout(timeout, self.acquire())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Takes the lock if it is free now, never waiting for it. `Ok(None)` when it is held.
    /// The first call on a handle may ask the root's hub where the lock is.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken unless it returns a guard.
    ///
    /// # Errors
    /// As [`Lock::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self.0.try_acquire().await?.map(|held| LockGuard { held }))
    }
}
