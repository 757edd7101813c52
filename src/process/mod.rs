//! Layer 5: one child process, supervised.
//!
//! [`Process::spawn`] starts this executable again as a child, sends it one call (an `#[entry]`
//! function and its arguments), and hands back a handle whose [`join`](Process::join) returns the
//! function's value. A background task supervises the child: it reads the result, re-emits the
//! child's `tracing` events, and reaps the process.
//!
//! What every parent of a working child needs is here too, for the pool's workers (and actors)
//! as well: `child.rs` starts a child, tracks it and reaps it; `session.rs` is the parent's side
//! of the calls on its connection (request ids, replies, `Cancel`, `Withdraw`, start reports).

pub(crate) mod child;
mod context;
pub(crate) mod session;

pub use context::{active_children, cpu_count, current_process, parent_process, ProcessInfo};

use crate::entry::{Entry, RegisteredRun};
use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_value, encode_value};
use crate::start::{send_signal, ChildOptions, Context, StartMethod};
use child::SupervisedChild;
use serde::de::DeserializeOwned;
use session::{CallMode, Incoming};
use std::ffi::OsString;
use std::marker::PhantomData;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use tokio::sync::watch;

/// What the supervisor has learned about the child.
#[derive(Debug, Default)]
struct State {
    /// The call's outcome: the message holding the encoded value and where the value starts in
    /// it, or the error the child reported.
    outcome: Option<std::result::Result<(crate::buffers::Buffer, usize), RemoteError>>,
    /// Set once the process has exited and been reaped.
    exited: Option<ExitStatus>,
    /// The kernel's OOM killer ended it (see `child.rs`).
    oom: bool,
    /// Set when supervision failed (the runtime shut down under it).
    lost: bool,
}

#[derive(Debug)]
struct Shared {
    pid: u32,
    name: String,
    daemon: bool,
    state: watch::Receiver<State>,
}

/// A child process running one `#[entry]` call; Python's `multiprocessing.Process`.
///
/// `R` is the entry's return type; [`join`](Process::join) hands it back. The handle is cheap to
/// clone. Dropping every handle detaches the child, as in Python: it runs on, and at the end of
/// `#[process_main]` (or of the `#[multiprocessing::test]`) non-daemon children are waited for
/// and daemon children terminated.
///
/// ```
/// use multiprocessing::{entry, Process};
///
/// #[entry]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[multiprocessing::process_main]
/// async fn main() -> multiprocessing::Result<()> {
///     let p = Process::spawn(square, 12).await?;
///     assert_eq!(p.join().await?, 144);
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process<R> {
    shared: Arc<Shared>,
    _output: PhantomData<fn() -> R>,
}

