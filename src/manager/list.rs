//! [`List`]: a proxy to a list hosted by the manager.

use super::proxy::{self, parts, Proxy};
use super::Host;
use crate::error::{Error, Result};
use crate::protocol::{push_part, ListOp, ListSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

const ITEM: &str = "a manager list item";

/// A list shared by every process of the run, made by [`Manager::list`](super::Manager::list):
/// Python's `manager.list()`, with typed items.
///
/// Like [`Dict`](super::Dict), it lives in the root process and this is a `Clone + Serialize`
/// proxy to it; every operation is applied whole; it is freed with the last proxy in the tree.
/// Indices are `usize` (no negative indices).
pub struct List<T> {
    proxy: Proxy<ListSpec>,
    _types: PhantomData<fn() -> T>,
}

impl<T> List<T> {
    pub(super) fn new(host: &Host) -> Self {
        List {
            proxy: Proxy::new(ListSpec, "list", host),
            _types: PhantomData,
        }
    }

    pub(super) fn named(name: &str, host: &Host) -> Self {
        List {
            proxy: Proxy::by_name(ListSpec, "list", name, host),
            _types: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `item` (Python's `append`).
    ///
    /// # Errors
    /// `Encode`/`Decode` when an item does not cross; `Closed` when the root is gone;
    /// `NotLaunched` outside a launch.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the item may still be appended.
    pub async fn push(&self, item: T) -> Result<()> {
        self.proxy.done(ListOp::Push, parts(ITEM, &[&item])?).await
    }

    /// Appends every item of `items`, in one step.
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the items may still be appended.
    pub async fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let body = items
            .into_iter()
            .try_fold(Vec::new(), |body, i| push_part(ITEM, &i, body))?;
        self.proxy.done(ListOp::Extend, body).await
    }

    /// Takes the last item out, if there is one.
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the item may be taken and lost.
    pub async fn pop(&self) -> Result<Option<T>> {
        self.proxy.value(ListOp::Pop, Vec::new()).await
    }

    /// The item at `index`, if there is one.
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn get(&self, index: usize) -> Result<Option<T>> {
        self.proxy
            .value(
                ListOp::Get {
                    index: index as u64,
                },
                Vec::new(),
            )
            .await
    }

    /// Replaces the item at `index` (`l[index] = item`).
    ///
    /// # Errors
    /// `Lookup` (naming the list and the index) when there is no item at `index`; as
    /// [`List::push`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the item may still be replaced.
    pub async fn set(&self, index: usize, item: T) -> Result<()> {
        let op = ListOp::Set {
            index: index as u64,
        };
        self.proxy.done(op, parts(ITEM, &[&item])?).await
    }

    /// Inserts `item` before `index`; at the end when `index` is past it, as Python's
    /// `insert` does.
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the item may still be inserted.
    pub async fn insert(&self, index: usize, item: T) -> Result<()> {
        let op = ListOp::Insert {
            index: index as u64,
        };
        self.proxy.done(op, parts(ITEM, &[&item])?).await
    }

    /// Takes the item at `index` out and returns it (Python's `pop(index)`).
    ///
    /// # Errors
    /// `Lookup` (naming the list and the index) when there is no item at `index`; as
    /// [`List::push`].
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the item may be taken and lost.
    pub async fn remove(&self, index: usize) -> Result<T> {
        let op = ListOp::Remove {
            index: index as u64,
        };
        let item = self.proxy.value(op, Vec::new()).await?;
        item.ok_or_else(|| {
            Error::Protocol("the manager host answered remove without an item".into())
        })
    }

    /// Reverses the list in place.
    ///
    /// # Errors
    /// `Closed` when the root is gone; `NotLaunched` outside a launch.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped after the request was sent, the list may still be reversed.
    pub async fn reverse(&self) -> Result<()> {
        self.proxy.done(ListOp::Reverse, Vec::new()).await
    }

    /// How many items the list holds.
    ///
    /// # Errors
    /// As [`List::reverse`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn len(&self) -> Result<usize> {
        Ok(self.proxy.number(ListOp::Len, Vec::new()).await? as usize)
    }

    /// Whether the list is empty.
    ///
    /// # Errors
    /// As [`List::reverse`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Every item, as one snapshot (Python's `list(l)`).
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it changes nothing.
    pub async fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.proxy.items(ListOp::Snapshot).await?.0)
    }

    /// Sorts the list, atomically: the host cannot compare items it never decodes, so this
    /// process sorts a snapshot and the host takes the result only if nobody changed the list
    /// meanwhile; otherwise it sorts again.
    ///
    /// # Errors
    /// As [`List::push`].
    ///
    /// # Cancel safety
    /// Cancel-safe: the list changes only in the one step that replaces it.
    pub async fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        loop {
            let (mut items, version) = self.proxy.items::<T>(ListOp::Snapshot).await?;
            items.sort();
            let body = parts(ITEM, &items.iter().collect::<Vec<_>>())?;
            if self.proxy.number(ListOp::Replace { version }, body).await? == 1 {
                return Ok(());
            }
            // Someone changed the list after the snapshot: sort the new one.
        }
    }
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List {
            proxy: self.proxy.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.proxy.fmt(f)
    }
}

impl<T> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.proxy.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(List {
            proxy: proxy::deserialize(d, "list")?,
            _types: PhantomData,
        })
    }
}
