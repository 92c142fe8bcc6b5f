//! Start-up: a store's in-memory state rebuilt from its records.
//!
//! The key index is never stored (user keys stay sealed on disk, inside the
//! records' values), so opening a store reads every revision record once, in
//! revision order: the index, the current revision and, from the same pass,
//! the keys attached to leases (the lessor's attached keys are rebuilt from
//! them without reading any record again). Only what the index needs is
//! decoded: a record's value is skipped, never copied. A snapshot's
//! install hands the records it writes to an [`IndexBuilder`] instead, and
//! nothing is read back.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::index::{KeyRange, RestoredRecord, TreeIndex};
use super::page_counts::PageCounts;
use super::revision::Revision;
use super::store::{State, META_APPLIED_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use super::Error;
use crate::storage::parallel::{default_threads, scan_map};
use crate::storage::{Cf, Engine};

/// What a `kv` record (an encoded `mvccpb.KeyValue`) says of its key,
/// with etcd's field numbers; `mod_revision` (3) and `value` (5) are
/// skipped while decoding, so the value is never copied.
#[derive(Clone, PartialEq, Message)]
pub(super) struct RecordMeta {
    /// The user key.
    #[prost(bytes = "vec", tag = "1")]
    pub(super) key: Vec<u8>,
    /// The revision of the put that created the key's current generation.
    #[prost(int64, tag = "2")]
    pub(super) create_revision: i64,
    /// Puts of the key in its current generation, this one included.
    #[prost(int64, tag = "4")]
    pub(super) version: i64,
    /// The lease the key is attached to (0: none).
    #[prost(int64, tag = "6")]
    pub(super) lease: i64,
}

impl RecordMeta {
    /// Decodes the record stored under revision `rev`.
    pub(super) fn decode_at(rev: Revision, bytes: &[u8]) -> Result<Self, Error> {
        Self::decode(bytes).map_err(|e| Error::Corrupt {
            what: format!("record {rev}"),
            reason: e.to_string(),
        })
    }
}

/// The live keys attached to a lease as the latest load found them.
#[derive(Debug, Default)]
pub(super) struct LeasedKeys {
    /// The store's revision when they were found: they are the truth only
    /// while no write has committed since.
    pub(super) rev: i64,
    /// (key, lease), in key order.
    pub(super) keys: Vec<(Vec<u8>, i64)>,
}

/// What loading a store's records produced.
pub(super) struct Loaded {
    /// The index and revisions.
    pub(super) state: State,
    /// The compaction a crash left unfinished: its revision and the
    /// revisions it must keep.
    pub(super) unfinished: Option<(i64, HashSet<Revision>)>,
    /// The live keys attached to leases.
    pub(super) leased: LeasedKeys,
}

fn read_i64(engine: &dyn Engine, key: &[u8]) -> Result<Option<i64>, Error> {
    meta_i64(key, engine.get(Cf::Meta, key)?)
}

/// The number a `meta` record under `key` holds (big-endian i64), if any.
pub(super) fn meta_i64(key: &[u8], value: Option<Vec<u8>>) -> Result<Option<i64>, Error> {
    match value {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| Error::Corrupt {
                what: String::from_utf8_lossy(key).into_owned(),
                reason: format!("expected 8 bytes, found {}", v.len()),
            })?;
            Ok(Some(i64::from_be_bytes(bytes)))
        }
    }
}

/// The revision of a record key, and whether it is a tombstone.
pub(super) fn record_revision(key: &[u8]) -> Result<(Revision, bool), Error> {
    Revision::from_record_key(key).ok_or_else(|| Error::Corrupt {
        what: "record key".into(),
        reason: format!("{} bytes is not a revision", key.len()),
    })
}

/// What a `kv` record stored under record key `key` says of its key: its
/// revision, whether it is a tombstone, and its [`RecordMeta`].
fn decode_record(key: &[u8], value: &[u8]) -> Result<(Revision, bool, RecordMeta), Error> {
    let (rev, tombstone) = record_revision(key)?;
    Ok((rev, tombstone, RecordMeta::decode_at(rev, value)?))
}

