//! Layer 6: queues shared by every process of a run — [`Queue`], [`SimpleQueue`] and
//! [`JoinableQueue`].
//!
//! A queue lives in the root process (its hub hosts it); a handle is an id and the queue's
//! shape, so it is `Clone`, `Serialize` and `Deserialize` and can be handed to a child, a
//! grandchild or a pool worker as an entry argument. The first operation of a handle in a
//! process connects that process to the root (once per process). See `src/hub/objects/queue.rs`
//! for the delivery rules.

use crate::error::{Error, PutError, PutTimeoutError, Result, TryPutError};
use crate::hub::{Handle, HostClient};
use crate::protocol::{
    decode_value, encode_value, Answer, OpReply, QueueOp, QueueReply, QueueSpec, Wait,
};
use futures::{Sink, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many items a get in a process other than the root may be lent at once: the one it
/// takes, and the rest kept for the next gets there.
const PREFETCH: u32 = 256;

fn wait_for(timeout: Duration) -> Wait {
    Wait::Micros(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX))
}

fn unexpected(what: &str) -> Error {
    Error::Protocol(format!("unexpected answer to a queue's {what}"))
}

/// The handle every queue type wraps (see `hub::Handle`), with the queue's operations.
struct QueueHandle(Handle<QueueSpec>);

impl QueueHandle {
    fn new(capacity: Option<u32>, joinable: bool) -> Self {
        QueueHandle(Handle::new(QueueSpec { capacity, joinable }))
    }

    fn spec(&self) -> QueueSpec {
        self.0.spec()
    }

    /// This process's client, with this handle counted there.
    async fn client(&self) -> Result<&Arc<HostClient>> {
        self.0.client().await
    }

    /// Waits for room (as `wait` allows) in a bounded queue, then sends the encoded item. From
    /// another process it then also waits while more than a few MiB of this process's puts are
    /// still unwritten (room first: a put waiting for room holds none of that window).
    async fn put_encoded(&self, bytes: Vec<u8>, wait: Wait) -> Result<()> {
        let client = self.client().await?;
        if client.is_closed(self.0.id()) {
            return Err(Error::Closed);
        }
        let granted = match self.spec().capacity {
            // Room in an unbounded queue is never reserved.
            None => None,
            Some(_) => {
                let reply = self.0.call(QueueOp::Reserve { wait }).await?;
                if reply.answer != Answer::Op(OpReply::Queue(QueueReply::Granted)) {
                    return Err(unexpected("reservation"));
                }
                Some(reply)
            }
        };
        self.0.post_item(QueueOp::Put, bytes, granted).await
    }

    /// Takes one item: one lent ahead to this process if there is one, else from the root
    /// (which lends this process up to [`PREFETCH`] items at once when it has them; see
    /// `src/hub/README.md`).
    async fn get<T: DeserializeOwned>(&self, wait: Wait) -> Result<T> {
        let client = self.client().await?;
        let obj = self.0.id();
        let item = match client.take_lent(obj) {
            Some((_, item)) => item,
            None => {
                let lends = client.lends();
                let op = match lends {
                    true => QueueOp::Fetch {
                        wait,
                        most: PREFETCH,
                    },
                    false => QueueOp::Get { wait },
                };
                let reply = match self.0.call(op).await {
                    // A `try_get` held up by items lent elsewhere waited a bounded time.
                    Err(Error::Timeout) if wait == Wait::No => return Err(Error::Empty),
                    other => other?,
                };
                let Answer::Op(OpReply::Queue(QueueReply::Item { seq })) = reply.answer else {
                    return Err(unexpected("get"));
                };
                if lends {
                    // In the same poll as the answer: a get dropped before it gives the item
                    // back instead.
                    client.took_lent(obj, seq);
                }
                reply.body.unwrap_or_default()
            }
        };
        if self.spec().joinable {
            client.took(obj);
        }
        // Dropping the item after decoding returns its buffer to the pool.
        decode_value("a queue item", &item)
    }

    async fn len(&self) -> Result<usize> {
        match self.0.call(QueueOp::Len).await?.answer {
            Answer::Value(n) => Ok(n as usize),
            _ => Err(unexpected("len")),
        }
    }

    async fn close(&self) -> Result<()> {
        self.client().await?.mark_closed(self.0.id());
        self.0.call(QueueOp::Close).await.map(drop)
    }

    fn task_done_error() -> Error {
        Error::InvalidArgument(
            "task_done() called more times than this process took items from the queue".into(),
        )
    }

    async fn task_done(&self) -> Result<()> {
        if !self.client().await?.finish(self.0.id()) {
            return Err(Self::task_done_error());
        }
        self.0.post(QueueOp::TaskDone).await
    }

