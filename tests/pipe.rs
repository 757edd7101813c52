//! Pipes, connections and handed-over OS handles between real processes.

use multiprocessing::connection::{wait, Client, FdHandle, Listener};
use multiprocessing::{entry, pipe, pipe_simplex, Connection, Error, Process, SendError};
use std::io::{Read, Write};
use std::time::Duration;

#[entry]
async fn echo_plus_one(conn: Connection<u64>, rounds: u64) {
    for _ in 0..rounds {
        let v = conn.recv().await.expect("the parent sends");
        conn.send(v + 1).await.expect("the parent listens");
    }
}

#[multiprocessing::test]
async fn ping_pong_ten_thousand_messages_with_a_child() {
    let (here, there) = pipe::<u64>().unwrap();
    let child = Process::spawn(echo_plus_one, (there, 10_000))
        .await
        .unwrap();
    for i in 0..10_000u64 {
        here.send(i * 3).await.unwrap();
        assert_eq!(here.recv().await.unwrap(), i * 3 + 1);
    }
    child.join().await.unwrap();
    assert!(matches!(here.recv().await, Err(Error::Closed)));
}

#[entry]
async fn say_once_and_exit(conn: Connection<String>) -> u32 {
    conn.send("last words".into()).await.unwrap();
    std::process::id()
}

#[multiprocessing::test]
async fn recv_after_the_peer_process_exited_is_closed() {
    let (here, there) = pipe::<String>().unwrap();
    let child = Process::spawn(say_once_and_exit, there).await.unwrap();
    child.join().await.unwrap();
    // What was sent before the exit still arrives, then the end of the stream, never a hang.
    let got = tokio::time::timeout(Duration::from_secs(10), here.recv()).await;
    assert_eq!(got.unwrap().unwrap(), "last words");
    let end = tokio::time::timeout(Duration::from_secs(10), here.recv()).await;
    assert!(matches!(end, Ok(Err(Error::Closed))), "{end:?}");
    assert!(
        here.poll(Duration::ZERO).await.unwrap(),
        "EOF counts as ready"
    );
    // Sending fails too, at the latest when the buffered message is written.
    let sent = here.send("anyone?".into()).await.map_err(Error::from);
    let flushed = here.flush().await;
    assert!(
        matches!(sent.and(flushed), Err(Error::Closed)),
        "sending to a dead peer must fail with Closed"
    );
}

/// Sends `i` on the ends whose index is listed, then holds every end open until told to stop.
#[entry]
async fn write_some(ends: Vec<Connection<u32>>, which: Vec<usize>, stop: Connection<()>) {
    for &i in &which {
        ends[i].send(i as u32).await.unwrap();
    }
    for end in &ends {
        end.flush().await.unwrap();
    }
    let _ = stop.recv().await;
}

