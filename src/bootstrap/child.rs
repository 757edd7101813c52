//! Connect, authenticate, serve calls, exit when the parent is gone.

use super::call_thread::{self, CallBody, CallQueue, QueuedCall};
use super::start_log::{self, StartReport};
use super::{log_forward, EXIT_NO_PARENT, EXIT_PARENT_GONE};
use crate::entry::{self, Invocation};
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_head, encode_head, ChildConfig, Down, Up, PROTOCOL_VERSION};
use crate::transport::auth::AuthKey;
use crate::transport::frame::FrameReader;
use crate::transport::local::RecvHalf;
use crate::transport::{spawn_shared_writer, Conn, Outbox, Outgoing, SharedWriter};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// A call the child has accepted and not finished.
struct Running {
    abort: AbortHandle,
    /// Set once the call holds its slot and is about to run.
    started: Arc<AtomicBool>,
}

/// Runs once the child knows who it is; returns what keeps its context alive.
pub(crate) type OnReady = Box<dyn FnOnce(&ChildConfig) -> KeepAlive + Send>;
/// Held for as long as the child serves (its context).
pub(crate) type KeepAlive = Box<dyn std::any::Any + Send>;

/// What a spare's call thread hands the runtime thread once it has read its assignment.
struct Assigned {
    reader: FrameReader<RecvHalf>,
    cfg: ChildConfig,
    /// The exit code instead, if there was no assignment to read (or the socket is lost).
    result: std::result::Result<(), i32>,
    keep: Option<KeepAlive>,
    outbox: Option<(Outbox, tokio::task::JoinHandle<()>)>,
    /// A message that came with the assignment and that the call thread did not take.
    pending: Option<Vec<u8>>,
}

/// A spare's first work, done on its call thread: read the assignment there, and take the call
/// that came with it if it is a `Process`'s sync call, so that it starts without waking the
/// runtime thread first (the thread parked in the runtime wakes meanwhile, to take over the
/// connection). The socket is out of the runtime while this thread reads it, so what arrives
/// wakes this thread alone.
struct SpareStart {
    reader: FrameReader<RecvHalf>,
    writer: SharedWriter,
    cfg: ChildConfig,
    on_ready: OnReady,
    handback: tokio::sync::oneshot::Sender<Assigned>,
}

