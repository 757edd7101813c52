//! Handing file descriptors to other processes: one-shot, expiring offers taken with
//! `SCM_RIGHTS`.
//!
//! A process that serializes an OS handle calls [`offer`]: the descriptor is duplicated into this
//! process's offer table under a fresh 128-bit secret, and the returned [`Ticket`] (server
//! address and secret, nothing else) is what travels. The receiving process calls [`take`]: it
//! connects to the offering process's fd server, presents the secret, and receives the
//! descriptor with `recvmsg`. This is Python's `multiprocessing.resource_sharer`, with three
//! differences:
//!
//! - **One-shot.** A taken offer is removed at once, so once the receiver has the descriptor the
//!   offering process holds no copy of it (a pipe end handed to a child no longer keeps the pipe
//!   open in the parent: the peer sees end-of-file when the child exits).
//! - **Expiring.** An offer nobody takes is closed after [`OFFER_TTL`]. Until then it keeps the
//!   socket (or file) open, so a peer of a never-delivered pipe end sees end-of-file only then.
//! - **Where the server listens.** On Linux the server binds an *abstract* Unix socket (no file,
//!   gone with the process, even after SIGKILL) and serves only peers of the same user id
//!   (`SO_PEERCRED`); the secret is what grants a descriptor. Elsewhere it binds a socket in a
//!   0700 directory of its own.
//!
//! The server is one std thread per process, started by the first offer. It serves one taker at
//! a time, each with a short I/O timeout, and wakes once a second to close expired offers.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an offer waits to be taken before the offering process closes its copy.
pub(crate) const OFFER_TTL: Duration = Duration::from_secs(120);
/// I/O timeout on both sides of one take.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many recently taken or expired secrets are remembered, to say which it was.
const REMEMBERED: usize = 1024;

const SECRET_LEN: usize = 16;
type Secret = [u8; SECRET_LEN];

/// What travels in place of a descriptor: where to take it and the secret that grants it.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Ticket {
    /// The offering process's id (for error messages).
    pid: u32,
    /// The fd server's address: an abstract socket name on Linux, a path elsewhere.
    #[serde(with = "serde_bytes")]
    server: Vec<u8>,
    secret: Secret,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Why a secret is not in the table any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    Taken,
    Expired,
}

/// The answer's status byte.
const OK: u8 = 0;
const UNKNOWN: u8 = 1;
const TAKEN: u8 = 2;
const EXPIRED: u8 = 3;

struct Offer {
    fd: OwnedFd,
    deadline: Instant,
}

#[derive(Default)]
struct Table {
    offers: HashMap<Secret, Offer>,
    gone: VecDeque<(Secret, Gone)>,
}

impl Table {
    fn remember(&mut self, secret: Secret, why: Gone) {
        if self.gone.len() == REMEMBERED {
            self.gone.pop_front();
        }
        self.gone.push_back((secret, why));
    }

    /// Removes the offer for `secret`, or says why there is none.
    fn take(&mut self, secret: &Secret) -> std::result::Result<OwnedFd, u8> {
        if let Some(offer) = self.offers.remove(secret) {
            self.remember(*secret, Gone::Taken);
            return Ok(offer.fd);
        }
        Err(match self.gone.iter().find(|(s, _)| s == secret) {
            Some((_, Gone::Taken)) => TAKEN,
            Some((_, Gone::Expired)) => EXPIRED,
            None => UNKNOWN,
        })
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<Secret> = self
            .offers
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for secret in expired {
            self.offers.remove(&secret);
            self.remember(secret, Gone::Expired);
        }
    }
}

struct Server {
    pid: u32,
    address: Vec<u8>,
    table: Mutex<Table>,
    /// What must live as long as the server (its directory, where there is one).
    _keep: Keep,
}

#[cfg(target_os = "linux")]
type Keep = ();
#[cfg(not(target_os = "linux"))]
type Keep = super::local::RunDir;

impl Server {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// This process's fd server, started on first use (and again in a forked child, whose copy of
/// the parent's server has no thread behind it).
fn server() -> Result<Arc<Server>> {
    let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some(server) = slot.as_ref().filter(|s| s.pid == pid) {
        return Ok(Arc::clone(server));
    }
    let server = start(pid)?;
    *slot = Some(Arc::clone(&server));
    Ok(server)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "linux")]
