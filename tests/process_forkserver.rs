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
