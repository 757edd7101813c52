//! Mutual HMAC-SHA256 challenge–response over a shared key, as Python's `authkey` handshake.
//!
//! 1. server → client: `MPAUTH1` ‖ 32-byte nonce `ns`
//! 2. client → server: `HMAC(key, "client" ‖ ns)` ‖ 32-byte nonce `nc`
//! 3. server → client: `OK` ‖ `HMAC(key, "server" ‖ nc)`, or `NO` and the connection is closed
//!
//! Each side learns only that the other holds the key; the key never crosses the wire. All
//! handshake frames are read with a limit of [`HANDSHAKE_MAX_FRAME`] bytes, so an unauthenticated
//! peer cannot make us allocate.

use super::frame::{FrameReader, FrameWriter};
use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use tokio::io::{AsyncRead, AsyncWrite};

/// Length of the per-run key and of each nonce.
pub(crate) const KEY_LEN: usize = 32;
/// Frame limit while the peer is unauthenticated.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 128;
const GREETING: &[u8] = b"MPAUTH1";
const MAC_LEN: usize = 32;

/// A secret shared by every process of one run.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AuthKey(pub(crate) [u8; KEY_LEN]);

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    /// A fresh key from the OS's random source.
    ///
    /// # Errors
    /// `Io` if the random source cannot be read.
    pub(crate) fn random() -> Result<Self> {
        Ok(AuthKey(random_bytes()?))
    }

    /// The key for a user's `authkey` of any length: its SHA-256 digest, so that both ends of a
    /// `connection::Listener` / `Client` pair derive the same 32 bytes from the same secret.
    pub(crate) fn derive(authkey: &[u8]) -> Self {
        use sha2::Digest;
        AuthKey(Sha256::digest(authkey).into())
    }

    pub(crate) fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        if s.len() != KEY_LEN * 2 || !s.is_ascii() {
            return None;
        }
        let mut key = [0u8; KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(AuthKey(key))
    }

    fn mac(&self, role: &[u8], nonce: &[u8]) -> [u8; MAC_LEN] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(nonce);
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, role: &[u8], nonce: &[u8], tag: &[u8]) -> bool {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role);
        mac.update(nonce);
        mac.verify_slice(tag).is_ok()
    }
}

/// 32 bytes from the OS's random source.
pub(crate) fn random_bytes() -> Result<[u8; KEY_LEN]> {
    let mut bytes = [0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn refused(what: &str) -> Error {
    Error::Authentication(what.to_owned())
}

async fn read_handshake<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Vec<u8>> {
    match reader.read_message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(refused(
            "the peer closed the connection during the handshake",
        )),
        Err(Error::FrameTooLarge { .. }) | Err(Error::Protocol(_)) => {
            Err(refused("the peer sent something that is not a handshake"))
        }
        Err(e) => Err(e),
    }
}

/// Runs the server side. On success the peer holds the key.
///
/// # Errors
/// `Authentication` when the peer's answer is wrong or malformed, `Io`.
pub(crate) async fn server<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    key: &AuthKey,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let nonce = random_bytes()?;
    writer.write_message(&[GREETING, &nonce]).await?;
    writer.flush().await?;
    let answer = read_handshake(reader).await?;
    if answer.len() != MAC_LEN + KEY_LEN || !key.verify(b"client", &nonce, &answer[..MAC_LEN]) {
        // Best effort: the peer may already be gone.
        let _ = writer.write_message(&[b"NO"]).await;
        let _ = writer.flush().await;
        return Err(refused("the peer does not hold this run's key"));
    }
    let tag = key.mac(b"server", &answer[MAC_LEN..]);
    writer.write_message(&[b"OK", &tag]).await?;
    writer.flush().await?;
    Ok(())
}

/// Runs the client side. On success the server holds the key.
///
/// # Errors
/// `Authentication` when the server refuses our key or cannot prove its own, `Io`.
///
/// `first`, if given, is written right behind our answer, before the server's verdict is read:
/// the first message of the session then costs no round trip of its own. Send nothing secret
/// this way (the server has not proved itself yet when it is written).
pub(crate) async fn client<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    key: &AuthKey,
    first: Option<&[u8]>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let challenge = read_handshake(reader).await?;
    if challenge.len() != GREETING.len() + KEY_LEN || &challenge[..GREETING.len()] != GREETING {
        return Err(refused("the server did not send a valid challenge"));
    }
    let nonce = random_bytes()?;
    let tag = key.mac(b"client", &challenge[GREETING.len()..]);
    writer.write_message(&[&tag, &nonce]).await?;
    if let Some(first) = first {
        writer.write_message(&[first]).await?;
    }
    writer.flush().await?;
    let verdict = read_handshake(reader)
        .await
        .map_err(|_| refused("the server refused our key"))?;
    if verdict.len() != 2 + MAC_LEN || &verdict[..2] != b"OK" {
        return Err(refused("the server refused our key"));
    }
    if !key.verify(b"server", &nonce, &verdict[2..]) {
        return Err(refused("the server could not prove it holds the key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(server_key: AuthKey, client_key: AuthKey) -> (Result<()>, Result<()>) {
        let (a, b) = tokio::io::duplex(4096);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let mut sr = FrameReader::new(ar, HANDSHAKE_MAX_FRAME);
        let mut sw = FrameWriter::new(aw, HANDSHAKE_MAX_FRAME);
        let mut cr = FrameReader::new(br, HANDSHAKE_MAX_FRAME);
        let mut cw = FrameWriter::new(bw, HANDSHAKE_MAX_FRAME);
        tokio::join!(
            server(&mut sr, &mut sw, &server_key),
            client(&mut cr, &mut cw, &client_key, None)
        )
    }

    #[tokio::test]
    async fn same_key_passes_both_ways() {
        let key = AuthKey::random().unwrap();
        let (s, c) = run(key.clone(), key).await;
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
    }

    #[tokio::test]
    async fn wrong_key_is_refused_on_both_sides() {
        let (s, c) = run(AuthKey::random().unwrap(), AuthKey::random().unwrap()).await;
        assert!(matches!(s, Err(Error::Authentication(_))), "{s:?}");
        assert!(matches!(c, Err(Error::Authentication(_))), "{c:?}");
    }

    #[test]
    fn hex_round_trip() {
        let key = AuthKey::random().unwrap();
        assert_eq!(AuthKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(AuthKey::from_hex("zz"), None);
    }
}
