//! The root hub's side of an object connection: requests from one process, answered from the
//! [`Store`]. The connection is one [`Owner`]; when it ends, for whatever reason, the store
//! forgets that owner (and gives back what it had taken from joinable queues).

use super::objects::{Item, Owner, Reply, Store, Waiter};
use crate::error::{Error, Result};
use crate::protocol::{
    decode_head, encode_head, HostError, HostReply, HostReq, ObjectId, QueueSpec, Wait,
};
use crate::transport::frame::FrameReader;
use crate::transport::local::RecvHalf;
use crate::transport::{Outbox, Outgoing};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Owner numbers for connections; 0 is the root itself.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Where the answer to request `req` of a remote process goes.
struct Remote {
    req: u64,
    out: Outbox,
}

fn reply_message(req: u64, reply: &Reply) -> Result<Outgoing> {
    let (head, body) = match reply {
        Reply::Item { seq, item } => (HostReply::Item { req, seq: *seq }, Arc::clone(item)),
        Reply::Granted => (HostReply::Granted { req }, Arc::default()),
        Reply::Done => (HostReply::Done { req }, Arc::default()),
        Reply::Value(value) => (HostReply::Value { req, value: *value }, Arc::default()),
        Reply::Failed(error) => (HostReply::Failed { req, error: *error }, Arc::default()),
    };
    Ok(Outgoing::new(encode_head(&head)?, body))
}

impl Waiter for Remote {
    fn deliver(self: Box<Self>, reply: Reply) -> std::result::Result<(), Reply> {
        match reply_message(self.req, &reply) {
            Ok(msg) => self.out.send(msg).map_err(|_| reply),
            Err(_) => Err(reply),
        }
    }
}

struct Notify(Outbox);

impl super::objects::Notifier for Notify {
    fn closed(&self, _owner: Owner, obj: ObjectId) {
        if let Ok(head) = encode_head(&HostReply::Closed { obj }) {
            let _ = self.0.send(Outgoing::new(head, Vec::new()));
        }
    }
}

/// Serves one process's object requests until its connection ends.
pub(crate) async fn serve(
    store: Arc<Store>,
    pid: u32,
    mut reader: FrameReader<RecvHalf>,
    out: Outbox,
) {
    let owner = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
    store.attach(owner, Arc::new(Notify(out.clone())));
    let mut specs = HashMap::new();
    let outcome = loop {
        match reader.read_message().await {
            Ok(Some(message)) => {
                if let Err(e) = handle(&store, owner, &mut specs, &out, message) {
                    break Err(e);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(target: "multiprocessing::hub", "object connection of process {pid} dropped: {e}");
    }
    store.owner_gone(owner);
}

fn handle(
    store: &Arc<Store>,
    owner: Owner,
    specs: &mut HashMap<ObjectId, QueueSpec>,
    out: &Outbox,
    message: Vec<u8>,
) -> Result<()> {
    let (req, start) = decode_head::<HostReq>(&message)?;
    let spec_of = |obj: ObjectId| {
        specs
            .get(&obj)
            .copied()
            .ok_or_else(|| Error::Protocol(format!("object {obj:#x} used before it was opened")))
    };
    let answer = |req: u64, reply: Reply| {
        if let Ok(msg) = reply_message(req, &reply) {
            let _ = out.send(msg);
        }
    };
    let remote = |req: u64| -> Box<dyn Waiter> {
        Box::new(Remote {
            req,
            out: out.clone(),
        })
    };
    match req {
        HostReq::Open { req, obj, spec } => {
            specs.insert(obj, spec);
            let closed = store.open(owner, obj, spec);
            answer(req, Reply::Value(u64::from(closed)));
        }
        HostReq::Sync { req } => answer(req, Reply::Done),
        HostReq::Release { obj } => store.release(owner, obj),
        HostReq::Unreserve { obj, count } => store.unreserve(owner, obj, count),
        HostReq::Put { obj } => {
            let spec = spec_of(obj)?;
            store.put(owner, obj, spec, body(message, start));
        }
        HostReq::Reserve { req, obj, wait } => {
            let spec = spec_of(obj)?;
            match store.reserve(owner, obj, spec, req, wait, || remote(req)) {
                Ok(true) => answer(req, Reply::Granted),
                Ok(false) => expire_later(store, owner, obj, req, wait),
                Err(e) => answer(req, Reply::Failed(e)),
            }
        }
        HostReq::Get { req, obj, wait } => {
            let spec = spec_of(obj)?;
            match store.get(owner, obj, spec, req, wait, || remote(req)) {
                Ok(Some((seq, item))) => answer(req, Reply::Item { seq, item }),
                Ok(None) => expire_later(store, owner, obj, req, wait),
                Err(e) => answer(req, Reply::Failed(e)),
            }
        }
        HostReq::Cancel { req, obj } => {
            if let Some(waiter) = store.cancel(owner, obj, req) {
                let _ = waiter.deliver(Reply::Failed(HostError::Timeout));
            }
        }
        HostReq::Requeue { obj, seq } => {
            let spec = spec_of(obj)?;
            store.requeue(owner, obj, spec, seq, body(message, start));
        }
        HostReq::Len { req, obj } => {
            answer(req, Reply::Value(store.len(obj) as u64));
        }
        HostReq::Close { req, obj } => {
            let spec = spec_of(obj)?;
            store.close(obj, spec);
            answer(req, Reply::Done);
        }
        HostReq::TaskDone { obj } => {
            // The client checks its own count first; a surplus here is ignored.
            store.task_done(owner, obj);
        }
        HostReq::Join { req, obj } => {
            let spec = spec_of(obj)?;
            if store.join(owner, obj, spec, req, || remote(req)) {
                answer(req, Reply::Done);
            }
        }
    }
    Ok(())
}

/// The body of a message as an item: the header is cut off in place, without a new buffer.
fn body(mut message: Vec<u8>, start: usize) -> Item {
    message.drain(..start);
    Arc::new(message)
}

/// Fails a waiting request with `Timeout` when its time is up, unless it was answered.
fn expire_later(store: &Arc<Store>, owner: Owner, obj: ObjectId, req: u64, wait: Wait) {
    if let Wait::Micros(us) = wait {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(us)).await;
            if let Some(waiter) = store.cancel(owner, obj, req) {
                let _ = waiter.deliver(Reply::Failed(HostError::Timeout));
            }
        });
    }
}
