//! A cross-process `Barrier` and `Event`: runners in four processes get ready at their own
//! pace, meet at a barrier (with `main`), and start together when `main` sets the `go` event.
//!
//! ```python
//! import random, time
//! from multiprocessing import Barrier, Event, Process
//!
//! def runner(i, ready, go):
//!     time.sleep(0.01 * i)                    # getting ready takes each its own time
//!     ready.wait()
//!     go.wait()
//!     print(f'runner {i} off')
//!
//! if __name__ == '__main__':
//!     ready, go = Barrier(5), Event()
//!     ps = [Process(target=runner, args=(i, ready, go)) for i in range(4)]
//!     for p in ps: p.start()
//!     ready.wait()
//!     print('everyone is ready')
//!     go.set()
//!     for p in ps: p.join()
//! ```
//!
//! Run with `cargo run --release --example sync_barrier`.

use multiprocessing::sync::{Barrier, Event};
use multiprocessing::{entry, process_main, Process};
use std::time::Duration;

/// Gets ready, waits for everyone at `ready`, then for `go`; returns its index at the barrier.
#[entry]
async fn runner(i: u32, ready: Barrier, go: Event) -> multiprocessing::Result<u32> {
    tokio::time::sleep(Duration::from_millis(10 * u64::from(i))).await;
    let arrival = ready.wait().await?;
    if arrival.is_leader() {
        println!("runner {i} was the last to be ready");
    }
    go.wait().await?;
    println!("runner {i} off");
    Ok(arrival.index())
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let (ready, go) = (Barrier::new(5), Event::new());
    let mut ps = Vec::new();
    for i in 0..4 {
        ps.push(Process::spawn(runner, (i, ready.clone(), go.clone())).await?);
    }
    let mine = ready.wait().await?;
    println!("everyone is ready");
    go.set().await?;
    let mut indices = vec![mine.index()];
    for p in ps {
        indices.push(p.join().await??);
    }
    indices.sort_unstable();
    println!("barrier indices: {indices:?}");
    assert_eq!(indices, [0, 1, 2, 3, 4]);
    Ok(())
}
