//! [`Condition`]: wait for a notification while a lock is released, across processes.

use super::{Lock, RLock};
use crate::error::Result;
use crate::hub::sync_word::{HOLDER, WAITERS};
use crate::hub::{park, Held, LockWord, Place, SyncWord};
use crate::protocol::SyncSpec;
use crate::transport::segment::futex_wake;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A condition variable shared by processes: Python's `multiprocessing.Condition`.
///
/// A condition is a lock (its own, or a [`Lock`] or [`RLock`] it shares) and a notification
/// counter, a word in the root's lock arena. [`Condition::acquire`] takes the lock and gives a
/// [`ConditionGuard`]; [`ConditionGuard::wait`] releases the lock, sleeps until a notification
/// and takes the lock again; [`ConditionGuard::notify`] and [`ConditionGuard::notify_all`] wake
/// waiters. Waiting and notifying are methods of the guard, so both happen with the lock held
/// (Python raises `RuntimeError` otherwise; here it does not compile). `Condition::new()` is
/// plain and infallible; a `Condition` is `Clone` and `Serialize`/`Deserialize`.
///
/// # No lost notification
/// A waiter reads the counter and sets its waiters bit while it still holds the lock, then
/// sleeps only while the counter is unchanged; a notify (which holds the lock) bumps the
/// counter, so a notify that comes between the release and the sleep makes the sleep return at
/// once. The notifier wakes the sleepers when it releases the lock (by dropping its guard or
/// waiting), so they find the lock free; should it die in between, the waiters see the moved
/// counter within a second (their sleep is bounded for that case). A waiter sleeps in the kernel (`FUTEX_WAIT` on a blocking-pool thread), so a waiter
/// that dies is no longer counted by the kernel, and `notify(n)` wakes `n` live ones; a waiter
/// that stopped waiting (timed out, dropped) passes on a wake-up it took.
///
/// # Fairness and spurious wake-ups
/// `notify(n)` wakes up to `n` sleepers in the kernel's order (first come first woken among
/// them), but a waiter woken for another reason (a sibling that gave up) that sees the counter
/// moved returns as well, so a notify may wake more than `n`; and a waiter that returns must
/// retake the lock, where a newcomer may come first. As in Python, check what you wait for in a
/// loop, which is what [`ConditionGuard::wait_for`] does.
///
/// # Owner death
/// The lock is a lock word: a process that dies holding it leaves it released and poisoned
/// ([`ConditionGuard::is_poisoned`]).
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::Condition;
/// use multiprocessing::Value;
/// let cond = Condition::new();
/// let ready = Value::new(0u32)?;
/// let waiter = {
///     let (cond, ready) = (cond.clone(), ready.clone());
///     tokio::spawn(async move {
///         let guard = cond.acquire().await?;
///         let _guard = guard.wait_for(|| ready.load() == 1).await?;
///         Ok::<(), multiprocessing::Error>(())
///     })
/// };
/// {
///     let guard = cond.acquire().await?;
///     ready.store(1);
///     guard.notify_all();
/// }
/// waiter.await.expect("the waiting task")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: LockWord,
    counter: SyncWord<SyncSpec>,
}

impl Default for Condition {
    fn default() -> Self {
        Condition::new()
    }
}

/// The held lock of a [`Condition`]; waits and notifies through it. Dropping it releases the
/// lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    counter: &'a Place,
    /// The lock; `None` only while waiting.
    held: Option<Held<'a>>,
    poisoned: bool,
    /// Sleepers to wake once the lock is released (see [`ConditionGuard::notify`]).
    wake: AtomicI32,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl Condition {
    /// A new condition over a lock of its own (Python's default is an `RLock`; here the
    /// guard is the owner, so re-entry is moot: wait and notify through the one guard).
    pub fn new() -> Condition {
        Condition::over(LockWord::new())
    }

    /// A new condition over `lock`: holding the condition is holding that lock, for every
    /// handle of it.
    pub fn with_lock(lock: &Lock) -> Condition {
        Condition::over(lock.word().clone())
    }

    /// A new condition over `lock` (taken at depth 1; [`RLock`]'s other levels are guards of
    /// their own, which `wait` cannot release).
    pub fn with_rlock(lock: &RLock) -> Condition {
        Condition::over(lock.word().clone())
    }

    fn over(lock: LockWord) -> Condition {
        Condition {
            lock,
            counter: SyncWord::with_spec(SyncSpec::Condition),
        }
    }

    /// Waits for the lock and takes it.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Lock::acquire`].
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn acquire(&self) -> Result<ConditionGuard<'_>> {
        let counter = self.counter.place().await?;
        let held = self.lock.acquire().await?;
        Ok(ConditionGuard {
            cond: self,
            counter,
            poisoned: held.is_poisoned(),
            held: Some(held),
            wake: AtomicI32::new(0),
        })
    }
}

