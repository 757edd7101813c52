//! The encoding of user values (arguments, results, queue items, values sent on a
//! `Connection`, manager keys and values): postcard's wire format, byte for byte, written and
//! read by an encoder and decoder of our own that move runs of plain numbers in one piece.
//!
//! # Why our own
//! serde hands a sequence to an encoder one element at a time, so postcard writes a `Vec<u8>`
//! byte by byte and reads it back through one visitor call per byte: about 1 GB/s each way,
//! which made a 100 MiB `Vec<u8>` argument slower to move to a pool worker than Python's
//! pickled `bytes`. `serde_bytes` fixes that only for users who know to ask. This codec
//! recognises a `Vec<T>` or `[T]` of a plain number type (see [below](#the-fast-paths)) and
//! copies it whole, with no change to the user's types and no change on the wire.
//!
//! # Wire format (codec version [`VERSION`])
//! The format is postcard 1.x's, so any value this codec writes reads back with
//! `postcard::from_bytes` and the other way round (the hub's manager objects read integers
//! written here with postcard; `tests` in this module check the bytes for many types):
//! - `bool` one byte, 0 or 1; `u8`/`i8` one byte; `f32`/`f64` their little-endian bytes.
//! - Other integers as varints (LEB128: 7 bits a byte, low first, high bit set on all bytes but
//!   the last; at most 3/5/10/19 bytes for 16/32/64/128 bits, and the last byte may not carry
//!   bits past the width). Signed integers are zigzagged first (0, -1, 1, -2 … → 0, 1, 2, 3 …).
//!   `usize`/`isize` as 64-bit.
//! - `char` and strings: the UTF-8 length as a varint, then the bytes. Byte strings likewise.
//! - `Option`: 0 for `None`, 1 and the value for `Some`.
//! - Sequences and maps: the number of items as a varint, then the items (a map's as key,
//!   value, key, value …); the length must be known up front. Tuples, arrays and structs: their
//!   fields in order, no length. Unit and unit structs: nothing. Newtypes: their content.
//! - Enum variants: the variant's index as a varint, then its content as above.
//!
//! No self-description: the reader must know the type (`deserialize_any` is refused). The
//! format belongs to the wire protocol: a change to it is a change of
//! `protocol::PROTOCOL_VERSION`, and [`VERSION`] names which one this module writes.
//!
//! # The fast paths
//! - Encoding: serde's `Serialize` for `Vec<T>`, `[T]` (and so `Box<[T]>`, `&[T]`) calls
//!   `collect_seq` with a reference to the vector or slice. When that reference's type is one of
//!   those over a plain `T` (`u8`, `i8`, `bool`, `u16`…`u128`, `i16`…`i128`, `usize`, `isize`,
//!   `f32`, `f64`), the encoder takes the slice and writes it in one loop: one `memcpy` for the
//!   one-byte and float types (on little-endian targets), a tight varint loop for the others.
//!   The bytes are those of the element-by-element path: `collect_seq`'s result depends only on
//!   the items.
//! - Decoding: `Vec<T>`'s `Deserialize` asks for a sequence with serde's own vector visitor.
//!   When the visitor is that one (its type name) and builds a `Vec<T>` of a plain `T` (its
//!   value's type), the decoder builds the vector itself: a bounds check and one copy for the
//!   one-byte and float types, a tight varint loop for the others. A visitor of a user's own
//!   that happens to build a `Vec<u8>` from some other layout is not that visitor, so it is
//!   served element by element as before.
//!
//! Types are compared with `typeid::of`, which is `TypeId::of` without the `'static` bound (it
//! ignores lifetimes, which do not change a type's layout).
//!
//! Strings and `serde_bytes` byte strings were already written and read in one piece.

mod de;
mod plain;
mod ser;

use std::fmt;

pub(crate) use de::Decoder;
pub(crate) use ser::Encoder;

/// The version of the wire format this module writes: postcard 1.x's.
pub(crate) const VERSION: u32 = 1;

/// Why a value did not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodecError {
    /// The input ended in the middle of a value.
    End,
    /// A varint longer than its type allows, or with bits past its width.
    BadVarint,
    /// A `bool` byte other than 0 or 1.
    BadBool,
    /// A `char` that is not one UTF-8 character.
    BadChar,
    /// A string that is not UTF-8.
    BadUtf8,
    /// An `Option` tag other than 0 or 1.
    BadOption,
    /// A sequence or map whose length was not known before its items (an iterator without
    /// an exact size hint).
    LengthUnknown,
    /// A type that asks the decoder what comes next (`deserialize_any`, `#[serde(flatten)]`,
    /// untagged enums, skipped unknown fields): the format does not describe itself.
    NotSelfDescribing,
    /// A `Serialize` or `Deserialize` impl failed with this message.
    Custom(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecError::End => "the input ended in the middle of a value (do both sides agree on the type?)",
            CodecError::BadVarint => "an integer's encoding is too long for its type",
            CodecError::BadBool => "a bool's byte is neither 0 nor 1",
            CodecError::BadChar => "a char's bytes are not one UTF-8 character",
            CodecError::BadUtf8 => "a string's bytes are not UTF-8",
            CodecError::BadOption => "an Option's tag is neither 0 nor 1",
            CodecError::LengthUnknown => {
                "a sequence or map has no known length (collect it into a Vec or map first)"
            }
            CodecError::NotSelfDescribing => {
                "the type needs a self-describing format (deserialize_any: #[serde(flatten)], untagged enums or skipped fields), which this binary format is not"
            }
            CodecError::Custom(message) => message,
        })
    }
}

impl std::error::Error for CodecError {}

impl serde::ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Custom(msg.to_string())
    }
}

impl serde::de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Custom(msg.to_string())
    }
}

/// The codec's result.
pub(crate) type Result<T> = std::result::Result<T, CodecError>;

/// Encodes `value` after the bytes already in `buf` (a header's room, say).
///
/// # Errors
/// What the value's `Serialize` impl reports, or [`CodecError::LengthUnknown`].
pub(crate) fn encode_onto<T: serde::Serialize + ?Sized>(
    value: &T,
    buf: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut encoder = Encoder::from_vec(buf);
    value.serialize(&mut encoder)?;
    Ok(encoder.into_vec())
}

/// Encodes `value` into a fresh buffer.
///
/// # Errors
/// As [`encode_onto`].
#[cfg(test)]
pub(crate) fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    encode_onto(value, Vec::new())
}

/// Decodes a `T` from the front of `bytes`; returns it and the bytes after it.
///
/// # Errors
/// What the type's `Deserialize` impl reports, or a [`CodecError`] for malformed input.
pub(crate) fn take_from_bytes<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, &'de [u8])> {
    let mut decoder = Decoder::new(bytes);
    let value = T::deserialize(&mut decoder)?;
    Ok((value, decoder.rest()))
}

/// Decodes a `T` from the front of `bytes`, ignoring any bytes after it (as
/// `postcard::from_bytes` does).
///
/// # Errors
/// As [`take_from_bytes`].
pub(crate) fn from_bytes<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    take_from_bytes(bytes).map(|(value, _)| value)
}

#[cfg(test)]
mod tests;
