//! Per-task timeouts that kill: a task past its `.timeout(d)` fails with `Timeout`, its worker
//! is killed and replaced, and the tasks queued behind it run elsewhere; nothing hangs.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Items of `hang_on` that never finish.
const HANG: [u64; 3] = [10, 50, 90];

/// Leaves a file named after this worker's pid in `dir`, then sleeps forever.
fn mark_then_hang(dir: &str) -> ! {
    let mark = Path::new(dir).join(std::process::id().to_string());
    std::fs::write(mark, b"").expect("mark file");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Never returns (see `mark_then_hang`).
#[entry]
fn stuck(dir: String) {
    mark_then_hang(&dir);
}

/// As `stuck`, deaf to SIGTERM: only the SIGKILL after the grace ends it.
#[entry]
fn stuck_ignoring_sigterm(dir: String) {
    // SAFETY: sets SIGTERM's disposition to "ignore" in this worker, which is the point; no
    // handler runs, so nothing async-signal-unsafe can happen.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    mark_then_hang(&dir);
}

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

/// Doubles `x`, but never returns for the items in `HANG`.
#[entry]
fn hang_on(x: u64) -> u64 {
    while HANG.contains(&x) {
        std::thread::sleep(Duration::from_secs(3600));
    }
    x * 2
}

/// Hangs the first time it runs for `marker` (made then), returns after.
#[entry]
fn hang_once(marker: String) -> String {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    "second time".to_string()
}

/// A directory for this test's marks, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// The pids that left a mark.
    fn marked(&self) -> Vec<u32> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (up to 10 s) until `pid` is neither a worker of `pool` nor a process at all.
async fn gone(pool: &Pool, pid: u32) -> bool {
    for _ in 0..1000 {
        let serving = pool.worker_pids().await.unwrap().contains(&pid);
        if !serving && !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[multiprocessing::test]
async fn a_task_past_its_timeout_fails_and_its_worker_is_replaced() {
    let pool = Pool::new(2).await.unwrap();
    let scratch = Scratch::new("timeout");
    let started = Instant::now();
    let (stuck_task, others) = tokio::join!(
        pool.apply(stuck, scratch.path())
            .timeout(Duration::from_millis(200)),
        pool.map(square, 0..50u64).chunksize(1)
    );
    let took = started.elapsed();
    assert!(matches!(stuck_task, Err(Error::Timeout)), "{stuck_task:?}");
    // About the timeout: not before it, and nowhere near a hang.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        others.unwrap(),
        (0..50u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let victims = scratch.marked();
    assert_eq!(victims.len(), 1, "{victims:?}");
    assert!(gone(&pool, victims[0]).await, "the stuck worker is gone");
    assert_eq!(pool.apply(square, 3).await.unwrap(), 9);
    let mut pids = Vec::new();
    for _ in 0..1000 {
        pids = pool.worker_pids().await.unwrap();
        if pids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pids.len(), 2, "the replacement is up: {pids:?}");
    assert!(!pids.contains(&victims[0]));
    let stats = pool.stats().await.unwrap();
    assert_eq!(stats.timed_out, 1);
    assert_eq!(stats.workers_replaced.timed_out, 1);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn imap_with_a_timeout_returns_the_values_and_a_timeout_for_each_hang() {
    let pool = Pool::new(2).await.unwrap();
    let results: Vec<_> = tokio::time::timeout(
        Duration::from_secs(60),
        pool.imap(hang_on, 0..100u64)
            .timeout(Duration::from_millis(300))
            .collect(),
    )
    .await
    .expect("imap does not hang");
    assert_eq!(results.len(), 100);
    for (x, r) in (0..100u64).zip(&results) {
        if HANG.contains(&x) {
            assert!(matches!(r, Err(Error::Timeout)), "item {x}: {r:?}");
        } else {
            assert_eq!(*r.as_ref().unwrap(), x * 2, "item {x}");
        }
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 97);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_submitted_task_can_be_given_a_timeout() {
    // One worker: the tasks queued behind the stuck one must not wait for it.
    let pool = Pool::new(1).await.unwrap();
    let scratch = Scratch::new("timeout-async");
    let stuck_task = pool
        .apply_async(stuck, scratch.path())
        .timeout(Duration::from_millis(200));
    let behind: Vec<_> = (0..5u64).map(|x| pool.apply_async(square, x)).collect();
    assert!(matches!(stuck_task.await, Err(Error::Timeout)));
    let values = futures::future::try_join_all(behind).await.unwrap();
    assert_eq!(values, vec![0, 1, 4, 9, 16]);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_timeout_after_a_sigterm_grace_and_a_retried_timeout() {
    let pool = Pool::builder()
        .processes(1)
        .kill_grace(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let scratch = Scratch::new("timeout-retry");
    let marker = scratch.0.join("once").to_string_lossy().into_owned();
    let second = pool
        .apply(hang_once, marker)
        .timeout(Duration::from_millis(200))
        .retries(1)
        .retry_timeouts()
        .await;
    assert_eq!(second.unwrap(), "second time");
    let stats = pool.stats().await.unwrap();
    assert_eq!((stats.retried, stats.timed_out), (1, 0));
    assert_eq!(stats.workers_replaced.timed_out, 1);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_worker_deaf_to_sigterm_is_killed_after_the_grace() {
    let pool = Pool::builder()
        .processes(1)
        .kill_grace(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let scratch = Scratch::new("timeout-grace");
    let outcome = pool
        .apply(stuck_ignoring_sigterm, scratch.path())
        .timeout(Duration::from_millis(100))
        .await;
    // The task fails at its deadline; the worker goes at the end of the grace.
    assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    let victims = scratch.marked();
    assert_eq!(victims.len(), 1, "{victims:?}");
    assert!(gone(&pool, victims[0]).await, "SIGKILL followed the grace");
    assert_eq!(pool.apply(square, 4).await.unwrap(), 16);
    pool.close();
    pool.join().await.unwrap();
}

#[entry]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
async fn with_two_tasks_at_once_per_worker_the_other_running_task_is_lost() {
    let pool = Pool::builder()
        .processes(1)
        .concurrency_per_worker(2)
        .build()
        .await
        .unwrap();
    let scratch = Scratch::new("timeout-concurrent");
    let stuck_task = pool
        .apply_async(stuck, scratch.path())
        .timeout(Duration::from_millis(200));
    let neighbour = pool.apply_async(nap, 2_000);
    assert!(matches!(stuck_task.await, Err(Error::Timeout)));
    // It ran beside the stuck task on the killed worker: lost, as for a crash.
    match neighbour.await {
        Err(Error::WorkerLost { signal, .. }) => assert_eq!(signal, Some(libc::SIGKILL)),
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert_eq!(pool.apply(nap, 1).await.unwrap(), 1);
    pool.close();
    pool.join().await.unwrap();
}
