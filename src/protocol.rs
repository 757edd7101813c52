//! Layer 2: the versioned messages between a child and its parent. Serde types only, no I/O.
//!
//! Every message on a connection is a postcard-encoded header ([`Down`] or [`Up`]) followed by an
//! opaque body (encoded arguments or results), so large values are never re-encoded on the way.

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, RemoteError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape; a child of another version is refused at `Hello`.
pub(crate) const PROTOCOL_VERSION: u16 = 7;

// User values travel in the codec's format, which is part of this protocol: a new codec format
// needs a new `PROTOCOL_VERSION` too (and this check updated).
const _: () = assert!(crate::codec::VERSION == 1);

/// The environment variable that marks a process as a child and carries its [`ChildConfig`].
pub(crate) const CHILD_ENV: &str = "MULTIPROCESSING_CHILD";

/// Parent → child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Down {
    /// Run `entry` on the arguments in the body. With `then_exit`, the child exits once the
    /// result is sent (a `Process`); otherwise it waits for more calls. With `batch`, the body is
    /// a `Vec` of arguments and the result one outcome per item, in the format of
    /// [`BatchWriter`]. With `report_start`, the child counts the call in its start log
    /// (`bootstrap::start_log`), or failing that sends [`Up::Started`] (and flushes it), before
    /// running the call.
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

/// Identifies a hosted object across the whole run: random, made where the first handle is.
pub(crate) type ObjectId = u64;

/// What a hosted object is, carried by every handle so whichever process opens it first creates
/// it. One variant per kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Spec {
    Queue(QueueSpec),
    Dict(DictSpec),
    List(ListSpec),
    /// A lock: one word in a lock arena of the root's (see `hub/objects/lock.rs`).
    Lock(LockSpec),
    /// Another synchronization primitive, also a word in a lock arena.
    Sync(SyncSpec),
    /// A manager's lock: held and waited for at its host (see `hub/objects/mlock.rs`).
    ManagedLock(ManagedLockSpec),
    /// A manager's event (see `hub/objects/mevent.rs`).
    Event(EventSpec),
    /// A named shared memory segment, whose descriptor the root holds (see
    /// `hub/objects/segment.rs`).
    Segment(SegmentSpec),
}

/// What a synchronization primitive other than a lock is: each is a word in a lock arena (see
/// `hub/objects/word.rs` for each layout); semaphores and barriers also give every process
/// that uses them a word of its own, where it records what the host must undo at its death.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SyncSpec {
    /// An event: a flag and a generation.
    Event,
    /// A (bounded) semaphore with `value` permits at first.
    Semaphore { value: u32, bounded: bool },
    /// A condition's notification counter (its lock is a lock of its own).
    Condition,
    /// A barrier of `parties`.
    Barrier { parties: u32 },
}

impl From<SyncSpec> for Spec {
    fn from(spec: SyncSpec) -> Self {
        Spec::Sync(spec)
    }
}

/// What a manager's lock is: nothing beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManagedLockSpec;

impl From<ManagedLockSpec> for Spec {
    fn from(spec: ManagedLockSpec) -> Self {
        Spec::ManagedLock(spec)
    }
}

/// What a manager's event is: nothing beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventSpec;

impl From<EventSpec> for Spec {
    fn from(spec: EventSpec) -> Self {
        Spec::Event(spec)
    }
}

/// What a named segment is: nothing beyond its kind (its name and size come with `Create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentSpec;

impl From<SegmentSpec> for Spec {
    fn from(spec: SegmentSpec) -> Self {
        Spec::Segment(spec)
    }
}

/// What a lock is: nothing to choose (every lock is a word in one of the root's arenas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockSpec;

impl From<LockSpec> for Spec {
    fn from(spec: LockSpec) -> Self {
        Spec::Lock(spec)
    }
}

/// What a queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueSpec {
    /// Most items the queue holds; `None` for unbounded.
    pub(crate) capacity: Option<u32>,
    /// Items taken are tracked until `task_done` (and go back to the queue if their taker dies).
    pub(crate) joinable: bool,
}

impl From<QueueSpec> for Spec {
    fn from(spec: QueueSpec) -> Self {
        Spec::Queue(spec)
    }
}

