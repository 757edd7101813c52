#![doc = include_str!("../README.md")]
#![cfg_attr(not(unix), allow(unused))]

// Cargo stops earlier, in build.rs, with the full reason; this covers builds that skip it.
#[cfg(not(target_os = "linux"))]
compile_error!("async-multiprocessing supports Linux only: it needs pidfd, PR_SET_PDEATHSIG and memfd (see build.rs)");

#[allow(unused_extern_crates)]
extern crate self as multiprocessing;

// Layer 0: errors, the large buffers kept for reuse, and the codec of user values.
mod buffers;
mod codec;
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
#[cfg(feature = "broker")]
pub mod broker;
pub mod connection;
pub mod manager;
mod pool;
mod queue;
pub mod shm;
pub mod sync;
// Layer 7: what the macros expand to.
mod launch;

pub use actor::{Actor, ActorBuilder, ActorExit, ActorRef, AnyActorRef, Restart, DEFAULT_MAILBOX};
pub use connection::{pipe, pipe_simplex, Connection};
pub use entry::{BoxFuture, Entry, Run};
pub use error::{Error, Location, PutError, PutTimeoutError, Result, SendError, TryPutError};
pub use manager::{
    Dict, List, Manager, ManagerEvent, ManagerLock, ManagerLockGuard, ManagerServer, Namespace,
};
pub use pool::{Apply, AsyncResult, Imap, ImapUnordered, Map, Pool, PoolBuilder};
pub use pool::{PoolStats, Replacements};
pub use process::{
    active_children, cpu_count, current_process, parent_process, Process, ProcessBuilder,
    ProcessInfo,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use shm::{Array, SharedBytes, SharedMemory, Value};
pub use start::{get_start_method, set_start_method, StartMethod};
pub use sync::Lock;
pub use sync::{Barrier, BoundedSemaphore, Condition, Event, RLock, Semaphore};

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
        Handled as ActorHandled, Hook as ActorHook, RefOf,
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

        /// The codec of user values, as the crate calls it for arguments and results: for the
        /// codec bench (`benches/codec.rs`).
        pub mod codec {
            use crate::error::Result;

            /// Encodes `value` as an argument or result is encoded.
            ///
            /// # Errors
            /// `Encode` if the value does not encode.
            pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
                crate::protocol::encode_value("a value", value)
            }

            /// Decodes a `T` that fills `bytes`, as an argument or result is decoded.
            ///
            /// # Errors
            /// `Decode` if the bytes are not one `T`.
            pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
                crate::protocol::decode_value("a value", bytes)
            }
        }

        /// The decoders a peer's bytes reach first, callable on any bytes: for the hostile-input
        /// tests and the fuzz targets (`fuzz/`). None of them may panic, hang or allocate more
        /// than its limits allow, whatever the bytes.
        pub mod decode {
            use crate::error::{Error, Result};
            use crate::protocol::{decode_head, Down, HostReply, HostReq, Up};
            use crate::transport::auth::{self, AuthKey, HANDSHAKE_MAX_FRAME};
            use crate::transport::frame::{Decoder, FrameReader, FrameWriter};

            /// Feeds `bytes` to a frame decoder `chunk` bytes at a time, with a limit of
            /// `max_frame`; returns the lengths of the whole messages it gave.
            ///
            /// # Errors
            /// `FrameTooLarge` or `Protocol` as the decoder reports them.
            pub fn frames(bytes: &[u8], max_frame: usize, chunk: usize) -> Result<Vec<usize>> {
                let mut decoder = Decoder::new(Vec::new(), 64, max_frame);
                let mut lengths = Vec::new();
                for piece in bytes.chunks(chunk.max(1)) {
                    let mut rest = piece;
                    while !rest.is_empty() {
                        let (buf, room) = decoder.read_space();
                        let n = rest.len().min(room);
                        buf.extend_from_slice(&rest[..n]);
                        decoder.filled(n);
                        rest = &rest[n..];
                        while let Some(m) = decoder.next_message()? {
                            lengths.push(m.len());
                        }
                    }
                }
                Ok(lengths)
            }

            /// Decodes `bytes` as the head of each protocol message kind (`Up`, `Down`,
            /// `HostReq`, `HostReply`); returns which of them accepted it, in that order.
            pub fn message(bytes: &[u8]) -> [bool; 4] {
                [
                    decode_head::<Up>(bytes).is_ok(),
                    decode_head::<Down>(bytes).is_ok(),
                    decode_head::<HostReq>(bytes).is_ok(),
                    decode_head::<HostReply>(bytes).is_ok(),
                ]
            }

            /// Runs the server (`client == false`) or client side of the handshake, with the key
            /// `[7; 32]`, against a peer that sends `peer_bytes` and then closes.
            ///
            /// # Errors
            /// What the handshake reports: `Authentication` for any bytes that do not prove the
            /// key; `Io` if the runtime cannot be built.
            pub fn handshake(peer_bytes: &[u8], client: bool) -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    let (r, w) = tokio::io::split(ours);
                    let (mut their_r, mut their_w) = tokio::io::split(theirs);
                    let mut reader = FrameReader::new(r, HANDSHAKE_MAX_FRAME);
                    reader.set_max_message(HANDSHAKE_MAX_FRAME);
                    let mut writer = FrameWriter::new(w, HANDSHAKE_MAX_FRAME);
                    let key = AuthKey([7; 32]);
                    let peer = async {
                        use tokio::io::AsyncWriteExt;
                        let _ = their_w.write_all(peer_bytes).await;
                        let _ = their_w.shutdown().await;
                    };
                    // Whatever we write is read and thrown away, so no write can block.
                    let mut sink = tokio::io::sink();
                    let sink = tokio::io::copy(&mut their_r, &mut sink);
                    let ours = async move {
                        let r = if client {
                            auth::client(&mut reader, &mut writer, &key, None).await
                        } else {
                            auth::server(&mut reader, &mut writer, &key).await
                        };
                        // Both halves gone closes our end, which ends the sink.
                        drop((reader, writer));
                        r
                    };
                    let (r, _, _) = tokio::join!(ours, peer, sink);
                    r.and_then(|()| Err(Error::Protocol("accepted bytes without the key".into())))
                })
            }
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
