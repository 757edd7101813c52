//! The fast paths: a `Vec<T>` or `[T]` of a plain number type written and read in one loop
//! (one copy for the one-byte and float types) instead of one serde call per element. The bytes
//! are exactly those of the element-by-element path; see the module docs of [`super`].

use super::{CodecError, Result};
use std::any::TypeId;
use std::mem::ManuallyDrop;

/// What the fast paths write with: the encoder's primitive writes (`ser::Encoder` implements
/// it). A trait, so this file stands below the encoder and the decoder instead of between them.
pub(super) trait Sink {
    /// Makes room for `extra` more bytes.
    fn reserve(&mut self, extra: usize);
    /// Writes one byte.
    fn push(&mut self, byte: u8);
    /// Writes `data` as it is.
    fn extend(&mut self, data: &[u8]);
    /// Writes `v` as a varint.
    fn varint(&mut self, v: u64);
    /// Writes `v` as a varint of up to 128 bits.
    fn varint_u128(&mut self, v: u128);
    /// Writes a sequence's length.
    fn len(&mut self, n: usize);
}

/// What the fast paths read with: the decoder's primitive reads (`de::Decoder` implements it).
pub(super) trait Source<'de> {
    /// The bytes not read yet.
    fn rest(&self) -> &'de [u8];
    /// Takes the next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'de [u8]>;
    /// Reads a varint of at most `bits` bits.
    fn varint(&mut self, bits: u32) -> Result<u64>;
    /// Reads a varint of at most 128 bits.
    fn varint_u128(&mut self) -> Result<u128>;
    /// Reads a sequence's length.
    fn len(&mut self) -> Result<usize>;
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
#[inline]
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Undoes [`zigzag`].
#[inline]
pub(super) fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// A number type whose runs the codec moves in one piece.
trait Plain: Copy + 'static {
    /// Writes the items of `items` (the length is already written).
    fn write<S: Sink>(encoder: &mut S, items: &[Self]);

    /// Reads `len` items (the length is already read).
    fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>>;
}

/// A plain type every bit pattern of which is a valid value, so its memory may be filled
/// from bytes. Only the raw types below are.
trait AnyBits: Plain {}

/// Types stored as their little-endian bytes: one byte each, or floats. On a little-endian
/// target their memory is their encoding.
macro_rules! raw {
    ($($ty:ty),*) => {$(
        impl AnyBits for $ty {}

        impl Plain for $ty {
            fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
                if cfg!(target_endian = "little") {
                    encoder.extend(as_bytes(items));
                } else {
                    encoder.reserve(std::mem::size_of_val(items));
                    for item in items {
                        encoder.extend(&item.to_le_bytes());
                    }
                }
            }

            fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
                const SIZE: usize = std::mem::size_of::<$ty>();
                let bytes = decoder.take(len.checked_mul(SIZE).ok_or(CodecError::End)?)?;
                if cfg!(target_endian = "little") {
                    Ok(copy_raw(bytes, len))
                } else {
                    Ok(from_le_bytes::<$ty, SIZE>(bytes, <$ty>::from_le_bytes))
                }
            }
        }
    )*};
}

raw!(i8, f32, f64);

impl Plain for u8 {
    fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
        encoder.extend(items);
    }

    /// Into a buffer from the crate's pool (huge pages for a large one), with one copy.
    fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
        let bytes = decoder.take(len)?;
        let mut out = crate::buffers::take(len);
        out.extend_from_slice(bytes);
        Ok(out)
    }
}

/// Unsigned types written as varints of their width.
macro_rules! unsigned {
    ($($ty:ty),*) => {$(
        impl Plain for $ty {
            fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
                for &item in items {
                    encoder.varint(item as u64);
                }
            }

            fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
                // Each item takes a byte at least: a forged length fails before allocating.
                let mut out = Vec::with_capacity(len.min(decoder.rest().len()));
                for _ in 0..len {
                    // The varint check bounds the value to the width, so the cast keeps it.
                    out.push(decoder.varint(<$ty>::BITS)? as $ty);
                }
                Ok(out)
            }
        }
    )*};
}