/// What a manager's dict (or namespace) is: nothing beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DictSpec;

/// What a manager's list is: nothing beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListSpec;

impl From<DictSpec> for Spec {
    fn from(spec: DictSpec) -> Self {
        Spec::Dict(spec)
    }
}

impl From<ListSpec> for Spec {
    fn from(spec: ListSpec) -> Self {
        Spec::List(spec)
    }
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

/// Process → object host. `req` numbers the requests that are answered (never 0); the others
/// are pipelined and never answered. The generic requests (handles, cancellation, sync) are
/// variants of their own; what a kind of object does is an [`Op`] of that kind.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HostReq {
    /// This process now holds a handle to `obj` (created as `spec` if new); answered `Value`:
    /// 1 if the object is closed.
    Open { req: u64, obj: ObjectId, spec: Spec },
    /// Answered `Done` once every earlier request on this connection has been applied.
    Sync { req: u64 },
    /// This process holds no handle to `obj` any more.
    Release { obj: ObjectId },
    /// Abandon waiting request `req` (an answer already on its way still comes; otherwise it
    /// is answered `Failed(Timeout)`).
    Cancel { req: u64, obj: ObjectId },
    /// An operation of `obj`'s kind; answered if `req` is not 0. Its body (if the operation
    /// has one, see [`Op::has_body`]) follows the header, as the item of a put does.
    Op { req: u64, obj: ObjectId, op: Op },
}

impl HostReq {
    /// The number its answer will carry; 0 for a request that is not answered.
    pub(crate) fn answered_as(&self) -> u64 {
        match self {
            HostReq::Open { req, .. } | HostReq::Sync { req } | HostReq::Op { req, .. } => *req,
            HostReq::Release { .. } | HostReq::Cancel { .. } => 0,
        }
    }
}

/// The operations of each kind of hosted object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Op {
    Queue(QueueOp),
    Dict(DictOp),
    List(ListOp),
    Lock(LockOp),
    ManagedLock(ManagedLockOp),
    Event(EventOp),
    /// Of any kind: a handle on its way to another process (see [`TransitOp`]).
    Transit(TransitOp),
    Segment(SegmentOp),
}

impl Op {
    /// Whether the message carries a body (an item) after its header. Every dict and list
    /// operation does (the parts of [`join_parts`], empty when it needs none).
    pub(crate) fn has_body(&self) -> bool {
        matches!(
            self,
            Op::Queue(QueueOp::Put | QueueOp::Requeue { .. } | QueueOp::GiveBack)
                | Op::Dict(_)
                | Op::List(_)
                | Op::Segment(_)
        )
    }
}

impl From<DictOp> for Op {
    fn from(op: DictOp) -> Self {
        Op::Dict(op)
    }
}

impl From<ListOp> for Op {
    fn from(op: ListOp) -> Self {
        Op::List(op)
    }
}

impl From<LockOp> for Op {
    fn from(op: LockOp) -> Self {
        Op::Lock(op)
    }
}

impl From<ManagedLockOp> for Op {
    fn from(op: ManagedLockOp) -> Self {
        Op::ManagedLock(op)
    }
}

impl From<EventOp> for Op {
    fn from(op: EventOp) -> Self {
        Op::Event(op)
    }
}

impl From<TransitOp> for Op {
    fn from(op: TransitOp) -> Self {
        Op::Transit(op)
    }
}

/// What a process does to a manager's lock, which is held and waited for at its host (so it
/// also works across machines, where a lock word in shared memory cannot reach).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum ManagedLockOp {
    /// Take the lock, waiting as `wait` says, first come first served. Answered `Value` 0, or
    /// `Value` 1 when the last holder's process died holding it (the lock is poisoned, told
    /// once); `Failed(Timeout)` when `wait` runs out (at once for `Wait::No`).
    Acquire { wait: Wait },
    /// The asking process gives the lock back (not answered); ignored from a process that
    /// does not hold it.
    Release,
}

/// What a process does to a manager's event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum EventOp {
    /// Set the flag and wake every waiter; `Done`.
    Set,
    /// Clear the flag; `Done`.
    Clear,
    /// `Value` 1 if set, 0 if not.
    IsSet,
    /// `Value` 1 once the flag is set (at once if it is); `Failed(Timeout)` when `wait` runs
    /// out first.
    Wait { wait: Wait },
}

