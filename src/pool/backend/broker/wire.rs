//! What the broker pool and its workers write to Redis, and how they sign and read it.
//!
//! Both sides use this file: the pool (`backend/broker/`) writes tasks and reads results, a
//! worker (`crate::broker`) reads tasks and writes results. Every message is one stream entry
//! with one field, `m`: a 32-byte HMAC-SHA256 tag, then the postcard encoding of a [`TaskMsg`]
//! or a [`ResultMsg`]. The tag covers a domain label (`task` or `result`) and the bytes, so a
//! result cannot be replayed as a task, and nobody without the key can write either.

use crate::error::{Error, RemoteError, Result};
use crate::protocol::{decode_value, encode_value};
use hmac::{Hmac, Mac};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The consumer group every worker of a pool name reads tasks in.
pub(crate) const GROUP: &str = "workers";
/// The one field of each stream entry.
pub(crate) const FIELD: &str = "m";
/// The environment variable that holds the key tasks and results are signed with.
pub(crate) const KEY_ENV: &str = "MULTIPROCESSING_KEY";
/// The pool name when none is given (`Pool::builder().name`, `serve(url).name`).
pub(crate) const DEFAULT_NAME: &str = "default";
/// The default visibility timeout: how long a task may go without its worker's heartbeat before
/// another worker claims it.
pub(crate) const DEFAULT_CLAIM: Duration = Duration::from_secs(30);
/// How long one Redis command (other than a blocking read) may take before the connection is
/// taken for dead.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

const TAG_LEN: usize = 32;

/// The stream a pool name's tasks go to.
pub(crate) fn task_key(name: &str) -> String {
    format!("mp:{{{name}}}:tasks")
}

/// The stream one pool reads its results from.
pub(crate) fn result_key(name: &str, pool: &str) -> String {
    format!("mp:{{{name}}}:results:{pool}")
}

/// The visibility timeout (ms) of the pools of a name, for workers that have not seen a task of
/// theirs yet (a worker started to take over the tasks of a dead one sees none).
pub(crate) fn claim_key(name: &str) -> String {
    format!("mp:{{{name}}}:visibility-ms")
}

/// One task, as a worker receives it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    /// The stream the result goes to.
    pub(crate) reply: String,
    /// The task's id within its pool.
    pub(crate) id: u64,
    /// The entry's registered name.
    pub(crate) entry: String,
    /// The id of the pool's entry table ([`table_id`]): a worker built from other code refuses.
    pub(crate) table: u64,
    /// An `encode_batch` of the arguments.
    #[serde(with = "serde_bytes")]
    pub(crate) body: Vec<u8>,
    pub(crate) retries: u32,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retry_timeouts: bool,
    /// The pool's visibility timeout, in milliseconds.
    pub(crate) claim_ms: u64,
}

/// What became of a task, as the pool receives it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub(crate) id: u64,
    pub(crate) outcome: WireOutcome,
}

/// A task's outcome on the wire (the pool's `Completion`, without the caller's index).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireOutcome {
    /// The batch of results, as a local worker returns it.
    Done(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The whole task failed (unknown entry, other build, undecodable batch).
    Failed(RemoteError),
    /// The process running it died, on the worker host or as a whole worker.
    WorkerLost {
        pid: u32,
        exitcode: Option<i32>,
        signal: Option<i32>,
        oom: bool,
    },
    /// It ran past its `.timeout(d)`.
    Timeout,
}

