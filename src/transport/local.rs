//! Local sockets (`interprocess`): the run's, in a per-run private directory, and those a
//! `connection::Listener` binds at a user's path (through `tcp.rs`). Once connected, each is a
//! [`Socket`] of the local flavor.

use crate::error::{Error, Result};
use interprocess::local_socket::tokio::{prelude::*, Listener as IpListener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use super::socket::{Flavor, Socket};
pub(crate) use super::socket::{RecvHalf, SendHalf};

/// The read and write halves of one local socket. The socket closes when both are dropped.
pub(crate) type Halves = (RecvHalf, SendHalf);

fn halves(stream: Stream) -> Result<Halves> {
    let Stream::UdSocket(stream) = stream;
    // Leaves tokio's registration (for both directions) behind: see `socket.rs`.
    let fd: OwnedFd = stream.try_into()?;
    Ok(Socket::new(fd, Flavor::Local)?.into_halves())
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
        Self::bind_new(path)
    }

    /// Binds a socket at `path`, which must not exist (a user's path: whatever is there is not
    /// ours to replace).
    ///
    /// # Errors
    /// `Io` when the path is taken or its directory is missing.
    pub(crate) fn bind_new(path: PathBuf) -> Result<Self> {
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
