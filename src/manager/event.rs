//! [`ManagerEvent`]: a proxy to an event hosted by the manager.

use super::proxy::{proxy_impls, Proxy};
use super::Host;
use crate::error::{Error, Result};
use crate::protocol::{EventOp, EventSpec, Wait};
use std::time::Duration;

/// A flag at the manager's host that processes set, clear and wait for, made by
/// [`Manager::event`](super::Manager::event): Python's `manager.Event()`. Setting it wakes
/// every waiter. Like [`ManagerLock`](super::ManagerLock) it reaches processes on other
/// machines through a remote manager; each call is one round trip to the host.
///
/// `Clone + Serialize + Deserialize`, like every proxy; freed with the last proxy in the tree.
///
/// ```no_run
/// # async fn demo() -> multiprocessing::Result<()> {
/// let m = multiprocessing::Manager::start().await?;
/// let ready = m.event();
/// ready.set().await?;
/// ready.wait().await?;
/// assert!(ready.is_set().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ManagerEvent {
    proxy: Proxy<EventSpec>,
}

impl ManagerEvent {
    pub(super) fn new(host: &Host) -> Self {
        ManagerEvent {
            proxy: Proxy::new(EventSpec, "event", host),
        }
    }

    pub(super) fn named(name: &str, host: &Host) -> Self {
        ManagerEvent {
            proxy: Proxy::by_name(EventSpec, "event", name, host),
        }
    }

    /// Sets the flag and wakes every process waiting for it.
    ///
    /// # Errors
    /// `Closed` when the host is gone; `NotLaunched` outside a launch (for the tree's
    /// manager).
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the flag may still be set.
    pub async fn set(&self) -> Result<()> {
        self.proxy.done(EventOp::Set, Vec::new()).await
    }

    /// Clears the flag.
    ///
    /// # Errors
    /// As [`ManagerEvent::set`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the flag may still be cleared.
    pub async fn clear(&self) -> Result<()> {
        self.proxy.done(EventOp::Clear, Vec::new()).await
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    /// As [`ManagerEvent::set`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn is_set(&self) -> Result<bool> {
        Ok(self.proxy.number(EventOp::IsSet, Vec::new()).await? == 1)
    }

    /// Waits until the flag is set (returns at once if it is).
    ///
    /// # Errors
    /// As [`ManagerEvent::set`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped, the wait is withdrawn at the host.
    pub async fn wait(&self) -> Result<()> {
        self.proxy
            .number(
                EventOp::Wait {
                    wait: Wait::Forever,
                },
                Vec::new(),
            )
            .await
            .map(drop)
    }

    /// Waits at most `timeout` (measured by the host) for the flag; returns whether it was
    /// set (Python's `wait(timeout)`).
    ///
    /// # Errors
    /// As [`ManagerEvent::set`].
    ///
    /// # Cancel safety
    /// As [`ManagerEvent::wait`].
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        let wait = Wait::Micros(micros);
        match self.proxy.number(EventOp::Wait { wait }, Vec::new()).await {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

proxy_impls!(ManagerEvent, "event");
