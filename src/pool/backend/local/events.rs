//! What the driver does when a worker's task reports: one handler per event.

use super::slots::{Ending, InFlight, Life, Slot, Worker};
use super::worker::{Reply, WorkerEvent};
use super::{retry_or_fail, Driver, Phase};
use crate::error::{Error, RemoteError};
use crate::pool::outcome::TaskFailure;
use crate::process::child::Exit;
use crate::process::session::Session;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

impl Driver {
    pub(super) fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Ready { slot, gen, result } => match result {
                Ok(session) => self.on_ready(slot, gen, session),
                Err(e) => self.on_start_failed(slot, gen, e),
            },
            WorkerEvent::Started { slot, gen, id } => self.on_started(slot, gen, id),
            WorkerEvent::Withdrawn {
                slot,
                gen,
                id,
                taken,
            } => self.on_withdrawn(slot, gen, id, taken),
            WorkerEvent::Returned { slot, gen, id } => self.on_returned(slot, gen, id),
            WorkerEvent::Exited { slot, gen, exit } => self.on_exited(slot, gen, exit),
        }
    }

    /// The worker of this generation in `slot`, if it is (still) up.
    fn worker(&mut self, slot: usize, gen: u64) -> Option<&mut Worker> {
        match &mut self.slots[slot] {
            Slot::Up(g, worker) if *g == gen => Some(worker),
            _ => None,
        }
    }

    /// Whether `slot` waits for the worker of this generation to start.
    fn starting(&self, slot: usize, gen: u64) -> bool {
        matches!(self.slots[slot], Slot::Starting(g) if g == gen)
    }

    fn on_ready(&mut self, slot: usize, gen: u64, session: Session<Reply>) {
        if !self.starting(slot, gen) {
            return;
        }
        let mut worker = Worker::new(session);
        match self.phase {
            Phase::Terminating => worker.kill(),
            Phase::Draining => worker.shutdown(),
            Phase::Open | Phase::Closed => {}
        }
        self.slots[slot] = Slot::Up(gen, worker);
        if let Some((tx, left)) = self.startup.take() {
            if left <= 1 {
                let _ = tx.send(Ok(()));
            } else {
                self.startup = Some((tx, left - 1));
            }
        }
    }

    fn on_start_failed(&mut self, slot: usize, gen: u64, e: Error) {
        if !self.starting(slot, gen) {
            return;
        }
        self.slots[slot] = Slot::Empty;
        if let Some((tx, _)) = self.startup.take() {
            let _ = tx.send(Err(e));
            self.terminate();
        } else if matches!(self.phase, Phase::Open | Phase::Closed) {
            tracing::warn!(target: "multiprocessing::pool", "a replacement worker failed to start: {e}; trying again");
            // With no worker left to run them, queued tasks fail now rather than wait for a
            // start that may never succeed.
            if !self.slots.iter().any(|s| matches!(s, Slot::Up(..))) {
                let failure = TaskFailure::Remote(RemoteError::from(&e));
                self.stats.failed += self.pending.len() as u64;
                for task in self.pending.drain(..) {
                    task.fail(failure.clone());
                }
            }
            self.start_worker(slot, Duration::from_millis(200));
        }
    }

    fn on_started(&mut self, slot: usize, gen: u64, id: u64) {
        if let Some(f) = self.worker(slot, gen).and_then(|w| w.inflight.get_mut(&id)) {
            f.started = true;
        }
    }

    fn on_withdrawn(&mut self, slot: usize, gen: u64, id: u64, taken: bool) {
        let Slot::Up(g, worker) = &mut self.slots[slot] else {
            return;
        };
        if *g != gen {
            return;
        }
        if taken {
            // Never ran there: it goes to the front of the queue, for an idle worker.
            if let Some(f) = worker.release(id) {
                worker.session.forget(id);
                // It may come back to this worker, under the same id: it must be listed once.
                if f.task.opts.timeout.is_some() {
                    worker.timed.retain(|&t| t != id);
                }
                self.pending.push_front(f.task);
            }
            // A worker over its memory limit gave back what it had not started.
            if worker.life == Life::Retiring && worker.inflight.is_empty() {
                worker.shutdown();
            }
        } else if let Some(f) = worker.inflight.get_mut(&id) {
            f.withdrawing = false;
        }
    }

    /// Task `id` finished on the worker in `slot` (its result is already with its caller).
    fn on_returned(&mut self, slot: usize, gen: u64, id: u64) {
        let concurrency = self.cfg.concurrency.max(1) as usize;
        let max_tasks = self.cfg.max_tasks_per_child;
        let max_memory = self.cfg.max_worker_memory;
        let Slot::Up(g, worker) = &mut self.slots[slot] else {
            return;
        };
        if *g != gen {
            return;
        }
        let now = Instant::now();
        // The arguments were written long ago: the finished task is dropped here, and their
        // buffer goes back to the pool for the next chunk.
        if worker.release(id).is_some() {
            worker.done += 1;
            self.stats.completed += 1;
            self.stats.started += 1;
        }
        let busy = worker.inflight.len() >= concurrency;
        self.pace.returned(now, worker.last_return);
        worker.last_return = busy.then_some(now);
        if worker.life == Life::Serving && max_tasks.is_some_and(|max| worker.done >= max) {
            worker.life = Life::Retiring;
            worker.ending = Some(Ending::MaxTasks);
        }
        Driver::check_memory(max_memory, worker);
        if worker.life == Life::Retiring && worker.inflight.is_empty() {
            worker.shutdown();
        }
    }

    /// The worker in `slot` exited: what it held and had not started goes to another worker;
    /// what had started fails (or runs again, if retries are left); the slot gets a new worker
    /// unless the pool is finishing.
    fn on_exited(&mut self, slot: usize, gen: u64, exit: Exit) {
        let status = exit.status;
        let mut worker = match std::mem::replace(&mut self.slots[slot], Slot::Empty) {
            Slot::Up(g, worker) if g == gen => worker,
            other => {
                self.slots[slot] = other;
                return;
            }
        };
        worker.read_start_log();
        let pid = worker.pid();
        let warn = matches!(worker.life, Life::Serving | Life::Retiring)
            && self.phase != Phase::Terminating;
        worker.session.close();
        let mut lost: Vec<InFlight> = worker.inflight.into_values().collect();
        lost.sort_by_key(|f| std::cmp::Reverse(f.task.id));
        for f in lost {
            if f.started {
                retry_or_fail(&mut self.stats, &mut self.pending, f.task, true, || {
                    TaskFailure::WorkerLost {
                        pid,
                        exitcode: status.code(),
                        signal: status.signal(),
                        oom: exit.oom,
                    }
                });
            } else {
                // Certainly not started: it goes to another worker, unnoticed.
                self.pending.push_front(f.task);
            }
        }
        if warn {
            let oom = if exit.oom { ", by the OOM killer" } else { "" };
            tracing::warn!(target: "multiprocessing::pool", "pool worker {pid} died ({status}{oom}); replacing it");
        }
        let restart = match self.phase {
            Phase::Terminating => false,
            Phase::Draining => !self.pending.is_empty(),
            Phase::Open | Phase::Closed => true,
        };
        if restart {
            let replaced = &mut self.stats.workers_replaced;
            match worker.ending {
                Some(Ending::Timeout) => replaced.timed_out += 1,
                Some(Ending::MaxTasks) => replaced.max_tasks += 1,
                Some(Ending::Memory) => replaced.memory += 1,
                None => replaced.crashed += 1,
            }
            self.start_worker(slot, Duration::ZERO);
        }
    }
}
