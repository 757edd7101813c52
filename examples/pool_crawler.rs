//! The classic "crawler" with `apply_async` and a result handler, over local files instead of
//! URLs:
//!
//! ```python
//! from multiprocessing import Pool
//!
//! def word_count(path):
//!     with open(path, 'rb') as f:
//!         data = f.read()
//!     return path, len(data.split()), len(data)
//!
//! def on_result(result):
//!     path, words, size = result
//!     print(f"processed {path}: {words} words")
//!     totals.append(words)
//!
//! def on_error(error):
//!     print(f"failed: {error}")
//!
//! if __name__ == '__main__':
//!     totals = []
//!     with Pool(4) as pool:
//!         for path in paths:
//!             pool.apply_async(word_count, (path,), callback=on_result, error_callback=on_error)
//!         pool.close()
//!         pool.join()
//!     print(f"{len(totals)} files, {sum(totals)} words")
//! ```
//!
//! The example writes ~20 text files of different sizes into a fresh directory under
//! `std::env::temp_dir()` (removed at the end), plus one path that does not exist. Each path
//! becomes one `pool.apply_async(word_count, path)`; instead of callbacks, the `AsyncResult`s
//! (each a `Future`) go into a `FuturesUnordered`, and the loop over it is the result handler,
//! running in the order the tasks finish. The missing file comes back as the entry's own
//! `Err(String)` and is reported, not fatal. At the end, the total is checked against a count
//! done in this (the parent) process.
//!
//! Run with `cargo run --release --example pool_crawler`.

use futures::stream::{FuturesUnordered, StreamExt};
use multiprocessing::{entry, process_main, Pool};
use std::path::{Path, PathBuf};

/// The words and bytes of one file: what a worker computes for one "URL".
#[entry]
fn word_count(path: String) -> Result<(String, usize, u64), String> {
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let words = count_words(&data);
    Ok((path, words, data.len() as u64))
}

/// Whitespace-separated words, as Python's `bytes.split()` counts them.
fn count_words(data: &[u8]) -> usize {
    data.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .count()
}

const WORDS: &[&str] = &[
    "process", "pool", "queue", "pipe", "lock", "event", "worker", "future", "stream", "socket",
    "actor", "entry", "child", "parent", "signal",
];

/// Writes `n` small text files of different sizes into `dir`; returns their paths.
fn make_files(dir: &Path, n: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        // File i holds 1 + 37·i (mod 500) words, a few per line.
        let words = 1 + (i * 37) % 500;
        let mut text = String::new();
        for w in 0..words {
            text.push_str(WORDS[(i + w * 7) % WORDS.len()]);
            text.push(if w % 9 == 8 { '\n' } else { ' ' });
        }
        let path = dir.join(format!("page-{i:02}.txt"));
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The file name of `path`, for printing.
fn short(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// Removes the directory when dropped, also on an early return.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let dir = TempDir(std::env::temp_dir().join(format!("pool_crawler-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let mut paths = make_files(&dir.0, 20)?;
    // One "URL" that does not exist: its error is reported, not fatal.
    paths.insert(7, dir.0.join("missing.txt"));

    let pool = Pool::new(4).await?;

    // Submit everything at once (each apply_async is submitted when called) ...
    let mut pending: FuturesUnordered<_> = paths
        .iter()
        .map(|p| pool.apply_async(word_count, p.to_string_lossy().into_owned()))
        .collect();
    println!(
        "submitted {} tasks to {} workers",
        pending.len(),
        pool.processes()
    );

    // ... and handle each result as it completes: the "callback" and "error_callback".
    let (mut files, mut total_words, mut total_bytes, mut failed) = (0usize, 0usize, 0u64, 0usize);
    while let Some(result) = pending.next().await {
        match result? {
            Ok((path, words, bytes)) => {
                println!("processed {}: {words} words ({bytes} bytes)", short(&path));
                files += 1;
                total_words += words;
                total_bytes += bytes;
            }
            Err(why) => {
                println!("failed: {why}");
                failed += 1;
            }
        }
    }

    pool.close();
    pool.join().await?;

    println!("summary: {files} files, {total_words} words, {total_bytes} bytes, {failed} failed");

    // Check against a count done here, in the parent.
    let (mut want_files, mut want_words) = (0usize, 0usize);
    for path in &paths {
        if let Ok(data) = std::fs::read(path) {
            want_files += 1;
            want_words += count_words(&data);
        }
    }
    assert_eq!(
        (files, total_words),
        (want_files, want_words),
        "the workers' totals differ from the parent's count"
    );
    println!("verified: the parent counts {want_files} files and {want_words} words too");
    Ok(())
}
