//! How a process reaches the run's hosted objects: one [`HostClient`] per process. Every
//! request takes the same path through it; only its route differs: the root applies requests
//! to its own [`Store`] in-process, every other process sends them over one connection to the
//! root's hub. Answers come back the same way on both routes (a waiting request hears through a
//! channel), and timeouts are the store's business on both.
//!
//! Producers do not wait for the root on every put: a put to an unbounded queue (or into room
//! already reserved in a bounded one) is written to the connection and done, in order behind
//! the process's earlier puts. Only reserving room in a full bounded queue, taking an item, and
//! the queries wait for an answer.
//!
//! Consumers do not wait for the root on every get either: outside the root, a get is lent a
//! batch of items ahead (`QueueOp::Fetch`), kept in [`Held`], which the next gets take from,
//! telling the root of each take (`Took`); a `Recall` from the root gives back what is left.
//!
//! Abandoned waits give back what they got: a get dropped after its item arrived puts the item
//! back at the front of the queue, and room granted to a put that gave up goes back to the
//! queue at once (see `objects::give_back`).

use super::lock;
use super::objects::{self, Body, Notifier, Reply, Store, Waiter, ROOT};
use crate::buffers::IntoShared;
use crate::error::{Error, Result};
use crate::protocol::{
    decode_head, encode_head, join_seqs, split_items, Answer, HostReply, HostReq, ObjectId, Op,
    OpReply, QueueOp, QueueReply, Spec, Up, PROTOCOL_VERSION,
};
use crate::transport::auth::AuthKey;
use crate::transport::frame::{FrameReader, Spin};
use crate::transport::local::RecvHalf;
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// What this process knows about an object it holds.
#[derive(Debug, Default)]
struct Held {
    handles: u32,
    /// The object was closed (a queue's puts fail from now on).
    closed: bool,
    /// What this process took and has not finished: a joinable queue's items not yet marked
    /// done.
    taken: u32,
    /// Items a queue lent ahead to this process (its prefetch), oldest first: the next gets
    /// here take them without asking the root.
    lent: VecDeque<(u64, Body)>,
}

/// One process's way to the root's object host.
#[derive(Debug)]
pub(crate) struct HostClient {
    route: Route,
    held: Mutex<HashMap<ObjectId, Held>>,
    next_req: AtomicU64,
}

#[derive(Debug)]
enum Route {
    /// In the root: requests are applied to its store in-process.
    Local(Arc<Store>),
    /// Everywhere else: requests go over a connection to the root's hub.
    Remote(Remote),
}

/// The connection to the root's hub, and the requests waiting for its answers.
#[derive(Debug)]
struct Remote {
    out: Outbox,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Something was sent without an answer since the last [`HostClient::settle`].
    unsettled: AtomicBool,
    /// The connection to the root ended: requests fail at once instead of waiting forever.
    dead: AtomicBool,
    /// Bytes of items handed to the writer and not yet written: a fast producer waits here
    /// instead of piling encoded items up in memory.
    window: Arc<Semaphore>,
}

/// A request waiting for its answer: where the answer goes, and the object (with its shape) to
/// give back to what the answer carries if nobody takes it.
#[derive(Debug)]
struct Pending {
    obj: ObjectId,
    spec: Option<Spec>,
    tx: oneshot::Sender<Reply>,
}

/// How many bytes of puts a process may have waiting to be written to the root.
const PUT_WINDOW: usize = 4 << 20;

impl Remote {
    fn send(&self, request: &HostReq, body: impl IntoShared) -> Result<()> {
        self.unsettled.store(true, Ordering::Relaxed);
        self.out
            .send(Outgoing::new(encode_head(request)?, body))
            .map_err(|_| Error::Closed)
    }
}

/// The waiter of a request that is never answered (none is ever made for one).
struct Nobody;

impl Waiter for Nobody {
    fn deliver(self: Box<Self>, reply: Reply) -> std::result::Result<(), Reply> {
        Err(reply)
    }
}

fn nobody() -> Box<dyn Waiter> {
    Box::new(Nobody)
}

/// The root's own close notices: they mark the object closed in its client.
struct LocalNotify(Weak<HostClient>);

