//! Re-executing `current_exe` as a child, from one long-lived thread.
//!
//! Linux's parent-death signal fires when the *thread* that started a child exits, so children
//! are started from a thread that lives as long as the launch context, never from a pool thread
//! that may retire.

use super::Relaunch;
use crate::error::{Error, Result};
use crate::hub::{ChildConn, Hub};
use crate::protocol::CHILD_ENV;
use crate::transport::Outgoing;
use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A child that has been started; its connection arrives on `connection`.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    pub(crate) pid: u32,
    pub(crate) child: ChildHandle,
    pub(crate) connection: oneshot::Receiver<ChildConn>,
    pub(crate) token: u64,
    pub(crate) hub: Arc<Hub>,
    /// Sent on the connection before anything else (a spare's `Assign`): by whoever sends the
    /// first call, so that both leave in one write.
    pub(crate) first: Option<Outgoing>,
}

impl ChildProcess {
    /// Waits until the child has connected and said hello; `None` if it exited first or
    /// `timeout` passed. Its token is forgotten either way.
    ///
    /// # Cancel safety
    /// Not cancel-safe: the process handle is consumed.
    pub(crate) async fn connected(
        self,
        timeout: Option<std::time::Duration>,
    ) -> (u32, ChildHandle, Option<ChildConn>) {
        let ChildProcess {
            pid,
            mut child,
            connection,
            token,
            hub,
            first,
        } = self;
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let conn = tokio::select! {
            conn = connection => conn.ok(),
            _ = child.wait() => None,
            () = deadline => None,
        };
        hub.forget(token);
        if let (Some(conn), Some(first)) = (&conn, first) {
            // A closed outbox shows up as the end of the connection, where it is handled.
            let _ = conn.outbox.send(first);
        }
        (pid, child, conn)
    }
}

/// How the parent learns that a child exited.
#[derive(Debug)]
pub(crate) enum ChildHandle {
    /// Our own child: tokio reaps it.
    Spawned(tokio::process::Child),
    /// A child of the fork server, which reports its exit.
    Forked {
        exit: Option<oneshot::Receiver<std::process::ExitStatus>>,
        status: Option<std::process::ExitStatus>,
    },
}

impl ChildHandle {
    /// Waits for the child to exit.
    ///
    /// # Cancel safety
    /// Cancel-safe; once it has returned, it returns the same status again.
    ///
    /// # Errors
    /// `Io` when the status cannot be learned (the fork server died).
    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            ChildHandle::Spawned(child) => child.wait().await,
            ChildHandle::Forked { exit, status } => {
                if let Some(s) = status {
                    return Ok(*s);
                }
                let Some(rx) = exit.as_mut() else {
                    return Err(std::io::Error::other("the fork server is gone"));
                };
                match rx.await {
                    Ok(s) => {
                        *status = Some(s);
                        *exit = None;
                        Ok(s)
                    }
                    Err(_) => {
                        *exit = None;
                        Err(std::io::Error::other("the fork server is gone"))
                    }
                }
            }
        }
    }
}

struct Request {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// The thread that starts children, created on first use.
#[derive(Debug, Default)]
pub(crate) struct Spawner {
    requests: Mutex<Option<mpsc::Sender<Request>>>,
}

impl Spawner {
    pub(crate) fn new() -> Self {
        Spawner::default()
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>> {
        let mut slot = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = slot.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("multiprocessing-spawner".into())
            .spawn(move || {
                for request in rx {
                    let _runtime = request.runtime.enter();
                    let child = tokio::process::Command::from(request.command).spawn();
                    let _ = request.reply.send(child);
                }
            })?;
        *slot = Some(tx.clone());
        Ok(tx)
    }

    /// Starts this executable again with `marker` in [`CHILD_ENV`].
    ///
    /// # Errors
    /// `Io` when the executable cannot be found or started.
    pub(crate) async fn spawn(
        &self,
        relaunch: &Relaunch,
        marker: String,
        env: Vec<(OsString, OsString)>,
        stdin: Option<std::os::fd::OwnedFd>,
    ) -> Result<(u32, tokio::process::Child)> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        if let Relaunch::Test(test) = relaunch {
            command.args([
                "--exact",
                test.as_str(),
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ]);
        }
        command
            .envs(env)
            .env(CHILD_ENV, marker)
            .stdin(stdin.map_or_else(Stdio::null, Stdio::from));
        let (reply, answer) = oneshot::channel();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NotLaunched("starting a child needs a tokio runtime".into()))?;
        self.sender()?
            .send(Request {
                command,
                runtime,
                reply,
            })
            .map_err(|_| Error::Protocol("the spawner thread is gone".into()))?;
        let child = answer
            .await
            .map_err(|_| Error::Protocol("the spawner thread is gone".into()))??;
        let pid = child
            .id()
            .ok_or_else(|| Error::Protocol("the child exited before its pid was read".into()))?;
        Ok((pid, child))
    }
}

/// Sends `sig` to `pid`; errors (the process is already gone) are ignored.
pub(crate) fn send_signal(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}