unsigned!(u16, u32, u64, usize);

/// Signed types written as zigzagged varints of their width.
macro_rules! signed {
    ($($ty:ty),*) => {$(
        impl Plain for $ty {
            fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
                for &item in items {
                    encoder.varint(zigzag(item as i64));
                }
            }

            fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
                let mut out = Vec::with_capacity(len.min(decoder.rest().len()));
                for _ in 0..len {
                    out.push(unzigzag(decoder.varint(<$ty>::BITS)?) as $ty);
                }
                Ok(out)
            }
        }
    )*};
}

signed!(i16, i32, i64, isize);

impl Plain for bool {
    fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
        encoder.reserve(items.len());
        for &item in items {
            encoder.push(item as u8);
        }
    }

    fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
        decoder
            .take(len)?
            .iter()
            .map(|&byte| match byte {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(CodecError::BadBool),
            })
            .collect()
    }
}

impl Plain for u128 {
    fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
        for &item in items {
            encoder.varint_u128(item);
        }
    }

    fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
        let mut out = Vec::with_capacity(len.min(decoder.rest().len()));
        for _ in 0..len {
            out.push(decoder.varint_u128()?);
        }
        Ok(out)
    }
}

impl Plain for i128 {
    fn write<S: Sink>(encoder: &mut S, items: &[Self]) {
        for &item in items {
            encoder.varint_u128(((item << 1) ^ (item >> 127)) as u128);
        }
    }

    fn read<'de, D: Source<'de>>(decoder: &mut D, len: usize) -> Result<Vec<Self>> {
        let mut out = Vec::with_capacity(len.min(decoder.rest().len()));
        for _ in 0..len {
            let n = decoder.varint_u128()?;
            out.push(((n >> 1) as i128) ^ -((n & 1) as i128));
        }
        Ok(out)
    }
}

/// Calls `$then!(T)` for every plain type, in one place so both directions cover the same set.
macro_rules! each_plain {
    ($then:ident) => {
        $then!(u8);
        $then!(i8);
        $then!(f64);
        $then!(f32);
        $then!(u64);
        $then!(i64);
        $then!(u32);
        $then!(i32);
        $then!(u16);
        $then!(i16);
        $then!(usize);
        $then!(isize);
        $then!(u128);
        $then!(i128);
        $then!(bool);
    };
}

/// Writes the sequence `iter` in one piece if it is a `&Vec<T>` or `&[T]` of a plain `T` (what
/// serde's `Serialize` for `Vec<T>` and `[T]` pass to `collect_seq`); returns whether it did.
pub(super) fn encode<S: Sink, I>(encoder: &mut S, iter: &I) -> bool {
    macro_rules! try_type {
        ($ty:ty) => {
            if let Some(items) = slice_of::<I, $ty>(iter) {
                encoder.len(items.len());
                <$ty as Plain>::write(encoder, items);
                return true;
            }
        };
    }
    each_plain!(try_type);
    false
}

/// The slice `iter` refers to, if `I` is `&Vec<T>` or `&[T]`.
fn slice_of<'a, I, T: Plain>(iter: &'a I) -> Option<&'a [T]> {
    let id = typeid::of::<I>();
    if id == TypeId::of::<&'static Vec<T>>() {
        // SAFETY: `I` is `&'x Vec<T>` for some lifetime 'x: the type ids are equal, and
        // `typeid::of` differs from `TypeId::of` only in ignoring lifetimes. `&'a I` exists, so
        // 'x outlives 'a, and reading the reference as `&'a Vec<T>` only shortens it.
        let vec: &'a &'a Vec<T> = unsafe { &*(iter as *const I).cast::<&'a Vec<T>>() };
        return Some(vec.as_slice());
    }
    if id == TypeId::of::<&'static [T]>() {
        // SAFETY: as above, with `I` being `&'x [T]`.
        let slice: &'a &'a [T] = unsafe { &*(iter as *const I).cast::<&'a [T]>() };
        return Some(slice);
    }
    None
}

