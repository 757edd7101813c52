//! Spares: children of the fork server made ahead of need.
//!
//! A spare is forked, connects to our hub and proves its token like any child, then waits for
//! [`Down::Assign`], which tells it its name, daemon flag, concurrency, log level and
//! environment. Starting a child with the fork server then costs one message to a process that
//! is already running and connected, instead of a fork request, a fork, a runtime, a connection
//! and a handshake one after another. The context keeps one spare ready and makes the next while
//! the last one taken runs its call (from when that one's assignment is on the wire). The price
//! is one idle process (about 2.5 MB, most of it shared with the server) for as long as the fork
//! server runs. It is not counted among `active_children` and dies with the server.

use super::forkserver::ForkServer;
use super::spawn::{ChildHandle, ChildProcess};
use crate::error::{Error, Result};
use crate::hub::{ChildConn, Hub};
use crate::protocol::{encode_head, ChildConfig, Down};
use crate::transport::Outgoing;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a fresh spare may take to connect before it is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected child of the fork server that waits to be told who it is.
#[derive(Debug)]
pub(crate) struct Spare {
    pid: u32,
    exit: oneshot::Receiver<ExitStatus>,
    conn: ChildConn,
}

/// Has `server` fork a spare from `cfg` (the configuration shared by this context's children)
/// and waits until it has connected to `hub`.
///
/// # Cancel safety
/// Not cancel-safe: a spare forked before the cancellation is left to find its token gone (it
/// then exits). The context runs this in a task of its own.
///
/// # Errors
/// `Io` when the server cannot fork, or the spare exits or stays silent before it connects.
pub(crate) async fn make(
    server: Arc<ForkServer>,
    hub: Arc<Hub>,
    mut cfg: ChildConfig,
) -> Result<Spare> {
    let token = crate::transport::auth::random_token()?;
    cfg.token = token;
    cfg.spare = true;
    cfg.name = "spare".into();
    cfg.os_parent = server.pid();
    let connection = hub.await_child(token);
    let (pid, mut exit) = match server.fork(cfg, Vec::new()).await {
        Ok(started) => started,
        Err(e) => {
            hub.forget(token);
            return Err(e);
        }
    };
    let gone = |why: &str| {
        Error::Io(std::io::Error::other(format!(
            "spare child {pid} of the fork server {why} before it connected"
        )))
    };
    let made = tokio::select! {
        conn = connection => conn.map_err(|_| gone("was dropped")),
        _ = &mut exit => Err(gone("exited")),
        () = tokio::time::sleep(CONNECT_TIMEOUT) => Err(gone("took too long")),
    };
    hub.forget(token);
    match made {
        Ok(conn) => Ok(Spare { pid, exit, conn }),
        Err(e) => {
            // A spare that did not make it must not linger; one the server has reaped is not
            // signalled (its pid may belong to another process by now).
            if matches!(exit.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                super::send_signal(pid, libc::SIGKILL);
            }
            Err(e)
        }
    }
}

impl Spare {
    /// Whether the spare is still there (it may have died while it waited).
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(
            self.exit.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    /// The spare as a started child, already connected, with the message that tells it who it
    /// is (`cfg`'s name, daemon flag, concurrency and log level, and `env` to set) waiting to
    /// go out ahead of its first call; `sent` is told once that message is flushed.
    ///
    /// # Errors
    /// `Encode` if that message cannot be encoded.
    pub(crate) fn into_child(
        self,
        cfg: &ChildConfig,
        env: Vec<(String, String)>,
        hub: Arc<Hub>,
        sent: oneshot::Sender<()>,
    ) -> Result<ChildProcess> {
        let head = encode_head(&Down::Assign {
            name: cfg.name.clone(),
            daemon: cfg.daemon,
            concurrency: cfg.concurrency,
            log_level: cfg.log_level,
            max_frame: cfg.max_frame,
            env,
        })?;
        let mut conn = self.conn;
        // Made before the spare was; the limit may have changed since.
        conn.reader
            .set_max_frame(crate::transport::frame_limit_u64(cfg.max_frame));
        let (tx, connection) = oneshot::channel();
        let _ = tx.send(conn);
        Ok(ChildProcess {
            pid: self.pid,
            child: ChildHandle::Forked {
                exit: Some(self.exit),
                status: None,
            },
            connection,
            token: cfg.token,
            hub,
            first: Some(Outgoing::new(head, Vec::new()).acked(sent)),
        })
    }
}
