//! The lease table (etcd's `lessor`): leases, their attached keys, and the
//! leader-only expiry and checkpoint schedule.
//!
//! The replicated part changes only through [`Lessor::apply_committed`],
//! with the [`LeaseChanges`] of a write transaction, and only if that
//! transaction committed. The leader-only part (expiries, checkpoint times)
//! is moved by [`Lessor::promote`], [`Lessor::renew`] and the expiry scan.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_proto::cairnpb;
use tokio::time::Instant;

use super::record;
use super::txn::LeaseChanges;
use super::{Clock, LessorConfig, CHECKPOINT_BATCH, EXPIRED_RETRY_INTERVAL, REVOKE_RATE};
use crate::error::EtcdError;
use crate::mvcc::{KeyRange, RangeOptions, Store};

/// One lease.
#[derive(Debug, Clone)]
struct Lease {
    /// Granted TTL in seconds (already raised to the minimum). Replicated.
    ttl: i64,
    /// Last checkpointed remaining TTL in seconds, 0 when none. Replicated:
    /// promotion starts the lease from it instead of the full TTL.
    remaining_ttl: i64,
    /// Keys attached to the lease, sorted: a revoke deletes them in this
    /// order, the same on every member. Rebuilt from the keys at start-up.
    keys: BTreeSet<Vec<u8>>,
    /// When the lease expires; `None` = never (a lessor that is not the
    /// primary does not expire leases). Leader-only.
    expiry: Option<Instant>,
    /// This lease's entry in [`Table::expiry_queue`], if any. Usually equals
    /// `expiry`; after the lease was found expired it is pushed back by
    /// [`EXPIRED_RETRY_INTERVAL`] so that a failed revoke is retried.
    queued_at: Option<Instant>,
}

impl Lease {
    /// The TTL promotion and renewal start from: the checkpointed remaining
    /// TTL if there is one, else the full TTL (etcd's `getRemainingTTL`).
    fn effective_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }

    /// Whether it has expired by `now` (its revoke is then due, or on its
    /// way through raft).
    fn expired_at(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }
}

/// Everything behind the lessor's lock.
#[derive(Debug, Default)]
struct Table {
    /// Leases by id. Ordered so that every walk over them is deterministic.
    leases: BTreeMap<i64, Lease>,
    /// Which lease each attached key belongs to. Needed to detach a key when
    /// it is deleted or moved to another lease without reading its record,
    /// and to find the attached keys of a deleted range.
    items: BTreeMap<Vec<u8>, i64>,
    /// Whether this lessor is the primary (the leader's): only the primary
    /// tracks expiries and checkpoints.
    primary: bool,
    /// Leases ordered by when to look at them next for expiry: one entry per
    /// lease while primary (mirrors `Lease::queued_at`).
    expiry_queue: BTreeSet<(Instant, i64)>,
    /// Checkpoints to take, by due time. Entries of revoked leases are
    /// skipped when they come up (etcd's checkpoint heap works the same way).
    checkpoint_queue: BTreeSet<(Instant, i64)>,
}

/// What LeaseTimeToLive reports about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// Whole seconds until expiry, truncated toward zero as etcd does (it can
    /// be negative for an expired lease not yet revoked).
    pub ttl: i64,
    /// The granted TTL.
    pub granted_ttl: i64,
    /// The attached keys, sorted (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// A member's lease table. Shared (`Arc`) by the write path, the gRPC
/// service and the lease task.
#[derive(Debug)]
pub struct Lessor {
    /// Minimum TTL, promotion extension, checkpoint interval.
    config: LessorConfig,
    /// Where "now" comes from for expiries (tokio's clock, paused in tests).
    clock: Arc<dyn Clock>,
    /// The table. Lock order: a writer holds the store's write lock first,
    /// then this; nothing holding this ever waits for the store.
    table: Mutex<Table>,
    /// Bumped whenever leases are removed (revoked, or the table reloaded)
    /// or this lessor stops being the primary: a keep-alive of an expired
    /// lease waits on it for the revoke (see [`Lessor::is_expired`]).
    changed: tokio::sync::watch::Sender<u64>,
}

