//! The handle every user-facing hosted object wraps ([`Handle`]): an id, the object's shape,
//! and this process's count of handles at the host.

use super::client::HostClient;
use super::objects::Reply;
use crate::error::Result;
use crate::protocol::{Answer, HostReq, ObjectId, Op, Spec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::OnceCell;

/// A fresh id, unique across the run: a random per-process base plus a counter.
fn new_id() -> ObjectId {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        let random = crate::transport::auth::random_bytes()
            .ok()
            .and_then(|b| b[..8].try_into().ok())
            .map(u64::from_le_bytes);
        random.unwrap_or_else(|| {
            // No /dev/urandom: the pid and the clock still keep ids apart across processes.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (u64::from(std::process::id()) << 32) ^ nanos
        })
    });
    base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// Room granted (or another answer whose use a send completes) that goes back to its object if
/// the send is dropped first.
struct Granted<'a> {
    client: &'a HostClient,
    obj: ObjectId,
    spec: Spec,
    reply: Option<Reply>,
}

impl Drop for Granted<'_> {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            self.client.give_back(self.obj, Some(self.spec), reply);
        }
    }
}

/// A handle to a hosted object, as every user-facing kind wraps one: the object's id and
/// shape (`S`, e.g. a `QueueSpec`), and this process's client once the handle has been used.
///
/// Clones and copies that cross to other processes (it is `Serialize`) name the same object.
/// The host counts handles per process: the first use of a handle in a process opens the
/// object there; a clone of a used handle is counted at once; dropping a used handle releases
/// it, and the process's last release tells the host.
pub(crate) struct Handle<S> {
    id: ObjectId,
    spec: S,
    client: OnceCell<Arc<HostClient>>,
}

impl<S: Copy + Into<Spec>> Handle<S> {
    /// A handle to a new object (creating it does no I/O: the host learns of it on first use).
    pub(crate) fn new(spec: S) -> Self {
        Handle {
            id: new_id(),
            spec,
            client: OnceCell::new(),
        }
    }

    /// A handle to a new object, counted by `client` at once: the object exists from now on,
    /// so a copy sent to another process that uses and drops it before this one is used does
    /// not free it (a manager's objects hold nothing that would keep them alive otherwise).
    pub(crate) fn new_in(spec: S, client: &Arc<HostClient>) -> Self {
        Self::open_in(spec, new_id(), client)
    }

    /// A handle to object `id` (made as `spec` if the host has no such object), counted by
    /// `client` at once as [`Handle::new_in`] does. Two processes that name the same id reach
    /// the same object: how a manager's named objects are shared.
    pub(crate) fn open_in(spec: S, id: ObjectId, client: &Arc<HostClient>) -> Self {
        if !client.open_another(id) {
            client.open_new(id, spec.into());
        }
        let handle = Handle {
            id,
            spec,
            client: OnceCell::new(),
        };
        let _ = handle.client.set(Arc::clone(client));
        handle
    }

    /// The object's id.
    pub(crate) fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's shape.
    pub(crate) fn spec(&self) -> S {
        self.spec
    }

