//! Length-prefixed frames: the one wire format of every connection (hub, pipes,
//! `Listener`/`Client`, the fork server), its cancel-safe decoder and its encoders.
//!
//! A frame is a 4-byte little-endian header followed by its payload. The low 30 bits of the
//! header are the payload length; the top bit (`MORE`) says that the message goes on in the next
//! frame. A message is one or more frames: the frame limit bounds what a peer can make us
//! allocate per read, not how large a message may be. The first frame of a message of several
//! frames has bit 30 (`TOTAL`) set and an 8-byte little-endian total length after its header,
//! so that the reader can size its buffer once instead of growing (and copying) it frame by
//! frame.
//!
//! [`Decoder`] turns bytes into messages. It keeps everything it has read in itself, never in a
//! future, so a read that is cancelled between two socket reads loses nothing: that is what
//! lets `Connection::recv` run under `select!` and a timeout, and what [`FrameReader`] (the
//! hub's and the children's reader) is built on. [`FrameCursor`] writes one message frame by
//! frame and can stop and resume at any byte (a connection's non-blocking writes);
//! [`FrameWriter`] writes whole messages through a buffer.

use crate::buffers::{self, Buffer};
use crate::error::{Error, Result};
use std::io::IoSlice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// The header bit that says the message goes on in the next frame.
pub(crate) const MORE: u32 = 1 << 31;
/// The header bit of a first frame followed by the message's 8-byte total length.
const TOTAL: u32 = 1 << 30;
/// Largest payload a frame header can describe.
pub(crate) const HEADER_MAX: usize = (TOTAL - 1) as usize;
/// The longest header: 4 bytes, and the total length on the first of several frames.
const LONG_HEADER: usize = 12;
/// The write buffer: small messages queued together go out in one write.
const BUF_SIZE: usize = 64 * 1024;
/// The read size of a [`FrameReader`]: small messages are read many at a time, a frame whose
/// payload still missing is at least this large straight into its message. Smaller than the
/// write buffer because each side of every new child makes one: 64 KiB cost each a 64 KiB
/// `memset` and 16 page faults when tokio's `BufReader` zeroed it (fork-server spawn + join,
/// interleaved runs: 422-477 us with 8 KiB against 454-490). The decoder no longer zeroes its
/// buffer, but it is only faulted in as far as reads fill it, and 8 KiB holds a child's
/// messages.
pub(crate) const READ_BUF_SIZE: usize = 8 * 1024;

/// A frame header: 4 bytes, or 12 on the first frame of a message of several.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    bytes: [u8; LONG_HEADER],
    len: usize,
}

impl Header {
    /// The header of a frame of `len` payload bytes; `total` is the message's length on the
    /// first of several frames, `None` otherwise; `more` says another frame follows.
    fn new(len: usize, more: bool, total: Option<usize>) -> Self {
        // `len` fits in 30 bits: callers cut payloads at the frame limit, at most HEADER_MAX.
        let mut word = len as u32;
        if more {
            word |= MORE;
        }
        let mut bytes = [0u8; LONG_HEADER];
        let len = match total {
            Some(total) => {
                bytes[4..].copy_from_slice(&(total as u64).to_le_bytes());
                word |= TOTAL;
                LONG_HEADER
            }
            None => 4,
        };
        bytes[..4].copy_from_slice(&word.to_le_bytes());
        Header { bytes, len }
    }

