//! `StartMethod::ForkServer`: children forked from a single-threaded server behave as spawned
//! ones do: values, failures, signals, many at once, pools, and no orphans.

use futures::StreamExt;
use multiprocessing::{entry, Error, Pool, Process, StartMethod};
use std::time::Duration;

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

#[entry]
fn boom() -> u64 {
    panic!("forked boom")
}

#[entry]
fn sleep_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[entry]
fn exit_with(code: i32) {
    std::process::exit(code);
}

#[entry]
fn parent_and_env() -> (Option<u32>, Option<String>, String) {
    let parent = multiprocessing::parent_process().map(|p| p.pid);
    (
        parent,
        std::env::var("MP_FORKED").ok(),
        multiprocessing::current_process().name,
    )
}

#[entry]
fn die_on(x: u64) -> u64 {
    if x == 7 {
        std::process::abort();
    }
    x
}

#[entry]
fn os_parent() -> u32 {
    // SAFETY: getppid(2) has no preconditions and cannot fail.
    (unsafe { libc::getppid() }) as u32
}

#[entry]
fn daemon_flag_and_grandchild(x: u64) -> (bool, u64) {
    // A sync entry of a forked child runs on a thread that may predate the child's identity:
    // it must still see its own context, to report it and to start children of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grandchild = runtime.block_on(async {
        let p = forked().spawn(square, x).await?;
        p.join().await
    });
    (
        multiprocessing::current_process().daemon,
        grandchild.unwrap(),
    )
}

/// The pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the parenthesised name: state, ppid, ...
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        if after.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[entry]
fn bytes_of(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; n])
}

fn forked() -> multiprocessing::ProcessBuilder {
    Process::builder().start_method(StartMethod::ForkServer)
}

#[multiprocessing::test]
async fn forked_children_return_values_and_errors() {
    let p = forked().spawn(square, 12).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 144);
    assert_eq!(p.exitcode(), Some(0));

    let p = forked().spawn(boom, ()).await.unwrap();
    match p.join().await {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "forked boom"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));

    let p = forked().spawn(exit_with, 4).await.unwrap();
    assert!(matches!(
        p.join().await,
        Err(Error::ProcessDied {
            exitcode: Some(4),
            ..
        })
    ));

    let p = forked().spawn(sleep_forever, ()).await.unwrap();
    p.kill();
    assert!(matches!(
        p.join().await,
        Err(Error::ProcessDied {
            signal: Some(9),
            ..
        })
    ));
    assert_eq!(p.exitcode(), Some(-9));
}

#[multiprocessing::test]
async fn forked_child_knows_its_parent_and_gets_its_env() {
    let p = forked()
        .name("forked-one")
        .env("MP_FORKED", "yes")
        .spawn(parent_and_env, ())
        .await
        .unwrap();
    let (parent, env, name) = p.join().await.unwrap();
    assert_eq!(
        parent,
        Some(std::process::id()),
        "the parent is the process that asked, not the server"
    );
    assert_eq!(env.as_deref(), Some("yes"));
    assert_eq!(name, "forked-one");
}

#[multiprocessing::test]
async fn a_hundred_forked_children_at_once() {
    let children = futures::future::try_join_all((0..100u64).map(|i| forked().spawn(square, i)))
        .await
        .unwrap();
    let values = futures::future::try_join_all(children.iter().map(|c| c.join()))
        .await
        .unwrap();
    assert_eq!(values, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
    assert!(multiprocessing::active_children().is_empty());
}

#[multiprocessing::test]
async fn a_pool_of_forked_workers_survives_a_crash() {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::ForkServer)
        .build()
        .await
        .unwrap();
    assert_eq!(pool.map(square, 0..1000).await.unwrap()[999], 998_001);
    let results: Vec<_> = pool.imap(die_on, 0..20).collect().await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(matches!(
        results[7],
        Err(Error::WorkerLost {
            signal: Some(6),
            ..
        })
    ));
    assert_eq!(pool.apply(square, 3).await.unwrap(), 9);
    pool.close();
    pool.join().await.unwrap();
}

#[multiprocessing::test]
async fn a_forked_daemon_knows_it_and_can_start_children_from_a_sync_entry() {
    let p = forked()
        .daemon(true)
        .spawn(daemon_flag_and_grandchild, 9)
        .await
        .unwrap();
    assert_eq!(p.join().await.unwrap(), (true, 81));
}

/// The server keeps one child made ahead of need (a spare); one that dies while it waits is
/// replaced, and the next start does not fail for it.
#[multiprocessing::test]
async fn a_spare_that_dies_while_it_waits_is_replaced() {
    let p = forked().spawn(os_parent, ()).await.unwrap();
    let server = p.join().await.unwrap();
    assert_ne!(
        server,
        std::process::id(),
        "a forked child's OS parent is the server"
    );
    // The next spare is made while the first child runs: wait until it is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let spare = loop {
        if let [spare] = children_of(server)[..] {
            break spare;
        }
        assert!(std::time::Instant::now() < deadline, "no spare appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        multiprocessing::active_children().is_empty(),
        "a spare is not an active child"
    );
    // SAFETY: kill(2) with a pid we just read from /proc as a child of our fork server.
    unsafe { libc::kill(spare as i32, libc::SIGKILL) };
    // Until the server has reaped it and said so, a dead spare cannot be told from a live one
    // (as a child killed right after it started cannot): give the news time to arrive.
    while std::path::Path::new(&format!("/proc/{spare}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for x in 0..3 {
        let p = forked().spawn(square, x).await.unwrap();
        assert_ne!(p.pid(), spare);
        assert_eq!(p.join().await.unwrap(), x * x);
    }
}

#[entry]
fn echo_bytes(data: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    data
}

/// A spare made under one frame limit and assigned under another follows the new one, as a
/// child started afresh would, and still reads what its parent sends in frames of the old one.
#[multiprocessing::test]
async fn a_spare_takes_the_frame_limit_in_force_when_it_is_assigned() {
    // The first spawn starts the server; the next spare is made, and connects, under the
    // default limit (16 MiB frames) before the limit drops.
    let p = forked().spawn(square, 2).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    multiprocessing::set_max_frame_size(64 << 10);
    let data = serde_bytes::ByteBuf::from(vec![5u8; 1 << 20]);
    let p = forked().spawn(echo_bytes, data.clone()).await.unwrap();
    assert_eq!(p.join().await.unwrap(), data);
    let p = forked().spawn(bytes_of, 1 << 20).await.unwrap();
    assert_eq!(p.join().await.unwrap().len(), 1 << 20);
}

#[entry]
async fn async_square(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    x * x
}

#[entry]
fn len_of(data: serde_bytes::ByteBuf) -> usize {
    data.len()
}

/// An async entry's call, which a spare's call thread leaves to the runtime thread, and a sync
/// entry's call whose 32 MiB argument the call thread reads whole before running it.
#[multiprocessing::test]
async fn a_spare_runs_async_entries_and_large_arguments() {
    for x in [3u64, 4, 5] {
        let p = forked().spawn(async_square, x).await.unwrap();
        assert_eq!(p.join().await.unwrap(), x * x);
    }
    for n in [1usize, 32 << 20] {
        let p = forked()
            .spawn(len_of, serde_bytes::ByteBuf::from(vec![1u8; n]))
            .await
            .unwrap();
        assert_eq!(p.join().await.unwrap(), n);
    }
}
