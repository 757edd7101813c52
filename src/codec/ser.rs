//! The encoder: a `serde::Serializer` writing postcard's format into a growing buffer, with
//! `collect_seq` taking plain slices whole (see [`super::plain`]).

use super::plain::{self, zigzag};
use super::{CodecError, Result};
use crate::buffers::Buffer;
use serde::ser::{self, Serialize};

/// Appends `$v` as LEB128 (7 bits a byte, low first, the high bit set on all but the last)
/// through a stack buffer of `$max` bytes.
macro_rules! leb128 {
    ($encoder:ident, $v:ident, $max:expr) => {{
        let mut v = $v;
        let mut buf = [0u8; $max];
        let mut n = 0;
        while v >= 0x80 {
            buf[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        $encoder.extend(&buf[..=n]);
    }};
}

/// Writes values into a buffer. Large buffers come from (and go back to) the crate's buffer
/// pool, so encoding a big value does not fault in fresh pages each time.
#[derive(Debug)]
pub(crate) struct Encoder {
    out: Buffer,
}

impl Encoder {
    /// An encoder whose buffer starts with room for about `capacity` bytes (a kept one when
    /// large enough).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Encoder {
            out: Buffer::take(capacity),
        }
    }

    /// An encoder writing after the bytes already in `buf`.
    pub(crate) fn from_vec(buf: Vec<u8>) -> Self {
        Encoder {
            out: Buffer::from(buf),
        }
    }

    /// The bytes written (including any `from_vec` started with).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.out.into_vec()
    }

    /// Makes room for `extra` more bytes. For a large piece (a blob), the buffer comes from
    /// [`Buffer::take`], kept or fresh with huge pages, and at least doubles, so that many
    /// large pieces cost linear copying; the old one goes back to the pool as it is dropped.
    /// Anything else grows the vector as usual, whose `realloc` of a large buffer moves its
    /// pages rather than copying and faulting them in again.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, extra: usize) {
        if extra >= crate::buffers::MIN_LEN {
            let want = (self.out.len() + extra).max(2 * self.out.capacity());
            let mut bigger = Buffer::take(want);
            bigger.extend_from_slice(&self.out);
            self.out = bigger;
        } else {
            self.out.reserve(extra);
        }
    }

    /// Makes sure `extra` more bytes fit without another allocation.
    #[inline]
    pub(super) fn reserve(&mut self, extra: usize) {
        if self.out.capacity() - self.out.len() < extra {
            self.grow(extra);
        }
    }

    #[inline]
    pub(super) fn push(&mut self, byte: u8) {
        self.reserve(1);
        self.out.push(byte);
    }

    /// Appends `data`: small pieces (varints, most calls) byte by byte into room already made,
    /// which beats a call into `memcpy` for a few bytes; large ones with one copy.
    #[inline]
    pub(super) fn extend(&mut self, data: &[u8]) {
        self.reserve(data.len());
        if data.len() <= 16 {
            for &byte in data {
                self.out.push(byte);
            }
        } else {
            self.out.extend_from_slice(data);
        }
    }

    /// Writes `v` as a varint.
    #[inline]
    pub(super) fn varint(&mut self, v: u64) {
        leb128!(self, v, 10);
    }

    /// Writes `v` as a varint of up to 19 bytes.
    pub(super) fn varint_u128(&mut self, v: u128) {
        leb128!(self, v, 19);
    }

    /// Writes a length (or a `usize`).
    #[inline]
    pub(super) fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }
}

impl plain::Sink for Encoder {
    fn reserve(&mut self, extra: usize) {
        Encoder::reserve(self, extra);
    }
    fn push(&mut self, byte: u8) {
        Encoder::push(self, byte);
    }
    fn extend(&mut self, data: &[u8]) {
        Encoder::extend(self, data);
    }
    fn varint(&mut self, v: u64) {
        Encoder::varint(self, v);
    }
    fn varint_u128(&mut self, v: u128) {
        Encoder::varint_u128(self, v);
    }
    fn len(&mut self, n: usize) {
        Encoder::len(self, n);
    }
}

impl ser::Serializer for &mut Encoder {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.push(v as u8);
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<()> {
        self.push(v as u8);
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<()> {
        self.varint(zigzag(v.into()));
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<()> {
        self.varint(zigzag(v.into()));
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<()> {
        self.varint(zigzag(v));
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        self.varint_u128(((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<()> {
        self.push(v);
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<()> {
        self.varint(v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<()> {
        self.varint(v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<()> {
        self.varint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        self.varint_u128(v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<()> {
        self.extend(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<()> {
        self.extend(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0u8; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len(v.len());
        self.extend(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<()> {
        self.push(0);
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        self.push(1);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<()> {
        self.varint(index.into());
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.varint(index.into());
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(CodecError::LengthUnknown)?);
        Ok(self)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.varint(index.into());
        Ok(self)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(CodecError::LengthUnknown)?);
        Ok(self)
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    /// As a tuple variant: the index, then the fields without their names.
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self> {
        self.serialize_tuple_variant(name, index, variant, len)
    }

    /// A `Vec` or slice of plain numbers in one piece; anything else as serde's default does
    /// (length from an exact size hint, then each item).
    fn collect_seq<I>(self, iter: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if plain::encode(self, &iter) {
            return Ok(());
        }
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut seq = ser::Serializer::serialize_seq(&mut *self, len)?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        Ok(())
    }
}

/// The compound serializers: postcard writes no separators and no end markers, so each one
/// only encodes its parts in order.
macro_rules! compound {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Encoder {
            type Ok = ();
            type Error = CodecError;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for &mut Encoder {
    type Ok = ();
    type Error = CodecError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

/// The struct serializers: fields in order, names dropped.
macro_rules! fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Encoder {
            type Ok = ();
            type Error = CodecError;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                _name: &'static str,
                value: &T,
            ) -> Result<()> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);
