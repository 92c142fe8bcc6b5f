//! One Cairn member's internal API (etcd's `EtcdServer`), split the way
//! its gRPC services are: [`KvApi`], [`LeaseApi`], [`ClusterApi`],
//! [`MaintenanceApi`] and [`AuthApi`], each holding only what it needs, all sharing one
//! [`Proposer`] (propose and wait, ReadIndex, leader-only proposals, the
//! request timeout). [`Apis`] builds them once for a member; the gRPC
//! services, the peer service and the member's background tasks each take
//! the API they call. Every client request names its [`crate::auth::Caller`];
//! [`Proposer::identify`] (`identity.rs`) resolves it into a [`Who`] while
//! auth is on, whose header rides in the request's raft entry.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{HashKvResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use prost::Message;

use crate::error::EtcdError;
use crate::machine::{Applied, Machine};
use crate::metrics::Metrics;
use crate::mvcc::Store;
use crate::peer::PeerChannels;
use crate::raft::Dialer;
use crate::raft::{RaftHandle, RaftStatus};

mod auth;
#[cfg(test)]
mod auth_tests;
mod cluster;
mod identity;
mod kv;
mod lease;
mod maintenance;
mod proposer;
#[cfg(test)]
mod proposer_tests;
mod quota;
#[cfg(test)]
pub(crate) mod test_member;

pub use auth::AuthApi;
pub use cluster::{to_pb, ClusterApi};
pub use identity::Who;
pub use kv::KvApi;
pub use lease::LeaseApi;
pub use maintenance::{MaintenanceApi, CLUSTER_VERSION};
pub use proposer::Proposer;
pub use quota::Quota;

/// The etcd version Cairn reports. Clients gate features on it: kube-apiserver
/// enables WatchProgressRequest only from 3.5.8 on (and 3.4.25).
pub const ETCD_VERSION: &str = "3.5.17";

/// etcd's default watch progress notification interval: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_INTERVAL: Duration =
    crate::defaults::WATCH_PROGRESS_NOTIFY_INTERVAL;

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = crate::defaults::QUOTA_BACKEND_BYTES;

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

impl Limits {
    /// Refuses a write request larger than `--max-request-bytes` once
    /// wrapped for raft (etcd's "request is too large").
    pub fn check_size(&self, request: &impl Message) -> Result<(), EtcdError> {
        if request.encoded_len() + RAFT_ENVELOPE_BYTES > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }
}

/// How a member reaches raft.
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

/// The APIs of one running member, built once and shared (in `Arc`s) by
/// the gRPC services, the peer service and the background tasks.
#[derive(Debug)]
pub struct Apis {
    /// The write path every API shares.
    proposer: Arc<Proposer>,
    /// Range, Put, DeleteRange, Txn, Compact.
    kv: Arc<KvApi>,
    /// Grant, revoke, keep-alive, TTLs; the lease loop's bodies.
    lease: Arc<LeaseApi>,
    /// The member table.
    cluster: Arc<ClusterApi>,
    /// Status, alarms, hashes, defragment, snapshot, move-leader,
    /// downgrade, key rotation.
    maintenance: Arc<MaintenanceApi>,
    /// Users, roles, enable/disable, authentication.
    auth: Arc<AuthApi>,
    /// How often watchers that asked for progress notifications get one
    /// (etcd's `--experimental-watch-progress-notify-interval`).
    watch_progress_interval: Duration,
    /// The member's metrics (none in unit tests).
    metrics: Option<Arc<Metrics>>,
}

impl Apis {
    /// Starts building the APIs of a member over `machine`, replicated
    /// through `replication`.
    pub fn builder(
        machine: Arc<Machine>,
        identity: Identity,
        limits: Limits,
        replication: Replication,
    ) -> ApisBuilder {
        ApisBuilder {
            machine,
            identity,
            limits,
            replication,
            watch_progress_interval: DEFAULT_WATCH_PROGRESS_INTERVAL,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            strict_reconfig_check: true,
            zone: String::new(),
            dialer: Dialer::default(),
            metrics: None,
            bcrypt_cost: crate::defaults::BCRYPT_COST,
        }
    }

    /// The write path (identity, headers, raft status, the stop signal).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// The KV API.
    pub fn kv(&self) -> &Arc<KvApi> {
        &self.kv
    }

    /// The Lease API.
    pub fn lease(&self) -> &Arc<LeaseApi> {
        &self.lease
    }

    /// The Cluster API.
    pub fn cluster(&self) -> &Arc<ClusterApi> {
        &self.cluster
    }

    /// The Maintenance API.
    pub fn maintenance(&self) -> &Arc<MaintenanceApi> {
        &self.maintenance
    }

    /// The Auth API.
    pub fn auth(&self) -> &Arc<AuthApi> {
        &self.auth
    }

    /// The member's metrics, served at `/metrics`.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The watch progress notification interval.
    pub fn watch_progress_interval(&self) -> Duration {
        self.watch_progress_interval
    }

