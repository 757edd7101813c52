//! `Event` across processes: a `set` wakes waiters in four processes, `set` racing `wait`
//! 10,000 times never loses a wake-up, and `wait_timeout` keeps its deadline.

mod sync_common;

use multiprocessing::sync::Event;
use multiprocessing::{entry, Error, Process, Value};
use std::time::{Duration, Instant};
use sync_common::{send, send_sync, timer_baseline};

/// Says it is waiting (through `waiting`), then waits for `go`; returns whether `go` came.
#[entry]
async fn wait_for_go(go: Event, waiting: Value<u32>) -> bool {
    waiting.fetch_add(1);
    go.wait_timeout(Duration::from_secs(20)).await.is_ok()
}

#[multiprocessing::test]
async fn a_set_wakes_waiters_in_four_processes() {
    let go = Event::new();
    let waiting = Value::new(0u32).unwrap();
    let mut children = Vec::new();
    for _ in 0..4 {
        let args = (go.clone(), waiting.clone());
        children.push(Process::spawn(wait_for_go, args).await.unwrap());
    }
    let start = Instant::now();
    while waiting.load() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "children never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Give the children time to fall asleep on the word (not needed for correctness).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!go.is_set().await.unwrap());
    go.set().await.unwrap();
    for c in children {
        assert!(
            c.join().await.unwrap(),
            "a waiter timed out: the set did not wake it"
        );
    }
    assert!(go.is_set().await.unwrap());
}

/// The child half of a ping-pong: `rounds` times, wait for `ping`, clear it, set `pong`.
#[entry]
async fn pong_back(ping: Event, pong: Event, rounds: u32) -> multiprocessing::Result<()> {
    for _ in 0..rounds {
        ping.wait_timeout(Duration::from_secs(10)).await?;
        ping.clear().await?;
        pong.set().await?;
    }
    Ok(())
}

#[multiprocessing::test]
async fn set_racing_wait_ten_thousand_times_loses_no_wake_up() {
    let (ping, pong) = (Event::new(), Event::new());
    let rounds = 10_000;
    let child = Process::spawn(pong_back, (ping.clone(), pong.clone(), rounds))
        .await
        .unwrap();
    for i in 0..rounds {
        ping.set().await.unwrap();
        let r = pong.wait_timeout(Duration::from_secs(10)).await;
        assert!(r.is_ok(), "round {i}: the pong was lost ({r:?})");
        pong.clear().await.unwrap();
    }
    child.join().await.unwrap().unwrap();
}

#[multiprocessing::test]
async fn a_set_then_clear_still_wakes_the_waiters_of_that_moment() {
    let ev = Event::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move {
            ev.wait_timeout(Duration::from_secs(10)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    ev.set().await.unwrap();
    ev.clear().await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(!ev.is_set().await.unwrap());
}

#[multiprocessing::test]
async fn wait_timeout_returns_within_50_ms_of_its_deadline() {
    let ev = Event::new();
    // Locate the word first, so the deadline measures the wait alone.
    assert!(!ev.is_set().await.unwrap());
    let start = Instant::now();
    let r = ev.wait_timeout(Duration::from_millis(100)).await;
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    let base = timer_baseline().await;
    assert!(
        waited < base + Duration::from_millis(50),
        "{waited:?} (a plain sleep took {base:?})"
    );
    // A dropped wait left nothing behind: a set is seen at once.
    ev.set().await.unwrap();
    ev.wait_timeout(Duration::from_millis(1)).await.unwrap();
}

#[test]
fn events_and_their_futures_are_send() {
    send_sync::<Event>();
    let ev = Event::new();
    send(&ev.wait());
    send(&ev.set());
    send(&ev.wait_timeout(Duration::from_secs(1)));
}
