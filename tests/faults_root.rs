//! SIGKILL of a root whose children hold queues, pipes and a pool: every descendant is gone
//! within a second, and the run directory (with its sockets) that the dead root could not remove
//! is reclaimed by the next launch.
//!
//! The outer test runs this test binary again (without the child marker) for the ignored test
//! `root_holding_queues_pipes_and_a_pool`, which writes its descendants' pids and its run
//! directory to files and waits to be killed; then for `next_launch`, which only starts.

mod faults_common;

use faults_common::{alive, signal};
use multiprocessing::{entry, pipe, Connection, Pool, Process, Queue};
use std::path::Path;
use std::time::{Duration, Instant};

#[entry]
async fn wait_on_queue(q: Queue<u32>) {
    let _ = q.get().await;
}

#[entry]
async fn wait_on_pipe(conn: Connection<u32>) {
    let _ = conn.recv().await;
}

#[entry]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
#[ignore = "run by `sigkill_of_a_busy_root_leaves_nothing_and_its_run_dir_is_reclaimed`"]
async fn root_holding_queues_pipes_and_a_pool() {
    let Ok(report) = std::env::var("MP_FAULTS_ROOT") else {
        return;
    };
    let q = Queue::<u32>::new();
    let (_here, there) = pipe::<u32>().unwrap();
    let mut pids = vec![
        Process::spawn(wait_on_queue, q.clone())
            .await
            .unwrap()
            .pid(),
        Process::spawn(wait_on_pipe, there).await.unwrap().pid(),
    ];
    let pool = Pool::new(2).await.unwrap();
    // The workers are busy when the root dies.
    let _busy: Vec<_> = (0..4).map(|_| pool.apply_async(sleep_ms, 20_000)).collect();
    pids.extend(pool.worker_pids().await.unwrap());
    let dir = multiprocessing::__private::testing::run_dir().unwrap();
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(format!("{report}.dir"), dir.to_string_lossy().as_bytes()).unwrap();
    std::fs::write(&report, text).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
}

#[multiprocessing::test]
#[ignore = "run by `sigkill_of_a_busy_root_leaves_nothing_and_its_run_dir_is_reclaimed`"]
async fn next_launch() {
    assert!(multiprocessing::__private::testing::run_dir().is_ok());
}

fn run_ignored(test: &str, report: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("MP_FAULTS_ROOT", report)
    .stdout(std::process::Stdio::null());
    cmd
}

fn wait_for_report(report: &str) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let pids: Vec<u32> = std::fs::read_to_string(report)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.len() == 4 || start.elapsed() > Duration::from_secs(20) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_of_a_busy_root_leaves_nothing_and_its_run_dir_is_reclaimed() {
    let report = std::env::temp_dir()
        .join(format!("faults-root-{}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let mut root = run_ignored("root_holding_queues_pipes_and_a_pool", &report)
        .spawn()
        .unwrap();
    let pids = wait_for_report(&report);
    let dir = std::fs::read_to_string(format!("{report}.dir")).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(format!("{report}.dir"));
    assert_eq!(pids.len(), 4, "two children and two pool workers: {pids:?}");
    assert!(pids.iter().all(|&p| alive(p)));
    let sockets = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert!(sockets > 0, "the run directory holds the run's sockets");

    root.kill().unwrap(); // SIGKILL
    root.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|&p| alive(p)) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = killed.elapsed();
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    signal(&survivors, libc::SIGKILL);
    assert!(survivors.is_empty(), "outlived the root: {survivors:?}");
    assert!(took < Duration::from_secs(1), "descendants took {took:?}");

    // The dead root could not remove its directory; the next launch does.
    assert!(Path::new(&dir).exists(), "who removed {dir}?");
    let status = run_ignored("next_launch", &report).status().unwrap();
    let reclaimed = !Path::new(&dir).exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success());
    assert!(reclaimed, "the next launch left {dir} behind");
}
