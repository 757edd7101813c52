//! No segment outlives its users: a root that maps shared memory (a `SharedMemory`, a `Value`
//! and its lock, which maps a lock arena) and hands it to children, then ends normally, panics,
//! or is SIGKILLed, leaves no `memfd:` mapping or descriptor in any process and nothing new in
//! `/dev/shm`.
//!
//! The outer tests run this binary again to execute the ignored `leak_root`, which reports its
//! pid and its children's in a file and waits for a go-ahead (or a SIGKILL). Before it ends,
//! the outer test checks that every one of them does map the memory (so the count after the end
//! means something); afterwards it counts `memfd:multiprocessing` entries in the maps and
//! descriptors of every process left in the root's process group (the whole tree: the root, its
//! children, fork server and spares), so tests running beside it do not count.

use multiprocessing::{entry, Process, SharedMemory, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MEMFD: &str = "memfd:multiprocessing";

/// Maps the memory, reports that it does, and waits to be stopped.
#[entry]
async fn hold(shm: SharedMemory, v: Value<u32>) {
    shm.write(0, &[1]);
    // Locking maps the root's lock arena too; the lock is let go at once so both children can.
    drop(v.lock().await.expect("lock"));
    v.fetch_add(1);
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[multiprocessing::test]
#[ignore = "run by the outer tests below"]
async fn leak_root() {
    let (Ok(path), Ok(mode)) = (std::env::var("MP_LEAK_FILE"), std::env::var("MP_LEAK_MODE"))
    else {
        return;
    };
    let shm = SharedMemory::create(8 << 20).unwrap();
    let v = Value::new(0u32).unwrap();
    let mut pids = vec![std::process::id()];
    for _ in 0..2 {
        let child = Process::builder()
            .daemon(true)
            .spawn(hold, (shm.clone(), v.clone()))
            .await
            .unwrap();
        pids.push(child.pid());
    }
    let start = Instant::now();
    while v.load() < 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(format!("{path}.tmp"), text).unwrap();
    std::fs::rename(format!("{path}.tmp"), &path).unwrap();
    let go = format!("{path}.go");
    while !Path::new(&go).exists() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if mode == "panic" {
        panic!("the leak test's root panics on purpose");
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// `memfd:multiprocessing` mappings and descriptors of process `pid`.
fn memfds_of(pid: &str) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mapped = maps.lines().filter(|l| l.contains(MEMFD)).count();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().contains(MEMFD))
                .count()
        })
        .unwrap_or(0);
    mapped + fds
}

/// Every process on the machine (but this one) that maps or holds a segment of this crate.
fn holders(group: u32) -> Vec<(String, usize)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| process_group(pid) == Some(group))
        .map(|pid| {
            let n = memfds_of(&pid);
            (pid, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`, after the parenthesised name).
fn process_group(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

fn dev_shm() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn run(mode: &str) {
    let base: PathBuf = std::env::temp_dir().join(format!("mp-leak-{mode}-{}", std::process::id()));
    let path = base.to_string_lossy().into_owned();
    let shm_before = dev_shm();
    // The root leads a process group of its own, which every process of its tree inherits (the
    // crate never changes it): that is how the check below finds the tree's processes, and only
    // them, even after the root is gone and while other tests map segments of their own.
    let mut root = std::process::Command::new(std::env::current_exe().unwrap())
        .process_group(0)
        .args([
            "--exact",
            "leak_root",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MP_LEAK_FILE", &path)
        .env("MP_LEAK_MODE", mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut pids: Vec<u32> = Vec::new();
    while pids.len() < 3 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        pids = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
    }
    assert_eq!(pids.len(), 3, "the root did not report its children");
    for pid in &pids {
        assert!(
            memfds_of(&pid.to_string()) > 0,
            "process {pid} maps the shared memory while it runs"
        );
    }
    if mode == "kill" {
        root.kill().unwrap();
    } else {
        std::fs::write(format!("{path}.go"), b"").unwrap();
    }
    let status = root.wait().unwrap();
    let ended = Instant::now();
    while pids.iter().any(|&p| alive(p)) && ended.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    let left = holders(root.id());
    for suffix in ["", ".go"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    for &p in &survivors {
        // SAFETY: kill(2) on a pid this test started; leaves nothing behind if it fails.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
    match mode {
        "exit" => assert!(status.success(), "{status:?}"),
        _ => assert!(!status.success(), "{status:?}"),
    }
    assert!(survivors.is_empty(), "still running: {survivors:?}");
    assert!(left.is_empty(), "segments still mapped or open: {left:?}");
    assert_eq!(dev_shm(), shm_before, "/dev/shm changed");
}

/// One test for the three endings, run one after the other, each root in a process group of
/// its own.
#[test]
fn no_segment_outlives_a_root_that_exits_panics_or_is_sigkilled() {
    for mode in ["exit", "panic", "kill"] {
        let start = Instant::now();
        run(mode);
        eprintln!("{mode}: {:?}", start.elapsed());
    }
}
