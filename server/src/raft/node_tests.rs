//! The Ready loop against a fake state machine and an in-process network,
//! in phases: no sockets, no store, no member. What is checked is what the
//! node promises its [`StateMachine`]: entries in log order with their
//! indexes, proposers answered through the waiters, conf changes applied
//! (and a member that removed itself stopped), ReadIndex rounds answered
//! only once applied, snapshots taken from and installed into the state
//! machine for a member cut off while the log was compacted.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, SnapshotMetadata};

use super::node::{self, is_snapshot, Transport};
use super::{Input, MemberChange, NodeConfig, RaftHandle, RaftStorage, RequestError};
use super::{StateMachine, Waiters};
use crate::storage::MemoryEngine;

/// What the fake has applied.
#[derive(Debug, Default, Clone, PartialEq)]
struct Applied {
    /// The last applied index.
    index: u64,
    /// Normal entries' data in apply order, with their indexes (empty
    /// entries included: they are what a new leader appends).
    entries: Vec<(u64, Vec<u8>)>,
    /// Conf changes as the node handed them over.
    changes: Vec<(u64, MemberChange, u64, Vec<u8>)>,
    /// Snapshots installed.
    restores: usize,
    /// Whether the loop said it stopped.
    stopped: bool,
}

/// A state machine that records what it is given. Its snapshot is the
/// list of non-empty entries and the applied index.
#[derive(Debug, Default)]
struct Fake {
    state: Mutex<Applied>,
    /// Proposers, keyed by the first 8 bytes of their entry.
    waiters: Waiters<u64>,
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

    fn apply_entry(&self, index: u64, data: &[u8]) -> Result<(), FakeError> {
        let mut state = self.state.lock().unwrap();
        if index <= state.index {
            return Ok(());
        }
        state.index = index;
        state.entries.push((index, data.to_vec()));
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

    fn snapshot(&self) -> Result<Vec<u8>, FakeError> {
        let state = self.state.lock().unwrap();
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
    inputs: Mutex<HashMap<u64, Sender<Input>>>,
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
    thread: Option<std::thread::JoinHandle<()>>,
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
    let log = Arc::new(RaftStorage::open(Arc::new(MemoryEngine::new())).unwrap());
    let mut meta = SnapshotMetadata {
        index: 1,
        term: 1,
        ..Default::default()
    };
    meta.mut_conf_state().voters = voters.to_vec();
    log.apply_snapshot(&meta).unwrap();
    let fake = Arc::new(Fake::default());
    fake.state.lock().unwrap().index = 1;
    let channel = std::sync::mpsc::channel();
    net.inputs.lock().unwrap().insert(id, channel.0.clone());
    let config = NodeConfig {
        id,
        heartbeat: Duration::from_millis(10),
        election_ticks: 10,
        snapshot_count: SNAPSHOT_COUNT,
        catch_up_entries: CATCH_UP,
    };
    let link = Arc::new(Link {
        from: id,
        net: Arc::clone(net),
    });
    let (handle, thread) = node::start(config, log, Arc::clone(&fake), link, channel).unwrap();
    TestNode {
        handle,
        fake,
        thread: Some(thread),
    }
}

/// Waits (up to 10 s) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Proposes `data` (whose first 8 bytes are its proposal id) and waits for
/// the fake to apply it; the index it was applied at.
async fn propose(node: &TestNode, id: u64, tail: &[u8]) -> u64 {
    let mut data = id.to_be_bytes().to_vec();
    data.extend_from_slice(tail);
    let waiter = node.fake.waiters.register(id);
    node.handle.propose(data).await.unwrap();
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
    let net = Arc::new(Network::default());
    let one = start(1, &[1], &net);

    // Phase 1: a lone voter elects itself without waiting for a timeout.
    until("node 1 leads", || one.handle.status().is_leader).await;

    // Phase 2: proposals are applied in log order, each proposer answered
    // with its own entry's index.
    let a = propose(&one, 10, b"a").await;
    let b = propose(&one, 11, b"b").await;
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

    // Phase 3: ReadIndex. Reads queued together are answered together, at
    // an index this member has applied.
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
    let mut data = 12u64.to_be_bytes().to_vec();
    data.push(b'c');
    let waiter = one.fake.waiters.register(12);
    one.handle.propose_as_leader(data).await.unwrap();
    waiter.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_fails_waiters_and_reads() {
    let net = Arc::new(Network::default());
    let mut one = start(1, &[1], &net);
    until("node 1 leads", || one.handle.status().is_leader).await;
    propose(&one, 1, b"x").await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_applies_its_own_removal_stops() {
    let net = Arc::new(Network::default());
    let nodes: Vec<TestNode> = (1..=3).map(|id| start(id, &[1, 2, 3], &net)).collect();
    until("a leader", || {
        nodes.iter().any(|n| n.handle.status().is_leader)
    })
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.handle.status().is_leader)
        .unwrap();
    let victim = (leader + 1) % 3;
    let victim_id = victim as u64 + 1;

    let remove = conf_change(ConfChangeType::RemoveNode, victim_id, b"");
    nodes[leader]
        .handle
        .propose_conf_change(remove)
        .await
        .unwrap();
    until("the removed member stopped", || {
        nodes[victim].handle.status().removed
    })
    .await;
    assert!(nodes[victim].fake.state().stopped);
    until("the others dropped it", || {
        !nodes[leader].handle.status().voters.contains(&victim_id)
    })
    .await;
    // The remaining two still commit.
    propose(&nodes[leader], 5, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_during_compaction_catches_up_by_snapshot() {
    let net = Arc::new(Network::default());
    let nodes: Vec<TestNode> = (1..=3).map(|id| start(id, &[1, 2, 3], &net)).collect();
    until("a leader", || {
        nodes.iter().any(|n| n.handle.status().is_leader)
    })
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.handle.status().is_leader)
        .unwrap();
    let behind = (leader + 1) % 3;

    // Phase 1: cut one follower off, and write enough for the leader to
    // compact its log past everything that follower has.
    net.cut.lock().unwrap().insert(behind as u64 + 1);
    for i in 0..(SNAPSHOT_COUNT + CATCH_UP) * 3 {
        propose(&nodes[leader], 100 + i, format!("v{i}").as_bytes()).await;
    }
    assert_eq!(nodes[behind].fake.state().restores, 0);

    // Phase 2: heal. The follower is behind the leader's first index, so
    // it gets the leader's state machine snapshot and installs it.
    net.cut.lock().unwrap().clear();
    propose(&nodes[leader], 1, b"after").await;
    let target = nodes[leader].fake.applied_index();
    until("the follower caught up", || {
        nodes[behind].fake.applied_index() >= target
    })
    .await;
    assert!(nodes[behind].fake.state().restores >= 1);
    assert_eq!(nodes[behind].fake.data(), nodes[leader].fake.data());
}