/// A handle of a manager's object on its way to another process (serialized into an entry's
/// arguments, a queue item, a dict value). The sender holds the object for it under a token
/// made for that one serialization; the receiver takes the hold once it has opened the object
/// itself (or drops it unused). Neither is answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum TransitOp {
    /// Keep the object while the copy with `token` is on its way.
    Hold { token: u64 },
    /// The copy with `token` arrived; a token already taken (or never held) changes nothing.
    Take { token: u64 },
}

/// What a process asks of a lock. Acquiring and releasing never come here: they are atomic
/// operations on the lock's word.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum LockOp {
    /// Where the lock's word is; `pid` is the asking process, whose locks the host releases
    /// when its connection ends. Answered `Word`.
    Locate { pid: u32 },
    /// A descriptor of lock arena `arena`; answered `Arena` with the descriptor's ticket in
    /// the body.
    Arena { arena: u32 },
}

impl From<SegmentOp> for Op {
    fn from(op: SegmentOp) -> Self {
        Op::Segment(op)
    }
}

/// What a process asks of a named segment. The body holds the name (UTF-8); the host checks
/// it, so two names whose ids collide are never confused. Both are answered `Segment`, with
/// the descriptor's ticket in the body.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum SegmentOp {
    /// Make a zero-filled segment of `len` bytes under the name; fails with `NameTaken` if the
    /// name has one.
    Create { len: u64 },
    /// The segment under the name; fails with `NoSuchName` if there is none.
    Open,
}

impl From<QueueOp> for Op {
    fn from(op: QueueOp) -> Self {
        Op::Queue(op)
    }
}

/// What a process does to a queue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum QueueOp {
    /// Append the item in the body. On a bounded queue it uses one granted reservation.
    Put,
    /// Reserve room for one item in a bounded queue; answered `Granted` or `Failed`.
    Reserve { wait: Wait },
    /// Give back `count` granted reservations this process will not use.
    Unreserve { count: u32 },
    /// Take one item; answered `Item` (the item in the body) or `Failed`.
    Get { wait: Wait },
    /// An item delivered for a get the caller had abandoned: put it back at the front. It
    /// carries the queue's shape because the queue may have been dropped meanwhile (its last
    /// handle released while the item was out).
    Requeue { seq: u64, spec: QueueSpec },
    /// How many items the queue holds; answered `Value`.
    Len,
    /// Close the queue for everyone; answered `Done`.
    Close,
    /// The oldest item this process took from a joinable queue is done.
    TaskDone,
    /// Answer `Done` once every item put has been marked done.
    Join,
    /// Take one item and lend up to `most - 1` more to this process (its prefetch, see
    /// `src/hub/README.md`); answered `Item` or `Batch` (the items in the body, see
    /// [`join_items`]) or `Failed`. Every item it delivers is *lent* until a `Took` says a get
    /// took it or a `GiveBack` returns it.
    Fetch { wait: Wait, most: u32 },
    /// A get of this process took lent item `seq`.
    Took { seq: u64 },
    /// Lent items this process gives back (all it holds untaken), their numbers in the body
    /// as [`join_seqs`] lays them out (the host kept the items); also the answer to a
    /// `Recall`, even when empty.
    GiveBack,
}

/// What a process does to a manager's dict. The body holds the parts named (see
/// [`join_parts`]): keys and values as the postcard bytes of the user's types, which the host
/// compares and stores as bytes and never decodes (only `FetchAdd` reads a value, as an
/// integer). Answers: `Found` (the value in the body) or `Missing`; `Items` (a postcard `Vec`
/// in the body); `Value` for counts and yes/no; `Done`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum DictOp {
    /// Parts: key, value. Answered with the value it replaced (`Found`) or `Missing`.
    Insert,
    /// Part: key. `Found` or `Missing`.
    Get,
    /// Part: key. The value taken out (`Found`) or `Missing`.
    Remove,
    /// Part: key. `Value` 1 or 0.
    ContainsKey,
    /// `Value`: how many entries.
    Len,
    /// `Items`: the keys, in insertion order.
    Keys,
    /// `Items`: the values, in insertion order.
    Values,
    /// `Items`: `(key, value)` pairs, in insertion order.
    Items,
    /// Parts: key, value, key, value, …; `Done`.
    Update,
    /// `Done`.
    Clear,
    /// Parts: key, value. The value now at the key (`Found`): the one there, or this one,
    /// inserted.
    GetOrInsert,
    /// Part: key. Adds `delta` to the integer at the key (0 when missing) and answers the new
    /// value (`Found`); fails with `NotAnInteger` or `Overflow`, leaving the value as it was.
    FetchAdd { delta: i64, int: IntKind },
}

