//! Shared memory segments: anonymous `memfd_create` files mapped `MAP_SHARED`, handed to other
//! processes as descriptors (through [`super::fd`]), and futex waits on words inside them.
//!
//! Nothing is ever named in `/dev/shm`: the memory belongs to the open descriptors and mappings,
//! and the kernel frees it when the last of them is gone, whatever ended the processes that held
//! them (a normal exit, a panic, SIGKILL). A [`Segment`] holds one descriptor and one mapping of
//! the whole file; dropping it unmaps and closes both.
//!
//! Dropping a segment of 4 MiB or more unmaps it on a thread of its own ([`free_aside`]):
//! freeing the pages of the last mapping takes the kernel tens of milliseconds per 100 MiB.
//!
//! The segment lives here, below the hub, because both the hub (which maps the lock arenas it
//! hosts, see `hub/objects/lock.rs`) and the user-facing `shm` and `sync` modules use it.

use super::fd::{self, OfferCache, Ticket};
use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

/// One shared memory segment mapped into this process.
pub(crate) struct Segment {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    /// Bytes the user asked for (the file and mapping are at least one byte long).
    len: usize,
    /// Bytes mapped.
    mapped: usize,
}

// SAFETY: the mapping is process-wide memory with no thread affinity; the pointer is only used
// through methods whose callers uphold the rules for shared bytes (atomics or documented
// unsafe accessors), exactly as a `&[AtomicU8]` would be shared between threads.
unsafe impl Send for Segment {}
// SAFETY: as for `Send`: `&Segment` hands out only raw pointers and atomic words.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

fn os_error(what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl Segment {
    /// A new segment holding a copy of `bytes`. The bytes are written into the file before
    /// it is mapped (`pwrite`): the kernel fills its pages in one pass, which is several times
    /// faster than faulting each fresh page of a mapping in while copying into it.
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub(crate) fn create_from(bytes: &[u8]) -> Result<Segment> {
        let fd = Segment::memfd(bytes.len())?;
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, bytes)?;
        Segment::map(OwnedFd::from(file), bytes.len())
    }

    /// A new zero-filled segment of `len` bytes.
    ///
    /// # Errors
    /// `Io` when the kernel refuses the memfd, its size or the mapping (out of memory, too many
    /// open files, a memory limit).
    pub(crate) fn create(len: usize) -> Result<Segment> {
        Segment::map(Segment::memfd(len)?, len)
    }

    /// A new memfd of `len` bytes (at least one).
    fn memfd(len: usize) -> Result<OwnedFd> {
        // The name shows in `/proc/<pid>/maps` as `/memfd:multiprocessing (deleted)`.
        let name = c"multiprocessing";
        // SAFETY: `name` is a valid NUL-terminated string; the flags are valid for memfd_create.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len.max(1))
            .map_err(|_| Error::Io(std::io::Error::other("segment size too large")))?;
        // SAFETY: `fd` is an open memfd; ftruncate only sets its size.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(os_error("ftruncate of a shared memory segment"));
        }
        Ok(fd)
    }

    /// Maps `len` bytes of the memfd `fd` (which must be at least that long).
    fn map(fd: OwnedFd, len: usize) -> Result<Segment> {
        let mapped = len.max(1);
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) of an open descriptor;
        // no existing memory is affected. The result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error("mmap of a shared memory segment"));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| os_error("mmap"))?;
        Ok(Segment {
            fd,
            ptr,
            len,
            mapped,
        })
    }

    /// Maps a segment received from another process, checking that it holds `len` bytes.
    fn from_fd(fd: OwnedFd, len: usize) -> Result<Segment> {
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `st` is valid for writes.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(os_error("fstat of a shared memory segment"));
        }
        if u64::try_from(st.st_size).unwrap_or(0) < len.max(1) as u64 {
            return Err(Error::decode(
                "a shared memory segment",
                format!("the descriptor holds {} bytes, not {len}", st.st_size),
            ));
        }
        Segment::map(fd, len)
    }

    /// The first byte. Valid for [`Segment::len`] bytes (and at least one) while `self` lives;
    /// page-aligned.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes, as created.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The 32-bit word at `index` (counted in words), for atomic use only.
    ///
    /// # Panics
    /// If the word lies outside the segment.
    pub(crate) fn word(&self, index: usize) -> &AtomicU32 {
        assert!(
            (index + 1) * 4 <= self.len,
            "word {index} outside the segment"
        );
        // SAFETY: the mapping is page-aligned, so `ptr + 4 * index` is aligned for AtomicU32,
        // and it lies within the mapping (checked above), which lives as long as `&self`.
        // AtomicU32 has the layout of u32, and every user of a word accesses it atomically.
        unsafe { &*self.as_ptr().add(index * 4).cast::<AtomicU32>() }
    }
}

