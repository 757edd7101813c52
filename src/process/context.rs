//! Python's `current_process`, `parent_process`, `active_children` and `cpu_count`.

use crate::start::Context;

/// A process as these functions describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its process id.
    pub pid: u32,
    /// Its name: `MainProcess` for the root, `Process-N` (or the builder's name) for a child.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// This process (Python's `current_process()`): `MainProcess` in the root, or outside any
/// `#[process_main]`.
pub fn current_process() -> ProcessInfo {
    let pid = std::process::id();
    match Context::try_current() {
        Some(ctx) => ProcessInfo {
            pid,
            name: ctx.identity().name.clone(),
            daemon: ctx.identity().daemon,
        },
        None => ProcessInfo {
            pid,
            name: "MainProcess".into(),
            daemon: false,
        },
    }
}

/// The process that started this one, or `None` in the root (Python's `parent_process()`).
pub fn parent_process() -> Option<ProcessInfo> {
    let ctx = Context::try_current()?;
    let (pid, name) = ctx.identity().parent.clone()?;
    Some(ProcessInfo {
        pid,
        name,
        daemon: false,
    })
}

/// The children of this process that are still running (Python's `active_children()`).
pub fn active_children() -> Vec<ProcessInfo> {
    let Some(ctx) = Context::try_current() else {
        return Vec::new();
    };
    ctx.active_children()
        .into_iter()
        .map(|c| ProcessInfo {
            pid: c.pid,
            name: c.name,
            daemon: c.daemon,
        })
        .collect()
}

/// The number of CPUs this process may use (Python's `cpu_count()`; 1 if it cannot tell).
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
