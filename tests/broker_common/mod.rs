//! What the broker tests share: a real `redis-server` of their own, broker workers started as
//! this same test binary in worker mode, and a network namespace joined by a veth pair.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key the tests' pools and workers share.
pub(crate) const KEY: &str = "broker test key";

/// A `redis-server` on a free loopback port (and on `extra_bind`, if given), in a temporary
/// directory; killed and its directory removed when dropped.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: PathBuf,
    extra_bind: Option<String>,
    aof: bool,
    args: Vec<String>,
    /// TLS only: the port takes TLS connections, with these certificate, key and CA files.
    tls: Option<[PathBuf; 3]>,
}

impl Redis {
    /// Starts one; `None` (after printing why) where `redis-server` is not installed.
    pub(crate) fn start() -> Option<Redis> {
        Self::start_with(None, false)
    }

    /// As [`start`](Self::start), also listening on `extra_bind`, with AOF persistence if
    /// `aof` (`appendfsync always`, so every write is on disk before it is answered).
    pub(crate) fn start_with(extra_bind: Option<String>, aof: bool) -> Option<Redis> {
        Self::start_full(extra_bind, aof, &[])
    }

    /// As [`start`](Self::start), with more arguments for `redis-server`.
    pub(crate) fn start_with_args(args: &[&str]) -> Option<Redis> {
        Self::start_full(None, false, args)
    }

    fn start_full(extra_bind: Option<String>, aof: bool, args: &[&str]) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipped: redis-server is not installed (.ci/run installs it)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("broker-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the redis directory");
        let mut redis = Redis {
            child: None,
            port,
            dir,
            extra_bind,
            aof,
            args: args.iter().map(|a| a.to_string()).collect(),
            tls: None,
        };
        redis.launch().expect("redis-server started");
        Some(redis)
    }

    /// A `redis-server` that takes TLS only (`--port 0 --tls-port <port>`), with the server
    /// certificate `cert`, its key `key`, and `ca` (clients are not asked for a certificate).
    /// `None`, after printing why, where `redis-server` is missing or does not start with TLS.
    pub(crate) fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Option<Redis> {
        let mut redis = Self::start_full(None, false, &[])?;
        redis.kill();
        redis.tls = Some([cert.to_owned(), key.to_owned(), ca.to_owned()]);
        match redis.launch() {
            Ok(()) => Some(redis),
            Err(why) => {
                println!("skipped: redis-server does not start with TLS ({why})");
                None
            }
        }
    }

    /// Starts the server and waits until it accepts connections; `Err` if it exited first.
    fn launch(&mut self) -> Result<(), String> {
        let bind = match &self.extra_bind {
            Some(extra) => format!("127.0.0.1 {extra}"),
            None => "127.0.0.1".into(),
        };
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            &bind,
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .args(["--appendonly", if self.aof { "yes" } else { "no" }])
        .args(["--appendfsync", "always"])
        .args(&self.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some([cert, key, ca]) = &self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]);
        }
        let mut child = cmd.spawn().expect("start redis-server");
        // Its log goes nowhere, but for the last lines, kept to say why it did not start.
        let log = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                use std::io::BufRead;
                let mut last = std::collections::VecDeque::new();
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if last.len() == 3 {
                        last.pop_front();
                    }
                    last.push_back(line);
                }
                Vec::from(last).join(" | ")
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        // Up when it accepts connections (whatever it then says to a client without a password).
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let said = log.and_then(|l| l.join().ok()).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {said}"));
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain connection, to look into the server.
    pub(crate) fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// Kills the server (SIGKILL: no shutdown save) and starts it again on the same port and
    /// directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch().expect("redis-server started again");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The keys matching `pattern`.
    pub(crate) fn keys(&self, pattern: &str) -> Vec<String> {
        let mut con = self.connection().expect("connect to the test redis");
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut con)
            .expect("KEYS")
    }

    /// `XLEN key`.
    pub(crate) fn xlen(&self, key: &str) -> i64 {
        let mut con = self.connection().expect("connect to the test redis");
        redis::cmd("XLEN").arg(key).query(&mut con).expect("XLEN")
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub(crate) fn used_memory(&self) -> u64 {
        let mut con = self.connection().expect("connect to the test redis");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut con)
            .expect("INFO memory");
        used_memory(&info)
    }

    /// How many tasks the consumer group of `key` has delivered and not seen acknowledged,
    /// per consumer.
    pub(crate) fn pending_by_consumer(&self, key: &str) -> Vec<(String, i64)> {
        let mut con = self.connection().expect("connect to the test redis");
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(key)
            .arg("workers")
            .query(&mut con)
            .expect("XPENDING");
        let redis::Value::Array(parts) = reply else {
            return Vec::new();
        };
        let Some(redis::Value::Array(consumers)) = parts.into_iter().nth(3) else {
            return Vec::new();
        };
        consumers
            .into_iter()
            .filter_map(|c| redis::from_redis_value::<(String, i64)>(c).ok())
            .collect()
    }
}

