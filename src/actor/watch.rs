//! What the clients of an actor learn about how it ended: from its supervisor when it runs in
//! the same process (`Watch`), from the exit file the supervisor writes when it does not.

use super::ActorExit;
use crate::protocol::decode_value;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// How one incarnation died: its pid, exit code and signal.
type Death = (u32, Option<i32>, Option<i32>);

/// What the supervisor tells the clients of its own process.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The last incarnation that died: pid, exit code, signal.
    pub(super) death: watch::Sender<Option<Death>>,
    pub(super) exit: watch::Sender<Option<ActorExit>>,
    /// Set by `kill` before it signals the process: its death is then not a crash.
    pub(super) killed: std::sync::atomic::AtomicBool,
}

impl Watch {
    /// What became of incarnation `pid`, once the supervisor knows: how it died, or `None` if
    /// the actor ended on its own terms (stopped, or ended by a panic).
    pub(super) async fn fate_of(&self, pid: u32) -> Option<(Option<i32>, Option<i32>)> {
        let mut deaths = self.death.subscribe();
        let mut exit = self.exit.subscribe();
        tokio::select! {
            biased;
            seen = deaths.wait_for(|d| d.is_some_and(|d| d.0 == pid)) => {
                seen.ok().and_then(|d| *d).map(|(_, code, signal)| (code, signal))
            }
            _ = exit.wait_for(Option::is_some) => None,
        }
    }

    /// How the actor ended, once it has.
    pub(super) async fn exit(&self) -> ActorExit {
        let mut rx = self.exit.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|e| e.clone());
        // The sender lives in this `Watch`: the wait ends only with a value.
        exit.unwrap_or(ActorExit::Died {
            exitcode: None,
            signal: None,
        })
    }
}

/// What the supervisor writes in the exit file: how the actor ended, and the pid of its last
/// process (so that a client elsewhere can name it in `ProcessDied`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Ended {
    pub(super) exit: ActorExit,
    pub(super) pid: u32,
}

/// Where the exit of the actor at `socket` is written.
pub(super) fn exit_path(socket: &Path) -> PathBuf {
    socket.with_extension("exit")
}

/// The exit file at `path`, if it is written.
pub(super) fn read_ended(path: &Path) -> Option<Ended> {
    let bytes = std::fs::read(path).ok()?;
    decode_value("an actor's exit", &bytes).ok()
}

/// Waits for the exit file of an actor supervised elsewhere.
pub(super) async fn read_exit(path: &Path) -> ActorExit {
    loop {
        if let Some(ended) = read_ended(path) {
            return ended.exit;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
