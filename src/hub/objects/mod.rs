//! The root's object host: every hosted object of the run, over one core that every kind of
//! object shares.
//!
//! One [`Store`] lives in the root process. Every process, the root included, reaches it with
//! [`HostReq`]s (see `client.rs`): the root's requests are applied here in-process, every other
//! process's arrive over its connection to the root's hub (see `serve.rs`), and each process is
//! one [`Owner`]. The store never decodes a body: items are the postcard bytes of the user's
//! value.
//!
//! The core (this file) does what is the same for every kind:
//! - **Objects by id.** An object is created by the first `Open` of its id (or, for a queue, by
//!   an item coming back after the queue was dropped), and dropped when no owner holds a handle
//!   and it holds nothing anyone could still want (its kind says what that is).
//! - **Handles counted per owner.** `Open` and `Release` count; when an owner goes away (its
//!   process died or dropped its connection), its handles go, and its kind releases what it held
//!   (a joinable queue puts back the items the owner took and did not finish).
//! - **Waiting requests**: a request that cannot be answered yet leaves a [`Waiting`] with its
//!   kind; the core fails it with `Timeout` when its [`Wait`] runs out, or when its caller
//!   cancels it ([`Store::withdraw`], the one place either happens).
//! - **Close notices** to every owner holding an object that was closed.
//!
//! Each kind is one file beside this one (`queue.rs`): a state machine implementing [`Hosted`]
//! plus an `apply` of its own operations,
//! with no I/O, unit-tested without processes. A new kind is a new file, a variant of
//! [`Spec`], [`Op`] and `OpReply` in `protocol`, and an arm in [`Object`].

mod lock;
mod manager;
mod mevent;
mod mlock;
mod queue;
mod segment;
pub(crate) mod word;

pub(crate) use lock::arena as lock_arena;

use super::lock;
use crate::protocol::{Answer, HostError, HostReq, ObjectId, Op, OpReply, Spec, Wait};
use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A message body: an encoded item.
pub(crate) type Body = crate::buffers::Shared;

/// Who holds handles and waits for answers: `ROOT` for the root process, a connection number
/// for every other process.
pub(crate) type Owner = u64;

/// The root process's own owner id.
pub(crate) const ROOT: Owner = 0;

/// The answer to a request, with its body (an item) if it carries one.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) answer: Answer,
    pub(crate) body: Option<Body>,
}

impl Reply {
    /// An answer without a body.
    pub(crate) fn new(answer: Answer) -> Self {
        Reply { answer, body: None }
    }

    /// The request failed.
    pub(crate) fn failed(error: HostError) -> Self {
        Reply::new(Answer::Failed(error))
    }

    /// An answer of one kind of object, with its body.
    pub(crate) fn op(reply: impl Into<OpReply>, body: Option<Body>) -> Self {
        Reply {
            answer: Answer::Op(reply.into()),
            body,
        }
    }
}

/// Where a waiting request's answer goes. `deliver` gives the reply back when nobody is there
/// to take it any more, so an item is never dropped on the floor.
pub(crate) trait Waiter: Send {
    fn deliver(self: Box<Self>, reply: Reply) -> Result<(), Reply>;
}

impl Waiter for oneshot::Sender<Reply> {
    fn deliver(self: Box<Self>, reply: Reply) -> Result<(), Reply> {
        self.send(reply)
    }
}

/// A request that waits for its answer.
pub(crate) struct Waiting {
    pub(crate) owner: Owner,
    req: u64,
    waiter: Box<dyn Waiter>,
    /// For a request with a time limit: dropped with the request, however it ends (answered,
    /// withdrawn, its owner gone), which ends its timer (`Store::expire_after`) instead of
    /// letting it sleep out the whole timeout.
    _ended: Option<oneshot::Sender<()>>,
}

impl Waiting {
    /// Answers the request; the reply comes back if its caller stopped listening.
    pub(crate) fn deliver(self, reply: Reply) -> Result<(), Reply> {
        self.waiter.deliver(reply)
    }

