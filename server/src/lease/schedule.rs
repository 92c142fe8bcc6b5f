//! The leader-only half of the lessor: when each lease expires, when it is
//! looked at next for expiry, and when its next checkpoint is due. Never
//! replicated: a lessor that is not the primary keeps none of it, and
//! promotion rebuilds it from the replicated table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{EXPIRED_RETRY_INTERVAL, REVOKE_RATE};

/// Seconds as a duration (negative counts as zero).
pub(super) fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// One lease's place on the expiry clock.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    /// When the lease expires.
    at: Instant,
    /// Its entry in [`Schedule::expiry_queue`]. Usually equals `at`; after
    /// the lease was found expired it is pushed back by
    /// [`EXPIRED_RETRY_INTERVAL`] so that a failed revoke is retried.
    queued_at: Instant,
}

/// Expiries and checkpoint times, kept only while primary.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Whether this lessor is the primary (the leader's): only the primary
    /// tracks expiries and checkpoints.
    primary: bool,
    /// Each lease's expiry, while primary. A lease without one never expires
    /// (a lessor that is not the primary does not expire leases).
    expiries: BTreeMap<i64, Expiry>,
    /// Leases ordered by when to look at them next for expiry: one entry per
    /// lease in `expiries` (mirrors `Expiry::queued_at`).
    expiry_queue: BTreeSet<(Instant, i64)>,
    /// Checkpoints to take, by due time. Entries of revoked leases are
    /// skipped when they come up (etcd's checkpoint heap works the same way).
    checkpoint_queue: BTreeSet<(Instant, i64)>,
}

impl Schedule {
    /// Whether this lessor is the primary.
    pub(super) fn is_primary(&self) -> bool {
        self.primary
    }

    /// When lease `id` expires (`None`: never, or unknown).
    pub(super) fn expiry(&self, id: i64) -> Option<Instant> {
        self.expiries.get(&id).map(|e| e.at)
    }

    /// Whether lease `id` has expired by `now` (its revoke is then due, or
    /// on its way through raft).
    pub(super) fn expired_at(&self, id: i64, now: Instant) -> bool {
        self.expiry(id).is_some_and(|at| at <= now)
    }

    /// Lease `id` now expires `at`, and is looked at then.
    pub(super) fn set_expiry(&mut self, id: i64, at: Instant) {
        self.requeue(id, None);
        self.expiries.insert(id, Expiry { at, queued_at: at });
        self.expiry_queue.insert((at, id));
    }

    /// Moves lease `id`'s expiry-queue entry to `at` (`None`: drops the
    /// lease from the expiry clock altogether).
    fn requeue(&mut self, id: i64, at: Option<Instant>) {
        let Some(expiry) = self.expiries.get_mut(&id) else {
            return;
        };
        self.expiry_queue.remove(&(expiry.queued_at, id));
        match at {
            Some(at) => {
                expiry.queued_at = at;
                self.expiry_queue.insert((at, id));
            }
            None => {
                self.expiries.remove(&id);
            }
        }
    }

    /// Lease `id` is gone: it expires no more. (A checkpoint it still has
    /// queued is skipped when it comes up.)
    pub(super) fn forget(&mut self, id: i64) {
        self.requeue(id, None);
    }

    /// Schedules the next checkpoint of `id`, whose effective TTL is
    /// `effective_ttl`, if it is worth one: only while primary, with
    /// checkpointing on, and when that TTL is longer than the interval
    /// (etcd's `scheduleCheckpointIfNeeded`).
    pub(super) fn schedule_checkpoint(
        &mut self,
        id: i64,
        effective_ttl: i64,
        interval: Option<Duration>,
        now: Instant,
    ) {
        let (Some(interval), true) = (interval, self.primary) else {
            return;
        };
        if effective_ttl > i64::try_from(interval.as_secs()).unwrap_or(i64::MAX) {
            self.checkpoint_queue.insert((now + interval, id));
        }
    }

    /// Stops being the primary: every expiry and checkpoint is dropped.
    pub(super) fn demote(&mut self) {
        *self = Self::default();
    }

    /// Becomes the primary for `leases` (id, effective TTL): each expires its
    /// effective TTL plus `extend` from `now`, and when there are many,
    /// expiries are spread so that no second gets more than three quarters of
    /// the revoke rate (etcd's `Promote`).
    pub(super) fn promote(
        &mut self,
        leases: &[(i64, i64)],
        now: Instant,
        extend: Duration,
        interval: Option<Duration>,
    ) {
        self.primary = true;
        for &(id, ttl) in leases {
            self.set_expiry(id, now + extend + secs(ttl));
            self.schedule_checkpoint(id, ttl, interval, now);
        }
        if leases.len() >= REVOKE_RATE {
            self.spread(leases, now, extend, interval);
        }
    }

    /// Pushes back expiries piled up in one second, as etcd's `Promote`.
    fn spread(
        &mut self,
        leases: &[(i64, i64)],
        now: Instant,
        extend: Duration,
        interval: Option<Duration>,
    ) {
        let mut by_expiry: Vec<(Instant, i64, i64)> = leases
            .iter()
            .filter_map(|&(id, ttl)| self.expiry(id).map(|at| (at, id, ttl)))
            .collect();
        by_expiry.sort();
        let remaining = |e: Instant| e.saturating_duration_since(now);
        let Some(&(first, _, _)) = by_expiry.first() else {
            return;
        };
        let mut base = remaining(first);
        let mut next_window = base + Duration::from_secs(1);
        let mut expires: usize = 0;
        let target = 3 * REVOKE_RATE / 4;
        for (expiry, id, ttl) in by_expiry {
            let rem = remaining(expiry);
            if rem > next_window {
                base = rem;
                next_window = base + Duration::from_secs(1);
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            let rate_delay = expires as f64 / target as f64 - (rem - base).as_secs_f64();
            let delay = Duration::from_secs_f64(rate_delay.max(0.0));
            next_window = base + delay;
            self.set_expiry(id, now + delay + extend + secs(ttl));
            self.schedule_checkpoint(id, ttl, interval, now);
        }
    }

    /// Expired leases to revoke now, at most `limit`, soonest first (none
    /// unless primary). Each is looked at again only after
    /// [`EXPIRED_RETRY_INTERVAL`], in case its revoke does not go through.
    pub(super) fn take_expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(&(at, id)) = self.expiry_queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            if !self.expiries.contains_key(&id) {
                self.expiry_queue.remove(&(at, id));
                continue;
            }
            self.requeue(id, Some(now + EXPIRED_RETRY_INTERVAL));
            if self.expired_at(id, now) {
                out.push(id);
            }
        }
        out
    }

    /// Takes the next checkpoint due by `now` off the queue (none unless
    /// primary): the lease it is for, which may be gone by now.
    pub(super) fn take_due_checkpoint(&mut self, now: Instant) -> Option<i64> {
        if !self.primary {
            return None;
        }
        let &(at, id) = self.checkpoint_queue.first()?;
        if at > now {
            return None;
        }
        self.checkpoint_queue.remove(&(at, id));
        Some(id)
    }
}
