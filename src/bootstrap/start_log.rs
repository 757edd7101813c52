//! The start log: how a child tells its parent which calls have started without waking it.
//!
//! A call sent with `report_start` (a pool task) must be known to have started before it runs,
//! so that if it then crashes the process the parent fails it (or retries it) instead of running
//! it again elsewhere. A `Started` message does that, but it wakes the parent once more per call,
//! which is most of the cost of a short call. Instead the child keeps a counter in a file of the
//! run directory, mapped shared: the number of `report_start` calls it has started, in arrival
//! order (calls start in the order they arrive, so the first *n* of them have started). The
//! counter is written before each such call runs; the parent reads it only when it needs to
//! know (the worker died, or a call is to be cancelled or taken back). A child that cannot make
//! the file falls back to `Started` messages.
//!
//! The file is `started-<pid>` in the run directory (see [`crate::protocol::start_log_path`]);
//! the parent removes it when the child has exited, and the run directory goes at the end.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// This process's start log, once made.
#[derive(Debug)]
pub(crate) struct StartLog(&'static AtomicU64);

static LOG: OnceLock<Option<StartLog>> = OnceLock::new();

/// This process's start log in `run_dir`, made on first use; `None` if it cannot be made (then
/// starts are reported with messages).
pub(crate) fn get(run_dir: &str) -> Option<&'static StartLog> {
    LOG.get_or_init(|| {
        let path = crate::protocol::start_log_path(Path::new(run_dir), std::process::id());
        match StartLog::create(&path) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::debug!(target: "multiprocessing::child", "no start log at {}: {e}; reporting starts with messages", path.display());
                None
            }
        }
    })
    .as_ref()
}

impl StartLog {
    fn create(path: &Path) -> std::io::Result<Self> {
        // Truncated: a file left by an earlier process with our pid must not speak for us.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(8)?;
        // SAFETY: a fresh shared mapping of the file's first 8 bytes (the file is that long), at
        // an address the kernel picks; nothing else of ours is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the mapping is page-aligned (so aligned for a u64), 8 bytes long, readable and
        // writable, and never unmapped: it lives as long as the process, so a `'static`
        // reference is sound. We only touch it atomically; the parent only reads the file.
        Ok(StartLog(unsafe { &*ptr.cast::<AtomicU64>() }))
    }

    /// Records that the first `n` calls with a start report have started.
    pub(crate) fn record(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Release);
    }
}

/// Reports a call's start as `report` says: counts it in the start log, or returns true when a
/// `Started` message must report it instead. `None` (no report wanted) does nothing.
pub(crate) fn count(report: Option<StartReport>) -> bool {
    match report {
        Some(StartReport::Log(log, n)) => {
            log.record(n);
            false
        }
        Some(StartReport::Message) => true,
        None => false,
    }
}

/// How a call that must report its start does so.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StartReport {
    /// Count it in the start log: it is the `n`-th such call (counting from 1).
    Log(&'static StartLog, u64),
    /// Send `Started` and wait until it is flushed.
    Message,
}
