//! Layer 1: bytes and frames between processes. Knows no message types.
//!
//! One frame format and one decoder (`frame`), one socket type with a local and a TCP flavor
//! (`socket`), the run's local sockets (`local`), meeting at an address (`tcp`), the handshake
//! (`auth`) and descriptor passing (`fd`). Large buffers are kept for reuse by `crate::buffers`
//! (layer 0, since `protocol` and `entry` take them too). See `README.md` beside this file for the
//! wire format, buffer sizes and the handshake.

pub(crate) mod auth;
pub(crate) mod fd;
pub(crate) mod frame;
pub(crate) mod local;
pub(crate) mod segment;
pub(crate) mod socket;
pub(crate) mod tcp;

use crate::buffers::{IntoShared, Shared};
use crate::error::Result;
use auth::{AuthKey, HANDSHAKE_MAX_FRAME};
use frame::{FrameReader, FrameWriter};
use local::{RecvHalf, SendHalf};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Default limit on one frame: 16 MiB. Larger messages cross as several frames.
pub(crate) const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// `bytes` as a frame limit: at least 1 KiB (the handshake and every header fit) and below
/// 1 GiB (what a frame header can say). Each launch keeps its own limit (see
/// `hub::HubContext`); this layer only takes it as a parameter when a connection is made.
pub(crate) fn frame_limit(bytes: usize) -> usize {
    bytes.clamp(1024, frame::HEADER_MAX)
}

/// A frame limit that came over the wire (a `u64`), as [`frame_limit`] takes it.
pub(crate) fn frame_limit_u64(bytes: u64) -> usize {
    frame_limit(usize::try_from(bytes).unwrap_or(usize::MAX))
}

/// An authenticated connection, ready for messages.
pub(crate) struct Conn {
    pub(crate) reader: FrameReader<RecvHalf>,
    pub(crate) writer: FrameWriter<SendHalf>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

fn frames((recv, send): local::Halves, max_frame: usize) -> Conn {
    let mut reader = FrameReader::new(recv, HANDSHAKE_MAX_FRAME);
    // Until the peer has proved it holds the key, a whole message is as small as one frame.
    reader.set_max_message(HANDSHAKE_MAX_FRAME);
    Conn {
        reader,
        writer: FrameWriter::new(send, max_frame),
    }
}

impl Conn {
    fn authenticated(mut self, max_frame: usize) -> Self {
        self.reader.set_max_frame(max_frame);
        self.reader.set_max_message(usize::MAX);
        self
    }

    /// Connects to a local socket and proves we hold `key`; frames either way are at most
    /// `max_frame` bytes (the caller's launch's limit).
    ///
    /// # Errors
    /// `Io` when nobody listens at `path`; `Authentication` when the keys differ.
    ///
    /// # Cancel safety
    /// Cancel-safe in that nothing is left behind: a dropped connect closes its socket, and the
    /// peer sees the handshake end. (The same holds for the other constructors here.)
    pub(crate) async fn connect(path: &Path, key: &AuthKey, max_frame: usize) -> Result<Self> {
        Self::connect_with(path, key, None, max_frame).await
    }

    /// As [`Conn::connect`], sending `first` (a whole message) in the same flight as the answer
    /// to the challenge; see [`auth::client`].
    ///
    /// # Errors
    /// As [`Conn::connect`].
    pub(crate) async fn connect_with(
        path: &Path,
        key: &AuthKey,
        first: Option<&[u8]>,
        max_frame: usize,
    ) -> Result<Self> {
        let mut conn = frames(local::connect(path).await?, max_frame);
        auth::client(&mut conn.reader, &mut conn.writer, key, first).await?;
        Ok(conn.authenticated(max_frame))
    }

