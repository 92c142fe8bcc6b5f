//! One Cairn member: the internal API the gRPC services call (etcd's `EtcdServer`).
//!
//! Every write becomes a `cairnpb.RaftRequest` with a cluster-unique
//! proposal id, is proposed to raft, and returns when this member has applied
//! the entry (the state machine wakes the waiter registered under the id), or
//! fails with etcd's error: "no leader" when raft has none to take it,
//! "request timed out" (or "... possibly due to previous leader failure")
//! when it was not applied in time. Linearizable reads wait for a ReadIndex
//! round; serializable reads are served from the local state at once.
//!
//! Without raft (unit tests drive a member directly), the same encoded
//! request is applied at once with the next index, by the same state-machine
//! code. Store work is blocking (RocksDB, fsync), so it runs on tokio's
//! blocking pool, never on a runtime worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairnpb::{lease_forward, LeaseForward};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, StatusResponse, TxnRequest, TxnResponse,
};
use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use prost::Message;

use crate::apply;
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::{IdGenerator, Lessor, LessorConfig, TokioClock};
use crate::machine::{Applied, Machine};
use crate::mvcc::Store;
use crate::raft::{RaftHandle, RaftStatus};

/// The etcd version Cairn reports. Clients gate features on it: kube-apiserver
/// enables WatchProgressRequest only from 3.5.8 on (and 3.4.25).
pub const ETCD_VERSION: &str = "3.5.17";

/// The raft term a member without raft reports: what a freshly started
/// single etcd member shows (term 1 at bootstrap, 2 once it has elected
/// itself).
pub const SINGLE_MEMBER_TERM: u64 = 2;

/// etcd's default watch progress notification interval: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_INTERVAL: Duration =
    crate::defaults::WATCH_PROGRESS_NOTIFY_INTERVAL;

/// Bytes etcd adds around a request when it wraps it for raft (request header
/// with a 64-bit id, field tags, length prefix); `--max-request-bytes` applies
/// to the wrapped size.
const RAFT_ENVELOPE_BYTES: usize = 20;

/// Identity of a member, fixed when its data directory is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's id (derived from its members' ids, as etcd does).
    pub cluster_id: u64,
    /// This member's id (derived from its peer URLs and the cluster token).
    pub member_id: u64,
}

/// Limits applied before a request is executed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `--max-request-bytes`: the largest write request accepted.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`: the most operations in one txn branch.
    pub max_txn_ops: usize,
}

/// How a member reaches raft (absent: a member applying its own writes).
#[derive(Debug, Clone)]
pub struct Replication {
    /// The raft thread.
    pub raft: RaftHandle,
    /// How long a proposal or a linearizable read may wait (etcd: 5 s plus
    /// two election timeouts).
    pub request_timeout: Duration,
    /// How long a proposal may still wait once another member leads (one
    /// election timeout): enough for the new leader to commit what the old
    /// one had replicated.
    pub leader_change_grace: Duration,
    /// Deliberately broken mode for cairn-jepsen's self-test: linearizable
    /// reads skip ReadIndex. Only honoured in builds with the test-only
    /// `jepsen-broken` feature (`Config::jepsen_broken_stale_reads`).
    pub broken_stale_reads: bool,
}

/// A running member's state, shared by every gRPC service.
#[derive(Debug)]
pub struct Member {
    /// The state machine: store, leases, member table, alarms, waiters.
    machine: Arc<Machine>,
    /// Ids reported in every response header.
    identity: Identity,
    /// Size limits, checked before proposing.
    limits: Limits,
    /// Raft, when replicated.
    replication: Option<Replication>,
    /// Serialises local applies (no raft): each takes the next index.
    local_apply: Arc<Mutex<()>>,
    /// Chooses proposal ids (etcd's idutil: member id prefix, time, counter)
    /// so that ids are unique across the cluster.
    proposal_ids: IdGenerator,
    /// Chooses the id of a LeaseGrant that asks for 0, before it is applied.
    lease_ids: IdGenerator,
    /// How often watchers that asked for progress notifications get one
    /// (etcd's `--experimental-watch-progress-notify-interval`).
    watch_progress_interval: Duration,
    /// `--quota-backend-bytes`: past this database size, writes that add
    /// data raise the NOSPACE alarm and are refused.
    quota_backend_bytes: u64,
    /// This member's zone (`--zone`), reported by Status.
    zone: String,
    /// Channels to peers for lease requests forwarded to the leader.
    peer_channels: crate::raft::PeerChannels,
    /// The database size last read for the quota check, and when.
    db_size: Mutex<Option<(std::time::Instant, u64)>>,
    /// Set when the member begins to stop, so long-lived per-client tasks
    /// (watch streams) end and release the store.
    stopping: tokio::sync::watch::Sender<bool>,
    /// `--strict-reconfig-check`: refuse membership changes that would
    /// leave too few started or reachable voters ([`crate::reconfig`]).
    strict_reconfig_check: bool,
}

