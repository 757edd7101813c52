//! The attributes under a renamed dependency: `#[mp::test]` here, `#[mp::process_main]` in the
//! crate's binary, `#[mp::entry]` (found by name, or by the `crate = "…"` path) in its library.

use renamed_dep::{cube, square, Sum};
use std::process::Command;

#[mp::test]
async fn entries_run_in_children() -> mp::Result<()> {
    assert_eq!(mp::Process::spawn(square, 9).await?.join().await?, 81);
    assert_eq!(mp::Process::spawn(cube, 4).await?.join().await?, 64);
    let sum = mp::Process::spawn_run(Sum(vec![4, 5])).await?;
    assert_eq!(sum.join().await?, 9);
    Ok(())
}

#[test]
fn process_main_binary_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_renamed-dep"))
        .output()
        .expect("the binary Cargo built for this test starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "square(7) = 49\ncube(3) = 27\nsum = 6\n");
}
