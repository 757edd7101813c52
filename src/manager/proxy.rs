//! What every manager proxy shares: a [`Handle`] to its hosted object, and the round trip of
//! one operation (parts in, a found value or a list of them out), with errors that name the
//! proxy.

use crate::error::{Error, Result};
use crate::hub::{Handle, HostClient};
use crate::protocol::{decode_value, join_parts, Answer, ManagedReply, Op, OpReply, Spec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A handle to one hosted dict or list, and what the user calls it in error messages.
pub(crate) struct Proxy<S> {
    handle: Handle<S>,
    kind: &'static str,
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
    pub(crate) fn new(spec: S, kind: &'static str, client: &Arc<HostClient>) -> Self {
        Proxy {
            handle: Handle::new_in(spec, client),
            kind,
        }
    }

    /// A proxy to the object of this kind named `name` at `client`'s host, made there if it is
    /// new: everyone who names it reaches the same object.
    pub(crate) fn by_name(
        spec: S,
        kind: &'static str,
        name: &str,
        client: &Arc<HostClient>,
    ) -> Self {
        Proxy {
            handle: Handle::open_in(spec, name_id(kind, name), client),
            kind,
        }
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

    /// Applies `op` with `parts` (see `protocol::join_parts`) and waits for its answer.
    pub(crate) async fn ask(&self, op: impl Into<Op>, parts: &[&[u8]]) -> Result<Answer> {
        self.ask_found(op, parts).await.map(|(answer, _)| answer)
    }

    /// Sends `op` with `parts` without waiting for an answer (the host gives none to a request
    /// numbered 0). Later requests of this process are applied after it, and a process
    /// reports an entry's result only once the root has applied what it sent.
    pub(crate) async fn post(&self, op: impl Into<Op>, parts: &[&[u8]]) -> Result<()> {
        let body = join_parts(parts.iter().copied())?;
        self.handle.post_item(op, body, None).await
    }

    /// As [`Proxy::ask`], with the value a `Found` answer carries.
    pub(crate) async fn ask_found(
        &self,
        op: impl Into<Op>,
        parts: &[&[u8]],
    ) -> Result<(Answer, Found)> {
        let reply = self
            .handle
            .call_with(op, join_parts(parts.iter().copied())?)
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
        parts: &[&[u8]],
    ) -> Result<Option<T>> {
        match self.ask_found(op, parts).await? {
            (Answer::Op(OpReply::Managed(ManagedReply::Found)), Found::Value(v)) => {
                decode_value("a manager value", &v).map(Some)
            }
            (Answer::Op(OpReply::Managed(ManagedReply::Missing)), _) => Ok(None),
            (answer, _) => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered with a number.
    pub(crate) async fn number(&self, op: impl Into<Op>, parts: &[&[u8]]) -> Result<u64> {
        match self.ask(op, parts).await? {
            Answer::Value(n) => Ok(n),
            answer => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered `Done`.
    pub(crate) async fn done(&self, op: impl Into<Op>, parts: &[&[u8]]) -> Result<()> {
        match self.ask(op, parts).await? {
            Answer::Done => Ok(()),
            answer => Err(self.unexpected(answer)),
        }
    }

    /// An operation answered with `Items`: decoded as a `Vec<T>`, with the object's version.
    pub(crate) async fn items<T: DeserializeOwned>(
        &self,
        op: impl Into<Op>,
    ) -> Result<(Vec<T>, u64)> {
        match self.ask_found(op, &[]).await? {
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

impl<S: Copy> Clone for Proxy<S> {
    fn clone(&self) -> Self {
        Proxy {
            handle: self.handle.clone(),
            kind: self.kind,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple(self.kind).field(&self.handle).finish()
    }
}

impl<S: Serialize + Copy> Serialize for Proxy<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        self.handle.serialize(s)
    }
}

/// Reads a proxy of `kind` from the wire.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, S: Deserialize<'de>>(
    d: D,
    kind: &'static str,
) -> std::result::Result<Proxy<S>, D::Error> {
    Ok(Proxy {
        handle: Handle::deserialize(d)?,
        kind,
    })
}
