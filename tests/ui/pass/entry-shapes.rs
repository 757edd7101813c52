//! Every shape of entry compiles, stays callable in-process, and is accepted by `Process::spawn`
//! (type-checked in a function that is never called: this program spawns nothing).

use multiprocessing::{entry, Entry, Process, Run};
use serde::{Deserialize, Serialize};

#[entry]
fn zero() -> u32 {
    7
}

#[entry]
fn one(x: u64) -> u64 {
    x + 1
}

#[entry]
fn three(a: u8, b: String, c: Vec<u32>) -> String {
    format!("{a}{b}{}", c.len())
}

#[entry]
fn unit_return(_: (u8, u8)) {}

#[entry]
async fn async_zero() {}

#[entry]
async fn async_one(s: String) -> usize {
    s.len()
}

#[entry]
async fn async_three(a: u64, b: u64, c: u64) -> u64 {
    a + b + c
}

/// Documented, public, with a non-`Copy` result: all allowed.
#[entry]
pub fn documented(n: usize) -> Vec<String> {
    vec![String::new(); n]
}

#[derive(Serialize, Deserialize)]
struct Job {
    n: u64,
}

#[entry]
impl Run for Job {
    type Output = u64;

    fn run(self) -> u64 {
        self.n * 2
    }
}

fn is_entry<E: Entry>(_: E) -> &'static str {
    E::NAME
}

#[allow(dead_code)]
async fn spawns() -> multiprocessing::Result<()> {
    let _: u32 = Process::spawn(zero, ()).await?.join().await?;
    let _: u64 = Process::spawn(one, 1).await?.join().await?;
    let _: String = Process::spawn(three, (1, "b".to_string(), vec![3]))
        .await?
        .join()
        .await?;
    Process::spawn(unit_return, (1, 2)).await?.join().await?;
    Process::spawn(async_zero, ()).await?.join().await?;
    let _: usize = Process::spawn(async_one, "abc".to_string())
        .await?
        .join()
        .await?;
    let _: u64 = Process::builder()
        .name("three")
        .spawn(async_three, (1, 2, 3))
        .await?
        .join()
        .await?;
    let _: u64 = Process::spawn_run(Job { n: 1 }).await?.join().await?;
    Ok(())
}

#[multiprocessing::process_main]
async fn main() {
    // Entries are still ordinary functions in this process.
    assert_eq!(zero(), 7);
    assert_eq!(one(1), 2);
    assert_eq!(three(1, "b".into(), vec![3, 4]), "1b2");
    unit_return((1, 2));
    async_zero().await;
    assert_eq!(async_one("abc".into()).await, 3);
    assert_eq!(async_three(1, 2, 3).await, 6);
    assert_eq!(documented(2).len(), 2);
    assert_eq!(Job { n: 21 }.run(), 42);

    // Each is registered under its module path.
    assert!(is_entry(zero).ends_with("::zero"));
    assert!(is_entry(async_three).ends_with("::async_three"));
}

// A compiled-out entry leaves nothing behind.
#[entry]
#[cfg(any())]
fn never_compiled(x: u8) -> u8 {
    x
}
