//! Waiting on many results (Python's `concurrent.futures.wait`, Ray's `ray.wait`) with
//! `FuturesUnordered`, the pattern the pool's docs give instead of a `wait` helper.

use futures::stream::{FuturesUnordered, StreamExt};
use multiprocessing::{entry, Error, Pool};
use std::time::Duration;

/// Naps `ms` milliseconds, then returns them; panics for 0.
#[entry]
fn nap(ms: u64) -> u64 {
    assert!(ms > 0, "no nap");
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
async fn first_completed_first_error_and_all_completed_with_a_deadline() {
    let pool = Pool::new(2).await.unwrap();

    // FIRST_COMPLETED: the short task is first; the long one stays pending, still usable.
    let mut pending: FuturesUnordered<_> = [2_000u64, 20]
        .into_iter()
        .map(|ms| {
            let result = pool.apply_async(nap, ms);
            async move { (ms, result.await) }
        })
        .collect();
    let (ms, first) = pending.next().await.unwrap();
    assert_eq!((ms, first.unwrap()), (20, 20));
    assert_eq!(pending.len(), 1);

    // ALL_COMPLETED with a deadline that passes first: nothing more comes, the long task is
    // still in the set (and still runs); then it finishes after all.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut done = Vec::new();
    while let Ok(Some(outcome)) = tokio::time::timeout_at(deadline, pending.next()).await {
        done.push(outcome);
    }
    assert!(done.is_empty());
    assert_eq!(pending.len(), 1);
    let (ms, late) = pending.next().await.unwrap();
    assert_eq!((ms, late.unwrap()), (2_000, 2_000));

    // FIRST_EXCEPTION: stop at the first failure; the values before it are kept.
    let mut pending: FuturesUnordered<_> = [10u64, 0, 3_000]
        .into_iter()
        .map(|ms| {
            let result = pool.apply_async(nap, ms);
            async move { (ms, result.await) }
        })
        .collect();
    let mut values = Vec::new();
    let failed = loop {
        match pending.next().await {
            Some((_, Ok(v))) => values.push(v),
            Some((ms, Err(e))) => break Some((ms, e)),
            None => break None,
        }
    };
    let (ms, e) = failed.expect("one task fails");
    assert_eq!(ms, 0);
    assert!(matches!(e, Error::Panicked { .. }), "{e:?}");
    assert!(values.len() <= 1 && pending.len() + values.len() == 2);
    // Dropping what is left cancels what has not started; the pool goes on.
    drop(pending);
    assert_eq!(pool.apply(nap, 5).await.unwrap(), 5);
    pool.close();
    pool.join().await.unwrap();
}
