//! A spare's start: its call thread reads the assignment and perhaps takes the first call.
//!
//! A spare (made by the fork server ahead of need) connects, says `Hello` and then waits for
//! [`Down::Assign`]. Its *call thread* waits for it, not the runtime thread: the socket is taken
//! out of the runtime ([`RecvHalf::block`]) and read there in `poll(2)`, so the write that
//! carries the assignment and the first call wakes that thread alone. It sets the environment,
//! makes the child's context, starts the outbox and log forwarding, and, when the first call is
//! there already and is a `Process`'s call of a sync entry, keeps it to run at once. Everything
//! else goes back with the socket, registered again, to the runtime thread ([`Assigned`]).

use super::call::{Call, CallBody};
use super::{log_forward, KeepAlive, OnReady, EXIT_NO_PARENT, EXIT_PARENT_GONE};
use crate::entry;
use crate::error::Error;
use crate::protocol::{decode_head, ChildConfig, Down};
use crate::transport::frame::FrameReader;
use crate::transport::local::RecvHalf;
use crate::transport::{spawn_shared_writer, Outbox, SharedWriter};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// What a spare's call thread hands the runtime thread once it has read its assignment.
pub(super) struct Assigned {
    pub(super) reader: FrameReader<RecvHalf>,
    pub(super) cfg: ChildConfig,
    /// The exit code instead, if there was no assignment to read (or the socket is lost).
    pub(super) result: std::result::Result<(), i32>,
    pub(super) keep: Option<KeepAlive>,
    pub(super) outbox: Option<(Outbox, tokio::task::JoinHandle<()>)>,
    /// A message that came with the assignment and that the call thread did not take.
    pub(super) pending: Option<Vec<u8>>,
}

/// A spare's first work, done on its call thread: read the assignment there, and take the call
/// that came with it if it is a `Process`'s sync call, so that it starts without waking the
/// runtime thread first (the thread parked in the runtime wakes meanwhile, to take over the
/// connection). The socket is out of the runtime while this thread reads it, so what arrives
/// wakes this thread alone.
pub(super) struct SpareStart {
    reader: FrameReader<RecvHalf>,
    writer: SharedWriter,
    cfg: ChildConfig,
    on_ready: OnReady,
    handback: oneshot::Sender<Assigned>,
}

impl SpareStart {
    /// The work for the call thread, and where the runtime thread receives what it hands back.
    pub(super) fn new(
        reader: FrameReader<RecvHalf>,
        writer: SharedWriter,
        cfg: ChildConfig,
        on_ready: OnReady,
    ) -> (Self, oneshot::Receiver<Assigned>) {
        let (handback, rx) = oneshot::channel();
        let start = SpareStart {
            reader,
            writer,
            cfg,
            on_ready,
            handback,
        };
        (start, rx)
    }

    /// Runs on the call thread: reads the assignment, hands the connection back, and returns
    /// the first call if it took it.
    pub(super) fn run(self, runtime: &Handle) -> Option<Call> {
        let SpareStart {
            mut reader,
            writer,
            mut cfg,
            on_ready,
            handback,
        } = self;
        reader.get_mut().block();
        let mut result = runtime.block_on(assignment(&mut reader, &writer, &mut cfg));
        let (mut keep, mut outbox, mut pending, mut taken) = (None, None, None, None);
        if result.is_ok() {
            keep = Some(on_ready(&cfg));
            let (out, task) = spawn_shared_writer(Arc::clone(&writer));
            log_forward::install(out.clone(), cfg.log_level);
            outbox = Some((out, task));
            // A `Process`'s call usually comes in the same write as the assignment: when its
            // start is there already, it is read now (waiting only for the rest of it, which is
            // on its way); a call not yet begun is left to the runtime thread.
            if cfg.concurrency == 1 && reader.has_buffered() {
                match runtime.block_on(reader.read_message()) {
                    Ok(Some(message)) => match direct_call(message) {
                        Ok(call) => taken = Some(call),
                        Err(message) => pending = Some(message),
                    },
                    Ok(None) | Err(Error::Io(_)) => result = Err(EXIT_PARENT_GONE),
                    Err(e) => {
                        eprintln!(
                            "multiprocessing: child {} dropped its parent connection: {e}",
                            std::process::id()
                        );
                        result = Err(EXIT_PARENT_GONE);
                    }
                }
            }
        }
        if reader.get_mut().unblock().is_err() && result.is_ok() {
            result = Err(EXIT_NO_PARENT);
        }
        let assigned = Assigned {
            reader,
            cfg,
            result,
            keep,
            outbox,
            pending,
        };
        if handback.send(assigned).is_err() || result.is_err() {
            return None;
        }
        taken
    }
}

/// A `Process`'s call (`then_exit`) of a sync entry, ready for the call thread; otherwise the
/// message back.
fn direct_call(message: Vec<u8>) -> std::result::Result<Call, Vec<u8>> {
    let Ok((
        Down::Call {
            id,
            entry,
            then_exit: true,
            batch: false,
            report_start: false,
        },
        at,
    )) = decode_head::<Down>(&message)
    else {
        return Err(message);
    };
    match entry::lookup(&entry) {
        Ok(record) if !record.is_async => Ok(Call {
            id,
            start: None,
            then_exit: true,
            body: CallBody::Encoded {
                record: Ok(record),
                batch: false,
                message,
                at,
            },
        }),
        _ => Err(message),
    }
}

/// Reads a spare's [`Down::Assign`] and takes it into `cfg` (and the environment); the exit
/// code if there is none to read.
async fn assignment(
    reader: &mut FrameReader<RecvHalf>,
    writer: &SharedWriter,
    cfg: &mut ChildConfig,
) -> std::result::Result<(), i32> {
    let message = match reader.read_message().await {
        Ok(Some(m)) => m,
        _ => return Err(EXIT_PARENT_GONE),
    };
    match decode_head::<Down>(&message) {
        Ok((
            Down::Assign {
                name,
                daemon,
                concurrency,
                log_level,
                max_frame,
                env,
            },
            _,
        )) => {
            let limit = crate::transport::frame_limit_u64(max_frame);
            // What we send follows the new limit. What we read may still come in frames of the
            // old one: the parent's writer for this connection was made with the spare. The
            // context made from `cfg` once we are assigned keeps the new one.
            let old = crate::transport::frame_limit_u64(cfg.max_frame);
            reader.set_max_frame(limit.max(old));
            writer.lock().await.set_max_frame(limit);
            cfg.max_frame = limit as u64;
            // Run on the spare's call thread: sound although the runtime thread is alive, as it
            // waits with nothing to run and reads no variable (see `child::serve`).
            for (key, value) in env {
                std::env::set_var(key, value);
            }
            cfg.name = name;
            cfg.daemon = daemon;
            cfg.concurrency = concurrency;
            cfg.log_level = log_level;
            cfg.spare = false;
            Ok(())
        }
        Ok((Down::Shutdown, _)) => Err(0),
        Ok(_) => {
            eprintln!(
                "multiprocessing: spare child {} was sent a call before its assignment",
                std::process::id()
            );
            Err(EXIT_PARENT_GONE)
        }
        Err(e) => {
            eprintln!("multiprocessing: spare child {}: {e}", std::process::id());
            Err(EXIT_PARENT_GONE)
        }
    }
}
