//! What a [`Connection`](super::Connection) keeps beside the transport's socket: the socket
//! itself, registered with tokio on first use; the read state (the transport's frame decoder,
//! end of stream, the spin heuristic); and the write state of its batching writer.
//!
//! The wire format and the socket are the transport's (`transport::frame`,
//! `transport::socket`). A connection does not use the transport's `FrameReader`/`FrameWriter`
//! because it needs a writer shared by `&self` callers and small sends that do not cost a
//! syscall each, and reads driven by `poll`, `wait` and `recv` alike. So every socket read here
//! is a non-blocking `try_read` into the decoder, whose state outlives the future (a cancelled
//! `recv` loses nothing), and every write a non-blocking `try_write` under a lock.

use crate::error::{Error, Result};
use crate::transport::frame::Decoder;
pub(super) use crate::transport::socket::{Flavor, Socket};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Reads are made in chunks of this size into the read buffer; a frame whose payload still
/// missing is at least this large is read straight into its message.
const READ_CHUNK: usize = 64 * 1024;
/// Messages of at least this many bytes are written straight from the caller's buffer; smaller
/// ones are copied into the write buffer and share syscalls.
pub(super) const DIRECT_WRITE: usize = 64 * 1024;
/// A sender that finds this many bytes waiting writes them itself before returning.
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// A send into an empty buffer writes its message at once if no send did so within this time:
/// an occasional message (a request, a reply) goes out without waiting for the flusher, while a
/// burst still shares syscalls.
pub(super) const WRITE_THROUGH_GAP: Duration = Duration::from_micros(20);

/// A socket that is registered with tokio the first time it is used, so that a connection can be
/// made (or received from another process) where no runtime is current, such as while the
/// arguments of a synchronous entry are decoded.
#[derive(Debug)]
pub(super) struct LazySocket {
    socket: OnceLock<Socket>,
    pending: Mutex<Option<OwnedFd>>,
    flavor: Flavor,
    raw: RawFd,
}

impl LazySocket {
    pub(super) fn new(fd: OwnedFd, flavor: Flavor) -> Self {
        LazySocket {
            raw: fd.as_raw_fd(),
            socket: OnceLock::new(),
            pending: Mutex::new(Some(fd)),
            flavor,
        }
    }

    pub(super) fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The descriptor, valid as long as `self` (whether registered yet or not).
    pub(super) fn raw(&self) -> RawFd {
        self.raw
    }

    /// The registered socket.
    ///
    /// # Errors
    /// `Io` outside a tokio runtime, or when registration fails.
    pub(super) fn get(&self) -> Result<&Socket> {
        if let Some(socket) = self.socket.get() {
            return Ok(socket);
        }
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(socket) = self.socket.get() {
            return Ok(socket);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Io(io::Error::other(
                "a Connection can only be used inside a tokio runtime (the one of \
                 #[multiprocessing::process_main], or any other)",
            )));
        }
        let fd = pending.as_ref().ok_or_else(|| {
            Error::Io(io::Error::other(
                "the connection's socket could not be registered",
            ))
        })?;
        // A duplicate is registered and the original kept open beside it (one description, two
        // numbers): `raw` stays valid for as long as `self`, and a failed registration closes
        // only the duplicate, so it can be tried again.
        let socket = Socket::new(fd.try_clone()?, self.flavor)?;
        let _ = self.socket.set(socket);
        self.socket
            .get()
            .ok_or_else(|| Error::Io(io::Error::other("socket registration was lost")))
    }
}

/// What has been read from the socket and not yet handed out: the transport's decoder, and
/// what the connection knows about the stream besides.
#[derive(Debug)]
pub(super) struct ReadState {
    decoder: Decoder,
    /// The peer closed its end (or reset it), or the stream broke.
    pub(super) eof: bool,
    /// The last wait for the peer was short: a request/reply exchange, worth a brief spin.
    pub(super) quick_replies: bool,
}

impl ReadState {
    pub(super) fn new(leftover: Vec<u8>, max_frame: usize) -> Self {
        ReadState {
            decoder: Decoder::new(leftover, READ_CHUNK, max_frame),
            eof: false,
            quick_replies: false,
        }
    }

    /// True when a message is waiting or the stream has ended: `recv` would not wait.
    pub(super) fn is_ready(&mut self) -> bool {
        if self.eof || self.decoder.holds_message() {
            return true;
        }
        match self.next_message() {
            Ok(Some(m)) => {
                self.decoder.put_back(m);
                true
            }
            Ok(None) => false,
            // Ready: the next read reports the failure (as `Closed`: the stream is given up).
            Err(_) => true,
        }
    }

    /// Keeps `message` for the next receive (one whose buffer was too short, or `poll`).
    pub(super) fn put_back(&mut self, message: Vec<u8>) {
        self.decoder.put_back(message);
    }

    /// Calls `f` on the next whole message, if one has arrived; small messages whose frame is
    /// whole in the read buffer are not copied.
    ///
    /// # Errors
    /// As [`ReadState::next_message`].
    pub(super) fn with_next<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let result = self.decoder.with_next(f);
        self.eof |= result.is_err();
        result
    }

    /// Takes the next whole message off the buffered bytes, if they hold one.
    ///
    /// # Errors
    /// `FrameTooLarge` for a frame over the limit (the stream is then unusable).
    pub(super) fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        let result = self.decoder.next_message();
        self.eof |= result.is_err();
        result
    }

    /// What `recv` reports once the stream has ended.
    pub(super) fn end_error(&self) -> Error {
        self.decoder.end_error()
    }

    /// Reads what the socket has, without waiting. Sets `eof` at end of stream.
    ///
    /// # Errors
    /// `Io` for errors other than "nothing to read yet" and a reset by the peer (which is an end).
    pub(super) fn fill(&mut self, socket: &Socket) -> Result<()> {
        self.fill_with(socket, false)
    }

    /// As [`ReadState::fill`]; `now` reads the socket even where the runtime has not reported
    /// it readable yet (while spinning, the runtime's poller does not run on this thread).
    pub(super) fn fill_with(&mut self, socket: &Socket, now: bool) -> Result<()> {
        let (space, limit) = self.decoder.read_space();
        match socket.try_read_buf(space, limit, now) {
            Ok(0) => self.eof = true,
            Ok(n) => self.decoder.filled(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
            Err(e) => return Err(Error::Io(e)),
        }
        Ok(())
    }

    /// The bytes read ahead (with a message held back by `poll`, framed again), for handing the
    /// connection to another process; `None` in the middle of a message.
    pub(super) fn leftover(&self, max_frame: usize) -> Option<Vec<u8>> {
        self.decoder.leftover(max_frame)
    }
}

/// What has been sent and not yet written to the socket.
#[derive(Debug, Default)]
pub(super) struct WriteState {
    pub(super) buf: Vec<u8>,
    /// A large message is being written straight from its sender's buffer: nobody else writes.
    pub(super) busy: bool,
    /// The socket failed (the peer is gone): every send fails.
    pub(super) failed: bool,
    /// The flusher task exists.
    pub(super) flusher: bool,
    /// The flusher has been told to run and has not yet found the buffer empty.
    pub(super) scheduled: bool,
    /// When a send last wrote its message itself (see `Inner::write_small`).
    pub(super) last_direct: Option<std::time::Instant>,
}

/// How long a dropped or serialized connection may wait for the socket to take what it buffered.
pub(super) const FLUSH_ON_DROP: Duration = Duration::from_secs(2);
