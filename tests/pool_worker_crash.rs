//! A worker that dies costs only the tasks it had started: they fail with `WorkerLost` (or run
//! again with `.retries(n)`), tasks that had not started go to another worker, the worker is
//! replaced, and nothing hangs, in every call shape.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool};
use std::time::Duration;

const DOOMED: u64 = 13;

fn die() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL ends this worker, which is the point.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL is not caught")
}

/// Dies (SIGKILL) on item 13; squares every other item.
#[entry]
fn square_or_die(x: u64) -> u64 {
    if x == DOOMED {
        die();
    }
    x * x
}

#[entry]
fn abort_on(x: u64) -> u64 {
    if x == DOOMED {
        std::process::abort();
    }
    x
}

#[entry]
fn panic_on_500(x: u64) -> u64 {
    if x == 500 {
        panic!("item 500 is cursed");
    }
    x + 1
}

#[entry]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Dies the first time it runs for a given marker file, succeeds after.
#[entry]
fn die_once(marker: String) -> String {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        die();
    }
    "survived".to_string()
}

/// Appends `i` to `path`, then naps: a visible record of which tasks ran.
#[entry]
fn record(path: String, i: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("record file");
    writeln!(f, "{i}").expect("write record");
    std::thread::sleep(Duration::from_millis(2));
    i
}

fn lost(err: &Error) -> Option<i32> {
    match err {
        Error::WorkerLost { signal, .. } => *signal,
        other => panic!("expected WorkerLost, got {other:?}"),
    }
}

#[multiprocessing::test]
async fn map_fails_with_worker_lost_and_the_pool_goes_on() {
    let pool = Pool::new(2).await.unwrap();
    let before = pool.worker_pids().await.unwrap();
    let err = pool
        .map(square_or_die, 0..100)
        .chunksize(1)
        .await
        .unwrap_err();
    assert_eq!(lost(&err), Some(libc::SIGKILL));
    assert!(err.is_worker_lost());
    // The dead worker was replaced and the pool serves as before.
    let ok = pool
        .map(square_or_die, (0..100).filter(|&x| x != DOOMED))
        .await
        .unwrap();
    assert_eq!(ok.len(), 99);
    // The replacement may still be starting: wait for it (bounded).
    let mut after = pool.worker_pids().await.unwrap();
    for _ in 0..500 {
        if after.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = pool.worker_pids().await.unwrap();
    }
    assert_eq!(after.len(), 2, "the dead worker was replaced");
    assert_ne!(before, after, "a replacement worker has a new pid");
}

#[multiprocessing::test]
async fn imap_fails_only_the_lost_item() {
    let pool = Pool::new(2).await.unwrap();
    for ordered in [true, false] {
        let results: Vec<(u64, Result<u64, Error>)> = if ordered {
            pool.imap(square_or_die, 0..200)
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect()
                .await
        } else {
            // Unordered: recover the item from its value.
            let rs: Vec<_> = pool.imap_unordered(square_or_die, 0..200).collect().await;
            rs.into_iter()
                .map(|r| {
                    (
                        r.as_ref()
                            .map(|v| (*v as f64).sqrt() as u64)
                            .unwrap_or(DOOMED),
                        r,
                    )
                })
                .collect()
        };
        assert_eq!(results.len(), 200);
        let failures: Vec<&(u64, Result<u64, Error>)> =
            results.iter().filter(|(_, r)| r.is_err()).collect();
        assert_eq!(
            failures.len(),
            1,
            "exactly the item whose worker died fails (ordered: {ordered})"
        );
        assert_eq!(failures[0].0, DOOMED);
        assert_eq!(
            lost(failures[0].1.as_ref().unwrap_err()),
            Some(libc::SIGKILL)
        );
        for (i, r) in &results {
            if *i != DOOMED {
                assert_eq!(*r.as_ref().unwrap(), i * i);
            }
        }
    }
}

#[multiprocessing::test]
async fn apply_async_loses_only_the_task_that_was_running() {
    // One worker: the doomed task runs while the others wait in (or are prefetched to) the same
    // worker; they had certainly not started, so they move to the replacement unnoticed.
    let pool = Pool::new(1).await.unwrap();
    let results: Vec<_> = [1, 2, DOOMED, 3, 4, 5]
        .into_iter()
        .map(|x| pool.apply_async(square_or_die, x))
        .collect();
    let outcomes = futures::future::join_all(results).await;
    for (x, outcome) in [1, 2, DOOMED, 3, 4, 5].into_iter().zip(outcomes) {
        if x == DOOMED {
            assert_eq!(lost(&outcome.unwrap_err()), Some(libc::SIGKILL));
        } else {
            assert_eq!(outcome.unwrap(), x * x);
        }
    }
}