impl Notifier for LocalNotify {
    fn closed(&self, obj: ObjectId) {
        if let Some(client) = self.0.upgrade() {
            client.mark_closed(obj);
        }
    }
}

impl HostClient {
    fn new(route: Route) -> Self {
        HostClient {
            route,
            held: Mutex::default(),
            next_req: AtomicU64::new(1),
        }
    }

    /// The root's client: requests are applied to `store` in-process.
    pub(crate) fn local(store: Arc<Store>) -> Arc<Self> {
        let client = Arc::new(HostClient::new(Route::Local(Arc::clone(&store))));
        store.attach(ROOT, Arc::new(LocalNotify(Arc::downgrade(&client))));
        client
    }

    /// Connects to the root's hub at `socket` and starts reading its answers; frames are at
    /// most `max_frame` bytes (the launch's limit).
    ///
    /// # Errors
    /// `Io` when the root is unreachable, `Authentication` when it refuses the run's key.
    pub(crate) async fn connect(
        socket: &Path,
        key: &AuthKey,
        max_frame: usize,
    ) -> Result<Arc<Self>> {
        let attach = encode_head(&Up::Attach {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        })?;
        let Conn { reader, writer } =
            Conn::connect_with(socket, key, Some(&attach), max_frame).await?;
        let (out, _writer) = spawn_writer(writer);
        Ok(Self::over(reader, out))
    }

    /// The client of a host reached over `reader` and `out`, an authenticated connection whose
    /// `Attach` was sent: requests go out through `out`, and a task reads the answers.
    pub(crate) fn over(mut reader: FrameReader<RecvHalf>, out: Outbox) -> Arc<Self> {
        let client = Arc::new(HostClient::new(Route::Remote(Remote {
            out,
            pending: Mutex::default(),
            unsettled: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            window: Arc::new(Semaphore::new(PUT_WINDOW)),
        })));
        let weak = Arc::downgrade(&client);
        tokio::spawn(async move {
            let mut spin = Spin::default();
            while let Ok(Some(message)) = reader.read_message_spin(&mut spin).await {
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
                if let Route::Remote(remote) = &client.route {
                    let mut pending = lock(&remote.pending);
                    remote.dead.store(true, Ordering::Relaxed);
                    pending.clear();
                }
            }
        });
        client
    }

    /// An answer (or notice) from the root.
    fn dispatch(&self, mut message: Vec<u8>) -> Result<()> {
        let Route::Remote(remote) = &self.route else {
            return Ok(());
        };
        let (reply, start) = decode_head::<HostReply>(&message)?;
        let (req, answer) = match reply {
            HostReply::Closed { obj } => {
                self.mark_closed(obj);
                return Ok(());
            }
            HostReply::Recall { obj } => {
                self.give_back_lent(obj, None);
                return Ok(());
            }
            HostReply::Answer { req, answer } => (req, answer),
        };
        let Some(pending) = lock(&remote.pending).remove(&req) else {
            return Ok(());
        };
        let reply = if answer == Answer::Op(OpReply::Queue(QueueReply::Batch)) {
            self.lend(pending.obj, &message[start..])?
        } else {
            // The body is the rest of the message, cut off in place without a new buffer.
            let body = answer.has_body().then(|| {
                message.drain(..start);
                message.into_shared()
            });
            Reply { answer, body }
        };
        if let Err(reply) = pending.tx.send(reply) {
            self.give_back(pending.obj, pending.spec, reply);
        }
        Ok(())
    }

    /// A batch of items queue `obj` lent this process: the first is the answer for the get
    /// that asked, the others wait here for the next gets (kept before the answer is handed
    /// on, so a `Recall` read after this message finds them).
    fn lend(&self, obj: ObjectId, body: &[u8]) -> Result<Reply> {
        let items = split_items(body)
            .filter(|items| !items.is_empty())
            .ok_or_else(|| Error::Protocol("a queue's batch of items is cut short".into()))?;
        let mut held = lock(&self.held);
        let lent = &mut held.entry(obj).or_default().lent;
        for (seq, item) in &items[1..] {
            lent.push_back((*seq, item.to_vec().into_shared()));
        }
        let (seq, first) = items[0];
        Ok(Reply::op(
            QueueReply::Item { seq },
            Some(first.to_vec().into_shared()),
        ))
    }

