//! Layer 6: `Pool`, a set of worker processes that run `#[entry]` functions for you.
//!
//! Python's `multiprocessing.Pool`, with futures and streams instead of blocking calls, and
//! without its two classic hangs: a worker that dies (abort, segfault, SIGKILL, OOM kill) costs
//! only the tasks it was running, which fail with [`Error::WorkerLost`] (or run again, if the call
//! opted in with `.retries(n)`), and the worker is replaced; a dropped result cancels the tasks
//! it had not started.
//!
//! # Which call to use
//! - [`Pool::apply`] / [`Pool::apply_async`]: one call; the second returns a handle at once.
//! - [`Pool::map`] / [`Pool::starmap`]: many calls, all results in input order, as a `Vec`.
//! - [`Pool::imap`] / [`Pool::imap_unordered`]: many calls as a `Stream` of per-item results, in
//!   input order or as they finish; the input is read lazily, a bounded window ahead.
//!
//! # Chunks
//! Items travel to workers in chunks (one message, one result message each). `map` picks the chunk
//! size as Python does (`len / (4 × processes)`, rounded up); `imap`/`imap_unordered` default to
//! one item per chunk. Set it with `.chunksize(n)`. A panic in one item fails that item only.
//!
//! # What "in flight" means
//! Each worker holds a few tasks ahead (pipelining; up to 64 when tasks take only microseconds,
//! about a millisecond of its work). The child reports each task's start, so when
//! a worker dies the pool knows which tasks had started: those fail with `WorkerLost` (or are
//! retried); the ones that had certainly not started go to another worker, unnoticed.

//!
//! # Timeouts that kill
//! [`AsyncResult::get`] (Python's `get(timeout)`) only stops waiting: the task runs on and holds
//! its worker. `.timeout(d)` on a call ([`Apply::timeout`], [`Map::timeout`], `Imap`'s,
//! [`AsyncResult::timeout`]) instead kills the worker of a task still running `d` after it
//! started, replaces it, and fails the task with [`Error::Timeout`]; what that worker held and
//! had not started runs elsewhere. For `map`/`imap` the limit is per chunk.
//!
//! # Crash causes
//! [`Error::WorkerLost`] says how the worker ended: its exit code (a task that called
//! `exit(3)`), or the signal, and `oom` when the kernel's OOM killer did it. Linux leaves no
//! trace of that in `/proc/<pid>` once the process is reaped, so `oom` comes from the
//! `oom_kill` counter of the worker's memory cgroup (v2 `memory.events`, v1
//! `memory.oom_control`), read when the worker started and again when it died of SIGKILL.
//! Workers share the pool's cgroup: `oom` is exact when nothing else SIGKILLs members of that
//! cgroup at the same time (a `kill -9` landing while the OOM killer ends another member would
//! read as OOM too), and it is always `false` where no memory cgroup can be read. To give the
//! workers a limit of their own, start the pool from a process inside a cgroup made for it.
//!
//! # Waiting on many
//! There is no `wait(results, FIRST_COMPLETED)` helper: an [`AsyncResult`] is a `Future`, so
//! `futures::stream::FuturesUnordered` does what Python's `concurrent.futures.wait` and
//! `ray.wait` do, keeps the results not yet finished usable (they stay in the set), and takes
//! a deadline from `tokio::time::timeout_at`. Dropping the set cancels the tasks that have not
//! started.
//!
//! ```
//! use futures::stream::{FuturesUnordered, StreamExt};
//! use multiprocessing::{entry, Pool};
//! use std::time::Duration;
//!
//! #[entry]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[multiprocessing::process_main]
//! async fn main() -> multiprocessing::Result<()> {
//!     let pool = Pool::new(2).await?;
//!     let mut pending: FuturesUnordered<_> = (0..10u64)
//!         .map(|x| {
//!             let result = pool.apply_async(square, x);
//!             async move { (x, result.await) }
//!         })
//!         .collect();
//!     // FIRST_COMPLETED: the first to finish; the others stay in `pending`.
//!     let (x, first) = pending.next().await.expect("ten were submitted");
//!     assert_eq!(first?, x * x);
//!     // FIRST_EXCEPTION / ALL_COMPLETED, with a deadline: stop at the first error or at the
//!     // deadline, whichever comes first; what is left stays in `pending`.
//!     let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
//!     while let Ok(Some((x, outcome))) = tokio::time::timeout_at(deadline, pending.next()).await {
//!         assert_eq!(outcome?, x * x);
//!     }
//!     assert!(pending.is_empty());
//!     Ok(())
//! }
//! ```

