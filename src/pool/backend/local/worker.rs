//! One pool worker's task: starts the child, runs its initializer, then reads its session until
//! it exits, delivering each result straight to its caller.

use crate::error::{Error, Result};
use crate::pool::outcome::{Completion, TaskFailure};
use crate::pool::reply::ReplyTx;
use crate::process::child::{Exit, SupervisedChild};
use crate::process::session::{self, CallMode, Incoming, Session, SessionReader};
use crate::start::{ChildOptions, Context, StartMethod};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long a new worker may take to connect and say hello.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How to start a worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) name_prefix: String,
    pub(crate) counter: Arc<AtomicU32>,
    pub(crate) start_method: StartMethod,
    /// The initializer entry and its encoded arguments, run once before any task.
    pub(crate) initializer: Option<(&'static str, crate::buffers::Shared)>,
}

/// What a task's result is delivered to: where its completion goes, and its index in its call.
pub(super) type Reply = (ReplyTx, usize);

/// What a worker's task tells the driver.
#[derive(Debug)]
pub(super) enum WorkerEvent {
    /// The worker is up (its initializer has run), with the session to send it tasks; or it
    /// could not be started.
    Ready {
        slot: usize,
        gen: u64,
        result: Result<Session<Reply>>,
    },
    /// Task `id` left the child's queue and is about to run (a child without a start log).
    Started { slot: usize, gen: u64, id: u64 },
    /// The answer to a `Withdraw` of task `id`.
    Withdrawn {
        slot: usize,
        gen: u64,
        id: u64,
        taken: bool,
    },
    /// The result of task `id` arrived and was delivered to its caller.
    Returned { slot: usize, gen: u64, id: u64 },
    /// The worker exited and was reaped.
    Exited { slot: usize, gen: u64, exit: Exit },
}

/// Starts a worker, runs its initializer, then relays its session until it exits.
pub(super) async fn run(
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
    let child = match SupervisedChild::start(&ctx, opts).await {
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
    let pid = child.pid();
    // A child that neither connects nor exits must not hold the slot (or `Pool::new`) forever.
    let (child, conn) = child.connect(Some(CONNECT_TIMEOUT)).await;
    let setup = match conn {
        None => Err(Error::Protocol(format!(
            "pool worker {pid} exited or did not connect within {CONNECT_TIMEOUT:?}"
        ))),
        Some(conn) => {
            let (mut session, mut reader) = session::open(conn, name, Some(ctx.run_dir()));
            match &spec.initializer {
                None => Ok((session, reader)),
                Some((entry, body)) => initialize(&mut session, &mut reader, entry, body)
                    .await
                    .map(|()| (session, reader)),
            }
        }
    };
    match setup {
        Ok((session, reader)) => {
            let _ = events.send(WorkerEvent::Ready {
                slot,
                gen,
                result: Ok(session),
            });
            if let Err(e) = relay(reader, slot, gen, &events).await {
                // A worker that breaks the protocol is of no more use, and would never see
                // end-of-stream (the driver still holds the write half): end it.
                tracing::warn!(target: "multiprocessing::pool", "killing pool worker {pid}: {e}");
                child.kill();
            }
        }
        Err(e) => {
            child.kill();
            let _ = events.send(WorkerEvent::Ready {
                slot,
                gen,
                result: Err(e),
            });
        }
    }
    let exit = child.reap().await;
    let _ = events.send(WorkerEvent::Exited { slot, gen, exit });
}

/// Reads the worker's session to its end. A result goes straight to its caller; the driver only
/// hears that the worker has room again.
///
/// # Errors
/// As `SessionReader::next`: the worker broke the protocol.
async fn relay(
    mut reader: SessionReader<Reply>,
    slot: usize,
    gen: u64,
    events: &mpsc::UnboundedSender<WorkerEvent>,
) -> Result<()> {
    while let Some(incoming) = reader.next().await? {
        let event = match incoming {
            Incoming::Returned { id, reply, outcome } => {
                if let Some((tx, index)) = reply {
                    let outcome = outcome.map_err(TaskFailure::Remote);
                    let _ = tx.send(Completion { index, outcome });
                }
                WorkerEvent::Returned { slot, gen, id }
            }
            Incoming::Started { id } => WorkerEvent::Started { slot, gen, id },
            Incoming::Withdrawn { id, taken } => WorkerEvent::Withdrawn {
                slot,
                gen,
                id,
                taken,
            },
        };
        if events.send(event).is_err() {
            break;
        }
    }
    Ok(())
}

/// Runs the initializer (call id 0) and waits for it to return.
async fn initialize(
    session: &mut Session<Reply>,
    reader: &mut SessionReader<Reply>,
    entry: &'static str,
    body: &crate::buffers::Shared,
) -> Result<()> {
    session.call(0, entry, CallMode::default(), Arc::clone(body), None)?;
    loop {
        let incoming = reader.next().await?.ok_or_else(|| {
            Error::Protocol(format!(
                "pool worker {} died in its initializer",
                session.pid()
            ))
        })?;
        if let Incoming::Returned { id: 0, outcome, .. } = incoming {
            return outcome.map(drop).map_err(Error::from);
        }
    }
}
