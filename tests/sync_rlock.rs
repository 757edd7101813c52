//! `RLock`: re-entry through the guard, the depth, and that the lock stays held until the
//! outermost level goes, also across `.await` points and as another process sees it; a killed
//! holder leaves it poisoned.

mod sync_common;

use multiprocessing::sync::RLock;
use multiprocessing::{entry, Error, Process, Value};
use std::time::{Duration, Instant};
use sync_common::{send, send_sync};

/// Whether this process could take the lock now.
#[entry]
async fn could_take(lock: RLock) -> bool {
    lock.try_acquire().await.expect("try_acquire").is_some()
}

async fn free_for_another_process(lock: &RLock) -> bool {
    Process::spawn(could_take, lock.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap()
}

#[multiprocessing::test]
async fn reentry_counts_levels_and_holds_until_the_outermost_goes() {
    let lock = RLock::new();
    let outer = lock.acquire().await.unwrap();
    assert_eq!(outer.depth(), 1);
    {
        let second = outer.reenter();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let third = second.reenter();
        assert_eq!((second.depth(), third.depth()), (2, 3));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!free_for_another_process(&lock).await);
        drop(third);
        // Still held at depth 2, after an await.
        tokio::task::yield_now().await;
        assert!(!free_for_another_process(&lock).await);
        assert!(
            lock.try_acquire().await.unwrap().is_none(),
            "another owner waits"
        );
    }
    assert!(
        !free_for_another_process(&lock).await,
        "depth 1 still holds it"
    );
    drop(outer);
    assert!(free_for_another_process(&lock).await);
    let again = lock.try_acquire().await.unwrap().expect("free again");
    assert_eq!(again.depth(), 1);
}

#[multiprocessing::test]
async fn a_guard_moves_between_tasks_with_its_levels() {
    let lock = RLock::new();
    let moved = lock.clone();
    let depth = tokio::spawn(async move {
        let outer = moved.acquire().await.unwrap();
        tokio::task::yield_now().await;
        let inner = outer.reenter();
        tokio::time::sleep(Duration::from_millis(2)).await;
        inner.depth()
    })
    .await
    .unwrap();
    assert_eq!(depth, 2);
    assert!(lock.try_acquire().await.unwrap().is_some());
}

/// Takes the lock two levels deep, says so, and dies of SIGKILL.
#[entry]
async fn hold_deep_and_die(lock: RLock, holding: Value<u32>) {
    let outer = lock.acquire().await.expect("acquire");
    let _inner = outer.reenter();
    holding.store_atomic(1);
    // SAFETY: kill(2) on our own pid: this process dies holding the lock.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[multiprocessing::test]
async fn a_killed_holder_leaves_it_poisoned_not_held() {
    let lock = RLock::new();
    let holding = Value::new(0u32).unwrap();
    let child = Process::spawn(hold_deep_and_die, (lock.clone(), holding.clone()))
        .await
        .unwrap();
    let start = Instant::now();
    while holding.load_atomic() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never held"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let guard = lock.acquire_timeout(Duration::from_secs(2)).await.unwrap();
    assert!(guard.is_poisoned());
    assert!(guard.reenter().is_poisoned());
    drop(guard);
    assert!(!lock.acquire().await.unwrap().is_poisoned());
    let joined = child.join().await;
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "{joined:?}"
    );
}

#[test]
fn rlocks_guards_and_futures_are_send() {
    send_sync::<RLock>();
    send_sync::<multiprocessing::sync::RLockGuard<'static>>();
    let lock = RLock::new();
    send(&lock.acquire());
    send(&lock.try_acquire());
}