/// The key index, the current revision and the leased keys, gathered from
/// `kv` records handed over in revision order: by [`load`]'s pass over the
/// engine, or by an install from the snapshot data it is about to write
/// ([`IndexBuilder::add`]), so the store need not read back what it just
/// wrote.
pub struct IndexBuilder {
    /// What each record says of its key, in revision order.
    records: Vec<RestoredRecord>,
    /// Only keys whose latest record attaches them to a lease.
    leases: HashMap<Vec<u8>, i64>,
    /// The highest main revision seen (1 for an empty store).
    current_rev: i64,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    /// A builder that has seen no record.
    pub fn new() -> Self {
        Self {
            records: Vec::new(),
            leases: HashMap::new(),
            current_rev: 1,
        }
    }

    /// Takes the `kv` record stored under record key `key`, refusing one
    /// that does not decode or does not come after the last one (the
    /// engine would keep them in another order than the index was built
    /// in).
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let (rev, tombstone, meta) = decode_record(key, value)?;
        // (revision, tombstone) orders as the record keys' bytes do.
        if let Some(last) = self.records.last() {
            if (last.rev, last.tombstone) >= (rev, tombstone) {
                return Err(Error::Corrupt {
                    what: format!("record {rev}"),
                    reason: "records out of revision order".into(),
                });
            }
        }
        self.push(rev, tombstone, meta);
        Ok(())
    }

    /// Takes a decoded record (records come in revision order).
    fn push(&mut self, rev: Revision, tombstone: bool, meta: RecordMeta) {
        if !tombstone && meta.lease != 0 {
            self.leases.insert(meta.key.clone(), meta.lease);
        } else if !self.leases.is_empty() {
            self.leases.remove(&meta.key);
        }
        self.current_rev = self.current_rev.max(rev.main);
        self.records.push(RestoredRecord {
            key: meta.key,
            rev,
            tombstone,
            created: meta.create_revision,
            version: meta.version,
        });
    }

    /// Builds the index on up to `threads` threads.
    pub(super) fn build(self, threads: usize) -> BuiltIndex {
        let started = std::time::Instant::now();
        let records = self.records.len();
        // Sorted by key (parts on their own threads), then built in one go: a
        // search of the map per record, in revision order, was most of the
        // rebuild.
        let index = TreeIndex::from_sorted(sorted_by_key(self.records, threads));
        let mut leased: Vec<(Vec<u8>, i64)> = self.leases.into_iter().collect();
        leased.sort_unstable();
        BuiltIndex {
            index,
            current_rev: self.current_rev,
            leased,
            records,
            build_ms: crate::duration::millis_since(started),
        }
    }
}

/// What [`IndexBuilder::build`] made of the records: a store's state but
/// for what its `meta` records say (compaction, applied index).
pub(super) struct BuiltIndex {
    /// Every key's history.
    index: TreeIndex,
    /// The highest main revision of the records.
    current_rev: i64,
    /// The live keys attached to a lease, with their lease, in key order.
    leased: Vec<(Vec<u8>, i64)>,
    /// How many records it was built from (for the log).
    records: usize,
    /// How long the build took (for the log).
    build_ms: u64,
}

/// Reads the state stored in `engine`: one pass over every `kv` record.
pub(super) fn load(engine: &dyn Engine) -> Result<Loaded, Error> {
    let started = std::time::Instant::now();
    let threads = default_threads();
    let mut builder = IndexBuilder::new();
    // Records are opened and decoded on worker threads and arrive here in
    // revision order.
    scan_map(
        engine,
        Cf::Kv,
        threads,
        decode_record,
        |(rev, tombstone, meta)| {
            builder.push(rev, tombstone, meta);
            Ok(())
        },
    )?;
    let read_ms = crate::duration::millis_since(started);
    let built = builder.build(threads);
    tracing::info!(records = built.records, threads, read_ms, "kv records read");
    load_built(engine, built)
}