fn bind(pid: u32) -> Result<(UnixListener, Vec<u8>, Keep)> {
    use std::os::linux::net::SocketAddrExt;
    let tag = hex(&super::auth::random_bytes()?[..8]);
    let name = format!("multiprocessing-fd-{pid}-{tag}").into_bytes();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)?;
    Ok((UnixListener::bind_addr(&addr)?, name, ()))
}

#[cfg(not(target_os = "linux"))]
fn bind(_pid: u32) -> Result<(UnixListener, Vec<u8>, Keep)> {
    use std::os::unix::ffi::OsStrExt;
    let dir = super::local::RunDir::create()?;
    let path = dir.path().join("fd.sock");
    let listener = UnixListener::bind(&path)?;
    Ok((listener, path.as_os_str().as_bytes().to_vec(), dir))
}

fn start(pid: u32) -> Result<Arc<Server>> {
    let (listener, address, keep) = bind(pid)?;
    let server = Arc::new(Server {
        pid,
        address,
        table: Mutex::default(),
        _keep: keep,
    });
    let serving = Arc::clone(&server);
    std::thread::Builder::new()
        .name("multiprocessing-fd".into())
        .spawn(move || serve(&listener, &serving))?;
    Ok(server)
}

/// The server thread: accept takers one at a time; expire offers once a second.
fn serve(listener: &UnixListener, server: &Server) {
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives across the call, and we pass a count of 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        server.table().expire(Instant::now());
        if ready <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // A taker that misbehaves costs at most the timeouts; nothing to report.
                let _ = answer(&stream, server);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn answer(mut stream: &UnixStream, server: &Server) -> std::io::Result<()> {
    stream.set_read_timeout(Some(TAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(TAKE_TIMEOUT))?;
    if !same_user(stream) {
        return stream.write_all(&[UNKNOWN]);
    }
    let mut secret = [0u8; SECRET_LEN];
    stream.read_exact(&mut secret)?;
    let found = server.table().take(&secret);
    match found {
        Ok(fd) => send_fd(stream, OK, Some(fd.as_fd())),
        Err(status) => send_fd(stream, status, None),
    }
}

#[cfg(target_os = "linux")]
fn same_user(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`, as
    // SO_PEERCRED requires; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    rc == 0 && cred.uid == unsafe { libc::getuid() }
}

#[cfg(not(target_os = "linux"))]
fn same_user(_stream: &UnixStream) -> bool {
    // The socket lives in a 0700 directory: only this user can reach it.
    true
}

/// Room for one `cmsghdr` carrying a few descriptors, aligned as `cmsghdr` requires.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Sends the status byte, and `fd` as `SCM_RIGHTS` ancillary data if given.
fn send_fd(stream: &UnixStream, status: u8, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let data = [status];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cmsg = CmsgBuf { bytes: [0; 64] };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let int = std::mem::size_of::<libc::c_int>() as u32;
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(int) } as usize;
        debug_assert!(space <= std::mem::size_of::<CmsgBuf>());
        msg.msg_control = (&mut cmsg as *mut CmsgBuf).cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes of `cmsg`, aligned for cmsghdr and large
        // enough for one header plus one int (checked above), so CMSG_FIRSTHDR returns a valid,
        // non-null pointer into it and CMSG_DATA points to room for the int. The descriptor is
        // written unaligned because CMSG_DATA need not be int-aligned on every platform.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(int) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<libc::c_int>(), fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `msg` points to `iov` (one valid byte) and, if set, to the initialised
        // control buffer; all outlive the call. The kernel duplicates the descriptor into the
        // receiver; ours stays ours.
        let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives the status byte and any descriptors sent with it (close-on-exec set atomically).
fn recv_fd(stream: &UnixStream) -> std::io::Result<(u8, Option<OwnedFd>)> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cmsg = CmsgBuf { bytes: [0; 64] };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut CmsgBuf).cast();
    msg.msg_controllen = std::mem::size_of::<CmsgBuf>() as _;
    let received = loop {
        // SAFETY: `msg` points to `iov` (one writable byte in `data`) and to the writable,
        // cmsghdr-aligned control buffer of the length given; both outlive the call.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: after a successful recvmsg, msg_control/msg_controllen describe the control
    // messages the kernel wrote into `cmsg`; CMSG_FIRSTHDR/CMSG_NXTHDR walk them within that
    // length and return null at the end. For an SCM_RIGHTS message, the bytes between CMSG_DATA
    // and cmsg_len are descriptors the kernel installed in this process for us, each owned by
    // nobody else, so wrapping each in an OwnedFd (which closes it) is sound.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = data_len / std::mem::size_of::<libc::c_int>();
                let first = libc::CMSG_DATA(hdr).cast::<libc::c_int>();
                for i in 0..count {
                    let raw: RawFd = std::ptr::read_unaligned(first.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if received == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other(
            "the descriptor did not fit the control buffer",
        ));
    }
    // Only one is ever sent; any extra is closed by dropping it.
    Ok((data[0], fds.into_iter().next()))
}

/// Offers a duplicate of `fd` to whichever process presents the returned ticket first, within
/// [`OFFER_TTL`].
///
/// # Errors
/// `Io` when the descriptor cannot be duplicated or the fd server cannot start.
pub(crate) fn offer(fd: BorrowedFd<'_>) -> Result<Ticket> {
    let dup = fd.try_clone_to_owned()?;
    let server = server()?;
    let random = super::auth::random_bytes()?;
    let mut secret = [0u8; SECRET_LEN];
    secret.copy_from_slice(&random[..SECRET_LEN]);
    server.table().offers.insert(
        secret,
        Offer {
            fd: dup,
            deadline: Instant::now() + OFFER_TTL,
        },
    );
    Ok(Ticket {
        pid: server.pid,
        server: server.address.clone(),
        secret,
    })
}

/// How many offers this process has made that are still waiting to be taken. A process that
/// is about to exit after handing a value back waits for this to reach 0 (bounded), so the
/// receiver can still take the descriptors the value carries.
pub(crate) fn pending_offers() -> usize {
    let slot = SERVER.lock().unwrap_or_else(|p| p.into_inner()).clone();
    slot.filter(|s| s.pid == std::process::id())
        .map_or(0, |s| s.table().offers.len())
}

/// Whether the offer behind `ticket` (made by this process) is still waiting to be taken.
fn is_pending(ticket: &Ticket) -> bool {
    let slot = SERVER.lock().unwrap_or_else(|p| p.into_inner()).clone();
    slot.filter(|s| s.pid == std::process::id() && s.address == ticket.server)
        .is_some_and(|s| s.table().offers.contains_key(&ticket.secret))
}

/// The offer a handle made when it was last serialized, reused while nobody has taken it, so
/// that one value serialized twice (the crate sizes a value before writing it) makes one offer.
/// Once taken, the next serialization makes a new offer.
#[derive(Debug, Default)]
pub(crate) struct OfferCache(Mutex<Option<Ticket>>);

impl OfferCache {
    /// The pending offer of `fd`, or a new one; see [`offer`].
    ///
    /// # Errors
    /// As [`offer`].
    pub(crate) fn offer(&self, fd: BorrowedFd<'_>) -> Result<Ticket> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ticket) = slot.as_ref().filter(|t| is_pending(t)) {
            return Ok(ticket.clone());
        }
        let ticket = offer(fd)?;
        *slot = Some(ticket.clone());
        Ok(ticket)
    }
}

fn refused(ticket: &Ticket, status: u8) -> Error {
    let pid = ticket.pid;
    Error::decode(
        "a handed-over OS handle",
        match status {
            TAKEN => format!(
                "process {pid} already handed this handle to another process (a serialized \
                 handle can be deserialized once)"
            ),
            EXPIRED => format!(
                "the offer from process {pid} expired: it was not taken within {} s",
                OFFER_TTL.as_secs()
            ),
            _ => format!(
                "process {pid} has no offer under this secret (it may have expired long ago, or \
                 the bytes were not made by this run)"
            ),
        },
    )
}

/// Takes the descriptor a ticket stands for. Blocks for a local round trip to the offering
/// process (at most a few seconds if that process is stuck).
///
/// # Errors
/// `Decode` when the offer was already taken, expired or never existed, or when the offering
/// process is gone (its fd server no longer answers).
pub(crate) fn take(ticket: &Ticket) -> Result<OwnedFd> {
    let pid = ticket.pid;
    // An offer made by this very process is taken from the table directly.
    if pid == std::process::id() {
        let slot = SERVER.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(server) = slot.filter(|s| s.address == ticket.server) {
            let found = server.table().take(&ticket.secret);
            return found.map_err(|status| refused(ticket, status));
        }
    }
    let gone = |e: std::io::Error| {
        Error::decode(
            "a handed-over OS handle",
            format!("could not reach process {pid}, which offered it (has it exited?): {e}"),
        )
    };
    let mut stream = connect(&ticket.server).map_err(gone)?;
    stream.set_read_timeout(Some(TAKE_TIMEOUT)).map_err(gone)?;
    stream.set_write_timeout(Some(TAKE_TIMEOUT)).map_err(gone)?;
    stream.write_all(&ticket.secret).map_err(gone)?;
    match recv_fd(&stream).map_err(gone)? {
        (OK, Some(fd)) => Ok(fd),
        (OK, None) => Err(Error::decode(
            "a handed-over OS handle",
            format!("process {pid} answered without a descriptor"),
        )),
        (status, _) => Err(refused(ticket, status)),
    }
}

#[cfg(target_os = "linux")]
fn connect(address: &[u8]) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(address)?;
    UnixStream::connect_addr(&addr)
}

#[cfg(not(target_os = "linux"))]
fn connect(address: &[u8]) -> std::io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    UnixStream::connect(std::ffi::OsStr::from_bytes(address))
}

/// How many offers this process holds (for tests).
#[cfg(test)]
fn offers_held() -> usize {
    server().map(|s| s.table().offers.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_taken_once_then_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let ticket = offer(a.as_fd()).unwrap();
        assert!(offers_held() >= 1);
        // Through the socket, as another process would.
        let mut stream = connect(&ticket.server).unwrap();
        stream.write_all(&ticket.secret).unwrap();
        let (status, fd) = recv_fd(&stream).unwrap();
        assert_eq!(status, OK);
        assert!(fd.is_some());
        // Taken: the second attempt says so.
        match take(&ticket) {
            Err(Error::Decode { message, .. }) => {
                assert!(message.contains("already handed"), "{message}")
            }
            other => panic!("expected a Decode error, got {other:?}"),
        }
    }

    #[test]
    fn a_cache_makes_one_offer_until_it_is_taken() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cache = OfferCache::default();
        let first = cache.offer(a.as_fd()).unwrap();
        let again = cache.offer(a.as_fd()).unwrap();
        assert_eq!(first.secret, again.secret);
        take(&first).unwrap();
        let after = cache.offer(a.as_fd()).unwrap();
        assert_ne!(first.secret, after.secret);
        take(&after).unwrap();
    }

    #[test]
    fn an_unknown_secret_is_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut ticket = offer(a.as_fd()).unwrap();
        ticket.secret = [0xAA; SECRET_LEN];
        let mut stream = connect(&ticket.server).unwrap();
        stream.write_all(&ticket.secret).unwrap();
        let (status, fd) = recv_fd(&stream).unwrap();
        assert_eq!((status, fd.is_none()), (UNKNOWN, true));
    }

    #[test]
    fn expired_offers_are_closed_and_named() {
        let mut table = Table::default();
        let (a, _b) = UnixStream::pair().unwrap();
        let now = Instant::now();
        table.offers.insert(
            [1; SECRET_LEN],
            Offer {
                fd: a.as_fd().try_clone_to_owned().unwrap(),
                deadline: now,
            },
        );
        table.expire(now);
        assert!(table.offers.is_empty());
        assert_eq!(table.take(&[1; SECRET_LEN]).err(), Some(EXPIRED));
        assert_eq!(table.take(&[2; SECRET_LEN]).err(), Some(UNKNOWN));
    }
}
