//! The codec writes postcard's bytes and reads postcard's bytes: checked value by value against
//! postcard itself, for fixed edge cases and for a seeded random search of nested values.

use super::{from_bytes, take_from_bytes, to_vec, CodecError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;

/// Encodes `value` with both encoders, checks the bytes agree, and that each decoder reads the
/// other's bytes back to `value`.
fn same<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let ours = to_vec(value).expect("our encoding");
    let theirs = postcard::to_allocvec(value).expect("postcard's encoding");
    assert_eq!(ours, theirs, "bytes differ for {value:?}");
    let (back, rest) = take_from_bytes::<T>(&theirs).expect("we read postcard's bytes");
    assert_eq!(&back, value);
    assert!(rest.is_empty());
    let back: T = postcard::from_bytes(&ours).expect("postcard reads our bytes");
    assert_eq!(&back, value);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Newtype(Vec<u8>),
    Tuple(i128, Vec<f64>),
    Struct { name: String, samples: Vec<i32> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    blob: Vec<u8>,
    nested: Vec<Vec<u8>>,
    maybe: Option<Vec<u16>>,
    shapes: Vec<Shape>,
    map: BTreeMap<String, Vec<i64>>,
    flags: Vec<bool>,
    letter: char,
    unit: (),
}

#[test]
fn scalars_match_postcard_at_their_edges() {
    same(&true);
    same(&false);
    for v in [0u8, 1, 127, 128, 255] {
        same(&v);
    }
    for v in [i8::MIN, -1, 0, 1, i8::MAX] {
        same(&v);
    }
    for v in [0u16, 127, 128, 16_383, 16_384, u16::MAX] {
        same(&v);
    }
    for v in [i16::MIN, -65, -64, 63, 64, i16::MAX] {
        same(&v);
    }
    for v in [0u32, 1 << 21, (1 << 28) - 1, 1 << 28, u32::MAX] {
        same(&v);
    }
    for v in [i32::MIN, -1, i32::MAX] {
        same(&v);
    }
    for v in [0u64, 1 << 56, (1 << 63) - 1, 1 << 63, u64::MAX] {
        same(&v);
    }
    for v in [i64::MIN, -1, i64::MAX] {
        same(&v);
    }
    for v in [0u128, u64::MAX as u128 + 1, u128::MAX] {
        same(&v);
    }
    for v in [i128::MIN, -1, 0, 1, i128::MAX] {
        same(&v);
    }
    same(&usize::MAX);
    same(&isize::MIN);
    same(&f32::MIN_POSITIVE);
    same(&-0.0f64);
    same(&f64::INFINITY);
    for c in ['a', 'é', '€', '𝄞'] {
        same(&c);
    }
    same(&String::new());
    same(&"a string that is longer than sixteen bytes".to_owned());
    same(&());
    same(&Some(3u8));
    same(&None::<u8>);
}

#[test]
fn plain_runs_match_postcard_at_every_length_edge() {
    for len in [0usize, 1, 2, 16, 17, 127, 128, 16_384, 70_000] {
        same(&(0..len).map(|i| i as u8).collect::<Vec<u8>>());
        same(&(0..len).map(|i| i as i8).collect::<Vec<i8>>());
        same(&(0..len).map(|i| i as f64 * 0.5 - 7.0).collect::<Vec<f64>>());
        same(&(0..len).map(|i| i as f32 * -1.25).collect::<Vec<f32>>());
        same(
            &(0..len)
                .map(|i| (i as u64) << (i % 64))
                .collect::<Vec<u64>>(),
        );
        same(
            &(0..len)
                .map(|i| (i as i64 - 35_000) << (i % 48))
                .collect::<Vec<i64>>(),
        );
        same(&(0..len).map(|i| i as u16).collect::<Vec<u16>>());
        same(&(0..len).map(|i| -(i as i32)).collect::<Vec<i32>>());
        same(&(0..len).map(|i| i % 3 == 0).collect::<Vec<bool>>());
        same(
            &(0..len)
                .map(|i| i as u128 * u64::MAX as u128)
                .collect::<Vec<u128>>(),
        );
        same(&(0..len).map(|i| -(i as i128) << 70).collect::<Vec<i128>>());
        same(&(0..len).map(|i| i * 1000).collect::<Vec<usize>>());
        same(&(0..len).map(|i| -(i as isize)).collect::<Vec<isize>>());
    }
    same(&vec![f64::NAN.to_bits(); 3]);
    same(&vec![u32::MAX, 0, 1 << 31]);
    same(&vec![i16::MIN, i16::MAX]);
}

#[test]
fn other_containers_match_postcard() {
    same(&vec![vec![1u8, 2], vec![], vec![3; 300]]);
    same(&Some(vec![7u8; 40]));
    same(&vec![Some(1u8), None]);
    same(&(vec![1u8], String::from("x"), vec![2.5f64]));
    same(&[1u8, 2, 3, 4]);
    same(&VecDeque::from(vec![1u8, 2, 3]));
    same(&Box::<[u8]>::from(vec![9u8; 20]));
    same(&Box::<[f64]>::from(vec![1.5f64; 20]));
    same(&HashMap::from([(1u8, vec![1u8]), (2, vec![])]));
    same(&vec![String::from("a"), String::from("bc")]);
    same(&vec![vec![1.0f64], vec![]]);
    same(&vec!['a', 'b']);
    let bytes = serde_bytes::ByteBuf::from(vec![5u8; 33]);
    same(&bytes);
    // A borrowed slice encodes like the vector it came from.
    let v = vec![3u8; 50];
    assert_eq!(to_vec(&v[..]).unwrap(), postcard::to_allocvec(&v).unwrap());
    assert_eq!(to_vec(&&v).unwrap(), postcard::to_allocvec(&v).unwrap());
}

#[test]
fn enums_structs_and_maps_match_postcard() {
    same(&Shape::Unit);
    same(&Shape::Newtype(vec![1, 2, 3]));
    same(&Shape::Tuple(i128::MIN, vec![f64::MAX]));
    same(&Shape::Struct {
        name: "n".into(),
        samples: vec![-5, 5],
    });
    same(&sample_record(&mut Rng(7)));
}

/// A small deterministic generator (xorshift), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    /// A number of random magnitude: small, near a varint edge, or huge.
    fn wide(&mut self) -> u64 {
        self.next() >> self.below(64)
    }
}

