//! The builder-futures and streams that pool calls return: `Apply`, `Map`, `Imap`,
//! `ImapUnordered`.

use super::backend::{Command, TaskOptions};
use super::outcome::{Completion, TaskFailure};
use super::reply::{self, ReplyRx, ReplyTx};
use super::{decode_results, decode_values, encode_chunk, AsyncResult, PoolHandle};
use crate::entry::BoxFuture;
use crate::error::{Error, RemoteError, Result};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The setters of [`TaskOptions`] that every call builder has, each with its doc.
macro_rules! task_option_setters {
    (
        retries: $(#[$retries:meta])*
        timeout: $(#[$timeout:meta])*
        retry_timeouts: $(#[$retry_timeouts:meta])*
    ) => {
        $(#[$retries])*
        pub fn retries(mut self, n: u32) -> Self {
            self.opts.retries = n;
            self
        }

        $(#[$timeout])*
        pub fn timeout(mut self, limit: Duration) -> Self {
            self.opts.timeout = Some(limit);
            self
        }

        $(#[$retry_timeouts])*
        pub fn retry_timeouts(mut self) -> Self {
            self.opts.retry_timeouts = true;
            self
        }
    };
}

/// Pulls up to `n` items from the input and encodes them as one chunk, with its item count;
/// `None` once the input is exhausted.
type Input = Box<dyn FnMut(usize) -> Option<(Result<Vec<u8>>, usize)> + Send>;

/// Reads `items` lazily, a chunk at a time.
pub(crate) fn chunker<I>(mut items: I) -> Input
where
    I: Iterator + Send + 'static,
    I::Item: Serialize,
{
    Box::new(move |n| {
        let chunk: Vec<I::Item> = items.by_ref().take(n).collect();
        if chunk.is_empty() {
            None
        } else {
            Some((encode_chunk(&chunk), chunk.len()))
        }
    })
}

/// The same error for each of `len` items.
fn failed_items<R>(e: &Error, len: usize) -> Vec<Result<R>> {
    let remote = RemoteError::from(e);
    (0..len).map(|_| Err(remote.clone().into())).collect()
}

/// The group of one lazily submitting call, registered with the pool when the call is made (so
/// its chunks still run after `close`, as in Python). Dropped before [`Group::finish`], it cancels
/// the call's tasks that have not started.
struct Group {
    commands: mpsc::UnboundedSender<Command>,
    id: u64,
    finished: bool,
}

impl Group {
    fn open(handle: &PoolHandle) -> Self {
        let id = handle.next_id();
        let _ = handle.commands.send(Command::Open(id));
        Group {
            commands: handle.commands.clone(),
            id,
            finished: false,
        }
    }

    /// Everything of this call is done: nothing to cancel, nothing more to submit.
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.commands.send(Command::Done(self.id));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.commands.send(Command::Cancel(self.id));
            let _ = self.commands.send(Command::Done(self.id));
        }
    }
}

/// One call on a pool worker, returned by [`Pool::apply`](super::Pool::apply): set options,
/// then `.await` it (or [`submit`](Self::submit) it for an [`AsyncResult`]).
///
/// # Cancel safety
/// As [`AsyncResult`]: dropping the awaiting future before the task started cancels it.
#[must_use = "a pool call does nothing until it is awaited or submitted"]
pub struct Apply<R> {
    handle: PoolHandle,
    entry: &'static str,
    args: Result<Vec<u8>>,
    opts: TaskOptions,
    _output: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Apply<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply")
            .field("entry", &self.entry)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<R> Apply<R> {
    pub(crate) fn new(handle: PoolHandle, entry: &'static str, args: Result<Vec<u8>>) -> Self {
        Apply {
            handle,
            entry,
            args,
            opts: TaskOptions::default(),
            _output: PhantomData,
        }
    }

    task_option_setters!(
        retries:
        /// If the worker dies while running the task, run it again on another worker, up to `n`
        /// times. Default: 0 (the task fails with [`Error::WorkerLost`]). Only for tasks that may
        /// safely run twice.
        timeout:
        /// A task still running `limit` after it started has its worker killed (SIGKILL, or SIGTERM
        /// first if the pool has a [`kill_grace`](super::PoolBuilder::kill_grace)) and replaced,
        /// and fails with [`Error::Timeout`]; the tasks that worker held and had not started run
        /// elsewhere. Unlike [`AsyncResult::get`], which only stops waiting, this frees the worker.
        /// The time counts from the start (not while the task waits for a worker), give or take a
        /// millisecond. With `concurrency_per_worker` above 1, the other tasks running on that
        /// worker fail with [`Error::WorkerLost`] (or are retried). Default: no limit.
        retry_timeouts:
        /// A task that timed out runs again (on a new worker) while it has
        /// [`retries`](Self::retries) left, instead of failing at once. Default: a timeout is not
        /// retried.
    );

    /// Submits the task now; Python's `apply_async`.
    pub fn submit(self) -> AsyncResult<R> {
        let (tx, rx) = reply::channel();
        let group = self.handle.next_id();
        let submitted = self.args.and_then(|args| {
            self.handle
                .submit(self.entry, vec![args], 0, self.opts, group, &tx)
        });
        if let Err(e) = submitted {
            let failure = match e {
                Error::PoolClosed => TaskFailure::Terminated,
                other => TaskFailure::Remote(RemoteError::from(&other)),
            };
            let _ = tx.send(Completion {
                index: 0,
                outcome: Err(failure),
            });
        }
        AsyncResult::new(rx, group, self.handle.commands.clone())
    }
}

impl<R: DeserializeOwned> IntoFuture for Apply<R> {
    type Output = Result<R>;
    type IntoFuture = AsyncResult<R>;

    fn into_future(self) -> AsyncResult<R> {
        self.submit()
    }
}

/// Python's default: `len / (4 × processes)`, rounded up.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(4 * processes.max(1)).max(1)
}

/// Many calls, all values in input order; returned by [`Pool::map`](super::Pool::map). Set
/// options, then `.await` it.
///
/// # Cancel safety
/// Dropping the future cancels the chunks that have not started.
///
/// # Errors
/// The first failure met (a task's own error, [`Error::WorkerLost`], [`Error::PoolClosed`]);
/// the chunks not yet started are then cancelled. Chunks are encoded as they are sent (so the
/// first workers start at once), so an item that does not encode ([`Error::Encode`]) fails the
/// call after the chunks before it may have run, as in Python. For the outcome of every item,
/// values and failures side by side, use [`Pool::imap`](super::Pool::imap).
#[must_use = "a pool call does nothing until it is awaited"]
pub struct Map<R> {
    handle: PoolHandle,
    entry: &'static str,
    len: usize,
    /// Encodes chunk `i` (the second argument) of the items cut in chunks of the given size.
    chunker: Box<dyn FnMut(usize, usize) -> Result<Vec<u8>> + Send>,
    chunksize: Option<usize>,
    opts: TaskOptions,
    group: Group,
    _output: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Map<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("entry", &self.entry)
            .field("items", &self.len)
            .finish_non_exhaustive()
    }
}

impl<R> Map<R> {
    pub(crate) fn new<A>(handle: PoolHandle, entry: &'static str, items: Vec<A>) -> Self
    where
        A: Serialize + Send + 'static,
    {
        Map {
            group: Group::open(&handle),
            handle,
            entry,
            len: items.len(),
            chunker: Box::new(move |size, i| {
                let start = (i * size).min(items.len());
                encode_chunk(&items[start..(start + size).min(items.len())])
            }),
            chunksize: None,
            opts: TaskOptions::default(),
            _output: PhantomData,
        }
    }

    /// Items per chunk. Default: `len / (4 × processes)`, rounded up, as Python picks it.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    task_option_setters!(
        retries:
        /// Retries of a chunk whose worker died while running it; see [`Apply::retries`].
        timeout:
        /// A time limit per chunk (per item at `chunksize(1)`), from its start; see
        /// [`Apply::timeout`].
        retry_timeouts:
        /// Chunks that time out are retried; see [`Apply::retry_timeouts`].
    );
}

impl<R: DeserializeOwned + Send + 'static> IntoFuture for Map<R> {
    type Output = Result<Vec<R>>;
    type IntoFuture = BoxFuture<Result<Vec<R>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut group = self.group;
            if self.len == 0 {
                group.finish();
                return Ok(Vec::new());
            }
            let size = self
                .chunksize
                .unwrap_or_else(|| default_chunksize(self.len, self.handle.processes));
            let count = self.len.div_ceil(size);
            let (tx, mut rx) = reply::channel();
            // Chunks go out as they are encoded, in groups that double (1, 2, 4, …): the first
            // worker starts while the rest are encoded, and a large map costs few commands.
            let mut chunker = self.chunker;
            let (mut next, mut batch) = (0, 1);
            while next < count {
                let end = (next + batch).min(count);
                let chunks = (next..end)
                    .map(|i| chunker(size, i))
                    .collect::<Result<Vec<_>>>()?;
                self.handle
                    .submit(self.entry, chunks, next, self.opts, group.id, &tx)?;
                next = end;
                batch *= 2;
            }
            drop(tx);
            // Chunks that come in order are decoded straight into the result; the others wait
            // as their own vectors until the ones before them are in.
            let mut values = Vec::with_capacity(self.len);
            let mut early: BTreeMap<usize, Result<Vec<R>>> = BTreeMap::new();
            let mut appended = 0;
            // The first failed item in input order, as Python's `map` raises it.
            let mut failed: Option<Error> = None;
            for _ in 0..count {
                let completion = rx.recv().await.ok_or(Error::PoolClosed)?;
                let (message, at) = completion.outcome.map_err(Error::from)?;
                let index = completion.index;
                if index >= count {
                    return Err(Error::Protocol(
                        "a result for a chunk that was not sent".into(),
                    ));
                }
                let sent = if index + 1 == count {
                    self.len - size * (count - 1)
                } else {
                    size
                };
                if index == appended && failed.is_none() {
                    let outcome = decode_values(&message[at..], sent, &mut values)?;
                    failed = outcome.err();
                    appended += 1;
                } else {
                    let mut own = Vec::new();
                    let outcome = decode_values(&message[at..], sent, &mut own)?;
                    early.insert(index, outcome.map(|()| own));
                }
                while failed.is_none() {
                    let Some(chunk) = early.remove(&appended) else {
                        break;
                    };
                    match chunk {
                        Ok(own) => values.extend(own),
                        Err(e) => failed = Some(e),
                    }
                    appended += 1;
                }
            }
            group.finish();
            match failed {
                Some(e) => Err(e),
                None => Ok(values),
            }
        })
    }
}

