//! Fault injection on managers: clients SIGKILLed in the middle of operations, a waiter for a
//! lock or an event SIGKILLed in line, and the owner of a remote manager dying under its
//! clients. In each, nothing acknowledged is lost, no operation is seen half-applied, the host
//! serves everyone else, and a client of a dead server gets an error instead of hanging.

use multiprocessing::{
    entry, Dict, Error, List, Manager, ManagerEvent, ManagerLock, Process, Queue,
};

mod manager_common;

use manager_common::bounded;

/// Writes batches of 50 keys (`update`) and 50 items (`extend`) forever, acknowledging each
/// batch number once both are applied.
#[entry]
async fn batches(d: Dict<(u32, u32), u32>, l: List<u32>, acked: Queue<u32>, writer: u32) {
    for b in 0.. {
        let id = writer * 1_000_000 + b;
        d.update((0..50).map(|i| ((id, i), i)))
            .await
            .expect("update");
        l.extend((0..50).map(|_| id)).await.expect("extend");
        acked.put(id).await.expect("ack");
    }
}

#[multiprocessing::test]
async fn clients_sigkilled_mid_operation_leave_no_half_applied_batch() {
    let m = Manager::start().await.unwrap();
    let (d, l) = (m.dict::<(u32, u32), u32>(), m.list::<u32>());
    let acked = m.queue::<u32>();
    let mut writers = Vec::new();
    for w in 0..3 {
        let args = (d.clone(), l.clone(), acked.clone(), w);
        writers.push(Process::spawn(batches, args).await.unwrap());
    }
    let mut seen = Vec::new();
    while seen.len() < 60 {
        seen.push(bounded("ack", acked.get()).await.unwrap());
    }
    // Killed while writing: each may be in the middle of an update or an extend.
    for w in &writers {
        w.kill();
    }
    for w in writers {
        assert!(bounded("join", w.join()).await.is_err(), "killed");
    }
    let all = d.to_hashmap().await.unwrap();
    let items = l.to_vec().await.unwrap();
    let mut per_batch = std::collections::HashMap::<u32, (usize, usize)>::new();
    for (id, _) in all.keys() {
        per_batch.entry(*id).or_default().0 += 1;
    }
    for id in &items {
        per_batch.entry(*id).or_default().1 += 1;
    }
    for (id, (keys, listed)) in &per_batch {
        assert_eq!(*keys, 50, "batch {id}: an update is applied whole");
        assert!(
            *listed == 0 || *listed == 50,
            "batch {id}: an extend is applied whole"
        );
    }
    for id in seen {
        assert_eq!(
            per_batch.get(&id),
            Some(&(50, 50)),
            "acknowledged batch {id} kept"
        );
    }
    // And both still serve.
    l.push(7).await.unwrap();
    assert_eq!(l.pop().await.unwrap(), Some(7));
}

/// Gets in line for the lock, says so, and waits (to be killed in line). The first poll of
/// the acquire sends it (the proxy is open already), so the host has it in line before the
/// word that follows it on the same connection.
#[entry]
async fn wait_in_line(lock: ManagerLock, waiting: Queue<()>) {
    assert!(lock.try_acquire().await.expect("try").is_none(), "held");
    let acquire = lock.acquire();
    futures::pin_mut!(acquire);
    assert!(futures::poll!(&mut acquire).is_pending());
    waiting.put(()).await.expect("waiting");
    let _guard = acquire.await.expect("acquire");
    std::future::pending::<()>().await;
}

#[multiprocessing::test]
async fn a_waiter_sigkilled_in_line_for_a_lock_is_skipped() {
    let m = Manager::start().await.unwrap();
    let lock = m.lock();
    let guard = lock.acquire().await.unwrap();
    let waiting = m.queue::<()>();
    let doomed = Process::spawn(wait_in_line, (lock.clone(), waiting.clone()))
        .await
        .unwrap();
    bounded("waiting", waiting.get()).await.unwrap();
    doomed.kill();
    let _ = bounded("join", doomed.join()).await;
    drop(guard);
    // The dead waiter must not be handed the lock (it would never release it).
    let again = bounded("acquire", lock.acquire()).await.unwrap();
    assert!(!again.is_poisoned(), "a dead waiter held nothing");
}

/// Waits for `ev`, saying so once the wait is sent (as `wait_in_line`); returns once it is set.
#[entry]
async fn wait_event(ev: ManagerEvent, waiting: Queue<()>) {
    assert!(!ev.is_set().await.expect("is_set"));
    let wait = ev.wait();
    futures::pin_mut!(wait);
    assert!(futures::poll!(&mut wait).is_pending());
    waiting.put(()).await.expect("waiting");
    wait.await.expect("wait");
}

#[multiprocessing::test]
async fn a_waiter_sigkilled_on_an_event_does_not_stop_the_others() {
    let m = Manager::start().await.unwrap();
    let ev = m.event();
    let waiting = m.queue::<()>();
    let mut children = Vec::new();
    for _ in 0..3 {
        let args = (ev.clone(), waiting.clone());
        children.push(Process::spawn(wait_event, args).await.unwrap());
    }
    for _ in 0..3 {
        bounded("waiting", waiting.get()).await.unwrap();
    }
    let doomed = children.remove(0);
    doomed.kill();
    let _ = bounded("join", doomed.join()).await;
    ev.set().await.unwrap();
    for c in children {
        bounded("join", c.join()).await.unwrap();
    }
}

/// Serves a remote manager, tells its address, and runs until killed.
#[entry]
async fn serve_until_killed(address: Queue<String>) {
    let server = Manager::serve("127.0.0.1:0", b"k").await.expect("serve");
    address
        .put(server.address().to_owned())
        .await
        .expect("address");
    std::future::pending::<()>().await;
}

#[multiprocessing::test]
async fn a_remote_managers_owner_dying_fails_its_clients_calls_without_a_hang() {
    let address = Queue::new();
    let server = Process::spawn(serve_until_killed, address.clone())
        .await
        .unwrap();
    let address = bounded("address", address.get()).await.unwrap();
    let m = Manager::connect(&address, b"k").await.unwrap();
    let (d, ev, lock) = (
        m.dict_named::<u8, u8>("d"),
        m.event_named("e"),
        m.lock_named("l"),
    );
    d.insert(1, 1).await.unwrap();
    let guard = lock.acquire().await.unwrap();
    // A call in flight when the server dies (its first poll sends it).
    assert!(!ev.is_set().await.unwrap());
    let in_flight = ev.wait();
    futures::pin_mut!(in_flight);
    assert!(futures::poll!(&mut in_flight).is_pending());
    server.kill();
    let _ = bounded("join", server.join()).await;
    let waited = bounded("in-flight wait", in_flight).await;
    assert!(matches!(waited, Err(Error::Closed)), "{waited:?}");
    let got = bounded("get", d.get(&1)).await;
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
    drop(guard);
    let again = bounded("reconnect", Manager::connect(&address, b"k")).await;
    assert!(matches!(again, Err(Error::Io(_))), "{again:?}");
}