    /// The header of a message that is one frame of `len` bytes.
    pub(crate) fn single(len: usize) -> [u8; 4] {
        (len as u32).to_le_bytes()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Frames `value`, postcard-encoded, as a message of one frame (header and payload in one
/// buffer, for one write): the fork server's requests and replies.
///
/// # Errors
/// `Encode` when the value cannot be encoded or is larger than one frame can hold.
pub(crate) fn encode_single<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    let framed = postcard::to_extend(value, vec![0u8; 4]).map_err(|e| Error::encode(what, e))?;
    let len = framed.len() - 4;
    if len > HEADER_MAX {
        return Err(Error::encode(what, "larger than one frame"));
    }
    let mut framed = framed;
    framed[..4].copy_from_slice(&Header::single(len));
    Ok(framed)
}

/// Reads one message of one frame of at most `max` bytes from a blocking stream and decodes it
/// (the fork server's side, which has no runtime). `None` at the end of the stream, for a read
/// error, for a frame over `max` or of several frames, and for bytes that are not a `T`.
pub(crate) fn read_single_blocking<T: serde::de::DeserializeOwned>(
    stream: &mut impl std::io::Read,
    max: usize,
) -> Option<T> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let header = u32::from_le_bytes(header);
    let len = header as usize;
    // A `MORE` or `TOTAL` bit makes `len` too large as well.
    if len > max {
        return None;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    postcard::from_bytes(&body).ok()
}

/// Turns the bytes of a stream into messages, whatever pieces they arrive in.
///
/// The owner reads the stream into [`read_space`](Self::read_space), reports how much came with
/// [`filled`](Self::filled), and takes messages with [`next_message`](Self::next_message) or
/// [`with_next`](Self::with_next). Every byte read lives here between calls, so a reader that
/// is cancelled between reads loses nothing.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Bytes read and not yet decoded start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// The message being assembled from its frames.
    msg: Vec<u8>,
    /// Inside a frame: its payload bytes not yet in `msg`.
    frame_left: usize,
    in_frame: bool,
    /// The current frame has the `MORE` bit.
    more: bool,
    /// A message has begun (its first header was decoded) and not ended.
    partial: bool,
    /// The total the first frame announced, if it did; checked when the message ends.
    announced: Option<usize>,
    /// A whole message taken off the stream and put back (see [`Decoder::put_back`]).
    held: Option<Vec<u8>>,
    /// The last [`read_space`](Self::read_space) pointed into `msg`, not `buf`.
    direct: bool,
    /// How much one read asks for; a frame with at least this much missing is read straight
    /// into its message.
    chunk: usize,
    max_frame: usize,
    max_message: usize,
}

impl Decoder {
    /// A decoder that starts with `leftover` (bytes read from the stream by someone else), reads
    /// `chunk` bytes at a time and refuses frames over `max_frame`.
    pub(crate) fn new(leftover: Vec<u8>, chunk: usize, max_frame: usize) -> Self {
        Decoder {
            buf: leftover,
            pos: 0,
            msg: Vec::new(),
            frame_left: 0,
            in_frame: false,
            more: false,
            partial: false,
            announced: None,
            held: None,
            direct: false,
            chunk: chunk.max(LONG_HEADER),
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

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Whether bytes past the last message were read already (the next message, or its start).
    pub(crate) fn has_buffered(&self) -> bool {
        self.held.is_some() || self.partial || self.pos < self.buf.len()
    }

    /// Whether the stream is inside a message: an end of stream now cuts one.
    pub(crate) fn mid_message(&self) -> bool {
        self.partial || self.pos < self.buf.len()
    }

    /// Whether a message was put back and not yet taken again.
    pub(crate) fn holds_message(&self) -> bool {
        self.held.is_some()
    }

    /// Keeps `message` to be handed out again by the next call that takes one.
    pub(crate) fn put_back(&mut self, message: Vec<u8>) {
        self.held = Some(message);
    }

    /// Where the next read of the stream goes, and how many bytes it may take at most: the
    /// read appends to the returned buffer's spare capacity (which is there), then reports with
    /// [`filled`](Self::filled).
    pub(crate) fn read_space(&mut self) -> (&mut Vec<u8>, usize) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.direct = self.in_frame && self.frame_left >= self.chunk && self.pos == self.buf.len();
        if self.direct {
            // Exactly the rest of the frame, so nothing read lands in the message by mistake.
            self.msg.reserve(self.frame_left);
            return (&mut self.msg, self.frame_left);
        }
        if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.reserve(self.chunk);
        }
        (&mut self.buf, usize::MAX)
    }

    /// Counts `n` bytes a read appended where [`read_space`](Self::read_space) said.
    pub(crate) fn filled(&mut self, n: usize) {
        if self.direct {
            self.frame_left -= n;
        }
    }

