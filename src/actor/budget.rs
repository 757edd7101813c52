//! The restart budget: at most `max_restarts` restarts in any window of `within`.

use super::Restart;
use std::collections::VecDeque;
use std::time::Instant;

/// Restarts spent, by when.
#[derive(Debug)]
pub(super) struct Budget {
    restart: Restart,
    spent: VecDeque<Instant>,
}

impl Budget {
    pub(super) fn new(restart: Restart) -> Self {
        Budget {
            restart,
            spent: VecDeque::new(),
        }
    }

    /// Spends one restart if the policy and the window allow it.
    pub(super) fn allow(&mut self) -> bool {
        let Restart::OnCrash {
            max_restarts,
            within,
        } = self.restart
        else {
            return false;
        };
        let now = Instant::now();
        while self
            .spent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= within)
        {
            self.spent.pop_front();
        }
        if self.spent.len() >= max_restarts as usize {
            return false;
        }
        self.spent.push_back(now);
        true
    }
}