fn sample_shape(rng: &mut Rng) -> Shape {
    match rng.below(4) {
        0 => Shape::Unit,
        1 => Shape::Newtype((0..rng.below(40)).map(|_| rng.next() as u8).collect()),
        2 => Shape::Tuple(
            (rng.wide() as i128) << rng.below(64) | rng.next() as i128,
            (0..rng.below(10))
                .map(|_| f64::from_bits(rng.next()))
                .filter(|f| !f.is_nan())
                .collect(),
        ),
        _ => Shape::Struct {
            name: "é".repeat(rng.below(20)),
            samples: (0..rng.below(30)).map(|_| rng.wide() as i32).collect(),
        },
    }
}

fn sample_record(rng: &mut Rng) -> Record {
    Record {
        id: rng.wide(),
        blob: (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        nested: (0..rng.below(5))
            .map(|i| vec![i as u8; rng.below(200)])
            .collect(),
        maybe: (rng.below(2) == 1).then(|| (0..rng.below(50)).map(|_| rng.wide() as u16).collect()),
        shapes: (0..rng.below(6)).map(|_| sample_shape(rng)).collect(),
        map: (0..rng.below(4))
            .map(|i| {
                (
                    format!("k{i}"),
                    (0..rng.below(9)).map(|_| rng.wide() as i64).collect(),
                )
            })
            .collect(),
        flags: (0..rng.below(20)).map(|_| rng.below(2) == 1).collect(),
        letter: char::from_u32(rng.below(0xD7FF) as u32).unwrap_or('x'),
        unit: (),
    }
}

#[test]
fn random_nested_values_match_postcard() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..1_000 {
        same(&sample_record(&mut rng));
    }
}