    /// Calls `f` on the next whole message, if one has arrived; a message of one frame that is
    /// whole in the read buffer is not copied, and a large one assembled from the stream is
    /// kept for reuse (`buffers`) once `f` returns.
    ///
    /// # Errors
    /// As [`next_message`](Self::next_message).
    pub(crate) fn with_next<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        if let Some(m) = self.held.take() {
            return Ok(Some(f(&Buffer::from(m))));
        }
        if !self.partial {
            let avail = self.avail();
            if avail.len() >= 4 {
                let h = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
                let len = h as usize;
                // No flag bit set (which would make `len` huge), and under both limits.
                if len <= self.max_frame.min(self.max_message) && avail.len() >= 4 + len {
                    let r = f(&avail[4..4 + len]);
                    self.pos += 4 + len;
                    return Ok(Some(r));
                }
            }
        }
        // A message assembled from its frames goes back to the pool once `f` has read it.
        Ok(self.next_message()?.map(|m| f(&Buffer::from(m))))
    }

    /// Takes the next whole message off the bytes read so far, if they hold one.
    ///
    /// # Errors
    /// `FrameTooLarge` for a frame (or an announced message) over the limit, `Protocol` for a
    /// malformed header or a message not as long as it announced. The stream is then unusable:
    /// what was read is dropped.
    pub(crate) fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(m) = self.held.take() {
            return Ok(Some(m));
        }
        let result = self.decode();
        if result.is_err() {
            self.buf = Vec::new();
            self.pos = 0;
            self.msg = Vec::new();
            self.partial = false;
            self.in_frame = false;
            self.frame_left = 0;
            self.announced = None;
        }
        result
    }

    fn decode(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if !self.in_frame && !self.start_frame()? {
                return Ok(None);
            }
            let take = self.frame_left.min(self.buf.len() - self.pos);
            self.msg
                .extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            self.frame_left -= take;
            if self.frame_left > 0 {
                return Ok(None);
            }
            self.in_frame = false;
            if !self.more {
                self.partial = false;
                if self
                    .announced
                    .take()
                    .is_some_and(|total| total != self.msg.len())
                {
                    return Err(Error::Protocol(
                        "a message was not as long as its first frame announced".into(),
                    ));
                }
                return Ok(Some(std::mem::take(&mut self.msg)));
            }
        }
    }

    /// Decodes the next frame header if it has arrived whole; `false` if not yet.
    fn start_frame(&mut self) -> Result<bool> {
        let avail = self.avail();
        if avail.len() < 4 {
            return Ok(false);
        }
        let h = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
        let len = (h & !(MORE | TOTAL)) as usize;
        if len > self.max_frame {
            return Err(Error::FrameTooLarge {
                size: len,
                limit: self.max_frame,
            });
        }
        let mut header = 4;
        if h & TOTAL != 0 {
            if self.partial || h & MORE == 0 {
                return Err(Error::Protocol("malformed frame header".into()));
            }
            if avail.len() < LONG_HEADER {
                return Ok(false);
            }
            let mut total = [0u8; 8];
            total.copy_from_slice(&avail[4..LONG_HEADER]);
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
            self.msg = buffers::take(total.min(1 << 30));
            self.announced = Some(total);
            header = LONG_HEADER;
        }
        let total = self.msg.len().saturating_add(len);
        if total > self.max_message {
            return Err(Error::FrameTooLarge {
                size: total,
                limit: self.max_message,
            });
        }
        if self.msg.capacity() == 0 {
            self.msg = buffers::take(len);
        } else {
            self.msg.reserve(len);
        }
        self.pos += header;
        self.in_frame = true;
        self.partial = true;
        self.more = h & MORE != 0;
        self.frame_left = len;
        Ok(true)
    }

    /// What `recv` reports once the stream has ended.
    pub(crate) fn end_error(&self) -> Error {
        if self.mid_message() {
            Error::Protocol("the connection closed in the middle of a message".into())
        } else {
            Error::Closed
        }
    }

    /// The bytes read ahead (with a message put back, framed again), for whoever reads the
    /// stream next (another process, or a reader of another kind); `None` in the middle of a
    /// message.
    pub(crate) fn leftover(&self, max_frame: usize) -> Option<Vec<u8>> {
        if self.partial {
            return None;
        }
        let mut out = Vec::new();
        if let Some(m) = &self.held {
            append_frames(&mut out, m, max_frame);
        }
        out.extend_from_slice(self.avail());
        Some(out)
    }
}

