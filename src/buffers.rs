//! A few large buffers kept for reuse, so that sending or receiving big values does not fault in
//! fresh pages every time.
//!
//! A fresh 1 MiB allocation is handed out by the allocator as untouched pages; writing it costs
//! one page fault per 4 KiB, which measured as the largest single cost of moving 1 MiB items
//! through a queue. Buffers of at least [`MIN_LEN`] bytes are therefore returned here when a
//! message has been written (or decoded) and taken again for the next one. The pool keeps at
//! most [`KEEP`] buffers of at most [`MAX_LEN`] bytes each, so an idle process holds little.
//!
//! [`Buffer`] makes the return invisible: it is a `Vec<u8>` that goes back to the pool when it
//! is dropped, and [`Shared`] is one that several owners hold (a message body queued to several
//! writers, or kept to be sent again) and that goes back when the last of them drops it. Nobody
//! hands a buffer back by hand. Dropping a small buffer costs what dropping a `Vec` does plus
//! one length check: the pool's lock is only taken for a buffer it would keep. [`take`] hands
//! out a plain `Vec` for code that keeps its bytes for good (a decoded message that becomes a
//! user's value) or wraps it later.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Smaller buffers are not worth keeping: the allocator reuses them well.
pub(crate) const MIN_LEN: usize = 64 << 10;
/// Larger buffers are given back to the allocator.
pub(crate) const MAX_LEN: usize = 8 << 20;
/// How many buffers are kept at most.
pub(crate) const KEEP: usize = 6;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer that returns to the pool when dropped (if it is worth keeping and there is room).
/// Derefs to its `Vec<u8>`; [`Buffer::into_vec`] takes the `Vec` out of the pool's reach.
#[derive(Debug, Default)]
#[must_use = "a Buffer dropped at once only goes back to the pool"]
pub(crate) struct Buffer(Vec<u8>);

impl Buffer {
    /// An empty buffer with room for at least `len` bytes: a kept one if one is large enough.
    pub(crate) fn take(len: usize) -> Self {
        if (MIN_LEN..=MAX_LEN).contains(&len) {
            let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = free.iter().position(|b| b.capacity() >= len) {
                return Buffer(free.swap_remove(i));
            }
        }
        let buf = Vec::with_capacity(len);
        advise_if_large(&buf);
        Buffer(buf)
    }

    /// The bytes, no longer returned to the pool on drop.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl From<Vec<u8>> for Buffer {
    /// Adopts `buf`: it goes to the pool when the `Buffer` is dropped.
    fn from(buf: Vec<u8>) -> Self {
        Buffer(buf)
    }
}

impl Deref for Buffer {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // Checked here, before anything else, so that dropping a small buffer (most messages)
        // is a `Vec` drop and a comparison.
        if worth_keeping(&self.0) {
            keep(std::mem::take(&mut self.0));
        }
    }
}

/// A buffer shared by several owners; the last one to drop it returns it to the pool. An `Arc`
/// like any other, so sharing costs what an `Arc<Vec<u8>>` did: one allocation per body.
pub(crate) type Shared = Arc<Buffer>;

/// What can become a [`Shared`] body: a plain `Vec` (adopted), a [`Buffer`], or one already
/// shared. Lets a sender pass whichever it holds, with no copy.
pub(crate) trait IntoShared {
    /// The bytes as a [`Shared`] buffer.
    fn into_shared(self) -> Shared;
}

impl IntoShared for Vec<u8> {
    fn into_shared(self) -> Shared {
        Arc::new(Buffer(self))
    }
}

impl IntoShared for Buffer {
    fn into_shared(self) -> Shared {
        Arc::new(self)
    }
}

impl IntoShared for Shared {
    fn into_shared(self) -> Shared {
        self
    }
}

/// An empty buffer with room for at least `len` bytes: a kept one if one is large enough.
/// Prefer [`Buffer::take`], which goes back by itself.
pub(crate) fn take(len: usize) -> Vec<u8> {
    Buffer::take(len).into_vec()
}

/// Fresh buffers this large ask for transparent huge pages.
const HUGE_FROM: usize = 4 << 20;

/// Asks for huge pages behind the untouched capacity of a fresh vector of at least
/// [`HUGE_FROM`] bytes (of any plain item type: a decoded `Vec<f64>` faults in as many pages
/// as a `Vec<u8>` of its size).
pub(crate) fn advise_if_large<T>(buf: &Vec<T>) {
    if buf.capacity().saturating_mul(std::mem::size_of::<T>()) >= HUGE_FROM {
        advise_huge_pages(buf);
    }
}

/// Asks the kernel to back the (untouched) capacity of `buf` with 2 MiB pages where it can:
/// filling a fresh 100 MiB buffer otherwise takes 25,600 page faults, which measured as a
/// quarter of the time to move 100 MiB to a pool worker. Only the 2 MiB-aligned interior is
/// advised; failure (no THP support, or THP disabled) changes nothing.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(buf: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_ptr() as usize;
    let end = start + buf.capacity() * std::mem::size_of::<T>();
    let aligned = (start + HUGE - 1) & !(HUGE - 1);
    if aligned + HUGE > end {
        return;
    }
    let len = (end - aligned) & !(HUGE - 1);
    // SAFETY: [aligned, aligned + len) lies inside the allocation that `buf` owns (start ..
    // start + capacity), and is page-aligned as madvise requires. MADV_HUGEPAGE only changes
    // how the kernel backs those pages when they are first touched; it neither reads nor
    // changes memory, so no Rust invariant depends on it, and its result may be ignored.
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_buf: &Vec<T>) {}

/// Whether the pool would keep `buf` (if it has room).
fn worth_keeping(buf: &Vec<u8>) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&buf.capacity())
}

/// Keeps `buf` (worth keeping) for a later [`take`] if there is room, or in place of a smaller
/// kept one: what dropping a [`Buffer`] does.
fn keep(mut buf: Vec<u8>) {
    buf.clear();
    let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
    if free.len() < KEEP {
        free.push(buf);
    } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.capacity()) {
        if smallest.capacity() < buf.capacity() {
            *smallest = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        let small = take(16);
        assert!(small.capacity() < MIN_LEN);
        // Dropping the guard is enough. (One test, so that no other test of this binary takes
        // the kept buffer in between.)
        let mut big = Buffer::take(MIN_LEN * 2);
        big.push(1);
        let ptr = big.as_ptr();
        drop(big);
        let again = Buffer::take(MIN_LEN * 2);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the dropped buffer was not reused");
        let kept = again.into_vec();
        assert_eq!(kept.as_ptr(), ptr);
        // A shared one goes back when its last owner drops it, not before.
        let shared: Shared = Arc::new(Buffer::from(kept));
        let other = Arc::clone(&shared);
        drop(shared);
        let fresh = Buffer::take(MIN_LEN * 2);
        assert_ne!(fresh.as_ptr(), ptr, "a buffer still shared was handed out");
        drop(other);
        let again = Buffer::take(MIN_LEN * 2);
        assert_eq!(
            again.as_ptr(),
            ptr,
            "the last owner's drop did not return it"
        );
        drop(fresh);
    }
}
