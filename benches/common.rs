//! What the bench binaries share: repetitions, and the JSON line `compare.sh` reads.
// Each bench binary includes this file and uses part of it.
#![allow(dead_code)]

/// 5 repetitions, or 3 with `--quick`.
pub(crate) fn reps() -> usize {
    if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        5
    }
}

/// Prints one case as a JSON line: median, min and max of `samples`.
pub(crate) fn emit(case: &str, unit: &str, better: &str, mut samples: Vec<f64>, note: &str) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    println!(
        "{{\"impl\": \"multiprocessing-rs\", \"case\": \"{case}\", \"unit\": \"{unit}\", \"better\": \"{better}\", \"median\": {median:.6}, \"min\": {:.6}, \"max\": {:.6}, \"reps\": {n}, \"note\": \"{note}\"}}",
        samples[0],
        samples[n - 1],
    );
}

/// Runs `f` once to warm up, then `reps` times; returns what each run measured.
pub(crate) async fn repeat<F, Fut>(reps: usize, mut f: F) -> multiprocessing::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = multiprocessing::Result<f64>>,
{
    f().await?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        samples.push(f().await?);
    }
    Ok(samples)
}
