// A hook runs with no caller: it takes only `&self` or `&mut self`.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[multiprocessing::actor]
impl Counter {
    #[actor(on_start)]
    fn started(&mut self, from: u64) {
        self.n = from;
    }

    pub fn get(&self) -> u64 {
        self.n
    }
}

fn main() {}
