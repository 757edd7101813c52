//! The frame decoder on any bytes, split at any chunk size: no panic, no hang, no message
//! longer than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiprocessing::__private::testing::decode::frames;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(lengths) = frames(bytes, 256, usize::from(chunk).max(1)) {
        assert!(lengths.iter().all(|&n| n <= bytes.len()));
    }
});