fn blocking_failed(e: tokio::task::JoinError) -> EtcdError {
    tracing::error!(error = %e, "store task failed");
    EtcdError::Internal
}

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = crate::defaults::QUOTA_BACKEND_BYTES;

/// How long the database size read for the quota check is reused.
const DB_SIZE_REFRESH: Duration = Duration::from_millis(500);

/// Proposals are refused while applying lags committing by more than this
/// (etcd's maxGapBetweenApplyAndCommitIndex).
const MAX_APPLY_LAG: u64 = 5000;

impl Member {
    /// A member applying its own writes (no raft), on a new store.
    pub fn new(store: Arc<Store>, identity: Identity, limits: Limits) -> Self {
        let lessor = promoted(Lessor::new(LessorConfig::default(), Arc::new(TokioClock)));
        Self::with_machine(
            Arc::new(Machine::new(store, lessor)),
            identity,
            limits,
            None,
        )
    }

    /// A member over `machine`, replicated through `replication` if given.
    pub fn with_machine(
        machine: Arc<Machine>,
        identity: Identity,
        limits: Limits,
        replication: Option<Replication>,
    ) -> Self {
        Self {
            machine,
            identity,
            limits,
            replication,
            local_apply: Arc::new(Mutex::new(())),
            proposal_ids: IdGenerator::now(identity.member_id),
            lease_ids: IdGenerator::now(identity.member_id),
            watch_progress_interval: DEFAULT_WATCH_PROGRESS_INTERVAL,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            zone: String::new(),
            db_size: Mutex::new(None),
            peer_channels: crate::raft::PeerChannels::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            strict_reconfig_check: true,
        }
    }

