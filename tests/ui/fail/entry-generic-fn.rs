// A child finds an entry by name, and a name carries no type parameters.

#[multiprocessing::entry]
fn identity<T>(x: T) -> T {
    x
}

fn main() {}
