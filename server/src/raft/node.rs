//! The raft node: one thread that owns the `RawNode` and runs the Ready loop.
//!
//! Everything that touches raft goes through [`Input`]s sent to this thread:
//! proposals, conf changes, ReadIndex requests, messages from peers, ticks.
//! The thread handles every input queued so far, then processes one Ready in
//! the order raft-rs documents:
//!
//! 1. send `messages` (a leader may send before it persists);
//! 2. install a snapshot, if raft has one for us (state machine first, then
//!    the log: a crash in between leaves the state ahead of the log, which
//!    replay tolerates because applying is idempotent by index);
//! 3. apply the committed entries (each one's effects written with its
//!    index, see [`StateMachine`]);
//! 4. persist the new entries and the hard state in ONE write, synced when
//!    raft says it must be (entries, term, vote): this is the group commit,
//!    every proposal gathered since the last Ready costs one fsync together;
//! 5. send `persisted_messages` (votes and appends answers, which must not
//!    leave before what they promise is on disk);
//! 6. note the ReadIndex results;
//! 7. advance, then repeat 1 and 3 for the light ready, and advance apply.
//!
//! Proposals are answered through the state machine's waiters (keyed by the
//! proposal id inside the entry), never through a queue here, so a proposal
//! forwarded by a follower and applied anywhere wakes the right client.
//! ReadIndex requests are batched: one `read_index` round serves every read
//! queued since the last round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use ::raft::{Config, GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage};
use protobuf::Message as _;
use tokio::sync::{oneshot, watch};

use super::{Error, MemberChange, RaftStorage, RequestError, StateMachine};

/// Where raft messages go. `send` must never block: a full queue drops the
/// message (raft retransmits) and reports the peer unreachable.
pub trait Transport: Send + Sync + 'static {
    /// Sends `messages` to their `to` members.
    fn send(&self, messages: Vec<Message>);
}

/// Something for the raft thread to do.
#[derive(Debug)]
pub enum Input {
    /// Propose a normal entry; `done` says whether raft took it.
    Propose {
        /// The entry's data (an encoded `cairnpb.RaftRequest`).
        data: Vec<u8>,
        /// Only if this member leads now: appended to its own log, never
        /// forwarded (`NotLeader` otherwise). For decisions only the leader
        /// may take (revoking expired leases, lease checkpoints): a deposed
        /// leader that has not noticed yet must not get them committed by
        /// its successor, whose lessor knows better.
        leader_only: bool,
        /// Ok once appended to the leader's log (or forwarded to it).
        done: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Propose a membership change.
    ConfChange {
        /// The change (one change per proposal).
        change: ConfChangeV2,
        /// Ok once proposed.
        done: oneshot::Sender<Result<(), RequestError>>,
    },
    /// A linearizable read: answered with the read index once this member
    /// has applied up to it.
    Read {
        /// The read index, or why there is none.
        done: oneshot::Sender<Result<u64, RequestError>>,
    },
    /// A message from a peer.
    Step(Message),
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// How sending a snapshot to a peer ended.
    SnapshotSent {
        /// The peer.
        to: u64,
        /// Whether it failed.
        failed: bool,
    },
    /// Hand the leadership to another member (MoveLeader).
    TransferLeader(u64),
    /// Campaign now (a lone voter does not wait for an election timeout).
    Campaign,
    /// Stop the thread.
    Stop,
}

/// What the rest of the member may know about raft, published after every
/// round of the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member's id.
    pub id: u64,
    /// The leader this member knows (0: none).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The highest log index known to be committed.
    pub commit: u64,
    /// The last applied index.
    pub applied: u64,
    /// This member's role.
    pub is_leader: bool,
    /// Whether this member is a learner.
    pub is_learner: bool,
    /// Voters of the current configuration.
    pub voters: BTreeSet<u64>,
    /// Learners of the current configuration.
    pub learners: BTreeSet<u64>,
    /// On the leader: each member's matched index (what it has in its log).
    pub matched: BTreeMap<u64, u64>,
    /// On the leader: members heard from within the last election timeout.
    pub active: BTreeSet<u64>,
    /// Set when the loop stopped because of a failure.
    pub failed: bool,
    /// Set when this member applied its own removal from the cluster: the
    /// loop has stopped and the member must stop serving (etcd exits).
    pub removed: bool,
}