    /// Whether gets in this process are lent items ahead (everywhere but the root, which
    /// holds the queues itself).
    pub(crate) fn lends(&self) -> bool {
        matches!(self.route, Route::Remote(_))
    }

    /// The oldest item queue `obj` lent this process ahead, if any, taken now: the root hears
    /// it (`Took`) before the item is handed on.
    pub(crate) fn take_lent(&self, obj: ObjectId) -> Option<(u64, Body)> {
        let mut held = lock(&self.held);
        let (seq, item) = held.get_mut(&obj)?.lent.pop_front()?;
        // Sent under the lock: a `GiveBack` made after this take follows its `Took`.
        self.took_lent(obj, seq);
        Some((seq, item))
    }

    /// Tells the root a get here took lent item `seq` of queue `obj`.
    pub(crate) fn took_lent(&self, obj: ObjectId, seq: u64) {
        let op = Op::Queue(QueueOp::Took { seq });
        let _ = self.post(HostReq::Op { req: 0, obj, op }, None);
    }

    /// Gives every item queue `obj` lent ahead back to the root, with `also` (an item
    /// delivered to a get that was dropped): the answer to a `Recall`, and what a process does
    /// when it drops its last handle.
    fn give_back_lent(&self, obj: ObjectId, also: Option<u64>) {
        let mut held = lock(&self.held);
        let lent = held
            .get_mut(&obj)
            .map(|h| std::mem::take(&mut h.lent))
            .unwrap_or_default();
        // Sent under the lock, after the `Took` of every item taken here before.
        self.post_give_back(
            obj,
            also.into_iter().chain(lent.iter().map(|(seq, _)| *seq)),
        );
        drop(held);
    }

    /// Sends a `GiveBack` of lent items `seqs` of queue `obj`.
    fn post_give_back(&self, obj: ObjectId, seqs: impl IntoIterator<Item = u64>) {
        let body = join_seqs(seqs).into_shared();
        let op = Op::Queue(QueueOp::GiveBack);
        let _ = self.post(HostReq::Op { req: 0, obj, op }, Some(body));
    }

    /// Applies or sends a request that is not answered.
    pub(super) fn post(&self, request: HostReq, body: Option<Body>) -> Result<()> {
        match &self.route {
            Route::Local(store) => {
                store.handle(ROOT, request, body, &mut nobody);
                Ok(())
            }
            Route::Remote(remote) => remote.send(&request, body.unwrap_or_default()),
        }
    }

