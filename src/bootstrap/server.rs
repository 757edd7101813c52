//! [`ChildServer`]: a connected child serving its parent's messages, one handler per kind.
//!
//! The session is the same whoever the parent is (a `Process`, a pool, later an actor's
//! handle): calls by id, each answered with `Return`; `Cancel` and `Withdraw` by id; start
//! reports for calls that ask for one; `Shutdown`. Where a call runs depends on the child's
//! slots: with one, on the call thread (`call_thread`), one after another in arrival order;
//! otherwise as a task (`call_tasks`).

use super::call::{self, Call, CallBody};
use super::call_tasks::CallTasks;
use super::call_thread::CallThread;
use super::start_log::{self, StartReport};
use super::{KeepAlive, EXIT_PARENT_GONE};
use crate::entry::Invocation;
use crate::error::Error;
use crate::protocol::{decode_head, ChildConfig, Down, Up};
use crate::transport::frame::FrameReader;
use crate::transport::local::RecvHalf;
use crate::transport::Outbox;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// What a server listens to.
pub(super) struct Inbound {
    /// The parent's messages.
    pub(super) reader: FrameReader<RecvHalf>,
    /// A message read already (by a spare's call thread), to handle first.
    pub(super) pending: Option<Vec<u8>>,
    /// The exit code once a `then_exit` call's result is on the wire.
    pub(super) exit: UnboundedReceiver<i32>,
}

/// A connected child serving its parent.
pub(super) struct ChildServer {
    /// With one slot: where calls run. Dropping it (with the server) stops the thread.
    thread: Option<CallThread>,
    /// Calls that run as tasks: all of them with several slots; with one, a `Process`'s async
    /// call.
    tasks: CallTasks,
    outbox: Outbox,
    /// The task that writes the outbox.
    _writer: JoinHandle<()>,
    /// The run directory, where the start log is.
    run_dir: String,
    /// How many calls with a start report have arrived: the start log counts them in this
    /// order.
    reported_calls: u64,
    /// The child's context, kept alive while it serves.
    _context: Option<KeepAlive>,
}

impl ChildServer {
    /// A server for the child `cfg` describes, with its call thread if it has one slot, its
    /// outbox (and the task that writes it), where a `then_exit` call task reports the exit code,
    /// and the child's context.
    pub(super) fn new(
        cfg: &ChildConfig,
        thread: Option<CallThread>,
        (outbox, writer): (Outbox, JoinHandle<()>),
        exit: UnboundedSender<i32>,
        context: Option<KeepAlive>,
    ) -> Self {
        ChildServer {
            thread,
            tasks: CallTasks::new(cfg.concurrency, outbox.clone(), exit),
            outbox,
            _writer: writer,
            run_dir: cfg.run_dir.clone(),
            reported_calls: 0,
            _context: context,
        }
    }

    /// Serves until the parent says `Shutdown`, a `then_exit` call has answered, or the parent
    /// is gone; returns the exit code.
    ///
    /// # Cancel safety
    /// Not cancel-safe: the session ends, and calls in flight are lost.
    pub(super) async fn run(mut self, inbound: Inbound) -> i32 {
        let Inbound {
            reader,
            pending,
            mut exit,
        } = inbound;
        let mut messages = spawn_reader(reader, pending);
        loop {
            let message = tokio::select! {
                m = messages.recv() => match m {
                    Some(m) => m,
                    None => return EXIT_PARENT_GONE,
                },
                Some(code) = exit.recv() => {
                    // The call thread wrote its result itself: what went through the outbox
                    // before it (log records) must not be lost when we exit.
                    call::flush(&self.outbox).await;
                    offers_taken(&mut messages).await;
                    return code;
                }
            };
            if let Some(code) = self.handle(message) {
                return code;
            }
        }
    }

