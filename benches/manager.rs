//! `Manager` on the workload of `../shared/bench/bench_mp.py`'s group `manager`: a child sets
//! and gets one key of a manager dict, one request at a time (ops/s, a set and a get counting
//! as two ops, as Python counts them); and the same child with many gets in flight at once,
//! which Python's proxies cannot do (each proxy call blocks its thread until answered); and a
//! child taking and releasing a manager's lock (`ManagerLock`: a round trip per acquire, the
//! release not waited for).
//!
//! `cargo bench --bench manager` (add `-- --quick` for fewer repetitions).

use futures::stream::{self, StreamExt};
use multiprocessing::{entry, process_main, Dict, Manager, ManagerLock, Process};
use std::time::Instant;

/// Warms up, then times `n / 2` set+get pairs of one key; returns the seconds they took. The
/// set is `Dict::set` (Python's `d[k] = v`: sent, not answered), or with `answered` the
/// `Dict::insert` that waits for the value it replaced.
#[entry]
async fn set_get(d: Dict<String, u64>, n: u64, answered: bool) -> f64 {
    let set = |k: String, v: u64| {
        let d = d.clone();
        async move {
            if answered {
                d.insert(k, v).await.map(drop)
            } else {
                d.set(k, v).await
            }
        }
    };
    let key = "k".to_string();
    for i in 0..100 {
        set("w".into(), i).await.expect("set");
        d.get(&"w".into()).await.expect("get");
    }
    let t0 = Instant::now();
    for i in 0..n / 2 {
        set(key.clone(), i).await.expect("set");
        d.get(&key).await.expect("get");
    }
    t0.elapsed().as_secs_f64()
}

/// Times `n` gets with up to `in_flight` of them waiting for their answers at once.
#[entry]
async fn pipelined(d: Dict<String, u64>, n: u64, in_flight: usize) -> f64 {
    let key = "k".to_string();
    d.insert(key.clone(), 1).await.expect("set");
    let t0 = Instant::now();
    let gets = stream::iter(0..n).map(|_| d.get(&key));
    let got: Vec<_> = gets.buffer_unordered(in_flight).collect().await;
    assert!(got.iter().all(|g| matches!(g, Ok(Some(1)))));
    t0.elapsed().as_secs_f64()
}

/// Times `n` acquire+release pairs of an uncontended manager lock.
#[entry]
async fn lock_pairs(lock: ManagerLock, n: u64) -> f64 {
    for _ in 0..100 {
        drop(lock.acquire().await.expect("acquire"));
    }
    let t0 = Instant::now();
    for _ in 0..n {
        drop(lock.acquire().await.expect("acquire"));
    }
    t0.elapsed().as_secs_f64()
}

#[path = "common.rs"]
mod common;

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let reps = common::reps();
    let m = Manager::start().await?;
    let d = m.dict::<String, u64>();
    const N: u64 = 10_000;
    for (case, answered, note) in [
        ("manager_dict_set_get", false, "a child sets (d.set, not answered, as d[k] = v) and gets one key of a manager dict, 10000 ops per rep"),
        ("manager_dict_insert_get", true, "a child inserts (answered with the old value) and gets one key of a manager dict, 10000 ops per rep, one at a time"),
    ] {
        let samples = common::repeat(reps, || async {
            let dt = Process::spawn(set_get, (d.clone(), N, answered))
                .await?
                .join()
                .await?;
            Ok(N as f64 / dt)
        })
        .await?;
        common::emit(case, "ops/s", "higher", samples, note);
    }
    const P: u64 = 100_000;
    let samples = common::repeat(reps, || async {
        let dt = Process::spawn(pipelined, (d.clone(), P, 256))
            .await?
            .join()
            .await?;
        Ok(P as f64 / dt)
    })
    .await?;
    common::emit(
        "manager_dict_get_pipelined",
        "ops/s",
        "higher",
        samples,
        "a child with up to 256 gets of a manager dict in flight at once, 100000 per rep",
    );
    const L: u64 = 10_000;
    let lock = m.lock();
    let samples = common::repeat(reps, || async {
        let dt = Process::spawn(lock_pairs, (lock.clone(), L))
            .await?
            .join()
            .await?;
        Ok(L as f64 / dt)
    })
    .await?;
    common::emit(
        "manager_lock_acquire_release",
        "pairs/s",
        "higher",
        samples,
        "a child takes and releases an uncontended manager lock, 10000 pairs per rep",
    );
    Ok(())
}
