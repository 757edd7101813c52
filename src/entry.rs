//! Layer 3: the registry of `#[entry]` functions and how a child calls one.
//!
//! `#[entry]` registers every entry in a link-time slice ([`ENTRIES`], filled by `linkme`) under
//! its stable name, `module_path!() + "::" + fn name`. A child of the same executable looks the
//! name up and calls the function with the decoded arguments: no function pointer, address or
//! code ever crosses the wire.

use crate::buffers::Buffer;
use crate::error::{Error, Location, RemoteError, Result};
use crate::protocol::{all_read, decode_value, encode_value, BatchWriter};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;

/// A function marked `#[entry]`: something a child process can run by name.
///
/// You never implement this by hand; `#[multiprocessing::entry]` does, on a unit struct that
/// carries the function's name (so `square` is both callable as `square(3)` and a value that
/// [`Process::spawn`](crate::Process::spawn) accepts).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an #[entry] function",
    label = "a child process can only run functions marked #[multiprocessing::entry]",
    note = "add `#[multiprocessing::entry]` above the function's definition"
)]
pub trait Entry: Copy + Send + Sync + 'static {
    /// The arguments: `()` for none, the value itself for one, a tuple for several.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What the function returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name: the function's module path and name.
    const NAME: &'static str;
}

/// A value that is sent to a child process and run there: Python's `Process` subclass with
/// `run()`. Register the type by putting `#[multiprocessing::entry]` on its `impl Run for T`
/// block, then start it with [`Process::spawn_run`](crate::Process::spawn_run).
pub trait Run: Serialize + DeserializeOwned + Send + 'static {
    /// What `run` returns; [`Process::join`](crate::Process::join) hands it back.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The body of the child process.
    fn run(self) -> Self::Output;
}

/// Implemented by `#[entry] impl Run for T`: the name `T` is registered under.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` implements `Run` but is not registered",
    note = "put `#[multiprocessing::entry]` on the `impl Run for {Self}` block"
)]
pub trait RegisteredRun: Run {
    /// The registered name.
    const NAME: &'static str;
}

/// A boxed, `Send` future: what an async entry's function pointer returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What looking up and decoding an entry produces: work to run, or why there is none.
#[doc(hidden)]
pub enum Invocation {
    /// A synchronous entry: run it on a thread that may block.
    Sync(Box<dyn FnOnce() -> Result<Vec<u8>> + Send>),
    /// An async entry: poll it on the child's runtime.
    Async(BoxFuture<Result<Vec<u8>>>),
    /// The arguments did not decode.
    Failed(Error),
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invocation::Sync(_) => "Invocation::Sync",
            Invocation::Async(_) => "Invocation::Async",
            Invocation::Failed(_) => "Invocation::Failed",
        })
    }
}

/// One registered entry.
#[doc(hidden)]
#[derive(Debug)]
pub struct EntryRecord {
    /// The stable name.
    pub name: &'static str,
    /// Decodes the arguments and prepares the call.
    pub invoke: fn(&[u8]) -> Invocation,
    /// Prepares a call on each item of a batch (an encoded `Vec<Args>`); the result is in the
    /// batch format of `protocol::BatchWriter`, each item failing on its own.
    pub invoke_batch: fn(BatchArgs) -> Invocation,
    /// Whether the function is `async` (its calls are futures to poll, not code to run).
    pub is_async: bool,
}

/// Every `#[entry]` of the executable, collected at link time.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static ENTRIES: [EntryRecord];

/// Prepares a call of a synchronous entry.
#[doc(hidden)]
pub fn invoke_sync<A, O, F>(args: &[u8], f: F) -> Invocation
where
    A: DeserializeOwned,
    O: Serialize,
    F: FnOnce(A) -> O + Send + 'static,
    A: Send + 'static,
{
    match decode_value::<A>("entry arguments", args) {
        Ok(a) => Invocation::Sync(Box::new(move || encode_value("entry result", &f(a)))),
        Err(e) => Invocation::Failed(e),
    }
}

/// Prepares a call of an async entry.
#[doc(hidden)]
pub fn invoke_async<A, O, F>(args: &[u8], f: F) -> Invocation
where
    A: DeserializeOwned,
    O: Serialize + 'static,
    F: FnOnce(A) -> BoxFuture<O>,
{
    match decode_value::<A>("entry arguments", args) {
        Ok(a) => {
            let fut = f(a);
            Invocation::Async(Box::pin(
                async move { encode_value("entry result", &fut.await) },
            ))
        }
        Err(e) => Invocation::Failed(e),
    }
}

/// The arguments of a batch as they arrived: the message, and where the encoded `Vec<Args>`
/// starts in it. Owned, so the call can decode the items one at a time as it runs them.
#[doc(hidden)]
#[derive(Debug)]
pub struct BatchArgs {
    /// The whole message; its buffer goes back to the pool when the batch is done with it.
    pub(crate) message: Buffer,
    /// Where the arguments start.
    pub(crate) at: usize,
}

/// The panic of one item, as its outcome.
fn item_failure(p: Box<dyn std::any::Any + Send>) -> Box<RemoteError> {
    Box::new(RemoteError::from(panic_error(p)))
}

