//! Which keys are attached to which lease, both ways round.
//!
//! Part of the replicated half of the lessor, but never stored: start-up
//! rebuilds it from the `lease` field of every live key
//! ([`Table::load`](super::table::Table::load)).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::mvcc::KeyRange;

/// The attached-keys index: key -> lease and lease -> keys, kept in step.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct AttachedKeys {
    /// Which lease each attached key belongs to. Needed to detach a key when
    /// it is deleted or moved to another lease without reading its record,
    /// and to find the attached keys of a deleted range.
    by_key: BTreeMap<Vec<u8>, i64>,
    /// The keys of each lease that has any, sorted: a revoke deletes them in
    /// this order, the same on every member. A lease whose last key goes
    /// loses its entry, so that two equal indexes compare equal.
    by_lease: BTreeMap<i64, BTreeSet<Vec<u8>>>,
}

impl AttachedKeys {
    /// The lease `key` is attached to (0 = none).
    pub(super) fn lease_of(&self, key: &[u8]) -> i64 {
        self.by_key.get(key).copied().unwrap_or(0)
    }

    /// The keys attached to `lease`, sorted.
    pub(super) fn keys_of(&self, lease: i64) -> Vec<Vec<u8>> {
        self.by_lease
            .get(&lease)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The attached keys inside `range`, with their leases.
    pub(super) fn in_range(&self, range: &KeyRange) -> Vec<(Vec<u8>, i64)> {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match range {
            KeyRange::Single(k) => {
                return self
                    .by_key
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
        self.by_key
            .range::<[u8], _>(bounds)
            .map(|(k, l)| (k.clone(), *l))
            .collect()
    }

    /// Attaches `key`, which must be detached, to `lease`.
    pub(super) fn attach(&mut self, key: &[u8], lease: i64) {
        self.by_key.insert(key.to_vec(), lease);
        self.by_lease.entry(lease).or_default().insert(key.to_vec());
    }

    /// Detaches `key` from its lease, if it has one.
    pub(super) fn detach(&mut self, key: &[u8]) {
        let Some(lease) = self.by_key.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_lease.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_lease.remove(&lease);
            }
        }
    }

    /// Detaches every key of `lease` (it is gone).
    pub(super) fn remove_lease(&mut self, lease: i64) {
        for key in self.by_lease.remove(&lease).unwrap_or_default() {
            if self.by_key.get(&key) == Some(&lease) {
                self.by_key.remove(&key);
            }
        }
    }
}
