//! The one error type of the crate.
//!
//! Every fallible operation returns [`Result<T>`](crate::Result), whose error is [`Error`]. The
//! variants carry what a caller needs to act: the pid and signal of a dead child, the message and
//! location of a panic, the name of an entry that the executable does not know.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What an [`Error::Encode`] or [`Error::Decode`] was about: a fixed vocabulary. (Written as an
/// alias so serde's derive does not take the field for a string borrowed from the input.)
type What = &'static str;

/// `Result<T, multiprocessing::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a panic happened in a child process: file, line and column, as
/// [`std::panic::Location`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Source file of the panic, as the compiler recorded it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can go wrong between processes.
///
/// Match on the variants you handle and keep a fallback arm: the enum is `#[non_exhaustive]` and
/// will grow as queues, locks and managers arrive. The `is_*` predicates answer the common
/// questions without a match.
///
/// An `Error` is also a value that crosses the wire (an entry may return
/// `multiprocessing::Result<T>`, a child reports its failure): it is encoded by the derive below,
/// so a new variant is written in this one place. An OS error keeps its kind and message.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not finish within the time it was given.
    #[error("timed out")]
    Timeout,
    /// The peer or the object is closed (Python's `EOFError` on a connection).
    #[error("closed")]
    Closed,
    /// A bounded queue had no room and the caller asked not to wait (Python's `queue.Full`).
    #[error("the queue is full")]
    Full,
    /// The queue held no item and the caller asked not to wait (Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// The buffer given to `recv_bytes_into` is smaller than the message; the message stays
    /// unread, so a call with a buffer of `needed` bytes receives it.
    #[error("the buffer is too short: the message needs {needed} bytes")]
    BufferTooShort {
        /// The size of the message waiting to be read.
        needed: usize,
    },
    /// The peer did not prove that it holds the authentication key, or refused ours.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The entry function panicked in the child process.
    #[error("child panicked: {message}{}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic payload, when it was a string (as `panic!` makes it).
        message: String,
        /// Where the panic happened, when the panic hook could tell.
        location: Option<Location>,
    },
    /// The child process ended without returning a value: it exited early, aborted, or was killed.
    #[error("child process {pid} died without returning a value ({})", describe_death(*exitcode, *signal, *oom))]
    ProcessDied {
        /// The child's process id.
        pid: u32,
        /// Its exit code, if it exited.
        exitcode: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The kernel's OOM killer ended it: it died of SIGKILL and the `oom_kill` counter of its
        /// memory cgroup grew meanwhile. Exact when the child is alone in its cgroup; never set
        /// when no memory cgroup can be read (see `Pool`'s "Crash causes").
        oom: bool,
    },
    /// The pool worker running this task died (abort, segfault, SIGKILL, OOM kill) before the task
    /// finished. The worker was replaced; the pool goes on.
    #[error("pool worker {pid} died while running this task{}", describe_worker_death(*exitcode, *signal, *oom))]
    WorkerLost {
        /// The dead worker's process id.
        pid: u32,
        /// Its exit code, if it exited (a task that called `exit(3)` gives `Some(3)`).
        exitcode: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The kernel's OOM killer ended it; as [`Error::ProcessDied`]'s `oom`. Workers share
        /// the pool's memory cgroup, so this is exact when nothing else SIGKILLs them.
        oom: bool,
    },
    /// The pool was closed to new work, or terminated before this task ran.
    #[error("the pool is closed or was terminated; the task did not run")]
    PoolClosed,
    /// The child executable has no `#[entry]` registered under this name. This happens when a
    /// child is started from a different build of the executable than its parent.
    #[error("entry `{name}` is not registered in this executable (was the child built from the same binary as its parent?)")]
    NotAnEntry {
        /// The entry's registered name (its module path).
        name: String,
    },
    /// An argument is out of its range (for example a pool of 0 processes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A process was about to be started outside a launch context.
    #[error("spawning needs #[multiprocessing::process_main] on main (or #[multiprocessing::test] on the test): {0}")]
    NotLaunched(String),
    /// A value could not be encoded for the wire.
    #[error("could not encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        #[serde(deserialize_with = "what_from_wire")]
        what: What,
        /// The encoder's explanation.
        message: String,
    },
    /// Bytes from a peer could not be decoded as the expected type (a child built from another
    /// binary, or a mismatched entry signature).
    #[error("could not decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        #[serde(deserialize_with = "what_from_wire")]
        what: What,
        /// The decoder's explanation.
        message: String,
    },
    /// A frame announced more bytes than the connection accepts.
    #[error(
        "frame of {size} bytes exceeds the limit of {limit} bytes; the connection was dropped"
    )]
    FrameTooLarge {
        /// The announced size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The actor was stopped, was killed, or died past its restart budget: it takes no more calls.
    #[error("the actor has stopped; it takes no more calls")]
    ActorStopped,
    /// No actor of this run is registered under this name (or it has a different type).
    #[error("no actor named `{name}` is running in this run{}", note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    NoSuchActor {
        /// The name that was looked up.
        name: String,
        /// What was found instead, if anything.
        note: Option<String>,
    },
    /// An actor is already registered under this name; names are unique in a run until the
    /// actor ends.
    #[error(
        "an actor named `{name}` is already running; pick another name or stop that actor first"
    )]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// The peer broke the wire protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// An operating-system error.
    #[error(transparent)]
    Io(
        #[from]
        #[serde(with = "io_on_the_wire")]
        std::io::Error,
    ),
    /// A manager proxy found no such key, field or index (Python's `KeyError`, `AttributeError`
    /// and `IndexError`); the message names the proxy and what was looked up.
    #[error("lookup failed: {0}")]
    Lookup(String),
    /// A barrier was broken while this party waited at it, or before it came (Python's
    /// `BrokenBarrierError`): a party died while waiting, a wait timed out, or someone called
    /// `abort`/`reset`. It stays broken until `reset`.
    #[error("the barrier is broken (a party died or timed out, or it was aborted or reset)")]
    BrokenBarrier,
    /// The broker (Redis) of a scale-out pool failed, or refused a task: it cannot be reached,
    /// it lost the pool's streams (a restart without persistence), or a worker host runs a
    /// different build. The message says which.
    #[error("broker: {0}")]
    Broker(String),
}

