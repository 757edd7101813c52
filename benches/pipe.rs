//! Pipes between a parent and a child, as `../shared/bench/bench_mp.py`'s `bench_pipe` measures
//! them: ping-pong round trips, 1 MiB `send_bytes` throughput, small-message throughput.
//!
//! Each repetition starts a child with one end of a `pipe()`, waits for its "ready", then times
//! the workload after sending "go" (spawn is not timed), as the Python case does. Prints one JSON
//! object per case, like the other benches.
//!
//! `cargo bench --bench pipe` (add `-- --quick` for fewer repetitions).

use multiprocessing::{entry, pipe, process_main, Connection, Process};
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::emit;

const PINGPONG: u8 = 0;
const BYTES: u8 = 1;
const SMALL: u8 = 2;
const MIB: usize = 1 << 20;

/// Python's `_pipe_child`: "ready", wait for "go", then the workload. Ready and go are the value
/// 0 (the connection carries integers).
#[entry]
async fn pipe_child(conn: Connection<u64>, mode: u8, n: u64, size: usize) {
    conn.send(0).await.expect("ready");
    conn.recv().await.expect("go");
    match mode {
        PINGPONG => {
            for _ in 0..n {
                let v = conn.recv().await.expect("ping");
                conn.send(v).await.expect("pong");
            }
        }
        BYTES => {
            let payload = vec![b'x'; size];
            for _ in 0..n {
                conn.send_bytes(&payload).await.expect("send_bytes");
            }
        }
        _ => {
            for i in 0..n {
                conn.send(i).await.expect("send");
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// One repetition: Python's `_pipe_run`.
async fn run(mode: u8, n: u64, size: usize) -> multiprocessing::Result<f64> {
    let (parent, child) = pipe::<u64>()?;
    let p = Process::spawn(pipe_child, (child, mode, n, size)).await?;
    assert_eq!(parent.recv().await?, 0);
    let result = match mode {
        PINGPONG => {
            parent.send(0).await?;
            let mut lat = Vec::with_capacity(n as usize);
            for i in 0..n {
                let t0 = Instant::now();
                parent.send(i).await?;
                let back = parent.recv().await?;
                lat.push(t0.elapsed().as_secs_f64());
                assert_eq!(back, i);
            }
            median(lat) * 1e6
        }
        BYTES => {
            let t0 = Instant::now();
            parent.send(0).await?;
            let mut total = 0;
            for _ in 0..n {
                total += parent.recv_bytes().await?.len();
            }
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(total, n as usize * size);
            total as f64 / dt / 1e9
        }
        _ => {
            let t0 = Instant::now();
            parent.send(0).await?;
            for _ in 0..n {
                parent.recv().await?;
            }
            n as f64 / t0.elapsed().as_secs_f64()
        }
    };
    p.join().await?;
    Ok(result)
}

/// Receives `n` messages after "go" (from its parent), then says how long they took, in
/// seconds: the receiving half of the child-to-child case.
#[entry]
async fn pipe_receiver(conn: Connection<u64>, control: Connection<u64>, n: u64) -> f64 {
    control.send(0).await.expect("ready");
    control.recv().await.expect("go");
    let t0 = Instant::now();
    for _ in 0..n {
        conn.recv().await.expect("recv");
    }
    t0.elapsed().as_secs_f64()
}

/// Sends `n` small messages after "go": the sending half of the child-to-child case.
#[entry]
async fn pipe_sender(conn: Connection<u64>, control: Connection<u64>, n: u64) {
    control.send(0).await.expect("ready");
    control.recv().await.expect("go");
    for i in 0..n {
        conn.send(i).await.expect("send");
    }
    conn.flush().await.expect("flush");
}

/// One repetition of the child-to-child case: the parent makes a pipe and hands one end to
/// each of two children; the messages go straight from one child to the other.
async fn child_to_child(n: u64) -> multiprocessing::Result<f64> {
    let (rx_end, tx_end) = pipe::<u64>()?;
    let (rx_control, rx_control_child) = pipe::<u64>()?;
    let (tx_control, tx_control_child) = pipe::<u64>()?;
    let receiver = Process::spawn(pipe_receiver, (rx_end, rx_control_child, n)).await?;
    let sender = Process::spawn(pipe_sender, (tx_end, tx_control_child, n)).await?;
    rx_control.recv().await?;
    tx_control.recv().await?;
    rx_control.send(1).await?;
    tx_control.send(1).await?;
    let secs = receiver.join().await?;
    sender.join().await?;
    Ok(n as f64 / secs)
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let reps = common::reps();
    emit(
        "pipe_pingpong_rtt",
        "us",
        "lower",
        common::repeat(reps, || run(PINGPONG, 10_000, 0)).await?,
        "per rep: median of per-round-trip latency, parent<->child via Connection send/recv (u64)",
    );
    emit(
        "pipe_bytes_1MiB_throughput",
        "GB/s",
        "higher",
        common::repeat(reps, || run(BYTES, 500, MIB)).await?,
        "child send_bytes -> parent recv_bytes, 500 x 1 MiB",
    );
    emit(
        "pipe_small_msgs_throughput",
        "msgs/s",
        "higher",
        common::repeat(reps, || run(SMALL, 200_000, 0)).await?,
        "child send(u64) -> parent recv(), 200,000 messages",
    );
    emit(
        "pipe_child_to_child_small_msgs",
        "msgs/s",
        "higher",
        common::repeat(reps, || child_to_child(200_000)).await?,
        "one child send(u64) -> another child recv() over a pipe the parent made and handed to both (direct, not relayed), 200,000 messages; timed in the receiver",
    );
    Ok(())
}
