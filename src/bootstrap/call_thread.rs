//! One call at a time, on a thread of its own that writes its own start and result.
//!
//! A child with one slot (every `Process`, and pool workers by default) runs its calls here, one
//! after another, straight from a queue: no hand-off to a blocking thread and back per call, and
//! no wait for another thread to flush its start report. What is done with each call (decode,
//! run with its panic caught, reply) is `call`'s, shared with the call tasks. The runtime thread meanwhile keeps reading, so it can hand back a queued
//! call (`Withdraw`) while a long one runs, and forward logs. Writes from both threads go through
//! one lock, a whole message at a time.
//!
//! # One write per call
//! When a call ends and the next one is already queued, the call thread takes the next one off
//! the queue (which starts it: `Withdraw` no longer finds it) and counts it in the start log
//! before it runs (see `start_log`), so a crash still fails exactly the calls that had started.
//! A child without a start log writes the next call's `Started` in the same flush as the
//! finished call's `Return`: the parent reads both with one wake-up.

use super::call::{self, Call};
use super::start_log;
use crate::error::Result;
use crate::protocol::{encode_head, Up};
use crate::transport::SharedWriter;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Default)]
struct State {
    calls: VecDeque<Call>,
    closed: bool,
    /// The call thread sleeps on `ready`: only then does a push need to wake it (a futex call).
    waiting: bool,
}

/// The calls not yet started, shared by the runtime thread (which adds and withdraws) and the
/// call thread (which takes them in order). Taking a call off this queue is what starts it.
#[derive(Default)]
struct CallQueue {
    state: Mutex<State>,
    ready: Condvar,
}

impl CallQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, call: Call) {
        let mut state = self.lock();
        state.calls.push_back(call);
        if state.waiting {
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Removes call `id` if it has not started; true if it was removed.
    fn withdraw(&self, id: u64) -> bool {
        let mut state = self.lock();
        let before = state.calls.len();
        state.calls.retain(|c| c.id != id);
        state.calls.len() != before
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn next(&self) -> Option<Call> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(call) = state.calls.pop_front() {
                return Some(call);
            }
            state.waiting = true;
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting = false;
        }
    }

    /// The next call if one is queued now (taking it starts it); never waits.
    fn try_next(&self) -> Option<Call> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.calls.pop_front()
    }
}

/// Writes a call's `Return` (if any) and then the next call's `Started` (if any) and flushes
/// them together, under the writer's lock.
fn write_now(
    writer: &SharedWriter,
    runtime: &Handle,
    ret: Option<(&Up, &[u8])>,
    started: Option<u64>,
) -> Result<()> {
    let ret = match ret {
        Some((head, body)) => Some((encode_head(head)?, body)),
        None => None,
    };
    let started = match started {
        Some(id) => Some(encode_head(&Up::Started { id })?),
        None => None,
    };
    runtime.block_on(async {
        let mut writer = writer.lock().await;
        if let Some((head, body)) = &ret {
            writer.write_message(&[head, body]).await?;
        }
        if let Some(head) = &started {
            writer.write_message(&[head]).await?;
        }
        writer.flush().await
    })
}

/// What the call thread does first, before it takes calls from the queue (a spare reads its
/// assignment): perhaps a call to run at once.
pub(super) type FirstWork = Box<dyn FnOnce(&Handle) -> Option<Call> + Send>;

/// The runtime thread's hold on the call thread: it queues calls there and withdraws them.
/// Dropping it stops the thread, however serving ends (once the call it runs, if any, returns).
pub(super) struct CallThread {
    queue: Arc<CallQueue>,
}

impl CallThread {
    /// Starts the call thread. It runs `first`, then the queue's calls until this handle is
    /// dropped; a `then_exit` call reports its exit code on `exit`. `on_start` runs on the
    /// thread before its first queued call (it makes the child's context current there).
    ///
    /// # Errors
    /// The OS error if the thread cannot be started.
    pub(super) fn spawn(
        writer: SharedWriter,
        runtime: Handle,
        exit: UnboundedSender<i32>,
        on_start: Arc<dyn Fn() + Send + Sync>,
        first: Option<FirstWork>,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(CallQueue::default());
        let thread = Serving {
            queue: Arc::clone(&queue),
            writer,
            runtime,
            exit,
        };
        std::thread::Builder::new()
            .name("multiprocessing-call".into())
            .spawn(move || thread.run(on_start, first))?;
        Ok(CallThread { queue })
    }

    /// Queues a call; the thread runs it once the calls before it have run.
    pub(super) fn push(&self, call: Call) {
        self.queue.push(call);
    }

    /// Removes call `id` if it has not started; true if it was removed.
    pub(super) fn withdraw(&self, id: u64) -> bool {
        self.queue.withdraw(id)
    }
}

impl Drop for CallThread {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// What the call thread holds while it serves.
struct Serving {
    queue: Arc<CallQueue>,
    writer: SharedWriter,
    runtime: Handle,
    exit: UnboundedSender<i32>,
}

impl Serving {
    /// The call thread's body: `first`, then the queue's calls until it is closed.
    fn run(self, on_start: Arc<dyn Fn() + Send + Sync>, first: Option<FirstWork>) {
        let Serving {
            queue,
            writer,
            runtime,
            exit,
        } = self;
        // Entries find the runtime as they would on its blocking pool (`Handle::current`,
        // `tokio::spawn`); the runtime's own thread drives their I/O and timers.
        let _runtime = runtime.enter();
        let mut next = first.and_then(|first| first(&runtime));
        if next.is_none() {
            next = queue.next();
            // Our context may be made after this thread starts (a spare is told who it is
            // only later): take it when the first call comes.
            if next.is_some() {
                on_start();
            }
        }
        let mut start_reported = false;
        while let Some(call) = next.take() {
            let message_due =
                start_log::report_start(call.start).needs_message() && !start_reported;
            if message_due && write_now(&writer, &runtime, None, Some(call.id)).is_err() {
                return;
            }
            // An async entry runs here too, on this thread.
            let result = call::run_here(call.body.invocation(), &runtime);
            let reply = call::reply(call.id, result);
            // A `then_exit` call is the last one: nothing after it starts.
            next = if call.then_exit {
                None
            } else {
                queue.try_next()
            };
            // Taking the next call off the queue starts it: it is counted in the start log
            // at once, or its `Started` rides with this `Return`.
            let started = next
                .as_ref()
                .filter(|c| start_log::report_start(c.start).needs_message())
                .map(|c| c.id);
            start_reported = started.is_some();
            let ret = Some((&reply.head, reply.body.as_slice()));
            if write_now(&writer, &runtime, ret, started).is_err() {
                return;
            }
            // Written: dropping the reply (at the end of this turn) returns a large result's
            // buffer to the pool, for the next one.
            if call.then_exit {
                let _ = exit.send(reply.exit_code);
                return;
            }
            if next.is_none() {
                next = queue.next();
                start_reported = false;
            }
        }
    }
}
