//! A few large buffers kept for reuse, so that sending or receiving big values does not fault in
//! fresh pages every time.
//!
//! A fresh 1 MiB allocation is handed out by the allocator as untouched pages; writing it costs
//! one page fault per 4 KiB, which measured as the largest single cost of moving 1 MiB items
//! through a queue. Buffers of at least [`MIN_LEN`] bytes are therefore returned here when a
//! message has been written (or decoded) and taken again for the next one. The pool keeps at
//! most [`KEEP`] buffers of at most [`MAX_LEN`] bytes each, so an idle process holds little.

use std::sync::Mutex;

/// Smaller buffers are not worth keeping: the allocator reuses them well.
pub(crate) const MIN_LEN: usize = 64 << 10;
/// Larger buffers are given back to the allocator.
pub(crate) const MAX_LEN: usize = 8 << 20;
/// How many buffers are kept at most.
pub(crate) const KEEP: usize = 6;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `len` bytes: a kept one if one is large enough.
pub(crate) fn take(len: usize) -> Vec<u8> {
    if (MIN_LEN..=MAX_LEN).contains(&len) {
        let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = free.iter().position(|b| b.capacity() >= len) {
            return free.swap_remove(i);
        }
    }
    Vec::with_capacity(len)
}

/// Keeps `buf` for a later [`take`] if it is worth keeping and there is room.
pub(crate) fn give(mut buf: Vec<u8>) {
    if !(MIN_LEN..=MAX_LEN).contains(&buf.capacity()) {
        return;
    }
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

/// Gives back the buffer behind `shared` if this was its last owner.
pub(crate) fn give_shared(shared: std::sync::Arc<Vec<u8>>) {
    if let Ok(buf) = std::sync::Arc::try_unwrap(shared) {
        give(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        let mut big = take(MIN_LEN * 2);
        big.extend_from_slice(&[1, 2, 3]);
        let ptr = big.as_ptr();
        give(big);
        let again = take(MIN_LEN * 2);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the kept buffer was not reused");
        give(again);
        let small = take(16);
        assert!(small.capacity() < MIN_LEN);
    }
}
