// #[entry] applies to functions (and `impl Run for T` blocks), not to a struct.

#[multiprocessing::entry]
struct Config {
    workers: usize,
}

fn main() {}
