//! Both sides of the handshake against a peer that sends any bytes: never accepted without
//! the key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiprocessing::__private::testing::decode::handshake;

fuzz_target!(|data: &[u8]| {
    for client in [false, true] {
        assert!(handshake(data, client).is_err());
    }
});
