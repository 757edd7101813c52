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

/// Takes `n` items after "go"; the consumer half of the child-to-child case. Returns how many
/// came out of order (Python's twin checks the same).
#[entry]
async fn taker(ready: Queue<()>, go: Queue<()>, items: Queue<u64>, n: u64) -> u64 {
    ready.put(()).await.expect("ready");
    go.get().await.expect("go");
    let mut bad = 0;
    for i in 0..n {
        bad += u64::from(items.get().await.expect("get") != i);
    }
    bad
}

/// One repetition of the child-to-child case: a producer child puts `n` small items, a
/// consumer child takes them; every item goes through the root, which hosts the queue and
/// lends the consumer batches of items ahead of its gets.
async fn child_to_child(n: u64) -> multiprocessing::Result<f64> {
    let (ready, go) = (Queue::new(), Queue::new());
    let items = Queue::<u64>::new();
    let consumer = Process::spawn(taker, (ready.clone(), go.clone(), items.clone(), n)).await?;
    let feeder = Process::spawn(
        producer,
        (
            ready.clone(),
            go.clone(),
            items.clone(),
            Queue::<ByteBuf>::new(),
            n,
            0,
        ),
    )
    .await?;
    ready.get().await?;
    ready.get().await?;
    let t0 = Instant::now();
    go.put(()).await?;
    go.put(()).await?;
    let bad = consumer.join().await?;
    let dt = t0.elapsed().as_secs_f64();
    feeder.join().await?;
    assert_eq!(bad, 0, "items came out of order");
    Ok(n as f64 / dt)
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
    let samples = common::repeat(reps, || child_to_child(100_000)).await?;
    common::emit(
        "queue_child_to_child_small_msgs",
        "msgs/s",
        "higher",
        samples,
        "producer child -> consumer child through the root-hosted queue (items lent to the consumer in batches), 100000 u64 per rep, FIFO checked",
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
