//! `Lock` across processes: mutual exclusion under contention, a SIGKILLed holder releases the
//! lock as poisoned, `acquire_timeout` keeps its deadline while another process holds the lock,
//! and a dropped acquire loses nothing.

use multiprocessing::sync::Lock;
use multiprocessing::{entry, Error, Process, Value};
use std::time::{Duration, Instant};

/// `n` increments of a plain load/store counter, each under the lock.
#[entry]
async fn increment_locked(lock: Lock, counter: Value<u64>, n: u32) {
    for _ in 0..n {
        let _guard = lock.acquire().await.expect("acquire");
        let v = counter.load();
        // Widen the window in which an unlocked increment would be lost.
        std::hint::spin_loop();
        counter.store(v + 1);
    }
}

#[multiprocessing::test]
async fn eight_processes_exclude_each_other() {
    let lock = Lock::new();
    let counter = Value::new(0u64).unwrap();
    let mut children = Vec::new();
    for _ in 0..8 {
        let args = (lock.clone(), counter.clone(), 1_000);
        children.push(Process::spawn(increment_locked, args).await.unwrap());
    }
    for c in children {
        c.join().await.unwrap();
    }
    assert_eq!(counter.load(), 8_000);
}

/// Takes the lock, says so through `holding`, then holds it until killed or `hold` runs out.
#[entry]
async fn hold_then(lock: Lock, holding: Value<u32>, hold_ms: u64, die: bool) {
    let guard = lock.acquire().await.expect("acquire");
    holding.store(1);
    if die {
        // SAFETY: kill(2) on our own pid: this process dies holding the lock.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    drop(guard);
}

async fn wait_for(flag: &Value<u32>) {
    let start = Instant::now();
    while flag.load() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn a_killed_holder_leaves_the_lock_poisoned_not_held() {
    let lock = Lock::new();
    let holding = Value::new(0u32).unwrap();
    let child = Process::spawn(hold_then, (lock.clone(), holding.clone(), 60_000, true))
        .await
        .unwrap();
    wait_for(&holding).await;
    let guard = lock
        .acquire_timeout(Duration::from_secs(1))
        .await
        .expect("the dead holder's lock is released within a second");
    assert!(guard.is_poisoned());
    drop(guard);
    // Poisoning is reported once.
    let again = lock.acquire().await.unwrap();
    assert!(!again.is_poisoned());
    let joined = child.join().await;
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "{joined:?}"
    );
}

#[multiprocessing::test]
async fn acquire_timeout_keeps_its_deadline_while_another_process_holds() {
    let lock = Lock::new();
    let holding = Value::new(0u32).unwrap();
    let child = Process::spawn(hold_then, (lock.clone(), holding.clone(), 2_000, false))
        .await
        .unwrap();
    wait_for(&holding).await;
    let start = Instant::now();
    let r = lock.acquire_timeout(Duration::from_millis(200)).await;
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    assert!(lock.try_acquire().await.unwrap().is_none());
    // Once the holder lets go, a plain acquire gets the lock (woken, not polling).
    let guard = lock.acquire().await.unwrap();
    assert!(!guard.is_poisoned());
    drop(guard);
    child.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_dropped_acquire_takes_nothing() {
    let lock = Lock::new();
    let guard = lock.acquire().await.unwrap();
    let waiting = lock.clone();
    let task = tokio::spawn(async move { waiting.acquire().await.map(drop) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    assert!(task.await.is_err());
    drop(guard);
    let _g = lock
        .try_acquire()
        .await
        .unwrap()
        .expect("the aborted acquire took nothing");
}

#[multiprocessing::test]
async fn tasks_of_one_process_exclude_each_other() {
    let lock = Lock::new();
    let counter = Value::new(0u64).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (lock, counter) = (lock.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                let _g = lock.acquire().await.unwrap();
                let v = counter.load();
                tokio::task::yield_now().await;
                counter.store(v + 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counter.load(), 2_000);
}

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn locks_guards_and_their_futures_are_send() {
    send_sync::<Lock>();
    send_sync::<multiprocessing::sync::LockGuard<'static>>();
    let lock = Lock::new();
    // Built, never polled: only their types matter here.
    send(&lock.acquire());
    send(&lock.acquire_timeout(Duration::from_secs(1)));
    send(&lock.try_acquire());
}
