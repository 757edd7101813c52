//! [`Dict`]: a proxy to a dict hosted by the manager.

use super::proxy::{self, pair, parts, Proxy};
use super::Host;
use crate::error::{Error, Result};
use crate::protocol::{push_part, DictOp, DictSpec, IntKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

const KEY: &str = "a manager dict key";
const VALUE: &str = "a manager dict value";

/// A dict shared by every process of the run, made by [`Manager::dict`](super::Manager::dict):
/// Python's `manager.dict()`, with typed keys and values.
///
/// The dict lives in the root process; this is a proxy to it, `Clone + Serialize +
/// Deserialize`, so it can be handed to a child, a grandchild, a pool task or through a
/// `Queue`. Every operation is one request to the root, applied whole: two processes never
/// see half of each other's operations. The dict keeps insertion order, as Python's does, and
/// is freed when the last proxy to it in the whole tree is dropped.
///
/// Keys are compared by their encoding (postcard bytes): for integers, strings, and enums and
/// tuples of them that is their `Eq`; a float key `-0.0` is not `0.0`.
///
/// `d[k] += 1` from many processes is [`Dict::fetch_add`], done by the host in one step.
///
/// A copy on its way (an entry argument of a child not yet running, an item in a queue) holds
/// the dict until its receiver uses it or drops it, so the sender may drop its own proxies at
/// once. A copy that never arrives (an item left in a queue) keeps the dict until the run ends.
///
/// ```no_run
/// # async fn demo() -> multiprocessing::Result<()> {
/// let m = multiprocessing::Manager::start().await?;
/// let d = m.dict::<String, u64>();
/// d.insert("a".into(), 1).await?;
/// assert_eq!(d.fetch_add(&"a".into(), 2).await?, 3);
/// # Ok(()) }
/// ```
pub struct Dict<K, V> {
    proxy: Proxy<DictSpec>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Dict<K, V> {
    pub(super) fn new(host: &Host) -> Self {
        Dict {
            proxy: Proxy::new(DictSpec, "dict", host),
            _types: PhantomData,
        }
    }

    pub(super) fn named(name: &str, host: &Host) -> Self {
        Dict {
            proxy: Proxy::by_name(DictSpec, "dict", name, host),
            _types: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// Sets `key` to `value`; returns the value it replaced, if any (`d[key] = value`).
    ///
    /// # Errors
    /// `Encode`/`Decode` when a key or value does not cross; `Closed` when the root is gone;
    /// `NotLaunched` outside a launch.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the insert may still happen.
    pub async fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let body = pair((KEY, &key), (VALUE, &value))?;
        self.proxy.value(DictOp::Insert, body).await
    }

    /// Sets `key` to `value` without waiting for the root's answer (Python's `d[key] = value`,
    /// which returns nothing): one message instead of a round trip. This process's later
    /// operations see it (they are applied in order), and a child's entry reports its result
    /// only after the root has applied it; a process killed right after `set` may lose it.
    ///
    /// # Errors
    /// `Encode` when the key or value does not encode; `Closed` when the root is gone;
    /// `NotLaunched` outside a launch.
    ///
    /// # Cancel safety
    /// Cancel-safe: the entry is sent in the poll that completes, or not at all.
    pub async fn set(&self, key: K, value: V) -> Result<()> {
        let body = pair((KEY, &key), (VALUE, &value))?;
        self.proxy.post(DictOp::Insert, body).await
    }

    /// The value at `key`, if any.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        self.proxy.value(DictOp::Get, parts(KEY, &[key])?).await
    }

    /// Takes `key` out; returns its value, if it was there.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the key may still be removed.
    pub async fn remove(&self, key: &K) -> Result<Option<V>> {
        self.proxy.value(DictOp::Remove, parts(KEY, &[key])?).await
    }

    /// Whether `key` is in the dict (`key in d`).
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn contains_key(&self, key: &K) -> Result<bool> {
        let body = parts(KEY, &[key])?;
        Ok(self.proxy.number(DictOp::ContainsKey, body).await? != 0)
    }

    /// How many entries the dict holds.
    ///
    /// # Errors
    /// `Closed` when the root is gone; `NotLaunched` outside a launch.
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn len(&self) -> Result<usize> {
        Ok(self.proxy.number(DictOp::Len, Vec::new()).await? as usize)
    }

    /// Whether the dict is empty.
    ///
    /// # Errors
    /// As [`Dict::len`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The keys, in insertion order, as one snapshot.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn keys(&self) -> Result<Vec<K>> {
        Ok(self.proxy.items(DictOp::Keys).await?.0)
    }

    /// The values, in insertion order, as one snapshot.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn values(&self) -> Result<Vec<V>> {
        Ok(self.proxy.items(DictOp::Values).await?.0)
    }

    /// The `(key, value)` pairs, in insertion order, as one snapshot.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn items(&self) -> Result<Vec<(K, V)>> {
        Ok(self.proxy.items(DictOp::Items).await?.0)
    }

    /// The whole dict as a `HashMap`, as one snapshot (Python's `dict(d)`).
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn to_hashmap(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self.items().await?.into_iter().collect())
    }

    /// Sets every pair of `entries`, in one step: no process sees some of them set and not
    /// the others.
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the update may still happen.
    pub async fn update(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let mut body = Vec::new();
        for (k, v) in entries {
            body = push_part(VALUE, &v, push_part(KEY, &k, body)?)?;
        }
        self.proxy.done(DictOp::Update, body).await
    }

    /// Empties the dict.
    ///
    /// # Errors
    /// As [`Dict::len`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the dict may still be cleared.
    pub async fn clear(&self) -> Result<()> {
        self.proxy.done(DictOp::Clear, Vec::new()).await
    }

    /// The value at `key`, after setting it to `default` if it was missing, in one step
    /// (Python's `setdefault`).
    ///
    /// # Errors
    /// As [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the default may still be set.
    pub async fn get_or_insert(&self, key: K, default: V) -> Result<V> {
        let body = pair((KEY, &key), (VALUE, &default))?;
        let value = self.proxy.value(DictOp::GetOrInsert, body).await?;
        value.ok_or_else(|| {
            Error::Protocol("the manager host answered get_or_insert without a value".into())
        })
    }
}