/// Builds the vector in one piece if `V` is serde's own visitor for a `Vec<T>` of a plain `T`;
/// `None` (nothing read) for any other visitor.
pub(super) fn decode<'de, V: serde::de::Visitor<'de>, D: Source<'de>>(
    decoder: &mut D,
) -> Option<Result<V::Value>> {
    if !is_serde_vec_visitor::<V>() {
        return None;
    }
    macro_rules! try_type {
        ($ty:ty) => {
            if typeid::of::<V::Value>() == TypeId::of::<Vec<$ty>>() {
                let read = decoder
                    .len()
                    .and_then(|len| <$ty as Plain>::read(decoder, len));
                // SAFETY: `V::Value` is `Vec<$ty>`: the ids are equal up to lifetimes, and
                // `Vec<$ty>` has none, so the types are the same.
                return Some(read.map(|vec| unsafe { same_type::<Vec<$ty>, V::Value>(vec) }));
            }
        };
    }
    each_plain!(try_type);
    None
}

/// Whether `V` is serde's visitor for `Vec<T>`: it reads a length and then exactly that many
/// `T`s, which is what the fast path does. Its type name is the only thing that tells it from
/// a user's visitor that also builds a `Vec`; a serde that renamed it would only lose speed.
fn is_serde_vec_visitor<V>() -> bool {
    is_serde_vec_visitor_name(std::any::type_name::<V>())
}

/// Whether a visitor's type name is that of serde's visitor for `Vec<T>`.
pub(super) fn is_serde_vec_visitor_name(name: &str) -> bool {
    name.starts_with("serde") && name.contains("::VecVisitor<")
}

/// Moves `value` into the type `U`, which is `T`.
///
/// # Safety
/// `T` and `U` must be the same type.
unsafe fn same_type<T, U>(value: T) -> U {
    let value = ManuallyDrop::new(value);
    // SAFETY: the caller promises `U` is `T`, so the read is of a valid `U`; `value` is not
    // dropped, so ownership moves once.
    unsafe { std::ptr::read((&*value as *const T).cast::<U>()) }
}

/// The memory of `items`.
fn as_bytes<T: Plain>(items: &[T]) -> &[u8] {
    // SAFETY: every `Plain` type is a primitive number or `bool`: no padding, every byte
    // initialised. The length is the slice's size in bytes, `u8` has alignment 1, and the
    // result borrows `items`, so the memory outlives it.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items)) }
}

/// A vector of the `len` items whose little-endian memory is `bytes`, in one copy (on a
/// little-endian target; the caller checks).
fn copy_raw<T: AnyBits>(bytes: &[u8], len: usize) -> Vec<T> {
    assert_eq!(bytes.len(), len * std::mem::size_of::<T>());
    let mut out = Vec::<T>::with_capacity(len);
    crate::buffers::advise_if_large(&out);
    // SAFETY: `out` has room for `len` items, which is `bytes.len()` bytes (checked above); the
    // two do not overlap (`out` is fresh). `T: AnyBits` is valid for any bit pattern, so after the copy the first `len` items are
    // initialised values, and `set_len` exposes exactly those.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len());
        out.set_len(len);
    }
    out
}

/// Decodes little-endian `SIZE`-byte items.
fn from_le_bytes<T, const SIZE: usize>(bytes: &[u8], convert: fn([u8; SIZE]) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(bytes.len() / SIZE);
    out.extend(bytes.chunks_exact(SIZE).map(|chunk| {
        let mut buf = [0u8; SIZE];
        buf.copy_from_slice(chunk);
        convert(buf)
    }));
    out
}
