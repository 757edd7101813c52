//! Pipes and connections between processes (Python's `multiprocessing.Pipe` and
//! `multiprocessing.connection`).
//!
//! Use a [`pipe`] when two processes of this program need to talk directly, one to one: the
//! parent makes the pair and hands one end (or both) to children as entry arguments. Messages go
//! straight from one process to the other, through a Unix socket pair, never through the
//! parent. Use [`Listener`] and [`Client`] when the processes did not start each other (another
//! program, another host): they meet at an address and prove they share a key. For many
//! producers or consumers, a queue fits better than a web of pipes.
//!
//! ```
//! use multiprocessing::{entry, pipe, Connection};
//!
//! #[entry]
//! async fn pong(conn: Connection<String>) {
//!     // Ends when the parent drops its end: recv returns Err(Closed).
//!     while let Ok(ping) = conn.recv().await {
//!         if conn.send(ping.replace("ping", "pong")).await.is_err() {
//!             break;
//!         }
//!     }
//! }
//!
//! # #[multiprocessing::process_main]
//! # async fn main() -> multiprocessing::Result<()> {
//! let (here, there) = pipe::<String>()?;
//! let child = multiprocessing::Process::spawn(pong, there).await?;
//! here.send("ping 1".to_string()).await?;
//! assert_eq!(here.recv().await?, "pong 1");
//! drop(here);
//! child.join().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Messages
//! A [`Connection<T>`] carries values of type `T`, encoded in postcard's format, and raw byte messages
//! ([`send_bytes`](Connection::send_bytes), [`recv_bytes`](Connection::recv_bytes),
//! [`recv_bytes_into`](Connection::recv_bytes_into)); each is one message, received whole and in
//! order. Messages have no size limit: one larger than the frame limit (see
//! [`set_max_frame_size`](crate::set_max_frame_size)) crosses as several frames. Send large
//! binary data with `send_bytes` (or as `serde_bytes`), not as a `Vec<u8>` inside `T`.
//!
//! # Sending is buffered
//! Small messages are gathered in the sending end's buffer and written together, so a loop of
//! sends costs one syscall per batch rather than per message. The buffer is written as soon as
//! the sending task yields, before the end waits to receive, by
//! [`flush`](Connection::flush), and when the end is dropped. Python's `send` returns once the
//! OS has the bytes; here, a process that exits without dropping its end (for instance through
//! `std::process::exit`) should call `flush` first.
//!
//! # Disconnection
//! When the other end is dropped, or its process exits or is killed, `recv` returns the messages
//! already sent and then [`Error::Closed`](crate::Error::Closed); `send` returns `Closed`. An end
//! handed to a child closes when the child drops it or exits, provided no other process still
//! holds it: drop the parent's copy after handing it over, as with Python's `conn.close()`.
//!
//! # Handing an end to another process
//! `Connection` and [`FdHandle`] are `Serialize + Deserialize`. Serializing one *offers* a
//! duplicate of its file descriptor (sent with `SCM_RIGHTS` by a small per-process server
//! thread) to the first process that deserializes it; the bytes carry only where to ask and a
//! 128-bit secret. An offer is one-shot: once taken, the offering process keeps no copy of the
//! descriptor. An offer nobody takes is closed after two minutes; until then it keeps the
//! socket open, so the peer of an end that was serialized but never received sees end-of-file
//! only then. Deserializing an offer twice, after it expired, or after the offering process
//! exited, fails with a [`Decode`](crate::Error::Decode) error that says which.
//!
//! # Runtimes
//! Making a pipe and receiving an end need no runtime; sending and receiving must run inside a
//! tokio runtime (the one `#[process_main]` builds, or any other), and return an `Io` error
//! outside one.

mod conn;
mod handle;
mod listener;
mod socket;

pub use conn::Connection;
pub use handle::FdHandle;
pub use listener::{Client, Listener};

use crate::error::Result;
use conn::Mode;
use std::time::Duration;

/// A duplex pipe: two connected ends, each of which sends and receives (Python's `Pipe()`).
///
/// Hand one end to a child process as an entry argument (ends are `Serialize`) and keep the
/// other. It is a Unix `socketpair`; no runtime is needed to make it.
///
/// # Errors
/// `Io` when the process is out of file descriptors.
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>)> {
    conn::pair(Mode::Duplex, Mode::Duplex)
}

/// A one-way pipe: `(receiver, sender)`, in Python's `Pipe(duplex=False)` order.
///
/// Receiving on the sender or sending on the receiver is an
/// [`InvalidArgument`](crate::Error::InvalidArgument) error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> multiprocessing::Result<()> {
/// let (rx, tx) = multiprocessing::pipe_simplex::<u32>()?;
/// tx.send(7).await?;
/// assert_eq!(rx.recv().await?, 7);
/// assert!(rx.send(8).await.is_err());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `Io` when the process is out of file descriptors.
pub fn pipe_simplex<T>() -> Result<(Connection<T>, Connection<T>)> {
    conn::pair(Mode::ReceiveOnly, Mode::SendOnly)
}

/// Waits until at least one of `connections` has a message (or its end of stream) waiting, and
/// returns the indices of all that do (Python's `multiprocessing.connection.wait`).
///
/// With a `timeout`, returns an empty `Vec` if none is ready in time; with `None`, waits as long
/// as it takes. An empty slice returns an empty `Vec` at once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::connection::wait;
/// use std::time::Duration;
/// let (a, b) = multiprocessing::pipe::<u8>()?;
/// let (c, d) = multiprocessing::pipe::<u8>()?;
/// d.send(1).await?;
/// assert_eq!(wait(&[&a, &c], Some(Duration::from_secs(5))).await?, vec![1]);
/// assert_eq!(wait(&[&b, &d], Some(Duration::from_millis(10))).await?, Vec::<usize>::new());
/// # drop(a);
/// # Ok(())
/// # }
/// ```
///
/// # Cancel safety
/// Cancel-safe: nothing is received.
///
/// # Errors
/// `Io` from a socket (or outside a tokio runtime).
pub async fn wait<T>(
    connections: &[&Connection<T>],
    timeout: Option<Duration>,
) -> Result<Vec<usize>> {
    if connections.is_empty() {
        return Ok(Vec::new());
    }
    let ready_now = || -> Vec<usize> {
        connections
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ready_now())
            .map(|(i, _)| i)
            .collect()
    };
    let now = ready_now();
    if !now.is_empty() {
        // A caller that loops on `wait` without receiving must still let the runtime run.
        tokio::task::consume_budget().await;
        return Ok(now);
    }
    let any = futures::future::select_all(connections.iter().map(|c| Box::pin(c.ready())));
    let first = match timeout {
        Some(t) => match tokio::time::timeout(t, any).await {
            Ok(first) => first,
            Err(_) => return Ok(ready_now()),
        },
        None => any.await,
    };
    let (result, index, _) = first;
    result?;
    let mut ready = ready_now();
    if !ready.contains(&index) {
        ready.push(index);
        ready.sort_unstable();
    }
    Ok(ready)
}
