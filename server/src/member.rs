//! One Cairn member: the internal API the gRPC services call (etcd's `EtcdServer`).
//!
//! A single member applies each write directly to the store, under the store's
//! write lock, recording an applied index with it; the raft work replaces
//! "apply directly" with "propose, wait for commit, apply" behind these same
//! methods. Store work is blocking (RocksDB, fsync), so it runs on tokio's
//! blocking pool, never on a runtime worker.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
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
use crate::error::EtcdError;
use crate::lease::{IdGenerator, LeaseTxn, Lessor, LessorConfig, TokioClock};
use crate::mvcc::{Store, WriteTxn};

/// The etcd version Cairn reports. Clients gate features on it: kube-apiserver
/// enables WatchProgressRequest only from 3.5.8 on (and 3.4.25).
pub const ETCD_VERSION: &str = "3.5.17";

/// The raft term a single member reports until raft replication exists: what a
/// freshly started single etcd member shows (term 1 at bootstrap, 2 once it
/// has elected itself).
pub const SINGLE_MEMBER_TERM: u64 = 2;

/// etcd's default watch progress notification interval: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

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

/// A running member's state, shared by every gRPC service.
#[derive(Debug)]
pub struct Member {
    /// The MVCC store: all user data.
    store: Arc<Store>,
    /// Ids reported in every response header.
    identity: Identity,
    /// Size limits, checked before applying.
    limits: Limits,
    /// Active alarms. NOSPACE refuses writes while raised.
    alarms: Mutex<BTreeSet<(u64, i32)>>,
    /// The lease table. Its replicated half changes only inside [`Member::write`].
    lessor: Arc<Lessor>,
    /// Chooses the id of a LeaseGrant that asks for 0, before it is applied.
    lease_ids: IdGenerator,
    /// How often watchers that asked for progress notifications get one
    /// (etcd's `--experimental-watch-progress-notify-interval`).
    watch_progress_interval: Duration,
    /// Set when the member begins to stop, so long-lived per-client tasks
    /// (watch streams) end and release the store.
    stopping: tokio::sync::watch::Sender<bool>,
}

fn blocking_failed(e: tokio::task::JoinError) -> EtcdError {
    tracing::error!(error = %e, "store task failed");
    EtcdError::Internal
}