/// How many chunks per worker `imap` and `imap_unordered` submit ahead of what the stream has
/// yielded. Workers keep up to 64 short tasks queued (see the driver's pace); with only 8 chunks
/// per worker in the window they ran dry between refills (114k tasks/s at chunksize 1, against
/// 240k/s with 32).
pub(crate) const WINDOW_PER_WORKER: usize = 32;

/// Results of [`Pool::imap`](super::Pool::imap): a `Stream` of per-item results, in input order.
///
/// The input is read lazily: at most a window of chunks (32 per worker) is
/// submitted ahead of what the stream has yielded, so a huge (or endless) iterator never sits in
/// memory at once.
///
/// # Cancel safety
/// Dropping the stream cancels the chunks that have not started; the pool stays healthy.
#[must_use = "streams do nothing unless polled"]
pub struct Imap<R> {
    handle: PoolHandle,
    entry: &'static str,
    input: Option<Input>,
    chunksize: usize,
    opts: TaskOptions,
    ordered: bool,
    group: Group,
    tx: ReplyTx,
    rx: ReplyRx,
    sizes: HashMap<usize, usize>,
    next_index: usize,
    outstanding: usize,
    window: usize,
    buffer: BTreeMap<usize, Vec<Result<R>>>,
    next_yield: usize,
    ready: VecDeque<Result<R>>,
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("entry", &self.entry)
            .field("ordered", &self.ordered)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned> Imap<R> {
    pub(crate) fn new(
        handle: PoolHandle,
        entry: &'static str,
        input: Input,
        ordered: bool,
    ) -> Self {
        let (tx, rx) = reply::channel();
        let group = Group::open(&handle);
        let window = WINDOW_PER_WORKER * handle.processes.max(1);
        Imap {
            handle,
            entry,
            input: Some(input),
            chunksize: 1,
            opts: TaskOptions::default(),
            ordered,
            group,
            tx,
            rx,
            sizes: HashMap::new(),
            next_index: 0,
            outstanding: 0,
            window,
            buffer: BTreeMap::new(),
            next_yield: 0,
            ready: VecDeque::new(),
        }
    }

    /// Items per chunk. Default: 1. Set it before the first poll.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    task_option_setters!(
        retries:
        /// Retries of a chunk whose worker died while running it; see [`Apply::retries`].
        timeout:
        /// A time limit per chunk (per item at `chunksize(1)`), from its start; see
        /// [`Apply::timeout`].
        retry_timeouts:
        /// Chunks that time out are retried; see [`Apply::retry_timeouts`].
    );

