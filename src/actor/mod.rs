//! Process actors: a serde struct whose state lives in a child process of its own, reached
//! through a typed, cloneable client whose async methods are the struct's methods.
//!
//! Use an actor when state must outlive single calls and be shared by many callers across
//! processes (a counter, a cache, an account); use a [`Pool`](crate::Pool) for stateless work
//! spread over many processes, and a [`Queue`](crate::Queue) when producers and consumers need
//! not wait for each other.
//!
//! ```
//! use multiprocessing::actor;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Counter {
//!     n: u64,
//! }
//!
//! #[actor]
//! impl Counter {
//!     pub fn incr(&mut self, by: u64) -> u64 {
//!         self.n += by;
//!         self.n
//!     }
//!     pub async fn get(&self) -> u64 {
//!         self.n
//!     }
//! }
//!
//! #[multiprocessing::process_main]
//! async fn main() -> multiprocessing::Result<()> {
//!     let c = Counter { n: 0 }.spawn().await?;
//!     assert_eq!(c.incr(5).await?, 5);
//!     assert_eq!(c.get().await?, 5);
//!     let state: Counter = c.stop().await?;
//!     assert_eq!(state.n, 5);
//!     Ok(())
//! }
//! ```
//!
//! # What `#[actor]` makes
//! On `impl Counter { .. }` it keeps the impl as it is (still ordinary Rust) and adds
//! `CounterRef`, a newtype over [`ActorRef<Counter>`] with one async method per method taking
//! `&self` or `&mut self` that is visible outside the impl (`pub`, `pub(crate)`, ..), plus
//! `<method>_nowait` for each, and `stop`, `kill`, `monitor`, `detach`, `link`, `unlink` and `pid` (no trait to
//! import; a message method of the same name takes precedence, and `as_actor_ref()` still
//! reaches these); the reference is as visible as the most visible message; `Counter::spawn(self)` and
//! `Counter::builder(self)` (an [`ActorBuilder`]); and `CounterRef::lookup(name)`. Private
//! methods and methods marked `#[actor(skip)]` are left out. The child finds the type by its
//! registered name, as it finds an `#[entry]`: no code crosses the wire.
//!
//! Two methods may be marked as hooks (taking only `&self` or `&mut self`; sync or `async`):
//! `#[actor(on_start)]` runs in each new instance before its first message, restarts included;
//! `#[actor(on_stop)]` runs when the actor stops on its own terms (`stop`, or no reference
//! left), before its state is final, and not when it is killed or its process dies.
//!
//! # Mailbox and ordering
//! Messages run one at a time, each to completion (an `async` method's awaits included), in the
//! order each client process sent them. The mailbox is bounded ([`ActorBuilder::mailbox`]):
//! each client process has at most that many calls sent and unanswered, and a caller past it
//! waits for a slot (asynchronously) before anything is sent.
//!
//! # References and where calls go
//! A `CounterRef` is `Clone + Serialize + Deserialize`: hand it to an `#[entry]`, a pool task,
//! another actor or a [`Queue`](crate::Queue). In any process of the run, calls go straight to
//! the actor's process over its own socket in the run's private directory (authenticated with
//! the run's key), one connection per client process, shared by all its references and calls.
//! Nothing passes through the root.
//!
//! # Lifetime
//! The actor ends on [`ActorRef::stop`] (after what is queued; you get the final state back),
//! on [`ActorRef::kill`] (at once), when the launch ends (actor processes are daemons), and when
//! no reference to it is left anywhere in the run: the actor counts the processes connected to
//! it and the references serialized on their way to another process. [`ActorRef::detach`] turns
//! that last rule off. A reference received by a process that never uses it is counted until
//! that process drops it, if it drops it inside a tokio runtime (otherwise until the launch
//! ends).
//!
//! # Failures
//! A call to an actor that has ended returns [`Error::ActorStopped`](crate::Error::ActorStopped)
//! at once; a call in flight when the actor's process dies returns
//! [`Error::ProcessDied`](crate::Error::ProcessDied) (with the signal), and so does a call whose
//! process was still connecting to the actor when it died for good; a handler's panic returns
//! [`Error::Panicked`](crate::Error::Panicked) to that call. Then the [`Restart`] policy decides: by default the actor is gone; with
//! [`Restart::OnCrash`] its state is re-created from the value it was spawned with (in place
//! after a panic; in a new process after a death) and later calls are served by the new
//! instance, until the budget is spent. After a death, the calls queued behind the one that
//! was running (from any client) were never started: they go to the new instance, each
//! client's in the order it sent them, ahead of its later calls. Without a restart they fail at
//! once. A call whose process was still connecting when the actor's process died is served by
//! the new instance too (the supervisor's copy of the socket keeps the connection waiting).
//!
//! # Links
//! [`ActorRef::link`] ties two actors as Erlang's links do: when one of them *ends* abnormally,
//! the other's current process is killed (SIGKILL). Abnormal ends are [`ActorExit::Panicked`]
//! (a panic with no restart left), [`ActorExit::Died`] (a death with no restart left) and
//! [`ActorExit::Killed`] (`kill`); [`ActorExit::Stopped`] (`stop`, or no reference left) is
//! Erlang's `normal` and does not propagate. A crash that the actor's own restart policy
//! repairs is not an end and does not propagate either: links tie actors, not their
//! incarnations. For the killed peer it is a crash like any other: its calls in flight fail with
//! `ProcessDied` (with SIGKILL's signal where it is known), and its own policy applies: with
//! [`Restart::OnCrash`] and budget left it restarts from its spawned value (its link to the
//! actor that ended is gone with that actor), otherwise it ends as `Died` and its own links
//! propagate in turn. An actor's links go when it ends, whatever the reason.
//!
//! A link is kept beside the two actors in the run directory and acted on by each actor's
//! supervisor, which runs in the process that spawned that actor. So the link holds after the
//! process that made it has ended, and actors spawned by different processes can be linked.
//! What it cannot survive is the death of a supervisor's process (its actors die with it, and
//! nobody is left to tell their peers).

