//! Linearizable reads joined into rounds before they reach the raft thread.
//!
//! A read used to send an `Input::Read` of its own: under load the raft
//! thread was woken once per read (a futex wake on the reader's side, a
//! wake-up and a sleep on the thread's), which made a linearizable read cost
//! about half as much CPU again as a serializable one on three members.
//! etcd's `linearizableReadLoop` keeps one ReadIndex request in flight per
//! member, and every read that arrives meanwhile waits for the next one;
//! this does the same, without a task of its own: the raft thread's answer
//! to a round publishes it and sends the next round if a read waits for one.
//!
//! Why a read served this way is linearizable: a read joins a round under
//! the lock, and a round is sent only after the lock is released by every
//! read that joined it (by its first read, or by the answer of the round
//! before it, which takes the lock to take it), never taking a read after
//! it left; so the read index it gets was confirmed by a quorum after the
//! read arrived.
//!
//! Each round has its own channel, so an answer wakes the reads of its
//! round and no others. The answer's callback holds the rounds only
//! weakly: a round pending in the raft thread does not keep the thread's
//! input channel open.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::handle::{Input, ReadDone};
use super::Inbox;
use crate::locks;
use crate::raft::RequestError;

/// A member's rounds of linearizable reads.
#[derive(Debug)]
pub(super) struct ReadRounds {
    /// Whether a round is in flight, and the one reads join meanwhile.
    state: Mutex<RoundState>,
    /// The raft thread's inputs.
    inputs: Inbox,
}

/// See [`ReadRounds::state`].
#[derive(Debug, Default)]
struct RoundState {
    /// Whether a round is in flight: reads arriving meanwhile join `next`,
    /// sent when it is answered.
    in_flight: bool,
    /// The round the reads that arrived during the one in flight wait for.
    next: Option<Round>,
}

/// One round's answer (None until it comes), for the reads that joined it.
type Round = Arc<watch::Sender<Option<Result<u64, RequestError>>>>;

impl ReadRounds {
    /// No round yet; rounds are sent on `inputs`.
    pub(super) fn new(inputs: Inbox) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(RoundState::default()),
            inputs,
        })
    }

    /// The read index of a round sent after this call began, once this
    /// member has applied up to it.
    pub(super) async fn read_index(self: &Arc<Self>) -> Result<u64, RequestError> {
        let (round, send) = {
            let mut state = locks::lock(&self.state);
            if state.in_flight {
                (Arc::clone(state.next.get_or_insert_with(new_round)), false)
            } else {
                state.in_flight = true;
                (new_round(), true)
            }
        };
        let mut answers = round.subscribe();
        if send {
            self.send(round);
        }
        let answer = match answers.wait_for(Option::is_some).await {
            Ok(answer) => *answer,
            // Dropped unanswered: only if the rounds are gone.
            Err(_) => None,
        };
        answer.unwrap_or(Err(RequestError::Stopped))
    }

    /// Sends `round` to the raft thread. If the thread is gone, the input
    /// is dropped with its callback, which answers `Stopped`.
    fn send(self: &Arc<Self>, round: Round) {
        let rounds = Arc::downgrade(self);
        let done = ReadDone::new(move |result| answer(&rounds, &round, result));
        let _ = self.inputs.send(Input::Read { done });
    }
}

fn new_round() -> Round {
    Arc::new(watch::Sender::new(None))
}

