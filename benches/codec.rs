//! Encode and decode speed of plain values, the crate's codec against postcard's own, in GB/s
//! (1e9 bytes of the value's memory per second), printed as JSON lines for `benches/compare.sh`.
//!
//! `cargo bench --bench codec` (add `-- --quick` for fewer repetitions).
//!
//! Each figure includes what a real call pays: the output's allocation and its page faults
//! (the encoder's buffer, or the decoded vector), as a pool worker or a parent pays them.

use multiprocessing::__private::testing::codec;
use serde::{de::DeserializeOwned, Serialize};
use std::hint::black_box;
use std::time::Instant;

#[path = "common.rs"]
mod common;
use common::{emit, reps};

const SIZE: usize = 100 << 20;

/// Times `f` once to warm up, then `reps()` times; GB/s of `bytes` per run.
fn rate(bytes: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    (0..reps())
        .map(|_| {
            let t0 = Instant::now();
            f();
            bytes as f64 / t0.elapsed().as_secs_f64() / 1e9
        })
        .collect()
}

/// Emits encode and decode rates of `value` for both codecs.
fn compare<T: Serialize + DeserializeOwned>(name: &str, value: &T) -> multiprocessing::Result<()> {
    let encoded = codec::encode(value)?;
    let theirs = postcard::to_allocvec(value).expect("postcard encodes");
    assert_eq!(encoded, theirs, "the codec writes postcard's bytes");
    let runs = [
        (
            "codec",
            "encode",
            rate(SIZE, || drop(black_box(codec::encode(value)))),
        ),
        (
            "postcard",
            "encode",
            rate(SIZE, || drop(black_box(postcard::to_allocvec(value)))),
        ),
        (
            "codec",
            "decode",
            rate(SIZE, || drop(black_box(codec::decode::<T>(&encoded)))),
        ),
        (
            "postcard",
            "decode",
            rate(SIZE, || {
                drop(black_box(postcard::from_bytes::<T>(&encoded)))
            }),
        ),
    ];
    for (who, what, samples) in runs {
        emit(
            &format!("{who}_{what}_{name}_100MiB"),
            "GB/s",
            "higher",
            samples,
            &format!("{what} a 100 MiB {name} with {who}; output allocated per run"),
        );
    }
    Ok(())
}

fn main() -> multiprocessing::Result<()> {
    let bytes: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    compare("vec_u8", &bytes)?;
    drop(bytes);
    let floats: Vec<f64> = (0..SIZE / 8).map(|i| i as f64 * 0.25).collect();
    compare("vec_f64", &floats)?;
    Ok(())
}
