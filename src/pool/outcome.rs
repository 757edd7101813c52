//! What becomes of a task: the types the front end, the reply channel and every backend share.

use crate::error::{Error, RemoteError};

/// What became of a task.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) index: usize,
    /// The message holding the encoded batch results and where they start in it.
    pub(crate) outcome: Result<(crate::buffers::Buffer, usize), TaskFailure>,
}

/// Why a whole task produced no results.
#[derive(Debug, Clone)]
pub(crate) enum TaskFailure {
    /// The child refused the whole batch (unknown entry, undecodable batch).
    Remote(RemoteError),
    /// The worker died after the task had started.
    WorkerLost {
        pid: u32,
        exitcode: Option<i32>,
        signal: Option<i32>,
        oom: bool,
    },
    /// The task ran past its `.timeout(d)`: its worker was killed.
    Timeout,
    /// The pool was terminated before the task finished.
    Terminated,
}

impl From<TaskFailure> for Error {
    fn from(f: TaskFailure) -> Self {
        match f {
            TaskFailure::Remote(r) => r.into(),
            TaskFailure::WorkerLost {
                pid,
                exitcode,
                signal,
                oom,
            } => Error::WorkerLost {
                pid,
                exitcode,
                signal,
                oom,
            },
            TaskFailure::Timeout => Error::Timeout,
            TaskFailure::Terminated => Error::PoolClosed,
        }
    }
}