mod budget;
mod client;
mod link;
mod linking;
mod names;
mod server;
mod started;
mod supervisor;
mod watch;
mod wire;

use crate::error::{Error, Location, Result};
use crate::protocol::{decode_value, encode_value};
use crate::start::StartMethod;
use client::Client;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use wire::Addr;

pub(crate) use server::caller_pid;

/// The default mailbox size: calls a client process may have sent and not yet had answered.
pub const DEFAULT_MAILBOX: u32 = 1024;

/// A struct whose `impl` block is marked `#[actor]`: state that can live in a child process.
///
/// You never implement this by hand; `#[multiprocessing::actor]` does.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actor",
    note = "put `#[multiprocessing::actor]` on an `impl {Self}` block"
)]
pub trait Actor: Serialize + DeserializeOwned + Send + 'static {
    /// The generated client type (`CounterRef` for `Counter`).
    type Ref: From<ActorRef<Self>>;
    /// The registered name the child finds the type by.
    #[doc(hidden)]
    const NAME: &'static str;
    /// Runs method number `method` on its encoded arguments.
    #[doc(hidden)]
    fn __handle<'a>(&'a mut self, method: u32, args: &'a [u8]) -> Handled<'a>;
    /// Runs the method marked `#[actor(on_start)]` or `#[actor(on_stop)]`, if there is one.
    #[doc(hidden)]
    fn __hook(&mut self, hook: Hook) -> Handled<'_> {
        let _ = hook;
        Handled::Done(Ok(Vec::new()))
    }
}

/// A lifecycle hook of an actor (for the generated code).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `#[actor(on_start)]`: in each new instance, before its first message.
    Start,
    /// `#[actor(on_stop)]`: when the actor stops on its own terms, before its state is final.
    Stop,
}

