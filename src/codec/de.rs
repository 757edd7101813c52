//! The decoder: a `serde::Deserializer` reading postcard's format from a byte slice, with
//! serde's own `Vec<T>` of plain numbers built in one piece (see [`super::plain`]).

use super::plain::{self, unzigzag};
use super::{CodecError, Result};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Reads values from the front of a byte slice.
#[derive(Debug)]
pub(crate) struct Decoder<'de> {
    input: &'de [u8],
}

impl<'de> Decoder<'de> {
    /// A decoder at the start of `input`.
    pub(crate) fn new(input: &'de [u8]) -> Self {
        Decoder { input }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'de [u8] {
        self.input
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(CodecError::End);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    #[inline]
    fn pop(&mut self) -> Result<u8> {
        let (&first, rest) = self.input.split_first().ok_or(CodecError::End)?;
        self.input = rest;
        Ok(first)
    }

    /// Reads a varint of a `bits`-wide unsigned integer (at most 64), refusing one longer than
    /// the width allows or whose last byte carries bits past it, as postcard does.
    #[inline]
    pub(super) fn varint(&mut self, bits: u32) -> Result<u64> {
        let max_bytes = bits.div_ceil(7);
        let last_max = (1u16 << (bits % 7)) as u8 - 1;
        let mut out = 0u64;
        for i in 0..max_bytes {
            let byte = self.pop()?;
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_bytes - 1 && byte > last_max {
                    return Err(CodecError::BadVarint);
                }
                return Ok(out);
            }
        }
        Err(CodecError::BadVarint)
    }

    /// Reads a varint of a `u128`.
    pub(super) fn varint_u128(&mut self) -> Result<u128> {
        let mut out = 0u128;
        for i in 0..19 {
            let byte = self.pop()?;
            out |= u128::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 18 && byte > 0x03 {
                    return Err(CodecError::BadVarint);
                }
                return Ok(out);
            }
        }
        Err(CodecError::BadVarint)
    }

    /// Reads a length (or a `usize`).
    #[inline]
    pub(super) fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint(64)?).map_err(|_| CodecError::BadVarint)
    }

    fn string(&mut self) -> Result<&'de str> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| CodecError::BadUtf8)
    }
}

impl<'de> plain::Source<'de> for Decoder<'de> {
    fn rest(&self) -> &'de [u8] {
        Decoder::rest(self)
    }
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        Decoder::take(self, n)
    }
    fn varint(&mut self, bits: u32) -> Result<u64> {
        Decoder::varint(self, bits)
    }
    fn varint_u128(&mut self) -> Result<u128> {
        Decoder::varint_u128(self)
    }
    fn len(&mut self) -> Result<usize> {
        Decoder::len(self)
    }
}

/// Reads a signed integer of `bits` (zigzagged varint).
macro_rules! signed {
    ($method:ident, $visit:ident, $ty:ty, $bits:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // The varint check bounds the zigzagged value to `$bits`, so the result fits.
            visitor.$visit(unzigzag(self.varint($bits)?) as $ty)
        }
    };
}

/// Reads an unsigned integer of `bits` (varint).
macro_rules! unsigned {
    ($method:ident, $visit:ident, $ty:ty, $bits:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // The varint check bounds the value to `$bits`, so the cast keeps it whole.
            visitor.$visit(self.varint($bits)? as $ty)
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.pop()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(CodecError::BadBool),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.pop()? as i8)
    }

    signed!(deserialize_i16, visit_i16, i16, 16);
    signed!(deserialize_i32, visit_i32, i32, 32);
    signed!(deserialize_i64, visit_i64, i64, 64);

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.varint_u128()?;
        visitor.visit_i128(((n >> 1) as i128) ^ -((n & 1) as i128))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.pop()?)
    }

    unsigned!(deserialize_u16, visit_u16, u16, 16);
    unsigned!(deserialize_u32, visit_u32, u32, 32);
    unsigned!(deserialize_u64, visit_u64, u64, 64);

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(self.varint_u128()?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.take(4)?;
        let mut buf = [0u8; 4];
        buf.copy_from_slice(bytes);
        visitor.visit_f32(f32::from_le_bytes(buf))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.take(8)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(bytes);
        visitor.visit_f64(f64::from_le_bytes(buf))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        if len > 4 {
            return Err(CodecError::BadChar);
        }
        let text = std::str::from_utf8(self.take(len)?).map_err(|_| CodecError::BadChar)?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(CodecError::BadChar),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.string()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_str(self.string()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        visitor.visit_bytes(self.take(len)?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.pop()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => Err(CodecError::BadOption),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    /// serde's own `Vec<T>` of a plain `T` in one piece; any other sequence item by item.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if let Some(value) = plain::decode::<V, _>(self) {
            return value;
        }
        let len = self.len()?;
        visitor.visit_seq(Items { de: self, len })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Items { de: self, len })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        visitor.visit_map(Items { de: self, len })
    }

    /// As a tuple: the fields in order, without their names.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }
}

/// The items of a sequence, tuple, struct or map: `len` of them (pairs, for a map).
struct Items<'a, 'de> {
    de: &'a mut Decoder<'de>,
    len: usize,
}

impl<'de> Items<'_, 'de> {
    /// The next item (or key), or `None` after the last.
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    /// No hint when fewer bytes are left than items claimed (each takes at least one, unless
    /// it is empty): a forged length must not make the visitor allocate for it.
    fn hint(&self) -> Option<usize> {
        (self.len <= self.de.input.len()).then_some(self.len)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        self.next(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        self.next(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        // The varint check bounds the index to 32 bits.
        let index = self.varint(32)? as u32;
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Items { de: self, len })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.tuple_variant(fields.len(), visitor)
    }
}
