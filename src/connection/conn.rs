//! [`Connection`]: one end of a pipe or of a `Listener`/`Client` pair.

use super::socket::{
    Flavor, LazySocket, ReadState, Socket, WriteState, DIRECT_WRITE, FLUSH_ON_DROP, HIGH_WATER,
    WRITE_THROUGH_GAP,
};
use crate::buffers::Buffer;
use crate::error::{Error, Result, SendError};
use crate::transport::fd::{self, Ticket};
use crate::transport::frame::{FrameCursor, Header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Which directions an end may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Mode {
    Duplex,
    ReceiveOnly,
    SendOnly,
}

/// The state one end shares with its flusher task.
#[derive(Debug)]
pub(super) struct Inner {
    socket: LazySocket,
    read: tokio::sync::Mutex<ReadState>,
    write: std::sync::Mutex<WriteState>,
    /// Wakes the flusher task.
    flush: Arc<Notify>,
    /// Told when a large write ends (`busy` goes false) or the socket fails.
    idle: Notify,
    max_frame: usize,
}

impl Inner {
    fn lock_write(&self) -> MutexGuard<'_, WriteState> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the socket failed: the buffered bytes can never be written.
    fn fail(&self, w: &mut WriteState) {
        w.failed = true;
        w.buf = Vec::new();
        w.busy = false;
        self.idle.notify_waiters();
    }

    /// Makes sure the flusher will write the buffer soon.
    fn schedule(self: &Arc<Self>, w: &mut WriteState) {
        if w.scheduled || w.buf.is_empty() {
            return;
        }
        if !w.flusher {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                // No runtime here (a drop outside one): the next operation or the final drop
                // writes the buffer.
                return;
            };
            w.flusher = true;
            handle.spawn(flusher(Arc::downgrade(self), Arc::clone(&self.flush)));
        }
        w.scheduled = true;
        self.flush.notify_one();
    }

    /// Writes buffered bytes until at most `limit` remain. As the flusher (`flusher = true`),
    /// stops instead of waiting for a large write, and clears `scheduled` when it stops.
    async fn drain(&self, limit: usize, flusher: bool) -> Result<()> {
        let socket = self.socket.get()?;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            let wait_idle = {
                let mut w = self.lock_write();
                if w.failed {
                    w.scheduled &= !flusher;
                    return Err(Error::Closed);
                }
                if w.busy {
                    if flusher {
                        w.scheduled = false;
                        return Ok(());
                    }
                    idle.as_mut().enable();
                    true
                } else if w.buf.len() <= limit {
                    w.scheduled &= !flusher;
                    return Ok(());
                } else {
                    match socket.try_write(&w.buf) {
                        Ok(n) => {
                            w.buf.drain(..n);
                            continue;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                        Err(_) => {
                            self.fail(&mut w);
                            w.scheduled &= !flusher;
                            return Err(Error::Closed);
                        }
                    }
                }
            };
            if wait_idle {
                idle.await;
            } else {
                socket.writable().await?;
            }
        }
    }

    /// Writes what the buffer holds without waiting (before a read, so that a request sent just
    /// before goes out at once).
    fn try_flush(&self) {
        let Ok(socket) = self.socket.get() else {
            return;
        };
        let mut w = self.lock_write();
        while !w.busy && !w.failed && !w.buf.is_empty() {
            match socket.try_write(&w.buf) {
                Ok(n) => {
                    w.buf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.fail(&mut w),
            }
        }
    }

    /// Writes the buffer synchronously, waiting at most [`FLUSH_ON_DROP`].
    fn flush_blocking(&self) -> std::io::Result<()> {
        let mut w = self.lock_write();
        if w.failed || w.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut w.buf);
        let result = crate::transport::socket::write_blocking(
            self.socket.raw(),
            &buf,
            Instant::now() + FLUSH_ON_DROP,
        );
        if result.is_err() {
            self.fail(&mut w);
        }
        result
    }

    /// Queues a whole message of up to [`DIRECT_WRITE`] bytes made of `parts`.
    async fn write_small(self: &Arc<Self>, parts: &[&[u8]]) -> Result<()> {
        self.socket.get()?;
        {
            let mut w = self.lock_write();
            if w.failed {
                return Err(Error::Closed);
            }
            if w.buf.is_empty() && !w.busy {
                let now = Instant::now();
                if w.last_direct.is_none_or(|t| now - t >= WRITE_THROUGH_GAP) {
                    w.last_direct = Some(now);
                    if let Some(done) = self.write_through(&mut w, parts) {
                        return done;
                    }
                }
            }
            for part in parts {
                w.buf.extend_from_slice(part);
            }
            if w.buf.len() < HIGH_WATER || w.busy {
                self.schedule(&mut w);
                return Ok(());
            }
        }
        // Over the high-water mark: write until under it ourselves (this is the backpressure).
        self.drain(HIGH_WATER / 2, false).await?;
        let mut w = self.lock_write();
        self.schedule(&mut w);
        Ok(())
    }

    /// Tries to write a whole small message at once; `None` if the socket took none of it (it is
    /// then queued as usual). A message written in part is completed through the buffer.
    fn write_through(self: &Arc<Self>, w: &mut WriteState, parts: &[&[u8]]) -> Option<Result<()>> {
        let socket = self.socket.get().ok()?;
        let slices: Vec<std::io::IoSlice<'_>> =
            parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match socket.try_write_vectored(&slices) {
            Ok(n) if n == total => Some(Ok(())),
            Ok(mut n) => {
                for part in parts {
                    let skip = n.min(part.len());
                    n -= skip;
                    w.buf.extend_from_slice(&part[skip..]);
                }
                self.schedule(w);
                Some(Ok(()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(_) => {
                self.fail(w);
                Some(Err(Error::Closed))
            }
        }
    }

    /// Writes `payload` as one message straight from the caller's buffer, after what was queued
    /// before it.
    async fn write_large(self: &Arc<Self>, payload: &[u8]) -> Result<()> {
        let socket = self.socket.get()?;
        // Become the only writer.
        let old = loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            {
                let mut w = self.lock_write();
                if w.failed {
                    return Err(Error::Closed);
                }
                if !w.busy {
                    w.busy = true;
                    break w.buf.len();
                }
                idle.as_mut().enable();
            }
            idle.await;
        };
        let mut large = LargeWrite {
            inner: self,
            old,
            cursor: FrameCursor::new(payload, self.max_frame),
            finished: false,
        };
        large.run(socket).await
    }
}

/// A large write in progress. Dropped before the end (the send was cancelled), it puts the
/// unwritten rest of the message into the buffer, where the one before it ended, so the stream
/// stays whole and the message is still delivered.
struct LargeWrite<'a, 'p> {
    inner: &'a Arc<Inner>,
    /// Bytes at the front of the buffer that were queued before this message.
    old: usize,
    cursor: FrameCursor<'p>,
    finished: bool,
}

impl LargeWrite<'_, '_> {
    async fn run(&mut self, socket: &Socket) -> Result<()> {
        // What was queued before goes first.
        while self.old > 0 {
            {
                let mut w = self.inner.lock_write();
                if w.failed {
                    self.finished = true;
                    return Err(Error::Closed);
                }
                match socket.try_write(&w.buf[..self.old]) {
                    Ok(n) => {
                        w.buf.drain(..n);
                        self.old -= n;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        self.inner.fail(&mut w);
                        self.finished = true;
                        return Err(Error::Closed);
                    }
                }
            }
            socket.writable().await?;
        }
        while !self.cursor.is_done() {
            let head = self.cursor.head();
            let written = socket.try_write_vectored(&self.cursor.current(&head));
            match written {
                Ok(n) => self.cursor.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    socket.writable().await?;
                }
                Err(_) => {
                    let mut w = self.inner.lock_write();
                    self.inner.fail(&mut w);
                    self.finished = true;
                    return Err(Error::Closed);
                }
            }
        }
        self.end();
        Ok(())
    }

    fn end(&mut self) {
        self.finished = true;
        let mut w = self.inner.lock_write();
        if !self.cursor.is_done() && !w.failed {
            let mut rest = Vec::new();
            self.cursor.append_rest(&mut rest);
            let at = self.old.min(w.buf.len());
            w.buf.splice(at..at, rest);
        }
        w.busy = false;
        self.inner.idle.notify_waiters();
        self.inner.schedule(&mut w);
    }
}

impl Drop for LargeWrite<'_, '_> {
    fn drop(&mut self) {
        if !self.finished {
            self.end();
        }
    }
}

/// The flusher task of one end: writes the buffer when told to. Holds only a weak reference, so
/// the socket closes when the last handle is dropped.
async fn flusher(inner: Weak<Inner>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.drain(0, true).await.is_err() {
            return;
        }
    }
}

