//! The root's object host: the state of every queue of the run, and the rules that keep every
//! item delivered exactly once.
//!
//! One [`Store`] lives in the root process. The root's own handles call it directly; every other
//! process reaches it through one connection to the root's hub (see `serve`), and is an
//! [`Owner`] here. The store never decodes an item: items are the postcard bytes of the user's
//! value.
//!
//! Rules:
//! - Items go out in the order they came in; a waiting getter gets the next item directly.
//! - A bounded queue counts granted reservations as taken room, so the items held plus the room
//!   reserved never exceed the capacity, however many producers there are. The one exception:
//!   an item that comes back (a get abandoned after the item was sent, or a joinable item whose
//!   taker died) returns to the front even if its room was granted meanwhile; no more room is
//!   granted until the queue is below capacity again.
//! - When an owner goes away (its process died or dropped its connection), its handles, its
//!   unused reservations and its waiting requests go with it; the items it had taken from a
//!   joinable queue and not marked done go back to the front of that queue.
//! - An object is dropped when no owner holds a handle and it holds nothing anyone could still
//!   want (no item, no unfinished task). A closed queue is kept, so that a handle still in transit
//!   finds it closed rather than a fresh open queue.

use crate::protocol::{HostError, ObjectId, QueueSpec, Wait};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// An encoded item.
pub(crate) type Item = Arc<Vec<u8>>;

/// Who holds handles and takes items: `ROOT` for the root process, a connection number for
/// every other process.
pub(crate) type Owner = u64;

/// The root process's own owner id.
pub(crate) const ROOT: Owner = 0;

/// The answer to a waiting request.
#[derive(Debug)]
pub(crate) enum Reply {
    Item { seq: u64, item: Item },
    Granted,
    Value(u64),
    Done,
    Failed(HostError),
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

struct Waiting {
    owner: Owner,
    req: u64,
    waiter: Box<dyn Waiter>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("owner", &self.owner)
            .field("req", &self.req)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct QueueState {
    spec: QueueSpec,
    items: VecDeque<(u64, Item)>,
    next_seq: u64,
    /// Room granted to producers and not yet filled, per owner.
    reserved: HashMap<Owner, u32>,
    reserved_total: usize,
    closed: bool,
    /// Items put and not yet marked done (joinable queues).
    unfinished: u64,
    getters: VecDeque<Waiting>,
    reservers: VecDeque<Waiting>,
    joiners: Vec<Waiting>,
    handles: HashMap<Owner, u32>,
    /// Items each owner took from a joinable queue and has not marked done, oldest first.
    taken: HashMap<Owner, VecDeque<(u64, Item)>>,
    /// The owners that must hear about a close.
    watchers: Vec<Owner>,
}

impl QueueState {
    fn new(spec: QueueSpec) -> Self {
        QueueState {
            spec,
            items: VecDeque::new(),
            next_seq: 0,
            reserved: HashMap::new(),
            reserved_total: 0,
            closed: false,
            unfinished: 0,
            getters: VecDeque::new(),
            reservers: VecDeque::new(),
            joiners: Vec::new(),
            handles: HashMap::new(),
            taken: HashMap::new(),
            watchers: Vec::new(),
        }
    }

    fn has_room(&self) -> bool {
        match self.spec.capacity {
            None => true,
            Some(cap) => self.items.len() + self.reserved_total < cap as usize,
        }
    }

    /// Nothing anyone could still want: no handle, no item, no reservation, no unfinished task.
    /// A closed queue is kept: a handle still on its way to another process must find it closed.
    fn is_idle(&self) -> bool {
        !self.closed
            && self.handles.is_empty()
            && self.items.is_empty()
            && self.unfinished == 0
            && self.reserved_total == 0
            && self.taken.values().all(VecDeque::is_empty)
    }

