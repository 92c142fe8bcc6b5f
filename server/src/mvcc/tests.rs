//! Store tests: table-driven cases, and a proptest model test against a plain
//! map-per-revision model of etcd's semantics.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::mvccpb::KeyValue;
use proptest::prelude::*;

use super::*;
use crate::storage::flaky::dump;
use crate::storage::{Cf, Engine, MemoryEngine, RocksEngine, Scan, WriteBatch};

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

fn put(store: &Store, key: &str, value: &str) -> i64 {
    let mut txn = store.write();
    txn.put(key.as_bytes(), value.into(), 0);
    txn.commit(None).unwrap()
}

fn delete(store: &Store, key: &str, end: &str) -> i64 {
    let mut txn = store.write();
    txn.delete_range(&KeyRange::new(key.as_bytes(), end.as_bytes()));
    txn.commit(None).unwrap()
}

fn get_at(store: &Store, key: &str, end: &str, rev: i64) -> Result<Vec<KeyValue>, Error> {
    store
        .range(
            &KeyRange::new(key.as_bytes(), end.as_bytes()),
            RangeOptions {
                rev,
                ..Default::default()
            },
        )
        .map(|r| r.kvs)
}

fn memory_store() -> Arc<Store> {
    Arc::new(Store::open(Arc::new(MemoryEngine::new()), true).unwrap())
}

#[test]
fn revisions_follow_etcd_numbering() {
    let store = memory_store();
    assert_eq!(store.current_revision(), 1, "a new store is at revision 1");
    assert_eq!(put(&store, "a", "1"), 2);
    assert_eq!(put(&store, "a", "2"), 3);
    assert_eq!(put(&store, "b", "1"), 4);
    assert_eq!(delete(&store, "a", ""), 5);
    // Deleting nothing does not take a revision.
    assert_eq!(delete(&store, "zz", ""), 5);
    assert_eq!(put(&store, "a", "3"), 6);

    let table: &[(i64, &str, Vec<KeyValue>)] = &[
        (2, "a", vec![kv("a", "1", 2, 2, 1)]),
        (3, "a", vec![kv("a", "2", 2, 3, 2)]),
        (4, "\0", vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]),
        (5, "a", vec![]),
        (6, "a", vec![kv("a", "3", 6, 6, 1)]),
        (0, "\0", vec![kv("a", "3", 6, 6, 1), kv("b", "1", 4, 4, 1)]),
    ];
    for (rev, which, want) in table {
        let got = if *which == "\0" {
            get_at(&store, "\0", "\0", *rev).unwrap()
        } else {
            get_at(&store, which, "", *rev).unwrap()
        };
        assert_eq!(&got, want, "read {which:?} at {rev}");
    }
    assert!(matches!(get_at(&store, "a", "", 7), Err(Error::FutureRev)));
}

#[test]
fn one_transaction_one_revision() {
    let store = memory_store();
    let mut txn = store.write();
    txn.put(b"x", b"1".to_vec(), 0);
    txn.put(b"y", b"1".to_vec(), 0);
    // Reads inside the transaction see its own writes.
    let seen = txn
        .range(&KeyRange::new(b"x", b"z"), RangeOptions::default())
        .unwrap();
    assert_eq!(seen.kvs.len(), 2);
    txn.put(b"x", b"2".to_vec(), 7);
    assert_eq!(txn.commit(Some(42)).unwrap(), 2);
    assert_eq!(store.applied_index(), 42);
    assert_eq!(
        get_at(&store, "x", "", 0).unwrap(),
        vec![KeyValue {
            lease: 7,
            ..kv("x", "2", 2, 2, 2)
        }]
    );
}

#[test]
fn a_dropped_transaction_leaves_the_index_as_it_was() {
    let store = memory_store();
    put(&store, "a", "1");
    put(&store, "a", "2");
    put(&store, "b", "1");
    delete(&store, "b", "");
    let before = |store: &Store| {
        (1..=store.current_revision())
            .map(|rev| get_at(store, "a", "z", rev).unwrap())
            .collect::<Vec<_>>()
    };
    let was = before(&store);
    {
        // Puts to a live key, to a deleted key, to a new key; deletes and
        // re-creates; then dropped uncommitted.
        let mut txn = store.write();
        txn.put(b"a", b"3".to_vec(), 0);
        txn.delete_range(&KeyRange::new(b"a", b""));
        txn.put(b"a", b"4".to_vec(), 0);
        txn.put(b"b", b"2".to_vec(), 0);
        txn.put(b"c", b"1".to_vec(), 0);
        txn.delete_range(&KeyRange::new(b"c", b""));
    }
    assert_eq!(before(&store), was);
    // The next write gets the next revision and sees the old history.
    // (A new store is at revision 1, as etcd's: the first put was 2.)
    let rev = put(&store, "a", "5");
    assert_eq!(rev, 6);
    assert_eq!(
        get_at(&store, "a", "", 0).unwrap(),
        vec![kv("a", "5", 2, 6, 3)]
    );
    assert_eq!(get_at(&store, "b", "", 0).unwrap(), vec![]);
    assert_eq!(get_at(&store, "c", "", 0).unwrap(), vec![]);
}

