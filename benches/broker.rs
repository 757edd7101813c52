//! The pool on Redis Streams (`PoolBuilder::broker`) beside the local pool, on a `redis-server`
//! of its own (loopback, no persistence) and one worker of 2 processes: this bench binary again
//! in worker mode. Printed as JSON lines as the other benches, under the case names of
//! `../shared/bench/celery/bench.py` (Celery on a Redis broker, a prefork worker of 2), which
//! `benches/compare.sh` runs beside it.
//!
//! `cargo bench --bench broker` (add `-- --quick` for fewer repetitions). Needs `redis-server`.

use multiprocessing::{entry, process_main, Pool};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::{emit, repeat};

const KEY: &str = "broker bench key";
const ITEMS: u64 = 100_000;

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

/// A child killed (SIGTERM, then waited for) and its directory removed when dropped.
struct Owned(Child, Option<std::path::PathBuf>);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        if let Some(dir) = &self.1 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start_redis() -> std::io::Result<(String, Owned)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("broker-bench-{port}"));
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

fn start_worker(url: &str) -> std::io::Result<Owned> {
    let child = Command::new(std::env::current_exe()?)
        .env("MULTIPROCESSING_WORKER", url)
        .env("MULTIPROCESSING_POOL", "bench")
        .env("MULTIPROCESSING_PROCESSES", "2")
        .env("MULTIPROCESSING_KEY", KEY)
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Owned(child, None))
}

/// Items per second of `map(square, 0..ITEMS)` on `pool`, at `chunksize` (or the default).
async fn map_rate(
    pool: &Pool,
    chunksize: Option<usize>,
    reps: usize,
) -> multiprocessing::Result<Vec<f64>> {
    repeat(reps, || async {
        let t0 = Instant::now();
        let map = pool.map(square, 0..ITEMS);
        let r = match chunksize {
            Some(n) => map.chunksize(n).await?,
            None => map.await?,
        };
        assert_eq!(r[r.len() - 1], (ITEMS - 1) * (ITEMS - 1));
        Ok(ITEMS as f64 / t0.elapsed().as_secs_f64())
    })
    .await
}

#[process_main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        5
    };
    let (url, _redis) = start_redis()?;
    let _worker = start_worker(&url)?;
    let pool = Pool::builder()
        .broker(&url)
        .name("bench")
        .key(KEY)
        .processes(2)
        .build()
        .await?;
    let note = "100k x square(u64) over a local redis-server, one worker of 2 processes";
    let samples = map_rate(&pool, Some(1), reps).await?;
    emit("broker_single_tasks", "tasks/s", "higher", samples, note);
    let samples = map_rate(&pool, Some(1000), reps).await?;
    emit("broker_chunked_map", "items/s", "higher", samples, note);
    let samples = map_rate(&pool, None, reps).await?;
    emit(
        "broker_map_default_chunksize",
        "items/s",
        "higher",
        samples,
        note,
    );

    let samples = repeat(reps, || async {
        let mut times = Vec::with_capacity(300);
        for i in 0..300u64 {
            let t0 = Instant::now();
            assert_eq!(pool.apply(square, i).await?, i * i);
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
    .await?;
    emit(
        "broker_apply_roundtrip",
        "us",
        "lower",
        samples,
        "sequential apply through redis; median per rep",
    );
    pool.close();
    pool.join().await?;

    let local = Pool::new(2).await?;
    let samples = map_rate(&local, Some(1000), reps).await?;
    emit(
        "local_chunked_map",
        "items/s",
        "higher",
        samples,
        "the same map, chunks of 1000, on a local Pool(2): the broker's yardstick",
    );
    local.close();
    local.join().await?;
    Ok(())
}