    /// As [`Conn::connect_with`], for a child holding a single-use `token` from the process
    /// that listens at `path`: no wait for the challenge (see [`auth::client_with_token`]).
    ///
    /// # Errors
    /// As [`Conn::connect`].
    pub(crate) async fn connect_with_token(
        path: &Path,
        key: &AuthKey,
        token: u64,
        first: &[u8],
        max_frame: usize,
    ) -> Result<Self> {
        let mut conn = frames(local::connect(path).await?, max_frame);
        auth::client_with_token(&mut conn.reader, &mut conn.writer, key, token, first).await?;
        Ok(conn.authenticated(max_frame))
    }

    /// Runs the server side of the handshake on a freshly accepted socket; `expected` says which
    /// child tokens may stand in for the challenge (see [`auth::server_or_token`]); frames
    /// either way are at most `max_frame` bytes.
    ///
    /// # Errors
    /// `Authentication` when the peer does not hold `key`; `Io`.
    pub(crate) async fn accept(
        halves: local::Halves,
        key: &AuthKey,
        expected: &(dyn Fn(u64) -> bool + Sync),
        max_frame: usize,
    ) -> Result<(Self, auth::Peer)> {
        let mut conn = frames(halves, max_frame);
        let peer = auth::server_or_token(&mut conn.reader, &mut conn.writer, key, expected).await?;
        Ok((conn.authenticated(max_frame), peer))
    }
}

/// One outgoing message: an encoded header followed by an opaque body.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) head: Vec<u8>,
    /// Shared so that a sender may keep the body (to send it again elsewhere) without a copy;
    /// its buffer goes back to the pool when the last holder (often the writer task, once the
    /// message is written) drops it.
    pub(crate) body: Shared,
    /// Told once this message (and everything before it) has been flushed to the OS.
    pub(crate) ack: Option<tokio::sync::oneshot::Sender<()>>,
    /// Released once the message has been written: a sender's window of bytes in flight.
    pub(crate) window: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Outgoing {
    /// A message without acknowledgement.
    pub(crate) fn new(head: Vec<u8>, body: impl IntoShared) -> Self {
        Outgoing {
            head,
            body: body.into_shared(),
            ack: None,
            window: None,
        }
    }

    /// The same message, with `ack` told once it (and everything before it) has been flushed.
    pub(crate) fn acked(mut self, ack: tokio::sync::oneshot::Sender<()>) -> Self {
        self.ack = Some(ack);
        self
    }

    /// Not a message: `ack` is told once everything queued before it has been flushed.
    pub(crate) fn flush_marker(ack: tokio::sync::oneshot::Sender<()>) -> Self {
        Outgoing {
            head: Vec::new(),
            body: Shared::default(),
            ack: Some(ack),
            window: None,
        }
    }
}

/// The sending side of a connection, shared by every task that talks to the peer.
pub(crate) type Outbox = mpsc::UnboundedSender<Outgoing>;

/// Moves the writer into a task that sends what arrives on the returned [`Outbox`], batching
/// whatever is queued into one flush. The task ends when every `Outbox` is dropped or the peer
/// is gone.
pub(crate) fn spawn_writer(writer: FrameWriter<SendHalf>) -> (Outbox, tokio::task::JoinHandle<()>) {
    spawn_shared_writer(Arc::new(tokio::sync::Mutex::new(writer)))
}

/// The writing side of a connection that more than one thread writes to; each holder writes and
/// flushes whole messages under the lock.
pub(crate) type SharedWriter = Arc<tokio::sync::Mutex<FrameWriter<SendHalf>>>;

/// As [`spawn_writer`], over a writer that others may also lock to write directly.
pub(crate) fn spawn_shared_writer(shared: SharedWriter) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let task = tokio::spawn(async move {
        let mut acks = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut writer = shared.lock().await;
            let mut next = Some(first);
            while let Some(mut msg) = next {
                // An empty head is a flush marker (every message has a head).
                if !msg.head.is_empty()
                    && writer.write_message(&[&msg.head, &msg.body]).await.is_err()
                {
                    return;
                }
                acks.extend(msg.ack.take());
                // Written: the window is released, and the body goes back to the pool if this
                // was its last holder.
                drop(msg);
                next = rx.try_recv().ok();
            }
            if writer.flush().await.is_err() {
                return;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
    });
    (tx, task)
}