/// Seconds as a duration (negative counts as zero).
fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// `expiry - now` in seconds, truncated toward zero, signed.
fn signed_secs_until(expiry: Instant, now: Instant) -> i64 {
    if expiry >= now {
        i64::try_from((expiry - now).as_secs()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - expiry).as_secs()).unwrap_or(i64::MAX)
    }
}

impl Table {
    /// Sets lease `id`'s expiry and its place in the expiry queue.
    fn set_expiry(&mut self, id: i64, expiry: Option<Instant>) {
        let Some(lease) = self.leases.get_mut(&id) else {
            return;
        };
        lease.expiry = expiry;
        Self::requeue(&mut self.expiry_queue, id, lease, expiry);
    }

    /// Moves lease `id`'s expiry-queue entry to `at` (`None` = out of the queue).
    fn requeue(
        queue: &mut BTreeSet<(Instant, i64)>,
        id: i64,
        lease: &mut Lease,
        at: Option<Instant>,
    ) {
        if let Some(old) = lease.queued_at.take() {
            queue.remove(&(old, id));
        }
        if let Some(at) = at {
            queue.insert((at, id));
            lease.queued_at = Some(at);
        }
    }

    /// Schedules the next checkpoint of `id` if it is worth one: only while
    /// primary, with checkpointing on, and when the lease's effective TTL is
    /// longer than the interval (etcd's `scheduleCheckpointIfNeeded`).
    fn schedule_checkpoint(&mut self, id: i64, interval: Option<Duration>, now: Instant) {
        let (Some(interval), true) = (interval, self.primary) else {
            return;
        };
        let Some(lease) = self.leases.get(&id) else {
            return;
        };
        if lease.effective_ttl() > i64::try_from(interval.as_secs()).unwrap_or(i64::MAX) {
            self.checkpoint_queue.insert((now + interval, id));
        }
    }

    /// Removes lease `id` and detaches its keys.
    fn remove(&mut self, id: i64) {
        if let Some(mut lease) = self.leases.remove(&id) {
            Self::requeue(&mut self.expiry_queue, id, &mut lease, None);
            for key in lease.keys {
                if self.items.get(&key) == Some(&id) {
                    self.items.remove(&key);
                }
            }
        }
    }

    /// Attaches `key` to `lease` (0 = to none), detaching it from its old lease.
    fn set_item(&mut self, key: &[u8], lease: i64) {
        let old = self.items.get(key).copied().unwrap_or(0);
        if old == lease {
            return;
        }
        if old != 0 {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
            self.items.remove(key);
        }
        if lease != 0 {
            match self.leases.get_mut(&lease) {
                Some(l) => {
                    l.keys.insert(key.to_vec());
                    self.items.insert(key.to_vec(), lease);
                }
                // Not the key itself: keys are sealed at rest, so they stay
                // out of the log too.
                None => tracing::error!(
                    lease = format!("{lease:x}"),
                    key_bytes = key.len(),
                    "key attached to a lease that does not exist"
                ),
            }
        }
    }
}