mod async_result;
mod backend;
mod map;
mod outcome;
mod reply;
#[cfg(feature = "broker")]
mod scale_out;
mod stats;

#[cfg(feature = "broker")]
pub(crate) use backend::broker::wire as broker_wire;
#[cfg(feature = "broker")]
pub(crate) use backend::TaskOptions;
#[cfg(feature = "broker")]
pub(crate) use outcome::{Completion, TaskFailure};
#[cfg(feature = "broker")]
pub(crate) use reply::ReplyRx;

pub use async_result::AsyncResult;
pub use map::{Apply, Imap, ImapUnordered, Map};
pub use stats::{PoolStats, Replacements};

use crate::buffers::IntoShared;
use crate::entry::Entry;
use crate::error::RemoteError;
use crate::error::{Error, Result};
use crate::protocol::{encode_value, encode_value_into, read_batch};
use crate::start::{Context, StartMethod};
use backend::local::{LocalConfig, WorkerSpec};
use backend::{Backend, Command, Commands, Task};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Workers are children of this process, started eagerly: [`Pool::new`] returns once all of
/// them are up. Dropping the pool without [`close`](Pool::close) + [`join`](Pool::join)
/// terminates its workers.
///
/// ```
/// use multiprocessing::{entry, Pool};
///
/// #[entry]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[multiprocessing::process_main]
/// async fn main() -> multiprocessing::Result<()> {
///     let pool = Pool::new(2).await?;
///     assert_eq!(pool.apply(square, 7).await?, 49);
///     assert_eq!(pool.map(square, 0..5).await?, vec![0, 1, 4, 9, 16]);
///     pool.close();
///     pool.join().await?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Pool {
    handle: PoolHandle,
    processes: usize,
}

/// What calls need of the pool: where commands go, and fresh ids.
#[derive(Debug, Clone)]
pub(crate) struct PoolHandle {
    commands: Commands,
    ids: Arc<AtomicU64>,
    processes: usize,
}

impl PoolHandle {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Submits one call's chunks; returns its group and where completions arrive.
    fn submit(
        &self,
        entry: &'static str,
        chunks: Vec<Vec<u8>>,
        first_index: usize,
        opts: TaskOptions,
        group: u64,
        reply: &reply::ReplyTx,
    ) -> Result<()> {
        let mut tasks = Vec::with_capacity(chunks.len());
        for (i, body) in chunks.into_iter().enumerate() {
            tasks.push(Task {
                id: self.next_id(),
                group,
                entry,
                body: body.into_shared(),
                index: first_index + i,
                opts,
                reply: reply.clone(),
            });
        }
        self.commands
            .send(Command::Submit(tasks))
            .map_err(|_| Error::PoolClosed)
    }
}

/// Decodes a batch of `sent` results as `R`s; each item keeps its own error.
///
/// # Errors
/// As [`read_batch`]: a batch that does not decode, or holds other than `sent` outcomes.
pub(crate) fn decode_results<R: DeserializeOwned>(
    body: &[u8],
    sent: usize,
) -> Result<Vec<Result<R>>> {
    let mut values = Vec::new();
    let rest = read_batch(body, sent, &mut values)?;
    Ok(values
        .into_iter()
        .map(Ok)
        .chain(rest.into_iter().map(|r| r.map_err(|e| Error::from(*e))))
        .collect())
}

