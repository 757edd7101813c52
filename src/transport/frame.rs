//! Length-prefixed frames.
//!
//! A frame is a 4-byte little-endian header followed by its payload. The low 30 bits of the
//! header are the payload length; the top bit says that the message goes on in the next frame.
//! A message is one or more frames: the frame limit bounds what a peer can make us allocate per
//! read, not how large a message may be. The first frame of a message of several frames has bit
//! 30 set and an 8-byte little-endian total length after its header, so that the reader can
//! size its buffer once instead of growing (and copying) it frame by frame.

use crate::error::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The header bit that says the message goes on in the next frame.
pub(crate) const MORE: u32 = 1 << 31;
/// The header bit of a first frame followed by the message's 8-byte total length.
const TOTAL: u32 = 1 << 30;
/// Largest payload a frame header can describe.
pub(crate) const HEADER_MAX: usize = (TOTAL - 1) as usize;
/// The write buffer: small messages queued together go out in one write.
const BUF_SIZE: usize = 64 * 1024;
/// The read buffer: small messages are read many at a time into it, a larger one straight into
/// its own buffer. Smaller than the write buffer because tokio zeroes a read buffer when it makes
/// it: 64 KiB per connection cost each side of every new child a 64 KiB `memset` and 16 page
/// faults (fork-server spawn + join, interleaved runs: 422-477 us with 8 KiB against 454-490).
const READ_BUF_SIZE: usize = 8 * 1024;

/// Reads frames and reassembles messages.
pub(crate) struct FrameReader<R> {
    inner: BufReader<R>,
    max_frame: usize,
    max_message: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(READ_BUF_SIZE, inner),
            max_frame: max_frame.min(HEADER_MAX),
            max_message: usize::MAX,
        }
    }

    /// Changes the frame limit (the handshake runs with a tiny one).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(HEADER_MAX);
    }

    /// Bounds the size of a whole (multi-frame) message.
    pub(crate) fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// The stream beneath.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        self.inner.get_mut()
    }

    /// Whether bytes past the last message were read already (the next message, or its start).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.inner.buffer().is_empty()
    }

    /// The stream and the bytes read from it ahead of the last message (a caller that goes on
    /// reading the stream by other means must consume those first).
    pub(crate) fn into_parts(self) -> (R, Vec<u8>) {
        let leftover = self.inner.buffer().to_vec();
        (self.inner.into_inner(), leftover)
    }

    /// Reads one whole message. `Ok(None)` is a clean end of stream between messages.
    ///
    /// # Errors
    /// `FrameTooLarge` for a frame over the limit, `Protocol` for a stream cut mid-message, `Io`.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a cancelled read leaves the stream mid-frame. Connections are read by one
    /// task that owns the reader.
    pub(crate) async fn read_message(&mut self) -> Result<Option<Vec<u8>>> {
        let mut message = Vec::new();
        // The total the first frame announced, if it did; checked when the message ends.
        let mut announced = None;
        let mut started = false;
        loop {
            let mut header = [0u8; 4];
            let mut got = 0;
            while got < header.len() {
                match self.inner.read(&mut header[got..]).await? {
                    0 if got == 0 && !started => return Ok(None),
                    0 => {
                        return Err(Error::Protocol(
                            "connection closed in the middle of a message".into(),
                        ))
                    }
                    n => got += n,
                }
            }
            let first = !started;
            started = true;
            let header = u32::from_le_bytes(header);
            let len = (header & !(MORE | TOTAL)) as usize;
            if len > self.max_frame {
                return Err(Error::FrameTooLarge {
                    size: len,
                    limit: self.max_frame,
                });
            }
            if header & TOTAL != 0 {
                if !first || header & MORE == 0 {
                    return Err(Error::Protocol("malformed frame header".into()));
                }
                let mut total = [0u8; 8];
                self.inner.read_exact(&mut total).await?;
                let total = usize::try_from(u64::from_le_bytes(total)).unwrap_or(usize::MAX);
                if total < len {
                    return Err(Error::Protocol("malformed message length".into()));
                }
                if total > self.max_message {
                    return Err(Error::FrameTooLarge {
                        size: total,
                        limit: self.max_message,
                    });
                }
                // Sized once; a peer announcing more than it sends gets at most 1 GiB reserved,
                // and the message is refused when it ends short.
                message = super::buffers::take(total.min(1 << 30));
                announced = Some(total);
            }
            let total = message.len().saturating_add(len);
            if total > self.max_message {
                return Err(Error::FrameTooLarge {
                    size: total,
                    limit: self.max_message,
                });
            }
            if message.capacity() == 0 {
                message = super::buffers::take(len);
            } else {
                message.reserve(len);
            }
            // Into the spare capacity, exactly `len` bytes: `read_to_end` would grow the full
            // buffer to probe for the end (a realloc and a copy per message).
            let end = message.len() + len;
            while message.len() < end {
                let want = (end - message.len()) as u64;
                if (&mut self.inner).take(want).read_buf(&mut message).await? == 0 {
                    return Err(Error::Protocol(
                        "connection closed in the middle of a frame".into(),
                    ));
                }
            }
            if header & MORE == 0 {
                if announced.is_some_and(|total| total != message.len()) {
                    return Err(Error::Protocol(
                        "a message was not as long as its first frame announced".into(),
                    ));
                }
                return Ok(Some(message));
            }
        }
    }
}

