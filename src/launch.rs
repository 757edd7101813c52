//! Layer 7, the composition root: what `#[process_main]` and `#[multiprocessing::test]` expand to.
//!
//! In a child (the environment carries the child marker) it connects back to the parent and
//! serves calls; the user's `main` or test body never runs. In the root it builds the tokio
//! runtime, makes a fresh launch context current on every runtime thread, runs the user's
//! future, then terminates daemon children and waits for the others, as Python does at exit.

use crate::bootstrap::{self, EXIT_NO_PARENT};
use crate::error::Result;
use crate::protocol::ChildConfig;
use crate::start::{Context, Relaunch};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;

/// The runtime the macros ask for (their `flavor` and `worker_threads` arguments).
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// `flavor = "multi_thread"` (true) or `"current_thread"` (false).
    pub multi_thread: bool,
    /// `worker_threads = N`, for the multi-thread flavor.
    pub worker_threads: Option<usize>,
}

/// Entry point of a `#[process_main]` binary.
pub fn main<F: Future>(rt: RuntimeConfig, fut: F) -> F::Output {
    run_root(main_launch(), rt, fut)
}

/// Entry point of a `#[multiprocessing::test]`. `module_path` and `name` give the test's name
/// as libtest knows it, which is how a child of the test binary re-enters this test alone.
pub fn test<F: Future>(module_path: &str, name: &str, rt: RuntimeConfig, fut: F) -> F::Output {
    run_root(test_launch(module_path, name), rt, fut)
}

/// The macros' body of `main` or of a test, handed to whichever of [`LaunchSend`] and
/// [`LaunchLocal`] applies: `(&Body::new(fut)).main(rt)` picks `LaunchSend` when the future is
/// `Send + 'static` (method resolution tries `Body<F>` before `&Body<F>`), else `LaunchLocal`.
pub struct Body<F>(std::cell::Cell<Option<F>>);

impl<F> std::fmt::Debug for Body<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl<F> Body<F> {
    /// Wraps the body's future.
    pub fn new(fut: F) -> Self {
        Body(std::cell::Cell::new(Some(fut)))
    }

    fn take(&self) -> F {
        match self.0.take() {
            Some(fut) => fut,
            None => unreachable!("a launch body is launched once"),
        }
    }
}

/// Launches a `Send` body. On a multi-thread runtime the body runs as a task on the worker
/// threads, which also drive the I/O: a message that wakes it is handled on the thread that
/// read it, instead of crossing to the main thread (`block_on`) — measured here as the larger
/// part of a pipe round trip.
pub trait LaunchSend {
    /// The body's output.
    type Output;
    /// As [`main`].
    fn main(&self, rt: RuntimeConfig) -> Self::Output;
    /// As [`test`].
    fn test(&self, module_path: &str, name: &str, rt: RuntimeConfig) -> Self::Output;
}

impl<F> LaunchSend for Body<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn main(&self, rt: RuntimeConfig) -> F::Output {
        run_root_spawned(main_launch(), rt, self.take())
    }

    fn test(&self, module_path: &str, name: &str, rt: RuntimeConfig) -> F::Output {
        run_root_spawned(test_launch(module_path, name), rt, self.take())
    }
}

/// Launches any body, on the main thread (`block_on`), as `#[tokio::main]` does.
pub trait LaunchLocal {
    /// The body's output.
    type Output;
    /// As [`main`].
    fn main(&self, rt: RuntimeConfig) -> Self::Output;
    /// As [`test`].
    fn test(&self, module_path: &str, name: &str, rt: RuntimeConfig) -> Self::Output;
}

impl<F: Future> LaunchLocal for &Body<F> {
    type Output = F::Output;

    fn main(&self, rt: RuntimeConfig) -> F::Output {
        run_root(main_launch(), rt, self.take())
    }

    fn test(&self, module_path: &str, name: &str, rt: RuntimeConfig) -> F::Output {
        run_root(test_launch(module_path, name), rt, self.take())
    }
}