    /// The request's number (unique per owner).
    pub(crate) fn req(&self) -> u64 {
        self.req
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("owner", &self.owner)
            .field("req", &self.req)
            .finish_non_exhaustive()
    }
}

/// A line of waiting requests, answered first come first served.
#[derive(Debug, Default)]
pub(crate) struct Waiters(VecDeque<Waiting>);

impl Waiters {
    pub(crate) fn push(&mut self, w: Waiting) {
        self.0.push_back(w);
    }

    pub(crate) fn pop(&mut self) -> Option<Waiting> {
        self.0.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request first in line.
    pub(crate) fn front(&self) -> Option<&Waiting> {
        self.0.front()
    }

    /// Every waiting request, in order, leaving the line empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Waiting> + '_ {
        self.0.drain(..)
    }

    /// Takes request `req` of `owner` out of the line, if it is there.
    pub(crate) fn withdraw(&mut self, owner: Owner, req: u64) -> Option<Waiting> {
        let i = self
            .0
            .iter()
            .position(|w| w.owner == owner && w.req == req)?;
        self.0.remove(i)
    }

    /// Drops every request of `owner` (it is gone and hears nothing any more).
    pub(crate) fn forget(&mut self, owner: Owner) {
        self.0.retain(|w| w.owner != owner);
    }
}

/// Who sent the request being applied, and how to answer it later if it must wait.
pub(crate) struct Caller<'a> {
    pub(crate) owner: Owner,
    req: u64,
    waiter: &'a mut dyn FnMut() -> Box<dyn Waiter>,
    /// Resolves once the request made waiting (if it was) has ended.
    ended: Option<oneshot::Receiver<()>>,
}

impl Caller<'_> {
    /// The request as a waiting one for `wait`, to queue with the kind (its answer channel is
    /// made only now, so a request answered at once costs none; the end signal for its timer
    /// only when it has a time limit).
    pub(crate) fn waiting(&mut self, wait: Wait) -> Waiting {
        let ended = matches!(wait, Wait::Micros(_)).then(|| {
            let (ended, on_end) = oneshot::channel();
            self.ended = Some(on_end);
            ended
        });
        Waiting {
            owner: self.owner,
            req: self.req,
            waiter: (self.waiter)(),
            _ended: ended,
        }
    }
}

/// What applying an operation came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answer this now.
    Answer(Reply),
    /// Nothing to answer (a pipelined operation).
    Silent,
    /// The request was queued (with [`Caller::waiting`]); it fails with `Timeout` when `Wait`
    /// runs out.
    Waiting(Wait),
    /// The object was closed by this request: answer `Done`, and every owner holding it hears
    /// `Closed`.
    Closed,
}

/// What the core asks of every kind of hosted object. Each kind is a state machine with no
/// I/O: its answers go to [`Waiting`] requests, which the core made. It also has an `apply` of
/// its own operations (`fn apply(&mut self, &mut Caller, op, Option<Body>) -> Outcome`), which
/// [`Object::apply`] calls.
pub(crate) trait Hosted {
    /// Takes waiting request `req` of `owner` out, if it is still waiting.
    fn withdraw(&mut self, owner: Owner, req: u64) -> Option<Waiting>;

    /// `owner` went away: drop its waiting requests, release what it held.
    fn owner_gone(&mut self, owner: Owner);

    /// Whether the object was closed (told to a process when it opens the object).
    fn is_closed(&self) -> bool;

    /// Nothing anyone could still want is left in it (handles are the core's business).
    fn is_idle(&self) -> bool;

    /// The owners to ask, from now, to give back what the object lent them (a queue's
    /// prefetched items): the core sends each a `Recall`.
    fn recalls(&mut self) -> Vec<Owner> {
        Vec::new()
    }
}

