//! Hostile bytes at the decoders a peer reaches first: the frame decoder, the protocol message
//! decoder and both sides of the handshake. Hand-picked cases first, then a seeded random search
//! on stable Rust over the same decoders that `fuzz/` drives with libFuzzer on nightly
//! (`bash fuzz/run.sh 60`). Set `MP_FUZZ_ITERS` for a longer search.

use multiprocessing::__private::testing::decode::{frames, handshake, message};
use multiprocessing::Error;

/// A frame header: `len` with the `MORE` bit if `more`.
fn header(len: u32, more: bool) -> [u8; 4] {
    (len | if more { 1 << 31 } else { 0 }).to_le_bytes()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = header(payload.len() as u32, false).to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn whole_frames_decode_however_the_bytes_are_split() {
    let mut bytes = frame(b"hello");
    bytes.extend(frame(b""));
    bytes.extend(frame(&[9; 300]));
    for chunk in [1, 2, 3, 7, 64, 4096] {
        assert_eq!(frames(&bytes, 1024, chunk).unwrap(), vec![5, 0, 300]);
    }
}

#[test]
fn a_truncated_frame_gives_no_message_and_no_error() {
    let bytes = frame(&[1; 100]);
    for cut in 0..bytes.len() {
        assert_eq!(
            frames(&bytes[..cut], 1024, 13).unwrap(),
            Vec::<usize>::new()
        );
    }
}

#[test]
fn a_frame_over_the_limit_is_refused_before_its_payload_arrives() {
    let err = frames(&header(2000, false), 1024, 4).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                size: 2000,
                limit: 1024
            }
        ),
        "{err:?}"
    );
    // The largest header a peer can write.
    let err = frames(&[0xff; 4], 1 << 20, 4).unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { .. } | Error::Protocol(_)),
        "{err:?}"
    );
}

#[test]
fn garbage_postcard_and_unknown_kinds_are_refused_by_every_message_decoder() {
    for bytes in [
        &[][..],
        &[0xff; 16][..],
        &[200][..], // a variant index no enum has: an unknown message kind
        &[
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        ][..],
    ] {
        assert_eq!(message(bytes), [false; 4], "{bytes:?}");
    }
}

#[test]
fn handshake_garbage_closing_silence_and_wrong_answers_are_refused() {
    let wrong_answer = frame(&[0x42; 64]); // the length of a real answer, not its content
    let cases: [&[u8]; 5] = [
        &[],                  // connects and closes without a word
        &[0xff; 64],          // garbage
        &header(4000, false), // a frame far over the handshake's limit
        &wrong_answer,        // a wrong (or replayed: the nonce is new each time) HMAC
        &frame(b"OK"),        // a verdict without its proof
    ];
    for bytes in cases {
        for client in [false, true] {
            let err = handshake(bytes, client).unwrap_err();
            assert!(
                matches!(err, Error::Authentication(_)),
                "client={client} {bytes:?}: {err:?}"
            );
        }
    }
}

/// xorshift64*: a seeded generator, so a failure names the seed that makes it again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Random bytes, or valid frames with a few bytes changed: both reach deeper than either.
    fn input(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if self.below(2) == 0 {
            let len = self.below(200);
            bytes.extend((0..len).map(|_| self.next() as u8));
        } else {
            for _ in 0..1 + self.below(4) {
                let len = self.below(80);
                let payload: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                let mut head = header(len as u32, self.below(3) == 0);
                if self.below(4) == 0 {
                    head[3] |= 0x40; // the TOTAL bit, with or without its total
                }
                bytes.extend(head);
                bytes.extend(payload);
            }
            for _ in 0..self.below(3) {
                let at = self.below(bytes.len());
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << self.below(8);
                }
            }
        }
        bytes
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("MP_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_bytes_never_panic_the_frame_or_message_decoders() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..iterations(20_000) {
        let bytes = rng.input();
        let chunk = 1 + rng.below(64);
        if let Ok(lengths) = frames(&bytes, 256, chunk) {
            assert!(lengths.iter().all(|&n| n <= bytes.len()), "{bytes:?}");
        }
        let _ = message(&bytes);
    }
}

#[test]
fn random_bytes_never_pass_either_side_of_the_handshake() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..iterations(1_000) {
        let bytes = rng.input();
        for client in [false, true] {
            let err = handshake(&bytes, client).unwrap_err();
            assert!(
                matches!(err, Error::Authentication(_)),
                "{bytes:?}: {err:?}"
            );
        }
    }
}