/// The integer type of a `FetchAdd`, which is all the host needs to read and write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IntKind {
    pub(crate) signed: bool,
    /// 8, 16, 32, 64 (`usize`/`isize` travel as 64).
    pub(crate) bits: u8,
}

/// What a process does to a manager's list. Items are postcard bytes, as in a dict.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum ListOp {
    /// Part: item. `Done`.
    Push,
    /// Parts: items. `Done`.
    Extend,
    /// The last item (`Found`) or `Missing`.
    Pop,
    /// `Found` or `Missing`.
    Get { index: u64 },
    /// Part: item. `Done`, or fails with `OutOfRange`.
    Set { index: u64 },
    /// Part: item, inserted before `index` (at the end when `index` is past it, as Python's
    /// `insert` does). `Done`.
    Insert { index: u64 },
    /// The item taken out (`Found`), or fails with `OutOfRange`.
    Remove { index: u64 },
    /// `Done`.
    Reverse,
    /// `Value`: how many items.
    Len,
    /// `Items { version }`: every item, and the list's version (bumped by every change).
    Snapshot,
    /// Parts: items. Replaces every item if the list is still at `version` (`Value` 1), else
    /// changes nothing (`Value` 0): how a sort done by the caller stays atomic.
    Replace { version: u64 },
}

/// Why a hosted-object operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HostError {
    Empty,
    Full,
    Timeout,
    Closed,
    /// A list has no item at `index` (it holds `len`).
    OutOfRange {
        index: u64,
        len: u64,
    },
    /// A dict's value is not an integer of the kind a `FetchAdd` named.
    NotAnInteger,
    /// A `FetchAdd` would leave its integer type's range.
    Overflow,
    /// The request's parts do not split as its operation says.
    Malformed,
    /// A named segment of this name exists already.
    NameTaken,
    /// No named segment of this name exists (any more).
    NoSuchName,
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Empty => Error::Empty,
            HostError::Full => Error::Full,
            HostError::Timeout => Error::Timeout,
            HostError::Closed => Error::Closed,
            HostError::OutOfRange { index, len } => Error::Lookup(format!(
                "list index {index} is out of range (the list holds {len} items)"
            )),
            HostError::NotAnInteger => Error::InvalidArgument(
                "fetch_add: the value at this key is not an integer of the dict's value type"
                    .into(),
            ),
            HostError::Overflow => Error::InvalidArgument(
                "fetch_add: the sum does not fit the dict's value type".into(),
            ),
            HostError::Malformed => {
                Error::Protocol("the manager host could not split a request's parts".into())
            }
            HostError::NameTaken => Error::InvalidArgument(
                "a shared memory segment of this name exists already in this run".into(),
            ),
            HostError::NoSuchName => Error::Lookup(
                "no shared memory segment of this name is held by any process of this run".into(),
            ),
        }
    }
}

/// Object host → process.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HostReply {
    /// The answer to request `req`. Its body (if the answer has one, see
    /// [`Answer::has_body`]) follows the header.
    Answer { req: u64, answer: Answer },
    /// `obj` was closed (by anyone): operations that need it open fail from now on.
    Closed { obj: ObjectId },
    /// Give back the items of queue `obj` lent to this process and not taken (a get waits
    /// elsewhere); answered with a `GiveBack`, even an empty one.
    Recall { obj: ObjectId },
}

/// The answer to a request: the generic ones, or one of a kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Done (`Sync`, and operations with nothing to say).
    Done,
    /// A number (`Open`: 1 if closed; a queue's `Len`).
    Value(u64),
    /// The request failed.
    Failed(HostError),
    /// An answer only one kind of object gives.
    Op(OpReply),
}