/// Writes messages as frames through a buffer; call [`FrameWriter::flush`] to push them out.
pub(crate) struct FrameWriter<W: AsyncWrite> {
    inner: BufWriter<W>,
    max_frame: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(inner: W, max_frame: usize) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(BUF_SIZE, inner),
            max_frame: max_frame.clamp(1, HEADER_MAX),
        }
    }

    /// Changes the size messages are split at (the peer's frame limit).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.clamp(1, HEADER_MAX);
    }

    /// Writes one message made of the concatenation of `parts`, split into frames of at most
    /// the frame limit. Nothing is flushed.
    ///
    /// # Errors
    /// `Io` when the peer is gone.
    pub(crate) async fn write_message(&mut self, parts: &[&[u8]]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut remaining = total;
        let mut parts = parts.iter().map(|p| &p[..]).filter(|p| !p.is_empty());
        let mut current: &[u8] = parts.next().unwrap_or(&[]);
        let mut first = true;
        loop {
            let len = remaining.min(self.max_frame);
            remaining -= len;
            let more = if remaining > 0 { MORE } else { 0 };
            // `len` fits in 30 bits: max_frame is clamped to HEADER_MAX.
            if first && more != 0 {
                self.inner
                    .write_all(&(len as u32 | MORE | TOTAL).to_le_bytes())
                    .await?;
                self.inner.write_all(&(total as u64).to_le_bytes()).await?;
            } else {
                self.inner
                    .write_all(&(len as u32 | more).to_le_bytes())
                    .await?;
            }
            first = false;
            let mut left = len;
            while left > 0 {
                if current.is_empty() {
                    current = parts.next().unwrap_or(&[]);
                    continue;
                }
                let n = left.min(current.len());
                self.inner.write_all(&current[..n]).await?;
                current = &current[n..];
                left -= n;
            }
            if remaining == 0 {
                return Ok(());
            }
        }
    }

    /// Pushes buffered frames to the OS.
    ///
    /// # Errors
    /// `Io` when the peer is gone.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.inner.flush().await?;
        Ok(())
    }

    /// Writes raw bytes without framing (used to test that garbage is refused).
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes).await?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_splits_and_reassembles() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a, 7);
        let mut r = FrameReader::new(b, 7);
        let body: Vec<u8> = (0..100u8).collect();
        w.write_message(&[b"head", &body]).await.unwrap();
        w.write_message(&[]).await.unwrap();
        w.flush().await.unwrap();
        drop(w);
        let got = r.read_message().await.unwrap().unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &body[..]);
        assert_eq!(r.read_message().await.unwrap().unwrap(), Vec::<u8>::new());
        assert!(r.read_message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_announced_total_over_the_message_limit_is_refused() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(b, 1 << 20);
        r.set_max_message(1000);
        let header = 10u32 | MORE | TOTAL;
        a.write_all(&header.to_le_bytes()).await.unwrap();
        a.write_all(&(1u64 << 40).to_le_bytes()).await.unwrap();
        match r.read_message().await {
            Err(Error::FrameTooLarge { size, limit }) => {
                assert_eq!((size, limit), (1 << 40, 1000));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversize_frame_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a, 1 << 20);
        let mut r = FrameReader::new(b, 16);
        w.write_message(&[&[0u8; 17]]).await.unwrap();
        w.flush().await.unwrap();
        match r.read_message().await {
            Err(Error::FrameTooLarge {
                size: 17,
                limit: 16,
            }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_frame_is_a_protocol_error() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a, 1 << 20);
        let mut r = FrameReader::new(b, 1 << 20);
        w.write_raw(&[10, 0, 0, 0, 1, 2]).await.unwrap();
        drop(w);
        assert!(matches!(r.read_message().await, Err(Error::Protocol(_))));
    }
}
