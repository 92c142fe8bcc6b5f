//! The write path every API shares (etcd's `EtcdServer.processInternalRaftRequest`
//! and `linearizableReadNotify`).
//!
//! Every write becomes a `cairnpb.RaftRequest` with a cluster-unique
//! proposal id, is proposed to raft, and returns when this member has applied
//! the entry (the state machine wakes the waiter registered under the id), or
//! fails with etcd's error: "no leader" when raft has none to take it,
//! "request timed out" (or "... possibly due to previous leader failure")
//! when it was not applied in time. Linearizable reads wait for a ReadIndex
//! round (raft batches them); serializable reads need nothing from here.
//! Every member has raft, a lone one included (tests run a single voter).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::{self, ConfChangeContext};
use cairn_proto::etcdserverpb::{AlarmType, ResponseHeader};
use prost::Message;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::{Identity, Replication};
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::IdGenerator;
use crate::machine::{Applied, Machine};
use crate::metrics::server::ProposalMetrics;
use crate::mvcc::Store;
use crate::raft::{RaftStatus, Refusal};

/// The auth header of the member's own proposals: never checked.
const MEMBER: cairnpb::AuthHeader = cairnpb::AuthHeader {
    username: String::new(),
    revision: 0,
    internal: true,
};

/// Proposals are refused while applying lags committing by more than this
/// (etcd's maxGapBetweenApplyAndCommitIndex).
const MAX_APPLY_LAG: u64 = 5000;

/// Proposes requests and waits for them; answers when a linearizable read
/// may be served. Shared (in an `Arc`) by every API of the member.
#[derive(Debug)]
pub struct Proposer {
    /// The state machine: applying an entry answers the waiter registered
    /// here under its proposal id.
    machine: Arc<Machine>,
    /// Ids reported in every response header; the member id also prefixes
    /// proposal ids.
    identity: Identity,
    /// Raft, and how long to wait for it.
    replication: Replication,
    /// Chooses proposal ids (etcd's idutil: member id prefix, time, counter)
    /// so that ids are unique across the cluster.
    proposal_ids: IdGenerator,
    /// Set when the member begins to stop, so new requests are refused and
    /// long-lived per-client tasks (watch streams) end and release the store.
    stopping: tokio::sync::watch::Sender<bool>,
    /// etcd's proposal and ReadIndex metrics (set once at start; none in
    /// unit tests).
    metrics: std::sync::OnceLock<ProposalMetrics>,
}

impl Proposer {
    /// A proposer over `machine`, replicated through `replication`.
    pub fn new(machine: Arc<Machine>, identity: Identity, replication: Replication) -> Self {
        Self {
            machine,
            identity,
            replication,
            proposal_ids: IdGenerator::now(identity.member_id),
            stopping: tokio::sync::watch::Sender::new(false),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts proposals and ReadIndex rounds in `metrics` from now on.
    pub fn set_metrics(&self, metrics: ProposalMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The state machine.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        self.machine.store()
    }

    /// The member's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The cluster id: the replicated one once known (a member that joined
    /// an existing cluster learns it with its first snapshot).
    pub fn cluster_id(&self) -> u64 {
        match self.machine.tables().cluster_id() {
            0 => self.identity.cluster_id,
            id => id,
        }
    }

    /// Raft, and how long to wait for it.
    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// How long a proposal or a linearizable read may wait.
    pub fn request_timeout(&self) -> Duration {
        self.replication.request_timeout
    }

    /// The raft status.
    pub fn raft_status(&self) -> RaftStatus {
        self.replication.raft.status()
    }

    /// Reads the raft status in place (see [`crate::raft::RaftHandle::with_status`]).
    pub fn with_raft_status<R>(&self, read: impl FnOnce(&RaftStatus) -> R) -> R {
        self.replication.raft.with_status(read)
    }

    /// Whether this member leads.
    pub fn is_leader(&self) -> bool {
        self.with_raft_status(|s| s.is_leader)
    }

    /// A complete response header at `revision` (0 = the current revision).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let raft_term = self.with_raft_status(|s| s.term);
        ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.identity.member_id,
            revision: if revision == 0 {
                self.store().current_revision()
            } else {
                revision
            },
            raft_term,
        }
    }

    /// A header with no revision, as etcd fills the Cluster service's
    /// responses (membership is not part of the key space).
    pub fn header_without_revision(&self) -> ResponseHeader {
        ResponseHeader {
            revision: 0,
            ..self.header(0)
        }
    }