/// Reads frames from a stream and reassembles messages, through a [`Decoder`].
pub(crate) struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            decoder: Decoder::new(Vec::new(), READ_BUF_SIZE, max_frame),
        }
    }

    /// A reader that first decodes `leftover`: bytes a handshake read past its end.
    pub(crate) fn with_leftover(inner: R, leftover: Vec<u8>, max_frame: usize) -> Self {
        FrameReader {
            inner,
            decoder: Decoder::new(leftover, READ_BUF_SIZE, max_frame),
        }
    }

    /// Changes the frame limit (the handshake runs with a tiny one).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.decoder.set_max_frame(max_frame);
    }

    /// Bounds the size of a whole (multi-frame) message.
    pub(crate) fn set_max_message(&mut self, max_message: usize) {
        self.decoder.set_max_message(max_message);
    }

    /// The stream beneath.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Whether bytes past the last message were read already (the next message, or its start).
    pub(crate) fn has_buffered(&self) -> bool {
        self.decoder.has_buffered()
    }

    /// The stream and the bytes read from it ahead of the last message (a caller that goes on
    /// reading the stream by other means must consume those first).
    ///
    /// # Errors
    /// `Protocol` in the middle of a message.
    pub(crate) fn into_parts(self) -> Result<(R, Vec<u8>)> {
        let leftover = self.decoder.leftover(HEADER_MAX).ok_or_else(|| {
            Error::Protocol("the stream was handed over in the middle of a message".into())
        })?;
        Ok((self.inner, leftover))
    }

    /// Reads one whole message. `Ok(None)` is a clean end of stream between messages.
    ///
    /// # Errors
    /// `FrameTooLarge` for a frame over the limit, `Protocol` for a stream cut mid-message, `Io`.
    ///
    /// # Cancel safety
    /// Cancel-safe: what was read stays in the reader, and the next call goes on from there.
    pub(crate) async fn read_message(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            let (space, limit) = self.decoder.read_space();
            let n = if limit == usize::MAX {
                self.inner.read_buf(space).await?
            } else {
                (&mut self.inner).take(limit as u64).read_buf(space).await?
            };
            if n == 0 {
                // End of stream between messages is the peer's clean close.
                if self.decoder.mid_message() {
                    return Err(self.decoder.end_error());
                }
                return Ok(None);
            }
            self.decoder.filled(n);
        }
    }
}

/// Whether a reader looks for its next message for a moment before it parks (see
/// [`FrameReader::read_message_spin`]), and what it learned from the last wait.
#[derive(Debug)]
pub(crate) struct Spin {
    /// The last message came soon after the one before: the next probably will too.
    quick: bool,
    /// How long to look; zero turns spinning off.
    window: std::time::Duration,
    /// When a spin was last preempted: no spinning for [`Spin::BACKOFF`] after.
    backoff: Option<std::time::Instant>,
}

/// How many times the kernel took a CPU from a thread of this process for another thread
/// (`ru_nivcsw`; of the whole process, as a task may move between a runtime's threads).
fn involuntary_switches() -> i64 {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct; `getrusage` only
    // writes into the one we pass, and `RUSAGE_SELF` is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: see above; `usage` outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return -1;
    }
    usage.ru_nivcsw
}

impl Default for Spin {
    fn default() -> Self {
        Spin {
            quick: true,
            window: spin_window(),
            backoff: None,
        }
    }
}

impl Spin {
    /// A wait for a message shorter than this makes the next read spin first. A wake-up of a
    /// parked thread on an idle vCPU costs 30-70 us on the small VMs this was measured on; a
    /// peer in a call-and-answer exchange answers in well under this.
    const QUICK: std::time::Duration = std::time::Duration::from_micros(150);
    /// How long a reader parks at once after a spin that was preempted.
    const BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

    /// Says that no message is due soon (the peer is not waiting on us): the next read parks at
    /// once.
    pub(crate) fn idle(&mut self) {
        self.quick = false;
    }
}

/// The spin window: `MULTIPROCESSING_SPIN_US` microseconds (0 turns spinning off), default 50.
/// Read once per process.
fn spin_window() -> std::time::Duration {
    static WINDOW: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        let us = std::env::var("MULTIPROCESSING_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(50);
        std::time::Duration::from_micros(us)
    })
}

