//! The same `Pool`, with its tasks on Redis Streams and workers that could be on other hosts.
//!
//! This starts a `redis-server` of its own on a free loopback port (or uses `REDIS_URL`), starts
//! two workers — this same binary again, in worker mode (`MULTIPROCESSING_WORKER=<url>`), with 2
//! processes each — then maps over 100,000 items from a pool on the broker, and prints the
//! throughput and how many items each worker ran. On real hosts, run the binary on each worker
//! host as `MULTIPROCESSING_WORKER=redis://<redis host>:6379/0 MULTIPROCESSING_KEY=<key> ./app`.
//!
//! Run it with `cargo run --release --example broker_pool` (needs `redis-server` installed
//! unless `REDIS_URL` is set).

use multiprocessing::{entry, Pool};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ITEMS: u64 = 100_000;
const KEY: &str = "broker_pool example key";

/// A little work per item; returns the pid of the process that ran it, to count per worker.
#[entry]
fn work(x: u64) -> (u64, u32) {
    let value = (0..x % 100).map(|i| i * i).sum();
    (value, std::process::id())
}

/// A child process killed (and its directory removed) when dropped.
struct Owned(Child, Option<std::path::PathBuf>);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped; SIGTERM lets a worker stop cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        if let Some(dir) = &self.1 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A `redis-server` on a free loopback port, in a temporary directory, without persistence.
fn start_redis() -> std::io::Result<(String, Owned)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("broker-pool-example-{port}"));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()?;
    let owned = Owned(child, Some(dir));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other("redis-server did not come up"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("redis://127.0.0.1:{port}/0"), owned))
}

/// This binary again, in worker mode, with 2 processes.
fn start_worker(url: &str) -> std::io::Result<Owned> {
    let child = Command::new(std::env::current_exe()?)
        .env("MULTIPROCESSING_WORKER", url)
        .env("MULTIPROCESSING_POOL", "broker_pool_example")
        .env("MULTIPROCESSING_PROCESSES", "2")
        .env("MULTIPROCESSING_KEY", KEY)
        .spawn()?;
    Ok(Owned(child, None))
}

/// The worker (of `workers`) whose process tree `pid` is in.
fn worker_of(pid: u32, workers: &[u32]) -> Option<u32> {
    let mut pid = pid;
    for _ in 0..4 {
        if workers.contains(&pid) {
            return Some(pid);
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        pid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
    }
    None
}

#[multiprocessing::process_main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _redis) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, redis) = start_redis()?;
            (url, Some(redis))
        }
    };
    let workers = [start_worker(&url)?, start_worker(&url)?];
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.0.id()).collect();
    let pool = Pool::builder()
        .broker(&url)
        .name("broker_pool_example")
        .key(KEY)
        .processes(4)
        .build()
        .await?;
    let started = Instant::now();
    let results = pool.map(work, 0..ITEMS).chunksize(500).await?;
    let elapsed = started.elapsed();
    let total: u64 = results.iter().map(|(v, _)| v).sum();
    println!(
        "mapped {ITEMS} items through Redis in {:.2} s: {:.0} items/s (sum {total})",
        elapsed.as_secs_f64(),
        ITEMS as f64 / elapsed.as_secs_f64()
    );
    let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
    for (_, pid) in &results {
        let who = match worker_of(*pid, &worker_pids) {
            Some(worker) => format!("worker {worker}"),
            None => format!("process {pid}"),
        };
        *per_worker.entry(who).or_default() += 1;
    }
    for (who, n) in per_worker {
        println!("{who} ran {n} items");
    }
    pool.close();
    pool.join().await?;
    Ok(())
}
