//! Queues between processes: every item delivered exactly once across many producers and
//! consumers in separate processes, bounded queues that hold producers back, timeouts that lose
//! nothing, closing, and a JoinableQueue that gives back what a killed consumer had taken.

use futures::{SinkExt, StreamExt};
use multiprocessing::{entry, Error, JoinableQueue, Pool, Process, PutError, Queue, SimpleQueue};
use serde_bytes::ByteBuf;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[entry]
async fn produce(q: Queue<u64>, from: u64, count: u64) {
    for i in from..from + count {
        q.put(i).await.expect("put");
    }
}

/// Takes items until the queue is closed and drained; returns what it got.
#[entry]
async fn consume(q: Queue<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match q.get().await {
            Ok(x) => got.push(x),
            Err(Error::Closed) => return got,
            Err(e) => panic!("get failed: {e}"),
        }
    }
}

#[multiprocessing::test]
async fn four_producers_four_consumers_move_every_item_exactly_once() {
    const PER_PRODUCER: u64 = 25_000;
    let q = Queue::<u64>::new();
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(Process::spawn(consume, q.clone()).await.unwrap());
    }
    let mut producers = Vec::new();
    for p in 0..4 {
        producers.push(
            Process::spawn(produce, (q.clone(), p * PER_PRODUCER, PER_PRODUCER))
                .await
                .unwrap(),
        );
    }
    for p in producers {
        p.join().await.unwrap();
    }
    q.close().await.unwrap();
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in consumers {
        let got = c.join().await.unwrap();
        // FIFO per producer: each consumer sees one producer's items in increasing order.
        for p in 0..4 {
            let mine: Vec<u64> = got
                .iter()
                .copied()
                .filter(|x| x / PER_PRODUCER == p)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} reordered"
            );
        }
        total += got.len();
        seen.extend(got);
    }
    assert_eq!(
        total,
        4 * PER_PRODUCER as usize,
        "an item was delivered twice or lost"
    );
    assert_eq!(seen.len(), 4 * PER_PRODUCER as usize);
}

#[entry]
async fn produce_bounded(q: Queue<u64>, count: u64) {
    for i in 0..count {
        q.put(i).await.expect("put");
    }
}

