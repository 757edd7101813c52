//! One call at a time, on a thread of its own that writes its own start and result.
//!
//! A pool worker with one slot runs its calls here, one after another, straight from a queue:
//! no hand-off to a blocking thread and back per call, and no wait for another thread to flush
//! its start report. The runtime thread meanwhile keeps reading, so it can hand back a queued
//! call (`Withdraw`) while a long one runs, and forward logs. Writes from both threads go through
//! one lock, a whole message at a time.

use super::child::{invocation, reply};
use crate::entry::{self, EntryRecord, Invocation};
use crate::error::Result;
use crate::protocol::{encode_head, Up};
use crate::transport::SharedWriter;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

/// A call waiting for the call thread.
pub(super) struct QueuedCall {
    pub(super) id: u64,
    pub(super) record: Result<&'static EntryRecord>,
    pub(super) batch: bool,
    pub(super) report_start: bool,
    pub(super) then_exit: bool,
    pub(super) message: Vec<u8>,
    pub(super) at: usize,
}

#[derive(Default)]
struct State {
    calls: VecDeque<QueuedCall>,
    closed: bool,
}

/// The calls not yet started, shared by the runtime thread (which adds and withdraws) and the
/// call thread (which takes them in order). Taking a call off this queue is what starts it.
#[derive(Default)]
pub(super) struct CallQueue {
    state: Mutex<State>,
    ready: Condvar,
}

impl CallQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn push(&self, call: QueuedCall) {
        self.lock().calls.push_back(call);
        self.ready.notify_one();
    }

    /// Removes call `id` if it has not started; true if it was removed.
    pub(super) fn withdraw(&self, id: u64) -> bool {
        let mut state = self.lock();
        let before = state.calls.len();
        state.calls.retain(|c| c.id != id);
        state.calls.len() != before
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn next(&self) -> Option<QueuedCall> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(call) = state.calls.pop_front() {
                return Some(call);
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Writes one message and flushes it, under the writer's lock.
fn write_now(writer: &SharedWriter, runtime: &Handle, head: &Up, body: &[u8]) -> Result<()> {
    let head = encode_head(head)?;
    runtime.block_on(async {
        let mut writer = writer.lock().await;
        writer.write_message(&[&head, body]).await?;
        writer.flush().await
    })
}

/// Starts the call thread. It runs until the queue is closed; a `then_exit` call reports its
/// exit code on `exit`.
pub(super) fn spawn(
    queue: Arc<CallQueue>,
    writer: SharedWriter,
    runtime: Handle,
    exit: UnboundedSender<i32>,
    on_start: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("multiprocessing-call".into())
        .spawn(move || {
            on_start();
            while let Some(call) = queue.next() {
                if call.report_start
                    && write_now(&writer, &runtime, &Up::Started { id: call.id }, &[]).is_err()
                {
                    return;
                }
                let result = match invocation(call.record, call.batch, &call.message[call.at..]) {
                    Invocation::Sync(f) => entry::run_sync(f),
                    // An async entry runs here too, on this thread; the runtime thread drives
                    // its I/O and timers.
                    Invocation::Async(fut) => runtime.block_on(entry::run_async(fut)),
                    Invocation::Failed(e) => Err(e),
                };
                runtime.block_on(super::after_call());
                let (code, outcome, body) = reply(result);
                if write_now(
                    &writer,
                    &runtime,
                    &Up::Return {
                        id: call.id,
                        outcome,
                    },
                    &body,
                )
                .is_err()
                {
                    return;
                }
                if call.then_exit {
                    let _ = exit.send(code);
                    return;
                }
            }
        })?;
    Ok(())
}