/// A hosted object of any kind.
#[derive(Debug)]
enum Object {
    Queue(queue::QueueState),
    Dict(manager::DictState),
    List(manager::ListState),
    Lock(lock::LockState),
    ManagedLock(mlock::ManagedLockState),
    Event(mevent::EventState),
    Segment(segment::SegmentState),
}

impl Object {
    fn new(spec: Spec) -> Self {
        match spec {
            Spec::Queue(spec) => Object::Queue(queue::QueueState::new(spec)),
            Spec::Dict(_) => Object::Dict(manager::DictState::default()),
            Spec::List(_) => Object::List(manager::ListState::default()),
            Spec::Lock(_) => Object::Lock(lock::LockState::new()),
            Spec::Sync(spec) => Object::Lock(lock::LockState::sync(spec)),
            Spec::ManagedLock(_) => Object::ManagedLock(mlock::ManagedLockState::default()),
            Spec::Event(_) => Object::Event(mevent::EventState::default()),
            Spec::Segment(_) => Object::Segment(segment::SegmentState::default()),
        }
    }

    /// The object an operation recreates when it arrives after the object was dropped, if it
    /// is one that can.
    fn revive(op: &Op) -> Option<Self> {
        match op {
            Op::Queue(op) => queue::QueueState::revive(op).map(Object::Queue),
            Op::Dict(_) | Op::List(_) => None,
            // A lock operation comes only from a process holding a handle.
            Op::Lock(_) => None,
            // A manager's lock or event, as a dict, exists while anyone can name it; a transit
            // hold is only for an object that exists.
            Op::ManagedLock(_) | Op::Event(_) | Op::Transit(_) => None,
            // A segment's request opens its handle first; once the object is gone, so is the name.
            Op::Segment(_) => None,
        }
    }

    fn apply(&mut self, caller: &mut Caller<'_>, op: Op, body: Option<Body>) -> Outcome {
        match (self, op) {
            (Object::Queue(q), Op::Queue(op)) => q.apply(caller, op, body),
            (Object::Dict(d), Op::Dict(op)) => d.apply(op, body),
            (Object::List(l), Op::List(op)) => l.apply(op, body),
            (Object::Lock(l), Op::Lock(op)) => l.apply(caller, op, body),
            (Object::ManagedLock(l), Op::ManagedLock(op)) => l.apply(caller, op, body),
            (Object::Event(e), Op::Event(op)) => e.apply(caller, op, body),
            (Object::Segment(s), Op::Segment(op)) => s.apply(op, body),
            // An id names one object of one kind: this is a confused peer.
            _ => Outcome::Answer(Reply::failed(HostError::Malformed)),
        }
    }

    fn hosted(&mut self) -> &mut dyn Hosted {
        match self {
            Object::Queue(q) => q,
            Object::Dict(d) => d,
            Object::List(l) => l,
            Object::Lock(l) => l,
            Object::ManagedLock(l) => l,
            Object::Event(e) => e,
            Object::Segment(s) => s,
        }
    }
}

/// Gives back what an answer nobody took carries (an item, granted room): the operation that
/// returns it to `spec`'s object, with its body.
pub(crate) fn give_back(spec: Spec, reply: Reply) -> Option<(Op, Option<Body>)> {
    match (spec, reply.answer) {
        (Spec::Queue(spec), Answer::Op(OpReply::Queue(answer))) => {
            queue::give_back(spec, answer, reply.body).map(|(op, body)| (Op::Queue(op), body))
        }
        // A manager's lock granted to an acquire that gave up goes back at once.
        (Spec::ManagedLock(_), Answer::Value(_)) => Some((
            Op::ManagedLock(crate::protocol::ManagedLockOp::Release),
            None,
        )),
        _ => None,
    }
}

/// An object and its handles.
#[derive(Debug)]
struct Entry {
    /// Handles per owner; also who hears the object's close.
    handles: HashMap<Owner, u32>,
    /// Tokens of handles on their way to another process (`TransitOp`), each holding the
    /// object until its receiver takes it.
    transit: std::collections::HashSet<u64>,
    object: Object,
}

