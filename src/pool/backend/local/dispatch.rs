//! Handing work out: queued tasks to the least-loaded workers, waiting tasks back from a busy
//! worker to an idle one, cancelled tasks out of the workers.

use super::slots::{InFlight, Slot};
use super::worker::Reply;
use super::{Driver, Phase};
use crate::error::RemoteError;
use crate::pool::backend::Task;
use crate::pool::outcome::TaskFailure;
use crate::process::session::CallMode;

/// How the pool's tasks run in a worker: a batch each, with a start report.
const TASK: CallMode = CallMode {
    batch: true,
    report_start: true,
    then_exit: false,
};

impl Driver {
    /// Hands queued tasks to the least-loaded workers with room.
    pub(super) fn dispatch(&mut self) {
        if self.phase == Phase::Terminating {
            return;
        }
        // A worker that may run only `max` tasks in its life is never handed more.
        let lifetime = self
            .cfg
            .max_tasks_per_child
            .map_or(usize::MAX, |m| m as usize);
        // A worker whose memory is checked after each task holds only what it runs: a task held
        // ahead could start before the parent has seen the size the last one left.
        let depth = match self.cfg.max_worker_memory {
            Some(_) => self.cfg.concurrency.max(1) as usize,
            None => self.pace.depth,
        };
        while !self.pending.is_empty() {
            let mut best: Option<(usize, usize)> = None;
            for (i, slot) in self.slots.iter().enumerate() {
                if let Slot::Up(_, w) = slot {
                    let load = w.inflight.len();
                    let room = load < depth && load + (w.done as usize) < lifetime;
                    if w.serving() && room && best.is_none_or(|(_, n)| load < n) {
                        best = Some((i, load));
                    }
                }
            }
            let Some((i, _)) = best else { return };
            let Some(task) = self.next_task() else { return };
            let Slot::Up(_, worker) = &mut self.slots[i] else {
                return;
            };
            let reply: Reply = (task.reply.clone(), task.index);
            let body = std::sync::Arc::clone(&task.body);
            match worker
                .session
                .call(task.id, task.entry, TASK, body, Some(reply))
            {
                Ok(seq) => {
                    self.timed += usize::from(task.opts.timeout.is_some());
                    let f = InFlight {
                        task,
                        seq,
                        started: false,
                        withdrawing: false,
                        since: None,
                    };
                    worker.hold(f.task.id, f);
                }
                Err(e) => {
                    self.stats.failed += 1;
                    task.fail(TaskFailure::Remote(RemoteError::from(&e)));
                }
            }
        }
    }

    /// No head-of-line blocking: when the queue is empty and a worker sits idle while another
    /// holds tasks that wait behind a running one, ask for one of those back (it then goes to the
    /// idle worker). The child gives it back only if it has not started, so nothing runs twice.
    pub(super) fn rebalance(&mut self) {
        if self.phase == Phase::Terminating || !self.pending.is_empty() {
            return;
        }
        let idle = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Up(_, w) if w.inflight.is_empty() && w.serving()))
            .count();
        if idle == 0 {
            return;
        }
        let mut asked = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Up(_, w) => w.inflight.values().filter(|f| f.withdrawing).count(),
                _ => 0,
            })
            .sum::<usize>();
        let concurrency = self.cfg.concurrency.max(1) as usize;
        for slot in &mut self.slots {
            if asked >= idle {
                return;
            }
            let Slot::Up(_, w) = slot else { continue };
            if w.inflight.len() <= concurrency {
                continue;
            }
            w.read_start_log();
            // The last dispatched of its waiting tasks.
            let candidate = w
                .inflight
                .iter()
                .filter(|(_, f)| !f.started && !f.withdrawing)
                .map(|(id, _)| *id)
                .max();
            if let Some(id) = candidate {
                if w.session.withdraw(id) {
                    if let Some(f) = w.inflight.get_mut(&id) {
                        f.withdrawing = true;
                    }
                    asked += 1;
                }
            }
        }
    }

    /// The next queued task whose caller still wants it.
    fn next_task(&mut self) -> Option<Task> {
        while let Some(task) = self.pending.pop_front() {
            if !task.reply.is_closed() {
                return Some(task);
            }
            self.stats.cancelled += 1;
        }
        None
    }

    /// The caller of `group` is gone: its queued tasks are dropped, and its dispatched ones that
    /// have not started are cancelled.
    pub(super) fn cancel(&mut self, group: u64) {
        let queued = self.pending.len();
        self.pending.retain(|t| t.group != group);
        self.stats.cancelled += (queued - self.pending.len()) as u64;
        for slot in &mut self.slots {
            if let Slot::Up(_, worker) = slot {
                // A task that has started runs to its end (a sync call cannot be interrupted)
                // and keeps its place in the accounting; its result goes nowhere.
                if worker.inflight.values().any(|f| f.task.group == group) {
                    worker.read_start_log();
                }
                let ids: Vec<u64> = worker
                    .inflight
                    .iter()
                    .filter(|(_, f)| f.task.group == group && !f.started)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    worker.release(id);
                    worker.session.cancel(id);
                    self.stats.cancelled += 1;
                }
            }
        }
    }
}