/// A mapping to unmap: what dropping a [`Segment`] does, inline or aside. Closed after the
/// unmapping, its descriptor (a duplicate, for a large segment) keeps the memory until then,
/// so the pages are freed wherever this is dropped, not where the segment's own descriptor
/// closed.
struct Unmap {
    ptr: NonNull<u8>,
    len: usize,
    _fd: Option<OwnedFd>,
}

// SAFETY: an address range this process owns; unmapping it from any thread is the same.
unsafe impl Send for Unmap {}

impl Drop for Unmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly a mapping made in `Segment::map`, whose segment is
        // gone (it made this `Unmap` as it was dropped), so nothing borrows from it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Whichever of the last descriptor and the last mapping goes last frees every page:
        // for a large segment, both go aside (a duplicate of the descriptor with the mapping;
        // ours closes here, cheaply, as the duplicate still holds the memory).
        let large = self.mapped >= FREE_ASIDE_FROM;
        free_aside(
            Unmap {
                ptr: self.ptr,
                len: self.mapped,
                _fd: large.then(|| self.fd.try_clone().ok()).flatten(),
            },
            self.mapped,
        );
    }
}

/// From this many bytes on, memory is freed on a thread of its own (see [`free_aside`]).
const FREE_ASIDE_FROM: usize = 4 << 20;

/// The pid of the process whose freeing thread listens, and where to send it things to drop.
type Freer = (u32, std::sync::mpsc::Sender<Box<dyn Send>>);

/// The thread that frees large memory for this process (a forked child starts its own).
static FREER: std::sync::Mutex<Option<Freer>> = std::sync::Mutex::new(None);

/// Drops `value`, which holds `bytes` of memory: inline when small, otherwise on a thread of
/// its own, off the caller's path. Freeing 100 MiB (the last mapping of a shared segment, or a
/// `Vec` just copied into one) takes the kernel tens of milliseconds, which a pool worker would
/// otherwise spend before it replies, and the caller of `SharedBytes::from_vec` before it can
/// send. The memory is gone a moment later; a process that exits first frees it by exiting.
pub(crate) fn free_aside<T: Send + 'static>(value: T, bytes: usize) {
    if bytes < FREE_ASIDE_FROM {
        drop(value);
        return;
    }
    let pid = std::process::id();
    let mut slot = FREER.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_none_or(|(p, _)| *p != pid) {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Send>>();
        let started = std::thread::Builder::new()
            .name("multiprocessing-free".into())
            .spawn(move || rx.into_iter().for_each(drop));
        *slot = started.ok().map(|_| (pid, tx));
    }
    let value: Box<dyn Send> = Box::new(value);
    if let Some(Err(back)) = slot.as_ref().map(|(_, tx)| tx.send(value)) {
        // The thread is gone: free it here after all.
        drop(back);
    }
}

/// What travels in place of a segment.
#[derive(Serialize, Deserialize)]
struct Wire {
    ticket: Ticket,
    len: u64,
}

/// A handle to a segment that can be serialized: each handle makes its own offer of the
/// descriptor (one offer per handle until it is taken), so clones of one segment sent to
/// several processes at once each get a descriptor.
#[derive(Debug)]
pub(crate) struct Shared {
    segment: Arc<Segment>,
    offers: OfferCache,
}

