//! Shared memory and locks under SIGKILL.
//!
//! - Every process mapping a segment is SIGKILLed: no process on the machine maps the memfd or
//!   holds a descriptor of it afterwards (the kernel has freed it), the survivor included.
//! - The root is SIGKILLed while its children hold a lock (one holding it, one asleep in
//!   `acquire`), an anonymous segment and a named one: every descendant is gone within a
//!   second, no process maps or holds either memfd, and `/dev/shm` is as it was. The outer
//!   test runs this binary again for the ignored `root_holding_locks_and_memory`, which reports
//!   its children's pids and the segments' inodes in a file and waits to be killed.

mod faults_common;

use faults_common::{alive, signal};
use multiprocessing::{entry, Lock, Process, SharedMemory, Value};
use std::time::{Duration, Instant};

const MEMFD: &str = "/memfd:multiprocessing";

/// The inode of the memfd mapped at `ptr` in this process.
fn inode_at(ptr: *mut u8) -> u64 {
    let start = format!("{:x}-", ptr as usize);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no mapping at {start}"));
    assert!(line.contains(MEMFD), "{line}");
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// Every process on the machine that maps memfd `inode` or holds a descriptor of it.
fn holders(inode: u64) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let pids = std::fs::read_dir("/proc").unwrap().filter_map(|e| {
        e.ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
    });
    for pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mapped = maps
            .lines()
            .any(|l| l.contains(MEMFD) && l.split_whitespace().nth(4) == Some(&inode.to_string()));
        let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(|e| e.ok()).any(|fd| {
                    let memfd = std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with(MEMFD));
                    memfd && std::fs::metadata(fd.path()).is_ok_and(|m| m.ino() == inode)
                })
            })
            .unwrap_or(false);
        if mapped || held {
            found.push(pid);
        }
    }
    found
}

/// Maps the memory, says so, and waits to be killed.
#[entry]
async fn map_and_wait(shm: SharedMemory, ready: Value<u32>) {
    shm.write(0, &[1]);
    ready.fetch_add(1);
    tokio::time::sleep(Duration::from_secs(30)).await;
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[multiprocessing::test]
async fn sigkill_of_every_process_mapping_a_segment_frees_it() {
    let shm = SharedMemory::create(4 << 20).unwrap();
    let inode = inode_at(shm.as_ptr());
    let ready = Value::new(0u32).unwrap();
    let mut children = Vec::new();
    for _ in 0..2 {
        let args = (shm.clone(), ready.clone());
        children.push(Process::spawn(map_and_wait, args).await.unwrap());
    }
    until("both children map the memory", || ready.load() == 2).await;
    drop(shm);
    let mut pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    pids.sort();
    // The root's own mapping of a large segment is unmapped on a thread of its own, at once.
    until("only the two children hold it", || {
        let mut mapping = holders(inode);
        mapping.sort();
        mapping == pids
    })
    .await;
    signal(&pids, libc::SIGKILL);
    for c in &children {
        assert!(c.join().await.is_err());
    }
    assert_eq!(holders(inode), Vec::<u32>::new(), "the memfd outlived them");
}

/// Holds the lock (or waits for it) and maps both segments until killed.
#[entry]
async fn lock_and_map(lock: Lock, shm: SharedMemory, ready: Value<u32>, first: bool) {
    let named = SharedMemory::open("faults-shm-root").await.expect("open");
    named.write(0, &[1]);
    shm.write(0, &[1]);
    if first {
        let _guard = lock.acquire().await.expect("acquire");
        ready.fetch_add(1);
        tokio::time::sleep(Duration::from_secs(30)).await;
    } else {
        ready.fetch_add(1);
        // Sleeps in `acquire` until the root's death ends everything.
        let _ = lock.acquire().await;
    }
}

#[multiprocessing::test]
#[ignore = "run by `sigkill_of_a_root_with_locks_and_memory_leaves_nothing`"]
async fn root_holding_locks_and_memory() {
    let Ok(report) = std::env::var("MP_FAULTS_SHM") else {
        return;
    };
    let lock = Lock::new();
    let shm = SharedMemory::create(4 << 20).unwrap();
    let named = SharedMemory::create_named("faults-shm-root", 1 << 20)
        .await
        .unwrap();
    let ready = Value::new(0u32).unwrap();
    let mut pids = Vec::new();
    // One after the other, so the first holds the lock before the second asks for it.
    for (n, first) in [(1, true), (2, false)] {
        let args = (lock.clone(), shm.clone(), ready.clone(), first);
        pids.push(Process::spawn(lock_and_map, args).await.unwrap().pid());
        until("the child is in place", || ready.load() == n).await;
    }
    // The second one's acquire goes to sleep on the word.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let inodes = [inode_at(shm.as_ptr()), inode_at(named.as_ptr())];
    let text = format!("{} {}\n{} {}\n", pids[0], pids[1], inodes[0], inodes[1]);
    std::fs::write(format!("{report}.tmp"), text).unwrap();
    std::fs::rename(format!("{report}.tmp"), &report).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
}

fn dev_shm() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The two lines of the report: the children's pids, the segments' inodes.
fn wait_for_report(report: &str) -> (Vec<u32>, Vec<u64>) {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(report) {
            let mut lines = text.lines();
            let mut numbers = || -> Vec<u64> {
                lines
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            };
            let pids = numbers().into_iter().map(|p| p as u32).collect();
            return (pids, numbers());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no report");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_of_a_root_with_locks_and_memory_leaves_nothing() {
    let before = dev_shm();
    let report = std::env::temp_dir()
        .join(format!("faults-shm-{}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let mut root = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "root_holding_locks_and_memory",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MP_FAULTS_SHM", &report)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (pids, inodes) = wait_for_report(&report);
    let _ = std::fs::remove_file(&report);
    assert_eq!((pids.len(), inodes.len()), (2, 2), "{pids:?} {inodes:?}");
    assert!(pids.iter().all(|&p| alive(p)));
    for &inode in &inodes {
        let mut mapping = holders(inode);
        mapping.retain(|p| pids.contains(p));
        assert_eq!(mapping.len(), 2, "both children map segment {inode}");
    }

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
    for inode in inodes {
        assert_eq!(
            holders(inode),
            Vec::<u32>::new(),
            "memfd {inode} outlived the run"
        );
    }
    assert_eq!(dev_shm(), before, "nothing is left in /dev/shm");
}
