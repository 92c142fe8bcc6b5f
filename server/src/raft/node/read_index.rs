//! ReadIndex batching: every linearizable read queued since the last round
//! shares one `read_index` round of raft, answered once this member has
//! applied up to the index raft returns.
//!
//! One round at a time: reads queued while a round is in flight wait for
//! it to be answered and go in the next one (etcd's
//! `linearizableReadLoop` keeps one request in flight the same way). A
//! member's own reads already come one round at a time
//! (`super::read_rounds`); on the leader the queue also holds the
//! followers' forwarded requests (`Node::join_forwarded_read`), which raft
//! would otherwise answer with a heartbeat round each.
//!
//! The queue knows nothing of raft: the node hands it reads, asks it which
//! round contexts to give raft's `read_index`, tells it the read states
//! raft returns, and the applied index. So it is tested without any raft.
//!
//! A round's context must be unique in the whole cluster, not only on this
//! member: a follower's round is forwarded to the leader, whose raft keeps
//! its pending rounds by context and silently drops one whose context is
//! already pending. With a counter alone, every member counted 1, 2, 3…,
//! and a follower's round that met a pending round of the leader (or of the
//! other follower) with the same number waited for the retry: a tail of
//! about `retry` on linearizable reads under load. So a context is the
//! member's id, then its counter (etcd's request ids carry the member id
//! too).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::raft::RequestError;

/// Where a read's answer goes: the read index, or why there is none.
pub(super) type Reader = super::handle::ReadDone;

/// A batch of linearizable reads waiting for one ReadIndex round.
struct Round {
    /// The readers.
    readers: Vec<Reader>,
    /// When the round was (last) issued: unanswered rounds are re-issued.
    issued: Instant,
}

/// Reads queued, in a round, or waiting for the apply.
pub(super) struct ReadIndexQueue {
    /// Reads not yet in a round.
    queued: Vec<Reader>,
    /// Rounds in flight, by context.
    rounds: HashMap<u64, Round>,
    /// Rounds raft answered, waiting for the apply to reach their index.
    ready: Vec<(u64, Round)>,
    /// This member's id: the first half of every context it issues.
    member: u64,
    /// Counter of the next round (never 0, which no round has): the second
    /// half of its context.
    next: u64,
    /// How long a round may go unanswered before it is issued again (a
    /// leader drops ReadIndex until it has committed an entry of its term;
    /// a message may be lost).
    retry: Duration,
}

impl ReadIndexQueue {
    /// An empty queue of member `member`, re-issuing rounds unanswered for
    /// `retry`.
    pub(super) fn new(member: u64, retry: Duration) -> Self {
        Self {
            queued: Vec::new(),
            rounds: HashMap::new(),
            ready: Vec::new(),
            member,
            next: 1,
            retry,
        }
    }

    /// Queues a read for the next round.
    pub(super) fn push(&mut self, reader: Reader) {
        self.queued.push(reader);
    }

    /// The round contexts to give raft's `read_index` now: the round
    /// unanswered for `retry`, or, when no round is in flight, one new
    /// round for every read queued since the last. Without a leader, the
    /// queued reads fail at once (`NoLeader`) and nothing is issued.
    pub(super) fn issue(&mut self, has_leader: bool, now: Instant) -> Vec<Vec<u8>> {
        if !has_leader {
            for reader in self.queued.drain(..) {
                reader.call(Err(RequestError::NoLeader));
            }
            return Vec::new();
        }
        let mut contexts = Vec::new();
        for (ctx, round) in self.rounds.iter_mut() {
            if now.duration_since(round.issued) >= self.retry {
                round.issued = now;
                contexts.push(context(self.member, *ctx));
            }
        }
        if self.queued.is_empty() || !self.rounds.is_empty() {
            return contexts;
        }
        let ctx = self.next;
        self.next += 1;
        self.rounds.insert(
            ctx,
            Round {
                readers: std::mem::take(&mut self.queued),
                issued: now,
            },
        );
        contexts.push(context(self.member, ctx));
        contexts
    }

