//! `tracing` events emitted in a child reach the parent's subscriber, tagged with the child's pid
//! and name.

use multiprocessing::{entry, Process, StartMethod};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[entry]
fn chatty(n: u32) -> u32 {
    tracing::info!(answer = n, "hello from the child");
    tracing::debug!("too verbose to forward");
    n
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The buffer a global subscriber at INFO writes into, set once per process (`cargo test` runs
/// every test of this file in one process; nextest, each in its own). Global, so the level
/// reaches the children (they forward what the parent wants). Tests look for their own lines.
fn capture_logs() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            capture
        })
        .clone()
}

#[multiprocessing::test]
async fn child_events_reach_the_parent_subscriber() {
    let capture = capture_logs();

    let p = Process::builder()
        .name("talker")
        .spawn(chatty, 42)
        .await
        .unwrap();
    assert_eq!(p.join().await.unwrap(), 42);
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("hello from the child"))
        .unwrap_or_else(|| panic!("not forwarded: {text:?}"));
    assert!(line.contains(&format!("child_pid={}", p.pid())), "{line}");
    assert!(
        line.contains("child_name=\"talker\"") || line.contains("child_name=talker"),
        "{line}"
    );
    assert!(line.contains("answer=42"), "{line}");
    assert!(line.contains("INFO"), "{line}");
    assert!(!text.contains("too verbose"), "{text}");
}

#[entry]
fn says_hello(n: u32) -> u32 {
    tracing::info!(answer = n, "hello from a forked child");
    n
}

/// A spare's call thread runs the call it was assigned with before the runtime thread has woken:
/// a log record from the entry's first statement still reaches the parent.
#[multiprocessing::test]
async fn a_forked_child_forwards_logs_from_its_first_statement() {
    let capture = capture_logs();
    // Twice: the first child comes from the spare made when the server starts, the second from
    // one made while the first ran.
    for n in [41u32, 42] {
        let p = Process::builder()
            .start_method(StartMethod::ForkServer)
            .name("greeter")
            .spawn(says_hello, n)
            .await
            .unwrap();
        assert_eq!(p.join().await.unwrap(), n);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("from a forked child") && l.contains(&format!("answer={n}")))
            .unwrap_or_else(|| panic!("not forwarded: {text:?}"));
        assert!(line.contains(&format!("child_pid={}", p.pid())), "{line}");
        assert!(line.contains("greeter"), "{line}");
    }
}
