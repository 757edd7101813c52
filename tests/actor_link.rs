//! Links between actors (Erlang's `link`), with real SIGKILLs: an abnormal end of one actor
//! (death, panic, `kill`) kills its linked peer's process, whose own restart policy then
//! applies; a normal `stop` does not propagate, nor does a link that was removed; a link made by
//! a process that has since ended holds; actors spawned by different processes can be linked.
//! Public API only; every actor is checked gone by pid.

use multiprocessing::{actor, entry, ActorExit, Error, Process, Restart, Value};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[actor]
impl Counter {
    pub(crate) fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    pub(crate) fn get(&self) -> u64 {
        self.n
    }

    pub(crate) fn boom(&mut self) -> u64 {
        panic!("boom");
    }
}

/// A second actor type: links join actors of different types.
#[derive(Debug, Serialize, Deserialize)]
struct Sleeper {
    naps: u64,
}

#[actor]
impl Sleeper {
    pub(crate) fn nap(&mut self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.naps += 1;
        self.naps
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) sends nothing; it only asks whether the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

async fn gone(pid: u32) -> bool {
    for _ in 0..400 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn sigkill(pid: u32) {
    // SAFETY: sends SIGKILL to an actor process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

const DIED_BY_SIGKILL: ActorExit = ActorExit::Died {
    exitcode: None,
    signal: Some(libc::SIGKILL),
};

fn on_crash() -> Restart {
    Restart::OnCrash {
        max_restarts: 3,
        within: Duration::from_secs(60),
    }
}

/// Links two actors, in a process that then ends.
#[entry]
async fn link_them(a: CounterRef, b: SleeperRef) {
    a.link(&b).await.expect("link");
}

/// Spawns a sleeper in this process, links it with `a`, says its pid through `pid`, and
/// reports how it ended (this process supervises it, so it must stay alive meanwhile).
#[entry]
async fn spawn_and_link(a: CounterRef, pid: Value<u32>) -> (ActorExit, bool) {
    let b = Sleeper { naps: 0 }.spawn().await.expect("spawn");
    b.link(&a).await.expect("link");
    let b_pid = b.pid().expect("a pid");
    pid.store(b_pid);
    let exit = tokio::time::timeout(Duration::from_secs(20), b.monitor())
        .await
        .expect("the linked actor outlived its peer");
    (exit, gone(b_pid).await)
}

#[multiprocessing::test]
async fn sigkill_of_one_kills_its_linked_peer_and_ends_its_calls() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Sleeper { naps: 0 }.spawn().await.unwrap();
    a.link(&b).await.unwrap();
    let (a_pid, b_pid) = (a.pid().unwrap(), b.pid().unwrap());
    let in_flight = tokio::spawn({
        let b = b.clone();
        async move { b.nap(30_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigkill(a_pid);
    assert!(gone(b_pid).await, "linked actor process {b_pid} survived");
    match in_flight.await.unwrap() {
        Err(Error::ProcessDied { pid, signal, .. }) => {
            assert_eq!(pid, b_pid);
            assert_eq!(signal, Some(libc::SIGKILL));
        }
        other => panic!("expected ProcessDied, got {other:?}"),
    }
    assert_eq!(a.monitor().await, DIED_BY_SIGKILL);
    assert_eq!(b.monitor().await, DIED_BY_SIGKILL);
    assert!(matches!(b.nap(0).await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn a_peer_on_crash_restarts_with_its_spawned_state() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Counter { n: 5 }
        .builder()
        .restart(on_crash())
        .spawn()
        .await
        .unwrap();
    b.link(&a).await.unwrap();
    assert_eq!(b.incr(10).await.unwrap(), 15);
    let b_pid = b.pid().unwrap();
    sigkill(a.pid().unwrap());
    assert!(gone(b_pid).await, "linked actor process {b_pid} survived");
    // A new instance, from the value it was spawned with.
    assert_eq!(b.get().await.unwrap(), 5);
    let again = b.pid().unwrap();
    assert_ne!(again, b_pid);
    assert_eq!(a.monitor().await, DIED_BY_SIGKILL);
    // Its link went with the actor that ended: the new instance serves on.
    assert_eq!(b.incr(1).await.unwrap(), 6);
    assert!(alive(again));
    b.kill().await.unwrap();
    assert!(gone(again).await);
}

#[multiprocessing::test]
async fn a_panic_and_a_kill_propagate_a_stop_does_not() {
    // A panic with no restart left ends the actor abnormally.
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Sleeper { naps: 0 }.spawn().await.unwrap();
    a.link(&b).await.unwrap();
    let b_pid = b.pid().unwrap();
    assert!(a.boom().await.unwrap_err().is_panicked());
    assert!(matches!(a.monitor().await, ActorExit::Panicked { .. }));
    assert!(gone(b_pid).await, "a panic's end did not propagate");

    // `kill` is an abnormal end too.
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let d = Sleeper { naps: 0 }.spawn().await.unwrap();
    d.link(&c).await.unwrap();
    let (c_pid, d_pid) = (c.pid().unwrap(), d.pid().unwrap());
    c.kill().await.unwrap();
    assert!(gone(c_pid).await);
    assert!(gone(d_pid).await, "a kill did not propagate");
    assert_eq!(d.monitor().await, DIED_BY_SIGKILL);

    // `stop` is a normal end: the peer serves on.
    let e = Counter { n: 0 }.spawn().await.unwrap();
    let f = Sleeper { naps: 0 }.spawn().await.unwrap();
    e.link(&f).await.unwrap();
    let (e_pid, f_pid) = (e.pid().unwrap(), f.pid().unwrap());
    assert_eq!(e.stop().await.unwrap().n, 0);
    assert!(gone(e_pid).await);
    // `stop` returns after the supervisor has settled the links.
    assert!(alive(f_pid));
    assert_eq!(f.nap(0).await.unwrap(), 1);
    // And the link went with it: a later end of the peer touches nothing.
    f.kill().await.unwrap();
    assert!(gone(f_pid).await);
}

#[multiprocessing::test]
async fn after_unlink_a_death_leaves_the_peer_serving() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Sleeper { naps: 0 }.spawn().await.unwrap();
    a.link(&b).await.unwrap();
    b.unlink(&a).await.unwrap();
    // Removing a link that is not there is no error.
    a.unlink(&b).await.unwrap();
    let b_pid = b.pid().unwrap();
    sigkill(a.pid().unwrap());
    // The monitor resolves after the supervisor has settled the links.
    assert_eq!(a.monitor().await, DIED_BY_SIGKILL);
    assert!(alive(b_pid));
    assert_eq!(b.nap(0).await.unwrap(), 1);
    b.kill().await.unwrap();
    assert!(gone(b_pid).await);
}

#[multiprocessing::test]
async fn a_link_made_by_a_process_that_ended_holds() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Sleeper { naps: 0 }.spawn().await.unwrap();
    let linker = Process::spawn(link_them, (a.clone(), b.clone()))
        .await
        .unwrap();
    linker.join().await.unwrap();
    assert!(!linker.is_alive());
    let b_pid = b.pid().unwrap();
    sigkill(b_pid);
    assert!(gone(a.pid().unwrap()).await, "the link did not hold");
    assert_eq!(b.monitor().await, DIED_BY_SIGKILL);
    assert_eq!(a.monitor().await, DIED_BY_SIGKILL);
}

#[multiprocessing::test]
async fn actors_spawned_by_different_processes_are_linked() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let pid = Value::new(0u32).unwrap();
    let child = Process::spawn(spawn_and_link, (a.clone(), pid.clone()))
        .await
        .unwrap();
    for _ in 0..2_000 {
        if pid.load() != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_pid = pid.load();
    assert_ne!(b_pid, 0, "the child did not spawn its actor");
    assert!(alive(b_pid));
    sigkill(a.pid().unwrap());
    let (exit, b_gone) = child.join().await.unwrap();
    assert_eq!(exit, DIED_BY_SIGKILL);
    assert!(b_gone);
    assert!(!alive(b_pid));
    assert_eq!(a.monitor().await, DIED_BY_SIGKILL);
}

#[multiprocessing::test]
async fn linking_an_actor_that_ended_is_actor_stopped() {
    let a = Counter { n: 0 }.spawn().await.unwrap();
    let b = Sleeper { naps: 0 }.spawn().await.unwrap();
    let b_pid = b.pid().unwrap();
    a.stop().await.unwrap();
    assert!(matches!(a.link(&b).await, Err(Error::ActorStopped)));
    assert!(matches!(b.link(&a).await, Err(Error::ActorStopped)));
    // Linking an actor with itself is nothing.
    b.link(&b).await.unwrap();
    b.kill().await.unwrap();
    assert!(gone(b_pid).await);
}
