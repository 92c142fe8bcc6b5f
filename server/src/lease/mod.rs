//! Leases: TTL-bound handles that keys are attached to (etcd's `lease` package).
//!
//! A lease has two halves, kept apart on purpose:
//!
//! - **Replicated state** — which leases exist, their granted TTL, their last
//!   checkpointed remaining TTL, and which keys are attached to them. It only
//!   ever changes through state-machine operations applied inside a store
//!   write transaction ([`crate::apply`]): grant, revoke, checkpoint, and the
//!   puts and deletes that attach and detach keys. Every member applying the
//!   same operations ends up with the same table. The persistent part is one
//!   record per lease in [`Cf::Lease`](crate::storage::Cf::Lease), staged into
//!   the same batch as the key changes; attached keys are never stored, they
//!   are rebuilt at start-up from the `lease` field of every live key.
//! - **Leader-only state** — when each lease expires, and when its next
//!   checkpoint is due. It depends on a [`Clock`] and is never replicated:
//!   keep-alives move it, and on promotion (start-up, for a single member)
//!   every lease gets a fresh expiry, so a restart never expires everything at
//!   once. Expiry itself is *not* done here: the member's lease loop
//!   ([`crate::tasks::lease_expiry`]) finds expired leases and applies a
//!   revoke for each through the ordinary write path, exactly as a client's
//!   LeaseRevoke would be.
//!
//! Files: [`lessor`] (the [`Lessor`]: both halves behind one lock, and what
//! the write path and the Lease service read), `table` (the replicated
//! leases) and `attached` (their keys, indexed both ways), `schedule`
//! (the leader-only expiry and checkpoint queues) and `leader` (the
//! lessor as the leader uses it: promotion, renewals, expiries), [`txn`]
//! (one write's pending lease changes), [`record`] (the on-disk record),
//! [`clock`], [`id`] (server-chosen lease ids).

mod attached;
pub mod clock;
pub mod id;
mod leader;
pub mod lessor;
pub mod record;
mod schedule;
mod table;
pub mod txn;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use clock::{Clock, TokioClock};
pub use id::IdGenerator;
pub use leader::LeaderOnly;
pub use lessor::{Lessor, TimeToLive};
pub use txn::{LeaseChanges, LeaseTxn};

/// The largest TTL a lease may be granted, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How often the leader looks for expired leases and due checkpoints (etcd
/// checks every 500 ms).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long an expired lease waits before its revoke is tried again, if the
/// first attempt did not remove it (etcd's `defaultExpiredleaseRetryInterval`).
pub const EXPIRED_RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// The most leases revoked per second (etcd's `leaseRevokeRate`). Each check
/// revokes at most half of it; promotion spreads expiries so that no second
/// gets more than three quarters of it.
pub const REVOKE_RATE: usize = 1000;

/// The most checkpoints in one checkpoint operation (etcd's
/// `maxLeaseCheckpointBatchSize`).
pub const CHECKPOINT_BATCH: usize = 1000;

/// How the lessor behaves. Defaults are etcd's, except that checkpointing is
/// on (see [`LessorConfig::checkpoint_interval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LessorConfig {
    /// Shorter TTLs are raised to this, in seconds. etcd uses
    /// ceil(1.5 × election timeout): a lease must outlive a leader election,
    /// or a leader change alone could expire it.
    pub min_ttl: i64,
    /// Added to every lease's expiry on promotion: the new leader cannot know
    /// when the last keep-alive reached the old one, so it grants one
    /// election timeout of slack (etcd's `Promote(ElectionTimeout)`).
    pub promotion_extension: Duration,
    /// How often a lease's remaining TTL is checkpointed through the state
    /// machine, so that a restart or leader change resumes from it instead of
    /// the full TTL (etcd's `--experimental-lease-checkpoint-interval`,
    /// default 5 minutes). `None` turns checkpointing off, as etcd's default
    /// (`--experimental-enable-lease-checkpoint=false`) does.
    pub checkpoint_interval: Option<Duration>,
}

impl LessorConfig {
    /// The configuration etcd derives from an election timeout: minimum TTL
    /// ceil(1.5 × timeout) seconds, promotion extension of one timeout.
    pub fn from_election_timeout(election_timeout: Duration) -> Self {
        let millis = election_timeout.as_millis();
        let min_ttl = (millis * 3).div_ceil(2 * 1000);
        Self {
            min_ttl: i64::try_from(min_ttl).unwrap_or(i64::MAX),
            promotion_extension: election_timeout,
            checkpoint_interval: Some(Duration::from_secs(5 * 60)),
        }
    }
}

impl Default for LessorConfig {
    /// etcd's defaults: 1000 ms election timeout (minimum TTL 2 s), 5-minute
    /// checkpoints.
    fn default() -> Self {
        Self::from_election_timeout(Duration::from_millis(1000))
    }
}
