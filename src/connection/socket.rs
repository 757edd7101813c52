//! The byte machinery under a [`Connection`](super::Connection): the socket (registered with
//! tokio on first use), a cancel-safe frame reader and a batching frame writer.
//!
//! The wire format is the transport's (`transport::frame`): a 4-byte little-endian header whose
//! low 31 bits are the payload length and whose top bit says the message goes on in the next
//! frame. The transport's `FrameReader`/`FrameWriter` are not used because a connection needs
//! what they do not give: a `recv` that can be cancelled (by `poll`, `wait`, `select!` or a
//! timeout) without losing a byte, a writer shared by `&self` callers, and small sends that do
//! not cost a syscall each. So every socket read here is a non-blocking `try_read` into state
//! that outlives the future, and every write a non-blocking `try_write` under a lock.

use crate::error::{Error, Result};
use crate::transport::frame::Decoder;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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

/// Which kind of socket a descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Kind {
    Unix,
    Tcp,
}

/// A connected stream socket registered with tokio.
///
/// Not tokio's `UnixStream`/`TcpStream`: those listen for readability and writability at once,
/// and epoll is edge-triggered, so every time the peer reads, the freed buffer space wakes the
/// thread parked in `epoll_wait` for nothing. In a ping-pong that is one useless wake-up per
/// message, which made a round trip twice Python's. Here the read side is registered for
/// readability only; writes go straight to a second descriptor of the socket, which is
/// registered for writability only while a write would block.
#[derive(Debug)]
pub(super) struct Socket {
    read: AsyncFd<OwnedFd>,
    write: OwnedFd,
    /// The write descriptor's registration, while a write waits for buffer space.
    blocked: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    is_blocked: AtomicBool,
}

/// Registers a descriptor with the runtime for `interest` only.
///
/// `with_interest` is deprecated in newer tokio for types whose descriptor could change under
/// it; an `OwnedFd` keeps its descriptor for its whole life.
#[allow(deprecated)]
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}

impl Socket {
    fn register(fd: OwnedFd, kind: Kind) -> io::Result<Self> {
        let fd = match kind {
            Kind::Unix => {
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true)?;
                OwnedFd::from(s)
            }
            Kind::Tcp => {
                let s = std::net::TcpStream::from(fd);
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                OwnedFd::from(s)
            }
        };
        let write = fd.try_clone()?;
        Ok(Socket {
            read: register(fd, Interest::READABLE)?,
            write,
            blocked: Mutex::new(None),
            is_blocked: AtomicBool::new(false),
        })
    }

    /// Waits until the socket is readable (or closed).
    pub(super) async fn readable(&self) -> io::Result<()> {
        // The guard is dropped without clearing: the read that follows clears readiness if it
        // finds nothing.
        self.read.readable().await.map(drop)
    }

    /// Waits until a write can make progress.
    pub(super) async fn writable(&self) -> io::Result<()> {
        let registration = {
            let mut slot = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Some(r) => Arc::clone(r),
                None => {
                    // Registering reports the current state: space freed since the failed
                    // write is not missed.
                    let r = Arc::new(register(self.write.try_clone()?, Interest::WRITABLE)?);
                    *slot = Some(Arc::clone(&r));
                    self.is_blocked.store(true, Ordering::Relaxed);
                    r
                }
            }
        };
        let mut guard = registration.writable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Reads into the spare capacity of `buf`: if the runtime says the socket is readable,
    /// or, with `now`, whatever it says.
    fn try_read_buf(&self, buf: &mut Vec<u8>, limit: usize, now: bool) -> io::Result<usize> {
        let mut read = |fd: &OwnedFd| {
            let spare = buf.spare_capacity_mut();
            let len = limit.min(spare.len());
            let spare = &mut spare[..len];
            // SAFETY: `recv` writes at most `spare.len()` bytes into `spare`, memory that `buf`
            // owns and that we borrow uniquely; it reads nothing from it.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        };
        if now {
            read(self.read.get_ref())
        } else {
            self.read.try_io(Interest::READABLE, read)
        }
    }

    /// Writes what it can of `buf` without waiting.
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes what it can of `bufs` without waiting.
    pub(super) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero `msghdr` is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; sendmsg only reads the
        // slices, so the `*mut` it asks for is never written through.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(1024) as _;
        // SAFETY: `msg` points at `bufs`, which outlive the call; MSG_NOSIGNAL turns a closed
        // peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::sendmsg(self.write.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if self.is_blocked.load(Ordering::Relaxed) {
            // Space again: stop hearing of every read the peer makes.
            *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.is_blocked.store(false, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// A socket that is registered with tokio the first time it is used, so that a connection can be
/// made (or received from another process) where no runtime is current, such as while the
/// arguments of a synchronous entry are decoded.
#[derive(Debug)]
pub(super) struct LazySocket {
    socket: OnceLock<Socket>,
    pending: Mutex<Option<OwnedFd>>,
    kind: Kind,
    raw: RawFd,
}

impl LazySocket {
    pub(super) fn new(fd: OwnedFd, kind: Kind) -> Self {
        LazySocket {
            raw: fd.as_raw_fd(),
            socket: OnceLock::new(),
            pending: Mutex::new(Some(fd)),
            kind,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
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
        let socket = Socket::register(fd.try_clone()?, self.kind)?;
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

/// Writes `bytes` to the non-blocking socket `fd`, waiting for room up to `deadline`; used where
/// nothing can be awaited (drop, serialization).
///
/// # Errors
/// `Io` when the peer is gone or the deadline passes.
pub(super) fn write_blocking(fd: RawFd, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
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

/// How long a dropped or serialized connection may wait for the socket to take what it buffered.
pub(super) const FLUSH_ON_DROP: Duration = Duration::from_secs(2);
