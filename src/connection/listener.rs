//! [`Listener`] and [`Client`]: connections between processes that did not start each other,
//! over TCP or a Unix socket, authenticated by a shared key.

use super::conn::Connection;
use super::socket::Kind;
use super::Mode;
use crate::error::{Error, Result};
use crate::transport::auth::{self, AuthKey, HANDSHAKE_MAX_FRAME};
use crate::transport::frame::{FrameReader, FrameWriter};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long either side gives the other to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `address` names a Unix socket (it contains a `/`) rather than a TCP `host:port`.
fn is_path(address: &str) -> bool {
    address.contains('/')
}

#[derive(Debug)]
enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
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
pub struct Listener {
    bound: Bound,
    key: AuthKey,
    address: String,
}

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
        let key = AuthKey::derive(authkey);
        if is_path(address) {
            let path = PathBuf::from(address);
            let listener = tokio::net::UnixListener::bind(&path)?;
            Ok(Listener {
                bound: Bound::Unix { listener, path },
                key,
                address: address.to_owned(),
            })
        } else {
            let listener = tokio::net::TcpListener::bind(address).await?;
            let address = listener.local_addr()?.to_string();
            Ok(Listener {
                bound: Bound::Tcp(listener),
                key,
                address,
            })
        }
    }

    /// The address clients connect to: `ip:port` as bound (with the real port when `:0` was
    /// asked for), or the socket's path.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits for the next client and authenticates it.
    ///
    /// A client that does not hold the key (or does not finish the handshake within 10 s)
    /// makes this call return [`Error::Authentication`]; the listener goes on, and the next call
    /// accepts the next client. Clients are authenticated one at a time.
    ///
    /// # Cancel safety
    /// Not cancel-safe once a client has been accepted: cancelling during its handshake drops
    /// that client. Waiting for a client is cancel-safe.
    ///
    /// # Errors
    /// [`Error::Authentication`] for a client without the key; `Io` from `accept` or when the
    /// client disconnects during the handshake.
    pub async fn accept<T>(&self) -> Result<Connection<T>> {
        let (socket, kind) = match &self.bound {
            Bound::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                (Stream::Tcp(s), Kind::Tcp)
            }
            Bound::Unix { listener, .. } => (Stream::Unix(listener.accept().await?.0), Kind::Unix),
        };
        let handshake = handshake(socket, &self.key, true);
        let (socket, leftover) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                Error::Authentication(format!(
                    "the client did not finish the handshake within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })??;
        Ok(Connection::from_fd(
            socket.into_fd()?,
            kind,
            Mode::Duplex,
            leftover,
        ))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Bound::Unix { path, .. } = &self.bound {
            let _ = std::fs::remove_file(path);
        }
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
    /// [`Error::Authentication`] when the listener refuses our key or cannot prove it holds it;
    /// [`Error::Timeout`] when it does not answer within 10 s; `Io` when nobody listens there.
    pub async fn connect<T>(address: &str, authkey: &[u8]) -> Result<Connection<T>> {
        let key = AuthKey::derive(authkey);
        let (socket, kind) = if is_path(address) {
            let s = tokio::net::UnixStream::connect(address).await?;
            (Stream::Unix(s), Kind::Unix)
        } else {
            let s = tokio::net::TcpStream::connect(address).await?;
            s.set_nodelay(true)?;
            (Stream::Tcp(s), Kind::Tcp)
        };
        let (socket, leftover) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(socket, &key, false)).await??;
        Ok(Connection::from_fd(
            socket.into_fd()?,
            kind,
            Mode::Duplex,
            leftover,
        ))
    }
}

/// A freshly connected or accepted stream, as tokio's type, for the handshake only; the
/// connection then takes its descriptor (see `socket::Socket` for why not tokio's type).
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Stream {
    fn into_fd(self) -> Result<std::os::fd::OwnedFd> {
        Ok(match self {
            Stream::Unix(s) => s.into_std()?.into(),
            Stream::Tcp(s) => s.into_std()?.into(),
        })
    }
}

/// Runs one side of the handshake; returns the stream and any bytes read past it.
async fn handshake(mut socket: Stream, key: &AuthKey, server: bool) -> Result<(Stream, Vec<u8>)> {
    let leftover = match &mut socket {
        Stream::Tcp(s) => {
            let (r, w) = s.split();
            run(r, w, key, server).await?
        }
        Stream::Unix(s) => {
            let (r, w) = s.split();
            run(r, w, key, server).await?
        }
    };
    Ok((socket, leftover))
}

async fn run<R, W>(r: R, w: W, key: &AuthKey, server: bool) -> Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(r, HANDSHAKE_MAX_FRAME);
    reader.set_max_message(HANDSHAKE_MAX_FRAME);
    let mut writer = FrameWriter::new(w, HANDSHAKE_MAX_FRAME);
    if server {
        auth::server(&mut reader, &mut writer, key).await?;
    } else {
        auth::client(&mut reader, &mut writer, key, None).await?;
    }
    Ok(reader.into_parts()?.1)
}