#[multiprocessing::test]
async fn wait_over_ten_connections() {
    let mut here = Vec::new();
    let mut there = Vec::new();
    for _ in 0..10 {
        let (a, b) = pipe::<u32>().unwrap();
        here.push(a);
        there.push(b);
    }
    let (stop, stop_there) = pipe::<()>().unwrap();
    let child = Process::spawn(write_some, (there, vec![2, 5, 7], stop_there))
        .await
        .unwrap();
    let refs: Vec<&Connection<u32>> = here.iter().collect();
    // The three written ends become ready (perhaps not all in the same wake-up); each ready end
    // has its message.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ready = wait(&refs, Some(Duration::from_secs(10))).await.unwrap();
        assert!(!ready.is_empty(), "wait timed out with {seen:?} ready");
        for i in ready {
            assert_eq!(here[i].recv().await.unwrap(), i as u32);
            seen.push(i);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![2, 5, 7]);
    // Nothing else was sent: a timeout gives an empty list.
    let t0 = std::time::Instant::now();
    assert!(wait(&refs, Some(Duration::from_millis(100)))
        .await
        .unwrap()
        .is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let idle: Vec<&Connection<u32>> = [0, 1, 3, 4, 6, 8, 9].iter().map(|&i| &here[i]).collect();
    // Once the child exits, every end reports its end of stream as ready.
    stop.send(()).await.unwrap();
    child.join().await.unwrap();
    let ready = wait(&idle, Some(Duration::from_secs(10))).await.unwrap();
    assert!(!ready.is_empty());
    for end in &idle {
        assert!(matches!(end.recv().await, Err(Error::Closed)));
    }
    assert_eq!(wait(&idle, None).await.unwrap(), (0..7).collect::<Vec<_>>());
}

/// Connects with `key` and sends a greeting; returns how the connection went.
#[entry]
async fn client_says_hello(address: String, key: Vec<u8>) -> String {
    match Client::connect::<String>(&address, &key).await {
        Ok(conn) => {
            conn.send(format!("hello from {}", std::process::id()))
                .await
                .unwrap();
            let reply = conn.recv().await.unwrap();
            format!("ok: {reply}")
        }
        Err(Error::Authentication(_)) => "refused".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

async fn wrong_key_then_right_key(address: &str) {
    let listener = Listener::bind(address, b"the right key").await.unwrap();
    let address = listener.address().to_string();
    let wrong = Process::spawn(
        client_says_hello,
        (address.clone(), b"a wrong key".to_vec()),
    )
    .await
    .unwrap();
    let refused = listener.accept::<String>().await;
    assert!(
        matches!(refused, Err(Error::Authentication(_))),
        "{refused:?}"
    );
    assert_eq!(wrong.join().await.unwrap(), "refused");
    // The listener goes on: the next client with the right key gets in.
    let right = Process::spawn(client_says_hello, (address, b"the right key".to_vec()))
        .await
        .unwrap();
    let conn = listener.accept::<String>().await.unwrap();
    let hello = conn.recv().await.unwrap();
    assert_eq!(hello, format!("hello from {}", right.pid()));
    conn.send("welcome".into()).await.unwrap();
    assert_eq!(right.join().await.unwrap(), "ok: welcome");
}

#[multiprocessing::test]
async fn listener_refuses_a_wrong_key_and_accepts_the_next_client_over_tcp() {
    wrong_key_then_right_key("127.0.0.1:0").await;
}

#[multiprocessing::test]
async fn listener_refuses_a_wrong_key_and_accepts_the_next_client_over_a_path() {
    let dir = std::env::temp_dir().join(format!("mp-pipe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("listener.sock");
    wrong_key_then_right_key(path.to_str().unwrap()).await;
    assert!(!path.exists(), "the listener removes its socket file");
    std::fs::remove_dir(&dir).unwrap();
}

#[entry]
async fn bytes_echo(conn: Connection<()>) {
    conn.send_bytes(b"hello world").await.unwrap();
    while let Ok(m) = conn.recv_bytes().await {
        conn.send_bytes(&m).await.unwrap();
    }
}

#[multiprocessing::test]
async fn send_bytes_and_recv_bytes_into_with_a_short_buffer() {
    let (here, there) = pipe::<()>().unwrap();
    let child = Process::spawn(bytes_echo, there).await.unwrap();
    let mut small = [0u8; 4];
    match here.recv_bytes_into(&mut small).await {
        Err(Error::BufferTooShort { needed }) => assert_eq!(needed, 11),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // The message stayed unread.
    assert!(here.poll(Duration::ZERO).await.unwrap());
    let mut big = [0u8; 11];
    assert_eq!(here.recv_bytes_into(&mut big).await.unwrap(), 11);
    assert_eq!(&big, b"hello world");
    here.send_bytes(b"").await.unwrap();
    assert_eq!(here.recv_bytes().await.unwrap(), b"");
    here.send_bytes(&[9; 100_000]).await.unwrap();
    assert_eq!(here.recv_bytes().await.unwrap(), vec![9; 100_000]);
    drop(here);
    child.join().await.unwrap();
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[entry]
async fn big_echo(conn: Connection<()>, len: usize) -> bool {
    let sent = pattern(len);
    conn.send_bytes(&sent).await.unwrap();
    let back = conn.recv_bytes().await.unwrap();
    back == sent
}

#[multiprocessing::test]
async fn a_64_mib_message_each_way() {
    const LEN: usize = 64 << 20;
    let (here, there) = pipe::<()>().unwrap();
    let child = Process::spawn(big_echo, (there, LEN)).await.unwrap();
    let got = here.recv_bytes().await.unwrap();
    assert_eq!(got.len(), LEN);
    assert!(got == pattern(LEN), "the 64 MiB message arrived changed");
    here.send_bytes(&got).await.unwrap();
    assert!(
        child.join().await.unwrap(),
        "the child got back what it sent"
    );
}

#[entry]
async fn produce(conn: Connection<(u32, u64)>, n: u64) {
    for i in 0..n {
        conn.send((std::process::id(), i)).await.unwrap();
    }
}

#[entry]
async fn consume(conn: Connection<(u32, u64)>) -> (Option<u32>, u64, u64) {
    let mut sender = None;
    let (mut count, mut sum) = (0, 0);
    while let Ok((pid, i)) = conn.recv().await {
        assert_eq!(i, count, "messages arrive in order");
        sender = Some(pid);
        count += 1;
        sum += i;
    }
    (sender, count, sum)
}

#[multiprocessing::test]
async fn a_pipe_between_two_children_made_by_the_parent() {
    let (a, b) = pipe::<(u32, u64)>().unwrap();
    let consumer = Process::spawn(consume, b).await.unwrap();
    let producer = Process::spawn(produce, (a, 50_000)).await.unwrap();
    // The parent holds neither end now: the consumer sees the end of the stream when the
    // producer exits, which shows the messages went from one child to the other.
    producer.join().await.unwrap();
    let (sender, count, sum) = tokio::time::timeout(Duration::from_secs(30), consumer.join())
        .await
        .expect("the consumer saw the end of the stream")
        .unwrap();
    assert_eq!(sender, Some(producer.pid()));
    assert_eq!((count, sum), (50_000, 50_000 * 49_999 / 2));
}

#[entry]
fn write_to_socket(handle: FdHandle) -> u32 {
    let mut stream = handle.into_tcp_stream();
    write!(stream, "written by {}", std::process::id()).unwrap();
    std::process::id()
}

#[multiprocessing::test]
async fn a_tcp_stream_handed_to_a_child() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let child = Process::spawn(write_to_socket, FdHandle::from(accepted))
        .await
        .unwrap();
    let pid = child.join().await.unwrap();
    // The parent's copy went away with the offer: the child's exit closes the connection.
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap();
    assert_eq!(text, format!("written by {pid}"));
}

#[multiprocessing::test]
async fn a_simplex_pipe_refuses_the_wrong_direction() {
    let (rx, tx) = pipe_simplex::<u8>().unwrap();
    assert!(matches!(
        rx.send(1).await,
        Err(SendError::Failed(1, Error::InvalidArgument(_)))
    ));
    assert!(matches!(tx.recv().await, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        tx.poll(Duration::ZERO).await,
        Err(Error::InvalidArgument(_))
    ));
    tx.send(2).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), 2);
}

#[multiprocessing::test]
async fn a_cancelled_recv_loses_nothing() {
    let (a, b) = pipe::<String>().unwrap();
    let early = tokio::time::timeout(Duration::from_millis(20), a.recv()).await;
    assert!(early.is_err());
    b.send("late".into()).await.unwrap();
    assert_eq!(a.recv().await.unwrap(), "late");
    assert!(!a.poll(Duration::from_millis(10)).await.unwrap());
}

#[multiprocessing::test]
async fn an_end_cannot_be_received_twice() {
    let (a, _b) = pipe::<u8>().unwrap();
    let bytes = postcard::to_allocvec(&a).unwrap();
    let first: Connection<u8> = postcard::from_bytes(&bytes).unwrap();
    // (postcard drops the text of the error; through an entry argument it reads "already
    // handed this handle to another process".)
    assert!(postcard::from_bytes::<Connection<u8>>(&bytes).is_err());
    drop(first);
}
