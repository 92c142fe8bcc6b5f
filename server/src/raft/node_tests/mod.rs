//! The Ready loop against a fake state machine and an in-process network,
//! in phases: no sockets, no store, no member. What is checked is what the
//! node promises its [`StateMachine`]: entries in log order with their
//! indexes, proposers answered through the waiters, conf changes applied
//! (and a member that removed itself stopped), ReadIndex rounds answered
//! only once applied, snapshots taken from and installed into the state
//! machine (for a member cut off while the log was compacted, and for a
//! lone follower fed by a scripted leader, in `scripted_leader`),
//! leader-only proposals refused by a follower, the log kept for
//! followers (`log_retention`), and a leader's rounds shared by its
//! followers' ReadIndex requests (`forwarded_reads`).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
use ::raft::Storage as _;

use super::node::{self, is_snapshot, Inbox, InboxReceiver, Transport};
use super::{Ending, Input, MemberChange, NodeConfig, RaftHandle, RaftStorage, RequestError};
use super::{StateMachine, Waiters};
use crate::storage::MemoryEngine;

mod forwarded_reads;
mod log_retention;
mod scripted_leader;

/// What the fake has applied.
#[derive(Debug, Default, Clone, PartialEq)]
struct Applied {
    /// The last applied index.
    index: u64,
    /// Normal entries' data (the first [`KEPT`] bytes) in apply order, with
    /// their indexes (empty entries included: they are what a new leader
    /// appends).
    entries: Vec<(u64, Vec<u8>)>,
    /// Conf changes as the node handed them over.
    changes: Vec<(u64, MemberChange, u64, Vec<u8>)>,
    /// Snapshots installed.
    restores: usize,
    /// Whether the loop said it stopped.
    stopped: bool,
    /// Times the node asked it to persist.
    persists: usize,
}

/// Bytes of each entry's data the fake keeps.
const KEPT: usize = 64;

/// A state machine that records what it is given. Its snapshot is the
/// list of non-empty entries and the applied index.
#[derive(Debug, Default)]
struct Fake {
    state: Mutex<Applied>,
    /// Proposers, keyed by the first 8 bytes of their entry.
    waiters: Waiters<u64>,
    /// When set, the applied index the fake says a crash would keep (a
    /// state machine whose applies reach the disk later); else all.
    durable: Mutex<Option<u64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("fake state machine: {0}")]
struct FakeError(&'static str);

impl Fake {
    fn state(&self) -> Applied {
        self.state.lock().unwrap().clone()
    }

    fn data(&self) -> Vec<Vec<u8>> {
        let state = self.state();
        state
            .entries
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(_, d)| d)
            .collect()
    }
}

impl StateMachine for Fake {
    type Error = FakeError;

    fn applied_index(&self) -> u64 {
        self.state.lock().unwrap().index
    }

    fn durable_applied_index(&self) -> Result<u64, FakeError> {
        let applied = self.applied_index();
        Ok(self
            .durable
            .lock()
            .unwrap()
            .map_or(applied, |d| d.min(applied)))
    }

    fn persist(&self) -> Result<(), FakeError> {
        self.state.lock().unwrap().persists += 1;
        Ok(())
    }

    fn apply_entry(&self, index: u64, data: &bytes::Bytes) -> Result<(), FakeError> {
        assert!(!data.ends_with(PANIC), "told to panic");
        let mut state = self.state.lock().unwrap();
        if index <= state.index {
            return Ok(());
        }
        state.index = index;
        // A prefix tells proposals apart and keeps large ones cheap to hold
        // (and within the snapshot's one-byte lengths).
        state
            .entries
            .push((index, data[..data.len().min(KEPT)].to_vec()));
        drop(state);
        if let Some(id) = data.get(..8) {
            self.waiters
                .answer(u64::from_be_bytes(id.try_into().unwrap()), index);
        }
        Ok(())
    }

    fn apply_member_change(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), FakeError> {
        let mut state = self.state.lock().unwrap();
        if index <= state.index {
            return Ok(());
        }
        state.index = index;
        state.changes.push((index, change, node, context.to_vec()));
        Ok(())
    }

