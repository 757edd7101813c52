//! The parent's side of an actor: makes its socket, starts its process, restarts it per policy,
//! and records how it ended.
//!
//! The socket is bound here and handed to each incarnation as a descriptor. With
//! [`Restart::OnCrash`] this process keeps its own copy open for the actor's whole life, so a
//! client that connects while a dead incarnation is being replaced waits in the socket's backlog
//! and is served by the next one; with [`Restart::Never`] it keeps none, so a connection to a
//! dead actor is refused at once. When the actor ends for good, the socket file and the name are
//! removed and its exit is written beside the socket for monitors in other processes; then the
//! actor's links are settled (see `linking.rs`).

use super::budget::Budget;
use super::client::Client;
use super::linking;
use super::names::{self, NameGuard};
use super::server::EXIT_KILLED;
use super::watch::{exit_path, Ended, Watch};
use super::wire::Addr;
use super::wire::{End, Init};
use super::{Actor, ActorExit, Restart, DEFAULT_MAILBOX};
use crate::error::{Error, Result};
use crate::process::{Process, ProcessBuilder};
use crate::protocol::encode_value;
use crate::start::{Context, StartMethod};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// What the builder collected.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub(super) name: Option<String>,
    pub(super) mailbox: u32,
    pub(super) restart: Restart,
    pub(super) start_method: Option<StartMethod>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            mailbox: DEFAULT_MAILBOX,
            restart: Restart::Never,
            start_method: None,
        }
    }
}

/// Everything an incarnation is started from.
struct Recipe {
    entry: &'static str,
    listener: UnixListener,
    state: Vec<u8>,
    options: Options,
}

impl Recipe {
    /// Starts an incarnation (`restarted`: after a death).
    async fn start(&self, restarted: bool) -> Result<Process<Result<End>>> {
        let init = Init {
            listener: crate::transport::fd::offer(self.listener.as_fd())?,
            mailbox: self.options.mailbox,
            restart: self.options.restart,
            state: self.state.clone(),
            restarted,
        };
        let mut builder = ProcessBuilder::default().daemon(true);
        if let Some(method) = self.options.start_method {
            builder = builder.start_method(method);
        }
        builder
            .start(self.entry, encode_value("an actor's start", &init)?)
            .await
    }
}

/// Starts actor `value` and returns this process's client of it, connected.
///
/// # Errors
/// As `ActorBuilder::spawn`.
pub(super) async fn spawn<A: Actor>(value: &A, options: Options) -> Result<Arc<Client>> {
    let ctx = Context::current()?;
    let token = crate::transport::auth::random_token()?;
    let addr = Addr {
        path: ctx.run_dir().join(format!("actor-{token:016x}.sock")),
        mailbox: options.mailbox,
        actor: A::NAME.to_owned(),
    };
    let name = match &options.name {
        Some(n) => Some(names::claim(ctx.run_dir(), n, &addr)?),
        None => None,
    };
    let recipe = Recipe {
        entry: A::NAME,
        listener: UnixListener::bind(&addr.path)?,
        state: encode_value("the actor's state", value)?,
        options,
    };
    let process = match recipe.start(false).await {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&addr.path);
            return Err(e);
        }
    };
    // Before anyone can link to it: a linked actor's end kills the process recorded here.
    linking::write_pid(&addr.path, process.pid());
    let watch = Arc::new(Watch {
        death: watch::channel(None).0,
        exit: watch::channel(None).0,
        killed: std::sync::atomic::AtomicBool::new(false),
    });
    tokio::spawn(supervise(
        process,
        recipe,
        Arc::clone(&watch),
        addr.path.clone(),
        name,
    ));
    let client = Client::spawned(addr, watch);
    client.connect().await?;
    Ok(client)
}

/// Waits for each incarnation to end and restarts it per policy; records the end.
async fn supervise(
    mut process: Process<Result<End>>,
    recipe: Recipe,
    watch: Arc<Watch>,
    socket: PathBuf,
    name: Option<NameGuard>,
) {
    // With no restarts to come, nobody but the actor's process holds its socket.
    let mut recipe = match recipe.options.restart {
        Restart::Never => {
            drop(recipe.listener);
            None
        }
        Restart::OnCrash { .. } => Some(recipe),
    };
    let mut budget = Budget::new(
        recipe
            .as_ref()
            .map_or(Restart::Never, |r| r.options.restart),
    );
    // Every incarnation's start table, removed when the actor ends for good (a client may
    // still read a dead one's while the next one starts).
    let mut pids = Vec::new();
    let exit = loop {
        pids.push(process.pid());
        let ended = process.join().await;
        linking::remove_pid(&socket);
        let (exitcode, signal) = match ended {
            Ok(Ok(End::Stopped)) => break ActorExit::Stopped,
            Ok(Ok(End::Panicked(e))) => break panicked(e.into()),
            Err(e @ Error::Panicked { .. }) => break panicked(e),
            Err(Error::ProcessDied {
                exitcode, signal, ..
            }) => (exitcode, signal),
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(target: "multiprocessing::actor", "actor process {} failed: {e}", process.pid());
                (process.exitcode(), None)
            }
        };
        watch
            .death
            .send_replace(Some((process.pid(), exitcode, signal)));
        if exitcode == Some(EXIT_KILLED) || watch.killed.load(std::sync::atomic::Ordering::SeqCst) {
            break ActorExit::Killed;
        }
        if let Some(r) = recipe.as_ref().filter(|_| budget.allow()) {
            match r.start(true).await {
                Ok(p) => {
                    process = p;
                    linking::write_pid(&socket, process.pid());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target: "multiprocessing::actor", "could not restart an actor: {e}");
                }
            }
        }
        break ActorExit::Died { exitcode, signal };
    };
    // Closes this process's copy of the socket: clients waiting in its backlog are refused.
    recipe = None;
    drop(recipe);
    let _ = std::fs::remove_file(&socket);
    for pid in &pids {
        let _ = std::fs::remove_file(super::started::path(&socket, *pid));
    }
    drop(name);
    let ended = Ended {
        exit,
        pid: pids.last().copied().unwrap_or_default(),
    };
    if let Ok(bytes) = encode_value("an actor's exit", &ended) {
        let _ = std::fs::write(exit_path(&socket), bytes);
    }
    // After the exit file: a link made from now on is refused (see `linking.rs`).
    linking::propagate(&socket, &ended.exit);
    watch.exit.send_replace(Some(ended.exit));
}

fn panicked(e: Error) -> ActorExit {
    match e {
        Error::Panicked { message, location } => ActorExit::Panicked { message, location },
        other => ActorExit::Panicked {
            message: other.to_string(),
            location: None,
        },
    }
}
