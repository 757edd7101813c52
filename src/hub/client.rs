//! How a process reaches the run's hosted objects: directly in the root ([`Host::Local`]), over
//! one connection to the root's hub everywhere else ([`Host::Remote`]).
//!
//! Producers do not wait for the root on every put: a put to an unbounded queue (or into room
//! already reserved in a bounded one) is written to the connection and done, in order behind
//! the process's earlier puts. Only reserving room in a full bounded queue, taking an item, and
//! the queries wait for an answer.
//!
//! Abandoned waits give back what they got: a get dropped after its item arrived puts the item
//! back at the front of the queue, and room granted to a put that gave up goes back to the
//! queue at once (`Unreserve`).

use super::objects::{Item, Reply, Store, Waiter, ROOT};
use crate::error::{Error, Result};
use crate::protocol::{
    decode_head, encode_head, HostError, HostReply, HostReq, ObjectId, QueueSpec, Up, Wait,
    PROTOCOL_VERSION,
};
use crate::transport::auth::AuthKey;
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this process knows about an object it holds.
#[derive(Debug, Default)]
struct Held {
    handles: u32,
    /// The queue was closed (puts fail from now on).
    closed: bool,
    /// Items taken from a joinable queue and not yet marked done.
    taken: u32,
}

#[derive(Debug)]
struct Pending {
    obj: ObjectId,
    tx: oneshot::Sender<Reply>,
}

/// One process's connection to the root's object host.
#[derive(Debug)]
pub(crate) struct HostClient {
    out: Outbox,
    pending: Mutex<HashMap<u64, Pending>>,
    held: Mutex<HashMap<ObjectId, Held>>,
    next_req: AtomicU64,
    /// Something was sent without an answer since the last [`HostClient::settle`].
    unsettled: AtomicBool,
    /// The connection to the root ended: requests fail at once instead of waiting forever.
    dead: AtomicBool,
    /// Bytes of items handed to the writer and not yet written: a fast producer waits here
    /// instead of piling encoded items up in memory.
    window: Arc<Semaphore>,
}

/// How many bytes of puts a process may have waiting to be written to the root.
const PUT_WINDOW: usize = 4 << 20;

impl HostClient {
    /// Connects to the root's hub at `socket` and starts reading its answers.
    ///
    /// # Errors
    /// `Io` when the root is unreachable, `Authentication` when it refuses the run's key.
    pub(crate) async fn connect(socket: &Path, key: &AuthKey) -> Result<Arc<Self>> {
        let attach = encode_head(&Up::Attach {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        })?;
        let Conn { mut reader, writer } = Conn::connect_with(socket, key, Some(&attach)).await?;
        let (out, _writer) = spawn_writer(writer);
        let client = Arc::new(HostClient {
            out,
            pending: Mutex::default(),
            held: Mutex::default(),
            next_req: AtomicU64::new(1),
            unsettled: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            window: Arc::new(Semaphore::new(PUT_WINDOW)),
        });
        let weak = Arc::downgrade(&client);
        tokio::spawn(async move {
            while let Ok(Some(message)) = reader.read_message().await {
                let Some(client) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = client.dispatch(message) {
                    tracing::warn!(target: "multiprocessing::hub", "bad answer from the root: {e}");
                    break;
                }
            }
            // The root is gone (or broke the protocol): every waiting request fails with
            // `Closed`, and so does every later one.
            if let Some(client) = weak.upgrade() {
                let mut pending = lock(&client.pending);
                client.dead.store(true, Ordering::Relaxed);
                pending.clear();
            }
        });
        Ok(client)
    }

    fn send(&self, req: &HostReq, body: impl Into<Arc<Vec<u8>>>) -> Result<()> {
        self.unsettled.store(true, Ordering::Relaxed);
        self.out
            .send(Outgoing::new(encode_head(req)?, body))
            .map_err(|_| Error::Closed)
    }

    fn dispatch(&self, mut message: Vec<u8>) -> Result<()> {
        let (reply, start) = decode_head::<HostReply>(&message)?;
        let (req, reply) = match reply {
            HostReply::Closed { obj } => {
                lock(&self.held).entry(obj).or_default().closed = true;
                return Ok(());
            }
            HostReply::Item { req, seq } => (
                req,
                Reply::Item {
                    seq,
                    item: {
                        message.drain(..start);
                        Arc::new(message)
                    },
                },
            ),
            HostReply::Granted { req } => (req, Reply::Granted),
            HostReply::Done { req } => (req, Reply::Done),
            HostReply::Value { req, value } => (req, Reply::Value(value)),
            HostReply::Failed { req, error } => (req, Reply::Failed(error)),
        };
        let Some(pending) = lock(&self.pending).remove(&req) else {
            return Ok(());
        };
        if let Err(reply) = pending.tx.send(reply) {
            self.abandoned(pending.obj, reply);
        }
        Ok(())
    }

