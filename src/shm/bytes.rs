//! [`SharedBytes`]: large payloads that cross to another process as a descriptor, not as bytes.

use crate::error::Result;
use crate::transport::segment::{Segment, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable byte buffer in shared memory. Serialized (as an entry's argument or result, a
/// pool task, a queue item), it crosses as a descriptor of its memory, so a 100 MiB payload is
/// neither encoded nor copied through a socket: the receiver maps the same pages.
///
/// Nobody writes to the bytes once a `SharedBytes` exists (it has no mutable access, in any
/// process), which is what makes handing out `&[u8]` sound. To fill one in place without an
/// extra copy, start with [`SharedBytes::with_capacity`] and [`SharedBytesMut::freeze`] it.
///
/// The memory is freed when the last handle in every process is dropped (and the offer of a
/// serialized handle nobody took has expired, at most two minutes later).
///
/// ```
/// # fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::SharedBytes;
/// let a = SharedBytes::from_vec(vec![7u8; 1 << 20])?;
/// let mut b = SharedBytes::with_capacity(4)?;
/// b.copy_from_slice(b"abcd");
/// let b = b.freeze();
/// assert_eq!((a.len(), &b[..]), (1 << 20, &b"abcd"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedBytes(Shared);

/// A [`SharedBytes`] still being written: unique to this process, derefs to `&mut [u8]`.
pub struct SharedBytesMut(Segment);

impl SharedBytes {
    /// The bytes of `bytes`, copied once into new shared memory.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory.
    pub fn from_vec(bytes: Vec<u8>) -> Result<SharedBytes> {
        let shared = Self::copy_from_slice(&bytes);
        // A large `Vec` is freed off this path (see `segment::free_aside`).
        let len = bytes.capacity();
        crate::transport::segment::free_aside(bytes, len);
        shared
    }

    /// A copy of `bytes` in new shared memory.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory.
    pub fn copy_from_slice(bytes: &[u8]) -> Result<SharedBytes> {
        Ok(SharedBytes(Shared::new(Segment::create_from(bytes)?)))
    }

    /// A zero-filled buffer of `len` bytes to write in place, then [`SharedBytesMut::freeze`].
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory.
    pub fn with_capacity(len: usize) -> Result<SharedBytesMut> {
        Ok(SharedBytesMut(Segment::create(len)?))
    }
}

impl SharedBytesMut {
    /// The finished, immutable buffer.
    pub fn freeze(self) -> SharedBytes {
        SharedBytes(Shared::new(self.0))
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` bytes and lives as long as `self`; no process has
        // mutable access to a frozen buffer (see the type's docs), so the bytes do not change.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

impl std::ops::Deref for SharedBytesMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` bytes, lives as long as `self`, and is not shared.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

impl std::ops::DerefMut for SharedBytesMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), self.0.len()) }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SharedBytesMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytesMut")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for SharedBytes {
    /// Offers the memory's descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    /// Takes the descriptor and maps it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SharedBytes(Shared::deserialize(d)?))
    }
}
