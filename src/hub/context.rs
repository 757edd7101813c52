//! What the hub layer keeps per launch ([`HubContext`]): this process's hub, the root's store
//! (in the root) or the root's socket (elsewhere), and this process's client of the object
//! host. `start::Context` owns one and makes it current with itself, so that user-facing
//! handles (a `Queue`) reach the object host through [`current_host`] without knowing the
//! layers above.
//!
//! It also keeps the launch's frame limit (`set_max_frame_size`): every connection this launch
//! makes, and every child it starts, takes the limit from here when it is made, so launches in
//! one process (the tests of one binary) do not see each other's.

use super::lock;
use super::{HostClient, Hub, Store};
use crate::error::{Error, Result};
use crate::transport::auth::AuthKey;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The frame limit a root launch starts with: `set_max_frame_size` called outside any launch
/// sets it. The one process-wide setting; a child starts with its parent's limit instead.
static DEFAULT_MAX_FRAME: AtomicUsize = AtomicUsize::new(crate::transport::DEFAULT_MAX_FRAME);

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
    /// The launch's frame limit, shared with its hub, which reads it as it accepts.
    max_frame: Arc<AtomicUsize>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<HubContext>>> = const { RefCell::new(None) };
}

impl HubContext {
    /// The root's: it hosts the run's objects, and starts with the process's default frame
    /// limit.
    pub(crate) fn root(run_dir: PathBuf, key: AuthKey) -> Self {
        let max_frame = DEFAULT_MAX_FRAME.load(Ordering::Relaxed);
        Self::new(run_dir, key, None, Some(Arc::default()), max_frame)
    }

    /// A child's: the objects are at the root, which listens at `root_socket`; it starts with
    /// `max_frame`, its parent's frame limit.
    pub(crate) fn child(
        run_dir: PathBuf,
        key: AuthKey,
        root_socket: PathBuf,
        max_frame: usize,
    ) -> Self {
        Self::new(run_dir, key, Some(root_socket), None, max_frame)
    }

    fn new(
        run_dir: PathBuf,
        key: AuthKey,
        root_socket: Option<PathBuf>,
        store: Option<Arc<Store>>,
        max_frame: usize,
    ) -> Self {
        HubContext {
            run_dir,
            key,
            hub: Mutex::new(None),
            root_socket,
            store,
            client: tokio::sync::OnceCell::new(),
            max_frame: Arc::new(AtomicUsize::new(crate::transport::frame_limit(max_frame))),
        }
    }

    /// The launch's frame limit: connections and children made now use it.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Sets the launch's frame limit for connections and children made from now on.
    pub(crate) fn set_max_frame(&self, bytes: usize) {
        self.max_frame
            .store(crate::transport::frame_limit(bytes), Ordering::Relaxed);
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
            Arc::clone(&self.max_frame),
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
                    (None, Some(socket)) => {
                        HostClient::connect(socket, &self.key, self.max_frame()).await
                    }
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

/// Sets the frame limit of the launch current on this thread or, outside any launch, the
/// default that root launches started afterwards begin with (see `set_max_frame_size`).
pub(crate) fn set_max_frame(bytes: usize) {
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(ctx) => ctx.set_max_frame(bytes),
        None => DEFAULT_MAX_FRAME.store(crate::transport::frame_limit(bytes), Ordering::Relaxed),
    }
}

/// The frame limit of the launch current on this thread or, outside any launch, the default.
pub(crate) fn max_frame() -> usize {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(ctx) => ctx.max_frame(),
        None => DEFAULT_MAX_FRAME.load(Ordering::Relaxed),
    })
}