/// Signs and checks messages with the key a pool and its workers share.
#[derive(Clone)]
pub(crate) struct Signer(Vec<u8>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// The key given, or the one in `MULTIPROCESSING_KEY`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when there is neither, or the key is empty.
    pub(crate) fn new(key: Option<Vec<u8>>) -> Result<Self> {
        let key = key
            .or_else(|| std::env::var_os(KEY_ENV).map(|k| k.into_encoded_bytes()))
            .unwrap_or_default();
        if key.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "a broker pool and its workers sign every task with a shared key: set {KEY_ENV} (the same on every host) or call .key(..)"
            )));
        }
        Ok(Signer(key))
    }

    fn mac(&self, domain: &str, bytes: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac
    }

    /// `value`, encoded and signed for `domain`.
    ///
    /// # Errors
    /// [`Error::Encode`] if it does not encode.
    pub(crate) fn seal<T: Serialize>(&self, domain: &str, value: &T) -> Result<Vec<u8>> {
        let body = encode_value("a message", value)?;
        let mut out = Vec::with_capacity(TAG_LEN + body.len());
        out.extend_from_slice(&self.mac(domain, &body).finalize().into_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The value in `sealed`, if its tag is right for `domain`.
    ///
    /// # Errors
    /// [`Error::Authentication`] for a message that is unsigned or signed with another key;
    /// [`Error::Decode`] for one that is signed but does not decode.
    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &self,
        domain: &str,
        sealed: &[u8],
    ) -> Result<T> {
        if sealed.len() < TAG_LEN {
            return Err(Error::Authentication(format!(
                "a {domain} on the broker carries no signature"
            )));
        }
        let (tag, body) = sealed.split_at(TAG_LEN);
        if self.mac(domain, body).verify_slice(tag).is_err() {
            return Err(Error::Authentication(format!(
                "a {domain} on the broker is not signed with this pool's key ({KEY_ENV})"
            )));
        }
        decode_value("a message", body)
    }
}

/// An id of this executable's entry table: the names of its entries, sorted, and whether each
/// is async. Two builds with the same entries (by name and kind) have the same id.
pub(crate) fn table_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut names: Vec<(&str, bool)> = crate::entry::ENTRIES
            .iter()
            .map(|r| (r.name, r.is_async))
            .collect();
        names.sort_unstable();
        let mut hash = Sha256::new();
        for (name, is_async) in names {
            hash.update(name.as_bytes());
            hash.update([0, u8::from(is_async)]);
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    })
}

/// A Redis error as this crate's.
pub(crate) fn broker_error(doing: &str, e: redis::RedisError) -> Error {
    Error::Broker(format!("{doing}: {e}"))
}

/// The environment variable naming a PEM file of the certificate authorities to trust for a
/// `rediss://` broker, when the pool or worker is given none ([`Endpoint::new`]).
pub(crate) const CA_ENV: &str = "MULTIPROCESSING_BROKER_CA";

/// Where a Redis is: its URL, and for `rediss://`, the certificate authorities to trust.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    /// A PEM file of CA certificates; `None`: the system's roots (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured).
    ca: Option<PathBuf>,
}

impl std::fmt::Debug for Endpoint {
    /// Without the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact(&self.url))
            .field("ca", &self.ca)
            .finish()
    }
}

impl Endpoint {
    /// `url`, trusting the CAs in `ca`, or else in the file `MULTIPROCESSING_BROKER_CA` names.
    pub(crate) fn new(url: String, ca: Option<PathBuf>) -> Self {
        let ca = ca.or_else(|| std::env::var_os(CA_ENV).map(PathBuf::from));
        Endpoint { url, ca }
    }

