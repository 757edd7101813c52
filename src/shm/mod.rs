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
mod named;
mod plain;
mod value;

pub use array::{Array, ArrayGuard};
pub use bytes::{SharedBytes, SharedBytesMut};
pub use plain::{Integer, Plain};
pub use value::{Value, ValueGuard};

use crate::error::Result;
use crate::transport::segment::{Segment, Shared};
use named::Named;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A block of shared memory: Python's `multiprocessing.shared_memory.SharedMemory` (see the
/// [module docs](self) for how it is freed).
///
/// `Clone` gives another handle to the same memory; serializing it (as an entry's argument, a
/// pool task, a queue item) hands the receiving process a descriptor, and it maps the same
/// pages.
///
/// # Names
/// [`SharedMemory::create`] makes memory without a name: only processes handed a handle reach
/// it. [`SharedMemory::create_named`] also registers a name with the run's root, and any
/// process of the run (a grandchild, a process that was never handed a handle) reaches the
/// same memory with [`SharedMemory::open`]. The root keeps the name, and a descriptor of the
/// memory, while any process holds a handle made by `create_named` or `open`, or a clone of
/// one, or one received from a process that held one (counted once its process has told the
/// root, which it does on receipt when a runtime of the launch is at hand, or else at its first
/// use of the name); it drops both with the last, even if every holder was SIGKILLed. Nothing
/// is ever named in `/dev/shm`: the name lives in the root's memory only, and dies with the
/// run.
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
pub struct SharedMemory {
    segment: Shared,
    named: Option<Arc<Named>>,
}

impl SharedMemory {
    /// New zero-filled shared memory of `size` bytes, without a name.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory (a memory limit, too many open files).
    pub fn create(size: usize) -> Result<SharedMemory> {
        Ok(SharedMemory {
            segment: Shared::new(Segment::create(size)?),
            named: None,
        })
    }

    /// New zero-filled shared memory of `size` bytes under `name`, which any process of the
    /// run can then [`open`](SharedMemory::open) (Python's `SharedMemory(name, create=True,
    /// size=size)`). The root makes the memory and keeps the name while any process holds a
    /// handle to it (see [Names](SharedMemory#names)).
    ///
    /// ```
    /// use multiprocessing::{entry, Process, SharedMemory};
    ///
    /// #[entry]
    /// async fn greet() {
    ///     let shm = SharedMemory::open("greeting").await.unwrap();
    ///     shm.write(0, b"hi");
    /// }
    ///
    /// #[multiprocessing::process_main]
    /// async fn main() -> multiprocessing::Result<()> {
    ///     let shm = SharedMemory::create_named("greeting", 4096).await?;
    ///     Process::spawn(greet, ()).await?.join().await?;
    ///     let mut got = [0u8; 2];
    ///     shm.read(0, &mut got);
    ///     assert_eq!(&got, b"hi");
    ///     assert_eq!(shm.name(), Some("greeting"));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returns, the handle it was making is released (a name
    /// made meanwhile is dropped with it, unless another process opened it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when a segment of this name
    /// exists in the run; [`Error::Lookup`](crate::Error::Lookup) when the root could not make
    /// the memory; `NotLaunched` outside a launch; `Closed` when the root is gone.
    pub async fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        named::create(name, size).await
    }

    /// The shared memory registered under `name` by [`SharedMemory::create_named`] in any
    /// process of the run (Python's `SharedMemory(name)`): the same pages, mapped here.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returns, the handle it was making is released.
    ///
    /// # Errors
    /// [`Error::Lookup`](crate::Error::Lookup) when no process of the run holds a segment of
    /// this name (never made, or its last handle is gone); `NotLaunched` outside a launch;
    /// `Closed` when the root is gone.
    pub async fn open(name: &str) -> Result<SharedMemory> {
        named::open(name).await
    }

    /// The name it was made or opened under; `None` for memory made by
    /// [`SharedMemory::create`].
    pub fn name(&self) -> Option<&str> {
        self.named.as_ref().map(|n| n.name())
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.segment.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.segment.len() == 0
    }

    /// The first byte's address in this process (page-aligned; valid for [`SharedMemory::len`]
    /// bytes while this handle lives).
    pub fn as_ptr(&self) -> *mut u8 {
        self.segment.as_ptr()
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
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Serialize for SharedMemory {
    /// Offers the memory's descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // On the wire: the descriptor's offer, and the name's handle if it has one. Borrowed,
        // so a handle serialized twice for one message (sized, then written) makes one offer.
        (&self.segment, self.named.as_deref()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    /// Takes the descriptor and maps it; a name's handle is counted at the root from here on
    /// (see [Names](SharedMemory#names)).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, named) = <(Shared, Option<Named>)>::deserialize(d)?;
        Ok(SharedMemory {
            segment,
            named: named.map(Named::received),
        })
    }
}
