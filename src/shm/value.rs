//! [`Value`]: one plain-data value in shared memory, with a lock and, for integers, atomics.

use super::array::Array;
use super::plain::{Integer, Plain};
use crate::error::Result;
use crate::hub::Held;
use serde::{Deserialize, Serialize};

/// One value of plain data in shared memory: Python's `multiprocessing.Value`.
///
/// Every handle (clone, or a copy deserialized in another process) maps the same memory.
/// [`Value::load`] and [`Value::store`] are single volatile accesses; for integers,
/// [`Value::fetch_add`], [`Value::fetch_sub`], [`Value::swap`] and [`Value::compare_exchange`]
/// are lock-free atomic operations (sequentially consistent). A read-modify-write with
/// `load` and `store` needs [`Value::lock`], as in Python.
///
/// ```
/// # #[multiprocessing::process_main]
/// # async fn main() -> multiprocessing::Result<()> {
/// use multiprocessing::Value;
/// let v = Value::new(41i64)?;
/// v.fetch_add(1);
/// {
///     let mut guard = v.lock().await?;
///     *guard *= 2;
/// }
/// assert_eq!(v.load(), 84);
/// # Ok(())
/// # }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Plain>(Array<T>);

impl<T: Plain> Value<T> {
    /// A value in new shared memory, starting as `value`.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memory.
    pub fn new(value: T) -> Result<Value<T>> {
        Ok(Value(Array::from_slice(std::slice::from_ref(&value))?))
    }

    /// The value now.
    pub fn load(&self) -> T {
        self.0.get(0)
    }

    /// Replaces the value.
    pub fn store(&self, value: T) {
        self.0.set(0, value)
    }

    /// Takes the value's lock (Python's `with v.get_lock():`); the guard derefs to the value.
    ///
    /// # Cancel safety
    /// Cancel-safe, as `sync::Lock::acquire`.
    ///
    /// # Errors
    /// `NotLaunched` outside a launch; `Closed` when the root's hub is gone.
    pub async fn lock(&self) -> Result<ValueGuard<'_, T>> {
        Ok(ValueGuard {
            value: self,
            held: self.0.lock_word().acquire().await?,
        })
    }

    fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T: Integer> Value<T> {
    /// Adds `n` (wrapping) and returns the previous value.
    pub fn fetch_add(&self, n: T) -> T {
        // SAFETY: the value's memory is aligned, mapped while `self` lives, and holds a `T`.
        unsafe { T::fetch_add_at(self.ptr(), n) }
    }

    /// Subtracts `n` (wrapping) and returns the previous value.
    pub fn fetch_sub(&self, n: T) -> T {
        // SAFETY: as in `fetch_add`.
        unsafe { T::fetch_sub_at(self.ptr(), n) }
    }

    /// Replaces the value and returns the previous one.
    pub fn swap(&self, n: T) -> T {
        // SAFETY: as in `fetch_add`.
        unsafe { T::swap_at(self.ptr(), n) }
    }

    /// Stores `new` if the value is `current`. Returns the previous value: `Ok` if it was
    /// `current` (and was replaced), `Err` otherwise.
    ///
    /// # Errors
    /// `Err(actual)` when the value was not `current`.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        // SAFETY: as in `fetch_add`.
        unsafe { T::compare_exchange_at(self.ptr(), current, new) }
    }

    /// The value, read atomically (the same as [`Value::load`] for integers, with ordering).
    pub fn load_atomic(&self) -> T {
        // SAFETY: as in `fetch_add`.
        unsafe { T::load_at(self.ptr()) }
    }

    /// Stores the value atomically (the same as [`Value::store`] for integers, with ordering).
    pub fn store_atomic(&self, n: T) {
        // SAFETY: as in `fetch_add`.
        unsafe { T::store_at(self.ptr(), n) }
    }
}

impl<T: Plain> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value(self.0.clone())
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Value").field(&self.load()).finish()
    }
}

/// The held lock of a [`Value`]; derefs to the value, and releases the lock when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct ValueGuard<'a, T: Plain> {
    value: &'a Value<T>,
    held: Held<'a>,
}

impl<T: Plain> ValueGuard<'_, T> {
    /// Whether the previous holder of the lock died holding it.
    pub fn is_poisoned(&self) -> bool {
        self.held.is_poisoned()
    }
}

impl<T: Plain> std::ops::Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping holds one aligned, valid (`Plain`) `T` and lives as long as the
        // borrowed value; the lock is held, so every cooperating writer is excluded.
        unsafe { &*self.value.ptr() }
    }
}

impl<T: Plain> std::ops::DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is borrowed mutably, so this is the one reference
        // it gives out.
        unsafe { &mut *self.value.ptr() }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &**self)
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}
