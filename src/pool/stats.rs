//! `PoolStats`: what a pool has done so far, for a service to export as metrics.

/// What a [`Pool`](super::Pool) has done so far ([`Pool::stats`](super::Pool::stats)).
///
/// A *task* is what travels to a worker as one message: one `apply`, or one chunk of a `map` /
/// `imap` (one item per chunk at `chunksize(1)`). The counts add up: every task accepted is, at
/// any moment, exactly one of completed, failed, cancelled, queued or in flight:
/// `submitted == completed + failed + cancelled + queued + in_flight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks the pool accepted (a call refused after `close` is not counted).
    pub submitted: u64,
    /// Tasks that started on a worker: those completed, those that failed after starting
    /// (worker lost, timed out), and those running now. A task that ran again after a crash
    /// counts once.
    pub started: u64,
    /// Tasks whose results came back. An item whose entry returned an error or panicked is a
    /// result too: the pool does not look inside them.
    pub completed: u64,
    /// Tasks that failed in the pool: their worker died while they ran, they timed out, the
    /// pool was terminated, or no worker could be started to run them.
    pub failed: u64,
    /// Of the failed tasks, those that ran past their `.timeout(d)`.
    pub timed_out: u64,
    /// Times a task was run again (after its worker died, or it timed out, with retries left).
    pub retried: u64,
    /// Tasks dropped before they started because their caller went away.
    pub cancelled: u64,
    /// Tasks waiting for a worker now.
    pub queued: usize,
    /// Tasks held by workers now: running, or waiting in a worker to start.
    pub in_flight: usize,
    /// Tasks running now.
    pub running: usize,
    /// Worker processes started, the first ones and the replacements.
    pub workers_started: u64,
    /// Workers replaced, by why.
    pub workers_replaced: Replacements,
}

/// How many workers a pool replaced, by why ([`PoolStats::workers_replaced`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replacements {
    /// The worker died on its own: a crash, `exit`, a signal from outside, the OOM killer.
    pub crashed: u64,
    /// A task ran past its timeout and the worker was killed.
    pub timed_out: u64,
    /// It had run its `max_tasks_per_child`.
    pub max_tasks: u64,
    /// Its memory passed `max_worker_memory` after a task.
    pub memory: u64,
}

impl Replacements {
    /// All replacements, whatever the reason.
    pub fn total(&self) -> u64 {
        self.crashed + self.timed_out + self.max_tasks + self.memory
    }
}
