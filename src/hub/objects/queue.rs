//! A hosted queue: the state of one `Queue`, `SimpleQueue` or `JoinableQueue`, and the rules
//! that keep every item delivered exactly once.
//!
//! Rules:
//! - Items go out in the order they came in; a waiting getter gets the next item directly.
//! - A bounded queue counts granted reservations as taken room, so the items held plus the room
//!   reserved never exceed the capacity, however many producers there are. The one exception:
//!   an item that comes back (a get abandoned after the item was sent, or a joinable item whose
//!   taker died) returns to the front even if its room was granted meanwhile; no more room is
//!   granted until the queue is below capacity again.
//! - When an owner goes away, its unused reservations and its waiting requests go with it; the
//!   items it had taken from a joinable queue and not marked done, and the items lent to it and
//!   not taken, go back to the front, in order.
//! - A `Fetch` (every process but the root) is *lent* its items: they stay in `lent` until a
//!   `Took` says a get took them or a `GiveBack` returns them. Items beyond the one asked for
//!   are *prefetched*; while one owner holds any (the lease), a get of any other owner waits
//!   and the holder is recalled, so no get sees an item overtake an older one. Lent items
//!   count in `len` and as taken room. See `src/hub/README.md` ("Gets in a child without a
//!   round trip each").
//! - A queue is idle (and dropped once no handle is left) when it holds no item, reservation,
//!   lent item or unfinished task. A closed queue is never idle, so that a handle still in transit finds it
//!   closed rather than a fresh open queue.

