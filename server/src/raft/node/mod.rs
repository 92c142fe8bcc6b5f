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
//! ReadIndex requests are batched twice: the reads that arrive while a round
//! is in flight join the next one before they reach the thread, and one
//! `read_index` round serves every round queued since the last.
//!
//! - `handle`: [`Input`] and [`RaftHandle`], how the member reaches the thread.
//! - `inbox`: the thread's channel and the peers' plain raft streams it
//!   reads itself, one wait for both.
//! - `status`: [`RaftStatus`], published after every round.
//! - `ready`: one Ready, steps 1 to 7.
//! - `snapshots`: raft's `Storage` with snapshots from the state machine,
//!   installing a leader's snapshot (step 2), compacting the log.
//! - `conf_change`: applying a committed conf change.
//! - `read_rounds`: linearizable reads joined into rounds before they reach
//!   the thread (one round in flight per member, as etcd).
//! - `read_index`: the ReadIndex batches.

mod conf_change;
mod handle;
mod idle;
mod inbox;
mod read_index;
mod read_rounds;
mod ready;
mod snapshot_build;
mod snapshots;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::raft::eraftpb::{Message, MessageType};
use ::raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use tokio::sync::watch;

pub use handle::{Ending, Input, RaftHandle, Refusal, Taken};
pub use inbox::{inbox, Inbox, InboxReceiver};
pub use status::RaftStatus;

use super::{Error, RaftStorage, RequestError, StateMachine};
use crate::metrics::server::RaftMetrics;
use read_index::ReadIndexQueue;
use snapshots::NodeStorage;

/// Where raft messages go. `send` must never block: a full queue drops the
/// message (raft retransmits) and reports the peer unreachable.
pub trait Transport: Send + Sync + 'static {
    /// Sends `messages` to their `to` members.
    fn send(&self, messages: Vec<Message>);
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

/// The raft thread's state.
struct Node<T: Transport, M: StateMachine> {
    /// raft itself; only this thread touches it.
    raw: RawNode<NodeStorage<M>>,
    /// The log, hard state and conf state (raft reads them through `raw`).
    log: Arc<RaftStorage>,
    /// What committed entries are applied to.
    machine: Arc<M>,
    /// Where messages go; never blocks.
    transport: Arc<T>,
    /// Everything the thread is asked to do, and the raft streams it reads.
    inputs: InboxReceiver,
    /// The status, published after every round.
    status: watch::Sender<RaftStatus>,
    /// (leader, term), changed only when either changes: waiters watch
    /// this rather than the busy status.
    leadership: watch::Sender<(u64, u64)>,
    /// Set once if the loop fails or applies this member's removal.
    ending: watch::Sender<Ending>,
    /// Timing and sizes.
    config: NodeConfig,
    /// Linearizable reads, batched into ReadIndex rounds.
    reads: ReadIndexQueue,
    /// The leader at the last status, to fail reads across a change.
    last_leader: u64,
    /// Set once this member applied its own removal: the loop stops.
    removed: bool,
    /// etcd_server_* metrics of the raft thread (none in unit tests).
    metrics: Option<RaftMetrics>,
    /// When the last heartbeat to each peer left (for the metrics).
    heartbeats: HashMap<u64, Instant>,
    /// When each peer's last message arrived. raft's own `recent_active`
    /// is cleared at every check-quorum round and after an election, so
    /// it alone shows healthy peers as inactive for a moment every
    /// election timeout; membership checks need a steady view.
    heard: HashMap<u64, Instant>,
    /// The applied and commit indexes found at start while the state
    /// machine was behind, and when the node started: the replay of those entries is logged
    /// ("start-up phase") once applied, for the restart time's breakdown.
    replay: Option<(u64, u64, Instant)>,
    /// The state machine's persist once that replay is applied, on a
    /// thread of its own (a flush of what the replay wrote, which the
    /// loop need not wait for); joined when the loop ends.
    persisting: Option<std::thread::JoinHandle<()>>,
    /// The term in which this member, leading, is known to have committed
    /// an entry of its own (0: none yet). True once, it stays true for the
    /// whole term, so the status need not read the committed entry's term
    /// from the log after every round (a lone voter's `reads_alone`).
    committed_in_term: u64,
}