impl Entry {
    fn new(object: Object) -> Self {
        Entry {
            handles: HashMap::new(),
            transit: std::collections::HashSet::new(),
            object,
        }
    }

    fn is_idle(&mut self) -> bool {
        self.handles.is_empty() && self.transit.is_empty() && self.object.hosted().is_idle()
    }

    /// Applies `op`: a transit hold or take is the core's (for every kind), the rest the
    /// object's.
    fn apply(&mut self, caller: &mut Caller<'_>, op: Op, body: Option<Body>) -> Outcome {
        match op {
            Op::Transit(crate::protocol::TransitOp::Hold { token }) => {
                self.transit.insert(token);
                Outcome::Silent
            }
            Op::Transit(crate::protocol::TransitOp::Take { token }) => {
                self.transit.remove(&token);
                Outcome::Silent
            }
            op => self.object.apply(caller, op, body),
        }
    }
}

/// Sends `Closed` notices to the processes that hold a closed object.
pub(crate) trait Notifier: Send + Sync {
    fn closed(&self, obj: ObjectId);

    /// Asks the owner to give back what `obj` lent it (see [`Hosted::recalls`]).
    fn recall(&self, _obj: ObjectId) {}
}

/// Every hosted object of the run.
#[derive(Default)]
pub(crate) struct Store {
    objects: Mutex<HashMap<ObjectId, Entry>>,
    notifiers: Mutex<HashMap<Owner, Arc<dyn Notifier>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("objects", &lock(&self.objects).len())
            .finish()
    }
}

impl Store {
    /// Registers how `owner` hears about closed objects.
    pub(crate) fn attach(&self, owner: Owner, notifier: Arc<dyn Notifier>) {
        lock(&self.notifiers).insert(owner, notifier);
    }

    /// Applies request `request` of `owner` (with its `body`, if it has one). Returns the answer
    /// to give now, if any; a request that waits is answered later through the waiter that
    /// `waiter` makes (called only then).
    pub(crate) fn handle(
        self: &Arc<Self>,
        owner: Owner,
        request: HostReq,
        body: Option<Body>,
        waiter: &mut dyn FnMut() -> Box<dyn Waiter>,
    ) -> Option<Reply> {
        match request {
            HostReq::Open { obj, spec, .. } => {
                let closed = self.open(owner, obj, spec);
                Some(Reply::new(Answer::Value(u64::from(closed))))
            }
            HostReq::Sync { .. } => Some(Reply::new(Answer::Done)),
            HostReq::Release { obj } => {
                self.release(owner, obj);
                None
            }
            HostReq::Cancel { req, obj } => {
                self.withdraw(owner, obj, req);
                None
            }
            HostReq::Op { req, obj, op } => {
                let reply = self.apply(owner, req, obj, op, body, waiter);
                // A pipelined operation is never answered.
                reply.filter(|_| req != 0)
            }
        }
    }

    /// `owner` now holds one more handle to `obj`, created as `spec` if it does not exist.
    /// Returns whether the object is closed.
    fn open(&self, owner: Owner, obj: ObjectId, spec: Spec) -> bool {
        let mut objects = lock(&self.objects);
        let entry = objects
            .entry(obj)
            .or_insert_with(|| Entry::new(Object::new(spec)));
        *entry.handles.entry(owner).or_default() += 1;
        entry.object.hosted().is_closed()
    }