    fn snapshot(&self, fixed: &mut dyn FnMut(u64)) -> Result<Vec<u8>, FakeError> {
        let state = self.state.lock().unwrap();
        fixed(state.index);
        let mut out = state.index.to_be_bytes().to_vec();
        for (_, d) in state.entries.iter().filter(|(_, d)| !d.is_empty()) {
            out.push(u8::try_from(d.len()).map_err(|_| FakeError("entry too long"))?);
            out.extend_from_slice(d);
        }
        Ok(out)
    }

    fn restore(&self, data: &[u8]) -> Result<(), FakeError> {
        let (index, mut rest) = data
            .split_at_checked(8)
            .ok_or(FakeError("short snapshot"))?;
        let mut entries = Vec::new();
        while let Some((&len, tail)) = rest.split_first() {
            let (d, tail) = tail
                .split_at_checked(len as usize)
                .ok_or(FakeError("truncated snapshot"))?;
            entries.push((0, d.to_vec()));
            rest = tail;
        }
        let mut state = self.state.lock().unwrap();
        state.index = u64::from_be_bytes(index.try_into().unwrap());
        state.entries = entries;
        state.restores += 1;
        Ok(())
    }

    fn stopped(&self) {
        self.state.lock().unwrap().stopped = true;
        self.waiters.fail_all(|| 0);
    }
}

/// The in-process network: every node's inputs, and the members cut off.
#[derive(Default)]
struct Network {
    inputs: Mutex<HashMap<u64, Inbox>>,
    cut: Mutex<HashSet<u64>>,
}

/// One node's end of the [`Network`].
struct Link {
    from: u64,
    net: Arc<Network>,
}

impl Transport for Link {
    fn send(&self, messages: Vec<Message>) {
        let inputs = self.net.inputs.lock().unwrap();
        let cut = self.net.cut.lock().unwrap();
        for msg in messages {
            let to = msg.to;
            let snapshot = is_snapshot(&msg);
            let delivered = !cut.contains(&to)
                && !cut.contains(&self.from)
                && inputs
                    .get(&to)
                    .is_some_and(|i| i.send(Input::Step(msg)).is_ok());
            if let Some(me) = inputs.get(&self.from) {
                let report = if snapshot {
                    Some(Input::SnapshotSent {
                        to,
                        failed: !delivered,
                    })
                } else {
                    (!delivered).then_some(Input::Unreachable(to))
                };
                if let Some(report) = report {
                    let _ = me.send(report);
                }
            }
        }
    }
}

/// A running node and what it drives.
struct TestNode {
    handle: RaftHandle,
    fake: Arc<Fake>,
    /// Its raft log, to check what a snapshot did to it.
    log: Arc<RaftStorage>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where the log's files are, removed after the node stops.
    _log_dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.handle.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SNAPSHOT_COUNT: u64 = 10;
const CATCH_UP: u64 = 3;

/// Starts node `id` of a cluster of `voters`, bootstrapped (as embed does)
/// by a snapshot at index 1.
fn start(id: u64, voters: &[u64], net: &Arc<Network>) -> TestNode {
    start_with(id, voters, net, SNAPSHOT_COUNT)
}

/// [`start`], compacting the log by count every `snapshot_count` entries.
fn start_with(id: u64, voters: &[u64], net: &Arc<Network>, snapshot_count: u64) -> TestNode {
    let (log, log_dir) = crate::raft::log_in_temp_dir(Arc::new(MemoryEngine::new()));
    let log = Arc::new(log);
    let mut meta = SnapshotMetadata {
        index: 1,
        term: 1,
        ..Default::default()
    };
    meta.mut_conf_state().voters = voters.to_vec();
    log.apply_snapshot(&meta).unwrap();
    run(id, net, snapshot_count, log, log_dir)
}

/// Runs node `id` over `log`, with a state machine at the bootstrap
/// snapshot's index 1 (a restart over a longer log replays the rest).
fn run(
    id: u64,
    net: &Arc<Network>,
    snapshot_count: u64,
    log: Arc<RaftStorage>,
    log_dir: tempfile::TempDir,
) -> TestNode {
    let fake = Arc::new(Fake::default());
    fake.state.lock().unwrap().index = 1;
    let channel = node::inbox().unwrap();
    net.inputs.lock().unwrap().insert(id, channel.0.clone());
    let config = NodeConfig {
        id,
        heartbeat: Duration::from_millis(10),
        election_ticks: 10,
        snapshot_count,
        catch_up_entries: CATCH_UP,
    };
    let link = Arc::new(Link {
        from: id,
        net: Arc::clone(net),
    });
    let (handle, thread) = node::start(
        config,
        Arc::clone(&log),
        Arc::clone(&fake),
        link,
        channel,
        None,
    )
    .unwrap();
    TestNode {
        handle,
        fake,
        log,
        thread: Some(thread),
        _log_dir: log_dir,
    }
}

/// Nodes `1..=n` of one cluster on one in-process network, once one of
/// them leads: every test's "given".
struct Cluster {
    /// The network, to cut members off and heal.
    net: Arc<Network>,
    /// Node `i + 1` at `i`.
    nodes: Vec<TestNode>,
    /// The position of the node that led once all had started.
    leader: usize,
}

impl Cluster {
    /// Starts nodes `1..=n`, all voters, and waits until one leads.
    async fn start(n: u64) -> Self {
        Self::start_with(n, SNAPSHOT_COUNT).await
    }

