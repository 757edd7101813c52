//! No orphans: when the root is killed with SIGKILL, every descendant exits within a second.
//!
//! The outer test runs this test binary again (without the child marker) to execute the ignored
//! test `root_that_gets_killed`, which spawns children and a grandchild, writes their pids to a
//! file and waits. The outer test SIGKILLs that root and checks every pid is gone.

use multiprocessing::{entry, Process};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[entry]
fn sleep_long() {
    std::thread::sleep(Duration::from_secs(30));
}

#[entry]
async fn child_with_grandchild() -> u32 {
    let g = Process::spawn(sleep_long, ())
        .await
        .expect("the grandchild starts");
    let pid = g.pid();
    // Report the grandchild's pid to the outer test.
    let path = std::env::var("MP_CHAOS_PIDS").expect("set by the outer test");
    let _ = std::fs::write(format!("{path}.grandchild"), format!("{pid}\n"));
    let _ = g.join().await;
    pid
}

#[multiprocessing::test]
#[ignore = "run by `sigkill_of_root_leaves_no_descendant`"]
async fn root_that_gets_killed() {
    let Ok(path) = std::env::var("MP_CHAOS_PIDS") else {
        return;
    };
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(Process::spawn(sleep_long, ()).await.unwrap().pid());
    }
    pids.push(
        Process::builder()
            .daemon(true)
            .spawn(sleep_long, ())
            .await
            .unwrap()
            .pid(),
    );
    pids.push(
        Process::spawn(child_with_grandchild, ())
            .await
            .unwrap()
            .pid(),
    );
    // A child of the fork server: it must die with the server, which dies with the root.
    let forked = Process::builder().start_method(multiprocessing::StartMethod::ForkServer);
    pids.push(forked.spawn(sleep_long, ()).await.unwrap().pid());
    let dir = multiprocessing::__private::testing::run_dir().unwrap();
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(format!("{path}.dir"), dir.to_string_lossy().as_bytes()).unwrap();
    std::fs::write(&path, text).unwrap();
    // Wait to be killed (bounded, in case nobody does).
    tokio::time::sleep(Duration::from_secs(20)).await;
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie waiting for init to reap it is dead for our purposes.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn read_pids(path: &str) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn sigkill_of_root_leaves_no_descendant() {
    let base: PathBuf = std::env::temp_dir().join(format!("mp-chaos-{}", std::process::id()));
    let path = base.to_string_lossy().into_owned();
    let mut root = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "root_that_gets_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MP_CHAOS_PIDS", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let (mut pids, mut grandchild) = (Vec::new(), Vec::new());
    while start.elapsed() < Duration::from_secs(15) && (pids.len() < 6 || grandchild.is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
        pids = read_pids(&path);
        grandchild = read_pids(&format!("{path}.grandchild"));
    }
    assert_eq!(pids.len(), 6, "the root did not report its children");
    assert_eq!(
        grandchild.len(),
        1,
        "the child did not report its grandchild"
    );
    pids.extend(grandchild);
    assert!(
        pids.iter().all(|&p| alive(p)),
        "every descendant runs before the kill"
    );

    root.kill().unwrap(); // SIGKILL
    root.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|&p| alive(p)) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    let took = killed.elapsed();

    // A SIGKILLed root cannot remove its run directory; clean up after it.
    if let Ok(dir) = std::fs::read_to_string(format!("{path}.dir")) {
        let _ = std::fs::remove_dir_all(dir.trim());
    }
    for suffix in ["", ".dir", ".grandchild"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    for &p in &survivors {
        // SAFETY: kill(2) on a pid we started; leaves nothing behind if the test fails.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(
        survivors.is_empty(),
        "descendants outlived the root: {survivors:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "descendants took {took:?} to exit"
    );
}
