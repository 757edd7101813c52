//! Port of the classic producer/consumer over a `multiprocessing.Queue`:
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def producer(q, n):
//!     for i in range(n):
//!         q.put(i * i)
//!         print(f'produced {i * i}')
//!     q.put(None)  # sentinel: no more items
//!
//! def consumer(q):
//!     total = 0
//!     while (item := q.get()) is not None:
//!         print(f'consumed {item}')
//!         total += item
//!     return total
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     c = Process(target=consumer, args=(q,)); c.start()
//!     p = Process(target=producer, args=(q, 10)); p.start()
//!     p.join(); c.join()
//! ```
//!
//! The queue is created in the main process and handed to both children as an entry argument;
//! `None` is the sentinel, as in Python (`Option<u64>` here). The consumer's total comes back
//! through `join`, which Python's `Process` cannot do.
//!
//! Run with `cargo run --release --example queue_producer_consumer`.

use multiprocessing::{entry, process_main, Process, Queue};

#[entry]
async fn producer(q: Queue<Option<u64>>, n: u64) -> multiprocessing::Result<()> {
    for i in 0..n {
        q.put(Some(i * i)).await?;
        println!("produced {}", i * i);
    }
    q.put(None).await?;
    Ok(())
}

#[entry]
async fn consumer(q: Queue<Option<u64>>) -> multiprocessing::Result<u64> {
    let mut total = 0;
    while let Some(item) = q.get().await? {
        println!("consumed {item}");
        total += item;
    }
    Ok(total)
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let q = Queue::new();
    let c = Process::spawn(consumer, q.clone()).await?;
    let p = Process::spawn(producer, (q.clone(), 10)).await?;
    p.join().await??;
    let total = c.join().await??;
    println!("consumer's total: {total}");
    assert_eq!(total, (0..10).map(|i| i * i).sum::<u64>());
    assert!(
        q.is_empty().await?,
        "the sentinel was taken, nothing is left"
    );
    Ok(())
}
