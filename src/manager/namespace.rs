//! [`Namespace`]: a proxy to a set of named, typed fields hosted by the manager.

use super::proxy::{self, pair, parts, Proxy};
use super::Host;
use crate::error::{Error, Result};
use crate::protocol::{DictOp, DictSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

const VALUE: &str = "a namespace field";

/// Named fields shared by every process of the run, made by
/// [`Manager::namespace`](super::Manager::namespace): Python's `manager.Namespace()`, where
/// `ns.x = 10` is `ns.set("x", 10)` and `ns.x` is `ns.get::<i64>("x")`.
///
/// Each field holds a value of any serde type; the reader names the type. A namespace is a
/// dict from names to values underneath, with the same rules (see [`Dict`](super::Dict)).
#[derive(Clone)]
pub struct Namespace {
    proxy: Proxy<DictSpec>,
}

impl Namespace {
    pub(super) fn new(host: &Host) -> Self {
        Namespace {
            proxy: Proxy::new(DictSpec, "namespace", host),
        }
    }

    pub(super) fn named(name: &str, host: &Host) -> Self {
        Namespace {
            proxy: Proxy::by_name(DictSpec, "namespace", name, host),
        }
    }

    /// Sets field `name` to `value`.
    ///
    /// # Errors
    /// `Encode` when the value does not encode; `Closed` when the root is gone; `NotLaunched`
    /// outside a launch.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the field may still be set.
    pub async fn set<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        let body = pair((VALUE, name), (VALUE, &value))?;
        self.proxy.ask(DictOp::Insert, body).await.map(drop)
    }

    /// The value of field `name`, read as a `T`.
    ///
    /// # Errors
    /// `Lookup` (naming the namespace and the field) when it has no such field (Python's
    /// `AttributeError`); `Decode` when the field holds a value of another type; as
    /// [`Namespace::set`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.try_get(name).await?.ok_or_else(|| {
            self.proxy
                .named(Error::Lookup(format!("it has no field `{name}`")))
        })
    }

    /// The value of field `name` as a `T`, or `None` if it has no such field.
    ///
    /// # Errors
    /// As [`Namespace::get`], but a missing field is `Ok(None)`.
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn try_get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.proxy.value(DictOp::Get, parts(VALUE, &[name])?).await
    }

    /// Removes field `name` (Python's `del ns.name`); returns whether it was there.
    ///
    /// # Errors
    /// As [`Namespace::set`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the field may still be removed.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let body = parts(VALUE, &[name])?;
        let (_, found) = self.proxy.ask_found(DictOp::Remove, body).await?;
        Ok(matches!(found, proxy::Found::Value(_)))
    }

    /// The names of the fields, in the order they were first set.
    ///
    /// # Errors
    /// As [`Namespace::set`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(self.proxy.items(DictOp::Keys).await?.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.proxy.fmt(f)
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.proxy.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Namespace {
            proxy: proxy::deserialize(d, "namespace")?,
        })
    }
}
