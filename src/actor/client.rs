//! A process's side of its connection to one actor: every reference to that actor in this
//! process shares one [`Client`], and the client one connection ([`Link`]) at a time.
//!
//! Calls are multiplexed on the link by id; a reader task hands each reply to the call waiting
//! for it. A call first takes a mailbox credit (the bound on calls sent and unanswered), which
//! its reply gives back, so a full mailbox makes callers wait before anything is sent. When the
//! link ends, the calls still waiting learn it at once; the next call connects again (to the
//! same socket, which a restarted actor keeps), or learns that the actor has stopped.

use super::watch::Watch;
use super::wire::Addr;
use super::wire::{FromActor, ToActor};
use super::ActorExit;
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_head, encode_head};
use crate::start::Context;
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// A reply as the call receives it: the whole message and where the value starts.
type Reply = std::result::Result<(Vec<u8>, usize), RemoteError>;

/// The calls of one link waiting for replies.
#[derive(Default)]
struct Waiting {
    calls: HashMap<u64, (oneshot::Sender<Reply>, Option<OwnedSemaphorePermit>)>,
    /// The link has ended: nothing more will be answered.
    ended: bool,
}

/// One connection to the actor's process.
struct Link {
    /// The pid of the process at the other end.
    pid: u32,
    outbox: Outbox,
    waiting: Arc<Mutex<Waiting>>,
    /// Becomes `true` when the connection ends.
    ended: watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// References serialized (`holds`) or received (`arrivals`) while this process had no link,
/// told to the actor on the next one.
#[derive(Default)]
struct Owed {
    holds: u32,
    arrivals: u32,
}

/// This process's client of one actor.
pub(crate) struct Client {
    addr: Addr,
    credits: Arc<Semaphore>,
    link: Mutex<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    owed: Mutex<Owed>,
    /// The supervisor, in the process that spawned the actor.
    watch: Option<Arc<Watch>>,
    /// Itself, for the task that reconnects when a link ends.
    me: Weak<Client>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every client of this process, by socket path: references share one.
fn clients() -> &'static Mutex<HashMap<PathBuf, Weak<Client>>> {
    static CLIENTS: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Client>>>> =
        std::sync::OnceLock::new();
    CLIENTS.get_or_init(Mutex::default)
}

impl Client {
    /// This process's client of the actor at `addr`, made if there is none.
    fn shared(addr: Addr, watch: Option<Arc<Watch>>) -> Arc<Client> {
        let mut all = lock(clients());
        all.retain(|_, c| c.strong_count() > 0);
        if let Some(client) = all.get(&addr.path).and_then(Weak::upgrade) {
            return client;
        }
        let client = Arc::new_cyclic(|me| Client {
            me: me.clone(),
            credits: Arc::new(Semaphore::new(addr.mailbox as usize)),
            link: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
            owed: Mutex::default(),
            watch,
            addr,
        });
        all.insert(client.addr.path.clone(), Arc::downgrade(&client));
        client
    }

    /// The client of an actor this process has just spawned.
    pub(super) fn spawned(addr: Addr, watch: Arc<Watch>) -> Arc<Client> {
        Self::shared(addr, Some(watch))
    }

    /// The client of an actor found by name.
    pub(super) fn found(addr: Addr) -> Arc<Client> {
        Self::shared(addr, None)
    }

    /// The client for a reference that has just arrived (deserialized): the actor counts it as
    /// in transit until told.
    pub(super) fn arrived(addr: Addr) -> Arc<Client> {
        let client = Self::shared(addr, None);
        if !client.tell_now(&ToActor::Arrived(1)) {
            lock(&client.owed).arrivals += 1;
        }
        client
    }

    pub(super) fn addr(&self) -> &Addr {
        &self.addr
    }

    pub(super) fn pid(&self) -> Option<u32> {
        lock(&self.link).as_ref().map(|l| l.pid)
    }

    /// A reference is being serialized: the actor counts it as in transit.
    pub(super) fn hold(&self) {
        if !self.tell_now(&ToActor::Hold(1)) {
            lock(&self.owed).holds += 1;
        }
    }

    /// Sends `message` on the current link if there is a live one.
    fn tell_now(&self, message: &ToActor) -> bool {
        let link = lock(&self.link).clone();
        match link {
            Some(link) if !*link.ended.borrow() => send(&link.outbox, message, Vec::new()),
            _ => false,
        }
    }

