//! Layer 2: the versioned messages between a child and its parent. Serde types only, no I/O.
//!
//! Every message on a connection is a postcard-encoded header ([`Down`] or [`Up`]) followed by an
//! opaque body (encoded arguments or results), so large values are never re-encoded on the way.

use crate::error::{Error, RemoteError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a child of another version is refused at `Hello`.
pub(crate) const PROTOCOL_VERSION: u16 = 3;

/// The environment variable that marks a process as a child and carries its [`ChildConfig`].
pub(crate) const CHILD_ENV: &str = "MULTIPROCESSING_CHILD";

/// Parent → child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Down {
    /// Run `entry` on the arguments in the body. With `then_exit`, the child exits once the
    /// result is sent (a `Process`); otherwise it waits for more calls. With `batch`, the body is
    /// a `Vec` of arguments and the result a `Vec<Result<Output, RemoteError>>`, one per item. With
    /// `report_start`, the child counts the call in its start log (`bootstrap::start_log`), or
    /// failing that sends [`Up::Started`] (and flushes it), before running the call.
    Call {
        id: u64,
        /// Borrowed when sent (entry names are `'static`), so a task costs no allocation for it.
        entry: std::borrow::Cow<'static, str>,
        then_exit: bool,
        batch: bool,
        report_start: bool,
    },
    /// Abandon call `id` if it is still running.
    Cancel { id: u64 },
    /// Give call `id` back if it has not started yet (the parent will run it elsewhere); the
    /// child answers [`Up::Withdrawn`].
    Withdraw { id: u64 },
    /// Exit now.
    Shutdown,
    /// First message to a *spare* (a child the fork server made ahead of need, which connected
    /// and now waits): who it is from now on. The spare sets `env`, takes these fields in place
    /// of its configuration's, and serves as any child does.
    Assign {
        name: String,
        daemon: bool,
        concurrency: u32,
        log_level: u8,
        /// The frame limit now in force (`set_max_frame_size` may have changed since the spare
        /// was made).
        max_frame: u64,
        env: Vec<(String, String)>,
    },
}

/// Child → parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Up {
    /// First message after authentication: who is calling.
    Hello { version: u16, token: u64, pid: u32 },
    /// First message of a connection to the root's object host (queues and, later, the other
    /// hosted objects) instead of `Hello`: from here on the connection carries [`HostReq`] and
    /// [`HostReply`].
    Attach { version: u16, pid: u32 },
    /// Call `id` is about to run: it left the child's queue.
    Started { id: u64 },
    /// Answer to [`Down::Withdraw`]: `taken` if the call was dropped before it started (it will
    /// never run here); otherwise it had started and will answer as usual.
    Withdrawn { id: u64, taken: bool },
    /// Outcome of call `id`; on success the body holds the encoded result.
    Return {
        id: u64,
        outcome: std::result::Result<(), RemoteError>,
    },
    /// A `tracing` event emitted in the child.
    Log(LogRecord),
}

/// Identifies a hosted object (a queue) across the whole run: random, made where the handle is.
pub(crate) type ObjectId = u64;

/// What a queue is, carried by every handle so whichever process touches it first creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueSpec {
    /// Most items the queue holds; `None` for unbounded.
    pub(crate) capacity: Option<u32>,
    /// Items taken are tracked until `task_done` (and go back to the queue if their taker dies).
    pub(crate) joinable: bool,
}

/// How long an operation on a hosted object may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Wait {
    /// Fail at once (`Empty`, `Full`) instead of waiting.
    No,
    /// Wait until the operation can be done (or the object is closed).
    Forever,
    /// Wait at most this many microseconds, then fail with `Timeout`.
    Micros(u64),
}

