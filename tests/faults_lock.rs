//! Locks under SIGKILL: the holder dies while three other processes sleep in `acquire` → each
//! of them gets the lock, one after another, within a second; exactly one hears that the lock
//! was poisoned; the protected counter shows no two held it at once. A waiter SIGKILLed in its
//! sleep takes nothing with it: the holder's release goes to a live waiter, unpoisoned.

mod faults_common;

use faults_common::{alive, signal};
use multiprocessing::{entry, Array, Lock, Process, Value};
use std::time::{Duration, Instant};

/// Takes the lock, says so through `holding`, and holds it for `hold_ms` (or until killed).
#[entry]
async fn hold(lock: Lock, holding: Value<u32>, hold_ms: u64) {
    let guard = lock.acquire().await.expect("acquire");
    holding.store(1);
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    drop(guard);
}

/// Says it is about to wait, then waits for the lock; in it, bumps the counter with a plain
/// load and store (a lost update if two held the lock at once), and records in `poisoned[slot]`
/// whether it heard of the death.
#[entry]
async fn wait_and_count(
    lock: Lock,
    waiting: Value<u32>,
    counter: Value<u64>,
    poisoned: Array<u32>,
    slot: usize,
) {
    waiting.fetch_add(1);
    let guard = lock.acquire().await.expect("acquire");
    poisoned.set(slot, 1 + u32::from(guard.is_poisoned()));
    let seen = counter.load();
    tokio::time::sleep(Duration::from_millis(20)).await;
    counter.store(seen + 1);
    drop(guard);
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn a_killed_holder_hands_the_lock_to_three_sleeping_processes_once_poisoned() {
    let lock = Lock::new();
    let holding = Value::new(0u32).unwrap();
    let holder = Process::spawn(hold, (lock.clone(), holding.clone(), 60_000))
        .await
        .unwrap();
    until("the holder took the lock", || holding.load() == 1).await;

    let waiting = Value::new(0u32).unwrap();
    let counter = Value::new(0u64).unwrap();
    let poisoned = Array::<u32>::new(3).unwrap();
    let mut waiters = Vec::new();
    for slot in 0..3 {
        let args = (
            lock.clone(),
            waiting.clone(),
            counter.clone(),
            poisoned.clone(),
            slot,
        );
        waiters.push(Process::spawn(wait_and_count, args).await.unwrap());
    }
    until("three waiters are waiting", || waiting.load() == 3).await;
    // Long enough for each to spin out and sleep on the word.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(poisoned.to_vec(), [0, 0, 0], "nobody got a held lock");

    let killed = Instant::now();
    signal(&[holder.pid()], libc::SIGKILL);
    for w in &waiters {
        tokio::time::timeout(Duration::from_secs(5), w.join())
            .await
            .expect("a waiter hung after the holder died")
            .unwrap();
    }
    let took = killed.elapsed();
    assert!(holder.join().await.is_err());
    let outcomes = poisoned.to_vec();
    assert_eq!(
        outcomes.iter().filter(|&&p| p == 2).count(),
        1,
        "exactly one waiter hears of the death: {outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|&&p| p == 1).count(), 2);
    assert_eq!(counter.load(), 3, "no two waiters held the lock at once");
    // Each holds it for 20 ms after the death is noticed.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let guard = lock.acquire().await.unwrap();
    assert!(!guard.is_poisoned(), "poisoning is reported once");
}

#[multiprocessing::test]
async fn a_waiter_killed_in_its_sleep_takes_nothing_with_it() {
    let lock = Lock::new();
    let guard = lock.acquire().await.unwrap();
    let waiting = Value::new(0u32).unwrap();
    let counter = Value::new(0u64).unwrap();
    let poisoned = Array::<u32>::new(2).unwrap();
    let spawn = |slot: usize| {
        let args = (
            lock.clone(),
            waiting.clone(),
            counter.clone(),
            poisoned.clone(),
            slot,
        );
        Process::spawn(wait_and_count, args)
    };
    let doomed = spawn(0).await.unwrap();
    let survivor = spawn(1).await.unwrap();
    until("two waiters are waiting", || waiting.load() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&[doomed.pid()], libc::SIGKILL);
    assert!(doomed.join().await.is_err());
    assert!(!alive(doomed.pid()));
    drop(guard);
    tokio::time::timeout(Duration::from_secs(5), survivor.join())
        .await
        .expect("the live waiter got the lock")
        .unwrap();
    assert_eq!(
        poisoned.to_vec(),
        [0, 1],
        "the survivor's lock was not poisoned"
    );
    assert_eq!(counter.load(), 1);
}
