//! `Barrier` across processes: five processes get each index once per round, a SIGKILLed
//! party breaks the barrier for the others, a timed-out wait breaks it, and `abort`, `reset`,
//! `n_waiting` and a dropped wait behave as documented.

mod sync_common;

use multiprocessing::sync::Barrier;
use multiprocessing::{entry, Error, Process};
use std::time::{Duration, Instant};
use sync_common::{send, send_sync, timer_baseline};

/// Waits at the barrier `rounds` times; returns each round's index and leader flag.
#[entry]
async fn rounds_at(barrier: Barrier, rounds: u32) -> multiprocessing::Result<Vec<(u32, bool)>> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        let r = barrier.wait_timeout(Duration::from_secs(20)).await?;
        seen.push((r.index(), r.is_leader()));
    }
    Ok(seen)
}

#[multiprocessing::test]
async fn five_processes_get_each_index_once_per_round() {
    let barrier = Barrier::new(5);
    let rounds = 3;
    let mut children = Vec::new();
    for _ in 0..5 {
        let args = (barrier.clone(), rounds);
        children.push(Process::spawn(rounds_at, args).await.unwrap());
    }
    let mut results = Vec::new();
    for c in children {
        results.push(c.join().await.unwrap().unwrap());
    }
    for round in 0..rounds as usize {
        let mut indices: Vec<u32> = results.iter().map(|r| r[round].0).collect();
        indices.sort_unstable();
        assert_eq!(indices, vec![0, 1, 2, 3, 4], "round {round}");
        let leaders = results.iter().filter(|r| r[round].1).count();
        assert_eq!(leaders, 1, "round {round}");
    }
    assert_eq!(barrier.n_waiting().await.unwrap(), 0);
}

/// Waits once at the barrier; returns whether it heard `BrokenBarrier`.
#[entry]
async fn wait_broken(barrier: Barrier) -> bool {
    matches!(
        barrier.wait_timeout(Duration::from_secs(20)).await,
        Err(Error::BrokenBarrier)
    )
}

async fn until_waiting(barrier: &Barrier, n: u32) {
    let start = Instant::now();
    while barrier.n_waiting().await.unwrap() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the parties never came"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn a_killed_party_breaks_the_barrier_for_the_others() {
    let barrier = Barrier::new(4);
    let doomed = Process::spawn(wait_broken, barrier.clone()).await.unwrap();
    until_waiting(&barrier, 1).await;
    let others = [
        Process::spawn(wait_broken, barrier.clone()).await.unwrap(),
        Process::spawn(wait_broken, barrier.clone()).await.unwrap(),
    ];
    until_waiting(&barrier, 3).await;
    doomed.kill();
    for o in others {
        let broken = tokio::time::timeout(Duration::from_secs(10), o.join())
            .await
            .expect("the others do not hang")
            .unwrap();
        assert!(broken, "a waiter did not hear BrokenBarrier");
    }
    let r = barrier.wait().await;
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    assert!(barrier.is_broken().await.unwrap());
    let joined = doomed.join().await;
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "{joined:?}"
    );
    // Reset makes it whole again.
    barrier.reset().await.unwrap();
    assert!(!barrier.is_broken().await.unwrap());
}

#[multiprocessing::test]
async fn a_timed_out_wait_breaks_it_within_50_ms_of_its_deadline() {
    let barrier = Barrier::new(3);
    let other = {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.wait().await })
    };
    until_waiting(&barrier, 1).await;
    let start = Instant::now();
    let r = barrier.wait_timeout(Duration::from_millis(100)).await;
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    let base = timer_baseline().await;
    assert!(
        waited < base + Duration::from_millis(50),
        "{waited:?} (a plain sleep took {base:?})"
    );
    let theirs = other.await.unwrap();
    assert!(matches!(theirs, Err(Error::BrokenBarrier)), "{theirs:?}");
}

#[multiprocessing::test]
async fn abort_reset_and_a_dropped_wait() {
    let barrier = Barrier::new(2);
    // A dropped wait counts itself out.
    let dropped = {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.wait().await })
    };
    until_waiting(&barrier, 1).await;
    dropped.abort();
    assert!(dropped.await.is_err());
    assert_eq!(barrier.n_waiting().await.unwrap(), 0);
    // Reset sends the waiters of the moment away, and the barrier works afterwards.
    let waiter = {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.wait().await })
    };
    until_waiting(&barrier, 1).await;
    barrier.reset().await.unwrap();
    let r = waiter.await.unwrap();
    assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    let other = {
        let barrier = barrier.clone();
        tokio::spawn(async move { barrier.wait().await })
    };
    let mine = barrier.wait().await.unwrap();
    let theirs = other.await.unwrap().unwrap();
    assert_eq!(mine.index() + theirs.index(), 1);
    // Abort breaks it until the next reset.
    barrier.abort().await.unwrap();
    assert!(matches!(barrier.wait().await, Err(Error::BrokenBarrier)));
    assert_eq!(barrier.n_waiting().await.unwrap(), 0);
    barrier.reset().await.unwrap();
    let lone = Barrier::new(1);
    assert!(lone.wait().await.unwrap().is_leader());
    assert!(matches!(
        Barrier::new(0).wait().await,
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn barriers_and_their_futures_are_send() {
    send_sync::<Barrier>();
    let barrier = Barrier::new(2);
    send(&barrier.wait());
    send(&barrier.wait_timeout(Duration::from_secs(1)));
}