/// Starts the raft thread for `machine` over the log in `log`. `inputs` is
/// the receiving end of the handle's channel (created by the caller so the
/// transport can be built before the node). The thread counts leader
/// changes, slow applies and snapshot installs in `metrics`.
pub fn start<T: Transport, M: StateMachine>(
    config: NodeConfig,
    log: Arc<RaftStorage>,
    machine: Arc<M>,
    transport: Arc<T>,
    channel: (Inbox, InboxReceiver),
    metrics: Option<RaftMetrics>,
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
        build: Default::default(),
    };
    let raw = RawNode::new(&raft_config, storage, &super::log::logger())?;
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: config.id,
        ..RaftStatus::default()
    });
    let (leadership_tx, leadership_rx) = watch::channel((0, 0));
    let (ending_tx, ending_rx) = watch::channel(Ending::Running);
    let (inputs_tx, inputs_rx) = channel;
    let mut node = Node {
        raw,
        log,
        machine,
        transport,
        inputs: inputs_rx,
        status: status_tx,
        leadership: leadership_tx,
        ending: ending_tx,
        config,
        reads: ReadIndexQueue::new(config.id, config.heartbeat * 2),
        last_leader: 0,
        removed: false,
        metrics,
        heartbeats: HashMap::new(),
        heard: HashMap::new(),
        replay: (state.hard_state.commit > applied)
            .then(|| (applied, state.hard_state.commit, Instant::now())),
        persisting: None,
        committed_in_term: 0,
    };
    // A lone voter elects itself at once instead of after a timeout.
    let voters = state.conf_state.voters.clone();
    if voters == [config.id] {
        let _ = node.raw.campaign();
    }
    // The first status describes the configuration before the thread runs.
    node.publish_status();
    let failure = Failure {
        status: node.status.clone(),
        leadership: node.leadership.clone(),
        ending: node.ending.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("cairn-raft".into())
        .spawn(move || {
            // A panic (raft-rs's invariants; raft-engine's on a failed
            // fsync, after which nothing written can be trusted) ends the
            // loop as a failure does: never alive and broken.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.run())).is_err() {
                tracing::error!("the raft thread panicked; this member stops serving");
                failure.publish();
            }
        })
        .map_err(Error::Thread)?;
    Ok((
        RaftHandle::new(inputs_tx, status_rx, leadership_rx, ending_rx),
        thread,
    ))
}

/// What a failed loop tells the rest of the member.
struct Failure {
    status: watch::Sender<RaftStatus>,
    leadership: watch::Sender<(u64, u64)>,
    ending: watch::Sender<Ending>,
}

impl Failure {
    fn publish(self) {
        // Nothing here leads or follows any more: Status, hasleader checks
        // and reads must not see the last role it had.
        self.status.send_modify(|s| {
            s.leader = 0;
            s.is_leader = false;
        });
        self.leadership.send_modify(|(leader, _)| *leader = 0);
        self.ending.send_replace(Ending::Failed);
    }
}

/// Inputs handled per round at most, so ticks keep coming under load.
const MAX_INPUTS_PER_ROUND: usize = 4096;

