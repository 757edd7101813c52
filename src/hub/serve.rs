//! The root hub's side of an object connection: requests from one process, applied to the
//! [`Store`] exactly as the root's own are (see `client.rs`), with the answers written back.
//! The connection is one [`Owner`]; when it ends, for whatever reason, the store forgets that
//! owner (and gives back what it had taken from joinable queues).

use super::objects::{Body, Notifier, Owner, Reply, Store, Waiter};
use crate::buffers::IntoShared;
use crate::error::Result;
use crate::protocol::{decode_head, encode_head, HostReply, HostReq, ObjectId, Op};
use crate::transport::frame::{FrameReader, Spin};
use crate::transport::local::RecvHalf;
use crate::transport::{Outbox, Outgoing};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Owner numbers for connections; 0 is the root itself.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Writes the answer to request `req`, with its body.
fn answer(out: &Outbox, req: u64, reply: Reply) -> std::result::Result<(), Reply> {
    let Ok(head) = encode_head(&HostReply::Answer {
        req,
        answer: reply.answer,
    }) else {
        return Err(reply);
    };
    let body: Body = match &reply.body {
        Some(body) => Arc::clone(body),
        None => Arc::default(),
    };
    out.send(Outgoing::new(head, body)).map_err(|_| reply)
}

/// Where the answer to request `req` of a remote process goes.
struct Remote {
    req: u64,
    out: Outbox,
}

impl Waiter for Remote {
    fn deliver(self: Box<Self>, reply: Reply) -> std::result::Result<(), Reply> {
        answer(&self.out, self.req, reply)
    }
}

struct Notify(Outbox);

impl Notify {
    fn send(&self, notice: &HostReply) {
        if let Ok(head) = encode_head(notice) {
            let _ = self.0.send(Outgoing::new(head, Vec::new()));
        }
    }
}

impl Notifier for Notify {
    fn closed(&self, obj: ObjectId) {
        self.send(&HostReply::Closed { obj });
    }

    fn recall(&self, obj: ObjectId) {
        self.send(&HostReply::Recall { obj });
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
    let mut spin = Spin::default();
    let outcome = loop {
        match reader.read_message_spin(&mut spin).await {
            Ok(Some(message)) => match handle(&store, owner, &out, message) {
                // The process waits on that answer and will likely ask again soon: look for
                // its next request before parking. After a put (no answer) it is not waiting.
                Ok(true) => {}
                Ok(false) => spin.idle(),
                Err(e) => break Err(e),
            },
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(target: "multiprocessing::hub", "object connection of process {pid} dropped: {e}");
    }
    store.owner_gone(owner);
}

/// Applies one request; `true` when its process may be waiting on us: it was answered at once,
/// or it was not to be answered and is not a queue's put.
fn handle(store: &Arc<Store>, owner: Owner, out: &Outbox, mut message: Vec<u8>) -> Result<bool> {
    let (request, start) = decode_head::<HostReq>(&message)?;
    // The body of a message is cut off its header in place, without a new buffer.
    let body = match &request {
        HostReq::Op { op, .. } if op.has_body() => {
            message.drain(..start);
            Some(message.into_shared())
        }
        _ => None,
    };
    let req = request.answered_as();
    // A queue's put is the one request a process sends in streams without waiting on anything:
    // after it, the process is not waiting on us. After any other request it may be (an
    // unanswered dict `set` is usually followed by a `get`).
    let streaming = matches!(
        request,
        HostReq::Op {
            op: Op::Queue(_),
            ..
        }
    );
    let mut waiter = || -> Box<dyn Waiter> {
        Box::new(Remote {
            req,
            out: out.clone(),
        })
    };
    match store.handle(owner, request, body, &mut waiter) {
        Some(reply) => {
            let _ = answer(out, req, reply);
            Ok(req != 0 || !streaming)
        }
        None => Ok(!streaming && req == 0),
    }
}