impl SpareStart {
    fn run(self, runtime: &tokio::runtime::Handle) -> Option<QueuedCall> {
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
fn direct_call(message: Vec<u8>) -> std::result::Result<QueuedCall, Vec<u8>> {
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
        Ok(record) if !record.is_async => Ok(QueuedCall {
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

/// Serves the parent until it tells us to stop or goes away; returns the exit code.
///
/// Must run inside a tokio runtime. A call sent with `then_exit` ends serving once its result is
/// on the wire, with exit code 0 (a value) or 1 (a failure); [`EXIT_PARENT_GONE`] means the
/// parent is gone and the process should exit at once.
///
/// `on_ready` runs once the child knows who it is, before any call: at once for an ordinary
/// child, after [`Down::Assign`] for a spare (`launch` makes the child's context there, on the
/// spare's call thread). `on_thread_start` runs first thing on every thread the child starts
/// outside the runtime (the call thread): `launch` uses it to make the launch context current
/// there too.
pub(crate) async fn serve(
    mut cfg: ChildConfig,
    on_ready: OnReady,
    on_thread_start: Arc<dyn Fn() + Send + Sync>,
) -> i32 {
    entry::install_panic_hook();
    // With more than one slot, sync entries run on the blocking pool. Its first thread starts
    // while we wait for the parent (this task runs once we wait), instead of after the call has
    // arrived; in a spare, once it knows its concurrency (after it has set its environment).
    // Either way the child's context exists before the thread does, so the runtime's
    // thread-start hook makes it current there.
    let warm_up = || {
        tokio::spawn(async {
            drop(tokio::task::spawn_blocking(|| {}));
        });
    };
    let mut on_ready = Some(on_ready);
    let mut _keep = None;
    if !cfg.spare {
        if let Some(f) = on_ready.take() {
            _keep = Some(f(&cfg));
        }
        if cfg.concurrency != 1 {
            warm_up();
        }
    }
    let pid = std::process::id();
    // `Hello` rides with the proof over our token, sent without waiting for the challenge.
    let hello = Up::Hello {
        version: PROTOCOL_VERSION,
        token: cfg.token,
        pid,
    };
    let conn = match connect(&cfg, &hello).await {
        Ok(conn) => conn,
        // A spare nobody took: its parent is gone or going, and nothing was lost.
        Err(_) if cfg.spare => return EXIT_PARENT_GONE,
        Err(e) => {
            eprintln!(
                "multiprocessing: child {pid} ({}) could not reach its parent: {e}",
                cfg.name
            );
            return EXIT_NO_PARENT;
        }
    };
    let Conn { reader, writer } = conn;
    let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(writer));
    let (exit_tx, mut exit) = tokio::sync::mpsc::unbounded_channel::<i32>();
    // A spare's call thread reads its assignment (see `SpareStart`); it hands the reader back.
    let (mut reader, start, handback) = match on_ready.take() {
        Some(on_ready) if cfg.spare => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let start = SpareStart {
                reader,
                writer: Arc::clone(&writer),
                cfg: cfg.clone(),
                on_ready,
                handback: tx,
            };
            (None, Some(start), Some(rx))
        }
        _ => (Some(reader), None, None),
    };
    // One slot: calls run on a thread of their own, straight from a queue. A spare starts that
    // thread before it knows its concurrency (most children have one slot: every `Process`, and
    // pool workers by default), so that it is not on the way of the first call.
    let mut queue = if cfg.spare || cfg.concurrency == 1 {
        let queue = Arc::new(CallQueue::default());
        let handle = tokio::runtime::Handle::current();
        let first = start.map(|start| {
            Box::new(move |runtime: &tokio::runtime::Handle| start.run(runtime))
                as call_thread::FirstWork
        });
        if call_thread::spawn(
            Arc::clone(&queue),
            Arc::clone(&writer),
            handle,
            exit_tx.clone(),
            Arc::clone(&on_thread_start),
            first,
        )
        .is_err()
        {
            return EXIT_NO_PARENT;
        }
        Some(queue)
    } else {
        None
    };
    let mut pending = None;
    let mut outbox_parts = None;
    if let Some(handback) = handback {
        // A spare waits here, connected, for as long as it takes to be given an identity; its
        // call thread reads it, and sets the environment it carries. Sound although this thread
        // is alive: it waits in the runtime meanwhile, with nothing to run, and reads no variable.
        let Ok(assigned) = handback.await else {
            return EXIT_NO_PARENT;
        };
        if let Err(code) = assigned.result {
            return code;
        }
        reader = Some(assigned.reader);
        cfg = assigned.cfg;
        _keep = assigned.keep;
        pending = assigned.pending;
        outbox_parts = assigned.outbox;
        // The context was made on the call thread: make it current here too.
        on_thread_start();
        if cfg.concurrency != 1 {
            if let Some(queue) = queue.take() {
                queue.close();
            }
            warm_up();
        }
    }
    let Some(mut reader) = reader else {
        return EXIT_NO_PARENT;
    };
    let (outbox, _writer) = match outbox_parts {
        Some(parts) => parts,
        None => {
            let parts = spawn_shared_writer(Arc::clone(&writer));
            log_forward::install(parts.0.clone(), cfg.log_level);
            parts
        }
    };

    let running: Arc<Mutex<HashMap<u64, Running>>> = Arc::default();
    let permits = match cfg.concurrency {
        0 => None,
        n => Some(Arc::new(Semaphore::new(n as usize))),
    };
    // The reader runs on its own so that the loop below can also hear a finished `then_exit`
    // call; both channels are cancel-safe to select on.
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    if let Some(message) = pending {
        let _ = messages_tx.send(message);
    }
    tokio::spawn(async move {
        loop {
            match reader.read_message().await {
                Ok(Some(m)) => {
                    if messages_tx.send(m).is_err() {
                        return;
                    }
                }
                // The parent closed or reset the connection: it is gone, nothing to report.
                Ok(None) | Err(Error::Io(_)) => return,
                Err(e) => {
                    eprintln!("multiprocessing: child {pid} dropped its parent connection: {e}");
                    return;
                }
            }
        }
    });
    // Stop the call thread however serving ends.
    struct CloseOnDrop(Option<Arc<CallQueue>>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            if let Some(q) = &self.0 {
                q.close();
            }
        }
    }
    let _close = CloseOnDrop(queue.clone());
    // How many calls with a start report have arrived: the start log counts them in this order.
    let mut reported_calls: u64 = 0;
    loop {
        let message = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => return EXIT_PARENT_GONE,
            },
            Some(code) = exit.recv() => {
                // The call thread wrote its result itself: what went through the outbox
                // before it (log records) must not be lost when we exit.
                let (ack, flushed) = tokio::sync::oneshot::channel();
                if outbox.send(Outgoing::flush_marker(ack)).is_ok() {
                    let _ = flushed.await;
                }
                return code;
            }
        };
        let (down, at) = match decode_head::<Down>(&message) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("multiprocessing: child {pid}: {e}");
                return EXIT_PARENT_GONE;
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
                let record = entry::lookup(&entry);
                let start = report_start.then(|| {
                    reported_calls += 1;
                    match start_log::get(&cfg.run_dir) {
                        Some(log) => StartReport::Log(log, reported_calls),
                        None => StartReport::Message,
                    }
                });
                let mut body = CallBody::Encoded {
                    record,
                    batch,
                    message,
                    at,
                };
                if let Some(queue) = &queue {
                    // A `Process`'s one call (`then_exit`) is decoded here: an async entry then
                    // runs on this thread, which drives its I/O (on the call thread every wake-up
                    // of its I/O would cross threads); a sync one goes to the call thread.
                    if then_exit {
                        body = CallBody::Decoded(body.invocation());
                    }
                    if !matches!(body, CallBody::Decoded(Invocation::Async(_))) {
                        queue.push(QueuedCall {
                            id,
                            start,
                            then_exit,
                            body,
                        });
                        continue;
                    }
                }
                let outbox = outbox.clone();
                let table = Arc::clone(&running);
                let permits = permits.clone();
                let exit_tx = exit_tx.clone();
                let started = Arc::new(AtomicBool::new(false));
                let started_flag = Arc::clone(&started);
                let task = tokio::spawn(async move {
                    // Calls wait here, in arrival order, for one of the child's slots.
                    let _permit = match permits {
                        Some(permits) => permits.acquire_owned().await.ok(),
                        None => None,
                    };
                    // From here on the call counts as started: `Withdraw` no longer takes it.
                    started_flag.store(true, Ordering::Relaxed);
                    // Known to the parent before the call runs: if the call then crashes the
                    // process, the parent knows it had started and does not run it again.
                    if start_log::count(start) {
                        let _ = send_flushed(&outbox, &Up::Started { id }, Vec::new()).await;
                    }
                    // Sync calls run on a blocking thread, so that this thread keeps reading (a
                    // `Withdraw` must be answered while a long call runs) and forwarding logs.
                    let result = execute(body.invocation()).await;
                    super::after_call().await;
                    table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    let (code, outcome, body) = reply(result);
                    if then_exit {
                        let _ = send_flushed(&outbox, &Up::Return { id, outcome }, body).await;
                        let _ = exit_tx.send(code);
                    } else {
                        let _ = send(&outbox, &Up::Return { id, outcome }, body);
                    }
                });
                running.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    id,
                    Running {
                        abort: task.abort_handle(),
                        started,
                    },
                );
            }
            Down::Cancel { id } => {
                // A queued call is dropped; one already running on the call thread finishes.
                if let Some(queue) = &queue {
                    queue.withdraw(id);
                }
                if let Some(task) = running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                {
                    task.abort.abort();
                }
            }
            Down::Withdraw { id } => {
                let taken = match &queue {
                    Some(queue) => queue.withdraw(id),
                    None => {
                        // This runtime has one thread: no call can pass its start while we look.
                        let mut table = running.lock().unwrap_or_else(|p| p.into_inner());
                        match table.get(&id) {
                            Some(r) if !r.started.load(Ordering::Relaxed) => {
                                r.abort.abort();
                                table.remove(&id);
                                true
                            }
                            _ => false,
                        }
                    }
                };
                let _ = send(&outbox, &Up::Withdrawn { id, taken }, Vec::new());
            }
            Down::Shutdown => return 0,
            Down::Assign { .. } => {
                eprintln!("multiprocessing: child {pid} was assigned twice; ignoring it");
            }
        }
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
            let limit = usize::try_from(max_frame).unwrap_or(usize::MAX);
            crate::transport::set_max_frame(limit);
            let limit = crate::transport::max_frame();
            // What we send follows the new limit. What we read may still come in frames of the
            // old one: the parent's writer for this connection was made with the spare.
            let old = usize::try_from(cfg.max_frame).unwrap_or(usize::MAX);
            reader.set_max_frame(limit.max(old));
            writer.lock().await.set_max_frame(limit);
            cfg.max_frame = limit as u64;
            // Run on the spare's call thread: sound although the runtime thread is alive, as it
            // waits with nothing to run and reads no variable (see `serve`).
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

