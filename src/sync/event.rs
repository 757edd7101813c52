//! [`Event`]: a flag that processes set, clear and wait for.

use crate::error::{Error, Result};
use crate::hub::sync_word::{EVENT_GEN, EVENT_SET, WAITERS};
use crate::hub::{mark_waiting, park, SyncWord};
use crate::protocol::SyncSpec;
use crate::transport::segment::futex_wake;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A flag shared by processes that tasks wait for: Python's `multiprocessing.Event`.
///
/// `Event::new()` is plain and infallible; the event's word (a flag, a generation and a
/// waiters bit, in the root's lock arena) is made on first use. An `Event` is `Clone` and
/// `Serialize`/`Deserialize`: hand it to an entry, a pool task or a queue.
///
/// `set`, `clear` and `is_set` are atomic operations on the word (plus one `FUTEX_WAKE` when
/// someone sleeps); a waiter sleeps in the kernel on a blocking-pool thread, never polling. The
/// first operation through a handle asks the root's hub where the word is (one round trip).
///
/// # No lost wake-up
/// Each `set` of a clear event bumps the word's generation. A waiter remembers the generation
/// it started in and returns once the flag is set *or* the generation moved on, so a `set`
/// followed at once by a `clear` still wakes every task that was waiting, in every process
/// (as Python's `Event`, whose `set` notifies all waiters). A waiter that is about to sleep
/// while `set` runs finds the word changed and does not sleep.
///
/// # Fairness
/// `set` wakes every waiter; there is no order among them.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::sync::Event;
/// let ready = Event::new();
/// let waiter = {
///     let ready = ready.clone();
///     tokio::spawn(async move { ready.wait().await })
/// };
/// ready.set().await?;
/// waiter.await.expect("the waiting task")?;
/// assert!(ready.is_set().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event(SyncWord<SyncSpec>);

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Event {
        Event(SyncWord::with_spec(SyncSpec::Event))
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// # Cancel safety
    /// Cancel-safe: it waits only to locate the word (the first time), before anything changes.
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn set(&self) -> Result<()> {
        let word = self.0.place().await?.word();
        let mut cur = word.load(Ordering::Acquire);
        while cur & EVENT_SET == 0 {
            // A new generation, with the waiters bit cleared: everyone sleeping is woken now.
            let new = ((cur & EVENT_GEN).wrapping_add(2) & EVENT_GEN) | EVENT_SET;
            match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if cur & WAITERS != 0 {
                        futex_wake(word, i32::MAX);
                    }
                    break;
                }
                Err(now) => cur = now,
            }
        }
        Ok(())
    }

    /// Clears the flag; later waits wait for the next `set`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Event::set`].
    ///
    /// # Errors
    /// As [`Event::set`].
    pub async fn clear(&self) -> Result<()> {
        let word = self.0.place().await?.word();
        word.fetch_and(!EVENT_SET, Ordering::AcqRel);
        Ok(())
    }

    /// Whether the flag is set.
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    ///
    /// # Errors
    /// As [`Event::set`].
    pub async fn is_set(&self) -> Result<bool> {
        let word = self.0.place().await?.word();
        Ok(word.load(Ordering::Acquire) & EVENT_SET != 0)
    }

    /// Waits until the flag is set (returns at once if it is), or until a `set` happened since
    /// the call began even if the flag was cleared again meanwhile.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped wait leaves nothing behind and takes no wake-up from another.
    ///
    /// # Errors
    /// As [`Event::set`]; `Io` when the runtime cannot run the sleeping thread.
    pub async fn wait(&self) -> Result<()> {
        let place = self.0.place().await?;
        let word = place.word();
        let mut cur = word.load(Ordering::Acquire);
        let gen = cur & EVENT_GEN;
        while cur & EVENT_SET == 0 && cur & EVENT_GEN == gen {
            if let Some(expected) = mark_waiting(word, cur) {
                park(place, expected).await?;
            }
            cur = word.load(Ordering::Acquire);
        }
        Ok(())
    }

    /// As [`Event::wait`], for at most `timeout`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Event::wait`].
    ///
    /// # Errors
    /// `Timeout` when the event was not set in time (where Python's `wait` returns `False`);
    /// otherwise as [`Event::wait`].
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.wait())
            .await
            .map_err(|_| Error::Timeout)?
    }
}
