//! Calls as tasks on the runtime: how a child with several slots (or none: unlimited) runs them,
//! and how a one-slot child runs a `Process`'s async call.
//!
//! Each call is a task that waits for a slot (a fair semaphore, so calls start in arrival
//! order), counts its start, runs (a sync entry on the blocking pool, an async one in the task)
//! and sends its `Return` through the outbox. The tasks are kept by id until they end, so that
//! `Cancel` can abort one and `Withdraw` can take back one that still waits for its slot.

use super::call::{self, Call};
use super::start_log;
use crate::protocol::Up;
use crate::transport::Outbox;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// A call task that has not ended.
struct Running {
    abort: AbortHandle,
    /// Set once the call holds its slot and is about to run.
    started: Arc<AtomicBool>,
}

type Table = Arc<Mutex<HashMap<u64, Running>>>;

/// The child's call tasks.
pub(super) struct CallTasks {
    running: Table,
    /// The child's slots; `None` for unlimited (`concurrency == 0`).
    permits: Option<Arc<Semaphore>>,
    outbox: Outbox,
    /// Where a `then_exit` call reports the child's exit code once its result is flushed.
    exit: UnboundedSender<i32>,
}

impl CallTasks {
    /// No tasks yet; calls will share `concurrency` slots (0: unlimited).
    pub(super) fn new(concurrency: u32, outbox: Outbox, exit: UnboundedSender<i32>) -> Self {
        let permits = match concurrency {
            0 => None,
            n => Some(Arc::new(Semaphore::new(n as usize))),
        };
        CallTasks {
            running: Arc::default(),
            permits,
            outbox,
            exit,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `call` as a task; it runs once it has a slot.
    pub(super) fn start(&self, call: Call) {
        let Call {
            id,
            start,
            then_exit,
            body,
        } = call;
        let outbox = self.outbox.clone();
        let table = Arc::clone(&self.running);
        let permits = self.permits.clone();
        let exit = self.exit.clone();
        let started = Arc::new(AtomicBool::new(false));
        let started_flag = Arc::clone(&started);
        let task = tokio::spawn(async move {
            // Calls wait here, in arrival order, for one of the child's slots.
            let _permit = match permits {
                Some(permits) => permits.acquire_owned().await.ok(),
                None => None,
            };
            // From here on the call counts as started: `Withdraw` no longer takes it.
            started_flag.store(true, Ordering::Relaxed);
            // Known to the parent before the call runs: if the call then crashes the
            // process, the parent knows it had started and does not run it again.
            if start_log::report_start(start).needs_message() {
                let _ = call::send_flushed(&outbox, &Up::Started { id }, Vec::new()).await;
            }
            let result = call::run_task(body.invocation()).await;
            table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let reply = call::reply(id, result);
            if then_exit {
                let _ = call::send_flushed(&outbox, &reply.head, reply.body).await;
                let _ = exit.send(reply.exit_code);
            } else {
                let _ = call::send(&outbox, &reply.head, reply.body);
            }
        });
        self.table().insert(
            id,
            Running {
                abort: task.abort_handle(),
                started,
            },
        );
    }

    /// Aborts call `id` if its task has not ended.
    pub(super) fn cancel(&self, id: u64) {
        if let Some(task) = self.table().remove(&id) {
            task.abort.abort();
        }
    }

    /// Drops call `id` if it still waits for its slot; true if it was dropped.
    pub(super) fn withdraw(&self, id: u64) -> bool {
        // This runtime has one thread: no call can pass its start while we look.
        let mut table = self.table();
        match table.get(&id) {
            Some(r) if !r.started.load(Ordering::Relaxed) => {
                r.abort.abort();
                table.remove(&id);
                true
            }
            _ => false,
        }
    }
}