/// Decodes a batch of results straight into `out`, for a caller that wants all the values or
/// the first error: no per-item `Result` is kept. The outer error is a batch that does not
/// decode or holds other than `sent` items; the inner one, the first item that failed (the
/// values before it are in `out`, the ones after it are dropped).
pub(crate) fn decode_values<R: DeserializeOwned>(
    body: &[u8],
    sent: usize,
    out: &mut Vec<R>,
) -> Result<Result<()>> {
    let mut failed: Option<RemoteError> = None;
    for outcome in read_batch(body, sent, out)? {
        match outcome {
            Ok(value) if failed.is_none() => out.push(value),
            Ok(_) => {}
            Err(e) => {
                failed.get_or_insert(*e);
            }
        }
    }
    Ok(failed.map_or(Ok(()), |e| Err(e.into())))
}

/// Encodes items as one batch (a chunk), into a buffer sized for them at first guess (about the
/// in-memory size for small items, capped), so most chunks are written without regrowth.
pub(crate) fn encode_chunk<A: serde::Serialize>(items: &[A]) -> Result<Vec<u8>> {
    let guess = items
        .len()
        .saturating_mul(std::mem::size_of::<A>().clamp(1, 16))
        + 16;
    encode_value_into("entry arguments", items, guess.min(8 << 20))
}

