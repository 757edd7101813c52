//! Per-task timeouts: which tasks with a timeout may be running, when the next deadline falls,
//! and what happens when one passes.
//!
//! The driver hears nothing when a task starts (the child counts starts in its start log, which
//! costs a file read to look at). But a worker runs the tasks it holds in the order they were
//! sent, `concurrency` at a time, and the tasks it holds are the unfinished ones: so a task may
//! be running as soon as fewer than `concurrency` tasks sent before it are still held. From that
//! moment (`since`) its time counts: possibly a little early (the child may not have started it
//! yet), never late. When its deadline passes the start log is read: a task that has in fact not
//! started has its time counted from then; one that has is timed out, and its worker ended.
//!
//! One timer serves the whole pool (the driver's loop sleeps until the earliest deadline), and
//! it is only moved earlier, never later: a deadline that moved later (the task finished) costs
//! one spurious wake-up, not a timer update per task. Only workers holding tasks with a timeout
//! are looked at, so a pool whose calls set none pays one comparison per event.

use super::slots::{Ending, InFlight, Slot, Worker};
use super::{retry_or_fail, Driver};
use crate::pool::outcome::TaskFailure;
use std::time::Instant;

impl Driver {
    /// Notes which tasks with a timeout may have started, and returns the earliest deadline: of
    /// such a task, or of a SIGKILL that follows a SIGTERM.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        if self.timed == 0 && self.grace_pending == 0 {
            return None;
        }
        let now = Instant::now();
        let concurrency = self.cfg.concurrency.max(1) as usize;
        let mut next: Option<Instant> = None;
        let mut timed = 0;
        let mut grace_pending = 0;
        for slot in &mut self.slots {
            let Slot::Up(_, w) = slot else { continue };
            if let Some(at) = w.kill_at {
                grace_pending += 1;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if let Some(at) = track(w, concurrency, now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            timed += w.timed.len();
        }
        self.timed = timed;
        self.grace_pending = grace_pending;
        next
    }

    /// The timer fired: workers past their SIGTERM grace are killed; tasks past their deadline
    /// (and really started) fail with `Timeout`, or run again if they opted in, and their
    /// workers are ended and replaced.
    pub(super) fn on_deadline(&mut self, now: Instant) {
        let grace = self.cfg.kill_grace;
        for slot in &mut self.slots {
            let Slot::Up(_, w) = slot else { continue };
            if w.kill_at.is_some_and(|at| at <= now) {
                w.kill_at = None;
                w.kill();
            }
            let late: Vec<u64> = w
                .timed
                .iter()
                .filter(|id| w.inflight.get(id).is_some_and(|f| past(f, now)))
                .copied()
                .collect();
            if late.is_empty() {
                continue;
            }
            w.read_start_log();
            for id in late {
                let Some(f) = w.inflight.get_mut(&id) else {
                    continue;
                };
                if !f.started {
                    // Counted too early: it waits in the child still. Its time starts now.
                    f.since = Some(now);
                    continue;
                }
                // A result that is on its way wins: the reply is taken back only if it is
                // still here, so the caller hears of the task once.
                let Some(_) = w.session.take_reply(id) else {
                    continue;
                };
                let Some(f) = w.release(id) else {
                    continue;
                };
                let retry = f.task.opts.retry_timeouts;
                if !retry || f.task.opts.retries == 0 {
                    self.stats.timed_out += 1;
                }
                retry_or_fail(&mut self.stats, &mut self.pending, f.task, retry, || {
                    TaskFailure::Timeout
                });
                w.end(Ending::Timeout, grace, now);
            }
        }
    }
}

/// Whether a task's deadline has passed.
fn past(f: &InFlight, now: Instant) -> bool {
    match (f.since, f.task.opts.timeout) {
        (Some(since), Some(limit)) => since + limit <= now,
        _ => false,
    }
}

/// Marks the timed tasks of `w` that may be running now, returns the earliest of their
/// deadlines, and drops the ids of tasks it no longer holds from the front of its timed list.
fn track(w: &mut Worker, concurrency: usize, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    // How many held tasks sent before the one looked at are known: at least these are ahead.
    let mut ahead = 0;
    let mut gone_in_front = 0;
    for id in &w.timed {
        // Tasks start in order, `concurrency` at a time: past that many, none runs.
        if ahead >= concurrency {
            break;
        }
        if w.untimed > 0 && !may_run(w, *id, concurrency) {
            break;
        }
        let Some(f) = w.inflight.get_mut(id) else {
            if ahead == 0 {
                gone_in_front += 1;
            }
            continue;
        };
        let since = *f.since.get_or_insert(now);
        if let Some(limit) = f.task.opts.timeout {
            next = Some(next.map_or(since + limit, |n: Instant| n.min(since + limit)));
        }
        ahead += 1;
    }
    w.timed.drain(..gone_in_front);
    next
}

/// Whether task `id` may be running, counting the tasks without a timeout `w` holds (they are
/// not in its timed list): fewer than `concurrency` tasks sent before it are still held. A task
/// it no longer holds may (it is skipped).
fn may_run(w: &Worker, id: u64, concurrency: usize) -> bool {
    match w.inflight.get(&id) {
        Some(f) if f.since.is_none() => {
            let seq = f.seq;
            let before = w
                .inflight
                .values()
                .filter(|g| g.seq < seq)
                .take(concurrency);
            before.count() < concurrency
        }
        _ => true,
    }
}
