//! [`Semaphore`] and [`BoundedSemaphore`]: permits counted in a word, returned when their
//! holder dies.

use crate::error::{Error, Result};
use crate::hub::sync_word::{COUNT, POISONED, WAITERS};
use crate::hub::{take, Place, SyncWord};
use crate::protocol::SyncSpec;
use crate::transport::segment::futex_wake;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A counting semaphore shared by processes: Python's `multiprocessing.Semaphore`.
///
/// `Semaphore::new(n)` is plain and infallible; the semaphore's word (the count of free
/// permits, a waiters bit and a poisoned bit, in the root's lock arena) is made on first use.
/// A `Semaphore` is `Clone` and `Serialize`/`Deserialize`: hand it to an entry, a pool task or
/// a queue. At most 2³⁰ − 1 permits (a larger count fails the first operation).
///
/// Taking a free permit and giving it back are atomic operations on the word: no message, no
/// syscall (plus one `FUTEX_WAKE` when someone sleeps). The first operation through a handle
/// asks the root's hub where the word is (one round trip).
///
/// # Permits and their holders
/// [`Semaphore::acquire`] gives a [`SemaphorePermit`], which gives its permit back when
/// dropped. Python's style of acquiring in one place and releasing in another (any process) is
/// [`SemaphorePermit::forget`] then [`Semaphore::release`]; `release` without an acquire adds a
/// permit, as in Python (a [`BoundedSemaphore`] refuses to go above its initial count).
///
/// # Owner death
/// Each process records, in a word of its own that the host knows, how many permits it holds
/// through permits not yet dropped or forgotten. When the process dies, the host gives those
/// permits back, marks the semaphore poisoned and wakes every waiter: the next permit reports
/// [`SemaphorePermit::is_poisoned`], once. (A process killed in the two instructions between
/// taking a permit and recording it loses that one permit, as Python loses every one.)
///
/// # Fairness
/// Not FIFO, as [`Lock`](super::Lock): a released permit wakes one sleeper, and a newcomer may
/// take the permit first; no sleeper is forgotten.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::Semaphore;
/// let sem = Semaphore::new(2);
/// let a = sem.acquire().await?;
/// let _b = sem.acquire().await?;
/// assert!(sem.try_acquire().await?.is_none());
/// drop(a);
/// assert_eq!(sem.value().await?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Semaphore(SyncWord<SyncSpec>);

/// A semaphore that refuses to be released above its initial count: Python's
/// `multiprocessing.BoundedSemaphore`. Everything else is as [`Semaphore`].
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::BoundedSemaphore;
/// let sem = BoundedSemaphore::new(1);
/// assert!(sem.release().await.is_err());
/// sem.acquire().await?.forget();
/// sem.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundedSemaphore(Semaphore);

/// A permit of a [`Semaphore`]; dropping it gives the permit back.
#[must_use = "the permit is given back as soon as it is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    place: &'a Place,
    poisoned: bool,
}

impl SemaphorePermit<'_> {
    /// Whether permits of a process that died holding them were given back since the last
    /// permit was taken: what they guarded may be half-done. Only the first permit after such
    /// a death says so.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Keeps the permit taken without a guard (Python's `acquire()` alone): it goes back only
    /// through [`Semaphore::release`], from any process, and no longer counts as this
    /// process's if it dies.
    pub fn forget(self) {
        self.place.own().fetch_sub(1, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        // Forget the permit as ours before it is free: a death in between loses it rather
        // than giving it back twice.
        self.place.own().fetch_sub(1, Ordering::Relaxed);
        let _ = give(self.place, COUNT);
    }
}

/// Adds a permit to the word, unless it holds `limit` already; wakes a sleeper if one may
/// sleep. `false` when the word was at `limit`.
fn give(place: &Place, limit: u32) -> bool {
    let word = place.word();
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & COUNT >= limit {
            return false;
        }
        match word.compare_exchange_weak(cur, cur + 1, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    if cur & WAITERS != 0 {
        futex_wake(word, 1);
    }
    true
}

/// Takes a permit from the word if one is free; `Some(poisoned)` if taken. As the lock's
/// `try_lock`, a caller that slept keeps the waiters bit set.
fn try_take(place: &Place, contended: bool) -> Option<bool> {
    let word = place.word();
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & COUNT == 0 {
            return None;
        }
        let waiters = if contended { WAITERS } else { cur & WAITERS };
        let new = ((cur & COUNT) - 1) | waiters;
        match word.compare_exchange_weak(cur, new, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                place.own().fetch_add(1, Ordering::Relaxed);
                return Some(cur & POISONED != 0);
            }
            Err(now) => cur = now,
        }
    }
}

