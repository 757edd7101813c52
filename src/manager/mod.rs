//! Layer 6: managers — a [`Dict`], a [`List`] and a [`Namespace`] shared by every process of a
//! run, Python's `multiprocessing.Manager()`.
//!
//! **Where the data lives.** Python runs a separate server process; here the root's hub hosts
//! the objects, as it hosts queues (`src/hub/objects/manager.rs`). The trade-off: nothing
//! extra to start or to crash, and one process fewer on every path (a proxy call is one round
//! trip to the root), against a root that holds everyone's data in its memory. A manager
//! child could crash and take every proxy's data with it; the root cannot crash without
//! ending the run anyway. Either way a process that dies holding a proxy loses nothing that
//! was acknowledged: every operation is applied whole by the host before it answers.
//!
//! Values are stored as their postcard bytes, so the host never needs the user's types and no
//! code travels to it. The one read-modify-write the host does itself is
//! [`Dict::fetch_add`] on integers, which it can read without the type; a list's
//! [`List::sort`] sorts a snapshot in the caller and replaces the list only if it did not
//! change meanwhile.

mod dict;
mod list;
mod namespace;
mod proxy;

pub use dict::{Dict, Integer};
pub use list::List;
pub use namespace::Namespace;

use crate::error::Result;
use crate::hub::HostClient;
use crate::queue::Queue;
use std::sync::Arc;

/// The maker of shared dicts, lists and namespaces: Python's `multiprocessing.Manager()`.
///
/// The objects live in the root process (see the module docs); a `Manager` is only how to make
/// them, so it is cheap, `Clone`, and any process of the run can start one. Each object lives
/// while any process holds a proxy to it, whether or not its `Manager` is still around.
///
/// ```no_run
/// use multiprocessing::Manager;
///
/// # async fn demo() -> multiprocessing::Result<()> {
/// let m = Manager::start().await?;
/// let d = m.dict::<u32, String>();
/// let l = m.list::<u32>();
/// let ns = m.namespace();
/// d.insert(1, "one".into()).await?;
/// l.extend(0..10).await?;
/// ns.set("x", 10).await?;
/// assert_eq!(ns.get::<i64>("x").await?, 10);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Manager {
    client: Arc<HostClient>,
}

impl Manager {
    /// Starts a manager: makes sure this process reaches the root, which hosts the objects.
    ///
    /// # Errors
    /// `NotLaunched` outside `#[process_main]` / `#[multiprocessing::test]`; `Io` or
    /// `Authentication` when the root cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe: a connection being made is made again by the next call.
    pub async fn start() -> Result<Manager> {
        Ok(Manager {
            client: crate::hub::current_host().await?,
        })
    }

    /// A new, empty shared dict. It is made in the host at once, without waiting (the
    /// request goes ahead of anything this process sends later).
    pub fn dict<K, V>(&self) -> Dict<K, V> {
        Dict::new(&self.client)
    }

    /// A new, empty shared list, made as [`Manager::dict`] makes a dict.
    pub fn list<T>(&self) -> List<T> {
        List::new(&self.client)
    }

    /// A new shared namespace with no fields, made as [`Manager::dict`] makes a dict.
    pub fn namespace(&self) -> Namespace {
        Namespace::new(&self.client)
    }

    /// A new, unbounded queue: the crate's own [`Queue`] (hosted the same way).
    pub fn queue<T>(&self) -> Queue<T> {
        Queue::new()
    }
}
