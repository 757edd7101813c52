//! The seam between the pool's front end and where tasks run.
//!
//! The front end (`Pool`, `AsyncResult`, `Map`, `Imap`) knows only this: it submits encoded
//! [`Task`]s, each carrying its id and where its [`Completion`] goes, cancels groups of tasks, and
//! receives completions (results, or failures such as a lost worker). The local implementation
//! below runs tasks on child processes of this executable; a broker backend (Redis streams, NATS)
//! can later implement the same [`Command`] protocol without touching the front end.
//!
//! # Scheduling (local workers)
//! Each worker holds up to `depth` tasks (pipelining: the next task is already in the child when
//! the current one ends), handed out to the least-loaded worker first. The depth follows the
//! workers' pace (see [`Pace`]): 4 (or twice the concurrency) for tasks of a millisecond or more,
//! up to [`MAX_DEPTH`] for tasks of a few microseconds, whose turnaround would otherwise be
//! dominated by the wait for the next task. The child runs
//! `concurrency_per_worker` of them at once, in arrival order, and counts each start in its start
//! log (`bootstrap::start_log`, a shared file the driver reads when it needs to) before running
//! it, so when a worker dies the driver knows exactly which tasks had started (they fail
//! with `WorkerLost`, or are retried if the caller opted in) and which had not (they go to
//! another worker, unnoticed by the caller).

use super::reply::ReplyTx;
use super::worker::{self, WorkerEvent, WorkerHandle, WorkerSpec};
use crate::error::{Error, RemoteError};
use crate::hub::emit_child_log;
use crate::protocol::{decode_head, encode_head, Down, Up};
use crate::start::{send_signal, Context};
use crate::transport::Outgoing;
use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One unit of work: a batch of encoded arguments for one entry.
#[derive(Debug)]
pub(crate) struct Task {
    /// Unique within the pool; never 0 (0 is the initializer's call).
    pub(crate) id: u64,
    /// Tasks of one call share a group; cancelling the call cancels the group.
    pub(crate) group: u64,
    pub(crate) entry: &'static str,
    /// An `encode_batch` of the arguments.
    pub(crate) body: Arc<Vec<u8>>,
    /// Position of this batch within its call.
    pub(crate) index: usize,
    /// How many more times the task may run again after its worker died mid-task.
    pub(crate) retries: u32,
    pub(crate) reply: ReplyTx,
}

/// What became of a task.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) index: usize,
    /// The message holding the encoded batch results and where they start in it.
    pub(crate) outcome: Result<(Vec<u8>, usize), TaskFailure>,
}

/// Why a whole task produced no results.
#[derive(Debug, Clone)]
pub(crate) enum TaskFailure {
    /// The child refused the whole batch (unknown entry, undecodable batch).
    Remote(RemoteError),
    /// The worker died after the task had started.
    WorkerLost { pid: u32, signal: Option<i32> },
    /// The pool was terminated before the task finished.
    Terminated,
}

impl From<TaskFailure> for Error {
    fn from(f: TaskFailure) -> Self {
        match f {
            TaskFailure::Remote(r) => r.into(),
            TaskFailure::WorkerLost { pid, signal } => Error::WorkerLost { pid, signal },
            TaskFailure::Terminated => Error::PoolClosed,
        }
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
}

/// How the local backend runs its workers.
#[derive(Debug, Clone)]
pub(crate) struct LocalConfig {
    pub(crate) processes: usize,
    pub(crate) spec: WorkerSpec,
    pub(crate) max_tasks_per_child: Option<u32>,
    pub(crate) concurrency: u32,
}

struct InFlight {
    task: Task,
    /// Its place among the calls sent to this worker (from 1), as the worker's start log counts.
    seq: u64,
    started: bool,
    /// A `Withdraw` for it is on its way.
    withdrawing: bool,
}

/// Most tasks a worker holds at once, however short they are.
const MAX_DEPTH: usize = 64;
/// How much of a worker's work (by the pace) is held in the child ahead of what it runs: enough
/// to cover the round trip that brings the next task (a few cross-CPU wake-ups, each up to
/// ~70 µs on a small VM), short enough that little waits behind one worker.
const AHEAD: Duration = Duration::from_millis(1);

/// How many tasks each worker holds, from how fast the workers have been finishing them.
///
/// Four tasks ahead hide the parent's round trip only if each takes longer than about a quarter
/// of it; tiny tasks would leave a worker idle most of the time, waiting for the next. So the
/// driver keeps an average of the interval between a worker's results, counting only intervals
/// in which that worker had its next task already (run time, not time starved), and has each
/// worker hold enough tasks to cover [`AHEAD`] of work, between the base depth and
/// [`MAX_DEPTH`]. One pace serves all workers: a starved worker yields no samples, so a pace of
/// its own would keep it at the base depth, and starved. Long tasks keep the base depth, so few
/// tasks wait behind a slow one; and what waits is still taken back for an idle worker
/// (`rebalance`).
struct Pace {
    base: usize,
    depth: usize,
    /// Moving average of the interval between one worker's results, in nanoseconds; 0 before
    /// the first.
    interval: u64,
}

impl Pace {
    fn new(base: usize) -> Self {
        Pace {
            base,
            depth: base,
            interval: 0,
        }
    }

