//! One kind of hosted object: a named shared memory segment (`SharedMemory::create_named` /
//! `open`).
//!
//! The host itself makes the segment (a `memfd_create` and an `ftruncate`, no mapping, a few
//! microseconds under the store's lock) and keeps its descriptor while any process holds a
//! handle to the name. Each `Create` or `Open` is answered with a fresh one-shot offer of the
//! descriptor (`transport/fd.rs`), which the asking process takes and maps; the host never
//! takes a descriptor from another process, so a slow or hostile process cannot hold the
//! store up.
//!
//! The name travels in the body and is kept: an id is a hash of the name, so a request whose
//! name differs from the one kept is told the name is taken (`Create`) or unknown (`Open`),
//! never handed another name's memory.
//!
//! With the last handle, in any process, the object is dropped and the descriptor closed; the
//! memory itself lives on in the processes that still map it, and is freed by the kernel with
//! the last mapping.

use super::{Body, Hosted, Outcome, Owner, Reply, Waiting};
use crate::buffers::IntoShared;
use crate::protocol::{HostError, SegmentOp, SegmentReply};
use crate::transport::segment::Unmapped;

/// A named segment as the host sees it: its name and descriptor, once made.
#[derive(Debug, Default)]
pub(crate) struct SegmentState {
    made: Option<(Vec<u8>, Unmapped)>,
}

impl SegmentState {
    pub(crate) fn apply(&mut self, op: SegmentOp, body: Option<Body>) -> Outcome {
        let name: &[u8] = body.as_ref().map_or(&[], |b| &b[..]);
        let failed = |e| Outcome::Answer(Reply::failed(e));
        let segment = match (op, &self.made) {
            (SegmentOp::Create { .. }, Some(_)) => return failed(HostError::NameTaken),
            (SegmentOp::Create { len }, None) => {
                let made = usize::try_from(len)
                    .ok()
                    .and_then(|len| Unmapped::create(len).ok());
                let Some(segment) = made else {
                    // The kernel refused the memory; the caller hears it as no such segment.
                    return failed(HostError::NoSuchName);
                };
                &self.made.insert((name.to_vec(), segment)).1
            }
            (SegmentOp::Open, Some((kept, segment))) if kept.as_slice() == name => segment,
            (SegmentOp::Open, _) => return failed(HostError::NoSuchName),
        };
        match segment.offer() {
            Ok(ticket) => {
                Outcome::Answer(Reply::op(SegmentReply::Segment, Some(ticket.into_shared())))
            }
            Err(_) => failed(HostError::NoSuchName),
        }
    }
}

impl Hosted for SegmentState {
    fn withdraw(&mut self, _: Owner, _: u64) -> Option<Waiting> {
        // Nothing waits: every request is answered at once.
        None
    }

    fn owner_gone(&mut self, _: Owner) {
        // A segment holds nothing per owner; the core drops the owner's handles.
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn is_idle(&self) -> bool {
        // Kept only while handles are: the last one drops the descriptor.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Answer, OpReply};

    fn answer(outcome: Outcome) -> Answer {
        match outcome {
            Outcome::Answer(reply) => reply.answer,
            other => panic!("answered at once, not {other:?}"),
        }
    }

    #[test]
    fn a_name_is_made_once_and_opened_only_by_its_own_name() {
        let mut state = SegmentState::default();
        let name = |n: &str| Some(n.as_bytes().to_vec().into_shared());
        assert_eq!(
            answer(state.apply(SegmentOp::Open, name("a"))),
            Answer::Failed(HostError::NoSuchName)
        );
        let made = Answer::Op(OpReply::Segment(SegmentReply::Segment));
        assert_eq!(
            answer(state.apply(SegmentOp::Create { len: 4096 }, name("a"))),
            made
        );
        assert_eq!(
            answer(state.apply(SegmentOp::Create { len: 1 }, name("a"))),
            Answer::Failed(HostError::NameTaken)
        );
        assert_eq!(answer(state.apply(SegmentOp::Open, name("a"))), made);
        assert_eq!(
            answer(state.apply(SegmentOp::Open, name("b"))),
            Answer::Failed(HostError::NoSuchName)
        );
    }
}
