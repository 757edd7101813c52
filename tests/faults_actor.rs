//! An actor's process SIGKILLed while two client processes have calls in flight (one running,
//! the rest in its mailbox): every call in each client ends, within seconds, with
//! `ProcessDied` naming the actor's pid; none hangs and none returns a value. Public API only.
//!
//! Each client makes one quick call first, so its connection to the actor is up before the
//! calls that matter are made: those are then written to the actor at once.
//!
//! A call made while its client process is still connecting when the actor is SIGKILLed never
//! reached it: without a restart it ends `ProcessDied` like the calls in flight; with one it
//! is served by the new instance. Tested with the connection held in the actor's backlog (the
//! actor busy in a long method) and with first calls racing the kill.

use multiprocessing::{actor, entry, Error, Process, Restart, Value};
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

/// Says it is about to call (`phase` + 1), then makes this process's first call to the actor
/// (so it connects) and reports how it ended.
#[entry]
async fn first_call(sleeper: SleeperRef, phase: Value<u32>) -> String {
    phase.fetch_add(1);
    let outcome = tokio::time::timeout(Duration::from_secs(20), sleeper.nap(0))
        .await
        .expect("a first call hung");
    match outcome {
        Ok(naps) => format!("ok {naps}"),
        Err(Error::ProcessDied { pid, signal, .. }) => format!("died {pid} {signal:?}"),
        Err(e) => format!("{e:?}"),
    }
}

/// The actor busy in a 30 s method (so it accepts no connection), and a client process whose
/// first call is connecting: returns the actor, its pid, the busy call and the client.
async fn connecting_client(
    restart: Restart,
) -> (
    SleeperRef,
    u32,
    tokio::task::JoinHandle<multiprocessing::Result<u64>>,
    Process<String>,
) {
    let sleeper = Sleeper { naps: 0 }
        .builder()
        .restart(restart)
        .spawn()
        .await
        .unwrap();
    let pid = sleeper.pid().unwrap();
    let busy = tokio::spawn({
        let sleeper = sleeper.clone();
        async move { sleeper.nap(30_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let phase = Value::new(0u32).unwrap();
    let client = Process::spawn(first_call, (sleeper.clone(), phase.clone()))
        .await
        .unwrap();
    until(&phase, 1).await;
    // Time for the client to connect and wait for the actor's greeting (it said it calls, so
    // this is only its next few microseconds of work, with a wide margin for a loaded machine).
    tokio::time::sleep(Duration::from_secs(1)).await;
    (sleeper, pid, busy, client)
}

#[multiprocessing::test]
async fn a_call_still_connecting_when_the_actor_dies_ends_process_died() {
    let (sleeper, pid, busy, client) = connecting_client(Restart::Never).await;
    // SAFETY: kill(2) on the actor's process, which this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.join())
        .await
        .expect("the connecting call hung")
        .unwrap();
    assert_eq!(outcome, format!("died {pid} Some({})", libc::SIGKILL));
    assert!(matches!(
        busy.await.unwrap(),
        Err(Error::ProcessDied { .. })
    ));
    // A call made after the end is known: the actor has stopped.
    assert!(matches!(sleeper.nap(0).await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn a_call_still_connecting_when_the_actor_dies_goes_to_the_restarted_instance() {
    let restart = Restart::OnCrash {
        max_restarts: 1,
        within: Duration::from_secs(60),
    };
    let (sleeper, pid, busy, client) = connecting_client(restart).await;
    // SAFETY: kill(2) on the actor's process, which this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.join())
        .await
        .expect("the connecting call hung")
        .unwrap();
    // The new instance starts from the spawned state: this is its first nap.
    assert_eq!(outcome, "ok 1");
    assert!(matches!(
        busy.await.unwrap(),
        Err(Error::ProcessDied { .. })
    ));
    assert_ne!(sleeper.pid(), Some(pid));
    sleeper.kill().await.unwrap();
}

#[multiprocessing::test]
async fn first_calls_racing_a_sigkill_end_with_a_value_or_process_died() {
    let restart = Restart::OnCrash {
        max_restarts: 1_000,
        within: Duration::from_secs(60),
    };
    let sleeper = Sleeper { naps: 0 }
        .builder()
        .restart(restart)
        .spawn()
        .await
        .unwrap();
    const ROUNDS: u64 = 48;
    let (mut values, mut died) = (0, 0);
    for round in 0..ROUNDS {
        // Connected to the instance serving now, so its pid is known here.
        sleeper.nap(0).await.unwrap();
        let pid = sleeper.pid().unwrap();
        let phase = Value::new(0u32).unwrap();
        let client = Process::spawn(first_call, (sleeper.clone(), phase.clone()))
            .await
            .unwrap();
        // Yielding, not sleeping: the window is well under a timer tick (and this runtime
        // serves the client meanwhile).
        let start = Instant::now();
        while phase.load() < 1 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the client is stuck"
            );
            tokio::task::yield_now().await;
        }
        // From at once to 1.15 ms after the client said it calls: before, during and after it
        // connects.
        let said = Instant::now();
        while said.elapsed() < Duration::from_micros(50 * (round % 24)) {
            std::hint::spin_loop();
        }
        // SAFETY: kill(2) on the actor's process, which this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let outcome = tokio::time::timeout(Duration::from_secs(10), client.join())
            .await
            .expect("a first call hung")
            .unwrap();
        if outcome.starts_with("ok ") {
            values += 1;
        } else if outcome.starts_with(&format!("died {pid} ")) {
            died += 1;
        } else {
            panic!("round {round}: a first call ended {outcome} while a restart was possible");
        }
    }
    assert_eq!(values + died, ROUNDS);
    eprintln!("first calls racing a SIGKILL: {values} values, {died} ProcessDied");
    sleeper.kill().await.unwrap();
}