/// What a handler call made: a result, or a future to poll on the actor's thread.
#[doc(hidden)]
pub enum Handled<'a> {
    /// A synchronous method's encoded result.
    Done(Result<Vec<u8>>),
    /// An async method's future (not `Send`: it runs where the state is).
    Pending(Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>),
}

impl std::fmt::Debug for Handled<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handled::Done(_) => "Handled::Done",
            Handled::Pending(_) => "Handled::Pending",
        })
    }
}

/// Implemented by the generated reference of actor `A`: lets its methods name `A` generically.
#[doc(hidden)]
pub trait RefOf<A> {
    /// The reference inside.
    fn actor_ref(&self) -> &ActorRef<A>;
}

/// Decodes a handler's arguments (for the generated code).
#[doc(hidden)]
pub fn decode_args<T: DeserializeOwned>(args: &[u8]) -> Result<T> {
    decode_value("actor method arguments", args)
}

/// Encodes a handler's result (for the generated code).
#[doc(hidden)]
pub fn encode_result<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    encode_value("actor method result", value)
}

/// Checks at compile time that a message's argument or result type can cross processes.
#[doc(hidden)]
pub fn assert_serde<T: Serialize + DeserializeOwned>() {}

/// The error for a method number the type does not have (a client built from other code).
#[doc(hidden)]
pub fn unknown_method(method: u32) -> Error {
    Error::Protocol(format!(
        "the actor has no method number {method} (was the client built from the same code?)"
    ))
}

/// The entry an actor process runs (the generated registration points at it).
#[doc(hidden)]
pub fn invoke<A: Actor>(args: &[u8]) -> crate::entry::Invocation {
    crate::entry::invoke_sync(args, server::run::<A>)
}

/// An actor is never run as a batch.
#[doc(hidden)]
pub fn invoke_batch<A: Actor>(_: crate::entry::BatchArgs) -> crate::entry::Invocation {
    crate::entry::Invocation::Failed(Error::Protocol(format!(
        "actor `{}` was asked to run a batch",
        A::NAME
    )))
}

/// What happens when an actor's process dies or a handler panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Restart {
    /// The actor is gone; later calls return `ActorStopped` (the default).
    #[default]
    Never,
    /// The state is re-created from the value the actor was spawned with, at most
    /// `max_restarts` times in any window of `within`; past that the actor is gone.
    OnCrash {
        /// Restarts allowed within the window.
        max_restarts: u32,
        /// The window.
        within: Duration,
    },
}

/// How an actor ended, as [`ActorRef::monitor`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorExit {
    /// Stopped by `stop`, or no reference was left.
    Stopped,
    /// A handler panicked and the policy (or its spent budget) ended the actor.
    Panicked {
        /// The panic message.
        message: String,
        /// Where it panicked.
        location: Option<Location>,
    },
    /// The process died (and was not restarted).
    Died {
        /// Its exit code, if it exited.
        exitcode: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
    },
    /// Ended by [`ActorRef::kill`].
    Killed,
}

/// A reference to an actor of type `A`, usable from any process of the run. The generated
/// `<Type>Ref` wraps one and forwards to it.
pub struct ActorRef<A> {
    client: Arc<Client>,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            client: Arc::clone(&self.client),
            _actor: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRef")
            .field("actor", &self.client.addr().actor)
            .finish_non_exhaustive()
    }
}

impl<A> Serialize for ActorRef<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Counted as in transit until a process deserializes it and tells the actor so.
        self.client.hold();
        self.client.addr().serialize(s)
    }
}

impl<'de, A: Actor> Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let addr = Addr::deserialize(d)?;
        if addr.actor != A::NAME {
            return Err(serde::de::Error::custom(crate::error::serde_detail(
                format_args!(
                    "a reference to `{}` where `{}` was expected",
                    addr.actor,
                    A::NAME
                ),
            )));
        }
        Ok(ActorRef::new(Client::arrived(addr)))
    }
}

impl<A> ActorRef<A> {
    fn new(client: Arc<Client>) -> Self {
        ActorRef {
            client,
            _actor: PhantomData,
        }
    }

