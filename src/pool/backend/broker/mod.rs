//! The broker backend: tasks go to a Redis stream, workers on any host run them.
//!
//! One driver task owns the state (the queue, the tasks on the stream, the phase) and reacts to
//! commands from the front end and to result batches from the reader (`reader.rs`). Tasks wait
//! in the driver's queue until fewer than `window` are on the stream, so Redis holds a bounded
//! number of them however long a `map` is; each batch of tasks is one pipelined round trip of
//! `XADD`s. Workers (`crate::broker`) read the stream in a consumer group, run each task on a
//! local pool, write the signed result to the pool's own result stream, then `XACK` and `XDEL`
//! the task. The reader deletes results as it reads them. A result for a task the driver no
//! longer holds (a duplicate after a claim, a cancelled task) is dropped: each task is answered
//! once.
//!
//! A lost connection to Redis does not end the pool at once: the driver and the reader each
//! connect again (every quarter second, for up to [`RECONNECT_FOR`]) and go on where they were,
//! if Redis came back with the pool's result stream (a server restarted with AOF persistence
//! keeps it, and the task stream, its consumer group and its pending tasks with it). The driver
//! sends again the tasks whose `XADD`s got no answer (some of them may be on the stream twice:
//! the first result of each is taken, the other dropped). A Redis that stays away longer, or
//! comes back without the result stream (restarted without persistence: the tasks are gone
//! too), ends the pool: what is queued or on the stream fails with
//! [`Error::Broker`](crate::Error::Broker), later calls with `PoolClosed`.

mod reader;
pub(crate) mod wire;

use super::{Backend, Command, Commands, Task};
use crate::buffers::Buffer;
use crate::error::{Error, RemoteError, Result};
use crate::pool::outcome::{Completion, TaskFailure};
use crate::pool::stats::PoolStats;
use redis::aio::MultiplexedConnection;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wire::{ResultMsg, Signer, TaskMsg, WireOutcome};

/// How the broker backend reaches its workers.
#[derive(Clone)]
pub(crate) struct BrokerConfig {
    /// The Redis URL, and the CAs to trust for `rediss://`.
    pub(crate) endpoint: wire::Endpoint,
    /// The pool name: workers serving this name run its tasks.
    pub(crate) name: String,
    pub(crate) key: Option<Vec<u8>>,
    /// The visibility timeout: a task whose worker has not shown life for this long is claimed
    /// by another worker.
    pub(crate) claim: Duration,
    /// How many tasks may be on the stream (sent, not answered) at once.
    pub(crate) window: usize,
}

/// Where the pool is in its life, as the local backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closed,
    Finished,
}

struct Driver {
    cfg: BrokerConfig,
    signer: Signer,
    con: MultiplexedConnection,
    task_key: String,
    result_key: String,
    phase: Phase,
    pending: VecDeque<Task>,
    /// Tasks on the stream, by id, with their stream entry ids.
    sent: HashMap<u64, (Task, String)>,
    open: HashSet<u64>,
    joiners: Vec<oneshot::Sender<()>>,
    stats: PoolStats,
}

impl Backend for BrokerConfig {
    /// Connects, makes sure the stream and its group exist, then answers `ready`.
    fn start(self) -> (Commands, oneshot::Receiver<Result<()>>) {
        let (commands_tx, mut commands) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(async move {
            match Driver::connect(self).await {
                Ok((driver, results)) => {
                    let _ = ready_tx.send(Ok(()));
                    driver.run(commands, results).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    commands.close();
                    while let Some(command) = commands.recv().await {
                        command.refuse();
                    }
                }
            }
        });
        (commands_tx, ready)
    }
}

type Results = mpsc::UnboundedReceiver<Result<Vec<ResultMsg>>>;

/// How long the pool waits for a Redis it lost to come back before it fails.
pub(crate) const RECONNECT_FOR: Duration = Duration::from_secs(10);
/// How long to wait between two tries to connect again.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

