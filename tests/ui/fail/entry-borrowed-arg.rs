// Arguments cross a process boundary by value: `&str` must be `String`.

#[multiprocessing::entry]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() {}