    /// The pid of the process serving this actor, as of the last connection to it (`None` before
    /// the first call from this process).
    pub fn pid(&self) -> Option<u32> {
        self.client.pid()
    }

    /// Ends the actor now: queued calls are dropped and calls in flight fail. Resolves once its
    /// process is gone (at once if it was gone already). It is not restarted. In the process
    /// that spawned it this is a SIGKILL; elsewhere it is a message, served as soon as the method
    /// running now (if any) returns.
    ///
    /// # Cancel safety
    /// Cancel-safe: once the request has left, the actor ends whether or not this is awaited.
    ///
    /// # Errors
    /// `Encode` in theory only; an actor that is gone already is not an error.
    pub async fn kill(&self) -> Result<()> {
        self.client.kill().await
    }

    /// Keeps the actor running when no reference to it is left: it then ends on `stop`, `kill`
    /// or the end of the launch.
    ///
    /// # Cancel safety
    /// Cancel-safe: the request is sent in one step, or not at all.
    ///
    /// # Errors
    /// [`Error::ActorStopped`] when the actor has ended.
    pub async fn detach(&self) -> Result<()> {
        self.client.detach().await
    }

    /// A future that resolves with how the actor ended. In the process that spawned it the
    /// answer comes from the supervisor at once; elsewhere it is read from the run directory,
    /// checked every 100 ms.
    pub fn monitor(&self) -> crate::entry::BoxFuture<ActorExit> {
        self.client.monitor()
    }

    /// Links this actor with `other` (of any actor type), as Erlang's `link`: from now on, when
    /// either of the two ends abnormally ([`ActorExit::Died`], [`ActorExit::Panicked`] or
    /// [`ActorExit::Killed`]; not [`ActorExit::Stopped`]), the other's process is killed, and
    /// the other's own [`Restart`] policy then applies as after any crash. A crash that an
    /// actor's restart policy repairs is not an end and does not propagate. The *Links* table
    /// under [Actors in brief](crate#actors-in-brief) has the details.
    ///
    /// The link is kept beside the two actors, not in this process: it holds after this
    /// process has ended, and any process of the run may make or remove it. Linking an actor
    /// with itself, or two actors already linked, does nothing.
    ///
    /// # Cancel safety
    /// Cancel-safe: the link is made in one step, without awaiting.
    ///
    /// # Errors
    /// [`Error::ActorStopped`] when either actor has ended (there is then no link); `Io` when
    /// the run directory cannot be written.
    pub async fn link(&self, other: &(impl AnyActorRef + ?Sized)) -> Result<()> {
        linking::link(&self.client.addr().path, other.__actor_socket())
    }

    /// Removes the link between this actor and `other`, if there is one: afterwards neither's
    /// end touches the other.
    ///
    /// # Cancel safety
    /// Cancel-safe: the link is removed in one step, without awaiting.
    ///
    /// # Errors
    /// None in practice (an absent link is not an error); `Result` for symmetry with `link`.
    pub async fn unlink(&self, other: &(impl AnyActorRef + ?Sized)) -> Result<()> {
        linking::unlink(&self.client.addr().path, other.__actor_socket());
        Ok(())
    }
}

/// A reference to an actor of any type: an [`ActorRef`] or a generated `<Type>Ref`. What
/// [`ActorRef::link`] and [`ActorRef::unlink`] take, so that actors of different types can be
/// linked.
///
/// Implemented by the crate and by `#[actor]`; not meant to be implemented by hand.
pub trait AnyActorRef {
    /// The actor's socket, which names it in the run (for the crate).
    #[doc(hidden)]
    fn __actor_socket(&self) -> &std::path::Path;
}

impl<A> AnyActorRef for ActorRef<A> {
    fn __actor_socket(&self) -> &std::path::Path {
        &self.client.addr().path
    }
}

