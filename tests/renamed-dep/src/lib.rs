//! Entries of a crate that depends on the library as `mp`: the attributes must find it there.

use serde::{Deserialize, Serialize};

/// Names the library through a path of this crate, as a facade crate's re-export would.
pub mod facade {
    pub use mp as inner;
}

/// Found through the renamed dependency, with no argument.
#[mp::entry]
pub fn square(x: u64) -> u64 {
    x * x
}

/// Found through the path the attribute gives, as a facade crate's users must write it.
#[mp::entry(crate = "crate::facade::inner")]
pub async fn cube(x: u64) -> u64 {
    x * x * x
}

/// A `Run` value registered through the renamed dependency.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sum(pub Vec<u64>);

#[mp::entry]
impl mp::Run for Sum {
    type Output = u64;

    fn run(self) -> u64 {
        self.0.iter().sum()
    }
}
