//! `etcd_debugging_lease_*` (etcd's `server/lease/metrics.go`) and
//! `etcd_debugging_server_lease_expired_total`.

use prometheus::{Histogram, IntCounter, Registry};

use super::{exponential, histogram, int_counter};

/// The lessor's counters: grants and revocations are counted where every
/// member applies them (as etcd's lessor counts them), renewals and
/// expiries where the leader handles them.
#[derive(Debug, Clone)]
pub struct LeaseMetrics {
    /// etcd_debugging_lease_granted_total: leases granted (applied).
    pub granted: IntCounter,
    /// etcd_debugging_lease_revoked_total: leases revoked (applied), by a
    /// client or by expiry.
    pub revoked: IntCounter,
    /// etcd_debugging_lease_renewed_total: keep-alives the leader renewed.
    pub renewed: IntCounter,
    /// etcd_debugging_lease_ttl_total: the TTL of each lease granted.
    pub ttl: Histogram,
    /// etcd_debugging_server_lease_expired_total: leases the leader revoked
    /// because they expired.
    pub expired: IntCounter,
}

impl LeaseMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            granted: int_counter(
                r,
                "etcd_debugging_lease_granted_total",
                "The total number of granted leases.",
            )?,
            revoked: int_counter(
                r,
                "etcd_debugging_lease_revoked_total",
                "The total number of revoked leases.",
            )?,
            renewed: int_counter(
                r,
                "etcd_debugging_lease_renewed_total",
                "The number of renewed leases seen by the leader.",
            )?,
            ttl: histogram(
                r,
                "etcd_debugging_lease_ttl_total",
                "Bucketed histogram of lease TTLs.",
                // 1 second up to 97 days, as etcd's.
                exponential(1.0, 2.0, 24),
            )?,
            expired: int_counter(
                r,
                "etcd_debugging_server_lease_expired_total",
                "The total number of expired leases.",
            )?,
        })
    }
}