    /// An answer nobody waits for any more: give back what it carries.
    fn abandoned(&self, obj: ObjectId, reply: Reply) {
        match reply {
            Reply::Item { seq, item } => {
                let _ = self.send(&HostReq::Requeue { obj, seq }, item);
            }
            Reply::Granted => self.unreserve(obj),
            _ => {}
        }
    }

    /// Waits until the root has applied everything this process sent it (puts, `task_done`s):
    /// a call's puts are in their queue before its result is reported.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    pub(crate) async fn settle(&self) -> Result<()> {
        if !self.unsettled.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        self.request(0, |req| HostReq::Sync { req }).await.map(drop)
    }

    /// Gives back one reservation this process will not use.
    fn unreserve(&self, obj: ObjectId) {
        let _ = self.send(&HostReq::Unreserve { obj, count: 1 }, Vec::new());
    }

    /// Sends request `make(req)` and waits for its answer. If the caller stops waiting, the
    /// host is told to drop the request, and whatever answer still comes is given back.
    async fn request(&self, obj: ObjectId, make: impl FnOnce(u64) -> HostReq) -> Result<Reply> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if self.dead.load(Ordering::Relaxed) {
                return Err(Error::Closed);
            }
            pending.insert(req, Pending { obj, tx });
        }
        let mut guard = Abandon {
            client: self,
            obj,
            req,
            rx: Some(rx),
        };
        if let Err(e) = self.send(&make(req), Vec::new()) {
            lock(&self.pending).remove(&req);
            return Err(e);
        }
        let rx = guard.rx.as_mut().ok_or(Error::Closed)?;
        let reply = rx.await.map_err(|_| Error::Closed);
        guard.rx = None;
        reply
    }
}

/// A handle counted before the root confirmed it; released if the open does not complete.
struct Counted<'a> {
    host: &'a Host,
    obj: ObjectId,
    armed: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.host.release(self.obj);
        }
    }
}

/// Room reserved for a put that has not been sent yet; given back if the put is dropped.
struct Reserved<'a> {
    client: &'a HostClient,
    obj: ObjectId,
    armed: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.unreserve(self.obj);
        }
    }
}

/// Cancels a request whose caller stopped waiting, and gives back an answer that already came.
struct Abandon<'a> {
    client: &'a HostClient,
    obj: ObjectId,
    req: u64,
    rx: Option<oneshot::Receiver<Reply>>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        rx.close();
        match rx.try_recv() {
            Ok(reply) => self.client.abandoned(self.obj, reply),
            Err(_) => {
                // Still pending: the host drops it (its answer, if already sent, is given back
                // by `dispatch` because the receiver is closed).
                let _ = self.client.send(
                    &HostReq::Cancel {
                        req: self.req,
                        obj: self.obj,
                    },
                    Vec::new(),
                );
            }
        }
    }
}

/// Where this process's hosted objects are.
#[derive(Debug, Clone)]
pub(crate) enum Host {
    /// In this process: the root.
    Local(Arc<Store>),
    /// Over a connection to the root.
    Remote(Arc<HostClient>),
}

/// A local wait on the store; gives back an answer its caller no longer wants.
struct LocalWait<'a> {
    store: &'a Store,
    obj: ObjectId,
    spec: QueueSpec,
    req: u64,
    rx: Option<oneshot::Receiver<Reply>>,
}

impl LocalWait<'_> {
    /// The store's end of this wait (called by the store only when it queues the request).
    fn waiter(&mut self) -> Box<dyn Waiter> {
        let (tx, rx) = oneshot::channel::<Reply>();
        self.rx = Some(rx);
        Box::new(tx)
    }

    async fn wait(&mut self, wait: Wait) -> Result<Reply> {
        let rx = self.rx.as_mut().ok_or(Error::Closed)?;
        let reply = match wait {
            Wait::Micros(us) => {
                match tokio::time::timeout(Duration::from_micros(us), &mut *rx).await {
                    Ok(r) => r,
                    Err(_) => {
                        if self.store.cancel(ROOT, self.obj, self.req).is_some() {
                            self.rx = None;
                            return Ok(Reply::Failed(HostError::Timeout));
                        }
                        // Answered just as the time ran out: take the answer.
                        rx.await
                    }
                }
            }
            _ => rx.await,
        };
        self.rx = None;
        reply.map_err(|_| Error::Closed)
    }
}

impl Drop for LocalWait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if self.store.cancel(ROOT, self.obj, self.req).is_some() {
            return;
        }
        rx.close();
        match rx.try_recv() {
            Ok(Reply::Item { seq, item }) => {
                self.store.requeue(ROOT, self.obj, self.spec, seq, item);
            }
            Ok(Reply::Granted) => self.store.unreserve(ROOT, self.obj, 1),
            _ => {}
        }
    }
}

