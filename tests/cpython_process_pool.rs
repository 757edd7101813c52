//! Behaviours checked by CPython's `Lib/test/_test_multiprocessing.py` (`_TestProcess`,
//! `_TestPool`, `_TestPoolWorkerLifetime`), rewritten for this crate's API. The Python suite is
//! under the PSF License; these are independent Rust tests of the same behaviours.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool, Process};
use std::time::Duration;

#[entry]
fn sqr(x: u64) -> u64 {
    x * x
}

#[entry]
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[entry]
fn worker_pid(_: u64) -> u32 {
    std::process::id()
}

/// `_TestProcess.test_process`: before and after join.
#[multiprocessing::test]
async fn test_process() {
    let p = Process::spawn(sleep_ms, 100).await.unwrap();
    assert_eq!(p.exitcode(), None);
    assert!(p.is_alive());
    assert!(multiprocessing::active_children()
        .iter()
        .any(|c| c.pid == p.pid()));
    p.join().await.unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(!multiprocessing::active_children()
        .iter()
        .any(|c| c.pid == p.pid()));
}

/// `_TestProcess.test_many_processes`: start many, terminate half, every exit code is right.
#[multiprocessing::test]
async fn test_many_processes() {
    let n = 40;
    let mut procs = Vec::new();
    for _ in 0..n {
        procs.push(Process::spawn(sleep_ms, 30_000).await.unwrap());
    }
    for p in procs.iter().step_by(2) {
        p.terminate();
    }
    for p in procs.iter().skip(1).step_by(2) {
        p.kill();
    }
    for (i, p) in procs.iter().enumerate() {
        assert!(p.join().await.is_err());
        let expected = if i % 2 == 0 {
            -libc::SIGTERM
        } else {
            -libc::SIGKILL
        };
        assert_eq!(p.exitcode(), Some(expected));
    }
}

/// `_TestPool.test_map_chunksize`-style: every chunk size gives the same result.
#[multiprocessing::test]
async fn test_map_chunksizes() {
    let pool = Pool::new(2).await.unwrap();
    let expected: Vec<u64> = (0..10).map(|x| x * x).collect();
    for chunksize in [1, 2, 3, 7, 10, 100] {
        assert_eq!(
            pool.map(sqr, 0..10).chunksize(chunksize).await.unwrap(),
            expected
        );
        let got: Vec<u64> = pool
            .imap(sqr, 0..10)
            .chunksize(chunksize)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got, expected);
    }
}

/// `_TestPool.test_async_timeout`: a timed-out get leaves the result obtainable later.
#[multiprocessing::test]
async fn test_async_timeout() {
    let pool = Pool::new(2).await.unwrap();
    let mut r = pool.apply_async(sleep_ms, 300);
    assert!(matches!(
        r.get(Duration::from_millis(10)).await,
        Err(Error::Timeout)
    ));
    r.get(Duration::from_secs(10)).await.unwrap();
}

/// `_TestPool.test_make_pool`: a pool of 0 processes is refused.
#[multiprocessing::test]
async fn test_make_pool() {
    assert!(matches!(Pool::new(0).await, Err(Error::InvalidArgument(_))));
    let pool = Pool::new(3).await.unwrap();
    assert_eq!(pool.processes(), 3);
    assert_eq!(pool.worker_pids().await.unwrap().len(), 3);
}

/// `_TestPool.test_terminate`: terminate does not wait for queued work.
#[multiprocessing::test]
async fn test_terminate() {
    let pool = Pool::new(2).await.unwrap();
    let results: Vec<_> = (0..100)
        .map(|_| pool.apply_async(sleep_ms, 1_000))
        .collect();
    let started = std::time::Instant::now();
    pool.terminate().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    for r in results {
        assert!(matches!(r.await, Err(Error::PoolClosed)));
    }
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close`: closing while recycled
/// workers still have work loses nothing.
#[multiprocessing::test]
async fn test_pool_worker_lifetime_early_close() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .build()
        .await
        .unwrap();
    let results: Vec<_> = (0..6u64).map(|i| pool.apply_async(sqr, i)).collect();
    pool.close();
    pool.join().await.unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.await.unwrap(), (i * i) as u64);
    }
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime`: workers are replaced as they retire.
#[multiprocessing::test]
async fn test_pool_worker_lifetime() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(10)
        .build()
        .await
        .unwrap();
    let before = pool.worker_pids().await.unwrap();
    let pids = pool.map(worker_pid, 0..100).chunksize(1).await.unwrap();
    let distinct: std::collections::HashSet<u32> = pids.into_iter().collect();
    assert!(
        distinct.len() >= 10,
        "100 tasks, 10 per worker: {} workers ran them",
        distinct.len()
    );
    assert_ne!(before, pool.worker_pids().await.unwrap());
}