    /// Applies or sends a request that is not answered, with an item as its body and the
    /// permit its bytes hold in this process's window (see [`HostClient::window`]).
    pub(super) fn post_item(
        &self,
        request: HostReq,
        item: Vec<u8>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<()> {
        match &self.route {
            Route::Local(store) => {
                store.handle(ROOT, request, Some(item.into_shared()), &mut nobody);
                Ok(())
            }
            Route::Remote(remote) => {
                let mut msg = Outgoing::new(encode_head(&request)?, item);
                msg.window = permit;
                remote.unsettled.store(true, Ordering::Relaxed);
                remote.out.send(msg).map_err(|_| Error::Closed)
            }
        }
    }

    /// Waits while more than a few MiB of this process's items are still unwritten to the
    /// root, so a fast producer does not pile encoded items up in memory; the permit holds
    /// `len` bytes of that window until the item is written. Nothing to wait for in the root.
    ///
    /// # Errors
    /// `Closed` if the window is gone (it never is while the client lives).
    pub(super) async fn window(&self, len: usize) -> Result<Option<OwnedSemaphorePermit>> {
        let Route::Remote(remote) = &self.route else {
            return Ok(None);
        };
        let weight = u32::try_from(len.clamp(1, PUT_WINDOW)).unwrap_or(u32::MAX);
        Arc::clone(&remote.window)
            .acquire_many_owned(weight)
            .await
            .map(Some)
            .map_err(|_| Error::Closed)
    }

    /// Applies or sends request `make(req)` and waits for its answer. If the caller stops
    /// waiting, the request is cancelled, and whatever answer still comes is given back to
    /// `spec`'s object.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call cancels its request, and an answer that arrives anyway is
    /// given back (an item to the front of its queue, granted room released).
    pub(super) async fn call(
        &self,
        obj: ObjectId,
        spec: Option<Spec>,
        make: impl FnOnce(u64) -> HostReq,
    ) -> Result<Reply> {
        self.call_with(obj, spec, Vec::new(), make).await
    }

    /// [`HostClient::call`] for a request with a body (the parts of a manager's operation).
    /// Many may be in flight at once from one process: answers are matched by request number.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    ///
    /// # Cancel safety
    /// As [`HostClient::call`].
    pub(super) async fn call_with(
        &self,
        obj: ObjectId,
        spec: Option<Spec>,
        body: Vec<u8>,
        make: impl FnOnce(u64) -> HostReq,
    ) -> Result<Reply> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let mut awaiting = Awaiting {
            client: self,
            obj,
            spec,
            req,
            rx: None,
        };
        match &self.route {
            Route::Local(store) => {
                // The channel is made only if the store queues the request.
                let mut channel = || -> Box<dyn Waiter> {
                    let (tx, rx) = oneshot::channel();
                    awaiting.rx = Some(rx);
                    Box::new(tx)
                };
                let body = (!body.is_empty()).then(|| body.into_shared());
                if let Some(reply) = store.handle(ROOT, make(req), body, &mut channel) {
                    return Ok(reply);
                }
            }
            Route::Remote(remote) => {
                let (tx, rx) = oneshot::channel();
                {
                    let mut pending = lock(&remote.pending);
                    if remote.dead.load(Ordering::Relaxed) {
                        return Err(Error::Closed);
                    }
                    pending.insert(req, Pending { obj, spec, tx });
                }
                awaiting.rx = Some(rx);
                if let Err(e) = remote.send(&make(req), body) {
                    lock(&remote.pending).remove(&req);
                    awaiting.rx = None;
                    return Err(e);
                }
            }
        }
        awaiting.answer().await
    }

    /// An answer nobody waits for any more: give back what it carries to `spec`'s object.
    /// An item a queue lent this process goes back with everything else lent here, so that
    /// the items keep their order.
    pub(super) fn give_back(&self, obj: ObjectId, spec: Option<Spec>, reply: Reply) {
        if let (true, Answer::Op(OpReply::Queue(QueueReply::Item { seq }))) =
            (self.lends(), reply.answer)
        {
            self.give_back_lent(obj, Some(seq));
            return;
        }
        if let Some((op, body)) = spec.and_then(|spec| objects::give_back(spec, reply)) {
            let _ = self.post(HostReq::Op { req: 0, obj, op }, body);
        }
    }

