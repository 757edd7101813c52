//! How many tasks each worker holds, from how fast the workers have been finishing them.

use std::time::{Duration, Instant};

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
#[derive(Debug)]
pub(super) struct Pace {
    base: usize,
    /// How many tasks each worker holds now.
    pub(super) depth: usize,
    /// Moving average of the interval between one worker's results, in nanoseconds; 0 before
    /// the first.
    interval: u64,
}

impl Pace {
    pub(super) fn new(base: usize) -> Self {
        Pace {
            base,
            depth: base,
            interval: 0,
        }
    }

    /// A worker's result came at `now`; `last` is when its previous one came, if it had its
    /// next task to start at once then.
    pub(super) fn returned(&mut self, now: Instant, last: Option<Instant>) {
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
