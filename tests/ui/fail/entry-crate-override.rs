// `crate = "…"` replaces the path the attribute would find by itself: a wrong one is reported.
use multiprocessing::entry;

#[entry(crate = "::no_such_crate")]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    assert_eq!(square(2), 4);
}
