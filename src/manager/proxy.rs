//! What every manager proxy shares: a [`Handle`] to its hosted object, and the round trip of
//! one operation (parts in, a found value or a list of them out), with errors that name the
//! proxy.
//!
//! **A proxy on its way holds its object.** A handle counts from its first use in a process,
//! so a copy in transit (an entry's argument, a queue item) counts nowhere: if the sender then
//! dropped its last proxy, the object would go before the receiver opened it. So serializing a
//! proxy of the tree's manager makes a *transit hold* at the host under a fresh token
//! (`TransitOp::Hold`), carried in the copy; the receiver takes it (`TransitOp::Take`) once it
//! has opened the object itself, or when its last clone of that copy is dropped unused (from a
//! task: a copy dropped on a thread without a runtime cannot). A copy that never arrives (a
//! queue item nobody takes, a receiver killed before using it) keeps its object until the run
//! ends; a copy forwarded unused hands its sender's hold on instead of making one. The host
//! never decodes values, so a proxy stored inside another manager object holds its object only
//! until the first reader takes the hold. Proxies of a remote
//! manager make no hold: they are for the process that connected.

use super::Host;
use crate::error::{Error, Result};
use crate::hub::{current_host, Handle};
use crate::protocol::{
    decode_value, push_part, Answer, ManagedReply, Op, OpReply, Spec, TransitOp,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A handle to one hosted object, and what the user calls it in error messages.
pub(crate) struct Proxy<S: Copy + Into<Spec>> {
    handle: Handle<S>,
    kind: &'static str,
    /// Copies of it sent to other processes of the tree hold the object on their way (false
    /// for a remote manager's proxy).
    tree: bool,
    /// For a copy received from another process: the hold its sender made.
    arrived: Option<Arc<Arrival>>,
}

/// The transit hold a received copy came with, taken once (see the module docs).
struct Arrival {
    id: u64,
    spec: Spec,
    token: u64,
    /// Taken (or handed on to another copy): nothing more to do.
    taken: AtomicBool,
}

impl Arrival {
    /// Hands the hold on to a copy being sent: `Some(token)` the first time.
    fn forward(&self) -> Option<u64> {
        (!self.taken.swap(true, Ordering::AcqRel)).then_some(self.token)
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if *self.taken.get_mut() {
            return;
        }
        // Dropped unused: take the hold from a task, which may wait to reach the host (no
        // runtime here means the run is ending, and the hold with it).
        let (id, spec, token) = (self.id, self.spec, self.token);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(client) = current_host().await {
                    let handle = Handle::open_in(spec, id, &client);
                    handle.post_now(TransitOp::Take { token });
                }
            });
        }
    }
}

/// A fresh transit token: a random per-process base plus a counter, as object ids are made.
fn new_token() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        crate::transport::auth::random_bytes()
            .ok()
            .and_then(|b| b[..8].try_into().ok())
            .map_or(u64::from(std::process::id()) << 32, u64::from_le_bytes)
    });
    base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// One answer's content.
pub(crate) enum Found {
    /// A value, still encoded.
    Value(crate::buffers::Shared),
    /// No such key or item.
    Missing,
}

impl<S: Copy + Into<Spec>> Proxy<S> {
    /// A proxy to a new object (`kind` is "dict", "list" or "namespace"), counted by `client`
    /// at once (see `Handle::new_in`).
    pub(crate) fn new(spec: S, kind: &'static str, host: &Host) -> Self {
        Proxy {
            handle: Handle::new_in(spec, &host.client),
            kind,
            tree: host.tree,
            arrived: None,
        }
    }

    /// A proxy to the object of this kind named `name` at `client`'s host, made there if it is
    /// new: everyone who names it reaches the same object.
    pub(crate) fn by_name(spec: S, kind: &'static str, name: &str, host: &Host) -> Self {
        Proxy {
            handle: Handle::open_in(spec, name_id(kind, name), &host.client),
            kind,
            tree: host.tree,
            arrived: None,
        }
    }

