//! `Queue` on the workloads of `../shared/bench/bench_mp.py`'s group `queue`: one producer child
//! puts items, the parent takes them, timed from the parent's "go" to its last `get`. Printed as
//! JSON lines in the same shape as Python's (median, min, max over the repetitions).
//!
//! `cargo bench --bench queue` (add `-- --quick` for fewer repetitions).

use multiprocessing::{entry, process_main, Process, Queue};
use serde_bytes::ByteBuf;
use std::time::Instant;

const MIB: usize = 1 << 20;

/// Says it is ready, waits for "go", then puts `n` small items or `n` blobs of `size` bytes.
#[entry]
async fn producer(
    ready: Queue<()>,
    go: Queue<()>,
    small: Queue<u64>,
    blobs: Queue<ByteBuf>,
    n: u64,
    size: usize,
) {
    ready.put(()).await.expect("ready");
    go.get().await.expect("go");
    if size == 0 {
        for i in 0..n {
            small.put(i).await.expect("put");
        }
    } else {
        let payload = vec![b'x'; size];
        for _ in 0..n {
            blobs
                .put(ByteBuf::from(payload.clone()))
                .await
                .expect("put");
        }
    }
}

/// One repetition: items/s for small items, GB/s for blobs.
async fn run(n: u64, size: usize) -> multiprocessing::Result<f64> {
    let (ready, go) = (Queue::new(), Queue::new());
    let (small, blobs) = (Queue::<u64>::new(), Queue::<ByteBuf>::new());
    let child = Process::spawn(
        producer,
        (
            ready.clone(),
            go.clone(),
            small.clone(),
            blobs.clone(),
            n,
            size,
        ),
    )
    .await?;
    ready.get().await?;
    let t0 = Instant::now();
    go.put(()).await?;
    let mut total = 0usize;
    if size == 0 {
        for _ in 0..n {
            small.get().await?;
        }
    } else {
        for _ in 0..n {
            total += blobs.get().await?.len();
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    child.join().await?;
    Ok(if size == 0 {
        n as f64 / dt
    } else {
        assert_eq!(total, n as usize * size);
        total as f64 / dt / 1e9
    })
}

#[path = "common.rs"]
mod common;

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let reps = common::reps();
    let samples = common::repeat(reps, || run(200_000, 0)).await?;
    common::emit(
        "queue_small_msgs_throughput",
        "msgs/s",
        "higher",
        samples,
        "1 producer process -> parent consumer, 200000 u64 per rep",
    );
    let samples = common::repeat(reps, || run(500, MIB)).await?;
    common::emit(
        "queue_bytes_1MiB_throughput",
        "GB/s",
        "higher",
        samples,
        "1 producer process -> parent consumer, 500 x 1 MiB per rep",
    );
    Ok(())
}
