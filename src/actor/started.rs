//! The start table: which calls an actor's process had started when it died, so that with a
//! restart policy the calls it had not started go to the next instance instead of failing.
//!
//! Each incarnation keeps a file beside its socket, `<socket>.started-<pid>`, mapped shared: one
//! `u64` slot per client connection (the slot is told to the client in its greeting), holding
//! one more than the id of the last call of that connection the actor started. A connection's
//! calls start in the order they were sent, and a client numbers its calls in that order, so
//! after a death every unanswered call with a smaller id had started (it fails with
//! `ProcessDied`) and every other one had not (it is sent again). Writing a slot is one store
//! into memory; nothing is read unless the process dies. The page cache keeps what was stored
//! when the process is SIGKILLed. Both ends are here, so the file's format is known in this file
//! alone; the supervisor removes the files when the actor ends for good.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Connections a table has slots for; a connection past that gets none, and its unanswered
/// calls fail when the process dies, as if all had started.
const SLOTS: usize = 4096;
const SLOT: usize = std::mem::size_of::<u64>();

/// The table of incarnation `pid` of the actor at `socket`.
pub(super) fn path(socket: &Path, pid: u32) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(format!(".started-{pid}"));
    PathBuf::from(name)
}

/// The actor's side: the mapped slots, and which are free.
#[derive(Debug)]
pub(super) struct StartTable {
    slots: &'static [AtomicU64],
    free: Mutex<Vec<u32>>,
}

impl StartTable {
    /// Makes this process's table beside `socket`.
    ///
    /// # Errors
    /// `Io` when the file cannot be made or mapped (the actor then serves without one).
    pub(super) fn create(socket: &Path) -> std::io::Result<Self> {
        let slots = crate::bootstrap::create_counters(&path(socket, std::process::id()), SLOTS)?;
        let free = (0..SLOTS as u32).rev().collect();
        Ok(StartTable {
            slots,
            free: Mutex::new(free),
        })
    }

    /// A slot for a new connection, cleared; `None` when all are taken.
    pub(super) fn take(&self) -> Option<u32> {
        let slot = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        self.slots[slot as usize].store(0, Ordering::Release);
        Some(slot)
    }

    /// Gives back the slot of a connection that has ended.
    pub(super) fn give_back(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
    }

    /// Call `id` of the connection at `slot` is about to start.
    pub(super) fn started(&self, slot: u32, id: u64) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.store(id + 1, Ordering::Release);
        }
    }
}

/// The client's side: how many of its calls on the connection at `slot` of incarnation `pid`
/// had started, as one more than the last started id (0: none). `None` when the table cannot be
/// read (then every unanswered call is taken as started).
pub(super) fn read(socket: &Path, pid: u32, slot: u32) -> Option<u64> {
    let file = File::open(path(socket, pid)).ok()?;
    let mut value = [0u8; SLOT];
    file.read_exact_at(&mut value, u64::from(slot) * SLOT as u64)
        .ok()?;
    Some(u64::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the actor stores is what a client reads; a slot taken again reads as cleared.
    #[test]
    fn the_client_reads_what_the_actor_stores() {
        let socket =
            std::env::temp_dir().join(format!("actor-started-test-{}", std::process::id()));
        let table = StartTable::create(&socket).unwrap();
        let pid = std::process::id();
        let a = table.take().unwrap();
        let b = table.take().unwrap();
        assert_eq!(read(&socket, pid, a), Some(0));
        table.started(a, 7);
        table.started(b, 2);
        assert_eq!(read(&socket, pid, a), Some(8));
        assert_eq!(read(&socket, pid, b), Some(3));
        table.give_back(a);
        assert_eq!(table.take(), Some(a));
        assert_eq!(read(&socket, pid, a), Some(0));
        std::fs::remove_file(path(&socket, pid)).unwrap();
        assert_eq!(read(&socket, pid, a), None);
    }
}