    /// The member's identity.
    pub fn identity(&self) -> Identity {
        self.proposer.identity()
    }

    /// The raft status.
    pub fn raft_status(&self) -> RaftStatus {
        self.proposer.raft_status()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        self.proposer.store()
    }

    /// Whether anything besides these APIs still holds one of them (a
    /// request, stream or task in flight): a member stops only once they
    /// are released.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.kv) > 1
            || Arc::strong_count(&self.lease) > 1
            || Arc::strong_count(&self.cluster) > 1
            || Arc::strong_count(&self.maintenance) > 1
            || Arc::strong_count(&self.auth) > 1
            || Arc::strong_count(&self.proposer) > PROPOSER_OWNERS
    }
}

/// The holders of a member's [`Proposer`] while nothing is in flight: the
/// [`Apis`], its five APIs and the quota.
const PROPOSER_OWNERS: usize = 7;

/// The settings of a member's APIs, each with etcd's default until set.
#[derive(Debug)]
pub struct ApisBuilder {
    /// The state machine.
    machine: Arc<Machine>,
    /// Ids reported in every response header.
    identity: Identity,
    /// Size limits, checked before proposing.
    limits: Limits,
    /// Raft, and how long to wait for it.
    replication: Replication,
    /// `--experimental-watch-progress-notify-interval`.
    watch_progress_interval: Duration,
    /// `--quota-backend-bytes`.
    quota_backend_bytes: u64,
    /// `--strict-reconfig-check`.
    strict_reconfig_check: bool,
    /// `--zone`.
    zone: String,
    /// How this member connects to peers (lease forwarding, hash checks).
    dialer: Dialer,
    /// The member's metrics.
    metrics: Option<Arc<Metrics>>,
    /// `--bcrypt-cost`.
    bcrypt_cost: u32,
}

impl ApisBuilder {
    /// Sets `--bcrypt-cost` (etcd's 10 by default).
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = cost;
        self
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

    /// How peer channels (lease forwarding, hash checks) connect.
    pub fn with_peer_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    /// This member's zone, reported by Status and published.
    pub fn with_zone(mut self, zone: String) -> Self {
        self.zone = zone;
        self
    }

    /// Counts the member's work in `metrics` (its proposals, maintenance
    /// operations, store and raft log).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds the APIs.
    pub fn build(self) -> Apis {
        if let Some(m) = &self.metrics {
            self.machine.store().set_metrics(m.store());
            self.machine.set_metrics(m.server.apply.clone());
            m.cairn.set_zone(&self.zone);
        }
        let proposer = Arc::new(Proposer::new(self.machine, self.identity, self.replication));
        if let Some(m) = &self.metrics {
            proposer.set_metrics(m.server.proposals.clone());
        }
        let quota = Arc::new(Quota::new(Arc::clone(&proposer), self.quota_backend_bytes));
        Apis {
            kv: Arc::new(KvApi::new(
                Arc::clone(&proposer),
                self.limits,
                Arc::clone(&quota),
            )),
            lease: Arc::new({
                let api = LeaseApi::new(
                    Arc::clone(&proposer),
                    self.limits,
                    quota,
                    PeerChannels::new(self.dialer.clone()),
                );
                if let Some(m) = &self.metrics {
                    api.set_metrics(m.server.apply.lease.clone());
                }
                api
            }),
            cluster: Arc::new({
                let api = ClusterApi::new(
                    Arc::clone(&proposer),
                    self.strict_reconfig_check,
                    self.zone.clone(),
                );
                if let Some(m) = &self.metrics {
                    api.set_metrics(m.server.promote.clone());
                }
                api
            }),
            maintenance: Arc::new({
                let api = MaintenanceApi::new(Arc::clone(&proposer), self.dialer, self.zone);
                if let Some(m) = &self.metrics {
                    api.set_metrics(m.maintenance());
                }
                api
            }),
            auth: Arc::new(AuthApi::new(
                Arc::clone(&proposer),
                crate::auth::Passwords::new(self.bcrypt_cost),
            )),
            proposer,
            watch_progress_interval: self.watch_progress_interval,
            metrics: self.metrics,
        }
    }
}

/// What peers ask of this member: the member table (a joining member),
/// HashKV (the leader's corruption check), and renewals and TTLs a
/// follower forwards to the leader.
#[tonic::async_trait]
impl crate::peer::PeerHandler for Apis {
    fn members(&self) -> (u64, Vec<cairn_proto::cairnpb::Member>) {
        (self.proposer.cluster_id(), self.cluster.member_list())
    }

    async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, EtcdError> {
        self.maintenance
            .hash_kv(revision, &crate::auth::Caller::Member)
            .await
    }

    async fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        self.lease.renew_here(id).await
    }

    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        if !self.proposer.is_leader() {
            return Err(EtcdError::NotLeader);
        }
        self.lease.time_to_live_here(req)
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> EtcdError {
    tracing::error!(error = %e, "store task failed");
    EtcdError::Internal
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