    /// raft answered the round with context `ctx`: its reads may be served
    /// once `index` is applied. A context of no round in flight (answered
    /// twice, or failed meanwhile) is ignored.
    pub(super) fn read_state(&mut self, ctx: &[u8], index: u64) {
        let Some((member, ctx)) = ctx.split_at_checked(8) else {
            return;
        };
        if member != self.member.to_be_bytes() {
            return;
        }
        let ctx = <[u8; 8]>::try_from(ctx)
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if let Some(round) = self.rounds.remove(&ctx) {
            self.ready.push((index, round));
        }
    }

    /// Answers the reads of every round whose index is `applied` or below.
    pub(super) fn answer(&mut self, applied: u64) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready = waiting;
        for (index, round) in done {
            for reader in round.readers {
                reader.call(Ok(index));
            }
        }
    }

    /// Fails every read (in a round, answered but not applied, or queued).
    pub(super) fn fail_all(&mut self, error: RequestError) {
        let rounds = self.rounds.drain().map(|(_, r)| r);
        let ready = self.ready.drain(..).map(|(_, r)| r);
        for round in rounds.chain(ready) {
            for reader in round.readers {
                reader.call(Err(error));
            }
        }
        for reader in self.queued.drain(..) {
            reader.call(Err(error));
        }
    }
}

