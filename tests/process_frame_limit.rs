//! The frame limit belongs to a launch: one test that lowers it leaves the tests running beside
//! it in the same binary (each a launch of its own) at theirs.

use multiprocessing::__private::testing::max_frame_size;
use multiprocessing::{entry, Process};
use serde_bytes::ByteBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SMALL: usize = 4 << 10;
const DEFAULT: usize = 16 << 20;

/// Set by the test that lowers its limit once it has; set by the other once it is done.
static LOWERED: AtomicBool = AtomicBool::new(false);
static CHECKED: AtomicBool = AtomicBool::new(false);

/// Waits until `flag` is set or a second has passed. Run alone (a filter, or nextest's process
/// per test) the other test never sets it: then each test still checks its own launch.
async fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !flag.load(Ordering::Acquire) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value back, with the frame limit of the child's launch.
#[entry]
fn echo_with_limit(data: ByteBuf) -> (ByteBuf, usize) {
    (data, max_frame_size())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect()
}

#[multiprocessing::test]
async fn a_launch_that_lowers_its_frame_limit_lowers_only_its_own() {
    multiprocessing::set_max_frame_size(SMALL);
    LOWERED.store(true, Ordering::Release);
    assert_eq!(max_frame_size(), SMALL);
    // Its child inherits the lowered limit, and a value of many frames still crosses.
    let data = ByteBuf::from(pattern(16 * SMALL));
    let p = Process::spawn(echo_with_limit, data.clone()).await.unwrap();
    let (back, limit) = p.join().await.unwrap();
    assert!(back == data, "the value came back changed");
    assert_eq!(limit, SMALL);
    // Keep the lowered limit in force until the other launch has made its child.
    wait_for(&CHECKED).await;
}

#[multiprocessing::test]
async fn a_launch_beside_one_that_lowered_its_limit_keeps_its_own() {
    wait_for(&LOWERED).await;
    assert_eq!(max_frame_size(), DEFAULT);
    // One frame each way, larger than the other launch's limit.
    let data = ByteBuf::from(pattern(16 * SMALL));
    let p = Process::spawn(echo_with_limit, data.clone()).await.unwrap();
    let (back, limit) = p.join().await.unwrap();
    assert!(back == data, "the value came back changed");
    assert_eq!(limit, DEFAULT);
    CHECKED.store(true, Ordering::Release);
}