#[multiprocessing::test]
async fn a_bounded_queue_never_holds_more_than_its_capacity() {
    let q = Queue::<u64>::bounded(3);
    let mut producers = Vec::new();
    for _ in 0..3 {
        producers.push(
            Process::spawn(produce_bounded, (q.clone(), 200))
                .await
                .unwrap(),
        );
    }
    // Wait for the producers to fill it (and block).
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.len().await.unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the producers never filled the queue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.len().await.unwrap(), 3);
    assert!(q.is_full().await.unwrap());
    let mut got = 0;
    let mut most = 0;
    while got < 600 {
        most = most.max(q.len().await.unwrap());
        q.get().await.unwrap();
        got += 1;
        if got % 50 == 0 {
            // Give the producers time to overfill it, if they could.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(most <= 3, "the queue held {most} items");
    for p in producers {
        p.join().await.unwrap();
    }
    assert!(q.is_empty().await.unwrap());
}

#[multiprocessing::test]
async fn timeouts_and_try_ops_lose_nothing() {
    let q = Queue::<String>::bounded(1);
    let t0 = Instant::now();
    let err = q.get_timeout(Duration::from_millis(200)).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "get_timeout took {waited:?}"
    );
    assert!(matches!(q.try_get().await, Err(Error::Empty)));
    q.try_put("one".into()).await.unwrap();
    match q.try_put("two".into()).await {
        Err(multiprocessing::TryPutError::Full(item)) => assert_eq!(item, "two"),
        other => panic!("expected Full, got {other:?}"),
    }
    match q.put_timeout("two".into(), Duration::from_millis(50)).await {
        Err(multiprocessing::PutTimeoutError::Timeout(item)) => assert_eq!(item, "two"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(q.get().await.unwrap(), "one");
    assert!(q.is_empty().await.unwrap());
}

/// Waits for one item with a timeout; returns it, or "timeout".
#[entry]
async fn get_or_timeout(q: Queue<String>, ms: u64) -> String {
    match q.get_timeout(Duration::from_millis(ms)).await {
        Ok(s) => s,
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(e) => panic!("{e}"),
    }
}

#[multiprocessing::test]
async fn get_timeout_in_a_child_returns_in_about_the_timeout_and_loses_nothing() {
    let q = Queue::<String>::new();
    let t0 = Instant::now();
    let got = Process::spawn(get_or_timeout, (q.clone(), 300))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(got, "timeout");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // An item put after the timeout is still there for the next get.
    q.put("later".into()).await.unwrap();
    let got = Process::spawn(get_or_timeout, (q.clone(), 5_000))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(got, "later");
}

#[multiprocessing::test]
async fn a_dropped_get_puts_its_item_back() {
    let q = Queue::<u32>::new();
    // A get that is abandoned while waiting takes nothing.
    assert!(tokio::time::timeout(Duration::from_millis(50), q.get())
        .await
        .is_err());
    q.put(7).await.unwrap();
    q.put(8).await.unwrap();
    assert_eq!(q.get().await.unwrap(), 7);
    assert_eq!(q.get().await.unwrap(), 8);
}

#[entry]
async fn put_after_close(q: Queue<u32>) -> String {
    match q.put(1).await {
        Err(e) => e.to_string(),
        Ok(()) => "accepted".into(),
    }
}

#[multiprocessing::test]
async fn close_is_for_everyone_and_gets_drain_first() {
    let q = Queue::<u32>::new();
    q.put(1).await.unwrap();
    q.put(2).await.unwrap();
    q.close().await.unwrap();
    // The item that was not put comes back.
    assert!(matches!(q.put(3).await, Err(PutError::Closed(3))));
    let child = Process::spawn(put_after_close, q.clone()).await.unwrap();
    assert_eq!(child.join().await.unwrap(), "the queue is closed");
    assert_eq!(q.get().await.unwrap(), 1);
    assert_eq!(q.get().await.unwrap(), 2);
    assert!(matches!(q.get().await, Err(Error::Closed)));
}

#[multiprocessing::test]
async fn stream_and_sink() {
    let mut q = Queue::<u32>::new();
    let mut tx = q.clone();
    for i in 0..5 {
        tx.send(i).await.unwrap();
    }
    q.close().await.unwrap();
    let got: Vec<u32> = (&mut q).map(|r| r.unwrap()).collect().await;
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[entry]
async fn grandchild_put(q: SimpleQueue<String>) {
    q.put(format!("from {}", multiprocessing::current_process().name))
        .await
        .unwrap();
}

#[entry]
async fn spawn_grandchild(q: SimpleQueue<String>) {
    Process::spawn(grandchild_put, q)
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
}

#[multiprocessing::test]
async fn a_queue_reaches_grandchildren() {
    let q = SimpleQueue::<String>::new();
    Process::spawn(spawn_grandchild, q.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    let got = q.get().await.unwrap();
    assert!(got.starts_with("from Process-1:"), "{got}");
    assert!(q.is_empty().await.unwrap());
}

#[entry]
async fn put_square(args: (Queue<u64>, u64)) -> u64 {
    let (q, x) = args;
    q.put(x * x).await.unwrap();
    x
}

#[multiprocessing::test]
async fn a_queue_reaches_pool_workers() {
    let q = Queue::<u64>::new();
    let pool = Pool::new(2).await.unwrap();
    let args: Vec<_> = (0..20).map(|x| (q.clone(), x)).collect();
    pool.map(put_square, args).chunksize(1).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(q.get().await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).map(|x| x * x).collect::<Vec<_>>());
}

/// Takes items and marks them done, but dies (SIGKILL) on `die_on`, after taking it.
#[entry]
async fn work(q: JoinableQueue<u64>, done: Queue<u64>, die_on: u64) {
    loop {
        let x = match q.get().await {
            Ok(x) => x,
            Err(Error::Closed) => return,
            Err(e) => panic!("{e}"),
        };
        if x == die_on {
            // SAFETY: kill(2) on our own pid: this consumer dies holding an unfinished item.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        done.put(x).await.unwrap();
        q.task_done().await.unwrap();
    }
}

#[multiprocessing::test]
async fn a_killed_consumer_loses_nothing_from_a_joinable_queue() {
    let q = JoinableQueue::<u64>::new();
    let done = Queue::<u64>::new();
    for i in 0..200 {
        q.put(i).await.unwrap();
    }
    let doomed = Process::spawn(work, (q.clone(), done.clone(), 50))
        .await
        .unwrap();
    let err = doomed.join().await.unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    // Item 50 went back to the queue; a second consumer finishes everything.
    let survivor = Process::spawn(work, (q.clone(), done.clone(), u64::MAX))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), q.join())
        .await
        .expect("join waited forever: an item was lost")
        .unwrap();
    q.close().await.unwrap();
    survivor.join().await.unwrap();
    let mut got = HashSet::new();
    while let Ok(x) = done.try_get().await {
        got.insert(x);
    }
    assert_eq!(got, (0..200).collect::<HashSet<_>>());
}

#[multiprocessing::test]
async fn task_done_more_often_than_taken_is_an_error() {
    let q = JoinableQueue::<u8>::new();
    q.put(1).await.unwrap();
    assert_eq!(q.get().await.unwrap(), 1);
    q.task_done().await.unwrap();
    let err = q.task_done().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    q.join().await.unwrap();
}

#[multiprocessing::test]
async fn outside_a_launch_a_queue_says_so() {
    let q = Queue::<u8>::new();
    let err = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(q.put(1))
    })
    .join()
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(err, PutError::Failed(1, Error::NotLaunched(_))),
        "{err}"
    );
}