    async fn join(&self) -> Result<()> {
        self.0.call(QueueOp::Join).await.map(drop)
    }
}

impl Clone for QueueHandle {
    fn clone(&self) -> Self {
        QueueHandle(self.0.clone())
    }
}

impl fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("id", &format_args!("{:#018x}", self.0.id()))
            .field("capacity", &self.spec().capacity)
            .field("joinable", &self.spec().joinable)
            .finish()
    }
}

impl Serialize for QueueHandle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for QueueHandle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Handle::deserialize(d).map(QueueHandle)
    }
}

/// A FIFO queue shared by the processes of a run (Python's `multiprocessing.Queue`).
///
/// Items are any `Serialize + DeserializeOwned` type, sent as postcard bytes. The queue lives
/// in the root process; every handle (clones, and copies handed to children as entry
/// arguments) names the same queue. Items from one producer come out in the order they were
/// put; every item is delivered to exactly one `get`.
///
/// - **Unbounded** ([`Queue::new`]): `put` hands the item to this process's connection and
///   returns without waiting for the root, as Python's feeder thread does.
/// - **Bounded** ([`Queue::bounded`]): `put` waits (asynchronously) until the queue has room.
///   Room is reserved in the root before the item is sent, so the queue never holds more than
///   its capacity, however many producers there are, and memory stays bounded.
/// - **Close** ([`Queue::close`]) closes the queue for everyone: puts fail with
///   [`Error::Closed`], gets take what is left and then fail with `Closed`. Items a producer
///   had already sent when the close happened are kept, not lost.
/// - **Gets in a child** do not ask the root for each item: a process that takes items alone
///   is lent batches of them ahead (up to 256), and its next gets take those locally. Lent
///   items still count in [`len`](Queue::len); a get in another process brings back the ones
///   not taken yet (after one message there and back) rather than waiting on them, so
///   competing consumers each see every producer's items in order. Details:
///   `src/hub/README.md`.
/// - **A consumer that dies** after taking an item takes the item with it, as in Python; items
///   lent to it and not taken go back to the front of the queue. (Killed in the microseconds
///   between a get and its notice reaching the root, its last item is delivered again rather
///   than lost.) Use a [`JoinableQueue`] to have unfinished items of a dead process put back.
///
/// The queue is dropped when no process holds a handle and it holds no item.
///
/// It is also a [`Stream`] of `Result<T>` (ending when the queue is closed and drained) and a
/// [`Sink<T>`](futures::Sink).
///
/// ```
/// use multiprocessing::{entry, Process, Queue};
///
/// #[entry]
/// async fn produce(q: Queue<u32>) {
///     for i in 0..3 {
///         q.put(i).await.unwrap();
///     }
/// }
///
/// #[multiprocessing::process_main]
/// async fn main() -> multiprocessing::Result<()> {
///     let q = Queue::new();
///     let child = Process::spawn(produce, q.clone()).await?;
///     for want in 0..3 {
///         assert_eq!(q.get().await?, want);
///     }
///     child.join().await?;
///     Ok(())
/// }
/// ```
pub struct Queue<T> {
    handle: QueueHandle,
    // The `Stream` and `Sink` state. Only reached through `&mut self`, so the mutexes never
    // block; they make the queue `Sync` although boxed futures are not.
    get_next: Mutex<Option<BoxFuture<Result<T>>>>,
    putting: Mutex<Option<BoxFuture<Result<()>>>>,
    _items: PhantomData<fn(T) -> T>,
}

fn exclusive<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(|p| p.into_inner())
}

impl<T> Queue<T> {
    fn from_handle(handle: QueueHandle) -> Self {
        Queue {
            handle,
            get_next: Mutex::new(None),
            putting: Mutex::new(None),
            _items: PhantomData,
        }
    }

    /// An unbounded queue. Creating it does no I/O: the root learns of it on first use.
    pub fn new() -> Self {
        Self::from_handle(QueueHandle::new(None, false))
    }

    /// A queue that holds at most `capacity` items (Python's `Queue(maxsize)`). As in Python, a
    /// capacity of 0 means unbounded.
    pub fn bounded(capacity: usize) -> Self {
        let cap = (capacity > 0).then(|| u32::try_from(capacity).unwrap_or(u32::MAX));
        Self::from_handle(QueueHandle::new(cap, false))
    }

