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
//! the parent removes it when the child has exited, and the run directory goes at the end. Both
//! ends are here: [`StartLog`] writes the counter (in the child), [`StartLogReader`] reads it (in
//! the parent), so the file's format is known in this file alone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// This process's start log, once made.
#[derive(Debug)]
pub(crate) struct StartLog(&'static AtomicU64);

/// The file: the counter as a native-endian `u64` at offset 0, nothing else.
const LEN: usize = std::mem::size_of::<u64>();

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
        Ok(StartLog(&create_counters(path, 1)?[0]))
    }

    /// Records that the first `n` calls with a start report have started.
    pub(crate) fn record(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Release);
    }
}

/// Makes the file at `path` (0600; truncated: a file left by an earlier process with our pid
/// must not speak for us) as `count` counters and maps it shared, for the life of the process:
/// counters this process stores to and another reads from the file, even after this one is
/// SIGKILLed (the page cache keeps what was stored). Also the actor's start table
/// (`actor/started.rs`).
///
/// # Errors
/// `Io` when the file cannot be made, sized or mapped.
pub(crate) fn create_counters(path: &Path, count: usize) -> std::io::Result<&'static [AtomicU64]> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let len = count.max(1) * LEN;
    file.set_len(len as u64)?;
    // SAFETY: a fresh shared mapping of the file's first `len` bytes (the file is that long), at
    // an address the kernel picks; nothing else of ours is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the mapping is page-aligned (so aligned for a u64), `len` bytes (`count` counters)
    // long, readable and writable, and never unmapped: it lives as long as the process, so a
    // `'static` slice is sound. Every access to it is atomic; other processes only read the file.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / LEN) })
}

/// How a call's start reached (or is to reach) the parent.
#[must_use = "a start that needs a message is not reported until the `Started` message is sent"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartReported {
    /// Counted in the start log, or no report was asked for: nothing more to do.
    Done,
    /// This child has no start log: the caller must send a `Started` message before the call runs.
    NeedsMessage,
}

impl StartReported {
    /// True when the caller must send a `Started` message.
    pub(crate) fn needs_message(self) -> bool {
        self == StartReported::NeedsMessage
    }
}

/// Reports a call's start as `report` says: counts it in the start log, or tells the caller that
/// a `Started` message must report it instead. `None` (no report wanted) does nothing.
pub(crate) fn report_start(report: Option<StartReport>) -> StartReported {
    match report {
        Some(StartReport::Log(log, n)) => {
            log.record(n);
            StartReported::Done
        }
        Some(StartReport::Message) => StartReported::NeedsMessage,
        None => StartReported::Done,
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

/// The parent's view of one child's start log: how many of the calls sent to it with a start
/// report have started.
#[derive(Debug)]
pub(crate) struct StartLogReader {
    path: PathBuf,
    /// Opened on the first read that finds the file (the child makes it when its first such call
    /// arrives).
    file: Option<File>,
}

impl StartLogReader {
    /// The start log of the child `pid` in `run_dir`; nothing is opened yet.
    pub(crate) fn new(run_dir: &Path, pid: u32) -> Self {
        StartLogReader {
            path: crate::protocol::start_log_path(run_dir, pid),
            file: None,
        }
    }

    /// How many calls with a start report have started, as the child last counted. Reads a file
    /// of 8 bytes: call it only when the answer matters. No log (yet) reads as 0: no start was
    /// counted there (a child without one reports starts with `Started` messages).
    pub(crate) fn started(&mut self) -> u64 {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut count = [0u8; LEN];
        match &self.file {
            Some(file) if file.read_exact_at(&mut count, 0).is_ok() => u64::from_ne_bytes(count),
            _ => 0,
        }
    }

    /// Removes the file, once its child has exited.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the child writes is what the parent reads; no file reads as no start.
    #[test]
    fn the_reader_reads_what_the_writer_counts() {
        let dir = std::env::temp_dir();
        let pid = u32::MAX - std::process::id();
        let path = crate::protocol::start_log_path(&dir, pid);
        let mut reader = StartLogReader::new(&dir, pid);
        assert_eq!(reader.started(), 0);
        let log = StartLog::create(&path).unwrap();
        log.record(3);
        assert_eq!(reader.started(), 3);
        log.record(2);
        assert_eq!(reader.started(), 3, "the count never goes back");
        log.record(5);
        assert_eq!(reader.started(), 5);
        reader.remove();
        assert!(!path.exists());
    }
}
