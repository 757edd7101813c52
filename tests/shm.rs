//! Shared memory across processes: atomics from several processes, an `Array` written by one
//! child and read by another, 256 MiB seen by three processes, a `Value` through a `Queue`,
//! and 64 MiB of `SharedBytes` through `Process::spawn` and back.

use multiprocessing::{entry, Array, Pool, Process, Queue, SharedBytes, SharedMemory, Value};

#[entry]
fn add_many(v: Value<i64>, n: u32) {
    for _ in 0..n {
        v.fetch_add(1);
    }
}

#[multiprocessing::test]
async fn fetch_add_from_four_processes_is_exact() {
    let v = Value::new(0i64).unwrap();
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(Process::spawn(add_many, (v.clone(), 10_000)).await.unwrap());
    }
    for c in children {
        c.join().await.unwrap();
    }
    assert_eq!(v.load(), 40_000);
    assert_eq!(v.swap(5), 40_000);
    assert_eq!(v.compare_exchange(5, 6), Ok(5));
    assert_eq!(v.compare_exchange(5, 7), Err(6));
    assert_eq!(v.fetch_sub(1), 6);
}

#[entry]
fn write_squares(a: Array<f64>) {
    for i in 0..a.len() {
        a.set(i, (i * i) as f64);
    }
}

#[entry]
fn sum(a: Array<f64>) -> f64 {
    a.to_vec().iter().sum()
}

#[multiprocessing::test]
async fn an_array_written_by_one_child_is_read_by_another() {
    let a = Array::<f64>::new(1000).unwrap();
    Process::spawn(write_squares, a.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    let total = Process::spawn(sum, a.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    let expected: f64 = (0..1000).map(|i| (i * i) as f64).sum();
    assert_eq!(total, expected);
    assert_eq!(a.get(999), 998_001.0);
}

const BIG: usize = 256 << 20;

/// Writes a byte at each MiB (its index), then checks the bytes written by the other writer.
#[entry]
fn stamp_and_check(shm: SharedMemory, offset: usize) -> u64 {
    assert_eq!(shm.len(), BIG);
    for mib in (offset..BIG >> 20).step_by(2) {
        shm.write(mib << 20, &[mib as u8 ^ 0x5a]);
    }
    let mut seen = 0;
    let mut b = [0u8; 1];
    for mib in 0..BIG >> 20 {
        shm.read(mib << 20, &mut b);
        seen += u64::from(b[0] != 0);
    }
    seen
}

#[multiprocessing::test]
async fn a_256_mib_segment_is_shared_by_three_processes() {
    let shm = SharedMemory::create(BIG).unwrap();
    for offset in 0..2 {
        Process::spawn(stamp_and_check, (shm.clone(), offset))
            .await
            .unwrap()
            .join()
            .await
            .unwrap();
    }
    let mut b = [0u8; 1];
    for mib in 0..BIG >> 20 {
        shm.read(mib << 20, &mut b);
        assert_eq!(b[0], mib as u8 ^ 0x5a, "MiB {mib}");
    }
}

#[entry]
async fn take_value_and_add(q: Queue<Value<u32>>) -> u32 {
    let v = q.get().await.expect("get");
    v.fetch_add(10) + 10
}

#[multiprocessing::test]
async fn a_value_handed_through_a_queue_is_the_same_memory() {
    let q = Queue::<Value<u32>>::new();
    let v = Value::new(1u32).unwrap();
    let child = Process::spawn(take_value_and_add, q.clone()).await.unwrap();
    q.put(v.clone()).await.unwrap();
    assert_eq!(child.join().await.unwrap(), 11);
    assert_eq!(v.load(), 11);
    let mut guard = v.lock().await.unwrap();
    *guard += 1;
    drop(guard);
    assert_eq!(v.load(), 12);
}

/// Checks the payload; answers with a checksum.
#[entry]
fn check_pattern(bytes: SharedBytes) -> u64 {
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    bytes.iter().map(|b| u64::from(*b)).sum()
}

/// Answers with the payload's bytes reversed, made in place in new shared memory.
#[entry]
fn reverse(bytes: SharedBytes) -> SharedBytes {
    let mut out = SharedBytes::with_capacity(bytes.len()).expect("memory");
    for (o, b) in out.iter_mut().zip(bytes.iter().rev()) {
        *o = *b;
    }
    out.freeze()
}

#[multiprocessing::test]
async fn sixty_four_mib_of_shared_bytes_go_to_a_process_and_back() {
    const LEN: usize = 64 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let expected: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let bytes = SharedBytes::from_vec(data).unwrap();
    let checksum = Process::spawn(check_pattern, bytes.clone())
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(checksum, expected);
    // Back: the result's descriptor is taken from the child as `join` decodes it; the child
    // waits for that before it exits.
    let child = Process::spawn(reverse, bytes.clone()).await.unwrap();
    let back = child.join().await.unwrap();
    assert_eq!(child.exitcode(), Some(0));
    assert_eq!(back.len(), LEN);
    assert!(back.iter().rev().eq(bytes.iter()));
    // And from a pool worker, which outlives its task anyway.
    let pool = Pool::new(1).await.unwrap();
    let back = pool.apply(reverse, bytes.clone()).await.unwrap();
    assert!(back.iter().rev().eq(bytes.iter()));
}

/// Makes shared memory here and hands it back.
#[entry]
fn make_memory(len: usize) -> SharedMemory {
    let shm = SharedMemory::create(len).expect("memory");
    shm.write(len - 3, b"end");
    shm
}

#[multiprocessing::test]
async fn a_process_returns_shared_memory_it_made() {
    let child = Process::spawn(make_memory, 1 << 20).await.unwrap();
    // Joined late: the child waits for its memory to be taken.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        child.is_alive(),
        "the child waits for its value's memory to be taken"
    );
    let shm = child.join().await.unwrap();
    assert!(!child.is_alive());
    let mut end = [0u8; 3];
    shm.read((1 << 20) - 3, &mut end);
    assert_eq!(&end, b"end");
}

#[entry]
fn length(bytes: SharedBytes) -> usize {
    bytes.len()
}

#[multiprocessing::test]
async fn a_pool_task_takes_shared_bytes() {
    let pool = Pool::new(2).await.unwrap();
    let bytes = SharedBytes::from_vec(vec![3; 10 << 20]).unwrap();
    assert_eq!(pool.apply(length, bytes.clone()).await.unwrap(), 10 << 20);
    assert_eq!(pool.apply(length, bytes).await.unwrap(), 10 << 20);
}

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn handles_guards_and_futures_are_send_and_sync() {
    send_sync::<SharedMemory>();
    send_sync::<SharedBytes>();
    send_sync::<multiprocessing::shm::SharedBytesMut>();
    send_sync::<Value<u64>>();
    send_sync::<Array<f32>>();
    send_sync::<multiprocessing::shm::ValueGuard<'static, u64>>();
    send_sync::<multiprocessing::shm::ArrayGuard<'static, [u8; 4]>>();
    let v = Value::new(1u8).unwrap();
    let a = Array::<i16>::new(2).unwrap();
    // Built, never polled: only their types matter here.
    send(&v.lock());
    send(&a.lock());
}

#[test]
#[should_panic(expected = "out of range")]
fn an_index_out_of_range_panics() {
    Array::<u32>::new(3).unwrap().get(3);
}
