//! The Lease API. Grant, revoke and checkpoint are writes (state-machine
//! operations); renewals and TTLs use the leader's expiry clock, so a
//! follower forwards them to the leader. The bodies of the leader's lease
//! loop ([`crate::tasks::lease_expiry`]) live here too: they propose through the
//! same write path, leader-only.

use std::sync::Arc;

use cairn_proto::cairnpb::{lease_forward, LeaseForward};
use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use prost::Message;

use super::quota::Quota;
use super::{unexpected, Limits, Proposer};
use crate::auth::Caller;
use crate::entry::Command;
use crate::error::EtcdError;
use crate::lease::{IdGenerator, Lessor, CHECKPOINT_BATCH, REVOKE_RATE};
use crate::machine::Applied;
use crate::metrics::lease::LeaseMetrics;
use crate::peer::PeerChannels;

/// What the Lease service, the lease loop and the peer service call.
#[derive(Debug)]
pub struct LeaseApi {
    /// Writes go through it; it knows who leads.
    proposer: Arc<Proposer>,
    /// `--max-request-bytes`, checked before a grant is proposed.
    limits: Limits,
    /// A grant adds data: refused once the database is full.
    quota: Arc<Quota>,
    /// Chooses the id of a LeaseGrant that asks for 0, before it is applied
    /// (so applying stays deterministic).
    lease_ids: IdGenerator,
    /// Channels to peers, for renewals and TTLs forwarded to the leader.
    peer_channels: PeerChannels,
    /// etcd's renewal and expiry counters (set once at start; none in unit
    /// tests).
    metrics: std::sync::OnceLock<LeaseMetrics>,
}

