//! Port of the `Pool` example from Python's `multiprocessing` docs:
//!
//! ```python
//! from multiprocessing import Pool, TimeoutError
//! import time
//! import os
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     # start 4 worker processes
//!     with Pool(processes=4) as pool:
//!
//!         # print "[0, 1, 4,..., 81]"
//!         print(pool.map(f, range(10)))
//!
//!         # print same numbers in arbitrary order
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!
//!         # evaluate "f(20)" asynchronously
//!         res = pool.apply_async(f, (20,))      # runs in *only* one process
//!         print(res.get(timeout=1))             # prints "400"
//!
//!         # evaluate "os.getpid()" asynchronously
//!         res = pool.apply_async(os.getpid, ()) # runs in *only* one process
//!         print(res.get(timeout=1))             # prints the PID of that process
//!
//!         # launching multiple evaluations asynchronously *may* use more processes
//!         multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//!         print([res.get(timeout=1) for res in multiple_results])
//!
//!         # make a single worker sleep for 10 seconds
//!         res = pool.apply_async(time.sleep, (10,))
//!         try:
//!             print(res.get(timeout=1))
//!         except TimeoutError:
//!             print("We lacked patience and got a multiprocessing.TimeoutError")
//!
//!         print("For the moment, the pool remains available for more work")
//!
//!     # exiting the 'with'-block has stopped the pool
//!     print("Now the pool is closed and no longer available")
//! ```
//!
//! `f`, `os.getpid` and `time.sleep` become `#[entry]` functions; `res.get(timeout=1)` becomes
//! [`AsyncResult::get`](multiprocessing::AsyncResult::get) with a [`Duration`], whose timeout is
//! [`Error::Timeout`](multiprocessing::Error::Timeout). The `with` block becomes a Rust block
//! that owns the pool: like Python's `__exit__`, which calls `terminate()`, the end of the block
//! terminates the workers (here explicitly with `pool.terminate().await?`; dropping the pool does
//! the same), so the 10-second sleeper is killed and the example ends after about a second.
//!
//! Run with `cargo run --release --example pool_map`.

use futures::StreamExt;
use multiprocessing::{entry, process_main, Pool};
use std::time::Duration;

/// Python's `f`.
#[entry]
fn f(x: u64) -> u64 {
    x * x
}

/// Python's `os.getpid`, run in a worker.
#[entry]
fn getpid() -> u32 {
    std::process::id()
}

/// Python's `time.sleep`, run in a worker.
#[entry]
fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let timeout = Duration::from_secs(1);
    {
        // start 4 worker processes
        let pool = Pool::new(4).await?;

        // prints "[0, 1, 4,..., 81]"
        println!("{:?}", pool.map(f, 0..10).await?);

        // prints the same numbers in arbitrary order
        let mut squares = pool.imap_unordered(f, 0..10);
        while let Some(square) = squares.next().await {
            println!("{}", square?);
        }

        // evaluates "f(20)" asynchronously, in only one process
        let mut res = pool.apply_async(f, 20);
        println!("{}", res.get(timeout).await?); // prints "400"

        // evaluates "getpid()" asynchronously, in only one process
        let mut res = pool.apply_async(getpid, ());
        println!("{}", res.get(timeout).await?); // prints the pid of that worker

        // launching several evaluations asynchronously *may* use more processes
        let mut multiple_results: Vec<_> = (0..4).map(|_| pool.apply_async(getpid, ())).collect();
        let mut pids = Vec::new();
        for res in &mut multiple_results {
            pids.push(res.get(timeout).await?);
        }
        println!("{pids:?}");

        // makes a single worker sleep for 10 seconds
        let mut res = pool.apply_async(sleep_secs, 10);
        match res.get(timeout).await {
            Ok(()) => println!("()"),
            Err(e) if e.is_timeout() => {
                println!("We lacked patience and got a multiprocessing.TimeoutError")
            }
            Err(e) => return Err(e),
        }

        println!("For the moment, the pool remains available for more work");
        println!("f(3) on a free worker: {}", pool.apply(f, 3).await?);

        // the end of Python's `with` block: terminate() kills the workers, the sleeper included
        pool.terminate().await?;
    }
    println!("Now the pool is closed and no longer available");
    Ok(())
}
