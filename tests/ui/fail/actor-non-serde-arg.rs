// A message's arguments cross processes: their types must be Serialize + Deserialize.

use serde::{Deserialize, Serialize};

struct Config {
    step: u64,
}

#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[multiprocessing::actor]
impl Counter {
    pub fn configure(&mut self, config: Config) -> u64 {
        self.n += config.step;
        self.n
    }
}

fn main() {}
