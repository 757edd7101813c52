//! Shared memory: [`SharedMemory`] (raw bytes), [`Value`] and [`Array`] (plain data with a lock
//! and atomics), [`SharedBytes`] (large payloads that cross without being copied).
//!
//! Use these when processes must see the same bytes, or when a payload is too large to encode
//! and copy through a socket. For messages, a `Queue` or a pipe is simpler.
//!
//! # Memory no crash can leak
//! Every segment is an anonymous `memfd_create` file mapped `MAP_SHARED`. Nothing is named in
//! `/dev/shm`: a handle crosses to another process as a descriptor (`SCM_RIGHTS`), and the
//! kernel frees the memory when the last descriptor and mapping are gone, however the processes
//! ended (a normal exit, a panic, SIGKILL). Python needs a resource-tracker process for this
//! and can still leak or unlink too early (cpython#82300). A serialized handle that nobody
//! deserializes keeps its memory until its offer expires (two minutes, see
//! `transport/fd.rs`).
//!
//! # What is unsafe about shared bytes
//! Other processes can write the memory at any moment, outside anything the compiler can see.
//! A `&[u8]` into such memory promises that it does not change while borrowed, so handing one
//! out is only sound when every writer is excluded. Hence: [`SharedMemory::as_slice`] and
//! [`SharedMemory::as_mut_slice`] are `unsafe` (the caller promises the exclusion, e.g. with a
//! `sync::Lock`); [`SharedMemory::read`] and [`SharedMemory::write`] are safe copies (bytes
//! written meanwhile may show up in part); [`Value`]/[`Array`] elements are single volatile
//! accesses, their guards hand out references while their lock is held; a [`SharedBytes`] is
//! immutable once made, in every process.

mod array;
mod bytes;
mod plain;
mod value;

pub use array::{Array, ArrayGuard};
pub use bytes::{SharedBytes, SharedBytesMut};
pub use plain::{Integer, Plain};
pub use value::{Value, ValueGuard};

use crate::error::Result;
use crate::transport::segment::{Segment, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A block of shared memory: Python's `multiprocessing.shared_memory.SharedMemory`, without
/// the name (see the [module docs](self) for how it is freed).
///
/// `Clone` gives another handle to the same memory; serializing it (as an entry's argument, a
/// pool task, a queue item) hands the receiving process a descriptor, and it maps the same
/// pages.
///
/// ```
/// # fn main() -> multiprocessing::Result<()> {
/// let shm = multiprocessing::SharedMemory::create(4096)?;
/// shm.write(10, b"hello");
/// let mut got = [0u8; 5];
/// shm.read(10, &mut got);
/// assert_eq!(&got, b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedMemory(Shared);

impl SharedMemory {
    /// New zero-filled shared memory of `size` bytes.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory (a memory limit, too many open files).
    pub fn create(size: usize) -> Result<SharedMemory> {
        Ok(SharedMemory(Shared::new(Segment::create(size)?)))
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The first byte's address in this process (page-aligned; valid for [`SharedMemory::len`]
    /// bytes while this handle lives).
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.as_ptr()
    }

    #[track_caller]
    fn range(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len()),
            "bytes {offset}..{offset}+{len} out of range for SharedMemory of {}",
            self.len()
        );
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[track_caller]
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        self.range(offset, buf.len());
        // SAFETY: the range lies in the mapping (checked); `buf` is a distinct, valid buffer.
        // A concurrent writer can only make the copied bytes a mix of old and new.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Copies `data` into the memory at `offset`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[track_caller]
    pub fn write(&self, offset: usize, data: &[u8]) {
        self.range(offset, data.len());
        // SAFETY: as in `read`, the other way round; nothing in this process holds a reference
        // into the memory except through the unsafe accessors, whose callers exclude writers.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        }
    }

    /// The memory as a slice.
    ///
    /// # Safety
    /// No process may write the memory while the slice lives (take a lock around both, or write
    /// only before it is shared).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` bytes and lives as long as `self`; the caller
        // promises that nobody writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The memory as a mutable slice.
    ///
    /// # Safety
    /// No other process or handle may read or write the memory while the slice lives, and no
    /// other slice of it may exist in this process.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with the caller promising exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for SharedMemory {
    /// Offers the memory's descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    /// Takes the descriptor and maps it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SharedMemory(Shared::deserialize(d)?))
    }
}
