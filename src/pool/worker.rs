//! One pool worker: a child process started for the pool, its initializer, its messages.

use super::backend::{Completion, TaskFailure};
use super::reply::ReplyTx;
use crate::error::{Error, Result};
use crate::hub::emit_child_log;
use crate::protocol::{decode_head, encode_head, Down, Up};
use crate::start::{ChildOptions, ChildRecord, Context, StartMethod};
use crate::transport::{Outbox, Outgoing};
use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// How long a new worker may take to connect and say hello.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How to start a worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) name_prefix: String,
    pub(crate) counter: Arc<AtomicU32>,
    pub(crate) start_method: StartMethod,
    /// The initializer entry and its encoded arguments, run once before any task.
    pub(crate) initializer: Option<(&'static str, Arc<Vec<u8>>)>,
}

/// A running worker, as the driver sees it.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) outbox: Outbox,
    /// Where each dispatched task's result goes; the reader delivers results straight from here.
    pub(crate) replies: Replies,
}

/// Task id → (where its completion goes, its index in its call). Filled by the driver before it
/// sends a task; emptied by the worker's reader when the result arrives (or by the driver when
/// the task is cancelled or taken back).
pub(crate) type Replies = Arc<std::sync::Mutex<HashMap<u64, (ReplyTx, usize)>>>;

/// What a worker's task tells the driver.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    Ready {
        slot: usize,
        gen: u64,
        result: Result<WorkerHandle>,
    },
    Message {
        slot: usize,
        gen: u64,
        message: Vec<u8>,
    },
    /// Task `id` left the child's queue and is about to run.
    Started { slot: usize, gen: u64, id: u64 },
    /// The result of task `id` arrived and was delivered to its caller.
    Returned { slot: usize, gen: u64, id: u64 },
    Exited {
        slot: usize,
        gen: u64,
        status: ExitStatus,
    },
}

/// Starts a worker, runs its initializer, then relays its messages until it exits.
pub(crate) async fn run(
    ctx: Arc<Context>,
    spec: WorkerSpec,
    concurrency: u32,
    slot: usize,
    gen: u64,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    let n = spec.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("{}-{n}", spec.name_prefix);
    let opts = ChildOptions {
        name: name.clone(),
        daemon: true,
        env: Vec::new(),
        start_method: spec.start_method,
        concurrency,
    };
    let child = match ctx.start_child(opts).await {
        Ok(child) => child,
        Err(e) => {
            let _ = events.send(WorkerEvent::Ready {
                slot,
                gen,
                result: Err(e),
            });
            return;
        }
    };
    let pid = child.pid;
    let (exited_tx, exited) = watch::channel(None);
    ctx.track(ChildRecord {
        pid,
        name: name.clone(),
        daemon: true,
        exited,
    });
    // A child that neither connects nor exits must not hold the slot (or `Pool::new`) forever.
    let (_, mut process, conn) = child.connected(Some(CONNECT_TIMEOUT)).await;
    let setup = match conn {
        None => Err(Error::Protocol(format!(
            "pool worker {pid} exited or did not connect within {CONNECT_TIMEOUT:?}"
        ))),
        Some(mut conn) => match &spec.initializer {
            None => Ok(conn),
            Some((entry, body)) => initialize(&mut conn, pid, &name, entry, body)
                .await
                .map(|()| conn),
        },
    };
    match setup {
        Ok(mut conn) => {
            let replies: Replies = Arc::default();
            let handle = WorkerHandle {
                pid,
                name,
                outbox: conn.outbox.clone(),
                replies: Arc::clone(&replies),
            };
            let _ = events.send(WorkerEvent::Ready {
                slot,
                gen,
                result: Ok(handle),
            });
            drop(conn.outbox);
            loop {
                match conn.reader.read_message().await {
                    Ok(Some(message)) => {
                        // A result goes straight to its caller; the driver only hears that the
                        // worker has room again.
                        let event = match decode_head::<Up>(&message) {
                            Ok((Up::Return { id, outcome }, at)) => {
                                let reply = replies
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&id);
                                if let Some((tx, index)) = reply {
                                    let outcome = outcome
                                        .map(|()| (message, at))
                                        .map_err(TaskFailure::Remote);
                                    let _ = tx.send(Completion { index, outcome });
                                }
                                WorkerEvent::Returned { slot, gen, id }
                            }
                            Ok((Up::Started { id }, _)) => WorkerEvent::Started { slot, gen, id },
                            _ => WorkerEvent::Message { slot, gen, message },
                        };
                        if events.send(event).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A worker that breaks the protocol is of no more use, and would never
                        // see end-of-stream (the driver still holds the write half): end it.
                        tracing::warn!(target: "multiprocessing::pool", "killing pool worker {pid}: {e}");
                        crate::start::send_signal(pid, libc::SIGKILL);
                        break;
                    }
                }
            }
        }
        Err(e) => {
            crate::start::send_signal(pid, libc::SIGKILL);
            let _ = events.send(WorkerEvent::Ready {
                slot,
                gen,
                result: Err(e),
            });
        }
    }
    let status = process
        .wait()
        .await
        .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0xff00));
    let _ = exited_tx.send(Some(status));
    let _ = events.send(WorkerEvent::Exited { slot, gen, status });
}

/// Runs the initializer (call id 0) and waits for it to return.
async fn initialize(
    conn: &mut crate::hub::ChildConn,
    pid: u32,
    name: &str,
    entry: &str,
    body: &Arc<Vec<u8>>,
) -> Result<()> {
    let head = encode_head(&Down::Call {
        id: 0,
        entry: entry.to_owned().into(),
        then_exit: false,
        batch: false,
        report_start: false,
    })?;
    conn.outbox
        .send(Outgoing::new(head, Arc::clone(body)))
        .map_err(|_| Error::Closed)?;
    loop {
        let message =
            conn.reader.read_message().await?.ok_or_else(|| {
                Error::Protocol(format!("pool worker {pid} died in its initializer"))
            })?;
        match decode_head::<Up>(&message)? {
            (Up::Return { id: 0, outcome }, _) => return outcome.map_err(Error::from),
            (Up::Log(record), _) => emit_child_log(pid, name, &record),
            _ => {}
        }
    }
}
