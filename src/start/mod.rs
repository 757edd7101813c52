//! Layer 5: how a child comes to exist, and the launch context that knows how.
//!
//! A [`Context`] is created by `#[process_main]` / `#[multiprocessing::test]` (through `launch`)
//! and made current on every thread of the runtime they build. It is the only path to a spawn:
//! outside one, [`Context::current`] refuses with [`Error::NotLaunched`] instead of re-executing a
//! binary that was never set up to act as a child.

mod forkserver;
mod spare;
mod spawn;

use crate::error::{Error, Result};
use crate::hub::{Hub, HubContext};
use crate::protocol::{ChildConfig, PROTOCOL_VERSION};
use crate::transport::auth::AuthKey;
use crate::transport::local::RunDir;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) use spawn::{send_signal, ChildHandle, ChildProcess};

/// How a child process is started.
///
/// There is no plain `Fork` (Python's default on Linux): forking a process that already runs
/// tokio's threads is unsound for anything but an immediate `exec`. The fork server gives the
/// speed of `fork` without that risk. The enum is `#[non_exhaustive]` so methods can be added.
///
/// **The default** ([`get_start_method`] when nothing was set) is `ForkServer` in a program
/// launched by `#[process_main]`, where the server is sound and about twice as fast, and `Spawn`
/// under `#[multiprocessing::test]`, where the server would be a copy of the test harness, which
/// runs more than one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute this program (`std::env::current_exe`) with a child marker in its environment,
    /// as Python's `spawn` does: a fresh process with nothing inherited but the environment.
    /// About 1 ms on a typical Linux machine.
    Spawn,
    /// Ask a fork server for the child, as Python's `forkserver` does. The server is this
    /// program started again (on first use, once per launch context) in server mode: it is
    /// single-threaded and never builds a runtime, so `fork()` is sound there; each forked child
    /// builds its own runtime and connects back like any other. Cheaper than `Spawn` (no exec,
    /// no dynamic loading, pages shared with the server). The child's environment and working
    /// directory are the server's, as they were when it started (at this launch's first spawn),
    /// plus the builder's `env`: set variables before the first spawn, or pass them with `env`.
    ///
    /// The launch context keeps one child of the server forked, connected and waiting (a
    /// *spare*): a spawn hands it its identity and first call in one message, and the next
    /// spare is made while the new child runs. That costs one idle process (about 2.5 MB,
    /// mostly shared with the server) while the server runs; it is not among
    /// `active_children()` and dies with the server.
    ForkServer,
}

/// 0 = not set (the launch's default), 1 = `Spawn`, 2 = `ForkServer`.
static START_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used when a builder does not name one (Python's `set_start_method`),
/// for every launch of this process.
pub fn set_start_method(method: StartMethod) {
    START_METHOD.store(
        match method {
            StartMethod::Spawn => 1,
            StartMethod::ForkServer => 2,
        },
        Ordering::Relaxed,
    );
}

/// The start method used when a builder does not name one: what [`set_start_method`] set, or
/// else `ForkServer` under `#[process_main]` and `Spawn` under `#[multiprocessing::test]` (see
/// [`StartMethod`]).
pub fn get_start_method() -> StartMethod {
    match START_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Spawn,
        2 => StartMethod::ForkServer,
        _ => match Context::try_current().map(|ctx| ctx.relaunch.clone()) {
            Some(Relaunch::Main) => StartMethod::ForkServer,
            Some(Relaunch::Test(_)) | None => StartMethod::Spawn,
        },
    }
}

/// Most levels of descendants a run may have: a guard against runaway recursive spawning.
pub(crate) const MAX_DEPTH: u32 = 16;

/// How to start this executable again as a child.
#[derive(Debug, Clone)]
pub(crate) enum Relaunch {
    /// A `#[process_main]` binary: no arguments needed.
    Main,
    /// A test binary: re-enter exactly this test (as libtest names it).
    Test(String),
}

/// Who this process is.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<(u32, String)>,
}

