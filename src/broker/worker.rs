//! A broker worker's loop: takes tasks from the reader (and from claims), checks them, runs
//! them on the local pool, writes their results, then acknowledges and deletes them.

use super::reader::{self, Source, BACKOFF};
use super::wire::{self, ResultMsg, Signer, TaskMsg, WireOutcome};
use crate::error::{Error, RemoteError, Result};
use crate::pool::{Completion, Pool, TaskFailure, TaskOptions};
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// A task this worker answered (or refused), to be written back.
pub(super) struct Done {
    /// The task's stream entry.
    entry: String,
    /// Where its result goes and what it is; `None` for a task that gets no answer (unsigned,
    /// forged, or deleted while pending).
    result: Option<(String, ResultMsg)>,
}

/// How a claimed task was lost before: by which consumer, after how many deliveries.
pub(super) struct Lost {
    pub(super) consumer: String,
    pub(super) deliveries: u32,
}

pub(super) struct Worker {
    pub(super) endpoint: wire::Endpoint,
    pub(super) signer: Signer,
    pub(super) pool: Pool,
    pub(super) con: MultiplexedConnection,
    pub(super) key: String,
    /// Where the pools of this name leave their visibility timeout.
    pub(super) claim_key: String,
    pub(super) consumer: String,
    /// Permits for the tasks this worker may hold at once.
    pub(super) room: Arc<Semaphore>,
    /// The tasks it holds (stream entry ids), with the visibility timeout of their pool.
    pub(super) held: HashMap<String, Duration>,
    /// The visibility timeout of the pool that sent the last task.
    pub(super) claim: Duration,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tasks: mpsc::UnboundedReceiver<Vec<wire::Entry>>,
    /// Results not yet written (Redis was unreachable).
    unsent: Vec<Done>,
    /// Tasks answered whose `XACK` and `XDEL` got no reply (Redis was lost): acknowledged
    /// again with the next results, held (and renewed) until then.
    unacked: Vec<String>,
}

impl Worker {
    /// Connects, makes the consumer group if need be, and starts the reader.
    pub(super) async fn start(
        endpoint: wire::Endpoint,
        name: String,
        signer: Signer,
        pool: Pool,
        processes: usize,
    ) -> Result<Worker> {
        let mut con = endpoint.connect(None).await?;
        let key = wire::task_key(&name);
        wire::ensure_group(&mut con, &key).await?;
        let consumer = format!("{}:{}", hostname(), std::process::id());
        // Enough held ahead to keep every process busy while results travel (tasks of a few
        // microseconds need many), few enough to leave tasks to other workers.
        let room = Arc::new(Semaphore::new(processes.max(1) * 64));
        let (tasks_tx, tasks) = mpsc::unbounded_channel();
        tokio::spawn(reader::run(
            Source {
                endpoint: endpoint.clone(),
                key: key.clone(),
                consumer: consumer.clone(),
            },
            Arc::clone(&room),
            tasks_tx,
        ));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        tracing::info!(target: "multiprocessing::broker", "worker {consumer} serves {key} with {processes} processes");
        Ok(Worker {
            endpoint,
            signer,
            pool,
            con,
            claim_key: wire::claim_key(&name),
            key,
            consumer,
            room,
            held: HashMap::new(),
            claim: wire::DEFAULT_CLAIM,
            done_tx,
            done_rx,
            tasks,
            unsent: Vec::new(),
            unacked: Vec::new(),
        })
    }

