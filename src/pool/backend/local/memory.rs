//! Memory-based recycling: after a task, a worker whose resident memory passed
//! `max_worker_memory` is replaced before it starts another.
//!
//! The measure is RSS (`VmRSS` in `/proc/<pid>/status`), not PSS. It is read after every task,
//! and RSS costs a small file read, while PSS (`smaps_rollup`) walks the page tables of every
//! mapping, which takes milliseconds in a large process. What the limit is for, a worker whose
//! native code leaks, shows in RSS just as well: leaked pages are private. RSS also counts the
//! pages a worker shares (libraries, copy-on-write pages of a fork server), so a limit is set
//! above what a fresh worker already has.
//!
//! While the limit is set a worker holds only the tasks it runs (see `dispatch`): a task held
//! ahead would start in the child the moment the last one ended, before the parent could look.

use super::slots::{Ending, Life, Worker};
use super::Driver;

impl Driver {
    /// After a task: a serving worker over the memory limit stops taking tasks, asks for the
    /// ones it has not started back (they go to other workers), and is told to exit once what
    /// it runs is done.
    pub(super) fn check_memory(limit: Option<u64>, worker: &mut Worker) {
        let Some(limit) = limit else { return };
        if worker.life != Life::Serving {
            return;
        }
        let Some(rss) = resident_bytes(worker.pid()) else {
            return;
        };
        if rss <= limit {
            return;
        }
        tracing::debug!(target: "multiprocessing::pool", "pool worker {} holds {rss} bytes, over max_worker_memory ({limit}); replacing it", worker.pid());
        worker.life = Life::Retiring;
        worker.ending = Some(Ending::Memory);
        worker.read_start_log();
        for (id, f) in &mut worker.inflight {
            if !f.started && !f.withdrawing && worker.session.withdraw(*id) {
                f.withdrawing = true;
            }
        }
    }
}

/// The resident memory of process `pid`, in bytes; `None` if it cannot be read (it is gone).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_some_resident_memory() {
        let rss = super::resident_bytes(std::process::id()).expect("VmRSS");
        assert!(rss > 1 << 20, "{rss}");
    }
}