    /// Hands items from the front to waiting getters while both exist (getters that stopped
    /// listening are skipped; their item stays in front for the next one), then gives the
    /// room that freed to waiting producers. Every change to the items or the room ends here.
    fn settle(&mut self) {
        while !self.items.is_empty() {
            let Some(w) = self.getters.pop_front() else {
                break;
            };
            let Some((seq, item)) = self.items.pop_front() else {
                break;
            };
            let owner = w.owner;
            let kept = Arc::clone(&item);
            match w.waiter.deliver(Reply::Item { seq, item }) {
                Ok(()) => {
                    if self.spec.joinable {
                        self.taken.entry(owner).or_default().push_back((seq, kept));
                    }
                }
                Err(_) => self.items.push_front((seq, kept)),
            }
        }
        self.grant();
    }

    /// Puts items taken by a process that died (or by an abandoned get) back in front, in
    /// their order.
    fn give_back(&mut self, taken: impl DoubleEndedIterator<Item = (u64, Item)>) {
        for entry in taken.rev() {
            self.items.push_front(entry);
        }
        self.settle();
    }

    /// Gives free room to waiting producers, first come first served.
    fn grant(&mut self) {
        while self.has_room() {
            let Some(w) = self.reservers.pop_front() else {
                return;
            };
            let owner = w.owner;
            if w.waiter.deliver(Reply::Granted).is_ok() {
                self.add_reservation(owner);
            }
        }
    }

    fn add_reservation(&mut self, owner: Owner) {
        *self.reserved.entry(owner).or_default() += 1;
        self.reserved_total += 1;
    }

    fn use_reservation(&mut self, owner: Owner) {
        if let Some(n) = self.reserved.get_mut(&owner) {
            if *n > 0 {
                *n -= 1;
                self.reserved_total -= 1;
            }
        }
    }

    fn return_reservations(&mut self, owner: Owner, count: u32) {
        if let Some(n) = self.reserved.get_mut(&owner) {
            let back = count.min(*n);
            *n -= back;
            self.reserved_total -= back as usize;
            if *n == 0 {
                self.reserved.remove(&owner);
            }
        }
        self.grant();
    }

    fn take(&mut self, owner: Owner) -> Option<(u64, Item)> {
        let (seq, item) = self.items.pop_front()?;
        if self.spec.joinable {
            self.taken
                .entry(owner)
                .or_default()
                .push_back((seq, Arc::clone(&item)));
        }
        self.settle();
        Some((seq, item))
    }

    fn wake_joiners(&mut self) {
        if self.unfinished == 0 {
            for w in self.joiners.drain(..) {
                let _ = w.waiter.deliver(Reply::Done);
            }
        }
    }
}

/// Sends `Closed` notices to the processes that hold a closed queue.
pub(crate) trait Notifier: Send + Sync {
    fn closed(&self, owner: Owner, obj: ObjectId);
}

/// Every hosted object of the run.
#[derive(Default)]
pub(crate) struct Store {
    queues: Mutex<HashMap<ObjectId, QueueState>>,
    notifiers: Mutex<HashMap<Owner, Arc<dyn Notifier>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("queues", &lock(&self.queues).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Runs `f` on queue `obj`, creating it as `spec` if it does not exist.
    fn with<R>(&self, obj: ObjectId, spec: QueueSpec, f: impl FnOnce(&mut QueueState) -> R) -> R {
        let mut queues = lock(&self.queues);
        let q = queues.entry(obj).or_insert_with(|| QueueState::new(spec));
        let r = f(q);
        if q.is_idle() {
            queues.remove(&obj);
        }
        r
    }

    /// Runs `f` on queue `obj` if it exists.
    fn with_existing<R>(&self, obj: ObjectId, f: impl FnOnce(&mut QueueState) -> R) -> Option<R> {
        let mut queues = lock(&self.queues);
        let q = queues.get_mut(&obj)?;
        let r = f(q);
        if q.is_idle() {
            queues.remove(&obj);
        }
        Some(r)
    }

    /// Registers how `owner` hears about closed queues.
    pub(crate) fn attach(&self, owner: Owner, notifier: Arc<dyn Notifier>) {
        lock(&self.notifiers).insert(owner, notifier);
    }

    /// `owner` now holds one more handle to `obj`. Returns whether the queue is closed.
    pub(crate) fn open(&self, owner: Owner, obj: ObjectId, spec: QueueSpec) -> bool {
        self.with(obj, spec, |q| {
            *q.handles.entry(owner).or_default() += 1;
            if !q.watchers.contains(&owner) {
                q.watchers.push(owner);
            }
            q.closed
        })
    }

    /// `owner` dropped a handle to `obj`.
    pub(crate) fn release(&self, owner: Owner, obj: ObjectId) {
        self.with_existing(obj, |q| {
            if let Some(n) = q.handles.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    q.handles.remove(&owner);
                    q.watchers.retain(|w| *w != owner);
                }
            }
        });
    }

