//! Managers: a dict, a list and a namespace shared by real processes, whose every operation is
//! applied whole by the root, and which are freed with the last proxy in the tree.

use futures::future::join_all;
use multiprocessing::{entry, Dict, Error, List, Manager, Namespace, Process, Queue};

#[entry]
async fn write_keys(d: Dict<u64, String>, from: u64, count: u64) {
    // Half answered, half not: a `set` is applied before the entry's result is reported.
    for k in from..from + count {
        if k % 2 == 0 {
            d.insert(k, format!("v{k}")).await.expect("insert");
        } else {
            d.set(k, format!("v{k}")).await.expect("set");
        }
    }
}

#[multiprocessing::test]
async fn a_dict_keeps_every_write_of_four_concurrent_writers() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<u64, String>();
    let mut writers = Vec::new();
    for w in 0..4 {
        writers.push(
            Process::spawn(write_keys, (d.clone(), w * 250, 250))
                .await
                .unwrap(),
        );
    }
    for w in writers {
        w.join().await.unwrap();
    }
    assert_eq!(d.len().await.unwrap(), 1000);
    let all = d.to_hashmap().await.unwrap();
    for k in 0..1000 {
        assert_eq!(all.get(&k), Some(&format!("v{k}")), "key {k}");
    }
}

#[entry]
async fn increment(d: Dict<String, i64>, times: u32) {
    for _ in 0..times {
        d.fetch_add(&"hits".to_string(), 1)
            .await
            .expect("fetch_add");
    }
}

#[multiprocessing::test]
async fn four_processes_times_1000_atomic_increments_end_exact() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<String, i64>();
    let mut procs = Vec::new();
    for _ in 0..4 {
        procs.push(Process::spawn(increment, (d.clone(), 1000)).await.unwrap());
    }
    for p in procs {
        p.join().await.unwrap();
    }
    assert_eq!(d.get(&"hits".to_string()).await.unwrap(), Some(4000));
}

#[multiprocessing::test]
async fn dict_operations_answer_as_a_map_does() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<String, u8>();
    assert!(d.is_empty().await.unwrap());
    assert_eq!(d.insert("b".into(), 1).await.unwrap(), None);
    assert_eq!(d.insert("b".into(), 2).await.unwrap(), Some(1));
    d.update([("a".to_string(), 3), ("c".to_string(), 4)])
        .await
        .unwrap();
    assert_eq!(d.keys().await.unwrap(), ["b", "a", "c"], "insertion order");
    assert_eq!(d.values().await.unwrap(), [2, 3, 4]);
    assert!(d.contains_key(&"a".into()).await.unwrap());
    assert_eq!(d.remove(&"a".into()).await.unwrap(), Some(3));
    assert!(!d.contains_key(&"a".into()).await.unwrap());
    assert_eq!(d.get_or_insert("c".into(), 9).await.unwrap(), 4);
    assert_eq!(d.get_or_insert("z".into(), 9).await.unwrap(), 9);
    assert_eq!(
        d.items().await.unwrap(),
        [("b".to_string(), 2), ("c".into(), 4), ("z".into(), 9)]
    );
    let e = d.fetch_add(&"z".into(), 300).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.starts_with("dict 0x")),
        "the error names the dict: {e}"
    );
    assert_eq!(d.get(&"z".into()).await.unwrap(), Some(9), "unchanged");
    d.clear().await.unwrap();
    assert_eq!(d.len().await.unwrap(), 0);
}

/// Runs list operations in a grandchild: this child spawns it and waits.
#[entry]
async fn list_in_grandchild(l: List<i32>) {
    Process::spawn(list_operations, l)
        .await
        .expect("spawn grandchild")
        .join()
        .await
        .expect("grandchild");
}

#[entry]
async fn list_operations(l: List<i32>) {
    l.extend([5, 3, 8]).await.unwrap();
    l.push(1).await.unwrap();
    l.insert(0, 7).await.unwrap();
    l.insert(100, 9).await.unwrap(); // past the end: appended, as in Python
    l.set(1, 4).await.unwrap(); // [7, 4, 3, 8, 1, 9]
    assert_eq!(l.remove(2).await.unwrap(), 3); // [7, 4, 8, 1, 9]
    assert_eq!(l.pop().await.unwrap(), Some(9)); // [7, 4, 8, 1]
    assert_eq!(l.get(1).await.unwrap(), Some(4));
    assert_eq!(l.get(10).await.unwrap(), None);
    l.sort().await.unwrap(); // [1, 4, 7, 8]
    l.reverse().await.unwrap(); // [8, 7, 4, 1]
}

