//! Names of shared memory: the client side of the root's named segments
//! (`hub/objects/segment.rs`).
//!
//! A name is a hosted object whose id is a hash of the name, so every process that names it
//! reaches the same object without asking anyone first. Making or opening one is one round trip
//! to the root, which answers with an offer of the segment's descriptor; the descriptor is then
//! taken from the root's fd server and mapped here.

use super::SharedMemory;
use crate::error::{Error, Result};
use crate::hub::{current_host, Handle};
use crate::protocol::{SegmentOp, SegmentSpec};
use crate::transport::segment::Shared;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A name, and this process's handle to it at the root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Named {
    name: String,
    handle: Handle<SegmentSpec>,
}

impl Named {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// A name received with a handle from another process: counted at the root from now on,
    /// where a runtime of the launch is at hand to send the count (and otherwise at its first
    /// use, which the user's handle never needs: the memory came with the descriptor).
    pub(super) fn received(self) -> Arc<Named> {
        let named = Arc::new(self);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let counting = Arc::clone(&named);
            runtime.spawn(async move {
                // Counting needs the root; if it is gone there is nothing to keep.
                let _ = counting.handle.client().await;
            });
        }
        named
    }
}

/// The id of `name`'s object: FNV-1a of the name behind a tag, so it does not look like the
/// random ids of other objects. The host keeps the name itself, so a collision is refused,
/// never confused.
fn id_of(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"shm:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Makes a segment of `len` bytes under `name` at the root.
pub(super) async fn create(name: &str, len: usize) -> Result<SharedMemory> {
    let op = SegmentOp::Create { len: len as u64 };
    ask(name, op).await.map_err(|e| match e {
        Error::InvalidArgument(_) => Error::InvalidArgument(format!(
            "shared memory named `{name}` exists already in this run; open it, or pick another name"
        )),
        Error::Lookup(_) => Error::Lookup(format!(
            "the root could not make {len} bytes of shared memory for `{name}`"
        )),
        other => other,
    })
}

/// The segment under `name`.
pub(super) async fn open(name: &str) -> Result<SharedMemory> {
    ask(name, SegmentOp::Open).await.map_err(|e| match e {
        Error::Lookup(_) => Error::Lookup(format!(
            "no shared memory named `{name}` is held by any process of this run"
        )),
        other => other,
    })
}

/// Opens a handle to `name`'s object, asks `op` of it, and maps the segment the root offers.
async fn ask(name: &str, op: SegmentOp) -> Result<SharedMemory> {
    let client = current_host().await?;
    // Counted at once: if this future is dropped, dropping the handle releases it.
    let handle = Handle::open_in(SegmentSpec, id_of(name), &client);
    let reply = handle.call_with(op, name.as_bytes().to_vec()).await?;
    let bytes = reply
        .body
        .ok_or_else(|| {
            Error::Protocol("the root answered a segment without its descriptor".into())
        })?
        .to_vec();
    // Taking the descriptor is a blocking round trip to the root's fd server.
    let segment = tokio::task::spawn_blocking(move || {
        postcard::from_bytes::<Shared>(&bytes)
            .map_err(|e| Error::decode("a named shared memory segment", e))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    Ok(SharedMemory {
        segment,
        named: Some(Arc::new(Named {
            name: name.to_owned(),
            handle,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::id_of;

    #[test]
    fn ids_are_stable_and_differ_by_name() {
        assert_eq!(id_of("a"), id_of("a"));
        assert_ne!(id_of("a"), id_of("b"));
        assert_ne!(id_of(""), id_of("a"));
    }
}
