//! The one socket type: a connected stream socket, local (Unix) or TCP, as two halves that read
//! and write without going through tokio's socket types.
//!
//! # Why not tokio's socket
//! A socket registered with tokio listens for both readability and writability, and epoll is
//! edge-triggered: every time the peer reads, the freed buffer space is a "writable" edge that
//! wakes the thread parked in `epoll_wait`, which then finds nothing to do. In a ping-pong that
//! is one useless wake-up per message (it made a pipe's round trip twice Python's), and a traced
//! pool call showed the worker's runtime thread woken twice that way per call. So the halves
//! here are two descriptors of one socket: the read half is registered for readability only; the
//! write half writes directly (`sendmsg`) and registers for writability only while a write would
//! block (a full socket buffer), and drops that registration with its next write that succeeds.
//!
//! # Flavors
//! The flavor ([`Flavor`]) is chosen when the socket is made and only matters there (TCP turns
//! Nagle off); reads and writes are the same system calls on either, so nothing on the hot path
//! matches on it. Every half's operations take `&self` where they can, so a connection shared
//! by many tasks reads and writes under its own locks; the halves are also `AsyncRead` and
//! `AsyncWrite` for the framed readers and writers of `frame.rs`.

use crate::error::{Error, Result};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Which kind of socket a descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Flavor {
    /// A Unix stream socket: a pipe, a run's local socket, a `Listener` on a path.
    Local,
    /// A TCP connection.
    Tcp,
}

/// A connected stream socket registered with tokio: both halves, used through `&self`.
#[derive(Debug)]
pub(crate) struct Socket {
    recv: RecvHalf,
    send: SendHalf,
}

/// Registers a descriptor with the runtime for `interest` only.
///
/// `with_interest` is deprecated in newer tokio for types whose descriptor could change under
/// it; an `OwnedFd` keeps its descriptor for its whole life, and this form works across the
/// tokio versions `Cargo.toml` allows.
#[allow(deprecated)]
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}

impl Socket {
    /// Makes `fd` (a connected socket of `flavor`) non-blocking and registers it with the
    /// runtime, which must be entered.
    ///
    /// # Errors
    /// `Io` outside a runtime, or when the descriptor cannot be set up.
    pub(crate) fn new(fd: OwnedFd, flavor: Flavor) -> io::Result<Self> {
        let fd = match flavor {
            Flavor::Local => {
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true)?;
                OwnedFd::from(s)
            }
            Flavor::Tcp => {
                let s = std::net::TcpStream::from(fd);
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                OwnedFd::from(s)
            }
        };
        let write = fd.try_clone()?;
        Ok(Socket {
            recv: RecvHalf(Recv::Registered(register(fd, Interest::READABLE)?)),
            send: SendHalf {
                fd: write,
                blocked: Mutex::new(None),
                is_blocked: AtomicBool::new(false),
            },
        })
    }

    /// The halves, for a reader task and writers that own one each.
    pub(crate) fn into_halves(self) -> (RecvHalf, SendHalf) {
        (self.recv, self.send)
    }

    /// Waits until the socket is readable (or closed).
    ///
    /// # Errors
    /// `Io` from the runtime.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.recv.readable().await
    }

    /// Reads into the spare capacity of `buf`, at most `limit` bytes: if the runtime says the
    /// socket is readable, or, with `now`, whatever it says.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is there; other `Io` errors of `recv(2)`.
    pub(crate) fn try_read_buf(
        &self,
        buf: &mut Vec<u8>,
        limit: usize,
        now: bool,
    ) -> io::Result<usize> {
        self.recv.try_read_buf(buf, limit, now)
    }

    /// Waits until a write can make progress.
    ///
    /// # Errors
    /// `Io` when the descriptor cannot be registered.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is written.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.send.writable().await
    }

    /// Writes what it can of `buf` without waiting.
    ///
    /// # Errors
    /// `WouldBlock` when the socket's buffer is full; `Io` when the peer is gone.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.send.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes what it can of `bufs` without waiting.
    ///
    /// # Errors
    /// As [`Socket::try_write`].
    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send.try_write_vectored(bufs)
    }
}

/// The read half of a socket.
#[derive(Debug)]
pub(crate) struct RecvHalf(Recv);

#[derive(Debug)]
enum Recv {
    /// Registered with the runtime for readability: reads wait for its I/O driver.
    Registered(AsyncFd<OwnedFd>),
    /// Out of the runtime: a read waits in poll(2) on the thread that reads, and no thread
    /// parked in the runtime wakes for what arrives (see [`RecvHalf::block`]).
    Blocking(OwnedFd),
    /// Registering again failed: reads fail.
    Lost,
}

fn lost() -> io::Error {
    io::Error::other("the socket could not be registered with the runtime again")
}