    /// Serves until the reader stops (it does not, but for a dropped runtime).
    pub(super) async fn run(mut self) -> Result<()> {
        let mut renew = tokio::time::interval(self.claim / 3);
        let mut claim = tokio::time::interval(claim_period(self.claim));
        let mut period = self.claim;
        loop {
            tokio::select! {
                batch = self.tasks.recv() => match batch {
                    Some(entries) => {
                        for (entry, body) in entries {
                            self.take(entry, body, None);
                        }
                    }
                    None => return Err(Error::Broker("the task that reads tasks from Redis ended unexpectedly (the runtime is shutting down, or it panicked: see the message above)".into())),
                },
                Some(done) = self.done_rx.recv() => {
                    self.unsent.push(done);
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.unsent.push(done);
                    }
                    self.write_back().await;
                }
                // Results or acknowledgements that Redis did not take (it was lost) go again,
                // even when no other task finishes to carry them.
                _ = tokio::time::sleep(BACKOFF), if !self.unsent.is_empty() || !self.unacked.is_empty() => {
                    self.write_back().await;
                }
                _ = renew.tick() => self.renew().await,
                _ = claim.tick() => self.claim_stale().await,
            }
            // Follow the visibility timeout of the pools being served.
            if self.claim != period {
                period = self.claim;
                renew = tokio::time::interval(period / 3);
                claim = tokio::time::interval(claim_period(period));
            }
        }
    }

    /// Checks a task read or claimed, and starts it on the local pool (or answers at once).
    pub(super) fn take(&mut self, entry: String, body: Option<Vec<u8>>, lost: Option<Lost>) {
        if self.held.contains_key(&entry) {
            // Already running here (read, then claimed back as one of its own while the reader
            // waited for room): this copy gives its place back.
            self.room.add_permits(1);
            return;
        }
        let Some(body) = body else {
            return self.finish(entry, None);
        };
        let msg: TaskMsg = match self.signer.open("task", &body) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(target: "multiprocessing::broker", "refusing task {entry} on {}: {e}", self.key);
                return self.finish(entry, None);
            }
        };
        self.claim = Duration::from_millis(msg.claim_ms.max(300));
        self.held.insert(entry.clone(), self.claim);
        let reply = msg.reply.clone();
        let id = msg.id;
        let answer = |outcome| Some((reply.clone(), ResultMsg { id, outcome }));
        let (record, opts) = match check(&msg, lost) {
            Ok(ready) => ready,
            Err(outcome) => return self.finish(entry, answer(outcome)),
        };
        let mut rx = self.pool.submit_encoded(record, msg.body, opts);
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = match rx.recv().await {
                Some(completion) => wire_outcome(completion),
                None => WireOutcome::Failed(RemoteError::from(Error::PoolClosed)),
            };
            let _ = done.send(Done {
                entry,
                result: Some((reply, ResultMsg { id, outcome })),
            });
        });
    }

    /// A task answered without running (or not at all).
    fn finish(&mut self, entry: String, result: Option<(String, ResultMsg)>) {
        let _ = self.done_tx.send(Done { entry, result });
    }

    /// Writes the results waiting in `unsent`, then acknowledges and deletes their tasks. On a
    /// Redis error, keeps them for the next try (after reconnecting).
    async fn write_back(&mut self) {
        let batch = std::mem::take(&mut self.unsent);
        let mut pipe = redis::pipe();
        let mut results = 0;
        for done in &batch {
            let Some((reply, msg)) = &done.result else {
                continue;
            };
            match self.signer.seal("result", msg) {
                Ok(sealed) => {
                    // NOMKSTREAM: a pool that is gone (its stream deleted) gets nothing.
                    pipe.cmd("XADD")
                        .arg(reply)
                        .arg("NOMKSTREAM")
                        .arg("*")
                        .arg(wire::FIELD)
                        .arg(sealed)
                        .ignore();
                    results += 1;
                }
                Err(e) => {
                    tracing::warn!(target: "multiprocessing::broker", "dropping a result that does not encode: {e}")
                }
            }
        }
        if results > 0 {
            let written: redis::RedisResult<()> = pipe.query_async(&mut self.con).await;
            if let Err(e) = written {
                tracing::warn!(target: "multiprocessing::broker", "writing results: {e}; reconnecting");
                self.unsent = batch;
                self.reconnect().await;
                return;
            }
        }
        // Their room is free once the results are written; the tasks stay held (renewed) until
        // they are acknowledged.
        self.room.add_permits(batch.len());
        self.unacked
            .extend(batch.into_iter().map(|done| done.entry));
        self.acknowledge().await;
    }

    /// Acknowledges and deletes the tasks in `unacked`. On a Redis error they stay there (and
    /// held) for the next try, after reconnecting: a task left pending and unrenewed would be
    /// claimed and run again, and one never acknowledged would stay on the stream.
    async fn acknowledge(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(&self.key)
            .arg(wire::GROUP)
            .arg(&self.unacked)
            .ignore();
        pipe.cmd("XDEL").arg(&self.key).arg(&self.unacked).ignore();
        let acked: redis::RedisResult<()> = pipe.query_async(&mut self.con).await;
        match acked {
            Ok(()) => {
                for entry in self.unacked.drain(..) {
                    self.held.remove(&entry);
                }
            }
            Err(e) => {
                tracing::warn!(target: "multiprocessing::broker", "acknowledging tasks: {e}; reconnecting");
                self.reconnect().await;
            }
        }
    }

    /// Connects again, waiting between tries, until Redis answers.
    pub(super) async fn reconnect(&mut self) {
        loop {
            tokio::time::sleep(BACKOFF).await;
            match self.endpoint.connect(None).await {
                Ok(mut con) => {
                    if wire::ensure_group(&mut con, &self.key).await.is_ok() {
                        self.con = con;
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "multiprocessing::broker", "reconnecting: {e}")
                }
            }
        }
    }
}

