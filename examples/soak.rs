//! A bounded chaos soak: a pool of 3 workers on a stream of tasks, a queue between a child and
//! the root, and a `Lock` and an actor used by the root and another child, while a chaos task
//! SIGKILLs a random worker every 200-500 ms.
//!
//! Run with `cargo run --release --example soak -- --seconds N` (default 60). It prints a progress
//! line every 10 s and ends with one line
//! `submitted=… completed=… worker_lost=… retried=… hung=0 …`. A task whose worker is killed is
//! submitted once more (`retried`); `worker_lost` counts those lost twice. It exits non-zero
//! unless `submitted == completed + worker_lost`, no task hung, every queue item arrived once and
//! in order, the root's RSS stayed within 20% of its level after the first 10 s (half the run,
//! if shorter), and no process the soak made (every worker it saw, the producer) is left once the
//! pool is terminated. The launch's own helpers (fork server, spare) go when `main` returns.
//! The lock guards a shared counter bumped with a plain load and store by the root and a child:
//! it must end at the sum of their bumps (`lock_ops`); the actor adds every call it gets: it
//! must end at the number of calls answered (`actor_calls`); neither may fail.

#[path = "../tests/faults_common/mod.rs"]
mod faults_common;

use faults_common::alive;
use futures::stream::{FuturesUnordered, StreamExt};
use multiprocessing::{actor, entry, process_main, Error, Lock, Pool, Process, Queue, Value};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// An actor that adds what it is given.
#[derive(Debug, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[actor]
impl Tally {
    pub(crate) fn add(&mut self, by: u64) -> u64 {
        self.total += by;
        self.total
    }
}

/// Until `stop` is closed, every millisecond: bumps `counter` under `lock` (a plain load and
/// store, so two holders at once would lose a bump) and adds 1 at the actor. Returns how many
/// bumps and adds it made.
async fn use_lock_and_actor(
    lock: &Lock,
    counter: &Value<u64>,
    tally: &TallyRef,
    stop: &Queue<()>,
) -> multiprocessing::Result<(u64, u64)> {
    let (mut bumps, mut adds) = (0, 0);
    while !matches!(stop.try_get().await, Err(Error::Closed)) {
        let guard = lock.acquire().await?;
        let seen = counter.load();
        counter.store(seen + 1);
        drop(guard);
        bumps += 1;
        tally.add(1).await?;
        adds += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((bumps, adds))
}

/// The child's side of [`use_lock_and_actor`].
#[entry]
async fn lock_and_actor_user(
    lock: Lock,
    counter: Value<u64>,
    tally: TallyRef,
    stop: Queue<()>,
) -> (u64, u64) {
    use_lock_and_actor(&lock, &counter, &tally, &stop)
        .await
        .expect("the lock and the actor keep working")
}

/// A short task whose value names its item.
#[entry]
fn work(x: u64, micros: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(micros));
    x * 2 + 1
}

