//! Connect, authenticate, serve calls, exit when the parent is gone.

use super::{log_forward, EXIT_NO_PARENT, EXIT_PARENT_GONE};
use crate::entry::{self, Invocation};
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_head, encode_head, ChildConfig, Down, Up, PROTOCOL_VERSION};
use crate::transport::auth::AuthKey;
use crate::transport::{spawn_writer, Conn, Outbox, Outgoing};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// Serves the parent until it tells us to stop or goes away; returns the exit code.
///
/// Must run inside a tokio runtime. A call sent with `then_exit` ends the process once its
/// result is on the wire.
pub(crate) async fn serve(cfg: ChildConfig) -> i32 {
    entry::install_panic_hook();
    let pid = std::process::id();
    let conn = match connect(&cfg).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!(
                "multiprocessing: child {pid} ({}) could not reach its parent: {e}",
                cfg.name
            );
            return EXIT_NO_PARENT;
        }
    };
    let Conn { mut reader, writer } = conn;
    let (outbox, _writer) = spawn_writer(writer);
    if send(
        &outbox,
        &Up::Hello {
            version: PROTOCOL_VERSION,
            token: cfg.token,
            pid,
        },
        Vec::new(),
    )
    .is_err()
    {
        return EXIT_PARENT_GONE;
    }
    log_forward::install(outbox.clone(), cfg.log_level);

    let running: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    loop {
        let message = match reader.read_message().await {
            Ok(Some(m)) => m,
            Ok(None) => return EXIT_PARENT_GONE,
            Err(e) => {
                eprintln!("multiprocessing: child {pid} dropped its parent connection: {e}");
                return EXIT_PARENT_GONE;
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
            } => {
                let invocation = match entry::lookup(&entry) {
                    Ok(record) => (record.invoke)(&message[at..]),
                    Err(e) => Invocation::Failed(e),
                };
                drop(message);
                let outbox = outbox.clone();
                let table = Arc::clone(&running);
                let task = tokio::spawn(async move {
                    let result = execute(invocation).await;
                    table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    let code = i32::from(result.is_err());
                    let (outcome, body) = match result {
                        Ok(body) => (Ok(()), body),
                        Err(e) => (Err(RemoteError::from(&e)), Vec::new()),
                    };
                    let head = match encode_head(&Up::Return { id, outcome }) {
                        Ok(h) => h,
                        Err(_) => return,
                    };
                    if then_exit {
                        let (ack, flushed) = tokio::sync::oneshot::channel();
                        if outbox
                            .send(Outgoing {
                                head,
                                body,
                                ack: Some(ack),
                            })
                            .is_ok()
                        {
                            let _ = flushed.await;
                        }
                        let _ = std::io::stdout().flush();
                        let _ = std::io::stderr().flush();
                        std::process::exit(code);
                    } else {
                        let _ = outbox.send(Outgoing {
                            head,
                            body,
                            ack: None,
                        });
                    }
                });
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, task.abort_handle());
            }
            Down::Cancel { id } => {
                if let Some(task) = running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                {
                    task.abort();
                }
            }
            Down::Shutdown => return 0,
        }
    }
}

async fn connect(cfg: &ChildConfig) -> Result<Conn> {
    let key = AuthKey::from_hex(&cfg.key)
        .ok_or_else(|| Error::Authentication("the key in the child marker is malformed".into()))?;
    Conn::connect(Path::new(&cfg.socket), &key).await
}

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

fn send(outbox: &Outbox, head: &Up, body: Vec<u8>) -> Result<()> {
    let head = encode_head(head)?;
    outbox
        .send(Outgoing {
            head,
            body,
            ack: None,
        })
        .map_err(|_| Error::Closed)
}
