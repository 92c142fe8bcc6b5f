//! The [`Proposer`] in phases, without a cluster: over raft played by the
//! test (a [`ScriptedRaft`] reading the proposer's inputs and deciding
//! what raft answers and publishes), or over a real raft node of one
//! member (a lone voter, or a follower cut off from its peers). tokio's
//! clock is paused: timeouts pass when the runtime has nothing else to
//! do, never by sleeping.

use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::PutRequest;
use raft::eraftpb::ConfChangeType;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use super::test_member::{follower_on, machine_on, member_on, Disk, IDENTITY, REQUEST_TIMEOUT};
use super::{Proposer, Replication};
use crate::entry::Command;
use crate::error::EtcdError;
use crate::lease::LessorConfig;
use crate::raft::{inbox, InboxReceiver, Input, RaftHandle, RaftStatus, RequestError};
use crate::storage::MemoryEngine;

/// How long a proposal may wait once another member leads.
const GRACE: Duration = Duration::from_secs(1);

/// Raft, played by the test: what the proposer hands raft arrives in
/// `inputs`, and the test publishes the status and leadership.
struct ScriptedRaft {
    /// What the proposer sent raft.
    inputs: InboxReceiver,
    /// The status the proposer reads.
    status: watch::Sender<RaftStatus>,
    /// (leader, term), which a waiting proposal watches.
    leadership: watch::Sender<(u64, u64)>,
}

