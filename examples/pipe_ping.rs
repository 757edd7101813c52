//! A parent and a child exchange messages over a `Pipe`, as in Python:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def child(conn):
//!     while True:
//!         msg = conn.recv()
//!         if msg == 'bye':
//!             break
//!         print('child got', msg)
//!         conn.send(msg.replace('ping', 'pong'))
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=child, args=(child_conn,))
//!     p.start()
//!     for i in range(3):
//!         parent_conn.send('ping %d' % i)
//!         print('parent got', parent_conn.recv())
//!     parent_conn.send('bye')
//!     p.join()
//! ```
//!
//! `Pipe()` becomes `pipe::<String>()?`; the child's end is handed over as the entry's argument
//! (ends are `Serialize`), and the parent drops nothing it still needs: the child's end left the
//! parent with the spawn.
//!
//! Run with `cargo run --release --example pipe_ping`.

use multiprocessing::{entry, pipe, process_main, Connection, Process};

/// The child: answers each ping with a pong until told "bye"; returns how many it answered.
#[entry]
async fn child(conn: Connection<String>) -> u32 {
    let mut answered = 0;
    while let Ok(msg) = conn.recv().await {
        if msg == "bye" {
            break;
        }
        println!("child {} got {msg}", std::process::id());
        if conn.send(msg.replace("ping", "pong")).await.is_err() {
            break;
        }
        answered += 1;
    }
    answered
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let (parent_conn, child_conn) = pipe::<String>()?;
    let p = Process::spawn(child, child_conn).await?;
    for i in 0..3 {
        parent_conn.send(format!("ping {i}")).await?;
        println!("parent got {}", parent_conn.recv().await?);
    }
    parent_conn.send("bye".to_string()).await?;
    let answered = p.join().await?;
    println!(
        "child answered {answered} pings and exited with code {}",
        p.exitcode().unwrap_or(-1)
    );
    Ok(())
}
