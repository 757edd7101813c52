//! A supervised child: started, tracked until it is reaped, its exit status read one way.
//!
//! A `Process` and a pool worker are supervised alike: the child is started and tracked at once
//! (so `active_children` and the end of the launch see it, even if whoever started it stops
//! waiting), waits until it connects, is talked to over its session, and is reaped when it ends;
//! the tracker learns the exit status at that moment.
//!
//! # Was it the OOM killer?
//! A process the kernel's OOM killer ends dies of SIGKILL, like one killed by hand, and its
//! `/proc/<pid>` is gone by the time it is reaped. What Linux keeps is a counter per memory
//! cgroup: `oom_kill` in `memory.events` (cgroup v2) or `memory.oom_control` (v1). So once a
//! child has connected (or failed to), its memory cgroup is looked up and that counter read;
//! when it has died of SIGKILL the counter is read again, and [`Exit::oom`] says whether it
//! grew. An OOM kill before the child connected is not told apart. This is exact when
//! the child is alone in its cgroup; when it shares the cgroup (pool workers share their
//! parent's), a SIGKILL from elsewhere that lands while the OOM killer ends another member of the
//! cgroup would be taken for an OOM kill too. A child in no memory cgroup we can read (no
//! cgroupfs mounted, another namespace) is never reported as OOM-killed.

use crate::error::Result;
use crate::hub::ChildConn;
use crate::start::{send_signal, ChildHandle, ChildOptions, ChildProcess, ChildRecord, Context};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::watch;

/// The status given to a child whose real one cannot be learned (the fork server that reaped it
/// is gone): exit code 255, an abnormal end.
const UNKNOWN_STATUS: i32 = 0xff00;

/// A child that has been started and is tracked, not yet connected.
#[derive(Debug)]
pub(crate) struct SupervisedChild {
    child: ChildProcess,
    exited: watch::Sender<Option<ExitStatus>>,
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    pub(crate) status: ExitStatus,
    /// The kernel's OOM killer ended it (see the module docs for when this is exact).
    pub(crate) oom: bool,
}

/// The `oom_kill` counter of a child's memory cgroup, read when it started.
#[derive(Debug, Default)]
struct OomProbe {
    /// The file holding the counter, and its value at the start.
    counter: Option<(PathBuf, u64)>,
}

impl OomProbe {
    /// Finds the memory cgroup of `pid` and reads its `oom_kill` counter.
    fn at_start(pid: u32) -> Self {
        let counter = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| oom_counter_file(&text))
            .and_then(|path| read_oom_kills(&path).map(|n| (path, n)));
        OomProbe { counter }
    }

    /// Whether a child that ended with `status` was ended by the OOM killer.
    fn ended_by_oom(&self, status: ExitStatus) -> bool {
        if status.signal() != Some(libc::SIGKILL) {
            return false;
        }
        self.counter
            .as_ref()
            .and_then(|(path, before)| read_oom_kills(path).map(|now| now > *before))
            .unwrap_or(false)
    }
}

/// The file with the `oom_kill` counter of the memory cgroup named in `/proc/<pid>/cgroup`'s
/// text: cgroup v1's `memory` hierarchy if there is one, else the v2 unified one.
fn oom_counter_file(cgroup: &str) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut unified = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(root.join("memory").join(path).join("memory.oom_control"));
        }
        if controllers.is_empty() {
            // Mounted at the root on a v2-only system, under `unified` on a hybrid one.
            let file = root.join(path).join("memory.events");
            let hybrid = root.join("unified").join(path).join("memory.events");
            unified = Some(if file.exists() { file } else { hybrid });
        }
    }
    unified.filter(|f| f.exists())
}

/// The `oom_kill` counter in a cgroup's `memory.events` or `memory.oom_control`.
fn read_oom_kills(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// A child past its connection (or its failure to connect): what is left is to reap it.
#[derive(Debug)]
pub(crate) struct Running {
    pid: u32,
    process: ChildHandle,
    exited: watch::Sender<Option<ExitStatus>>,
    oom: OomProbe,
}

impl SupervisedChild {
    /// Starts a child as `opts` says, and tracks it from this moment on.
    ///
    /// # Errors
    /// As `Context::start_child`: `NotLaunched`, `Io`.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a child the OS has started while the future is dropped is neither
    /// tracked nor supervised. Callers start it in a task of their own.
    pub(crate) async fn start(ctx: &Context, opts: ChildOptions) -> Result<Self> {
        let name = opts.name.clone();
        let daemon = opts.daemon;
        let child = ctx.start_child(opts).await?;
        let (exited_tx, exited) = watch::channel(None);
        ctx.track(ChildRecord {
            pid: child.pid,
            name,
            daemon,
            exited,
        });
        Ok(SupervisedChild {
            child,
            exited: exited_tx,
        })
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid
    }

    /// Waits until the child has connected (or exited, or `timeout` passed: then no connection).
    ///
    /// # Cancel safety
    /// As `ChildProcess::connected`: not cancel-safe, the child would be left unreaped.
    pub(crate) async fn connect(self, timeout: Option<Duration>) -> (Running, Option<ChildConn>) {
        let (pid, process, conn) = self.child.connected(timeout).await;
        // Read once the child is up and busy with its own start, off the path of `spawn`; it
        // has not been reaped, so its `/proc` entry is still there even if it already died.
        let oom = OomProbe::at_start(pid);
        let running = Running {
            pid,
            process,
            exited: self.exited,
            oom,
        };
        (running, conn)
    }
}

impl Running {
    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child (SIGKILL), if it still runs.
    pub(crate) fn kill(&self) {
        send_signal(self.pid, libc::SIGKILL);
    }

    /// Waits for the child to exit, reaps it, tells the tracker, and says whether the OOM killer
    /// ended it.
    ///
    /// # Cancel safety
    /// Cancel-safe until it returns (the child stays tracked as running); it consumes the child.
    pub(crate) async fn reap(mut self) -> Exit {
        let status = match self.process.wait().await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(target: "multiprocessing::process", "could not reap child {}: {e}", self.pid);
                ExitStatus::from_raw(UNKNOWN_STATUS)
            }
        };
        let _ = self.exited.send(Some(status));
        Exit {
            status,
            oom: self.oom.ended_by_oom(status),
        }
    }
}

/// The exit code as Python reports it: the exit status, or `-N` if signal `N` ended the child.
pub(crate) fn exitcode(status: ExitStatus) -> Option<i32> {
    status.code().or(status.signal().map(|s| -s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cgroup_is_found_in_either_hierarchy() {
        let v1 = "4:memory:/a/b\n0::/\n";
        assert_eq!(
            oom_counter_file(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/a/b/memory.oom_control"
            ))
        );
        assert_eq!(oom_counter_file("0::/surely/not/here\n"), None);
    }

    #[test]
    fn a_child_that_was_not_sigkilled_was_not_oom_killed() {
        let probe = OomProbe {
            counter: Some((PathBuf::from("/nonexistent"), 0)),
        };
        assert!(!probe.ended_by_oom(ExitStatus::from_raw(3 << 8)));
        assert!(!probe.ended_by_oom(ExitStatus::from_raw(libc::SIGKILL)));
    }
}
