//! Every protocol message decoder (`Up`, `Down`, `HostReq`, `HostReply`) on any bytes: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiprocessing::__private::testing::decode::message;

fuzz_target!(|data: &[u8]| {
    let _ = message(data);
});
