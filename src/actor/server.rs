//! The actor's process: its socket, its mailbox, and the loop that runs one message at a time.
//!
//! The actor runs as an ordinary child entry (registered by `#[actor]` under the type's name)
//! that never returns until the actor ends. It runs on the child's call thread, on a
//! single-threaded runtime of its own that drives the actor's sockets too, so a call crosses
//! no thread in this process (and neither the state nor an async method's future need be
//! `Send`). Each connection's reader puts its client's messages into the bounded mailbox in the
//! order they came, waiting when it is full; the mailbox loop runs them one at a time. A long
//! synchronous method holds up the readers meanwhile, which is only backpressure (and a `Kill`
//! message waits for it: the spawning process kills by signal instead). Counts of connected
//! processes and of references in transit decide when no reference is left.

use super::budget::Budget;
use super::started::StartTable;
use super::wire::{End, FromActor, Init, ToActor};
use super::{Actor, Handled, Hook};
use crate::entry::panic_error;
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_head, decode_value, encode_head};
use crate::start::Context;
use crate::transport::auth::AuthKey;
use crate::transport::frame::{FrameReader, Spin};
use crate::transport::local::RecvHalf;
use crate::transport::socket::{Flavor, Socket};
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use futures::FutureExt;
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a restarted incarnation keeps serving with no client connected: the processes
/// holding references reconnect as soon as they see the previous one die, but a short-lived
/// client whose connection waited in the socket's backlog may be served, and leave, before them.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// Waits until `at` (never, for `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The exit code of an actor process ended by `kill`.
pub(super) const EXIT_KILLED: i32 = 86;