/// Runs `call` on each item of an encoded `Vec<A>` as it is decoded, and writes each outcome
/// as it comes: neither the arguments nor the results are collected first.
fn run_batch<A, O>(args: &[u8], call: impl FnMut(A) -> O) -> Result<Vec<u8>>
where
    A: DeserializeOwned,
    O: Serialize,
{
    /// Visits the argument sequence, running each item as it is decoded.
    struct Items<A, C, O> {
        call: C,
        writer: BatchWriter<O>,
        _args: std::marker::PhantomData<fn(A)>,
    }

    impl<'de, A, O, C> serde::de::Visitor<'de> for Items<A, C, O>
    where
        A: DeserializeOwned,
        O: Serialize,
        C: FnMut(A) -> O,
    {
        type Value = Result<BatchWriter<O>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a batch of arguments")
        }

        fn visit_seq<S: serde::de::SeqAccess<'de>>(
            mut self,
            mut seq: S,
        ) -> std::result::Result<Self::Value, S::Error> {
            while let Some(item) = seq.next_element::<A>()? {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (self.call)(item)))
                    .map_err(item_failure);
                if let Err(e) = self.writer.push(outcome) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(self.writer))
        }
    }

    let what = "a batch of arguments";
    let mut de = crate::codec::Decoder::new(args);
    // Results are usually about as large as the arguments (the writer grows if not).
    let items = Items {
        call,
        writer: BatchWriter::new(args.len() + 64),
        _args: std::marker::PhantomData,
    };
    let writer = serde::Deserializer::deserialize_seq(&mut de, items)
        .map_err(|e| Error::decode(what, e))??;
    all_read(what, de.rest())?;
    writer.finish()
}

/// Prepares a call of a synchronous entry on every item of a batch. The items are decoded as
/// they run: one that does not decode fails the whole batch, after the ones before it ran.
#[doc(hidden)]
pub fn invoke_batch_sync<A, O, F>(args: BatchArgs, f: F) -> Invocation
where
    A: DeserializeOwned + Send + 'static,
    O: Serialize,
    F: Fn(A) -> O + Send + 'static,
{
    // The arguments' buffer goes back to the pool as the closure returns and drops `args`.
    Invocation::Sync(Box::new(move || run_batch(&args.message[args.at..], f)))
}

/// Prepares a call of an async entry on every item of a batch, one after another.
#[doc(hidden)]
pub fn invoke_batch_async<A, O, F>(args: BatchArgs, f: F) -> Invocation
where
    A: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(A) -> BoxFuture<O> + Send + 'static,
{
    let body = &args.message[args.at..];
    match decode_value::<Vec<A>>("a batch of arguments", body) {
        Ok(items) => {
            let capacity = body.len() + 64;
            // `args` is not moved into the future: its buffer goes back to the pool when this
            // function returns, before the items run.
            Invocation::Async(Box::pin(async move {
                let mut writer = BatchWriter::new(capacity);
                for a in items {
                    let outcome = AssertUnwindSafe(f(a)).catch_unwind().await;
                    writer.push(outcome.map_err(item_failure))?;
                }
                writer.finish()
            }))
        }
        Err(e) => Invocation::Failed(e),
    }
}

/// Name → entry; `None` for a name registered twice (two `#[entry] fn work` in different
/// function bodies of one module share a module path), which must never run the wrong one.
fn registry() -> &'static HashMap<&'static str, Option<&'static EntryRecord>> {
    static MAP: OnceLock<HashMap<&'static str, Option<&'static EntryRecord>>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for record in ENTRIES.iter() {
            map.entry(record.name)
                .and_modify(|slot| *slot = None)
                .or_insert(Some(record));
        }
        map
    })
}

/// Finds a registered entry by name.
///
/// # Errors
/// `NotAnEntry` when this executable has no entry of that name, or more than one.
pub(crate) fn lookup(name: &str) -> Result<&'static EntryRecord> {
    match registry().get(name) {
        Some(Some(record)) => Ok(record),
        Some(None) => Err(Error::Protocol(format!(
            "entry `{name}` is registered more than once in this executable (two #[entry] functions with one name in one module); rename one"
        ))),
        None => Err(Error::NotAnEntry {
            name: name.to_owned(),
        }),
    }
}

/// Where a panic happened, on its way from the panic hook to the code that caught it.
///
/// A panic's payload does not say where it happened; only the panic hook sees that
/// (`PanicHookInfo::location`), and a hook returns nothing to the `catch_unwind` that then
/// catches the unwind. So the hook leaves the location in this slot of the panicking thread, and
/// the unwind is caught on that same thread (a future's panic on the thread that polled it), where
/// [`panic_error`] takes it at once and makes it part of the error value. Those two functions are
/// the only ones that touch the slot: a thread-local is the only place a hook can leave it.
mod panic_location {
    use crate::error::Location;
    use std::cell::Cell;

    thread_local! {
        static LAST: Cell<Option<Location>> = const { Cell::new(None) };
    }

    /// Records where the current thread panics (called by the hook).
    pub(super) fn record(location: Option<Location>) {
        LAST.with(|l| l.set(location));
    }

    /// Where the current thread last panicked, if not taken already.
    pub(super) fn take() -> Option<Location> {
        LAST.with(Cell::take)
    }
}

/// Installs a panic hook that remembers where the current thread panicked, then defers to the
/// previous hook (which prints the message, as it would in any Rust program).
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panic_location::record(info.location().map(|l| Location {
                file: l.file().to_owned(),
                line: l.line(),
                column: l.column(),
            }));
            previous(info);
        }));
    });
}

/// The error for a panic caught on this thread: its message, and where it happened.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any> (a panic with a non-string payload)".to_owned()
    };
    let location = panic_location::take();
    Error::Panicked { message, location }
}

/// Runs a synchronous invocation, turning a panic into [`Error::Panicked`].
pub(crate) fn run_sync(f: Box<dyn FnOnce() -> Result<Vec<u8>> + Send>) -> Result<Vec<u8>> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(p)))
}

/// Runs an async invocation, turning a panic into [`Error::Panicked`]. The panic is caught on
/// the thread that polled the future, where the hook recorded its location.
pub(crate) async fn run_async(fut: BoxFuture<Result<Vec<u8>>>) -> Result<Vec<u8>> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panic_error(p)))
}
