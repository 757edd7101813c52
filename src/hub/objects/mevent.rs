//! One kind of hosted object: a manager's event, a flag at its host that processes set, clear
//! and wait for (Python's `Event`, through a manager). Setting it answers every waiter at once;
//! a waiter whose caller stopped listening is simply dropped.

use super::{Body, Caller, Hosted, Outcome, Owner, Reply, Waiters, Waiting};
use crate::protocol::{Answer, EventOp, HostError, Wait};

/// A manager's event.
#[derive(Debug, Default)]
pub(crate) struct EventState {
    set: bool,
    waiters: Waiters,
}

impl EventState {
    pub(crate) fn apply(
        &mut self,
        caller: &mut Caller<'_>,
        op: EventOp,
        _: Option<Body>,
    ) -> Outcome {
        let done = || Outcome::Answer(Reply::new(Answer::Done));
        match op {
            EventOp::Set => {
                self.set = true;
                for waiting in self.waiters.drain() {
                    let _ = waiting.deliver(Reply::new(Answer::Value(1)));
                }
                done()
            }
            EventOp::Clear => {
                self.set = false;
                done()
            }
            EventOp::IsSet => Outcome::Answer(Reply::new(Answer::Value(u64::from(self.set)))),
            EventOp::Wait { wait } => {
                if self.set {
                    return Outcome::Answer(Reply::new(Answer::Value(1)));
                }
                if wait == Wait::No {
                    return Outcome::Answer(Reply::failed(HostError::Timeout));
                }
                self.waiters.push(caller.waiting(wait));
                Outcome::Waiting(wait)
            }
        }
    }
}

impl Hosted for EventState {
    fn withdraw(&mut self, owner: Owner, req: u64) -> Option<Waiting> {
        self.waiters.withdraw(owner, req)
    }

    fn owner_gone(&mut self, owner: Owner) {
        self.waiters.forget(owner);
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn is_idle(&self) -> bool {
        // Its flag is data, like a dict's: it goes with the last handle (waiters hold one).
        self.waiters.is_empty()
    }
}
