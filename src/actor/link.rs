//! One connection from a client process to an actor's process, and the calls waiting on it.
//!
//! Calls are multiplexed by id. A call is numbered and queued for the writer under one lock, so
//! ids grow in the order calls go out, which is the order the actor starts them in (see
//! `started.rs`). A reader task hands each reply to the call waiting for it. When the
//! connection ends, the calls still waiting stay with the link as orphans, in id order: the
//! client then fails those the actor had started and sends the others to the next instance
//! (see `Client::link`).

use super::started;
use super::wire::{Addr, FromActor, ToActor};
use crate::buffers::Shared;
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_head, encode_head};
use crate::start::Context;
use crate::transport::frame::{FrameReader, Spin};
use crate::transport::local::RecvHalf;
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

/// A reply as the call receives it: the whole message and where the value starts.
pub(super) type Reply = std::result::Result<(Vec<u8>, usize), RemoteError>;

/// What a call asks of the actor, kept until answered so it can be sent again.
#[derive(Debug, Clone)]
pub(super) enum Request {
    /// Run `method` on `args`; `value`: the reply carries the result.
    Call {
        method: u32,
        value: bool,
        args: Shared,
    },
    /// Stop after what is queued; the reply carries the state.
    Stop,
}

/// A call sent and not yet answered.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<Reply>,
    /// The mailbox credit, held until the reply (or the end) drops it.
    pub(super) _credit: Option<OwnedSemaphorePermit>,
    pub(super) request: Request,
}

/// Hashes a call id: ids are consecutive, so one multiplication spreads them well (the default
/// hasher costs more than the rest of a lookup).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The calls of one link waiting for replies.
#[derive(Default)]
struct Waiting {
    calls: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    next_id: u64,
    /// The link has ended: nothing more will be answered or sent.
    ended: bool,
    /// What was unanswered when it ended, until taken.
    orphans: Vec<(u64, Pending)>,
}

/// One connection to the actor's process.
pub(super) struct Link {
    /// The pid of the process at the other end.
    pub(super) pid: u32,
    /// This connection's slot in that process's start table, if it has one.
    slot: Option<u32>,
    outbox: Outbox,
    waiting: Arc<Mutex<Waiting>>,
    /// Set (under the `waiting` lock) when the connection ends.
    closed: Arc<AtomicBool>,
    /// Becomes `true` when the connection ends and the orphans are in place.
    pub(super) ended: watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    /// Connects to the actor's socket and reads its greeting.
    ///
    /// # Errors
    /// `ActorStopped` when nobody serves the socket (any more); `Authentication`; `NotLaunched`.
    pub(super) async fn open(addr: &Addr) -> Result<Link> {
        let ctx = Context::current()?;
        let max_frame = crate::hub::max_frame();
        let conn = match Conn::connect(&addr.path, ctx.key(), max_frame).await {
            Ok(conn) => conn,
            // A refused handshake with a key of this run: the socket is being closed.
            Err(Error::Io(_)) | Err(Error::Authentication(_)) => return Err(Error::ActorStopped),
            Err(e) => return Err(e),
        };
        let Conn { mut reader, writer } = conn;
        let (pid, slot) = match reader.read_message().await {
            Ok(Some(m)) => match decode_head::<FromActor>(&m)? {
                (FromActor::Hello { pid, slot }, _) => (pid, slot),
                _ => return Err(Error::Protocol("an actor did not greet its client".into())),
            },
            Ok(None) | Err(Error::Io(_)) => return Err(Error::ActorStopped),
            Err(e) => return Err(e),
        };
        let (outbox, _writer) = spawn_writer(writer);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended) = watch::channel(false);
        let reader = tokio::spawn(read_replies(
            reader,
            Arc::clone(&waiting),
            Arc::clone(&closed),
            ended_tx,
        ));
        Ok(Link {
            pid,
            slot,
            outbox,
            waiting,
            closed,
            ended,
            reader,
        })
    }

    /// True once the connection has ended.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Numbers `pending` and sends it; given back when the link has ended (it was not sent).
    pub(super) fn send_call(&self, pending: Pending) -> std::result::Result<(), Pending> {
        let mut waiting = lock(&self.waiting);
        if waiting.ended {
            return Err(pending);
        }
        let id = waiting.next_id;
        let (head, body) = match &pending.request {
            Request::Call {
                method,
                value,
                args,
            } => (
                ToActor::Call {
                    id,
                    method: *method,
                    value: *value,
                },
                Arc::clone(args),
            ),
            Request::Stop => (ToActor::Stop { id }, Shared::default()),
        };
        // A header of integers always encodes; a failure would be a bug, and the call then
        // fails as if the link had ended rather than hang.
        let Ok(head) = encode_head(&head) else {
            return Err(pending);
        };
        if self.outbox.send(Outgoing::new(head, body)).is_err() {
            return Err(pending);
        }
        waiting.next_id += 1;
        waiting.calls.insert(id, pending);
        Ok(())
    }

    /// Sends a message that has no reply; `false` if the link has ended.
    pub(super) fn send(&self, message: &ToActor) -> bool {
        match encode_head(message) {
            Ok(head) => self.outbox.send(Outgoing::new(head, Vec::new())).is_ok(),
            Err(_) => false,
        }
    }

    /// Waits until everything sent so far is written to the socket.
    ///
    /// # Cancel safety
    /// Cancel-safe: what was sent stays sent.
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.outbox.send(Outgoing::flush_marker(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// After the end: the calls left unanswered, split into those the actor had started (or may
    /// have: they must not run twice) and those it had not, each in the order they were sent.
    /// Taken once; later calls get nothing.
    pub(super) fn take_orphans(&self, addr: &Addr) -> (Vec<Pending>, Vec<Pending>) {
        let orphans = std::mem::take(&mut lock(&self.waiting).orphans);
        if orphans.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let started_below = self
            .slot
            .and_then(|slot| started::read(&addr.path, self.pid, slot))
            .unwrap_or(u64::MAX);
        let (started, unstarted): (Vec<_>, Vec<_>) =
            orphans.into_iter().partition(|(id, _)| *id < started_below);
        let strip = |v: Vec<(u64, Pending)>| v.into_iter().map(|(_, p)| p).collect();
        (strip(started), strip(unstarted))
    }
}

/// Hands each reply to its call; at the end of the connection, keeps the calls still waiting
/// as orphans and says the link has ended.
async fn read_replies(
    mut reader: FrameReader<RecvHalf>,
    waiting: Arc<Mutex<Waiting>>,
    closed: Arc<AtomicBool>,
    ended: watch::Sender<bool>,
) {
    let mut spin = Spin::default();
    while let Ok(Some(message)) = reader.read_message_spin(&mut spin).await {
        let Ok((FromActor::Reply { id, outcome }, at)) = decode_head::<FromActor>(&message) else {
            break;
        };
        let call = lock(&waiting).calls.remove(&id);
        if let Some(pending) = call {
            let _ = pending.reply.send(outcome.map(|()| (message, at)));
        }
    }
    {
        let mut w = lock(&waiting);
        w.ended = true;
        closed.store(true, Ordering::Release);
        let mut orphans: Vec<_> = w.calls.drain().collect();
        orphans.sort_unstable_by_key(|(id, _)| *id);
        w.orphans = orphans;
    }
    let _ = ended.send(true);
}