impl Pool {
    /// A pool of `processes` workers with every other setting at its default.
    ///
    /// # Cancel safety
    /// Dropping the future while workers start terminates the ones already started.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub async fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build().await
    }

    /// A builder for the pool's settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers running now (they change as workers are replaced).
    ///
    /// # Cancel safety
    /// Cancel-safe.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] once the pool has finished.
    pub async fn worker_pids(&self) -> Result<Vec<u32>> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Pids(tx))
            .map_err(|_| Error::PoolClosed)?;
        rx.await.map_err(|_| Error::PoolClosed)
    }

    /// What the pool has done so far: tasks submitted, started, completed, failed (timed out),
    /// workers started and replaced (by why), the queue's depth now. See [`PoolStats`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] once the pool has finished (after `join` or `terminate`).
    pub async fn stats(&self) -> Result<PoolStats> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .commands
            .send(Command::Stats(tx))
            .map_err(|_| Error::PoolClosed)?;
        rx.await.map_err(|_| Error::PoolClosed)
    }

    /// Runs `entry(args)` on a worker: a builder-future (`.retries(n)`, `.timeout(d)`, then
    /// `.await`).
    pub fn apply<E: Entry>(&self, entry: E, args: E::Args) -> Apply<E::Output> {
        let _ = entry;
        Apply::new(
            self.handle.clone(),
            E::NAME,
            encode_chunk(std::slice::from_ref(&args)),
        )
    }

    /// Submits `entry(args)` now and returns its [`AsyncResult`] (Python's `apply_async`).
    pub fn apply_async<E: Entry>(&self, entry: E, args: E::Args) -> AsyncResult<E::Output> {
        self.apply(entry, args).submit()
    }

    /// Runs `entry` on every item; the values in input order (Python's `map`). A builder-future:
    /// `.chunksize(n)`, `.retries(n)`, then `.await`. The items are collected now and encoded,
    /// chunk by chunk, as they are sent.
    pub fn map<E, I>(&self, entry: E, items: I) -> Map<E::Output>
    where
        E: Entry,
        I: IntoIterator<Item = E::Args>,
    {
        let _ = entry;
        let items: Vec<E::Args> = items.into_iter().collect();
        Map::new(self.handle.clone(), E::NAME, items)
    }

    /// [`map`](Self::map) for entries with several parameters, each item a tuple (Python's
    /// `starmap`). Since several parameters already travel as one tuple, this is `map`.
    pub fn starmap<E, I>(&self, entry: E, items: I) -> Map<E::Output>
    where
        E: Entry,
        I: IntoIterator<Item = E::Args>,
    {
        self.map(entry, items)
    }

    /// A `Stream` of `entry(item)` results in input order (Python's `imap`). The input is read
    /// lazily, a bounded window ahead of what has been consumed.
    pub fn imap<E, I>(&self, entry: E, items: I) -> Imap<E::Output>
    where
        E: Entry,
        I: IntoIterator<Item = E::Args>,
        I::IntoIter: Send + 'static,
    {
        let _ = entry;
        Imap::new(
            self.handle.clone(),
            E::NAME,
            map::chunker(items.into_iter()),
            true,
        )
    }

    /// A `Stream` of `entry(item)` results as they finish (Python's `imap_unordered`).
    pub fn imap_unordered<E, I>(&self, entry: E, items: I) -> ImapUnordered<E::Output>
    where
        E: Entry,
        I: IntoIterator<Item = E::Args>,
        I::IntoIter: Send + 'static,
    {
        let _ = entry;
        ImapUnordered(Imap::new(
            self.handle.clone(),
            E::NAME,
            map::chunker(items.into_iter()),
            false,
        ))
    }

    /// Submits one task already encoded (a broker worker's), by the entry's registered name;
    /// its completion arrives on the returned receiver.
    #[cfg(feature = "broker")]
    pub(crate) fn submit_encoded(
        &self,
        entry: &'static str,
        body: Vec<u8>,
        opts: TaskOptions,
    ) -> ReplyRx {
        let (tx, rx) = reply::channel();
        let group = self.handle.next_id();
        if self
            .handle
            .submit(entry, vec![body], 0, opts, group, &tx)
            .is_err()
        {
            let _ = tx.send(Completion {
                index: 0,
                outcome: Err(TaskFailure::Terminated),
            });
        }
        rx
    }

    /// Accepts no new work (Python's `close`); work already submitted goes on.
    pub fn close(&self) {
        let _ = self.handle.commands.send(Command::Close);
    }

    /// Closes the pool, waits for all submitted work to finish and the workers to exit.
    ///
    /// # Cancel safety
    /// Cancel-safe: the pool still closes and drains; awaiting `join` again waits for the end.
    ///
    /// # Errors
    /// None today; `Result` leaves room for backends that can fail to drain.
    pub async fn join(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.handle.commands.send(Command::Join(tx)).is_err() {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// Kills the workers now (Python's `terminate`); unfinished work fails with
    /// [`Error::PoolClosed`]. Returns once every worker has exited.
    ///
    /// # Cancel safety
    /// Cancel-safe: the workers are killed either way.
    ///
    /// # Errors
    /// None today; `Result` leaves room for backends that can fail to stop.
    pub async fn terminate(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Terminate(Some(tx)))
            .is_err()
        {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.handle.commands.send(Command::Terminate(None));
    }
}

/// Settings of a [`Pool`] (Python's `Pool(processes, initializer, initargs, maxtasksperchild)`).
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<(&'static str, Result<Vec<u8>>)>,
    max_tasks_per_child: Option<u32>,
    start_method: Option<StartMethod>,
    name_prefix: Option<String>,
    concurrency: Option<u32>,
    kill_grace: Option<std::time::Duration>,
    max_worker_memory: Option<u64>,
    #[cfg(feature = "broker")]
    broker: Option<BrokerSettings>,
}

/// What `PoolBuilder::broker` and its companions set. Its `Debug` shows neither the key nor
/// the URL's password.
#[cfg(feature = "broker")]
#[derive(Default)]
struct BrokerSettings {
    url: String,
    name: Option<String>,
    key: Option<Vec<u8>>,
    claim: Option<std::time::Duration>,
    window: Option<usize>,
    ca: Option<std::path::PathBuf>,
}

impl PoolBuilder {
    /// The number of workers. Default: [`cpu_count`](crate::cpu_count).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// An entry each worker runs once, before any task (Python's `initializer`/`initargs`).
    /// State it leaves in statics (e.g. a `OnceLock`) is visible to the tasks of that worker.
    /// Default: none.
    pub fn initializer<E: Entry>(mut self, entry: E, args: E::Args) -> Self {
        let _ = entry;
        self.initializer = Some((E::NAME, encode_value("initializer arguments", &args)));
        self
    }

    /// Replace a worker after it has run `k` tasks (chunks), as Python's `maxtasksperchild`.
    /// Default: workers live as long as the pool.
    pub fn max_tasks_per_child(mut self, k: u32) -> Self {
        self.max_tasks_per_child = Some(k.max(1));
        self
    }

    /// How workers are started. Default: [`get_start_method`](crate::get_start_method).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Workers are named `<prefix>-N`. Default: `PoolWorker`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// How many tasks one worker runs at once. Useful for async entries that wait on I/O; sync
    /// entries then run on that many threads of the worker. Default: 1.
    pub fn concurrency_per_worker(mut self, k: u32) -> Self {
        self.concurrency = Some(k.max(1));
        self
    }

    /// How a worker whose task ran past its `.timeout(d)` is ended: SIGTERM, then SIGKILL if it
    /// is still there after `grace`. Meanwhile it takes no task, and what it held and had not
    /// started waits for its exit. Default: SIGKILL at once (no grace).
    pub fn kill_grace(mut self, grace: std::time::Duration) -> Self {
        self.kill_grace = Some(grace);
        self
    }

    /// Replace a worker whose resident memory (RSS) exceeds `bytes` after a task: it finishes
    /// the task it has and exits before it starts another; a new worker takes its place.
    /// Counted in [`PoolStats::workers_replaced`]. To check before the next task starts, each
    /// worker then holds only the tasks it runs (no pipelining), which costs throughput on
    /// tasks of a few microseconds (the round trip to the parent is no longer hidden).
    /// RSS rather than PSS because it is read after every task and costs a small file read,
    /// where PSS walks the page tables of every mapping; leaked memory is private, so it shows
    /// in both. RSS also counts shared pages (libraries, a fork server's copy-on-write pages):
    /// set the limit above a fresh worker's RSS. Default: no limit (Python has none).
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.max_worker_memory = Some(bytes);
        self
    }

    /// The number of processes asked for, or the number of CPUs.
    fn process_count(&self) -> Result<usize> {
        match self.processes {
            Some(0) => Err(Error::InvalidArgument(
                "a pool needs at least 1 process (Python raises ValueError here too)".into(),
            )),
            Some(n) => Ok(n),
            None => Ok(crate::process::cpu_count().max(1)),
        }
    }

    /// Starts the workers and returns once all are up (and have run the initializer).
    ///
    /// # Cancel safety
    /// Dropping the future while workers start terminates the ones already started.
    ///
    /// # Errors
    /// [`Error::NotLaunched`] outside `#[process_main]` / `#[multiprocessing::test]`;
    /// [`Error::Encode`] for initializer arguments that do not encode; the initializer's own
    /// error ([`Error::Panicked`], …) if it fails in a worker; [`Error::Io`] when a process
    /// cannot be started; [`Error::InvalidArgument`] for `processes(0)`. With a
    /// [`broker`](Self::broker): [`Error::Broker`] when Redis cannot be reached or refuses,
    /// [`Error::InvalidArgument`] without a key.
    pub async fn build(self) -> Result<Pool> {
        #[cfg(feature = "broker")]
        if self.broker.is_some() {
            return self.build_broker().await;
        }
        let ctx = Context::current()?;
        let processes = self.process_count()?;
        let initializer = match self.initializer {
            None => None,
            Some((name, body)) => Some((name, body?.into_shared())),
        };
        let backend = LocalConfig {
            ctx,
            processes,
            spec: WorkerSpec {
                name_prefix: self.name_prefix.unwrap_or_else(|| "PoolWorker".into()),
                counter: Arc::new(AtomicU32::new(0)),
                start_method: self
                    .start_method
                    .unwrap_or_else(crate::start::get_start_method),
                initializer,
            },
            max_tasks_per_child: self.max_tasks_per_child,
            concurrency: self.concurrency.unwrap_or(1),
            kill_grace: self.kill_grace,
            max_worker_memory: self.max_worker_memory,
        };
        Pool::start(backend, processes).await
    }
}

impl Pool {
    /// Starts `backend` and returns the pool once it can run tasks.
    async fn start(backend: impl Backend, processes: usize) -> Result<Pool> {
        let (commands, ready) = backend.start();
        let pool = Pool {
            handle: PoolHandle {
                commands,
                ids: Arc::new(AtomicU64::new(1)),
                processes,
            },
            processes,
        };
        // If this future is dropped here, dropping `pool` terminates what has started.
        ready.await.map_err(|_| Error::PoolClosed)??;
        Ok(pool)
    }
}
