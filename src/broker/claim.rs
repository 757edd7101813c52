//! Visibility: a worker renews the tasks it holds, and claims those of workers gone silent.
//!
//! Redis counts how long each pending task has been idle (since its last delivery or claim).
//! A live worker resets that count for its own tasks by claiming them for itself
//! (`XCLAIM … JUSTID`, which delivers nothing), three times per visibility timeout. A task idle
//! for longer than the timeout therefore belongs to a worker that died or lost Redis: it is
//! found with `XPENDING … IDLE` (which, unlike `XAUTOCLAIM`, says whose it was and how often it
//! was delivered) and taken over with `XCLAIM`, which checks the idle time again so that two
//! workers claiming at once do not both get it.

use super::wire;
use super::worker::{Lost, Worker};
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

/// At most this many tasks are claimed per round.
const CLAIM_BATCH: usize = 64;

impl Worker {
    /// Resets the idle time of the tasks this worker holds.
    pub(super) async fn renew(&mut self) {
        if self.held.is_empty() {
            return;
        }
        // Only tasks idle for a quarter of the timeout: one taken over by another worker since
        // (its idle time reset by that claim) stays with it.
        let min_idle = self.claim.as_millis() as u64 / 4;
        let ids: Vec<&String> = self.held.keys().collect();
        let renewed: redis::RedisResult<Value> = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(wire::GROUP)
            .arg(&self.consumer)
            .arg(min_idle)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut self.con)
            .await;
        if let Err(e) = renewed {
            tracing::warn!(target: "multiprocessing::broker", "renewing held tasks: {e}; reconnecting");
            self.reconnect().await;
        }
    }

    /// Takes over the tasks of workers that have been silent for the visibility timeout.
    pub(super) async fn claim_stale(&mut self) {
        let room = self.room.available_permits().min(CLAIM_BATCH);
        if room == 0 {
            return;
        }
        let configured: redis::RedisResult<Option<u64>> = redis::cmd("GET")
            .arg(&self.claim_key)
            .query_async(&mut self.con)
            .await;
        if let Ok(Some(ms)) = configured {
            self.claim = Duration::from_millis(ms.max(300));
        }
        let idle = self.claim.as_millis() as u64;
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(&self.key)
            .arg(wire::GROUP)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(room)
            .query_async(&mut self.con)
            .await;
        // Another worker's tasks, and this one's that it does not hold: delivered to it by a
        // read whose reply Redis never sent (it was killed meanwhile), so they never ran here.
        let stale: HashMap<String, Lost> = match pending {
            Ok(reply) => parse_pending(reply)
                .into_iter()
                .filter(|(id, lost)| lost.consumer != self.consumer || !self.held.contains_key(id))
                .collect(),
            Err(e) => {
                tracing::warn!(target: "multiprocessing::broker", "looking for stale tasks: {e}; reconnecting");
                return self.reconnect().await;
            }
        };
        if stale.is_empty() {
            return;
        }
        let Ok(permits) = self.room.try_acquire_many(stale.len() as u32) else {
            return;
        };
        permits.forget();
        let ids: Vec<&String> = stale.keys().collect();
        let claimed: redis::RedisResult<Value> = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(wire::GROUP)
            .arg(&self.consumer)
            .arg(idle)
            .arg(&ids)
            .query_async(&mut self.con)
            .await;
        let entries = match claimed {
            Ok(reply) => wire::stream_entries(reply),
            Err(e) => {
                self.room.add_permits(stale.len());
                tracing::warn!(target: "multiprocessing::broker", "claiming stale tasks: {e}");
                return;
            }
        };
        self.room
            .add_permits(stale.len().saturating_sub(entries.len()));
        let mut stale = stale;
        for (entry, body) in entries {
            // A task of its own that never ran here is no retry.
            let lost = stale
                .remove(&entry)
                .filter(|lost| lost.consumer != self.consumer);
            tracing::info!(target: "multiprocessing::broker", "claimed task {entry} from {}", lost.as_ref().map_or("?", |l| l.consumer.as_str()));
            self.take(entry, body, lost);
        }
    }
}

/// `XPENDING`'s extended reply: `[[id, consumer, idle, deliveries], ...]`.
fn parse_pending(reply: Value) -> Vec<(String, Lost)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(fields) = item else {
                return None;
            };
            let id = wire::text(fields.first()?)?;
            let consumer = wire::text(fields.get(1)?)?;
            let deliveries = match fields.get(3)? {
                Value::Int(n) => u32::try_from(*n).ok()?,
                other => wire::text(other)?.parse().ok()?,
            };
            Some((
                id,
                Lost {
                    consumer,
                    deliveries,
                },
            ))
        })
        .collect()
}
