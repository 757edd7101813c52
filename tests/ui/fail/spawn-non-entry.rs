// Only #[entry] functions can be handed to a child process; a plain fn is refused at compile time.

use multiprocessing::Process;

fn square(x: u64) -> u64 {
    x * x
}

#[multiprocessing::process_main]
async fn main() -> multiprocessing::Result<()> {
    let p = Process::spawn(square, 3).await?;
    let squared: u64 = p.join().await?;
    println!("{squared}");
    Ok(())
}