impl<'a> ConditionGuard<'a> {
    /// Whether a holder of the lock died holding it since this guard's owner last took it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Wakes up to `n` waiters (see the type's "Fairness"). The notification counts at once;
    /// the sleepers are woken when this guard releases the lock (dropped, or waiting), so they
    /// do not wake only to find the lock still held.
    pub fn notify(&self, n: usize) {
        self.bump(false, i32::try_from(n).unwrap_or(i32::MAX));
    }

    /// Wakes every waiter, in every process.
    pub fn notify_all(&self) {
        self.bump(true, i32::MAX);
    }

    /// Moves the counter on and wakes `n` sleepers if any may sleep. `all` clears the waiters
    /// bit: every sleeper is woken, and each new waiter sets it again.
    fn bump(&self, all: bool, n: i32) {
        if n == 0 {
            return;
        }
        let word = self.counter.word();
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let keep = if all { 0 } else { cur & WAITERS };
            let new = ((cur & HOLDER).wrapping_add(1) & HOLDER) | keep;
            match word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur & WAITERS != 0 {
            let _ = self
                .wake
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some(w.saturating_add(n))
                });
        }
    }

    /// Releases the lock, then wakes the sleepers notified meanwhile.
    fn release(&mut self) {
        drop(self.held.take());
        let n = self.wake.swap(0, Ordering::Relaxed);
        if n > 0 {
            futex_wake(self.counter.word(), n);
        }
    }

    /// Releases the lock, waits for a notification, and takes the lock again.
    ///
    /// # Cancel safety
    /// Dropped while waiting, the guard is gone and the lock stays released; no notification
    /// is lost for other waiters.
    ///
    /// # Errors
    /// `Closed` when the root's hub is gone; `Io` when the runtime cannot run the sleeping
    /// thread.
    pub async fn wait(self) -> Result<ConditionGuard<'a>> {
        Ok(self.sleep(None).await?.0)
    }

    /// As [`ConditionGuard::wait`], for at most `timeout` (retaking the lock afterwards is not
    /// bounded). The flag is `false` when it timed out (Python's `wait` returns `False`).
    ///
    /// # Cancel safety
    /// As [`ConditionGuard::wait`].
    ///
    /// # Errors
    /// As [`ConditionGuard::wait`].
    pub async fn wait_timeout(self, timeout: Duration) -> Result<(ConditionGuard<'a>, bool)> {
        self.sleep(Some(Instant::now() + timeout)).await
    }

    /// Waits until `predicate` is true, checking it with the lock held: first at once, then
    /// after each wake-up.
    ///
    /// # Cancel safety
    /// As [`ConditionGuard::wait`].
    ///
    /// # Errors
    /// As [`ConditionGuard::wait`].
    pub async fn wait_for(self, predicate: impl FnMut() -> bool) -> Result<ConditionGuard<'a>> {
        Ok(self.sleep_until(None, predicate).await?.0)
    }

    /// As [`ConditionGuard::wait_for`], for at most `timeout` in all; the flag is the
    /// predicate's last value (`false` when time ran out first).
    ///
    /// # Cancel safety
    /// As [`ConditionGuard::wait`].
    ///
    /// # Errors
    /// As [`ConditionGuard::wait`].
    pub async fn wait_for_timeout(
        self,
        timeout: Duration,
        predicate: impl FnMut() -> bool,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        self.sleep_until(Some(Instant::now() + timeout), predicate)
            .await
    }

    async fn sleep_until(
        mut self,
        deadline: Option<Instant>,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        loop {
            if predicate() {
                return Ok((self, true));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((self, false));
            }
            self = self.sleep(deadline).await?.0;
        }
    }

    /// The wait: announce it while the lock is held, release, sleep while the counter is
    /// unchanged (until `deadline`), retake the lock. The flag says whether it was woken.
    async fn sleep(mut self, deadline: Option<Instant>) -> Result<(ConditionGuard<'a>, bool)> {
        let counter = self.counter;
        let word = counter.word();
        let seen = word.fetch_or(WAITERS, Ordering::AcqRel) | WAITERS;
        self.release();
        let mut woken = true;
        while word.load(Ordering::Acquire) == seen {
            let parked = park(counter, seen);
            let slept = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, parked).await.ok(),
                None => Some(parked.await),
            };
            match slept {
                Some(r) => r?,
                None => {
                    woken = word.load(Ordering::Acquire) != seen;
                    break;
                }
            }
        }
        let held = self.cond.lock.acquire().await?;
        self.poisoned |= held.is_poisoned();
        self.held = Some(held);
        Ok((self, woken))
    }
}