/// How often to look for stale tasks: twice per visibility timeout, and at least every second
/// (the timeout may change when a pool with a shorter one starts).
fn claim_period(claim: Duration) -> Duration {
    (claim / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The entry and options a task runs with, or why it does not run.
fn check(
    msg: &TaskMsg,
    lost: Option<Lost>,
) -> std::result::Result<(&'static str, TaskOptions), WireOutcome> {
    let refuse = |e: Error| WireOutcome::Failed(RemoteError::from(e));
    let record = crate::entry::lookup(&msg.entry).map_err(refuse)?;
    if msg.table != wire::table_id() {
        return Err(refuse(Error::Broker(format!(
            "worker {} was built from other code than the pool (its entries differ); run the same binary on every worker host",
            hostname()
        ))));
    }
    let mut retries = msg.retries;
    if let Some(lost) = lost {
        // Each earlier delivery ended with its worker gone: each counts as a retry.
        if lost.deliveries > retries {
            return Err(WireOutcome::WorkerLost {
                pid: lost
                    .consumer
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                exitcode: None,
                signal: None,
                oom: false,
            });
        }
        retries -= lost.deliveries;
    }
    let opts = TaskOptions {
        retries,
        timeout: msg.timeout_ms.map(Duration::from_millis),
        retry_timeouts: msg.retry_timeouts,
    };
    Ok((record.name, opts))
}

/// A local completion as the wire carries it.
fn wire_outcome(completion: Completion) -> WireOutcome {
    match completion.outcome {
        Ok((buffer, start)) => {
            let mut bytes = buffer.into_vec();
            bytes.drain(..start);
            WireOutcome::Done(bytes)
        }
        Err(TaskFailure::Remote(e)) => WireOutcome::Failed(e),
        Err(TaskFailure::WorkerLost {
            pid,
            exitcode,
            signal,
            oom,
        }) => WireOutcome::WorkerLost {
            pid,
            exitcode,
            signal,
            oom,
        },
        Err(TaskFailure::Timeout) => WireOutcome::Timeout,
        Err(TaskFailure::Terminated) => WireOutcome::Failed(RemoteError::from(Error::PoolClosed)),
    }
}

/// This host's name, for consumer names and messages.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    #[crate::entry]
    fn probe(x: u64) -> u64 {
        x
    }

    fn task(entry: &str, table: u64, retries: u32) -> TaskMsg {
        TaskMsg {
            reply: "r".into(),
            id: 1,
            entry: entry.into(),
            table,
            body: Vec::new(),
            retries,
            timeout_ms: Some(5),
            retry_timeouts: false,
            claim_ms: 1000,
        }
    }

    #[test]
    fn a_task_for_a_missing_entry_or_from_other_code_is_refused() {
        let ours = wire::table_id();
        let (name, opts) = check(&task(probe::NAME, ours, 2), None).expect("runs");
        assert_eq!(name, probe::NAME);
        assert_eq!(
            (opts.retries, opts.timeout),
            (2, Some(Duration::from_millis(5)))
        );
        let refused = |msg| match check(&msg, None) {
            Err(WireOutcome::Failed(e)) => Error::from(e),
            _ => panic!("ran"),
        };
        assert!(matches!(
            refused(task("no::such::entry", ours, 0)),
            Error::NotAnEntry { .. }
        ));
        match refused(task(probe::NAME, ours ^ 1, 0)) {
            Error::Broker(m) => assert!(m.contains("other code"), "{m}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_claimed_task_counts_its_lost_deliveries_as_retries() {
        let lost = |deliveries| {
            Some(Lost {
                consumer: "host-a:4242".into(),
                deliveries,
            })
        };
        let msg = task(probe::NAME, wire::table_id(), 1);
        let (_, opts) = check(&msg, lost(1)).expect("one retry left");
        assert_eq!(opts.retries, 0);
        assert!(matches!(
            check(&msg, lost(2)),
            Err(WireOutcome::WorkerLost { pid: 4242, .. })
        ));
    }
}
