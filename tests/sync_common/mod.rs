//! Helpers shared by the synchronization tests (`tests/sync_*.rs`).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// How long a plain 100 ms `tokio::time::sleep` takes here and now: the timer's own lateness
/// on a loaded machine, which a timeout cannot beat. A timeout must end within 50 ms of that.
pub async fn timer_baseline() -> Duration {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    start.elapsed()
}

/// Compiles only for a type that is `Send + Sync`.
pub fn send_sync<T: Send + Sync>() {}

/// Compiles only for a value (a future, say) that is `Send`.
pub fn send<T: Send>(_: &T) {}
