//! The pool on Redis over TLS (`rediss://`), against a real `redis-server` that takes TLS only,
//! with a CA and a server certificate made for the test by the `openssl` command. Skipped, with
//! the reason printed, where `openssl` is missing or `redis-server` was built without TLS.
//!
//! Run with `cargo test --features broker-tls --test broker_tls`.
#![cfg(feature = "broker-tls")]

mod broker_common;

use broker_common::{Redis, Worker, KEY};
use multiprocessing::{entry, Error, Pool};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[entry]
fn square(x: u64) -> u64 {
    x * x
}

/// A CA, and a certificate it signed for `127.0.0.1`, in a temporary directory removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes them with `openssl`; `None` (after printing why) where that cannot be done.
    fn make() -> Option<Certs> {
        if Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            println!("skipped: the openssl command is not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("broker-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the certificate directory");
        let certs = Certs { dir };
        std::fs::write(
            certs.path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write the extension file");
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=multiprocessing test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        ];
        for step in steps {
            let out = Command::new("openssl")
                .args(step)
                .current_dir(&certs.dir)
                .output()
                .expect("run openssl");
            if !out.status.success() {
                println!(
                    "skipped: `openssl {}` failed: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
        }
        Some(certs)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A map over `rediss://` on two workers in separate processes, the pool trusting the test's CA
/// through `broker_ca`, the workers through `MULTIPROCESSING_BROKER_CA`. Without the CA the
/// server's certificate is refused; a `redis://` URL to the TLS-only port fails clearly, and
/// soon (no hang).
#[multiprocessing::test]
async fn a_map_runs_over_rediss_and_plain_redis_to_a_tls_port_fails_clearly() {
    let Some(certs) = Certs::make() else { return };
    let ca = certs.path("ca.crt");
    let Some(redis) = Redis::start_tls(&certs.path("server.crt"), &certs.path("server.key"), &ca)
    else {
        return;
    };
    let name = "tls";
    let test = "a_map_runs_over_rediss_and_plain_redis_to_a_tls_port_fails_clearly";
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let env = [("MULTIPROCESSING_BROKER_CA", text(&ca))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _a = Worker::start_with_env(&url, name, test, 2, &[], &env);
    let _b = Worker::start_with_env(&url, name, test, 2, &[], &env);
    let builder = || Pool::builder().broker(url.clone()).name(name).key(KEY);

    let pool = builder()
        .broker_ca(&ca)
        .processes(4)
        .build()
        .await
        .expect("a pool over rediss://");
    let squares: Vec<u64> = (0..2000).map(|x| x * x).collect();
    assert_eq!(
        pool.map(square, 0..2000).chunksize(10).await.unwrap(),
        squares
    );
    assert_eq!(pool.apply(square, 9).await.unwrap(), 81);
    pool.close();
    pool.join().await.unwrap();

    // The system's roots do not include the test's CA: the certificate is refused.
    let untrusted = tokio::time::timeout(Duration::from_secs(20), builder().build())
        .await
        .expect("an answer, not a hang");
    match untrusted {
        Err(Error::Broker(message)) => {
            println!("without the CA: {message}");
            assert!(message.contains("certificate"), "{message}");
            assert!(message.contains("broker_ca"), "{message}");
        }
        other => panic!("expected a broker error, got {other:?}"),
    }

    // A plain URL to the TLS-only port.
    let plain = format!("redis://127.0.0.1:{}/0", redis.port);
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        Pool::builder().broker(plain).name(name).key(KEY).build(),
    )
    .await
    .expect("an answer, not a hang");
    match refused {
        Err(Error::Broker(message)) => {
            println!("redis:// to the TLS port: {message}");
            assert!(message.contains("rediss://"), "{message}");
        }
        other => panic!("expected a broker error, got {other:?}"),
    }
}
