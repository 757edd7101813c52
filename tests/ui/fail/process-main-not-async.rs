// #[process_main] runs `main` on a tokio runtime, so it must be an `async fn`.

#[multiprocessing::process_main]
fn main() {}