thread_local! {
    static SERDE_DETAIL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Records why one of the crate's own `Serialize`/`Deserialize` impls failed, and returns the
/// message for its `custom` error. postcard drops the text of custom errors, so
/// [`Error::encode`] / [`Error::decode`] made on the same thread pick it up from here.
pub(crate) fn serde_detail(message: impl fmt::Display) -> String {
    let message = message.to_string();
    SERDE_DETAIL.with(|d| *d.borrow_mut() = Some(message.clone()));
    message
}

/// `message`, or the detail recorded by [`serde_detail`] when `message` is postcard's text for a
/// custom error (which carries none).
fn with_serde_detail(message: String) -> String {
    let detail = SERDE_DETAIL.with(|d| d.borrow_mut().take());
    match detail {
        Some(detail) if message.starts_with("Serde") => detail,
        _ => message,
    }
}

fn describe_death(exitcode: Option<i32>, signal: Option<i32>, oom: bool) -> String {
    match (exitcode, signal) {
        (_, Some(sig)) if oom => format!(
            "killed by signal {sig}{} from the kernel's OOM killer: its memory cgroup ran out",
            signal_name(sig)
        ),
        (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "status unknown".to_owned(),
    }
}

/// How a pool worker ended, as `WorkerLost` has always said it (` (signal 9 (SIGKILL))`), with
/// the exit code or the OOM killer when known.
fn describe_worker_death(exitcode: Option<i32>, signal: Option<i32>, oom: bool) -> String {
    match (exitcode, signal) {
        (_, Some(sig)) => format!(
            " (signal {sig}{}{})",
            signal_name(sig),
            if oom {
                ", from the kernel's OOM killer"
            } else {
                ""
            }
        ),
        (Some(code), None) => format!(" (exit code {code})"),
        (None, None) => String::new(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

impl Error {
    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// True for [`Error::Panicked`].
    pub fn is_panicked(&self) -> bool {
        matches!(self, Error::Panicked { .. })
    }

    /// True when the process that was running the work is gone ([`Error::WorkerLost`] from a
    /// pool, [`Error::ProcessDied`] from a `Process`).
    pub fn is_worker_lost(&self) -> bool {
        matches!(self, Error::WorkerLost { .. } | Error::ProcessDied { .. })
    }

    pub(crate) fn encode(what: &'static str, e: impl fmt::Display) -> Self {
        Error::Encode {
            what,
            message: with_serde_detail(e.to_string()),
        }
    }

    pub(crate) fn decode(what: &'static str, e: impl fmt::Display) -> Self {
        Error::Decode {
            what,
            message: with_serde_detail(e.to_string()),
        }
    }
}

/// Why `Queue::try_put` did not put the item; the item comes back.
#[derive(thiserror::Error)]
pub enum TryPutError<T> {
    /// The queue is bounded and full.
    #[error("the queue is full")]
    Full(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// Something else went wrong: the item could not be encoded, or the root process that
    /// hosts the queue is unreachable.
    #[error("{1}")]
    Failed(T, Error),
}

impl<T> TryPutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(t) | TryPutError::Closed(t) | TryPutError::Failed(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("Full(..)"),
            TryPutError::Closed(_) => f.write_str("Closed(..)"),
            TryPutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> From<TryPutError<T>> for Error {
    fn from(e: TryPutError<T>) -> Self {
        match e {
            TryPutError::Full(_) => Error::Full,
            TryPutError::Closed(_) => Error::Closed,
            TryPutError::Failed(_, e) => e,
        }
    }
}

/// Why `Queue::put_timeout` did not put the item; the item comes back.
#[derive(thiserror::Error)]
pub enum PutTimeoutError<T> {
    /// No room came free in time.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// Something else went wrong: the item could not be encoded, or the root process that
    /// hosts the queue is unreachable.
    #[error("{1}")]
    Failed(T, Error),
}

impl<T> PutTimeoutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutTimeoutError::Timeout(t)
            | PutTimeoutError::Closed(t)
            | PutTimeoutError::Failed(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for PutTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutTimeoutError::Closed(_) => f.write_str("Closed(..)"),
            PutTimeoutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> From<PutTimeoutError<T>> for Error {
    fn from(e: PutTimeoutError<T>) -> Self {
        match e {
            PutTimeoutError::Timeout(_) => Error::Timeout,
            PutTimeoutError::Closed(_) => Error::Closed,
            PutTimeoutError::Failed(_, e) => e,
        }
    }
}

/// Why `Queue::put` (and `SimpleQueue::put`) did not put the item; the item comes back, as
/// tokio's `mpsc::Sender::send` gives back what it could not send.
#[derive(thiserror::Error)]
pub enum PutError<T> {
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// Something else went wrong: the item could not be encoded, or the root process that
    /// hosts the queue is unreachable.
    #[error("{1}")]
    Failed(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Closed(t) | PutError::Failed(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Closed(_) => Error::Closed,
            PutError::Failed(_, e) => e,
        }
    }
}

/// Why `Connection::send` did not send the value; the value comes back, as tokio's
/// `mpsc::Sender::send` gives back what it could not send.
#[derive(thiserror::Error)]
pub enum SendError<T> {
    /// The other end is closed (Python's `BrokenPipeError`).
    #[error("the other end is closed")]
    Closed(T),
    /// Something else went wrong: the value could not be encoded, this is the receiving end of a
    /// simplex pipe, or the socket failed.
    #[error("{1}")]
    Failed(T, Error),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t) | SendError::Failed(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::Closed(_) => Error::Closed,
            SendError::Failed(_, e) => e,
        }
    }
}

impl From<tokio::time::error::Elapsed> for Error {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Error::Timeout
    }
}

/// An [`Error`] as the pool and `Process` keep it once it has crossed the wire: shared, so one
/// failure can be handed to every item of a batch and to every `join`. It is encoded as the
/// `Error` it holds; there is no second list of variants to keep in step.
#[derive(Clone, Debug)]
pub(crate) struct RemoteError(std::sync::Arc<Error>);

impl Serialize for RemoteError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RemoteError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Error::deserialize(d).map(RemoteError::from)
    }
}

impl From<Error> for RemoteError {
    fn from(e: Error) -> Self {
        RemoteError(std::sync::Arc::new(e))
    }
}

impl From<&Error> for RemoteError {
    fn from(e: &Error) -> Self {
        RemoteError::from(e.duplicate())
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        std::sync::Arc::try_unwrap(e.0).unwrap_or_else(|shared| shared.duplicate())
    }
}

impl Error {
    /// A copy of this error, made through its wire form (so every variant copies as it crosses
    /// processes, an OS error with its kind and message). `Error` is not `Clone` because
    /// `std::io::Error` is not; this is only for the rare error reported to several waiters.
    fn duplicate(&self) -> Error {
        postcard::to_allocvec(self)
            .ok()
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_else(|| Error::Protocol(self.to_string()))
    }
}

/// How [`Error::Io`] crosses the wire: its kind (by name) and its message.
mod io_on_the_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        kind: String,
        message: String,
    }

    pub(super) fn serialize<S: Serializer>(e: &std::io::Error, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            kind: format!("{:?}", e.kind()),
            message: e.to_string(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::io::Error, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ok(std::io::Error::new(
            super::io_kind(&wire.kind),
            wire.message,
        ))
    }
}

/// The `ErrorKind`s worth keeping across processes, by their `Debug` name.
fn io_kind(kind: &str) -> std::io::ErrorKind {
    use std::io::ErrorKind::*;
    [
        NotFound,
        PermissionDenied,
        ConnectionRefused,
        ConnectionReset,
        ConnectionAborted,
        NotConnected,
        AddrInUse,
        AddrNotAvailable,
        BrokenPipe,
        AlreadyExists,
        WouldBlock,
        InvalidInput,
        InvalidData,
        TimedOut,
        WriteZero,
        Interrupted,
        Unsupported,
        UnexpectedEof,
        OutOfMemory,
    ]
    .into_iter()
    .find(|k| format!("{k:?}") == kind)
    .unwrap_or(Other)
}

/// `what` is a fixed vocabulary; map a remote one back onto it instead of leaking memory.
fn what_from_wire<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<&'static str, D::Error> {
    let what = String::deserialize(d)?;
    Ok(match what.as_str() {
        "entry arguments" => "entry arguments",
        "entry result" => "entry result",
        "a queue item" => "a queue item",
        "a message" => "a message",
        _ => "a value in the child",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: &Error) -> Error {
        let bytes = postcard::to_allocvec(e).expect("encode");
        postcard::from_bytes(&bytes).expect("decode")
    }

    #[test]
    fn an_error_crosses_the_wire_with_its_variant() {
        assert!(matches!(round_trip(&Error::Closed), Error::Closed));
        assert!(matches!(
            round_trip(&Error::BufferTooShort { needed: 9 }),
            Error::BufferTooShort { needed: 9 }
        ));
        assert!(matches!(
            round_trip(&Error::WorkerLost {
                pid: 4,
                exitcode: None,
                signal: Some(9),
                oom: true,
            }),
            Error::WorkerLost {
                pid: 4,
                exitcode: None,
                signal: Some(9),
                oom: true,
            }
        ));
        let io = round_trip(&Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file: a.txt",
        )));
        match io {
            Error::Io(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                assert!(e.to_string().contains("a.txt"));
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn a_decode_error_keeps_what_it_was_about() {
        let e = round_trip(&Error::decode("entry arguments", "bad varint"));
        assert!(
            matches!(e, Error::Decode { what: "entry arguments", ref message } if message == "bad varint")
        );
        let e = round_trip(&Error::Encode {
            what: "something new",
            message: "m".into(),
        });
        assert!(matches!(
            e,
            Error::Encode {
                what: "a value in the child",
                ..
            }
        ));
    }

    #[test]
    fn a_shared_remote_error_becomes_an_error_for_each_holder() {
        let remote = RemoteError::from(Error::Panicked {
            message: "boom".into(),
            location: Some(Location {
                file: "a.rs".into(),
                line: 3,
                column: 7,
            }),
        });
        let copy = remote.clone();
        for e in [Error::from(remote), Error::from(copy)] {
            match e {
                Error::Panicked { message, location } => {
                    assert_eq!(message, "boom");
                    assert_eq!(location.map(|l| l.line), Some(3));
                }
                other => panic!("expected Panicked, got {other:?}"),
            }
        }
        let bytes = postcard::to_allocvec(&RemoteError::from(Error::Full)).expect("encode");
        let back: Error = postcard::from_bytes(&bytes).expect("decode");
        assert!(matches!(back, Error::Full));
    }
}
