//! Pool calls of every shape, on 0, 1 and 100,000 items; order; initializer; worker recycling;
//! lifecycle.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool};
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

#[entry]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[entry]
async fn async_double(x: u64) -> u64 {
    tokio::task::yield_now().await;
    x * 2
}

#[entry]
fn pid_of_worker(_: u64) -> u32 {
    std::process::id()
}

static GREETING: OnceLock<String> = OnceLock::new();

#[entry]
fn init_greeting(greeting: String) {
    let _ = GREETING.set(greeting);
}

#[entry]
fn greet(name: String) -> String {
    format!(
        "{}, {name}",
        GREETING
            .get()
            .map(String::as_str)
            .unwrap_or("<no initializer ran>")
    )
}

#[entry]
fn nap_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
async fn apply_and_apply_async() {
    let pool = Pool::new(2).await.unwrap();
    assert_eq!(pool.apply(square, 7).await.unwrap(), 49);
    assert_eq!(pool.apply(add, (2, 3)).await.unwrap(), 5);
    assert_eq!(pool.apply(async_double, 21).await.unwrap(), 42);
    let mut r = pool.apply_async(nap_then, 100);
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    assert!(r
        .get(Duration::from_millis(10))
        .await
        .unwrap_err()
        .is_timeout());
    assert_eq!(r.get(Duration::from_secs(10)).await.unwrap(), 100);
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(
        (&mut r).await.unwrap(),
        100,
        "the result can be taken again"
    );
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn every_shape_on_zero_and_one_items() {
    let pool = Pool::new(2).await.unwrap();
    assert_eq!(
        pool.map(square, Vec::<u64>::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(pool.map(square, [3]).await.unwrap(), vec![9]);
    assert_eq!(
        pool.starmap(add, Vec::<(u64, u64)>::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(pool.starmap(add, [(1, 2)]).await.unwrap(), vec![3]);
    assert!(pool
        .imap(square, Vec::<u64>::new())
        .collect::<Vec<_>>()
        .await
        .is_empty());
    assert!(pool
        .imap_unordered(square, Vec::<u64>::new())
        .collect::<Vec<_>>()
        .await
        .is_empty());
    let one: Vec<u64> = pool.imap(square, [4]).map(|r| r.unwrap()).collect().await;
    assert_eq!(one, vec![16]);
    let one: Vec<u64> = pool
        .imap_unordered(square, [5])
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(one, vec![25]);
}

#[multiprocessing::test]
async fn every_shape_on_100_000_items() {
    const N: u64 = 100_000;
    let pool = Pool::new(2).await.unwrap();
    let expected: Vec<u64> = (0..N).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..N).await.unwrap(), expected);
    assert_eq!(pool.map(square, 0..N).chunksize(7).await.unwrap(), expected);
    let sums = pool.starmap(add, (0..N).map(|i| (i, 1))).await.unwrap();
    assert_eq!(sums, (1..=N).collect::<Vec<_>>());
    let ordered: Vec<u64> = pool
        .imap(square, 0..N)
        .chunksize(64)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(ordered, expected);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..N)
        .chunksize(64)
        .map(|r| r.unwrap())
        .collect()
        .await;
    unordered.sort_unstable();
    assert_eq!(
        unordered, expected,
        "imap_unordered returns every item exactly once"
    );
    let many = (0..1_000)
        .map(|i| pool.apply_async(square, i))
        .collect::<Vec<_>>();
    let values = futures::future::try_join_all(many).await.unwrap();
    assert_eq!(values, (0..1_000u64).map(|x| x * x).collect::<Vec<_>>());
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn imap_keeps_order_with_uneven_tasks() {
    let pool = Pool::new(2).await.unwrap();
    let naps = vec![200, 1, 50, 1, 120, 1, 1, 30];
    let ordered: Vec<u64> = pool
        .imap(nap_then, naps.clone())
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(ordered, naps);
    // Unordered: the 200 ms task does not hold up the others.
    let first: Vec<u64> = pool
        .imap_unordered(nap_then, naps.clone())
        .take(3)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert!(!first.contains(&200), "{first:?}");
}

#[multiprocessing::test]
async fn async_entries_run_concurrently_in_one_worker() {
    let pool = Pool::builder()
        .processes(1)
        .concurrency_per_worker(8)
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let values = pool
        .map(async_nap, vec![200u64; 8])
        .chunksize(1)
        .await
        .unwrap();
    assert_eq!(values, vec![200; 8]);
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "8 × 200 ms naps ran one after another: {:?}",
        started.elapsed()
    );
}

#[entry]
async fn async_nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[multiprocessing::test]
async fn initializer_state_is_visible_to_tasks() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_greeting, "hello".to_string())
        .build()
        .await
        .unwrap();
    let greetings = pool
        .map(greet, vec!["ann".to_string(), "bob".to_string()])
        .chunksize(1)
        .await
        .unwrap();
    assert_eq!(greetings, vec!["hello, ann", "hello, bob"]);
}

