//! The pool on Redis Streams, against a real `redis-server` of the test's own: every call shape
//! with workers in separate processes (this test binary in worker mode), keys cleaned up, a
//! forged task refused, a SIGKILLed worker's tasks claimed by another, Redis restarted mid-map,
//! and a worker cut off from Redis in a network namespace.
#![cfg(feature = "broker")]

mod broker_common;
mod netns_common;

use broker_common::{task_key, wait_until, Redis, Sampler, Worker, KEY};
use futures::StreamExt;
use multiprocessing::{entry, Error, Pool};
use netns_common::Netns;
use std::time::{Duration, Instant};

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
fn fails_on_13(x: u64) -> u64 {
    assert!(x != 13, "thirteen");
    x
}

/// Sleeps `ms`, then returns `x`: a task that takes long enough to be caught mid-run.
#[entry]
fn slow(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

/// Creates the file at `path`: a side effect a refused task must not have.
#[entry]
fn touch(path: String) {
    let _ = std::fs::write(path, b"ran");
}

/// A broker pool on `redis`, pool name `name`, with a short visibility timeout.
async fn pool(redis: &Redis, name: &str) -> Pool {
    Pool::builder()
        .broker(redis.url())
        .name(name)
        .key(KEY)
        .processes(4)
        .visibility_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("a broker pool")
}

/// Nothing of pool `name` is left in Redis but what belongs to the name: its (empty) task
/// stream and group, and its visibility timeout.
async fn assert_clean(redis: &Redis, name: &str) {
    let task = task_key(name);
    wait_until("the finished tasks are deleted", || redis.xlen(&task) == 0).await;
    let left: Vec<String> = redis
        .keys(&format!("mp:{{{name}}}:*"))
        .into_iter()
        .filter(|k| *k != task && !k.ends_with(":visibility-ms"))
        .collect();
    assert!(left.is_empty(), "keys left behind: {left:?}");
}

#[multiprocessing::test]
async fn every_call_shape_runs_on_broker_workers() {
    let Some(redis) = Redis::start() else { return };
    let name = "shapes";
    let test = "every_call_shape_runs_on_broker_workers";
    let _a = Worker::start(&redis.url(), name, test, 2, &[]);
    let _b = Worker::start(&redis.url(), name, test, 2, &[]);
    let pool = pool(&redis, name).await;

    assert_eq!(pool.apply(square, 7).await.unwrap(), 49);
    assert_eq!(pool.apply_async(add, (2, 3)).await.unwrap(), 5);
    assert_eq!(pool.apply(async_double, 21).await.unwrap(), 42);
    let squares: Vec<u64> = (0..1000).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..1000).await.unwrap(), squares);
    assert_eq!(
        pool.map(square, 0..1000).chunksize(1).await.unwrap(),
        squares
    );
    assert_eq!(
        pool.starmap(add, (0..100).map(|x| (x, 1))).await.unwrap(),
        (1..101).collect::<Vec<u64>>()
    );
    let ordered: Vec<u64> = pool
        .imap(square, 0..300)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(ordered, squares[..300]);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..300)
        .chunksize(7)
        .map(|r| r.unwrap())
        .collect()
        .await;
    unordered.sort_unstable();
    assert_eq!(unordered, squares[..300]);

    // One item's panic fails that item only.
    let outcomes: Vec<_> = pool.imap(fails_on_13, 0..20).collect().await;
    for (x, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(v) => assert_eq!(v, x as u64),
            Err(Error::Panicked { message, .. }) => {
                assert_eq!(x, 13);
                assert!(message.contains("thirteen"), "{message}");
            }
            Err(e) => panic!("item {x}: {e}"),
        }
    }
    // And `map` reports the first failure.
    assert!(matches!(
        pool.map(fails_on_13, 0..20).await,
        Err(Error::Panicked { .. })
    ));

    pool.close();
    pool.join().await.unwrap();
    assert_clean(&redis, name).await;
    assert!(matches!(
        pool.apply(square, 1).await,
        Err(Error::PoolClosed)
    ));
}