/// Connects to Redis again after `lost` (the error that broke the connection), once it answers
/// with the pool's result stream `result_key` still there.
///
/// # Errors
/// [`Error::Broker`] if Redis does not answer within [`RECONNECT_FOR`], or answers without
/// the result stream (it restarted without persistence, so the pool's tasks are gone).
async fn reconnect(
    endpoint: &wire::Endpoint,
    result_key: &str,
    block: Option<Duration>,
    lost: &Error,
) -> Result<MultiplexedConnection> {
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    tracing::warn!(target: "multiprocessing::pool", "lost Redis ({lost}); connecting again");
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RECONNECT_EVERY).await;
        let mut con = match endpoint.connect(block).await {
            Ok(con) => con,
            Err(e) => {
                last = Some(e.to_string());
                continue;
            }
        };
        // A server still loading its AOF answers LOADING: that is a try like any other.
        let exists: redis::RedisResult<i64> = redis::cmd("EXISTS")
            .arg(result_key)
            .query_async(&mut con)
            .await;
        match exists {
            Ok(1) => return Ok(con),
            Ok(_) => {
                return Err(Error::Broker(format!(
                    "Redis at {} came back without this pool's result stream: it restarted without persistence (or lost its data), and the tasks on it are gone; with appendonly yes (appendfsync always) a pool survives a restart",
                    endpoint.redacted()
                )))
            }
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(Error::Broker(format!(
        "lost Redis at {} ({lost}) and it did not come back within {} s{}",
        endpoint.redacted(),
        RECONNECT_FOR.as_secs(),
        last.map(|e| format!(" (last try: {e})"))
            .unwrap_or_default()
    )))
}