/// Timing and sizes of the node (etcd's flags).
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    /// This member's id.
    pub id: u64,
    /// `--heartbeat-interval`: one raft tick.
    pub heartbeat: Duration,
    /// `--election-timeout`, in ticks of `heartbeat`.
    pub election_ticks: usize,
    /// `--snapshot-count`: compact the log once this many entries were
    /// applied since the last compaction.
    pub snapshot_count: u64,
    /// Entries kept after a compaction, so that a slightly slow follower
    /// catches up from the log rather than by snapshot (etcd: 5,000).
    pub catch_up_entries: u64,
}

/// raft's `Storage`: the log from [`RaftStorage`], snapshots from the state
/// machine (taken on the raft thread, so exactly at the applied index).
struct NodeStorage<M> {
    /// The log, hard state and conf state.
    log: Arc<RaftStorage>,
    /// Where snapshot data comes from.
    machine: Arc<M>,
}

impl<M: StateMachine> Storage for NodeStorage<M> {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> ::raft::Result<Snapshot> {
        let applied = self.machine.applied_index();
        if applied < request_index {
            return Err(::raft::Error::Store(
                ::raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self.machine.snapshot().map_err(|e| {
            tracing::error!(error = %e, "cannot take a snapshot of the state machine");
            ::raft::Error::Store(::raft::StorageError::SnapshotTemporarilyUnavailable)
        })?;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = self.log.term(applied)?;
        meta.set_conf_state(self.log.initial_state()?.conf_state);
        snapshot.data = data.into();
        tracing::info!(
            index = applied,
            bytes = snapshot.data.len(),
            "snapshot taken for a member that is behind"
        );
        Ok(snapshot)
    }
}

/// A batch of linearizable reads waiting for one ReadIndex round.
struct ReadBatch {
    /// The readers.
    waiters: Vec<oneshot::Sender<Result<u64, RequestError>>>,
    /// When the round was (last) issued: unanswered rounds are re-issued.
    issued: Instant,
}

/// The raft thread's state.
struct Node<T: Transport, M: StateMachine> {
    raw: RawNode<NodeStorage<M>>,
    log: Arc<RaftStorage>,
    machine: Arc<M>,
    transport: Arc<T>,
    inputs: Receiver<Input>,
    status: watch::Sender<RaftStatus>,
    /// (leader, term), changed only when either changes: waiters watch
    /// this rather than the busy status.
    leadership: watch::Sender<(u64, u64)>,
    config: NodeConfig,
    /// Reads not yet in a round.
    queued_reads: Vec<oneshot::Sender<Result<u64, RequestError>>>,
    /// Rounds in flight, by context.
    rounds: HashMap<u64, ReadBatch>,
    /// Rounds answered, waiting for the apply to reach their index.
    ready_reads: Vec<(u64, ReadBatch)>,
    /// Context of the next round.
    next_read: u64,
    /// The leader at the last status, to fail reads across a change.
    last_leader: u64,
    /// Set once this member applied its own removal: the loop stops.
    removed: bool,
    /// When each peer's last message arrived. raft's own `recent_active`
    /// is cleared at every check-quorum round and after an election, so
    /// it alone shows healthy peers as inactive for a moment every
    /// election timeout; membership checks need a steady view.
    heard: HashMap<u64, Instant>,
}

/// A handle on the raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    /// Inputs to the thread.
    inputs: Sender<Input>,
    /// The latest status.
    status: watch::Receiver<RaftStatus>,
    /// (leader, term), changed only when either changes.
    leadership: watch::Receiver<(u64, u64)>,
}

impl RaftHandle {
    /// Sends an input (false when the thread is gone).
    pub fn send(&self, input: Input) -> bool {
        self.inputs.send(input).is_ok()
    }

    /// The latest status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// A receiver of (leader, term) changes only.
    pub fn leadership(&self) -> watch::Receiver<(u64, u64)> {
        self.leadership.clone()
    }

    /// A sender of inputs (for the transport).
    pub fn inputs(&self) -> Sender<Input> {
        self.inputs.clone()
    }

    /// Proposes `data`; Ok once raft took it.
    pub async fn propose(&self, data: Vec<u8>) -> Result<(), RequestError> {
        self.propose_with(data, false).await
    }

    /// Proposes an entry only if this member leads (see
    /// [`Input::Propose::leader_only`]).
    pub async fn propose_as_leader(&self, data: Vec<u8>) -> Result<(), RequestError> {
        self.propose_with(data, true).await
    }