impl Answer {
    /// Whether the message carries a body (an item) after its header.
    pub(crate) fn has_body(&self) -> bool {
        matches!(
            self,
            Answer::Op(
                OpReply::Queue(QueueReply::Item { .. } | QueueReply::Batch)
                    | OpReply::Managed(ManagedReply::Found | ManagedReply::Items { .. })
                    | OpReply::Lock(LockReply::Arena)
                    | OpReply::Segment(SegmentReply::Segment)
            )
        )
    }
}

/// The answers of each kind of hosted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OpReply {
    Queue(QueueReply),
    Managed(ManagedReply),
    Lock(LockReply),
    Segment(SegmentReply),
}

/// What a named segment answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SegmentReply {
    /// The segment's descriptor ticket and size are in the body (a serialized segment).
    Segment,
}

impl From<SegmentReply> for OpReply {
    fn from(reply: SegmentReply) -> Self {
        OpReply::Segment(reply)
    }
}

impl From<ManagedReply> for OpReply {
    fn from(reply: ManagedReply) -> Self {
        OpReply::Managed(reply)
    }
}

/// What a manager's dict or list answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ManagedReply {
    /// The value (in the body).
    Found,
    /// No such key or item.
    Missing,
    /// Several keys, values, pairs or items (in the body, as a postcard `Vec` of them), and
    /// for a list its version.
    Items { version: u64 },
}

/// Joins byte strings into one message body: each part after its length (4 bytes, little
/// endian), so the host can split keys from values without knowing their types.
///
/// # Errors
/// `InvalidArgument` for a part of 4 GiB or more.
// The format's reference, used by the host's tests; requests are built part by part with
// `push_part`, which writes the same bytes without a buffer per part.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn join_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    for part in parts {
        let len = u32::try_from(part.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "a manager key, value or item of {} bytes (the most is 4 GiB)",
                part.len()
            ))
        })?;
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(part);
    }
    Ok(body)
}

/// Appends `value`'s encoding to `body` as one more part of [`join_parts`]'s format (its length
/// first), encoding it in place: no buffer of its own, no copy (a manager's key and value go
/// into one request body this way).
///
/// # Errors
/// [`Error::Encode`] if the value does not encode; `InvalidArgument` for 4 GiB or more.
pub(crate) fn push_part<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    mut body: Vec<u8>,
) -> Result<Vec<u8>> {
    let at = body.len();
    body.extend_from_slice(&[0; 4]);
    let mut body = crate::codec::encode_onto(value, body).map_err(|e| Error::encode(what, e))?;
    let len = body.len() - at - 4;
    let len = u32::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!("{what} of {len} bytes (the most is 4 GiB)"))
    })?;
    body[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(body)
}

/// Splits a body made by [`join_parts`]; `None` if it is cut short.
pub(crate) fn split_parts(mut body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !body.is_empty() {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (part, rest) = rest.split_at(len);
        parts.push(part);
        body = rest;
    }
    Some(parts)
}

/// Lays out queue items with their numbers (a `Batch` answer, a `GiveBack`): each item as two
/// [`join_parts`] parts, its 8-byte little-endian `seq`, then its bytes.
///
/// # Errors
/// `InvalidArgument` for an item of 4 GiB or more.
pub(crate) fn join_items<'a>(items: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<Vec<u8>> {
    let seqs: Vec<(u64, &[u8])> = items.into_iter().collect();
    let numbers: Vec<[u8; 8]> = seqs.iter().map(|(seq, _)| seq.to_le_bytes()).collect();
    join_parts(
        numbers
            .iter()
            .zip(&seqs)
            .flat_map(|(n, (_, item))| [&n[..], *item]),
    )
}

/// Splits a body made by [`join_items`]; `None` if it is malformed.
pub(crate) fn split_items(body: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let parts = split_parts(body)?;
    let mut items = Vec::with_capacity(parts.len() / 2);
    for pair in parts.chunks(2) {
        let [seq, item] = pair else {
            return None;
        };
        items.push((u64::from_le_bytes((*seq).try_into().ok()?), *item));
    }
    Some(items)
}