#[test]
fn range_limit_and_count() {
    let store = memory_store();
    for k in ["a", "b", "c", "d"] {
        put(&store, k, "v");
    }
    let r = store
        .range(
            &KeyRange::new(b"a", b"\0"),
            RangeOptions {
                limit: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(r.count, 4);
    assert_eq!(r.rev, 5);
    let r = store
        .range(
            &KeyRange::new(b"b", b"d"),
            RangeOptions {
                count_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 2);
}

#[test]
fn compaction_rules() {
    let store = memory_store();
    put(&store, "a", "1"); // 2
    put(&store, "a", "2"); // 3
    put(&store, "b", "1"); // 4
    delete(&store, "b", ""); // 5
    put(&store, "c", "1"); // 6
    assert!(matches!(store.compact(7), Err(Error::FutureRev)));
    store.compact(4).unwrap().run().unwrap();
    assert_eq!(store.compact_revision(), 4);
    assert!(matches!(store.compact(4), Err(Error::Compacted)));
    assert!(matches!(store.compact(3), Err(Error::Compacted)));
    assert!(matches!(get_at(&store, "a", "", 3), Err(Error::Compacted)));
    // Reading at the compacted revision itself still works.
    assert_eq!(
        get_at(&store, "\0", "\0", 4).unwrap(),
        vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]
    );
    assert_eq!(get_at(&store, "b", "", 5).unwrap(), vec![]);
    // Record 2 (a's first value) is gone from disk; 3 and 4 stay.
    let records = records(store.engine().as_ref());
    assert_eq!(records, vec![(3, false), (4, false), (5, true), (6, false)]);
    store.compact(6).unwrap().run().unwrap();
    assert_eq!(records_of(&store), vec![(3, false), (6, false)]);
}

fn records(engine: &dyn Engine) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    engine
        .scan(Cf::Kv, &[], None, &mut |k, _| {
            let (rev, tomb) = Revision::from_record_key(k).unwrap();
            out.push((rev.main, tomb));
            Scan::Continue
        })
        .unwrap();
    out
}

fn records_of(store: &Store) -> Vec<(i64, bool)> {
    records(store.engine().as_ref())
}

#[test]
fn restart_rebuilds_index_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let store =
            Arc::new(Store::open(Arc::new(RocksEngine::open(dir.path()).unwrap()), true).unwrap());
        put(&store, "a", "1");
        put(&store, "a", "2");
        put(&store, "b", "1");
        delete(&store, "a", "");
        put(&store, "a", "3");
        let mut t = store.write();
        t.put(b"c", b"x".to_vec(), 0);
        t.commit(Some(9)).unwrap();
        store.compact(3).unwrap().run().unwrap();
        expected = (3..=7)
            .map(|rev| get_at(&store, "\0", "\0", rev).unwrap())
            .collect::<Vec<_>>();
    }
    let store = Store::open(Arc::new(RocksEngine::open(dir.path()).unwrap()), true).unwrap();
    assert_eq!(store.current_revision(), 7);
    assert_eq!(store.compact_revision(), 3);
    assert_eq!(store.applied_index(), 9);
    let got = (3..=7)
        .map(|rev| get_at(&store, "\0", "\0", rev).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(got, expected);
    assert!(matches!(get_at(&store, "a", "", 2), Err(Error::Compacted)));
    // The next write continues the numbering (and the version of "a").
    assert_eq!(put(&store, "a", "4"), 8);
    assert_eq!(
        get_at(&store, "a", "", 8).unwrap(),
        vec![kv("a", "4", 6, 8, 2)]
    );
}

#[test]
fn revision_survives_compacting_away_the_last_record() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    {
        let store = Arc::new(Store::open(Arc::clone(&engine), true).unwrap());
        put(&store, "a", "1"); // 2
        delete(&store, "a", ""); // 3
        store.compact(3).unwrap().run().unwrap();
        // The deletion AT the compacted revision stays on disk, for a watch
        // that starts there; nothing reads it otherwise.
        assert_eq!(records_of(&store), vec![(3, true)]);
        assert!(get_at(&store, "\0", "\0", 3).unwrap().is_empty());
    }
    let store = Arc::new(Store::open(engine, true).unwrap());
    assert_eq!(store.current_revision(), 3);
    assert!(get_at(&store, "\0", "\0", 3).unwrap().is_empty());
    assert_eq!(put(&store, "a", "2"), 4);
    assert_eq!(
        get_at(&store, "a", "", 4).unwrap(),
        vec![kv("a", "2", 4, 4, 1)]
    );
    // The next compaction removes it.
    store.compact(4).unwrap().run().unwrap();
    assert_eq!(records_of(&store), vec![(4, false)]);
}

