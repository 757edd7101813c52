//! A `#[process_main]` binary of a crate that names the library `mp`; the tests run it.

use renamed_dep::{cube, square, Sum};

#[mp::process_main(crate = "renamed_dep::facade::inner", flavor = "current_thread")]
async fn main() -> mp::Result<()> {
    let p = mp::Process::spawn(square, 7).await?;
    println!("square(7) = {}", p.join().await?);
    let p = mp::Process::spawn(cube, 3).await?;
    println!("cube(3) = {}", p.join().await?);
    let p = mp::Process::spawn_run(Sum(vec![1, 2, 3])).await?;
    println!("sum = {}", p.join().await?);
    Ok(())
}
