//! The replicated half of the lessor: which leases exist, their TTLs and
//! checkpoints, and which keys are attached to them. Every member applying
//! the same operations holds the same table; nothing here reads a clock.

use std::collections::BTreeMap;

use super::attached::AttachedKeys;
use super::record;
use crate::mvcc::Store;

/// One lease, as every member knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lease {
    /// Granted TTL in seconds (already raised to the minimum).
    pub(super) ttl: i64,
    /// Last checkpointed remaining TTL in seconds, 0 when none: promotion
    /// starts the lease from it instead of the full TTL.
    pub(super) remaining_ttl: i64,
}

impl Lease {
    /// The TTL promotion and renewal start from: the checkpointed remaining
    /// TTL if there is one, else the full TTL (etcd's `getRemainingTTL`).
    pub(super) fn effective_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }
}

/// The leases and their attached keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Table {
    /// Leases by id. Ordered so that every walk over them is deterministic.
    leases: BTreeMap<i64, Lease>,
    /// The keys attached to them.
    attached: AttachedKeys,
}

impl Table {
    /// Rebuilds the table of a stored member: leases from their records in
    /// the store's engine (TTLs below `min_ttl` raised, as etcd does),
    /// attached keys from the `lease` field of every live key.
    pub(super) fn load(store: &Store, min_ttl: i64) -> Result<Self, crate::mvcc::Error> {
        let mut table = Self::default();
        for r in record::load_all(store.engine().as_ref())? {
            table.leases.insert(
                r.id,
                Lease {
                    ttl: r.ttl.max(min_ttl),
                    remaining_ttl: r.remaining_ttl,
                },
            );
        }
        // From the store's pass over the records at load: no record is read
        // again (it used to be a range per 1,000 keys, each counting every
        // key after it: quadratic in the keys).
        for (key, lease) in store.leased_keys()? {
            table.set_item(&key, lease);
        }
        Ok(table)
    }

    /// Lease `id`, if it exists.
    pub(super) fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.leases.iter().map(|(id, lease)| (*id, lease))
    }

    /// Number of leases.
    pub(super) fn len(&self) -> usize {
        self.leases.len()
    }

    /// The attached keys.
    pub(super) fn attached(&self) -> &AttachedKeys {
        &self.attached
    }

    /// Adds lease `id`, granted for `ttl` seconds, with no checkpoint.
    pub(super) fn grant(&mut self, id: i64, ttl: i64) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: 0,
            },
        );
    }

    /// Records lease `id`'s checkpointed remaining TTL (0 clears it); returns
    /// its effective TTL now, `None` when there is no such lease.
    pub(super) fn checkpoint(&mut self, id: i64, remaining_ttl: i64) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        lease.remaining_ttl = remaining_ttl;
        Some(lease.effective_ttl())
    }

    /// Removes lease `id` and detaches its keys.
    pub(super) fn remove(&mut self, id: i64) {
        if self.leases.remove(&id).is_some() {
            self.attached.remove_lease(id);
        }
    }

    /// Attaches `key` to `lease` (0 = to none), detaching it from its old lease.
    pub(super) fn set_item(&mut self, key: &[u8], lease: i64) {
        if self.attached.lease_of(key) == lease {
            return;
        }
        self.attached.detach(key);
        if lease == 0 {
            return;
        }
        if self.leases.contains_key(&lease) {
            self.attached.attach(key, lease);
        } else {
            // Not the key itself: keys are sealed at rest, so they stay out
            // of the log too.
            tracing::error!(
                lease = format!("{lease:x}"),
                key_bytes = key.len(),
                "key attached to a lease that does not exist"
            );
        }
    }
}