/// The state of `engine`, whose `kv` records `built` was built from, once
/// what its `meta` records say is added: the compaction (applied to the
/// index, and the one a crash left unfinished) and the applied index.
pub(super) fn load_built(engine: &dyn Engine, built: BuiltIndex) -> Result<Loaded, Error> {
    let BuiltIndex {
        mut index,
        mut current_rev,
        leased,
        records,
        build_ms,
    } = built;
    let scheduled = read_i64(engine, META_SCHEDULED_COMPACT)?.unwrap_or(-1);
    let finished = read_i64(engine, META_FINISHED_COMPACT)?.unwrap_or(-1);
    let applied_index = read_i64(engine, META_APPLIED_INDEX)?.unwrap_or(0) as u64;
    let mut compact_rev = -1;
    let mut unfinished = None;
    if scheduled >= 0 {
        let available = index.compact(scheduled);
        compact_rev = scheduled;
        // Compaction may have removed the newest record (a tombstone): the
        // revision never goes backwards past a compaction point.
        current_rev = current_rev.max(scheduled);
        if finished < scheduled {
            unfinished = Some((scheduled, available));
        }
    }
    let live_keys = index.range(&KeyRange::new(b"", b"\0"), current_rev).count() as i64;
    tracing::info!(
        records,
        build_ms,
        keys = index.len(),
        leased_keys = leased.len(),
        "key index rebuilt from the records"
    );
    Ok(Loaded {
        state: State {
            index,
            current_rev,
            compact_rev,
            applied_index,
            live_keys,
            page_counts: PageCounts::default(),
        },
        unfinished,
        leased: LeasedKeys {
            rev: current_rev,
            keys: leased,
        },
    })
}

/// `records` (in revision order) sorted by key, each key's records still
/// in revision order: `threads` parts sorted on their own threads, merged
/// as they are consumed (on equal keys, the earlier part first).
fn sorted_by_key(
    mut records: Vec<RestoredRecord>,
    threads: usize,
) -> impl Iterator<Item = RestoredRecord> {
    let part_len = records.len().div_ceil(threads.max(1)).max(1);
    let mut parts = Vec::new();
    while records.len() > part_len {
        parts.push(records.split_off(records.len() - part_len));
    }
    parts.push(records);
    parts.reverse();
    std::thread::scope(|scope| {
        for part in parts.iter_mut() {
            scope.spawn(move || part.sort_by(|a, b| a.key.cmp(&b.key)));
        }
    });
    let mut parts: Vec<_> = parts.into_iter().map(Vec::into_iter).collect();
    let mut heads: Vec<Option<RestoredRecord>> = parts.iter_mut().map(Iterator::next).collect();
    std::iter::from_fn(move || {
        let mut best: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            let Some(head) = head else { continue };
            let better = match best.and_then(|b| heads[b].as_ref()) {
                Some(current) => head.key < current.key,
                None => true,
            };
            if better {
                best = Some(i);
            }
        }
        let i = best?;
        let next = parts[i].next();
        std::mem::replace(&mut heads[i], next)
    })
}