    /// The live link, connecting if there is none.
    ///
    /// # Errors
    /// `ActorStopped` when nobody serves the actor's socket any more; `Authentication`.
    async fn link(&self) -> Result<Arc<Link>> {
        let live = |c: &Client| {
            lock(&c.link)
                .as_ref()
                .filter(|l| !*l.ended.borrow())
                .cloned()
        };
        if let Some(link) = live(self) {
            return Ok(link);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(link) = live(self) {
            return Ok(link);
        }
        let link = Arc::new(open(&self.addr).await?);
        // What was owed goes first, on the link itself, so it is counted before this
        // process's connection could be seen to close.
        let owed = std::mem::take(&mut *lock(&self.owed));
        if owed.holds > 0 {
            send(&link.outbox, &ToActor::Hold(owed.holds), Vec::new());
        }
        if owed.arrivals > 0 {
            send(&link.outbox, &ToActor::Arrived(owed.arrivals), Vec::new());
        }
        *lock(&self.link) = Some(Arc::clone(&link));
        self.reconnect_after(&link);
        Ok(link)
    }

    /// When `link` ends while this process still holds references, connects again at once:
    /// a restarted actor counts this process among its holders even if it makes no call
    /// (otherwise the last other client leaving would end it). An actor gone for good refuses
    /// the connection, and that is the end of it.
    fn reconnect_after(&self, link: &Link) {
        let mut ended = link.ended.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let _ = ended.wait_for(|e| *e).await;
            if let Some(client) = me.upgrade() {
                let _ = client.connect().await;
            }
        });
    }

    /// Connects now if not connected: proves the actor serves.
    ///
    /// # Errors
    /// As `link`.
    pub(super) async fn connect(&self) -> Result<()> {
        self.link().await.map(drop)
    }

    /// Sends a call and waits for its reply: the encoded value, or the error.
    ///
    /// # Errors
    /// The handler's error (`Panicked`), `ActorStopped`, `ProcessDied`.
    pub(super) async fn call(
        &self,
        method: u32,
        value: bool,
        args: Vec<u8>,
    ) -> Result<(Vec<u8>, usize)> {
        let credit = Arc::clone(&self.credits)
            .acquire_owned()
            .await
            .map_err(|_| Error::ActorStopped)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let head = encode_head(&ToActor::Call { id, method, value })?;
        self.exchange(id, head, args, Some(credit)).await
    }

    /// Sends a call whose result nobody waits for; returns once it is sent.
    ///
    /// # Errors
    /// `ActorStopped` when the actor has ended.
    pub(super) async fn tell(&self, method: u32, args: Vec<u8>) -> Result<()> {
        let credit = Arc::clone(&self.credits)
            .acquire_owned()
            .await
            .map_err(|_| Error::ActorStopped)?;
        let link = self.link().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let head = encode_head(&ToActor::Call {
            id,
            method,
            value: false,
        })?;
        // The reply only gives the credit back: its receiver is dropped here.
        let (tx, _rx) = oneshot::channel();
        if !register(&link, id, tx, Some(credit)) || !sent(&link, head, args) {
            return Err(Error::ActorStopped);
        }
        Ok(())
    }