#[multiprocessing::test]
async fn failing_initializer_fails_the_build() {
    let err = Pool::builder()
        .processes(2)
        .initializer(panicking_init, ())
        .build()
        .await
        .unwrap_err();
    assert!(err.is_panicked(), "{err:?}");
}

#[entry]
fn panicking_init() {
    panic!("no configuration")
}

#[multiprocessing::test]
async fn max_tasks_per_child_replaces_workers() {
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(2)
        .build()
        .await
        .unwrap();
    let pids: Vec<u32> = pool.map(pid_of_worker, 0..6).chunksize(1).await.unwrap();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "6 tasks, 2 per worker: {pids:?}");
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
}

#[multiprocessing::test]
async fn worker_names_use_the_prefix() {
    let pool = Pool::builder()
        .processes(2)
        .name_prefix("cruncher")
        .build()
        .await
        .unwrap();
    let names: HashSet<String> = multiprocessing::active_children()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(
        names.contains("cruncher-1") && names.contains("cruncher-2"),
        "{names:?}"
    );
    assert_eq!(pool.worker_pids().await.unwrap().len(), 2);
}

#[multiprocessing::test]
async fn closed_pool_refuses_new_work() {
    let pool = Pool::new(1).await.unwrap();
    pool.close();
    assert!(matches!(
        pool.apply(square, 2).await,
        Err(Error::PoolClosed)
    ));
    pool.join().await.unwrap();
    assert!(multiprocessing::active_children().is_empty());
}

#[multiprocessing::test]
async fn terminate_leaves_no_process_behind() {
    let pool = Pool::new(3).await.unwrap();
    let pids = pool.worker_pids().await.unwrap();
    let running = pool.apply_async(nap_then, 10_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    pool.terminate().await.unwrap();
    assert!(matches!(running.await, Err(Error::PoolClosed)));
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "worker {pid} survived"
        );
    }
    assert!(multiprocessing::active_children().is_empty());
}

#[multiprocessing::test]
async fn dropped_pool_terminates_its_workers() {
    let pool = Pool::new(2).await.unwrap();
    let pids = pool.worker_pids().await.unwrap();
    drop(pool);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "workers outlived their pool"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[multiprocessing::test]
async fn imap_reads_its_input_lazily() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let pool = Pool::new(2).await.unwrap();
    for ordered in [true, false] {
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&pulled);
        // Ten million items, produced on demand.
        let items = (0..10_000_000u64).inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let taken: Vec<u64> = if ordered {
            pool.imap(square, items)
                .chunksize(4)
                .take(100)
                .map(|r| r.unwrap())
                .collect()
                .await
        } else {
            pool.imap_unordered(square, items)
                .chunksize(4)
                .take(100)
                .map(|r| r.unwrap())
                .collect()
                .await
        };
        assert_eq!(taken.len(), 100);
        let read = pulled.load(Ordering::Relaxed);
        // A window of 32 chunks per worker (2 workers × 32 × 4 items) ahead of what was
        // consumed: of ten million items, a few hundred are read.
        assert!(
            read <= 100 + 2 * 32 * 4 + 4,
            "read {read} items to yield 100 (ordered: {ordered})"
        );
    }
}

#[multiprocessing::test]
async fn short_tasks_do_not_wait_behind_a_long_one() {
    for processes in [2, 4] {
        let pool = Pool::new(processes).await.unwrap();
        let long = pool.apply_async(nap_then, 5_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Some of these are first handed to the busy worker; the idle ones take them back.
        let squares = pool.map(square, 0..16u64).chunksize(1).await.unwrap();
        assert_eq!(squares[15], 225);
        assert!(
            !long.ready(),
            "the short tasks waited for the 5 s task ({processes} workers)"
        );
        let mut quick = Vec::new();
        for i in 0..6u64 {
            quick.push(pool.apply_async(square, i));
        }
        for (i, r) in quick.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), (i * i) as u64);
        }
        assert!(
            !long.ready(),
            "apply_async waited for the 5 s task ({processes} workers)"
        );
        pool.terminate().await.unwrap();
    }
}

