//! The driver's view of its workers: one slot per worker, each worker's life and the tasks it
//! holds.

use super::worker::Reply;
use crate::pool::backend::Task;
use crate::process::session::Session;
use crate::start::send_signal;
use std::collections::HashMap;
use std::time::Instant;

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
    /// Has been told to exit (`Shutdown` sent).
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
}

impl Worker {
    pub(super) fn new(session: Session<Reply>) -> Self {
        Worker {
            session,
            life: Life::Serving,
            inflight: HashMap::new(),
            last_return: None,
            done: 0,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.session.pid()
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

    /// Kills it now (unless it was killed).
    pub(super) fn kill(&mut self) {
        if self.life != Life::Killed {
            self.life = Life::Killed;
            send_signal(self.pid(), libc::SIGKILL);
        }
    }
}