impl<R> Clone for Process<R> {
    fn clone(&self) -> Self {
        Process {
            shared: Arc::clone(&self.shared),
            _output: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.shared.pid)
            .field("name", &self.shared.name)
            .field("daemon", &self.shared.daemon)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl Process<()> {
    /// A builder to set the name, daemon flag, environment or start method of a child.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }
}

impl<R: DeserializeOwned + Send + 'static> Process<R> {
    /// Starts a child process that runs `entry(args)`.
    ///
    /// Several parameters travel as one tuple: `Process::spawn(add, (1, 2))`. Returns once the
    /// operating system has started the process; the call is delivered as soon as the child
    /// connects back.
    ///
    /// # Cancel safety
    /// Cancel-safe in the sense that matters: if the future is dropped once the start is under
    /// way, the child is still started, supervised and counted by `active_children`, and runs
    /// detached, as with a dropped handle.
    ///
    /// # Errors
    /// [`Error::NotLaunched`] outside `#[process_main]` / `#[multiprocessing::test]`;
    /// [`Error::Encode`] when the arguments cannot be encoded; [`Error::Io`] when the OS refuses
    /// to start a process.
    pub async fn spawn<E>(entry: E, args: E::Args) -> Result<Process<E::Output>>
    where
        E: Entry<Output = R>,
    {
        ProcessBuilder::default().spawn(entry, args).await
    }

    /// Starts a child process that runs `value.run()`: Python's `Process` subclass with `run()`.
    /// The type must be registered with `#[entry]` on its `impl Run for T` block.
    ///
    /// # Cancel safety
    /// As [`Process::spawn`].
    ///
    /// # Errors
    /// As [`Process::spawn`].
    pub async fn spawn_run<T>(value: T) -> Result<Process<T::Output>>
    where
        T: RegisteredRun<Output = R>,
    {
        ProcessBuilder::default().spawn_run(value).await
    }

    /// Waits for the child to finish and returns its entry's value.
    ///
    /// Like Python's `join`, this waits for the process to exit, so [`exitcode`](Self::exitcode)
    /// is set afterwards. It may be called again: each call decodes the value anew.
    ///
    /// The value is decoded as soon as it arrives, before the child has exited: a value that
    /// carries shared memory made in the child (a `SharedBytes`, a `SharedMemory`) takes its
    /// descriptors from the child, which waits for that up to 10 s after it returned (or until
    /// this process is gone). Join such a child within that time; a second `join` of such a
    /// value fails to decode, as its descriptors were taken by the first.
    ///
    /// # Cancel safety
    /// Cancel-safe: wrap it in `tokio::time::timeout`, and the handle stays usable.
    ///
    /// # Errors
    /// [`Error::Panicked`] with the panic's message and location when the entry panicked;
    /// [`Error::ProcessDied`] with the exit code or signal when the child ended without a value
    /// (aborted, killed, exited early); [`Error::NotAnEntry`] when the child executable does not
    /// know the entry; [`Error::Decode`] when the value does not decode as `R`.
    pub async fn join(&self) -> Result<R> {
        let lost =
            || Error::Protocol("the runtime that supervised this process has shut down".into());
        let mut state = self.shared.state.clone();
        // Decoded while the child still runs (see above), then waited for its exit.
        let value = {
            let s = state
                .wait_for(|s| s.outcome.is_some() || s.exited.is_some() || s.lost)
                .await
                .map_err(|_| lost())?;
            match &s.outcome {
                Some(Ok((message, at))) => Some(decode_value("entry result", &message[*at..])),
                _ => None,
            }
        };
        let state = state
            .wait_for(|s| s.exited.is_some() || s.lost)
            .await
            .map_err(|_| lost())?;
        if state.lost {
            return Err(lost());
        }
        match &state.outcome {
            Some(Ok(_)) => value.unwrap_or_else(|| Err(lost())),
            Some(Err(remote)) => Err(remote.clone().into()),
            None => {
                let status = state.exited.unwrap_or_else(|| ExitStatus::from_raw(0));
                Err(Error::ProcessDied {
                    pid: self.shared.pid,
                    exitcode: status.code(),
                    signal: status.signal(),
                    oom: state.oom,
                })
            }
        }
    }
}

impl<R> Process<R> {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The child's name (`Process-N` unless the builder gave one).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the child is a daemon: terminated, rather than waited for, when the launch ends.
    pub fn is_daemon(&self) -> bool {
        self.shared.daemon
    }

    /// Whether the child has not exited yet.
    pub fn is_alive(&self) -> bool {
        self.shared.state.borrow().exited.is_none()
    }

    /// The exit code once the child has exited: its exit status, or `-N` if signal `N` ended it
    /// (as Python reports it). `None` while it runs.
    pub fn exitcode(&self) -> Option<i32> {
        let status = self.shared.state.borrow().exited?;
        child::exitcode(status)
    }

    /// Sends SIGTERM (Python's `terminate`). Does nothing if the child has exited.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGKILL (Python's `kill`). Does nothing if the child has exited.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, sig: i32) {
        if self.is_alive() {
            send_signal(self.shared.pid, sig);
        }
    }
}

/// Configures a child before it starts; Python's `Process(name=…, daemon=…)` keyword arguments.
///
/// ```
/// use multiprocessing::{entry, Process};
///
/// #[entry]
/// fn hello(who: String) -> String {
///     format!("hello, {who}")
/// }
///
/// #[multiprocessing::process_main]
/// async fn main() -> multiprocessing::Result<()> {
///     let p = Process::builder().name("greeter").daemon(true).spawn(hello, "bob".to_string()).await?;
///     assert_eq!(p.name(), "greeter");
///     assert_eq!(p.join().await?, "hello, bob");
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: Option<bool>,
    env: Vec<(OsString, OsString)>,
    start_method: Option<StartMethod>,
}

impl ProcessBuilder {
    /// The child's name. Default: `Process-N`, counting the children this process started (and
    /// `<parent name>:N` in a child).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon. Default: the daemon flag of the current process, as in
    /// Python (so `false` in the root).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Adds an environment variable for the child (on top of this process's environment, which
    /// it inherits).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The start method. Default: [`get_start_method`](crate::get_start_method).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Starts a child running `entry(args)`; see [`Process::spawn`].
    ///
    /// # Cancel safety
    /// As [`Process::spawn`].
    ///
    /// # Errors
    /// As [`Process::spawn`].
    pub async fn spawn<E: Entry>(self, entry: E, args: E::Args) -> Result<Process<E::Output>> {
        let _ = entry;
        let body = encode_value("entry arguments", &args)?;
        self.start(E::NAME, body).await
    }

    /// Starts a child running `value.run()`; see [`Process::spawn_run`].
    ///
    /// # Cancel safety
    /// As [`Process::spawn`].
    ///
    /// # Errors
    /// As [`Process::spawn`].
    pub async fn spawn_run<T: RegisteredRun>(self, value: T) -> Result<Process<T::Output>> {
        let body = encode_value("entry arguments", &value)?;
        self.start(T::NAME, body).await
    }