#[multiprocessing::test]
async fn dropping_a_call_cancels_its_unstarted_tasks_and_drop_removes_the_keys() {
    let Some(redis) = Redis::start() else { return };
    let name = "cancel";
    let test = "dropping_a_call_cancels_its_unstarted_tasks_and_drop_removes_the_keys";
    let _a = Worker::start(&redis.url(), name, test, 1, &[]);
    let pool = pool(&redis, name).await;
    // 5,000 tasks: `imap` sends a window ahead, the worker reads some of it.
    let mut stream = pool.imap(slow, (0..5000).map(|x| (x, 1)));
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);
    drop(stream);
    // The pool still serves; the tasks nobody read were deleted from the stream.
    assert_eq!(pool.apply(square, 3).await.unwrap(), 9);
    let stats = pool.stats().await.unwrap();
    assert!(stats.cancelled > 0, "{stats:?}");
    assert_eq!(
        stats.submitted,
        stats.completed
            + stats.failed
            + stats.cancelled
            + stats.queued as u64
            + stats.in_flight as u64,
        "{stats:?}"
    );
    wait_until("the cancelled tasks are off the stream", || {
        redis.xlen(&task_key(name)) == 0
    })
    .await;
    drop(pool);
    wait_until("the dropped pool's keys are gone", || {
        redis.keys(&format!("mp:{{{name}}}:results:*")).is_empty()
    })
    .await;
}

#[multiprocessing::test]
async fn a_forged_or_unsigned_task_is_refused() {
    let Some(redis) = Redis::start() else { return };
    let name = "forged";
    let test = "a_forged_or_unsigned_task_is_refused";
    let _a = Worker::start(&redis.url(), name, test, 1, &[]);
    let dir = std::env::temp_dir().join(format!("broker-forged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    let marker_text = marker.to_string_lossy().into_owned();

    // A writer with the wrong key: a well-formed task, signed with another key.
    let rogue = Pool::builder()
        .broker(redis.url())
        .name(name)
        .key("not the workers' key")
        .build()
        .await
        .unwrap();
    let forged = rogue.apply_async(touch, marker_text.clone());
    // And one with no signature at all.
    let mut con = redis.connection().unwrap();
    let _: String = redis::cmd("XADD")
        .arg(task_key(name))
        .arg("*")
        .arg("m")
        .arg(b"no signature here".as_slice())
        .query(&mut con)
        .unwrap();
    // The worker takes both off the stream without running them, and answers neither.
    wait_until("the worker has dealt with both", || {
        redis.xlen(&task_key(name)) == 0 && redis.pending_by_consumer(&task_key(name)).is_empty()
    })
    .await;
    let waited = tokio::time::timeout(Duration::from_millis(300), forged).await;
    assert!(waited.is_err(), "a forged task got an answer");
    assert!(!marker.exists(), "a forged task ran");

    // The same call with the right key runs.
    let pool = pool(&redis, name).await;
    pool.apply(touch, marker_text).await.unwrap();
    assert!(marker.exists());
    let _ = std::fs::remove_dir_all(&dir);
    drop(rogue);
}

#[multiprocessing::test]
async fn a_sigkilled_workers_tasks_are_claimed_and_every_item_returns_once() {
    let Some(redis) = Redis::start() else { return };
    let name = "claim";
    let test = "a_sigkilled_workers_tasks_are_claimed_and_every_item_returns_once";
    let mut a = Worker::start(&redis.url(), name, test, 2, &[]);
    let pool = pool(&redis, name).await;
    // 120 tasks of 20 ms, one item each.
    let map = pool
        .map(slow, (0..120).map(|x| (x, 20)))
        .chunksize(1)
        .retries(1);
    let run = tokio::spawn(async move { map.await });
    // Once `a` holds tasks, a second worker starts and `a` is killed with them.
    let key = task_key(name);
    wait_until("the first worker holds tasks", || {
        !redis.pending_by_consumer(&key).is_empty()
    })
    .await;
    let mut b = Worker::start(&redis.url(), name, test, 2, &[]);
    a.kill();
    let values = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the map finished")
        .unwrap()
        .unwrap();
    assert_eq!(values, (0..120).collect::<Vec<u64>>());
    // `b` stops cleanly, holding nothing: the next tasks all go to `c`.
    b.stop();

    // Without retries, a task of a lost worker fails with WorkerLost; each item answers once.
    // `c` alone takes the 60 tasks of 50 ms (3 s of work on its 2 processes), and is killed
    // with most of them unanswered; `d` claims them.
    let mut c = Worker::start(&redis.url(), name, test, 2, &[]);
    let stream = pool.imap_unordered(slow, (0..60).map(|x| (x, 50)));
    let run = tokio::spawn(async move { stream.collect::<Vec<_>>().await });
    wait_until("the new worker holds tasks", || {
        redis
            .pending_by_consumer(&key)
            .iter()
            .any(|(consumer, _)| consumer.ends_with(&format!(":{}", c.pid())))
    })
    .await;
    let _d = Worker::start(&redis.url(), name, test, 2, &[]);
    let dead = c.pid();
    c.kill();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the stream finished")
        .unwrap();
    assert_eq!(outcomes.len(), 60);
    let lost = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::WorkerLost { pid, .. }) if *pid == dead))
        .count();
    let mut values: Vec<u64> = outcomes.into_iter().filter_map(|o| o.ok()).collect();
    assert!(lost > 0, "no task was lost with the killed worker");
    assert_eq!(values.len() + lost, 60);
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len() + lost, 60, "an item was answered twice");
    pool.close();
    pool.join().await.unwrap();
    assert_clean(&redis, name).await;
}