/// The live keys attached to a lease, in key order, read from the latest
/// record of every live key of `state` (when no load's list is current).
pub(super) fn read_leased_keys(
    state: &State,
    engine: &dyn Engine,
) -> Result<Vec<(Vec<u8>, i64)>, Error> {
    let mut keys = Vec::new();
    for (key, at) in state
        .index
        .range(&KeyRange::new(b"", b"\0"), state.current_rev)
    {
        let rev = at.modified;
        let bytes = engine
            .get(Cf::Kv, &rev.record_key(false))?
            .ok_or_else(|| Error::Corrupt {
                what: format!("record {rev}"),
                reason: "indexed but missing from storage".into(),
            })?;
        let lease = RecordMeta::decode_at(rev, &bytes)?.lease;
        if lease != 0 {
            keys.push((key.to_vec(), lease));
        }
    }
    Ok(keys)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use cairn_proto::mvccpb::KeyValue;

    use super::*;
    use crate::mvcc::{RangeOptions, Store};
    use crate::storage::MemoryEngine;

    fn put(store: &Store, key: &str, lease: i64) {
        let mut txn = store.write();
        txn.put(key.as_bytes(), b"value".to_vec(), lease);
        txn.commit(None).unwrap();
    }

    fn delete(store: &Store, key: &str) {
        let mut txn = store.write();
        txn.delete_range(&KeyRange::new(key.as_bytes(), b""));
        txn.commit(None).unwrap();
    }

    fn owned(pairs: &[(&str, i64)]) -> Vec<(Vec<u8>, i64)> {
        pairs
            .iter()
            .map(|(k, l)| (k.as_bytes().to_vec(), *l))
            .collect()
    }

    #[test]
    fn record_meta_reads_a_key_value_without_its_value() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 7,
            version: 4,
            value: vec![9; 300],
            lease: 0x1234,
        };
        let meta = RecordMeta::decode_at(Revision::new(7, 0), &kv.encode_to_vec()).unwrap();
        assert_eq!(
            meta,
            RecordMeta {
                key: b"k".to_vec(),
                create_revision: 3,
                version: 4,
                lease: 0x1234,
            }
        );
        assert!(matches!(
            RecordMeta::decode_at(Revision::new(7, 0), &[0xff]),
            Err(Error::Corrupt { .. })
        ));
    }

    /// The leased keys of a reopened store: taken from the load's pass,
    /// then (taken already, or after a write) read from the records; the
    /// same either way.
    #[test]
    fn leased_keys_come_from_the_load_and_match_the_records() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let store = Arc::new(Store::open(Arc::clone(&engine), true).unwrap());
        put(&store, "a", 1);
        put(&store, "b", 2);
        put(&store, "b", 0); // detached by an overwrite
        put(&store, "c", 3);
        delete(&store, "c"); // detached by a delete
        put(&store, "d", 0);
        put(&store, "e", 1);
        put(&store, "c", 4); // a new generation
        put(&store, "z", 5);
        store
            .compact(store.current_revision())
            .unwrap()
            .run()
            .unwrap();
        drop(store);

        let want = owned(&[("a", 1), ("c", 4), ("e", 1), ("z", 5)]);
        let store = Store::open(Arc::clone(&engine), true).unwrap();
        assert_eq!(store.leased_keys().unwrap(), want, "from the load");
        assert_eq!(store.leased_keys().unwrap(), want, "from the records");
        store.reload().unwrap();
        put(&store, "a", 0);
        put(&store, "f", 6);
        let want = owned(&[("c", 4), ("e", 1), ("f", 6), ("z", 5)]);
        assert_eq!(store.leased_keys().unwrap(), want, "after writes");
    }

    /// Records of a made-up history, in revision order: puts and deletes
    /// of a few keys, the earliest records dropped (as by a compaction).
    fn history(seed: u64, len: i64) -> Vec<RestoredRecord> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut live: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        let mut out = Vec::new();
        for main in 2..len {
            for sub in 0..(next() % 3) as i64 {
                let key = format!("k{}", next() % 12).into_bytes();
                let rev = Revision::new(main, sub);
                let tombstone = next() % 4 == 0;
                let (created, version) = if tombstone {
                    live.remove(&key);
                    (0, 0)
                } else {
                    let entry = live.entry(key.clone()).or_insert((main, 0));
                    entry.1 += 1;
                    *entry
                };
                out.push(RestoredRecord {
                    key,
                    rev,
                    tombstone,
                    created,
                    version,
                });
            }
        }
        out.split_off(out.len() / 5)
    }

    #[test]
    fn sorted_build_is_the_index_of_records_in_revision_order() {
        for seed in 0..20 {
            let records = history(seed, 200);
            let mut want = TreeIndex::new();
            for r in records.clone() {
                want.restore(r.key, r.rev, r.tombstone, r.created, r.version);
            }
            for threads in [1, 2, 3, 8] {
                let sorted: Vec<_> = sorted_by_key(records.clone(), threads).collect();
                assert!(sorted
                    .windows(2)
                    .all(|w| (&w[0].key, w[0].rev) < (&w[1].key, w[1].rev)));
                let got = TreeIndex::from_sorted(sorted);
                assert_eq!(
                    format!("{got:?}"),
                    format!("{want:?}"),
                    "seed {seed}, {threads}"
                );
            }
        }
        assert!(TreeIndex::from_sorted(sorted_by_key(Vec::new(), 4)).is_empty());
    }

    /// An install hands the records it writes to an [`IndexBuilder`]:
    /// the store it replaces then holds what opening the same records
    /// would, at every revision, with the same leased keys; records out of
    /// order or that do not decode are refused as they are handed over.
    #[test]
    fn an_index_built_from_handed_records_is_the_loaded_one() {
        use crate::storage::flaky::dump;
        use crate::storage::WriteBatch;
        // Phase 1: a history with overwrites, deletes, leases and a
        // compaction, on a store of its own.
        let source: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let store = Arc::new(Store::open(Arc::clone(&source), true).unwrap());
        for round in 0..3 {
            for k in 0..20 {
                put(
                    &store,
                    &format!("k{k:02}"),
                    (k % 3 == round) as i64 * (k + 1),
                );
            }
            delete(&store, &format!("k{:02}", round * 5));
        }
        store.compact(30).unwrap().run().unwrap();
        let opened = Store::open(Arc::clone(&source), true).unwrap();

        // Phase 2: the records handed over as an install writes them.
        let (kv, meta) = (
            dump(source.as_ref(), Cf::Kv),
            dump(source.as_ref(), Cf::Meta),
        );
        let mut builder = IndexBuilder::new();
        for (k, v) in &kv {
            builder.add(k, v).unwrap();
        }
        let target = Store::open(Arc::new(MemoryEngine::new()), true).unwrap();
        put(&target, "old", 7);
        target
            .replace_with_index(builder, |engine| {
                let mut batch = WriteBatch::new();
                for (k, _) in dump(engine, Cf::Kv) {
                    batch.delete(Cf::Kv, k);
                }
                for (cf, records) in [(Cf::Kv, &kv), (Cf::Meta, &meta)] {
                    for (k, v) in records {
                        batch.put(cf, k.clone(), v.clone());
                    }
                }
                engine.write(batch, false).map_err(Error::from)
            })
            .unwrap();

        // Phase 3: the same store either way.
        assert_eq!(target.current_revision(), opened.current_revision());
        assert_eq!(target.compact_revision(), 30);
        assert_eq!(target.live_keys(), opened.live_keys());
        assert_eq!(target.leased_keys().unwrap(), opened.leased_keys().unwrap());
        for rev in 30..=opened.current_revision() {
            let options = RangeOptions {
                rev,
                ..Default::default()
            };
            let all = KeyRange::new(b"", b"\0");
            assert_eq!(
                target.range(&all, options).unwrap(),
                opened.range(&all, options).unwrap(),
                "at {rev}"
            );
        }

        // Records out of order, repeated, or that do not decode.
        let refused = |records: &[&(Vec<u8>, Vec<u8>)]| {
            let mut builder = IndexBuilder::new();
            records.iter().try_for_each(|(k, v)| builder.add(k, v))
        };
        assert!(refused(&[&kv[0], &kv[1]]).is_ok());
        for bad in [
            vec![&kv[1], &kv[0]],
            vec![&kv[1], &kv[1]],
            vec![&(b"k".to_vec(), kv[0].1.clone())],
            vec![&(kv[0].0.clone(), vec![0xff])],
        ] {
            assert!(matches!(refused(&bad), Err(Error::Corrupt { .. })));
        }
    }

    #[test]
    fn a_load_rebuilds_index_revisions_and_versions() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let store = Store::open(Arc::clone(&engine), true).unwrap();
        put(&store, "a", 0);
        put(&store, "a", 0);
        put(&store, "b", 0);
        delete(&store, "b");
        let before = store
            .range(&KeyRange::new(b"", b"\0"), RangeOptions::default())
            .unwrap();
        let rev = store.current_revision();
        drop(store);
        let store = Store::open(engine, true).unwrap();
        assert_eq!(store.current_revision(), rev);
        assert_eq!(store.live_keys(), 1);
        let after = store
            .range(&KeyRange::new(b"", b"\0"), RangeOptions::default())
            .unwrap();
        assert_eq!(after, before);
        assert_eq!(after.kvs[0].version, 2);
    }
}