impl Semaphore {
    /// A new semaphore with `value` free permits.
    pub fn new(value: u32) -> Semaphore {
        Semaphore(SyncWord::with_spec(SyncSpec::Semaphore {
            value,
            bounded: false,
        }))
    }

    /// The initial count and whether it bounds `release`.
    fn shape(&self) -> (u32, bool) {
        match self.0.spec() {
            SyncSpec::Semaphore { value, bounded } => (value, bounded),
            _ => (0, false),
        }
    }

    /// Where the word is, once the count is known to fit it.
    async fn place(&self) -> Result<&Place> {
        let (value, _) = self.shape();
        if value > COUNT {
            return Err(Error::InvalidArgument(format!(
                "a semaphore of {value} permits (the most is {COUNT})"
            )));
        }
        self.0.place().await
    }

    /// Waits for a free permit and takes it.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped acquire has taken nothing and leaves nothing behind (there is no
    /// queue place to lose).
    ///
    /// # Errors
    /// `InvalidArgument` for a count above 2³⁰ − 1; `NotLaunched` outside a launch; `Closed`
    /// when the root's hub is gone; `Io` when the runtime cannot run the sleeping thread.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>> {
        // The uncontended path: one compare-and-swap once the word is known.
        if let Some(place) = self.0.placed() {
            if let Some(poisoned) = try_take(place, false) {
                return Ok(SemaphorePermit { place, poisoned });
            }
        }
        let place = self.place().await?;
        let poisoned = take(
            place,
            |contended| try_take(place, contended),
            |cur| cur & COUNT == 0,
        )
        .await?;
        Ok(SemaphorePermit { place, poisoned })
    }

    /// As [`Semaphore::acquire`], for at most `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Semaphore::acquire`].
    ///
    /// # Errors
    /// `Timeout` when no permit was free in time; otherwise as [`Semaphore::acquire`].
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit<'_>> {
        tokio::time::timeout(timeout, self.acquire())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Takes a permit if one is free now, never waiting. `Ok(None)` when none is.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken unless it returns a permit.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<SemaphorePermit<'_>>> {
        let place = self.place().await?;
        Ok(try_take(place, false).map(|poisoned| SemaphorePermit { place, poisoned }))
    }

    /// Adds a permit (Python's `release`): gives back one taken with
    /// [`SemaphorePermit::forget`], or raises the count.
    ///
    /// # Cancel safety
    /// Cancel-safe: it waits only to locate the word (the first time), before anything changes.
    ///
    /// # Errors
    /// `InvalidArgument` when the count is at its most already (a [`BoundedSemaphore`]'s
    /// initial count, Python's `ValueError`; 2³⁰ − 1 otherwise); otherwise as
    /// [`Semaphore::acquire`].
    pub async fn release(&self) -> Result<()> {
        let (value, bounded) = self.shape();
        let place = self.place().await?;
        let limit = if bounded { value } else { COUNT };
        if give(place, limit) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "semaphore released too many times (its count is at its most, {limit})"
            )))
        }
    }

    /// How many permits are free now (Python's `get_value`).
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub async fn value(&self) -> Result<u32> {
        let place = self.place().await?;
        Ok(place.word().load(Ordering::Acquire) & COUNT)
    }
}

impl BoundedSemaphore {
    /// A new bounded semaphore with `value` free permits, which is also its most.
    pub fn new(value: u32) -> BoundedSemaphore {
        BoundedSemaphore(Semaphore(SyncWord::with_spec(SyncSpec::Semaphore {
            value,
            bounded: true,
        })))
    }

    /// As [`Semaphore::acquire`].
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Semaphore::acquire`].
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>> {
        self.0.acquire().await
    }

    /// As [`Semaphore::acquire_timeout`].
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Semaphore::acquire`].
    ///
    /// # Errors
    /// As [`Semaphore::acquire_timeout`].
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit<'_>> {
        self.0.acquire_timeout(timeout).await
    }

    /// As [`Semaphore::try_acquire`].
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Semaphore::try_acquire`].
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<SemaphorePermit<'_>>> {
        self.0.try_acquire().await
    }

    /// Gives back a permit taken with [`SemaphorePermit::forget`].
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Semaphore::release`].
    ///
    /// # Errors
    /// `InvalidArgument` when every permit is free already (Python's `ValueError`); otherwise
    /// as [`Semaphore::acquire`].
    pub async fn release(&self) -> Result<()> {
        self.0.release().await
    }

    /// As [`Semaphore::value`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    pub async fn value(&self) -> Result<u32> {
        self.0.value().await
    }
}