/// `round` is answered: wake its reads, and send the next round if reads
/// wait for one.
fn answer(rounds: &Weak<ReadRounds>, round: &Round, result: Result<u64, RequestError>) {
    round.send_replace(Some(result));
    let Some(rounds) = rounds.upgrade() else {
        return;
    };
    let next = {
        let mut state = locks::lock(&rounds.state);
        let next = state.next.take();
        state.in_flight = next.is_some();
        next
    };
    if let Some(next) = next {
        rounds.send(next);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::TryRecvError;

    use crate::raft::node::{inbox, InboxReceiver};

    use super::*;

    /// The next round sent to the raft thread, if any.
    fn sent(inputs: &InboxReceiver) -> Option<ReadDone> {
        match inputs.try_recv() {
            Ok(Input::Read { done }) => Some(done),
            Ok(other) => panic!("expected a read round, got {other:?}"),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// `n` reads started on `rounds`, each polled until it waits.
    async fn start_reads(
        rounds: &Arc<ReadRounds>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<u64, RequestError>>> {
        let mut reads = Vec::new();
        for _ in 0..n {
            let rounds = Arc::clone(rounds);
            reads.push(tokio::spawn(async move { rounds.read_index().await }));
        }
        // Current-thread runtime: one yield runs every spawned read up to
        // its wait.
        tokio::task::yield_now().await;
        reads
    }

    #[tokio::test]
    async fn reads_arriving_during_a_round_share_the_next_one() {
        let (tx, inputs) = inbox().unwrap();
        let rounds = ReadRounds::new(tx);

        // Given one read, whose round is sent at once.
        let first = start_reads(&rounds, 1).await;
        let round_1 = sent(&inputs).expect("the first read sends a round");

        // When ten more arrive while it is in flight, then nothing more is
        // sent: they wait for the next round.
        let later = start_reads(&rounds, 10).await;
        assert!(sent(&inputs).is_none());

        // When round 1 is answered, then its read gets the index, and the
        // next round leaves: one for the ten.
        round_1.call(Ok(5));
        assert_eq!(first.into_iter().next().unwrap().await.unwrap(), Ok(5));
        let round_2 = sent(&inputs).expect("the waiting reads' round");
        assert!(sent(&inputs).is_none());
        tokio::task::yield_now().await;
        assert!(
            later.iter().all(|r| !r.is_finished()),
            "round 1 is not theirs"
        );

        // When it is answered, then all ten get its index, and nothing is
        // left in flight: the next read sends its own round.
        round_2.call(Ok(9));
        for read in later {
            assert_eq!(read.await.unwrap(), Ok(9));
        }
        let _next = start_reads(&rounds, 1).await;
        assert!(sent(&inputs).is_some());
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_reads_and_the_next_round_still_leaves() {
        let (tx, inputs) = inbox().unwrap();
        let rounds = ReadRounds::new(tx);

        // Given a round in flight, and a read waiting for the next.
        let first = start_reads(&rounds, 1).await;
        let round_1 = sent(&inputs).expect("a round");
        let second = start_reads(&rounds, 1).await;

        // When the raft thread drops round 1 unanswered (it stopped), then
        // its read fails with Stopped and the next round is sent anyway.
        drop(round_1);
        assert_eq!(
            first.into_iter().next().unwrap().await.unwrap(),
            Err(RequestError::Stopped)
        );
        let round_2 = sent(&inputs).expect("the next round");

        // When that one fails (the leader changed), then so does its read.
        round_2.call(Err(RequestError::LeaderChanged));
        assert_eq!(
            second.into_iter().next().unwrap().await.unwrap(),
            Err(RequestError::LeaderChanged)
        );
    }

    #[tokio::test]
    async fn without_the_raft_thread_reads_fail_at_once() {
        // Given a raft thread that is gone.
        let (tx, inputs) = inbox().unwrap();
        drop(inputs);
        let rounds = ReadRounds::new(tx);

        // Then every read fails with Stopped, the second as the first (the
        // failed send answered the round and left nothing in flight).
        assert_eq!(rounds.read_index().await, Err(RequestError::Stopped));
        assert_eq!(rounds.read_index().await, Err(RequestError::Stopped));
    }

    #[tokio::test]
    async fn a_round_pending_in_the_thread_does_not_keep_the_rounds_alive() {
        let (tx, inputs) = inbox().unwrap();
        let rounds = ReadRounds::new(tx);
        let read = start_reads(&rounds, 1).await;
        let round = sent(&inputs).expect("a round");

        // When every holder of the rounds is gone, then the round the
        // thread still holds answers nobody, and holds no input sender.
        read.into_iter().next().unwrap().abort();
        tokio::task::yield_now().await;
        let weak = Arc::downgrade(&rounds);
        drop(rounds);
        assert!(weak.upgrade().is_none());
        round.call(Ok(1));
        assert!(matches!(inputs.try_recv(), Err(TryRecvError::Disconnected)));
    }
}