#[test]
fn malformed_input_fails_as_postcard_does() {
    // Truncated everywhere: both refuse every prefix of a value.
    let whole = to_vec(&sample_record(&mut Rng(99))).unwrap();
    for cut in 0..whole.len() {
        let ours = take_from_bytes::<Record>(&whole[..cut]).is_err();
        let theirs = postcard::from_bytes::<Record>(&whole[..cut]).is_err();
        assert!(ours && theirs, "a prefix of {cut} bytes decoded");
    }
    // A plain run whose length claims more than is there, or more than memory could hold.
    assert_eq!(from_bytes::<Vec<u8>>(&[5, 1, 2]), Err(CodecError::End));
    assert_eq!(
        from_bytes::<Vec<f64>>(&[2, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(CodecError::End)
    );
    let huge = to_vec(&(usize::MAX / 2)).unwrap();
    assert_eq!(from_bytes::<Vec<f64>>(&huge), Err(CodecError::End));
    assert_eq!(from_bytes::<Vec<u64>>(&huge), Err(CodecError::End));
    // Values out of range for their type.
    assert_eq!(
        from_bytes::<Vec<bool>>(&[2, 1, 2]),
        Err(CodecError::BadBool)
    );
    assert!(postcard::from_bytes::<Vec<bool>>(&[2, 1, 2]).is_err());
    let too_big = to_vec(&(u16::MAX as u32 + 1)).unwrap();
    let mut run = vec![1];
    run.extend_from_slice(&too_big);
    assert_eq!(from_bytes::<Vec<u16>>(&run), Err(CodecError::BadVarint));
    assert!(postcard::from_bytes::<Vec<u16>>(&run).is_err());
    assert_eq!(from_bytes::<u64>(&[0xff; 11]), Err(CodecError::BadVarint));
    assert_eq!(
        from_bytes::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x10]),
        Err(CodecError::BadVarint)
    );
    assert_eq!(from_bytes::<Option<u8>>(&[2]), Err(CodecError::BadOption));
    assert_eq!(
        from_bytes::<String>(&[2, 0xff, 0xfe]),
        Err(CodecError::BadUtf8)
    );
    assert_eq!(
        from_bytes::<char>(&[2, b'a', b'b']),
        Err(CodecError::BadChar)
    );
}

#[test]
fn random_bytes_decode_as_postcard_decodes_them() {
    // Whatever a peer sends, both decoders agree on whether it is a value and on the value.
    // Values are compared by their bytes, so that a NaN equals itself.
    fn agree<T: DeserializeOwned + Serialize>(bytes: &[u8]) {
        let canonical = |(v, rest): (T, &[u8])| (postcard::to_allocvec(&v).ok(), rest.len());
        let ours = take_from_bytes::<T>(bytes).ok().map(canonical);
        let theirs = postcard::take_from_bytes::<T>(bytes).ok().map(canonical);
        assert_eq!(ours, theirs, "on {bytes:?}");
    }
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..10_000 {
        let len = rng.below(40);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Short lengths up front, so plain runs often decode.
        if let Some(first) = bytes.first_mut() {
            *first %= 12;
        }
        agree::<Vec<u8>>(&bytes);
        agree::<Vec<f32>>(&bytes);
        agree::<Vec<u16>>(&bytes);
        agree::<Vec<i64>>(&bytes);
        agree::<Vec<bool>>(&bytes);
        agree::<Vec<i128>>(&bytes);
        agree::<(Option<String>, Vec<u32>, char)>(&bytes);
        agree::<Vec<Shape>>(&bytes);
    }
}

#[test]
fn errors_keep_their_messages() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("the value refuses"))
        }
    }
    let e = to_vec(&vec![Refuses]).unwrap_err();
    assert_eq!(e.to_string(), "the value refuses");
    let unsized_seq = to_vec(&UnknownLength).unwrap_err();
    assert_eq!(unsized_seq, CodecError::LengthUnknown);
    #[derive(Deserialize, Debug)]
    #[serde(untagged)]
    enum Untagged {
        #[allow(dead_code)]
        A(u8),
    }
    assert_eq!(
        from_bytes::<Untagged>(&[1]).unwrap_err(),
        CodecError::NotSelfDescribing
    );
}

/// A sequence whose iterator does not know its length.
struct UnknownLength;

impl Serialize for UnknownLength {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..3u8).filter(|_| true))
    }
}

/// A user's visitor that builds a `Vec<u8>` from a different layout (16-bit items): not
/// serde's, so the decoder serves it item by item and it reads its own layout.
#[derive(Debug, PartialEq)]
struct Narrowed(Vec<u8>);

impl<'de> Deserialize<'de> for Narrowed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = s.next_element::<u16>()? {
                    out.push(x as u8);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Items).map(Narrowed)
    }
}

#[test]
fn a_users_own_vec_visitor_is_not_taken_for_serdes() {
    let bytes = to_vec(&vec![300u16, 2]).unwrap();
    assert_eq!(from_bytes::<Narrowed>(&bytes), Ok(Narrowed(vec![44, 2])));
}

#[test]
fn the_fast_paths_are_taken_for_serdes_vectors() {
    // The decoder's fast path is recognised by the visitor's type name; make sure this serde
    // still spells it so (a rename would silently fall back to the slow path).
    struct Probe;
    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = CodecError;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, CodecError> {
            Err(CodecError::Custom(std::any::type_name::<V>().to_owned()))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
            identifier ignored_any
        }
    }
    let Err(CodecError::Custom(name)) = Vec::<u8>::deserialize(Probe) else {
        panic!("the probe always fails");
    };
    assert!(super::plain::is_serde_vec_visitor_name(&name), "{name}");
}
