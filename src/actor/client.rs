//! A process's side of its connection to one actor: every reference to that actor in this
//! process shares one [`Client`], and the client one connection ([`Link`]) at a time.
//!
//! A call first takes a mailbox credit (the bound on calls sent and unanswered), which its reply
//! gives back, so a full mailbox makes callers wait before anything is sent. When the link ends
//! (see `link.rs`), the client connects again at once (to the same socket, which a restarted
//! actor keeps): the calls the dead process had started fail, and those it had not go first on
//! the new link, before any later call. When nobody serves the socket any more, every waiting
//! call learns it.
//!
//! A call's future stays small and cheap to poll: connecting and waiting for a free credit are
//! boxed slow paths, and the call does not count against tokio's cooperative budget (a client
//! that has thousands of calls in flight from one task would otherwise poll most of them in
//! vain once the budget is spent). Every call waits on a reply from another process, so it
//! still yields.

use super::link::{Link, Pending, Request};
use super::watch::Watch;
use super::wire::Addr;
use super::wire::ToActor;
use super::ActorExit;
use crate::buffers::IntoShared;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// References serialized (`holds`) or received (`arrivals`) while this process had no link,
/// told to the actor on the next one.
#[derive(Default)]
struct Owed {
    holds: u32,
    arrivals: u32,
}

/// This process's client of one actor.
pub(crate) struct Client {
    addr: Addr,
    credits: Arc<Semaphore>,
    link: Mutex<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<()>,
    owed: Mutex<Owed>,
    /// The supervisor, in the process that spawned the actor.
    watch: Option<Arc<Watch>>,
    /// Itself, for the task that reconnects when a link ends.
    me: Weak<Client>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every client of this process, by socket path: references share one.
fn clients() -> &'static Mutex<HashMap<PathBuf, Weak<Client>>> {
    static CLIENTS: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Client>>>> =
        std::sync::OnceLock::new();
    CLIENTS.get_or_init(Mutex::default)
}

impl Client {
    /// This process's client of the actor at `addr`, made if there is none.
    fn shared(addr: Addr, watch: Option<Arc<Watch>>) -> Arc<Client> {
        let mut all = lock(clients());
        all.retain(|_, c| c.strong_count() > 0);
        if let Some(client) = all.get(&addr.path).and_then(Weak::upgrade) {
            return client;
        }
        let client = Arc::new_cyclic(|me| Client {
            me: me.clone(),
            credits: Arc::new(Semaphore::new(addr.mailbox as usize)),
            link: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            owed: Mutex::default(),
            watch,
            addr,
        });
        all.insert(client.addr.path.clone(), Arc::downgrade(&client));
        client
    }

    /// The client of an actor this process has just spawned.
    pub(super) fn spawned(addr: Addr, watch: Arc<Watch>) -> Arc<Client> {
        Self::shared(addr, Some(watch))
    }

    /// The client of an actor found by name.
    pub(super) fn found(addr: Addr) -> Arc<Client> {
        Self::shared(addr, None)
    }

    /// The client for a reference that has just arrived (deserialized): the actor counts it as
    /// in transit until told.
    pub(super) fn arrived(addr: Addr) -> Arc<Client> {
        let client = Self::shared(addr, None);
        if !client.tell_now(&ToActor::Arrived(1)) {
            lock(&client.owed).arrivals += 1;
        }
        client
    }

    pub(super) fn addr(&self) -> &Addr {
        &self.addr
    }

    pub(super) fn pid(&self) -> Option<u32> {
        lock(&self.link).as_ref().map(|l| l.pid)
    }

    /// A reference is being serialized: the actor counts it as in transit.
    pub(super) fn hold(&self) {
        if !self.tell_now(&ToActor::Hold(1)) {
            lock(&self.owed).holds += 1;
        }
    }

    /// Sends `message` on the current link if there is a live one.
    fn tell_now(&self, message: &ToActor) -> bool {
        match self.live() {
            Some(link) => link.send(message),
            None => false,
        }
    }

    /// The current link, if it has not ended.
    fn live(&self) -> Option<Arc<Link>> {
        lock(&self.link)
            .as_ref()
            .filter(|l| !l.is_closed())
            .cloned()
    }