#[test]
fn interrupted_compaction_is_finished_at_open() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    {
        let store = Arc::new(Store::open(Arc::clone(&engine), true).unwrap());
        put(&store, "a", "1");
        put(&store, "a", "2");
        put(&store, "a", "3");
        // Schedule, then "crash" before the physical phase runs.
        drop(store.compact(3).unwrap());
        assert_eq!(records_of(&store).len(), 3);
    }
    let store = Store::open(engine, true).unwrap();
    assert_eq!(records_of(&store), vec![(3, false), (4, false)]);
    assert_eq!(store.compact_revision(), 3);
}

use crate::storage::flaky::FlakyEngine;

#[test]
fn failed_commit_changes_nothing() {
    let engine = Arc::new(FlakyEngine::default());
    let store = Store::open(engine.clone(), true).unwrap();
    put(&store, "a", "1");
    engine.set_failing(true);
    let mut txn = store.write();
    txn.put(b"a", b"2".to_vec(), 0);
    txn.put(b"new", b"x".to_vec(), 0);
    txn.delete_range(&KeyRange::new(b"a", b""));
    assert!(txn.commit(Some(5)).is_err());
    engine.set_failing(false);
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.applied_index(), 0);
    assert_eq!(
        get_at(&store, "\0", "\0", 0).unwrap(),
        vec![kv("a", "1", 2, 2, 1)]
    );
    // And the store keeps working with the right numbering.
    assert_eq!(put(&store, "a", "3"), 3);
    assert_eq!(
        get_at(&store, "a", "", 0).unwrap(),
        vec![kv("a", "3", 2, 3, 2)]
    );
}

// ---------------------------------------------------------------------------
// Model test
// ---------------------------------------------------------------------------

/// One write of a transaction.
#[derive(Debug, Clone)]
enum Write {
    Put(u8, u8),
    Delete(u8, Option<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Txn(Vec<Write>),
    Compact(u8),
    Read {
        key: u8,
        end: Option<u8>,
        back: u8,
        limit: u8,
    },
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    vec![b'a' + k]
}

/// etcd's semantics, spelled out plainly: the whole keyspace after every revision.
struct Model {
    /// `snapshots[r]` is the keyspace at revision r (index 0 unused; 1 = empty store).
    snapshots: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn current(&self) -> i64 {
        self.snapshots.len() as i64 - 1
    }

    fn apply(&mut self, writes: &[Write]) {
        let main = self.current() + 1;
        let mut next = self.snapshots[self.current() as usize].clone();
        let mut changed = false;
        for w in writes {
            match w {
                Write::Put(k, v) => {
                    let (create, version) = match next.get(&key(*k)) {
                        Some(old) => (old.create_revision, old.version + 1),
                        None => (main, 1),
                    };
                    next.insert(
                        key(*k),
                        KeyValue {
                            key: key(*k),
                            value: vec![*v],
                            create_revision: create,
                            mod_revision: main,
                            version,
                            lease: 0,
                        },
                    );
                    changed = true;
                }
                Write::Delete(k, end) => {
                    let range = model_range(*k, *end);
                    let before = next.len();
                    next.retain(|key, _| !range.contains(key));
                    changed |= next.len() != before;
                }
            }
        }
        if changed {
            self.snapshots.push(next);
        }
    }

    fn read(
        &self,
        range: &KeyRange,
        rev: i64,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, usize), &'static str> {
        let rev = if rev <= 0 { self.current() } else { rev };
        if rev > self.current() {
            return Err("future");
        }
        if rev < self.compacted {
            return Err("compacted");
        }
        let all: Vec<KeyValue> = self.snapshots[rev as usize]
            .iter()
            .filter(|(k, _)| range.contains(k))
            .map(|(_, v)| v.clone())
            .collect();
        let count = all.len();
        let kvs = if limit == 0 {
            all
        } else {
            all.into_iter().take(limit).collect()
        };
        Ok((kvs, count))
    }
}

