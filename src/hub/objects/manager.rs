//! The objects of a manager: a dict (also behind a namespace) and a list, held as the postcard
//! bytes of the user's keys and values. The host never needs the user's types.
//!
//! Rules:
//! - Every operation is applied whole under the store's lock, so each is atomic with respect to
//!   every other process: an insert, a `get_or_insert`, a `fetch_add`, a list `Replace` that
//!   checks the version of the snapshot it was made from.
//! - Keys are equal when their encodings are: for the usual key types (integers, strings,
//!   enums of them) that is `Eq`; a float key `-0.0` differs from `0.0`, as its bits do.
//! - A dict keeps insertion order (a removed key's successors close up), as Python's does.
//! - Nothing here belongs to one owner: when an owner goes away its handles go (the core's
//!   business) and every value it wrote stays. An object is idle, and dropped with its last
//!   handle, whatever it holds.

use super::{Body, Hosted, Outcome, Owner, Reply, Waiting};
use crate::buffers::IntoShared;
use crate::protocol::{split_parts, Answer, DictOp, HostError, IntKind, ListOp, ManagedReply};
use indexmap::IndexMap;

fn found(value: Body) -> Outcome {
    Outcome::Answer(Reply::op(ManagedReply::Found, Some(value)))
}

fn found_or_missing(value: Option<Body>) -> Outcome {
    match value {
        Some(v) => found(v),
        None => Outcome::Answer(Reply::op(ManagedReply::Missing, None)),
    }
}

fn value(n: usize) -> Outcome {
    Outcome::Answer(Reply::new(Answer::Value(n as u64)))
}

fn done() -> Outcome {
    Outcome::Answer(Reply::new(Answer::Done))
}

fn failed(e: HostError) -> Outcome {
    Outcome::Answer(Reply::failed(e))
}

/// `Items`: `count` encodings laid back to back after `count` as a varint, which is how
/// postcard encodes a `Vec` of them; the client decodes it as one.
fn items<'a>(count: usize, encodings: impl Iterator<Item = &'a [u8]>, version: u64) -> Outcome {
    let mut body = Vec::new();
    let mut n = count as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    for e in encodings {
        body.extend_from_slice(e);
    }
    Outcome::Answer(Reply::op(
        ManagedReply::Items { version },
        Some(body.into_shared()),
    ))
}

/// The parts of `body`, which must number `want` (or, with `pairs`, be any even number).
fn parts(body: &Option<Body>, want: Option<usize>) -> Result<Vec<&[u8]>, HostError> {
    let bytes: &[u8] = body.as_deref().map_or(&[], |b| b);
    let parts = split_parts(bytes).ok_or(HostError::Malformed)?;
    match want {
        Some(n) if parts.len() != n => Err(HostError::Malformed),
        None if parts.len() % 2 != 0 => Err(HostError::Malformed),
        _ => Ok(parts),
    }
}

fn shared(bytes: &[u8]) -> Body {
    bytes.to_vec().into_shared()
}

/// One dict (or namespace).
#[derive(Debug, Default)]
pub(crate) struct DictState {
    entries: IndexMap<Box<[u8]>, Body>,
}

impl DictState {
    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: DictOp, body: Option<Body>) -> Outcome {
        match self.try_apply(op, &body) {
            Ok(outcome) => outcome,
            Err(e) => failed(e),
        }
    }

    fn try_apply(&mut self, op: DictOp, body: &Option<Body>) -> Result<Outcome, HostError> {
        Ok(match op {
            DictOp::Insert => {
                let p = parts(body, Some(2))?;
                found_or_missing(self.entries.insert(p[0].into(), shared(p[1])))
            }
            DictOp::Get => found_or_missing(self.entries.get(parts(body, Some(1))?[0]).cloned()),
            DictOp::Remove => found_or_missing(self.entries.shift_remove(parts(body, Some(1))?[0])),
            DictOp::ContainsKey => value(usize::from(
                self.entries.contains_key(parts(body, Some(1))?[0]),
            )),
            DictOp::Len => value(self.entries.len()),
            DictOp::Keys => items(self.entries.len(), self.entries.keys().map(|k| &**k), 0),
            DictOp::Values => items(
                self.entries.len(),
                self.entries.values().map(|v| v.as_slice()),
                0,
            ),
            DictOp::Items => {
                let pairs = self.entries.iter().flat_map(|(k, v)| [&**k, v.as_slice()]);
                items(self.entries.len(), pairs, 0)
            }
            DictOp::Update => {
                for pair in parts(body, None)?.chunks_exact(2) {
                    self.entries.insert(pair[0].into(), shared(pair[1]));
                }
                done()
            }
            DictOp::Clear => {
                self.entries.clear();
                done()
            }
            DictOp::GetOrInsert => {
                let p = parts(body, Some(2))?;
                let v = self
                    .entries
                    .entry(p[0].into())
                    .or_insert_with(|| shared(p[1]));
                found(v.clone())
            }
            DictOp::FetchAdd { delta, int } => {
                let key = parts(body, Some(1))?[0];
                let now = match self.entries.get(key) {
                    Some(v) => read_int(v, int)?,
                    None => 0,
                };
                let sum = now
                    .checked_add(i128::from(delta))
                    .ok_or(HostError::Overflow)?;
                let v = write_int(sum, int)?.into_shared();
                self.entries.insert(key.into(), v.clone());
                found(v)
            }
        })
    }
}

