//! Actor calls beside `../shared/bench/bench_mp.py --only actor_proxy` (a `BaseManager`-
//! registered class reached through a proxy): sequential round trips from the process that
//! spawned the actor and from a grandchild (the direct path, never through the root), and
//! 10,000 calls in flight from one client. Printed as JSON lines in the shape Python's are.
//!
//! `cargo bench --bench actor` (add `-- --quick` for fewer repetitions).

use futures::future::join_all;
use multiprocessing::{actor, entry, process_main, Process};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[actor]
impl Counter {
    pub(crate) fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// Calls/s of `n` sequential calls.
async fn sequential(c: &CounterRef, n: u64) -> multiprocessing::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..n {
        c.incr(1).await?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Calls/s of `n` calls all in flight at once from this process.
async fn pipelined(c: &CounterRef, n: u64) -> multiprocessing::Result<f64> {
    let t0 = Instant::now();
    let replies = join_all((0..n).map(|_| c.incr(1))).await;
    let dt = t0.elapsed().as_secs_f64();
    for r in replies {
        r?;
    }
    Ok(n as f64 / dt)
}

/// In a child: starts a grandchild that measures `reps` runs of `n` sequential calls.
#[entry]
async fn via_child(c: CounterRef, n: u64, reps: usize) -> Vec<f64> {
    let p = Process::spawn(grandchild, (c, n, reps))
        .await
        .expect("spawn");
    p.join().await.expect("join")
}

#[entry]
async fn grandchild(c: CounterRef, n: u64, reps: usize) -> Vec<f64> {
    c.incr(0).await.expect("warm up");
    let mut samples = Vec::new();
    for _ in 0..reps {
        samples.push(sequential(&c, n).await.expect("calls"));
    }
    samples
}

#[path = "common.rs"]
mod common;

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    const SEQUENTIAL: u64 = 4_000;
    const IN_FLIGHT: u64 = 10_000;
    let reps = common::reps();
    let c = Counter { n: 0 }.builder().mailbox(16_384).spawn().await?;
    let samples = common::repeat(reps, || sequential(&c, SEQUENTIAL)).await?;
    common::emit(
        "actor_calls_sequential",
        "calls/s",
        "higher",
        samples,
        "one call at a time from the process that spawned the actor, 4000 per rep",
    );
    let samples = Process::spawn(via_child, (c.clone(), SEQUENTIAL, reps))
        .await?
        .join()
        .await?;
    common::emit(
        "actor_calls_sequential_grandchild",
        "calls/s",
        "higher",
        samples,
        "one call at a time from a grandchild (direct connection to the actor), 4000 per rep",
    );
    let samples = common::repeat(reps, || pipelined(&c, IN_FLIGHT)).await?;
    common::emit(
        "actor_calls_pipelined",
        "calls/s",
        "higher",
        samples,
        "10000 calls in flight at once from one client",
    );
    c.stop().await?;
    Ok(())
}