/// In a child, serves calls and exits; in the root, says how to relaunch this program.
fn main_launch() -> Relaunch {
    if let Some(cfg) = bootstrap::child_config() {
        run_child(cfg);
    }
    Relaunch::Main
}

/// As [`main_launch`], for a test binary: a child re-enters only the test it was started for.
fn test_launch(module_path: &str, name: &str) -> Relaunch {
    let path = match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    };
    if let Some(cfg) = bootstrap::child_config() {
        match cfg {
            Ok(cfg) if cfg.test.as_deref() == Some(path.as_str()) => run_child(Ok(cfg)),
            Ok(cfg) => {
                // Never run a test body in a process that was started as a child: that is how a
                // re-executed test binary turns into a fork bomb.
                eprintln!(
                    "multiprocessing: this process was started as a child for test `{}`, but the harness ran `{path}`; exiting",
                    cfg.test.unwrap_or_default()
                );
                std::process::exit(EXIT_NO_PARENT);
            }
            Err(e) => run_child(Err(e)),
        }
    }
    Relaunch::Test(path)
}

/// A child's runtime: one thread; the threads it starts later (blocking pool) make current the
/// context put in `current` by then.
fn child_runtime(
    current: &Arc<std::sync::OnceLock<std::sync::Weak<Context>>>,
) -> tokio::runtime::Runtime {
    let current = Arc::clone(current);
    runtime(
        RuntimeConfig {
            multi_thread: false,
            worker_threads: None,
        },
        move || Context::set_current(current.get().and_then(std::sync::Weak::upgrade)),
    )
}

fn runtime(
    rt: RuntimeConfig,
    on_start: impl Fn() + Send + Sync + 'static,
) -> tokio::runtime::Runtime {
    let mut builder = if rt.multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = rt.worker_threads {
            b.worker_threads(n);
        }
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .on_thread_start(on_start)
        .on_thread_stop(|| Context::set_current(None));
    match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("multiprocessing: could not build the tokio runtime: {e}"),
    }
}

/// Clears the thread's context when the launch ends, also by unwinding.
struct CurrentGuard;

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        Context::set_current(None);
    }
}

/// The root's launch context and runtime, with the context current on this thread until the
/// guard drops. Declared in this order, they drop guard first, then runtime, then context.
fn enter_root(
    relaunch: Relaunch,
    rt: RuntimeConfig,
) -> (Arc<Context>, tokio::runtime::Runtime, CurrentGuard) {
    let ctx = match Context::root(relaunch) {
        Ok(ctx) => ctx,
        Err(e) => panic!("multiprocessing: could not set up the launch context: {e}"),
    };
    // Weak: the runtime's tasks (the hub's accept loop among them) are owned by the context, so a
    // strong reference here would make a cycle and the run directory would never be removed.
    let on_start = Arc::downgrade(&ctx);
    let runtime = runtime(rt, move || Context::set_current(on_start.upgrade()));
    Context::set_current(Some(Arc::clone(&ctx)));
    (ctx, runtime, CurrentGuard)
}

fn run_root<F: Future>(relaunch: Relaunch, rt: RuntimeConfig, fut: F) -> F::Output {
    #[cfg(feature = "broker")]
    serve_if_worker(&relaunch, rt);
    let (ctx, runtime, _guard) = enter_root(relaunch, rt);
    let finisher = Arc::clone(&ctx);
    runtime.block_on(async move {
        let out = fut.await;
        finisher.finish().await;
        out
    })
}

/// As [`run_root`], with the body spawned onto the workers of a multi-thread runtime.
fn run_root_spawned<F>(relaunch: Relaunch, rt: RuntimeConfig, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if !rt.multi_thread {
        return run_root(relaunch, rt, fut);
    }
    #[cfg(feature = "broker")]
    serve_if_worker(&relaunch, rt);
    let (ctx, runtime, _guard) = enter_root(relaunch, rt);
    let finisher = Arc::clone(&ctx);
    runtime.block_on(async move {
        let body = tokio::spawn(async move {
            let out = fut.await;
            finisher.finish().await;
            out
        });
        match body.await {
            Ok(out) => out,
            // A panic in the body goes on as a panic of `main`, as it would have unspawned.
            Err(e) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(e) => panic!("multiprocessing: the body of main was cancelled: {e}"),
            },
        }
    })
}