async fn connect(cfg: &ChildConfig, hello: &Up) -> Result<Conn> {
    let key = AuthKey::from_hex(&cfg.key)
        .ok_or_else(|| Error::Authentication("the key in the child marker is malformed".into()))?;
    let hello = encode_head(hello)?;
    Conn::connect_with_token(Path::new(&cfg.socket), &key, cfg.token, &hello).await
}

/// What running a call means: the entry's single or batch form on the arguments in `message`
/// from `at`, or why it cannot run.
pub(super) fn invocation(
    record: Result<&'static entry::EntryRecord>,
    batch: bool,
    message: Vec<u8>,
    at: usize,
) -> Invocation {
    match record {
        Ok(record) if batch => (record.invoke_batch)(entry::BatchArgs { message, at }),
        Ok(record) => {
            let invoked = (record.invoke)(&message[at..]);
            crate::transport::buffers::give(message);
            invoked
        }
        Err(e) => Invocation::Failed(e),
    }
}

/// A call's result as it goes back: exit code for `then_exit` (0 or 1, as Python's after an
/// exception), outcome, and body.
pub(super) fn reply(
    result: Result<Vec<u8>>,
) -> (i32, std::result::Result<(), RemoteError>, Vec<u8>) {
    match result {
        Ok(body) => (0, Ok(()), body),
        Err(e) => (1, Err(RemoteError::from(&e)), Vec::new()),
    }
}

