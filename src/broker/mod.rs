//! Layer 6: the worker side of a pool on Redis Streams ([`serve`]).
//!
//! A worker host runs the same binary as the pool, either as
//! `MULTIPROCESSING_WORKER=redis://host:6379/0 ./app` (`#[process_main]` then serves instead of
//! running `main`'s body) or by calling [`serve`] itself. It reads tasks from the pool name's
//! stream in the consumer group `workers` (`XREADGROUP`), checks each task's signature, entry
//! and build, runs it on a local [`Pool`](crate::Pool) of its own processes, writes the signed
//! result to the pool's result stream, and only then acknowledges (`XACK`) and deletes the task.
//!
//! While it holds tasks, a worker renews them (`XCLAIM … JUSTID` by itself, which resets their
//! idle time) three times per visibility timeout; a worker that died or lost Redis stops doing
//! so, and after the timeout another worker claims its tasks (`XPENDING … IDLE`, then `XCLAIM`)
//! and runs them again if the call allowed retries, or answers `WorkerLost` for them.
//!
//! `worker.rs` is the loop, `claim.rs` the renewing and claiming, `reader.rs` the blocking read.

mod claim;
mod reader;
mod worker;

use crate::error::Result;
use crate::pool::broker_wire as wire;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

/// The environment variable that starts a `#[process_main]` binary as a broker worker: its
/// value is the Redis URL.
pub const WORKER_ENV: &str = "MULTIPROCESSING_WORKER";
/// The environment variable that names the pool a worker started by [`WORKER_ENV`] serves
/// (default `default`, as `PoolBuilder::name`'s).
pub const NAME_ENV: &str = "MULTIPROCESSING_POOL";
/// The environment variable naming a PEM file of the certificate authorities a pool or worker
/// trusts for a `rediss://` URL when none is given in code
/// ([`PoolBuilder::broker_ca`](crate::PoolBuilder::broker_ca), [`Serve::broker_ca`]); without
/// it, the system's roots.
pub const CA_ENV: &str = wire::CA_ENV;
/// The environment variable that sets how many processes a worker started by [`WORKER_ENV`]
/// runs tasks on (default: the number of CPUs).
pub const PROCESSES_ENV: &str = "MULTIPROCESSING_PROCESSES";

/// Serves the tasks of broker pools: see [`Serve`].
///
/// ```no_run
/// #[multiprocessing::process_main]
/// async fn main() -> multiprocessing::Result<()> {
///     // Runs until it fails (or the process is stopped).
///     multiprocessing::broker::serve("redis://10.0.0.5:6379/0")
///         .name("crawler")
///         .processes(8)
///         .await
/// }
/// ```
pub fn serve(url: impl Into<String>) -> Serve {
    Serve {
        url: url.into(),
        ca: None,
        processes: None,
        name: None,
        key: None,
    }
}

/// A broker worker's settings; `.await` it to serve. Made by [`serve`].
///
/// # Cancel safety
/// Dropping the serving future stops the worker: its local processes are terminated, and the
/// tasks it held are claimed by other workers after the visibility timeout.
#[must_use = "a worker serves only when awaited"]
pub struct Serve {
    url: String,
    ca: Option<std::path::PathBuf>,
    processes: Option<usize>,
    name: Option<String>,
    key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Serve {
    /// Shows neither the key nor the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("url", &wire::redact(&self.url))
            .field("ca", &self.ca)
            .field("processes", &self.processes)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// How many local processes run tasks. Default: `MULTIPROCESSING_PROCESSES`, else the
    /// number of CPUs.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The pool name to serve (as `PoolBuilder::name`). Default: `MULTIPROCESSING_POOL`, else
    /// `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The certificate authorities to trust for a `rediss://` URL: a PEM file, as
    /// [`PoolBuilder::broker_ca`](crate::PoolBuilder::broker_ca). Default: the file
    /// `MULTIPROCESSING_BROKER_CA` names, else the system's roots.
    pub fn broker_ca(mut self, pem_file: impl Into<std::path::PathBuf>) -> Self {
        self.ca = Some(pem_file.into());
        self
    }

    /// The key tasks are signed with, the pool's. Default: `MULTIPROCESSING_KEY`.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Serves until a fatal error. A lost Redis connection is not one: the worker reconnects
    /// (every half second) and goes on.
    ///
    /// # Cancel safety
    /// As [`Serve`]'s.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) without a key or with
    /// `processes(0)`; [`Error::Broker`](crate::Error::Broker) for a URL Redis does not take or
    /// a Redis that cannot be reached at the start; what [`Pool::new`](crate::Pool::new)
    /// returns when the local processes cannot be started.
    pub async fn run(self) -> Result<()> {
        let signer = wire::Signer::new(self.key)?;
        let name = self
            .name
            .or_else(|| std::env::var(NAME_ENV).ok())
            .unwrap_or_else(|| wire::DEFAULT_NAME.into());
        let processes = match self.processes {
            Some(n) => n,
            None => match std::env::var(PROCESSES_ENV) {
                Ok(n) => n.parse().map_err(|_| {
                    crate::error::Error::InvalidArgument(format!(
                        "{PROCESSES_ENV}={n} is not a number of processes"
                    ))
                })?,
                Err(_) => crate::process::cpu_count(),
            },
        };
        let pool = crate::pool::Pool::builder()
            .processes(processes)
            .name_prefix("BrokerWorker")
            .build()
            .await?;
        worker::Worker::start(
            wire::Endpoint::new(self.url, self.ca),
            name,
            signer,
            pool,
            processes,
        )
        .await?
        .run()
        .await
    }
}

impl IntoFuture for Serve {
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// What `#[process_main]` runs in worker mode: serves the URL in `MULTIPROCESSING_WORKER`,
/// and says why it stopped (the process's exit code).
///
/// # Cancel safety
/// Not meant to be cancelled: it is the whole body of a worker process. Dropped, it stops
/// taking tasks; those it held are claimed by other workers after the visibility timeout.
#[doc(hidden)]
pub async fn serve_from_env(url: String) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let served = async {
        // SIGTERM and SIGINT end the worker cleanly: its local processes are stopped and its
        // run directory removed; the tasks it held are claimed by other workers.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            served = serve(url).run() => served,
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
        }
    };
    match served.await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multiprocessing: broker worker {}: {e}", std::process::id());
            1
        }
    }
}