    /// For a received copy: opens the object here (so this process counts it) and then takes
    /// the hold its sender made, once.
    async fn arrive(&self) -> Result<()> {
        let Some(arrival) = &self.arrived else {
            return Ok(());
        };
        if arrival.taken.load(Ordering::Acquire) {
            return Ok(());
        }
        self.handle.client().await?;
        if !arrival.taken.swap(true, Ordering::AcqRel) {
            let token = arrival.token;
            self.handle.post(TransitOp::Take { token }).await?;
        }
        Ok(())
    }

    /// The token a copy being sent carries: a new hold if the object is open here, else the
    /// hold this copy arrived with (handed on), else none.
    fn transit_token(&self) -> Option<u64> {
        if !self.tree {
            return None;
        }
        let token = new_token();
        if self.handle.post_now(TransitOp::Hold { token }) {
            return Some(token);
        }
        self.arrived.as_ref().and_then(|a| a.forward())
    }

    /// Sends `op` (not answered) at once, if the object is open here; from a drop.
    pub(crate) fn post_now(&self, op: impl Into<Op>) -> bool {
        self.handle.post_now(op)
    }

    /// `e`, naming this proxy when the error is about the object.
    pub(crate) fn named(&self, e: Error) -> Error {
        let at = |m: String| format!("{} {:#018x}: {m}", self.kind, self.handle.id());
        match e {
            Error::Lookup(m) => Error::Lookup(at(m)),
            Error::InvalidArgument(m) => Error::InvalidArgument(at(m)),
            other => other,
        }
    }

    /// Applies `op` with `body` (its parts: see [`parts`]) and waits for its answer.
    pub(crate) async fn ask(&self, op: impl Into<Op>, body: Vec<u8>) -> Result<Answer> {
        self.ask_found(op, body).await.map(|(answer, _)| answer)
    }

    /// Sends `op` with `parts` without waiting for an answer (the host gives none to a request
    /// numbered 0). Later requests of this process are applied after it, and a process
    /// reports an entry's result only once the root has applied what it sent.
    pub(crate) async fn post(&self, op: impl Into<Op>, body: Vec<u8>) -> Result<()> {
        self.arrive().await?;
        self.handle.post_item(op, body, None).await
    }

    /// As [`Proxy::ask`], with the value a `Found` answer carries.
    pub(crate) async fn ask_found(
        &self,
        op: impl Into<Op>,
        body: Vec<u8>,
    ) -> Result<(Answer, Found)> {
        self.arrive().await.map_err(|e| self.named(e))?;
        let reply = self
            .handle
            .call_with(op, body)
            .await
            .map_err(|e| self.named(e))?;
        let found = match (reply.answer, reply.body) {
            (Answer::Op(OpReply::Managed(ManagedReply::Missing)), _) => Found::Missing,
            (_, Some(body)) => Found::Value(body),
            (_, None) => Found::Missing,
        };
        Ok((reply.answer, found))
    }

