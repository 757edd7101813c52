//! Layer 3: the child side. See `README.md` beside this file for the start-up sequence.
//!
//! A child is this same executable started again with [`CHILD_ENV`](crate::protocol::CHILD_ENV)
//! in its environment. `launch` notices the marker before the user's `main` (or test body) runs
//! and hands control to [`serve`], which connects to the parent, authenticates, runs the calls it
//! is sent, forwards `tracing` events, and exits when the parent is gone.

mod call;
mod call_tasks;
mod call_thread;
mod child;
pub(crate) mod fork_server;
mod log_forward;
mod server;
mod spare;
mod start_log;

pub(crate) use child::serve;
pub(crate) use start_log::{create_counters, StartLogReader};

use crate::error::Result;
use crate::protocol::{ChildConfig, CHILD_ENV};

/// Runs once the child knows who it is (at once, or for a spare once it is assigned); returns
/// what keeps its context alive.
pub(crate) type OnReady = Box<dyn FnOnce(&ChildConfig) -> KeepAlive + Send>;
/// Held for as long as the child serves (its context).
pub(crate) type KeepAlive = Box<dyn std::any::Any + Send>;

/// What a child waits for after each call and before it reports the result; `launch` sets it
/// (to "the root has applied this process's queue puts"), so that this layer needs no layer
/// above it.
pub(crate) type AfterCall = fn() -> crate::entry::BoxFuture<()>;

static AFTER_CALL: std::sync::OnceLock<AfterCall> = std::sync::OnceLock::new();

/// Sets the [`AfterCall`] hook (once per process; later calls are ignored).
pub(crate) fn set_after_call(hook: AfterCall) {
    let _ = AFTER_CALL.set(hook);
}

async fn after_call() {
    if let Some(hook) = AFTER_CALL.get() {
        hook().await;
    }
}

/// Exit code of a child whose parent went away (end of stream on its connection).
pub(crate) const EXIT_PARENT_GONE: i32 = 70;
/// Exit code of a child that could not reach or authenticate with its parent.
pub(crate) const EXIT_NO_PARENT: i32 = 71;

/// The child configuration of this process, if it was started as a child.
///
/// # Errors
/// `Decode` when the marker is present but unreadable (a parent of another version).
pub(crate) fn child_config() -> Option<Result<ChildConfig>> {
    let raw = std::env::var(CHILD_ENV).ok()?;
    Some(ChildConfig::from_env(&raw))
}

/// Arranges for this process to be killed when the thread that started it exits, and exits at
/// once if the parent is already gone. Run first thing in a child.
pub(crate) fn die_with_parent(cfg: &ChildConfig) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // SAFETY: getppid(2) cannot fail and has no preconditions.
    let parent = unsafe { libc::getppid() };
    if u32::try_from(parent).ok() != Some(cfg.os_parent) {
        std::process::exit(EXIT_PARENT_GONE);
    }
}