/// The numbers of the items a `GiveBack` returns: each 8 bytes, little-endian.
pub(crate) fn join_seqs(seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    seqs.into_iter().flat_map(u64::to_le_bytes).collect()
}

/// Splits a body made by [`join_seqs`]; `None` if its length is not a multiple of 8.
pub(crate) fn split_seqs(body: &[u8]) -> Option<Vec<u64>> {
    let chunks = body.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return None;
    }
    chunks
        .map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect()
}

/// What a lock answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LockReply {
    /// The lock's word is word `index` of lock arena `arena`.
    Word { arena: u32, index: u32 },
    /// The arena's descriptor ticket is in the body.
    Arena,
    /// The word is word `index` of arena `arena`, and the asking process's own word (see
    /// [`SyncSpec`]) is word `own_index` of arena `own_arena`.
    Words {
        arena: u32,
        index: u32,
        own_arena: u32,
        own_index: u32,
    },
}

impl From<LockReply> for OpReply {
    fn from(reply: LockReply) -> Self {
        OpReply::Lock(reply)
    }
}

impl From<QueueReply> for OpReply {
    fn from(reply: QueueReply) -> Self {
        OpReply::Queue(reply)
    }
}

/// What a queue answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum QueueReply {
    /// The item (in the body) for a get; `seq` names it if it must be requeued.
    Item { seq: u64 },
    /// Room for one item was reserved.
    Granted,
    /// Two or more lent items, in the body as [`join_items`] lays them out (the first for the
    /// get that asked, the rest for this process's later gets).
    Batch,
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

/// Encodes a user value (arguments or a result) with the codec of user values
/// ([`crate::codec`]: postcard's format, plain runs in one piece).
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>> {
    // One pass: sizing first doubled the cost of a value of many small items (a map chunk of
    // 125,000 integers), and a large blob is still copied once, as it is written in one piece
    // into a buffer grown to fit it.
    encode_value_into(what, value, 0)
}

/// Encodes a user value into a buffer with room for about `capacity` bytes to start with (a
/// kept one when large enough), for a caller that can guess the size.
///
/// # Errors
/// [`Error::Encode`] if the value does not encode.
pub(crate) fn encode_value_into<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>> {
    let mut encoder = Encoder::with_capacity(capacity);
    value
        .serialize(&mut encoder)
        .map_err(|e| Error::encode(what, e))?;
    Ok(encoder.into_vec())
}

/// One item's outcome in a batch. The error is boxed: it is rare and large (~80 bytes), and a
/// batch of 100,000 small values should not cost 100,000 error-sized slots (and their page
/// faults). On the wire a box is its content, so this encodes as `Result<O, RemoteError>`.
pub(crate) type BatchResult<O> = std::result::Result<O, Box<RemoteError>>;

/// Writes the outcomes of a batch as they come, in the batch format: the values of the items
/// before the first failure, one after another; then, as one `Vec<Result<O, RemoteError>>`, each
/// item's own outcome from that failure on (empty when all succeeded); then, as 8 little-endian
/// bytes, how many values came first.
///
/// Most batches succeed whole: a run of plain values costs no variant tag per item to write, nor
/// a variant to visit per item to read, and a worker writes each value as it is computed, with
/// neither the arguments nor the results collected in a vector first.
pub(crate) struct BatchWriter<O> {
    output: Encoder,
    values: u64,
    rest: Vec<BatchResult<O>>,
}

impl<O: Serialize> BatchWriter<O> {
    /// A writer whose buffer starts with room for about `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        BatchWriter {
            output: Encoder::with_capacity(capacity),
            values: 0,
            rest: Vec::new(),
        }
    }

    /// Adds the next item's outcome.
    ///
    /// # Errors
    /// [`Error::Encode`] if the value does not encode.
    pub(crate) fn push(&mut self, outcome: BatchResult<O>) -> Result<()> {
        match outcome {
            Ok(value) if self.rest.is_empty() => {
                value
                    .serialize(&mut self.output)
                    .map_err(|e| Error::encode("a batch of results", e))?;
                self.values += 1;
            }
            other => self.rest.push(other),
        }
        Ok(())
    }

    /// The encoded batch.
    ///
    /// # Errors
    /// [`Error::Encode`] if a value after a failure does not encode.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>> {
        self.rest
            .serialize(&mut self.output)
            .map_err(|e| Error::encode("a batch of results", e))?;
        let mut out = self.output.into_vec();
        out.extend_from_slice(&self.values.to_le_bytes());
        Ok(out)
    }
}

