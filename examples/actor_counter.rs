//! One counter actor, called by pool tasks in several worker processes; the count ends exact.
//!
//! The state (`Counter`) lives in a child process of its own. Each pool task gets a
//! `CounterRef` as an argument and calls `incr` on it: the call goes straight from the worker
//! to the actor's process, and the actor runs one message at a time, so no increment is lost.
//! This is Ray's `@ray.remote class Counter` with `counter.incr.remote(1)`.
//!
//! Run with `cargo run --release --example actor_counter`.

use multiprocessing::{actor, entry, process_main, Pool};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[actor]
impl Counter {
    /// Adds `by` and returns the new count.
    pub(crate) fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The count.
    pub(crate) async fn get(&self) -> u64 {
        self.n
    }
}

/// A pool task: `times` increments of the shared counter; returns this worker's pid.
#[entry]
async fn bump(counter: CounterRef, times: u64) -> u32 {
    for _ in 0..times {
        counter.incr(1).await.expect("the counter actor is alive");
    }
    std::process::id()
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 250;
    let counter = Counter { n: 0 }.spawn().await?;
    let pool = Pool::new(4).await?;
    let tasks = (0..TASKS).map(|_| (counter.clone(), PER_TASK));
    let mut workers = pool.starmap(bump, tasks).await?;
    workers.sort_unstable();
    workers.dedup();
    let total = counter.get().await?;
    println!(
        "{TASKS} tasks in {} worker processes made {total} increments",
        workers.len()
    );
    assert_eq!(total, TASKS * PER_TASK);
    let last: Counter = counter.stop().await?;
    println!("final state: {last:?}");
    Ok(())
}
