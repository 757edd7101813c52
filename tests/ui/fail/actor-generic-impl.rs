// An actor's process finds its type by name: a generic impl has no one name.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Holder<T> {
    item: T,
}

#[multiprocessing::actor]
impl<T: Clone> Holder<T> {
    pub fn get(&self) -> u64 {
        1
    }
}

fn main() {}
