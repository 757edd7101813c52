//! Spawn-to-join latency of a no-op entry, and a 64 MiB round trip through a child.
//!
//! Prints one JSON object per case, in the shape of `../shared/bench/bench_mp.py` (median, min,
//! max over the samples), so `benches/compare.sh` can set them beside Python's figures.
//!
//! `cargo bench --bench spawn` (add `-- --quick` for fewer samples).

use multiprocessing::{entry, process_main, Process, StartMethod};
use serde_bytes::ByteBuf;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::emit;

#[entry]
fn noop() {}

#[entry]
fn echo(data: ByteBuf) -> ByteBuf {
    data
}

#[entry]
fn length(data: ByteBuf) -> u64 {
    data.len() as u64
}

/// Times `reps` runs (after one warm-up) of `run` on a fresh clone of `size` bytes; `run` returns
/// the length it got back, which must be `size`.
async fn payload_samples<F, Fut>(
    reps: usize,
    size: usize,
    run: F,
) -> multiprocessing::Result<Vec<f64>>
where
    F: Fn(ByteBuf) -> Fut,
    Fut: std::future::Future<Output = multiprocessing::Result<usize>>,
{
    let data = ByteBuf::from(vec![1u8; size]);
    let mut samples = Vec::new();
    for i in 0..=reps {
        // The copy is made before the clock starts: a program hands over a buffer it owns.
        let arg = data.clone();
        let t0 = Instant::now();
        let len = run(arg).await?;
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(len, size);
        if i >= 1 {
            samples.push(dt);
        }
    }
    Ok(samples)
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 50 } else { 300 };

    for (method, case, note) in [
        (
            None,
            "spawn_latency[default]",
            "Process::spawn(noop, ()) -> join() returned, default start method (ForkServer in a #[process_main] program)",
        ),
        (
            Some(StartMethod::Spawn),
            "spawn_latency[spawn]",
            "Process::spawn(noop, ()) -> join() returned; re-exec of current_exe",
        ),
        (
            Some(StartMethod::ForkServer),
            "spawn_latency[forkserver]",
            "the same with start_method(ForkServer); the server starts during the warm-up",
        ),
    ] {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let t0 = Instant::now();
            let mut builder = Process::builder();
            if let Some(method) = method {
                builder = builder.start_method(method);
            }
            let p = builder.spawn(noop, ()).await?;
            p.join().await?;
            if i >= 5 {
                samples.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        emit(case, "ms", "lower", samples, note);
    }

    let reps = if quick { 3 } else { 7 };
    let samples = payload_samples(reps, 64 << 20, |data| async move {
        let back = Process::spawn(echo, data).await?.join().await?;
        Ok(back.len())
    })
    .await?;
    emit("process_roundtrip_64MiB", "s", "lower", samples, "spawn + 64 MiB bytes to the child + 64 MiB back + exit; the argument is moved in, not copied first");

    let samples = payload_samples(reps, 100 << 20, |data| async move {
        let len = Process::spawn(length, data).await?.join().await?;
        Ok(len as usize)
    })
    .await?;
    emit("process_len_100MiB", "s", "lower", samples, "spawn + 100 MiB bytes to a fresh child, its length back; Python's case uses a running pool worker");
    Ok(())
}
