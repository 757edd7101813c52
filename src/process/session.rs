//! The parent's side of a session with one child: calls out, results back, on one connection.
//!
//! A child serves calls for as long as its parent sends them (see `bootstrap::child`). Each call
//! carries a request id; its result comes back under that id, in completion order, and goes to
//! whatever reply the caller registered for it. The parent can `Cancel` a call, `Withdraw` one
//! that has not started (the child gives it back or says it had started), and, for calls sent
//! with a start report, learn which have started: from the child's start log
//! (`bootstrap::start_log`), or from `Started` messages where the child has none. A `Process`
//! makes one call on its session; a pool worker's session carries many at once.
//!
//! The session comes in two halves, so that results need not pass through whoever sends the
//! calls: [`Session`] sends (and registers each call's reply before it leaves), and
//! [`SessionReader`] reads, delivering each result's reply with it. Every message a child sends
//! is decoded here, and nowhere else; its log records are re-emitted here too.

use crate::bootstrap::StartLogReader;
use crate::buffers::{Buffer, IntoShared};
use crate::error::{Error, RemoteError, Result};
use crate::hub::{emit_child_log, ChildConn};
use crate::protocol::{decode_head, encode_head, Down, Up};
use crate::transport::frame::FrameReader;
use crate::transport::local::RecvHalf;
use crate::transport::{Outbox, Outgoing};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Call id → the reply registered for it. Filled by [`Session::call`] before the call leaves;
/// emptied by the reader when the result arrives, or by the sender when the call is cancelled or
/// given back.
type Replies<R> = Arc<Mutex<HashMap<u64, R>>>;

/// How the child runs a call (see `Down::Call`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallMode {
    /// The body is a batch of arguments and the result one outcome per item.
    pub(crate) batch: bool,
    /// The child reports the call's start before running it (see [`Session::started`]).
    pub(crate) report_start: bool,
    /// The child exits once the result is sent.
    pub(crate) then_exit: bool,
}

/// The sending half of a session: calls, cancellations, withdrawals, shutdown.
#[derive(Debug)]
pub(crate) struct Session<R> {
    pid: u32,
    outbox: Outbox,
    replies: Replies<R>,
    /// How many calls with a start report have been sent: the last one's place in the start log.
    reported: u64,
    start_log: Option<StartLogReader>,
}

/// The reading half of a session: what the child sends back.
pub(crate) struct SessionReader<R> {
    pid: u32,
    name: String,
    reader: FrameReader<RecvHalf>,
    replies: Replies<R>,
}

impl<R> std::fmt::Debug for SessionReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionReader")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the child sent, as the session's user needs it.
#[derive(Debug)]
pub(crate) enum Incoming<R> {
    /// Call `id` returned; `reply` is what was registered for it (`None` if nothing was, or the
    /// call was cancelled or given back since). On success the outcome is the whole message and
    /// where the encoded value starts in it: the value is decoded where it is wanted, uncopied.
    Returned {
        id: u64,
        reply: Option<R>,
        outcome: std::result::Result<(Buffer, usize), RemoteError>,
    },
    /// Call `id` is about to run (a child without a start log says so with a message).
    Started { id: u64 },
    /// The answer to [`Session::withdraw`]: `taken` if the call will never run there.
    Withdrawn { id: u64, taken: bool },
}

/// Opens a session on the connection of child `name`. With `run_dir`, calls may ask for a start
/// report, read from the child's start log in that directory.
pub(crate) fn open<R>(
    conn: ChildConn,
    name: String,
    run_dir: Option<&Path>,
) -> (Session<R>, SessionReader<R>) {
    let replies: Replies<R> = Arc::default();
    let ChildConn {
        pid,
        reader,
        outbox,
    } = conn;
    let session = Session {
        pid,
        outbox,
        replies: Arc::clone(&replies),
        reported: 0,
        start_log: run_dir.map(|dir| StartLogReader::new(dir, pid)),
    };
    let reader = SessionReader {
        pid,
        name,
        reader,
        replies,
    };
    (session, reader)
}