    /// Handles one message from the parent; the exit code if serving ends.
    fn handle(&mut self, message: Vec<u8>) -> Option<i32> {
        let (down, at) = match decode_head::<Down>(&message) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("multiprocessing: child {}: {e}", std::process::id());
                return Some(EXIT_PARENT_GONE);
            }
        };
        match down {
            Down::Call {
                id,
                entry,
                then_exit,
                batch,
                report_start,
            } => {
                let body = CallBody::Encoded {
                    record: crate::entry::lookup(&entry),
                    batch,
                    message,
                    at,
                };
                self.on_call(id, body, then_exit, report_start);
            }
            Down::Cancel { id } => self.on_cancel(id),
            Down::Withdraw { id } => self.on_withdraw(id),
            Down::Shutdown => return Some(0),
            Down::Assign { .. } => self.on_assign(),
        }
        None
    }

    /// `Call`: queue it for the call thread, or start it as a task.
    fn on_call(&mut self, id: u64, mut body: CallBody, then_exit: bool, report_start: bool) {
        let start = report_start.then(|| self.next_start_report());
        if let Some(thread) = &self.thread {
            // A `Process`'s one call (`then_exit`) is decoded here: an async entry then runs
            // on this thread, which drives its I/O (on the call thread every wake-up of its I/O
            // would cross threads); a sync one goes to the call thread.
            if then_exit {
                body = CallBody::Decoded(body.invocation());
            }
            if !matches!(body, CallBody::Decoded(Invocation::Async(_))) {
                thread.push(Call {
                    id,
                    start,
                    then_exit,
                    body,
                });
                return;
            }
        }
        self.tasks.start(Call {
            id,
            start,
            then_exit,
            body,
        });
    }

    /// How the next call with a start report reports it.
    fn next_start_report(&mut self) -> StartReport {
        self.reported_calls += 1;
        match start_log::get(&self.run_dir) {
            Some(log) => StartReport::Log(log, self.reported_calls),
            None => StartReport::Message,
        }
    }

    /// `Cancel`: a queued call is dropped; one already running on the call thread finishes; a
    /// task is aborted.
    fn on_cancel(&mut self, id: u64) {
        if let Some(thread) = &self.thread {
            thread.withdraw(id);
        }
        self.tasks.cancel(id);
    }

    /// `Withdraw`: give the call back if it has not started, and say whether it was.
    fn on_withdraw(&mut self, id: u64) {
        let taken = match &self.thread {
            Some(thread) => thread.withdraw(id),
            None => self.tasks.withdraw(id),
        };
        let _ = call::send(&self.outbox, &Up::Withdrawn { id, taken }, Vec::new());
    }

    /// `Assign` after the first: a parent's mistake, not worth ending the child for.
    fn on_assign(&mut self) {
        eprintln!(
            "multiprocessing: child {} was assigned twice; ignoring it",
            std::process::id()
        );
    }
}

/// Longest a child that answered its last call waits for the descriptors it offered (the
/// shared memory a `Process`'s value carries) to be taken before it exits.
const OFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until every descriptor this process offered has been taken (the parent takes those
/// of the value it got as it decodes it; a queue's consumer, those of an item), the parent is
/// gone, or [`OFFER_WAIT`] has passed. Returns at once when nothing was offered, which is the
/// usual case.
async fn offers_taken(messages: &mut UnboundedReceiver<Vec<u8>>) {
    let deadline = tokio::time::Instant::now() + OFFER_WAIT;
    let mut nap = std::time::Duration::from_micros(200);
    while crate::transport::fd::pending_offers() > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            // Nothing the parent says matters any more; its going away ends the wait.
            m = messages.recv() => if m.is_none() { return },
            _ = tokio::time::sleep(nap) => nap = (nap * 2).min(std::time::Duration::from_millis(20)),
        }
    }
}

/// Reads the parent's messages on a task of their own (after `pending`), so that the server can
/// also hear a finished `then_exit` call; both channels are cancel-safe to select on. The
/// channel ends when the parent is gone.
fn spawn_reader(
    mut reader: FrameReader<RecvHalf>,
    pending: Option<Vec<u8>>,
) -> UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if let Some(message) = pending {
        let _ = tx.send(message);
    }
    tokio::spawn(async move {
        loop {
            match reader.read_message().await {
                Ok(Some(m)) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                // The parent closed or reset the connection: it is gone, nothing to report.
                Ok(None) | Err(Error::Io(_)) => return,
                Err(e) => {
                    eprintln!(
                        "multiprocessing: child {} dropped its parent connection: {e}",
                        std::process::id()
                    );
                    return;
                }
            }
        }
    });
    rx
}