/// A child this process started, as the context tracks it.
#[derive(Debug, Clone)]
pub(crate) struct ChildRecord {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// `Some(status)` once the child has exited and been reaped.
    pub(crate) exited: watch::Receiver<Option<std::process::ExitStatus>>,
}

/// Everything a process needs to start and supervise children.
#[derive(Debug)]
pub(crate) struct Context {
    _owned_dir: Option<RunDir>,
    depth: u32,
    relaunch: Relaunch,
    identity: Identity,
    /// The hub layer's part: run directory, key, hub, and the object host's client.
    hub: Arc<HubContext>,
    spawner: spawn::Spawner,
    fork_server: tokio::sync::Mutex<Option<Arc<forkserver::ForkServer>>>,
    /// The next child of the fork server, being made or ready and waiting (see `spare`).
    spare: Mutex<Option<tokio::task::JoinHandle<Result<spare::Spare>>>>,
    children: Mutex<HashMap<u32, ChildRecord>>,
    counter: AtomicU32,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Context>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Context {
    /// The root context of a run: a fresh private directory and key.
    ///
    /// # Errors
    /// `Io` when the directory or the key cannot be made.
    pub(crate) fn root(relaunch: Relaunch) -> Result<Arc<Self>> {
        let dir = RunDir::create()?;
        Ok(Arc::new(Context {
            hub: Arc::new(HubContext::root(dir.path().to_owned(), AuthKey::random()?)),
            _owned_dir: Some(dir),
            depth: 0,
            relaunch,
            identity: Identity {
                name: "MainProcess".into(),
                daemon: false,
                parent: None,
            },
            spawner: spawn::Spawner::new(),
            fork_server: tokio::sync::Mutex::new(None),
            spare: Mutex::new(None),
            children: Mutex::default(),
            counter: AtomicU32::new(0),
        }))
    }

    /// The context of a child, from the configuration it was started with.
    ///
    /// # Errors
    /// `Authentication` when the configuration's key is malformed.
    pub(crate) fn child(cfg: &ChildConfig) -> Result<Arc<Self>> {
        let key = AuthKey::from_hex(&cfg.key).ok_or_else(|| {
            Error::Authentication("the key in the child marker is malformed".into())
        })?;
        Ok(Arc::new(Context {
            hub: Arc::new(HubContext::child(
                PathBuf::from(&cfg.run_dir),
                key,
                PathBuf::from(&cfg.root_socket),
                crate::transport::frame_limit_u64(cfg.max_frame),
            )),
            _owned_dir: None,
            depth: cfg.depth,
            relaunch: match &cfg.test {
                Some(t) => Relaunch::Test(t.clone()),
                None => Relaunch::Main,
            },
            identity: Identity {
                name: cfg.name.clone(),
                daemon: cfg.daemon,
                parent: Some((cfg.parent_pid, cfg.parent_name.clone())),
            },
            spawner: spawn::Spawner::new(),
            fork_server: tokio::sync::Mutex::new(None),
            spare: Mutex::new(None),
            children: Mutex::default(),
            counter: AtomicU32::new(0),
        }))
    }

    /// Makes `ctx` current on this thread (and clears it with `None`), with its hub layer's
    /// part (which user-facing objects reach through `hub::current_host`).
    pub(crate) fn set_current(ctx: Option<Arc<Context>>) {
        crate::hub::set_current(ctx.as_ref().map(|c| Arc::clone(&c.hub)));
        CURRENT.with(|c| *c.borrow_mut() = ctx);
    }

    /// The context current on this thread, if any.
    pub(crate) fn try_current() -> Option<Arc<Context>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The context current on this thread.
    ///
    /// # Errors
    /// `NotLaunched` outside `#[process_main]` / `#[multiprocessing::test]` (or on a thread that
    /// their runtime did not start).
    pub(crate) fn current() -> Result<Arc<Context>> {
        Self::try_current().ok_or_else(|| {
            Error::NotLaunched("this thread belongs to no launch context (is it a runtime the macro did not build?)".into())
        })
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn run_dir(&self) -> &Path {
        self.hub.run_dir()
    }

    /// The run's key.
    pub(crate) fn key(&self) -> &AuthKey {
        self.hub.key()
    }

    /// The socket of this process's hub, started if needed.
    pub(crate) fn hub_socket(&self) -> Result<PathBuf> {
        Ok(self.hub()?.path().to_owned())
    }

    /// This process's hub, started on first use.
    fn hub(&self) -> Result<Arc<Hub>> {
        self.hub.hub()
    }

    /// Waits until the root has applied what this process sent to its hosted objects (see
    /// `HubContext::settle`).
    pub(crate) async fn settle(&self) {
        self.hub.settle().await;
    }

    /// The name the next child gets when none is given: `Process-N` in the root, `<ours>:N` in
    /// a child, as Python names them.
    pub(crate) fn next_child_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        if self.depth == 0 {
            format!("Process-{n}")
        } else {
            format!("{}:{n}", self.identity.name)
        }
    }

    /// Starts a child process that will connect back and wait for calls.
    ///
    /// # Errors
    /// `NotLaunched` past the depth limit; `Io` when the OS refuses to start the process.
    pub(crate) async fn start_child(&self, opts: ChildOptions) -> Result<ChildProcess> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::NotLaunched(format!(
                "refusing to start a child at depth {}: a run may nest at most {MAX_DEPTH} levels of processes",
                self.depth + 1
            )));
        }
        let hub = self.hub()?;
        let token = crate::transport::auth::random_token()?;
        let cfg = ChildConfig {
            version: PROTOCOL_VERSION,
            run_dir: self.run_dir().to_string_lossy().into_owned(),
            socket: hub.path().to_string_lossy().into_owned(),
            root_socket: self
                .hub
                .root_socket()
                .unwrap_or(hub.path())
                .to_string_lossy()
                .into_owned(),
            key: self.key().to_hex(),
            token,
            name: opts.name.clone(),
            daemon: opts.daemon,
            depth: self.depth + 1,
            parent_pid: std::process::id(),
            parent_name: self.identity.name.clone(),
            max_frame: self.hub.max_frame() as u64,
            log_level: forwarded_log_level(),
            test: match &self.relaunch {
                Relaunch::Test(t) => Some(t.clone()),
                Relaunch::Main => None,
            },
            concurrency: opts.concurrency,
            os_parent: std::process::id(),
            fork_server: false,
            spare: false,
        };
        if opts.start_method == StartMethod::ForkServer {
            return self.start_forked(hub, cfg, opts.env).await;
        }
        let connection = hub.await_child(token);
        match self
            .spawner
            .spawn(&self.relaunch, cfg.to_env()?, opts.env, None)
            .await
        {
            Ok((pid, child)) => Ok(ChildProcess {
                pid,
                child: ChildHandle::Spawned(child),
                connection,
                token,
                hub,
                first: None,
            }),
            Err(e) => {
                hub.forget(token);
                Err(e)
            }
        }
    }

    /// Starts a child through the fork server: takes the spare that is ready (or waits for one),
    /// tells it who it is, and has the next spare made while this child gets to work.
    ///
    /// Not cancel-safe: a spare taken before the cancellation is dropped (it exits). `Process`
    /// and the pool call this from a task of their own.
    async fn start_forked(
        &self,
        hub: Arc<Hub>,
        cfg: ChildConfig,
        env: Vec<(OsString, OsString)>,
    ) -> Result<ChildProcess> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        // A spare can die while it waits (the OOM killer, a stray signal): then take another.
        let mut tries = 0;
        let spare = loop {
            tries += 1;
            let ready = lock(&self.spare).take();
            let spare = match ready {
                Some(task) => match task.await {
                    Ok(made) => made,
                    Err(e) => Err(Error::Io(std::io::Error::other(format!(
                        "the task making a spare child was lost: {e}"
                    )))),
                },
                None => {
                    spare::make(self.fork_server(&cfg).await?, Arc::clone(&hub), cfg.clone()).await
                }
            };
            match spare {
                Ok(mut spare) => {
                    if spare.is_alive() {
                        break spare;
                    }
                    if tries >= 3 {
                        return Err(Error::Io(std::io::Error::other(
                            "three spare children of the fork server in a row died before they could be used",
                        )));
                    }
                }
                Err(_) if tries < 3 => {}
                Err(e) => return Err(e),
            }
        };
        // The next spare forks and connects while this one runs its call: once this one's
        // assignment is on the wire (a `Process` queues its call right behind it, so both
        // usually go in one write), so that the server's fork does not take the CPU the woken
        // child is about to run on. (If the server cannot be started now, the next start tries
        // again and reports why.)
        let (sent, on_the_wire) = tokio::sync::oneshot::channel();
        if let Ok(server) = self.fork_server(&cfg).await {
            let mut slot = lock(&self.spare);
            if slot.is_none() {
                let hub = Arc::clone(&hub);
                let cfg = cfg.clone();
                *slot = Some(tokio::spawn(async move {
                    // Told when the message is flushed, or dropped if it never will be.
                    let _ = on_the_wire.await;
                    spare::make(server, hub, cfg).await
                }));
            }
        }
        spare.into_child(&cfg, env, hub, sent)
    }

    /// This context's fork server, started on first use (with `cfg` as the configuration its
    /// children start from) and again if it died (its children died with it).
    ///
    /// # Errors
    /// `Io` when the server cannot be started.
    async fn fork_server(&self, cfg: &ChildConfig) -> Result<Arc<forkserver::ForkServer>> {
        let mut slot = self.fork_server.lock().await;
        match slot.as_ref() {
            Some(server) if !server.is_gone() => Ok(Arc::clone(server)),
            _ => {
                let server = Arc::new(
                    forkserver::ForkServer::start(&self.spawner, &self.relaunch, cfg.clone())
                        .await?,
                );
                *slot = Some(Arc::clone(&server));
                Ok(server)
            }
        }
    }

    /// Records a child for `active_children` and for the end of the launch.
    pub(crate) fn track(&self, record: ChildRecord) {
        let mut children = lock(&self.children);
        children.retain(|_, c| c.exited.borrow().is_none());
        children.insert(record.pid, record);
    }

    /// The children that have not exited yet.
    pub(crate) fn active_children(&self) -> Vec<ChildRecord> {
        let mut children = lock(&self.children);
        children.retain(|_, c| c.exited.borrow().is_none());
        let mut list: Vec<_> = children.values().cloned().collect();
        list.sort_by_key(|c| c.pid);
        list
    }

    /// What Python does at exit: terminate daemonic children, then wait for every child.
    /// Daemons that ignore SIGTERM for a second are killed.
    pub(crate) async fn finish(&self) {
        let children = self.active_children();
        for child in children.iter().filter(|c| c.daemon) {
            signal(child, libc::SIGTERM);
        }
        // One grace period for all daemons together, not one each.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        for child in children {
            let mut exited = child.exited.clone();
            if child.daemon
                && tokio::time::timeout_at(deadline, exited.wait_for(|s| s.is_some()))
                    .await
                    .is_err()
            {
                signal(&child, libc::SIGKILL);
            }
            let _ = exited.wait_for(|s| s.is_some()).await;
        }
    }
}

fn signal(child: &ChildRecord, sig: i32) {
    if child.exited.borrow().is_none() {
        send_signal(child.pid, sig);
    }
}

/// What a caller chooses about a new child.
#[derive(Debug, Clone)]
pub(crate) struct ChildOptions {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) start_method: StartMethod,
    /// How many calls the child runs at once (0 = no limit).
    pub(crate) concurrency: u32,
}

/// The most verbose level any subscriber of this process wants, as the child forwarder's number
/// (0 = ERROR … 4 = TRACE, 5 = nothing).
fn forwarded_log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::ERROR => 0,
        LevelFilter::WARN => 1,
        LevelFilter::INFO => 2,
        LevelFilter::DEBUG => 3,
        LevelFilter::TRACE => 4,
        _ => 5,
    }
}