impl<R> Session<R> {
    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends call `id` of `entry` on `body`; its result will come with `reply`. Returns the
    /// call's place among those sent with a start report (from 1; 0 without one).
    ///
    /// # Errors
    /// `Encode` if the call's head does not encode (the call is not sent, nothing is registered).
    /// A child that is gone is not an error here: its end shows up at the reader.
    pub(crate) fn call(
        &mut self,
        id: u64,
        entry: &'static str,
        mode: CallMode,
        body: impl IntoShared,
        reply: Option<R>,
    ) -> Result<u64> {
        let head = encode_head(&Down::Call {
            id,
            entry: entry.into(),
            then_exit: mode.then_exit,
            batch: mode.batch,
            report_start: mode.report_start,
        })?;
        // Registered before the call leaves, so its result always finds its reply.
        if let Some(reply) = reply {
            self.lock_replies().insert(id, reply);
        }
        let _ = self.outbox.send(Outgoing::new(head, body));
        if mode.report_start {
            self.reported += 1;
            return Ok(self.reported);
        }
        Ok(0)
    }

    /// Abandons call `id`: its reply is dropped here, and the child drops the call if it has not
    /// finished (its result, if one still comes, goes nowhere).
    pub(crate) fn cancel(&self, id: u64) {
        self.lock_replies().remove(&id);
        self.send(&Down::Cancel { id });
    }

    /// Asks the child to give call `id` back if it has not started; the answer comes as
    /// [`Incoming::Withdrawn`]. Returns whether the request left.
    pub(crate) fn withdraw(&self, id: u64) -> bool {
        self.send(&Down::Withdraw { id })
    }

    /// Call `id` was given back: its reply is dropped here (the caller still has its own).
    pub(crate) fn forget(&self, id: u64) {
        self.lock_replies().remove(&id);
    }

    /// Takes back the reply of call `id` if its result has not come yet; after that, a result
    /// that still comes goes nowhere. `None` if the result came (it went to the reply).
    pub(crate) fn take_reply(&self, id: u64) -> Option<R> {
        self.lock_replies().remove(&id)
    }

    /// Tells the child to exit.
    pub(crate) fn shutdown(&self) {
        self.send(&Down::Shutdown);
    }

    /// How many of the calls sent with a start report have started, by the child's start log:
    /// the first that many have (calls start in the order they arrive). Reads a file: call it only
    /// when the answer matters. Starts reported by message come as [`Incoming::Started`] instead.
    pub(crate) fn started(&mut self) -> u64 {
        self.start_log.as_mut().map_or(0, StartLogReader::started)
    }

    /// Ends the session once the child has exited: its start log is removed.
    pub(crate) fn close(self) {
        if let Some(log) = self.start_log {
            log.remove();
        }
    }

    fn send(&self, message: &Down) -> bool {
        match encode_head(message) {
            Ok(head) => self.outbox.send(Outgoing::new(head, Vec::new())).is_ok(),
            Err(_) => false,
        }
    }

    fn lock_replies(&self) -> MutexGuard<'_, HashMap<u64, R>> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R> SessionReader<R> {
    /// The next thing the child sent; `Ok(None)` at a clean end of the connection (the child
    /// exited, or is about to). Log records are re-emitted here, not returned.
    ///
    /// # Errors
    /// As `FrameReader::read_message`, and `Protocol` for a message that does not decode or is
    /// not for a session (a second `Hello`, an `Attach`).
    ///
    /// # Cancel safety
    /// Cancel-safe: the frame reader keeps what it has read, and nothing after the read awaits.
    /// One task owns the reader and reads it to the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Incoming<R>>> {
        loop {
            let Some(message) = self.reader.read_message().await? else {
                return Ok(None);
            };
            let incoming = match decode_head::<Up>(&message)? {
                (Up::Return { id, outcome }, at) => {
                    let reply = self
                        .replies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    // Keep the message whole and remember where the value starts: no copy.
                    let outcome = outcome.map(|()| (Buffer::from(message), at));
                    Incoming::Returned { id, reply, outcome }
                }
                (Up::Started { id }, _) => Incoming::Started { id },
                (Up::Withdrawn { id, taken }, _) => Incoming::Withdrawn { id, taken },
                (Up::Log(record), _) => {
                    emit_child_log(self.pid, &self.name, &record);
                    continue;
                }
                (Up::Hello { .. } | Up::Attach { .. }, _) => {
                    return Err(Error::Protocol(format!(
                        "child {} sent a greeting in the middle of its session",
                        self.pid
                    )))
                }
            };
            return Ok(Some(incoming));
        }
    }
}
