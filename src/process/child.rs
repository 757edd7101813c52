//! A supervised child: started, tracked until it is reaped, its exit status read one way.
//!
//! A `Process` and a pool worker are supervised alike: the child is started and tracked at once
//! (so `active_children` and the end of the launch see it, even if whoever started it stops
//! waiting), waits until it connects, is talked to over its session, and is reaped when it ends;
//! the tracker learns the exit status at that moment.

use crate::error::Result;
use crate::hub::ChildConn;
use crate::start::{send_signal, ChildHandle, ChildOptions, ChildProcess, ChildRecord, Context};
use std::os::unix::process::ExitStatusExt;
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

/// A child past its connection (or its failure to connect): what is left is to reap it.
#[derive(Debug)]
pub(crate) struct Running {
    pid: u32,
    process: ChildHandle,
    exited: watch::Sender<Option<ExitStatus>>,
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
        let running = Running {
            pid,
            process,
            exited: self.exited,
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

    /// Waits for the child to exit, reaps it, and tells the tracker.
    ///
    /// # Cancel safety
    /// Cancel-safe until it returns (the child stays tracked as running); it consumes the child.
    pub(crate) async fn reap(mut self) -> ExitStatus {
        let status = match self.process.wait().await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(target: "multiprocessing::process", "could not reap child {}: {e}", self.pid);
                ExitStatus::from_raw(UNKNOWN_STATUS)
            }
        };
        let _ = self.exited.send(Some(status));
        status
    }
}

/// The exit code as Python reports it: the exit status, or `-N` if signal `N` ended the child.
pub(crate) fn exitcode(status: ExitStatus) -> Option<i32> {
    status.code().or(status.signal().map(|s| -s))
}