    /// The capacity given to [`Queue::bounded`], or `None` for an unbounded queue.
    pub fn capacity(&self) -> Option<usize> {
        self.handle.spec().capacity.map(|c| c as usize)
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts an item at the back, waiting for room if the queue is bounded and full.
    ///
    /// The item is sent to the root without waiting for an answer: a process that ends with
    /// `std::process::exit` right after a `put` can lose the item (as `os._exit` can in Python);
    /// any later answered operation on the queue (`len`, `get`, …) or returning from the entry
    /// makes sure it arrived.
    ///
    /// # Errors
    /// [`PutError::Closed`] with the item if the queue was closed; [`PutError::Failed`] with the
    /// item if it cannot be encoded or the root is unreachable. Each converts into [`Error`]
    /// with `?` (`Closed` into [`Error::Closed`]).
    ///
    /// # Cancel safety
    /// Cancel-safe: if dropped before the item is sent, the item is not put, and room reserved
    /// for it meanwhile goes back to the queue.
    pub async fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        match self.put_waiting(item, Wait::Forever).await {
            Ok(()) => Ok(()),
            Err((item, Error::Closed)) => Err(PutError::Closed(item)),
            Err((item, e)) => Err(PutError::Failed(item, e)),
        }
    }

    /// As [`Queue::put`], giving up after `timeout` if no room comes free.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] or [`PutTimeoutError::Closed`] with the item; `Failed` for
    /// anything else. Each converts into [`Error`] with `?`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Queue::put`].
    pub async fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        match self.put_waiting(item, wait_for(timeout)).await {
            Ok(()) => Ok(()),
            Err((item, Error::Timeout)) => Err(PutTimeoutError::Timeout(item)),
            Err((item, Error::Closed)) => Err(PutTimeoutError::Closed(item)),
            Err((item, e)) => Err(PutTimeoutError::Failed(item, e)),
        }
    }

    /// Puts an item only if there is room now (Python's `put_nowait`). It asks the root, so it
    /// is `async`, but it never waits for room.
    ///
    /// # Errors
    /// [`TryPutError::Full`] or [`TryPutError::Closed`] with the item; `Failed` for anything
    /// else.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Queue::put`].
    pub async fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        match self.put_waiting(item, Wait::No).await {
            Ok(()) => Ok(()),
            Err((item, Error::Full)) => Err(TryPutError::Full(item)),
            Err((item, Error::Closed)) => Err(TryPutError::Closed(item)),
            Err((item, e)) => Err(TryPutError::Failed(item, e)),
        }
    }

    /// The puts' one path: the item comes back with the error when it was not put.
    async fn put_waiting(&self, item: T, wait: Wait) -> std::result::Result<(), (T, Error)> {
        let bytes = match encode_value("a queue item", &item) {
            Ok(bytes) => bytes,
            Err(e) => return Err((item, e)),
        };
        match self.handle.put_encoded(bytes, wait).await {
            Ok(()) => Ok(()),
            Err(e) => Err((item, e)),
        }
    }

    /// Takes the item at the front, waiting until there is one.
    ///
    /// # Errors
    /// [`Error::Closed`] once the queue is closed and empty; [`Error::Decode`] if the item is
    /// not a `T` (the producer used another type).
    ///
    /// # Cancel safety
    /// Cancel-safe: an item that arrives for a dropped `get` goes back to the front of the
    /// queue.
    pub async fn get(&self) -> Result<T> {
        self.handle.get(Wait::Forever).await
    }

    /// As [`Queue::get`], giving up after `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when nothing came in time (no item is lost); otherwise as `get`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Queue::get`].
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.handle.get(wait_for(timeout)).await
    }

    /// Takes the item at the front if there is one now (Python's `get_nowait`). Items lent
    /// ahead to another process (see the type's docs) are still in the queue: it waits up to
    /// 100 ms for them to come back rather than say `Empty`.
    ///
    /// # Errors
    /// [`Error::Empty`] when the queue is empty; `Closed` once closed and empty.
    ///
    /// # Cancel safety
    /// Cancel-safe, as [`Queue::get`].
    pub async fn try_get(&self) -> Result<T> {
        self.handle.get(Wait::No).await
    }

    /// How many items the queue holds now (Python's `qsize`). Other processes may change it
    /// before the answer is used.
    ///
    /// # Errors
    /// `Io`/`Closed` if the root is unreachable.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn len(&self) -> Result<usize> {
        self.handle.len().await
    }

    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// As [`Queue::len`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.handle.len().await? == 0)
    }

    /// Whether a bounded queue is at its capacity now (always `false` when unbounded).
    ///
    /// # Errors
    /// As [`Queue::len`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn is_full(&self) -> Result<bool> {
        match self.capacity() {
            None => Ok(false),
            Some(cap) => Ok(self.handle.len().await? >= cap),
        }
    }

    /// Closes the queue for every process: puts fail with [`Error::Closed`] from now on, gets
    /// drain what is left and then fail with `Closed`, and waiting producers fail at once.
    ///
    /// # Errors
    /// `Io`/`Closed` if the root is unreachable.
    ///
    /// # Cancel safety
    /// Cancel-safe; once sent, the close happens whether or not this future is polled again.
    pub async fn close(&self) -> Result<()> {
        self.handle.close().await
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self::from_handle(self.handle.clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.handle.fmt(f)
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        QueueHandle::deserialize(d).map(Self::from_handle)
    }
}

