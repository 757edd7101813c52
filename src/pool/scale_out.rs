//! The builder methods of a pool on a broker (`PoolBuilder::broker` and its companions).

use super::backend::broker::{wire, BrokerConfig};
use super::{BrokerSettings, Pool, PoolBuilder};
use crate::error::{Error, Result};
use std::time::Duration;

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &wire::redact(&self.url))
            .field("name", &self.name)
            .field("key", &self.key.as_ref().map(|_| ".."))
            .field("claim", &self.claim)
            .field("window", &self.window)
            .field("ca", &self.ca)
            .finish()
    }
}

impl PoolBuilder {
    /// Runs the pool's tasks on workers anywhere, through the Redis at `url`
    /// (`redis://[user:password@]host[:port][/db]`, or `rediss://` with the `broker-tls`
    /// feature) instead of on child processes of this one. The calls are the same; workers are
    /// this same binary started in worker mode (`MULTIPROCESSING_WORKER=<url>`) or
    /// [`broker::serve`](crate::broker::serve) on any host that reaches the Redis. Tasks and
    /// results are signed with a key the pool and its workers share (`MULTIPROCESSING_KEY`, or
    /// [`key`](Self::key)). See the README's "Scale-out" for the delivery promise.
    ///
    /// With a broker, [`processes`](Self::processes) only sets the default chunk size of
    /// `map` (as if that many processes ran the tasks; set it to the workers' total); the
    /// settings of local workers (initializer, start method, memory, recycling) belong to the
    /// workers and are ignored here.
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.broker.get_or_insert_with(BrokerSettings::default).url = url.into();
        self
    }

    /// The pool name: workers serving this name run the pool's tasks (and only they). Several
    /// pools may share a name and its workers. Default: `default`. Only with a broker.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.broker.get_or_insert_with(BrokerSettings::default).name = Some(name.into());
        self
    }

    /// The key tasks and results are signed with (HMAC-SHA256); workers need the same one.
    /// Default: the bytes of `MULTIPROCESSING_KEY`; a broker pool without a key is refused.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.broker.get_or_insert_with(BrokerSettings::default).key = Some(key.into());
        self
    }

    /// How long a worker may go silent (dead, or cut off from Redis) before live workers claim
    /// the tasks it holds and run them again. Workers that are alive say so three times per
    /// timeout, however long their tasks run. A claimed task counts as a retry: it runs again
    /// only if the call allowed [`retries`](super::Apply::retries), else it fails with
    /// [`Error::WorkerLost`]. Default: 30 s.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.broker
            .get_or_insert_with(BrokerSettings::default)
            .claim = Some(timeout);
        self
    }

    /// How many tasks (chunks) may wait on the broker at once, sent and not yet answered; the
    /// rest wait in this process, so Redis holds a bounded amount however long the `map`.
    /// Default: 4096.
    pub fn broker_window(mut self, tasks: usize) -> Self {
        self.broker
            .get_or_insert_with(BrokerSettings::default)
            .window = Some(tasks.max(1));
        self
    }

    /// The certificate authorities to trust for a `rediss://` broker: a PEM file of one or
    /// more CA certificates (for a Redis whose certificate a private CA signed). Default: the
    /// file `MULTIPROCESSING_BROKER_CA` names, else the system's roots (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured). Workers take theirs from the same variable, or
    /// [`Serve::broker_ca`](crate::broker::Serve::broker_ca). Ignored for `redis://` URLs;
    /// with a `rediss://` URL it needs the `broker-tls` feature (else `build` fails with
    /// [`Error::InvalidArgument`]), as does a file that cannot be read.
    pub fn broker_ca(mut self, pem_file: impl Into<std::path::PathBuf>) -> Self {
        self.broker.get_or_insert_with(BrokerSettings::default).ca = Some(pem_file.into());
        self
    }

    /// `build` for a pool on a broker.
    pub(super) async fn build_broker(self) -> Result<Pool> {
        let processes = self.process_count()?;
        let Some(settings) = self.broker else {
            return Err(Error::InvalidArgument("no broker URL was given".into()));
        };
        if settings.url.is_empty() {
            return Err(Error::InvalidArgument(
                "a pool name or key was set, but no broker URL (PoolBuilder::broker)".into(),
            ));
        }
        let backend = BrokerConfig {
            endpoint: wire::Endpoint::new(settings.url, settings.ca),
            name: settings.name.unwrap_or_else(|| wire::DEFAULT_NAME.into()),
            key: settings.key,
            claim: settings.claim.unwrap_or(wire::DEFAULT_CLAIM),
            window: settings.window.unwrap_or(4096),
        };
        Pool::start(backend, processes).await
    }
}
