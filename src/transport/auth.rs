//! Mutual HMAC-SHA256 challenge–response over a shared key, as Python's `authkey` handshake.
//!
//! 1. server → client: `MPAUTH1` ‖ 32-byte nonce `ns`
//! 2. client → server: `HMAC(key, "client" ‖ ns)` ‖ 32-byte nonce `nc`
//! 3. server → client: `OK` ‖ `HMAC(key, "server" ‖ nc)`, or `NO` and the connection is closed
//!
//! A child the server started knows a single-use token the server made for it, which stands in
//! for `ns`: it writes `MPTOKN1` ‖ token ‖ `nc` ‖ `HMAC(key, "token" ‖ token ‖ nc)` as soon as it
//! has connected, without waiting for step 1, and the server answers with step 3 (see
//! [`client_with_token`]). That saves the child one round trip.
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
const TOKEN_GREETING: &[u8] = b"MPTOKN1";
const MAC_LEN: usize = 32;
/// `MPTOKN1` ‖ token ‖ nonce ‖ tag.
const TOKEN_ANSWER_LEN: usize = TOKEN_GREETING.len() + 8 + KEY_LEN + MAC_LEN;

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
///
/// # Errors
/// `Io` if the random source cannot be read.
pub(crate) fn random_bytes() -> Result<[u8; KEY_LEN]> {
    let mut bytes = [0u8; KEY_LEN];
    let mut filled = 0;
    while filled < KEY_LEN {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`, which lives for
        // the whole call; getrandom(2) writes at most that many bytes.
        let n =
            unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), KEY_LEN - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Kernels without getrandom(2): the device does the same.
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            return Ok(bytes);
        }
        filled += n as usize;
    }
    Ok(bytes)
}

/// A random single-use token for a child's `Hello` (and its proof of the key).
///
/// # Errors
/// `Io` if the random source cannot be read.
pub(crate) fn random_token() -> Result<u64> {
    let bytes = random_bytes()?;
    let mut token = [0u8; 8];
    token.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(token))
}

/// Does once what the first handshake of a process would: the hash's CPU feature detection
/// (`cpuid`, which traps to the hypervisor on a VM). The fork server calls it, so that the
/// children it forks inherit the result.
pub(crate) fn warm_up() {
    let _ = AuthKey([0; KEY_LEN]).mac(b"warm-up", &[]);
}

/// `token` ‖ `nonce`, the message a token proof signs.
fn token_message(token: u64, nonce: &[u8]) -> [u8; 8 + KEY_LEN] {
    let mut m = [0u8; 8 + KEY_LEN];
    m[..8].copy_from_slice(&token.to_le_bytes());
    m[8..].copy_from_slice(nonce);
    m
}

/// Who the server found at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A peer that answered the challenge.
    Key,
    /// A child that proved the key over this single-use token (the caller must now retire it).
    Token(u64),
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
    server_or_token(reader, writer, key, &|_| false)
        .await
        .map(|_| ())
}

/// As [`server`], also admitting a child that proves the key over a token for which `expected`
/// says yes (see [`client_with_token`]). Retiring the token is the caller's job: until then the
/// same proof would pass again.
///
/// # Errors
/// As [`server`].
pub(crate) async fn server_or_token<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    key: &AuthKey,
    expected: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Peer>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let nonce = random_bytes()?;
    // Written even to a token holder (who reads past it): we cannot know who it is until it
    // speaks, and a peer that waits for the challenge would otherwise wait forever.
    writer.write_message(&[GREETING, &nonce]).await?;
    writer.flush().await?;
    let answer = read_handshake(reader).await?;
    let (peer, peer_nonce) = if answer.len() == TOKEN_ANSWER_LEN
        && answer.starts_with(TOKEN_GREETING)
    {
        let rest = &answer[TOKEN_GREETING.len()..];
        let token = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let (their_nonce, tag) = rest[8..].split_at(KEY_LEN);
        let ok = expected(token) && key.verify(b"token", &token_message(token, their_nonce), tag);
        (ok.then_some(Peer::Token(token)), their_nonce)
    } else if answer.len() == MAC_LEN + KEY_LEN {
        let ok = key.verify(b"client", &nonce, &answer[..MAC_LEN]);
        (ok.then_some(Peer::Key), &answer[MAC_LEN..])
    } else {
        (None, &answer[..0])
    };
    let Some(peer) = peer else {
        // Best effort: the peer may already be gone.
        let _ = writer.write_message(&[b"NO"]).await;
        let _ = writer.flush().await;
        return Err(refused("the peer does not hold this run's key"));
    };
    let tag = key.mac(b"server", peer_nonce);
    writer.write_message(&[b"OK", &tag]).await?;
    writer.flush().await?;
    Ok(peer)
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
    verdict(reader, key, &nonce).await
}

/// Reads the server's verdict on our answer and checks its proof over `nonce`.
async fn verdict<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    key: &AuthKey,
    nonce: &[u8],
) -> Result<()> {
    let verdict = read_handshake(reader)
        .await
        .map_err(|_| refused("the server refused our key"))?;
    if verdict.len() != 2 + MAC_LEN || &verdict[..2] != b"OK" {
        return Err(refused("the server refused our key"));
    }
    if !key.verify(b"server", nonce, &verdict[2..]) {
        return Err(refused("the server could not prove it holds the key"));
    }
    Ok(())
}

/// Runs the client side for a child that holds a single-use `token` from the server: the proof
/// goes out at once, with `first` behind it, and the server's challenge is read past unanswered.
/// Only the server that made the token accepts it, and only once.
///
/// # Errors
/// As [`client`].
pub(crate) async fn client_with_token<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    key: &AuthKey,
    token: u64,
    first: &[u8],
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let nonce = random_bytes()?;
    let tag = key.mac(b"token", &token_message(token, &nonce));
    writer
        .write_message(&[TOKEN_GREETING, &token.to_le_bytes(), &nonce, &tag])
        .await?;
    writer.write_message(&[first]).await?;
    writer.flush().await?;
    let challenge = read_handshake(reader).await?;
    if challenge.len() != GREETING.len() + KEY_LEN || &challenge[..GREETING.len()] != GREETING {
        return Err(refused("the server did not send a valid challenge"));
    }
    verdict(reader, key, &nonce).await
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reader = FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>;
    type Writer = FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>;

    /// The framed ends of an in-memory connection: (server, client).
    fn ends() -> ((Reader, Writer), (Reader, Writer)) {
        let (a, b) = tokio::io::duplex(4096);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let framed = |r, w| {
            (
                FrameReader::new(r, HANDSHAKE_MAX_FRAME),
                FrameWriter::new(w, HANDSHAKE_MAX_FRAME),
            )
        };
        (framed(ar, aw), framed(br, bw))
    }

    async fn run(server_key: AuthKey, client_key: AuthKey) -> (Result<()>, Result<()>) {
        let ((mut sr, mut sw), (mut cr, mut cw)) = ends();
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

    async fn run_token(
        server_key: AuthKey,
        client_key: AuthKey,
        expected: u64,
        presented: u64,
    ) -> (Result<Peer>, Result<()>) {
        let ((mut sr, mut sw), (mut cr, mut cw)) = ends();
        let expect = move |t: u64| t == expected;
        tokio::join!(
            server_or_token(&mut sr, &mut sw, &server_key, &expect),
            client_with_token(&mut cr, &mut cw, &client_key, presented, b"hello")
        )
    }

    #[tokio::test]
    async fn a_token_holder_with_the_key_passes_both_ways() {
        let key = AuthKey::random().unwrap();
        let (s, c) = run_token(key.clone(), key, 7, 7).await;
        assert_eq!(s.unwrap(), Peer::Token(7));
        c.unwrap();
    }

    #[tokio::test]
    async fn a_token_proof_needs_the_key_and_an_expected_token() {
        let key = AuthKey::random().unwrap();
        let (s, c) = run_token(key.clone(), key.clone(), 7, 8).await;
        assert!(matches!(s, Err(Error::Authentication(_))), "{s:?}");
        assert!(matches!(c, Err(Error::Authentication(_))), "{c:?}");
        let (s, c) = run_token(key, AuthKey::random().unwrap(), 7, 7).await;
        assert!(matches!(s, Err(Error::Authentication(_))), "{s:?}");
        assert!(matches!(c, Err(Error::Authentication(_))), "{c:?}");
    }

    #[tokio::test]
    async fn a_key_holder_still_passes_the_token_aware_server() {
        let ((mut sr, mut sw), (mut cr, mut cw)) = ends();
        let key = AuthKey::random().unwrap();
        let (s, c) = tokio::join!(
            server_or_token(&mut sr, &mut sw, &key, &|_| true),
            client(&mut cr, &mut cw, &key, None)
        );
        assert_eq!(s.unwrap(), Peer::Key);
        c.unwrap();
    }

    #[test]
    fn hex_round_trip() {
        let key = AuthKey::random().unwrap();
        assert_eq!(AuthKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(AuthKey::from_hex("zz"), None);
    }
}