impl FrameReader<super::socket::RecvHalf> {
    /// As [`read_message`](Self::read_message), but when messages have been coming quickly,
    /// first looks for the next one for up to the spin window (`MULTIPROCESSING_SPIN_US`,
    /// default 50 us) before parking in the runtime's poller. Between looks the task yields, so
    /// the other tasks of this thread (the one that will send our next request or answer) run
    /// meanwhile. Parking and being woken costs a sleeping vCPU tens of microseconds; a
    /// call-and-answer exchange between two processes pays it twice per round trip unless the
    /// waiting side is still awake. The cost: while a connection is busy, a thread stays busy
    /// for up to one window after its last message.
    ///
    /// # Errors
    /// As [`read_message`](Self::read_message).
    ///
    /// # Cancel safety
    /// Cancel-safe: what was read stays in the reader.
    pub(crate) async fn read_message_spin(&mut self, spin: &mut Spin) -> Result<Option<Vec<u8>>> {
        if let Some(message) = self.decoder.next_message()? {
            spin.quick = true;
            return Ok(Some(message));
        }
        if spin.quick
            && !spin.window.is_zero()
            && spin.backoff.is_none_or(|t| t.elapsed() >= Spin::BACKOFF)
        {
            let preempted = involuntary_switches();
            let until = std::time::Instant::now() + spin.window;
            let caught = loop {
                let (space, limit) = self.decoder.read_space();
                match self.inner.try_read_buf(space, limit, true) {
                    Ok(0) => {
                        if self.decoder.mid_message() {
                            return Err(self.decoder.end_error());
                        }
                        return Ok(None);
                    }
                    Ok(n) => {
                        self.decoder.filled(n);
                        match self.decoder.next_message() {
                            Ok(Some(message)) => break Some(Ok(Some(message))),
                            Ok(None) => continue,
                            Err(e) => break Some(Err(e)),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // Errors are the plain read's to report.
                    Err(_) => break None,
                }
                if std::time::Instant::now() >= until {
                    break None;
                }
                tokio::task::yield_now().await;
            };
            // Another thread wanted this CPU while we spun: the machine has no idle CPU, where
            // a wake-up is cheap and spinning only takes time from the peer. Park for a while.
            spin.backoff = (involuntary_switches() != preempted).then(std::time::Instant::now);
            if let Some(result) = caught {
                return result;
            }
        }
        let parked = std::time::Instant::now();
        let message = self.read_message().await;
        spin.quick = parked.elapsed() < Spin::QUICK;
        message
    }
}

/// Appends `payload` to `out` as one message: frames of at most `max_frame` bytes.
pub(crate) fn append_frames(out: &mut Vec<u8>, payload: &[u8], max_frame: usize) {
    let mut cursor = FrameCursor::new(payload, max_frame);
    cursor.append_rest(out);
}

/// Walks one outgoing message frame by frame, remembering how much has been written: a writer
/// that could not write everything at once goes on from the same byte later.
#[derive(Debug)]
pub(crate) struct FrameCursor<'a> {
    payload: &'a [u8],
    max_frame: usize,
    /// Where the current frame starts in `payload`.
    start: usize,
    /// Header bytes of the current frame written.
    head: usize,
    /// Payload bytes of the current frame written.
    off: usize,
    done: bool,
}

impl<'a> FrameCursor<'a> {
    pub(crate) fn new(payload: &'a [u8], max_frame: usize) -> Self {
        FrameCursor {
            payload,
            max_frame: max_frame.clamp(1, HEADER_MAX),
            start: 0,
            head: 0,
            off: 0,
            done: false,
        }
    }

    fn frame_len(&self) -> usize {
        (self.payload.len() - self.start).min(self.max_frame)
    }