impl LeaseApi {
    /// The Lease API over `proposer`.
    pub fn new(
        proposer: Arc<Proposer>,
        limits: Limits,
        quota: Arc<Quota>,
        peer_channels: PeerChannels,
    ) -> Self {
        let lease_ids = IdGenerator::now(proposer.identity().member_id);
        Self {
            proposer,
            limits,
            quota,
            lease_ids,
            peer_channels,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// The lessor.
    pub fn lessor(&self) -> &Arc<Lessor> {
        self.proposer.machine().lessor()
    }

    /// The shared write path (headers, the stop signal).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// LeaseGrant. An id of 0 is replaced by one from the member's id
    /// generator before the grant is proposed, so applying stays deterministic.
    pub async fn grant(
        &self,
        mut req: LeaseGrantRequest,
        caller: &Caller,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        self.limits.check_size(&req)?;
        self.quota.check(req.encoded_len()).await?;
        if req.id == 0 {
            req.id = self.lease_ids.next_lease_id();
        }
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::LeaseGrant(req), who.header())
            .await?
        {
            Applied::LeaseGrant(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseRevoke: deletes the attached keys and the lease in one write.
    /// While auth is on, the caller must be allowed to write every attached
    /// key (checked at apply).
    pub async fn revoke(
        &self,
        req: LeaseRevokeRequest,
        caller: &Caller,
    ) -> Result<LeaseRevokeResponse, EtcdError> {
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::LeaseRevoke(req), who.header())
            .await?
        {
            Applied::LeaseRevoke(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseCheckpoint (leader-internal): records remaining TTLs.
    pub async fn checkpoint(
        &self,
        req: LeaseCheckpointRequest,
    ) -> Result<LeaseCheckpointResponse, EtcdError> {
        match self.proposer.propose(Command::LeaseCheckpoint(req)).await? {
            Applied::LeaseCheckpoint(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The leader's peer URL when this member is a follower (None when this
    /// member leads); NoLeader when there is none.
    fn leader_url(&self) -> Result<Option<String>, EtcdError> {
        let (is_leader, leader) = self.proposer.with_raft_status(|s| (s.is_leader, s.leader));
        if is_leader {
            return Ok(None);
        }
        if leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        self.proposer
            .machine()
            .tables()
            .first_peer_url(leader)
            .map(Some)
            .ok_or(EtcdError::NoLeader)
    }

    /// One keep-alive: renews lease `id` and returns its TTL (on the leader;
    /// a follower forwards it). As in etcd, a checkpointed remaining TTL is
    /// first cleared through the state machine (so a restart does not resume
    /// from a stale checkpoint), then the lease expires its full TTL from
    /// now. `LeaseNotFound` for a lease that does not exist or has expired.
    ///
    /// While auth is on, the caller must be a root user or be allowed to
    /// write every key attached to the lease (etcd's `checkLeaseRenew`).
    pub async fn renew(&self, id: i64, caller: &Caller) -> Result<i64, EtcdError> {
        self.check_lease_keys(id, caller, true).await?;
        if let Some(url) = self.leader_url()? {
            return Ok(self.peer_channels.renew(&url, id).await?);
        }
        self.renew_here(id).await
    }

    /// Renews lease `id` on this member, which must be the leader.
    pub async fn renew_here(&self, id: i64) -> Result<i64, EtcdError> {
        if !self.proposer.is_leader() {
            return Err(EtcdError::NotLeader);
        }
        self.wait_expired_lease_revoked(id).await?;
        if self.lessor().leader_only().renew_needs_clear(id)? {
            self.checkpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            })
            .await?;
        }
        let ttl = self.lessor().leader_only().renew(id)?;
        if let Some(m) = self.metrics.get() {
            m.renewed.inc();
        }
        Ok(ttl)
    }

    /// Counts renewals and expiries in `metrics` from now on.
    pub fn set_metrics(&self, metrics: LeaseMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// An expired lease whose revoke is still on its way through raft: wait
    /// until it is applied (then renewing answers "lease not found", and the
    /// keys are already gone), as etcd's lessor waits on the lease's revoke
    /// channel. Without this a client could be told the lease is gone and
    /// then still read its keys (found by cairn-jepsen, FINDINGS.md #2). If
    /// this member stops leading meanwhile: `NotLeader` (the client retries).
    async fn wait_expired_lease_revoked(&self, id: i64) -> Result<(), EtcdError> {
        let mut changes = self.lessor().subscribe_changes();
        let deadline = tokio::time::Instant::now() + self.proposer.request_timeout();
        let leader_only = self.lessor().leader_only();
        while leader_only.is_expired(id) {
            if !leader_only.is_primary() {
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
    ///
    /// With `keys`, while auth is on, the caller must be a root user or be
    /// allowed to read every attached key (etcd's `checkLeaseTimeToLive`).
    pub async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        caller: &Caller,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if req.keys {
            self.check_lease_keys(req.id, caller, false).await?;
        }
        if let Some(url) = self.leader_url()? {
            let forward = LeaseForward {
                request: Some(lease_forward::Request::TimeToLive(req)),
            };
            let resp = self.peer_channels.forward_lease(&url, forward).await?;
            let mut ttl = resp.time_to_live.ok_or(EtcdError::Internal)?;
            ttl.header = Some(self.proposer.header(0));
            return Ok(ttl);
        }
        self.time_to_live_here(req)
    }

    /// LeaseTimeToLive from this member's lessor.
    pub fn time_to_live_here(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        let header = self.proposer.header(0);
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

    /// Refuses `caller`, while auth is on, unless it is a root user or may
    /// write (`write`) or read every key attached to lease `id`. A caller
    /// without credentials is refused ("user name is empty").
    async fn check_lease_keys(
        &self,
        id: i64,
        caller: &Caller,
        write: bool,
    ) -> Result<(), EtcdError> {
        let who = self.proposer.identify(caller).await?;
        if !who.is_checked() {
            return Ok(());
        }
        if who.user().is_none() {
            return Err(EtcdError::UserEmpty);
        }
        let state = self.proposer.machine().auth().state();
        if who.admin(&state).is_ok() {
            return Ok(());
        }
        let keys = self.lessor().keys(id).unwrap_or_default();
        let checker = who.checker(&state);
        if write {
            checker.lease_keys(&keys)
        } else {
            checker.lease_keys_read(&keys)
        }
    }

    /// LeaseLeases: every lease, soonest expiry first. While auth is on,
    /// the caller must be a root user or be allowed to read every key
    /// attached to any lease (etcd's `checkLeaseLeases`).
    pub async fn leases(&self, caller: &Caller) -> Result<LeaseLeasesResponse, EtcdError> {
        let who = self.proposer.identify(caller).await?;
        if who.is_checked() {
            if who.user().is_none() {
                return Err(EtcdError::UserEmpty);
            }
            let state = self.proposer.machine().auth().state();
            if who.admin(&state).is_err() {
                let checker = who.checker(&state);
                for id in self.lessor().leases() {
                    checker.lease_keys_read(&self.lessor().keys(id).unwrap_or_default())?;
                }
            }
        }
        Ok(LeaseLeasesResponse {
            header: Some(self.proposer.header(0)),
            leases: self
                .lessor()
                .leases()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        })
    }

    /// Revokes the leases that have expired (at most half the revoke rate per
    /// call), each through the same write path as a client's LeaseRevoke.
    /// Called by the lease task every check interval.
    pub async fn revoke_expired_leases(&self) {
        let expired = self.lessor().leader_only().expired(REVOKE_RATE / 2);
        for id in expired {
            let revoked = self
                .proposer
                .propose_as_leader(Command::LeaseRevoke(LeaseRevokeRequest { id }))
                .await;
            match revoked {
                Ok(_) => {
                    tracing::debug!(lease = format!("{id:x}"), "expired lease revoked");
                    if let Some(m) = self.metrics.get() {
                        m.expired.inc();
                    }
                }
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
        for _ in 0..REVOKE_RATE / 2 {
            let due = self
                .lessor()
                .leader_only()
                .due_checkpoints(CHECKPOINT_BATCH);
            let full = due.len() == CHECKPOINT_BATCH;
            if due.is_empty() {
                return;
            }
            let req = LeaseCheckpointRequest {
                checkpoints: due
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect(),
            };
            if let Err(e) = self
                .proposer
                .propose_as_leader(Command::LeaseCheckpoint(req))
                .await
            {
                tracing::warn!(error = %e, "lease checkpoint failed");
                return;
            }
            if !full {
                return;
            }
        }
    }
}