    pub(crate) async fn start<R>(self, entry: &'static str, body: Vec<u8>) -> Result<Process<R>> {
        let ctx = Context::current()?;
        let name = self.name.unwrap_or_else(|| ctx.next_child_name());
        let daemon = self.daemon.unwrap_or(ctx.identity().daemon);
        let opts = ChildOptions {
            name: name.clone(),
            daemon,
            env: self.env,
            start_method: self
                .start_method
                .unwrap_or_else(crate::start::get_start_method),
            // One call, on a thread of its own that writes its result itself (see `bootstrap`).
            concurrency: 1,
        };
        // Started in a task of its own: if the caller stops waiting, a child the OS has already
        // started is still tracked and supervised (it runs detached), never half set up.
        let supervisor_name = name.clone();
        let started = tokio::spawn(async move {
            let child = SupervisedChild::start(&ctx, opts).await?;
            let pid = child.pid();
            let (state_tx, state) = watch::channel(State::default());
            tokio::spawn(supervise(child, supervisor_name, entry, body, state_tx));
            Ok::<_, Error>((pid, state))
        });
        let (pid, state) = started
            .await
            .map_err(|e| Error::Protocol(format!("the task starting the child was lost: {e}")))??;
        Ok(Process {
            shared: Arc::new(Shared {
                pid,
                name,
                daemon,
                state,
            }),
            _output: PhantomData,
        })
    }
}

/// Delivers the call, collects the outcome and the child's logs, and reaps the process.
async fn supervise(
    child: SupervisedChild,
    name: String,
    entry: &'static str,
    body: Vec<u8>,
    state: watch::Sender<State>,
) {
    // If this task is dropped (the runtime shuts down), tell the waiters instead of leaving them.
    struct Lost<'a>(&'a watch::Sender<State>, bool);
    impl Drop for Lost<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.send_modify(|s| s.lost = true);
            }
        }
    }
    let mut guard = Lost(&state, false);

    let (child, conn) = child.connect(None).await;
    if let Some(conn) = conn {
        let (mut session, mut reader) = session::open::<()>(conn, name, None);
        let mode = CallMode {
            then_exit: true,
            ..CallMode::default()
        };
        let _ = session.call(0, entry, mode, body, None);
        loop {
            match reader.next().await {
                Ok(Some(Incoming::Returned { outcome, .. })) => {
                    state.send_modify(|s| s.outcome = Some(outcome));
                }
                Ok(Some(Incoming::Started { .. } | Incoming::Withdrawn { .. })) => {
                    tracing::warn!(target: "multiprocessing::process", "child {} broke the protocol; dropping its connection", child.pid());
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(target: "multiprocessing::process", "dropped the connection of child {}: {e}", child.pid());
                    break;
                }
            }
        }
    }
    let exit = child.reap().await;
    state.send_modify(|s| {
        s.exited = Some(exit.status);
        s.oom = exit.oom;
    });
    guard.1 = true;
}

#[cfg(test)]
mod tests {
    use super::child::SupervisedChild;
    use super::session::{self, CallMode, Incoming};
    use crate::entry::Entry;
    use crate::protocol::{decode_value, encode_value};
    use crate::start::{ChildOptions, Context, StartMethod};
    use std::time::Duration;

    #[crate::entry]
    async fn nap(ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// One session per child, many calls in flight on it: results come back by request id, in
    /// completion order, each with the reply registered for it; a cancelled call never answers;
    /// `Shutdown` ends the child cleanly.
    #[crate::test]
    async fn one_child_serves_many_calls_at_once() {
        let ctx = Context::current().unwrap();
        let opts = ChildOptions {
            name: "mux".into(),
            daemon: false,
            env: Vec::new(),
            start_method: StartMethod::Spawn,
            concurrency: 0,
        };
        let child = SupervisedChild::start(&ctx, opts).await.unwrap();
        let (child, conn) = child.connect(None).await;
        let (mut session, mut reader) = session::open(conn.unwrap(), "mux".into(), None);
        for (id, ms) in [(1, 400), (2, 10), (3, 200), (4, 100)] {
            let args = encode_value("args", &ms).unwrap();
            let mode = CallMode::default();
            session
                .call(id, <nap as Entry>::NAME, mode, args, Some(ms))
                .unwrap();
        }
        session.cancel(4);
        let mut order = Vec::new();
        while order.len() < 3 {
            if let Some(Incoming::Returned { id, reply, outcome }) = reader.next().await.unwrap() {
                let (message, at) = outcome.unwrap();
                let value = decode_value::<u64>("result", &message[at..]).unwrap();
                assert_eq!(reply, Some(value));
                order.push((id, value));
            }
        }
        assert_eq!(order, vec![(2, 10), (3, 200), (1, 400)]);
        session.shutdown();
        assert_eq!(child.reap().await.status.code(), Some(0));
    }
}
