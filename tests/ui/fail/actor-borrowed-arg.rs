// A message crosses to the actor's process by value: `&str` must be `String`.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Greeter {
    greeting: String,
}

#[multiprocessing::actor]
impl Greeter {
    pub fn greet(&self, name: &str) -> String {
        format!("{} {name}", self.greeting)
    }
}

fn main() {}