impl<A: Actor> ActorRef<A> {
    /// Finds the actor registered under `name` (see [`ActorBuilder::name`]) from any process of
    /// the run.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is registered until it returns.
    ///
    /// # Errors
    /// [`Error::NoSuchActor`] when no actor of this type has that name; `ActorStopped` if it
    /// ended as it was found (`ProcessDied` if its process died then and was not restarted);
    /// `NotLaunched` outside a launch.
    pub async fn lookup(name: &str) -> Result<A::Ref> {
        let addr = names::resolve(name)?;
        if addr.actor != A::NAME {
            return Err(Error::NoSuchActor {
                name: name.to_owned(),
                note: Some(format!(
                    "that name belongs to an actor of type `{}`",
                    addr.actor
                )),
            });
        }
        let client = Client::found(addr);
        client.connect().await?;
        Ok(ActorRef::new(client).into())
    }

    /// Lets the actor finish every call queued before this one, then ends it and returns its
    /// final state. Calls queued after it fail with `ActorStopped`.
    ///
    /// # Cancel safety
    /// Once sent, the actor stops whether or not this is awaited (the state is then lost).
    ///
    /// # Errors
    /// [`Error::ActorStopped`] if it had ended already; `ProcessDied` if it died meanwhile;
    /// `Decode` if the state does not decode.
    pub async fn stop(&self) -> Result<A> {
        let (message, at) = self.client.stop().await?;
        decode_value("the actor's final state", &message[at..])
    }

    /// Calls method number `method` (generated code).
    ///
    /// # Cancel safety
    /// Dropped before the call was sent, nothing is sent; after, the reply is discarded.
    ///
    /// # Errors
    /// As the generated methods say.
    #[doc(hidden)]
    pub async fn __call<T: Serialize, R: DeserializeOwned>(
        &self,
        method: u32,
        args: &T,
    ) -> Result<R> {
        let args = encode_value("actor method arguments", args)?;
        let (message, at) = self.client.call(method, true, args).await?;
        decode_value("actor method result", &message[at..])
    }

    /// Sends method number `method` without waiting for its result (generated code).
    ///
    /// # Cancel safety
    /// As `__call`.
    ///
    /// # Errors
    /// As the generated methods say.
    #[doc(hidden)]
    pub async fn __tell<T: Serialize>(&self, method: u32, args: &T) -> Result<()> {
        let args = encode_value("actor method arguments", args)?;
        self.client.tell(method, args).await
    }
}

/// Configures an actor before it starts: `Counter { n: 0 }.builder().name("c").spawn()`.
#[derive(Debug)]
#[must_use = "an actor builder does nothing until `spawn` is awaited"]
pub struct ActorBuilder<A> {
    value: A,
    options: supervisor::Options,
}

impl<A: Actor> ActorBuilder<A> {
    /// A builder for an actor whose state starts as `value`.
    pub fn new(value: A) -> Self {
        ActorBuilder {
            value,
            options: supervisor::Options::default(),
        }
    }

    /// Registers the actor under `name` for [`ActorRef::lookup`] (default: no name). Names are
    /// unique in a run while their actor lives.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.name = Some(name.into());
        self
    }

    /// The mailbox size (default [`DEFAULT_MAILBOX`]); 0 is taken as 1.
    pub fn mailbox(mut self, n: u32) -> Self {
        self.options.mailbox = n.max(1);
        self
    }

    /// The restart policy (default [`Restart::Never`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.options.restart = restart;
        self
    }

    /// How the actor's process starts (default: the launch's start method).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.options.start_method = Some(method);
        self
    }

    /// Starts the actor's process and returns once it serves calls.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped midway, a started process runs until the launch ends.
    ///
    /// # Errors
    /// [`Error::NameTaken`] when the name is in use; `NotLaunched` outside a launch; `Encode`
    /// when the state does not encode; `Io` when the socket or process cannot be made;
    /// `ActorStopped` when the process ended before serving.
    pub async fn spawn(self) -> Result<A::Ref> {
        let client = supervisor::spawn::<A>(&self.value, self.options).await?;
        Ok(ActorRef::new(client).into())
    }
}
