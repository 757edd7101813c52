//! Port of Python's ticket office: ten buyers share one file holding the number of tickets
//! left, and a lock makes each read-check-write of it whole, so exactly as many tickets are
//! sold as there were.
//!
//! ```python
//! import os, time
//! from multiprocessing import Process, Lock
//!
//! def buy(name, lock, path):
//!     with lock:
//!         left = int(open(path).read())
//!         if left > 0:
//!             time.sleep(0.01)                # the clerk is slow
//!             open(path, 'w').write(str(left - 1))
//!             print(f'{name} bought a ticket ({left - 1} left)')
//!         else:
//!             print(f'{name}: sold out')
//!
//! if __name__ == '__main__':
//!     path = 'tickets.txt'
//!     open(path, 'w').write('3')
//!     lock = Lock()
//!     ps = [Process(target=buy, args=(f'buyer {i}', lock, path)) for i in range(10)]
//!     for p in ps: p.start()
//!     for p in ps: p.join()
//!     os.remove(path)
//! ```
//!
//! Run with `cargo run --release --example lock_tickets`.

use multiprocessing::sync::Lock;
use multiprocessing::{entry, process_main, Process};
use std::time::Duration;

const TICKETS: u32 = 3;

/// Tries to buy one ticket; returns whether it did.
#[entry]
async fn buy(name: String, lock: Lock, path: String) -> multiprocessing::Result<bool> {
    let _guard = lock.acquire().await?;
    let left: u32 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
    if left == 0 {
        println!("{name}: sold out");
        return Ok(false);
    }
    // The clerk is slow: without the lock, other buyers would read the same count meanwhile.
    tokio::time::sleep(Duration::from_millis(10)).await;
    std::fs::write(&path, (left - 1).to_string())?;
    println!("{name} bought a ticket ({} left)", left - 1);
    Ok(true)
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let path = std::env::temp_dir().join(format!("mp-tickets-{}.txt", std::process::id()));
    std::fs::write(&path, TICKETS.to_string())?;
    let lock = Lock::new();
    let file = path.to_string_lossy().into_owned();
    let mut ps = Vec::new();
    for i in 0..10 {
        let args = (format!("buyer {i}"), lock.clone(), file.clone());
        ps.push(Process::spawn(buy, args).await?);
    }
    let mut sold = 0;
    for p in ps {
        sold += u32::from(p.join().await??);
    }
    std::fs::remove_file(&path)?;
    println!("{sold} tickets sold, {TICKETS} on offer");
    assert_eq!(sold, TICKETS);
    Ok(())
}
