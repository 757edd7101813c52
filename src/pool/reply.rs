//! Where a call's completions go: a small unbounded channel made for it.
//!
//! Every pool call makes one (an `apply` makes one per task), so its cost is paid per task:
//! tokio's `mpsc::unbounded_channel` allocates a cache-padded channel and a first block of 32
//! slots up front (~2 KB, an aligned allocation), which perf showed among the caller's top costs
//! for 10,000 `apply_async` in flight. Here a channel is one small allocation; the queue grows
//! only as completions arrive. Semantics are those the pool used of `mpsc`: any number of
//! senders, one receiver, `None` once every sender is gone and the queue is empty, and senders
//! can see that the receiver is gone.

use super::outcome::Completion;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Completion>,
    waker: Option<Waker>,
    senders: usize,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// The receiver is gone: nobody wants these completions.
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where completions are sent; clone it for each task of a call.
#[derive(Debug)]
pub(crate) struct ReplyTx(Arc<Shared>);

/// Where a call receives its completions.
#[derive(Debug)]
pub(crate) struct ReplyRx(Arc<Shared>);

/// A new channel.
pub(crate) fn channel() -> (ReplyTx, ReplyRx) {
    let shared = Arc::new(Shared::default());
    shared.lock().senders = 1;
    (ReplyTx(Arc::clone(&shared)), ReplyRx(shared))
}

impl ReplyTx {
    /// Queues `completion` for the receiver; gives it back if the receiver is gone.
    pub(crate) fn send(&self, completion: Completion) -> Result<(), Completion> {
        if self.is_closed() {
            return Err(completion);
        }
        let waker = {
            let mut inner = self.0.lock();
            inner.queue.push_back(completion);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Relaxed)
    }
}

impl Clone for ReplyTx {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        ReplyTx(Arc::clone(&self.0))
    }
}

impl Drop for ReplyTx {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.0.lock();
            inner.senders -= 1;
            if inner.senders == 0 {
                inner.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl ReplyRx {
    /// The next completion; `None` once every sender is gone and nothing is queued.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken unless it is returned.
    pub(crate) async fn recv(&mut self) -> Option<Completion> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// As [`recv`](Self::recv), for `poll` functions.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let mut inner = self.0.lock();
        if let Some(c) = inner.queue.pop_front() {
            return Poll::Ready(Some(c));
        }
        if inner.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A completion if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Completion> {
        self.0.lock().queue.pop_front()
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(index: usize) -> Completion {
        Completion {
            index,
            outcome: Ok((Default::default(), 0)),
        }
    }

    #[tokio::test]
    async fn delivers_in_order_then_ends_when_senders_are_gone() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        tx.send(completion(0)).unwrap();
        tx2.send(completion(1)).unwrap();
        drop(tx);
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx2.send(completion(2)).unwrap();
        });
        for i in 0..3 {
            assert_eq!(rx.recv().await.map(|c| c.index), Some(i));
        }
        task.await.unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn senders_see_the_receiver_go() {
        let (tx, rx) = channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert!(tx.send(completion(0)).is_err());
    }
}
