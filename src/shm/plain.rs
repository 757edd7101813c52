//! Which types live in shared memory: plain data ([`Plain`]), and integers with atomics
//! ([`Integer`]). Both are sealed: the crate lists the types, so no padding byte, pointer or
//! invalid bit pattern can end up shared.

use std::sync::atomic::Ordering::SeqCst;

mod sealed {
    #[allow(unreachable_pub)]
    pub trait Sealed {}
}

/// Plain data: any bit pattern is a valid value, no padding, no pointers, no drop (Python's
/// ctypes scalars). Implemented for the integer and float primitives and arrays of them.
pub trait Plain: Copy + Send + Sync + 'static + sealed::Sealed {}

/// Integers, which get lock-free atomics in a [`Value`](super::Value).
pub trait Integer: Plain {
    #[doc(hidden)]
    /// # Safety
    /// `p` is aligned, valid for reads and writes, and only accessed atomically meanwhile.
    unsafe fn load_at(p: *mut Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As [`Integer::load_at`].
    unsafe fn store_at(p: *mut Self, v: Self);
    #[doc(hidden)]
    /// # Safety
    /// As [`Integer::load_at`].
    unsafe fn fetch_add_at(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As [`Integer::load_at`].
    unsafe fn fetch_sub_at(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As [`Integer::load_at`].
    unsafe fn swap_at(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As [`Integer::load_at`].
    unsafe fn compare_exchange_at(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}

plain!(f32, f64);

impl<T: Plain, const N: usize> sealed::Sealed for [T; N] {}
impl<T: Plain, const N: usize> Plain for [T; N] {}

macro_rules! integer {
    ($($t:ty => $a:ty),*) => {$(
        plain!($t);
        // SAFETY (all methods): the caller guarantees what `from_ptr` requires: `p` is aligned
        // for the atomic type (same size and alignment as the integer), valid, and accessed only
        // atomically while the reference lives (which is just this call).
        impl Integer for $t {
            unsafe fn load_at(p: *mut Self) -> Self {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.load(SeqCst)
            }
            unsafe fn store_at(p: *mut Self, v: Self) {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.store(v, SeqCst)
            }
            unsafe fn fetch_add_at(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.fetch_add(v, SeqCst)
            }
            unsafe fn fetch_sub_at(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.fetch_sub(v, SeqCst)
            }
            unsafe fn swap_at(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.swap(v, SeqCst)
            }
            unsafe fn compare_exchange_at(p: *mut Self, current: Self, new: Self) -> Result<Self, Self> {
                // SAFETY: see above.
                unsafe { <$a>::from_ptr(p) }.compare_exchange(current, new, SeqCst, SeqCst)
            }
        }
    )*};
}

integer!(
    u8 => std::sync::atomic::AtomicU8,
    u16 => std::sync::atomic::AtomicU16,
    u32 => std::sync::atomic::AtomicU32,
    u64 => std::sync::atomic::AtomicU64,
    usize => std::sync::atomic::AtomicUsize,
    i8 => std::sync::atomic::AtomicI8,
    i16 => std::sync::atomic::AtomicI16,
    i32 => std::sync::atomic::AtomicI32,
    i64 => std::sync::atomic::AtomicI64,
    isize => std::sync::atomic::AtomicIsize
);
