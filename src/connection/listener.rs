//! [`Listener`] and [`Client`]: connections between processes that did not start each other,
//! over TCP or a Unix socket, authenticated by a shared key. Binding, connecting and the
//! handshake are the transport's (`transport::tcp`); this file gives them the Python shape.

use super::conn::Connection;
use super::Mode;
use crate::error::Result;
use crate::transport::auth::AuthKey;
use crate::transport::tcp::{self, Authenticated};

/// An authenticated socket as one end of a duplex connection.
fn connection<T>(socket: Authenticated) -> Connection<T> {
    Connection::from_fd(socket.fd, socket.flavor, Mode::Duplex, socket.leftover)
}

/// Accepts authenticated connections (Python's `multiprocessing.connection.Listener`).
///
/// The address is a string: a TCP `host:port` (`"127.0.0.1:0"` picks a free port; see
/// [`address`](Self::address)), or, when it contains a `/`, the path of a Unix socket
/// (`"./echo.sock"`, `"/tmp/app/echo.sock"`). Both sides prove they hold the same `authkey` with
/// the crate's mutual HMAC-SHA256 challenge (the key itself never crosses the wire); the 32-byte
/// key is the SHA-256 digest of the `authkey` bytes, so any length works. Without TLS, the
/// messages that follow are not encrypted: over TCP, keep to networks you trust.
///
/// The listener is untyped: [`accept`](Self::accept) chooses the message type of each
/// connection, as [`Client::connect`] does on the other side.
///
/// A listener on a path removes its socket file when dropped.
#[derive(Debug)]
pub struct Listener(tcp::Listener);

impl Listener {
    /// Binds `address` (a TCP `host:port`, or a path if it contains `/`) and accepts clients
    /// that hold `authkey`.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is bound unless the future completes.
    ///
    /// # Errors
    /// `Io` when the address is taken, cannot be resolved, or its directory is missing (a path
    /// is not replaced if a file is already there).
    pub async fn bind(address: &str, authkey: &[u8]) -> Result<Listener> {
        Ok(Listener(
            tcp::Listener::bind(address, AuthKey::derive(authkey)).await?,
        ))
    }

    /// The address clients connect to: `ip:port` as bound (with the real port when `:0` was
    /// asked for), or the socket's path.
    pub fn address(&self) -> &str {
        self.0.address()
    }

    /// Waits for the next client and authenticates it.
    ///
    /// A client that does not hold the key (or does not finish the handshake within 10 s)
    /// makes this call return [`Error::Authentication`](crate::Error::Authentication); the listener goes on, and the next call
    /// accepts the next client. Clients are authenticated one at a time.
    ///
    /// # Cancel safety
    /// Not cancel-safe once a client has been accepted: cancelling during its handshake drops
    /// that client. Waiting for a client is cancel-safe.
    ///
    /// # Errors
    /// [`Error::Authentication`](crate::Error::Authentication) for a client without the key; `Io` from `accept` or when the
    /// client disconnects during the handshake.
    pub async fn accept<T>(&self) -> Result<Connection<T>> {
        Ok(connection(self.0.accept().await?))
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Client;

impl Client {
    /// Connects to `address` (a TCP `host:port`, or a path if it contains `/`) and proves that
    /// we hold `authkey` (and checks that the listener does).
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled connect leaves nothing behind (the listener sees a client that
    /// went away).
    ///
    /// # Errors
    /// [`Error::Authentication`](crate::Error::Authentication) when the listener refuses our key or cannot prove it holds it;
    /// [`Error::Timeout`](crate::Error::Timeout) when it does not answer within 10 s; `Io` when nobody listens there.
    pub async fn connect<T>(address: &str, authkey: &[u8]) -> Result<Connection<T>> {
        Ok(connection(
            tcp::connect(address, &AuthKey::derive(authkey)).await?,
        ))
    }
}
