//! `Semaphore` and `BoundedSemaphore` across processes: never more holders than permits under
//! eight processes, a bounded release past its bound is an error, permits held by a SIGKILLed
//! process come back (and the next permit says so), and `acquire_timeout` keeps its deadline.

mod sync_common;

use multiprocessing::sync::{BoundedSemaphore, Semaphore};
use multiprocessing::{entry, Error, Process, Value};
use std::time::{Duration, Instant};
use sync_common::{send, send_sync, timer_baseline};

/// `rounds` times: take a permit, count itself in `inside`, raise `high` to the count seen,
/// let others run, count itself out.
#[entry]
async fn crowd(sem: Semaphore, inside: Value<u32>, high: Value<u32>, rounds: u32) {
    for _ in 0..rounds {
        let _permit = sem.acquire().await.expect("acquire");
        let now = inside.fetch_add(1) + 1;
        let mut seen = high.load_atomic();
        while now > seen {
            match high.compare_exchange(seen, now) {
                Ok(_) => break,
                Err(current) => seen = current,
            }
        }
        tokio::task::yield_now().await;
        inside.fetch_sub(1);
    }
}

#[multiprocessing::test]
async fn a_semaphore_of_three_admits_at_most_three_of_eight_processes() {
    let sem = Semaphore::new(3);
    let inside = Value::new(0u32).unwrap();
    let high = Value::new(0u32).unwrap();
    let mut children = Vec::new();
    for _ in 0..8 {
        let args = (sem.clone(), inside.clone(), high.clone(), 300);
        children.push(Process::spawn(crowd, args).await.unwrap());
    }
    for c in children {
        c.join().await.unwrap();
    }
    let high = high.load_atomic();
    assert!((1..=3).contains(&high), "{high} holders at once");
    assert_eq!(inside.load_atomic(), 0);
    assert_eq!(sem.value().await.unwrap(), 3, "every permit came back");
}

#[multiprocessing::test]
async fn a_bounded_release_past_its_bound_is_an_error() {
    let sem = BoundedSemaphore::new(2);
    let r = sem.release().await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    sem.acquire().await.unwrap().forget();
    assert_eq!(sem.value().await.unwrap(), 1);
    sem.release().await.unwrap();
    assert_eq!(sem.value().await.unwrap(), 2);
    assert!(sem.release().await.is_err());
    // A plain semaphore raises its count instead, as Python's does.
    let plain = Semaphore::new(0);
    plain.release().await.unwrap();
    assert_eq!(plain.value().await.unwrap(), 1);
    let _p = plain
        .try_acquire()
        .await
        .unwrap()
        .expect("the released permit");
    assert!(plain.try_acquire().await.unwrap().is_none());
}

/// Takes `n` permits, says so through `holding`, then dies of SIGKILL holding them.
#[entry]
async fn take_and_die(sem: Semaphore, n: u32, holding: Value<u32>) {
    let mut permits = Vec::new();
    for _ in 0..n {
        permits.push(sem.acquire().await.expect("acquire"));
    }
    holding.store_atomic(1);
    // SAFETY: kill(2) on our own pid: this process dies holding the permits.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    drop(permits);
}

async fn wait_for(flag: &Value<u32>) {
    let start = Instant::now();
    while flag.load_atomic() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never held"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn permits_of_a_killed_holder_come_back_poisoned() {
    let sem = Semaphore::new(3);
    let holding = Value::new(0u32).unwrap();
    let child = Process::spawn(take_and_die, (sem.clone(), 2, holding.clone()))
        .await
        .unwrap();
    wait_for(&holding).await;
    let first = sem.acquire().await.unwrap();
    // The third permit was free all along; the other two come back with the death, waking
    // this waiter.
    let second = sem
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect("the dead holder's permits come back");
    let third = sem.acquire_timeout(Duration::from_secs(2)).await.unwrap();
    assert!(
        [&first, &second, &third].iter().any(|p| p.is_poisoned()),
        "a permit after the death says so"
    );
    assert!(!first.is_poisoned() || !second.is_poisoned(), "said once");
    drop((first, second, third));
    assert_eq!(sem.value().await.unwrap(), 3);
    let joined = child.join().await;
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "{joined:?}"
    );
}

#[multiprocessing::test]
async fn acquire_timeout_returns_within_50_ms_of_its_deadline() {
    let sem = Semaphore::new(1);
    let _held = sem.acquire().await.unwrap();
    let start = Instant::now();
    let r = sem.acquire_timeout(Duration::from_millis(100)).await;
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    let base = timer_baseline().await;
    assert!(
        waited < base + Duration::from_millis(50),
        "{waited:?} (a plain sleep took {base:?})"
    );
    assert_eq!(
        sem.value().await.unwrap(),
        0,
        "the timed-out acquire took nothing"
    );
}

#[multiprocessing::test]
async fn tasks_of_one_process_share_the_permits() {
    let sem = Semaphore::new(2);
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (sem, inside) = (sem.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let _p = sem.acquire().await.unwrap();
                let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                assert!(n <= 2, "{n} holders of 2 permits");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sem.value().await.unwrap(), 2);
}

#[test]
fn semaphores_permits_and_futures_are_send() {
    send_sync::<Semaphore>();
    send_sync::<BoundedSemaphore>();
    send_sync::<multiprocessing::sync::SemaphorePermit<'static>>();
    let sem = Semaphore::new(1);
    send(&sem.acquire());
    send(&sem.acquire_timeout(Duration::from_secs(1)));
    send(&sem.release());
}
