//! `Condition` across processes: producer and consumers with `wait_for`, `notify_all` wakes
//! waiters in three processes, a SIGKILLed waiter does not swallow a `notify(1)`, and
//! `wait_timeout` keeps its deadline.

mod sync_common;

use multiprocessing::sync::{Condition, Lock};
use multiprocessing::{entry, Error, Process, Value};
use std::time::{Duration, Instant};
use sync_common::{send, send_sync, timer_baseline};

/// Puts `n` items (counts them in `items`), notifying one consumer each time.
#[entry]
async fn produce(cond: Condition, items: Value<u32>, n: u32) -> multiprocessing::Result<()> {
    for _ in 0..n {
        let guard = cond.acquire().await?;
        items.store(items.load() + 1);
        guard.notify(1);
        drop(guard);
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Takes `n` items, waiting for each with `wait_for`.
#[entry]
async fn consume(cond: Condition, items: Value<u32>, n: u32) -> multiprocessing::Result<u32> {
    let mut taken = 0;
    for _ in 0..n {
        let guard = cond.acquire().await?;
        let (_guard, ok) = guard
            .wait_for_timeout(Duration::from_secs(20), || items.load() > 0)
            .await?;
        if !ok {
            return Err(Error::Timeout);
        }
        items.store(items.load() - 1);
        taken += 1;
    }
    Ok(taken)
}

#[multiprocessing::test]
async fn producer_and_consumers_in_three_processes() {
    let cond = Condition::new();
    let items = Value::new(0u32).unwrap();
    let per_consumer = 500;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let args = (cond.clone(), items.clone(), per_consumer);
        consumers.push(Process::spawn(consume, args).await.unwrap());
    }
    let producer = Process::spawn(produce, (cond.clone(), items.clone(), 2 * per_consumer))
        .await
        .unwrap();
    producer.join().await.unwrap().unwrap();
    for c in consumers {
        assert_eq!(c.join().await.unwrap().unwrap(), per_consumer);
    }
    assert_eq!(items.load_atomic(), 0);
}

/// Says (under the lock) that it is about to wait, then waits for one notification.
#[entry]
async fn wait_once(cond: Condition, waiting: Value<u32>) -> multiprocessing::Result<bool> {
    let guard = cond.acquire().await?;
    waiting.fetch_add(1);
    let (_guard, woken) = guard.wait_timeout(Duration::from_secs(20)).await?;
    Ok(woken)
}

/// Spawns a `wait_once` child and returns once it is waiting (it released the lock in `wait`).
async fn waiting_child(
    cond: &Condition,
    waiting: &Value<u32>,
) -> Process<multiprocessing::Result<bool>> {
    let before = waiting.load_atomic();
    let child = Process::spawn(wait_once, (cond.clone(), waiting.clone()))
        .await
        .unwrap();
    let start = Instant::now();
    while waiting.load_atomic() == before {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never waited"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The child counted itself with the lock held: once we hold it, the child is in `wait`.
    drop(cond.acquire().await.unwrap());
    child
}

#[multiprocessing::test]
async fn notify_all_wakes_waiters_in_three_processes() {
    let cond = Condition::new();
    let waiting = Value::new(0u32).unwrap();
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(waiting_child(&cond, &waiting).await);
    }
    cond.acquire().await.unwrap().notify_all();
    for c in children {
        assert!(c.join().await.unwrap().unwrap(), "a waiter timed out");
    }
}

#[multiprocessing::test]
async fn a_killed_waiter_does_not_swallow_a_notify() {
    let lock = Lock::new();
    let cond = Condition::with_lock(&lock);
    let waiting = Value::new(0u32).unwrap();
    let doomed = waiting_child(&cond, &waiting).await;
    let survivor = waiting_child(&cond, &waiting).await;
    doomed.kill();
    let joined = doomed.join().await;
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "{joined:?}"
    );
    // Holding the lock is holding the condition: the one notify goes to the live waiter.
    let guard = cond.acquire().await.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    guard.notify(1);
    drop(guard);
    let woken = tokio::time::timeout(Duration::from_secs(10), survivor.join())
        .await
        .expect("the live waiter got the notify");
    assert!(woken.unwrap().unwrap());
}

#[multiprocessing::test]
async fn wait_timeout_returns_within_50_ms_of_its_deadline() {
    let cond = Condition::new();
    let guard = cond.acquire().await.unwrap();
    let start = Instant::now();
    let (guard, woken) = guard
        .wait_timeout(Duration::from_millis(100))
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(!woken);
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    let base = timer_baseline().await;
    assert!(
        waited < base + Duration::from_millis(50),
        "{waited:?} (a plain sleep took {base:?})"
    );
    // The lock is held again.
    assert!(!guard.is_poisoned());
    let (_guard, met) = guard
        .wait_for_timeout(Duration::from_millis(20), || false)
        .await
        .unwrap();
    assert!(!met);
}

#[test]
fn conditions_guards_and_futures_are_send() {
    send_sync::<Condition>();
    send_sync::<multiprocessing::sync::ConditionGuard<'static>>();
    let cond = Condition::new();
    send(&cond.acquire());
}