static LOCAL_REQ: AtomicU64 = AtomicU64::new(1);

/// A wait on the store for `obj`; its channel is made only if the store queues the request.
fn local_wait(store: &Store, obj: ObjectId, spec: QueueSpec) -> LocalWait<'_> {
    LocalWait {
        store,
        obj,
        spec,
        req: LOCAL_REQ.fetch_add(1, Ordering::Relaxed),
        rx: None,
    }
}

impl Host {
    /// This process now holds one more handle to `obj`; the first one in a process asks the
    /// root (which learns of the object this way) whether it is closed.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    pub(crate) async fn open(&self, obj: ObjectId, spec: QueueSpec) -> Result<()> {
        match self {
            Host::Local(store) => {
                store.open(ROOT, obj, spec);
                Ok(())
            }
            Host::Remote(client) => {
                if self.open_another(obj, spec) {
                    return Ok(());
                }
                // Counted already: uncounted again unless the root confirms (the caller may
                // also stop waiting, and then holds no handle).
                let mut counted = Counted {
                    host: self,
                    obj,
                    armed: true,
                };
                let reply = client
                    .request(obj, |req| HostReq::Open { req, obj, spec })
                    .await?;
                if let Reply::Value(1) = reply {
                    lock(&client.held).entry(obj).or_default().closed = true;
                }
                counted.armed = false;
                Ok(())
            }
        }
    }

    /// Counts one more handle to `obj` without asking the root. Returns `false` (and counts
    /// nothing) when this process holds none yet: then use [`Host::open`].
    pub(crate) fn open_another(&self, obj: ObjectId, spec: QueueSpec) -> bool {
        match self {
            Host::Local(store) => {
                store.open(ROOT, obj, spec);
                true
            }
            Host::Remote(client) => {
                let mut held = lock(&client.held);
                let h = held.entry(obj).or_default();
                h.handles += 1;
                if h.handles == 1 {
                    // The first handle: `open` sends `Open` (the entry stays counted for it).
                    return false;
                }
                true
            }
        }
    }

    /// This process holds one handle fewer to `obj`.
    pub(crate) fn release(&self, obj: ObjectId) {
        match self {
            Host::Local(store) => store.release(ROOT, obj),
            Host::Remote(client) => {
                {
                    let mut held = lock(&client.held);
                    let Some(h) = held.get_mut(&obj) else {
                        return;
                    };
                    h.handles = h.handles.saturating_sub(1);
                    if h.handles > 0 {
                        return;
                    }
                    held.remove(&obj);
                }
                let _ = client.send(&HostReq::Release { obj }, Vec::new());
            }
        }
    }

    /// Waits for room for one item; on success the caller must fill it at once.
    ///
    /// # Errors
    /// `Closed`, `Full` (with `Wait::No`), `Timeout`; `Error::Closed` if the root is gone.
    async fn reserve(&self, obj: ObjectId, spec: QueueSpec, wait: Wait) -> Result<()> {
        match self {
            Host::Local(store) => {
                if spec.capacity.is_none() {
                    return match store.is_closed(obj) {
                        true => Err(Error::Closed),
                        false => Ok(()),
                    };
                }
                let mut guard = local_wait(store, obj, spec);
                let req = guard.req;
                match store.reserve(ROOT, obj, spec, req, wait, || guard.waiter()) {
                    Ok(true) => Ok(()),
                    Ok(false) => match guard.wait(wait).await? {
                        Reply::Granted => Ok(()),
                        Reply::Failed(e) => Err(e.into()),
                        _ => Err(Error::Protocol("unexpected answer to a reservation".into())),
                    },
                    Err(e) => Err(e.into()),
                }
            }
            Host::Remote(client) => {
                {
                    let mut held = lock(&client.held);
                    let h = held.entry(obj).or_default();
                    if h.closed {
                        return Err(Error::Closed);
                    }
                    if spec.capacity.is_none() {
                        return Ok(());
                    }
                }
                match client
                    .request(obj, |req| HostReq::Reserve { req, obj, wait })
                    .await?
                {
                    Reply::Granted => Ok(()),
                    Reply::Failed(e) => Err(e.into()),
                    _ => Err(Error::Protocol("unexpected answer to a reservation".into())),
                }
            }
        }
    }

    /// Appends an encoded item, waiting for room (as `wait` allows) in a bounded queue. From
    /// another process it then also waits while more than a few MiB of this process's puts
    /// are still unwritten, so a fast producer does not pile encoded items up in memory (room
    /// first: a put waiting for room holds none of that window).
    ///
    /// # Errors
    /// `Closed`, `Full` (with `Wait::No`), `Timeout`; `Error::Closed` if the root is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: the item is sent in the same poll that wins its room, or not at all.
    pub(crate) async fn put(
        &self,
        obj: ObjectId,
        spec: QueueSpec,
        item: Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        match self {
            Host::Local(store) => {
                self.reserve(obj, spec, wait).await?;
                store.put(ROOT, obj, spec, Arc::new(item));
                Ok(())
            }
            Host::Remote(client) => {
                self.reserve(obj, spec, wait).await?;
                // Room is ours from here: if this future is dropped before the item is sent,
                // the guard gives the room back.
                let mut reserved = Reserved {
                    client,
                    obj,
                    armed: spec.capacity.is_some(),
                };
                let weight = u32::try_from(item.len().clamp(1, PUT_WINDOW)).unwrap_or(u32::MAX);
                let permit = Arc::clone(&client.window)
                    .acquire_many_owned(weight)
                    .await
                    .map_err(|_| Error::Closed)?;
                reserved.armed = false;
                let mut msg = Outgoing::new(encode_head(&HostReq::Put { obj })?, item);
                msg.window = Some(permit);
                client.unsettled.store(true, Ordering::Relaxed);
                client.out.send(msg).map_err(|_| Error::Closed)
            }
        }
    }

    /// Takes the next item.
    ///
    /// # Errors
    /// `Empty` (with `Wait::No`), `Timeout`, `Closed` once closed and drained.
    pub(crate) async fn get(&self, obj: ObjectId, spec: QueueSpec, wait: Wait) -> Result<Item> {
        match self {
            Host::Local(store) => {
                let mut guard = local_wait(store, obj, spec);
                let req = guard.req;
                match store.get(ROOT, obj, spec, req, wait, || guard.waiter()) {
                    Ok(Some((_, item))) => Ok(item),
                    Ok(None) => match guard.wait(wait).await? {
                        Reply::Item { item, .. } => Ok(item),
                        Reply::Failed(e) => Err(e.into()),
                        _ => Err(Error::Protocol("unexpected answer to a get".into())),
                    },
                    Err(e) => Err(e.into()),
                }
            }
            Host::Remote(client) => {
                match client
                    .request(obj, |req| HostReq::Get { req, obj, wait })
                    .await?
                {
                    Reply::Item { item, .. } => {
                        if spec.joinable {
                            lock(&client.held).entry(obj).or_default().taken += 1;
                        }
                        Ok(item)
                    }
                    Reply::Failed(e) => Err(e.into()),
                    _ => Err(Error::Protocol("unexpected answer to a get".into())),
                }
            }
        }
    }

    /// How many items the queue holds.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    pub(crate) async fn len(&self, obj: ObjectId) -> Result<usize> {
        match self {
            Host::Local(store) => Ok(store.len(obj)),
            Host::Remote(client) => {
                match client.request(obj, |req| HostReq::Len { req, obj }).await? {
                    Reply::Value(n) => Ok(n as usize),
                    _ => Err(Error::Protocol("unexpected answer to len".into())),
                }
            }
        }
    }

    /// Closes the queue for everyone.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    pub(crate) async fn close(&self, obj: ObjectId, spec: QueueSpec) -> Result<()> {
        match self {
            Host::Local(store) => {
                store.close(obj, spec);
                Ok(())
            }
            Host::Remote(client) => {
                lock(&client.held).entry(obj).or_default().closed = true;
                client
                    .request(obj, |req| HostReq::Close { req, obj })
                    .await
                    .map(drop)
            }
        }
    }

    /// Marks the oldest unfinished item this process took as done.
    ///
    /// # Errors
    /// `InvalidArgument` when this process holds no unfinished item of the queue.
    pub(crate) fn task_done(&self, obj: ObjectId) -> Result<()> {
        let too_many = || {
            Error::InvalidArgument(
                "task_done() called more times than this process took items from the queue".into(),
            )
        };
        match self {
            Host::Local(store) => store
                .task_done(ROOT, obj)
                .then_some(())
                .ok_or_else(too_many),
            Host::Remote(client) => {
                {
                    let mut held = lock(&client.held);
                    let h = held.entry(obj).or_default();
                    if h.taken == 0 {
                        return Err(too_many());
                    }
                    h.taken -= 1;
                }
                client.send(&HostReq::TaskDone { obj }, Vec::new())
            }
        }
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    pub(crate) async fn join(&self, obj: ObjectId, spec: QueueSpec) -> Result<()> {
        match self {
            Host::Local(store) => {
                let mut guard = local_wait(store, obj, spec);
                let req = guard.req;
                if store.join(ROOT, obj, spec, req, || guard.waiter()) {
                    return Ok(());
                }
                guard.wait(Wait::Forever).await.map(drop)
            }
            Host::Remote(client) => client
                .request(obj, |req| HostReq::Join { req, obj })
                .await
                .map(drop),
        }
    }
}
