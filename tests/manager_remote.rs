//! Remote managers: a server hosting named objects at an address, clients in other processes
//! connecting with the key, over 127.0.0.1 and across a network namespace (another host's
//! address, as CI runs as root).

use multiprocessing::{entry, Error, Manager, Process, Queue};
mod netns_common;

use netns_common::Netns;

/// Connects, adds 1 to `counts["n"]` `times` times, and returns the value then.
#[entry]
async fn remote_client(address: String, key: Vec<u8>, times: u32) -> multiprocessing::Result<i64> {
    let m = Manager::connect(&address, &key).await?;
    let d = m.dict_named::<String, i64>("counts");
    for _ in 0..times {
        d.fetch_add(&"n".into(), 1).await?;
    }
    Ok(d.get(&"n".into()).await?.unwrap_or(0))
}

#[multiprocessing::test]
async fn a_remote_manager_serves_clients_with_the_key_and_refuses_others() {
    let server = Manager::serve("127.0.0.1:0", b"right key").await.unwrap();
    let address = server.address().to_owned();
    let d = server.manager().dict_named::<String, i64>("counts");
    let mut clients = Vec::new();
    for _ in 0..2 {
        let args = (address.clone(), b"right key".to_vec(), 100);
        clients.push(Process::spawn(remote_client, args).await.unwrap());
    }
    let wrong = (address.clone(), b"wrong key".to_vec(), 100);
    let wrong = Process::spawn(remote_client, wrong).await.unwrap();
    let refused = wrong.join().await.unwrap();
    assert!(
        matches!(refused, Err(Error::Authentication(_))),
        "{refused:?}"
    );
    for c in clients {
        c.join().await.unwrap().unwrap();
    }
    assert_eq!(d.get(&"n".into()).await.unwrap(), Some(200));
}

/// Connects and adds 1 to `counts["n"]` forever, reporting each acknowledged value.
#[entry]
async fn remote_hammer(address: String, key: Vec<u8>, acked: Queue<i64>) {
    let m = Manager::connect(&address, &key).await.expect("connect");
    let d = m.dict_named::<String, i64>("counts");
    loop {
        let n = d.fetch_add(&"n".into(), 1).await.expect("fetch_add");
        acked.put(n).await.expect("ack");
    }
}

#[multiprocessing::test]
async fn a_client_killed_mid_session_leaves_the_server_serving_the_others() {
    let server = Manager::serve("127.0.0.1:0", b"k").await.unwrap();
    let address = server.address().to_owned();
    let d = server.manager().dict_named::<String, i64>("counts");
    let acked = Queue::new();
    let hammer = Process::spawn(
        remote_hammer,
        (address.clone(), b"k".to_vec(), acked.clone()),
    )
    .await
    .unwrap();
    let mut last = 0;
    while last < 300 {
        last = acked.get().await.unwrap();
    }
    hammer.kill();
    assert!(hammer.join().await.is_err(), "the client was killed");
    let before = d.get(&"n".into()).await.unwrap().unwrap();
    assert!(before >= last, "acknowledged {last}, kept {before}");
    let other = Process::spawn(remote_client, (address, b"k".to_vec(), 50))
        .await
        .unwrap();
    let seen = other.join().await.unwrap().unwrap();
    assert_eq!(seen, before + 50, "the server went on serving");
}

/// Runs `remote_client` from inside network namespace `ns` (on a thread of its own that joined
/// it, with a runtime of its own, so every socket it makes is the namespace's), after checking
/// that `own` (an address that exists only there) is this thread's.
#[entry]
fn remote_client_in_netns(
    ns: String,
    own: String,
    address: String,
    key: Vec<u8>,
) -> Result<i64, String> {
    let thread = std::thread::spawn(move || -> Result<i64, String> {
        let file =
            std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
        // SAFETY: `file` is an open descriptor of a network namespace; `setns` only moves this
        // thread (which owns no sockets yet) into it.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        std::net::UdpSocket::bind(format!("{own}:0"))
            .map_err(|e| format!("{own} is not this namespace's address: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let m = Manager::connect(&address, &key)
                .await
                .map_err(|e| e.to_string())?;
            let d = m.dict_named::<String, i64>("counts");
            for _ in 0..10 {
                d.fetch_add(&"n".into(), 1)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let wrong = Manager::connect(&address, b"wrong").await;
            if !matches!(wrong, Err(Error::Authentication(_))) {
                return Err(format!("a wrong key was not refused: {wrong:?}"));
            }
            Ok(d.get(&"n".into())
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or(0))
        })
    });
    thread
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
}

#[multiprocessing::test]
async fn a_remote_manager_serves_a_client_in_another_network_namespace() {
    let subnet = (std::process::id() % 250) as u8;
    let ns = match Netns::create(subnet) {
        Ok(ns) => ns,
        Err(reason) => {
            println!("skipped: no network namespace for this test ({reason})");
            return;
        }
    };
    let server = Manager::serve(&format!("198.18.{subnet}.1:0"), b"netns key")
        .await
        .unwrap();
    let d = server.manager().dict_named::<String, i64>("counts");
    let args = (
        ns.name.clone(),
        format!("198.18.{subnet}.2"),
        server.address().to_owned(),
        b"netns key".to_vec(),
    );
    let seen = Process::spawn(remote_client_in_netns, args)
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(seen, Ok(10));
    assert_eq!(d.get(&"n".into()).await.unwrap(), Some(10));
    drop(ns);
}
