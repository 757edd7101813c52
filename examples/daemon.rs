//! Port of Python's daemon-process example (as in PyMOTW's `multiprocessing_daemon.py`):
//!
//! ```python
//! import multiprocessing, time
//!
//! def daemon():
//!     p = multiprocessing.current_process()
//!     print('daemon: starting', p.name, p.pid)
//!     while True:
//!         print('daemon: still running')
//!         time.sleep(0.1)
//!
//! def non_daemon():
//!     p = multiprocessing.current_process()
//!     print('non-daemon: starting', p.name, p.pid)
//!     time.sleep(0.3)
//!     print('non-daemon: done')
//!
//! if __name__ == '__main__':
//!     d = multiprocessing.Process(name='daemon', target=daemon, daemon=True)
//!     n = multiprocessing.Process(name='non-daemon', target=non_daemon)
//!     d.start(); n.start()
//!     time.sleep(0.2)
//!     print('main: returning; the non-daemon child is waited for, the daemon child is terminated')
//! ```
//!
//! Neither child is joined. When `main` returns, `#[process_main]` does what Python does at
//! exit: it terminates (SIGTERM) the daemon child, which would otherwise loop forever, and waits
//! for the non-daemon child, so "non-daemon: done" is still printed after main's last line.
//!
//! Run with `cargo run --release --example daemon`.

use multiprocessing::{active_children, current_process, entry, process_main, Process};
use std::time::Duration;

/// Runs until it is terminated.
#[entry]
async fn daemon() {
    let me = current_process();
    println!("daemon: starting {} {}", me.name, me.pid);
    loop {
        println!("daemon: still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finishes on its own, a little after main has returned.
#[entry]
async fn non_daemon() {
    let me = current_process();
    println!("non-daemon: starting {} {}", me.name, me.pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("non-daemon: done");
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let d = Process::builder()
        .name("daemon")
        .daemon(true)
        .spawn(daemon, ())
        .await?;
    let n = Process::builder()
        .name("non-daemon")
        .spawn(non_daemon, ())
        .await?;
    println!(
        "main: started {} (pid {}, daemon: {}) and {} (pid {}, daemon: {})",
        d.name(),
        d.pid(),
        d.is_daemon(),
        n.name(),
        n.pid(),
        n.is_daemon()
    );

    tokio::time::sleep(Duration::from_millis(200)).await;

    let running: Vec<String> = active_children().into_iter().map(|c| c.name).collect();
    println!("main: active children: {running:?}; exiting without joining them");
    println!("main: returning; the non-daemon child is waited for, the daemon child is terminated");
    Ok(())
}
