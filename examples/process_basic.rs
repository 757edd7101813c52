//! Port of the classic `Process` example from Python's `multiprocessing` docs:
//!
//! ```python
//! from multiprocessing import Process
//! import os
//!
//! def info(title):
//!     print(title)
//!     print('module name:', __name__)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//!
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     info('main line')
//!     p = Process(target=f, args=('bob',))
//!     p.start()
//!     p.join()
//! ```
//!
//! `f` becomes an `#[entry]`, `Process(target=f, args=('bob',)).start()` becomes
//! `Process::spawn(f, "bob".to_string()).await?`, and `join` hands back `f`'s value. Besides the
//! module name, each process prints its `current_process()` name, and the child shows that
//! `parent_process()` names the process that started it. Under the default start method of a
//! `#[process_main]` program (the fork server, as Python's `forkserver`), the OS parent
//! (`getppid`) of the child is the server, not the main process: `parent_process()` is the one to
//! ask.
//!
//! Run with `cargo run --release --example process_basic`.

use multiprocessing::{current_process, entry, parent_process, process_main, Process};
use std::os::unix::process::parent_id;

/// Prints who is running: the same four facts as Python's `info`, plus the process name.
fn info(title: &str) {
    println!("{title}");
    println!("module name: {}", module_path!());
    println!("process name: {}", current_process().name);
    println!("parent process: {}", parent_id());
    println!("process id: {}", std::process::id());
}

/// The child's work, Python's `f`.
#[entry]
fn f(name: String) {
    info("function f");
    match parent_process() {
        Some(parent) => println!(
            "parent_process(): {} (pid {}, the same as the OS parent: {})",
            parent.name,
            parent.pid,
            parent.pid == parent_id()
        ),
        None => println!("parent_process(): None"),
    }
    println!("hello {name}");
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    info("main line");
    println!(
        "parent_process(): {:?}",
        parent_process().map(|parent| parent.name)
    );
    let p = Process::spawn(f, "bob".to_string()).await?;
    p.join().await?;
    println!(
        "Hello from the parent: child exited with code {}",
        p.exitcode().unwrap_or(-1)
    );
    Ok(())
}
