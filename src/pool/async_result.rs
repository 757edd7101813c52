//! `AsyncResult<R>`: the handle of one submitted task (Python's `AsyncResult`).

use super::backend::Command;
use super::decode_results;
use super::outcome::Completion;
use super::reply::ReplyRx;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The pending result of [`Pool::apply_async`](super::Pool::apply_async): a `Future` of the
/// task's value, plus Python's `ready()`, `successful()` and `get(timeout)`.
///
/// The task was submitted when this handle was made, whether or not it is ever awaited.
///
/// # Cancel safety
/// Awaiting it (or [`get`](Self::get)) is cancel-safe: the result stays available to a later
/// await. Dropping the handle before the task has started cancels the task; if it is already
/// running, it runs to the end and its result is discarded.
#[must_use = "dropping an AsyncResult cancels its task if it has not started"]
pub struct AsyncResult<R> {
    state: Mutex<State>,
    group: u64,
    commands: mpsc::UnboundedSender<Command>,
    _output: PhantomData<fn() -> R>,
}

struct State {
    rx: ReplyRx,
    done: Option<Completion>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(rx: ReplyRx, group: u64, commands: mpsc::UnboundedSender<Command>) -> Self {
        AsyncResult {
            state: Mutex::new(State { rx, done: None }),
            group,
            commands,
            _output: PhantomData,
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.done.is_none() {
            if let Some(c) = state.rx.try_recv() {
                state.done = Some(c);
            }
        }
        f(&mut state)
    }

    /// Gives the task (already submitted) a time limit from its start, as
    /// [`Apply::timeout`](super::Apply::timeout) does: past it, its worker is killed and
    /// replaced, and the task fails with [`Error::Timeout`]. Ignored if the task has finished.
    pub fn timeout(self, limit: Duration) -> Self {
        let _ = self.commands.send(Command::Timeout(self.group, limit));
        self
    }

    /// Whether the task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        self.with_state(|s| s.done.is_some())
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Whether the task finished with a value: `None` while it runs (Python raises there).
    pub fn successful(&self) -> Option<bool> {
        self.with_state(|s| {
            s.done.as_ref().map(|c| match &c.outcome {
                Ok((message, at)) => {
                    matches!(
                        decode_results::<R>(&message[*at..], 1).as_deref(),
                        Ok([Ok(_)])
                    )
                }
                Err(_) => false,
            })
        })
    }

    fn take_value(done: &Completion) -> Result<R> {
        match &done.outcome {
            Ok((message, at)) => {
                let mut results = decode_results::<R>(&message[*at..], 1)?;
                results.pop().ok_or_else(|| {
                    Error::Protocol("a worker returned no result for one task".into())
                })?
            }
            Err(f) => Err(f.clone().into()),
        }
    }

    /// Waits at most `timeout` for the value (Python's `get(timeout)`).
    ///
    /// # Cancel safety
    /// Cancel-safe; after a timeout the handle is still usable and the task still runs.
    ///
    /// # Errors
    /// [`Error::Timeout`] if the task is not done in time; otherwise what awaiting gives:
    /// the task's own error ([`Error::Panicked`], …), [`Error::WorkerLost`] when its worker
    /// died, [`Error::PoolClosed`] when the pool was terminated first.
    pub async fn get(&mut self, timeout: Duration) -> Result<R> {
        tokio::time::timeout(timeout, &mut *self).await?
    }
}

impl<R: DeserializeOwned> Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let state = self
            .get_mut()
            .state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if state.done.is_none() {
            match state.rx.poll_recv(cx) {
                Poll::Ready(Some(c)) => state.done = Some(c),
                Poll::Ready(None) => return Poll::Ready(Err(Error::PoolClosed)),
                Poll::Pending => return Poll::Pending,
            }
        }
        match &state.done {
            Some(done) => Poll::Ready(Self::take_value(done)),
            None => Poll::Pending,
        }
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        if !self.ready() {
            let _ = self.commands.send(Command::Cancel(self.group));
        }
    }
}