    async fn propose_with(&self, data: Vec<u8>, leader_only: bool) -> Result<(), RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::Propose {
            data,
            leader_only,
            done,
        }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Proposes a membership change; Ok once raft took it.
    pub async fn propose_conf_change(&self, change: ConfChangeV2) -> Result<(), RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::ConfChange { change, done }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Waits until a linearizable read may be served locally.
    pub async fn read_index(&self) -> Result<u64, RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::Read { done }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }
}

/// Starts the raft thread for `machine` over the log in `log`. `inputs` is
/// the receiving end of the handle's channel (created by the caller so the
/// transport can be built before the node).
pub fn start<T: Transport, M: StateMachine>(
    config: NodeConfig,
    log: Arc<RaftStorage>,
    machine: Arc<M>,
    transport: Arc<T>,
    channel: (Sender<Input>, Receiver<Input>),
) -> Result<(RaftHandle, std::thread::JoinHandle<()>), Error> {
    let state = log.initial_state()?;
    // A crash between installing a snapshot's state and its log leaves the
    // state ahead of the commit index; raft must not hear of an applied
    // index beyond what it knows is committed (entries up to the state's
    // index are skipped by the machine anyway).
    let applied = machine.applied_index().min(state.hard_state.commit);
    let raft_config = Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 512,
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    };
    let storage = NodeStorage {
        log: Arc::clone(&log),
        machine: Arc::clone(&machine),
    };
    let raw = RawNode::new(&raft_config, storage, &super::log::logger())?;
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: config.id,
        ..RaftStatus::default()
    });
    let (leadership_tx, leadership_rx) = watch::channel((0, 0));
    let (inputs_tx, inputs_rx) = channel;
    let mut node = Node {
        raw,
        log,
        machine,
        transport,
        inputs: inputs_rx,
        status: status_tx,
        leadership: leadership_tx,
        config,
        queued_reads: Vec::new(),
        rounds: HashMap::new(),
        ready_reads: Vec::new(),
        next_read: 1,
        last_leader: 0,
        removed: false,
        heard: HashMap::new(),
    };
    // A lone voter elects itself at once instead of after a timeout.
    let voters = state.conf_state.voters.clone();
    if voters == [config.id] {
        let _ = node.raw.campaign();
    }
    // The first status describes the configuration before the thread runs.
    node.publish_status();
    let thread = std::thread::Builder::new()
        .name("cairn-raft".into())
        .spawn(move || node.run())
        .map_err(Error::Thread)?;
    Ok((
        RaftHandle {
            inputs: inputs_tx,
            status: status_rx,
            leadership: leadership_rx,
        },
        thread,
    ))
}

/// Inputs handled per round at most, so ticks keep coming under load.
const MAX_INPUTS_PER_ROUND: usize = 4096;

