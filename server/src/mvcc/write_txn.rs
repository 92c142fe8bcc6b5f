//! Write transactions: every change one makes shares one main revision, and
//! lands on the engine in one atomic batch together with the applied index.
//!
//! A transaction holds the store's write lock from [`Store::write`] until it
//! is committed or dropped, which is what makes it atomic to readers; watchers
//! are notified of its events before that lock is released, so they see
//! revisions in order.

use std::collections::HashMap;
use std::sync::RwLockWriteGuard;

use cairn_proto::mvccpb::{Event, KeyValue};
use prost::Message;

use super::index::KeyRange;
use super::key_index::{KeyIndex, KeyMark};
use super::range::range_at;
use super::revision::Revision;
use super::store::{to_event, State, META_APPLIED_INDEX};
use super::{Error, RangeOptions, RangeResult, Store};
use crate::storage::{BatchOp, Cf, WriteBatch};

/// A write transaction: every change it makes shares one main revision.
///
/// Changes are visible to the transaction's own reads at once and to everyone
/// else after [`WriteTxn::commit`]. Dropping an uncommitted transaction rolls
/// the index back, so a failed disk write leaves the store as it was.
pub struct WriteTxn<'a> {
    /// The store being written.
    store: &'a Store,
    /// Exclusive access for the whole transaction.
    state: RwLockWriteGuard<'a, State>,
    /// The main revision this transaction's changes get.
    main: i64,
    /// Records to write, in sub-revision order: (revision, tombstone, record).
    changes: Vec<(Revision, bool, KeyValue)>,
    /// Where each touched key's history stood before the transaction
    /// (None = the key was absent), to roll back to.
    undo: HashMap<Vec<u8>, Option<KeyMark>>,
    /// Writes outside the key space (e.g. lease records) that must commit
    /// atomically with this transaction's records.
    staged: WriteBatch,
    /// Set by a successful commit; otherwise drop rolls back.
    committed: bool,
    /// Operations done, for etcd's mvcc counters (added when the
    /// transaction ends, committed or not, as etcd's `End` does).
    ops: Ops,
}

/// What a transaction did, for the metrics.
#[derive(Debug, Default)]
struct Ops {
    /// A cell: reads take `&self`.
    ranges: std::cell::Cell<u64>,
    puts: u64,
    deletes: u64,
    put_bytes: i64,
    /// Keys created minus keys deleted.
    live_keys: i64,
}

impl<'a> WriteTxn<'a> {
    /// A transaction on `store`, holding its write lock `state` until it is
    /// committed or dropped.
    pub(super) fn begin(store: &'a Store, state: RwLockWriteGuard<'a, State>) -> Self {
        let main = state.current_rev + 1;
        Self {
            store,
            state,
            main,
            changes: Vec::new(),
            undo: HashMap::new(),
            staged: WriteBatch::new(),
            committed: false,
            ops: Ops::default(),
        }
    }

    /// The newest revision this transaction's reads see: its own, once it
    /// changed something, else the store's current one.
    pub fn revision(&self) -> i64 {
        if self.changes.is_empty() {
            self.state.current_rev
        } else {
            self.main
        }
    }