    /// This process's client, with this handle counted there (once).
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Io`, `Authentication` or `Closed` when the root cannot
    /// be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe: a later call opens the handle again.
    pub(crate) async fn client(&self) -> Result<&Arc<HostClient>> {
        self.client
            .get_or_try_init(|| async {
                let client = super::current_host().await?;
                client.open(self.id, self.spec.into()).await?;
                Ok(client)
            })
            .await
    }

    /// Applies `op` to the object and waits for its answer; a `Failed` answer is its error.
    ///
    /// # Errors
    /// The error the host answered (`Closed`, `Empty`, `Full`, `Timeout`); `Closed` when the
    /// root is gone; as [`Handle::client`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before the answer, the request is cancelled, and what an answer
    /// that came meanwhile carries (an item, granted room) goes back to the object.
    pub(crate) async fn call(&self, op: impl Into<Op>) -> Result<Reply> {
        self.call_with(op, Vec::new()).await
    }

    /// [`Handle::call`] with `body` after the operation's header (a manager's parts).
    ///
    /// # Errors
    /// As [`Handle::call`].
    ///
    /// # Cancel safety
    /// As [`Handle::call`].
    pub(crate) async fn call_with(&self, op: impl Into<Op>, body: Vec<u8>) -> Result<Reply> {
        let client = self.client().await?;
        let (obj, op) = (self.id, op.into());
        let reply = client
            .call_with(obj, Some(self.spec.into()), body, |req| HostReq::Op {
                req,
                obj,
                op,
            })
            .await?;
        match reply.answer {
            Answer::Failed(e) => Err(e.into()),
            _ => Ok(reply),
        }
    }

    /// Applies or sends `op`, which is not answered.
    ///
    /// # Errors
    /// `Closed` when the root is gone; as [`Handle::client`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it waits only to open the handle, before anything is sent.
    pub(crate) async fn post(&self, op: impl Into<Op>) -> Result<()> {
        let client = self.client().await?;
        let (obj, op) = (self.id, op.into());
        client.post(HostReq::Op { req: 0, obj, op }, None)
    }

    /// Applies or sends `op`, which is not answered, without waiting: possible only once this
    /// handle is open in this process (it was used, or made by [`Handle::new_in`]). Returns
    /// whether it was sent; from a drop or a `Serialize`, which cannot wait.
    pub(crate) fn post_now(&self, op: impl Into<Op>) -> bool {
        let Some(client) = self.client.get() else {
            return false;
        };
        let (obj, op) = (self.id, op.into());
        client.post(HostReq::Op { req: 0, obj, op }, None).is_ok()
    }

    /// Sends `op` with `item` as its body (from another process, once this process's window
    /// of unwritten items has room; see `HostClient::window`). `granted` is an answer this send
    /// uses (room reserved for the item): it goes back to the object if this is dropped before
    /// the item is sent.
    ///
    /// # Errors
    /// `Closed` when the root is gone; as [`Handle::client`].
    ///
    /// # Cancel safety
    /// Cancel-safe: the item is sent in the poll that wins its window, or not at all.
    pub(crate) async fn post_item(
        &self,
        op: impl Into<Op>,
        item: Vec<u8>,
        granted: Option<Reply>,
    ) -> Result<()> {
        // Never fails when `granted` is `Some`: the call that won it opened the handle.
        let client = self.client().await?;
        let mut granted = Granted {
            client,
            obj: self.id,
            spec: self.spec.into(),
            reply: granted,
        };
        let permit = client.window(item.len()).await?;
        granted.reply = None;
        let (obj, op) = (self.id, op.into());
        client.post_item(HostReq::Op { req: 0, obj, op }, item, permit)
    }
}

impl<S: Copy> Clone for Handle<S> {
    fn clone(&self) -> Self {
        let client = OnceCell::new();
        if let Some(c) = self.client.get() {
            // Counted at once, so the object cannot vanish between the two handles.
            if c.open_another(self.id) {
                let _ = client.set(Arc::clone(c));
            }
        }
        Handle {
            id: self.id,
            spec: self.spec,
            client,
        }
    }
}

impl<S> Drop for Handle<S> {
    fn drop(&mut self) {
        if let Some(client) = self.client.get() {
            client.release(self.id);
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("id", &format_args!("{:#018x}", self.id))
            .field("spec", &self.spec)
            .finish()
    }
}

/// A handle on the wire: the id and the shape.
#[derive(Serialize, Deserialize)]
struct Wire<S> {
    id: ObjectId,
    spec: S,
}

impl<S: Serialize + Copy> Serialize for Handle<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        Wire {
            id: self.id,
            spec: self.spec,
        }
        .serialize(s)
    }
}

impl<'de, S: Deserialize<'de>> Deserialize<'de> for Handle<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let Wire { id, spec } = Wire::deserialize(d)?;
        Ok(Handle {
            id,
            spec,
            client: OnceCell::new(),
        })
    }
}
