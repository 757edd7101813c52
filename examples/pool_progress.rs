//! A progress bar for a long map, as Python users write `tqdm(pool.imap_unordered(f, items))`:
//!
//! ```python
//! from multiprocessing import Pool
//! from tqdm import tqdm
//!
//! def work(x):
//!     return sum(i * i for i in range(x % 1000))
//!
//! if __name__ == '__main__':
//!     with Pool() as pool:
//!         total = 0
//!         for value in tqdm(pool.imap_unordered(work, range(100_000), chunksize=64), total=100_000):
//!             total += value
//!         print(total)
//! ```
//!
//! Here the stream of results drives an `indicatif` bar: one tick per item, as each finishes.
//! Run it with `cargo run --release --example pool_progress`.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use multiprocessing::{entry, Pool};

const ITEMS: u64 = 100_000;

/// A little work per item.
#[entry]
fn work(x: u64) -> u64 {
    (0..x % 1000).map(|i| i * i).sum()
}

#[multiprocessing::process_main]
async fn main() -> multiprocessing::Result<()> {
    let pool = Pool::builder().build().await?;
    let bar = ProgressBar::new(ITEMS);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The input is read lazily, a window ahead: the 100,000 items never sit in memory at once.
    let mut results = pool.imap_unordered(work, 0..ITEMS).chunksize(64);
    let mut total: u64 = 0;
    while let Some(value) = results.next().await {
        total = total.wrapping_add(value?);
        bar.inc(1);
    }
    bar.finish();
    println!("sum of all results: {total}");
    pool.close();
    pool.join().await
}
