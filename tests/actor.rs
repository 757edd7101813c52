//! Process actors: exact counts under concurrent callers in several processes, per-client order,
//! sync and async methods on `&self` and `&mut self`, a bounded mailbox, references that travel
//! (through a queue and an entry) and call the actor directly, stop/kill/drop, panics, SIGKILL
//! with and without a restart policy (the running call fails, the queued ones go to the next
//! instance), and names.

use multiprocessing::{actor, entry, ActorExit, Error, Process, Queue, Restart};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[actor]
impl Counter {
    /// Adds `by`; returns the new count.
    pub(crate) fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    pub(crate) async fn get(&self) -> u64 {
        self.n
    }

    pub(crate) fn peek(&self) -> u64 {
        self.n
    }

    pub(crate) async fn add_later(&mut self, by: u64, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.n += by;
        self.n
    }

    pub(crate) fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.n
    }

    pub(crate) fn boom(&mut self, message: String) -> u64 {
        self.n += 1_000;
        panic!("{message}");
    }

    /// The pid of the process serving this actor, and the pid of the caller.
    pub(crate) fn whoami(&self) -> (u32, Option<u32>) {
        (
            std::process::id(),
            multiprocessing::__private::testing::actor_caller_pid(),
        )
    }

    #[actor(skip)]
    pub(crate) fn not_a_message(&self) -> u64 {
        self.helper()
    }

    fn helper(&self) -> u64 {
        self.n
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Log {
    seen: Vec<(u32, u64)>,
}

#[actor]
impl Log {
    pub(crate) fn push(&mut self, client: u32, seq: u64) {
        self.seen.push((client, seq));
    }
}

/// Counts its starts; on stop, marks its state and (if given a path) leaves a file there.
#[derive(Debug, Serialize, Deserialize)]
struct Hooked {
    starts: u32,
    stopped: bool,
    marker: Option<std::path::PathBuf>,
}

#[actor]
impl Hooked {
    #[actor(on_start)]
    fn started(&mut self) {
        self.starts += 1;
    }

    #[actor(on_stop)]
    async fn stopping(&mut self) {
        self.stopped = true;
        if let Some(path) = &self.marker {
            std::fs::write(path, b"stopped").expect("write the marker");
        }
    }

    pub(crate) fn starts(&self) -> u32 {
        self.starts
    }

    pub(crate) fn fail(&mut self) {
        panic!("hooked");
    }
}

#[entry]
async fn hammer(c: CounterRef, calls: u64) -> u64 {
    let mut last = 0;
    for _ in 0..calls {
        last = c.incr(1).await.expect("incr");
    }
    last
}

#[entry]
async fn push_in_order(log: LogRef, client: u32, count: u64) {
    for seq in 0..count {
        log.push_nowait(client, seq).await.expect("push");
    }
    // A call after the tells: it returns after they ran (one client, one order).
    log.push(client, count).await.expect("push");
}

/// Calls through a reference it got from a queue; reports who served and who called.
#[entry]
async fn from_queue(q: Queue<CounterRef>) -> (u32, Option<u32>, u32) {
    let c = q.get().await.expect("get");
    let (server, caller) = c.whoami().await.expect("whoami");
    (server, caller, std::process::id())
}

/// A grandchild: its parent spawns it with the reference.
#[entry]
async fn via_child(c: CounterRef) -> (u32, Option<u32>, u32) {
    let p = Process::spawn(grandchild_calls, c).await.expect("spawn");
    p.join().await.expect("join")
}

#[entry]
async fn grandchild_calls(c: CounterRef) -> (u32, Option<u32>, u32) {
    let (server, caller) = c.whoami().await.expect("whoami");
    c.incr(1).await.expect("incr");
    (server, caller, std::process::id())
}

#[entry]
async fn lookup_in_grandchild(name: String) -> u64 {
    let p = Process::spawn(lookup_and_incr, name).await.expect("spawn");
    p.join().await.expect("join")
}

#[entry]
async fn lookup_and_incr(name: String) -> u64 {
    let c = CounterRef::lookup(&name).await.expect("lookup");
    c.incr(10).await.expect("incr")
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) sends nothing; it only asks whether the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

async fn gone(pid: u32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Calls `incr(by)` from a child process, from the start so that it queues behind the nap.
#[entry]
async fn incr_from_child(c: CounterRef, by: u64) -> Result<u64, String> {
    c.incr(by).await.map_err(|e| e.to_string())
}

/// A call of `nap(30 s)`, running in the actor by the time this returns (give or take a
/// loaded machine: it was sent 200 ms before).
async fn napping(c: &CounterRef) -> tokio::task::JoinHandle<multiprocessing::Result<u64>> {
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.nap(30_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    call
}

fn sigkill(pid: u32) {
    // SAFETY: sends SIGKILL to an actor process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn assert_killed(outcome: multiprocessing::Result<u64>, pid: u32) {
    match outcome {
        Err(Error::ProcessDied { pid: p, signal, .. }) => {
            assert_eq!(p, pid);
            assert_eq!(signal, Some(libc::SIGKILL));
        }
        other => panic!("expected ProcessDied, got {other:?}"),
    }
}

/// A counter from `n` with a budget of one restart a minute.
async fn restartable(n: u64) -> CounterRef {
    let restart = Restart::OnCrash {
        max_restarts: 1,
        within: Duration::from_secs(60),
    };
    Counter { n }
        .builder()
        .restart(restart)
        .spawn()
        .await
        .unwrap()
}

#[multiprocessing::test]
async fn sync_and_async_methods_on_shared_and_exclusive_self() {
    let c = Counter { n: 1 }.spawn().await.unwrap();
    assert_eq!(c.incr(5).await.unwrap(), 6);
    assert_eq!(c.get().await.unwrap(), 6);
    assert_eq!(c.peek().await.unwrap(), 6);
    assert_eq!(c.add_later(4, 10).await.unwrap(), 10);
    // The impl is still ordinary Rust in this process.
    let mut local = Counter { n: 0 };
    assert_eq!(local.incr(2), 2);
    assert_eq!(local.not_a_message(), 2);
    let state = c.stop().await.unwrap();
    assert_eq!(state.n, 10);
    assert!(matches!(c.get().await, Err(Error::ActorStopped)));
    assert_eq!(c.monitor().await, ActorExit::Stopped);
}

#[multiprocessing::test]
async fn a_thousand_calls_from_four_processes_end_exact() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(Process::spawn(hammer, (c.clone(), 250)).await.unwrap());
    }
    for w in workers {
        assert!(w.join().await.unwrap() <= 1_000);
    }
    assert_eq!(c.get().await.unwrap(), 1_000);
}

#[multiprocessing::test]
async fn each_client_order_is_kept() {
    let log = Log { seen: Vec::new() }
        .builder()
        .mailbox(8)
        .spawn()
        .await
        .unwrap();
    let mut clients = Vec::new();
    for client in 0..3 {
        clients.push(
            Process::spawn(push_in_order, (log.clone(), client, 300))
                .await
                .unwrap(),
        );
    }
    for c in clients {
        c.join().await.unwrap();
    }
    let state = log.stop().await.unwrap();
    for client in 0..3 {
        let mine: Vec<u64> = state
            .seen
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(mine, (0..=300).collect::<Vec<_>>());
    }
}

#[multiprocessing::test]
async fn a_full_mailbox_makes_callers_wait() {
    let c = Counter { n: 0 }.builder().mailbox(2).spawn().await.unwrap();
    // One long call and one queued fill the mailbox of two.
    let busy = tokio::spawn({
        let c = c.clone();
        async move { c.nap(1_500).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.incr_nowait(1).await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(500), c.incr_nowait(1)).await;
    assert!(
        third.is_err(),
        "a third message went out past a mailbox of two"
    );
    busy.await.unwrap().unwrap();
    // Once the long call has answered there is room again.
    c.incr_nowait(1).await.unwrap();
    assert_eq!(c.get().await.unwrap(), 2);
}

#[multiprocessing::test]
async fn a_reference_through_a_queue_calls_the_actor_directly() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let (server, _) = c.whoami().await.unwrap();
    let q = Queue::<CounterRef>::new();
    let p = Process::spawn(from_queue, q.clone()).await.unwrap();
    q.put(c.clone()).await.unwrap();
    let (served_by, caller, child) = p.join().await.unwrap();
    assert_eq!(served_by, server);
    // The actor's connection came from the child itself, not from the root.
    assert_eq!(caller, Some(child));
    assert_ne!(caller, Some(std::process::id()));
}

#[multiprocessing::test]
async fn a_grandchild_calls_the_actor_directly() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let (server, caller, grandchild) = Process::spawn(via_child, c.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(c.whoami().await.unwrap().0, server);
    assert_eq!(caller, Some(grandchild));
    assert_eq!(c.get().await.unwrap(), 1);
}

#[multiprocessing::test]
async fn dropping_the_last_reference_ends_the_process() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let other = c.clone();
    c.incr(1).await.unwrap();
    let pid = c.pid().unwrap();
    drop(c);
    assert!(alive(pid), "a clone still holds it");
    drop(other);
    assert!(
        gone(pid).await,
        "actor process {pid} outlived its last reference"
    );
}

#[multiprocessing::test]
async fn detach_keeps_it_alive_and_kill_ends_it() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    c.detach().await.unwrap();
    let pid = c.pid().unwrap();
    let exit = c.monitor();
    let again = c.clone();
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(pid));
    again.kill().await.unwrap();
    assert_eq!(exit.await, ActorExit::Killed);
    assert!(gone(pid).await);
    assert!(matches!(again.get().await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn a_panic_is_an_error_with_its_message_and_location() {
    let c = Counter { n: 7 }.spawn().await.unwrap();
    match c.boom("kaput".into()).await {
        Err(Error::Panicked { message, location }) => {
            assert_eq!(message, "kaput");
            let location = location.expect("location");
            assert!(location.file.ends_with("actor.rs"), "{}", location.file);
            assert!(location.line > 0);
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    // Restart::Never: the actor is gone, and says how.
    assert!(matches!(c.get().await, Err(Error::ActorStopped)));
    assert!(matches!(c.monitor().await, ActorExit::Panicked { message, .. } if message == "kaput"));
}

#[multiprocessing::test]
async fn a_panic_with_on_crash_restarts_in_place() {
    let c = restartable(7).await;
    c.incr(1).await.unwrap();
    assert!(c.boom("one".into()).await.unwrap_err().is_panicked());
    // Re-created from the value it was spawned with.
    assert_eq!(c.get().await.unwrap(), 7);
    assert!(c.boom("two".into()).await.unwrap_err().is_panicked());
    assert!(matches!(c.get().await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn sigkill_mid_call_is_process_died_then_a_restart_serves_the_next() {
    let c = restartable(3).await;
    c.incr(10).await.unwrap();
    let pid = c.pid().unwrap();
    let call = napping(&c).await;
    sigkill(pid);
    assert_killed(call.await.unwrap(), pid);
    // A new instance, with the state it was spawned with.
    assert_eq!(c.get().await.unwrap(), 3);
    let second = c.pid().unwrap();
    assert_ne!(second, pid);
    // The budget of one restart is spent: the next death is the end.
    sigkill(second);
    assert_eq!(
        c.monitor().await,
        ActorExit::Died {
            exitcode: None,
            signal: Some(libc::SIGKILL)
        }
    );
    assert!(matches!(c.get().await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn names_are_unique_found_from_a_grandchild_and_freed_at_the_end() {
    let c = Counter { n: 0 }
        .builder()
        .name("counter")
        .spawn()
        .await
        .unwrap();
    let second = Counter { n: 0 }.builder().name("counter").spawn().await;
    match second {
        Err(Error::NameTaken { name }) => assert_eq!(name, "counter"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    let n = Process::spawn(lookup_in_grandchild, "counter".to_string())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert!(matches!(
        LogRef::lookup("counter").await,
        Err(Error::NoSuchActor { .. })
    ));
    c.stop().await.unwrap();
    assert!(matches!(
        CounterRef::lookup("counter").await,
        Err(Error::NoSuchActor { .. })
    ));
    let again = Counter { n: 0 }
        .builder()
        .name("counter")
        .spawn()
        .await
        .unwrap();
    again.stop().await.unwrap();
}

#[multiprocessing::test]
async fn queued_calls_go_to_the_restarted_instance_in_order() {
    let c = restartable(3).await;
    c.incr(10).await.unwrap();
    let pid = c.pid().unwrap();
    let running = napping(&c).await;
    // Sent in this order behind the nap, from this process and from another.
    let queued = tokio::spawn({
        let c = c.clone();
        async move { futures::join!(c.incr(1), c.incr(2)) }
    });
    let child = Process::spawn(incr_from_child, (c.clone(), 100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigkill(pid);
    assert_killed(running.await.unwrap(), pid);
    // Re-created from 3 (the 10 is lost with the old state), then each call once: 1 before 2,
    // the child's 100 anywhere among them.
    let (one, two) = queued.await.unwrap();
    let (one, two) = (one.unwrap(), two.unwrap());
    let from_child = child.join().await.unwrap().unwrap();
    assert!(
        one < two,
        "this process's calls ran out of order: {one}, {two}"
    );
    let mut ran = [(one, 1), (two, 2), (from_child, 100)];
    ran.sort();
    let mut n = 3;
    for (seen, by) in ran {
        n += by;
        assert_eq!(seen, n, "each call once, on the fresh state: {ran:?}");
    }
    assert_ne!(c.pid().unwrap(), pid);
    assert_eq!(c.nap(0).await.unwrap(), 106);
    c.stop().await.unwrap();
}

#[multiprocessing::test]
async fn without_a_restart_queued_calls_fail_at_once() {
    let c = Counter { n: 0 }.spawn().await.unwrap();
    let pid = c.pid().unwrap();
    let running = napping(&c).await;
    let queued = tokio::spawn({
        let c = c.clone();
        async move { c.incr(1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    sigkill(pid);
    assert_killed(running.await.unwrap(), pid);
    let queued = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("a queued call to a dead actor must not wait")
        .unwrap();
    assert!(
        matches!(queued, Err(Error::ProcessDied { .. } | Error::ActorStopped)),
        "got {queued:?}"
    );
    assert!(matches!(c.incr(1).await, Err(Error::ActorStopped)));
}

#[multiprocessing::test]
async fn hooks_run_at_each_start_and_at_a_stop() {
    let fresh = Hooked {
        starts: 0,
        stopped: false,
        marker: None,
    };
    let restart = Restart::OnCrash {
        max_restarts: 2,
        within: Duration::from_secs(60),
    };
    let h = fresh.builder().restart(restart).spawn().await.unwrap();
    assert_eq!(
        h.starts().await.unwrap(),
        1,
        "on_start ran before the first message"
    );
    // Restarted in place, and in a new process: each instance starts from the spawned value.
    assert!(h.fail().await.unwrap_err().is_panicked());
    assert_eq!(h.starts().await.unwrap(), 1);
    sigkill(h.pid().unwrap());
    assert_eq!(h.starts().await.unwrap(), 1);
    let state = h.stop().await.unwrap();
    assert!(state.stopped, "stop() returns the state as on_stop left it");
    assert_eq!(state.starts, 1);
}

#[multiprocessing::test]
async fn on_stop_runs_when_the_last_reference_goes() {
    let marker = std::env::temp_dir().join(format!("actor-on-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let h = Hooked {
        starts: 0,
        stopped: false,
        marker: Some(marker.clone()),
    }
    .spawn()
    .await
    .unwrap();
    let pid = h.pid().unwrap();
    drop(h);
    assert!(
        gone(pid).await,
        "actor process {pid} outlived its last reference"
    );
    let written = std::fs::read(&marker);
    let _ = std::fs::remove_file(&marker);
    assert_eq!(written.unwrap(), b"stopped");
}