impl<T> Unpin for Queue<T> {}

impl<T> Stream for Queue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        let slot = exclusive(&mut this.get_next);
        let fut = slot.get_or_insert_with(|| {
            let handle = this.handle.clone();
            Box::pin(async move { handle.get::<T>(Wait::Forever).await })
        });
        let out = futures::ready!(fut.as_mut().poll(cx));
        *slot = None;
        Poll::Ready(match out {
            Err(Error::Closed) => None,
            other => Some(other),
        })
    }
}

impl<T> Sink<T> for Queue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        let slot = exclusive(&mut self.putting);
        match slot.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(fut) => {
                let out = futures::ready!(fut.as_mut().poll(cx));
                *slot = None;
                Poll::Ready(out)
            }
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<()> {
        let bytes = encode_value("a queue item", &item)?;
        let handle = self.handle.clone();
        *exclusive(&mut self.putting) = Some(Box::pin(async move {
            handle.put_encoded(bytes, Wait::Forever).await
        }));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.poll_ready(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        // Closing the sink finishes this handle's puts; it does not close the queue for others.
        self.poll_ready(cx)
    }
}

/// Python's `SimpleQueue`: an unbounded queue with only `put`, `get`, `is_empty` and `close`.
/// It is a [`Queue`] underneath, with the same delivery guarantees.
pub struct SimpleQueue<T>(Queue<T>);

impl<T> SimpleQueue<T> {
    /// An empty queue. Creating it does no I/O.
    pub fn new() -> Self {
        SimpleQueue(Queue::new())
    }
}

impl<T> Default for SimpleQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Puts an item at the back.
    ///
    /// # Errors
    /// As [`Queue::put`]: the item comes back inside the error.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.0.put(item).await
    }

    /// Takes the item at the front, waiting until there is one.
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Cancel safety
    /// Cancel-safe: an item that arrives for a dropped `get` goes back to the front.
    pub async fn get(&self) -> Result<T> {
        self.0.get().await
    }

    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// As [`Queue::len`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn is_empty(&self) -> Result<bool> {
        self.0.is_empty().await
    }

    /// Closes the queue for every process.
    ///
    /// # Errors
    /// As [`Queue::close`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn close(&self) -> Result<()> {
        self.0.close().await
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(SimpleQueue)
    }
}

/// Python's `JoinableQueue`: a [`Queue`] that counts unfinished items, with
/// [`task_done`](JoinableQueue::task_done) and [`join`](JoinableQueue::join).
///
/// Every item put counts as unfinished until a consumer calls `task_done` for it; `join` waits
/// until none is left.
///
/// **At-least-once on consumer death.** The root remembers which process took each item. When
/// a process dies (or drops its last handle's connection) with items it took and did not mark
/// done, those items go back to the front of the queue for another consumer, instead of being
/// lost (Python loses them, and its `join` then waits forever). An item can therefore run twice
/// if its consumer died after doing the work and before `task_done`.
///
/// `task_done` marks the oldest unfinished item *this process* took; calling it more often than
/// this process took items is an error (Python counts across processes; here each process acks
/// its own items so that the root knows which ones a dead process leaves behind).
pub struct JoinableQueue<T>(Queue<T>);

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue. Creating it does no I/O.
    pub fn new() -> Self {
        JoinableQueue(Queue::from_handle(QueueHandle::new(None, true)))
    }

    /// A joinable queue that holds at most `capacity` items (0 = unbounded).
    pub fn bounded(capacity: usize) -> Self {
        let cap = (capacity > 0).then(|| u32::try_from(capacity).unwrap_or(u32::MAX));
        JoinableQueue(Queue::from_handle(QueueHandle::new(cap, true)))
    }
}

impl<T> Default for JoinableQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Marks the oldest item this process took (and has not marked) as done.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when this process holds no unfinished item of this queue
    /// (Python's `ValueError: task_done() called too many times`).
    ///
    /// # Cancel safety
    /// Cancel-safe: it completes without waiting.
    pub async fn task_done(&self) -> Result<()> {
        self.0.handle.task_done().await
    }

    /// Waits until every item ever put has been marked done.
    ///
    /// # Errors
    /// `Io`/`Closed` if the root is unreachable.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping it stops the wait and changes nothing.
    pub async fn join(&self) -> Result<()> {
        self.0.handle.join().await
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(JoinableQueue)
    }
}
