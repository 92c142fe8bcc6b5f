//! `etcd_server_*` (etcd's `server/etcdserver/metrics.go`),
//! `etcd_cluster_version` and the health check counters of
//! `etcdhttp/health.go`.

use prometheus::{Gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::lease::LeaseMetrics;
use super::{
    exponential, gauge, histogram_vec, int_counter, int_counter_vec, int_gauge, int_gauge_vec,
};
use crate::member::Apis;

/// What the state machine updates as it applies entries (every member).
#[derive(Debug, Clone)]
pub struct ApplyMetrics {
    /// etcd_server_apply_duration_seconds{version, op, success}: how long
    /// each entry took to apply, by request kind (etcd's op names).
    pub duration: HistogramVec,
    /// Grants and revocations (and the lessor's other counters).
    pub lease: LeaseMetrics,
}

impl ApplyMetrics {
    /// Records one applied entry of kind `op`.
    pub fn applied(&self, op: &str, success: bool, seconds: f64) {
        let success = if success { "true" } else { "false" };
        self.duration
            .with_label_values(&["v3", op, success])
            .observe(seconds);
    }
}

/// The learner promotions a leader handled (etcd counts them on the
/// member that serves MemberPromote, which forwards to the leader).
#[derive(Debug, Clone)]
pub struct PromoteMetrics {
    /// etcd_server_learner_promote_successes.
    pub successes: IntCounter,
    /// etcd_server_learner_promote_failures{Reason}: refused promotions,
    /// by etcd's error text.
    pub failures: IntCounterVec,
}

/// The proposer's metrics: updated once per proposal or linearizable read.
#[derive(Debug, Clone)]
pub struct ProposalMetrics {
    /// etcd_server_proposals_pending: proposals waiting to be applied.
    pub pending: IntGauge,
    /// etcd_server_proposals_failed_total: refused by raft, timed out, or
    /// given up by their caller (etcd counts a cancelled context).
    pub failed: IntCounter,
    /// etcd_server_read_indexes_failed_total.
    pub read_index_failed: IntCounter,
    /// etcd_server_slow_read_indexes_total: ReadIndex rounds that timed out.
    pub slow_read_index: IntCounter,
}

/// The raft thread's metrics.
#[derive(Debug, Clone)]
pub struct RaftMetrics {
    /// etcd_server_leader_changes_seen_total: each time a leader (other
    /// than the one last known, or after none) becomes known.
    pub leader_changes: IntCounter,
    /// etcd_server_slow_apply_total: entries whose apply took longer than
    /// [`SLOW_APPLY`].
    pub slow_apply: IntCounter,
    /// etcd_server_snapshot_apply_in_progress_total: 1 while a leader's
    /// snapshot is installed.
    pub snapshot_apply_in_progress: IntGauge,
    /// etcd_server_heartbeat_send_failures_total: heartbeats that left late.
    pub heartbeat_send_failures: IntCounter,
}

/// etcd's `warnApplyDuration`: an apply slower than this is counted (and
/// etcd logs it).
pub const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// `etcd_server_*` and friends.
#[derive(Debug)]
pub struct ServerMetrics {
    /// What the proposer updates.
    pub proposals: ProposalMetrics,
    /// What the raft thread updates.
    pub raft: RaftMetrics,
    /// What the state machine updates.
    pub apply: ApplyMetrics,
    /// What MemberPromote updates.
    pub promote: PromoteMetrics,
    has_leader: IntGauge,
    is_leader: IntGauge,
    is_learner: IntGauge,
    /// etcd_debugging_auth_revision: the auth store's revision.
    auth_revision: IntGauge,
    /// Gauges in etcd (set to raft's indexes), whatever their `_total`.
    committed: Gauge,
    applied: Gauge,
    /// etcd_server_quota_backend_bytes, set once at start.
    pub quota_backend_bytes: IntGauge,
    /// etcd_server_health_success / _failures: every `/health` answer.
    pub health_success: IntCounter,
    /// See `health_success`.
    pub health_failures: IntCounter,
    /// etcd_server_healthcheck{type, name}: the last result of each
    /// `/livez` and `/readyz` check (1 ok, 0 failed).
    pub healthcheck: IntGaugeVec,
    /// etcd_server_healthchecks_total{type, name, status}.
    pub healthchecks: IntCounterVec,
}

impl ServerMetrics {
    pub(super) fn new(
        r: &Registry,
        member_id: u64,
        lease: LeaseMetrics,
    ) -> Result<Self, prometheus::Error> {
        let apply = ApplyMetrics {
            duration: histogram_vec(
                r,
                "etcd_server_apply_duration_seconds",
                "The latency distributions of v2 apply called by backend.",
                &["version", "op", "success"],
                // 0.1 ms up to 52 s, as etcd's.
                exponential(0.0001, 2.0, 20),
            )?,
            lease,
        };
        let promote = PromoteMetrics {
            successes: int_counter(
                r,
                "etcd_server_learner_promote_successes",
                "The total number of successful learner promotions while this member is leader.",
            )?,
            failures: int_counter_vec(
                r,
                "etcd_server_learner_promote_failures",
                "The total number of failed learner promotions (likely learner not ready) while this member is leader.",
                &["Reason"],
            )?,
        };
        let proposals = ProposalMetrics {
            pending: int_gauge(
                r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            )?,
            failed: int_counter(
                r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            )?,
            read_index_failed: int_counter(
                r,
                "etcd_server_read_indexes_failed_total",
                "The total number of failed read indexes seen.",
            )?,
            slow_read_index: int_counter(
                r,
                "etcd_server_slow_read_indexes_total",
                "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
            )?,
        };
        let raft = RaftMetrics {
            leader_changes: int_counter(
                r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            )?,
            slow_apply: int_counter(
                r,
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            )?,
            snapshot_apply_in_progress: int_gauge(
                r,
                "etcd_server_snapshot_apply_in_progress_total",
                "1 if the server is applying the incoming snapshot. 0 if none.",
            )?,
            heartbeat_send_failures: int_counter(
                r,
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            )?,
        };
        // Constant label gauges: 1 for the label's value, as etcd has them.
        int_gauge_vec(
            r,
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            &["server_version"],
        )?
        .with_label_values(&[crate::member::ETCD_VERSION])
        .set(1);
        int_gauge_vec(
            r,
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            &["cluster_version"],
        )?
        .with_label_values(&[cluster_version()])
        .set(1);
        int_gauge_vec(
            r,
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            &["server_id"],
        )?
        .with_label_values(&[&format!("{member_id:x}")])
        .set(1);
        Ok(Self {
            proposals,
            raft,
            apply,
            promote,
            has_leader: int_gauge(
                r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            )?,
            is_leader: int_gauge(
                r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            )?,
            is_learner: int_gauge(
                r,
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            )?,
            auth_revision: int_gauge(
                r,
                "etcd_debugging_auth_revision",
                "The current revision of auth store.",
            )?,
            committed: gauge(
                r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            )?,
            applied: gauge(
                r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            )?,
            quota_backend_bytes: int_gauge(
                r,
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            )?,
            health_success: int_counter(
                r,
                "etcd_server_health_success",
                "The total number of successful health checks",
            )?,
            health_failures: int_counter(
                r,
                "etcd_server_health_failures",
                "The total number of failed health checks",
            )?,
            healthcheck: int_gauge_vec(
                r,
                "etcd_server_healthcheck",
                "The result of each kind of healthcheck.",
                &["type", "name"],
            )?,
            healthchecks: int_counter_vec(
                r,
                "etcd_server_healthchecks_total",
                "The total number of each kind of healthcheck.",
                &["type", "name", "status"],
            )?,
        })
    }

    /// The current values the raft status gives.
    pub(super) fn refresh(&self, apis: &Apis) {
        let status = apis.raft_status();
        self.has_leader.set(i64::from(status.leader != 0));
        self.is_leader.set(i64::from(status.is_leader));
        self.is_learner.set(i64::from(status.is_learner));
        self.committed.set(status.commit as f64);
        self.applied.set(status.applied as f64);
        let auth = apis.proposer().machine().auth().state().revision();
        self.auth_revision
            .set(i64::try_from(auth).unwrap_or(i64::MAX));
    }

    /// Records one `/livez` or `/readyz` check's result (etcd's
    /// `recordMetrics`).
    pub fn record_check(&self, kind: &str, name: &str, ok: bool) {
        let status = if ok { "success" } else { "error" };
        self.healthcheck
            .with_label_values(&[kind, name])
            .set(i64::from(ok));
        self.healthchecks
            .with_label_values(&[kind, name, status])
            .inc();
    }
}

/// The cluster version as etcd labels it: major.minor.
fn cluster_version() -> &'static str {
    let full = crate::member::CLUSTER_VERSION;
    match full.rfind('.') {
        Some(i) if full[..i].contains('.') => &full[..i],
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_version_is_major_minor() {
        assert_eq!(super::cluster_version(), "3.5");
    }
}
