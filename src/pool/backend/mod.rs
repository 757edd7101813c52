//! The seam between the pool's front end and where tasks run.
//!
//! The front end (`Pool`, `AsyncResult`, `Map`, `Imap`) knows only this: it submits encoded
//! [`Task`]s, each carrying its id and where its [`Completion`] goes, cancels groups of tasks, and
//! receives completions: the encoded results, or failures such as a lost worker. It talks to a
//! backend through [`Command`]s on a channel, one message per batch of tasks, whatever the backend
//! is; a [`Backend`] is what starts the task that takes those commands. The local backend
//! (`local/`) runs tasks on child processes of this executable; a broker backend (Redis streams,
//! NATS) is a sibling folder implementing the same trait, without touching the front end.

#[cfg(feature = "broker")]
pub(crate) mod broker;
pub(crate) mod local;

use super::outcome::{Completion, TaskFailure};
use super::reply::ReplyTx;
use super::stats::PoolStats;
use crate::error::Result;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What a call asked of each of its tasks, besides running them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskOptions {
    /// How many more times the task may run again after its worker died mid-task (or, with
    /// `retry_timeouts`, after it timed out).
    pub(crate) retries: u32,
    /// How long the task may run once started; past it, its worker is killed.
    pub(crate) timeout: Option<Duration>,
    /// A task that timed out is retried too (while `retries` are left).
    pub(crate) retry_timeouts: bool,
}

/// One unit of work: a batch of encoded arguments for one entry.
#[derive(Debug)]
pub(crate) struct Task {
    /// Unique within the pool; never 0 (0 is the initializer's call).
    pub(crate) id: u64,
    /// Tasks of one call share a group; cancelling the call cancels the group.
    pub(crate) group: u64,
    pub(crate) entry: &'static str,
    /// An `encode_batch` of the arguments.
    pub(crate) body: crate::buffers::Shared,
    /// Position of this batch within its call.
    pub(crate) index: usize,
    /// Its retries left, and its timeout.
    pub(crate) opts: TaskOptions,
    pub(crate) reply: ReplyTx,
}

impl Task {
    /// Tells the task's caller that it failed.
    pub(crate) fn fail(self, failure: TaskFailure) {
        let _ = self.reply.send(Completion {
            index: self.index,
            outcome: Err(failure),
        });
    }
}

/// What the front end asks of the backend.
#[derive(Debug)]
pub(crate) enum Command {
    Submit(Vec<Task>),
    /// The receiver of this group is gone: drop its queued tasks, cancel its dispatched ones.
    Cancel(u64),
    Close,
    /// Close, finish all work, stop the workers, then answer.
    Join(oneshot::Sender<()>),
    /// Kill the workers now, fail all work, then answer (if anyone asks).
    Terminate(Option<oneshot::Sender<()>>),
    Pids(oneshot::Sender<Vec<u32>>),
    /// A lazily submitting call (map, imap) was made: its chunks are accepted after `close`.
    Open(u64),
    /// That call will submit nothing more.
    Done(u64),
    /// The tasks of this group (an `AsyncResult` already submitted) get this timeout.
    Timeout(u64, Duration),
    /// What the pool has done so far.
    Stats(oneshot::Sender<PoolStats>),
}

impl Command {
    /// Answers a command that arrived after the backend finished: tasks fail as terminated,
    /// whoever waits is answered (with no pids, or no stats), the rest is moot.
    pub(crate) fn refuse(self) {
        match self {
            Command::Submit(tasks) => tasks
                .into_iter()
                .for_each(|t| t.fail(TaskFailure::Terminated)),
            Command::Join(tx) | Command::Terminate(Some(tx)) => {
                let _ = tx.send(());
            }
            Command::Pids(tx) => {
                let _ = tx.send(Vec::new());
            }
            // Dropped: the asker learns the pool has finished.
            Command::Stats(_)
            | Command::Cancel(_)
            | Command::Timeout(..)
            | Command::Close
            | Command::Terminate(None)
            | Command::Open(_)
            | Command::Done(_) => {}
        }
    }
}

/// Where the front end sends its commands.
pub(crate) type Commands = mpsc::UnboundedSender<Command>;

/// A place where tasks run. Started once per pool; after that the front end and the backend
/// share only the [`Command`] channel and each task's reply, so nothing on a task's path goes
/// through this trait.
pub(crate) trait Backend {
    /// Starts the backend's driver (and its workers, connections, whatever it runs on). Returns
    /// where commands go, and a receiver answered once the backend can run tasks, or with the
    /// error that kept it from starting. The driver ends once every sender of commands is gone
    /// (then it terminates what still runs) or after a `Join`/`Terminate` has been answered.
    fn start(self) -> (Commands, oneshot::Receiver<Result<()>>);
}