/// One end of a pipe, or of a connection made by [`Listener`](super::Listener) and
/// [`Client`](super::Client), carrying values of type `T` (and raw byte messages).
///
/// Every method takes `&self`: share an end between tasks with an `Arc` (or plain references);
/// concurrent sends are whole messages each, concurrent receives each get whole messages.
/// An end is `Serialize`: hand it to a child process as (part of) an entry argument and the
/// child receives the same socket (see the [module docs](super#handing-an-end-to-another-process)).
///
/// The other end closing (or its process exiting) shows as [`Error::Closed`] on `recv` and
/// `send`, never as a hang. Ends are not `Clone`, as in Python: the socket closes when the end is
/// dropped (after what it buffered is written).
pub struct Connection<T> {
    inner: Arc<Inner>,
    mode: Mode,
    offered: fd::OfferCache,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.inner.socket.raw())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<T> Connection<T> {
    pub(super) fn from_fd(fd: OwnedFd, flavor: Flavor, mode: Mode, leftover: Vec<u8>) -> Self {
        Self::from_lazy(LazySocket::new(fd, flavor), mode, leftover)
    }

    fn from_lazy(socket: LazySocket, mode: Mode, leftover: Vec<u8>) -> Self {
        let max_frame = crate::hub::max_frame();
        Connection {
            inner: Arc::new(Inner {
                socket,
                read: tokio::sync::Mutex::new(ReadState::new(leftover, max_frame)),
                write: std::sync::Mutex::new(WriteState::default()),
                flush: Arc::new(Notify::new()),
                idle: Notify::new(),
                max_frame,
            }),
            mode,
            offered: fd::OfferCache::default(),
            _type: PhantomData,
        }
    }

    fn check_send(&self) -> Result<()> {
        if self.mode == Mode::ReceiveOnly {
            return Err(Error::InvalidArgument(
                "this end of a simplex pipe only receives (pipe_simplex returns (receiver, sender))"
                    .into(),
            ));
        }
        Ok(())
    }

    fn check_recv(&self) -> Result<()> {
        if self.mode == Mode::SendOnly {
            return Err(Error::InvalidArgument(
                "this end of a simplex pipe only sends (pipe_simplex returns (receiver, sender))"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Sends one message of raw bytes (Python's `send_bytes`). The peer reads it with
    /// [`recv_bytes`](Self::recv_bytes) or [`recv_bytes_into`](Self::recv_bytes_into).
    ///
    /// Returns once the message is written to the socket or queued in this end's buffer, which
    /// the end writes as soon as the task yields (see [`send`](Self::send)). Messages of 64 KiB
    /// or more are written straight from `bytes`, without a copy. There is no size limit:
    /// messages larger than the frame limit cross as several frames.
    ///
    /// # Cancel safety
    /// Once polled, the message is sent whole even if the future is dropped (the unwritten rest
    /// is queued); a message is never cut in the middle.
    ///
    /// # Errors
    /// [`Error::Closed`] when the other end is gone; [`Error::InvalidArgument`] on the receiving
    /// end of a simplex pipe; `Io` outside a tokio runtime.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.check_send()?;
        if bytes.len() + 4 < DIRECT_WRITE && bytes.len() <= self.inner.max_frame {
            let head = Header::single(bytes.len());
            self.inner.write_small(&[&head, bytes]).await
        } else {
            self.inner.write_large(bytes).await
        }
    }

    /// Receives one message of raw bytes (Python's `recv_bytes`). Waits until one arrives.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before it completes, no message was taken.
    ///
    /// # Errors
    /// [`Error::Closed`] when the other end is closed and every message has been read;
    /// [`Error::Protocol`] if it closed in the middle of a message; [`Error::FrameTooLarge`] for
    /// a frame over the limit; [`Error::InvalidArgument`] on the sending end of a simplex pipe.
    pub async fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.check_recv()?;
        let mut r = self.inner.read.lock().await;
        loop {
            if let Some(m) = r.next_message()? {
                return Ok(m);
            }
            self.wait_readable(&mut r, true).await?;
        }
    }

    /// Receives one message of raw bytes into `buf`, returning its length (Python's
    /// `recv_bytes_into`).
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] `{ needed }` when the message is longer than `buf`: the message
    /// stays unread, so a call with a buffer of `needed` bytes receives it. Otherwise as
    /// [`recv_bytes`](Self::recv_bytes).
    pub async fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_recv()?;
        let mut r = self.inner.read.lock().await;
        loop {
            if let Some(m) = r.next_message()? {
                if m.len() > buf.len() {
                    let needed = m.len();
                    r.put_back(m);
                    return Err(Error::BufferTooShort { needed });
                }
                // Copied out, a large message's buffer is kept for the next one.
                let m = Buffer::from(m);
                buf[..m.len()].copy_from_slice(&m);
                return Ok(m.len());
            }
            self.wait_readable(&mut r, true).await?;
        }
    }

    /// Whether a message (or the end of the stream) is waiting, waiting up to `timeout` for one
    /// (Python's `poll`). `Duration::ZERO` checks without waiting. `true` means the next receive
    /// returns at once: with a message, or with the error that ends the stream.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is consumed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on the sending end of a simplex pipe; `Io` from the socket.
    pub async fn poll(&self, timeout: Duration) -> Result<bool> {
        self.check_recv()?;
        match tokio::time::timeout(timeout, self.ready()).await {
            Ok(result) => result.map(|()| true),
            Err(_) => {
                // Timed out (perhaps while another task was receiving); check once more.
                Ok(match self.inner.read.try_lock() {
                    Ok(mut r) => {
                        if let Ok(socket) = self.inner.socket.get() {
                            r.fill(socket)?;
                        }
                        r.is_ready()
                    }
                    Err(_) => false,
                })
            }
        }
    }

    /// Resolves once a message or the end of the stream is waiting.
    pub(super) async fn ready(&self) -> Result<()> {
        let mut r = self.inner.read.lock().await;
        while !r.is_ready() {
            // No spin here: `poll` and `wait` ask whether something came, within their timeout.
            self.wait_readable(&mut r, false).await?;
        }
        Ok(())
    }

    /// Like [`ready`](Self::ready) without waiting: `true` if it would resolve now.
    pub(super) fn is_ready_now(&self) -> bool {
        match self.inner.read.try_lock() {
            Ok(mut r) => {
                if !r.is_ready() {
                    if let Ok(socket) = self.inner.socket.get() {
                        let _ = r.fill(socket);
                    }
                }
                r.is_ready()
            }
            Err(_) => false,
        }
    }

    /// How long a receive looks for a quick reply before it parks.
    const SPIN: Duration = Duration::from_micros(40);
    /// A wait shorter than this makes the next receive spin first.
    const QUICK_REPLY: Duration = Duration::from_micros(100);

    /// Waits until the socket has something (or ends) and reads it into `r`. Writes whatever
    /// this end buffered first, so a request is on its way before we wait for its answer.
    async fn wait_readable(&self, r: &mut ReadState, spin: bool) -> Result<()> {
        if r.eof {
            return Err(r.end_error());
        }
        let socket = self.inner.socket.get()?;
        self.inner.try_flush();
        r.fill(socket)?;
        if r.eof || r.is_ready() {
            return Ok(());
        }
        if spin && r.quick_replies {
            // The peer answered quickly last time: look again for a moment before sleeping.
            // Parking in the poller and being woken costs tens of microseconds when the wake-up
            // lands on an idle CPU; a reply usually comes sooner. `yield_now` lets a peer that
            // shares this CPU run meanwhile.
            let until = Instant::now() + Self::SPIN;
            loop {
                std::thread::yield_now();
                r.fill_with(socket, true)?;
                if r.eof || r.is_ready() {
                    return Ok(());
                }
                if Instant::now() >= until {
                    break;
                }
            }
        }
        let parked = Instant::now();
        socket.readable().await?;
        r.quick_replies = parked.elapsed() < Self::QUICK_REPLY;
        r.fill(socket)
    }

    /// Waits until everything sent so far has been written to the socket.
    ///
    /// # Cancel safety
    /// Cancel-safe: the buffer is written by the end's flusher anyway.
    ///
    /// # Errors
    /// [`Error::Closed`] when the other end is gone.
    pub async fn flush(&self) -> Result<()> {
        self.inner.drain(0, false).await
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends a value (Python's `send`), encoded in postcard's format.
    ///
    /// `send` returns once the message is written to the socket *or* queued in this end's
    /// buffer. The buffer is written by a task of this end as soon as the calling task yields,
    /// by this end's next receive, by [`flush`](Self::flush), and when the end is dropped
    /// (waiting up to 2 s for the socket to take it). That is what lets a loop of small sends
    /// share one syscall among many messages. When more than 64 KiB wait, `send` writes them
    /// itself before returning, so a fast sender is held back by a slow reader.
    ///
    /// This differs from Python, whose `send` returns once the OS has the bytes: a process that
    /// ends without dropping its end (`std::process::exit`) can lose what was buffered; call
    /// [`flush`](Self::flush) first in that case.
    ///
    /// # Cancel safety
    /// Once polled, the message is sent whole even if the future is dropped.
    ///
    /// # Errors
    /// [`SendError::Closed`] with the value when the other end is gone (a value that `send`
    /// already buffered meets a gone reader later: the next `send` or [`flush`](Self::flush)
    /// then fails with `Closed`); [`SendError::Failed`] with the value when it cannot be encoded
    /// ([`Error::Encode`]), on the receiving end of a simplex pipe ([`Error::InvalidArgument`]),
    /// or with `Io` outside a tokio runtime. Each converts into [`Error`] with `?`.
    pub async fn send(&self, value: T) -> std::result::Result<(), SendError<T>> {
        match self.send_ref(&value).await {
            Ok(()) => Ok(()),
            Err(Error::Closed) => Err(SendError::Closed(value)),
            Err(e) => Err(SendError::Failed(value, e)),
        }
    }

    /// Encodes `value` and writes (or buffers) it; the caller keeps the value.
    async fn send_ref(&self, value: &T) -> Result<()> {
        self.check_send()?;
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(&[0; 4]);
        let bytes = crate::codec::encode_onto(value, bytes)
            .map_err(|e| Error::encode("a value sent on a Connection", e))?;
        let len = bytes.len() - 4;
        if bytes.len() < DIRECT_WRITE && len <= self.inner.max_frame {
            let mut bytes = bytes;
            bytes[..4].copy_from_slice(&Header::single(len));
            self.inner.write_small(&[&bytes]).await
        } else {
            self.inner.write_large(&bytes[4..]).await
        }
    }

    /// Receives a value (Python's `recv`). Waits until one arrives.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before it completes, no message was taken. Use it
    /// in `select!` or under `tokio::time::timeout` freely.
    ///
    /// # Errors
    /// [`Error::Closed`] when the other end is closed and every message has been read;
    /// [`Error::Decode`] when the message is not a `T` (the message is consumed);
    /// [`Error::Protocol`] if the other end closed in the middle of a message;
    /// [`Error::InvalidArgument`] on the sending end of a simplex pipe.
    pub async fn recv(&self) -> Result<T> {
        self.check_recv()?;
        // Cooperative scheduling: a loop over buffered messages yields now and then.
        tokio::task::consume_budget().await;
        let mut r = self.inner.read.lock().await;
        loop {
            if let Some(v) = r.with_next(|m| crate::codec::from_bytes::<T>(m))? {
                return v.map_err(|e| Error::decode("a value received on a Connection", e));
            }
            self.wait_readable(&mut r, true).await?;
        }
    }
}

impl<T> Drop for Connection<T> {
    fn drop(&mut self) {
        // A large write cannot be in progress: it borrows `self`. Best effort: a peer that does
        // not read within the bound loses what was buffered, as it would on a process exit.
        let _ = self.inner.flush_blocking();
        // Let the flusher see that the end is gone.
        self.inner.flush.notify_one();
    }
}

/// An end as it travels: where to take its socket, and which directions it may use.
#[derive(Serialize, Deserialize)]
struct Wire {
    ticket: Ticket,
    flavor: Flavor,
    mode: Mode,
    #[serde(with = "serde_bytes")]
    leftover: Vec<u8>,
}

impl<T> Serialize for Connection<T> {
    /// Offers a duplicate of the socket to the process that deserializes it (once, within
    /// two minutes). What this end buffered for writing is written first; what it read ahead
    /// travels with it.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fail = |message: String| S::Error::custom(crate::error::serde_detail(message));
        if self.inner.lock_write().busy {
            return Err(fail(
                "a Connection cannot be serialized while a send on it is in progress".into(),
            ));
        }
        self.inner
            .flush_blocking()
            .map_err(|e| fail(format!("could not write what the connection buffered: {e}")))?;
        let leftover = match self.inner.read.try_lock() {
            Ok(r) => r.leftover(self.inner.max_frame),
            Err(_) => None,
        }
        .ok_or_else(|| {
            fail("a Connection cannot be serialized while a receive on it is in progress".into())
        })?;
        // SAFETY: the descriptor is owned by `self.inner.socket` and stays open for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.inner.socket.raw()) };
        let ticket = self.offered.offer(fd).map_err(|e| fail(e.to_string()))?;
        Wire {
            ticket,
            flavor: self.inner.socket.flavor(),
            mode: self.mode,
            leftover,
        }
        .serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    /// Takes the socket offered by the serializing process (a short local round trip).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = Wire::deserialize(deserializer)?;
        let fd =
            fd::take(&wire.ticket).map_err(|e| D::Error::custom(crate::error::serde_detail(e)))?;
        Ok(Connection::from_fd(
            fd,
            wire.flavor,
            wire.mode,
            wire.leftover,
        ))
    }
}

/// A new pair of connected ends (a Unix `socketpair`).
pub(super) fn pair<T>(first: Mode, second: Mode) -> Result<(Connection<T>, Connection<T>)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    Ok((
        Connection::from_fd(a.into(), Flavor::Local, first, Vec::new()),
        Connection::from_fd(b.into(), Flavor::Local, second, Vec::new()),
    ))
}
