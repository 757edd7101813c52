//! Layer 4: the process's listener for its children. See `README.md` beside this file.
//!
//! Every process that starts children binds one socket in the run's private directory. A child
//! connects, proves it holds the run's key, and says `Hello` with the token it was started with;
//! the hub hands the connection to whoever is waiting for that token (the `Process` that spawned
//! it). A connection that fails authentication, says something malformed, or names no expected
//! token is dropped; the hub goes on serving everyone else.
//!
//! In the root, the hub is also the run's object host: a connection that says `Attach` instead
//! of `Hello` carries requests on the hosted objects (queues now; locks and managers later),
//! served from the root's [`Store`] (see `objects/`, `serve.rs`, and `client.rs` for the other
//! end). User-facing objects wrap a [`Handle`] and reach the host through [`current_host`],
//! which the launch context (`start::Context`) installs with its [`HubContext`].

mod client;
mod context;
mod handle;
mod lock_word;
mod objects;
mod remote;
mod serve;

pub(crate) use client::HostClient;
pub(crate) use context::{current_host, max_frame, set_current, set_max_frame, HubContext};
pub(crate) use handle::Handle;
pub(crate) use lock_word::{mark_waiting, park, take, Held, LockWord, Place, SyncWord};
pub(crate) use objects::word as sync_word;
pub(crate) use objects::Store;
pub(crate) use remote::{connect as connect_remote, ServedHost};

use crate::error::{Error, Result};
use crate::protocol::{decode_head, Up, PROTOCOL_VERSION};
use crate::transport::auth::{AuthKey, Peer};
use crate::transport::frame::FrameReader;
use crate::transport::local::Listener;
use crate::transport::local::RecvHalf;
use crate::transport::{spawn_writer, Conn, Outbox};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a fresh connection may take to authenticate and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated child connection, handed to the task that supervises the child.
pub(crate) struct ChildConn {
    pub(crate) pid: u32,
    pub(crate) reader: FrameReader<RecvHalf>,
    pub(crate) outbox: Outbox,
}

impl std::fmt::Debug for ChildConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildConn")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ChildConn>>>>;

/// A listening hub.
#[derive(Debug)]
pub(crate) struct Hub {
    path: PathBuf,
    pending: Pending,
    accept: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// Binds `<dir>/p<pid>.sock` and starts accepting on the current runtime. With a `store`
    /// (in the root) it also serves the run's hosted objects. Each connection it accepts takes
    /// the frame limit that `max_frame` holds then (the launch's, which may change).
    ///
    /// # Errors
    /// `Io` when the socket cannot be bound.
    pub(crate) fn start(
        dir: &Path,
        key: AuthKey,
        store: Option<Arc<Store>>,
        max_frame: Arc<AtomicUsize>,
    ) -> Result<Self> {
        let listener = Listener::bind(dir.join(format!("p{}.sock", std::process::id())))?;
        let path = listener.path().to_owned();
        let pending: Pending = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            key,
            Arc::clone(&pending),
            store,
            max_frame,
        ));
        Ok(Hub {
            path,
            pending,
            accept,
        })
    }

    /// The socket children connect to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a token for a child about to be started; the receiver gets the child's
    /// connection once it has said `Hello` with that token.
    pub(crate) fn await_child(&self, token: u64) -> oneshot::Receiver<ChildConn> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(token, tx);
        rx
    }

    /// Forgets a token whose child will never connect.
    pub(crate) fn forget(&self, token: u64) {
        lock(&self.pending).remove(&token);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Locks `m`, taking a poisoned lock as it is: a panic on another thread must not take the hub
/// down with it. Every file under `hub/` locks through this one.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(
    listener: Listener,
    key: AuthKey,
    pending: Pending,
    store: Option<Arc<Store>>,
    max_frame: Arc<AtomicUsize>,
) {
    loop {
        let halves = match listener.accept().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(target: "multiprocessing::hub", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let key = key.clone();
        let pending = Arc::clone(&pending);
        let store = store.clone();
        let max_frame = max_frame.load(Ordering::Relaxed);
        tokio::spawn(async move {
            let admitted = admit(halves, &key, &pending, max_frame);
            match tokio::time::timeout(HELLO_TIMEOUT, admitted).await {
                Ok(Ok(Admitted::Child)) => {}
                Ok(Ok(Admitted::Objects {
                    pid,
                    reader,
                    outbox,
                })) => match store {
                    Some(store) => serve::serve(store, pid, reader, outbox).await,
                    None => {
                        tracing::debug!(target: "multiprocessing::hub", "refused an object connection from process {pid}: objects live in the root")
                    }
                },
                Ok(Err(e)) => {
                    tracing::debug!(target: "multiprocessing::hub", "refused a connection: {e}")
                }
                Err(_) => {
                    tracing::debug!(target: "multiprocessing::hub", "refused a connection: no hello within {HELLO_TIMEOUT:?}")
                }
            }
        });
    }
}

/// What an authenticated connection turned out to be.
enum Admitted {
    /// A child, handed to whoever waits for it.
    Child,
    /// A process that wants the hosted objects.
    Objects {
        pid: u32,
        reader: FrameReader<RecvHalf>,
        outbox: Outbox,
    },
}

async fn admit(
    halves: crate::transport::local::Halves,
    key: &AuthKey,
    pending: &Pending,
    max_frame: usize,
) -> Result<Admitted> {
    // A child may prove the key over the token we made for it, instead of answering the
    // challenge: the token is retired below, when its `Hello` claims the waiter.
    let expected = |token: u64| lock(pending).contains_key(&token);
    let (Conn { mut reader, writer }, peer) =
        Conn::accept(halves, key, &expected, max_frame).await?;
    let message = reader.read_message().await?.ok_or(Error::Closed)?;
    let (hello, _) = decode_head::<Up>(&message)?;
    let (version, token, pid) = match hello {
        Up::Hello {
            version,
            token,
            pid,
        } => (version, token, pid),
        Up::Attach { version, pid } if version == PROTOCOL_VERSION => {
            let (outbox, _writer) = spawn_writer(writer);
            return Ok(Admitted::Objects {
                pid,
                reader,
                outbox,
            });
        }
        _ => {
            return Err(Error::Protocol(
                "expected Hello or Attach (of our protocol version) as the first message".into(),
            ))
        }
    };
    if matches!(peer, Peer::Token(proved) if proved != token) {
        return Err(Error::Authentication(format!(
            "child {pid} proved one token and presented another"
        )));
    }
    if version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "child {pid} speaks protocol {version}, we speak {PROTOCOL_VERSION}"
        )));
    }
    let waiter = lock(pending)
        .remove(&token)
        .ok_or_else(|| Error::Protocol(format!("child {pid} presented an unknown token")))?;
    let (outbox, _writer) = spawn_writer(writer);
    waiter
        .send(ChildConn {
            pid,
            reader,
            outbox,
        })
        .map_err(|_| Error::Closed)?;
    Ok(Admitted::Child)
}

/// Re-emits a child's `tracing` event on this process's subscriber, tagged with the child.
pub(crate) fn emit_child_log(pid: u32, name: &str, record: &crate::protocol::LogRecord) {
    let target = record.target.as_str();
    let message = record.message.as_str();
    macro_rules! emit {
        ($lvl:ident) => {
            tracing::$lvl!(target: "multiprocessing::child", child_pid = pid, child_name = name, child_target = target, "{message}")
        };
    }
    match record.level {
        0 => emit!(error),
        1 => emit!(warn),
        2 => emit!(info),
        3 => emit!(debug),
        _ => emit!(trace),
    }
}