/// `recv(2)` of at most `len` bytes into `ptr`, without waiting.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes for the duration of the call.
unsafe fn recv(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller vouches for `ptr` and `len`; `recv` writes at most `len` bytes there
    // and reads nothing from it.
    let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Reads into the spare capacity of `buf`, at most `limit` bytes.
fn recv_vec(fd: RawFd, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = limit.min(spare.len());
    // SAFETY: the first `len` bytes of the spare capacity are memory `buf` owns and that we
    // borrow uniquely. Into the uninitialized space as it is: zeroing it first would cost, for a
    // large frame read in socket-sized pieces, a pass over the rest of the frame per piece.
    let n = unsafe { recv(fd, spare.as_mut_ptr().cast(), len)? };
    // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Reads into the unfilled part of `buf`.
fn recv_read_buf(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: `recv` only writes into the slice; no byte is de-initialized.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: `unfilled` is memory we borrow uniquely, `unfilled.len()` bytes long.
    let n = unsafe { recv(fd, unfilled.as_mut_ptr().cast(), unfilled.len())? };
    // SAFETY: `recv` initialized the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(())
}

/// Waits in poll(2) until `fd` is readable (or closed).
fn wait_readable(fd: RawFd) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    if unsafe { libc::poll(&mut poll, 1, -1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RecvHalf {
    /// Takes the socket out of the runtime: until [`unblock`](Self::unblock), a read waits in
    /// poll(2) on the thread that polls it (and so never returns `Pending`). A spare's call
    /// thread reads its assignment this way, so that what arrives wakes that thread alone.
    pub(crate) fn block(&mut self) {
        if let Recv::Registered(_) = self.0 {
            if let Recv::Registered(fd) = std::mem::replace(&mut self.0, Recv::Lost) {
                self.0 = Recv::Blocking(fd.into_inner());
            }
        }
    }

    /// Registers the socket with the runtime again; must run where a runtime is entered.
    ///
    /// # Errors
    /// `Io` if the registration fails; reads then fail too.
    pub(crate) fn unblock(&mut self) -> Result<()> {
        if let Recv::Blocking(_) = self.0 {
            if let Recv::Blocking(fd) = std::mem::replace(&mut self.0, Recv::Lost) {
                self.0 = Recv::Registered(register(fd, Interest::READABLE)?);
            }
        }
        Ok(())
    }

    /// The descriptor, out of the runtime (for a caller that hands the socket on).
    ///
    /// # Errors
    /// `Io` if an earlier registration failed and the descriptor is gone.
    pub(crate) fn into_fd(self) -> Result<OwnedFd> {
        match self.0 {
            Recv::Registered(fd) => Ok(fd.into_inner()),
            Recv::Blocking(fd) => Ok(fd),
            Recv::Lost => Err(Error::Io(lost())),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match &self.0 {
            // The guard is dropped without clearing: the read that follows clears readiness if
            // it finds nothing.
            Recv::Registered(fd) => fd.readable().await.map(drop),
            // Out of the runtime, a read does its own waiting.
            Recv::Blocking(_) => Ok(()),
            Recv::Lost => Err(lost()),
        }
    }

    /// Reads into the spare capacity of `buf`, at most `limit` bytes, without waiting: if the
    /// runtime says the socket is readable, or, with `now`, whatever it says.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is there; other `Io` errors of `recv(2)`.
    pub(crate) fn try_read_buf(
        &self,
        buf: &mut Vec<u8>,
        limit: usize,
        now: bool,
    ) -> io::Result<usize> {
        match &self.0 {
            Recv::Registered(fd) if !now => fd.try_io(Interest::READABLE, |fd| {
                recv_vec(fd.as_raw_fd(), buf, limit)
            }),
            Recv::Registered(fd) => recv_vec(fd.as_raw_fd(), buf, limit),
            Recv::Blocking(fd) => recv_vec(fd.as_raw_fd(), buf, limit),
            Recv::Lost => Err(lost()),
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = match &self.get_mut().0 {
            Recv::Registered(fd) => fd,
            Recv::Blocking(fd) => loop {
                match recv_read_buf(fd.as_raw_fd(), buf) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match wait_readable(fd.as_raw_fd()) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Recv::Lost => return Poll::Ready(Err(lost())),
        };
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| recv_read_buf(fd.as_raw_fd(), buf)) {
                Ok(Ok(())) => return Poll::Ready(Ok(())),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: the readiness was cleared, wait for the next edge.
                Err(_would_block) => {}
            }
        }
    }
}

/// The write half of a socket: a second descriptor of it.
#[derive(Debug)]
pub(crate) struct SendHalf {
    fd: OwnedFd,
    /// The descriptor's registration for writability, while a write waits for buffer space.
    blocked: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    is_blocked: AtomicBool,
}

impl SendHalf {
    /// The registration for writability, made if there is none: registering reports the
    /// current state, so a space freed since the failed write is not missed.
    fn registration(&self) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
        let mut slot = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &*slot {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(register(self.fd.try_clone()?, Interest::WRITABLE)?);
        *slot = Some(Arc::clone(&r));
        self.is_blocked.store(true, Ordering::Relaxed);
        Ok(r)
    }

    async fn writable(&self) -> io::Result<()> {
        let registration = self.registration()?;
        let mut guard = registration.writable().await?;
        guard.clear_ready();
        Ok(())
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero `msghdr` is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; sendmsg only reads the
        // slices, so the `*mut` it asks for is never written through.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(1024) as _;
        // SAFETY: `msg` points at `bufs`, which outlive the call; MSG_NOSIGNAL turns a closed
        // peer into EPIPE instead of SIGPIPE, and MSG_DONTWAIT makes a full buffer WouldBlock.
        let n = unsafe {
            libc::sendmsg(
                self.fd.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if self.is_blocked.load(Ordering::Relaxed) {
            // Space again: stop hearing of every read the peer makes.
            *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.is_blocked.store(false, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Runs a write of `bufs` until it does not block, waiting for buffer space in between.
    fn poll_write_all(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.try_write_vectored(bufs) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let registration = self.registration()?;
                    let mut guard = ready!(registration.poll_write_ready(cx))?;
                    guard.clear_ready();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_all(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_all(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: each write went to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As before: the socket closes when both halves are dropped.
        Poll::Ready(Ok(()))
    }
}

/// Writes `bytes` to the non-blocking socket `fd`, waiting for room up to `deadline`; used where
/// nothing can be awaited (drop, serialization).
///
/// # Errors
/// `Io` when the peer is gone or the deadline passes.
pub(crate) fn write_blocking(fd: RawFd, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialised slice for the length passed, and `fd` is a
        // descriptor owned by the caller for the duration of the call.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {}
            _ => return Err(err),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
    Ok(())
}
