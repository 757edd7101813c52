#![doc = include_str!("../README.md")]
#![cfg_attr(not(unix), allow(unused))]

#[allow(unused_extern_crates)]
extern crate self as multiprocessing;

// Layer 0: errors, and the large buffers kept for reuse.
mod buffers;
mod error;
// Layer 1: frames, local sockets, authentication.
mod transport;
// Layer 2: wire messages.
mod protocol;
// Layer 3: the entry registry and the child side.
mod bootstrap;
mod entry;
// Layer 4: the listener that children connect to.
mod hub;
// Layer 5: starting and supervising children.
mod process;
mod start;
// Layer 6: user-facing modules over the layers above.
mod actor;
pub mod connection;
mod pool;
mod queue;
// Layer 7: what the macros expand to.
mod launch;

pub use actor::{Actor, ActorBuilder, ActorExit, ActorRef, Restart, DEFAULT_MAILBOX};
pub use connection::{pipe, pipe_simplex, Connection};
pub use entry::{BoxFuture, Entry, Run};
pub use error::{Error, Location, PutTimeoutError, Result, SendError, TryPutError};
pub use pool::{Apply, AsyncResult, Imap, ImapUnordered, Map, Pool, PoolBuilder};
pub use process::{
    active_children, cpu_count, current_process, parent_process, Process, ProcessBuilder,
    ProcessInfo,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use start::{get_start_method, set_start_method, StartMethod};

#[cfg(feature = "macros")]
pub use multiprocessing_macros::{actor, entry, process_main, test};

/// Sets the largest frame a connection accepts, in bytes (default 16 MiB; clamped to
/// 1 KiB ..= 1 GiB − 1). It bounds the memory a peer can make us allocate per read, not the size
/// of a value: larger values cross as several frames.
///
/// The limit belongs to a launch (`#[process_main]`, or one `#[multiprocessing::test]`).
/// Called on a thread of a launch, it sets that launch's limit: connections and children the
/// launch makes afterwards use it (children keep their parent's limit), while other launches in
/// the same process keep theirs. Called outside any launch, it sets the process-wide default
/// that launches started afterwards begin with (and that connections made outside any launch
/// use). Connections already made keep the limit they were made with: call it before spawning.
pub fn set_max_frame_size(bytes: usize) {
    hub::set_max_frame(bytes);
}

/// Not public API: the seam between the macros and the library. It changes in patch releases.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{
        assert_serde as actor_assert_serde, decode_args as actor_decode_args,
        encode_result as actor_encode_result, invoke as actor_invoke,
        invoke_batch as actor_invoke_batch, unknown_method as actor_unknown_method,
        Handled as ActorHandled, RefOf,
    };
    pub use crate::entry::{
        invoke_async, invoke_batch_async, invoke_batch_sync, invoke_sync, BatchArgs, EntryRecord,
        Invocation, RegisteredRun, ENTRIES,
    };
    pub use crate::launch::{main, test, Body, LaunchLocal, LaunchSend, RuntimeConfig};
    pub use linkme;
    pub use serde;

    /// Hooks for this crate's own tests of the transport (hostile peers, malformed frames).
    pub mod testing {
        use crate::error::{Error, Result};
        use crate::start::Context;
        use crate::transport::auth::AuthKey;
        use crate::transport::Conn;
        use std::path::{Path, PathBuf};

        /// Inside an actor method: the pid of the process whose call it serves (from the
        /// connection's peer credentials); `None` elsewhere.
        pub fn actor_caller_pid() -> Option<u32> {
            crate::actor::caller_pid()
        }

        /// The private directory of the current launch.
        ///
        /// # Errors
        /// `NotLaunched` outside a launch.
        pub fn run_dir() -> Result<PathBuf> {
            Ok(Context::current()?.run_dir().to_owned())
        }

        /// The frame limit connections made now on this thread take: the current launch's,
        /// or the process-wide default outside any launch (see `set_max_frame_size`).
        pub fn max_frame_size() -> usize {
            crate::hub::max_frame()
        }

        /// The socket of this process's hub (started if needed).
        ///
        /// # Errors
        /// `NotLaunched` outside a launch; `Io` if the hub cannot bind.
        pub fn hub_socket() -> Result<PathBuf> {
            Context::current()?.hub_socket()
        }

        /// An authenticated connection to `socket`, whose key is the run's key, or `key` if given.
        #[derive(Debug)]
        pub struct RawConn(Conn);

        impl RawConn {
            /// Connects and authenticates.
            ///
            /// # Errors
            /// `Authentication` when the key is refused; `Io`.
            pub async fn connect(socket: &Path, key: Option<[u8; 32]>) -> Result<Self> {
                let key = match key {
                    Some(k) => AuthKey(k),
                    None => Context::current()?.key().clone(),
                };
                let max_frame = crate::hub::max_frame();
                Ok(RawConn(Conn::connect(socket, &key, max_frame).await?))
            }

            /// Writes bytes as they are, outside any frame.
            ///
            /// # Errors
            /// `Io` when the peer is gone.
            pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
                self.0.writer.write_raw(bytes).await
            }

            /// Waits for the peer to close the connection; `Ok` if it did.
            ///
            /// # Errors
            /// `Protocol` if the peer sent a message instead.
            pub async fn closed(&mut self) -> Result<()> {
                match self.0.reader.read_message().await {
                    Ok(Some(_)) => Err(Error::Protocol("the peer sent a message".into())),
                    Ok(None) | Err(_) => Ok(()),
                }
            }
        }
    }
}
