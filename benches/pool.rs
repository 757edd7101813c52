//! `Pool` on the workloads of `../shared/bench/bench_mp.py`'s groups `pool_startup`, `pool_map`,
//! `pool_apply_latency` and `large_payload`, printed as JSON lines in the same shape (median,
//! min, max over the repetitions) so `benches/compare.sh` can set them beside Python's.
//!
//! `cargo bench --bench pool` (add `-- --quick` for fewer repetitions).

use futures::StreamExt;
use multiprocessing::{entry, process_main, Pool};
use serde_bytes::ByteBuf;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::{emit, repeat};

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

/// Never returns: a stuck task, for the timeout cases.
#[entry]
fn stuck() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[entry]
fn length(data: ByteBuf) -> u64 {
    data.len() as u64
}

/// The same with a plain `Vec<u8>`, as a user who never heard of `serde_bytes` writes it.
#[entry]
fn length_vec(data: Vec<u8>) -> u64 {
    data.len() as u64
}

/// Resident memory of a process, in MB, from /proc.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 5 };

    let samples = repeat(reps, || async {
        let t0 = Instant::now();
        let pool = Pool::new(2).await?;
        pool.close();
        pool.join().await?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    })
    .await?;
    emit(
        "pool2_startup_shutdown[default]",
        "ms",
        "lower",
        samples,
        "Pool::new(2); close(); join()",
    );

    let pool = Pool::new(2).await?;

    let samples = repeat(reps, || async {
        let n = 1_000_000u64;
        let t0 = Instant::now();
        let r = pool.map(square, 0..n).await?;
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(r[r.len() - 1], (n - 1) * (n - 1));
        Ok(n as f64 / dt)
    })
    .await?;
    emit(
        "pool2_map_default_chunksize",
        "items/s",
        "higher",
        samples,
        "map(square, 0..1_000_000), default chunksize (125,000)",
    );

    let samples = repeat(reps, || async {
        let n = 50_000u64;
        let t0 = Instant::now();
        let r = pool.map(square, 0..n).chunksize(1).await?;
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(r.len() as u64, n);
        Ok(n as f64 / dt)
    })
    .await?;
    emit(
        "pool2_map_chunksize1",
        "items/s",
        "higher",
        samples,
        "map(square, 0..50_000).chunksize(1)",
    );

    let samples = repeat(reps, || async {
        let n = 50_000u64;
        let t0 = Instant::now();
        let mut stream = pool.imap_unordered(square, 0..n).chunksize(1);
        let mut count = 0u64;
        while let Some(r) = stream.next().await {
            r?;
            count += 1;
        }
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(count, n);
        Ok(n as f64 / dt)
    })
    .await?;
    emit(
        "pool2_imap_unordered_chunksize1",
        "items/s",
        "higher",
        samples,
        "imap_unordered(square, 0..50_000).chunksize(1)",
    );

    let samples = repeat(reps, || async {
        let n = 10_000u64;
        let t0 = Instant::now();
        let results: Vec<_> = (0..n).map(|i| pool.apply_async(square, i)).collect();
        let out = futures::future::try_join_all(results).await?;
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(out[out.len() - 1], (n - 1) * (n - 1));
        Ok(n as f64 / dt)
    })
    .await?;
    emit(
        "pool2_apply_async_10k_concurrent",
        "tasks/s",
        "higher",
        samples,
        "10,000 apply_async in flight, then all awaited",
    );

    let samples = repeat(reps, || async {
        let mut lat = Vec::with_capacity(2_000);
        for i in 0..2_000u64 {
            let t0 = Instant::now();
            pool.apply(square, i).await?;
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        Ok(lat[lat.len() / 2])
    })
    .await?;
    emit(
        "pool2_apply_async_get_sequential_latency",
        "us",
        "lower",
        samples,
        "per rep: median latency of apply(square, i).await over 2,000 calls",
    );

    // The cost of `.timeout(d)` on the chunksize-1 map rate: runs with and without it
    // interleaved, so both see the same machine.
    let (mut plain, mut timed) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        for with_timeout in [false, true] {
            let n = 50_000u64;
            let t0 = Instant::now();
            let map = pool.map(square, 0..n).chunksize(1);
            let r = if with_timeout {
                map.timeout(std::time::Duration::from_secs(60)).await?
            } else {
                map.await?
            };
            let rate = n as f64 / t0.elapsed().as_secs_f64();
            assert_eq!(r.len() as u64, n);
            // The first round warms up.
            if rep > 0 {
                if with_timeout { &mut timed } else { &mut plain }.push(rate);
            }
        }
    }
    emit(
        "pool2_map_chunksize1_interleaved",
        "items/s",
        "higher",
        plain,
        "map(square, 0..50_000).chunksize(1), interleaved with the timed runs",
    );
    emit(
        "pool2_map_chunksize1_timeout",
        "items/s",
        "higher",
        timed,
        "map(square, 0..50_000).chunksize(1).timeout(60 s)",
    );

    // The copy is made before the clock starts: a program hands over a buffer it owns, as
    // Python's case pickles a `bytes` it already has.
    let data = ByteBuf::from(vec![1u8; 100 << 20]);
    let samples = repeat(reps, || time_len(&pool, length, data.clone())).await?;
    emit(
        "pool_apply_len_100MiB",
        "s",
        "lower",
        samples,
        "pool.apply(length, 100 MiB ByteBuf); the argument is moved in, not copied first",
    );
    let data = data.into_vec();
    let samples = repeat(reps, || time_len(&pool, length_vec, data.clone())).await?;
    emit(
        "pool_apply_len_100MiB_vec",
        "s",
        "lower",
        samples,
        "pool.apply(length_vec, 100 MiB plain Vec<u8>); the argument is moved in, not copied first",
    );
    drop(data);
    pool.terminate().await?;

    timeout_latency().await?;

    // Idle worker memory: a fresh pool whose workers have done nothing.
    let idle = Pool::new(2).await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rss: Vec<f64> = idle.worker_pids().await?.into_iter().map(rss_mb).collect();
    emit(
        "idle_pool_worker_rss",
        "MB",
        "lower",
        rss,
        "VmRSS of an idle pool worker, from /proc",
    );
    idle.terminate().await?;
    Ok(())
}