/// Process → object host. `req` numbers the requests that are answered; the others are
/// pipelined and never answered. Bodies: the item for `Put` and `Requeue`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HostReq {
    /// This process now holds a handle to `obj` (created as `spec` if new); answered `Value`:
    /// 1 if the object is closed.
    Open {
        req: u64,
        obj: ObjectId,
        spec: QueueSpec,
    },
    /// Answered `Done` once every earlier request on this connection has been applied.
    Sync { req: u64 },
    /// This process holds no handle to `obj` any more.
    Release { obj: ObjectId },
    /// Append the item in the body. On a bounded queue it uses one granted reservation.
    Put { obj: ObjectId },
    /// Reserve room for one item in a bounded queue; answered `Granted` or `Failed`.
    Reserve { req: u64, obj: ObjectId, wait: Wait },
    /// Give back `count` granted reservations this process will not use.
    Unreserve { obj: ObjectId, count: u32 },
    /// Take one item; answered `Item` or `Failed`.
    Get { req: u64, obj: ObjectId, wait: Wait },
    /// Abandon a waiting `Reserve` or `Get` (an answer already on its way still comes).
    Cancel { req: u64, obj: ObjectId },
    /// An item delivered for a get the caller had abandoned: put it back at the front.
    Requeue { obj: ObjectId, seq: u64 },
    /// How many items the queue holds; answered `Value`.
    Len { req: u64, obj: ObjectId },
    /// Close the queue for everyone; answered `Done`.
    Close { req: u64, obj: ObjectId },
    /// The oldest item this process took from a joinable queue is done.
    TaskDone { obj: ObjectId },
    /// Answer `Done` once every item put has been marked done.
    Join { req: u64, obj: ObjectId },
}

/// Why a hosted-object operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HostError {
    Empty,
    Full,
    Timeout,
    Closed,
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Empty => Error::Empty,
            HostError::Full => Error::Full,
            HostError::Timeout => Error::Timeout,
            HostError::Closed => Error::Closed,
        }
    }
}

/// Object host → process. Body: the item for `Item`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HostReply {
    /// The item for get `req`; `seq` names it if it must be requeued.
    Item { req: u64, seq: u64 },
    /// Room for one item was reserved for `req`.
    Granted { req: u64 },
    /// The answer to `Len`.
    Value { req: u64, value: u64 },
    /// `Close` or `Join` is done.
    Done { req: u64 },
    /// Request `req` failed.
    Failed { req: u64, error: HostError },
    /// `obj` was closed (by anyone): puts from now on fail.
    Closed { obj: ObjectId },
}

/// A `tracing` event, flattened for the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    /// 0 = ERROR … 4 = TRACE.
    pub(crate) level: u8,
    pub(crate) target: String,
    pub(crate) message: String,
}

/// What a child needs to know at start-up, passed in [`CHILD_ENV`] (postcard, hex-encoded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildConfig {
    pub(crate) version: u16,
    /// The run's private directory.
    pub(crate) run_dir: String,
    /// The parent's socket.
    pub(crate) socket: String,
    /// The root's socket: the host of queues and the other shared objects.
    pub(crate) root_socket: String,
    /// The run's key, hex.
    pub(crate) key: String,
    /// Identifies this child to its parent in `Hello`.
    pub(crate) token: u64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// 1 for a child of the root, 2 for a grandchild, …
    pub(crate) depth: u32,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) max_frame: u64,
    /// Most verbose `tracing` level worth forwarding (0 = ERROR … 4 = TRACE, 5 = off).
    pub(crate) log_level: u8,
    /// In a test binary: the test (as libtest names it) that this child re-enters.
    pub(crate) test: Option<String>,
    /// How many calls the child runs at once (0 = no limit); the others wait in order.
    pub(crate) concurrency: u32,
    /// The pid the OS reports as this process's parent: the fork server for a forked child,
    /// otherwise `parent_pid`. A different `getppid()` at start-up means the parent died.
    pub(crate) os_parent: u32,
    /// This process is the fork server of `parent_pid`, not a worker.
    pub(crate) fork_server: bool,
    /// A spare: after `Hello`, wait for [`Down::Assign`], which says who this child is.
    pub(crate) spare: bool,
}

/// Root → fork server, on the server's control socket (its stdin).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    /// The child's configuration.
    pub(crate) config: ChildConfig,
    /// Environment variables to set in the child.
    pub(crate) env: Vec<(String, String)>,
}

/// Where a child with pid `pid` keeps its start log (see `bootstrap::start_log`): a file of the
/// run directory, which its parent reads.
pub(crate) fn start_log_path(run_dir: &std::path::Path, pid: u32) -> std::path::PathBuf {
    run_dir.join(format!("started-{pid}"))
}

/// Fork server → root.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForkReply {
    /// The child of the last request runs under this pid.
    Started { pid: u32 },
    /// The last request failed.
    Failed { message: String },
    /// A forked child exited; `status` is the raw `waitpid` status.
    Exited { pid: u32, status: i32 },
}

