//! Port of Python's shared counter: ten processes add 50 each to one `Value` under a lock.
//!
//! ```python
//! from multiprocessing import Process, Value, Lock
//!
//! def add(counter, lock, locked):
//!     for _ in range(50):
//!         if locked:
//!             with lock:
//!                 counter.value += 1
//!         else:
//!             counter.value += 1      # read, add, write: another process may write between
//!
//! if __name__ == '__main__':
//!     for locked in (True, False):
//!         counter, lock = Value('i', 0), Lock()
//!         ps = [Process(target=add, args=(counter, lock, locked)) for _ in range(10)]
//!         for p in ps: p.start()
//!         for p in ps: p.join()
//!         print(counter.value)        # 500 with the lock; maybe less without it
//! ```
//!
//! `counter.lock()` is Python's `with counter.get_lock():` (the value's own lock); this port
//! uses a separate `Lock`, as the Python above does. For a plain counter, `Value::fetch_add` is
//! a lock-free atomic and needs neither.
//!
//! Run with `cargo run --release --example counter`.

use multiprocessing::sync::Lock;
use multiprocessing::{entry, process_main, Process, Value};

#[entry]
async fn add(counter: Value<i32>, lock: Lock, locked: bool) -> multiprocessing::Result<()> {
    for _ in 0..50 {
        if locked {
            let _guard = lock.acquire().await?;
            counter.store(counter.load() + 1);
        } else {
            let v = counter.load();
            // Give another process the chance to write between our read and our write.
            std::thread::yield_now();
            counter.store(v + 1);
        }
    }
    Ok(())
}

async fn run(locked: bool) -> multiprocessing::Result<i32> {
    let counter = Value::new(0i32)?;
    let lock = Lock::new();
    let mut ps = Vec::new();
    for _ in 0..10 {
        ps.push(Process::spawn(add, (counter.clone(), lock.clone(), locked)).await?);
    }
    for p in ps {
        p.join().await??;
    }
    Ok(counter.load())
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    println!("with the lock: {}", run(true).await?);
    let unlocked = run(false).await?;
    println!(
        "without the lock: {unlocked}{}",
        if unlocked < 500 {
            " (increments were lost: two processes read the same value)"
        } else {
            " (no increment was lost this time; without the lock that is luck)"
        }
    );
    Ok(())
}
