//! Helpers shared by the manager tests (`tests/manager_lock.rs`, `tests/faults_manager.rs`).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// Guards every await that would hang if the host lost a wake-up or a death went unheard: a
/// hang fails the test instead of stalling the suite (not a speed assertion).
pub const NO_HANG: Duration = Duration::from_secs(20);

/// `f`, or a panic naming `what` if it has not finished within [`NO_HANG`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}