/// What a [`Sampler`] saw: the largest values of each measure over the run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Maxima {
    /// The longest the task stream got (`XLEN`).
    pub(crate) tasks: i64,
    /// The longest any result stream of the name got (`XLEN`).
    pub(crate) results: i64,
    /// The most tasks pending in the workers' consumer group (`XPENDING` count).
    pub(crate) pending: i64,
    /// The most keys of the name at once.
    pub(crate) keys: usize,
    /// The highest `used_memory` (`INFO memory`), in bytes.
    pub(crate) used_memory: u64,
    /// How many samples were taken.
    pub(crate) samples: u64,
}

/// A thread that looks into the test's redis-server every ~20 ms: the length of every stream of
/// pool name `name`, the tasks pending in its consumer group, and `used_memory`.
pub(crate) struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Maxima>>,
}

impl Sampler {
    pub(crate) fn start(redis: &Redis, name: &str) -> Sampler {
        let mut con = redis.connection().expect("connect to the test redis");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pattern = format!("mp:{{{name}}}:*");
        let task = task_key(name);
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut max = Maxima::default();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut con)
                    .expect("KEYS");
                max.keys = max.keys.max(keys.len());
                for key in &keys {
                    let kind: String = redis::cmd("TYPE").arg(key).query(&mut con).expect("TYPE");
                    if kind != "stream" {
                        continue;
                    }
                    // A key may go between KEYS and XLEN: that reads as 0.
                    let len: i64 = redis::cmd("XLEN").arg(key).query(&mut con).unwrap_or(0);
                    if *key == task {
                        max.tasks = max.tasks.max(len);
                    } else {
                        max.results = max.results.max(len);
                    }
                }
                if keys.contains(&task) {
                    // The summary form: [count, first, last, [[consumer, count], ...]].
                    let summary: redis::Value = redis::cmd("XPENDING")
                        .arg(&task)
                        .arg("workers")
                        .query(&mut con)
                        .unwrap_or(redis::Value::Nil);
                    if let redis::Value::Array(parts) = summary {
                        if let Some(redis::Value::Int(n)) = parts.first() {
                            max.pending = max.pending.max(*n);
                        }
                    }
                }
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query(&mut con)
                    .expect("INFO memory");
                max.used_memory = max.used_memory.max(used_memory(&info));
                max.samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns what was seen.
    pub(crate) fn stop(mut self) -> Maxima {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .expect("the sampler thread")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `used_memory:` line of an `INFO memory` reply.
fn used_memory(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The task stream of pool `name`.
pub(crate) fn task_key(name: &str) -> String {
    format!("mp:{{{name}}}:tasks")
}

/// A broker worker: this test binary re-entering `test` in worker mode; killed when dropped.
pub(crate) struct Worker(Child);

impl Worker {
    /// Starts a worker of `processes` processes serving pool `name` at `url`, as
    /// `MULTIPROCESSING_WORKER=<url> <this test binary> --exact <test>`; with `prefix` (e.g.
    /// `ip netns exec <ns>`) in front.
    pub(crate) fn start(
        url: &str,
        name: &str,
        test: &str,
        processes: usize,
        prefix: &[&str],
    ) -> Worker {
        Self::start_with_env(url, name, test, processes, prefix, &[])
    }

    /// As [`start`](Self::start), with more environment variables.
    pub(crate) fn start_with_env(
        url: &str,
        name: &str,
        test: &str,
        processes: usize,
        prefix: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("MULTIPROCESSING_WORKER", url)
            .env("MULTIPROCESSING_POOL", name)
            .env("MULTIPROCESSING_KEY", KEY)
            .env("MULTIPROCESSING_PROCESSES", processes.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        Worker(cmd.spawn().expect("start a broker worker"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM (a clean stop), and wait for it.
    pub(crate) fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Waits (up to 20 s) until `check` holds, letting the test's other tasks run meanwhile.
pub(crate) async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
