// The state stays in the actor's process: a method cannot take `self` by value.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[multiprocessing::actor]
impl Counter {
    pub fn into_count(self) -> u64 {
        self.n
    }
}

fn main() {}