    /// A worker's result came at `now`; `last` is when its previous one came, if it had its
    /// next task to start at once then.
    fn returned(&mut self, now: Instant, last: Option<Instant>) {
        let Some(last) = last else { return };
        let sample = u64::try_from(now.duration_since(last).as_nanos()).unwrap_or(u64::MAX);
        self.interval = if self.interval == 0 {
            sample
        } else {
            self.interval - self.interval / 8 + sample / 8
        };
        let ahead = AHEAD.as_nanos() as u64 / self.interval.max(1);
        self.depth = usize::try_from(ahead)
            .unwrap_or(MAX_DEPTH)
            .clamp(self.base, MAX_DEPTH.max(self.base));
    }
}

struct Worker {
    handle: WorkerHandle,
    inflight: HashMap<u64, InFlight>,
    /// When its last result came, if it then had its next task to start at once (see [`Pace`]).
    last_return: Option<Instant>,
    done: u32,
    retiring: bool,
    shutdown_sent: bool,
    killed: bool,
    /// How many tasks it has been sent.
    sent: u64,
    /// Its start log (see `bootstrap::start_log`), and the file once it could be opened.
    start_log: std::path::PathBuf,
    start_file: Option<std::fs::File>,
}

impl Worker {
    /// Marks the tasks its start log says have started. Reads a file of 8 bytes: called only
    /// when the answer matters (the worker died, or a task is to be cancelled or taken back).
    fn read_start_log(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.start_file.is_none() {
            self.start_file = std::fs::File::open(&self.start_log).ok();
        }
        let mut count = [0u8; 8];
        // No log (yet) means no start was counted there; `Started` messages still count.
        let started = match &self.start_file {
            Some(file) if file.read_exact_at(&mut count, 0).is_ok() => u64::from_ne_bytes(count),
            _ => 0,
        };
        for f in self.inflight.values_mut() {
            if f.seq <= started {
                f.started = true;
            }
        }
    }
}

enum Slot {
    Starting(u64),
    Up(u64, Worker),
    Empty,
}

struct Driver {
    cfg: LocalConfig,
    ctx: Arc<Context>,
    /// How many tasks each worker holds.
    pace: Pace,
    slots: Vec<Slot>,
    next_gen: u64,
    pending: VecDeque<Task>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    startup: Option<(oneshot::Sender<crate::error::Result<()>>, usize)>,
    closed: bool,
    draining: bool,
    terminating: bool,
    joiners: Vec<oneshot::Sender<()>>,
    terminators: Vec<oneshot::Sender<()>>,
    open: std::collections::HashSet<u64>,
}

/// Starts the workers and the task that drives them. The returned receiver answers once every
/// worker is up (or the first one failed to start).
pub(crate) fn start(
    ctx: Arc<Context>,
    cfg: LocalConfig,
) -> (
    mpsc::UnboundedSender<Command>,
    oneshot::Receiver<crate::error::Result<()>>,
) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let processes = cfg.processes;
    let depth = (2 * cfg.concurrency.max(1) as usize).max(4);
    let mut driver = Driver {
        cfg,
        ctx,
        pace: Pace::new(depth),
        slots: (0..processes).map(|_| Slot::Empty).collect(),
        next_gen: 0,
        pending: VecDeque::new(),
        events: events_tx,
        startup: Some((ready_tx, processes)),
        closed: false,
        draining: false,
        terminating: false,
        joiners: Vec::new(),
        terminators: Vec::new(),
        open: std::collections::HashSet::new(),
    };
    for slot in 0..processes {
        driver.start_worker(slot, Duration::ZERO);
    }
    tokio::spawn(driver.run(commands, events));
    (commands_tx, ready)
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        let mut handles_left = true;
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
            }
            self.dispatch();
            self.rebalance();
            self.check_drained();
            if self.terminating && self.all_empty() {
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
                    match command {
                        Command::Submit(tasks) => tasks
                            .into_iter()
                            .for_each(|t| fail(t, TaskFailure::Terminated)),
                        Command::Join(tx) | Command::Terminate(Some(tx)) => {
                            let _ = tx.send(());
                        }
                        Command::Pids(tx) => {
                            let _ = tx.send(Vec::new());
                        }
                        Command::Cancel(_)
                        | Command::Close
                        | Command::Terminate(None)
                        | Command::Open(_)
                        | Command::Done(_) => {}
                    }
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
                if self.terminating || (self.closed && !before_close) {
                    for task in tasks {
                        fail(task, TaskFailure::Terminated);
                    }
                } else {
                    self.pending.extend(tasks);
                }
            }
            Command::Cancel(group) => self.cancel(group),
            Command::Close => self.closed = true,
            Command::Join(tx) => {
                self.closed = true;
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
                        Slot::Up(_, w) => Some(w.handle.pid),
                        _ => None,
                    })
                    .collect();
                let _ = tx.send(pids);
            }
        }
    }

    fn cancel(&mut self, group: u64) {
        self.pending.retain(|t| t.group != group);
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
                    worker.inflight.remove(&id);
                    lock_replies(&worker.handle).remove(&id);
                    if let Ok(head) = encode_head(&Down::Cancel { id }) {
                        let _ = worker.handle.outbox.send(Outgoing::new(head, Vec::new()));
                    }
                }
            }
        }
    }

    fn terminate(&mut self) {
        if !self.terminating {
            self.terminating = true;
            self.closed = true;
            for task in self.pending.drain(..) {
                fail(task, TaskFailure::Terminated);
            }
        }
        for slot in &mut self.slots {
            if let Slot::Up(_, worker) = slot {
                for (_, f) in worker.inflight.drain() {
                    fail(f.task, TaskFailure::Terminated);
                }
                if !worker.killed {
                    worker.killed = true;
                    send_signal(worker.handle.pid, libc::SIGKILL);
                }
            }
        }
        if let Some((tx, _)) = self.startup.take() {
            let _ = tx.send(Err(Error::PoolClosed));
        }
    }

    fn all_empty(&self) -> bool {
        self.slots.iter().all(|s| matches!(s, Slot::Empty))
    }

    fn start_worker(&mut self, slot: usize, delay: Duration) {
        self.next_gen += 1;
        let gen = self.next_gen;
        self.slots[slot] = Slot::Starting(gen);
        let spec = self.cfg.spec.clone();
        let ctx = Arc::clone(&self.ctx);
        let events = self.events.clone();
        let concurrency = self.cfg.concurrency;
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            worker::run(ctx, spec, concurrency, slot, gen, events).await;
        });
    }

    fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Ready { slot, gen, result } => {
                if !matches!(self.slots[slot], Slot::Starting(g) if g == gen) {
                    return;
                }
                match result {
                    Ok(handle) => {
                        if self.terminating {
                            send_signal(handle.pid, libc::SIGKILL);
                        }
                        let start_log =
                            crate::protocol::start_log_path(self.ctx.run_dir(), handle.pid);
                        let mut worker = Worker {
                            handle,
                            inflight: HashMap::new(),
                            last_return: None,
                            done: 0,
                            retiring: false,
                            shutdown_sent: false,
                            killed: self.terminating,
                            sent: 0,
                            start_log,
                            start_file: None,
                        };
                        if self.draining {
                            shutdown(&mut worker);
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
                    Err(e) => {
                        self.slots[slot] = Slot::Empty;
                        if let Some((tx, _)) = self.startup.take() {
                            let _ = tx.send(Err(e));
                            self.terminate();
                        } else if !self.terminating && !self.draining {
                            tracing::warn!(target: "multiprocessing::pool", "a replacement worker failed to start: {e}; trying again");
                            // With no worker left to run them, queued tasks fail now rather
                            // than wait for a start that may never succeed.
                            if !self.slots.iter().any(|s| matches!(s, Slot::Up(..))) {
                                let failure = TaskFailure::Remote(RemoteError::from(&e));
                                for task in self.pending.drain(..) {
                                    fail(task, failure.clone());
                                }
                            }
                            self.start_worker(slot, Duration::from_millis(200));
                        }
                    }
                }
            }
            WorkerEvent::Message { slot, gen, message } => {
                let Slot::Up(g, worker) = &mut self.slots[slot] else {
                    return;
                };
                if *g != gen {
                    return;
                }
                match decode_head::<Up>(&message) {
                    Ok((Up::Started { id }, _)) => {
                        if let Some(f) = worker.inflight.get_mut(&id) {
                            f.started = true;
                        }
                    }
                    Ok((Up::Withdrawn { id, taken }, _)) => {
                        if taken {
                            // Never ran there: it goes to the front of the queue, for an idle worker.
                            if let Some(f) = worker.inflight.remove(&id) {
                                lock_replies(&worker.handle).remove(&id);
                                self.pending.push_front(f.task);
                            }
                        } else if let Some(f) = worker.inflight.get_mut(&id) {
                            f.withdrawing = false;
                        }
                    }
                    // Results are taken off by the worker's reader (`WorkerEvent::Returned`).
                    Ok((Up::Return { id, .. }, _)) => self.on_returned(slot, gen, id),
                    Ok((Up::Log(record), _)) => {
                        emit_child_log(worker.handle.pid, &worker.handle.name, &record)
                    }
                    Ok((Up::Hello { .. } | Up::Attach { .. }, _)) => {}
                    Err(e) => {
                        tracing::warn!(target: "multiprocessing::pool", "worker {} broke the protocol ({e}); killing it", worker.handle.pid);
                        send_signal(worker.handle.pid, libc::SIGKILL);
                    }
                }
            }
            WorkerEvent::Returned { slot, gen, id } => self.on_returned(slot, gen, id),
            WorkerEvent::Started { slot, gen, id } => {
                if let Slot::Up(g, worker) = &mut self.slots[slot] {
                    if *g == gen {
                        if let Some(f) = worker.inflight.get_mut(&id) {
                            f.started = true;
                        }
                    }
                }
            }
            WorkerEvent::Exited { slot, gen, status } => {
                let slot_state = std::mem::replace(&mut self.slots[slot], Slot::Empty);
                let worker = match slot_state {
                    Slot::Up(g, worker) if g == gen => worker,
                    other => {
                        self.slots[slot] = other;
                        return;
                    }
                };
                let mut worker = worker;
                worker.read_start_log();
                let _ = std::fs::remove_file(&worker.start_log);
                let pid = worker.handle.pid;
                let mut lost: Vec<InFlight> = worker.inflight.into_values().collect();
                lost.sort_by_key(|f| std::cmp::Reverse(f.task.id));
                for f in lost {
                    let mut task = f.task;
                    if !f.started {
                        // Certainly not started: it goes to another worker, unnoticed.
                        self.pending.push_front(task);
                    } else if task.retries > 0 {
                        task.retries -= 1;
                        self.pending.push_front(task);
                    } else {
                        fail(
                            task,
                            TaskFailure::WorkerLost {
                                pid,
                                signal: status.signal(),
                            },
                        );
                    }
                }
                if !worker.shutdown_sent && !self.terminating {
                    tracing::warn!(target: "multiprocessing::pool", "pool worker {pid} died ({status}); replacing it");
                }
                let finished = self.draining && self.pending.is_empty();
                if !self.terminating && !finished {
                    self.start_worker(slot, Duration::ZERO);
                }
            }
        }
    }

    /// Task `id` finished on the worker in `slot` (its result is already with its caller).
    fn on_returned(&mut self, slot: usize, gen: u64, id: u64) {
        let Slot::Up(g, worker) = &mut self.slots[slot] else {
            return;
        };
        if *g != gen {
            return;
        }
        let now = Instant::now();
        if let Some(finished) = worker.inflight.remove(&id) {
            worker.done += 1;
            // The arguments were written long ago: their buffer serves the next chunk.
            crate::transport::buffers::give_shared(finished.task.body);
        }
        let busy = worker.inflight.len() >= self.cfg.concurrency.max(1) as usize;
        self.pace.returned(now, worker.last_return);
        worker.last_return = busy.then_some(now);
        if let Some(max) = self.cfg.max_tasks_per_child {
            if worker.done >= max {
                worker.retiring = true;
            }
        }
        if worker.retiring && worker.inflight.is_empty() {
            shutdown(worker);
        }
    }

    /// Hands queued tasks to the least-loaded workers with room.
    fn dispatch(&mut self) {
        if self.terminating {
            return;
        }
        // A worker that may run only `max` tasks in its life is never handed more.
        let lifetime = self
            .cfg
            .max_tasks_per_child
            .map_or(usize::MAX, |m| m as usize);
        while !self.pending.is_empty() {
            let mut best: Option<(usize, usize)> = None;
            for (i, slot) in self.slots.iter().enumerate() {
                if let Slot::Up(_, w) = slot {
                    let load = w.inflight.len();
                    let room = load < self.pace.depth && load + (w.done as usize) < lifetime;
                    if !w.retiring && !w.shutdown_sent && room && best.is_none_or(|(_, n)| load < n)
                    {
                        best = Some((i, load));
                    }
                }
            }
            let Some((i, _)) = best else { return };
            let Some(task) = self.next_task() else { return };
            let Slot::Up(_, worker) = &mut self.slots[i] else {
                return;
            };
            let head = encode_head(&Down::Call {
                id: task.id,
                entry: task.entry.into(),
                then_exit: false,
                batch: true,
                report_start: true,
            });
            match head {
                Ok(head) => {
                    // Registered before the task leaves, so its result always finds its caller.
                    lock_replies(&worker.handle).insert(task.id, (task.reply.clone(), task.index));
                    let _ = worker
                        .handle
                        .outbox
                        .send(Outgoing::new(head, Arc::clone(&task.body)));
                    worker.sent += 1;
                    worker.inflight.insert(
                        task.id,
                        InFlight {
                            task,
                            seq: worker.sent,
                            started: false,
                            withdrawing: false,
                        },
                    );
                }
                Err(e) => fail(task, TaskFailure::Remote(RemoteError::from(&e))),
            }
        }
    }

    /// No head-of-line blocking: when the queue is empty and a worker sits idle while another holds
    /// tasks that wait behind a running one, ask for one of those back (it then goes to the idle
    /// worker). The child gives it back only if it has not started, so nothing runs twice.
    fn rebalance(&mut self) {
        if self.terminating || !self.pending.is_empty() {
            return;
        }
        let idle = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Up(_, w) if w.inflight.is_empty() && !w.retiring && !w.shutdown_sent))
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
                if let Ok(head) = encode_head(&Down::Withdraw { id }) {
                    if w.handle
                        .outbox
                        .send(Outgoing::new(head, Vec::new()))
                        .is_ok()
                    {
                        if let Some(f) = w.inflight.get_mut(&id) {
                            f.withdrawing = true;
                        }
                        asked += 1;
                    }
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
        }
        None
    }

    /// After `join`: once all work is done, stop the workers; once they are gone, answer.
    fn check_drained(&mut self) {
        if !self.closed || self.joiners.is_empty() || self.terminating {
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
            self.draining = false;
            return;
        }
        if !self.draining {
            self.draining = true;
            for slot in &mut self.slots {
                if let Slot::Up(_, w) = slot {
                    shutdown(w);
                }
            }
        }
        if self.all_empty() {
            for j in self.joiners.drain(..) {
                let _ = j.send(());
            }
            // The pool is finished: nothing more will come.
            self.terminating = true;
        }
    }
}

fn lock_replies(
    handle: &WorkerHandle,
) -> std::sync::MutexGuard<'_, HashMap<u64, (ReplyTx, usize)>> {
    handle.replies.lock().unwrap_or_else(|p| p.into_inner())
}

fn shutdown(worker: &mut Worker) {
    if !worker.shutdown_sent {
        worker.shutdown_sent = true;
        if let Ok(head) = encode_head(&Down::Shutdown) {
            let _ = worker.handle.outbox.send(Outgoing::new(head, Vec::new()));
        }
    }
}

fn fail(task: Task, failure: TaskFailure) {
    let _ = task.reply.send(Completion {
        index: task.index,
        outcome: Err(failure),
    });
}