    /// Waits until the root has applied everything this process sent it (puts, `task_done`s):
    /// a call's puts are in their queue before its result is reported. Nothing to wait for in
    /// the root, whose requests are applied as they are made.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: a settle that fails or is dropped leaves this process unsettled, so the next
    /// one asks again.
    pub(crate) async fn settle(&self) -> Result<()> {
        let Route::Remote(remote) = &self.route else {
            return Ok(());
        };
        if !remote.unsettled.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        /// Marks the process unsettled again unless the root answered the `Sync`.
        struct Unsettled<'a>(Option<&'a AtomicBool>);
        impl Drop for Unsettled<'_> {
            fn drop(&mut self) {
                if let Some(flag) = self.0 {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        let mut guard = Unsettled(Some(&remote.unsettled));
        self.call(0, None, |req| HostReq::Sync { req }).await?;
        guard.0 = None;
        Ok(())
    }

    /// This process now holds one more handle to `obj`; the first one in a process opens it at
    /// the host (which creates it as `spec` if it is new) and learns whether it is closed.
    ///
    /// # Errors
    /// `Closed` when the root is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: a handle whose open is dropped is not counted.
    pub(crate) async fn open(&self, obj: ObjectId, spec: Spec) -> Result<()> {
        {
            let mut held = lock(&self.held);
            let h = held.entry(obj).or_default();
            h.handles += 1;
            if h.handles > 1 {
                return Ok(());
            }
        }
        // Counted already (so another handle opened meanwhile does not send `Open` again):
        // uncounted again unless the host confirms.
        let mut counted = Counted {
            client: self,
            obj,
            armed: true,
        };
        let reply = self
            .call(obj, None, |req| HostReq::Open { req, obj, spec })
            .await?;
        if reply.answer == Answer::Value(1) {
            self.mark_closed(obj);
        }
        counted.armed = false;
        Ok(())
    }

    /// Counts the first handle to new object `obj` and opens it at the host without waiting:
    /// applied at once in the root, and elsewhere sent ahead of anything this process sends
    /// later (its answer is not waited for: a new object is not closed).
    pub(crate) fn open_new(&self, obj: ObjectId, spec: Spec) {
        lock(&self.held).entry(obj).or_default().handles += 1;
        let _ = self.post(HostReq::Open { req: 0, obj, spec }, None);
    }

    /// Counts one more handle to `obj` without asking the host. Returns `false` (and counts
    /// nothing) when this process holds none: then use [`HostClient::open`].
    pub(crate) fn open_another(&self, obj: ObjectId) -> bool {
        match lock(&self.held).get_mut(&obj) {
            Some(h) if h.handles > 0 => {
                h.handles += 1;
                true
            }
            _ => false,
        }
    }

    /// This process holds one handle fewer to `obj`; after the last one, the host hears it.
    pub(crate) fn release(&self, obj: ObjectId) {
        {
            let mut held = lock(&self.held);
            let Some(h) = held.get_mut(&obj) else {
                return;
            };
            h.handles = h.handles.saturating_sub(1);
            if h.handles > 0 {
                return;
            }
            // Items lent ahead go back before the release (a get here can no longer take
            // them); taken out under the lock, after every `Took` of an item taken here.
            let lent = std::mem::take(&mut h.lent);
            held.remove(&obj);
            drop(held);
            if !lent.is_empty() {
                self.post_give_back(obj, lent.iter().map(|(seq, _)| *seq));
            }
        }
        let _ = self.post(HostReq::Release { obj }, None);
    }

    /// Whether this process knows `obj` to be closed.
    pub(crate) fn is_closed(&self, obj: ObjectId) -> bool {
        lock(&self.held).get(&obj).is_some_and(|h| h.closed)
    }

    /// Remembers that `obj` was closed.
    pub(crate) fn mark_closed(&self, obj: ObjectId) {
        if let Some(h) = lock(&self.held).get_mut(&obj) {
            h.closed = true;
        }
    }

    /// Counts one thing this process took from `obj` and must finish (a joinable item).
    pub(crate) fn took(&self, obj: ObjectId) {
        if let Some(h) = lock(&self.held).get_mut(&obj) {
            h.taken += 1;
        }
    }

    /// Counts one thing taken from `obj` as finished; `false` when this process had taken
    /// nothing unfinished.
    pub(crate) fn finish(&self, obj: ObjectId) -> bool {
        match lock(&self.held).get_mut(&obj) {
            Some(h) if h.taken > 0 => {
                h.taken -= 1;
                true
            }
            _ => false,
        }
    }
}

/// A handle counted before the host confirmed it; uncounted if the open does not complete.
struct Counted<'a> {
    client: &'a HostClient,
    obj: ObjectId,
    armed: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.release(self.obj);
        }
    }
}

/// A request waiting for its answer. Dropped before the answer came, it cancels the request,
/// and gives back an answer that came just then.
struct Awaiting<'a> {
    client: &'a HostClient,
    obj: ObjectId,
    spec: Option<Spec>,
    req: u64,
    rx: Option<oneshot::Receiver<Reply>>,
}

impl Awaiting<'_> {
    async fn answer(mut self) -> Result<Reply> {
        let rx = self.rx.as_mut().ok_or(Error::Closed)?;
        let reply = rx.await.map_err(|_| Error::Closed);
        self.rx = None;
        reply
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Closed first: an answer the host delivers from now on is refused, so the host keeps
        // (or, over a connection, `dispatch` gives back) what it carries.
        rx.close();
        match rx.try_recv() {
            Ok(reply) => self.client.give_back(self.obj, self.spec, reply),
            Err(_) => {
                let _ = self.client.post(
                    HostReq::Cancel {
                        req: self.req,
                        obj: self.obj,
                    },
                    None,
                );
            }
        }
    }
}