/// The context of round `counter` of member `member`: both, big-endian.
fn context(member: u64, counter: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&member.to_be_bytes());
    ctx.extend_from_slice(&counter.to_be_bytes());
    ctx
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    const RETRY: Duration = Duration::from_millis(200);
    const MEMBER: u64 = 0x8e9e05c52164694d;

    type Answer = oneshot::Receiver<Result<u64, RequestError>>;

    /// `n` reads queued on `queue`, and where their answers arrive.
    fn queue_reads(queue: &mut ReadIndexQueue, n: usize) -> Vec<Answer> {
        (0..n)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                queue.push(Reader::new(move |answer| {
                    let _ = tx.send(answer);
                }));
                rx
            })
            .collect()
    }

    /// The answer each read has now (None: not answered yet).
    fn answers(reads: &mut [Answer]) -> Vec<Option<Result<u64, RequestError>>> {
        reads.iter_mut().map(|r| r.try_recv().ok()).collect()
    }

    #[test]
    fn reads_arriving_together_share_one_round_and_are_all_answered() {
        let mut queue = ReadIndexQueue::new(MEMBER, RETRY);
        let start = Instant::now();

        // Given twenty reads queued between two rounds of the loop.
        let mut reads = queue_reads(&mut queue, 20);

        // When the loop issues reads, then raft gets ONE read_index round.
        let issued = queue.issue(true, start);
        assert_eq!(issued.len(), 1, "one round for the whole batch");
        let ctx = issued[0].clone();
        // ... and nothing more on the next rounds of the loop.
        assert!(queue.issue(true, start + RETRY / 2).is_empty());

        // When raft answers the round at index 7 while 6 is applied, then
        // no read is answered: the state is not there yet.
        queue.read_state(&ctx, 7);
        queue.answer(6);
        assert!(answers(&mut reads).iter().all(Option::is_none));

        // When 7 is applied, then every read of the batch gets index 7.
        queue.answer(7);
        assert_eq!(answers(&mut reads), vec![Some(Ok(7)); 20]);
    }

    #[test]
    fn an_unanswered_round_is_issued_again_after_the_retry() {
        let mut queue = ReadIndexQueue::new(MEMBER, RETRY);
        let start = Instant::now();

        // Given a round raft has not answered (a new leader drops ReadIndex
        // until it committed an entry of its term).
        let mut reads = queue_reads(&mut queue, 3);
        let first = queue.issue(true, start);

        // When the retry interval passes, then the same round (same
        // context, same readers) is issued again, once.
        assert_eq!(queue.issue(true, start + RETRY), first);
        assert!(queue.issue(true, start + RETRY).is_empty());

        // When raft answers it, then its readers are answered once applied.
        queue.read_state(&first[0], 4);
        queue.answer(4);
        assert_eq!(answers(&mut reads), vec![Some(Ok(4)); 3]);
    }

    #[test]
    fn reads_queued_after_a_round_left_wait_for_the_next_one() {
        let mut queue = ReadIndexQueue::new(MEMBER, RETRY);
        let now = Instant::now();

        // Given one round in flight, and reads queued after it left.
        let mut early = queue_reads(&mut queue, 2);
        let first = queue.issue(true, now);
        let mut late = queue_reads(&mut queue, 2);

        // Then no round leaves for them while the first is in flight.
        assert!(queue.issue(true, now).is_empty());

        // When the first round is answered, then only its reads are, and
        // the late ones leave as a round of their own.
        queue.read_state(&first[0], 5);
        queue.answer(5);
        assert_eq!(answers(&mut early), vec![Some(Ok(5)); 2]);
        assert_eq!(answers(&mut late), vec![None, None]);
        let second = queue.issue(true, now);
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_ne!(first, second);

        // A read state for a context no round has changes nothing.
        queue.read_state(&first[0], 9);
        queue.read_state(b"garbage", 9);
        queue.answer(9);
        assert_eq!(answers(&mut late), vec![None, None]);
    }

    #[test]
    fn without_a_leader_queued_reads_fail_at_once() {
        let mut queue = ReadIndexQueue::new(MEMBER, RETRY);

        // Given reads queued while no leader is known.
        let mut reads = queue_reads(&mut queue, 2);

        // When the loop issues reads, then raft gets nothing and the reads
        // fail with "no leader".
        assert!(queue.issue(false, Instant::now()).is_empty());
        assert_eq!(
            answers(&mut reads),
            vec![Some(Err(RequestError::NoLeader)); 2]
        );
    }

    #[test]
    fn failing_all_reaches_every_read_wherever_it_waits() {
        let mut queue = ReadIndexQueue::new(MEMBER, RETRY);
        let now = Instant::now();

        // Given a read waiting for the apply, one in a round and one queued.
        let mut applied_later = queue_reads(&mut queue, 1);
        let answered = queue.issue(true, now);
        queue.read_state(&answered[0], 10);
        let mut in_round = queue_reads(&mut queue, 1);
        queue.issue(true, now);
        let mut queued = queue_reads(&mut queue, 1);

        // When the leader changes, then every one of them is failed.
        queue.fail_all(RequestError::LeaderChanged);
        for reads in [&mut applied_later, &mut in_round, &mut queued] {
            assert_eq!(answers(reads), vec![Some(Err(RequestError::LeaderChanged))]);
        }

        // And nothing is left to answer later.
        queue.answer(u64::MAX);
        assert!(queue.issue(true, now + RETRY).is_empty());
    }

    #[test]
    fn rounds_of_different_members_never_share_a_context() {
        // Given three members, each issuing its first rounds.
        let now = Instant::now();
        let mut members: Vec<ReadIndexQueue> = [MEMBER, 2, 3]
            .into_iter()
            .map(|id| ReadIndexQueue::new(id, RETRY))
            .collect();
        let mut contexts = Vec::new();
        for _ in 0..3 {
            for queue in &mut members {
                let _read = queue_reads(queue, 1);
                let issued = queue.issue(true, now);
                queue.read_state(&issued[0], 1);
                queue.answer(1);
                contexts.extend(issued);
            }
        }
        // Then no two rounds anywhere have the same context (the leader's
        // raft drops a round whose context is already pending).
        let distinct: std::collections::HashSet<_> = contexts.iter().collect();
        assert_eq!((contexts.len(), distinct.len()), (9, 9));
        // And a member answers only its own rounds: another member's
        // context with the same counter is not its round.
        let (first, others) = members.split_first_mut().unwrap();
        let mut mine = queue_reads(first, 1);
        let mut their_reads = queue_reads(&mut others[0], 1);
        first.issue(true, now);
        let theirs = others[0].issue(true, now);
        first.read_state(&theirs[0], 5);
        first.answer(5);
        assert_eq!(answers(&mut mine), vec![None]);
        others[0].read_state(&theirs[0], 5);
        others[0].answer(5);
        assert_eq!(answers(&mut their_reads), vec![Some(Ok(5))]);
    }
}
