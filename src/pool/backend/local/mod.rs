//! The local backend: tasks run on child processes of this executable.
//!
//! One driver task owns all state (the queue, the workers, what each holds) and reacts to two
//! streams: commands from the front end (`pool/mod.rs`, through `backend::Command`) and events from the workers' tasks
//! (`events.rs`); after each it hands out queued work (`dispatch.rs`). Each worker's own task
//! (`worker.rs`) starts the child and reads its session, delivering results straight to their
//! callers. The driver's view of a worker is in `slots.rs`, its pacing in `pace.rs`.
//!
//! # Scheduling
//! Each worker holds up to `depth` tasks (pipelining: the next task is already in the child when
//! the current one ends), handed out to the least-loaded worker first. The depth follows the
//! workers' pace (see `Pace`): 4 (or twice the concurrency) for tasks of a millisecond or more,
//! up to 64 for tasks of a few microseconds, whose turnaround would otherwise be dominated by the
//! wait for the next task. The child runs `concurrency_per_worker` of them at once, in arrival
//! order, and counts each start in its start log (`bootstrap::start_log`, a shared file the
//! driver reads when it needs to) before running it, so when a worker dies the driver knows
//! exactly which tasks had started (they fail with `WorkerLost`, or are retried if the caller
//! opted in) and which had not (they go to another worker, unnoticed by the caller).
//!
//! # Timeouts and recycling
//! A task with a timeout that runs past it has its worker ended (SIGKILL, or SIGTERM and SIGKILL
//! after the pool's `kill_grace`): see `deadline.rs`. The worker's exit then goes as for a crash
//! (what it held and had not started goes elsewhere), and the slot gets a new worker. A worker
//! whose resident memory passed `max_worker_memory` after a task gives back what it has not
//! started and is told to exit once the rest is done (`memory.rs`).

mod deadline;
mod dispatch;
mod events;
mod memory;
mod pace;
mod slots;
mod worker;

pub(crate) use worker::WorkerSpec;

use super::{Backend, Command, Commands, Task};
use crate::error::{Error, Result};
use crate::pool::outcome::TaskFailure;
use crate::pool::stats::PoolStats;
use crate::start::Context;
use pace::Pace;
use slots::Slot;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use worker::WorkerEvent;

/// How the local backend runs its workers.
#[derive(Debug, Clone)]
pub(crate) struct LocalConfig {
    pub(crate) ctx: Arc<Context>,
    pub(crate) processes: usize,
    pub(crate) spec: WorkerSpec,
    pub(crate) max_tasks_per_child: Option<u32>,
    pub(crate) concurrency: u32,
    /// How long a worker ended for a timeout has between SIGTERM and SIGKILL; `None`: SIGKILL.
    pub(crate) kill_grace: Option<Duration>,
    /// Resident memory, in bytes, past which a worker is replaced after a task.
    pub(crate) max_worker_memory: Option<u64>,
}

/// Where the pool is in its life. It only moves down this list, but for `Draining`, which goes
/// back to `Closed` when work arrives after all (a call made before `close` submitting lazily).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Takes new calls.
    Open,
    /// Takes no new calls (`close`); calls made before go on.
    Closed,
    /// Closed, all work done, a joiner waits: the workers have been told to exit.
    Draining,
    /// Finished or terminated: the workers are killed or gone, nothing more runs.
    Terminating,
}

struct Driver {
    cfg: LocalConfig,
    phase: Phase,
    /// How many tasks each worker holds.
    pace: Pace,
    slots: Vec<Slot>,
    next_gen: u64,
    pending: VecDeque<Task>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    /// Who waits for the first start of every worker, and how many are still to come up.
    startup: Option<(oneshot::Sender<Result<()>>, usize)>,
    joiners: Vec<oneshot::Sender<()>>,
    terminators: Vec<oneshot::Sender<()>>,
    /// Lazily submitting calls made before `close` (see `Command::Open`).
    open: HashSet<u64>,
    /// About how many tasks with a timeout the workers hold (recounted at each deadline check).
    timed: usize,
    /// How many workers wait for their SIGKILL after a SIGTERM.
    grace_pending: usize,
    /// What the pool has done; the gauges (`queued`, `in_flight`, `running`) are filled in
    /// when asked.
    stats: PoolStats,
}

