//! The root's side of the fork server: start it on first use, ask it for children, learn
//! their exit status.

use super::spawn::Spawner;
use super::Relaunch;
use crate::error::{Error, Result};
use crate::protocol::{ChildConfig, ForkReply, ForkRequest};
use crate::transport::frame::{self, FrameReader};
use crate::transport::socket::{Flavor, SendHalf, Socket};
use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The largest reply the fork server sends.
const MAX_REPLY: usize = 1 << 20;

type Started = Result<(u32, oneshot::Receiver<ExitStatus>)>;

#[derive(Debug, Default)]
struct Waiters {
    /// Who waits for the answer to each request, in the order they were sent.
    replies: VecDeque<oneshot::Sender<Started>>,
    /// Who waits for each forked child's exit.
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    /// Set once the server is gone: every later request fails at once.
    gone: bool,
}

/// A running fork server.
#[derive(Debug)]
pub(crate) struct ForkServer {
    writer: Arc<tokio::sync::Mutex<SendHalf>>,
    waiters: Arc<Mutex<Waiters>>,
    pid: u32,
    _process: tokio::process::Child,
}

fn lock(w: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl ForkServer {
    /// Starts the server: this executable again, in server mode, with a socket as its stdin.
    ///
    /// # Errors
    /// `Io` when the process or the socket cannot be made.
    pub(crate) async fn start(
        spawner: &Spawner,
        relaunch: &Relaunch,
        mut cfg: ChildConfig,
    ) -> Result<Self> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        cfg.fork_server = true;
        let (pid, process) = spawner
            .spawn(relaunch, cfg.to_env()?, Vec::new(), Some(theirs.into()))
            .await?;
        let (reader, writer) = Socket::new(ours.into(), Flavor::Local)?.into_halves();
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let shared = Arc::clone(&waiters);
        tokio::spawn(async move {
            // Replies are small: a larger frame is not one of ours.
            let mut reader = FrameReader::new(reader, MAX_REPLY);
            reader.set_max_message(MAX_REPLY);
            while let Ok(Some(message)) = reader.read_message().await {
                let Ok(reply) = postcard::from_bytes::<ForkReply>(&message) else {
                    break;
                };
                let mut w = lock(&shared);
                match reply {
                    ForkReply::Started { pid } => {
                        let (tx, rx) = oneshot::channel();
                        w.exits.insert(pid, tx);
                        if let Some(waiter) = w.replies.pop_front() {
                            let _ = waiter.send(Ok((pid, rx)));
                        }
                    }
                    ForkReply::Failed { message } => {
                        if let Some(waiter) = w.replies.pop_front() {
                            let _ = waiter.send(Err(Error::Io(std::io::Error::other(format!(
                                "the fork server could not fork: {message}"
                            )))));
                        }
                    }
                    ForkReply::Exited { pid, status } => {
                        if let Some(tx) = w.exits.remove(&pid) {
                            let _ = tx.send(ExitStatus::from_raw(status));
                        }
                    }
                }
            }
            // The server is gone: fail whoever still waits (dropping the senders does that).
            let mut w = lock(&shared);
            w.gone = true;
            w.replies.clear();
            w.exits.clear();
        });
        Ok(ForkServer {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            waiters,
            pid,
            _process: process,
        })
    }

    /// The server's pid: the OS parent of every child it forks.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks for a child with `cfg`; returns its pid and a receiver of its exit status.
    ///
    /// # Errors
    /// `Io` when the server is gone or cannot fork.
    pub(crate) async fn fork(&self, config: ChildConfig, env: Vec<(String, String)>) -> Started {
        // Run to the end even if the caller stops waiting: a request half written, or a reply
        // nobody takes, would pair later replies with the wrong requests.
        let (writer, waiters) = (Arc::clone(&self.writer), Arc::clone(&self.waiters));
        tokio::spawn(Self::request(writer, waiters, config, env))
            .await
            .map_err(|e| {
                Error::Io(std::io::Error::other(format!(
                    "the fork request was lost: {e}"
                )))
            })?
    }

    /// Whether the server has gone away (then a new one must be started).
    pub(crate) fn is_gone(&self) -> bool {
        lock(&self.waiters).gone
    }

    async fn request(
        writer: Arc<tokio::sync::Mutex<SendHalf>>,
        waiters: Arc<Mutex<Waiters>>,
        config: ChildConfig,
        env: Vec<(String, String)>,
    ) -> Started {
        let frame = frame::encode_single(&ForkRequest { config, env }, "a fork request")?;
        let (tx, rx) = oneshot::channel();
        {
            // Hold the writer while queueing the waiter, so answers match requests in order.
            let mut writer = writer.lock().await;
            {
                let mut w = lock(&waiters);
                if w.gone {
                    return Err(Error::Io(std::io::Error::other("the fork server is gone")));
                }
                w.replies.push_back(tx);
            }
            writer.write_all(&frame).await?;
        }
        rx.await
            .map_err(|_| Error::Io(std::io::Error::other("the fork server is gone")))?
    }
}