    /// The header of the current frame (to pass to [`FrameCursor::current`]).
    pub(crate) fn head(&self) -> Header {
        let len = self.frame_len();
        let more = self.start + len < self.payload.len();
        let total = (self.start == 0 && more).then_some(self.payload.len());
        Header::new(len, more, total)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The unwritten part of the current frame: its header's tail and its payload's.
    pub(crate) fn current<'h>(&self, head: &'h Header) -> [IoSlice<'h>; 2]
    where
        'a: 'h,
    {
        let len = self.frame_len();
        [
            IoSlice::new(&head.as_bytes()[self.head..]),
            IoSlice::new(&self.payload[self.start + self.off..self.start + len]),
        ]
    }

    /// Counts `n` more bytes written.
    pub(crate) fn advance(&mut self, mut n: usize) {
        let mut head_len = self.head().len;
        while n > 0 || (!self.done && self.head == head_len && self.off == self.frame_len()) {
            let h = n.min(head_len - self.head);
            self.head += h;
            n -= h;
            let b = n.min(self.frame_len() - self.off);
            self.off += b;
            n -= b;
            if self.head == head_len && self.off == self.frame_len() {
                let end = self.start + self.frame_len();
                if end == self.payload.len() {
                    self.done = true;
                    return;
                }
                self.start = end;
                self.head = 0;
                self.off = 0;
                head_len = self.head().len;
            }
        }
    }

    /// Appends everything not yet written, frames and headers included.
    pub(crate) fn append_rest(&mut self, out: &mut Vec<u8>) {
        while !self.done {
            let head = self.head();
            let [h, b] = self.current(&head);
            let n = h.len() + b.len();
            out.extend_from_slice(&h);
            out.extend_from_slice(&b);
            self.advance(n);
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
    ///
    /// # Cancel safety
    /// Not cancel-safe: a cancelled write leaves part of a message in the buffer. Writers are
    /// owned by one task (or locked for a whole message).
    pub(crate) async fn write_message(&mut self, parts: &[&[u8]]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut remaining = total;
        let mut parts = parts.iter().map(|p| &p[..]).filter(|p| !p.is_empty());
        let mut current: &[u8] = parts.next().unwrap_or(&[]);
        let mut first = true;
        loop {
            let len = remaining.min(self.max_frame);
            remaining -= len;
            let more = remaining > 0;
            let header = Header::new(len, more, (first && more).then_some(total));
            self.inner.write_all(header.as_bytes()).await?;
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

    /// Hands `bytes` to `d` as reads would.
    fn feed(d: &mut Decoder, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (space, limit) = d.read_space();
            let n = bytes.len().min(limit).min(space.capacity() - space.len());
            space.extend_from_slice(&bytes[..n]);
            d.filled(n);
            bytes = &bytes[n..];
        }
    }

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

    /// A reader and a writer over a real socket pair, as the hub and actors use.
    fn socket_pair(
        max_frame: usize,
    ) -> (
        FrameReader<super::super::socket::RecvHalf>,
        std::os::unix::net::UnixStream,
    ) {
        use super::super::socket::{Flavor, Socket};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (recv, _send) = Socket::new(ours.into(), Flavor::Local)
            .unwrap()
            .into_halves();
        (FrameReader::new(recv, max_frame), theirs)
    }

    #[tokio::test]
    async fn a_spinning_read_gets_what_a_parked_one_gets() {
        use std::io::Write;
        let (mut r, mut peer) = socket_pair(1000);
        let mut spin = Spin::default();
        // Arrives while spinning (written by another thread a moment later), then after the
        // spin gave up and parked, then a message of several frames, then a clean end.
        let mut bytes = Vec::new();
        append_frames(&mut bytes, b"first", 1000);
        append_frames(&mut bytes, b"second", 1000);
        append_frames(&mut bytes, &[7u8; 2500], 1000);
        let writer = std::thread::spawn(move || {
            peer.write_all(&bytes[..9]).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(20));
            peer.write_all(&bytes[9..20]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
            peer.write_all(&bytes[20..]).unwrap();
        });
        assert_eq!(
            r.read_message_spin(&mut spin).await.unwrap().unwrap(),
            b"first"
        );
        assert_eq!(
            r.read_message_spin(&mut spin).await.unwrap().unwrap(),
            b"second"
        );
        spin.idle();
        assert_eq!(
            r.read_message_spin(&mut spin).await.unwrap().unwrap(),
            vec![7u8; 2500]
        );
        writer.join().unwrap();
        assert!(r.read_message_spin(&mut spin).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_spinning_read_reports_a_stream_cut_mid_message() {
        use std::io::Write;
        let (mut r, mut peer) = socket_pair(1000);
        let mut spin = Spin::default();
        let mut bytes = Vec::new();
        append_frames(&mut bytes, &[1u8; 100], 1000);
        peer.write_all(&bytes[..50]).unwrap();
        drop(peer);
        assert!(r.read_message_spin(&mut spin).await.is_err());
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(b, 1 << 20);
        let mut bytes = Vec::new();
        append_frames(&mut bytes, &[5u8; 3000], 1000);
        a.write_all(&bytes[..1500]).await.unwrap();
        let cut = tokio::time::timeout(std::time::Duration::from_millis(20), r.read_message());
        assert!(cut.await.is_err(), "the message is not whole yet");
        a.write_all(&bytes[1500..]).await.unwrap();
        assert_eq!(r.read_message().await.unwrap().unwrap(), vec![5u8; 3000]);
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

    #[test]
    fn cursor_walks_frames_and_resumes_anywhere() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(2500).collect();
        let mut whole = Vec::new();
        append_frames(&mut whole, &payload, 1000);
        // Three headers, the first with the total.
        assert_eq!(whole.len(), 2500 + 3 * 4 + 8);
        for step in [1, 3, 7, 999, 1004, 5000] {
            let mut cursor = FrameCursor::new(&payload, 1000);
            let mut out = Vec::new();
            while !cursor.is_done() {
                let head = cursor.head();
                let [h, b] = cursor.current(&head);
                let mut chunk = h.to_vec();
                chunk.extend_from_slice(&b);
                let n = chunk.len().min(step);
                out.extend_from_slice(&chunk[..n]);
                cursor.advance(n);
                if step == 7 && out.len() > 1500 && !cursor.is_done() {
                    cursor.append_rest(&mut out);
                }
            }
            assert_eq!(out, whole, "step {step}");
        }
        let mut empty = Vec::new();
        append_frames(&mut empty, &[], 1000);
        assert_eq!(empty, vec![0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn the_cursor_and_the_writer_write_the_same_bytes() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(2500).collect();
        let mut cursor = Vec::new();
        append_frames(&mut cursor, &payload, 1000);
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a, 1000);
        w.write_message(&[&payload[..10], &payload[10..]])
            .await
            .unwrap();
        w.flush().await.unwrap();
        drop(w);
        let mut written = Vec::new();
        b.read_to_end(&mut written).await.unwrap();
        assert_eq!(written, cursor);
    }

    #[test]
    fn decoder_reassembles_peeks_and_puts_back() {
        let mut bytes = Vec::new();
        append_frames(&mut bytes, b"hello", 1000);
        append_frames(&mut bytes, &[7u8; 2500], 1000);
        let mut d = Decoder::new(bytes[..3].to_vec(), 64, 1000);
        assert!(d.next_message().unwrap().is_none());
        feed(&mut d, &bytes[3..]);
        assert_eq!(d.with_next(|m| m.to_vec()).unwrap().unwrap(), b"hello");
        let big = d.next_message().unwrap().unwrap();
        assert_eq!(big, vec![7u8; 2500]);
        d.put_back(big);
        assert!(d.has_buffered());
        let mut again = d.leftover(1000).unwrap();
        assert_eq!(d.next_message().unwrap().unwrap(), vec![7u8; 2500]);
        assert!(d.next_message().unwrap().is_none());
        assert!(!d.mid_message());
        assert!(d.leftover(1000).unwrap().is_empty());
        // The put-back message, framed again, reads as it was.
        let mut fresh = Decoder::new(std::mem::take(&mut again), 64, 1000);
        assert_eq!(fresh.next_message().unwrap().unwrap(), vec![7u8; 2500]);
    }

    #[test]
    fn decoder_refuses_an_oversize_frame() {
        let mut bytes = Vec::new();
        append_frames(&mut bytes, &[0u8; 2000], 5000);
        let mut d = Decoder::new(bytes, 64, 1000);
        assert!(matches!(
            d.next_message(),
            Err(Error::FrameTooLarge {
                size: 2000,
                limit: 1000
            })
        ));
    }

    #[test]
    fn a_single_frame_value_round_trips_blocking() {
        let framed = encode_single(&(7u32, "seven".to_string()), "a test value").unwrap();
        let mut reader = &framed[..];
        let got: Option<(u32, String)> = read_single_blocking(&mut reader, 1 << 20);
        assert_eq!(got, Some((7, "seven".into())));
        let mut reader = &framed[..];
        assert!(read_single_blocking::<(u32, String)>(&mut reader, 2).is_none());
    }
}
