//! The synchronization primitives beside their Python twins (`benches/sync_mp.py`, same
//! method): an `Event` set → wake latency across two processes, uncontended `Semaphore`
//! acquire+release pairs, and a two-process `Condition` ping-pong. Printed as JSON lines in
//! the shape of `../shared/bench/bench_mp.py`'s.
//!
//! `cargo bench --bench sync` (add `-- --quick` for fewer repetitions).

use multiprocessing::sync::{Condition, Event, Semaphore};
use multiprocessing::{entry, process_main, Process, Value};
use std::time::Instant;

/// The child of the event ping-pong: `n` times, wait for `ping`, clear it, set `pong`.
#[entry]
async fn event_echo(ping: Event, pong: Event, n: u32) -> multiprocessing::Result<()> {
    for _ in 0..n {
        ping.wait().await?;
        ping.clear().await?;
        pong.set().await?;
    }
    Ok(())
}

/// One repetition of the event ping-pong: microseconds per set → wake (half a round trip).
async fn event_latency(n: u32) -> multiprocessing::Result<f64> {
    let (ping, pong) = (Event::new(), Event::new());
    // Locate both words before the clock starts, as Python's events exist when made.
    pong.clear().await?;
    let child = Process::spawn(event_echo, (ping.clone(), pong.clone(), n + 1)).await?;
    // The first round warms the child up.
    ping.set().await?;
    pong.wait().await?;
    pong.clear().await?;
    let t0 = Instant::now();
    for _ in 0..n {
        ping.set().await?;
        pong.wait().await?;
        pong.clear().await?;
    }
    let dt = t0.elapsed().as_secs_f64();
    child.join().await??;
    Ok(dt * 1e6 / f64::from(2 * n))
}

/// One repetition of uncontended pairs: acquire + drop of the permit in one process.
async fn semaphore_pairs(sem: &Semaphore, n: u32) -> multiprocessing::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..n {
        drop(sem.acquire().await?);
    }
    Ok(f64::from(n) / t0.elapsed().as_secs_f64())
}

/// The child of the condition ping-pong: `n` times, wait for its turn (1), pass it back (0).
#[entry]
async fn condition_echo(cond: Condition, turn: Value<u32>, n: u32) -> multiprocessing::Result<()> {
    for _ in 0..n {
        let guard = cond.acquire().await?;
        let guard = guard.wait_for(|| turn.load() == 1).await?;
        turn.store(0);
        guard.notify(1);
    }
    Ok(())
}

/// One repetition of the condition ping-pong: round trips per second.
async fn condition_pingpong(n: u32) -> multiprocessing::Result<f64> {
    let (cond, turn) = (Condition::new(), Value::new(0u32)?);
    drop(cond.acquire().await?);
    let child = Process::spawn(condition_echo, (cond.clone(), turn.clone(), n + 1)).await?;
    let mut t0 = Instant::now();
    for i in 0..=n {
        if i == 1 {
            // The first round warms the child up.
            t0 = Instant::now();
        }
        let guard = cond.acquire().await?;
        turn.store(1);
        guard.notify(1);
        drop(guard.wait_for(|| turn.load() == 0).await?);
    }
    let dt = t0.elapsed().as_secs_f64();
    child.join().await??;
    Ok(f64::from(n) / dt)
}

#[path = "common.rs"]
mod common;

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let reps = common::reps();
    let samples = common::repeat(reps, || event_latency(2_000)).await?;
    common::emit(
        "event_set_wake_latency",
        "us",
        "lower",
        samples,
        "2 procs ping-pong 2000 rounds over two Events (wait, clear, set); per set -> wake = round trip / 2",
    );
    let sem = Semaphore::new(1);
    let samples = common::repeat(reps, || semaphore_pairs(&sem, 1_000_000)).await?;
    common::emit(
        "semaphore_uncontended",
        "pairs/s",
        "higher",
        samples,
        "acquire().await + drop of the permit in one process, 1000000 per rep",
    );
    let samples = common::repeat(reps, || condition_pingpong(2_000)).await?;
    common::emit(
        "condition_pingpong",
        "round trips/s",
        "higher",
        samples,
        "2 procs pass a turn in a Value 2000 times under one Condition (wait_for + notify(1))",
    );
    Ok(())
}