/// The range of integer kind `int`.
fn int_range(int: IntKind) -> (i128, i128) {
    let bits = u32::from(int.bits.clamp(8, 64));
    if int.signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// Reads an integer of kind `int` as postcard wrote it: one byte for 8 bits, otherwise a
/// varint (zigzag for signed kinds).
fn read_int(bytes: &[u8], int: IntKind) -> Result<i128, HostError> {
    fn whole<T: serde::de::DeserializeOwned + Into<i128>>(bytes: &[u8]) -> Option<i128> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((n, [])) => Some(n.into()),
            _ => None,
        }
    }
    let n = match (int.bits, int.signed) {
        (8, false) => whole::<u8>(bytes),
        (8, true) => whole::<i8>(bytes),
        (_, false) => whole::<u64>(bytes),
        (_, true) => whole::<i64>(bytes),
    };
    let (min, max) = int_range(int);
    n.filter(|n| (min..=max).contains(n))
        .ok_or(HostError::NotAnInteger)
}

/// Writes `n` as postcard writes an integer of kind `int`.
fn write_int(n: i128, int: IntKind) -> Result<Vec<u8>, HostError> {
    let (min, max) = int_range(int);
    if n < min || n > max {
        return Err(HostError::Overflow);
    }
    let encoded = match (int.bits, int.signed) {
        (8, false) => postcard::to_allocvec(&(n as u8)),
        (8, true) => postcard::to_allocvec(&(n as i8)),
        (_, false) => postcard::to_allocvec(&(n as u64)),
        (_, true) => postcard::to_allocvec(&(n as i64)),
    };
    encoded.map_err(|_| HostError::Overflow)
}

/// One list.
#[derive(Debug, Default)]
pub(crate) struct ListState {
    items: Vec<Body>,
    /// Bumped by every change, so a `Replace` can tell whether its snapshot is still current.
    version: u64,
}

impl ListState {
    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: ListOp, body: Option<Body>) -> Outcome {
        // A `Replace` counts its own change: one that finds the list changed makes none.
        let changes = !matches!(
            op,
            ListOp::Get { .. } | ListOp::Len | ListOp::Snapshot | ListOp::Replace { .. }
        );
        let outcome = match self.try_apply(op, &body) {
            Ok(outcome) => outcome,
            Err(e) => return failed(e),
        };
        if changes {
            self.version += 1;
        }
        outcome
    }

    fn index(&self, index: u64) -> Result<usize, HostError> {
        let len = self.items.len();
        usize::try_from(index)
            .ok()
            .filter(|&i| i < len)
            .ok_or(HostError::OutOfRange {
                index,
                len: len as u64,
            })
    }

    fn try_apply(&mut self, op: ListOp, body: &Option<Body>) -> Result<Outcome, HostError> {
        Ok(match op {
            ListOp::Push => {
                self.items.push(shared(parts(body, Some(1))?[0]));
                done()
            }
            ListOp::Extend => {
                let p =
                    split_parts(body.as_deref().map_or(&[], |b| b)).ok_or(HostError::Malformed)?;
                self.items.extend(p.into_iter().map(shared));
                done()
            }
            ListOp::Pop => found_or_missing(self.items.pop()),
            ListOp::Get { index } => found_or_missing(
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.items.get(i))
                    .cloned(),
            ),
            ListOp::Set { index } => {
                let item = shared(parts(body, Some(1))?[0]);
                let i = self.index(index)?;
                self.items[i] = item;
                done()
            }
            ListOp::Insert { index } => {
                let item = shared(parts(body, Some(1))?[0]);
                let i =
                    usize::try_from(index).map_or(self.items.len(), |i| i.min(self.items.len()));
                self.items.insert(i, item);
                done()
            }
            ListOp::Remove { index } => {
                let i = self.index(index)?;
                found(self.items.remove(i))
            }
            ListOp::Reverse => {
                self.items.reverse();
                done()
            }
            ListOp::Len => value(self.items.len()),
            ListOp::Snapshot => items(
                self.items.len(),
                self.items.iter().map(|v| v.as_slice()),
                self.version,
            ),
            ListOp::Replace { version } => {
                if version != self.version {
                    return Ok(value(0));
                }
                let p =
                    split_parts(body.as_deref().map_or(&[], |b| b)).ok_or(HostError::Malformed)?;
                self.items = p.into_iter().map(shared).collect();
                self.version += 1;
                value(1)
            }
        })
    }
}