    /// Tells long-lived per-client tasks to end, and refuses new requests.
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Proposer::begin_stop`] was called.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Refuses new requests once the member is stopping, or has failed
    /// (etcd's "server stopped"): never alive and broken, serving stale
    /// reads while writes fail. While the CORRUPT alarm is raised, refuses
    /// them with "corrupt cluster".
    pub fn check_serving(&self) -> Result<(), EtcdError> {
        if *self.stopping.borrow() {
            return Err(EtcdError::Stopped);
        }
        if self.machine.tables().has_alarm(AlarmType::Corrupt) {
            return Err(EtcdError::Corrupt);
        }
        Ok(())
    }

    /// Proposes `request` as the member itself (never checked against the
    /// auth store) and waits until this member has applied it. While the
    /// CORRUPT alarm is raised, only alarm changes get through (etcd
    /// refuses everything else with "corrupt cluster").
    pub async fn propose(&self, command: Command) -> Result<Applied, EtcdError> {
        self.propose_with(command, Some(MEMBER), false).await
    }

    /// [`Proposer::propose`] for a client's request, carrying `auth` (who
    /// asked; None: no credentials) for the check at apply.
    pub async fn propose_as(
        &self,
        command: Command,
        auth: Option<cairnpb::AuthHeader>,
    ) -> Result<Applied, EtcdError> {
        self.propose_with(command, auth, false).await
    }

    /// [`Proposer::propose`] for decisions only the leader may take: the
    /// entry is appended only if this member leads when raft gets it, never
    /// forwarded (found by cairn-jepsen, FINDINGS.md #4: a paused leader,
    /// resumed, revoked leases its successor had renewed).
    pub async fn propose_as_leader(&self, command: Command) -> Result<Applied, EtcdError> {
        self.propose_with(command, Some(MEMBER), true).await
    }

    async fn propose_with(
        &self,
        command: Command,
        auth: Option<cairnpb::AuthHeader>,
        leader_only: bool,
    ) -> Result<Applied, EtcdError> {
        if *self.stopping.borrow() {
            return Err(EtcdError::Stopped);
        }
        if !matches!(command, Command::Alarm(_))
            && self.machine.tables().has_alarm(AlarmType::Corrupt)
        {
            return Err(EtcdError::Corrupt);
        }
        let id = self.next_proposal_id();
        let data = entry::encode_with(id, auth, command)?;
        let replication = &self.replication;
        let (is_learner, commit, applied, leader) = replication
            .raft
            .with_status(|s| (s.is_learner, s.commit, s.applied, s.leader));
        if is_learner {
            return Err(EtcdError::NotSupportedForLearner);
        }
        if commit > applied + MAX_APPLY_LAG {
            return Err(EtcdError::TooManyRequests);
        }
        let (waiter, _registered) = Registered::new(&self.machine, id);
        let mut pending = Pending::new(self.metrics.get());
        let mut leadership = replication.raft.leadership();
        leadership.borrow_and_update();
        // Raft's refusal answers the waiter, so that this task is woken
        // once per proposal (by the apply, or by the refusal), not also
        // when raft takes it.
        let refused = Arc::new(AtomicBool::new(false));
        let refusal = {
            let machine = Arc::clone(&self.machine);
            let refused = Arc::clone(&refused);
            Refusal::new(move |e| {
                refused.store(true, Ordering::Release);
                machine.waiters().answer(id, Err(EtcdError::from(e)));
            })
        };
        replication.raft.offer(data, leader_only, refusal);
        let outcome = wait_applied(replication, waiter, leader, leadership).await;
        // etcd counts a proposal raft refused, or that raft took and that
        // timed out, or whose caller left, as failed; an error of the
        // request is no failed proposal (nor is a stop).
        if !refused.load(Ordering::Acquire)
            && !matches!(
                outcome,
                Err(EtcdError::Timeout | EtcdError::TimeoutDueToLeaderFail)
            )
        {
            pending.settled();
        }
        outcome
    }

    /// Proposes a membership change (a conf change carrying the proposal id
    /// and the member record) and waits until it is applied here; returns
    /// the member table after it.
    pub async fn propose_conf_change(
        &self,
        change_type: ConfChangeType,
        node: u64,
        member: Option<cairnpb::Member>,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        let replication = &self.replication;
        let request_id = self.next_proposal_id();
        let context = ConfChangeContext { request_id, member }.encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node;
        let mut change = ConfChangeV2::default();
        change.mut_changes().push(single);
        change.context = context.into();
        let (waiter, _registered) = Registered::new(&self.machine, request_id);
        replication.raft.propose_conf_change(change).await?;
        match tokio::time::timeout(replication.request_timeout, waiter).await {
            Ok(Ok(Ok(Applied::Members(members)))) => Ok(members),
            Ok(Ok(Ok(_))) => Err(EtcdError::Internal),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// A cluster-unique proposal id.
    fn next_proposal_id(&self) -> u64 {
        self.proposal_ids.next_lease_id() as u64
    }

    /// Waits until this member may serve a linearizable read: one ReadIndex
    /// round, shared with every read that arrived while the round before it
    /// was in flight (see `raft::node::read_rounds`).
    pub async fn barrier(&self) -> Result<(), EtcdError> {
        let replication = &self.replication;
        if replication.raft.with_status(|s| s.is_learner) {
            return Err(EtcdError::NotSupportedForLearner);
        }
        // Deliberately wrong (cairn-jepsen's proof that it can fail): serve
        // "linearizable" reads from local state. Compiled only into test
        // builds with the `jepsen-broken` feature.
        #[cfg(feature = "jepsen-broken")]
        if replication.broken_stale_reads {
            return Ok(());
        }
        let metrics = self.metrics.get();
        match tokio::time::timeout(replication.request_timeout, replication.raft.read_index()).await
        {
            Ok(result) => result.map(|_| ()).map_err(|e| {
                if let Some(m) = metrics {
                    m.read_index_failed.inc();
                }
                EtcdError::from(e)
            }),
            Err(_) => {
                if let Some(m) = metrics {
                    m.slow_read_index.inc();
                }
                Err(EtcdError::Timeout)
            }
        }
    }
}

/// A proposal in flight, for etcd's pending and failed counts: pending
/// while it lives; failed when dropped unsettled (refused by raft, timed
/// out, or given up by its caller).
struct Pending<'a> {
    metrics: Option<&'a ProposalMetrics>,
    settled: bool,
}

impl<'a> Pending<'a> {
    fn new(metrics: Option<&'a ProposalMetrics>) -> Self {
        if let Some(m) = metrics {
            m.pending.inc();
        }
        Self {
            metrics,
            settled: false,
        }
    }

    /// Its outcome is no failure.
    fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.metrics {
            m.pending.dec();
            if !self.settled {
                m.failed.inc();
            }
        }
    }
}

/// A proposal's waiter, registered in the machine under its id, and
/// cancelled when this guard drops: however the caller leaves (answered,
/// refused by raft, timed out, or gone because its client went away and
/// the request's future was dropped), no waiter is left behind.
struct Registered<'a> {
    /// Where the waiter is registered.
    machine: &'a Machine,
    /// The proposal id it is registered under.
    id: u64,
}

impl<'a> Registered<'a> {
    /// Registers a waiter for proposal `id`: what applying it answers, and
    /// the guard that forgets it.
    fn new(
        machine: &'a Machine,
        id: u64,
    ) -> (
        tokio::sync::oneshot::Receiver<crate::machine::Outcome>,
        Self,
    ) {
        (machine.waiters().register(id), Self { machine, id })
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        // A waiter already answered is gone: forgetting it changes nothing.
        self.machine.waiters().cancel(self.id);
    }
}

/// Waits for a proposal to be applied here. Gives up after the request
/// timeout ("request timed out"), or sooner once a new leader has led for a
/// grace period without applying it: a proposal lost with the old leader
/// would otherwise hold the client for the whole timeout. Either way the
/// outcome is unknown (a lost proposal may still be delivered late), so the
/// errors are etcd's timeout errors, never "not applied".
async fn wait_applied(
    replication: &Replication,
    waiter: tokio::sync::oneshot::Receiver<crate::machine::Outcome>,
    leader: u64,
    mut leadership: tokio::sync::watch::Receiver<(u64, u64)>,
) -> Result<Applied, EtcdError> {
    let deadline = tokio::time::Instant::now() + replication.request_timeout;
    let mut lost_by = None;
    tokio::pin!(waiter);
    loop {
        let give_up = lost_by.unwrap_or(deadline).min(deadline);
        tokio::select! {
            outcome = &mut waiter => {
                return outcome.unwrap_or(Err(EtcdError::Stopped));
            }
            _ = tokio::time::sleep_until(give_up) => {
                return Err(if lost_by.is_some() {
                    EtcdError::TimeoutDueToLeaderFail
                } else {
                    EtcdError::Timeout
                });
            }
            changed = leadership.changed(), if lost_by.is_none() => {
                if changed.is_err() {
                    return Err(EtcdError::Stopped);
                }
                let (now_leader, _) = *leadership.borrow_and_update();
                if now_leader != 0 && now_leader != leader {
                    lost_by = Some(tokio::time::Instant::now() + replication.leader_change_grace);
                }
            }
        }
    }
}
