//! The pool's reader of its result stream: one connection that waits on `XREAD BLOCK`, checks
//! each result's signature, and deletes what it read, so the stream holds only results not yet
//! taken. A lost connection is made again ([`super::reconnect`]); the reader goes on after the
//! last result it read, and deletes what it had read and not yet deleted.

use super::wire::{self, ResultMsg, Signer};
use crate::error::Result;
use redis::aio::MultiplexedConnection;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one `XREAD` waits on the server before it is asked again.
const BLOCK: Duration = Duration::from_secs(1);

/// Reads results from `key` and sends each batch (or the error that ended the reading) to the
/// driver, until the driver is gone. While it runs, the stream's key has an expiry of `expire`,
/// renewed at every read, so a pool that dies leaves no key behind for long.
pub(super) async fn run(
    mut con: MultiplexedConnection,
    endpoint: wire::Endpoint,
    key: String,
    signer: Signer,
    expire: Duration,
    out: mpsc::UnboundedSender<Result<Vec<ResultMsg>>>,
) {
    let mut last = "0-0".to_owned();
    let mut read: Vec<String> = Vec::new();
    loop {
        let mut pipe = redis::pipe();
        if !read.is_empty() {
            pipe.cmd("XDEL").arg(&key).arg(&read).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(expire.as_millis() as u64)
            .ignore();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(4096)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last);
        let reply: redis::RedisResult<(redis::Value,)> = pipe.query_async(&mut con).await;
        let entries = match reply {
            Ok((reply,)) => wire::stream_entries(reply),
            Err(e) => {
                let lost = wire::broker_error("reading results from Redis", e);
                match super::reconnect(&endpoint, &key, Some(BLOCK), &lost).await {
                    Ok(fresh) => con = fresh,
                    Err(e) => {
                        let _ = out.send(Err(e));
                        return;
                    }
                }
                // The same read again (`read` is still to be deleted).
                continue;
            }
        };
        read.clear();
        let mut batch = Vec::with_capacity(entries.len());
        for (id, body) in entries {
            let opened = body
                .ok_or_else(|| "an entry without a message".to_owned())
                .and_then(|b| {
                    signer
                        .open::<ResultMsg>("result", &b)
                        .map_err(|e| e.to_string())
                });
            match opened {
                Ok(msg) => batch.push(msg),
                // A forged or foreign entry is dropped: it can neither answer a task nor stop
                // the pool.
                Err(why) => {
                    tracing::warn!(target: "multiprocessing::pool", "ignoring result {id} on {key}: {why}")
                }
            }
            last.clone_from(&id);
            read.push(id);
        }
        if !batch.is_empty() && out.send(Ok(batch)).is_err() {
            return;
        }
        if out.is_closed() {
            return;
        }
    }
}
