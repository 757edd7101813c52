//! An actor's process SIGKILLed while two client processes have calls in flight (one running,
//! the rest in its mailbox): every call in each client ends, within seconds, with
//! `ProcessDied` naming the actor's pid; none hangs and none returns a value. Public API only.
//!
//! Each client makes one quick call first, so its connection to the actor is up before the
//! calls that matter are made: those are then written to the actor at once. (A call made while
//! its client is still connecting when the actor dies never reached it, and ends with
//! `ActorStopped`.)

use multiprocessing::{actor, entry, Error, Process, Value};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
struct Sleeper {
    naps: u64,
}

#[actor]
impl Sleeper {
    /// Blocks the actor for `ms`, so calls behind it wait in the mailbox.
    pub(crate) fn nap(&mut self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.naps += 1;
        self.naps
    }
}

/// Connects (one quick call), says so through `phase` and waits for the go (`phase` 3); then
/// makes `calls` calls at once, says they are sent, and reports how each ended.
#[entry]
async fn calls_in_flight(sleeper: SleeperRef, calls: usize, phase: Value<u32>) -> Vec<String> {
    sleeper.nap(0).await.expect("a first call");
    phase.fetch_add(1);
    while phase.load() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = phase;
    let pending: Vec<_> = (0..calls).map(|_| sleeper.nap(30_000)).collect();
    let all = futures::future::join_all(pending);
    tokio::pin!(all);
    // Polled once, so each call is on its way before the root hears they are.
    let outcomes = tokio::select! {
        biased;
        outcomes = &mut all => outcomes,
        _ = std::future::ready(()) => {
            sent.fetch_add(1);
            all.await
        }
    };
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Err(Error::ProcessDied { pid, .. }) => format!("died {pid}"),
            other => format!("{other:?}"),
        })
        .collect()
}

async fn until(phase: &Value<u32>, n: u32) {
    let start = Instant::now();
    while phase.load() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "clients stuck before {n}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn a_killed_actor_ends_every_call_in_flight_from_two_processes() {
    let sleeper = Sleeper { naps: 0 }.spawn().await.unwrap();
    let pid = sleeper.pid().unwrap();
    // 0..2: clients connected; 3: go; 5: both clients' calls are on their way.
    let phase = Value::new(0u32).unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let args = (sleeper.clone(), 4, phase.clone());
        clients.push(Process::spawn(calls_in_flight, args).await.unwrap());
    }
    until(&phase, 2).await;
    phase.fetch_add(1);
    until(&phase, 5).await;
    // Time for the calls to reach the actor: one runs, seven wait in its mailbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) on the actor's process, which this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let killed = Instant::now();
    for client in clients {
        let outcomes = tokio::time::timeout(Duration::from_secs(10), client.join())
            .await
            .expect("a client's calls hung after the actor died")
            .unwrap();
        assert_eq!(outcomes, vec![format!("died {pid}"); 4]);
    }
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    assert!(matches!(
        sleeper.nap(1).await,
        Err(Error::ActorStopped | Error::ProcessDied { .. })
    ));
}