impl ScriptedRaft {
    /// The next input the proposer sends. Polled, yielding to the
    /// proposer's task in between (the paused clock does not move while
    /// this task runs); fails after ten seconds of the wall clock.
    async fn next(&self) -> Input {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.inputs.try_recv() {
                Ok(input) => return input,
                Err(TryRecvError::Disconnected) => panic!("the proposer is gone"),
                Err(TryRecvError::Empty) => {
                    assert!(std::time::Instant::now() < deadline, "no input in time");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// A proposer over a fresh state machine and raft played by the test, in
/// which this member leads at term 2.
fn scripted() -> (Arc<Proposer>, ScriptedRaft) {
    let machine = machine_on(Arc::new(MemoryEngine::new()), LessorConfig::default());
    let (inputs, inputs_rx) = inbox().unwrap();
    let me = IDENTITY.member_id;
    let (status, status_rx) = watch::channel(RaftStatus {
        id: me,
        leader: me,
        term: 2,
        is_leader: true,
        ..RaftStatus::default()
    });
    let (leadership, leadership_rx) = watch::channel((me, 2));
    let (_ending, ending_rx) = watch::channel(crate::raft::Ending::Running);
    let replication = Replication {
        raft: RaftHandle::new(inputs, status_rx, leadership_rx, ending_rx),
        request_timeout: REQUEST_TIMEOUT,
        leader_change_grace: GRACE,
        broken_stale_reads: false,
    };
    let proposer = Arc::new(Proposer::new(machine, IDENTITY, replication));
    let raft = ScriptedRaft {
        inputs: inputs_rx,
        status,
        leadership,
    };
    (proposer, raft)
}

fn put() -> Command {
    Command::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

/// Starts `proposer.propose(put())` on its own task, as a request would.
fn propose_put(
    proposer: &Arc<Proposer>,
) -> tokio::task::JoinHandle<Result<crate::machine::Applied, EtcdError>> {
    let proposer = Arc::clone(proposer);
    tokio::spawn(async move { proposer.propose(put()).await })
}

/// Answers the proposal raft was just handed with `answer`.
async fn answer_proposal(raft: &ScriptedRaft, answer: Result<(), RequestError>) {
    match raft.next().await {
        Input::Propose {
            done,
            leader_only: false,
            ..
        } => done.answer(answer),
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_proposal_raft_refuses_leaves_no_waiter() {
    // Given a proposer whose raft knows no leader.
    let (proposer, raft) = scripted();

    // When a write is proposed and raft drops it, then the caller gets
    // etcd's "no leader" and no waiter is left.
    let write = propose_put(&proposer);
    answer_proposal(&raft, Err(RequestError::NoLeader)).await;
    assert_eq!(write.await.unwrap().unwrap_err(), EtcdError::NoLeader);
    assert_eq!(proposer.machine().waiters().len(), 0);

    // When a conf change is refused the same way, then the same.
    let conf = {
        let proposer = Arc::clone(&proposer);
        tokio::spawn(async move {
            proposer
                .propose_conf_change(ConfChangeType::AddLearnerNode, 9, None)
                .await
        })
    };
    match raft.next().await {
        Input::ConfChange { done, .. } => done.send(Err(RequestError::NoLeader)).unwrap(),
        other => panic!("expected a conf change, got {other:?}"),
    }
    assert_eq!(conf.await.unwrap().unwrap_err(), EtcdError::NoLeader);
    assert_eq!(proposer.machine().waiters().len(), 0);

    // When raft is gone, then the caller gets "server stopped", and still
    // no waiter is left.
    drop(raft);
    assert_eq!(
        proposer.propose(put()).await.unwrap_err(),
        EtcdError::Stopped
    );
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_proposal_never_applied_times_out_and_leaves_no_waiter() {
    // Given a proposer, and raft that takes a proposal and never commits it
    // (say, this leader was cut off).
    let (proposer, raft) = scripted();
    let started = Instant::now();
    let write = propose_put(&proposer);
    answer_proposal(&raft, Ok(())).await;

    // When nothing happens for the request timeout, then the caller gets
    // etcd's "request timed out", not sooner, and no waiter is left.
    let outcome = write.await.unwrap();
    assert_eq!(outcome.unwrap_err(), EtcdError::Timeout);
    assert!(started.elapsed() >= REQUEST_TIMEOUT);
    assert_eq!(proposer.machine().waiters().len(), 0);

    // The same for a conf change.
    let started = Instant::now();
    let conf = {
        let proposer = Arc::clone(&proposer);
        tokio::spawn(async move {
            proposer
                .propose_conf_change(ConfChangeType::RemoveNode, 9, None)
                .await
        })
    };
    match raft.next().await {
        Input::ConfChange { done, .. } => done.send(Ok(())).unwrap(),
        other => panic!("expected a conf change, got {other:?}"),
    }
    assert_eq!(conf.await.unwrap().unwrap_err(), EtcdError::Timeout);
    assert!(started.elapsed() >= REQUEST_TIMEOUT);
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_proposal_lost_with_its_leader_fails_after_the_grace_period() {
    // Given a proposal raft took while this member led.
    let (proposer, raft) = scripted();
    let write = propose_put(&proposer);
    answer_proposal(&raft, Ok(())).await;

    // When another member becomes leader and the proposal is not applied
    // within the grace period.
    let changed = Instant::now();
    raft.leadership.send_replace((0xbeef, 3));

    // Then the caller gets etcd's "possibly due to previous leader
    // failure" after the grace, long before the request timeout, and no
    // waiter is left.
    let outcome = write.await.unwrap();
    assert_eq!(outcome.unwrap_err(), EtcdError::TimeoutDueToLeaderFail);
    assert!(changed.elapsed() >= GRACE && changed.elapsed() < REQUEST_TIMEOUT);
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_leaves_no_waiter() {
    let (proposer, raft) = scripted();

    // Phase 1: the caller gives up (its client went away, so its request's
    // future is dropped) before raft took the proposal.
    let write = propose_put(&proposer);
    let Input::Propose { done, .. } = raft.next().await else {
        panic!("expected a proposal");
    };
    assert_eq!(proposer.machine().waiters().len(), 1);
    write.abort();
    assert!(write.await.unwrap_err().is_cancelled());
    assert_eq!(proposer.machine().waiters().len(), 0);
    drop(done);

    // Phase 2: the caller gives up after raft took it, while waiting for
    // the apply.
    let write = propose_put(&proposer);
    answer_proposal(&raft, Ok(())).await;
    assert_eq!(proposer.machine().waiters().len(), 1);
    write.abort();
    assert!(write.await.unwrap_err().is_cancelled());
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn reads_fail_as_etcd_does_when_raft_cannot_serve_them() {
    let (proposer, raft) = scripted();

    // Phase 1: a ReadIndex round raft never answers times out.
    let started = Instant::now();
    let read = {
        let proposer = Arc::clone(&proposer);
        tokio::spawn(async move { proposer.barrier().await })
    };
    let Input::Read { done: held } = raft.next().await else {
        panic!("expected a read");
    };
    assert_eq!(read.await.unwrap(), Err(EtcdError::Timeout));
    assert!(started.elapsed() >= REQUEST_TIMEOUT);
    // (raft fails a round it cannot serve sooner or later: a leader change
    // does, and a round in flight holds the next reads back)
    held.call(Err(RequestError::LeaderChanged));

    // Phase 2: a round that fails (the leader changed) fails the read.
    let read = {
        let proposer = Arc::clone(&proposer);
        tokio::spawn(async move { proposer.barrier().await })
    };
    let Input::Read { done } = raft.next().await else {
        panic!("expected a read");
    };
    done.call(Err(RequestError::LeaderChanged));
    assert_eq!(read.await.unwrap(), Err(EtcdError::LeaderChanged));

    // Phase 3: a learner refuses linearizable reads without asking raft.
    raft.status.send_modify(|s| s.is_learner = true);
    assert_eq!(
        proposer.barrier().await,
        Err(EtcdError::NotSupportedForLearner)
    );
    assert!(matches!(raft.inputs.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test(start_paused = true)]
async fn a_follower_refuses_leader_only_proposals_as_etcd_does() {
    // Given a member of {me, 2, 3} that never reaches 2 and 3: a real raft
    // node that follows and knows no leader.
    let member = follower_on(&Disk::new(), &[2, 3]);
    let proposer = member.proposer();
    assert!(!proposer.raft_status().is_leader);

    // When it is asked for a decision only a leader may take, then raft
    // refuses it as "not leader", which the gRPC layer maps to etcd's
    // FailedPrecondition "etcdserver: not leader"; no waiter is left.
    let refused = proposer.propose_as_leader(put()).await.unwrap_err();
    assert_eq!(refused, EtcdError::NotLeader);
    let status = crate::grpc::status::to_status(refused);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "etcdserver: not leader");
    assert_eq!(proposer.machine().waiters().len(), 0);

    // When it is asked for an ordinary write, then raft has no leader to
    // forward it to: "no leader" (Unavailable), and no waiter either.
    let dropped = proposer.propose(put()).await.unwrap_err();
    assert_eq!(dropped, EtcdError::NoLeader);
    assert_eq!(
        crate::grpc::status::to_status(dropped).code(),
        Code::Unavailable
    );
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn read_index_requests_arriving_together_are_all_answered() {
    // Given a lone voter with a write applied.
    let member = member_on(&Disk::new(), LessorConfig::default());
    let proposer = Arc::clone(member.proposer());
    proposer.propose(put()).await.unwrap();
    let applied = proposer.raft_status().applied;

    // When twenty linearizable reads arrive together (raft's thread
    // queues them into one ReadIndex round: see raft/node/read_index.rs).
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let proposer = Arc::clone(&proposer);
        reads.spawn(async move { proposer.barrier().await });
    }

    // Then every one is answered, and may read at least the applied write.
    let mut answered = 0;
    while let Some(read) = reads.join_next().await {
        read.unwrap().unwrap();
        answered += 1;
    }
    assert_eq!(answered, 20);
    assert!(proposer.raft_status().applied >= applied);
    assert_eq!(proposer.machine().waiters().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lone_voter_serves_linearizable_reads_without_a_readindex_round() {
    let (proposer, raft) = scripted();

    // Phase 1: the only voter, leading, with all it committed applied:
    // raft would answer at once, so the read does not ask it.
    raft.status.send_modify(|s| {
        s.reads_alone = true;
        s.commit = 7;
        s.applied = 7;
    });
    assert_eq!(proposer.barrier().await, Ok(()));
    assert!(matches!(raft.inputs.try_recv(), Err(TryRecvError::Empty)));

    // Phase 2: committed entries not applied yet (a restart's replay):
    // the read asks raft, and waits for its answer.
    raft.status.send_modify(|s| s.applied = 6);
    let read = {
        let proposer = Arc::clone(&proposer);
        tokio::spawn(async move { proposer.barrier().await })
    };
    let Input::Read { done } = raft.next().await else {
        panic!("expected a read");
    };
    done.call(Ok(7));
    assert_eq!(read.await.unwrap(), Ok(()));
}
