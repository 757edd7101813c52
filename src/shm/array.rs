//! [`Array`]: a fixed-length array of plain data in shared memory, with a lock.

use super::plain::Plain;
use crate::error::{Error, Result};
use crate::hub::{Held, LockWord};
use crate::transport::segment::{Segment, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;

/// A fixed-length array of `T` in shared memory: Python's `multiprocessing.Array`.
///
/// Every handle (clone, or a copy deserialized in another process) maps the same memory, so a
/// write through one is seen through all, without copying. Element reads and writes
/// ([`Array::get`], [`Array::set`]) are single volatile accesses: each element of a primitive
/// type up to 8 bytes is read or written whole, but nothing orders a sequence of them against
/// another process's; take [`Array::lock`] for that.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::Array;
/// let a = Array::from_slice(&[1.0f64, 2.0, 3.0])?;
/// a.set(1, 5.0);
/// {
///     let mut guard = a.lock().await?;
///     guard[0] += 1.0;
/// }
/// assert_eq!(a.to_vec(), vec![2.0, 5.0, 3.0]);
/// # Ok(())
/// # }
/// ```
pub struct Array<T: Plain> {
    segment: Shared,
    len: usize,
    lock: LockWord,
    _t: PhantomData<T>,
}

impl<T: Plain> Array<T> {
    /// An array of `len` zeroes.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory (too large, a memory limit, too many files).
    pub fn new(len: usize) -> Result<Array<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Io(std::io::Error::other("array too large")))?;
        Ok(Array {
            segment: Shared::new(Segment::create(bytes)?),
            len,
            lock: LockWord::new(),
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    /// As [`Array::new`].
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let array = Array::new(items.len())?;
        // SAFETY: the new segment holds `items.len()` elements of `T`, is page-aligned, and is
        // not yet shared with anyone; the source is a valid slice that cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), array.ptr(), items.len()) };
        Ok(array)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ptr(&self) -> *mut T {
        self.segment.as_ptr().cast()
    }

    /// The first element's address in this process (page-aligned).
    pub fn as_ptr(&self) -> *mut T {
        self.ptr()
    }

    #[track_caller]
    fn check(&self, i: usize) {
        assert!(
            i < self.len,
            "index {i} out of range for an Array of {}",
            self.len
        );
    }

    /// Element `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[track_caller]
    pub fn get(&self, i: usize) -> T {
        self.check(i);
        // SAFETY: `i` is in range of the mapping, which is aligned for `T`; any bit pattern is
        // a valid `T` (`Plain`), so whatever another process wrote there reads as a value.
        unsafe { std::ptr::read_volatile(self.ptr().add(i)) }
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[track_caller]
    pub fn set(&self, i: usize, value: T) {
        self.check(i);
        // SAFETY: as in `get`; the memory is writable shared memory owned by no Rust reference
        // (guards hand out references only while the lock is held, and callers who write
        // without it accept torn sequences, not torn elements).
        unsafe { std::ptr::write_volatile(self.ptr().add(i), value) }
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// Takes the array's lock (Python's `with arr.get_lock():`); the guard derefs to the
    /// elements.
    ///
    /// # Cancel safety
    /// Cancel-safe, as `sync::Lock::acquire`.
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        Ok(ArrayGuard {
            array: self,
            held: self.lock.acquire().await?,
        })
    }

    /// The lock, for `Value`'s guard.
    pub(super) fn lock_word(&self) -> &LockWord {
        &self.lock
    }
}

/// The held lock of an [`Array`]; derefs to its elements, and releases the lock when dropped.
///
/// The exclusion holds against other holders of the lock; a process that calls
/// [`Array::set`] without it can still change elements under the guard.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct ArrayGuard<'a, T: Plain> {
    array: &'a Array<T>,
    held: Held<'a>,
}

impl<T: Plain> ArrayGuard<'_, T> {
    /// Whether the previous holder of the lock died holding it.
    pub fn is_poisoned(&self) -> bool {
        self.held.is_poisoned()
    }
}

impl<T: Plain> std::ops::Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` aligned, valid (`Plain`) elements and lives as long
        // as the borrowed array; the lock is held, so every cooperating writer is excluded.
        unsafe { std::slice::from_raw_parts(self.array.ptr(), self.array.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; the guard is borrowed mutably, so this is the one reference
        // into the elements this guard gives out.
        unsafe { std::slice::from_raw_parts_mut(self.array.ptr(), self.array.len) }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("items", &&**self)
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

impl<T: Plain> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            segment: self.segment.clone(),
            len: self.len,
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    segment: &'a Shared,
    len: u64,
    lock: &'a LockWord,
}

#[derive(Deserialize)]
struct Wire {
    segment: Shared,
    len: u64,
    lock: LockWord,
}

impl<T: Plain> Serialize for Array<T> {
    /// Offers the segment's descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireRef {
            segment: &self.segment,
            len: self.len as u64,
            lock: &self.lock,
        }
        .serialize(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for Array<T> {
    /// Takes the segment's descriptor and maps it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let Wire { segment, len, lock } = Wire::deserialize(d)?;
        let len = usize::try_from(len).map_err(|_| D::Error::custom("array too long"))?;
        let fits = len
            .checked_mul(std::mem::size_of::<T>())
            .is_some_and(|b| b <= segment.len());
        if !fits {
            return Err(D::Error::custom(
                "the array's segment is smaller than its length (another element type?)",
            ));
        }
        Ok(Array {
            segment,
            len,
            lock,
            _t: PhantomData,
        })
    }
}