/// Neither kind has waiting requests or per-owner state: what an owner wrote stays when it
/// goes, and the object is idle whatever it holds (it goes with its last handle).
macro_rules! hosted_without_owners {
    ($($t:ty),*) => {$(
        impl Hosted for $t {
            fn withdraw(&mut self, _owner: Owner, _req: u64) -> Option<Waiting> {
                None
            }

            fn owner_gone(&mut self, _owner: Owner) {}

            fn is_closed(&self) -> bool {
                false
            }

            fn is_idle(&self) -> bool {
                true
            }
        }
    )*};
}

hosted_without_owners!(DictState, ListState);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{join_parts, OpReply};

    fn body(parts: &[&[u8]]) -> Option<Body> {
        Some(join_parts(parts.iter().copied()).unwrap().into_shared())
    }

    fn enc<T: serde::Serialize>(v: T) -> Vec<u8> {
        postcard::to_allocvec(&v).unwrap()
    }

    fn answer(o: Outcome) -> (Answer, Option<Vec<u8>>) {
        match o {
            Outcome::Answer(r) => (r.answer, r.body.map(|b| b.to_vec())),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_dict_keeps_insertion_order_and_answers_items_as_a_vec() {
        let mut d = DictState::default();
        for (k, v) in [("b", 1u32), ("a", 2), ("c", 3)] {
            d.apply(DictOp::Insert, body(&[&enc(k), &enc(v)]));
        }
        d.apply(DictOp::Remove, body(&[&enc("a")]));
        let (a, items) = answer(d.apply(DictOp::Items, None));
        assert_eq!(
            a,
            Answer::Op(OpReply::Managed(ManagedReply::Items { version: 0 }))
        );
        let items: Vec<(String, u32)> = postcard::from_bytes(&items.unwrap()).unwrap();
        assert_eq!(items, [("b".into(), 1), ("c".into(), 3)]);
    }

    #[test]
    fn fetch_add_reads_and_writes_the_integer_kind_and_refuses_overflow() {
        let mut d = DictState::default();
        let int = IntKind {
            signed: true,
            bits: 8,
        };
        let key = enc("n");
        let (_, v) = answer(d.apply(DictOp::FetchAdd { delta: 100, int }, body(&[&key])));
        assert_eq!(postcard::from_bytes::<i8>(&v.unwrap()).unwrap(), 100);
        let (a, _) = answer(d.apply(DictOp::FetchAdd { delta: 100, int }, body(&[&key])));
        assert_eq!(a, Answer::Failed(HostError::Overflow));
        let int = IntKind {
            signed: true,
            bits: 64,
        };
        let key = enc("m");
        let (_, v) = answer(d.apply(DictOp::FetchAdd { delta: -300, int }, body(&[&key])));
        assert_eq!(postcard::from_bytes::<i64>(&v.unwrap()).unwrap(), -300);
        let add = DictOp::FetchAdd {
            delta: i64::MAX,
            int,
        };
        let (_, v) = answer(d.apply(add, body(&[&key])));
        assert_eq!(
            postcard::from_bytes::<i64>(&v.unwrap()).unwrap(),
            i64::MAX - 300
        );
        d.apply(DictOp::Insert, body(&[&key, &enc("text")]));
        let (a, _) = answer(d.apply(DictOp::FetchAdd { delta: 1, int }, body(&[&key])));
        assert_eq!(a, Answer::Failed(HostError::NotAnInteger));
    }

    #[test]
    fn a_list_replace_fails_once_the_list_changed() {
        let mut l = ListState::default();
        l.apply(ListOp::Extend, body(&[&enc(3u8), &enc(1u8)]));
        let (a, items) = answer(l.apply(ListOp::Snapshot, None));
        let Answer::Op(OpReply::Managed(ManagedReply::Items { version })) = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            postcard::from_bytes::<Vec<u8>>(&items.unwrap()).unwrap(),
            [3, 1]
        );
        l.apply(ListOp::Push, body(&[&enc(2u8)]));
        let (a, _) = answer(l.apply(ListOp::Replace { version }, body(&[&enc(1u8)])));
        assert_eq!(a, Answer::Value(0), "a stale replace changes nothing");
        assert_eq!(l.items.len(), 3);
        let (a, _) = answer(l.apply(ListOp::Remove { index: 9 }, None));
        assert_eq!(
            a,
            Answer::Failed(HostError::OutOfRange { index: 9, len: 3 })
        );
    }
}
