//! [`FdHandle`]: any OS handle, handed to another process.

use crate::error::{Error, Result};
use crate::transport::fd::{self, Ticket};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// An open OS handle (a file descriptor) that can be handed to another process as an entry
/// argument: an accepted `TcpStream`, a file, a socket (Python's `multiprocessing.reduction`).
///
/// Serializing an `FdHandle` offers a duplicate of the descriptor to the one process that
/// deserializes it; the receiver gets its own descriptor for the same open file or socket (the
/// same connection, the same file offset). Drop the sender's `FdHandle` after handing it over
/// and the receiver holds the only copy. See the [module docs](super#handing-an-end-to-another-process)
/// for how the hand-over works and its two-minute limit.
///
/// ```
/// # use multiprocessing::connection::FdHandle;
/// # use std::io::{Read, Write};
/// let (mut a, b) = std::os::unix::net::UnixStream::pair()?;
/// let handle = FdHandle::from(std::os::fd::OwnedFd::from(b));
/// let mut b = std::os::unix::net::UnixStream::from(handle.into_owned_fd());
/// b.write_all(b"hi")?;
/// let mut got = [0; 2];
/// a.read_exact(&mut got)?;
/// assert_eq!(&got, b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FdHandle(OwnedFd, fd::OfferCache);

impl FdHandle {
    /// The descriptor, to wrap in whatever type it is (`UnixStream::from`, `File::from`, ...).
    pub fn into_owned_fd(self) -> OwnedFd {
        self.0
    }

    /// The descriptor as a blocking [`std::net::TcpStream`]. It must be a TCP socket.
    pub fn into_tcp_stream(self) -> std::net::TcpStream {
        std::net::TcpStream::from(self.0)
    }

    /// The descriptor as a [`tokio::net::TcpStream`] (made non-blocking). It must be a TCP
    /// socket.
    ///
    /// # Errors
    /// `Io` outside a tokio runtime, or if the descriptor cannot be registered.
    pub fn into_tokio_tcp_stream(self) -> Result<tokio::net::TcpStream> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Io(std::io::Error::other(
                "into_tokio_tcp_stream needs a tokio runtime",
            )));
        }
        let std = self.into_tcp_stream();
        std.set_nonblocking(true)?;
        Ok(tokio::net::TcpStream::from_std(std)?)
    }
}

impl From<OwnedFd> for FdHandle {
    fn from(fd: OwnedFd) -> Self {
        FdHandle(fd, fd::OfferCache::default())
    }
}

impl From<std::net::TcpStream> for FdHandle {
    fn from(stream: std::net::TcpStream) -> Self {
        FdHandle::from(OwnedFd::from(stream))
    }
}

impl From<std::os::unix::net::UnixStream> for FdHandle {
    fn from(stream: std::os::unix::net::UnixStream) -> Self {
        FdHandle::from(OwnedFd::from(stream))
    }
}

impl From<std::fs::File> for FdHandle {
    fn from(file: std::fs::File) -> Self {
        FdHandle::from(OwnedFd::from(file))
    }
}

impl TryFrom<tokio::net::TcpStream> for FdHandle {
    type Error = Error;

    /// Deregisters the stream from tokio and makes it blocking again (the mode is shared with
    /// every copy of the descriptor, including the one a child receives).
    fn try_from(stream: tokio::net::TcpStream) -> Result<Self> {
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok(FdHandle::from(OwnedFd::from(std)))
    }
}

impl AsFd for FdHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for FdHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Serialize for FdHandle {
    /// Offers a duplicate of the descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        self.1
            .offer(self.0.as_fd())
            .map_err(|e| S::Error::custom(crate::error::serde_detail(e)))?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FdHandle {
    /// Takes the descriptor offered by the serializing process.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let ticket = Ticket::deserialize(deserializer)?;
        fd::take(&ticket)
            .map(FdHandle::from)
            .map_err(|e| D::Error::custom(crate::error::serde_detail(e)))
    }
}
