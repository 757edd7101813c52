// A misspelled argument is refused, and the error lists the ones that exist.

#[multiprocessing::process_main(flavour = "current_thread")]
async fn main() {}