impl<T: Transport, M: StateMachine> Node<T, M> {
    /// The loop: every queued input, a tick when due, the reads, one Ready,
    /// the status; until stopped, failed or removed.
    fn run(mut self) {
        let tick = self.config.heartbeat;
        let mut next_tick = Instant::now() + tick;
        let mut round = Vec::new();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut stop = false;
            match self
                .inputs
                .recv_round(wait, MAX_INPUTS_PER_ROUND, &mut round)
            {
                Ok(()) => {
                    for input in round.drain(..) {
                        stop |= self.handle(input);
                    }
                }
                Err(_) => stop = true,
            }
            if stop {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + tick;
            }
            let has_leader = self.raw.raft.leader_id != 0;
            for ctx in self.reads.issue(has_leader, now) {
                self.raw.read_index(ctx);
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft loop failed; this member stops serving");
                Failure {
                    status: self.status.clone(),
                    leadership: self.leadership.clone(),
                    ending: self.ending.clone(),
                }
                .publish();
                break;
            }
            if self.removed {
                // raft must not be driven any further: a leader that has
                // applied its own removal no longer has a progress entry for
                // itself, and raft-rs panics when it next persists entries.
                tracing::warn!("the member has been permanently removed from the cluster");
                self.ending.send_replace(Ending::Removed);
                break;
            }
            self.publish_status();
            self.note_replay();
        }
        // Nothing answers reads any more, not even a lone voter's.
        self.status.send_modify(|s| s.reads_alone = false);
        self.reads.fail_all(RequestError::Stopped);
        self.machine.stopped();
        if let Some(persisting) = self.persisting.take() {
            // A panic there went to std's panic hook (stderr) as it
            // happened, and only cost the persist: nothing is left to do.
            let _ = persisting.join();
        }
        tracing::info!("raft loop stopped");
    }

    /// A follower's ReadIndex request, on the leader: queued with this
    /// member's own reads, so that the requests arriving while a round is
    /// in flight share the next round (raft-rs would send a heartbeat round
    /// for each). Answered as raft answers it (`MsgReadIndexResp` with the
    /// round's index and the request's context) once the round is; a
    /// request whose round fails (the leader changed) is dropped, and the
    /// follower re-sends it after its retry, as when raft drops one.
    ///
    /// Linearizable as raft's own answer is: the request joins a round
    /// issued after it arrived, whose index is the commit index when the
    /// round left, confirmed by a quorum after that.
    fn join_forwarded_read(&mut self, mut request: Message) {
        let transport = Arc::clone(&self.transport);
        let (leader, term, follower) = (self.raw.raft.id, self.raw.raft.term, request.from);
        let context = request.take_entries();
        self.reads.push(handle::ReadDone::new(move |answer| {
            if let Ok(index) = answer {
                let mut response = Message::default();
                response.set_msg_type(MessageType::MsgReadIndexResp);
                response.from = leader;
                response.to = follower;
                response.term = term;
                response.index = index;
                response.set_entries(context);
                transport.send(vec![response]);
            }
        }));
    }

    /// Logs the start-up replay of committed entries once it is applied,
    /// and has the state machine persist what the replay wrote, so that a
    /// second crash does not replay those entries again.
    fn note_replay(&mut self) {
        let Some((from, commit, started)) = self.replay else {
            return;
        };
        if self.machine.applied_index() < commit {
            return;
        }
        self.replay = None;
        let took_ms = crate::duration::millis_since(started);
        let entries = commit - from;
        tracing::info!(
            phase = "raft log replay",
            took_ms,
            entries,
            "start-up phase"
        );
        let machine = Arc::clone(&self.machine);
        let persist = move || {
            let started = Instant::now();
            match machine.persist() {
                Ok(()) => {
                    let took_ms = crate::duration::millis_since(started);
                    tracing::info!(
                        phase = "replayed state persisted",
                        took_ms,
                        "start-up phase"
                    );
                }
                // Not fatal: the entries stay in the log until the state
                // machine's next flush, and a crash replays them again.
                Err(e) => tracing::warn!(error = %e, "persisting the replayed state failed"),
            }
        };
        match std::thread::Builder::new()
            .name("cairn-persist".into())
            .spawn(persist)
        {
            Ok(thread) => self.persisting = Some(thread),
            Err(e) => tracing::warn!(error = %e, "no thread to persist the replayed state"),
        }
    }

    /// Handles one input; true to stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Propose {
                leader_only: true,
                done,
                ..
            } if self.raw.raft.state != StateRole::Leader => {
                done.answer(Err(RequestError::NotLeader));
            }
            Input::Propose { data, done, .. } => {
                let result = self.raw.propose(Vec::new(), data).map_err(|e| {
                    tracing::debug!(error = %e, "proposal dropped");
                    RequestError::NoLeader
                });
                done.answer(result);
            }
            Input::ConfChange { change, done } => {
                let context = change.context.to_vec();
                let result = self.raw.propose_conf_change(context, change).map_err(|e| {
                    tracing::debug!(error = %e, "conf change dropped");
                    RequestError::NoLeader
                });
                let _ = done.send(result);
            }
            Input::Read { done } => self.reads.push(done),
            Input::Step(msg) => {
                self.heard.insert(msg.from, Instant::now());
                if msg.get_msg_type() == MessageType::MsgReadIndex
                    && self.raw.raft.state == StateRole::Leader
                    && msg.from != self.raw.raft.id
                {
                    self.join_forwarded_read(msg);
                } else if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "raft message ignored");
                }
            }
            Input::Stream(stream) => self.inputs.add_stream(stream),
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
}

/// A state machine failure, as the loop's error.
fn machine_failed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::Machine(Box::new(e))
}

/// Whether `msg` carries a snapshot (sent on its own stream).
pub fn is_snapshot(msg: &Message) -> bool {
    msg.get_msg_type() == MessageType::MsgSnapshot
}