thread_local! {
    static CALLER: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The pid of the process whose call the current actor method is serving (`None` outside a
/// method). The connection's peer credentials say it, so a test can see where a call came from.
pub(crate) fn caller_pid() -> Option<u32> {
    CALLER.with(Cell::get)
}

/// A message for the state, in mailbox order.
enum Job {
    Call {
        id: u64,
        method: u32,
        value: bool,
        message: Vec<u8>,
        at: usize,
        reply: Outbox,
        caller: Option<u32>,
        /// The connection's slot in the start table.
        slot: Option<u32>,
    },
    Stop {
        id: u64,
        reply: Outbox,
    },
}

/// What the readers tell the loop beside the mailbox, never held back by it.
enum Control {
    Connected,
    Disconnected,
    Hold(u32),
    Arrived(u32),
    Detach,
}

/// The entry body of an actor process (see the module docs). Runs on the call thread.
///
/// # Errors
/// `Io` when the listening socket cannot be taken; `Decode` when the state does not decode;
/// `NotLaunched` without a child context.
pub(super) fn run<A: Actor>(init: Init) -> Result<End> {
    // Everything the actor does happens on this one thread, with a runtime of its own: its
    // sockets' readiness, the readers, the mailbox loop, the handlers and the writers. A call
    // then crosses no thread inside the actor's process (a wake-up across CPUs costs tens of
    // microseconds on a small VM, more than the rest of a call).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve::<A>(init))
}

async fn serve<A: Actor>(init: Init) -> Result<End> {
    let fd: OwnedFd = crate::transport::fd::take(&init.listener)?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    // Without a table the actor still serves; a death then fails every unanswered call.
    let starts = listener
        .local_addr()?
        .as_pathname()
        .and_then(|socket| StartTable::create(socket).ok())
        .map(Arc::new);
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let key = Context::current()?.key().clone();
    let mut state: A = decode_value("the actor's state", &init.state)?;
    let (jobs_tx, jobs) = mpsc::channel(init.mailbox as usize);
    let (control_tx, control) = mpsc::unbounded_channel();
    let outboxes = Outboxes::default();
    let acceptor = tokio::spawn(accept(
        listener,
        key,
        (jobs_tx, control_tx),
        Arc::clone(&outboxes),
        starts.clone(),
    ));
    let mut mailbox = Mailbox {
        jobs,
        control,
        budget: Budget::new(init.restart),
        original: init.state,
        connected: 0,
        in_transit: 0,
        ever_connected: false,
        detached: false,
        grace: init
            .restarted
            .then(|| tokio::time::Instant::now() + RECONNECT_GRACE),
        starts,
    };
    let end = mailbox.run(&mut state).await;
    // No new connections from here; calls still queued are refused.
    acceptor.abort();
    mailbox.refuse_the_rest();
    // The last replies (the final state, the refusals) must be on the wire before the process
    // exits with them still queued.
    let all: Vec<Outbox> = lock(&outboxes).clone();
    let flushed = futures::future::join_all(all.iter().map(flush));
    let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
    end
}

/// The sending side of every connection, to flush at the end.
type Outboxes = Arc<Mutex<Vec<Outbox>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn flush(outbox: &Outbox) {
    let (ack, flushed) = tokio::sync::oneshot::channel();
    if outbox.send(Outgoing::flush_marker(ack)).is_ok() {
        let _ = flushed.await;
    }
}

/// Accepts connections and starts a reader for each.
async fn accept(
    listener: tokio::net::UnixListener,
    key: AuthKey,
    (jobs, control): (mpsc::Sender<Job>, mpsc::UnboundedSender<Control>),
    outboxes: Outboxes,
    starts: Option<Arc<StartTable>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let caller = stream.peer_cred().ok().and_then(|c| c.pid());
        let caller = caller.and_then(|p| u32::try_from(p).ok());
        let socket = stream
            .into_std()
            .map(OwnedFd::from)
            .and_then(|fd| Socket::new(fd, Flavor::Local));
        let Ok(socket) = socket else {
            continue;
        };
        let (jobs, control, key) = (jobs.clone(), control.clone(), key.clone());
        let outboxes = Arc::clone(&outboxes);
        let starts = starts.clone();
        tokio::spawn(async move {
            let max_frame = crate::hub::max_frame();
            let Ok((conn, _)) =
                Conn::accept(socket.into_halves(), &key, &|_| false, max_frame).await
            else {
                return;
            };
            let Conn { reader, writer } = conn;
            let (outbox, _writer) = spawn_writer(writer);
            lock(&outboxes).push(outbox.clone());
            let slot = starts.as_ref().and_then(|t| t.take());
            read_client(reader, outbox, (caller, slot), jobs, control).await;
            if let Some((table, slot)) = starts.zip(slot) {
                table.give_back(slot);
            }
        });
    }
}

/// Puts one client's messages into the mailbox, in the order they came.
async fn read_client(
    mut reader: FrameReader<RecvHalf>,
    outbox: Outbox,
    (caller, slot): (Option<u32>, Option<u32>),
    jobs: mpsc::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
) {
    let hello = FromActor::Hello {
        pid: std::process::id(),
        slot,
    };
    if !reply_raw(&outbox, &hello, Vec::new()) {
        return;
    }
    let _ = control.send(Control::Connected);
    let mut spin = Spin::default();
    while let Ok(Some(message)) = reader.read_message_spin(&mut spin).await {
        let Ok((head, at)) = decode_head::<ToActor>(&message) else {
            break;
        };
        let job = match head {
            ToActor::Call { id, method, value } => Job::Call {
                id,
                method,
                value,
                message,
                at,
                reply: outbox.clone(),
                caller,
                slot,
            },
            ToActor::Stop { id } => Job::Stop {
                id,
                reply: outbox.clone(),
            },
            // Ends the process at once: queued calls are dropped with it.
            ToActor::Kill => std::process::exit(EXIT_KILLED),
            ToActor::Detach => {
                let _ = control.send(Control::Detach);
                continue;
            }
            ToActor::Hold(n) => {
                let _ = control.send(Control::Hold(n));
                continue;
            }
            ToActor::Arrived(n) => {
                let _ = control.send(Control::Arrived(n));
                continue;
            }
        };
        // Waits while the mailbox is full: backpressure on this client's connection.
        if let Err(mpsc::error::SendError(job)) = jobs.send(job).await {
            refuse(job);
        }
    }
    let _ = control.send(Control::Disconnected);
}

/// The mailbox loop's state.
struct Mailbox {
    jobs: mpsc::Receiver<Job>,
    control: mpsc::UnboundedReceiver<Control>,
    budget: Budget,
    original: Vec<u8>,
    connected: u64,
    in_transit: i64,
    ever_connected: bool,
    /// After a restart: until then, no reference left is not an end (see `RECONNECT_GRACE`).
    grace: Option<tokio::time::Instant>,
    detached: bool,
    /// Where each connection's started calls are recorded, if the table could be made.
    starts: Option<Arc<StartTable>>,
}

impl Mailbox {
    /// Runs the start hook, then messages until the actor ends.
    async fn run<A: Actor>(&mut self, state: &mut A) -> Result<End> {
        if let Err(panic) = hook(state, Hook::Start).await {
            return Ok(End::Panicked(panic));
        }
        loop {
            tokio::select! {
                biased;
                Some(c) = self.control.recv() => {
                    if self.on_control(c) {
                        return Ok(stopping(state).await.map_or_else(End::Panicked, |()| End::Stopped));
                    }
                }
                () = sleep_until(self.grace), if self.grace.is_some() => {
                    self.grace = None;
                    if self.unreferenced() {
                        return Ok(stopping(state).await.map_or_else(End::Panicked, |()| End::Stopped));
                    }
                }
                job = self.jobs.recv() => match job {
                    Some(Job::Call { id, method, value, message, at, reply, caller, slot }) => {
                        if let (Some(table), Some(slot)) = (&self.starts, slot) {
                            table.started(slot, id);
                        }
                        CALLER.with(|c| c.set(caller));
                        let outcome = handle(state, method, &message[at..]).await;
                        CALLER.with(|c| c.set(None));
                        if let Some(end) = self.settle(state, (id, value, &reply), outcome).await? {
                            return Ok(end);
                        }
                    }
                    Some(Job::Stop { id, reply }) => {
                        let (end, outcome) = match stopping(state).await {
                            Ok(()) => (End::Stopped, crate::protocol::encode_value("the actor's final state", &*state)),
                            Err(panic) => (End::Panicked(panic.clone()), Err(panic.into())),
                        };
                        answer(&reply, id, outcome);
                        return Ok(end);
                    }
                    None => return Ok(stopping(state).await.map_or_else(End::Panicked, |()| End::Stopped)),
                },
            }
        }
    }

    /// Replies, and applies the policy to a panic. `Some` when the actor ends.
    fn after_call<A: Actor>(
        &mut self,
        state: &mut A,
        id: u64,
        value: bool,
        outcome: Result<Vec<u8>>,
        reply: &Outbox,
    ) -> Result<Option<End>> {
        let panicked = match &outcome {
            Err(e @ Error::Panicked { .. }) => Some(RemoteError::from(e)),
            _ => None,
        };
        answer(
            reply,
            id,
            if value {
                outcome
            } else {
                outcome.map(|_| Vec::new())
            },
        );
        let Some(panic) = panicked else {
            return Ok(None);
        };
        if !self.budget.allow() {
            return Ok(Some(End::Panicked(panic)));
        }
        // The state may be half-updated: start again from the value the actor was spawned with.
        *state = decode_value("the actor's state", &self.original)?;
        Ok(None)
    }

    /// As `after_call`, then the new instance's start hook after a restart in place.
    async fn settle<A: Actor>(
        &mut self,
        state: &mut A,
        (id, value, reply): (u64, bool, &Outbox),
        outcome: Result<Vec<u8>>,
    ) -> Result<Option<End>> {
        let restarted = matches!(outcome, Err(Error::Panicked { .. }));
        if let Some(end) = self.after_call(state, id, value, outcome, reply)? {
            return Ok(Some(end));
        }
        if restarted {
            if let Err(panic) = hook(state, Hook::Start).await {
                return Ok(Some(End::Panicked(panic)));
            }
        }
        Ok(None)
    }

    /// Counts a connection or a reference; `true` when no reference is left anywhere.
    fn on_control(&mut self, c: Control) -> bool {
        match c {
            Control::Connected => {
                self.connected += 1;
                self.ever_connected = true;
            }
            Control::Disconnected => self.connected = self.connected.saturating_sub(1),
            Control::Hold(n) => self.in_transit += i64::from(n),
            Control::Arrived(n) => self.in_transit -= i64::from(n),
            Control::Detach => self.detached = true,
        }
        self.grace.is_none() && self.unreferenced()
    }

    /// True when no reference is left anywhere (and the actor is not detached).
    fn unreferenced(&self) -> bool {
        !self.detached && self.ever_connected && self.connected == 0 && self.in_transit <= 0
    }

    /// Answers what is still queued with `ActorStopped`.
    fn refuse_the_rest(&mut self) {
        self.jobs.close();
        while let Ok(job) = self.jobs.try_recv() {
            refuse(job);
        }
    }
}

/// Runs one message on the state; a panic becomes `Panicked`.
async fn handle<A: Actor>(state: &mut A, method: u32, args: &[u8]) -> Result<Vec<u8>> {
    guarded(state, move |s| s.__handle(method, args)).await
}

/// Runs a lifecycle hook (nothing if the type has none); its panic is the error.
async fn hook<A: Actor>(state: &mut A, which: Hook) -> std::result::Result<(), RemoteError> {
    match guarded(state, move |s| s.__hook(which)).await {
        Ok(_) => Ok(()),
        Err(e) => Err(RemoteError::from(e)),
    }
}

/// The stop hook, as the actor ends on its own terms.
async fn stopping<A: Actor>(state: &mut A) -> std::result::Result<(), RemoteError> {
    hook(state, Hook::Stop).await
}

/// Runs what `f` starts on the state, catching a panic in it or in its future.
async fn guarded<'a, A: Actor>(
    state: &'a mut A,
    f: impl FnOnce(&'a mut A) -> Handled<'a>,
) -> Result<Vec<u8>> {
    match std::panic::catch_unwind(AssertUnwindSafe(move || f(state))) {
        Ok(Handled::Done(outcome)) => outcome,
        Ok(Handled::Pending(future)) => AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panic_error(p))),
        Err(p) => Err(panic_error(p)),
    }
}

fn refuse(job: Job) {
    let (Job::Call { id, reply, .. } | Job::Stop { id, reply }) = job;
    answer(&reply, id, Err(Error::ActorStopped));
}

/// Sends the outcome of call `id`.
fn answer(reply: &Outbox, id: u64, outcome: Result<Vec<u8>>) {
    let (outcome, body) = match outcome {
        Ok(body) => (Ok(()), body),
        Err(e) => (Err(RemoteError::from(e)), Vec::new()),
    };
    reply_raw(reply, &FromActor::Reply { id, outcome }, body);
}

fn reply_raw(outbox: &Outbox, message: &FromActor, body: Vec<u8>) -> bool {
    match encode_head(message) {
        Ok(head) => outbox.send(Outgoing::new(head, body)).is_ok(),
        Err(_) => false,
    }
}
