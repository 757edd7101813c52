//! How a CPU-bound `Pool::map` scales with the number of workers: the twin of
//! `../shared/bench/bench_mp.py --only pool_scaling` (Python's `Pool.map` on the same tasks),
//! printed as JSON lines in the same shape, with each run's speed-up over one worker and its
//! efficiency against ideal (speed-up / workers).
//!
//! `cargo bench --bench scaling [-- --quick] [--processes 1,2,8] [--items N]`
//!
//! Each task spins on the clock for 1 ms or 10 ms, as Python's `_spin_ms` does; the default
//! chunk size (Python's, `items / (4 × workers)`). Items: 200 tasks of 10 ms and 2,000 of 1 ms
//! by default, as in the Python twin; `--items N` sets both (the 2,000 tasks of 10 ms
//! take 20 s a run on one worker). `--processes` defaults to 1, 2 and `cpu_count()`.

use multiprocessing::{entry, process_main, Pool};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

/// Spins for `ms` milliseconds of wall time; returns something the optimiser cannot drop.
#[entry]
fn spin(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut turns = 0u64;
    while Instant::now() < end {
        turns = std::hint::black_box(turns + 1);
    }
    turns & 1
}

/// The value after `flag` on the command line, if any.
fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).cloned()
}

/// Median of `samples`.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let mut counts: Vec<usize> = match arg("--processes") {
        Some(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        None => vec![1, 2, multiprocessing::cpu_count()],
    };
    counts.retain(|&n| n > 0);
    counts.sort_unstable();
    counts.dedup();
    let items_arg: Option<usize> = arg("--items").and_then(|n| n.parse().ok());
    let reps = if common::reps() == 3 { 2 } else { 3 };
    for (ms, default_items) in [(10u64, 200usize), (1, 2_000)] {
        let items = items_arg.unwrap_or(default_items);
        let mut base = None;
        for &n in &counts {
            let pool = Pool::new(n).await?;
            let mut samples = Vec::new();
            // One warm-up run, then the timed ones.
            for rep in 0..=reps {
                let t0 = Instant::now();
                let out = pool.map(spin, vec![ms; items]).await?;
                let rate = items as f64 / t0.elapsed().as_secs_f64();
                assert_eq!(out.len(), items);
                if rep > 0 {
                    samples.push(rate);
                }
            }
            pool.terminate().await?;
            report(ms, items, n, samples, &mut base);
        }
    }
    Ok(())
}

/// Prints one case as a JSON line with its speed-up over the first worker count measured
/// (one worker, unless `--processes` left it out) and its efficiency.
fn report(ms: u64, items: usize, n: usize, samples: Vec<f64>, base: &mut Option<(usize, f64)>) {
    let (min, max) = samples
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let reps = samples.len();
    let med = median(samples);
    let &mut (base_n, base_rate) = base.get_or_insert((n, med));
    let speedup = med / base_rate * base_n as f64;
    let efficiency = speedup / n as f64;
    println!(
        "{{\"impl\": \"multiprocessing-rs\", \"case\": \"pool_scaling_{ms}ms[{n}]\", \"unit\": \"items/s\", \"better\": \"higher\", \"median\": {med:.3}, \"min\": {min:.3}, \"max\": {max:.3}, \"reps\": {reps}, \"speedup_vs_1\": {speedup:.4}, \"efficiency\": {efficiency:.4}, \"params\": {{\"task_ms\": {ms}, \"items\": {items}, \"processes\": {n}}}, \"note\": \"Pool::new({n}).map of {items} tasks that each spin {ms} ms; default chunksize\"}}"
    );
}