    /// `owner` dropped a handle to `obj`.
    fn release(&self, owner: Owner, obj: ObjectId) {
        self.with_existing(obj, |entry| {
            if let Some(n) = entry.handles.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    entry.handles.remove(&owner);
                }
            }
        });
    }

    /// Runs `f` on `obj` if it exists, and drops the object if it is idle afterwards.
    fn with_existing<R>(&self, obj: ObjectId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let mut objects = lock(&self.objects);
        let entry = objects.get_mut(&obj)?;
        let r = f(entry);
        if entry.is_idle() {
            objects.remove(&obj);
        }
        Some(r)
    }

    fn apply(
        self: &Arc<Self>,
        owner: Owner,
        req: u64,
        obj: ObjectId,
        op: Op,
        body: Option<Body>,
        waiter: &mut dyn FnMut() -> Box<dyn Waiter>,
    ) -> Option<Reply> {
        let mut objects = lock(&self.objects);
        let entry = match objects.entry(obj) {
            Slot::Occupied(e) => e.into_mut(),
            Slot::Vacant(v) => match Object::revive(&op) {
                Some(object) => v.insert(Entry::new(object)),
                // Only a process holding a handle sends operations, so the object exists: this
                // is a confused peer.
                None => return Some(Reply::failed(HostError::Closed)),
            },
        };
        let mut caller = Caller {
            owner,
            req,
            waiter,
            ended: None,
        };
        let outcome = entry.apply(&mut caller, op, body);
        let holders: Vec<Owner> = match outcome {
            Outcome::Closed => entry.handles.keys().copied().collect(),
            _ => Vec::new(),
        };
        let recalls = entry.object.hosted().recalls();
        if entry.is_idle() {
            objects.remove(&obj);
        }
        drop(objects);
        self.recall(obj, recalls);
        match outcome {
            Outcome::Answer(reply) => Some(reply),
            Outcome::Silent => None,
            Outcome::Waiting(wait) => {
                if let Some(ended) = caller.ended {
                    self.expire_after(owner, obj, req, wait, ended);
                }
                None
            }
            Outcome::Closed => {
                let notifiers = lock(&self.notifiers);
                for owner in holders {
                    if let Some(n) = notifiers.get(&owner) {
                        n.closed(obj);
                    }
                }
                Some(Reply::new(Answer::Done))
            }
        }
    }

    /// Sends a `Recall` of `obj` to each of `owners`.
    fn recall(&self, obj: ObjectId, owners: Vec<Owner>) {
        if owners.is_empty() {
            return;
        }
        let notifiers = lock(&self.notifiers);
        for owner in owners {
            if let Some(n) = notifiers.get(&owner) {
                n.recall(obj);
            }
        }
    }

    /// Fails waiting request `req` of `owner` with `Timeout` when `wait` runs out, unless it
    /// has ended by then (`ended` resolves): the timer does not outlive the request.
    fn expire_after(
        self: &Arc<Self>,
        owner: Owner,
        obj: ObjectId,
        req: u64,
        wait: Wait,
        ended: oneshot::Receiver<()>,
    ) {
        if let Wait::Micros(us) = wait {
            let store = Arc::clone(self);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_micros(us)) => {
                        store.withdraw(owner, obj, req);
                    }
                    _ = ended => {}
                }
            });
        }
    }

    /// Ends waiting request `req` of `owner` (its time ran out, or its caller cancelled it):
    /// if it is still waiting, it is answered `Failed(Timeout)`. Returns whether it was.
    pub(crate) fn withdraw(&self, owner: Owner, obj: ObjectId, req: u64) -> bool {
        let Some(waiting) = self
            .with_existing(obj, |entry| entry.object.hosted().withdraw(owner, req))
            .flatten()
        else {
            return false;
        };
        let _ = waiting.deliver(Reply::failed(HostError::Timeout));
        true
    }

    /// Everything `owner` held goes: handles, waiting requests, and what its kinds say (a
    /// joinable queue puts back the items it took and did not finish).
    pub(crate) fn owner_gone(&self, owner: Owner) {
        lock(&self.notifiers).remove(&owner);
        let mut objects = lock(&self.objects);
        let mut recalls = Vec::new();
        for (obj, entry) in objects.iter_mut() {
            entry.handles.remove(&owner);
            entry.object.hosted().owner_gone(owner);
            recalls.push((*obj, entry.object.hosted().recalls()));
        }
        objects.retain(|_, entry| !entry.is_idle());
        drop(objects);
        for (obj, owners) in recalls {
            self.recall(obj, owners);
        }
    }
}