impl Member {
    /// A member serving `store`.
    pub fn new(store: Arc<Store>, identity: Identity, limits: Limits) -> Self {
        Self {
            store,
            identity,
            limits,
            alarms: Mutex::new(BTreeSet::new()),
            lessor: promoted(Lessor::new(LessorConfig::default(), Arc::new(TokioClock))),
            lease_ids: IdGenerator::now(identity.member_id),
            watch_progress_interval: DEFAULT_WATCH_PROGRESS_INTERVAL,
            stopping: tokio::sync::watch::Sender::new(false),
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

    /// The watch progress notification interval.
    pub fn watch_progress_interval(&self) -> Duration {
        self.watch_progress_interval
    }

    /// The store (for watches).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The member's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A complete response header at `revision` (0 = the current revision).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision: if revision == 0 {
                self.store.current_revision()
            } else {
                revision
            },
            raft_term: SINGLE_MEMBER_TERM,
        }
    }

    fn check_size(&self, request: &impl Message) -> Result<(), EtcdError> {
        if request.encoded_len() + RAFT_ENVELOPE_BYTES > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }

    fn check_space(&self) -> Result<(), EtcdError> {
        let alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        if alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32) {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it with
    /// the next applied index. An error drops the transaction: nothing is written.
    ///
    /// `f` also gets the lessor as this write sees it; the lease changes it
    /// makes are staged into the same batch and applied to the lessor only
    /// once the commit succeeded.
    async fn write<R, F>(&self, f: F) -> Result<R, EtcdError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_>, &mut LeaseTxn<'_>) -> Result<R, EtcdError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let lessor = Arc::clone(&self.lessor);
        tokio::task::spawn_blocking(move || {
            let mut txn = store.write();
            let index = txn.applied_index() + 1;
            let mut leases = LeaseTxn::new(&lessor);
            let resp = f(&mut txn, &mut leases)?;
            let changes = leases.finish(&mut txn);
            lessor.apply_committed(changes, || txn.commit(Some(index)))?;
            Ok(resp)
        })
        .await
        .map_err(blocking_failed)?
    }

    /// Range. A single member's own state is linearizable, so `serializable`
    /// changes nothing here.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || apply::range(store.as_ref(), &req))
            .await
            .map_err(blocking_failed)?
    }

    /// Put.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.check_size(&req)?;
        self.check_space()?;
        self.write(move |txn, leases| apply::put(txn, leases, &req))
            .await
    }

    /// DeleteRange.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.check_size(&req)?;
        self.write(move |txn, leases| apply::delete_range(txn, leases, &req))
            .await
    }

    /// Txn.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.check_size(&req)?;
        if has_put(&req) {
            self.check_space()?;
        }
        self.write(move |txn, leases| apply::txn(txn, leases, &req))
            .await
    }

    /// Compact. With `physical`, returns once the obsolete records are deleted;
    /// otherwise they are deleted in the background.
    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        let rev = req.revision;
        let job = tokio::task::spawn_blocking(move || store.compact(rev))
            .await
            .map_err(blocking_failed)??;
        let physical = tokio::task::spawn_blocking(move || {
            if let Err(e) = job.run() {
                tracing::error!(error = %e, revision = rev, "compaction failed");
                return Err(EtcdError::from(e));
            }
            Ok(())
        });
        if req.physical {
            physical.await.map_err(blocking_failed)??;
        }
        Ok(CompactionResponse {
            header: Some(self.header(0)),
        })
    }

    /// Maintenance.Status.
    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        let applied = self.store.applied_index();
        Ok(StatusResponse {
            header: Some(self.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size: size.total as i64,
            leader: self.identity.member_id,
            raft_index: applied,
            raft_term: SINGLE_MEMBER_TERM,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: size.in_use as i64,
            is_learner: false,
        })
    }

    /// Maintenance.Alarm: list, raise or clear alarms.
    pub fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        let mut alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        let member = if req.member_id == 0 {
            self.identity.member_id
        } else {
            req.member_id
        };
        let listed = |set: &BTreeSet<(u64, i32)>, only: Option<(u64, i32)>| {
            set.iter()
                .filter(|a| only.is_none_or(|o| o == **a))
                .map(|(member_id, alarm)| AlarmMember {
                    member_id: *member_id,
                    alarm: *alarm,
                })
                .collect::<Vec<_>>()
        };
        let alarm_list = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => listed(&alarms, None),
            Ok(AlarmAction::Activate) => {
                if req.alarm == AlarmType::None as i32 {
                    Vec::new()
                } else {
                    alarms.insert((member, req.alarm));
                    listed(&alarms, Some((member, req.alarm)))
                }
            }
            Ok(AlarmAction::Deactivate) => {
                let was = listed(&alarms, Some((member, req.alarm)));
                alarms.remove(&(member, req.alarm));
                was
            }
            Err(_) => Vec::new(),
        };
        Ok(AlarmResponse {
            header: Some(self.header(0)),
            alarms: alarm_list,
        })
    }

    /// Maintenance.Defragment: reclaims the space of deleted records.
    pub async fn defragment(&self) -> Result<(), EtcdError> {
        let store = Arc::clone(&self.store);
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
/// operations); renewals and reads use the lessor's leader-only state.
impl Member {
    /// Replaces the lessor with `lessor` (recovered from the data directory)
    /// and promotes it: every lease gets a fresh expiry, extended by the
    /// promotion extension, instead of expiring all at once after a restart.
    pub fn with_lessor(mut self, lessor: Lessor) -> Self {
        self.lessor = promoted(lessor);
        self
    }

    /// The lessor.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// LeaseGrant. An id of 0 is replaced by one from the member's id
    /// generator before the grant is applied, so applying stays deterministic.
    pub async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        self.check_size(&req)?;
        self.check_space()?;
        if req.id == 0 {
            req.id = self.lease_ids.next_lease_id();
        }
        self.write(move |txn, leases| apply::lease_grant(txn, leases, &req))
            .await
    }

    /// LeaseRevoke: deletes the attached keys and the lease in one write.
    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        self.write(move |txn, leases| apply::lease_revoke(txn, leases, &req))
            .await
    }

    /// LeaseCheckpoint (leader-internal): records remaining TTLs.
    pub async fn lease_checkpoint(
        &self,
        req: LeaseCheckpointRequest,
    ) -> Result<LeaseCheckpointResponse, EtcdError> {
        self.write(move |txn, leases| apply::lease_checkpoint(txn, leases, &req))
            .await
    }

    /// One keep-alive: renews lease `id` and returns its TTL. As in etcd, a
    /// checkpointed remaining TTL is first cleared through the state machine
    /// (so a restart does not resume from a stale checkpoint), then the
    /// lease expires its full TTL from now. `LeaseNotFound` for a lease that
    /// does not exist or has already expired.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, EtcdError> {
        if self.lessor.renew_needs_clear(id)? {
            self.lease_checkpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            })
            .await?;
        }
        self.lessor.renew(id)
    }

    /// LeaseTimeToLive. `LeaseNotFound` for an unknown lease (the service
    /// answers it with TTL -1, as etcd does).
    pub fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        let header = self.header(0);
        let ttl = self
            .lessor
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
                .lessor
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
        for id in self.lessor.expired(crate::lease::REVOKE_RATE / 2) {
            match self.lease_revoke(LeaseRevokeRequest { id }).await {
                Ok(_) => tracing::debug!(lease = format!("{id:x}"), "expired lease revoked"),
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
            let due = self.lessor.due_checkpoints(crate::lease::CHECKPOINT_BATCH);
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
            if let Err(e) = self.lease_checkpoint(req).await {
                tracing::warn!(error = %e, "lease checkpoint failed");
                return;
            }
            if !full {
                return;
            }
        }
    }
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