    /// Gives back `credits` reservations `owner` will not use.
    pub(crate) fn unreserve(&self, owner: Owner, obj: ObjectId, credits: u32) {
        self.with_existing(obj, |q| q.return_reservations(owner, credits));
    }

    /// Appends an item (using one of `owner`'s reservations on a bounded queue). Items that
    /// arrive after a close are kept: their producer sent them before it learned of the close.
    pub(crate) fn put(&self, owner: Owner, obj: ObjectId, spec: QueueSpec, item: Item) {
        self.with(obj, spec, |q| {
            // Room for an item of an unbounded queue is never reserved.
            if q.spec.capacity.is_some() {
                q.use_reservation(owner);
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            if q.spec.joinable {
                q.unfinished += 1;
            }
            q.items.push_back((seq, item));
            q.settle();
        });
    }

    /// Reserves room for one item in a bounded queue: `Ok(true)` if granted now, `Ok(false)` if
    /// a waiter (made by `waiter`, only then) was queued (it hears `Granted` or `Failed(Closed)`), `Err` on failure.
    pub(crate) fn reserve(
        &self,
        owner: Owner,
        obj: ObjectId,
        spec: QueueSpec,
        req: u64,
        wait: Wait,
        waiter: impl FnOnce() -> Box<dyn Waiter>,
    ) -> Result<bool, HostError> {
        self.with(obj, spec, |q| {
            if q.closed {
                return Err(HostError::Closed);
            }
            if q.has_room() && q.reservers.is_empty() {
                q.add_reservation(owner);
                return Ok(true);
            }
            if wait == Wait::No {
                return Err(HostError::Full);
            }
            q.reservers.push_back(Waiting {
                owner,
                req,
                waiter: waiter(),
            });
            Ok(false)
        })
    }

    /// Takes the next item: `Ok(Some)` now, `Ok(None)` if the waiter was queued (it hears
    /// `Item` or `Failed(Closed)`), `Err` when empty and not waiting, or closed and drained.
    pub(crate) fn get(
        &self,
        owner: Owner,
        obj: ObjectId,
        spec: QueueSpec,
        req: u64,
        wait: Wait,
        waiter: impl FnOnce() -> Box<dyn Waiter>,
    ) -> Result<Option<(u64, Item)>, HostError> {
        self.with(obj, spec, |q| {
            if let Some(taken) = q.take(owner) {
                return Ok(Some(taken));
            }
            if q.closed {
                return Err(HostError::Closed);
            }
            if wait == Wait::No {
                return Err(HostError::Empty);
            }
            q.getters.push_back(Waiting {
                owner,
                req,
                waiter: waiter(),
            });
            Ok(None)
        })
    }

    /// Withdraws a waiting get, reservation or join. Returns its waiter if it was still
    /// waiting; `None` means its answer was already given.
    pub(crate) fn cancel(&self, owner: Owner, obj: ObjectId, req: u64) -> Option<Box<dyn Waiter>> {
        self.with_existing(obj, |q| {
            let matches = |w: &Waiting| w.owner == owner && w.req == req;
            if let Some(i) = q.getters.iter().position(matches) {
                return q.getters.remove(i).map(|w| w.waiter);
            }
            if let Some(i) = q.reservers.iter().position(matches) {
                return q.reservers.remove(i).map(|w| w.waiter);
            }
            if let Some(i) = q.joiners.iter().position(matches) {
                return Some(q.joiners.swap_remove(i).waiter);
            }
            None
        })
        .flatten()
    }

    /// Puts back, at the front, an item delivered for a get its caller abandoned.
    pub(crate) fn requeue(
        &self,
        owner: Owner,
        obj: ObjectId,
        spec: QueueSpec,
        seq: u64,
        item: Item,
    ) {
        self.with(obj, spec, |q| {
            if let Some(taken) = q.taken.get_mut(&owner) {
                if let Some(i) = taken.iter().position(|(s, _)| *s == seq) {
                    taken.remove(i);
                }
            }
            // Room is not re-checked: while the item was out, its room may have been granted to
            // a producer, so a bounded queue can hold more than its capacity until it drains.
            q.give_back(std::iter::once((seq, item)));
        });
    }

    /// Whether `obj` was closed.
    pub(crate) fn is_closed(&self, obj: ObjectId) -> bool {
        self.with_existing(obj, |q| q.closed).unwrap_or(false)
    }

    /// How many items `obj` holds now.
    pub(crate) fn len(&self, obj: ObjectId) -> usize {
        self.with_existing(obj, |q| q.items.len()).unwrap_or(0)
    }

    /// Closes `obj` for everyone: waiting producers fail, waiting consumers fail once nothing
    /// is left, and every process holding it hears of it.
    pub(crate) fn close(&self, obj: ObjectId, spec: QueueSpec) {
        let watchers = self.with(obj, spec, |q| {
            q.closed = true;
            for w in q.reservers.drain(..) {
                let _ = w.waiter.deliver(Reply::Failed(HostError::Closed));
            }
            if q.items.is_empty() {
                for w in q.getters.drain(..) {
                    let _ = w.waiter.deliver(Reply::Failed(HostError::Closed));
                }
            }
            q.watchers.clone()
        });
        let notifiers = lock(&self.notifiers);
        for owner in watchers {
            if let Some(n) = notifiers.get(&owner) {
                n.closed(owner, obj);
            }
        }
    }

    /// Marks the oldest item `owner` took from a joinable queue as done.
    ///
    /// # Errors
    /// `false` when `owner` holds no unfinished item of this queue.
    pub(crate) fn task_done(&self, owner: Owner, obj: ObjectId) -> bool {
        self.with_existing(obj, |q| {
            let Some(taken) = q.taken.get_mut(&owner) else {
                return false;
            };
            if taken.pop_front().is_none() {
                return false;
            }
            if taken.is_empty() {
                q.taken.remove(&owner);
            }
            q.unfinished = q.unfinished.saturating_sub(1);
            q.wake_joiners();
            true
        })
        .unwrap_or(false)
    }

    /// `Ok(true)` if every item put is done; otherwise the waiter hears `Done` when they are.
    pub(crate) fn join(
        &self,
        owner: Owner,
        obj: ObjectId,
        spec: QueueSpec,
        req: u64,
        waiter: impl FnOnce() -> Box<dyn Waiter>,
    ) -> bool {
        self.with(obj, spec, |q| {
            if q.unfinished == 0 {
                return true;
            }
            q.joiners.push(Waiting {
                owner,
                req,
                waiter: waiter(),
            });
            false
        })
    }

    /// Everything `owner` held goes: handles, reservations, waiting requests. Items it took
    /// from joinable queues and did not finish go back to the front, oldest first.
    pub(crate) fn owner_gone(&self, owner: Owner) {
        lock(&self.notifiers).remove(&owner);
        let mut queues = lock(&self.queues);
        for q in queues.values_mut() {
            q.handles.remove(&owner);
            q.watchers.retain(|w| *w != owner);
            q.getters.retain(|w| w.owner != owner);
            q.reservers.retain(|w| w.owner != owner);
            q.joiners.retain(|w| w.owner != owner);
            if let Some(taken) = q.taken.remove(&owner) {
                q.give_back(taken.into_iter());
            }
            if let Some(n) = q.reserved.remove(&owner) {
                q.reserved_total -= n as usize;
            }
            q.grant();
        }
        queues.retain(|_, q| !q.is_idle());
    }
}