impl Backend for LocalConfig {
    /// Starts the workers and the task that drives them. The returned receiver answers once every
    /// worker is up (or the first one failed to start).
    fn start(self) -> (Commands, oneshot::Receiver<Result<()>>) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let processes = self.processes;
        let depth = (2 * self.concurrency.max(1) as usize).max(4);
        let mut driver = Driver {
            cfg: self,
            phase: Phase::Open,
            pace: Pace::new(depth),
            slots: (0..processes).map(|_| Slot::Empty).collect(),
            next_gen: 0,
            pending: VecDeque::new(),
            events: events_tx,
            startup: Some((ready_tx, processes)),
            joiners: Vec::new(),
            terminators: Vec::new(),
            open: HashSet::new(),
            timed: 0,
            grace_pending: 0,
            stats: PoolStats::default(),
        };
        for slot in 0..processes {
            driver.start_worker(slot, Duration::ZERO);
        }
        tokio::spawn(driver.run(commands, events));
        (commands_tx, ready)
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        let mut handles_left = true;
        // The earliest deadline of a running task with a timeout (see `deadline.rs`).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            tokio::select! {
                command = commands.recv(), if handles_left => match command {
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can ask for results any more.
                    None => {
                        handles_left = false;
                        self.terminate();
                    }
                },
                Some(event) = events.recv() => self.on_event(event),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_deadline(Instant::now());
                }
            }
            self.dispatch();
            self.rebalance();
            if let Some(at) = self.next_deadline() {
                // Moved only earlier: a later deadline is met by a spurious wake-up instead.
                if armed.is_none_or(|a| at < a) {
                    armed = Some(at);
                    timer.as_mut().reset(at.into());
                }
            }
            self.check_drained();
            if self.phase == Phase::Terminating && self.all_empty() {
                for t in self.terminators.drain(..) {
                    let _ = t.send(());
                }
                for j in self.joiners.drain(..) {
                    let _ = j.send(());
                }
                // Whatever was still on its way is answered, not dropped: a stream waiting for
                // chunks it had submitted learns the pool is gone.
                commands.close();
                while let Ok(command) = commands.try_recv() {
                    command.refuse();
                }
                return;
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open(group) => {
                self.open.insert(group);
            }
            Command::Done(group) => {
                self.open.remove(&group);
            }
            Command::Submit(tasks) => {
                // After `close`, calls made before it still run (as in Python); new ones do not.
                let before_close = tasks.first().is_some_and(|t| self.open.contains(&t.group));
                let refused = match self.phase {
                    Phase::Open => false,
                    Phase::Closed | Phase::Draining => !before_close,
                    Phase::Terminating => true,
                };
                if refused {
                    for task in tasks {
                        task.fail(TaskFailure::Terminated);
                    }
                } else {
                    self.stats.submitted += tasks.len() as u64;
                    self.pending.extend(tasks);
                }
            }
            Command::Timeout(group, limit) => self.set_timeout(group, limit),
            Command::Stats(tx) => {
                let _ = tx.send(self.snapshot());
            }
            Command::Cancel(group) => self.cancel(group),
            Command::Close => self.close(),
            Command::Join(tx) => {
                self.close();
                self.joiners.push(tx);
            }
            Command::Terminate(tx) => {
                self.terminators.extend(tx);
                self.terminate();
            }
            Command::Pids(tx) => {
                let pids = self
                    .slots
                    .iter()
                    .filter_map(|s| match s {
                        Slot::Up(_, w) => Some(w.pid()),
                        _ => None,
                    })
                    .collect();
                let _ = tx.send(pids);
            }
        }
    }

    fn close(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Closed;
        }
    }

    fn terminate(&mut self) {
        if self.phase != Phase::Terminating {
            self.phase = Phase::Terminating;
            self.stats.failed += self.pending.len() as u64;
            for task in self.pending.drain(..) {
                task.fail(TaskFailure::Terminated);
            }
        }
        for slot in &mut self.slots {
            if let Slot::Up(_, worker) = slot {
                self.stats.failed += worker.inflight.len() as u64;
                for (_, f) in worker.inflight.drain() {
                    f.task.fail(TaskFailure::Terminated);
                }
                worker.kill();
            }
        }
        if let Some((tx, _)) = self.startup.take() {
            let _ = tx.send(Err(Error::PoolClosed));
        }
    }

    /// After `join`: once all work is done, stop the workers; once they are gone, answer.
    fn check_drained(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Terminating) || self.joiners.is_empty() {
            return;
        }
        let busy = !self.pending.is_empty()
            || self
                .slots
                .iter()
                .any(|s| matches!(s, Slot::Up(_, w) if !w.inflight.is_empty()));
        if busy {
            // More work arrived (a call made before `close` submitting lazily): workers told to
            // stop are replaced as they exit.
            self.phase = Phase::Closed;
            return;
        }
        if self.phase == Phase::Closed {
            self.phase = Phase::Draining;
            for slot in &mut self.slots {
                if let Slot::Up(_, w) = slot {
                    w.shutdown();
                }
            }
        }
        if self.all_empty() {
            for j in self.joiners.drain(..) {
                let _ = j.send(());
            }
            // The pool is finished: nothing more will come.
            self.phase = Phase::Terminating;
        }
    }

    fn all_empty(&self) -> bool {
        self.slots.iter().all(|s| matches!(s, Slot::Empty))
    }

    fn start_worker(&mut self, slot: usize, delay: Duration) {
        self.next_gen += 1;
        self.stats.workers_started += 1;
        let gen = self.next_gen;
        self.slots[slot] = Slot::Starting(gen);
        let spec = self.cfg.spec.clone();
        let ctx = Arc::clone(&self.cfg.ctx);
        let events = self.events.clone();
        let concurrency = self.cfg.concurrency;
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            worker::run(ctx, spec, concurrency, slot, gen, events).await;
        });
    }
}

