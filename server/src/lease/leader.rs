//! The lessor as the leader uses it: promotion and demotion, renewals,
//! expiries and due checkpoints. All of it reads the clock and moves only
//! the leader-only [`Schedule`](super::schedule::Schedule); the replicated
//! table is only read here.

use tokio::time::Instant;

use super::lessor::Lessor;
use super::schedule::secs;
use super::CHECKPOINT_BATCH;
use crate::error::EtcdError;

/// The leader-only half of a [`Lessor`] (from [`Lessor::leader_only`]).
#[derive(Debug, Clone, Copy)]
pub struct LeaderOnly<'a> {
    /// The lessor whose lock, clock and configuration this uses.
    lessor: &'a Lessor,
}

impl<'a> LeaderOnly<'a> {
    /// The leader-only half of `lessor`.
    pub(super) fn new(lessor: &'a Lessor) -> Self {
        Self { lessor }
    }

    /// Whether this lessor is the primary (the leader's).
    pub fn is_primary(&self) -> bool {
        self.lessor.lock().schedule.is_primary()
    }

    /// Makes this lessor the primary: every lease expires its effective TTL
    /// (checkpointed remaining TTL, else TTL) plus the promotion extension
    /// from now, and when there are many leases, expiries are spread so that
    /// no second gets more than three quarters of the revoke rate (etcd's
    /// `Promote`).
    pub fn promote(&self) {
        let now = self.lessor.clock.now();
        let config = self.lessor.config;
        let mut state = self.lessor.lock();
        let leases: Vec<(i64, i64)> = state
            .table
            .iter()
            .map(|(id, lease)| (id, lease.effective_ttl()))
            .collect();
        state.schedule.promote(
            &leases,
            now,
            config.promotion_extension,
            config.checkpoint_interval,
        );
    }

    /// Stops being the primary (this member lost the leadership): expiries
    /// and checkpoints are the new leader's business. Keeps every lease.
    pub fn demote(&self) {
        self.lessor.lock().schedule.demote();
        self.lessor.bump();
    }

    /// Whether a renewal of `id` must first clear its checkpointed remaining
    /// TTL through the state machine (etcd clears it only when checkpointing
    /// is on and one is set). `Err(LeaseNotFound)` for a lease that does not
    /// exist or has already expired (its revoke is on its way: a renewal
    /// must not bring it back).
    pub fn renew_needs_clear(&self, id: i64) -> Result<bool, EtcdError> {
        let now = self.lessor.clock.now();
        let state = self.lessor.lock();
        let lease = state.table.get(id).ok_or(EtcdError::LeaseNotFound)?;
        if state.schedule.expired_at(id, now) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(self.lessor.config.checkpoint_interval.is_some() && lease.remaining_ttl > 0)
    }

    /// Renews lease `id`: it now expires its effective TTL from now. Returns
    /// the TTL the client is told (the granted TTL, as etcd answers).
    pub fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        let now = self.lessor.clock.now();
        let mut state = self.lessor.lock();
        let lease = state.table.get(id).ok_or(EtcdError::LeaseNotFound)?;
        if state.schedule.expired_at(id, now) {
            return Err(EtcdError::LeaseNotFound);
        }
        let (ttl, effective) = (lease.ttl, lease.effective_ttl());
        if state.schedule.is_primary() {
            state.schedule.set_expiry(id, now + secs(effective));
        }
        Ok(ttl)
    }

    /// Whether lease `id` exists but has expired: its revoke is on its way
    /// through raft and its keys are still there. etcd answers a keep-alive
    /// of such a lease only once the revoke is applied, so that "lease not
    /// found" always means the keys are gone.
    pub fn is_expired(&self, id: i64) -> bool {
        let now = self.lessor.clock.now();
        let state = self.lessor.lock();
        state.table.get(id).is_some() && state.schedule.expired_at(id, now)
    }

    /// Expired leases to revoke now, at most `limit`, soonest first. Each is
    /// looked at again only after
    /// [`EXPIRED_RETRY_INTERVAL`](super::EXPIRED_RETRY_INTERVAL), in case its
    /// revoke does not go through.
    pub fn expired(&self, limit: usize) -> Vec<i64> {
        let now = self.lessor.clock.now();
        self.lessor.lock().schedule.take_expired(now, limit)
    }

    /// Checkpoints that are due, at most `limit`: (lease, remaining TTL in
    /// whole seconds rounded up). Skips leases that are gone, already
    /// expired, or not yet below their TTL (etcd's
    /// `findDueScheduledCheckpoints`).
    pub fn due_checkpoints(&self, limit: usize) -> Vec<(i64, i64)> {
        if self.lessor.config.checkpoint_interval.is_none() {
            return Vec::new();
        }
        let now = self.lessor.clock.now();
        let mut state = self.lessor.lock();
        let mut out = Vec::new();
        while out.len() < limit.min(CHECKPOINT_BATCH) {
            let Some(id) = state.schedule.take_due_checkpoint(now) else {
                break;
            };
            let Some(lease) = state.table.get(id) else {
                continue;
            };
            let Some(expiry) = state.schedule.expiry(id).filter(|e| *e > now) else {
                continue;
            };
            let remaining =
                i64::try_from((expiry - now).as_secs_f64().ceil() as u64).unwrap_or(i64::MAX);
            if remaining >= lease.ttl {
                continue;
            }
            out.push((id, remaining));
        }
        out
    }

    /// When lease `id` expires (`None`: no such lease, or never).
    pub fn expiry(&self, id: i64) -> Option<Instant> {
        self.lessor.lock().schedule.expiry(id)
    }
}
