//! Auto-trait assertions: handles are `Send + Sync`, and the futures users await are `Send`, so
//! they run inside `tokio::spawn`.

use multiprocessing::{
    entry, Error, ManagerEvent, ManagerLock, ManagerLockGuard, Process, ProcessBuilder,
    ProcessInfo, StartMethod,
};

#[entry]
fn id(x: u8) -> u8 {
    x
}

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<Process<u8>>();
    send_sync::<ProcessBuilder>();
    send_sync::<ProcessInfo>();
    send_sync::<StartMethod>();
    send_sync::<Error>();
    send_sync::<id>();
    send_sync::<ManagerLock>();
    send_sync::<ManagerLockGuard<'static>>();
    send_sync::<ManagerEvent>();
}

#[test]
fn futures_are_send() {
    // Built, never polled: only their types matter here.
    send(&Process::spawn(id, 1));
    send(&Process::builder().spawn(id, 1));
    fn join_future(p: &Process<u8>) {
        send(&p.join());
    }
    let _ = join_future;
    fn manager_futures(lock: &ManagerLock, ev: &ManagerEvent) {
        send(&lock.acquire());
        send(&ev.wait());
    }
    let _ = manager_futures;
}

#[test]
fn errors_are_std_errors() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<Error>();
}
