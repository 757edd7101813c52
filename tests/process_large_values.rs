//! Values larger than a frame cross intact, in both directions.

use multiprocessing::{entry, Process};
use serde_bytes::ByteBuf;

const SIZE: usize = 64 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

#[entry]
fn checksum(data: ByteBuf) -> (usize, u64) {
    (
        data.len(),
        data.iter().fold(0u64, |h, &b| {
            h.wrapping_mul(1_000_003).wrapping_add(u64::from(b))
        }),
    )
}

#[entry]
fn make_blob(len: u64) -> ByteBuf {
    ByteBuf::from(pattern(len as usize, 7))
}

#[entry]
fn reverse(data: ByteBuf) -> ByteBuf {
    let mut v = data.into_vec();
    v.reverse();
    ByteBuf::from(v)
}

#[multiprocessing::test]
async fn a_64_mib_argument_arrives_intact() {
    let data = pattern(SIZE, 1);
    let expected = (
        data.len(),
        data.iter().fold(0u64, |h, &b| {
            h.wrapping_mul(1_000_003).wrapping_add(u64::from(b))
        }),
    );
    let p = Process::spawn(checksum, ByteBuf::from(data)).await.unwrap();
    assert_eq!(p.join().await.unwrap(), expected);
}

#[multiprocessing::test]
async fn a_64_mib_return_value_arrives_intact() {
    let p = Process::spawn(make_blob, SIZE as u64).await.unwrap();
    let blob = p.join().await.unwrap();
    assert!(blob.into_vec() == pattern(SIZE, 7));
}

#[multiprocessing::test]
async fn a_64_mib_round_trip_with_a_small_frame_limit() {
    // 1 MiB frames: 64 frames each way.
    multiprocessing::set_max_frame_size(1 << 20);
    let data = pattern(SIZE, 3);
    let mut expected = data.clone();
    expected.reverse();
    let p = Process::spawn(reverse, ByteBuf::from(data)).await.unwrap();
    assert!(p.join().await.unwrap().into_vec() == expected);
}