use super::{Body, Caller, Hosted, Outcome, Owner, Reply, Waiters, Waiting};
use crate::buffers::IntoShared;
use crate::protocol::{
    join_items, split_seqs, Answer, HostError, QueueOp, QueueReply, QueueSpec, Wait,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most bytes of items lent in one batch beyond the first (a larger item goes alone).
const BATCH_BYTES: usize = 256 << 10;

/// How long a `try_get` waits for items lent to another process to come back before it
/// says `Empty` (they come back within one message there and back unless that process is
/// stopped).
const TRY_WAIT_MICROS: u64 = 100_000;

/// An item lent to a process by a `Fetch`, not yet taken there nor given back.
#[derive(Debug)]
struct Lent {
    seq: u64,
    item: Body,
    /// Prefetched: sent beyond the item the get asked for, so it sits in the process until a
    /// get there takes it or a recall brings it back.
    prefetched: bool,
}

/// The one process that holds prefetched items, and whether it was asked for them back.
#[derive(Debug, Clone, Copy)]
struct Lease {
    owner: Owner,
    recalled: bool,
}

/// One queue.
#[derive(Debug)]
pub(crate) struct QueueState {
    spec: QueueSpec,
    items: VecDeque<(u64, Body)>,
    next_seq: u64,
    /// Room granted to producers and not yet filled, per owner.
    reserved: HashMap<Owner, u32>,
    reserved_total: usize,
    closed: bool,
    /// Items put and not yet marked done (joinable queues).
    unfinished: u64,
    getters: Waiters,
    reservers: Waiters,
    joiners: Waiters,
    /// Items each owner took from a joinable queue and has not marked done, oldest first.
    taken: HashMap<Owner, VecDeque<(u64, Body)>>,
    /// What it lent (boxed: most queues have no consumer outside the root).
    lending: Box<Lending>,
}

/// What a queue lent to processes other than the root.
#[derive(Debug)]
struct Lending {
    /// Items lent to each owner by `Fetch`es and not yet taken or given back, oldest first.
    lent: HashMap<Owner, VecDeque<Lent>>,
    lent_total: usize,
    /// Who holds prefetched items, if anyone.
    lease: Option<Lease>,
    /// How many items each waiting `Fetch` may be lent, by owner and request.
    fetching: HashMap<(Owner, u64), u32>,
    /// Owners to send a `Recall` (see `Hosted::recalls`).
    recalls: Vec<Owner>,
    /// The most items the next batch may hold: doubled by each `Fetch` from the process that
    /// sent the one before, back to 1 when another process fetches (competing consumers get
    /// one item at a time, so nothing is lent where it may be wanted elsewhere).
    batch_cap: u32,
    last_fetcher: Option<Owner>,
}

impl QueueState {
    pub(crate) fn new(spec: QueueSpec) -> Self {
        QueueState {
            spec,
            items: VecDeque::new(),
            next_seq: 0,
            reserved: HashMap::new(),
            reserved_total: 0,
            closed: false,
            unfinished: 0,
            getters: Waiters::default(),
            reservers: Waiters::default(),
            joiners: Waiters::default(),
            taken: HashMap::new(),
            lending: Box::new(Lending {
                lent: HashMap::new(),
                lent_total: 0,
                lease: None,
                fetching: HashMap::new(),
                recalls: Vec::new(),
                batch_cap: 1,
                last_fetcher: None,
            }),
        }
    }

    /// An item given back after its queue was dropped (its last handle released while the item
    /// was on its way to a get that was abandoned) makes the queue again.
    pub(crate) fn revive(op: &QueueOp) -> Option<Self> {
        match op {
            QueueOp::Requeue { spec, .. } => Some(QueueState::new(*spec)),
            _ => None,
        }
    }

    /// Applies one operation of `caller`.
    pub(crate) fn apply(
        &mut self,
        caller: &mut Caller<'_>,
        op: QueueOp,
        body: Option<Body>,
    ) -> Outcome {
        let owner = caller.owner;
        match op {
            QueueOp::Put => {
                self.put(owner, body.unwrap_or_default());
                Outcome::Silent
            }
            QueueOp::Reserve { wait } => self.reserve(caller, wait),
            QueueOp::Unreserve { count } => {
                self.return_reservations(owner, count);
                Outcome::Silent
            }
            QueueOp::Get { wait } => self.get(caller, wait, None),
            QueueOp::Fetch { wait, most } => self.get(caller, wait, Some(most.max(1))),
            QueueOp::Took { seq } => {
                self.took(owner, seq);
                Outcome::Silent
            }
            QueueOp::GiveBack => {
                let seqs = body.and_then(|b| split_seqs(&b)).unwrap_or_default();
                self.given_back(owner, &seqs);
                Outcome::Silent
            }
            QueueOp::Requeue { seq, .. } => {
                self.requeue(owner, seq, body.unwrap_or_default());
                Outcome::Silent
            }
            QueueOp::Len => Outcome::Answer(Reply::new(Answer::Value(
                (self.items.len() + self.lending.lent_total) as u64,
            ))),
            QueueOp::Close => {
                self.close();
                Outcome::Closed
            }
            QueueOp::TaskDone => {
                // The client checks its own count first; a surplus here is ignored.
                self.task_done(owner);
                Outcome::Silent
            }
            QueueOp::Join => {
                if self.unfinished == 0 {
                    return Outcome::Answer(Reply::new(Answer::Done));
                }
                self.joiners.push(caller.waiting(Wait::Forever));
                Outcome::Waiting(Wait::Forever)
            }
        }
    }

    fn has_room(&self) -> bool {
        match self.spec.capacity {
            None => true,
            Some(cap) => {
                self.items.len() + self.lending.lent_total + self.reserved_total < cap as usize
            }
        }
    }

    /// Appends an item (using one of `owner`'s reservations on a bounded queue). Items that
    /// arrive after a close are kept: their producer sent them before it learned of the close.
    fn put(&mut self, owner: Owner, item: Body) {
        // Room for an item of an unbounded queue is never reserved.
        if self.spec.capacity.is_some() {
            self.use_reservation(owner);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.spec.joinable {
            self.unfinished += 1;
        }
        self.items.push_back((seq, item));
        self.settle();
    }

    /// Reserves room for one item in a bounded queue: granted now, failed, or queued until
    /// room comes free (first come first served) or the queue is closed.
    fn reserve(&mut self, caller: &mut Caller<'_>, wait: Wait) -> Outcome {
        if self.closed {
            return Outcome::Answer(Reply::failed(HostError::Closed));
        }
        if self.has_room() && self.reservers.is_empty() {
            self.add_reservation(caller.owner);
            return Outcome::Answer(Reply::op(QueueReply::Granted, None));
        }
        if wait == Wait::No {
            return Outcome::Answer(Reply::failed(HostError::Full));
        }
        self.reservers.push(caller.waiting(wait));
        Outcome::Waiting(wait)
    }

    /// Takes the next item now, or queues the getter (it hears `Item`, `Batch` or
    /// `Failed(Closed)`); fails when empty and not waiting, or closed and drained. `most` is a
    /// `Fetch`'s batch (its items are lent); `None` for a `Get` (its item is taken at once).
    fn get(&mut self, caller: &mut Caller<'_>, wait: Wait, most: Option<u32>) -> Outcome {
        let owner = caller.owner;
        if most.is_some() {
            self.note_fetcher(owner);
        }
        let blocked = self.blocked(owner) || !self.getters.is_empty();
        if !blocked {
            if !self.items.is_empty() {
                let (reply, _) = self.hand_out(owner, most);
                self.settle();
                return Outcome::Answer(reply);
            }
            if self.closed {
                return Outcome::Answer(Reply::failed(HostError::Closed));
            }
            if wait == Wait::No {
                return Outcome::Answer(Reply::failed(HostError::Empty));
            }
        }
        // Waiting behind a lease: a `try_get` waits a bounded time for the items to come
        // back (its caller hears `Timeout` as `Empty`).
        let wait = match wait {
            Wait::No => Wait::Micros(TRY_WAIT_MICROS),
            other => other,
        };
        let waiting = caller.waiting(wait);
        if let Some(most) = most {
            self.lending.fetching.insert((owner, waiting.req()), most);
        }
        self.getters.push(waiting);
        self.settle();
        Outcome::Waiting(wait)
    }

    /// A `Fetch` of `owner`: batches grow while one process fetches alone.
    fn note_fetcher(&mut self, owner: Owner) {
        if self.lending.last_fetcher == Some(owner) {
            self.lending.batch_cap = self.lending.batch_cap.saturating_mul(2);
        } else {
            self.lending.batch_cap = 1;
            self.lending.last_fetcher = Some(owner);
        }
    }

    /// Whether a get of `owner` must wait for prefetched items to come back: another process
    /// holds them (they come before anything here), or this one does and nothing is here.
    fn blocked(&self, owner: Owner) -> bool {
        self.lending
            .lease
            .is_some_and(|lease| lease.owner != owner || self.items.is_empty())
    }

    /// Hands items from the front to waiting getters while both exist (getters that stopped
    /// listening are skipped; their items stay in front for the next one), asks for
    /// prefetched items back when they hold up the first getter, fails the getters of a
    /// closed queue once nothing is left anywhere, then gives the room that freed to waiting
    /// producers. Every change to the items, the loans or the room ends here.
    fn settle(&mut self) {
        while let Some(front) = self.getters.front() {
            let owner = front.owner;
            if self.blocked(owner) {
                self.recall();
                break;
            }
            if self.items.is_empty() {
                break;
            }
            let Some(w) = self.getters.pop() else {
                break;
            };
            let most = self.lending.fetching.remove(&(owner, w.req()));
            let (reply, out) = self.hand_out(owner, most);
            if w.deliver(reply).is_err() {
                self.undo(owner, out);
            }
        }
        if self.closed && self.items.is_empty() && self.lending.lease.is_none() {
            for w in self.getters.drain() {
                self.lending.fetching.remove(&(w.owner, w.req()));
                let _ = w.deliver(Reply::failed(HostError::Closed));
            }
        }
        self.grant();
    }

    /// Asks the lease's holder for its prefetched items (once per lease).
    fn recall(&mut self) {
        if let Some(lease) = &mut self.lending.lease {
            if !lease.recalled {
                lease.recalled = true;
                self.lending.recalls.push(lease.owner);
            }
        }
    }

    /// How many items from the front one `Fetch` may be lent: up to `most` and the batch cap,
    /// and beyond the first only small ones up to [`BATCH_BYTES`] in all; one while others
    /// wait behind.
    fn batch_len(&self, most: u32) -> usize {
        if !self.getters.is_empty() {
            return 1;
        }
        let mut bytes = 0;
        let mut n = 0;
        for (_, item) in self
            .items
            .iter()
            .take(most.min(self.lending.batch_cap) as usize)
        {
            bytes += item.len();
            if n > 0 && bytes > BATCH_BYTES {
                break;
            }
            n += 1;
        }
        n.max(1)
    }

    /// Takes items from the front for a get of `owner` (at least one must be there): one
    /// taken for a `Get`, a batch lent for a `Fetch`. Returns the answer and what went out.
    fn hand_out(&mut self, owner: Owner, most: Option<u32>) -> (Reply, Vec<(u64, Body)>) {
        let n = most.map_or(1, |most| self.batch_len(most).min(self.items.len()));
        let out: Vec<(u64, Body)> = self.items.drain(..n).collect();
        let Some(_) = most else {
            if self.spec.joinable {
                self.taken
                    .entry(owner)
                    .or_default()
                    .extend(out.iter().cloned());
            }
            let (seq, item) = out[0].clone();
            return (Reply::op(QueueReply::Item { seq }, Some(item)), out);
        };
        let lent = self.lending.lent.entry(owner).or_default();
        for (i, (seq, item)) in out.iter().enumerate() {
            lent.push_back(Lent {
                seq: *seq,
                item: Arc::clone(item),
                prefetched: i > 0,
            });
        }
        self.lending.lent_total += n;
        if n == 1 {
            let (seq, item) = out[0].clone();
            return (Reply::op(QueueReply::Item { seq }, Some(item)), out);
        }
        if self.lending.lease.is_none() {
            self.lending.lease = Some(Lease {
                owner,
                recalled: false,
            });
        }
        match join_items(out.iter().map(|(seq, item)| (*seq, &item[..]))) {
            Ok(body) => (Reply::op(QueueReply::Batch, Some(body.into_shared())), out),
            // Unreachable: a batch holds items far below 4 GiB. Nothing goes out.
            Err(_) => {
                self.undo(owner, out);
                (Reply::failed(HostError::Malformed), Vec::new())
            }
        }
    }

    /// Puts back what [`QueueState::hand_out`] gave to a get that stopped listening.
    fn undo(&mut self, owner: Owner, out: Vec<(u64, Body)>) {
        let seqs: Vec<u64> = out.iter().map(|(seq, _)| *seq).collect();
        self.unlend(owner, &seqs);
        if let Some(taken) = self.taken.get_mut(&owner) {
            taken.retain(|(seq, _)| !seqs.contains(seq));
        }
        for entry in out.into_iter().rev() {
            self.items.push_front(entry);
        }
    }

    /// Ends the loan of items `seqs` to `owner` (taken there, or back): returns them, oldest
    /// first, and ends the lease when `owner` holds no prefetched item any more.
    fn unlend(&mut self, owner: Owner, seqs: &[u64]) -> Vec<(u64, Body)> {
        let mut back = Vec::new();
        if let Some(lent) = self.lending.lent.get_mut(&owner) {
            for &seq in seqs {
                if let Some(i) = lent.iter().position(|l| l.seq == seq) {
                    if let Some(l) = lent.remove(i) {
                        back.push((l.seq, l.item));
                    }
                }
            }
            self.lending.lent_total -= back.len();
            let prefetched = lent.iter().any(|l| l.prefetched);
            if lent.is_empty() {
                self.lending.lent.remove(&owner);
            }
            if !prefetched && self.lending.lease.is_some_and(|l| l.owner == owner) {
                self.lending.lease = None;
            }
        }
        back.sort_by_key(|(seq, _)| *seq);
        back
    }

    /// A get of `owner` took lent item `seq`: from a joinable queue it now waits for its
    /// `task_done`.
    fn took(&mut self, owner: Owner, seq: u64) {
        let taken = self.unlend(owner, &[seq]);
        if self.spec.joinable {
            self.taken.entry(owner).or_default().extend(taken);
        }
        self.settle();
    }

    /// `owner` gave back lent items `seqs` (all it held untaken): they go back in front. The
    /// lease it held ends (a batch sent after the recall would start a new one).
    fn given_back(&mut self, owner: Owner, seqs: &[u64]) {
        let back = self.unlend(owner, seqs);
        if let Some(lease) = &mut self.lending.lease {
            if lease.owner == owner {
                // Items it still holds came after the recall was answered; a recall asks again.
                lease.recalled = false;
            }
        }
        self.give_back(back.into_iter());
    }

    /// Puts items taken by a process that died (or by an abandoned get) back in front, in
    /// their order.
    fn give_back(&mut self, taken: impl DoubleEndedIterator<Item = (u64, Body)>) {
        for entry in taken.rev() {
            self.items.push_front(entry);
        }
        self.settle();
    }

    /// Gives free room to waiting producers, first come first served.
    fn grant(&mut self) {
        while self.has_room() {
            let Some(w) = self.reservers.pop() else {
                return;
            };
            let owner = w.owner;
            if w.deliver(Reply::op(QueueReply::Granted, None)).is_ok() {
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

    /// Puts back, at the front, an item delivered for a get its caller abandoned.
    fn requeue(&mut self, owner: Owner, seq: u64, item: Body) {
        if let Some(taken) = self.taken.get_mut(&owner) {
            if let Some(i) = taken.iter().position(|(s, _)| *s == seq) {
                taken.remove(i);
            }
        }
        // Room is not re-checked: while the item was out, its room may have been granted to
        // a producer, so a bounded queue can hold more than its capacity until it drains.
        self.give_back(std::iter::once((seq, item)));
    }

    /// Closes the queue for everyone: waiting producers fail, and waiting consumers fail once
    /// nothing is left (the core then tells every holder).
    fn close(&mut self) {
        self.closed = true;
        for w in self.reservers.drain() {
            let _ = w.deliver(Reply::failed(HostError::Closed));
        }
        // Getters fail once nothing is left, here or lent.
        self.settle();
    }

    /// Marks the oldest item `owner` took from a joinable queue as done; `false` when it holds
    /// none.
    fn task_done(&mut self, owner: Owner) -> bool {
        let Some(taken) = self.taken.get_mut(&owner) else {
            return false;
        };
        if taken.pop_front().is_none() {
            return false;
        }
        if taken.is_empty() {
            self.taken.remove(&owner);
        }
        self.unfinished = self.unfinished.saturating_sub(1);
        if self.unfinished == 0 {
            for w in self.joiners.drain() {
                let _ = w.deliver(Reply::new(Answer::Done));
            }
        }
        true
    }
}

impl Hosted for QueueState {
    fn withdraw(&mut self, owner: Owner, req: u64) -> Option<Waiting> {
        self.lending.fetching.remove(&(owner, req));
        self.getters
            .withdraw(owner, req)
            .or_else(|| self.reservers.withdraw(owner, req))
            .or_else(|| self.joiners.withdraw(owner, req))
    }

    fn owner_gone(&mut self, owner: Owner) {
        self.getters.forget(owner);
        self.reservers.forget(owner);
        self.joiners.forget(owner);
        self.lending.fetching.retain(|(o, _), _| *o != owner);
        // What it took unfinished and what it was lent untaken go back in front, in order.
        let seqs: Vec<u64> = self
            .lending
            .lent
            .get(&owner)
            .map(|lent| lent.iter().map(|l| l.seq).collect())
            .unwrap_or_default();
        let mut back = self.unlend(owner, &seqs);
        if self.lending.lease.is_some_and(|l| l.owner == owner) {
            self.lending.lease = None;
        }
        back.extend(self.taken.remove(&owner).unwrap_or_default());
        back.sort_by_key(|(seq, _)| *seq);
        if let Some(n) = self.reserved.remove(&owner) {
            self.reserved_total -= n as usize;
        }
        self.give_back(back.into_iter());
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn is_idle(&self) -> bool {
        !self.closed
            && self.items.is_empty()
            && self.unfinished == 0
            && self.reserved_total == 0
            && self.taken.values().all(VecDeque::is_empty)
            && self.lending.lent.is_empty()
    }

    fn recalls(&mut self) -> Vec<Owner> {
        std::mem::take(&mut self.lending.recalls)
    }
}

/// What gives back an answer nobody took: an item goes back to the front of the queue, granted
/// room goes back to the queue.
pub(crate) fn give_back(
    spec: QueueSpec,
    answer: QueueReply,
    body: Option<Body>,
) -> Option<(QueueOp, Option<Body>)> {
    match answer {
        QueueReply::Item { seq } => Some((QueueOp::Requeue { seq, spec }, body)),
        QueueReply::Granted => Some((QueueOp::Unreserve { count: 1 }, None)),
        // Lent items go back from the process that holds them (`GiveBack`), never from here.
        QueueReply::Batch => None,
    }
}

/// The queue's state machine through the store's core, without processes or sockets: each
/// owner is a number, each waiting request a channel.
#[cfg(test)]
mod tests {
    use super::super::{lock, Body, Notifier, Reply, Store, Waiter};
    use crate::protocol::{
        join_seqs, split_items, Answer, HostError, HostReq, ObjectId, OpReply, QueueOp, QueueReply,
        QueueSpec, Spec, Wait,
    };
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;

    const OBJ: ObjectId = 7;

    fn store(capacity: Option<u32>, joinable: bool, owners: &[u64]) -> Arc<Store> {
        let store = Arc::new(Store::default());
        for &owner in owners {
            assert_eq!(open(&store, owner, QueueSpec { capacity, joinable }), 0);
        }
        store
    }

    /// Opens the queue for `owner`: whether it is closed.
    fn open(store: &Arc<Store>, owner: u64, spec: QueueSpec) -> u64 {
        let request = HostReq::Open {
            req: 1,
            obj: OBJ,
            spec: Spec::Queue(spec),
        };
        match store.handle(owner, request, None, &mut no_wait) {
            Some(Reply {
                answer: Answer::Value(closed),
                ..
            }) => closed,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn no_wait() -> Box<dyn Waiter> {
        panic!("this request was not expected to wait")
    }

    /// Applies `op` of `owner` as request `req`: the answer now, or the channel of the answer
    /// to come.
    fn apply(
        store: &Arc<Store>,
        owner: u64,
        req: u64,
        op: QueueOp,
        body: Option<Body>,
    ) -> Result<Option<Reply>, oneshot::Receiver<Reply>> {
        let mut rx = None;
        let mut waiter = || -> Box<dyn Waiter> {
            let (tx, r) = oneshot::channel();
            rx = Some(r);
            Box::new(tx)
        };
        let request = HostReq::Op {
            req,
            obj: OBJ,
            op: op.into(),
        };
        let now = store.handle(owner, request, body, &mut waiter);
        match rx {
            Some(rx) => Err(rx),
            None => Ok(now),
        }
    }

    fn put(store: &Arc<Store>, owner: u64, byte: u8) {
        let now = apply(
            store,
            owner,
            0,
            QueueOp::Put,
            Some(Arc::new(vec![byte].into())),
        );
        assert!(matches!(now, Ok(None)), "a put is not answered");
    }

    fn item(reply: Reply) -> (u64, u8) {
        match (reply.answer, reply.body) {
            (Answer::Op(OpReply::Queue(QueueReply::Item { seq })), Some(body)) => (seq, body[0]),
            other => panic!("expected an item, got {other:?}"),
        }
    }

    fn get_now(store: &Arc<Store>, owner: u64, wait: Wait) -> Reply {
        match apply(store, owner, 1, QueueOp::Get { wait }, None) {
            Ok(Some(reply)) => reply,
            _ => panic!("the get was expected to be answered at once"),
        }
    }

    fn get_waiting(store: &Arc<Store>, owner: u64, req: u64) -> oneshot::Receiver<Reply> {
        get_waiting_for(store, owner, req, Wait::Forever)
    }

    fn get_waiting_for(
        store: &Arc<Store>,
        owner: u64,
        req: u64,
        wait: Wait,
    ) -> oneshot::Receiver<Reply> {
        match apply(store, owner, req, QueueOp::Get { wait }, None) {
            Err(rx) => rx,
            Ok(reply) => panic!("the get was expected to wait, got {reply:?}"),
        }
    }

    fn answered(rx: &mut oneshot::Receiver<Reply>) -> Option<Reply> {
        rx.try_recv().ok()
    }

    fn failed(reply: Reply) -> HostError {
        match reply.answer {
            Answer::Failed(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn granted() -> Answer {
        Answer::Op(OpReply::Queue(QueueReply::Granted))
    }

    fn exists(store: &Store) -> bool {
        lock(&store.objects).contains_key(&OBJ)
    }

    #[test]
    fn items_come_out_in_order_and_a_waiting_getter_gets_the_next_one() {
        let store = store(None, false, &[1, 2]);
        put(&store, 1, 10);
        put(&store, 1, 11);
        assert_eq!(item(get_now(&store, 2, Wait::No)), (0, 10));
        assert_eq!(item(get_now(&store, 2, Wait::No)), (1, 11));
        assert_eq!(failed(get_now(&store, 2, Wait::No)), HostError::Empty);
        let mut rx = get_waiting(&store, 2, 5);
        assert!(answered(&mut rx).is_none());
        put(&store, 1, 12);
        assert_eq!(item(answered(&mut rx).unwrap()), (2, 12));
    }

    #[test]
    fn a_getter_that_stopped_listening_leaves_the_item_for_the_next() {
        let store = store(None, false, &[1, 2]);
        drop(get_waiting(&store, 2, 5));
        let mut second = get_waiting(&store, 2, 6);
        put(&store, 1, 10);
        assert_eq!(item(answered(&mut second).unwrap()), (0, 10));
    }

    #[test]
    fn a_bounded_queue_grants_room_first_come_first_served() {
        let store = store(Some(1), false, &[1, 2, 3]);
        let reserve = |owner, req, wait| apply(&store, owner, req, QueueOp::Reserve { wait }, None);
        let first = reserve(1, 1, Wait::Forever).unwrap().unwrap();
        assert_eq!(first.answer, granted());
        // The room is taken by the reservation before any item arrives.
        let full = reserve(2, 2, Wait::No).unwrap().unwrap();
        assert_eq!(failed(full), HostError::Full);
        let mut second = reserve(2, 3, Wait::Forever).unwrap_err();
        let mut third = reserve(3, 4, Wait::Forever).unwrap_err();
        put(&store, 1, 10);
        assert!(answered(&mut second).is_none(), "the item fills the room");
        assert_eq!(item(get_now(&store, 3, Wait::No)), (0, 10));
        assert_eq!(answered(&mut second).unwrap().answer, granted());
        assert!(answered(&mut third).is_none());
        // Room given back (a put that gave up) goes to the next in line.
        let back = apply(&store, 2, 0, QueueOp::Unreserve { count: 1 }, None);
        assert!(matches!(back, Ok(None)));
        assert_eq!(answered(&mut third).unwrap().answer, granted());
    }

    #[derive(Default)]
    struct Heard(Mutex<Vec<ObjectId>>);

    impl Notifier for Heard {
        fn closed(&self, obj: ObjectId) {
            self.0.lock().unwrap().push(obj);
        }
    }

    #[test]
    fn close_fails_waiters_keeps_late_puts_and_tells_every_holder() {
        let store = store(Some(1), false, &[1, 2]);
        let heard = Arc::new(Heard::default());
        store.attach(2, Arc::clone(&heard) as Arc<dyn Notifier>);
        let granted_now = apply(&store, 1, 1, QueueOp::Reserve { wait: Wait::No }, None);
        assert_eq!(granted_now.unwrap().unwrap().answer, granted());
        let mut reserver = apply(
            &store,
            2,
            2,
            QueueOp::Reserve {
                wait: Wait::Forever,
            },
            None,
        )
        .unwrap_err();
        let closed = apply(&store, 2, 3, QueueOp::Close, None).unwrap().unwrap();
        assert_eq!(closed.answer, Answer::Done);
        assert_eq!(failed(answered(&mut reserver).unwrap()), HostError::Closed);
        assert_eq!(*heard.0.lock().unwrap(), [OBJ]);
        // A put sent before its producer heard of the close is kept, and drained.
        put(&store, 1, 10);
        assert_eq!(item(get_now(&store, 2, Wait::Forever)), (0, 10));
        assert_eq!(failed(get_now(&store, 2, Wait::Forever)), HostError::Closed);
        // A closed queue stays, even with no handle left, so a late opener finds it closed.
        for owner in [1, 2] {
            store.handle(owner, HostReq::Release { obj: OBJ }, None, &mut no_wait);
        }
        assert!(exists(&store));
        let spec = QueueSpec {
            capacity: Some(1),
            joinable: false,
        };
        assert_eq!(open(&store, 3, spec), 1);
    }

    #[test]
    fn join_waits_for_every_task_done() {
        let store = store(None, true, &[1, 2]);
        put(&store, 1, 10);
        put(&store, 1, 11);
        let mut joiner = apply(&store, 1, 1, QueueOp::Join, None).unwrap_err();
        item(get_now(&store, 2, Wait::No));
        item(get_now(&store, 2, Wait::No));
        assert!(matches!(
            apply(&store, 2, 0, QueueOp::TaskDone, None),
            Ok(None)
        ));
        assert!(answered(&mut joiner).is_none());
        assert!(matches!(
            apply(&store, 2, 0, QueueOp::TaskDone, None),
            Ok(None)
        ));
        assert_eq!(answered(&mut joiner).unwrap().answer, Answer::Done);
        let done_now = apply(&store, 1, 2, QueueOp::Join, None).unwrap().unwrap();
        assert_eq!(done_now.answer, Answer::Done);
    }

    #[test]
    fn an_owner_that_dies_gives_back_its_unfinished_items_and_room() {
        let store = store(Some(3), true, &[1, 2, 3]);
        for byte in [10, 11, 12] {
            let room = apply(&store, 1, 1, QueueOp::Reserve { wait: Wait::No }, None);
            assert_eq!(room.unwrap().unwrap().answer, granted());
            put(&store, 1, byte);
        }
        for want in [(0, 10), (1, 11), (2, 12)] {
            assert_eq!(item(get_now(&store, 2, Wait::No)), want);
        }
        assert!(matches!(
            apply(&store, 2, 0, QueueOp::TaskDone, None),
            Ok(None)
        ));
        let room = apply(&store, 2, 2, QueueOp::Reserve { wait: Wait::No }, None);
        assert_eq!(room.unwrap().unwrap().answer, granted());
        let mut waiting = get_waiting(&store, 2, 3);
        store.owner_gone(2);
        assert!(
            answered(&mut waiting).is_none(),
            "a dead owner hears nothing"
        );
        // Its unfinished items go back in front, in their order, and its room frees.
        assert_eq!(item(get_now(&store, 3, Wait::No)), (1, 11));
        assert_eq!(item(get_now(&store, 3, Wait::No)), (2, 12));
        let room = apply(&store, 1, 4, QueueOp::Reserve { wait: Wait::No }, None);
        assert_eq!(room.unwrap().unwrap().answer, granted());
    }

    #[test]
    fn a_timeout_and_an_item_never_both_happen() {
        let store = store(None, false, &[1, 2]);
        // Expired before the item: the getter hears `Timeout`, the item stays for another.
        let mut expired = get_waiting(&store, 2, 5);
        assert!(store.withdraw(2, OBJ, 5));
        assert_eq!(failed(answered(&mut expired).unwrap()), HostError::Timeout);
        put(&store, 1, 10);
        assert_eq!(item(get_now(&store, 2, Wait::No)), (0, 10));
        // The item first: the late expiry finds nothing to end.
        let mut served = get_waiting(&store, 2, 6);
        put(&store, 1, 11);
        assert!(!store.withdraw(2, OBJ, 6));
        assert_eq!(item(answered(&mut served).unwrap()), (1, 11));
    }

    #[tokio::test]
    async fn a_waiting_get_with_a_time_limit_fails_with_timeout_when_it_runs_out() {
        let store = store(None, false, &[1]);
        let rx = get_waiting_for(&store, 1, 5, Wait::Micros(1_000));
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
            .await
            .expect("the store's expiry fires")
            .expect("answered");
        assert_eq!(failed(reply), HostError::Timeout);
    }

    #[tokio::test]
    async fn a_timed_get_that_is_answered_leaves_no_timer_behind() {
        let store = store(None, false, &[1]);
        let rx = get_waiting_for(&store, 1, 5, Wait::Micros(3_600_000_000));
        // The hour-long timer task holds the store while the get waits.
        assert_eq!(Arc::strong_count(&store), 2);
        put(&store, 1, 7);
        assert_eq!(item(rx.await.expect("answered")), (0, 7));
        // Answered: the timer ends now, not in an hour.
        for _ in 0..100 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the timer outlived its request"
        );
    }

    /// Recalls heard by one owner.
    #[derive(Default)]
    struct Recalled(Mutex<u32>);

    impl Notifier for Recalled {
        fn closed(&self, _: ObjectId) {}

        fn recall(&self, _: ObjectId) {
            *self.0.lock().unwrap() += 1;
        }
    }

    /// A `Fetch` of `owner` answered at once: the items lent, as (seq, byte).
    fn fetch_now(store: &Arc<Store>, owner: u64, most: u32) -> Vec<(u64, u8)> {
        let op = QueueOp::Fetch {
            wait: Wait::No,
            most,
        };
        let reply = match apply(store, owner, 1, op, None) {
            Ok(Some(reply)) => reply,
            other => panic!("the fetch was expected to be answered at once, got {other:?}"),
        };
        match (reply.answer, &reply.body) {
            (Answer::Op(OpReply::Queue(QueueReply::Batch)), Some(body)) => split_items(body)
                .unwrap()
                .into_iter()
                .map(|(seq, item)| (seq, item[0]))
                .collect(),
            _ => vec![item(reply)],
        }
    }

    fn post(store: &Arc<Store>, owner: u64, op: QueueOp, body: Option<Body>) {
        assert!(matches!(apply(store, owner, 0, op, body), Ok(None)));
    }

    fn len(store: &Arc<Store>) -> u64 {
        match apply(store, 1, 9, QueueOp::Len, None) {
            Ok(Some(Reply {
                answer: Answer::Value(n),
                ..
            })) => n,
            other => panic!("expected a length, got {other:?}"),
        }
    }

    #[test]
    fn a_lone_fetcher_is_lent_growing_batches_and_a_get_elsewhere_recalls_them() {
        let store = store(None, false, &[1, 2, 3]);
        let recalled = Arc::new(Recalled::default());
        store.attach(2, Arc::clone(&recalled) as Arc<dyn Notifier>);
        for byte in 0..10 {
            put(&store, 1, byte);
        }
        assert_eq!(
            fetch_now(&store, 2, 8),
            [(0, 0)],
            "the first fetch is lent one"
        );
        post(&store, 2, QueueOp::Took { seq: 0 }, None);
        assert_eq!(
            fetch_now(&store, 2, 8),
            [(1, 1), (2, 2)],
            "then twice as many"
        );
        assert_eq!(len(&store), 9, "lent items count until taken");
        post(&store, 2, QueueOp::Took { seq: 1 }, None);
        assert_eq!(len(&store), 8);
        // Owner 3's get must not overtake item 2, lent to owner 2: it waits, and 2 is asked.
        let mut waiting = get_waiting(&store, 3, 5);
        assert!(answered(&mut waiting).is_none());
        assert_eq!(*recalled.0.lock().unwrap(), 1);
        let back = Some(Arc::new(join_seqs([2]).into()));
        post(&store, 2, QueueOp::GiveBack, back);
        assert_eq!(item(answered(&mut waiting).unwrap()), (2, 2));
        assert_eq!(len(&store), 7);
    }

    #[test]
    fn a_dead_fetcher_s_untaken_items_go_back_in_front_and_its_taken_ones_do_not() {
        let store = store(None, false, &[1, 2]);
        for byte in 0..6 {
            put(&store, 1, byte);
        }
        assert_eq!(fetch_now(&store, 2, 8), [(0, 0)]);
        post(&store, 2, QueueOp::Took { seq: 0 }, None);
        assert_eq!(fetch_now(&store, 2, 8), [(1, 1), (2, 2)]);
        post(&store, 2, QueueOp::Took { seq: 1 }, None);
        store.owner_gone(2);
        assert_eq!(len(&store), 4);
        for want in [(2, 2), (3, 3), (4, 4), (5, 5)] {
            assert_eq!(item(get_now(&store, 1, Wait::No)), want);
        }
    }

    #[test]
    fn an_idle_queue_goes_with_its_last_handle_and_a_late_item_brings_it_back() {
        let spec = QueueSpec {
            capacity: None,
            joinable: false,
        };
        let store = store(spec.capacity, spec.joinable, &[1]);
        store.handle(1, HostReq::Release { obj: OBJ }, None, &mut no_wait);
        assert!(!exists(&store));
        let requeue = QueueOp::Requeue { seq: 4, spec };
        assert!(matches!(
            apply(&store, 1, 0, requeue, Some(Arc::new(vec![9].into()))),
            Ok(None)
        ));
        assert_eq!(item(get_now(&store, 1, Wait::No)), (4, 9));
        assert!(!exists(&store), "idle again once the item is taken");
        let len = apply(&store, 1, 1, QueueOp::Len, None).unwrap().unwrap();
        assert_eq!(
            failed(len),
            HostError::Closed,
            "gone: only a confused peer asks"
        );
    }
}