/// Seconds for `pool.apply(entry, arg)` of a 100 MiB argument whose length comes back.
async fn time_len<E>(pool: &Pool, entry: E, arg: E::Args) -> multiprocessing::Result<f64>
where
    E: multiprocessing::Entry<Output = u64>,
{
    let t0 = Instant::now();
    let n = pool.apply(entry, arg).await?;
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(n, 100 << 20);
    Ok(dt)
}

/// From a stuck task's deadline to its `Timeout` reaching the caller, and to its replacement
/// worker being up, over 20 timeouts on a pool of one worker. The deadline is taken as the
/// submission plus the timeout, so the figures include the submission-to-start time (tens of
/// microseconds on an idle worker).
async fn timeout_latency() -> multiprocessing::Result<()> {
    const LIMIT: std::time::Duration = std::time::Duration::from_millis(50);
    let pool = Pool::new(1).await?;
    let (mut failed, mut replaced) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let victim = pool.worker_pids().await?;
        let deadline = Instant::now() + LIMIT;
        let outcome = pool.apply(stuck, ()).timeout(LIMIT).await;
        let at_failure = Instant::now();
        assert!(matches!(outcome, Err(multiprocessing::Error::Timeout)));
        loop {
            let now = pool.worker_pids().await?;
            if now.len() == 1 && now != victim {
                break;
            }
            tokio::task::yield_now().await;
        }
        let at_ready = Instant::now();
        failed.push(at_failure.saturating_duration_since(deadline).as_secs_f64() * 1e3);
        replaced.push(at_ready.saturating_duration_since(deadline).as_secs_f64() * 1e3);
    }
    emit(
        "pool2_timeout_deadline_to_failure",
        "ms",
        "lower",
        failed,
        "20 x apply(stuck).timeout(50 ms): from the deadline to the Timeout at the caller",
    );
    emit(
        "pool2_timeout_deadline_to_replacement",
        "ms",
        "lower",
        replaced,
        "20 x apply(stuck).timeout(50 ms): from the deadline to a new worker up",
    );
    pool.terminate().await
}
