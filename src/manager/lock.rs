//! [`ManagerLock`]: a proxy to a lock hosted by the manager.

use super::proxy::{proxy_impls, Proxy};
use super::Host;
use crate::error::{Error, Result};
use crate::protocol::{ManagedLockOp, ManagedLockSpec, Wait};
use std::time::Duration;

/// A lock held and waited for at the manager's host, made by
/// [`Manager::lock`](super::Manager::lock): Python's `manager.Lock()`.
///
/// Use it where [`sync::Lock`](crate::sync::Lock) cannot reach: between processes on different
/// machines through a remote manager ([`Manager::connect`](super::Manager::connect)). Within
/// one machine `sync::Lock` is far cheaper (an atomic operation in shared memory, against a
/// round trip to the host per acquire).
///
/// The holder is a *process*: a guard dropped in any task of the holding process releases it.
/// Waiters are served first come first served.
///
/// # Owner death and poisoning
/// When the holding process dies, or its connection to the host drops, the host releases the
/// lock and the next holder's guard says [`ManagerLockGuard::is_poisoned`], once. Python's
/// manager lock stays held forever there.
///
/// `Clone + Serialize + Deserialize`, like every proxy; freed with the last proxy in the tree.
///
/// ```no_run
/// # async fn demo() -> multiprocessing::Result<()> {
/// let m = multiprocessing::Manager::start().await?;
/// let lock = m.lock();
/// let guard = lock.acquire().await?;
/// assert!(!guard.is_poisoned());
/// drop(guard);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ManagerLock {
    proxy: Proxy<ManagedLockSpec>,
}

/// A held [`ManagerLock`]; dropping it releases the lock (a message to the host, not waited
/// for: this process's later requests come after it).
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct ManagerLockGuard<'a> {
    lock: &'a ManagerLock,
    poisoned: bool,
}

impl ManagerLockGuard<'_> {
    /// Whether the last holder's process died holding the lock (so what it guarded may be
    /// half-written). Told to one guard only.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl Drop for ManagerLockGuard<'_> {
    fn drop(&mut self) {
        // The acquire opened the handle in this process, so this is sent; if the host is
        // gone, so is the lock.
        self.lock.proxy.post_now(ManagedLockOp::Release);
    }
}

impl ManagerLock {
    pub(super) fn new(host: &Host) -> Self {
        ManagerLock {
            proxy: Proxy::new(ManagedLockSpec, "lock", host),
        }
    }

    pub(super) fn named(name: &str, host: &Host) -> Self {
        ManagerLock {
            proxy: Proxy::by_name(ManagedLockSpec, "lock", name, host),
        }
    }

    async fn acquire_with(&self, wait: Wait) -> Result<ManagerLockGuard<'_>> {
        let told = self
            .proxy
            .number(ManagedLockOp::Acquire { wait }, Vec::new())
            .await?;
        Ok(ManagerLockGuard {
            lock: self,
            poisoned: told == 1,
        })
    }

    /// Waits until the lock is free, then holds it.
    ///
    /// # Errors
    /// `Closed` when the host is gone (the root, or a remote manager's server); `NotLaunched`
    /// outside a launch (for the tree's manager).
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped while waiting, the place in line is given up, and a grant that
    /// arrived meanwhile is given back at once.
    pub async fn acquire(&self) -> Result<ManagerLockGuard<'_>> {
        self.acquire_with(Wait::Forever).await
    }

    /// As [`ManagerLock::acquire`], waiting at most `timeout` (measured by the host).
    ///
    /// # Errors
    /// `Timeout` when the lock was not free in time; as [`ManagerLock::acquire`].
    ///
    /// # Cancel safety
    /// As [`ManagerLock::acquire`].
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<ManagerLockGuard<'_>> {
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.acquire_with(Wait::Micros(micros)).await
    }

    /// Holds the lock if it is free now; `None` if another holds it (one round trip).
    ///
    /// # Errors
    /// As [`ManagerLock::acquire`].
    ///
    /// # Cancel safety
    /// As [`ManagerLock::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<ManagerLockGuard<'_>>> {
        match self.acquire_with(Wait::No).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

proxy_impls!(ManagerLock, "lock");