impl<K: Serialize + DeserializeOwned, V: Integer + Serialize + DeserializeOwned> Dict<K, V> {
    /// Adds `delta` to the integer at `key` (0 if missing) and returns the sum, in one step:
    /// `d[key] += delta` from many processes at once loses nothing.
    ///
    /// The host does the sum: it reads the value as an integer of `V`'s type, which it can
    /// without knowing `V` (no code travels to it, and it never blocks on a process that might
    /// die holding the value).
    ///
    /// # Errors
    /// `InvalidArgument` (naming the dict) when the sum does not fit `V`; as [`Dict::insert`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the addition may still happen.
    pub async fn fetch_add(&self, key: &K, delta: i64) -> Result<V> {
        let body = parts(KEY, &[key])?;
        let int = IntKind {
            signed: V::SIGNED,
            bits: V::BITS,
        };
        let sum = self
            .proxy
            .value(DictOp::FetchAdd { delta, int }, body)
            .await?;
        sum.ok_or_else(|| {
            Error::Protocol("the manager host answered fetch_add without a value".into())
        })
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The integer types a [`Dict::fetch_add`] works on (sealed: the host reads them as postcard
/// writes them).
pub trait Integer: sealed::Sealed {
    /// Whether the type is signed.
    #[doc(hidden)]
    const SIGNED: bool;
    /// Its width in bits (64 for `usize`/`isize`, which postcard writes as 64-bit varints).
    #[doc(hidden)]
    const BITS: u8;
}

macro_rules! integer {
    ($($t:ty: $signed:expr, $bits:expr;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Integer for $t {
            const SIGNED: bool = $signed;
            const BITS: u8 = $bits;
        }
    )*};
}

integer! {
    u8: false, 8; u16: false, 16; u32: false, 32; u64: false, 64; usize: false, 64;
    i8: true, 8; i16: true, 16; i32: true, 32; i64: true, 64; isize: true, 64;
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict {
            proxy: self.proxy.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.proxy.fmt(f)
    }
}

impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.proxy.serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for Dict<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Dict {
            proxy: proxy::deserialize(d, "dict")?,
            _types: PhantomData,
        })
    }
}