    /// The URL without its password, for messages.
    pub(crate) fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// Opens a connection (AUTH user and password, database and TLS come from the URL).
    /// `block`: for commands that wait on the server (`XREAD BLOCK`), which get `block` more
    /// than the usual response time.
    ///
    /// # Errors
    /// [`Error::Broker`] for a URL Redis does not take or a server that cannot be reached;
    /// [`Error::InvalidArgument`] for a CA file that cannot be read.
    pub(crate) async fn connect(&self, block: Option<Duration>) -> Result<MultiplexedConnection> {
        let client = self.client()?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT + block.unwrap_or_default()));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                let mut doing = format!("cannot reach Redis at {}", self.redacted());
                if self.url.starts_with("redis://") && e.is_connection_dropped() {
                    doing.push_str(
                        " (it closed the connection: if it takes TLS only, use a rediss:// URL)",
                    );
                } else if self.url.starts_with("rediss://") && e.to_string().contains("certificate")
                {
                    doing.push_str(&format!(
                        " (to trust a private CA, give its PEM file to PoolBuilder::broker_ca or in {CA_ENV})"
                    ));
                }
                broker_error(&doing, e)
            })
    }

    fn client(&self) -> Result<redis::Client> {
        let bad_url = |e| broker_error("bad broker URL", e);
        match &self.ca {
            Some(path) if self.url.starts_with("rediss://") => self.client_with_ca(path),
            _ => redis::Client::open(self.url.as_str()).map_err(bad_url),
        }
    }

    #[cfg(feature = "broker-tls")]
    fn client_with_ca(&self, path: &std::path::Path) -> Result<redis::Client> {
        let pem = std::fs::read(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the broker's CA file {} ({CA_ENV} or PoolBuilder::broker_ca): {e}",
                path.display()
            ))
        })?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(self.url.as_str(), certs).map_err(|e| {
            broker_error(
                &format!("cannot use the CA file {} for the broker", path.display()),
                e,
            )
        })
    }

    #[cfg(not(feature = "broker-tls"))]
    fn client_with_ca(&self, _path: &std::path::Path) -> Result<redis::Client> {
        Err(Error::InvalidArgument(
            "rediss:// URLs need the `broker-tls` feature of multiprocessing".into(),
        ))
    }
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Makes the consumer group of `key` (and the stream) unless it exists.
///
/// # Errors
/// [`Error::Broker`] when Redis refuses for another reason.
pub(crate) async fn ensure_group(con: &mut MultiplexedConnection, key: &str) -> Result<()> {
    let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match made {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(broker_error("cannot create the workers' consumer group", e)),
    }
}

/// One stream entry: its id and the bytes of its `m` field (`None` for an entry that was
/// deleted while pending, or that has no such field).
pub(crate) type Entry = (String, Option<Vec<u8>>);

/// The entries of an `XREAD`/`XREADGROUP` reply (one stream), or of an `XCLAIM` reply.
pub(crate) fn stream_entries(reply: Value) -> Vec<Entry> {
    match reply {
        // XREAD: [[key, entries]] (RESP2) or {key: entries} (RESP3).
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 && is_entry_list(&pair[1]) => {
                    entries(pair.swap_remove(1))
                }
                entry @ Value::Array(_) => entries(Value::Array(vec![entry])),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

fn is_entry_list(v: &Value) -> bool {
    matches!(v, Value::Array(items) if items.iter().all(|i| matches!(i, Value::Array(_))))
}

fn entries(list: Value) -> Vec<Entry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.is_empty() {
                return None;
            }
            let fields = if pair.len() > 1 {
                pair.swap_remove(1)
            } else {
                Value::Nil
            };
            let id = text(&pair[0])?;
            Some((id, field(fields)))
        })
        .collect()
}

/// The bytes of field `m` in a flat `[field, value, ...]` list (or a RESP3 map).
fn field(fields: Value) -> Option<Vec<u8>> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| match (text(&k), v) {
        (Some(k), Value::BulkString(bytes)) if k == FIELD => Some(bytes),
        _ => None,
    })
}

/// A reply item as text (bulk or simple strings).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_only_with_its_key_and_domain() {
        let a = Signer(b"one key".to_vec());
        let b = Signer(b"another".to_vec());
        let sealed = a.seal("task", &42u64).expect("encode");
        assert_eq!(a.open::<u64>("task", &sealed).expect("opens"), 42);
        assert!(matches!(
            b.open::<u64>("task", &sealed),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            a.open::<u64>("result", &sealed),
            Err(Error::Authentication(_))
        ));
        let mut forged = sealed.clone();
        *forged.last_mut().expect("not empty") ^= 1;
        assert!(matches!(
            a.open::<u64>("task", &forged),
            Err(Error::Authentication(_))
        ));
        assert!(a.open::<u64>("task", b"short").is_err());
    }

    #[test]
    fn a_password_does_not_reach_messages() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://…@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn xread_replies_give_their_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("m"), Value::BulkString(vec![1, 2])]),
        ]);
        let deleted = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("key"),
            Value::Array(vec![entry.clone(), deleted]),
        ])]);
        assert_eq!(
            stream_entries(reply),
            vec![("1-0".into(), Some(vec![1, 2])), ("2-0".into(), None)]
        );
        // XCLAIM: the entries themselves.
        assert_eq!(
            stream_entries(Value::Array(vec![entry])),
            vec![("1-0".into(), Some(vec![1, 2]))]
        );
    }
}