fn model_range(k: u8, end: Option<u8>) -> KeyRange {
    match end {
        None => KeyRange::new(&key(k), b""),
        Some(0) => KeyRange::new(&key(k), b"\0"),
        Some(e) => KeyRange::new(&key(k), &key(e)),
    }
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (0u8..6, any::<u8>()).prop_map(|(k, v)| Write::Put(k, v)),
        1 => (0u8..6, proptest::option::of(0u8..7)).prop_map(|(k, e)| Write::Delete(k, e)),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(write_strategy(), 1..4).prop_map(Op::Txn),
        1 => any::<u8>().prop_map(Op::Compact),
        4 => (0u8..6, proptest::option::of(0u8..7), any::<u8>(), 0u8..4)
            .prop_map(|(key, end, back, limit)| Op::Read { key, end, back, limit }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let mut store = Arc::new(Store::open(Arc::clone(&engine), true).unwrap());
        let mut model = Model { snapshots: vec![BTreeMap::new(), BTreeMap::new()], compacted: -1 };
        for op in ops {
            match op {
                Op::Txn(writes) => {
                    let mut txn = store.write();
                    for w in &writes {
                        match w {
                            Write::Put(k, v) => txn.put(&key(*k), vec![*v], 0),
                            Write::Delete(k, e) => { txn.delete_range(&model_range(*k, *e)); }
                        }
                    }
                    let rev = txn.commit(None).unwrap();
                    model.apply(&writes);
                    prop_assert_eq!(rev, model.current());
                }
                Op::Compact(back) => {
                    let rev = model.current() - i64::from(back % 8);
                    match store.compact(rev) {
                        Ok(job) => {
                            prop_assert!(rev > model.compacted && rev <= model.current());
                            job.run().unwrap();
                            model.compacted = rev;
                        }
                        Err(Error::Compacted) => prop_assert!(rev <= model.compacted),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Read { key: k, end, back, limit } => {
                    let rev = model.current() - i64::from(back % 10) + 1;
                    let range = model_range(k, end);
                    let got = store.range(&range, RangeOptions { limit: limit as usize, rev, count_only: false });
                    let want = model.read(&range, rev, limit as usize);
                    match (got, want) {
                        (Ok(g), Ok((kvs, count))) => {
                            prop_assert_eq!(g.kvs, kvs);
                            prop_assert_eq!(g.count, count);
                            prop_assert_eq!(g.rev, model.current());
                        }
                        (Err(Error::FutureRev), Err("future")) | (Err(Error::Compacted), Err("compacted")) => {}
                        (g, w) => prop_assert!(false, "store {g:?} vs model {w:?} at rev {rev}"),
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = Arc::new(Store::open(Arc::clone(&engine), true).unwrap());
                    prop_assert_eq!(store.current_revision(), model.current());
                    prop_assert_eq!(store.compact_revision(), model.compacted);
                }
            }
        }
        // Finally every readable revision matches, whole keyspace.
        for rev in model.compacted.max(1)..=model.current() {
            let range = KeyRange::new(b"\0", b"\0");
            let got = store.range(&range, RangeOptions { rev, ..Default::default() }).unwrap();
            prop_assert_eq!(got.kvs, model.read(&range, rev, 0).unwrap().0);
        }
    }
}

/// A raft snapshot replaces the records wholesale ([`Store::replace_with`]):
/// a range read in progress must never find a record its index names gone.
/// Two readers list 50 keys while the records flip 100 times between two
/// histories of those keys (the second one compacted, so few records are
/// common to both): every read gets all 50.
#[test]
fn reads_racing_a_snapshot_install_never_miss_a_record() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = memory_store();
    let other = memory_store();
    for k in 0..50 {
        put(&store, &format!("k{k:02}"), "a");
        for _ in 0..3 {
            put(&other, &format!("k{k:02}"), "b");
        }
    }
    other
        .compact(other.current_revision())
        .unwrap()
        .run()
        .unwrap();
    let histories = [
        (
            dump(store.engine().as_ref(), Cf::Kv),
            dump(store.engine().as_ref(), Cf::Meta),
        ),
        (
            dump(other.engine().as_ref(), Cf::Kv),
            dump(other.engine().as_ref(), Cf::Meta),
        ),
    ];
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let all = store
                        .range(&KeyRange::new(b"k", b"l"), RangeOptions::default())
                        .unwrap();
                    assert_eq!(all.kvs.len(), 50);
                }
            });
        }
        for i in 0..100 {
            let (kv, meta) = &histories[(i + 1) % 2];
            // One write per record, as an install in batches does: the
            // lock, not one atomic write, is what readers rely on.
            store
                .replace_with(|engine| {
                    let one = |f: &dyn Fn(&mut WriteBatch)| {
                        let mut batch = WriteBatch::new();
                        f(&mut batch);
                        engine.write(batch, false)
                    };
                    for (k, _) in dump(engine, Cf::Kv) {
                        one(&|b| b.delete(Cf::Kv, k.clone()))?;
                    }
                    for (k, _) in dump(engine, Cf::Meta) {
                        one(&|b| b.delete(Cf::Meta, k.clone()))?;
                    }
                    for (k, v) in kv {
                        one(&|b| b.put(Cf::Kv, k.clone(), v.clone()))?;
                    }
                    for (k, v) in meta {
                        one(&|b| b.put(Cf::Meta, k.clone(), v.clone()))?;
                    }
                    Ok::<(), crate::mvcc::Error>(())
                })
                .unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
}
