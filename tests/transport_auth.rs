//! The hub refuses peers without the run's key and survives malformed frames.

use multiprocessing::__private::testing::{hub_socket, RawConn};
use multiprocessing::{entry, Error, Process};
use std::time::Duration;

#[entry]
fn double(x: u32) -> u32 {
    x * 2
}

async fn hub_still_serves() {
    let p = Process::spawn(double, 21).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 42);
}

#[multiprocessing::test]
async fn wrong_key_is_refused_and_the_hub_keeps_serving() {
    let socket = hub_socket().unwrap();
    for _ in 0..3 {
        let err = RawConn::connect(&socket, Some([7u8; 32]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    }
    hub_still_serves().await;
    // The right key still gets in.
    RawConn::connect(&socket, None).await.unwrap();
}

/// Authenticates with the right key, writes `bytes`, and checks that the hub drops this
/// connection and goes on serving.
async fn hub_drops_connection_after(bytes: &[u8]) {
    let socket = hub_socket().unwrap();
    let mut conn = RawConn::connect(&socket, None).await.unwrap();
    conn.write_raw(bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the hub drops the connection")
        .unwrap();
    hub_still_serves().await;
}

#[multiprocessing::test]
async fn oversize_frame_drops_that_connection_only() {
    // A frame header announcing 1 GiB - 1 bytes, far over the 16 MiB limit.
    hub_drops_connection_after(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]).await;
}

#[multiprocessing::test]
async fn malformed_message_drops_that_connection_only() {
    // A well-formed frame whose content is not a protocol message.
    hub_drops_connection_after(&[4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]).await;
}

#[multiprocessing::test]
async fn garbage_before_the_handshake_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = hub_socket().unwrap();
    let mut raw = tokio::net::UnixStream::connect(&socket).await.unwrap();
    raw.write_all(&[0xff; 64]).await.unwrap();
    let mut sink = Vec::new();
    // The hub sends its challenge, then closes once it sees garbage instead of an answer.
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink))
        .await
        .expect("the hub closes")
        .ok();
    assert!(
        sink.len() < 128,
        "the hub said more than a challenge: {} bytes",
        sink.len()
    );
    hub_still_serves().await;
}

#[multiprocessing::test]
async fn run_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = multiprocessing::__private::testing::run_dir().unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
}