impl Lessor {
    /// An empty lessor (not primary until [`Lessor::promote`]).
    pub fn new(config: LessorConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            table: Mutex::new(Table::default()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that changes whenever leases are removed or this lessor
    /// is demoted.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether lease `id` exists but has expired: its revoke is on its way
    /// through raft and its keys are still there. etcd answers a keep-alive
    /// of such a lease only once the revoke is applied, so that "lease not
    /// found" always means the keys are gone.
    pub fn is_expired(&self, id: i64) -> bool {
        let now = self.clock.now();
        self.lock()
            .leases
            .get(&id)
            .is_some_and(|lease| lease.expired_at(now))
    }

    /// Rebuilds the lessor of a stored member: leases from their records in
    /// the store's engine (TTLs below the minimum raised, as etcd does),
    /// attached keys from the `lease` field of every live key. Expiries stay
    /// unset until [`Lessor::promote`].
    pub fn recover(
        config: LessorConfig,
        clock: Arc<dyn Clock>,
        store: &Store,
    ) -> Result<Self, crate::mvcc::Error> {
        let lessor = Self::new(config, clock);
        {
            let mut table = lessor.lock();
            for r in record::load_all(store.engine().as_ref())? {
                table.leases.insert(
                    r.id,
                    Lease {
                        ttl: r.ttl.max(config.min_ttl),
                        remaining_ttl: r.remaining_ttl,
                        keys: BTreeSet::new(),
                        expiry: None,
                        queued_at: None,
                    },
                );
            }
        }
        // Walk the live keys in bounded chunks (values are read from disk).
        const CHUNK: usize = 1000;
        let mut start = Vec::new();
        loop {
            let opts = RangeOptions {
                limit: CHUNK,
                ..RangeOptions::default()
            };
            let rr = store.range(&KeyRange::new(&start, b"\0"), opts)?;
            let mut table = lessor.lock();
            for kv in &rr.kvs {
                if kv.lease != 0 {
                    table.set_item(&kv.key, kv.lease);
                }
            }
            drop(table);
            match rr.kvs.last() {
                Some(last) if rr.count > rr.kvs.len() => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(lessor)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every mutation leaves the table consistent before it can panic, so
        // a poisoned lock still guards usable data.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> LessorConfig {
        self.config
    }

    /// The clock expiries are measured on.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    // ---- Replicated state: queries used while applying ----

    /// True when lease `id` exists.
    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// The stored record of lease `id`.
    pub fn record(&self, id: i64) -> Option<cairnpb::Lease> {
        self.lock().leases.get(&id).map(|l| cairnpb::Lease {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        })
    }

    /// The lease `key` is attached to (0 = none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.lock().items.get(key).copied().unwrap_or(0)
    }

    /// The attached keys inside `range`, with their leases.
    pub fn attached_in(&self, range: &KeyRange) -> Vec<(Vec<u8>, i64)> {
        let table = self.lock();
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match range {
            KeyRange::Single(k) => {
                return table
                    .items
                    .get(k)
                    .map(|l| vec![(k.clone(), *l)])
                    .unwrap_or_default();
            }
            KeyRange::Range { start, end: None } => (Bound::Included(start), Bound::Unbounded),
            KeyRange::Range {
                start,
                end: Some(end),
            } if end > start => (Bound::Included(start), Bound::Excluded(end)),
            KeyRange::Range { .. } => return Vec::new(),
        };
        table
            .items
            .range::<[u8], _>(bounds)
            .map(|(k, l)| (k.clone(), *l))
            .collect()
    }

    /// The keys attached to lease `id`, sorted (`None`: no such lease).
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Applies the lease changes of a write transaction, provided `commit`
    /// (the transaction's commit) succeeds; on failure the table is left as
    /// it was. The table stays locked across the commit, so that the next
    /// write cannot see the store after this transaction but the lessor
    /// before it.
    pub fn apply_committed<T, E>(
        &self,
        changes: LeaseChanges,
        commit: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if changes.is_empty() {
            return commit();
        }
        let mut table = self.lock();
        let out = commit()?;
        let now = self.clock.now();
        let interval = self.config.checkpoint_interval;
        for (id, ttl) in changes.granted {
            table.leases.insert(
                id,
                Lease {
                    ttl,
                    remaining_ttl: 0,
                    keys: BTreeSet::new(),
                    expiry: None,
                    queued_at: None,
                },
            );
            if table.primary {
                table.set_expiry(id, Some(now + secs(ttl)));
                table.schedule_checkpoint(id, interval, now);
            }
        }
        for (key, lease) in changes.items {
            table.set_item(&key, lease);
        }
        for (id, remaining) in changes.checkpoints {
            if let Some(lease) = table.leases.get_mut(&id) {
                lease.remaining_ttl = remaining;
                table.schedule_checkpoint(id, interval, now);
            }
        }
        let removed = !changes.revoked.is_empty();
        for id in changes.revoked {
            table.remove(id);
        }
        drop(table);
        if removed {
            self.bump();
        }
        Ok(out)
    }

    // ---- Reads for the Lease service ----

    /// LeaseTimeToLive of lease `id` (`None`: no such lease).
    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<TimeToLive> {
        let now = self.clock.now();
        let table = self.lock();
        let lease = table.leases.get(&id)?;
        let ttl = match lease.expiry {
            Some(expiry) => signed_secs_until(expiry, now),
            // A lease that never expires reports what etcd's "forever" does:
            // the largest duration, in seconds.
            None => i64::MAX / 1_000_000_000,
        };
        Some(TimeToLive {
            ttl,
            granted_ttl: lease.ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, soonest expiry first (etcd's order for LeaseLeases).
    pub fn leases(&self) -> Vec<i64> {
        let table = self.lock();
        let mut ids: Vec<(Option<Instant>, i64)> =
            table.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        // `None` (never) sorts last.
        ids.sort_by_key(|(expiry, id)| (expiry.is_none(), *expiry, *id));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    /// True when there is no lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- Leader-only state ----

    /// Stops being the primary (this member lost the leadership): expiries
    /// and checkpoints are the new leader's business. Keeps every lease.
    pub fn demote(&self) {
        let mut table = self.lock();
        table.primary = false;
        table.checkpoint_queue.clear();
        table.expiry_queue.clear();
        for lease in table.leases.values_mut() {
            lease.expiry = None;
            lease.queued_at = None;
        }
        drop(table);
        self.bump();
    }

    /// Whether this lessor is the primary (the leader's).
    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// Replaces the table with the one stored in `store` (after a raft
    /// snapshot was installed); a primary stays primary, with fresh expiries.
    pub fn reload(&self, store: &Store) -> Result<(), crate::mvcc::Error> {
        let fresh = Self::recover(self.config, Arc::clone(&self.clock), store)?;
        let table = std::mem::take(&mut *fresh.lock());
        let primary = {
            let mut mine = self.lock();
            let primary = mine.primary;
            *mine = table;
            primary
        };
        if primary {
            self.promote();
        }
        self.bump();
        Ok(())
    }

    /// Makes this lessor the primary: every lease expires its effective TTL
    /// (checkpointed remaining TTL, else TTL) plus the promotion extension
    /// from now, and when there are many leases, expiries are spread so that
    /// no second gets more than three quarters of the revoke rate (etcd's
    /// `Promote`).
    pub fn promote(&self) {
        let now = self.clock.now();
        let extend = self.config.promotion_extension;
        let interval = self.config.checkpoint_interval;
        let mut table = self.lock();
        table.primary = true;
        let ids: Vec<i64> = table.leases.keys().copied().collect();
        for &id in &ids {
            let Some(ttl) = table.leases.get(&id).map(Lease::effective_ttl) else {
                continue;
            };
            table.set_expiry(id, Some(now + extend + secs(ttl)));
            table.schedule_checkpoint(id, interval, now);
        }
        if ids.len() < REVOKE_RATE {
            return;
        }
        // Spread piled-up expiries.
        let mut by_expiry: Vec<(Instant, i64)> = table
            .leases
            .iter()
            .filter_map(|(id, l)| l.expiry.map(|e| (e, *id)))
            .collect();
        by_expiry.sort();
        let remaining = |e: Instant| e.saturating_duration_since(now);
        let Some(&(first, _)) = by_expiry.first() else {
            return;
        };
        let mut base = remaining(first);
        let mut next_window = base + Duration::from_secs(1);
        let mut expires: usize = 0;
        let target = 3 * REVOKE_RATE / 4;
        for (expiry, id) in by_expiry {
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
            let Some(ttl) = table.leases.get(&id).map(Lease::effective_ttl) else {
                continue;
            };
            table.set_expiry(id, Some(now + delay + extend + secs(ttl)));
            table.schedule_checkpoint(id, interval, now);
        }
    }

    /// Whether a renewal of `id` must first clear its checkpointed remaining
    /// TTL through the state machine (etcd clears it only when checkpointing
    /// is on and one is set). `Err(LeaseNotFound)` for a lease that does not
    /// exist or has already expired (its revoke is on its way: a renewal
    /// must not bring it back).
    pub fn renew_needs_clear(&self, id: i64) -> Result<bool, EtcdError> {
        let now = self.clock.now();
        let table = self.lock();
        let lease = table.leases.get(&id).ok_or(EtcdError::LeaseNotFound)?;
        if lease.expired_at(now) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(self.config.checkpoint_interval.is_some() && lease.remaining_ttl > 0)
    }

    /// Renews lease `id`: it now expires its effective TTL from now. Returns
    /// the TTL the client is told (the granted TTL, as etcd answers).
    pub fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        let now = self.clock.now();
        let mut table = self.lock();
        let lease = table.leases.get(&id).ok_or(EtcdError::LeaseNotFound)?;
        if lease.expired_at(now) {
            return Err(EtcdError::LeaseNotFound);
        }
        let (ttl, effective) = (lease.ttl, lease.effective_ttl());
        if table.primary {
            table.set_expiry(id, Some(now + secs(effective)));
        }
        Ok(ttl)
    }

    /// Expired leases to revoke now, at most `limit`, soonest first. Each is
    /// looked at again only after [`EXPIRED_RETRY_INTERVAL`], in case its
    /// revoke does not go through.
    pub fn expired(&self, limit: usize) -> Vec<i64> {
        let now = self.clock.now();
        let mut table = self.lock();
        if !table.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(at, id)) = table.expiry_queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            let t = &mut *table;
            let Some(lease) = t.leases.get_mut(&id) else {
                t.expiry_queue.remove(&(at, id));
                continue;
            };
            Table::requeue(
                &mut t.expiry_queue,
                id,
                lease,
                Some(now + EXPIRED_RETRY_INTERVAL),
            );
            if lease.expired_at(now) {
                out.push(id);
            }
        }
        out
    }

    /// Checkpoints that are due, at most `limit`: (lease, remaining TTL in
    /// whole seconds rounded up). Skips leases that are gone, already
    /// expired, or not yet below their TTL (etcd's
    /// `findDueScheduledCheckpoints`).
    pub fn due_checkpoints(&self, limit: usize) -> Vec<(i64, i64)> {
        if self.config.checkpoint_interval.is_none() {
            return Vec::new();
        }
        let now = self.clock.now();
        let mut table = self.lock();
        if !table.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        while out.len() < limit.min(CHECKPOINT_BATCH) {
            let Some(&(at, id)) = table.checkpoint_queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            table.checkpoint_queue.remove(&(at, id));
            let Some(lease) = table.leases.get(&id) else {
                continue;
            };
            let Some(expiry) = lease.expiry.filter(|e| *e > now) else {
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
        self.lock().leases.get(&id).and_then(|l| l.expiry)
    }

    /// The checkpointed remaining TTL of lease `id` (0 = none).
    pub fn remaining_ttl(&self, id: i64) -> Option<i64> {
        self.lock().leases.get(&id).map(|l| l.remaining_ttl)
    }
}

/// Whole-table views for tests.
#[cfg(test)]
impl Lessor {
    /// Every lease: id -> (TTL, remaining TTL, keys).
    pub(crate) fn snapshot(&self) -> BTreeMap<i64, (i64, i64, Vec<Vec<u8>>)> {
        let table = self.lock();
        table
            .leases
            .iter()
            .map(|(id, l)| {
                (
                    *id,
                    (l.ttl, l.remaining_ttl, l.keys.iter().cloned().collect()),
                )
            })
            .collect()
    }

    /// Every attached key -> its lease.
    pub(crate) fn items(&self) -> BTreeMap<Vec<u8>, i64> {
        self.lock().items.clone()
    }
}
