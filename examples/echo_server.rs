//! A TCP echo server that hands each accepted connection to a child process, as Python's
//! `multiprocessing.reduction` allows:
//!
//! ```python
//! import socket
//! from multiprocessing import Process
//!
//! def echo(sock):
//!     with sock:
//!         while data := sock.recv(1024):
//!             sock.sendall(data)
//!
//! if __name__ == '__main__':
//!     server = socket.create_server(('127.0.0.1', 0))
//!     while True:
//!         conn, _ = server.accept()
//!         Process(target=echo, args=(conn,)).start()
//!         conn.close()
//! ```
//!
//! The accepted `TcpStream` becomes an [`FdHandle`], an entry argument: the child receives the
//! same socket (passed with `SCM_RIGHTS`), and once it has it the parent holds no copy. So that
//! the example ends by itself, it also runs three clients against the server, prints what came
//! back, then stops accepting and joins the children.
//!
//! Run with `cargo run --release --example echo_server`.

use multiprocessing::connection::FdHandle;
use multiprocessing::{entry, process_main, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The child: echoes everything it reads until the client closes; returns the bytes echoed.
#[entry]
async fn echo(handle: FdHandle) -> u64 {
    let Ok(mut stream) = handle.into_tokio_tcp_stream() else {
        return 0;
    };
    let (mut reader, mut writer) = stream.split();
    tokio::io::copy(&mut reader, &mut writer).await.unwrap_or(0)
}

/// A client: sends `text`, closes its sending side, reads the echo to the end.
async fn client(address: std::net::SocketAddr, text: String) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await?;
    let mut echoed = String::new();
    stream.read_to_string(&mut echoed).await?;
    Ok(echoed)
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = server.local_addr()?;
    println!("echo server listening on {address}");

    const CLIENTS: usize = 3;
    let acceptor = tokio::spawn(async move {
        let mut children = Vec::new();
        for _ in 0..CLIENTS {
            let (stream, peer) = server.accept().await?;
            let child = Process::spawn(echo, FdHandle::try_from(stream)?).await?;
            println!("connection from {peer} handed to child {}", child.pid());
            children.push(child);
        }
        Ok::<_, multiprocessing::Error>(children)
    });

    let clients = (0..CLIENTS).map(|i| client(address, format!("hello from client {i}")));
    for echoed in futures::future::try_join_all(clients).await? {
        println!("echoed: {echoed}");
    }

    let children = acceptor
        .await
        .map_err(|e| multiprocessing::Error::Protocol(format!("the acceptor failed: {e}")))??;
    for child in children {
        let bytes = child.join().await?;
        println!("child {} echoed {bytes} bytes and exited", child.pid());
    }
    Ok(())
}