/// Reads a batch written by [`BatchWriter`] that should hold `sent` outcomes: appends the values
/// before the first failure to `values`, and returns the outcomes from the failure on.
///
/// # Errors
/// [`Error::Decode`] for a batch that does not decode, [`Error::Protocol`] for one that holds
/// other than `sent` outcomes.
pub(crate) fn read_batch<R: DeserializeOwned>(
    body: &[u8],
    sent: usize,
    values: &mut Vec<R>,
) -> Result<Vec<BatchResult<R>>> {
    let what = "a batch of results";
    let Some((data, tail)) = body.split_last_chunk::<8>() else {
        return Err(Error::decode(what, "shorter than its count"));
    };
    let leading = u64::from_le_bytes(*tail);
    if leading > sent as u64 {
        return Err(Error::Protocol(format!(
            "a worker returned {leading} results for {sent} items"
        )));
    }
    values.reserve(leading as usize);
    let mut de = Decoder::new(data);
    for _ in 0..leading {
        values.push(R::deserialize(&mut de).map_err(|e| Error::decode(what, e))?);
    }
    let rest: Vec<BatchResult<R>> =
        Deserialize::deserialize(&mut de).map_err(|e| Error::decode(what, e))?;
    all_read(what, de.rest())?;
    let count = leading as usize + rest.len();
    if count != sent {
        return Err(Error::Protocol(format!(
            "a worker returned {count} results for {sent} items"
        )));
    }
    Ok(rest)
}

/// Decodes a user value; the whole slice must be consumed.
pub(crate) fn decode_value<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let (value, rest) =
        crate::codec::take_from_bytes::<T>(bytes).map_err(|e| Error::decode(what, e))?;
    all_read(what, rest)?;
    Ok(value)
}

/// Checks that decoding `what` left nothing over.
///
/// # Errors
/// [`Error::Decode`] naming the bytes left.
pub(crate) fn all_read(what: &'static str, rest: &[u8]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Error::decode(
            what,
            format!(
                "{} trailing bytes (do parent and child agree on the type?)",
                rest.len()
            ),
        ))
    }
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

    fn failure(text: &str) -> Box<RemoteError> {
        Box::new(RemoteError::from(Error::Protocol(text.into())))
    }

    #[test]
    fn a_batch_keeps_each_outcome_in_place() {
        let mut writer = BatchWriter::new(0);
        for outcome in [
            Ok(1u64),
            Ok(300),
            Err(failure("first")),
            Ok(4),
            Err(failure("second")),
        ] {
            writer.push(outcome).unwrap();
        }
        let body = writer.finish().unwrap();
        let mut values = vec![7u64];
        let rest = read_batch::<u64>(&body, 5, &mut values).unwrap();
        assert_eq!(
            values,
            [7, 1, 300],
            "values before the first failure are appended"
        );
        let rest: Vec<_> = rest
            .into_iter()
            .map(|r| r.map_err(|e| Error::from(*e).to_string()))
            .collect();
        assert_eq!(rest.len(), 3);
        assert!(rest[0].as_ref().unwrap_err().contains("first"));
        assert_eq!(rest[1], Ok(4));
        assert!(rest[2].as_ref().unwrap_err().contains("second"));
        assert!(matches!(
            read_batch::<u64>(&body, 4, &mut Vec::new()),
            Err(Error::Protocol(_))
        ));
        assert!(read_batch::<u64>(&body[..body.len() - 1], 5, &mut Vec::new()).is_err());
        assert!(read_batch::<u64>(&[1, 2], 5, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_batch_that_claims_more_values_than_items_is_refused() {
        let mut writer = BatchWriter::new(0);
        writer.push(Ok(1u64)).unwrap();
        let mut body = writer.finish().unwrap();
        let at = body.len() - 8;
        body[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_batch::<u64>(&body, 1, &mut Vec::new()),
            Err(Error::Protocol(_))
        ));
    }
}