    /// Tells long-lived per-client tasks to end.
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Member::begin_stop`] was called.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Sets the watch progress notification interval.
    pub fn with_watch_progress_interval(mut self, interval: Duration) -> Self {
        self.watch_progress_interval = interval;
        self
    }

    /// Sets the backend quota (`--quota-backend-bytes`).
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota_backend_bytes = bytes;
        self
    }

    /// Sets `--strict-reconfig-check` (on by default, as in etcd).
    pub fn with_strict_reconfig_check(mut self, strict: bool) -> Self {
        self.strict_reconfig_check = strict;
        self
    }

    /// Whether membership changes are checked ([`crate::reconfig`]).
    pub fn strict_reconfig_check(&self) -> bool {
        self.strict_reconfig_check
    }

    /// How peer channels (lease forwarding, hash checks) connect.
    pub fn with_peer_dialer(mut self, dialer: crate::raft::transport::Dialer) -> Self {
        self.peer_channels = crate::raft::PeerChannels::new(dialer);
        self
    }

    /// This member's zone, reported by Status.
    pub fn with_zone(mut self, zone: String) -> Self {
        self.zone = zone;
        self
    }

    /// The watch progress notification interval.
    pub fn watch_progress_interval(&self) -> Duration {
        self.watch_progress_interval
    }

    /// The store (for watches).
    pub fn store(&self) -> &Arc<Store> {
        self.machine.store()
    }

    /// The state machine.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    /// Raft, when replicated.
    pub fn replication(&self) -> Option<&Replication> {
        self.replication.as_ref()
    }

    /// The raft status (a lone leader's when not replicated).
    pub fn raft_status(&self) -> RaftStatus {
        match &self.replication {
            Some(r) => r.raft.status(),
            None => {
                let applied = self.machine.applied_index();
                RaftStatus {
                    id: self.identity.member_id,
                    leader: self.identity.member_id,
                    term: SINGLE_MEMBER_TERM,
                    commit: applied,
                    applied,
                    is_leader: true,
                    ..RaftStatus::default()
                }
            }
        }
    }

    /// The member's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The cluster id: the replicated one once known (a member that joined
    /// an existing cluster learns it with its first snapshot).
    pub fn cluster_id(&self) -> u64 {
        match self.machine.cluster_id() {
            0 => self.identity.cluster_id,
            id => id,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// This member's zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// A complete response header at `revision` (0 = the current revision).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let raft_term = match &self.replication {
            Some(r) => r.raft.status().term,
            None => SINGLE_MEMBER_TERM,
        };
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

    fn check_size(&self, request: &impl Message) -> Result<(), EtcdError> {
        if request.encoded_len() + RAFT_ENVELOPE_BYTES > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }

    /// Refuses writes that add data while NOSPACE is raised; raises it when
    /// the database has grown past the quota (etcd's quota check).
    async fn check_space(&self, cost: usize) -> Result<(), EtcdError> {
        if self.machine.has_alarm(AlarmType::Nospace) {
            return Err(EtcdError::NoSpace);
        }
        let total = self.db_size().await?;
        if total.saturating_add(cost as u64) > self.quota_backend_bytes {
            tracing::warn!(
                db_size = total,
                quota = self.quota_backend_bytes,
                "database space exceeded; raising the NOSPACE alarm"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.identity.member_id,
                alarm: AlarmType::Nospace as i32,
            };
            let _ = self.propose(Command::Alarm(raise)).await;
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// The leader's corruption check (etcd's periodic check): compares this
    /// member's HashKV at its current revision with every other member's at
    /// the same revision and raises CORRUPT for a member whose hash differs
    /// (same compacted revision, different hash). Members that are behind,
    /// unreachable or compacted differently are skipped this round.
    pub async fn check_corruption(&self) -> Result<(), EtcdError> {
        if !self.raft_status().is_leader {
            return Ok(());
        }
        let mine = self.hash_kv(0).await?;
        let revision = mine.header.map(|h| h.revision).unwrap_or(0);
        for peer in self.machine.members() {
            if peer.id == self.identity.member_id {
                continue;
            }
            let Some(url) = peer.peer_urls.first() else {
                continue;
            };
            let theirs = match crate::raft::transport::peer_hash_kv(
                self.peer_channels.dialer(),
                url,
                revision,
            )
            .await
            {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(peer = format!("{:x}", peer.id), error = %e, "corruption check skipped a member");
                    continue;
                }
            };
            if theirs.compact_revision == mine.compact_revision && theirs.hash != mine.hash {
                tracing::error!(
                    peer = format!("{:x}", peer.id),
                    revision,
                    leader_hash = mine.hash,
                    peer_hash = theirs.hash,
                    "members' hashes disagree; raising the CORRUPT alarm"
                );
                self.propose(Command::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: peer.id,
                    alarm: AlarmType::Corrupt as i32,
                }))
                .await?;
            }
        }
        Ok(())
    }

    /// The database size for the quota check, read from the engine at most
    /// every [`DB_SIZE_REFRESH`] (a property query on the blocking pool is
    /// too much to pay on every write).
    async fn db_size(&self) -> Result<u64, EtcdError> {
        let cached = *self.db_size.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, size)) = cached {
            if at.elapsed() < DB_SIZE_REFRESH {
                return Ok(size);
            }
        }
        let store = Arc::clone(self.store());
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        *self.db_size.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), size.total));
        Ok(size.total)
    }

    /// Refuses new requests once the member is stopping, or has failed
    /// (etcd's "server stopped"): never alive and broken, serving stale
    /// reads while writes fail.
    fn check_serving(&self) -> Result<(), EtcdError> {
        if *self.stopping.borrow() {
            return Err(EtcdError::Stopped);
        }
        Ok(())
    }

    /// Refuses what a learner cannot do.
    fn check_not_learner(&self) -> Result<(), EtcdError> {
        if let Some(r) = &self.replication {
            if r.raft.status().is_learner {
                return Err(EtcdError::NotSupportedForLearner);
            }
        }
        Ok(())
    }

    /// Proposes `request` and waits until this member has applied it.
    /// While the CORRUPT alarm is raised, only alarm changes get through
    /// (etcd refuses everything else with "corrupt cluster").
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, EtcdError> {
        self.propose_with(command, false).await
    }

    /// [`Member::propose`] for decisions only the leader may take: the
    /// entry is appended only if this member leads when raft gets it, never
    /// forwarded (found by cairn-jepsen, FINDINGS.md #4: a paused leader,
    /// resumed, revoked leases its successor had renewed).
    pub(crate) async fn propose_as_leader(&self, command: Command) -> Result<Applied, EtcdError> {
        self.propose_with(command, true).await
    }

    async fn propose_with(
        &self,
        command: Command,
        leader_only: bool,
    ) -> Result<Applied, EtcdError> {
        self.check_serving()?;
        if !matches!(command, Command::Alarm(_)) && self.machine.has_alarm(AlarmType::Corrupt) {
            return Err(EtcdError::Corrupt);
        }
        let id = self.next_proposal_id();
        let data = entry::encode(id, command)?;
        let Some(replication) = &self.replication else {
            return self.apply_locally(id, data).await;
        };
        let status = replication.raft.status();
        if status.is_learner {
            return Err(EtcdError::NotSupportedForLearner);
        }
        if status.commit > status.applied + MAX_APPLY_LAG {
            return Err(EtcdError::TooManyRequests);
        }
        let waiter = self.machine.register(id);
        let mut leadership = replication.raft.leadership();
        leadership.borrow_and_update();
        let proposed = if leader_only {
            replication.raft.propose_as_leader(data).await
        } else {
            replication.raft.propose(data).await
        };
        if let Err(e) = proposed {
            self.machine.cancel(id);
            return Err(e);
        }
        let outcome = self
            .wait_applied(replication, waiter, status.leader, leadership)
            .await;
        if outcome.is_err() {
            self.machine.cancel(id);
        }
        outcome
    }

    /// Waits for a proposal to be applied here. Gives up after the request
    /// timeout ("request timed out"), or sooner once a new leader has led
    /// for a grace period without applying it: a proposal lost with the old
    /// leader would otherwise hold the client for the whole timeout. Either
    /// way the outcome is unknown (a lost proposal may still be delivered
    /// late), so the errors are etcd's timeout errors, never "not applied".
    async fn wait_applied(
        &self,
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

    /// A cluster-unique proposal id.
    pub(crate) fn next_proposal_id(&self) -> u64 {
        self.proposal_ids.next_lease_id() as u64
    }

    /// Applies an encoded request at the next index, on the blocking pool.
    async fn apply_locally(&self, id: u64, data: Vec<u8>) -> Result<Applied, EtcdError> {
        let machine = Arc::clone(&self.machine);
        let serial = Arc::clone(&self.local_apply);
        let waiter = machine.register(id);
        tokio::task::spawn_blocking(move || {
            let _serial = serial.lock().unwrap_or_else(|e| e.into_inner());
            let index = machine.applied_index() + 1;
            machine.apply_entry(index, &data).map_err(|e| {
                tracing::error!(error = %e, "applying a write failed");
                EtcdError::Internal
            })
        })
        .await
        .map_err(blocking_failed)??;
        waiter.await.map_err(|_| EtcdError::Internal)?
    }

    /// Waits until this member may serve a linearizable read.
    pub async fn barrier(&self) -> Result<(), EtcdError> {
        let Some(replication) = &self.replication else {
            return Ok(());
        };
        self.check_not_learner()?;
        if cfg!(feature = "jepsen-broken") && replication.broken_stale_reads {
            // Deliberately wrong (cairn-jepsen's proof that it can fail):
            // serve "linearizable" reads from local state.
            return Ok(());
        }
        match tokio::time::timeout(replication.request_timeout, replication.raft.read_index()).await
        {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Range. Linearizable (the default) waits for a ReadIndex round;
    /// `serializable` reads the local state at once.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.check_serving()?;
        if self.machine.has_alarm(AlarmType::Corrupt) {
            return Err(EtcdError::Corrupt);
        }
        if !req.serializable {
            self.barrier().await?;
        }
        let store = Arc::clone(self.store());
        let result = tokio::task::spawn_blocking(move || apply::range(store.as_ref(), &req))
            .await
            .map_err(blocking_failed)?;
        if let Err(EtcdError::Corrupt) = &result {
            self.raise_corrupt().await;
        }
        result
    }

    /// Raises the CORRUPT alarm for this member (data read from its disk
    /// failed authentication): from then on every member refuses to serve.
    async fn raise_corrupt(&self) {
        tracing::error!("corrupt data on this member's disk; raising the CORRUPT alarm");
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.identity.member_id,
            alarm: AlarmType::Corrupt as i32,
        };
        if let Err(e) = self.propose(Command::Alarm(raise)).await {
            tracing::error!(error = %e, "raising the CORRUPT alarm failed");
        }
    }

    /// Put.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.check_size(&req)?;
        self.check_space(req.encoded_len()).await?;
        match self.propose(Command::Put(req)).await? {
            Applied::Put(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// DeleteRange.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.check_size(&req)?;
        match self.propose(Command::DeleteRange(req)).await? {
            Applied::DeleteRange(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Txn. One that writes nothing (no put or delete on any branch) is
    /// served like a read, as etcd does: after a ReadIndex round (unless
    /// every range in it is serializable), from the local store, without a
    /// log entry.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.check_size(&req)?;
        if self.replication.is_some() && !has_write(&req) {
            self.check_serving()?;
            if self.machine.has_alarm(AlarmType::Corrupt) {
                return Err(EtcdError::Corrupt);
            }
            if !all_serializable(&req) {
                self.barrier().await?;
            }
            let machine = Arc::clone(&self.machine);
            return tokio::task::spawn_blocking(move || machine.read_only_txn(&req))
                .await
                .map_err(blocking_failed)?;
        }
        if has_put(&req) {
            self.check_space(req.encoded_len()).await?;
        }
        match self.propose(Command::Txn(req)).await? {
            Applied::Txn(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Compact. With `physical`, returns once the obsolete records are deleted
    /// on this member; otherwise they are deleted in the background.
    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let physical = req.physical;
        match self.propose(Command::Compaction(req)).await? {
            Applied::Compaction(_, done) => {
                if physical {
                    done.await.map_err(|_| EtcdError::Internal)??;
                }
                Ok(CompactionResponse {
                    header: Some(self.header(0)),
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Maintenance.Status.
    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        let store = Arc::clone(self.store());
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        let raft = self.raft_status();
        let mut errors = Vec::new();
        if raft.leader == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        for alarm in self.machine.alarms() {
            if alarm.member_id == self.identity.member_id || alarm.member_id == 0 {
                let name = AlarmType::try_from(alarm.alarm)
                    .map(|a| a.as_str_name())
                    .unwrap_or("UNKNOWN");
                errors.push(format!("memberID:{} alarm:{name} ", alarm.member_id));
            }
        }
        Ok(StatusResponse {
            header: Some(self.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size: size.total as i64,
            leader: raft.leader,
            raft_index: raft.commit,
            raft_term: raft.term,
            raft_applied_index: raft.applied,
            errors,
            db_size_in_use: size.in_use as i64,
            is_learner: raft.is_learner,
            zone: self.zone.clone(),
        })
    }

    /// Maintenance.Alarm: list, raise or clear alarms. Raising and clearing
    /// are replicated, so every member refuses (or accepts) writes alike.
    /// Alarms are kept per (member id, type) exactly as given, member 0
    /// included (etcd does not read 0 as "every member" nor as "this one");
    /// GET lists every pair (of one type, unless NONE) after a linearizable
    /// barrier, as etcd reads them through raft.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        let action = AlarmAction::try_from(req.action).unwrap_or(AlarmAction::Get);
        if action == AlarmAction::Get {
            self.barrier().await?;
            let alarms = self
                .machine
                .alarms()
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .collect();
            return Ok(AlarmResponse {
                header: Some(self.header(0)),
                alarms,
            });
        }
        match self.propose(Command::Alarm(req)).await? {
            Applied::Alarm(r) => Ok(AlarmResponse {
                header: Some(self.header(0)),
                alarms: r.alarms,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Maintenance.Defragment: reclaims the space of deleted records.
    pub async fn defragment(&self) -> Result<(), EtcdError> {
        let store = Arc::clone(self.store());
        tokio::task::spawn_blocking(move || store.engine().defragment())
            .await
            .map_err(blocking_failed)??;
        Ok(())
    }
}

/// `lessor`, promoted: a single member is the leader from the start.
fn promoted(lessor: Lessor) -> Arc<Lessor> {
    lessor.promote();
    Arc::new(lessor)
}

/// Leases: grant, revoke and checkpoint are writes (state-machine
/// operations); renewals and TTLs use the leader's expiry clock, so a
/// follower forwards them to the leader.
impl Member {
    /// Replaces the lessor with `lessor` (recovered from the data directory)
    /// and promotes it: every lease gets a fresh expiry, extended by the
    /// promotion extension, instead of expiring all at once after a restart.
    /// For a member without raft only.
    pub fn with_lessor(mut self, lessor: Lessor) -> Self {
        let store = Arc::clone(self.machine.store());
        let keys = self.machine.keys().cloned();
        self.machine = Arc::new(Machine::new(store, promoted(lessor)).with_keys(keys));
        self
    }

    /// The lessor.
    pub fn lessor(&self) -> &Arc<Lessor> {
        self.machine.lessor()
    }

    /// LeaseGrant. An id of 0 is replaced by one from the member's id
    /// generator before the grant is proposed, so applying stays deterministic.
    pub async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        self.check_size(&req)?;
        self.check_space(req.encoded_len()).await?;
        if req.id == 0 {
            req.id = self.lease_ids.next_lease_id();
        }
        match self.propose(Command::LeaseGrant(req)).await? {
            Applied::LeaseGrant(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseRevoke: deletes the attached keys and the lease in one write.
    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        match self.propose(Command::LeaseRevoke(req)).await? {
            Applied::LeaseRevoke(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseCheckpoint (leader-internal): records remaining TTLs.
    pub async fn lease_checkpoint(
        &self,
        req: LeaseCheckpointRequest,
    ) -> Result<LeaseCheckpointResponse, EtcdError> {
        match self.propose(Command::LeaseCheckpoint(req)).await? {
            Applied::LeaseCheckpoint(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The leader's peer URL when this member is a follower (None when this
    /// member leads, or is not replicated); NoLeader when there is none.
    fn leader_url(&self) -> Result<Option<String>, EtcdError> {
        let Some(r) = &self.replication else {
            return Ok(None);
        };
        let status = r.raft.status();
        if status.is_leader {
            return Ok(None);
        }
        if status.leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        self.machine
            .member(status.leader)
            .and_then(|m| m.peer_urls.first().cloned())
            .map(Some)
            .ok_or(EtcdError::NoLeader)
    }

    /// One keep-alive: renews lease `id` and returns its TTL (on the leader;
    /// a follower forwards it). As in etcd, a checkpointed remaining TTL is
    /// first cleared through the state machine (so a restart does not resume
    /// from a stale checkpoint), then the lease expires its full TTL from
    /// now. `LeaseNotFound` for a lease that does not exist or has expired.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, EtcdError> {
        if let Some(url) = self.leader_url()? {
            let req = LeaseForward {
                request: Some(lease_forward::Request::Renew(id)),
            };
            return Ok(self.peer_channels.forward_lease(&url, req).await?.ttl);
        }
        self.lease_renew_here(id).await
    }

    /// Renews lease `id` on this member, which must be the leader.
    pub async fn lease_renew_here(&self, id: i64) -> Result<i64, EtcdError> {
        if !self.raft_status().is_leader {
            return Err(EtcdError::NotLeader);
        }
        self.wait_expired_lease_revoked(id).await?;
        if self.lessor().renew_needs_clear(id)? {
            self.lease_checkpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            })
            .await?;
        }
        self.lessor().renew(id)
    }

    /// An expired lease whose revoke is still on its way through raft: wait
    /// until it is applied (then renewing answers "lease not found", and the
    /// keys are already gone), as etcd's lessor waits on the lease's revoke
    /// channel. Without this a client could be told the lease is gone and
    /// then still read its keys (found by cairn-jepsen, FINDINGS.md #2). If
    /// this member stops leading meanwhile: `NotLeader` (the client retries).
    async fn wait_expired_lease_revoked(&self, id: i64) -> Result<(), EtcdError> {
        let mut changes = self.lessor().subscribe_changes();
        let timeout = self
            .replication
            .as_ref()
            .map_or(Duration::from_secs(5), |r| r.request_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.lessor().is_expired(id) {
            if !self.lessor().is_primary() {
                return Err(EtcdError::NotLeader);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::Timeout),
            }
        }
        Ok(())
    }

    /// LeaseTimeToLive (on the leader; a follower forwards it).
    /// `LeaseNotFound` for an unknown lease (the service answers it with
    /// TTL -1, as etcd does).
    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if let Some(url) = self.leader_url()? {
            let forward = LeaseForward {
                request: Some(lease_forward::Request::TimeToLive(req)),
            };
            let resp = self.peer_channels.forward_lease(&url, forward).await?;
            let mut ttl = resp.time_to_live.ok_or(EtcdError::Internal)?;
            ttl.header = Some(self.header(0));
            return Ok(ttl);
        }
        self.lease_time_to_live_here(req)
    }

    /// LeaseTimeToLive from this member's lessor.
    pub fn lease_time_to_live_here(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        let header = self.header(0);
        let ttl = self
            .lessor()
            .time_to_live(req.id, req.keys)
            .ok_or(EtcdError::LeaseNotFound)?;
        Ok(LeaseTimeToLiveResponse {
            header: Some(header),
            id: req.id,
            ttl: ttl.ttl,
            granted_ttl: ttl.granted_ttl,
            keys: ttl.keys,
        })
    }

    /// LeaseLeases: every lease, soonest expiry first.
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        LeaseLeasesResponse {
            header: Some(self.header(0)),
            leases: self
                .lessor()
                .leases()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }
    }

    /// Revokes the leases that have expired (at most half the revoke rate per
    /// call), each through the same write path as a client's LeaseRevoke.
    /// Called by the lease task every check interval.
    pub async fn revoke_expired_leases(&self) {
        for id in self.lessor().expired(crate::lease::REVOKE_RATE / 2) {
            let revoked = self
                .propose_as_leader(Command::LeaseRevoke(LeaseRevokeRequest { id }))
                .await;
            match revoked {
                Ok(_) => tracing::debug!(lease = format!("{id:x}"), "expired lease revoked"),
                // Deposed meanwhile: the new leader's lessor decides.
                Err(EtcdError::NotLeader) => return,
                // Revoked by a client meanwhile.
                Err(EtcdError::LeaseNotFound) => {}
                Err(e) => tracing::warn!(
                    lease = format!("{id:x}"),
                    error = %e,
                    "revoking an expired lease failed; will retry"
                ),
            }
        }
    }

    /// Applies the due lease checkpoints, in batches. Called by the lease
    /// task every check interval.
    pub async fn checkpoint_due_leases(&self) {
        // etcd applies at most half its checkpoint rate (1000/s) of batches
        // per round.
        for _ in 0..crate::lease::REVOKE_RATE / 2 {
            let due = self
                .lessor()
                .due_checkpoints(crate::lease::CHECKPOINT_BATCH);
            let full = due.len() == crate::lease::CHECKPOINT_BATCH;
            if due.is_empty() {
                return;
            }
            let req = LeaseCheckpointRequest {
                checkpoints: due
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect(),
            };
            if let Err(e) = self.propose_as_leader(Command::LeaseCheckpoint(req)).await {
                tracing::warn!(error = %e, "lease checkpoint failed");
                return;
            }
            if !full {
                return;
            }
        }
    }
}

/// A waiter got the outcome of another kind of request: a bug, never a
/// client's fault.
fn unexpected(applied: Applied) -> EtcdError {
    tracing::error!(
        applied = applied.kind(),
        "proposal answered with the wrong kind of result"
    );
    EtcdError::Internal
}

#[tonic::async_trait]
impl crate::raft::PeerHandler for Member {
    fn members(&self) -> (u64, Vec<cairn_proto::cairnpb::Member>) {
        (self.cluster_id(), self.machine.members())
    }

    async fn hash_kv(
        &self,
        revision: i64,
    ) -> Result<cairn_proto::etcdserverpb::HashKvResponse, EtcdError> {
        Member::hash_kv(self, revision).await
    }

    async fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        self.lease_renew_here(id).await
    }

    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if !self.raft_status().is_leader {
            return Err(EtcdError::NotLeader);
        }
        self.lease_time_to_live_here(req)
    }
}

/// Whether any branch of `req` (nested ones included) puts or deletes.
fn has_write(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(t)) => has_write(t),
            _ => false,
        })
}

/// Whether every range of a read-only `req` asks for a serializable read.
fn all_serializable(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => all_serializable(t),
            _ => true,
        })
}

fn has_put(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => has_put(t),
            _ => false,
        })
}
