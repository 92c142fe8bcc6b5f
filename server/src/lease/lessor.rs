//! The lease table (etcd's `lessor`): leases, their attached keys, and the
//! leader-only expiry and checkpoint schedule, behind one lock.
//!
//! The replicated part (`Table`) changes only through
//! [`Lessor::apply_committed`], with the [`LeaseChanges`] of a write
//! transaction, and only if that transaction committed. The leader-only
//! part (`Schedule`) is moved through [`Lessor::leader_only`]: promotion,
//! renewals and the expiry scan.

use std::sync::{Arc, Mutex, MutexGuard};

use cairn_proto::cairnpb;
use tokio::time::Instant;

use super::leader::LeaderOnly;
use super::schedule::{secs, Schedule};
use super::table::Table;
use super::txn::LeaseChanges;
use super::{Clock, LessorConfig};
use crate::mvcc::{KeyRange, Store};

/// Everything behind the lessor's lock: both halves, so that a committed
/// write changes them together.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The replicated half: leases and attached keys.
    pub(super) table: Table,
    /// The leader-only half: expiries and checkpoint times.
    pub(super) schedule: Schedule,
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
    pub(super) config: LessorConfig,
    /// Where "now" comes from for expiries (tokio's clock, paused in tests).
    pub(super) clock: Arc<dyn Clock>,
    /// Both halves. Lock order: a writer holds the store's write lock first,
    /// then this; nothing holding this ever waits for the store.
    state: Mutex<State>,
    /// Bumped whenever leases are removed (revoked, or the table reloaded)
    /// or this lessor stops being the primary: a keep-alive of an expired
    /// lease waits on it for the revoke (see [`LeaderOnly::is_expired`]).
    changed: tokio::sync::watch::Sender<u64>,
}

/// `expiry - now` in seconds, truncated toward zero, signed.
fn signed_secs_until(expiry: Instant, now: Instant) -> i64 {
    if expiry >= now {
        i64::try_from((expiry - now).as_secs()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - expiry).as_secs()).unwrap_or(i64::MAX)
    }
}

impl Lessor {
    /// An empty lessor (not primary until [`LeaderOnly::promote`]).
    pub fn new(config: LessorConfig, clock: Arc<dyn Clock>) -> Self {
        Self::with_table(config, clock, Table::default())
    }

    fn with_table(config: LessorConfig, clock: Arc<dyn Clock>, table: Table) -> Self {
        Self {
            config,
            clock,
            state: Mutex::new(State {
                table,
                schedule: Schedule::default(),
            }),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Rebuilds the lessor of a stored member: leases from their records in
    /// the store's engine (TTLs below the minimum raised, as etcd does),
    /// attached keys from the `lease` field of every live key. Expiries stay
    /// unset until [`LeaderOnly::promote`].
    pub fn recover(
        config: LessorConfig,
        clock: Arc<dyn Clock>,
        store: &Store,
    ) -> Result<Self, crate::mvcc::Error> {
        let table = Table::load(store, config.min_ttl)?;
        Ok(Self::with_table(config, clock, table))
    }

    /// Replaces the table with the one stored in `store` (after a raft
    /// snapshot was installed); a primary stays primary, with fresh expiries.
    pub fn reload(&self, store: &Store) -> Result<(), crate::mvcc::Error> {
        let table = Table::load(store, self.config.min_ttl)?;
        let primary = {
            let mut state = self.lock();
            let primary = state.schedule.is_primary();
            *state = State {
                table,
                schedule: Schedule::default(),
            };
            primary
        };
        if primary {
            self.leader_only().promote();
        }
        self.bump();
        Ok(())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the state consistent before it can panic, so
        // a poisoned lock still guards usable data.
        crate::locks::lock(&self.state)
    }

    /// Tells the subscribers that leases were removed or the lessor demoted.
    pub(super) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that changes whenever leases are removed or this lessor
    /// is demoted.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The configuration.
    pub fn config(&self) -> LessorConfig {
        self.config
    }

    /// The leader-only half: promotion and demotion, renewals, expiries and
    /// due checkpoints.
    pub fn leader_only(&self) -> LeaderOnly<'_> {
        LeaderOnly::new(self)
    }

    // ---- Replicated state: queries used while applying ----

    /// True when lease `id` exists.
    pub fn exists(&self, id: i64) -> bool {
        self.lock().table.get(id).is_some()
    }

    /// The stored record of lease `id`.
    pub fn record(&self, id: i64) -> Option<cairnpb::Lease> {
        self.lock().table.get(id).map(|l| cairnpb::Lease {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        })
    }

    /// The lease `key` is attached to (0 = none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.lock().table.attached().lease_of(key)
    }

    /// The attached keys inside `range`, with their leases.
    pub fn attached_in(&self, range: &KeyRange) -> Vec<(Vec<u8>, i64)> {
        self.lock().table.attached().in_range(range)
    }

    /// The keys attached to lease `id`, sorted (`None`: no such lease).
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        let state = self.lock();
        state.table.get(id)?;
        Some(state.table.attached().keys_of(id))
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
        let mut state = self.lock();
        let out = commit()?;
        let now = self.clock.now();
        let interval = self.config.checkpoint_interval;
        let State { table, schedule } = &mut *state;
        for (id, ttl) in changes.granted {
            table.grant(id, ttl);
            if schedule.is_primary() {
                schedule.set_expiry(id, now + secs(ttl));
                schedule.schedule_checkpoint(id, ttl, interval, now);
            }
        }
        for (key, lease) in changes.items {
            table.set_item(&key, lease);
        }
        for (id, remaining) in changes.checkpoints {
            if let Some(effective_ttl) = table.checkpoint(id, remaining) {
                schedule.schedule_checkpoint(id, effective_ttl, interval, now);
            }
        }
        let removed = !changes.revoked.is_empty();
        for id in changes.revoked {
            table.remove(id);
            schedule.forget(id);
        }
        drop(state);
        if removed {
            self.bump();
        }
        Ok(out)
    }

    // ---- Reads for the Lease service ----

    /// LeaseTimeToLive of lease `id` (`None`: no such lease).
    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<TimeToLive> {
        let now = self.clock.now();
        let state = self.lock();
        let lease = state.table.get(id)?;
        let ttl = match state.schedule.expiry(id) {
            Some(expiry) => signed_secs_until(expiry, now),
            // A lease that never expires reports what etcd's "forever" does:
            // the largest duration, in seconds.
            None => i64::MAX / 1_000_000_000,
        };
        Some(TimeToLive {
            ttl,
            granted_ttl: lease.ttl,
            keys: if with_keys {
                state.table.attached().keys_of(id)
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease id, soonest expiry first (etcd's order for LeaseLeases).
    pub fn leases(&self) -> Vec<i64> {
        let state = self.lock();
        let mut ids: Vec<(Option<Instant>, i64)> = state
            .table
            .iter()
            .map(|(id, _)| (state.schedule.expiry(id), id))
            .collect();
        // `None` (never) sorts last.
        ids.sort_by_key(|(expiry, id)| (expiry.is_none(), *expiry, *id));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.lock().table.len()
    }

    /// True when there is no lease.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the replicated half, for tests to compare whole tables.
    #[cfg(test)]
    pub(super) fn table(&self) -> Table {
        self.lock().table.clone()
    }
}
