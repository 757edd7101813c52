//! A worker's reader: waits on `XREADGROUP … BLOCK` for new tasks while the worker has room
//! for them, and reconnects when Redis goes away.

use super::wire;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// How long one `XREADGROUP` waits on the server before it is asked again.
const BLOCK: Duration = Duration::from_secs(1);
/// How long to wait before connecting again after an error.
pub(super) const BACKOFF: Duration = Duration::from_millis(500);

/// Where the reader reads, as whom.
pub(super) struct Source {
    pub(super) endpoint: wire::Endpoint,
    pub(super) key: String,
    pub(super) consumer: String,
}

/// Reads tasks for as long as `out` is open, as many at a time as `room` has permits. Each task
/// read takes one permit; the worker gives it back once the task is answered.
pub(super) async fn run(
    source: Source,
    room: Arc<Semaphore>,
    out: mpsc::UnboundedSender<Vec<wire::Entry>>,
) {
    let mut con = None;
    while !out.is_closed() {
        // Wait for room, but hold none of it during the read: the claims made meanwhile take
        // theirs from the same room.
        match room.acquire().await {
            Ok(permit) => drop(permit),
            Err(_) => return,
        }
        let count = room.available_permits().clamp(1, 1024);
        let entries = match read(&source, &mut con, count).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(target: "multiprocessing::broker", "reading tasks: {e}; reconnecting");
                con = None;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        // Each task read takes its place in the room (waiting, if claims took it meanwhile).
        match room.acquire_many(entries.len() as u32).await {
            Ok(permits) => permits.forget(),
            Err(_) => return,
        }
        if !entries.is_empty() && out.send(entries).is_err() {
            return;
        }
    }
}

/// One `XREADGROUP` of up to `count` new tasks, connecting (and making the group, which a
/// Redis restarted without persistence has lost) first if need be.
async fn read(
    source: &Source,
    con: &mut Option<redis::aio::MultiplexedConnection>,
    count: usize,
) -> crate::error::Result<Vec<wire::Entry>> {
    if con.is_none() {
        let mut fresh = source.endpoint.connect(Some(BLOCK)).await?;
        wire::ensure_group(&mut fresh, &source.key).await?;
        *con = Some(fresh);
    }
    let Some(c) = con.as_mut() else {
        return Ok(Vec::new());
    };
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(wire::GROUP)
        .arg(&source.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&source.key)
        .arg(">")
        .query_async(c)
        .await;
    match reply {
        Ok(reply) => Ok(wire::stream_entries(reply)),
        Err(e) => Err(wire::broker_error("reading tasks from Redis", e)),
    }
}
