//! Layer 6: managers — a [`Dict`], a [`List`], a [`Namespace`], a [`ManagerLock`] and a
//! [`ManagerEvent`] shared by every process of a run, Python's `multiprocessing.Manager()`.
//!
//! The lock and the event live at the manager's host like the rest (not in shared memory as
//! [`sync::Lock`](crate::sync::Lock)), because a remote manager's clients are on other
//! machines: that costs a round trip per operation, and buys a lock any client can reach.
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
mod event;
mod list;
mod lock;
mod namespace;
mod proxy;

pub use dict::{Dict, Integer};
pub use event::ManagerEvent;
pub use list::List;
pub use lock::{ManagerLock, ManagerLockGuard};
pub use namespace::Namespace;

use crate::error::Result;
use crate::hub::{connect_remote, HostClient, ServedHost};
use crate::queue::Queue;
use crate::transport::auth::AuthKey;
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
    host: Host,
}

/// Where a manager's objects live: the host's client, and whether it is the tree's own (the
/// root's), whose proxies may travel to other processes of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    client: Arc<HostClient>,
    tree: bool,
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
        let client = crate::hub::current_host().await?;
        Ok(Manager {
            host: Host { client, tree: true },
        })
    }

    /// A new, empty shared dict. It is made in the host at once, without waiting (the
    /// request goes ahead of anything this process sends later).
    pub fn dict<K, V>(&self) -> Dict<K, V> {
        Dict::new(&self.host)
    }

    /// A new, empty shared list, made as [`Manager::dict`] makes a dict.
    pub fn list<T>(&self) -> List<T> {
        List::new(&self.host)
    }

    /// A new shared namespace with no fields, made as [`Manager::dict`] makes a dict.
    pub fn namespace(&self) -> Namespace {
        Namespace::new(&self.host)
    }

    /// A new lock held and waited for at this manager's host (see [`ManagerLock`]: for
    /// processes on one machine, [`sync::Lock`](crate::sync::Lock) is far cheaper).
    pub fn lock(&self) -> ManagerLock {
        ManagerLock::new(&self.host)
    }

    /// A new, clear event at this manager's host (see [`ManagerEvent`]).
    pub fn event(&self) -> ManagerEvent {
        ManagerEvent::new(&self.host)
    }

    /// A new, unbounded queue: the crate's own [`Queue`] (hosted by the root, as the
    /// manager's objects are). A queue is always the local tree's, also from a manager made by
    /// [`Manager::connect`].
    pub fn queue<T>(&self) -> Queue<T> {
        Queue::new()
    }

    /// The dict named `name` at this manager's host, made empty if it is new: every process
    /// that names it (with the same types) reaches the same dict. This is how clients of a
    /// remote manager ([`Manager::connect`]) share objects, as Python's `BaseManager.register`
    /// shares them; it lives while any process holds a proxy to it.
    pub fn dict_named<K, V>(&self, name: &str) -> Dict<K, V> {
        Dict::named(name, &self.host)
    }

    /// The list named `name`, as [`Manager::dict_named`] finds a dict.
    pub fn list_named<T>(&self, name: &str) -> List<T> {
        List::named(name, &self.host)
    }

    /// The namespace named `name`, as [`Manager::dict_named`] finds a dict.
    pub fn namespace_named(&self, name: &str) -> Namespace {
        Namespace::named(name, &self.host)
    }

    /// The lock named `name`, as [`Manager::dict_named`] finds a dict.
    pub fn lock_named(&self, name: &str) -> ManagerLock {
        ManagerLock::named(name, &self.host)
    }

    /// The event named `name`, as [`Manager::dict_named`] finds a dict.
    pub fn event_named(&self, name: &str) -> ManagerEvent {
        ManagerEvent::named(name, &self.host)
    }

    /// Serves a new set of objects at `address` (a TCP `host:port`, `:0` for a free port; or a
    /// Unix socket path if it contains `/`) to processes on any host that connect with
    /// [`Manager::connect`] and the same `authkey` (Python's `BaseManager(address,
    /// authkey).get_server()`). The objects live in this process; the server's own
    /// [`ManagerServer::manager`] reaches them in-process.
    ///
    /// A client without the key is refused and learns nothing (both sides prove the key with
    /// an HMAC challenge; the key never crosses). A client that leaves or dies mid-call loses
    /// nothing that was acknowledged, and the others are served on. Messages are not
    /// encrypted: over TCP, keep to networks you trust.
    ///
    /// # Errors
    /// `Io` when the address is taken or cannot be resolved.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is bound unless the future completes.
    pub async fn serve(address: &str, authkey: &[u8]) -> Result<ManagerServer> {
        let host = ServedHost::bind(address, AuthKey::derive(authkey)).await?;
        Ok(ManagerServer { host })
    }

    /// Connects to a manager served at `address` with `authkey` (Python's
    /// `BaseManager(address, authkey).connect()`). Objects made with the returned manager live
    /// at the server; share them by name ([`Manager::dict_named`]). Proxies from it are for
    /// this process: another process connects for itself. Works in any tokio runtime, also
    /// outside `#[process_main]`.
    ///
    /// # Errors
    /// `Authentication` when the server refuses the key (or cannot prove it holds it);
    /// `Io` when nobody listens there; `Timeout` when the handshake does not finish in 10 s.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled connect leaves nothing behind.
    pub async fn connect(address: &str, authkey: &[u8]) -> Result<Manager> {
        let client = connect_remote(address, &AuthKey::derive(authkey)).await?;
        Ok(Manager {
            host: Host {
                client,
                tree: false,
            },
        })
    }
}

/// A manager serving its objects to other hosts, made by [`Manager::serve`]. Dropping it stops
/// accepting new clients; the objects live while any proxy to them does.
#[derive(Debug)]
pub struct ManagerServer {
    host: ServedHost,
}

impl ManagerServer {
    /// The address clients connect to: `ip:port` as bound (with the real port when `:0` was
    /// asked for), or the socket's path.
    pub fn address(&self) -> &str {
        self.host.address()
    }

    /// A manager of the served objects for this process (in-process, no connection).
    pub fn manager(&self) -> Manager {
        Manager {
            host: Host {
                client: Arc::clone(self.host.client()),
                tree: false,
            },
        }
    }
}
