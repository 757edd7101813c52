//! Fault injection on single processes and the hub: a child that exits with 3 in the middle of
//! its work, one that shuts its sockets but keeps running, one that stops reading its pipe (the
//! socket buffer fills), and one that floods the hub with valid requests while another child
//! measures its own latency. In each, the parent's awaits end and the other children go on.

use multiprocessing::{entry, pipe, Connection, Error, Process, Queue, SendError};
use serde_bytes::ByteBuf;
use std::time::{Duration, Instant};

#[entry]
async fn exit_3_after_first(q: Queue<u32>) {
    q.put(1).await.expect("put");
    // A put is posted, not answered: `len` is answered after the put is applied, so the item is
    // in the queue before the exit. (Without it, an `exit` right after `put` can lose the item,
    // as `os._exit` after `put` does in Python: README, "Faults tried".)
    q.len().await.expect("len");
    std::process::exit(3);
}

#[entry]
async fn count_to(q: Queue<u32>, n: u32) -> u32 {
    for i in 0..n {
        q.put(i).await.expect("put");
    }
    n
}

#[multiprocessing::test]
async fn exit_3_mid_work_is_process_died_and_the_others_go_on() {
    let q = Queue::new();
    let other = Queue::new();
    let dying = Process::spawn(exit_3_after_first, q.clone()).await.unwrap();
    let healthy = Process::spawn(count_to, (other.clone(), 100))
        .await
        .unwrap();
    let died = tokio::time::timeout(Duration::from_secs(10), dying.join())
        .await
        .expect("join of the dying child ends");
    match died {
        Err(Error::ProcessDied {
            exitcode: Some(3),
            signal: None,
            ..
        }) => {}
        other => panic!("expected ProcessDied with exit code 3, got {other:?}"),
    }
    assert_eq!(dying.exitcode(), Some(3));
    // What it put before dying is there; the queue and the other child work as before.
    let first = tokio::time::timeout(Duration::from_secs(10), q.get()).await;
    assert_eq!(
        first
            .expect("the item put before the exit is there")
            .unwrap(),
        1
    );
    assert_eq!(healthy.join().await.unwrap(), 100);
    for i in 0..100 {
        assert_eq!(other.get().await.unwrap(), i);
    }
}

/// The pid at the other end of a local socket, if `fd` is one.
fn peer_pid(fd: i32) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.pid)
}

/// Shuts down every socket this process holds to another process (its connections to the
/// parent and to the hub; not the runtime's own signal pipe), then keeps running for `ms`.
#[entry]
fn shut_sockets_then_linger(ms: u64) -> u64 {
    let me = std::process::id() as i32;
    let fds = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten();
    for fd in fds.filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
        if peer_pid(fd).is_some_and(|peer| peer != me && peer != 0) {
            // SAFETY: shutdown(2) on a socket fd this process holds; it frees no memory, and
            // every later use of the socket fails cleanly with EPIPE or end of stream.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[multiprocessing::test]
async fn a_child_that_shuts_its_sockets_but_keeps_running_ends_the_join() {
    let q = Queue::new();
    let healthy = Process::spawn(count_to, (q.clone(), 50)).await.unwrap();
    let child = Process::spawn(shut_sockets_then_linger, 3_000)
        .await
        .unwrap();
    let start = Instant::now();
    let joined = tokio::time::timeout(Duration::from_secs(20), child.join())
        .await
        .expect("join ends");
    // The child takes the end of its connection as its parent's death and exits on its own.
    assert!(
        matches!(joined, Err(Error::ProcessDied { .. })),
        "no value can come back: {joined:?}"
    );
    eprintln!(
        "join of a child that shut its sockets: {:?} after {:?}",
        joined,
        start.elapsed()
    );
    assert!(
        !child.is_alive(),
        "join returned while the child still runs"
    );
    assert_eq!(healthy.join().await.unwrap(), 50);
    assert_eq!(q.len().await.unwrap(), 50);
}

/// Holds the receiving end of a pipe and never reads it.
#[entry]
async fn never_read(conn: Connection<ByteBuf>, ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    drop(conn);
}

#[multiprocessing::test]
async fn a_child_that_stops_reading_fills_its_pipe_and_the_sender_s_timeout_ends() {
    let (here, there) = pipe::<ByteBuf>().unwrap();
    let stalled = Process::spawn(never_read, (there, 30_000)).await.unwrap();
    let q = Queue::new();
    let healthy = Process::spawn(count_to, (q.clone(), 50)).await.unwrap();
    // 64 KiB messages until the socket buffers are full: the sends then wait, and the timeout
    // around them ends the wait.
    let chunk = ByteBuf::from(vec![7u8; 64 * 1024]);
    let mut sent = 0usize;
    let filled = tokio::time::timeout(Duration::from_millis(1_500), async {
        loop {
            here.send(chunk.clone()).await.expect("the reader is alive");
            sent += 1;
        }
    })
    .await;
    assert!(filled.is_err(), "the sends never blocked");
    assert!(sent > 0);
    // The other child was not held back.
    assert_eq!(healthy.join().await.unwrap(), 50);
    // Once the stalled child is killed, sending says so instead of waiting.
    stalled.kill();
    assert!(stalled.join().await.is_err());
    let after = tokio::time::timeout(Duration::from_secs(10), here.send(chunk.clone()))
        .await
        .expect("a send to a dead reader ends");
    match after {
        // The value that could not be sent comes back.
        Err(SendError::Closed(back)) => assert_eq!(back, chunk),
        // Buffered before the end was seen: the flush reports it.
        Ok(()) => assert!(matches!(here.flush().await, Err(Error::Closed))),
        Err(other) => panic!("expected Closed, got {other:?}"),
    }
}

/// Floods the hub with valid requests (`len` of a queue) from `width` concurrent loops for `ms`.
#[entry]
async fn flood(q: Queue<u32>, width: u32, ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let one = |q: Queue<u32>| async move {
        let mut n = 0u64;
        while Instant::now() < end {
            q.len().await.expect("len");
            n += 1;
        }
        n
    };
    futures::future::join_all((0..width).map(|_| one(q.clone())))
        .await
        .into_iter()
        .sum()
}

/// Round trips (`put` then `get`) through the hub; returns the median and the worst, in µs.
#[entry]
async fn round_trips(q: Queue<u32>, n: u32) -> (u64, u64) {
    let mut took = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        q.put(i).await.expect("put");
        assert_eq!(q.get().await.expect("get"), i);
        took.push(start.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    took.sort_unstable();
    (took[took.len() / 2], took[took.len() - 1])
}

#[multiprocessing::test]
async fn a_child_flooding_the_hub_leaves_the_others_latency_bounded() {
    let (flooded, probe) = (Queue::new(), Queue::new());
    let quiet = Process::spawn(round_trips, (probe.clone(), 200))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    let flooder = Process::spawn(flood, (flooded.clone(), 32, 2_000))
        .await
        .unwrap();
    // Let the flood begin before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loud = Process::spawn(round_trips, (probe.clone(), 200))
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    let requests = flooder.join().await.unwrap();
    eprintln!(
        "hub flood: {requests} requests in 2 s; the other child's round trip \
         median/worst {}/{} us quiet, {}/{} us during the flood",
        quiet.0, quiet.1, loud.0, loud.1
    );
    assert!(requests > 1_000, "the flood was no flood: {requests}");
    // A bound on liveness, not a speed claim: the hub answered the other child throughout.
    assert!(loud.1 < 1_000_000, "a round trip took {} us", loud.1);
}