impl Shared {
    pub(crate) fn new(segment: Segment) -> Shared {
        Shared {
            segment: Arc::new(segment),
            offers: OfferCache::default(),
        }
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Shared {
            segment: Arc::clone(&self.segment),
            offers: OfferCache::default(),
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        &self.segment
    }
}

impl Serialize for Shared {
    /// Offers a duplicate of the descriptor to the process that deserializes it.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let ticket = self
            .offers
            .offer(self.segment.fd.as_fd())
            .map_err(|e| S::Error::custom(crate::error::serde_detail(e)))?;
        Wire {
            ticket,
            len: self.segment.len as u64,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Shared {
    /// Takes the descriptor offered by the serializing process and maps it.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let Wire { ticket, len } = Wire::deserialize(deserializer)?;
        let len = usize::try_from(len).map_err(|_| D::Error::custom("segment too large"))?;
        fd::take(&ticket)
            .and_then(|fd| Segment::from_fd(fd, len))
            .map(Shared::new)
            .map_err(|e| D::Error::custom(crate::error::serde_detail(e)))
    }
}

/// A segment's descriptor without a mapping: what the root holds for a named segment, so the
/// memory lives while the name does, without costing the root address space. It serializes
/// exactly as a [`Shared`] does (a process that deserializes it gets a mapped [`Shared`]).
#[derive(Debug)]
pub(crate) struct Unmapped {
    fd: OwnedFd,
    len: usize,
}

impl Unmapped {
    /// A new zero-filled segment of `len` bytes; no page is touched (the kernel allocates them
    /// as the processes that map it write).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub(crate) fn create(len: usize) -> Result<Unmapped> {
        Ok(Unmapped {
            fd: Segment::memfd(len)?,
            len,
        })
    }

    /// The postcard bytes of a serialized handle to it: a fresh one-shot offer of its
    /// descriptor, which whoever deserializes the bytes takes and maps.
    ///
    /// # Errors
    /// `Io` when the descriptor cannot be offered (see [`fd::offer`]).
    pub(crate) fn offer(&self) -> Result<Vec<u8>> {
        let ticket = fd::offer(self.fd.as_fd())?;
        postcard::to_allocvec(&Wire {
            ticket,
            len: self.len as u64,
        })
        .map_err(|e| Error::encode("a shared memory segment", e))
    }
}

/// Sleeps while `word` holds `expected` (or until woken, or `timeout`). Returns at once if the
/// word holds something else. Blocks the calling thread: call it on a thread of its own.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT (shared, since the word may be mapped in several processes) reads the
    // aligned word through its address and sleeps; `ts_ptr` is null or points to a timespec
    // that outlives the call. Every outcome (woken, timed out, value changed, signal) is fine
    // for the caller, which checks the word again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `count` threads (in any process) sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only uses the word's address as a key; it reads no memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_segment_is_zeroed_and_its_words_are_atomic() {
        let seg = Segment::create(4096).unwrap();
        assert_eq!(seg.len(), 4096);
        assert_eq!(seg.word(1023).load(Ordering::Relaxed), 0);
        seg.word(3).store(7, Ordering::Relaxed);
        // SAFETY: reading a byte inside the mapping that nobody else writes.
        assert_eq!(unsafe { *seg.as_ptr().add(12) }, 7);
    }

    #[test]
    fn a_received_descriptor_maps_the_same_memory() {
        let seg = Segment::create(64).unwrap();
        let other = Segment::from_fd(seg.fd.try_clone().unwrap(), 64).unwrap();
        seg.word(0).store(42, Ordering::SeqCst);
        assert_eq!(other.word(0).load(Ordering::SeqCst), 42);
        assert!(Segment::from_fd(seg.fd.try_clone().unwrap(), 4096).is_err());
    }

    #[test]
    fn a_futex_wait_on_a_changed_word_returns_at_once() {
        let seg = Segment::create(4).unwrap();
        seg.word(0).store(1, Ordering::SeqCst);
        futex_wait(seg.word(0), 0, None);
        futex_wake(seg.word(0), 1);
    }
}
