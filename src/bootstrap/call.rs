//! One call, from its message to its reply: what the call thread (`call_thread`, one slot) and
//! the call tasks (`call_tasks`, several slots) both do with it.
//!
//! Both paths decode the arguments the same way ([`CallBody::invocation`]), count the start as
//! the call's `start` says (`start_log::report_start`) before it runs, catch a panic with its location
//! (`entry::run_sync` / `entry::run_async`, in [`run_here`] and [`run_task`]), wait for the
//! `AfterCall` hook, and turn the result into the same `Return` ([`reply`]). They differ only in where the call runs and how its messages are
//! written: the call thread runs it on itself and writes under the writer's lock; a call task
//! runs a sync entry on the blocking pool and sends through the outbox.

use super::after_call;
use super::start_log::StartReport;
use crate::buffers::{Buffer, IntoShared};
use crate::entry::{self, EntryRecord, Invocation};
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{encode_head, Up};
use crate::transport::{Outbox, Outgoing};

/// A call the child has accepted and not started.
pub(super) struct Call {
    pub(super) id: u64,
    /// How it reports its start, if it must.
    pub(super) start: Option<StartReport>,
    /// The last call (a `Process`'s): the child exits once its result is on the wire.
    pub(super) then_exit: bool,
    pub(super) body: CallBody,
}

/// What a call runs.
pub(super) enum CallBody {
    /// Still encoded (the message, with its arguments from `at`): decoded where it runs.
    Encoded {
        record: Result<&'static EntryRecord>,
        batch: bool,
        message: Vec<u8>,
        at: usize,
    },
    /// Decoded already, by the runtime thread.
    Decoded(Invocation),
}

impl CallBody {
    /// The call, ready to run: the entry's single or batch form on the arguments, or why it
    /// cannot run.
    pub(super) fn invocation(self) -> Invocation {
        match self {
            CallBody::Encoded {
                record,
                batch,
                message,
                at,
            } => {
                // Adopted by the pool: the arguments' buffer goes back once they are decoded
                // (a single call's here, a batch's when the batch is done with them).
                let message = Buffer::from(message);
                match record {
                    Ok(record) if batch => (record.invoke_batch)(entry::BatchArgs { message, at }),
                    Ok(record) => (record.invoke)(&message[at..]),
                    Err(e) => Invocation::Failed(e),
                }
            }
            CallBody::Decoded(invoked) => invoked,
        }
    }
}

/// Runs a call on this thread (the call thread): a sync entry right here, an async one driven
/// here while the runtime's own thread drives its I/O and timers. Then waits for the `AfterCall` hook.
pub(super) fn run_here(
    invocation: Invocation,
    runtime: &tokio::runtime::Handle,
) -> Result<Vec<u8>> {
    let result = match invocation {
        Invocation::Sync(f) => entry::run_sync(f),
        Invocation::Async(fut) => runtime.block_on(entry::run_async(fut)),
        Invocation::Failed(e) => Err(e),
    };
    runtime.block_on(after_call());
    result
}

/// Runs a call as a task on the runtime: a sync entry on the blocking pool (so that the runtime
/// thread keeps reading and forwarding logs while it runs), an async one in this task. Then
/// waits for the `AfterCall` hook.
///
/// # Cancel safety
/// Not cancel-safe: a sync entry already on the blocking pool runs to its end, and its result
/// is lost.
pub(super) async fn run_task(invocation: Invocation) -> Result<Vec<u8>> {
    let result = match invocation {
        Invocation::Sync(f) => {
            match tokio::task::spawn_blocking(move || entry::run_sync(f)).await {
                Ok(result) => result,
                Err(e) => Err(Error::Protocol(format!("the entry's thread was lost: {e}"))),
            }
        }
        Invocation::Async(fut) => entry::run_async(fut).await,
        Invocation::Failed(e) => Err(e),
    };
    after_call().await;
    result
}

/// A finished call's reply, as it goes back.
pub(super) struct Reply {
    /// The child's exit code if the call was `then_exit`: 0 for a value, 1 for a failure (as
    /// Python's after an exception).
    pub(super) exit_code: i32,
    /// The `Return` message.
    pub(super) head: Up,
    /// On success, the encoded result; its buffer goes back to the pool once the reply is
    /// written and dropped.
    pub(super) body: Buffer,
}

/// The reply to call `id`, which produced `result`.
pub(super) fn reply(id: u64, result: Result<Vec<u8>>) -> Reply {
    let (exit_code, outcome, body) = match result {
        Ok(body) => (0, Ok(()), Buffer::from(body)),
        Err(e) => (1, Err(RemoteError::from(e)), Buffer::default()),
    };
    Reply {
        exit_code,
        head: Up::Return { id, outcome },
        body,
    }
}

/// Sends a message through the outbox.
///
/// # Errors
/// `Encode` if the head does not encode; `Closed` if the writer task is gone.
pub(super) fn send(outbox: &Outbox, head: &Up, body: impl IntoShared) -> Result<()> {
    let head = encode_head(head)?;
    outbox
        .send(Outgoing::new(head, body))
        .map_err(|_| Error::Closed)
}

/// Sends a message through the outbox and waits until it (and whatever went before it) has been
/// flushed to the OS.
///
/// # Cancel safety
/// The message is sent either way; cancelling only stops the wait for the flush.
///
/// # Errors
/// `Encode` if the head does not encode; `Closed` if the writer task is gone.
pub(super) async fn send_flushed(outbox: &Outbox, head: &Up, body: impl IntoShared) -> Result<()> {
    let head = encode_head(head)?;
    let (ack, flushed) = tokio::sync::oneshot::channel();
    outbox
        .send(Outgoing::new(head, body).acked(ack))
        .map_err(|_| Error::Closed)?;
    flushed.await.map_err(|_| Error::Closed)
}

/// Waits until whatever went through the outbox so far (log records, replies) has been flushed.
///
/// # Cancel safety
/// Cancel-safe: nothing is lost, the wait just ends.
pub(super) async fn flush(outbox: &Outbox) {
    let (ack, flushed) = tokio::sync::oneshot::channel();
    if outbox.send(Outgoing::flush_marker(ack)).is_ok() {
        let _ = flushed.await;
    }
}