    /// [`Cluster::start`], compacting by count every `snapshot_count`.
    async fn start_with(n: u64, snapshot_count: u64) -> Self {
        let net = Arc::new(Network::default());
        let voters: Vec<u64> = (1..=n).collect();
        let nodes: Vec<TestNode> = voters
            .iter()
            .map(|id| start_with(*id, &voters, &net, snapshot_count))
            .collect();
        until("a leader", || {
            nodes.iter().any(|n| n.handle.status().is_leader)
        })
        .await;
        let leader = nodes
            .iter()
            .position(|n| n.handle.status().is_leader)
            .unwrap();
        Self { net, nodes, leader }
    }

    /// The leader.
    fn leader(&self) -> &TestNode {
        &self.nodes[self.leader]
    }

    /// A node that is not the leader (position and id).
    fn follower(&self) -> (usize, u64) {
        let at = (self.leader + 1) % self.nodes.len();
        (at, at as u64 + 1)
    }
}

/// Waits (up to 10 s) until `f` holds. The raft thread runs on the wall
/// clock (its ticks are real), so this polls.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The data of a proposal: its id (what the fake answers its waiter by),
/// then `tail`.
fn proposal(id: u64, tail: &[u8]) -> Vec<u8> {
    let mut data = id.to_be_bytes().to_vec();
    data.extend_from_slice(tail);
    data
}

/// Proposes `data` (whose first 8 bytes are its proposal id) and waits for
/// the fake to apply it; the index it was applied at.
async fn propose(node: &TestNode, id: u64, tail: &[u8]) -> u64 {
    let waiter = node.fake.waiters.register(id);
    node.handle.propose(proposal(id, tail)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("applied in time")
        .expect("answered")
}

fn conf_change(kind: ConfChangeType, node: u64, context: &[u8]) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = node;
    let mut change = ConfChangeV2::default();
    change.mut_changes().push(single);
    change.context = context.to_vec().into();
    change
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_applies_answers_reads_and_changes_membership() {
    // Phase 1: a lone voter elects itself without waiting for a timeout.
    let cluster = Cluster::start(1).await;
    let one = cluster.leader();

    // Phase 2: proposals are applied in log order, each proposer answered
    // with its own entry's index.
    let a = propose(one, 10, b"a").await;
    let b = propose(one, 11, b"b").await;
    assert!(b > a, "{a} then {b}");
    let applied = one.fake.state();
    let positions: Vec<u64> = applied
        .entries
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(positions, vec![a, b]);
    assert!(one.fake.waiters.is_empty());

    // Phase 3: ReadIndex. A lone voter that leads reads alone (from its
    // status, without a round of the loop), at an index it has applied.
    until("the lone voter reads alone", || {
        one.handle.status().reads_alone
    })
    .await;
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let handle = one.handle.clone();
        reads.spawn(async move { handle.read_index().await });
    }
    while let Some(read) = reads.join_next().await {
        let index = read.unwrap().unwrap();
        assert!(index >= b && index <= one.fake.applied_index());
    }

    // Phase 4: conf changes reach the state machine with their context,
    // and raft's configuration follows.
    let add = conf_change(ConfChangeType::AddLearnerNode, 2, b"ctx");
    one.handle.propose_conf_change(add).await.unwrap();
    until("learner 2 applied", || !one.fake.state().changes.is_empty()).await;
    let (_, kind, node, context) = one.fake.state().changes[0].clone();
    assert_eq!(
        (kind, node, context),
        (MemberChange::AddLearner, 2, b"ctx".to_vec())
    );
    until("status lists learner 2", || {
        one.handle.status().learners.contains(&2)
    })
    .await;

    // Phase 5: a leader-only proposal on the leader goes through.
    let waiter = one.fake.waiters.register(12);
    one.handle
        .propose_as_leader(proposal(12, b"c"))
        .await
        .unwrap();
    waiter.await.unwrap();

    // Phase 6: removing the learner reaches the state machine, and raft's
    // configuration drops it.
    let remove = conf_change(ConfChangeType::RemoveNode, 2, b"bye");
    one.handle.propose_conf_change(remove).await.unwrap();
    until("learner 2 removed", || one.fake.state().changes.len() == 2).await;
    let (_, kind, node, context) = one.fake.state().changes[1].clone();
    assert_eq!(
        (kind, node, context),
        (MemberChange::Remove, 2, b"bye".to_vec())
    );
    until("status drops learner 2", || {
        one.handle.status().learners.is_empty()
    })
    .await;

    // Phase 7: removing the last voter is refused by raft when it applies:
    // the state machine hears no member change, the entry's index is still
    // consumed (as an empty entry), and the member goes on leading.
    let before = one.fake.applied_index();
    let last = conf_change(ConfChangeType::RemoveNode, 1, b"");
    one.handle.propose_conf_change(last).await.unwrap();
    until("the refused change applied", || {
        one.fake.applied_index() > before
    })
    .await;
    let state = one.fake.state();
    assert_eq!(state.changes.len(), 2, "no member change for the refusal");
    assert_eq!(state.entries.last(), Some(&(state.index, Vec::new())));
    let status = one.handle.status();
    assert!(status.is_leader);
    assert_eq!(*one.handle.ending().borrow(), Ending::Running);
    assert_eq!(status.voters.into_iter().collect::<Vec<_>>(), vec![1]);
    propose(one, 13, b"still").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_fails_waiters_and_reads() {
    let mut cluster = Cluster::start(1).await;
    let one = &mut cluster.nodes[0];
    propose(one, 1, b"x").await;

    // A proposer still waiting when the loop stops is told so.
    let waiting = one.fake.waiters.register(99);
    one.handle.send(Input::Stop);
    one.thread.take().unwrap().join().unwrap();
    assert!(one.fake.state().stopped);
    assert_eq!(waiting.await, Ok(0));

    // Everything sent afterwards is refused as stopped.
    assert_eq!(
        one.handle.propose(b"late".to_vec()).await,
        Err(RequestError::Stopped)
    );
    assert_eq!(one.handle.read_index().await, Err(RequestError::Stopped));
}

/// The tail of a proposal that makes [`Fake`] panic as it applies it.
const PANIC: &[u8] = b"panic!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_raft_thread_fails_the_loop_as_an_error_does() {
    let mut cluster = Cluster::start(1).await;
    let one = &mut cluster.nodes[0];
    propose(one, 1, b"x").await;
    one.handle.propose(proposal(2, PANIC)).await.unwrap();
    until("the loop failed", || {
        *one.handle.ending().borrow() == Ending::Failed
    })
    .await;
    let status = one.handle.status();
    assert!(!status.is_leader && status.leader == 0, "{status:?}");
    one.thread.take().unwrap().join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_applies_its_own_removal_stops() {
    let cluster = Cluster::start(3).await;
    let (victim, victim_id) = cluster.follower();

    let remove = conf_change(ConfChangeType::RemoveNode, victim_id, b"");
    cluster
        .leader()
        .handle
        .propose_conf_change(remove)
        .await
        .unwrap();
    until("the removed member stopped", || {
        *cluster.nodes[victim].handle.ending().borrow() == Ending::Removed
    })
    .await;
    assert!(cluster.nodes[victim].fake.state().stopped);
    until("the others dropped it", || {
        !cluster.leader().handle.status().voters.contains(&victim_id)
    })
    .await;
    // The remaining two still commit.
    propose(cluster.leader(), 5, b"after").await;
}
