//! Spawning children and getting their values back: argument shapes, sync and async entries,
//! names, exit codes, many children at once, grandchildren.

use multiprocessing::{entry, Process, Run, StartMethod};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[entry]
fn nothing() {}

#[entry]
fn through_the_runtime(x: u64) -> u64 {
    // A sync entry finds its process's runtime, as code on tokio's blocking pool does.
    let handle = tokio::runtime::Handle::current();
    handle.block_on(async move { tokio::spawn(async move { x + 1 }).await.unwrap() })
}

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

#[entry]
fn describe(name: String, age: u8, tags: Vec<String>) -> String {
    format!("{name} ({age}): {}", tags.join(","))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[entry]
fn flip(p: Point) -> Point {
    Point { x: p.y, y: p.x }
}

#[entry]
async fn slow_len(s: String) -> usize {
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.len()
}

#[entry]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[entry]
fn whoami() -> (String, u32, Option<u32>, Option<String>) {
    let me = multiprocessing::current_process();
    let parent = multiprocessing::parent_process();
    (
        me.name,
        me.pid,
        parent.as_ref().map(|p| p.pid),
        parent.map(|p| p.name),
    )
}

#[entry]
async fn spawn_grandchild(x: u64) -> (u32, u64) {
    let p = Process::spawn(square, x).await.expect("a child can spawn");
    let value = p.join().await.expect("the grandchild returns");
    (p.pid(), value)
}

#[derive(Debug, Serialize, Deserialize)]
struct Greeter {
    greeting: String,
    times: usize,
}

#[entry]
impl Run for Greeter {
    type Output = Vec<String>;
    fn run(self) -> Vec<String> {
        vec![self.greeting; self.times]
    }
}

#[test]
fn entries_stay_callable_in_process() {
    assert_eq!(square(5), 25);
    assert_eq!(describe("a".into(), 1, vec![]), "a (1): ");
}

#[multiprocessing::test]
async fn sync_entries_with_several_argument_shapes() {
    let p = Process::spawn(nothing, ()).await.unwrap();
    p.join().await.unwrap();
    let p = Process::spawn(square, 12).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 144);
    let p = Process::spawn(
        describe,
        ("ann".to_string(), 7, vec!["x".to_string(), "y".to_string()]),
    )
    .await
    .unwrap();
    assert_eq!(p.join().await.unwrap(), "ann (7): x,y");
    let p = Process::spawn(flip, Point { x: 1, y: -2 }).await.unwrap();
    assert_eq!(p.join().await.unwrap(), Point { x: -2, y: 1 });
}

#[multiprocessing::test]
async fn async_entry_runs_on_the_childs_runtime() {
    let p = Process::spawn(slow_len, "hello".to_string()).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 5);
}

#[multiprocessing::test]
async fn handle_reports_pid_name_daemon_and_exitcode() {
    let p = Process::builder()
        .name("worker-a")
        .daemon(true)
        .spawn(sleep_ms, 200)
        .await
        .unwrap();
    assert_ne!(p.pid(), std::process::id());
    assert_eq!(p.name(), "worker-a");
    assert!(p.is_daemon());
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.join().await.unwrap(), 200);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    // join can be called again.
    assert_eq!(p.join().await.unwrap(), 200);

    let q = Process::spawn(nothing, ()).await.unwrap();
    assert!(q.name().starts_with("Process-"), "{}", q.name());
    assert!(!q.is_daemon());
    q.join().await.unwrap();
}

#[multiprocessing::test]
async fn join_is_cancel_safe() {
    let p = Process::spawn(sleep_ms, 300).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(20), p.join()).await;
    assert!(early.is_err(), "join returned before the child finished");
    assert!(p.is_alive());
    assert_eq!(p.join().await.unwrap(), 300);
}

#[multiprocessing::test]
async fn children_know_themselves_and_their_parent() {
    let p = Process::builder()
        .name("kid")
        .spawn(whoami, ())
        .await
        .unwrap();
    let (name, pid, parent_pid, parent_name) = p.join().await.unwrap();
    assert_eq!(name, "kid");
    assert_eq!(pid, p.pid());
    assert_eq!(parent_pid, Some(std::process::id()));
    assert_eq!(parent_name.as_deref(), Some("MainProcess"));
    assert_eq!(multiprocessing::current_process().name, "MainProcess");
    assert!(multiprocessing::parent_process().is_none());
}

#[multiprocessing::test]
async fn active_children_lists_running_children_only() {
    let p = Process::spawn(sleep_ms, 5_000).await.unwrap();
    let active: Vec<u32> = multiprocessing::active_children()
        .iter()
        .map(|c| c.pid)
        .collect();
    assert!(active.contains(&p.pid()), "{active:?}");
    p.kill();
    assert!(p.join().await.is_err());
    let active: Vec<u32> = multiprocessing::active_children()
        .iter()
        .map(|c| c.pid)
        .collect();
    assert!(!active.contains(&p.pid()), "{active:?}");
}

#[multiprocessing::test]
async fn two_hundred_children_at_once() {
    let spawns = (0..200u64).map(|i| Process::spawn(square, i));
    let children = futures::future::try_join_all(spawns).await.unwrap();
    let mut pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 200);
    let values = futures::future::try_join_all(children.iter().map(|c| c.join()))
        .await
        .unwrap();
    assert_eq!(values, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
    assert!(multiprocessing::active_children().is_empty());
}

#[multiprocessing::test]
async fn a_child_can_spawn_a_grandchild() {
    let p = Process::spawn(spawn_grandchild, 9).await.unwrap();
    let (grandchild, value) = p.join().await.unwrap();
    assert_eq!(value, 81);
    assert_ne!(grandchild, p.pid());
    assert_ne!(grandchild, std::process::id());
}

#[multiprocessing::test]
async fn spawn_run_sends_a_value_to_run() {
    let p = Process::spawn_run(Greeter {
        greeting: "hi".into(),
        times: 3,
    })
    .await
    .unwrap();
    assert_eq!(p.join().await.unwrap(), vec!["hi", "hi", "hi"]);
    let p = Process::builder()
        .name("greeter")
        .spawn_run(Greeter {
            greeting: "yo".into(),
            times: 1,
        })
        .await
        .unwrap();
    assert_eq!(p.name(), "greeter");
    assert_eq!(p.join().await.unwrap(), vec!["yo"]);
}

#[multiprocessing::test]
async fn builder_env_reaches_the_child() {
    let p = Process::builder()
        .env("MP_TEST_VALUE", "forty-two")
        .spawn(read_env, "MP_TEST_VALUE".to_string())
        .await
        .unwrap();
    assert_eq!(p.join().await.unwrap().as_deref(), Some("forty-two"));
}

#[entry]
fn read_env(key: String) -> Option<String> {
    std::env::var(key).ok()
}

#[multiprocessing::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_thread_runtime_and_inside_tokio_spawn() {
    let handle = tokio::spawn(async {
        let p = Process::spawn(square, 3).await?;
        p.join().await
    });
    assert_eq!(handle.await.unwrap().unwrap(), 9);
}

#[test]
fn cpu_count_is_positive() {
    assert!(multiprocessing::cpu_count() >= 1);
}

#[multiprocessing::test]
async fn a_sync_entry_can_use_the_childs_runtime() {
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let p = Process::builder()
            .start_method(method)
            .spawn(through_the_runtime, 41)
            .await
            .unwrap();
        assert_eq!(p.join().await.unwrap(), 42, "{method:?}");
    }
}
