//! Failures are values: panics, aborts, signals, early exits and unknown entries each come back
//! as their own error, and nothing hangs.

use multiprocessing::{entry, Entry, Error, Process};
use std::time::Duration;

const PANIC_LINE: u32 = line!() + 4;

#[entry]
fn panics(message: String) -> u64 {
    panic!("{message}")
}

#[entry]
async fn panics_async(message: String) -> u64 {
    tokio::task::yield_now().await;
    panic!("{message}")
}

#[entry]
fn aborts() {
    std::process::abort();
}

#[entry]
fn segfaults() {
    // SAFETY: signal(2) and raise(3) take plain integers. Rust's runtime handles SIGSEGV to
    // report stack overflows, so restore the default action first; then SIGSEGV kills the
    // process, as a real segfault would, which is the point of the test.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
}

#[entry]
fn exits_early(code: i32) {
    std::process::exit(code);
}

#[entry]
fn sleeps_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// An `Entry` whose name no executable registers: what a child built from another binary sees.
#[derive(Clone, Copy)]
struct Ghost;

impl Entry for Ghost {
    type Args = ();
    type Output = ();
    const NAME: &'static str = "some_other_binary::ghost";
}

fn died(err: Error) -> (Option<i32>, Option<i32>) {
    match err {
        Error::ProcessDied {
            exitcode, signal, ..
        } => (exitcode, signal),
        other => panic!("expected ProcessDied, got {other:?}"),
    }
}

#[multiprocessing::test]
async fn panic_returns_message_and_location() {
    let p = Process::spawn(panics, "boom".to_string()).await.unwrap();
    let err = p.join().await.unwrap_err();
    assert!(err.is_panicked());
    match err {
        Error::Panicked { message, location } => {
            assert_eq!(message, "boom");
            let location = location.expect("the location is captured");
            assert!(
                location.file.ends_with("process_failures.rs"),
                "{location:?}"
            );
            assert_eq!(location.line, PANIC_LINE);
            assert_eq!(location.column, 5);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.exitcode(),
        Some(1),
        "a panicked child exits with 1, as Python's does on an exception"
    );
}

#[multiprocessing::test]
async fn panic_in_async_entry_is_caught_too() {
    let p = Process::spawn(panics_async, "async boom".to_string())
        .await
        .unwrap();
    match p.join().await {
        Err(Error::Panicked { message, location }) => {
            assert_eq!(message, "async boom");
            assert!(location.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[multiprocessing::test]
async fn abort_gives_process_died_with_sigabrt() {
    let p = Process::spawn(aborts, ()).await.unwrap();
    let err = p.join().await.unwrap_err();
    assert!(err.is_worker_lost());
    assert_eq!(died(err), (None, Some(libc::SIGABRT)));
    assert_eq!(p.exitcode(), Some(-libc::SIGABRT));
}

#[multiprocessing::test]
async fn segfault_gives_process_died_with_sigsegv() {
    let p = Process::spawn(segfaults, ()).await.unwrap();
    assert_eq!(
        died(p.join().await.unwrap_err()),
        (None, Some(libc::SIGSEGV))
    );
}

#[multiprocessing::test]
async fn kill_gives_process_died_with_sigkill() {
    let p = Process::spawn(sleeps_forever, ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(p.is_alive());
    p.kill();
    assert_eq!(
        died(p.join().await.unwrap_err()),
        (None, Some(libc::SIGKILL))
    );
    assert_eq!(p.exitcode(), Some(-9));
    assert!(!p.is_alive());
    p.kill(); // a no-op once it is gone
}

#[multiprocessing::test]
async fn terminate_gives_sigterm() {
    let p = Process::spawn(sleeps_forever, ()).await.unwrap();
    p.terminate();
    assert_eq!(
        died(p.join().await.unwrap_err()),
        (None, Some(libc::SIGTERM))
    );
    assert_eq!(p.exitcode(), Some(-15));
}

#[multiprocessing::test]
async fn killed_from_outside_is_noticed() {
    let p = Process::spawn(sleeps_forever, ()).await.unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(p.pid() as libc::pid_t, libc::SIGKILL);
    }
    let joined = tokio::time::timeout(Duration::from_secs(10), p.join())
        .await
        .expect("join must not hang");
    assert_eq!(died(joined.unwrap_err()), (None, Some(libc::SIGKILL)));
}

#[multiprocessing::test]
async fn early_exit_gives_its_exit_code() {
    let p = Process::spawn(exits_early, 3).await.unwrap();
    assert_eq!(died(p.join().await.unwrap_err()), (Some(3), None));
    assert_eq!(p.exitcode(), Some(3));
}

#[multiprocessing::test]
async fn unknown_entry_is_a_clear_error() {
    let p = Process::spawn(Ghost, ()).await.unwrap();
    let err = p.join().await.unwrap_err();
    match &err {
        Error::NotAnEntry { name } => assert_eq!(name, "some_other_binary::ghost"),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("entry `some_other_binary::ghost` is not registered in this executable"),
        "{err}"
    );
}

#[test]
fn spawning_outside_a_launch_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(Process::spawn(panics, "never".to_string()))
        .unwrap_err();
    assert!(matches!(err, Error::NotLaunched(_)), "{err:?}");
    assert!(
        err.to_string().contains("#[multiprocessing::process_main]"),
        "{err}"
    );
}
