//! The quick start: entries, a pool of workers, one child per call, values and failures coming
//! back.
//!
//! Run with `cargo run --release --example quickstart`.

use futures::StreamExt;
use multiprocessing::{entry, process_main, Pool, Process};

/// Runs in a child process; still callable here as `square(3)`.
#[entry]
fn square(x: u64) -> u64 {
    x * x
}

/// Async entries run on the child's runtime.
#[entry]
async fn fetch_len(url: String) -> usize {
    url.len()
}

/// Several parameters travel as one tuple.
#[entry]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[entry]
fn fails(why: String) -> u64 {
    panic!("{why}")
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    println!("square(3) in this process: {}", square(3));

    let pool = Pool::new(4).await?;
    println!("pool of 4 workers: {:?}", pool.worker_pids().await?);
    println!("pool.apply(square, 7) = {}", pool.apply(square, 7).await?);
    let squares: Vec<u64> = pool.map(square, 0..10).await?;
    println!("pool.map(square, 0..10) = {squares:?}");
    let mut stream = pool.imap_unordered(square, 0..1000);
    let mut total = 0;
    while let Some(r) = stream.next().await {
        total += r?;
    }
    println!("sum of imap_unordered(square, 0..1000) = {total}");
    let sums = pool.starmap(add, vec![(1, 2), (3, 4)]).await?;
    println!("pool.starmap(add, [(1, 2), (3, 4)]) = {sums:?}");
    pool.close();
    pool.join().await?;

    let p = Process::spawn(square, 12).await?;
    println!("square(12) in child {}: {}", p.pid(), p.join().await?);

    let p = Process::spawn(fetch_len, "https://example.org".to_string()).await?;
    println!("fetch_len in child {}: {}", p.pid(), p.join().await?);

    // Many children at once: each spawn returns as soon as the OS has started the process.
    let mut children = Vec::new();
    for i in 0..8 {
        children.push(Process::spawn(add, (i, 100)).await?);
    }
    let mut sums = Vec::new();
    for child in &children {
        sums.push(child.join().await?);
    }
    println!("sums from 8 children: {sums:?}");

    // A panic in a child is a value, not a crash of the parent.
    let p = Process::builder()
        .name("doomed")
        .spawn(fails, "on purpose".to_string())
        .await?;
    match p.join().await {
        Err(multiprocessing::Error::Panicked { message, location }) => {
            println!(
                "child `{}` panicked: {message} (at {})",
                p.name(),
                location.map(|l| l.to_string()).unwrap_or_default()
            );
        }
        other => println!("unexpected: {other:?}"),
    }
    println!("exit code of the panicked child: {:?}", p.exitcode());
    Ok(())
}