    /// The compacted revision (-1 when never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.state.compact_rev
    }

    /// The applied index recorded by the latest commit before this transaction.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index
    }

    fn remember(&mut self, key: &[u8]) {
        if !self.undo.contains_key(key) {
            let before = self.state.index.key_index(key).map(KeyIndex::mark);
            self.undo.insert(key.to_vec(), before);
        }
    }

    /// The put record of this transaction at `rev`, for its own reads (a
    /// revision's sub is its change's position).
    fn pending(&self, rev: Revision) -> Option<KeyValue> {
        if rev.main != self.main {
            return None;
        }
        let (_, tombstone, kv) = self.changes.get(usize::try_from(rev.sub).ok()?)?;
        (!tombstone).then(|| kv.clone())
    }

    fn next_rev(&self) -> Revision {
        Revision::new(self.main, self.changes.len() as i64)
    }

    /// Reads inside the transaction (sees its own writes).
    pub fn range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult, Error> {
        range_at(
            &self.state,
            self.store.engine().as_ref(),
            &|rev| self.pending(rev),
            None,
            self.revision(),
            range,
            opts,
        )
    }

    /// Counts one range of a request (see
    /// [`crate::apply::ReadView::note_range`]).
    pub fn note_range(&self) {
        self.ops.ranges.set(self.ops.ranges.get() + 1);
    }

    /// Puts `key`; creation revision and version follow from its history.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) {
        let rev = self.next_rev();
        let view = self.revision();
        let (before, mark) = self.state.index.put(key, rev, view);
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_vec(), mark);
        }
        let (create_revision, version) = match before {
            Some(at) => (at.created.main, at.version + 1),
            None => {
                self.ops.live_keys += 1;
                (rev.main, 1)
            }
        };
        self.ops.puts += 1;
        self.ops.put_bytes += (key.len() + value.len()) as i64;
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.changes.push((rev, false, kv));
    }

    /// Deletes every live key of `range`; returns how many were deleted.
    pub fn delete_range(&mut self, range: &KeyRange) -> usize {
        self.ops.deletes += 1;
        let view = self.revision();
        let keys: Vec<Vec<u8>> = self
            .state
            .index
            .range(range, view)
            .map(|(k, _)| k.to_vec())
            .collect();
        for key in &keys {
            let rev = self.next_rev();
            self.remember(key);
            if self.state.index.tombstone(key, rev) {
                let kv = KeyValue {
                    key: key.clone(),
                    mod_revision: rev.main,
                    ..KeyValue::default()
                };
                self.changes.push((rev, true, kv));
                self.ops.live_keys -= 1;
            }
        }
        keys.len()
    }

    /// Adds a write outside the key space (another column family than
    /// [`Cf::Kv`]) to this transaction's commit, so that it lands atomically
    /// with the revision records. It does not take a revision by itself.
    pub fn stage(&mut self, op: BatchOp) {
        self.staged.ops.push(op);
    }

    /// True when the transaction changed something (and so takes a new revision).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Writes the changes and `applied_index` in one atomic batch; returns the
    /// store's revision after the commit.
    pub fn commit(mut self, applied_index: Option<u64>) -> Result<i64, Error> {
        let mut batch = WriteBatch::new();
        for (rev, tombstone, kv) in &self.changes {
            // A tombstone record holds only the key, as in etcd.
            let record = if *tombstone {
                KeyValue {
                    key: kv.key.clone(),
                    ..KeyValue::default()
                }
                .encode_to_vec()
            } else {
                kv.encode_to_vec()
            };
            batch.put(Cf::Kv, rev.record_key(*tombstone), record);
        }
        batch.ops.append(&mut self.staged.ops);
        if let Some(index) = applied_index {
            batch.put(Cf::Meta, META_APPLIED_INDEX, (index as i64).to_be_bytes());
        }
        if !batch.is_empty() {
            let start = std::time::Instant::now();
            self.store.write_state(batch)?;
            if let Some(m) = self.store.metrics.get() {
                m.commit.observe(crate::metrics::since(start));
            }
        }
        self.state.live_keys += self.ops.live_keys;
        if let Some(index) = applied_index {
            self.state.applied_index = index;
        }
        self.committed = true;
        if !self.changes.is_empty() {
            self.state.current_rev = self.main;
            let events: Vec<Event> = self
                .changes
                .drain(..)
                .map(|(_, tombstone, kv)| to_event(tombstone, kv))
                .collect();
            // Still under the write lock: watchers see revisions in order.
            self.store.hub.notify(self.main, &events);
        }
        Ok(self.state.current_rev)
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.store.metrics.get() {
            let ops = &self.ops;
            let ranges = ops.ranges.get();
            m.ranges(ranges);
            m.put.inc_by(ops.puts);
            m.delete.inc_by(ops.deletes);
            m.put_size.add(ops.put_bytes);
            // etcd's rule: a transaction of one operation is not a txn.
            if ranges + ops.puts + ops.deletes > 1 {
                m.txn.inc();
            }
        }
        if self.committed {
            return;
        }
        for (key, before) in self.undo.drain() {
            self.state.index.rollback(&key, before);
        }
    }
}