    fn deliver(&mut self, index: usize, results: Vec<Result<R>>) {
        if self.ordered {
            self.buffer.insert(index, results);
            while let Some(results) = self.buffer.remove(&self.next_yield) {
                self.ready.extend(results);
                self.next_yield += 1;
            }
        } else {
            self.ready.extend(results);
        }
    }

    /// Submits chunks until the window is full or the input ends.
    fn top_up(&mut self) {
        // Completed chunks still waiting for an earlier one (ordered imap) count against the
        // window too, so memory stays bounded however the chunks finish.
        while self.outstanding + self.buffer.len() < self.window {
            let Some(input) = self.input.as_mut() else {
                return;
            };
            let Some((body, len)) = input(self.chunksize) else {
                self.input = None;
                return;
            };
            let index = self.next_index;
            self.next_index += 1;
            let submitted = body.and_then(|body| {
                self.handle.submit(
                    self.entry,
                    vec![body],
                    index,
                    self.opts,
                    self.group.id,
                    &self.tx,
                )
            });
            match submitted {
                Ok(()) => {
                    self.sizes.insert(index, len);
                    self.outstanding += 1;
                }
                Err(e) => self.deliver(index, failed_items(&e, len)),
            }
        }
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            self.top_up();
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.outstanding == 0 && self.input.is_none() {
                self.group.finish();
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(completion)) => {
                    self.outstanding -= 1;
                    let len = self.sizes.remove(&completion.index).unwrap_or(1);
                    // One result per item sent, whatever the worker said.
                    let results = match completion.outcome {
                        Ok((message, at)) => decode_results(&message[at..], len)
                            .unwrap_or_else(|e| failed_items(&e, len)),
                        Err(failure) => (0..len).map(|_| Err(failure.clone().into())).collect(),
                    };
                    self.deliver(completion.index, results);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// Nothing in `Imap` is structurally pinned: the buffered results are plain values it moves.
impl<R> Unpin for Imap<R> {}

impl<R: DeserializeOwned> Stream for Imap<R> {
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        self.get_mut().poll_item(cx)
    }
}

/// Results of [`Pool::imap_unordered`](super::Pool::imap_unordered): a `Stream` of per-item
/// results in the order they finish; one slow task holds up no other.
///
/// # Cancel safety
/// As [`Imap`]: dropping the stream cancels the chunks that have not started.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct ImapUnordered<R>(pub(crate) Imap<R>);

impl<R: DeserializeOwned> ImapUnordered<R> {
    /// Items per chunk. Default: 1. Set it before the first poll.
    pub fn chunksize(self, n: usize) -> Self {
        ImapUnordered(self.0.chunksize(n))
    }

    /// Retries of a chunk whose worker died while running it; see [`Apply::retries`].
    pub fn retries(self, n: u32) -> Self {
        ImapUnordered(self.0.retries(n))
    }

    /// A time limit per chunk, from its start; see [`Apply::timeout`].
    pub fn timeout(self, limit: Duration) -> Self {
        ImapUnordered(self.0.timeout(limit))
    }

    /// Chunks that time out are retried; see [`Apply::retry_timeouts`].
    pub fn retry_timeouts(self) -> Self {
        ImapUnordered(self.0.retry_timeouts())
    }
}

impl<R: DeserializeOwned> Stream for ImapUnordered<R> {
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        self.get_mut().0.poll_item(cx)
    }
}