#[multiprocessing::test]
async fn list_operations_from_a_grandchild() {
    let m = Manager::start().await.unwrap();
    let l = m.list::<i32>();
    Process::spawn(list_in_grandchild, l.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(l.to_vec().await.unwrap(), [8, 7, 4, 1]);
    assert_eq!(l.len().await.unwrap(), 4);
    let e = l.set(4, 0).await.unwrap_err();
    assert!(
        matches!(&e, Error::Lookup(m) if m.starts_with("list 0x") && m.contains("index 4")),
        "the error names the list and the index: {e}"
    );
    assert!(matches!(l.remove(9).await, Err(Error::Lookup(_))));
}

#[entry]
async fn write_through_queue(q: Queue<Dict<String, u32>>) {
    let d = q.get().await.expect("get");
    d.insert("from-child".into(), 42).await.expect("insert");
}

#[multiprocessing::test]
async fn a_proxy_passed_through_a_queue_reaches_the_same_dict() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<String, u32>();
    d.insert("from-root".into(), 1).await.unwrap();
    let q = m.queue::<Dict<String, u32>>();
    let p = Process::spawn(write_through_queue, q.clone())
        .await
        .unwrap();
    q.put(d.clone()).await.unwrap();
    p.join().await.unwrap();
    assert_eq!(d.get(&"from-child".into()).await.unwrap(), Some(42));
    assert_eq!(d.len().await.unwrap(), 2);
}

#[entry]
async fn use_namespace(ns: Namespace) {
    let x: i64 = ns.get("x").await.expect("x");
    ns.set("y", format!("x was {x}")).await.expect("set y");
}

#[multiprocessing::test]
async fn a_namespace_holds_typed_fields_by_name() {
    let m = Manager::start().await.unwrap();
    let ns = m.namespace();
    ns.set("x", 10i64).await.unwrap();
    Process::spawn(use_namespace, ns.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(ns.get::<String>("y").await.unwrap(), "x was 10");
    assert_eq!(ns.names().await.unwrap(), ["x", "y"]);
    let e = ns.get::<i64>("nope").await.unwrap_err();
    assert!(
        matches!(&e, Error::Lookup(m) if m.starts_with("namespace 0x") && m.contains("`nope`")),
        "the error names the namespace and the field: {e}"
    );
    assert!(ns.remove("x").await.unwrap());
    assert_eq!(ns.try_get::<i64>("x").await.unwrap(), None);
}

/// Uses the proxy, says so, waits for the word, then reads the dict once more.
#[entry]
async fn hold_last_proxy(d: Dict<u8, u8>, ready: Queue<()>, go: Queue<()>) -> Option<u8> {
    d.len().await.expect("len");
    ready.put(()).await.expect("ready");
    go.get().await.expect("go");
    d.get(&1).await.expect("get")
}

#[multiprocessing::test]
async fn objects_live_while_any_process_holds_a_proxy_and_are_freed_with_the_last() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<u8, u8>();
    d.insert(1, 1).await.unwrap();
    // A serialized copy holds the dict until it arrives: this one arrives at once, and then
    // names the dict without holding it.
    let wire = postcard::to_allocvec(&d).unwrap();
    drop(
        postcard::from_bytes::<Dict<u8, u8>>(&wire)
            .unwrap()
            .len()
            .await,
    );
    let (ready, go) = (m.queue::<()>(), m.queue::<()>());
    let child = Process::spawn(hold_last_proxy, (d.clone(), ready.clone(), go.clone()))
        .await
        .unwrap();
    ready.get().await.unwrap();
    drop(d);
    go.put(()).await.unwrap();
    assert_eq!(
        child.join().await.unwrap(),
        Some(1),
        "the child's proxy kept the dict alive"
    );
    // The child's last proxy was released before it reported: a proxy made from the same id
    // now finds a fresh, empty dict.
    let again: Dict<u8, u8> = postcard::from_bytes(&wire).unwrap();
    assert_eq!(again.len().await.unwrap(), 0, "the dict was freed");
}

#[entry]
async fn pipelined_gets(d: Dict<u32, u32>, n: u32) -> u64 {
    let gets = (0..n).map(|k| {
        let d = d.clone();
        async move { d.get(&k).await.expect("get").expect("present") }
    });
    join_all(gets).await.into_iter().map(u64::from).sum()
}

#[multiprocessing::test]
async fn many_calls_in_flight_from_one_child_each_get_their_own_answer() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<u32, u32>();
    d.update((0..500).map(|k| (k, k * 2))).await.unwrap();
    let sum = Process::spawn(pipelined_gets, (d.clone(), 500))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(sum, (0..500u64).map(|k| k * 2).sum::<u64>());
}

#[entry]
async fn write_then_hang(d: Dict<u32, u32>, acked: Queue<u32>) {
    for k in 0.. {
        d.insert(k, k).await.expect("insert");
        acked.put(k).await.expect("ack");
    }
}

#[multiprocessing::test]
async fn a_writer_killed_mid_session_loses_nothing_acknowledged() {
    let m = Manager::start().await.unwrap();
    let d = m.dict::<u32, u32>();
    let acked = m.queue::<u32>();
    let p = Process::spawn(write_then_hang, (d.clone(), acked.clone()))
        .await
        .unwrap();
    let mut last = 0;
    while last < 200 {
        last = acked.get().await.unwrap();
    }
    p.kill();
    assert!(p.join().await.is_err(), "killed");
    let all = d.to_hashmap().await.unwrap();
    for k in 0..=last {
        assert_eq!(all.get(&k), Some(&k), "acknowledged key {k} kept");
    }
    // And the dict still serves.
    d.insert(u32::MAX, 1).await.unwrap();
    assert_eq!(d.get(&u32::MAX).await.unwrap(), Some(1));
}
