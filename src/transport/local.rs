//! Local sockets (`interprocess`) in a per-run private directory.

use crate::error::{Error, Result};
use interprocess::local_socket::tokio::{prelude::*, Listener as IpListener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use std::path::{Path, PathBuf};

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

// # Why not tokio's socket
// A socket registered with tokio listens for both readability and writability, and epoll is
// edge-triggered: every time the peer reads, the freed buffer space is a "writable" edge that
// wakes the thread parked in `epoll_wait`, which then finds nothing to do. A traced pool call
// showed the worker's runtime thread woken twice that way per call (after the parent read the
// call's start report and its result), two of its twelve context switches. So the halves
// here are two descriptors of one socket: the read half is registered for readability only;
// the write half writes directly and registers for writability only while a write would block
// (a full socket buffer), and drops that registration with its next write that succeeds.

/// The read half of a local socket.
#[derive(Debug)]
pub(crate) struct RecvHalf(Recv);

#[derive(Debug)]
enum Recv {
    /// Registered with the runtime for readability: reads wait for its I/O driver.
    Registered(AsyncFd<UnixStream>),
    /// Out of the runtime: a read waits in poll(2) on the thread that reads, and no thread
    /// parked in the runtime wakes for what arrives (see [`RecvHalf::block`]).
    Blocking(UnixStream),
    /// Registering again failed: reads fail.
    Lost,
}

/// The write half of a local socket: a second descriptor of the same socket.
#[derive(Debug)]
pub(crate) struct SendHalf {
    stream: UnixStream,
    /// Registered for writability while a write waits for buffer space.
    blocked: Option<AsyncFd<UnixStream>>,
}

/// The read and write halves of one local socket. The socket closes when both are dropped.
pub(crate) type Halves = (RecvHalf, SendHalf);

/// Registers a descriptor of the socket with the runtime for `interest` only.
///
/// `with_interest` is deprecated in newer tokio for types whose descriptor could change under
/// it; a `UnixStream` owns its descriptor for its whole life, and this form works across the
/// tokio versions `Cargo.toml` allows.
#[allow(deprecated)]
fn register(stream: UnixStream, interest: Interest) -> std::io::Result<AsyncFd<UnixStream>> {
    AsyncFd::with_interest(stream, interest)
}

fn halves(stream: Stream) -> Result<Halves> {
    let Stream::UdSocket(stream) = stream;
    // Leaves tokio's registration (for both directions) behind: see "Why not tokio's socket".
    let fd: OwnedFd = stream.try_into()?;
    let send = UnixStream::from(fd);
    send.set_nonblocking(true)?;
    let recv = register(send.try_clone()?, Interest::READABLE)?;
    Ok((
        RecvHalf(Recv::Registered(recv)),
        SendHalf {
            stream: send,
            blocked: None,
        },
    ))
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
            if let Recv::Blocking(stream) = std::mem::replace(&mut self.0, Recv::Lost) {
                self.0 = Recv::Registered(register(stream, Interest::READABLE)?);
            }
        }
        Ok(())
    }
}

/// `recv(2)` into the unfilled part of `buf`.
fn recv_into(fd: &UnixStream, buf: &mut ReadBuf<'_>) -> std::io::Result<()> {
    // Into the uninitialized space as it is: zeroing it first would cost, for a large frame
    // read in socket-sized pieces, a pass over the rest of the frame per piece.
    // SAFETY: `recv` only writes into the slice; no byte is de-initialized.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: `recv` writes at most `unfilled.len()` bytes into `unfilled`, memory we hold a
    // unique borrow of, and reads nothing from it.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            unfilled.as_mut_ptr().cast(),
            unfilled.len(),
            0,
        )
    };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: `recv` initialized the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(())
}

/// Waits in poll(2) until `fd` is readable (or closed).
fn wait_readable(fd: &UnixStream) -> std::io::Result<()> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    if unsafe { libc::poll(&mut poll, 1, -1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let fd = match &self.get_mut().0 {
            Recv::Registered(fd) => fd,
            Recv::Blocking(stream) => loop {
                match recv_into(stream, buf) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        match wait_readable(stream) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Recv::Lost => {
                return Poll::Ready(Err(std::io::Error::other(
                    "the socket could not be registered with the runtime again",
                )))
            }
        };
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| recv_into(fd.get_ref(), buf)) {
                Ok(Ok(())) => return Poll::Ready(Ok(())),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: the readiness was cleared, wait for the next edge.
                Err(_would_block) => {}
            }
        }
    }
}

impl SendHalf {
    /// Runs `write` until it does not block, waiting for buffer space in between.
    fn poll_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&UnixStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match write(&self.stream) {
                Ok(n) => {
                    // Space again: stop hearing of every read the peer makes.
                    self.blocked = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let blocked = match &mut self.blocked {
                        Some(blocked) => blocked,
                        // Registering reports the current state: a space freed since the
                        // failed write is not missed.
                        slot => {
                            slot.insert(register(self.stream.try_clone()?, Interest::WRITABLE)?)
                        }
                    };
                    let mut guard = ready!(blocked.poll_write_ready(cx))?;
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
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Nothing is buffered here: each write went to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // As before: the socket closes when both halves are dropped.
        Poll::Ready(Ok(()))
    }
}

/// A directory only this user can enter, holding the run's sockets. Removed on drop.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `<tmp>/mp-<pid>-<random>` with mode 0700.
    ///
    /// # Errors
    /// `Io` when the directory cannot be created.
    pub(crate) fn create() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let tag: String = super::auth::random_bytes()?[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = std::env::temp_dir().join(format!("mp-{}-{tag}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        remove_abandoned(&std::env::temp_dir());
        Ok(RunDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the run directories of roots that died without cleaning up (a SIGKILLed root cannot).
/// A directory is abandoned when no process has the pid in its name; a live process that reused
/// the pid keeps it, which errs on the safe side.
fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mp-"))
            .and_then(|n| n.split('-').next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: kill(pid, 0) only checks whether the process exists; it sends nothing.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A bound local socket. The socket file is removed on drop.
#[derive(Debug)]
pub(crate) struct Listener {
    inner: IpListener,
    path: PathBuf,
}

impl Listener {
    /// Binds a socket at `path`.
    ///
    /// # Errors
    /// `Io` when the path is taken or its directory is missing.
    pub(crate) fn bind(path: PathBuf) -> Result<Self> {
        // The directory is private to the run: a file of this name can only be the socket of a
        // process of this run that died with the same pid, which nobody listens on any more.
        let _ = std::fs::remove_file(&path);
        let name = path.as_path().to_fs_name::<GenericFilePath>()?;
        let inner = ListenerOptions::new()
            .name(name)
            .reclaim_name(false)
            .create_tokio()?;
        Ok(Listener { inner, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    /// `Io` from `accept`.
    ///
    /// # Cancel safety
    /// Cancel-safe: no connection is taken unless the future completes.
    pub(crate) async fn accept(&self) -> Result<Halves> {
        halves(self.inner.accept().await?)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects to the socket at `path`.
///
/// # Errors
/// `Io` (`NotFound`, `ConnectionRefused`) when nobody listens there.
pub(crate) async fn connect(path: &Path) -> Result<Halves> {
    let name = path.to_fs_name::<GenericFilePath>().map_err(Error::Io)?;
    halves(Stream::connect(name).await?)
}
