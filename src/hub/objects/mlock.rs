//! One kind of hosted object: a manager's lock, held and waited for at its host.
//!
//! Unlike `lock.rs` (a word in shared memory that processes take with atomic operations), this
//! lock lives entirely in the host's memory, so it works for every process that reaches the
//! host, also over TCP from another machine (a remote manager). The cost is a round trip per
//! acquire.
//!
//! Rules:
//! - The holder is an owner (a process's connection), not a task: a `Release` from the holder's
//!   connection frees it, one from any other is ignored.
//! - Waiters are served first come first served; a waiter whose caller stopped listening (its
//!   answer comes back undelivered) is skipped, so the lock is never granted to nobody.
//! - When the holder's owner goes away (its process died or its connection dropped), the lock
//!   goes to the next waiter, poisoned: the next grant says so, once.

use super::{Body, Caller, Hosted, Outcome, Owner, Reply, Waiters, Waiting};
use crate::protocol::{Answer, HostError, ManagedLockOp, Wait};

/// A manager's lock.
#[derive(Debug, Default)]
pub(crate) struct ManagedLockState {
    holder: Option<Owner>,
    waiters: Waiters,
    /// A holder died holding it; the next grant says so.
    poisoned: bool,
}

impl ManagedLockState {
    pub(crate) fn apply(
        &mut self,
        caller: &mut Caller<'_>,
        op: ManagedLockOp,
        _: Option<Body>,
    ) -> Outcome {
        match op {
            ManagedLockOp::Acquire { wait } => {
                if self.holder.is_none() {
                    self.holder = Some(caller.owner);
                    return Outcome::Answer(self.grant());
                }
                if wait == Wait::No {
                    return Outcome::Answer(Reply::failed(HostError::Timeout));
                }
                self.waiters.push(caller.waiting(wait));
                Outcome::Waiting(wait)
            }
            ManagedLockOp::Release => {
                if self.holder == Some(caller.owner) {
                    self.hand_on();
                }
                Outcome::Silent
            }
        }
    }

    /// The answer to a grant, telling (once) that the last holder died holding the lock.
    fn grant(&mut self) -> Reply {
        let poisoned = std::mem::take(&mut self.poisoned);
        Reply::new(Answer::Value(u64::from(poisoned)))
    }

    /// The holder let go: the lock goes to the first waiter still listening, or is free.
    fn hand_on(&mut self) {
        self.holder = None;
        while let Some(waiting) = self.waiters.pop() {
            let owner = waiting.owner;
            let reply = self.grant();
            match waiting.deliver(reply) {
                Ok(()) => {
                    self.holder = Some(owner);
                    return;
                }
                // Nobody took it: the poison (if any) is still untold.
                Err(reply) => self.poisoned |= reply.answer == Answer::Value(1),
            }
        }
    }
}

impl Hosted for ManagedLockState {
    fn withdraw(&mut self, owner: Owner, req: u64) -> Option<Waiting> {
        self.waiters.withdraw(owner, req)
    }

    fn owner_gone(&mut self, owner: Owner) {
        self.waiters.forget(owner);
        if self.holder == Some(owner) {
            self.poisoned = true;
            self.hand_on();
        }
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn is_idle(&self) -> bool {
        // A poisoned lock nobody holds a handle to goes: a handle still on its way to a process
        // holds it through its transit hold (see `TransitOp`), so whoever could take it next
        // finds it.
        self.holder.is_none() && self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::objects::Waiter;
    use std::sync::{Arc, Mutex};

    /// Records what each waiter is told; a closed one refuses its answer.
    #[derive(Clone, Default)]
    struct Told(Arc<Mutex<Vec<(u64, Answer)>>>);

    struct To {
        req: u64,
        told: Told,
        listening: bool,
    }

    impl Waiter for To {
        fn deliver(self: Box<Self>, reply: Reply) -> Result<(), Reply> {
            if !self.listening {
                return Err(reply);
            }
            self.told.0.lock().unwrap().push((self.req, reply.answer));
            Ok(())
        }
    }

    fn acquire(
        l: &mut ManagedLockState,
        owner: Owner,
        req: u64,
        told: &Told,
        listening: bool,
    ) -> Outcome {
        let told = told.clone();
        let mut waiter = move || -> Box<dyn Waiter> {
            Box::new(To {
                req,
                told: told.clone(),
                listening,
            })
        };
        let mut caller = Caller {
            owner,
            req,
            waiter: &mut waiter,
            ended: None,
        };
        let op = ManagedLockOp::Acquire {
            wait: Wait::Forever,
        };
        l.apply(&mut caller, op, None)
    }

    fn release(l: &mut ManagedLockState, owner: Owner) {
        let mut nobody = || -> Box<dyn Waiter> { unreachable!("a release never waits") };
        let mut caller = Caller {
            owner,
            req: 0,
            waiter: &mut nobody,
            ended: None,
        };
        l.apply(&mut caller, ManagedLockOp::Release, None);
    }

    #[test]
    fn waiters_are_served_in_order_skipping_one_that_stopped_listening() {
        let (mut l, told) = (ManagedLockState::default(), Told::default());
        assert!(matches!(
            acquire(&mut l, 1, 1, &told, true),
            Outcome::Answer(Reply {
                answer: Answer::Value(0),
                ..
            })
        ));
        assert!(matches!(
            acquire(&mut l, 2, 2, &told, false),
            Outcome::Waiting(_)
        ));
        assert!(matches!(
            acquire(&mut l, 3, 3, &told, true),
            Outcome::Waiting(_)
        ));
        release(&mut l, 2);
        assert_eq!(l.holder, Some(1), "a release from a non-holder is ignored");
        release(&mut l, 1);
        assert_eq!(l.holder, Some(3));
        assert_eq!(*told.0.lock().unwrap(), [(3, Answer::Value(0))]);
        release(&mut l, 3);
        assert!(l.is_idle());
    }

    #[test]
    fn a_dead_holder_poisons_the_next_grant_once() {
        let (mut l, told) = (ManagedLockState::default(), Told::default());
        acquire(&mut l, 1, 1, &told, true);
        acquire(&mut l, 2, 2, &told, true);
        acquire(&mut l, 3, 3, &told, true);
        l.owner_gone(3);
        l.owner_gone(1);
        assert_eq!(l.holder, Some(2));
        assert_eq!(*told.0.lock().unwrap(), [(2, Answer::Value(1))]);
        release(&mut l, 2);
        assert!(matches!(
            acquire(&mut l, 4, 4, &told, true),
            Outcome::Answer(Reply {
                answer: Answer::Value(0),
                ..
            })
        ));
    }
}
