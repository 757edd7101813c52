//! Shared memory and `Lock` on the workloads of `../shared/bench/bench_mp.py`'s groups `lock`
//! and `large_payload`: uncontended acquire+release pairs, a counter incremented by two
//! processes under a lock (and with `fetch_add`), and 100 MiB handed to a pool worker as
//! `SharedBytes`. Printed as JSON lines in the same shape as Python's.
//!
//! `cargo bench --bench shm` (add `-- --quick` for fewer repetitions).

use multiprocessing::sync::Lock;
use multiprocessing::{entry, process_main, Pool, Process, Queue, SharedBytes, Value};
use std::time::Instant;

const MIB: usize = 1 << 20;

/// Says it is ready, waits for "go", then does `n` increments: under the lock with load/store,
/// or with `fetch_add`.
#[entry]
async fn count(
    ready: Queue<()>,
    go: Queue<()>,
    lock: Lock,
    v: Value<i32>,
    n: u32,
    locked: bool,
) -> multiprocessing::Result<()> {
    // Map the lock's word before the clock starts, as Python's children have their lock.
    drop(lock.acquire().await?);
    ready.put(()).await?;
    go.get().await?;
    for _ in 0..n {
        if locked {
            let _g = lock.acquire().await?;
            v.store(v.load() + 1);
        } else {
            v.fetch_add(1);
        }
    }
    Ok(())
}

/// One repetition of the two-process counter: ops/s from "go" to both children joined.
async fn counter(n: u32, locked: bool) -> multiprocessing::Result<f64> {
    let (ready, go) = (Queue::new(), Queue::new());
    let (lock, v) = (Lock::new(), Value::new(0i32)?);
    let mut procs = Vec::new();
    for _ in 0..2 {
        let args = (
            ready.clone(),
            go.clone(),
            lock.clone(),
            v.clone(),
            n,
            locked,
        );
        procs.push(Process::spawn(count, args).await?);
    }
    for _ in 0..2 {
        ready.get().await?;
    }
    let t0 = Instant::now();
    go.put(()).await?;
    go.put(()).await?;
    for p in procs {
        p.join().await??;
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(v.load(), 2 * n as i32);
    Ok(f64::from(2 * n) / dt)
}

/// One repetition of uncontended pairs: acquire + drop in one process.
async fn uncontended(lock: &Lock, n: u32) -> multiprocessing::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..n {
        drop(lock.acquire().await?);
    }
    Ok(f64::from(n) / t0.elapsed().as_secs_f64())
}

#[entry]
fn length(bytes: SharedBytes) -> usize {
    bytes.len()
}

/// One repetition of the large payload: from the bytes in a `Vec` to the worker's reply.
async fn payload(pool: &Pool, data: &[u8]) -> multiprocessing::Result<f64> {
    let data = data.to_vec();
    let t0 = Instant::now();
    let bytes = SharedBytes::from_vec(data)?;
    let n = pool.apply(length, bytes).await?;
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(n, 100 * MIB);
    Ok(dt)
}

#[path = "common.rs"]
mod common;

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let reps = common::reps();
    let lock = Lock::new();
    let samples = common::repeat(reps, || uncontended(&lock, 1_000_000)).await?;
    common::emit(
        "lock_uncontended",
        "pairs/s",
        "higher",
        samples,
        "acquire().await + drop of the guard in one process, 1000000 per rep",
    );
    let samples = common::repeat(reps, || counter(100_000, true)).await?;
    common::emit(
        "lock_contended_counter",
        "ops/s",
        "higher",
        samples,
        "2 procs each 100000 x { lock; v.store(v.load() + 1) } on a Value<i32>; from go to both joined",
    );
    let samples = common::repeat(reps, || counter(100_000, false)).await?;
    common::emit(
        "value_fetch_add_counter",
        "ops/s",
        "higher",
        samples,
        "2 procs each 100000 x v.fetch_add(1) on a Value<i32>; from go to both joined",
    );
    let pool = Pool::new(2).await?;
    let data = vec![1u8; 100 * MIB];
    let samples = common::repeat(reps, || payload(&pool, &data)).await?;
    common::emit(
        "pool_apply_len_100MiB_shared_bytes",
        "s",
        "lower",
        samples,
        "SharedBytes::from_vec(100 MiB Vec) + pool.apply(len); payload one way, usize back",
    );
    Ok(())
}
