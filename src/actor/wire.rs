//! The messages between an actor's clients and its process, on the actor's own socket.
//!
//! Each message is a postcard header, followed by a body where the header says so: a call's
//! encoded arguments, a reply's encoded value. One connection per client process carries every
//! call of that process, each under an id of the client's choosing.

use crate::error::RemoteError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where an actor is, as a reference carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Addr {
    /// Its socket in the run directory.
    pub(super) path: PathBuf,
    /// Its mailbox size: the credits of each client process.
    pub(super) mailbox: u32,
    /// Its type's registered name.
    pub(super) actor: String,
}

/// Client → actor.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToActor {
    /// Run method `method` on the arguments in the body; reply under `id` (a fire-and-forget
    /// call is answered too, without a value: the answer returns the client's mailbox credit).
    Call { id: u64, method: u32, value: bool },
    /// Finish what is queued before this, then reply under `id` with the state, and end.
    Stop { id: u64 },
    /// End now, whatever is queued.
    Kill,
    /// Keep running when no reference is left (until `stop`, `kill` or the end of the launch).
    Detach,
    /// This process serialized `n` references: they are in transit to other processes.
    Hold(u32),
    /// This process received `n` references in transit.
    Arrived(u32),
}

/// Actor → client.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum FromActor {
    /// Sent first on every connection: the pid of the process serving it, and the
    /// connection's slot in that process's start table (see `started.rs`), if it has one.
    Hello { pid: u32, slot: Option<u32> },
    /// The outcome of call `id`; on success the encoded value follows (nothing for a
    /// fire-and-forget call).
    Reply {
        id: u64,
        outcome: std::result::Result<(), RemoteError>,
    },
}

/// The arguments of an actor process, sent as its entry's arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Init {
    /// The listening socket, made by the supervisor (which may keep a copy across restarts).
    pub(super) listener: crate::transport::fd::Ticket,
    /// How many calls the mailbox holds before senders wait.
    pub(super) mailbox: u32,
    /// The policy for a handler's panic: re-create the state in place, or end.
    pub(super) restart: super::Restart,
    /// The initial state, encoded.
    #[serde(with = "serde_bytes")]
    pub(super) state: Vec<u8>,
    /// A restart after a death: the holders of references are reconnecting.
    pub(super) restarted: bool,
}

/// How an actor process ended, as its entry returns it to the supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum End {
    /// `stop`, or no reference left.
    Stopped,
    /// A handler panicked and the policy says stop.
    Panicked(RemoteError),
}
