//! The driver's view of its workers: one slot per worker, each worker's life and the tasks it
//! holds.

use super::worker::Reply;
use crate::pool::backend::Task;
use crate::process::session::Session;
use crate::start::send_signal;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A place for one worker; a new generation each time a worker is started in it.
#[derive(Debug)]
pub(super) enum Slot {
    Starting(u64),
    Up(u64, Worker),
    Empty,
}

/// Where a worker is in its life. It only moves down this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    /// Takes tasks.
    Serving,
    /// Has run its `max_tasks_per_child`: finishes what it holds, then is told to exit.
    Retiring,
    /// Has been told to exit (`Shutdown` sent, or SIGTERM with a SIGKILL to follow).
    Stopping,
    /// Has been sent SIGKILL.
    Killed,
}

/// A task sent to a worker.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) task: Task,
    /// Its place among the calls sent to this worker with a start report (from 1), as the
    /// worker's start log counts.
    pub(super) seq: u64,
    pub(super) started: bool,
    /// A `Withdraw` for it is on its way.
    pub(super) withdrawing: bool,
    /// For a task with a timeout: since when it may have been running (see `deadline.rs`).
    pub(super) since: Option<Instant>,
}

/// Why the driver ended a worker (so its replacement is counted under that reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Timeout,
    MaxTasks,
    Memory,
}

/// A running worker, as the driver sees it.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) session: Session<Reply>,
    pub(super) life: Life,
    pub(super) inflight: HashMap<u64, InFlight>,
    /// When its last result came, if it then had its next task to start at once (see `Pace`).
    pub(super) last_return: Option<Instant>,
    /// How many tasks it has finished.
    pub(super) done: u32,
    /// The ids of the tasks it holds that have a timeout, in the order they were sent (the
    /// order they start in); ids of tasks it no longer holds are dropped lazily.
    pub(super) timed: VecDeque<u64>,
    /// How many of the tasks it holds have no timeout (0: every task it holds is in `timed`).
    pub(super) untimed: usize,
    /// Why the driver is ending it, if it is.
    pub(super) ending: Option<Ending>,
    /// When it is sent SIGKILL, having been sent SIGTERM.
    pub(super) kill_at: Option<Instant>,
}

impl Worker {
    pub(super) fn new(session: Session<Reply>) -> Self {
        Worker {
            session,
            life: Life::Serving,
            inflight: HashMap::new(),
            last_return: None,
            done: 0,
            timed: VecDeque::new(),
            untimed: 0,
            ending: None,
            kill_at: None,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.session.pid()
    }

    /// Hands it task `f` (sent as call `id`).
    pub(super) fn hold(&mut self, id: u64, f: InFlight) {
        let timed = f.task.opts.timeout.is_some();
        self.inflight.insert(id, f);
        if timed {
            self.add_timed(id);
        } else {
            self.untimed += 1;
        }
    }

    /// Takes task `id` out of what it holds (it finished, or goes elsewhere).
    pub(super) fn release(&mut self, id: u64) -> Option<InFlight> {
        let f = self.inflight.remove(&id)?;
        if f.task.opts.timeout.is_none() {
            self.untimed -= 1;
        }
        Some(f)
    }

    /// Notes that task `id`, which it holds, has a timeout: its id goes into `timed` in the
    /// order the tasks were sent (at the end, unless its timeout was set after it was sent).
    pub(super) fn add_timed(&mut self, id: u64) {
        let seq_of = |id: &u64| self.inflight.get(id).map_or(0, |f| f.seq);
        let seq = seq_of(&id);
        let at = self
            .timed
            .iter()
            .rposition(|t| seq_of(t) < seq)
            .map_or(0, |i| i + 1);
        self.timed.insert(at, id);
    }

    /// Whether it may be handed tasks.
    pub(super) fn serving(&self) -> bool {
        self.life == Life::Serving
    }

    /// Marks the tasks its start log says have started. Reads a file: called only when the
    /// answer matters (the worker died, or a task is to be cancelled or taken back).
    pub(super) fn read_start_log(&mut self) {
        let started = self.session.started();
        for f in self.inflight.values_mut() {
            if f.seq <= started {
                f.started = true;
            }
        }
    }

    /// Tells it to exit once it has finished what it holds (unless it was told or killed).
    pub(super) fn shutdown(&mut self) {
        if matches!(self.life, Life::Serving | Life::Retiring) {
            self.life = Life::Stopping;
            self.session.shutdown();
        }
    }

    /// Ends it for `why`: SIGTERM now and SIGKILL once `grace` has passed, or SIGKILL now
    /// without a grace. It takes no more tasks either way.
    pub(super) fn end(&mut self, why: Ending, grace: Option<Duration>, now: Instant) {
        self.ending.get_or_insert(why);
        match grace {
            Some(grace) if !grace.is_zero() && self.life != Life::Killed => {
                if self.kill_at.is_none() {
                    self.life = Life::Stopping;
                    self.kill_at = Some(now + grace);
                    send_signal(self.pid(), libc::SIGTERM);
                }
            }
            _ => self.kill(),
        }
    }

    /// Kills it now (unless it was killed).
    pub(super) fn kill(&mut self) {
        if self.life != Life::Killed {
            self.life = Life::Killed;
            send_signal(self.pid(), libc::SIGKILL);
        }
    }
}
