//! Proposals waiting to be applied: proposal id -> the proposer's channel.
//!
//! The proposer registers before proposing; whoever applies the entry (the
//! state machine, on whichever member the entry was proposed through)
//! answers by id. An entry applied on a member where nobody waits answers
//! nobody, and a proposer that gave up cancels, so the map holds only live
//! waits. Generic over the outcome, which raft never looks into (the lease
//! renewals a follower forwards on a stream wait in one too, by number).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Waiters for proposals, by proposal id.
#[derive(Debug)]
pub struct Waiters<T> {
    /// Proposal id -> the channel its proposer awaits.
    waiting: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Waiters<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<T>>> {
        // Every critical section is a single map operation: a panic cannot
        // leave the map half changed.
        crate::locks::lock(&self.waiting)
    }

    /// Registers a waiter for proposal `id` (replacing any earlier one).
    pub fn register(&self, id: u64) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Forgets the waiter of proposal `id` (it gave up).
    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Answers proposal `id`'s waiter, if it waits here; true if it did.
    pub fn answer(&self, id: u64, outcome: T) -> bool {
        // Sent after the lock is released (a guard in the `match` would be
        // held through the send): the woken proposer drops its registration
        // at once, which takes this lock, and found it held.
        let waiter = self.lock().remove(&id);
        match waiter {
            // The proposer may have gone; the entry is applied regardless.
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Answers every waiter with `outcome()` (nothing more will be applied).
    pub fn fail_all(&self, outcome: impl Fn() -> T) {
        let drained: Vec<_> = self.lock().drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(outcome());
        }
    }

    /// How many proposals wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no proposal waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_gets_its_own_outcome_once() {
        // Given two proposals waiting.
        let waiters = Waiters::default();
        let one = waiters.register(1);
        let two = waiters.register(2);

        // When their entries apply, in any order, then each proposer gets
        // its own outcome.
        assert!(waiters.answer(2, "two"));
        assert!(waiters.answer(1, "one"));
        assert_eq!(one.await, Ok("one"));
        assert_eq!(two.await, Ok("two"));

        // Then answered waiters are gone: a replayed entry answers nobody.
        assert!(!waiters.answer(1, "again"));
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_is_forgotten() {
        // Given a proposer that gave up and cancelled.
        let waiters = Waiters::default();
        let gave_up = waiters.register(7);
        waiters.cancel(7);

        // When its entry applies after all, then nobody is answered and
        // nothing is left.
        assert!(!waiters.answer(7, ()));
        assert!(gave_up.await.is_err());
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_proposer_that_left_does_not_stop_the_apply() {
        // Given a proposer that went away without cancelling.
        let waiters = Waiters::default();
        drop(waiters.register(3));

        // When its entry applies, then the answer has no reader, and the
        // waiter is gone all the same.
        assert!(!waiters.answer(3, 3));
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn registering_an_id_again_replaces_the_earlier_waiter() {
        // Given a waiter registered twice under one id.
        let waiters = Waiters::default();
        let first = waiters.register(5);
        let second = waiters.register(5);
        assert_eq!(waiters.len(), 1);

        // When the entry applies, then only the later waiter is answered;
        // the earlier one learns nobody will answer it.
        assert!(waiters.answer(5, "applied"));
        assert!(first.await.is_err());
        assert_eq!(second.await, Ok("applied"));
    }

    #[tokio::test]
    async fn stopping_fails_every_waiter() {
        // Given two proposals waiting.
        let waiters = Waiters::<Result<(), &str>>::default();
        let a = waiters.register(1);
        let b = waiters.register(2);

        // When the loop stops, then both are told, and nothing is left.
        waiters.fail_all(|| Err("stopped"));
        assert_eq!(a.await, Ok(Err("stopped")));
        assert_eq!(b.await, Ok(Err("stopped")));
        assert!(waiters.is_empty());
    }
}
