// An entry is a free function; a method taking `self` cannot be called by name in a child.

struct Counter {
    n: u64,
}

impl Counter {
    #[multiprocessing::entry]
    fn get(self) -> u64 {
        self.n
    }
}

fn main() {}
