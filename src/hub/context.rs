//! What the hub layer keeps per launch ([`HubContext`]): this process's hub, the root's store
//! (in the root) or the root's socket (elsewhere), and this process's client of the object
//! host. `start::Context` owns one and makes it current with itself, so that user-facing
//! handles (a `Queue`) reach the object host through [`current_host`] without knowing the
//! layers above.

use super::{HostClient, Hub, Store};
use crate::error::{Error, Result};
use crate::transport::auth::AuthKey;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The hub layer's part of a launch context.
#[derive(Debug)]
pub(crate) struct HubContext {
    run_dir: PathBuf,
    key: AuthKey,
    hub: Mutex<Option<Arc<Hub>>>,
    /// The root's socket, in every process but the root.
    root_socket: Option<PathBuf>,
    /// The run's hosted objects, in the root.
    store: Option<Arc<Store>>,
    client: tokio::sync::OnceCell<Arc<HostClient>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<HubContext>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HubContext {
    /// The root's: it hosts the run's objects.
    pub(crate) fn root(run_dir: PathBuf, key: AuthKey) -> Self {
        Self::new(run_dir, key, None, Some(Arc::default()))
    }

    /// A child's: the objects are at the root, which listens at `root_socket`.
    pub(crate) fn child(run_dir: PathBuf, key: AuthKey, root_socket: PathBuf) -> Self {
        Self::new(run_dir, key, Some(root_socket), None)
    }

    fn new(
        run_dir: PathBuf,
        key: AuthKey,
        root_socket: Option<PathBuf>,
        store: Option<Arc<Store>>,
    ) -> Self {
        HubContext {
            run_dir,
            key,
            hub: Mutex::new(None),
            root_socket,
            store,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The run's private directory.
    pub(crate) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The run's key.
    pub(crate) fn key(&self) -> &AuthKey {
        &self.key
    }

    /// The root's socket (`None` in the root itself).
    pub(crate) fn root_socket(&self) -> Option<&Path> {
        self.root_socket.as_deref()
    }

    /// This process's hub, started on first use.
    ///
    /// # Errors
    /// `Io` when its socket cannot be bound.
    pub(crate) fn hub(&self) -> Result<Arc<Hub>> {
        let mut hub = lock(&self.hub);
        if let Some(h) = hub.as_ref() {
            return Ok(Arc::clone(h));
        }
        let h = Arc::new(Hub::start(
            &self.run_dir,
            self.key.clone(),
            self.store.clone(),
        )?);
        *hub = Some(Arc::clone(&h));
        Ok(h)
    }

    /// This process's client of the object host: the root's store, reached in-process in the
    /// root and over one connection (made on first use) everywhere else.
    ///
    /// # Errors
    /// `Io` / `Authentication` when the root cannot be reached.
    pub(crate) async fn host(&self) -> Result<Arc<HostClient>> {
        self.client
            .get_or_try_init(|| async {
                match (&self.store, &self.root_socket) {
                    (Some(store), _) => {
                        // Children reach the store through the hub: have it listen.
                        self.hub()?;
                        Ok(HostClient::local(Arc::clone(store)))
                    }
                    (None, Some(socket)) => HostClient::connect(socket, &self.key).await,
                    (None, None) => Err(Error::NotLaunched(
                        "this process knows no root to host shared objects".into(),
                    )),
                }
            })
            .await
            .cloned()
    }

    /// Waits until the root has applied what this process sent to its hosted objects (see
    /// `HostClient::settle`). Nothing to do before any object was used.
    pub(crate) async fn settle(&self) {
        if let Some(client) = self.client.get() {
            if let Err(e) = client.settle().await {
                tracing::debug!(target: "multiprocessing::hub", "could not settle with the root: {e}");
            }
        }
    }
}

/// Makes `ctx` current on this thread (and clears it with `None`); `start::Context` does this
/// whenever it makes itself current.
pub(crate) fn set_current(ctx: Option<Arc<HubContext>>) {
    CURRENT.with(|c| *c.borrow_mut() = ctx);
}

/// The object host's client of the launch current on this thread.
///
/// # Errors
/// `NotLaunched` outside `#[process_main]` / `#[multiprocessing::test]` (or on a thread that
/// their runtime did not start); `Io` / `Authentication` when the root cannot be reached.
///
/// # Cancel safety
/// Cancel-safe: a connection being made is made again by the next call.
pub(crate) async fn current_host() -> Result<Arc<HostClient>> {
    let ctx = CURRENT.with(|c| c.borrow().clone()).ok_or_else(|| {
        Error::NotLaunched(
            "this thread belongs to no launch context (is it a runtime the macro did not build?)"
                .into(),
        )
    })?;
    ctx.host().await
}