impl<T: Transport, M: StateMachine> Node<T, M> {
    fn run(mut self) {
        let tick = self.config.heartbeat;
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut stop = false;
            match self.inputs.recv_timeout(wait) {
                Ok(input) => {
                    stop |= self.handle(input);
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.inputs.try_recv() {
                            Ok(input) => stop |= self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            if stop {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + tick;
            }
            self.issue_reads();
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft loop failed; this member stops serving");
                // Nothing here leads or follows any more: Status, hasleader
                // checks and reads must not see the last role it had.
                self.status.send_modify(|s| {
                    s.failed = true;
                    s.leader = 0;
                    s.is_leader = false;
                });
                break;
            }
            if self.removed {
                // raft must not be driven any further: a leader that has
                // applied its own removal no longer has a progress entry for
                // itself, and raft-rs panics when it next persists entries.
                tracing::warn!("the member has been permanently removed from the cluster");
                self.status.send_modify(|s| s.removed = true);
                break;
            }
            self.publish_status();
        }
        self.fail_reads(RequestError::Stopped);
        self.machine.stopped();
        tracing::info!("raft loop stopped");
    }

    /// Handles one input; true to stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Propose {
                leader_only: true,
                done,
                ..
            } if self.raw.raft.state != StateRole::Leader => {
                let _ = done.send(Err(RequestError::NotLeader));
            }
            Input::Propose { data, done, .. } => {
                let result = self.raw.propose(Vec::new(), data).map_err(|e| {
                    tracing::debug!(error = %e, "proposal dropped");
                    RequestError::NoLeader
                });
                let _ = done.send(result);
            }
            Input::ConfChange { change, done } => {
                let context = change.context.to_vec();
                let result = self.raw.propose_conf_change(context, change).map_err(|e| {
                    tracing::debug!(error = %e, "conf change dropped");
                    RequestError::NoLeader
                });
                let _ = done.send(result);
            }
            Input::Read { done } => self.queued_reads.push(done),
            Input::Step(msg) => {
                self.heard.insert(msg.from, Instant::now());
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "raft message ignored");
                }
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::SnapshotSent { to, failed } => {
                let status = if failed {
                    SnapshotStatus::Failure
                } else {
                    SnapshotStatus::Finish
                };
                self.raw.report_snapshot(to, status);
            }
            Input::TransferLeader(to) => self.raw.transfer_leader(to),
            Input::Campaign => {
                let _ = self.raw.campaign();
            }
            Input::Stop => return true,
        }
        false
    }

    /// Starts a ReadIndex round for the queued reads, and re-issues rounds
    /// that went unanswered (a leader drops ReadIndex until it has committed
    /// an entry of its term; a message may be lost).
    fn issue_reads(&mut self) {
        let leader = self.raw.raft.leader_id;
        if leader == 0 {
            let queued = std::mem::take(&mut self.queued_reads);
            for w in queued {
                let _ = w.send(Err(RequestError::NoLeader));
            }
            return;
        }
        let retry = self.config.heartbeat * 2;
        let now = Instant::now();
        for (ctx, round) in self.rounds.iter_mut() {
            if now.duration_since(round.issued) >= retry {
                round.issued = now;
                self.raw.read_index(ctx.to_be_bytes().to_vec());
            }
        }
        if self.queued_reads.is_empty() {
            return;
        }
        let ctx = self.next_read;
        self.next_read += 1;
        self.rounds.insert(
            ctx,
            ReadBatch {
                waiters: std::mem::take(&mut self.queued_reads),
                issued: now,
            },
        );
        self.raw.read_index(ctx.to_be_bytes().to_vec());
    }

    fn fail_reads(&mut self, error: RequestError) {
        let rounds = self.rounds.drain().map(|(_, r)| r);
        let ready = self.ready_reads.drain(..).map(|(_, r)| r);
        for round in rounds.chain(ready) {
            for w in round.waiters {
                let _ = w.send(Err(error));
            }
        }
        for w in self.queued_reads.drain(..) {
            let _ = w.send(Err(error));
        }
    }

    /// Answers the reads whose index is applied.
    fn answer_reads(&mut self) {
        let applied = self.machine.applied_index();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        for (index, round) in done {
            for w in round.waiters {
                let _ = w.send(Ok(index));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), Error> {
        if !self.raw.has_ready() {
            self.answer_reads();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages that may leave before persisting.
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        // 2. A snapshot from the leader.
        if *ready.snapshot() != Snapshot::default() {
            let snapshot = ready.snapshot().clone();
            let meta = snapshot.get_metadata();
            tracing::info!(
                index = meta.index,
                term = meta.term,
                bytes = snapshot.data.len(),
                "installing a snapshot from the leader"
            );
            self.machine
                .restore(&snapshot.data)
                .map_err(machine_failed)?;
            self.log.apply_snapshot(meta)?;
        }
        // 3. Committed entries.
        self.apply(ready.take_committed_entries())?;
        if self.removed {
            // Removed: nothing of this Ready matters any more (see `run`).
            return Ok(());
        }
        // 4. New entries and hard state: one write, synced when raft needs
        // it (new entries, or a term/vote change). A hard state whose only
        // change is the commit index needs no fsync (etcd's MustSync): a
        // lost commit index is learned again from the leader. Without this,
        // every heartbeat carrying a new commit index cost a follower an
        // fsync before it could answer (and a ReadIndex round waits for
        // those answers).
        if !ready.entries().is_empty() || ready.hs().is_some() {
            let sync = ready.must_sync();
            self.log.append(ready.entries(), ready.hs(), sync)?;
        }
        // 5. Messages that promise what was just persisted.
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        // 6. ReadIndex results.
        for rs in ready.take_read_states() {
            let ctx = <[u8; 8]>::try_from(rs.request_ctx.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if let Some(round) = self.rounds.remove(&ctx) {
                self.ready_reads.push((rs.index, round));
            }
        }
        // 7. Advance.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            // Not synced: a lost commit index is learned again from the leader.
            self.log.append(&[], Some(&hs), false)?;
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.answer_reads();
        self.maybe_compact_log()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        for entry in entries {
            if self.removed {
                break;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self
                    .machine
                    .apply_entry(entry.index, &entry.data)
                    .map_err(machine_failed)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)?
                }
            }
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Error> {
        let change: ConfChangeV2 = if entry.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            cc.merge_from_bytes(&entry.data)
                .map_err(|e| Error::Decode("conf change", e.to_string()))?;
            // The V1 form (never proposed by Cairn) as a one-change V2.
            let mut single = ::raft::eraftpb::ConfChangeSingle::default();
            single.set_change_type(cc.get_change_type());
            single.node_id = cc.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            v2.context = cc.context;
            v2
        } else {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(&entry.data)
                .map_err(|e| Error::Decode("conf change", e.to_string()))?;
            cc
        };
        let conf_state = match self.raw.apply_conf_change(&change) {
            Ok(cs) => cs,
            Err(e) => {
                // Refused by raft (say, removing the last voter): nothing
                // changes; record the index so the entry is not replayed.
                tracing::warn!(error = %e, "conf change refused by raft");
                self.machine
                    .apply_entry(entry.index, &[])
                    .map_err(machine_failed)?;
                return Ok(());
            }
        };
        self.log.set_conf_state(&conf_state)?;
        let Some(single) = change.changes.first() else {
            self.machine
                .apply_entry(entry.index, &[])
                .map_err(machine_failed)?;
            return Ok(());
        };
        let kind = match single.get_change_type() {
            ConfChangeType::AddNode => MemberChange::AddVoter,
            ConfChangeType::AddLearnerNode => MemberChange::AddLearner,
            ConfChangeType::RemoveNode => MemberChange::Remove,
        };
        self.machine
            .apply_member_change(entry.index, kind, single.node_id, &change.context)
            .map_err(machine_failed)?;
        if kind == MemberChange::Remove && single.node_id == self.config.id {
            self.removed = true;
        }
        Ok(())
    }

    /// Compacts the log once `snapshot_count` entries were applied past the
    /// last compaction, keeping `catch_up_entries` for slow followers.
    fn maybe_compact_log(&mut self) -> Result<(), Error> {
        let applied = self.machine.applied_index();
        let first = self.log.first_index()?;
        if applied < first + self.config.snapshot_count + self.config.catch_up_entries {
            return Ok(());
        }
        let to = applied - self.config.catch_up_entries;
        // Never past what raft itself has applied.
        let to = to.min(self.raw.raft.raft_log.applied);
        if to > first {
            self.log.compact(to)?;
            tracing::debug!(to, "raft log compacted");
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf();
        let is_leader = raft.state == StateRole::Leader;
        let (matched, active) = if is_leader {
            let mut matched = BTreeMap::new();
            let mut active = BTreeSet::new();
            let window = self.config.heartbeat * self.config.election_ticks as u32;
            for (id, pr) in raft.prs().iter() {
                matched.insert(*id, pr.matched);
                let heard = self.heard.get(id).is_some_and(|t| t.elapsed() < window);
                if pr.recent_active || heard || *id == raft.id {
                    active.insert(*id);
                }
            }
            (matched, active)
        } else {
            Default::default()
        };
        let status = RaftStatus {
            id: raft.id,
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.machine.applied_index(),
            is_leader,
            is_learner: conf.learners().contains(&raft.id),
            voters: conf.voters().ids().iter().collect(),
            learners: conf.learners().iter().copied().collect(),
            matched,
            active,
            failed: false,
            removed: false,
        };
        let leadership = (status.leader, status.term);
        self.leadership.send_if_modified(|l| {
            if *l == leadership {
                false
            } else {
                *l = leadership;
                true
            }
        });
        if status.leader != self.last_leader {
            super::log::leader_changed(status.id, self.last_leader, status.leader, status.term);
            if self.last_leader != 0 {
                self.fail_reads(RequestError::LeaderChanged);
            }
            self.last_leader = status.leader;
        }
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }
}

/// A state machine failure, as the loop's error.
fn machine_failed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::Machine(Box::new(e))
}

/// Whether `msg` carries a snapshot (sent on its own stream).
pub fn is_snapshot(msg: &Message) -> bool {
    msg.get_msg_type() == MessageType::MsgSnapshot
}