impl Driver {
    async fn connect(cfg: BrokerConfig) -> Result<(Driver, Results)> {
        let signer = Signer::new(cfg.key.clone())?;
        let mut con = cfg.endpoint.connect(None).await?;
        let reader_con = cfg.endpoint.connect(Some(Duration::from_secs(1))).await?;
        let task_key = wire::task_key(&cfg.name);
        let result_key = wire::result_key(&cfg.name, &instance_id());
        wire::ensure_group(&mut con, &task_key).await?;
        // The result stream exists from the start: workers add to it only while it does
        // (`NOMKSTREAM`), so results for a pool that is gone do not make a new key.
        wire::ensure_group(&mut con, &result_key).await?;
        let claim_ms = cfg.claim.as_millis() as u64;
        let _: () = redis::cmd("SET")
            .arg(wire::claim_key(&cfg.name))
            .arg(claim_ms)
            .query_async(&mut con)
            .await
            .map_err(|e| wire::broker_error("cannot set the visibility timeout", e))?;
        let (results_tx, results) = mpsc::unbounded_channel();
        // A pool that dies leaves its result stream for at most this long.
        let expire = (cfg.claim * 4).max(Duration::from_secs(60));
        tokio::spawn(reader::run(
            reader_con,
            cfg.endpoint.clone(),
            result_key.clone(),
            signer.clone(),
            expire,
            results_tx,
        ));
        let driver = Driver {
            cfg,
            signer,
            con,
            task_key,
            result_key,
            phase: Phase::Open,
            pending: VecDeque::new(),
            sent: HashMap::new(),
            open: HashSet::new(),
            joiners: Vec::new(),
            stats: PoolStats::default(),
        };
        Ok((driver, results))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut results: Results) {
        let mut terminators = Vec::new();
        while self.phase != Phase::Finished {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Terminate(tx)) => {
                        terminators.extend(tx);
                        self.finish(TaskFailure::Terminated).await;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can ask for results any more.
                    None => self.finish(TaskFailure::Terminated).await,
                },
                batch = results.recv() => match batch {
                    Some(Ok(batch)) => self.on_results(batch),
                    Some(Err(e)) => self.fail(e).await,
                    None => self.fail(Error::Broker("the task that reads results from Redis ended unexpectedly (the runtime is shutting down, or it panicked: see the message above)".into())).await,
                },
            }
            if self.phase != Phase::Finished {
                if let Err(e) = self.send_window().await {
                    self.fail(e).await;
                }
                self.check_drained().await;
            }
        }
        for tx in terminators.into_iter().chain(self.joiners.drain(..)) {
            let _ = tx.send(());
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            command.refuse();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open(group) => {
                self.open.insert(group);
            }
            Command::Done(group) => {
                self.open.remove(&group);
            }
            Command::Submit(tasks) => {
                let before_close = tasks.first().is_some_and(|t| self.open.contains(&t.group));
                if self.phase == Phase::Open || before_close {
                    self.stats.submitted += tasks.len() as u64;
                    self.pending.extend(tasks);
                } else {
                    tasks
                        .into_iter()
                        .for_each(|t| t.fail(TaskFailure::Terminated));
                }
            }
            // Tasks already on the stream keep the options they were sent with.
            Command::Timeout(group, limit) => self
                .pending
                .iter_mut()
                .filter(|t| t.group == group)
                .for_each(|t| t.opts.timeout = Some(limit)),
            Command::Stats(tx) => {
                let mut stats = self.stats.clone();
                stats.queued = self.pending.len();
                stats.in_flight = self.sent.len();
                let _ = tx.send(stats);
            }
            Command::Cancel(group) => self.cancel(group),
            Command::Close => self.close(),
            Command::Join(tx) => {
                self.close();
                self.joiners.push(tx);
            }
            // The workers are on other hosts: this process knows no pids of theirs.
            Command::Pids(tx) => {
                let _ = tx.send(Vec::new());
            }
            Command::Terminate(_) => unreachable!("handled by the loop, which awaits it"),
        }
    }

    fn close(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Closed;
        }
    }

    /// Drops the group's queued tasks and deletes its tasks from the stream: those no worker has
    /// read yet will never run; a result of one already running is dropped when it comes.
    fn cancel(&mut self, group: u64) {
        let queued = self.pending.len();
        self.pending.retain(|t| t.group != group);
        self.stats.cancelled += (queued - self.pending.len()) as u64;
        let ids: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, (t, _))| t.group == group)
            .map(|(id, _)| *id)
            .collect();
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((_, entry)) = self.sent.remove(&id) {
                entries.push(entry);
                self.stats.cancelled += 1;
            }
        }
        if !entries.is_empty() {
            let mut con = self.con.clone();
            let key = self.task_key.clone();
            // Not awaited: a failure here only means the tasks run and their results are dropped.
            tokio::spawn(async move {
                let _: redis::RedisResult<i64> = redis::cmd("XDEL")
                    .arg(key)
                    .arg(entries)
                    .query_async(&mut con)
                    .await;
            });
        }
    }

    fn on_results(&mut self, batch: Vec<ResultMsg>) {
        for msg in batch {
            // Unknown: answered already (a duplicate after a claim), or cancelled.
            let Some((task, _)) = self.sent.remove(&msg.id) else {
                continue;
            };
            let outcome = match msg.outcome {
                WireOutcome::Done(bytes) => {
                    self.stats.started += 1;
                    self.stats.completed += 1;
                    Ok((Buffer::from(bytes), 0))
                }
                WireOutcome::Failed(e) => {
                    self.stats.failed += 1;
                    Err(TaskFailure::Remote(e))
                }
                WireOutcome::WorkerLost {
                    pid,
                    exitcode,
                    signal,
                    oom,
                } => {
                    self.stats.started += 1;
                    self.stats.failed += 1;
                    Err(TaskFailure::WorkerLost {
                        pid,
                        exitcode,
                        signal,
                        oom,
                    })
                }
                WireOutcome::Timeout => {
                    self.stats.started += 1;
                    self.stats.failed += 1;
                    self.stats.timed_out += 1;
                    Err(TaskFailure::Timeout)
                }
            };
            let _ = task.reply.send(Completion {
                index: task.index,
                outcome,
            });
        }
    }

    /// Sends queued tasks while fewer than `window` are on the stream: one pipeline of `XADD`s,
    /// sent again on a new connection if Redis was lost meanwhile.
    ///
    /// # Errors
    /// [`Error::Broker`] when Redis does not come back ([`reconnect`]).
    async fn send_window(&mut self) -> Result<()> {
        loop {
            match self.send_batch().await {
                Ok(()) => return Ok(()),
                Err(lost) => {
                    self.con = reconnect(&self.cfg.endpoint, &self.result_key, None, &lost).await?;
                }
            }
        }
    }

    /// One pipeline of `XADD`s for the queued tasks that fit in the window. On a Redis error,
    /// puts the batch back in front of the queue and returns the error.
    async fn send_batch(&mut self) -> Result<()> {
        let room = self.cfg.window.saturating_sub(self.sent.len());
        let n = room.min(self.pending.len());
        if n == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut batch = Vec::with_capacity(n);
        for task in self.pending.drain(..n) {
            if task.reply.is_closed() {
                self.stats.cancelled += 1;
                continue;
            }
            let msg = TaskMsg {
                reply: self.result_key.clone(),
                id: task.id,
                entry: task.entry.to_owned(),
                table: wire::table_id(),
                body: task.body.to_vec(),
                retries: task.opts.retries,
                timeout_ms: task.opts.timeout.map(|d| d.as_millis() as u64),
                retry_timeouts: task.opts.retry_timeouts,
                claim_ms: self.cfg.claim.as_millis() as u64,
            };
            let sealed = match self.signer.seal("task", &msg) {
                Ok(sealed) => sealed,
                Err(e) => {
                    self.stats.failed += 1;
                    task.fail(TaskFailure::Remote(RemoteError::from(e)));
                    continue;
                }
            };
            pipe.cmd("XADD")
                .arg(&self.task_key)
                .arg("*")
                .arg(wire::FIELD)
                .arg(sealed);
            batch.push(task);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let added: redis::RedisResult<Vec<String>> = pipe.query_async(&mut self.con).await;
        let entries = match added {
            Ok(entries) => entries,
            Err(e) => {
                // The batch goes out again once Redis is back (some of it may have reached
                // the stream: those tasks run twice, and the first result is taken).
                for task in batch.into_iter().rev() {
                    self.pending.push_front(task);
                }
                return Err(wire::broker_error("sending tasks to Redis", e));
            }
        };
        for (task, entry) in batch.into_iter().zip(entries) {
            self.sent.insert(task.id, (task, entry));
        }
        Ok(())
    }

    /// After `join`: once nothing is queued or on the stream, the pool is finished.
    async fn check_drained(&mut self) {
        let idle = self.pending.is_empty() && self.sent.is_empty();
        if self.phase == Phase::Closed && !self.joiners.is_empty() && idle {
            self.finish(TaskFailure::Terminated).await;
        }
    }

    /// Fails what is left with `failure`, removes the pool's keys and ends the pool.
    async fn finish(&mut self, failure: TaskFailure) {
        if self.phase == Phase::Finished {
            return;
        }
        self.phase = Phase::Finished;
        let left = self.pending.len() + self.sent.len();
        self.stats.failed += left as u64;
        for task in self.pending.drain(..) {
            task.fail(failure.clone());
        }
        let mut entries = Vec::with_capacity(self.sent.len());
        for (_, (task, entry)) in self.sent.drain() {
            task.fail(failure.clone());
            entries.push(entry);
        }
        let mut pipe = redis::pipe();
        if !entries.is_empty() {
            // Tasks no worker has read yet will not run for nobody.
            pipe.cmd("XDEL").arg(&self.task_key).arg(entries).ignore();
        }
        pipe.cmd("DEL").arg(&self.result_key).ignore();
        let cleaned: redis::RedisResult<()> = pipe.query_async(&mut self.con).await;
        if let Err(e) = cleaned {
            tracing::debug!(target: "multiprocessing::pool", "could not remove the pool's keys (they expire): {e}");
        }
    }

    /// A Redis error: the pool cannot go on.
    async fn fail(&mut self, e: Error) {
        tracing::warn!(target: "multiprocessing::pool", "broker pool failed: {e}");
        self.finish(TaskFailure::Remote(RemoteError::from(e))).await;
    }
}

/// A name for this pool's keys that no other pool shares: the host, the pid, the time and a
/// few random bytes.
fn instance_id() -> String {
    let mut random = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut random);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{:x}-{:x}",
        std::process::id(),
        nanos as u64,
        u64::from_le_bytes(random)
    )
}