/// Worker mode: with `MULTIPROCESSING_WORKER=<redis url>` in the environment, the program (or
/// the test) serves broker tasks instead of running its body, and exits when serving ends.
#[cfg(feature = "broker")]
fn serve_if_worker(relaunch: &Relaunch, rt: RuntimeConfig) {
    let Some(url) = std::env::var_os(crate::broker::WORKER_ENV) else {
        return;
    };
    // The worker's own children (its local pool) must not serve too.
    std::env::remove_var(crate::broker::WORKER_ENV);
    let url = url.to_string_lossy().into_owned();
    let (ctx, runtime, guard) = enter_root(relaunch.clone(), rt);
    let finisher = Arc::clone(&ctx);
    let code = runtime.block_on(async move {
        let code = crate::broker::serve_from_env(url).await;
        finisher.finish().await;
        code
    });
    // As at the end of `main`: the runtime, then the context (which removes the run directory).
    drop(guard);
    drop(runtime);
    drop(ctx);
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

fn run_child(cfg: Result<ChildConfig>) -> ! {
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("multiprocessing: this process was started as a child, but {e}");
            std::process::exit(EXIT_NO_PARENT);
        }
    };
    bootstrap::die_with_parent(&cfg);
    // Whatever this child starts with `std::process::Command` must not inherit the marker (and
    // the run's key); children we start get a marker of their own.
    std::env::remove_var(crate::protocol::CHILD_ENV);
    let forked = cfg.fork_server;
    let cfg = if forked {
        // Returns only in a forked child, single-threaded: set its environment, then carry on
        // as any child does.
        let (cfg, env) = bootstrap::fork_server::serve();
        for (key, value) in env {
            std::env::set_var(key, value);
        }
        bootstrap::die_with_parent(&cfg);
        cfg
    } else {
        cfg
    };
    // The child's context is made once it knows who it is (a spare learns that only when it is
    // assigned); the slot tells the threads the runtime starts which context to make current.
    let current: Arc<std::sync::OnceLock<std::sync::Weak<Context>>> = Arc::default();
    let runtime = child_runtime(&current);
    let slot = Arc::clone(&current);
    // Run on the runtime thread, or on a spare's call thread: the context it makes is current
    // on the thread that runs it, and `serve` keeps it alive for as long as it serves.
    let on_ready: bootstrap::OnReady =
        Box::new(move |cfg: &ChildConfig| match Context::child(cfg) {
            Ok(ctx) => {
                let _ = slot.set(Arc::downgrade(&ctx));
                Context::set_current(Some(Arc::clone(&ctx)));
                Box::new(ctx)
            }
            Err(e) => {
                eprintln!("multiprocessing: child {}: {e}", std::process::id());
                std::process::exit(EXIT_NO_PARENT);
            }
        });
    let code = runtime.block_on(async move {
        let on_thread_start: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            Context::set_current(current.get().and_then(std::sync::Weak::upgrade));
        });
        bootstrap::set_after_call(settle);
        let code = bootstrap::serve(cfg, on_ready, on_thread_start).await;
        if code != bootstrap::EXIT_PARENT_GONE {
            // As at the end of `main`: wait for our own non-daemon children, stop the daemons.
            if let Some(ctx) = Context::try_current() {
                ctx.finish().await;
            }
        }
        code
    });
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    if forked {
        // As Python's forked children do (`os._exit`): the exit handlers and library destructors
        // belong to the program the server was started as, not to this copy of it, and running
        // them only delays our exit status. Our own output is flushed above.
        // SAFETY: _exit(2) ends the process at once; nothing after it runs.
        unsafe { libc::_exit(code) };
    }
    std::process::exit(code);
}

/// A child's [`bootstrap::AfterCall`]: a call's queue puts reach the root before its result.
fn settle() -> crate::entry::BoxFuture<()> {
    Box::pin(async {
        if let Some(ctx) = Context::try_current() {
            ctx.settle().await;
        }
    })
}