    /// An operation answered with a value or `Missing`, decoded as `T`.
    pub(crate) async fn value<T: DeserializeOwned>(
        &self,
        op: impl Into<Op>,
        body: Vec<u8>,
    ) -> Result<Option<T>> {
        match self.ask_found(op, body).await? {
            (Answer::Op(OpReply::Managed(ManagedReply::Found)), Found::Value(v)) => {
                decode_value("a manager value", &v).map(Some)
            }
            (Answer::Op(OpReply::Managed(ManagedReply::Missing)), _) => Ok(None),
            (answer, _) => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered with a number.
    pub(crate) async fn number(&self, op: impl Into<Op>, body: Vec<u8>) -> Result<u64> {
        match self.ask(op, body).await? {
            Answer::Value(n) => Ok(n),
            answer => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered `Done`.
    pub(crate) async fn done(&self, op: impl Into<Op>, body: Vec<u8>) -> Result<()> {
        match self.ask(op, body).await? {
            Answer::Done => Ok(()),
            answer => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered with `Items`: decoded as a `Vec<T>`, with the object's version.
    pub(crate) async fn items<T: DeserializeOwned>(
        &self,
        op: impl Into<Op>,
    ) -> Result<(Vec<T>, u64)> {
        match self.ask_found(op, Vec::new()).await? {
            (Answer::Op(OpReply::Managed(ManagedReply::Items { version })), Found::Value(v)) => {
                Ok((decode_value("a manager value", &v)?, version))
            }
            (answer, _) => Err(self.unexpected(answer)),
        }
    }

    fn unexpected(&self, answer: Answer) -> Error {
        Error::Protocol(format!(
            "unexpected answer from the manager host for a {}: {answer:?}",
            self.kind
        ))
    }
}

/// The body of an operation: the encodings of `values` as its parts (in `protocol::join_parts`'s
/// format), each encoded in place into one buffer. `what` names them in an encoding error.
pub(crate) fn parts<T: Serialize + ?Sized>(what: &'static str, values: &[&T]) -> Result<Vec<u8>> {
    values
        .iter()
        .try_fold(Vec::with_capacity(64), |body, v| push_part(what, *v, body))
}

/// The body of an operation on a key and a value of different types (see [`parts`]).
pub(crate) fn pair<K: Serialize + ?Sized, V: Serialize + ?Sized>(
    (kw, k): (&'static str, &K),
    (vw, v): (&'static str, &V),
) -> Result<Vec<u8>> {
    push_part(vw, v, push_part(kw, k, Vec::with_capacity(64))?)
}

/// The id of the object of `kind` named `name`: a digest, so ids made from names keep apart
/// from each other and (being 64 random-looking bits) from the random ids of unnamed objects.
fn name_id(kind: &str, name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"multiprocessing manager object\0")
        .chain_update(kind.as_bytes())
        .chain_update(b"\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(id)
}

impl<S: Copy + Into<Spec>> Clone for Proxy<S> {
    fn clone(&self) -> Self {
        Proxy {
            handle: self.handle.clone(),
            kind: self.kind,
            tree: self.tree,
            arrived: self.arrived.clone(),
        }
    }
}

impl<S: Copy + Into<Spec> + std::fmt::Debug> std::fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple(self.kind).field(&self.handle).finish()
    }
}

/// A proxy on the wire: its handle, and the token of the transit hold it carries, if any.
#[derive(Serialize, Deserialize)]
struct Wire<H> {
    handle: H,
    token: Option<u64>,
}

impl<S: Serialize + Copy + Into<Spec>> Serialize for Proxy<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        Wire {
            handle: &self.handle,
            token: self.transit_token(),
        }
        .serialize(s)
    }
}

/// Reads a proxy of `kind` from the wire.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, S: Deserialize<'de> + Copy + Into<Spec>>(
    d: D,
    kind: &'static str,
) -> std::result::Result<Proxy<S>, D::Error> {
    let Wire::<Handle<S>> { handle, token } = Wire::deserialize(d)?;
    let arrived = token.map(|token| {
        Arc::new(Arrival {
            id: handle.id(),
            spec: handle.spec().into(),
            token,
            taken: AtomicBool::new(false),
        })
    });
    Ok(Proxy {
        handle,
        kind,
        // A received copy is of the tree's manager: a remote one's carries no hold and is
        // not meant to travel.
        tree: true,
        arrived,
    })
}

/// `Debug`, `Serialize` and `Deserialize` for a proxy type without type parameters whose one
/// field is `proxy`, a [`Proxy`] of kind `$kind`.
macro_rules! proxy_impls {
    ($t:ident, $kind:literal) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.proxy.fmt(f)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                self.proxy.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                Ok($t {
                    proxy: $crate::manager::proxy::deserialize(d, $kind)?,
                })
            }
        }
    };
}
pub(crate) use proxy_impls;
