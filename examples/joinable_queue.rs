//! Port of Python's `JoinableQueue` pattern: workers mark every item done, and producers wait
//! until all of their items have been handled.
//!
//! ```python
//! from multiprocessing import JoinableQueue, Process
//!
//! def worker(q):
//!     while True:
//!         item = q.get()
//!         print(f'worker handled {item}')
//!         q.task_done()
//!
//! def producer(q, name, n):
//!     for i in range(n):
//!         q.put(f'{name}-{i}')
//!     q.join()          # blocks until every item put has been marked done
//!     print(f'{name}: all items done')
//!
//! if __name__ == '__main__':
//!     q = JoinableQueue()
//!     for _ in range(3):
//!         Process(target=worker, args=(q,), daemon=True).start()
//!     ps = [Process(target=producer, args=(q, name, 5)) for name in ('a', 'b')]
//!     for p in ps: p.start()
//!     for p in ps: p.join()
//!     print('every item was handled')
//! ```
//!
//! The workers are daemons, as in Python: they loop forever and are stopped when `main`
//! returns. A `JoinableQueue` here also gives back, to the other workers, any item that a worker
//! took and had not marked done when it died.
//!
//! Run with `cargo run --release --example joinable_queue`.

use multiprocessing::{entry, process_main, JoinableQueue, Process};
use std::time::Duration;

#[entry]
async fn worker(q: JoinableQueue<String>) -> multiprocessing::Result<()> {
    let me = multiprocessing::current_process().name;
    loop {
        let item = q.get().await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        println!("{me} handled {item}");
        q.task_done().await?;
    }
}

#[entry]
async fn producer(q: JoinableQueue<String>, name: String, n: u32) -> multiprocessing::Result<()> {
    for i in 0..n {
        q.put(format!("{name}-{i}")).await?;
    }
    q.join().await?;
    println!("{name}: all items done");
    Ok(())
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let q = JoinableQueue::new();
    for _ in 0..3 {
        Process::builder()
            .daemon(true)
            .spawn(worker, q.clone())
            .await?;
    }
    let mut producers = Vec::new();
    for name in ["a", "b"] {
        producers.push(Process::spawn(producer, (q.clone(), name.to_string(), 5)).await?);
    }
    for p in producers {
        p.join().await??;
    }
    println!("every item was handled");
    Ok(())
}