/// Puts 0, 1, 2, … on `q` until `stop` is closed; returns how many it put.
#[entry]
async fn produce(q: Queue<u64>, stop: Queue<()>) -> u64 {
    let mut n = 0;
    while !matches!(stop.try_get().await, Err(Error::Closed)) {
        for _ in 0..100 {
            q.put(n).await.expect("the root keeps the queue open");
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

/// xorshift64*: enough randomness for the chaos, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

#[derive(Debug, Default)]
struct Counts {
    submitted: u64,
    completed: u64,
    worker_lost: u64,
    retried: u64,
    hung: u64,
    kills: u64,
    wrong: u64,
}

fn rss_kib() -> u64 {
    // statm: size resident …, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn seconds_arg() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(60)
}

/// SIGKILLs a random worker every 200-500 ms until `end`; returns the number of kills and every
/// worker pid it saw.
async fn chaos(pool: &Pool, end: Instant, seed: u64) -> (u64, Vec<u32>) {
    let mut rng = Rng(seed | 1);
    let (mut kills, mut seen) = (0, Vec::new());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
        let pids = pool.worker_pids().await.unwrap_or_default();
        seen.extend(&pids);
        if pids.is_empty() {
            continue;
        }
        let pid = pids[rng.below(pids.len() as u64) as usize];
        // SAFETY: kill(2) on a worker of our own pool; a pid already gone yields ESRCH.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        kills += 1;
    }
    (kills, seen)
}

/// Runs one task; on `WorkerLost`, once more. Returns (value or error, whether it was retried).
async fn task(pool: &Pool, x: u64, micros: u64) -> (u64, Result<u64, Error>, bool) {
    let limit = Duration::from_secs(30);
    let once = |pool: &Pool| tokio::time::timeout(limit, pool.apply(work, (x, micros)));
    let first = once(pool).await.unwrap_or(Err(Error::Timeout));
    match first {
        Err(e) if e.is_worker_lost() => {
            let again = once(pool).await.unwrap_or(Err(Error::Timeout));
            (x, again, true)
        }
        other => (x, other, false),
    }
}

fn record(counts: &mut Counts, (x, outcome, retried): (u64, Result<u64, Error>, bool)) {
    counts.retried += u64::from(retried);
    match outcome {
        Ok(v) if v == x * 2 + 1 => counts.completed += 1,
        Ok(_) => counts.wrong += 1,
        Err(e) if e.is_worker_lost() => counts.worker_lost += 1,
        Err(Error::Timeout) => counts.hung += 1,
        Err(e) => {
            eprintln!("task {x}: {e}");
            counts.wrong += 1;
        }
    }
}

/// Feeds the pool a stream of tasks (64 in flight) until `end`, then waits for the last ones.
async fn drive(pool: &Pool, end: Instant, rss: &mut RssWatch) -> Counts {
    let mut counts = Counts::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut running = FuturesUnordered::new();
    let mut next_sample = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end || !running.is_empty() {
        while Instant::now() < end && running.len() < 64 {
            running.push(task(pool, counts.submitted, rng.below(2_000)));
            counts.submitted += 1;
        }
        if let Some(done) = running.next().await {
            record(&mut counts, done);
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_millis(500);
            rss.sample();
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            println!(
                "progress: t={}s submitted={} completed={} worker_lost={} retried={} rss_kib={}",
                next_report.duration_since(rss.start).as_secs() - 10,
                counts.submitted,
                counts.completed,
                counts.worker_lost,
                counts.retried,
                rss.now
            );
        }
    }
    counts
}

/// The root's RSS: its level once the run has settled, and the most it reached after.
struct RssWatch {
    start: Instant,
    settle_at: Instant,
    baseline: Option<u64>,
    now: u64,
    peak: u64,
}

impl RssWatch {
    fn sample(&mut self) {
        self.now = rss_kib();
        if Instant::now() >= self.settle_at {
            let base = *self.baseline.get_or_insert(self.now);
            self.peak = self.peak.max(self.now).max(base);
        }
    }

    /// Whether the peak stayed within 20% of the baseline.
    fn steady(&self) -> bool {
        self.baseline.is_some_and(|b| self.peak * 5 <= b * 6)
    }
}

/// Takes items until the queue is closed and drained; returns how many, and how many came out
/// of order (the producer puts 0, 1, 2, …).
async fn consume(items: &Queue<u64>) -> multiprocessing::Result<(u64, u64)> {
    let (mut next, mut disorder) = (0u64, 0u64);
    loop {
        match items.get().await {
            Ok(v) => {
                disorder += u64::from(v != next);
                next += 1;
            }
            Err(Error::Closed) => return Ok((next, disorder)),
            Err(e) => return Err(e),
        }
    }
}

/// Waits (up to 5 s) until none of `pids` runs; returns those that stayed.
async fn none_left(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let seconds = seconds_arg();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut rss = RssWatch {
        start,
        settle_at: start + Duration::from_secs(10.min(seconds / 2)),
        baseline: None,
        now: 0,
        peak: 0,
    };
    let pool = Pool::new(3).await?;
    let (items, stop) = (Queue::<u64>::new(), Queue::<()>::new());
    let producer = Process::spawn(produce, (items.clone(), stop.clone())).await?;
    let (lock, counter) = (Lock::new(), Value::new(0u64)?);
    let tally = Tally { total: 0 }.spawn().await?;
    let user_args = (lock.clone(), counter.clone(), tally.clone(), stop.clone());
    let user = Process::spawn(lock_and_actor_user, user_args).await?;
    let mut made = pool.worker_pids().await?;
    made.extend([producer.pid(), user.pid()]);
    made.extend(tally.pid());
    let driven = async {
        let counts = drive(&pool, end, &mut rss).await;
        stop.close().await?;
        let put = producer.join().await?;
        items.close().await?;
        Ok::<_, Error>((counts, put))
    };
    let seed = start.elapsed().as_nanos() as u64;
    let used = use_lock_and_actor(&lock, &counter, &tally, &stop);
    let (driven, kills, consumed, used) =
        tokio::join!(driven, chaos(&pool, end, seed), consume(&items), used);
    let (mut counts, put) = driven?;
    let (got, disorder) = consumed?;
    let ((bumps, adds), (child_bumps, child_adds)) = (used?, user.join().await?);
    let (lock_ops, actor_calls) = (bumps + child_bumps, adds + child_adds);
    let locked_ok = counter.load() == lock_ops;
    let actor_ok = tally.add(0).await? == actor_calls;
    tally.stop().await?;
    let (kills, seen) = kills;
    counts.kills = kills;
    made.extend(seen);
    made.extend(pool.worker_pids().await?);
    pool.terminate().await?;
    drop(pool);
    let left = none_left(&made).await;
    let ok = counts.submitted == counts.completed + counts.worker_lost
        && counts.hung == 0
        && counts.wrong == 0
        && put == got
        && disorder == 0
        && rss.steady()
        && left.is_empty()
        && locked_ok
        && actor_ok;
    println!(
        "submitted={} completed={} worker_lost={} retried={} hung={} kills={} queue_put={put} \
         queue_got={got} out_of_order={disorder} rss_kib_baseline={} rss_kib_peak={} processes_left={} \
         lock_ops={lock_ops} lock_exact={locked_ok} actor_calls={actor_calls} actor_exact={actor_ok}",
        counts.submitted,
        counts.completed,
        counts.worker_lost,
        counts.retried,
        counts.hung,
        counts.kills,
        rss.baseline.unwrap_or(0),
        rss.peak,
        left.len()
    );
    if !ok {
        // An error from main exits non-zero, after the launch has cleaned up its run.
        return Err(Error::Io(std::io::Error::other(format!(
            "soak failed: {counts:?}, processes left: {left:?}"
        ))));
    }
    Ok(())
}