impl Driver {
    /// The stats, with the gauges filled in: the start logs are read to count what runs.
    fn snapshot(&mut self) -> PoolStats {
        let mut stats = self.stats.clone();
        stats.queued = self.pending.len();
        for slot in &mut self.slots {
            if let Slot::Up(_, w) = slot {
                w.read_start_log();
                stats.in_flight += w.inflight.len();
                stats.running += w.inflight.values().filter(|f| f.started).count();
            }
        }
        stats.started += stats.running as u64;
        stats
    }

    /// The tasks of `group` (one `AsyncResult`) get a timeout, wherever they are.
    fn set_timeout(&mut self, group: u64, limit: Duration) {
        for task in self.pending.iter_mut().filter(|t| t.group == group) {
            task.opts.timeout = Some(limit);
        }
        for slot in &mut self.slots {
            let Slot::Up(_, w) = slot else { continue };
            let ids: Vec<u64> = w
                .inflight
                .iter_mut()
                .filter(|(_, f)| f.task.group == group && f.task.opts.timeout.is_none())
                .map(|(id, f)| {
                    f.task.opts.timeout = Some(limit);
                    *id
                })
                .collect();
            for id in ids {
                w.add_timed(id);
                w.untimed -= 1;
                self.timed += 1;
            }
        }
    }
}

/// A task that started and then failed (its worker died, or it timed out): it runs again if
/// `retry` allows and it has retries left, else it fails with `failure`.
fn retry_or_fail(
    stats: &mut PoolStats,
    pending: &mut VecDeque<Task>,
    mut task: Task,
    retry: bool,
    failure: impl FnOnce() -> TaskFailure,
) {
    if retry && task.opts.retries > 0 {
        task.opts.retries -= 1;
        stats.retried += 1;
        pending.push_front(task);
    } else {
        stats.started += 1;
        stats.failed += 1;
        task.fail(failure());
    }
}
