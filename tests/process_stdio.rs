//! A child's stdout and stderr are inherited: what it prints reaches the root's own streams.
//!
//! The outer test runs this test binary again (without the child marker) on the ignored test
//! `root_whose_children_print`, captures that root's stdout and stderr, and looks for the lines
//! its children printed.

use multiprocessing::{entry, Process, StartMethod};

#[entry]
fn shout(tag: String) -> u32 {
    println!("stdout from child {} ({tag})", std::process::id());
    eprintln!("stderr from child {} ({tag})", std::process::id());
    std::process::id()
}

#[multiprocessing::test]
#[ignore = "run by `children_write_to_the_roots_streams`"]
async fn root_whose_children_print() {
    if std::env::var_os("MP_STDIO_ROOT").is_none() {
        return;
    }
    // One after the other: stderr is unbuffered, so two children writing at once may
    // interleave their lines, which says nothing about inheritance.
    let a = Process::spawn(shout, "spawned".to_string()).await.unwrap();
    let a = a.join().await.unwrap();
    let forked = Process::builder().start_method(StartMethod::ForkServer);
    let b = forked.spawn(shout, "forked".to_string()).await.unwrap();
    let b = b.join().await.unwrap();
    println!("pids {a} {b}");
}

#[test]
fn children_write_to_the_roots_streams() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "root_whose_children_print",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MP_STDIO_ROOT", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pids: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pids "))
        .expect("the root reports the pids")
        .split(' ')
        .collect();
    for (pid, tag) in pids.iter().zip(["spawned", "forked"]) {
        assert!(
            stdout.contains(&format!("stdout from child {pid} ({tag})")),
            "{stdout}"
        );
        assert!(
            stderr.contains(&format!("stderr from child {pid} ({tag})")),
            "{stderr}"
        );
    }
}
