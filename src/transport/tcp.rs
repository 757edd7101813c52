//! Meeting at an address: for peers that did not start each other (`connection::Listener` and
//! `Client` today; remote managers and brokers next). An address is a TCP `host:port`, or, when
//! it contains a `/`, the path of a Unix socket. Either way both sides prove they hold the key
//! with the handshake of `auth.rs` before the first message, within [`HANDSHAKE_TIMEOUT`], and
//! what the caller gets is an authenticated descriptor of the right [`Flavor`].

use super::auth::{self, AuthKey, HANDSHAKE_MAX_FRAME};
use super::frame::{FrameReader, FrameWriter};
use super::local::{self, Halves};
use super::socket::{Flavor, Socket};
use crate::error::{Error, Result};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long either side gives the other to finish the handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `address` names a Unix socket (it contains a `/`) rather than a TCP `host:port`.
fn is_path(address: &str) -> bool {
    address.contains('/')
}

/// An authenticated socket: its descriptor (out of the runtime, to be registered by its user),
/// its flavor, and the bytes read past the handshake.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub(crate) fd: OwnedFd,
    pub(crate) flavor: Flavor,
    pub(crate) leftover: Vec<u8>,
}

/// The flavor of a listener: a local socket is the run's kind (`local.rs`), at the user's path.
#[derive(Debug)]
enum Bound {
    Tcp(tokio::net::TcpListener),
    Local(local::Listener),
}

/// A bound address that accepts peers holding its key. A listener on a path removes its socket
/// file when dropped (as every `local::Listener` does).
#[derive(Debug)]
pub(crate) struct Listener {
    bound: Bound,
    key: AuthKey,
    address: String,
}

impl Listener {
    /// Binds `address` (a TCP `host:port`, or a path if it contains `/`).
    ///
    /// # Errors
    /// `Io` when the address is taken, cannot be resolved, or its directory is missing (a path
    /// is not replaced if a file is already there).
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is bound unless the future completes.
    pub(crate) async fn bind(address: &str, key: AuthKey) -> Result<Self> {
        if is_path(address) {
            Ok(Listener {
                bound: Bound::Local(local::Listener::bind_new(PathBuf::from(address))?),
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

    /// The address peers connect to: `ip:port` as bound (with the real port when `:0` was
    /// asked for), or the socket's path.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Waits for the next peer and runs the server side of the handshake with it.
    ///
    /// # Errors
    /// `Authentication` for a peer without the key or one that does not finish the handshake
    /// within [`HANDSHAKE_TIMEOUT`]; `Io` from `accept` or when the peer leaves mid-handshake.
    ///
    /// # Cancel safety
    /// Waiting for a peer is cancel-safe; cancelling during its handshake drops that peer.
    pub(crate) async fn accept(&self) -> Result<Authenticated> {
        let (halves, flavor) = match &self.bound {
            Bound::Tcp(l) => (tcp_halves(l.accept().await?.0)?, Flavor::Tcp),
            Bound::Local(l) => (l.accept().await?, Flavor::Local),
        };
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(halves, flavor, &self.key, true),
        )
        .await
        .map_err(|_| {
            Error::Authentication(format!(
                "the client did not finish the handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })?
    }
}

/// A TCP stream as the halves of a [`Socket`] (out of tokio's registration for both
/// directions: see `socket.rs`).
fn tcp_halves(stream: tokio::net::TcpStream) -> Result<Halves> {
    let fd = OwnedFd::from(stream.into_std()?);
    Ok(Socket::new(fd, Flavor::Tcp)?.into_halves())
}

/// Connects to `address` (a TCP `host:port`, or a path if it contains `/`) and runs the client
/// side of the handshake.
///
/// # Errors
/// `Authentication` when the listener refuses our key or cannot prove it holds it; `Timeout`
/// when it does not answer within [`HANDSHAKE_TIMEOUT`]; `Io` when nobody listens there.
///
/// # Cancel safety
/// Cancel-safe: a cancelled connect leaves nothing behind (the listener sees a peer that went
/// away).
pub(crate) async fn connect(address: &str, key: &AuthKey) -> Result<Authenticated> {
    let (halves, flavor) = if is_path(address) {
        (local::connect(Path::new(address)).await?, Flavor::Local)
    } else {
        let stream = tokio::net::TcpStream::connect(address).await?;
        (tcp_halves(stream)?, Flavor::Tcp)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(halves, flavor, key, false)).await?
}

/// Runs one side of the handshake over a socket's halves; hands its descriptor back, out of the
/// runtime, with any bytes read past the handshake.
async fn handshake(
    (recv, send): Halves,
    flavor: Flavor,
    key: &AuthKey,
    server: bool,
) -> Result<Authenticated> {
    let mut reader = FrameReader::new(recv, HANDSHAKE_MAX_FRAME);
    reader.set_max_message(HANDSHAKE_MAX_FRAME);
    let mut writer = FrameWriter::new(send, HANDSHAKE_MAX_FRAME);
    if server {
        auth::server(&mut reader, &mut writer, key).await?;
    } else {
        auth::client(&mut reader, &mut writer, key, None).await?;
    }
    // Every handshake step flushed what it wrote: dropping the writer loses nothing (and
    // closes only its own descriptor of the socket).
    drop(writer);
    let (recv, leftover) = reader.into_parts()?;
    Ok(Authenticated {
        fd: recv.into_fd()?,
        flavor,
        leftover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_peers_with_the_key_meet_and_others_are_refused() {
        let key = AuthKey::derive(b"secret");
        let listener = Listener::bind("127.0.0.1:0", key.clone()).await.unwrap();
        let (server, client) = tokio::join!(listener.accept(), connect(listener.address(), &key));
        let (server, client) = (server.unwrap(), client.unwrap());
        assert_eq!((server.flavor, client.flavor), (Flavor::Tcp, Flavor::Tcp));
        assert!(server.leftover.is_empty() && client.leftover.is_empty());
        let wrong = AuthKey::derive(b"guess");
        let (server, client) = tokio::join!(listener.accept(), connect(listener.address(), &wrong));
        assert!(
            matches!(server, Err(Error::Authentication(_))),
            "{server:?}"
        );
        assert!(
            matches!(client, Err(Error::Authentication(_))),
            "{client:?}"
        );
    }

    #[tokio::test]
    async fn a_path_listener_meets_local_peers_and_replaces_nothing() {
        let dir = std::env::temp_dir().join(format!("mp-tcp-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let address = path.to_str().unwrap().to_owned();
        let key = AuthKey::derive(b"secret");
        let listener = Listener::bind(&address, key.clone()).await.unwrap();
        assert!(Listener::bind(&address, key.clone()).await.is_err());
        let (server, client) = tokio::join!(listener.accept(), connect(&address, &key));
        let (server, client) = (server.unwrap(), client.unwrap());
        assert_eq!(
            (server.flavor, client.flavor),
            (Flavor::Local, Flavor::Local)
        );
        drop(listener);
        assert!(!path.exists(), "the listener removes its socket file");
        std::fs::remove_dir(&dir).unwrap();
    }
}
