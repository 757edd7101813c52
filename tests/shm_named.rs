//! Named shared memory: `SharedMemory::create_named` in the root and `open` from a grandchild
//! reach the same pages; the root drops a name with its last handle, in any process, also when
//! that process is SIGKILLed; nothing ever appears in `/dev/shm`.

use multiprocessing::{entry, Error, Process, Queue, SharedMemory};
use std::time::{Duration, Instant};

const LEN: usize = 1 << 20;

fn dev_shm() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// In the grandchild: opens the name, checks the root's pattern, stamps the last byte.
#[entry]
async fn open_and_stamp(name: String) -> usize {
    let shm = SharedMemory::open(&name).await.expect("open by name");
    assert_eq!(shm.name(), Some(name.as_str()));
    let mut head = [0u8; 4];
    shm.read(0, &mut head);
    assert_eq!(&head, b"root");
    shm.write(shm.len() - 1, &[0x5a]);
    shm.len()
}

/// In the child: starts the grandchild and hands back its answer.
#[entry]
async fn through_a_grandchild(name: String) -> usize {
    let grandchild = Process::spawn(open_and_stamp, name).await.expect("spawn");
    grandchild.join().await.expect("grandchild")
}

#[multiprocessing::test]
async fn a_grandchild_opens_memory_by_its_name() {
    let before = dev_shm();
    let shm = SharedMemory::create_named("from-the-root", LEN)
        .await
        .unwrap();
    assert_eq!((shm.name(), shm.len()), (Some("from-the-root"), LEN));
    shm.write(0, b"root");
    let child = Process::spawn(through_a_grandchild, "from-the-root".to_string())
        .await
        .unwrap();
    assert_eq!(child.join().await.unwrap(), LEN);
    let mut last = [0u8; 1];
    shm.read(LEN - 1, &mut last);
    assert_eq!(last[0], 0x5a, "the grandchild's write is seen by the root");
    assert_eq!(dev_shm(), before, "nothing is named in /dev/shm");
}

#[multiprocessing::test]
async fn a_name_is_taken_once_and_dropped_with_its_last_handle() {
    let shm = SharedMemory::create_named("brief", 4096).await.unwrap();
    let again = SharedMemory::create_named("brief", 4096).await;
    assert!(
        matches!(&again, Err(Error::InvalidArgument(m)) if m.contains("brief")),
        "{again:?}"
    );
    let opened = SharedMemory::open("brief").await.unwrap();
    opened.write(0, b"x");
    let mut b = [0u8; 1];
    shm.read(0, &mut b);
    assert_eq!(&b, b"x");
    let copy = opened.clone();
    drop((shm, opened));
    // A clone still holds the name.
    assert!(SharedMemory::open("brief").await.is_ok());
    drop(copy);
    let gone = SharedMemory::open("brief").await;
    assert!(
        matches!(&gone, Err(Error::Lookup(m)) if m.contains("brief")),
        "{gone:?}"
    );
    assert!(matches!(
        SharedMemory::open("never-made").await,
        Err(Error::Lookup(_))
    ));
    // The name is free again.
    SharedMemory::create_named("brief", 8).await.unwrap();
}

/// In the child: makes a name, says so, and waits to be killed.
#[entry]
async fn make_and_wait(ready: Queue<u32>) {
    let shm = SharedMemory::create_named("held-by-a-child", 4096)
        .await
        .expect("create");
    shm.write(0, &[7]);
    ready.put(1).await.expect("put");
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(shm);
}

#[multiprocessing::test]
async fn a_name_held_only_by_a_sigkilled_child_is_dropped() {
    let ready = Queue::new();
    let child = Process::spawn(make_and_wait, ready.clone()).await.unwrap();
    ready.get().await.unwrap();
    let shm = SharedMemory::open("held-by-a-child").await.unwrap();
    let mut b = [0u8; 1];
    shm.read(0, &mut b);
    assert_eq!(b[0], 7);
    drop(shm);
    child.kill();
    assert!(child.join().await.is_err());
    // The root hears of the death when the child's connection ends.
    let start = Instant::now();
    loop {
        match SharedMemory::open("held-by-a-child").await {
            Err(Error::Lookup(_)) => break,
            Ok(_) => assert!(
                start.elapsed() < Duration::from_secs(1),
                "name outlived its holder"
            ),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