#[multiprocessing::test]
async fn external_sigkill_during_imap() {
    let pool = Pool::new(2).await.unwrap();
    let dir = std::env::temp_dir().join(format!("mp-marks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marks = dir.to_string_lossy().into_owned();
    let stream = pool.imap_unordered(mark_then_nap, (0..20).map(move |_| (marks.clone(), 100u64)));
    // Kill the first worker seen inside a task: it is certainly mid-task then.
    let killer = async {
        loop {
            let running = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .find_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
            if let Some(pid) = running {
                // SAFETY: kill(2) on a worker of our own pool.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (results, victim) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), stream.collect::<Vec<_>>()),
        killer
    );
    let _ = std::fs::remove_dir_all(&dir);
    let results = results.expect("nothing hangs");
    assert_eq!(results.len(), 20);
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(
        failed.len(),
        1,
        "the one task running on the killed worker: {failed:?}"
    );
    match failed[0] {
        Error::WorkerLost {
            pid, signal, oom, ..
        } => {
            assert_eq!(*pid, victim);
            assert_eq!(*signal, Some(libc::SIGKILL));
            assert!(!oom, "a SIGKILL from outside is not the OOM killer");
        }
        other => panic!("{other:?}"),
    }
}

/// Leaves a file named after this worker's pid in `dir` (the task has started), then naps.
#[entry]
fn mark_then_nap(dir: String, ms: u64) -> u64 {
    let mark = std::path::Path::new(&dir).join(std::process::id().to_string());
    std::fs::write(&mark, b"").expect("mark file");
    std::thread::sleep(Duration::from_millis(ms));
    let _ = std::fs::remove_file(&mark);
    ms
}

#[multiprocessing::test]
async fn abort_is_worker_lost_with_sigabrt() {
    let pool = Pool::new(2).await.unwrap();
    let r = pool.apply(abort_on, DOOMED).await;
    assert_eq!(lost(&r.unwrap_err()), Some(libc::SIGABRT));
    assert_eq!(pool.apply(abort_on, 1).await.unwrap(), 1);
}

#[multiprocessing::test]
async fn a_panicking_task_among_1000_fails_alone() {
    let pool = Pool::new(2).await.unwrap();
    let results: Vec<Result<u64, Error>> = pool
        .imap(panic_on_500, 0..1000)
        .chunksize(10)
        .collect()
        .await;
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        if i == 500 {
            match r {
                Err(Error::Panicked { message, .. }) => assert_eq!(message, "item 500 is cursed"),
                other => panic!("{other:?}"),
            }
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64 + 1);
        }
    }
    // map reports the failure; the workers survived the panic (same pids).
    let pids = pool.worker_pids().await.unwrap();
    assert!(pool
        .map(panic_on_500, 0..1000)
        .await
        .unwrap_err()
        .is_panicked());
    assert_eq!(pool.worker_pids().await.unwrap(), pids);
}

#[multiprocessing::test]
async fn retries_run_a_lost_task_again() {
    let pool = Pool::new(2).await.unwrap();
    let dir = std::env::temp_dir().join(format!("mp-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = |n: u32| dir.join(format!("m{n}")).to_string_lossy().into_owned();
    assert_eq!(
        pool.apply(die_once, marker(1)).retries(1).await.unwrap(),
        "survived"
    );
    assert!(pool
        .apply(die_once, marker(2))
        .await
        .unwrap_err()
        .is_worker_lost());
    let retried: Vec<String> = pool
        .map(die_once, vec![marker(3), marker(4)])
        .retries(2)
        .await
        .unwrap();
    assert_eq!(retried, vec!["survived", "survived"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[multiprocessing::test]
async fn dropping_an_imap_stream_halfway_stops_the_work() {
    let pool = Pool::new(2).await.unwrap();
    let path = std::env::temp_dir().join(format!("mp-record-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = path.to_string_lossy().into_owned();
    let name = file.clone();
    let mut stream = pool.imap(record, (0..10_000).map(move |i| (name.clone(), i)));
    for _ in 0..20 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    // Tasks run in submission order, so once this one is done every cancelled task would have run.
    assert_eq!(pool.apply(nap, 1).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ran = std::fs::read_to_string(&path).unwrap().lines().count();
    std::fs::remove_file(&path).unwrap();
    assert!(
        ran < 100,
        "{ran} of 10,000 tasks ran after the stream was dropped at 20"
    );

    // Dropping an AsyncResult before it starts cancels it too.
    let blocker = pool.apply_async(nap, 300);
    let blocker2 = pool.apply_async(nap, 300);
    let cancelled = pool.apply_async(record, (file.clone(), 1));
    drop(cancelled);
    blocker.await.unwrap();
    blocker2.await.unwrap();
    assert_eq!(pool.apply(nap, 1).await.unwrap(), 1);
    assert!(!path.exists(), "the dropped task ran");
}