    /// The live link, connecting if there is none. A new link first takes over what the old
    /// one left unanswered: the calls its process had started fail (their replies are dropped,
    /// and each caller learns how the process ended); the others are sent again, ahead of any
    /// call made since (those wait here for the new link).
    ///
    /// # Errors
    /// `ActorStopped` when nobody serves the actor's socket any more; `Authentication`.
    async fn link(&self) -> Result<Arc<Link>> {
        if let Some(link) = self.live() {
            return Ok(link);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(link) = self.live() {
            return Ok(link);
        }
        let old = lock(&self.link).clone();
        let (started, unstarted) = match &old {
            Some(old) => {
                // The orphans are in place once the old link says it has ended.
                let mut ended = old.ended.clone();
                let _ = ended.wait_for(|e| *e).await;
                old.take_orphans(&self.addr)
            }
            None => (Vec::new(), Vec::new()),
        };
        drop(started);
        // On failure the unstarted calls are dropped with it: their callers learn the end.
        let link = Arc::new(self.open().await?);
        // What was owed goes first, on the link itself, so it is counted before this
        // process's connection could be seen to close.
        let owed = std::mem::take(&mut *lock(&self.owed));
        if owed.holds > 0 {
            link.send(&ToActor::Hold(owed.holds));
        }
        if owed.arrivals > 0 {
            link.send(&ToActor::Arrived(owed.arrivals));
        }
        for pending in unstarted {
            // A link that ended already drops the rest: they fail as the link's end says.
            if link.send_call(pending).is_err() {
                break;
            }
        }
        *lock(&self.link) = Some(Arc::clone(&link));
        self.reconnect_after(&link);
        Ok(link)
    }

    /// Opens a connection. One that fails while the actor had not ended is tried again, every
    /// 10 ms for up to 2 s, until it succeeds or the actor's end is known: a restarting actor's
    /// socket (kept by its supervisor) takes the next attempt, so the call goes to the new
    /// instance; an actor whose process died for good makes it fail as a call in flight
    /// would, with `ProcessDied`.
    ///
    /// # Errors
    /// `ActorStopped` when the actor had ended before (or ended on its own terms meanwhile);
    /// `ProcessDied` when its process died as this connected and was not restarted;
    /// `Authentication`, `NotLaunched`.
    async fn open(&self) -> Result<Link> {
        let ended_before = self.ended().is_some();
        let started = tokio::time::Instant::now();
        loop {
            match Link::open(&self.addr).await {
                Err(Error::ActorStopped) if !ended_before => {}
                other => return other,
            }
            if let Some((exit, pid)) = self.ended() {
                return Err(exit_error(pid, &exit));
            }
            if started.elapsed() >= Duration::from_secs(2) {
                return Err(Error::ActorStopped);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How the actor ended and the pid of its last process, once this process can know: from
    /// the supervisor where it was spawned, else from the exit file it writes.
    fn ended(&self) -> Option<(ActorExit, u32)> {
        match &self.watch {
            Some(watch) => {
                let exit = watch.exit.borrow().clone()?;
                let pid = watch.death.borrow().map_or(0, |(pid, ..)| pid);
                Some((exit, pid))
            }
            None => super::watch::read_ended(&super::watch::exit_path(&self.addr.path))
                .map(|ended| (ended.exit, ended.pid)),
        }
    }

    /// When `link` ends while this process still holds references, connects again at once:
    /// the calls left unanswered are settled (see `link`), and a restarted actor counts this
    /// process among its holders even if it makes no call (otherwise the last other client
    /// leaving would end it). An actor gone for good refuses the connection, and that is the
    /// end of it.
    fn reconnect_after(&self, link: &Link) {
        let mut ended = link.ended.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let _ = ended.wait_for(|e| *e).await;
            if let Some(client) = me.upgrade() {
                let _ = client.connect().await;
            }
        });
    }

    /// Connects now if not connected: proves the actor serves.
    ///
    /// # Errors
    /// As `link`.
    pub(super) async fn connect(&self) -> Result<()> {
        self.link().await.map(drop)
    }

    /// Sends a call and waits for its reply: the encoded value, or the error.
    ///
    /// # Errors
    /// The handler's error (`Panicked`), `ActorStopped`, `ProcessDied`.
    pub(super) async fn call(
        &self,
        method: u32,
        value: bool,
        args: Vec<u8>,
    ) -> Result<(Vec<u8>, usize)> {
        tokio::task::unconstrained(async move {
            let credit = self.credit().await?;
            let args = args.into_shared();
            let request = Request::Call {
                method,
                value,
                args,
            };
            self.exchange(request, Some(credit)).await
        })
        .await
    }

    /// A mailbox credit: at once if one is free, else after waiting for one.
    async fn credit(&self) -> Result<OwnedSemaphorePermit> {
        match Arc::clone(&self.credits).try_acquire_owned() {
            Ok(credit) => Ok(credit),
            Err(_) => Box::pin(Arc::clone(&self.credits).acquire_owned())
                .await
                .map_err(|_| Error::ActorStopped),
        }
    }

    /// Sends a call whose result nobody waits for; returns once it is sent.
    ///
    /// # Errors
    /// `ActorStopped` when the actor has ended.
    pub(super) async fn tell(&self, method: u32, args: Vec<u8>) -> Result<()> {
        tokio::task::unconstrained(async move {
            let credit = self.credit().await?;
            let request = Request::Call {
                method,
                value: false,
                args: args.into_shared(),
            };
            // The reply only gives the credit back: its receiver is dropped here.
            let (reply, _) = oneshot::channel();
            self.send(Pending {
                reply,
                _credit: Some(credit),
                request,
            })
            .await
            .map(drop)
        })
        .await
    }

    /// `stop`: the reply carries the final state.
    pub(super) async fn stop(&self) -> Result<(Vec<u8>, usize)> {
        let state = self.exchange(Request::Stop, None).await?;
        // Where the actor was spawned, return once it has ended and its name is free.
        if let Some(watch) = &self.watch {
            let _ = tokio::time::timeout(Duration::from_secs(5), watch.exit()).await;
        }
        Ok(state)
    }

    /// Sends `pending` on the live link (connecting if needed); returns the pid it went to.
    ///
    /// # Errors
    /// As `link`.
    async fn send(&self, mut pending: Pending) -> Result<u32> {
        loop {
            let link = match self.live() {
                Some(link) => link,
                None => Box::pin(self.link()).await?,
            };
            // Refused only by a link that ended meanwhile: nothing was sent, so the next link
            // (or the end) decides.
            match link.send_call(pending) {
                Ok(()) => return Ok(link.pid),
                Err(p) => pending = p,
            }
            let mut ended = link.ended.clone();
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Sends a message that has a reply, and waits for it.
    async fn exchange(
        &self,
        request: Request,
        credit: Option<OwnedSemaphorePermit>,
    ) -> Result<(Vec<u8>, usize)> {
        let (reply, rx) = oneshot::channel();
        // If this future is dropped from here on, the reply (when it comes) is discarded and
        // gives the credit back.
        let pid = self
            .send(Pending {
                reply,
                _credit: credit,
                request,
            })
            .await?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(remote)) => Err(remote.into()),
            Err(_) => Err(Box::pin(self.lost(pid)).await),
        }
    }

    /// The error for calls in flight on a link that ended: `ActorStopped` if the actor ended
    /// on its own terms, else how the process at its end died, as far as this process can tell
    /// (the supervisor's process knows the signal).
    async fn lost(&self, pid: u32) -> Error {
        // The OOM killer is not looked for here: the actor's cgroup is read, if at all, by the
        // process that spawned it, and this client may be another.
        let died = |exitcode, signal| Error::ProcessDied {
            pid,
            exitcode,
            signal,
            oom: false,
        };
        match &self.watch {
            Some(watch) => {
                let learnt = tokio::time::timeout(Duration::from_secs(2), watch.fate_of(pid)).await;
                match learnt {
                    Ok(Some((exitcode, signal))) => died(exitcode, signal),
                    Ok(None) => Error::ActorStopped,
                    Err(_) => died(None, None),
                }
            }
            None => {
                let path = super::watch::exit_path(&self.addr.path);
                let exit = tokio::time::timeout(
                    Duration::from_millis(500),
                    super::watch::read_exit(&path),
                );
                match exit.await {
                    Ok(exit) => exit_error(pid, &exit),
                    Err(_) => died(None, None),
                }
            }
        }
    }

    pub(super) async fn kill(&self) -> Result<()> {
        let Ok(link) = self.link().await else {
            return Ok(());
        };
        match &self.watch {
            // The supervisor's process signals: it ends the actor even in a long method.
            Some(watch) => {
                watch.killed.store(true, Ordering::SeqCst);
                crate::start::send_signal(link.pid, libc::SIGKILL);
            }
            None => {
                link.send(&ToActor::Kill);
            }
        }
        let mut ended = link.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
        Ok(())
    }

    pub(super) async fn detach(&self) -> Result<()> {
        let link = self.link().await?;
        if link.send(&ToActor::Detach) {
            Ok(())
        } else {
            Err(Error::ActorStopped)
        }
    }

    pub(super) fn monitor(&self) -> crate::entry::BoxFuture<ActorExit> {
        match &self.watch {
            Some(watch) => {
                let watch = Arc::clone(watch);
                Box::pin(async move { watch.exit().await })
            }
            None => {
                let path = super::watch::exit_path(&self.addr.path);
                Box::pin(async move { super::watch::read_exit(&path).await })
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // References that arrived here and were never used are still counted by the actor:
        // tell it, on a short connection of its own.
        let owed = std::mem::take(&mut *lock(&self.owed));
        if owed.holds == 0 && owed.arrivals == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let addr = self.addr.clone();
        runtime.spawn(async move {
            if let Ok(link) = Link::open(&addr).await {
                link.send(&ToActor::Hold(owed.holds));
                link.send(&ToActor::Arrived(owed.arrivals));
                link.flush().await;
            }
        });
    }
}

/// The error for a call that meets an actor which ended as `exit`, its last process `pid`: how
/// the process died, or `ActorStopped` for an end on the actor's own terms. (The OOM killer is
/// not looked for: the actor's cgroup is read, if at all, where it was spawned.)
fn exit_error(pid: u32, exit: &ActorExit) -> Error {
    match *exit {
        ActorExit::Died { exitcode, signal } => Error::ProcessDied {
            pid,
            exitcode,
            signal,
            oom: false,
        },
        _ => Error::ActorStopped,
    }
}
