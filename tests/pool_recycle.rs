//! Workers replaced for memory, crash causes told apart, and stats that add up after a run with
//! crashes, timeouts and recycling.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool};
use std::collections::HashSet;
use std::time::Duration;

/// Past this resident size a worker is replaced.
const LIMIT: u64 = 96 << 20;

/// Returns this worker's pid; for `leak == true` first leaks 128 MiB (touched, so resident).
#[entry]
fn pid_after(leak: bool) -> u32 {
    if leak {
        let mut block = vec![0u8; 128 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::mem::forget(block);
    }
    std::process::id()
}

/// Exits with code `code` (Python's `sys.exit(code)` in a worker), or returns it for 0.
#[entry]
fn exit_with(code: i32) -> i32 {
    if code != 0 {
        std::process::exit(code);
    }
    code
}

/// Naps `ms` milliseconds.
#[entry]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
async fn a_worker_past_its_memory_limit_is_replaced_and_no_task_is_lost() {
    let pool = Pool::builder()
        .processes(2)
        .max_worker_memory(LIMIT)
        .build()
        .await
        .unwrap();
    let first = pool.worker_pids().await.unwrap();
    let leaks = [3, 11];
    let pids: Vec<u32> = pool
        .imap(pid_after, (0..20).map(move |i| leaks.contains(&i)))
        .map(|r| r.expect("no task is lost"))
        .collect()
        .await;
    assert_eq!(pids.len(), 20);
    // Each leak ends its worker before it starts another task.
    let seen: HashSet<u32> = pids.iter().copied().collect();
    assert!(seen.len() >= 3, "new workers took over: {seen:?}");
    let leakers: HashSet<u32> = leaks.iter().map(|&i| pids[i]).collect();
    assert_eq!(leakers.len(), 2, "{pids:?}");
    for &leak in &leaks {
        let after = pids[leak + 1..]
            .iter()
            .filter(|&&p| p == pids[leak])
            .count();
        assert_eq!(after, 0, "items ran on {} after it leaked", pids[leak]);
    }
    let mut now = Vec::new();
    for _ in 0..1000 {
        now = pool.worker_pids().await.unwrap();
        if now.len() == 2 && now.iter().all(|p| !leakers.contains(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        now.iter().all(|p| !leakers.contains(p)),
        "{now:?} {first:?}"
    );
    let stats = pool.stats().await.unwrap();
    assert_eq!(stats.workers_replaced.memory, leakers.len() as u64);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_worker_that_exits_reports_its_code() {
    let pool = Pool::new(1).await.unwrap();
    match pool.apply(exit_with, 3).await {
        Err(Error::WorkerLost {
            exitcode,
            signal,
            oom,
            ..
        }) => {
            assert_eq!(exitcode, Some(3));
            assert_eq!(signal, None);
            assert!(!oom);
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    let message = pool.apply(exit_with, 4).await.unwrap_err().to_string();
    assert!(message.contains("exit code 4"), "{message}");
    assert_eq!(pool.apply(exit_with, 0).await.unwrap(), 0);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn stats_add_up_after_crashes_timeouts_and_recycling() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(7)
        .max_worker_memory(LIMIT)
        .build()
        .await
        .unwrap();
    let values = pool.map(nap, vec![1; 30]).chunksize(1).await.unwrap();
    assert_eq!(values.len(), 30);
    assert!(pool.apply(exit_with, 3).await.is_err());
    let timed_out = pool
        .apply(nap, 60_000)
        .timeout(Duration::from_millis(100))
        .await;
    assert!(matches!(timed_out, Err(Error::Timeout)), "{timed_out:?}");
    assert!(pool.apply(pid_after, true).await.is_ok());
    // A cancelled call: dropped before it could start (one worker is kept busy meanwhile).
    let busy = pool.apply_async(nap, 300);
    let busy2 = pool.apply_async(nap, 300);
    drop(pool.apply_async(nap, 1));
    busy.await.unwrap();
    busy2.await.unwrap();

    let stats = pool.stats().await.unwrap();
    println!("{stats:#?}");
    assert_eq!(
        stats.submitted,
        stats.completed
            + stats.failed
            + stats.cancelled
            + stats.queued as u64
            + stats.in_flight as u64
    );
    assert_eq!(stats.submitted, 30 + 1 + 1 + 1 + 3);
    assert_eq!(stats.failed, 2, "the crash and the timeout");
    assert_eq!(stats.timed_out, 1);
    assert_eq!(
        stats.started,
        stats.completed + stats.failed + stats.running as u64
    );
    let replaced = stats.workers_replaced;
    assert_eq!(replaced.crashed, 1);
    assert_eq!(replaced.timed_out, 1);
    assert_eq!(replaced.memory, 1);
    // 30 tasks at 7 per worker need at least 5 workers: 3 retired for `max_tasks_per_child`.
    assert!(replaced.max_tasks >= 3, "{replaced:?}");
    assert_eq!(stats.workers_started, 2 + replaced.total());
    pool.close();
    pool.join().await.unwrap();
}
