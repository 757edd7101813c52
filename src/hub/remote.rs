//! The object host across hosts (remote managers): a [`Store`] of its own served to processes
//! that connect to an address with the key, over the transport's TCP handshake
//! (`transport::tcp`, the one `connection::Listener` uses), and the client side.
//!
//! A connection is served exactly as a child's connection to the root's hub is (`serve.rs`):
//! it says `Attach`, then sends `HostReq`s; it is one owner, forgotten when it ends, so a client
//! killed mid-session leaves the others served and takes nothing acknowledged with it.

use super::client::HostClient;
use super::objects::Store;
use super::serve;
use crate::error::{Error, Result};
use crate::protocol::{decode_head, encode_head, Up, PROTOCOL_VERSION};
use crate::transport::auth::AuthKey;
use crate::transport::frame::{FrameReader, FrameWriter};
use crate::transport::socket::Socket;
use crate::transport::tcp::{self, Authenticated};
use crate::transport::{spawn_writer, Outbox, Outgoing, DEFAULT_MAX_FRAME};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection that passed the handshake may take to say `Attach`.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// A host serving its objects at an address. Dropping it stops accepting; connections already
/// served go on until their clients leave.
#[derive(Debug)]
pub(crate) struct ServedHost {
    client: Arc<HostClient>,
    address: String,
    accept: tokio::task::JoinHandle<()>,
}

impl ServedHost {
    /// Binds `address` (a TCP `host:port`, or a path if it contains `/`) and serves a new,
    /// empty store to every client holding `key`.
    ///
    /// # Errors
    /// `Io` when the address is taken or cannot be resolved.
    pub(crate) async fn bind(address: &str, key: AuthKey) -> Result<Self> {
        let listener = tcp::Listener::bind(address, key).await?;
        let store = Arc::new(Store::default());
        Ok(ServedHost {
            client: HostClient::local(Arc::clone(&store)),
            address: listener.address().to_owned(),
            accept: tokio::spawn(accept_loop(listener, store)),
        })
    }

    /// The address clients connect to (with the real port when `:0` was asked for).
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The serving process's own client of the store, applied in-process.
    pub(crate) fn client(&self) -> &Arc<HostClient> {
        &self.client
    }
}

impl Drop for ServedHost {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: tcp::Listener, store: Arc<Store>) {
    loop {
        match listener.accept().await {
            Ok(peer) => {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    if let Err(e) = attach_and_serve(peer, store).await {
                        tracing::debug!(target: "multiprocessing::hub", "a manager client was refused: {e}");
                    }
                });
            }
            Err(Error::Authentication(e)) => {
                tracing::info!(target: "multiprocessing::hub", "a manager client without the key was refused: {e}");
            }
            Err(e) => {
                tracing::debug!(target: "multiprocessing::hub", "accepting a manager client failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Frames over an authenticated socket.
fn frames(peer: Authenticated) -> Result<(FrameReader<crate::transport::local::RecvHalf>, Outbox)> {
    let (recv, send) = Socket::new(peer.fd, peer.flavor)?.into_halves();
    let reader = FrameReader::with_leftover(recv, peer.leftover, DEFAULT_MAX_FRAME);
    let (out, _writer) = spawn_writer(FrameWriter::new(send, DEFAULT_MAX_FRAME));
    Ok((reader, out))
}

async fn attach_and_serve(peer: Authenticated, store: Arc<Store>) -> Result<()> {
    let (mut reader, out) = frames(peer)?;
    let first = tokio::time::timeout(ATTACH_TIMEOUT, reader.read_message())
        .await
        .map_err(|_| Error::Timeout)??
        .ok_or(Error::Closed)?;
    match decode_head::<Up>(&first)? {
        (Up::Attach { version, pid }, _) if version == PROTOCOL_VERSION => {
            serve::serve(store, pid, reader, out).await;
            Ok(())
        }
        _ => Err(Error::Protocol(
            "expected Attach (of our protocol version) as the first message".into(),
        )),
    }
}

/// Connects to a host served at `address` with `key`.
///
/// # Errors
/// `Authentication` when the server refuses the key (or cannot prove it holds it); `Io` when
/// nobody listens there; `Timeout` when the handshake does not finish in time.
pub(crate) async fn connect(address: &str, key: &AuthKey) -> Result<Arc<HostClient>> {
    let (reader, out) = frames(tcp::connect(address, key).await?)?;
    let attach = encode_head(&Up::Attach {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    })?;
    out.send(Outgoing::new(attach, Vec::new()))
        .map_err(|_| Error::Closed)?;
    Ok(HostClient::over(reader, out))
}