#[entry]
fn whoami(_: u64) -> (String, Option<u32>) {
    let me = multiprocessing::current_process();
    (me.name, multiprocessing::parent_process().map(|p| p.pid))
}

#[entry]
async fn spawn_from_a_task(x: u64) -> u64 {
    let p = multiprocessing::Process::spawn(square, x)
        .await
        .expect("a pool task can spawn");
    p.join().await.expect("the grandchild returns")
}

#[multiprocessing::test]
async fn tasks_run_inside_their_workers_launch_context() {
    let pool = Pool::builder()
        .processes(2)
        .name_prefix("ctx")
        .build()
        .await
        .unwrap();
    for (name, parent) in pool.map(whoami, 0..8).chunksize(1).await.unwrap() {
        assert!(name.starts_with("ctx-"), "{name}");
        assert_eq!(parent, Some(std::process::id()));
    }
    assert_eq!(pool.apply(spawn_from_a_task, 7).await.unwrap(), 49);
}

#[multiprocessing::test]
async fn calls_made_before_close_still_run() {
    let pool = Pool::new(2).await.unwrap();
    let stream = pool.imap(square, 0..100u64).chunksize(3);
    let map = pool.map(square, 0..50u64);
    pool.close();
    let streamed: Vec<u64> = stream.map(|r| r.unwrap()).collect().await;
    assert_eq!(streamed, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(map.await.unwrap().len(), 50);
    assert!(
        matches!(pool.apply(square, 1).await, Err(Error::PoolClosed)),
        "a call made after close is refused"
    );
    pool.join().await.unwrap();
}

/// A value of plain runs the codec moves whole (and a nested one it does not), sent to a worker
/// and returned with each part changed there.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Runs {
    bytes: Vec<u8>,
    floats: Vec<f64>,
    ints: Vec<i64>,
    text: String,
    nested: Vec<Vec<u16>>,
    maybe: Option<Vec<bool>>,
}

#[entry]
fn reverse_runs(mut r: Runs) -> Runs {
    r.bytes.reverse();
    r.floats.iter_mut().for_each(|f| *f = -*f);
    r.ints.iter_mut().for_each(|i| *i = i.wrapping_neg());
    r.text = r.text.chars().rev().collect();
    r.nested.reverse();
    r.maybe = r.maybe.map(|v| v.into_iter().map(|b| !b).collect());
    r
}

#[entry]
fn sum_bytes(data: Vec<u8>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[multiprocessing::test]
async fn plain_runs_arrive_whole_in_apply_and_map() {
    let pool = Pool::new(2).await.unwrap();
    let runs = Runs {
        bytes: (0..3 << 20).map(|i| (i * 7) as u8).collect(),
        floats: (0..70_000).map(|i| f64::from(i) * 0.5 - 3.0).collect(),
        ints: (0..1_000).map(|i| (i - 500) << 40).collect(),
        text: "plain runs ✓".repeat(20),
        nested: vec![vec![1, 300, u16::MAX], vec![]],
        maybe: Some(vec![true, false, true]),
    };
    let mut want = runs.clone();
    want.bytes.reverse();
    want.floats.iter_mut().for_each(|f| *f = -*f);
    want.ints.iter_mut().for_each(|i| *i = -*i);
    want.text = want.text.chars().rev().collect();
    want.nested.reverse();
    want.maybe = Some(vec![false, true, false]);
    assert_eq!(pool.apply(reverse_runs, runs.clone()).await.unwrap(), want);
    let blobs: Vec<Vec<u8>> = (0..40).map(|n| vec![n as u8; 1 + n * 1000]).collect();
    let sums = pool
        .map(sum_bytes, blobs.clone())
        .chunksize(3)
        .await
        .unwrap();
    let expected: Vec<u64> = blobs
        .iter()
        .map(|b| b.iter().map(|&x| u64::from(x)).sum())
        .collect();
    assert_eq!(sums, expected);
    pool.terminate().await.unwrap();
}
