//! One write's lease changes, pending until the write commits.
//!
//! A [`LeaseTxn`] is the lessor as one write transaction sees it: the
//! committed table plus this transaction's own changes (grants, revokes,
//! checkpoints, keys attached or detached). Nothing touches the shared
//! [`Lessor`] until the store transaction has committed; then
//! [`Lessor::apply_committed`] applies the [`LeaseChanges`]. A failed or
//! abandoned write therefore leaves the lessor exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::cairnpb;

use super::{record, Lessor, MAX_LEASE_TTL};
use crate::error::EtcdError;
use crate::mvcc::{KeyRange, WriteTxn};
use crate::storage::BatchOp;

/// Lease changes of one committed write, in the order they are applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseChanges {
    /// New leases: (id, granted TTL after the minimum-TTL rule).
    pub granted: Vec<(i64, i64)>,
    /// Keys whose lease changed: key -> new lease (0 = detached).
    pub items: BTreeMap<Vec<u8>, i64>,
    /// Checkpointed remaining TTLs: (id, seconds; 0 clears).
    pub checkpoints: Vec<(i64, i64)>,
    /// Revoked leases (their keys were deleted by the same write).
    pub revoked: Vec<i64>,
}

impl LeaseChanges {
    /// True when the write changed nothing about leases.
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
            && self.items.is_empty()
            && self.checkpoints.is_empty()
            && self.revoked.is_empty()
    }
}

/// The lessor as seen from inside one write transaction.
#[derive(Debug)]
pub struct LeaseTxn<'a> {
    /// The committed table, read through.
    lessor: &'a Lessor,
    /// What this write changed so far.
    changes: LeaseChanges,
    /// Leases granted by this write: id -> TTL (fast lookup of `changes.granted`).
    granted: BTreeMap<i64, i64>,
    /// Leases revoked by this write.
    revoked: BTreeSet<i64>,
    /// Record writes to add to the store transaction's batch, in order.
    staged: Vec<BatchOp>,
}

impl<'a> LeaseTxn<'a> {
    /// A view of `lessor` with no change yet.
    pub fn new(lessor: &'a Lessor) -> Self {
        Self {
            lessor,
            changes: LeaseChanges::default(),
            granted: BTreeMap::new(),
            revoked: BTreeSet::new(),
            staged: Vec::new(),
        }
    }

    /// True when lease `id` exists as this write sees it.
    pub fn exists(&self, id: i64) -> bool {
        !self.revoked.contains(&id) && (self.granted.contains_key(&id) || self.lessor.exists(id))
    }

    /// The lease `key` is attached to as this write sees it (0 = none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        match self.changes.items.get(key) {
            Some(lease) => *lease,
            None => self.lessor.lease_of(key),
        }
    }

    /// `key` was written with `lease` (0 = none): attach it there, detaching
    /// it from any previous lease.
    pub fn attach(&mut self, key: &[u8], lease: i64) {
        if self.lease_of(key) != lease {
            self.changes.items.insert(key.to_vec(), lease);
        }
    }

    /// Every key of `range` was deleted: detach the attached ones.
    pub fn detach_range(&mut self, range: &KeyRange) {
        let mut attached: BTreeSet<Vec<u8>> = self
            .lessor
            .attached_in(range)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        attached.extend(
            self.changes
                .items
                .iter()
                .filter(|(k, l)| **l != 0 && range.contains(k))
                .map(|(k, _)| k.clone()),
        );
        for key in attached {
            self.attach(&key, 0);
        }
    }

    /// Grants lease `id` for `ttl` seconds; returns the TTL granted (raised
    /// to the minimum). etcd's checks, in etcd's order: id 0 is "not found",
    /// then the TTL ceiling, then duplicates.
    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<i64, EtcdError> {
        if id == 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        if self.exists(id) {
            return Err(EtcdError::LeaseExist);
        }
        let ttl = ttl.max(self.lessor.config().min_ttl);
        self.staged.push(record::put(&cairnpb::Lease {
            id,
            ttl,
            remaining_ttl: 0,
        }));
        self.granted.insert(id, ttl);
        self.revoked.remove(&id);
        self.changes.granted.push((id, ttl));
        Ok(ttl)
    }

    /// Revokes lease `id`; returns its attached keys, sorted, which the caller
    /// deletes in the same write (and detaches with [`LeaseTxn::attach`]).
    pub fn revoke(&mut self, id: i64) -> Result<Vec<Vec<u8>>, EtcdError> {
        if !self.exists(id) {
            return Err(EtcdError::LeaseNotFound);
        }
        let mut keys: BTreeSet<Vec<u8>> = self
            .lessor
            .keys(id)
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !self.changes.items.contains_key(k))
            .collect();
        keys.extend(
            self.changes
                .items
                .iter()
                .filter(|(_, l)| **l == id)
                .map(|(k, _)| k.clone()),
        );
        self.staged.push(record::delete(id));
        self.granted.remove(&id);
        self.revoked.insert(id);
        self.changes.revoked.push(id);
        Ok(keys.into_iter().collect())
    }

    /// Records `remaining_ttl` as lease `id`'s checkpoint (0 clears it). A
    /// lease that does not exist is skipped, as etcd does.
    pub fn checkpoint(&mut self, id: i64, remaining_ttl: i64) {
        if !self.exists(id) {
            return;
        }
        let ttl = match self.granted.get(&id) {
            Some(ttl) => *ttl,
            None => match self.lessor.record(id) {
                Some(r) => r.ttl,
                None => return,
            },
        };
        self.staged.push(record::put(&cairnpb::Lease {
            id,
            ttl,
            remaining_ttl,
        }));
        self.changes.checkpoints.push((id, remaining_ttl));
    }

    /// Stages the lease record writes into `txn` (so they commit in the same
    /// batch as the key changes) and returns the changes to apply to the
    /// lessor once `txn` has committed.
    pub fn finish(self, txn: &mut WriteTxn<'_>) -> LeaseChanges {
        for op in self.staged {
            txn.stage(op);
        }
        self.changes
    }
}
