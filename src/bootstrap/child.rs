//! Connect, authenticate, get ready to serve (a spare: be assigned), then serve until the parent
//! says stop or is gone.

use super::call_thread::{CallThread, FirstWork};
use super::server::{ChildServer, Inbound};
use super::spare::SpareStart;
use super::{log_forward, OnReady, EXIT_NO_PARENT, EXIT_PARENT_GONE};
use crate::entry;
use crate::error::{Error, Result};
use crate::protocol::{encode_head, ChildConfig, Up, PROTOCOL_VERSION};
use crate::transport::auth::AuthKey;
use crate::transport::{spawn_shared_writer, Conn, SharedWriter};
use std::path::Path;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Serves the parent until it tells us to stop or goes away; returns the exit code.
///
/// Must run inside a tokio runtime. A call sent with `then_exit` ends serving once its result is
/// on the wire, with exit code 0 (a value) or 1 (a failure); [`EXIT_PARENT_GONE`] means the
/// parent is gone and the process should exit at once.
///
/// `on_ready` runs once the child knows who it is, before any call: at once for an ordinary
/// child, after [`Down::Assign`](crate::protocol::Down::Assign) for a spare (`launch` makes the
/// child's context there, on the spare's call thread). `on_thread_start` runs on the call thread
/// before its first queued call (a spare's call thread that runs its first call directly has
/// its context from `on_ready` instead): `launch` uses it to make the launch context current
/// there too.
///
/// # Cancel safety
/// Not cancel-safe: the session with the parent ends.
pub(crate) async fn serve(
    cfg: ChildConfig,
    on_ready: OnReady,
    on_thread_start: Arc<dyn Fn() + Send + Sync>,
) -> i32 {
    entry::install_panic_hook();
    match start(cfg, on_ready, on_thread_start).await {
        Ok((server, inbound)) => server.run(inbound).await,
        Err(code) => code,
    }
}

/// Everything before the first message is served: the child's context (for a spare, once it is
/// assigned), the connection, the call thread, the outbox and log forwarding. `Err` is the exit
/// code instead.
async fn start(
    mut cfg: ChildConfig,
    on_ready: OnReady,
    on_thread_start: Arc<dyn Fn() + Send + Sync>,
) -> std::result::Result<(ChildServer, Inbound), i32> {
    // An ordinary child knows who it is now; a spare only once it is assigned.
    let mut context = None;
    let spare_ready = if cfg.spare {
        Some(on_ready)
    } else {
        context = Some(on_ready(&cfg));
        if cfg.concurrency != 1 {
            warm_up();
        }
        None
    };
    let Conn { reader, writer } = connect(&cfg).await?;
    let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(writer));
    let (exit_tx, exit) = tokio::sync::mpsc::unbounded_channel::<i32>();
    // One slot: calls run on a thread of their own, straight from a queue. A spare starts that
    // thread before it knows its concurrency (most children have one slot: every `Process`, and
    // pool workers by default), so that it is not on the way of the first call.
    let spawn_thread = |first: Option<FirstWork>| {
        let runtime = Handle::current();
        let (writer, on_start) = (Arc::clone(&writer), Arc::clone(&on_thread_start));
        CallThread::spawn(writer, runtime, exit_tx.clone(), on_start, first)
            .map_err(|_| EXIT_NO_PARENT)
    };
    let (mut thread, mut reader, mut pending, mut outbox) = (None, reader, None, None);
    match spare_ready {
        // A spare's call thread reads its assignment (see `SpareStart`) and hands the reader
        // back. The spare waits here, connected, for as long as it takes to be given an
        // identity; the call thread sets the environment it carries. Sound although this thread
        // is alive: it waits in the runtime meanwhile, with nothing to run, and reads no
        // variable.
        Some(on_ready) => {
            let (spare, handback) =
                SpareStart::new(reader, Arc::clone(&writer), cfg.clone(), on_ready);
            let first: FirstWork = Box::new(move |rt: &Handle| spare.run(rt));
            thread = Some(spawn_thread(Some(first))?);
            let assigned = handback.await.map_err(|_| EXIT_NO_PARENT)?;
            assigned.result?;
            (reader, cfg, context) = (assigned.reader, assigned.cfg, assigned.keep);
            (pending, outbox) = (assigned.pending, assigned.outbox);
            // The context was made on the call thread: make it current here too.
            on_thread_start();
            if cfg.concurrency != 1 {
                thread = None;
                warm_up();
            }
        }
        None if cfg.concurrency == 1 => thread = Some(spawn_thread(None)?),
        None => {}
    }
    let outbox = outbox.unwrap_or_else(|| {
        let parts = spawn_shared_writer(Arc::clone(&writer));
        log_forward::install(parts.0.clone(), cfg.log_level);
        parts
    });
    let server = ChildServer::new(&cfg, thread, outbox, exit_tx, context);
    let inbound = Inbound {
        reader,
        pending,
        exit,
    };
    Ok((server, inbound))
}

/// With more than one slot, sync entries run on the blocking pool. Its first thread starts
/// while we wait for the parent (this task runs once we wait), instead of after the call has
/// arrived; in a spare, once it knows its concurrency (after it has set its environment).
/// Either way the child's context exists before the thread does, so the runtime's thread-start
/// hook makes it current there.
fn warm_up() {
    tokio::spawn(async {
        drop(tokio::task::spawn_blocking(|| {}));
    });
}

/// Connects to the parent and says `Hello`; the exit code if that fails.
async fn connect(cfg: &ChildConfig) -> std::result::Result<Conn, i32> {
    let pid = std::process::id();
    // `Hello` rides with the proof over our token, sent without waiting for the challenge.
    let hello = Up::Hello {
        version: PROTOCOL_VERSION,
        token: cfg.token,
        pid,
    };
    match authenticate(cfg, &hello).await {
        Ok(conn) => Ok(conn),
        // A spare nobody took: its parent is gone or going, and nothing was lost.
        Err(_) if cfg.spare => Err(EXIT_PARENT_GONE),
        Err(e) => {
            eprintln!(
                "multiprocessing: child {pid} ({}) could not reach its parent: {e}",
                cfg.name
            );
            Err(EXIT_NO_PARENT)
        }
    }
}

async fn authenticate(cfg: &ChildConfig, hello: &Up) -> Result<Conn> {
    let key = AuthKey::from_hex(&cfg.key)
        .ok_or_else(|| Error::Authentication("the key in the child marker is malformed".into()))?;
    let hello = encode_head(hello)?;
    let max_frame = crate::transport::frame_limit_u64(cfg.max_frame);
    Conn::connect_with_token(Path::new(&cfg.socket), &key, cfg.token, &hello, max_frame).await
}
