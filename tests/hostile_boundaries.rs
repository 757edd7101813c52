//! Hostile peers at the live boundaries of a run: the hub's socket (peers that never speak, a
//! first message of another protocol version or of no known kind, a truncated frame) and the fd
//! offers (a ticket taken twice, a ticket with a wrong secret). Each gets a clear error or a
//! dropped connection, and the hub goes on serving the run's children.
//! (Wrong keys, oversize frames and garbage before the handshake: `transport_auth.rs`; an unknown
//! entry name: `process_failures.rs`.)

use multiprocessing::__private::testing::{hub_socket, RawConn};
use multiprocessing::connection::FdHandle;
use multiprocessing::{entry, Process};
use std::time::Duration;

#[entry]
fn double(x: u32) -> u32 {
    x * 2
}

async fn hub_still_serves() {
    let p = Process::spawn(double, 21).await.unwrap();
    assert_eq!(p.join().await.unwrap(), 42);
}

/// One frame around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Authenticates with the run's key, writes `bytes`, and checks that the hub drops this
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
async fn a_hello_of_another_protocol_version_is_dropped() {
    // postcard: `Up::Hello` (variant 0), version 4, token 1, pid 1.
    hub_drops_connection_after(&frame(&[0, 4, 1, 1])).await;
    // `Up::Attach` (variant 1) of version 999 (a two-byte varint), pid 1.
    hub_drops_connection_after(&frame(&[1, 0xe7, 0x07, 1])).await;
}

#[multiprocessing::test]
async fn an_unknown_message_kind_or_token_is_dropped() {
    // A variant index no message has.
    hub_drops_connection_after(&frame(&[77, 0, 0, 0])).await;
    // A `Hello` of our version whose token nobody made. (The version is read from the crate's
    // protocol: any version gives a dropped connection, this one reaches the token check.)
    hub_drops_connection_after(&frame(&[0, 5, 0xaa, 0x01, 1])).await;
}

#[multiprocessing::test]
async fn a_frame_cut_short_by_the_peer_leaving_is_dropped() {
    let socket = hub_socket().unwrap();
    let mut conn = RawConn::connect(&socket, None).await.unwrap();
    // A header that announces 100 bytes, then 3 of them, then the end.
    conn.write_raw(&[100, 0, 0, 0, 1, 2, 3]).await.unwrap();
    drop(conn);
    hub_still_serves().await;
}

#[multiprocessing::test]
async fn peers_that_connect_and_never_speak_do_not_hold_up_the_hub() {
    let socket = hub_socket().unwrap();
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    // Each waits in its own task for a handshake that never comes (the hub gives up on it
    // after its hello timeout); children keep getting in meanwhile.
    for _ in 0..3 {
        hub_still_serves().await;
    }
    RawConn::connect(&socket, None).await.unwrap();
    drop(silent);
}

#[multiprocessing::test]
async fn an_fd_offer_taken_twice_or_with_a_wrong_secret_is_refused() {
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let handle = FdHandle::from(file);
    let ticket = postcard::to_allocvec(&handle).unwrap();
    // A wrong secret (the ticket ends with it) is refused, and does not spend the offer.
    let mut forged = ticket.clone();
    *forged.last_mut().unwrap() ^= 0xff;
    let err = postcard::from_bytes::<FdHandle>(&forged).unwrap_err();
    eprintln!("wrong secret: {err}");
    let taken: FdHandle = postcard::from_bytes(&ticket).expect("the offer is taken once");
    assert!(std::os::fd::AsRawFd::as_raw_fd(&taken) >= 0);
    let err = postcard::from_bytes::<FdHandle>(&ticket).unwrap_err();
    eprintln!("taken twice: {err}");
    hub_still_serves().await;
}