#[multiprocessing::test]
async fn more_waiting_producers_than_room_all_get_through() {
    // Capacity 1, three producers: a put handed straight to a waiting get must free the room
    // for the next producer (it once did not, and this hung).
    let q = Queue::<u64>::bounded(1);
    let mut producers = Vec::new();
    for _ in 0..3 {
        producers.push(
            Process::spawn(produce_bounded, (q.clone(), 50))
                .await
                .unwrap(),
        );
    }
    let mut got = 0;
    while got < 150 {
        tokio::time::timeout(Duration::from_secs(30), q.get())
            .await
            .expect("a producer was never given room")
            .unwrap();
        got += 1;
    }
    for p in producers {
        p.join().await.unwrap();
    }
}

#[entry]
async fn get_once(q: Queue<u32>) -> String {
    match tokio::time::timeout(Duration::from_secs(10), q.get()).await {
        Ok(Ok(x)) => format!("got {x}"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "hung".into(),
    }
}

#[multiprocessing::test]
async fn a_closed_queue_stays_closed_when_its_last_handle_is_in_transit() {
    let q = Queue::<u32>::new();
    q.close().await.unwrap();
    let child = Process::spawn(get_once, q.clone()).await.unwrap();
    // The root lets go of its own handle while the child's is on its way.
    drop(q);
    assert_eq!(child.join().await.unwrap(), "closed");
}

/// With a large put waiting for room in a full queue, a put to another queue still goes
/// through at once.
#[entry]
async fn big_put_blocks_nothing_else(full: Queue<ByteBuf>, other: Queue<u32>) -> bool {
    full.put(ByteBuf::from(vec![0u8; 16])).await.unwrap();
    let waiting = tokio::spawn({
        let full = full.clone();
        async move {
            let _ = full.put(ByteBuf::from(vec![1u8; 5 << 20])).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = tokio::time::timeout(Duration::from_secs(5), other.put(7))
        .await
        .is_ok();
    waiting.abort();
    ok
}

#[multiprocessing::test]
async fn a_put_waiting_for_room_does_not_hold_back_other_puts() {
    let full = Queue::<ByteBuf>::bounded(1);
    let other = Queue::<u32>::new();
    let child = Process::spawn(big_put_blocks_nothing_else, (full.clone(), other.clone()))
        .await
        .unwrap();
    assert!(child.join().await.unwrap(), "the other put waited");
    assert_eq!(other.get().await.unwrap(), 7);
    // The abandoned big put gave its room back: exactly the first item is there.
    assert_eq!(full.len().await.unwrap(), 1);
    assert_eq!(full.get().await.unwrap().len(), 16);
}

// Lending (`src/hub/README.md`, "Gets in a child without a round trip each"): a process other
// than the root is lent items ahead of its gets, and still every item reaches exactly one get,
// in order per producer; `len` counts lent items; a get or a `try_get` elsewhere brings lent
// items back instead of waiting on them; a consumer killed with lent items loses only what it
// had taken.

/// Takes `n` items (so that, alone on a full queue, its later batches leave items lent to it
/// that it did not take), reports them on `report` (an answered operation after the put makes
/// sure the report reached the root), then either dies by SIGKILL or waits on `hold` until the
/// parent says to end.
#[entry]
async fn take_then(q: Queue<u64>, report: Queue<Vec<u64>>, hold: Queue<()>, n: u64, die: bool) {
    let mut took = Vec::new();
    for _ in 0..n {
        took.push(q.get().await.expect("get"));
    }
    report.put(took).await.expect("report");
    report.len().await.expect("settle the report");
    if die {
        // SAFETY: kill(2) on our own pid: this consumer dies holding items lent to it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    hold.get().await.expect("hold");
}

/// A queue holding `0..n`, and a consumer child that took the first `took` of them.
async fn lent_to_a_child(n: u64, took: u64, die: bool) -> (Queue<u64>, Queue<()>, Process<()>) {
    let q = Queue::<u64>::new();
    for i in 0..n {
        q.put(i).await.unwrap();
    }
    let (report, hold) = (Queue::<Vec<u64>>::new(), Queue::<()>::new());
    let child = Process::spawn(
        take_then,
        (q.clone(), report.clone(), hold.clone(), took, die),
    )
    .await
    .unwrap();
    let got = report.get().await.unwrap();
    assert_eq!(got, (0..took).collect::<Vec<_>>(), "one consumer, in order");
    (q, hold, child)
}

#[multiprocessing::test]
async fn a_get_elsewhere_brings_back_items_lent_to_an_idle_process() {
    // Batches of 1, 2, 4 and 8 items: after 10 gets the child holds 5 it has not taken.
    let (q, hold, child) = lent_to_a_child(15, 10, false).await;
    assert_eq!(q.len().await.unwrap(), 5, "lent items still count");
    // The child takes nothing more; a try_get here does not report the queue empty, and a
    // get does not wait on items sitting in the idle child.
    assert_eq!(q.try_get().await.unwrap(), 10);
    for want in 11..15 {
        let got = tokio::time::timeout(Duration::from_secs(20), q.get())
            .await
            .expect("a get waited on items lent to an idle process");
        assert_eq!(got.unwrap(), want, "lent items come back in their order");
    }
    assert!(q.is_empty().await.unwrap());
    assert!(matches!(q.try_get().await, Err(Error::Empty)));
    hold.put(()).await.unwrap();
    child.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_consumer_killed_with_lent_items_loses_only_what_it_took() {
    let (q, _hold, child) = lent_to_a_child(100, 10, true).await;
    let err = child.join().await.unwrap_err();
    assert!(err.is_worker_lost(), "{err}");
    // Everything it had not taken is back, in order, once; nothing it took comes again.
    let mut rest = Vec::new();
    while let Ok(x) = q.try_get().await {
        rest.push(x);
    }
    assert_eq!(rest, (10..100).collect::<Vec<_>>());
}

#[multiprocessing::test]
async fn three_competing_consumer_processes_take_each_item_once_in_order() {
    const N: u64 = 12_000;
    let q = Queue::<u64>::new();
    // Items wait before the consumers start, so the first to come is lent batches and the
    // others must bring them back.
    for i in 0..N / 2 {
        q.put(i).await.unwrap();
    }
    let mut consumers = Vec::new();
    for _ in 0..3 {
        consumers.push(Process::spawn(consume, q.clone()).await.unwrap());
    }
    Process::spawn(produce, (q.clone(), N / 2, N / 2))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    q.close().await.unwrap();
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in consumers {
        let got = c.join().await.unwrap();
        // Both producers (this process, then the child) put in increasing order.
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "a consumer saw items out of order"
        );
        total += got.len();
        seen.extend(got);
    }
    assert_eq!(total, N as usize, "an item was delivered twice or lost");
    assert_eq!(seen.len(), N as usize);
}