#[multiprocessing::test]
async fn redis_restarted_without_persistence_fails_the_map_clearly() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let name = "restart";
    let test = "redis_restarted_without_persistence_fails_the_map_clearly";
    let _a = Worker::start(&redis.url(), name, test, 2, &[]);
    let pool = pool(&redis, name).await;
    let map = pool.map(slow, (0..200).map(|x| (x, 20))).chunksize(1);
    let run = tokio::spawn(async move { map.await });
    wait_until("the worker holds tasks", || {
        !redis.pending_by_consumer(&task_key(name)).is_empty()
    })
    .await;
    redis.restart();
    let outcome = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the map ended")
        .unwrap();
    match outcome {
        Err(Error::Broker(message)) => assert!(message.contains("Redis"), "{message}"),
        other => panic!("expected a broker error, got {other:?}"),
    }
    // The pool is finished; the worker reconnected, and a new pool is served.
    assert!(pool.apply(square, 2).await.is_err());
    let pool = self::pool(&redis, name).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), pool.apply(square, 5)).await;
    assert_eq!(answer.expect("the worker came back").unwrap(), 25);
}

/// With AOF (`appendfsync always`), Redis SIGKILLed mid-map and started again on the same port
/// and directory keeps the task stream, its consumer group and its pending tasks, and the pool's
/// result stream: the pool and the worker connect again and the map completes, every item
/// returned once, without retries. Then, nothing of the pool is left.
#[multiprocessing::test]
async fn redis_restarted_with_aof_mid_map_loses_no_item() {
    let Some(mut redis) = Redis::start_with(None, true) else {
        return;
    };
    let name = "aof";
    let test = "redis_restarted_with_aof_mid_map_loses_no_item";
    let _a = Worker::start(&redis.url(), name, test, 2, &[]);
    let pool = pool(&redis, name).await;
    // 300 tasks of 20 ms on 2 processes: about 3 s, cut by the restart after the first ones.
    let map = pool.map(slow, (0..300).map(|x| (x, 20))).chunksize(1);
    let run = tokio::spawn(async move { map.await });
    wait_until("the worker holds tasks", || {
        !redis.pending_by_consumer(&task_key(name)).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let values = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the map finished")
        .unwrap()
        .expect("the map survived the restart");
    assert_eq!(values, (0..300).collect::<Vec<u64>>());
    // The pool goes on serving.
    assert_eq!(pool.apply(square, 6).await.unwrap(), 36);
    pool.close();
    pool.join().await.unwrap();
    assert_clean(&redis, name).await;
}

/// A task Redis delivered to a worker in a read reply the worker never got (as when Redis is
/// killed between the two) is pending under that worker's name but held by nobody. The worker
/// takes it back after the visibility timeout and runs it, without counting a retry (it never
/// ran): the call gets its value. Made here by freezing the worker (SIGSTOP) and reading the
/// task in its name.
#[multiprocessing::test]
async fn a_task_delivered_in_a_lost_read_reply_is_taken_back_by_its_worker() {
    let Some(redis) = Redis::start() else { return };
    let name = "lost-reply";
    let test = "a_task_delivered_in_a_lost_read_reply_is_taken_back_by_its_worker";
    let worker = Worker::start(&redis.url(), name, test, 1, &[]);
    let pool = pool(&redis, name).await;
    // The worker is up and reading.
    assert_eq!(pool.apply(square, 2).await.unwrap(), 4);
    let pid = worker.pid() as i32;
    /// Sends SIGCONT when dropped, so that a failed assertion does not leave the worker frozen
    /// (and its `Drop`, which waits for it, hanging).
    struct Frozen(i32);
    impl Drop for Frozen {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen = Frozen(pid);
    // Its blocking read (1 s) ends on the server while it is frozen; it asks no other.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let call = pool.apply_async(square, 7);
    let key = task_key(name);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut con = redis.connection().unwrap();
    // Read in the worker's name once the pool has sent it (the stream may still hold the last
    // task, answered, if the worker froze before deleting it).
    wait_until("the task is read in the worker's name", || {
        let taken: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("workers")
            .arg(format!("{host}:{pid}"))
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query(&mut con)
            .expect("XREADGROUP");
        matches!(taken, redis::Value::Array(ref s) if !s.is_empty())
    })
    .await;
    drop(frozen);
    let value = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the worker took its task back");
    assert_eq!(value.unwrap(), 49);
    pool.close();
    pool.join().await.unwrap();
    assert_clean(&redis, name).await;
    drop(worker);
}

#[multiprocessing::test]
async fn a_worker_cut_off_by_a_network_namespace_loses_its_tasks_to_another() {
    let subnet = (std::process::id() % 250) as u8;
    let ns = match Netns::create(subnet) {
        Ok(ns) => ns,
        Err(reason) => {
            println!("skipped: no network namespace for this test ({reason})");
            return;
        }
    };
    let host = format!("198.18.{subnet}.1");
    let Some(redis) = Redis::start_with(Some(host.clone()), false) else {
        return;
    };
    let name = "netns";
    let test = "a_worker_cut_off_by_a_network_namespace_loses_its_tasks_to_another";
    let far_url = format!("redis://{host}:{}/0", redis.port);
    let mut far = Worker::start(&far_url, name, test, 2, &["ip", "netns", "exec", &ns.name]);
    let pool = pool(&redis, name).await;
    let map = pool
        .map(slow, (0..100).map(|x| (x, 20)))
        .chunksize(1)
        .retries(1);
    let run = tokio::spawn(async move { map.await });
    let key = task_key(name);
    wait_until("the far worker holds tasks", || {
        !redis.pending_by_consumer(&key).is_empty()
    })
    .await;
    let _near = Worker::start(&redis.url(), name, test, 2, &[]);
    // Cut the far worker off: its end of the link goes down, it is left running.
    Netns::ip(&["link", "set", &ns.veth, "down"]).unwrap();
    let values = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the map finished")
        .unwrap()
        .unwrap();
    assert_eq!(values, (0..100).collect::<Vec<u64>>());
    far.kill();
    drop(ns);
}

#[multiprocessing::test]
async fn the_user_and_password_come_from_the_url() {
    // An ACL user `app` with a password; the default user is off.
    let acl = ["--user", "app", "on", ">s3cret", "~*", "&*", "+@all"];
    let Some(redis) = Redis::start_with_args(&[&acl[..], &["--user", "default", "off"]].concat())
    else {
        return;
    };
    let name = "auth";
    let test = "the_user_and_password_come_from_the_url";
    let url = |password: &str| format!("redis://app:{password}@127.0.0.1:{}/0", redis.port);
    let refused = Pool::builder()
        .broker(url("wrong"))
        .name(name)
        .key(KEY)
        .build()
        .await;
    match refused {
        Err(Error::Broker(message)) => assert!(!message.contains("wrong"), "{message}"),
        other => panic!("expected a broker error, got {other:?}"),
    }
    let _a = Worker::start(&url("s3cret"), name, test, 1, &[]);
    let pool = Pool::builder()
        .broker(url("s3cret"))
        .name(name)
        .key(KEY)
        .build()
        .await
        .unwrap();
    assert_eq!(pool.apply(square, 12).await.unwrap(), 144);
}

/// The bound on what Redis holds for a pool, from the constants of the code:
/// - `broker_window` (default 4,096): tasks the pool keeps on the stream, sent and not answered;
/// - 64 tasks per worker process: what a worker reads ahead and holds until it has written
///   their results, acknowledged and deleted them (`crate::broker::worker`, its `room`);
/// - 4,096: the most results the pool's reader takes in one `XREAD`, deleted with its next read.
const WINDOW: i64 = 4096;
const HELD_PER_PROCESS: i64 = 64;
const READ_COUNT: i64 = 4096;

/// 1,000,000 items through Redis, twice (default chunks, then 10,000 chunks of 100, more than
/// the window), with two workers, while a sampler reads the pool's keys every ~20 ms. The task
/// stream never holds more than the window plus what the workers hold (a task answered is
/// deleted by its worker just after the pool has its result); the result stream never more than
/// the window plus one read; the consumer group's pending list never more than what the workers
/// hold. Every value is right, and after `join` nothing of the pool is left.
#[multiprocessing::test]
async fn a_million_item_map_keeps_redis_bounded_and_leaves_nothing_behind() {
    let Some(redis) = Redis::start() else { return };
    let name = "bounded";
    let test = "a_million_item_map_keeps_redis_bounded_and_leaves_nothing_behind";
    const WORKERS: i64 = 2;
    const PROCESSES: i64 = 2;
    let _a = Worker::start(&redis.url(), name, test, PROCESSES as usize, &[]);
    let _b = Worker::start(&redis.url(), name, test, PROCESSES as usize, &[]);
    let held = WORKERS * PROCESSES * HELD_PER_PROCESS;
    let tasks_bound = WINDOW + held;
    let results_bound = WINDOW + WINDOW.min(READ_COUNT);
    let pool = Pool::builder()
        .broker(redis.url())
        .name(name)
        .key(KEY)
        .processes((WORKERS * PROCESSES) as usize)
        .build()
        .await
        .expect("a broker pool");
    let baseline = redis.used_memory();
    let sampler = Sampler::start(&redis, name);
    const N: u64 = 1_000_000;
    let expected: Vec<u64> = (0..N).map(|x| x * x).collect();

    let started = Instant::now();
    let values = pool.map(square, 0..N).await.unwrap();
    let default_took = started.elapsed();
    assert!(
        values == expected,
        "a value of the default-chunk map is wrong"
    );
    drop(values);

    let started = Instant::now();
    let values = pool.map(square, 0..N).chunksize(100).await.unwrap();
    let chunked_took = started.elapsed();
    assert!(
        values == expected,
        "a value of the 100-item-chunk map is wrong"
    );
    drop(values);

    pool.close();
    pool.join().await.unwrap();
    let max = sampler.stop();
    println!(
        "1,000,000 items: default chunks (16 of 62,500) took {default_took:.2?}, chunks of 100 \
         (10,000) took {chunked_took:.2?}; maxima over {} samples: task stream {} (bound \
         {tasks_bound}), result stream {} (bound {results_bound}), pending {} (bound {held}), \
         keys {}, used_memory {} bytes (baseline {baseline})",
        max.samples, max.tasks, max.results, max.pending, max.keys, max.used_memory
    );
    assert!(max.samples > 0, "the sampler saw nothing");
    assert!(max.tasks > 0, "the sampler never saw a task on the stream");
    assert!(max.tasks <= tasks_bound, "{max:?}");
    assert!(max.results <= results_bound, "{max:?}");
    assert!(max.pending <= held, "{max:?}");
    assert_clean(&redis, name).await;
    // What the map put into Redis went with it: within 1 MiB of where it started.
    let after = redis.used_memory();
    assert!(
        after <= baseline + (1 << 20),
        "used_memory {after} after join, {baseline} before the maps"
    );
}