impl ChildConfig {
    pub(crate) fn to_env(&self) -> Result<String> {
        let bytes =
            postcard::to_allocvec(self).map_err(|e| Error::encode("child configuration", e))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub(crate) fn from_env(s: &str) -> Result<Self> {
        let bad = |m: &str| Error::decode("child configuration", m);
        if s.len() % 2 != 0 || !s.is_ascii() {
            return Err(bad("not hex"));
        }
        let bytes = (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| bad("not hex"))?;
        let cfg: ChildConfig =
            postcard::from_bytes(&bytes).map_err(|e| Error::decode("child configuration", e))?;
        if cfg.version != PROTOCOL_VERSION {
            return Err(bad("started by a parent with another protocol version"));
        }
        Ok(cfg)
    }
}

/// Encodes a header.
pub(crate) fn encode_head<M: Serialize>(msg: &M) -> Result<Vec<u8>> {
    postcard::to_allocvec(msg).map_err(|e| Error::encode("a protocol message", e))
}

/// Decodes the header at the front of `message`; returns it and where the body starts.
pub(crate) fn decode_head<M: DeserializeOwned>(message: &[u8]) -> Result<(M, usize)> {
    let (head, rest) = postcard::take_from_bytes::<M>(message)
        .map_err(|e| Error::Protocol(format!("malformed message from peer: {e}")))?;
    Ok((head, message.len() - rest.len()))
}

/// Encodes a user value (arguments or a result).
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>> {
    // Sized first, so a large value is written once into a buffer of the right size instead of
    // being copied each time a growing buffer doubles.
    let size = postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )
    .map_err(|e| Error::encode(what, e))?;
    postcard::serialize_with_flavor::<T, _, Vec<u8>>(
        value,
        Bytes(crate::transport::buffers::take(size)),
    )
    .map_err(|e| Error::encode(what, e))
}

/// A postcard output that appends large slices with `extend_from_slice` (one `memcpy`), where
/// postcard's own `Vec` output copies byte by byte, and small ones (varints) without a call.
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let n = data.len();
        if n <= 16 {
            // Varints and other small pieces (most calls): byte by byte after one reservation,
            // which beats a call into `memcpy` for a few bytes.
            self.0.reserve(n);
            for &byte in data {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a user value; the whole slice must be consumed.
pub(crate) fn decode_value<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::decode(what, e))?;
    if !rest.is_empty() {
        return Err(Error::decode(
            what,
            format!(
                "{} trailing bytes (do parent and child agree on the type?)",
                rest.len()
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body_split() {
        let mut msg = encode_head(&Down::Call {
            id: 7,
            entry: "a::b".into(),
            then_exit: true,
            batch: false,
            report_start: false,
        })
        .unwrap();
        let head_len = msg.len();
        msg.extend_from_slice(&encode_value("v", &(1u8, String::from("x"))).unwrap());
        let (down, at) = decode_head::<Down>(&msg).unwrap();
        assert_eq!(at, head_len);
        assert!(matches!(
            down,
            Down::Call {
                id: 7,
                then_exit: true,
                ..
            }
        ));
        assert_eq!(
            decode_value::<(u8, String)>("v", &msg[at..]).unwrap(),
            (1, "x".into())
        );
    }

    #[test]
    fn config_round_trips_through_env_text() {
        let cfg = ChildConfig {
            version: PROTOCOL_VERSION,
            run_dir: "/tmp/x".into(),
            socket: "/tmp/x/s".into(),
            root_socket: "/tmp/x/s".into(),
            key: "00".repeat(32),
            token: 42,
            name: "Process-1".into(),
            daemon: true,
            depth: 1,
            parent_pid: 1,
            parent_name: "MainProcess".into(),
            max_frame: 1 << 20,
            log_level: 2,
            test: Some("a::b".into()),
            concurrency: 1,
            os_parent: 1,
            fork_server: false,
            spare: false,
        };
        let back = ChildConfig::from_env(&cfg.to_env().unwrap()).unwrap();
        assert_eq!(back.token, 42);
        assert_eq!(back.test.as_deref(), Some("a::b"));
        assert!(ChildConfig::from_env("zz").is_err());
    }
}
