// A message's arguments must be concrete serde types, not `impl Trait`.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Summer {
    total: u64,
}

#[multiprocessing::actor]
impl Summer {
    pub fn add_all(&mut self, items: impl IntoIterator<Item = u64>) -> u64 {
        self.total += items.into_iter().sum::<u64>();
        self.total
    }
}

fn main() {}
