//! A manager's lock and event: held and waited for at the manager's host, so they work for the
//! tree's manager and a remote one alike; a holder SIGKILLed frees the lock (poisoned) in both.
//! Also: a proxy on its way to another process keeps its object alive.

use multiprocessing::{entry, Dict, Manager, ManagerEvent, ManagerLock, Process, Queue};
use std::time::Duration;

mod manager_common;

use manager_common::bounded;

/// Takes the lock, says so, and holds it until told (or forever, to be killed).
#[entry]
async fn hold_lock(lock: ManagerLock, held: Queue<bool>, release: Queue<()>) {
    let guard = lock.acquire().await.expect("acquire");
    held.put(guard.is_poisoned()).await.expect("held");
    release.get().await.expect("release");
    drop(guard);
    // Answered after the release is applied (this connection's order), so the release is in
    // before this entry reports.
    drop(lock.try_acquire().await.expect("try"));
}

#[multiprocessing::test]
async fn a_lock_is_exclusive_across_processes_with_try_and_timeout() {
    let m = Manager::start().await.unwrap();
    let lock = m.lock();
    let (held, release) = (m.queue::<bool>(), m.queue::<()>());
    let child = Process::spawn(hold_lock, (lock.clone(), held.clone(), release.clone()))
        .await
        .unwrap();
    assert!(!bounded("held", held.get()).await.unwrap());
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "held by the child"
    );
    let e = lock
        .acquire_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // A waiter queued now gets it when the child lets go.
    let waiting = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await.map(|g| g.is_poisoned()) }
    });
    release.put(()).await.unwrap();
    assert!(!bounded("waiter", waiting).await.unwrap().unwrap());
    bounded("join", child.join()).await.unwrap();
    let guard = lock.try_acquire().await.unwrap().expect("free again");
    assert!(!guard.is_poisoned());
}

#[multiprocessing::test]
async fn a_holder_sigkilled_frees_the_lock_poisoned_once() {
    let m = Manager::start().await.unwrap();
    let lock = m.lock();
    let (held, release) = (m.queue::<bool>(), m.queue::<()>());
    let child = Process::spawn(hold_lock, (lock.clone(), held.clone(), release))
        .await
        .unwrap();
    bounded("held", held.get()).await.unwrap();
    // A waiter in line when the holder dies is the one that hears of it.
    let waiting = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await.map(|g| g.is_poisoned()) }
    });
    child.kill();
    assert!(bounded("join", child.join()).await.is_err(), "killed");
    assert!(
        bounded("waiter", waiting).await.unwrap().unwrap(),
        "poisoned"
    );
    let again = lock.acquire().await.unwrap();
    assert!(!again.is_poisoned(), "told once");
}

/// Waits for `ev` after saying it is about to.
#[entry]
async fn wait_for(ev: ManagerEvent, waiting: Queue<()>) -> bool {
    waiting.put(()).await.expect("waiting");
    ev.wait().await.expect("wait");
    ev.is_set().await.expect("is_set")
}

#[multiprocessing::test]
async fn setting_an_event_wakes_every_waiter() {
    let m = Manager::start().await.unwrap();
    let ev = m.event();
    assert!(!ev.is_set().await.unwrap());
    assert!(!ev.wait_timeout(Duration::from_millis(20)).await.unwrap());
    let waiting = m.queue::<()>();
    let mut children = Vec::new();
    for _ in 0..3 {
        let args = (ev.clone(), waiting.clone());
        children.push(Process::spawn(wait_for, args).await.unwrap());
    }
    for _ in 0..3 {
        bounded("waiting", waiting.get()).await.unwrap();
    }
    ev.set().await.unwrap();
    for c in children {
        assert!(bounded("join", c.join()).await.unwrap());
    }
    assert!(ev.wait_timeout(Duration::from_millis(1)).await.unwrap());
    ev.clear().await.unwrap();
    assert!(!ev.is_set().await.unwrap());
}

/// Connects to a remote manager, takes its lock "l", says so, and hangs (to be killed).
#[entry]
async fn remote_hold(address: String, held: Queue<bool>) {
    let m = Manager::connect(&address, b"k").await.expect("connect");
    let lock = m.lock_named("l");
    let guard = lock.acquire().await.expect("acquire");
    m.event_named("e").set().await.expect("set");
    held.put(guard.is_poisoned()).await.expect("held");
    std::future::pending::<()>().await;
}

#[multiprocessing::test]
async fn a_remote_managers_lock_is_freed_when_its_holder_is_sigkilled() {
    let server = Manager::serve("127.0.0.1:0", b"k").await.unwrap();
    let here = server.manager();
    let (lock, ev) = (here.lock_named("l"), here.event_named("e"));
    let held = Queue::new();
    let child = Process::spawn(remote_hold, (server.address().to_owned(), held.clone()))
        .await
        .unwrap();
    assert!(!bounded("held", held.get()).await.unwrap());
    assert!(
        ev.is_set().await.unwrap(),
        "the client's set reached the server"
    );
    assert!(lock.try_acquire().await.unwrap().is_none(), "held remotely");
    child.kill();
    let _ = bounded("join", child.join()).await;
    let guard = bounded("acquire", lock.acquire()).await.unwrap();
    assert!(guard.is_poisoned(), "the remote holder died holding it");
}

/// Waits for the word, then reads the dict it was handed before its sender let go.
#[entry]
async fn read_later(q: Queue<Dict<u8, u8>>, go: Queue<()>) -> Option<u8> {
    go.get().await.expect("go");
    let d = q.get().await.expect("get");
    d.get(&1).await.expect("read")
}

#[entry]
async fn read_arg_later(d: Dict<u8, u8>, go: Queue<()>) -> Option<u8> {
    go.get().await.expect("go");
    d.get(&1).await.expect("read")
}

#[multiprocessing::test]
async fn a_proxy_in_transit_keeps_its_object_alive() {
    let m = Manager::start().await.unwrap();
    let (q, go) = (m.queue::<Dict<u8, u8>>(), m.queue::<()>());
    // Through a queue: the sender drops its last proxy while the copy waits in the queue.
    let d = m.dict::<u8, u8>();
    d.insert(1, 7).await.unwrap();
    q.put(d.clone()).await.unwrap();
    drop(d);
    let child = Process::spawn(read_later, (q.clone(), go.clone()))
        .await
        .unwrap();
    go.put(()).await.unwrap();
    assert_eq!(bounded("join", child.join()).await.unwrap(), Some(7));
    // As an entry's argument, dropped by the parent before the child uses it.
    let d = m.dict::<u8, u8>();
    d.insert(1, 8).await.unwrap();
    let child = Process::spawn(read_arg_later, (d.clone(), go.clone()))
        .await
        .unwrap();
    drop(d);
    go.put(()).await.unwrap();
    assert_eq!(bounded("join", child.join()).await.unwrap(), Some(8));
}

#[multiprocessing::test]
async fn a_copy_holds_its_object_until_it_arrives_then_lets_it_go() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<u8, u8>();
    d.insert(1, 1).await.unwrap();
    let wire = postcard::to_allocvec(&d).unwrap();
    drop(d);
    // The copy holds the dict until it arrives.
    let copy: Dict<u8, u8> = postcard::from_bytes(&wire).unwrap();
    assert_eq!(copy.get(&1).await.unwrap(), Some(1), "held in transit");
    drop(copy);
    // Its hold was taken and its handle released: the same bytes now find a fresh dict.
    let again: Dict<u8, u8> = postcard::from_bytes(&wire).unwrap();
    assert_eq!(again.len().await.unwrap(), 0, "freed");
}
