//! Attribute macros of the [`async-multiprocessing`](https://docs.rs/async-multiprocessing)
//! crate (library name `multiprocessing`).
//!
//! Use them through the main crate: `#[multiprocessing::entry]`,
//! `#[multiprocessing::process_main]`, `#[multiprocessing::test]`. Generated code names only
//! the library's `__private` items and public items, through the path the user's `Cargo.toml`
//! gives the library (`::multiprocessing`, or `::mp` after
//! `mp = { package = "async-multiprocessing" }`). Every attribute also takes
//! `crate = "path::to::multiprocessing"`, for a library reached through a facade crate.

mod actor;
mod attr;
mod entry;
mod process_main;

use proc_macro::TokenStream;

/// Marks a function that may run in a child process.
///
/// The function stays callable as before (`square(3)`), and its name becomes a value that
/// `Process::spawn` (and later `Pool`) accept: `Process::spawn(square, 3)`. The entry is
/// registered at link time under its module path, so a child of the same executable finds it by
/// name. Several parameters travel as one tuple: `Process::spawn(add, (1, 2))`.
///
/// Parameters and the return type must be owned (`String`, not `&str`) and
/// `Serialize + DeserializeOwned + Send + 'static`; the function cannot be generic. An `async fn`
/// runs on the child's runtime.
///
/// # The one cost
/// The name becomes a unit struct, which cannot be shadowed: `let square = …` or a parameter
/// named `square` in the same module no longer compiles ("`square` is interpreted as a unit
/// struct"). Pick another variable name.
///
/// # On `impl Run for T`
/// `#[entry]` on an `impl multiprocessing::Run for T` block registers `T` so that
/// `Process::spawn_run(value)` can start it (Python's `Process` subclass).
#[proc_macro_attribute]
pub fn entry(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into()).into()
}

/// Turns a serde struct's inherent `impl` block into a process actor.
///
/// Keeps the impl as written and adds, for `impl Counter`: `CounterRef` (a cloneable,
/// serializable reference whose async methods mirror each `pub` method taking `&self` or
/// `&mut self`, plus a `<method>_nowait` form of each), `Counter::spawn(self)`,
/// `Counter::builder(self)` and `CounterRef::lookup(name)`. Methods may be sync or `async`;
/// arguments and results must be owned and `Serialize + DeserializeOwned`. Private methods,
/// associated functions and methods marked `#[actor(skip)]` are not messages. The type cannot
/// be generic: its process finds it by name.
///
/// Two optional hooks, each a method taking only `&self` or `&mut self` (sync or `async`, any
/// visibility, not a message): `#[actor(on_start)]` runs in each new instance before its first
/// message (after a restart too, on the re-created state), and `#[actor(on_stop)]` runs when the
/// actor stops on its own terms (`stop()`, which then returns the state as the hook left it, or
/// no reference left), not when it is killed or its process dies. A panic in a hook ends the
/// actor as `ActorExit::Panicked`.
#[proc_macro_attribute]
pub fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    actor::expand(args.into(), item.into()).into()
}

/// Marks an `async fn main`: like `#[tokio::main]`, plus the child bootstrap.
///
/// In a child process (started by this crate) it connects back to the parent and serves calls;
/// your body never runs there. In the root it builds the runtime (`flavor = "multi_thread"` by
/// default, or `"current_thread"`; `worker_threads = N`), runs the body, then terminates daemon
/// children and waits for the others, as Python does at exit.
#[proc_macro_attribute]
pub fn process_main(args: TokenStream, item: TokenStream) -> TokenStream {
    process_main::expand(args.into(), item.into(), process_main::Kind::Main).into()
}

/// Marks an `async fn` test that may spawn child processes: like `#[tokio::test]`.
///
/// A child of a test is the test binary itself, re-run as
/// `<test-exe> --exact <this test> --nocapture --test-threads=1 --include-ignored` with the child
/// marker in its environment; this attribute notices the marker and serves calls instead of
/// running the body. Works under `cargo test` and `cargo nextest run`. Each test has its own
/// launch context: children, sockets and key. Default flavor: `current_thread`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    process_main::expand(args.into(), item.into(), process_main::Kind::Test).into()
}