/// Runs a call: a sync entry on the blocking pool, an async one right here.
async fn execute(invocation: Invocation) -> Result<Vec<u8>> {
    match invocation {
        Invocation::Sync(f) => {
            match tokio::task::spawn_blocking(move || entry::run_sync(f)).await {
                Ok(result) => result,
                Err(e) => Err(Error::Protocol(format!("the entry's thread was lost: {e}"))),
            }
        }
        Invocation::Async(fut) => entry::run_async(fut).await,
        Invocation::Failed(e) => Err(e),
    }
}

/// Sends a message and waits until it has been flushed to the OS.
async fn send_flushed(outbox: &Outbox, head: &Up, body: Vec<u8>) -> Result<()> {
    let head = encode_head(head)?;
    let (ack, flushed) = tokio::sync::oneshot::channel();
    outbox
        .send(Outgoing {
            head,
            body: Arc::new(body),
            ack: Some(ack),
            window: None,
        })
        .map_err(|_| Error::Closed)?;
    flushed.await.map_err(|_| Error::Closed)
}

fn send(outbox: &Outbox, head: &Up, body: Vec<u8>) -> Result<()> {
    let head = encode_head(head)?;
    outbox
        .send(Outgoing::new(head, body))
        .map_err(|_| Error::Closed)
}
