//! A `#[process_main]` body that is not `Send` (an `Rc` held across an await) still compiles and
//! runs: it is driven on the main thread, as `#[tokio::main]` drives it. A `Send` body runs as a
//! task on the runtime's workers instead.

use std::rc::Rc;

#[multiprocessing::process_main]
async fn main() {
    let shared = Rc::new(41);
    tokio::task::yield_now().await;
    assert_eq!(*shared + 1, 42);
}
