//! The OOM killer told apart from other SIGKILLs: a worker (and a `Process`) that outgrows its
//! memory cgroup's limit reports `oom == true`.
//!
//! The test makes a memory cgroup with a small limit and moves this test process into it, so
//! the children it then starts are inside too; that needs root and a writable cgroup hierarchy
//! (v2, or v1's `memory`), and the test is skipped, saying why, where there is none. It is the
//! only test of this binary, since it moves the whole process; it moves it back and removes
//! the cgroup at the end.

use multiprocessing::{entry, Error, Pool, Process};
use std::path::{Path, PathBuf};

/// The cgroup's limit; the workers try to take more.
const LIMIT: u64 = 256 << 20;

/// Takes (and touches) 1 GiB, which the cgroup does not allow.
#[entry]
fn hog() -> usize {
    let mut block = vec![0u8; 1 << 30];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    block.len()
}

/// A memory cgroup made for this test, with this process in it until dropped.
struct Cgroup {
    dir: PathBuf,
    /// The `cgroup.procs` of the cgroup this process came from.
    home: PathBuf,
}

impl Cgroup {
    /// Makes the cgroup, sets its limit and moves this process into it; `Err` says why not.
    fn enter() -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let root = Path::new("/sys/fs/cgroup");
        let name = format!("mp-oom-{}", std::process::id());
        let v2 = std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (home, dir, limits) = if v2 {
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or("no v2 line")?;
            let home = root.join(path.trim_start_matches('/'));
            // Under the root: a v2 cgroup with processes in it cannot give controllers to
            // children of its own.
            (
                home,
                root.join(&name),
                vec![("memory.max", LIMIT), ("memory.swap.max", 0)],
            )
        } else {
            let path = own
                .lines()
                .find_map(|l| l.split_once(":memory:").map(|(_, p)| p))
                .ok_or("no memory controller in v2 or v1")?;
            let home = root.join("memory").join(path.trim_start_matches('/'));
            let dir = home.join(&name);
            (home, dir, vec![("memory.limit_in_bytes", LIMIT)])
        };
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let cgroup = Cgroup {
            dir,
            home: home.join("cgroup.procs"),
        };
        for (file, value) in limits {
            let path = cgroup.dir.join(file);
            if path.exists() {
                std::fs::write(&path, value.to_string())
                    .map_err(|e| format!("cannot set {}: {e}", path.display()))?;
            }
        }
        std::fs::write(
            cgroup.dir.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("cannot enter {}: {e}", cgroup.dir.display()))?;
        Ok(cgroup)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.home, std::process::id().to_string());
        // Its processes are gone (the pool was joined); a cgroup's files go with its directory.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[multiprocessing::test]
async fn a_task_past_its_cgroup_limit_reports_the_oom_killer() {
    let cgroup = match Cgroup::enter() {
        Ok(cgroup) => cgroup,
        Err(why) => {
            println!("skipped: no memory cgroup can be made here ({why})");
            return;
        }
    };
    let pool = Pool::new(1).await.unwrap();
    match pool.apply(hog, ()).await {
        Err(Error::WorkerLost { signal, oom, .. }) => {
            assert_eq!(signal, Some(libc::SIGKILL));
            assert!(oom, "the OOM killer ended the worker");
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    pool.close();
    pool.join().await.unwrap();

    let p = Process::spawn(hog, ()).await.unwrap();
    match p.join().await {
        Err(Error::ProcessDied { signal, oom, .. }) => {
            assert_eq!(signal, Some(libc::SIGKILL));
            assert!(oom, "the OOM killer ended the process");
        }
        other => panic!("expected ProcessDied, got {other:?}"),
    }
    drop(cgroup);
}