    /// `stop`: the reply carries the final state.
    pub(super) async fn stop(&self) -> Result<(Vec<u8>, usize)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let head = encode_head(&ToActor::Stop { id })?;
        let state = self.exchange(id, head, Vec::new(), None).await?;
        // Where the actor was spawned, return once it has ended and its name is free.
        if let Some(watch) = &self.watch {
            let _ = tokio::time::timeout(Duration::from_secs(5), watch.exit()).await;
        }
        Ok(state)
    }

    /// Sends a message that has a reply, and waits for it.
    async fn exchange(
        &self,
        id: u64,
        head: Vec<u8>,
        body: Vec<u8>,
        credit: Option<OwnedSemaphorePermit>,
    ) -> Result<(Vec<u8>, usize)> {
        let link = self.link().await?;
        let (tx, rx) = oneshot::channel();
        // Registered before it leaves, so the reply always finds it. If this future is dropped
        // from here on, the reply (when it comes) is discarded and gives the credit back.
        if !register(&link, id, tx, credit) || !sent(&link, head, body) {
            return Err(self.lost(link.pid).await);
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(remote)) => Err(remote.into()),
            Err(_) => Err(self.lost(link.pid).await),
        }
    }

    /// The error for calls in flight on a link that ended: `ActorStopped` if the actor ended
    /// on its own terms, else how the process at its end died, as far as this process can tell
    /// (the supervisor's process knows the signal).
    async fn lost(&self, pid: u32) -> Error {
        // The OOM killer is not looked for here: the actor's cgroup is read, if at all, by the
        // process that spawned it, and this client may be another.
        let died = |exitcode, signal| Error::ProcessDied {
            pid,
            exitcode,
            signal,
            oom: false,
        };
        match &self.watch {
            Some(watch) => {
                let learnt = tokio::time::timeout(Duration::from_secs(2), watch.fate_of(pid)).await;
                match learnt {
                    Ok(Some((exitcode, signal))) => died(exitcode, signal),
                    Ok(None) => Error::ActorStopped,
                    Err(_) => died(None, None),
                }
            }
            None => {
                let path = super::watch::exit_path(&self.addr.path);
                let exit = tokio::time::timeout(
                    Duration::from_millis(500),
                    super::watch::read_exit(&path),
                );
                match exit.await {
                    Ok(ActorExit::Died { exitcode, signal }) => died(exitcode, signal),
                    Err(_) => died(None, None),
                    Ok(_) => Error::ActorStopped,
                }
            }
        }
    }

    pub(super) async fn kill(&self) -> Result<()> {
        let Ok(link) = self.link().await else {
            return Ok(());
        };
        match &self.watch {
            // The supervisor's process signals: it ends the actor even in a long method.
            Some(watch) => {
                watch.killed.store(true, Ordering::SeqCst);
                crate::start::send_signal(link.pid, libc::SIGKILL);
            }
            None => {
                send(&link.outbox, &ToActor::Kill, Vec::new());
            }
        }
        let mut ended = link.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
        Ok(())
    }

    pub(super) async fn detach(&self) -> Result<()> {
        let link = self.link().await?;
        if send(&link.outbox, &ToActor::Detach, Vec::new()) {
            Ok(())
        } else {
            Err(Error::ActorStopped)
        }
    }

    pub(super) fn monitor(&self) -> crate::entry::BoxFuture<ActorExit> {
        match &self.watch {
            Some(watch) => {
                let watch = Arc::clone(watch);
                Box::pin(async move { watch.exit().await })
            }
            None => {
                let path = super::watch::exit_path(&self.addr.path);
                Box::pin(async move { super::watch::read_exit(&path).await })
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // References that arrived here and were never used are still counted by the actor:
        // tell it, on a short connection of its own.
        let owed = std::mem::take(&mut *lock(&self.owed));
        if owed.holds == 0 && owed.arrivals == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let addr = self.addr.clone();
        runtime.spawn(async move {
            if let Ok(link) = open(&addr).await {
                send(&link.outbox, &ToActor::Hold(owed.holds), Vec::new());
                send(&link.outbox, &ToActor::Arrived(owed.arrivals), Vec::new());
                let (tx, rx) = oneshot::channel();
                if link.outbox.send(Outgoing::flush_marker(tx)).is_ok() {
                    let _ = rx.await;
                }
            }
        });
    }
}

/// Registers call `id`; `false` if the link has ended.
fn register(
    link: &Link,
    id: u64,
    tx: oneshot::Sender<Reply>,
    credit: Option<OwnedSemaphorePermit>,
) -> bool {
    let mut waiting = lock(&link.waiting);
    if waiting.ended {
        return false;
    }
    waiting.calls.insert(id, (tx, credit));
    true
}

fn sent(link: &Link, head: Vec<u8>, body: Vec<u8>) -> bool {
    link.outbox.send(Outgoing::new(head, body)).is_ok()
}

fn send(outbox: &Outbox, message: &ToActor, body: Vec<u8>) -> bool {
    match encode_head(message) {
        Ok(head) => outbox.send(Outgoing::new(head, body)).is_ok(),
        Err(_) => false,
    }
}

/// Connects to the actor's socket and reads its greeting.
///
/// # Errors
/// `ActorStopped` when nobody serves the socket (any more); `Authentication`; `NotLaunched`.
async fn open(addr: &Addr) -> Result<Link> {
    let ctx = Context::current()?;
    let max_frame = crate::hub::max_frame();
    let conn = match Conn::connect(&addr.path, ctx.key(), max_frame).await {
        Ok(conn) => conn,
        // A refused handshake with a key of this run: the socket is being closed.
        Err(Error::Io(_)) | Err(Error::Authentication(_)) => return Err(Error::ActorStopped),
        Err(e) => return Err(e),
    };
    let Conn { mut reader, writer } = conn;
    let pid = match reader.read_message().await {
        Ok(Some(m)) => match decode_head::<FromActor>(&m)? {
            (FromActor::Hello { pid }, _) => pid,
            _ => return Err(Error::Protocol("an actor did not greet its client".into())),
        },
        Ok(None) | Err(Error::Io(_)) => return Err(Error::ActorStopped),
        Err(e) => return Err(e),
    };
    let (outbox, _writer) = spawn_writer(writer);
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let (ended_tx, ended) = watch::channel(false);
    let reader = tokio::spawn(read_replies(reader, Arc::clone(&waiting), ended_tx));
    Ok(Link {
        pid,
        outbox,
        waiting,
        ended,
        reader,
    })
}

/// Hands each reply to its call; at the end of the connection, fails the calls still waiting
/// (their senders are dropped) and says the link has ended.
async fn read_replies(
    mut reader: crate::transport::frame::FrameReader<crate::transport::local::RecvHalf>,
    waiting: Arc<Mutex<Waiting>>,
    ended: watch::Sender<bool>,
) {
    while let Ok(Some(message)) = reader.read_message().await {
        let Ok((FromActor::Reply { id, outcome }, at)) = decode_head::<FromActor>(&message) else {
            break;
        };
        let call = lock(&waiting).calls.remove(&id);
        if let Some((tx, _credit)) = call {
            let _ = tx.send(outcome.map(|()| (message, at)));
        }
    }
    let calls = {
        let mut w = lock(&waiting);
        w.ended = true;
        std::mem::take(&mut w.calls)
    };
    drop(calls);
    let _ = ended.send(true);
}
