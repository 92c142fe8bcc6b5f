#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::storage::flaky::{dump, FlakyEngine};
use crate::storage::MemoryEngine;

/// Snapshot data of `records` (cf name, key, value).
fn data(records: &[(&str, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (cf, key, value) in records {
        SnapshotRecord {
            cf: cf.to_string(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
        .encode_length_delimited(&mut out)
        .unwrap();
    }
    out
}

/// The `kv` record (record key, encoded `KeyValue`) of the `i`th key's
/// put of `value`, at revision `i + 2`.
fn kv_record(i: u8, value: &str) -> (Vec<u8>, Vec<u8>) {
    let rev = i64::from(i) + 2;
    let kv = cairn_proto::mvccpb::KeyValue {
        key: vec![b'k', i],
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        value: value.as_bytes().to_vec(),
        lease: 0,
    };
    (
        crate::mvcc::Revision::new(rev, 0).record_key(false),
        kv.encode_to_vec(),
    )
}

fn put(engine: &dyn Engine, cf: Cf, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(cf, key, value);
    engine.write(batch, false).unwrap();
}

/// An old state: records the snapshot has, replaces and lacks, and this
/// member's own `meta` records.
fn old_state(engine: &dyn Engine) {
    for i in 0..40u8 {
        let (key, value) = kv_record(i, "old");
        put(engine, Cf::Kv, &key, &value);
    }
    put(engine, Cf::Lease, b"l-old", b"lease");
    put(engine, Cf::Auth, b"auth", b"old auth");
    put(engine, Cf::Meta, b"applied", b"old");
    put(engine, Cf::Meta, b"member_id", b"mine");
    put(engine, Cf::Meta, b"enc/1", b"my key");
}

/// The new state: kv keys overlapping the old ones and past them.
fn new_state() -> Vec<u8> {
    let mut records: Vec<(String, Vec<u8>, Vec<u8>)> = (20..70u8)
        .map(|i| {
            let (key, value) = kv_record(i, &format!("new {i}"));
            ("kv".into(), key, value)
        })
        .collect();
    records.push(("lease".into(), b"l-new".to_vec(), b"lease".to_vec()));
    records.push(("meta".into(), b"applied".to_vec(), b"new".to_vec()));
    records.push(("auth".into(), b"auth".to_vec(), b"new auth".to_vec()));
    // Another member's own records, which a snapshot never carries: a
    // crafted one that does changes none of this member's.
    records.push(("meta".into(), b"member_id".to_vec(), b"theirs".to_vec()));
    records.push(("meta".into(), b"enc/1".to_vec(), b"their key".to_vec()));
    records.push(("meta".into(), MARKER.to_vec(), vec![0; 16]));
    let borrowed: Vec<(&str, &[u8], &[u8])> = records
        .iter()
        .map(|(cf, k, v)| (cf.as_str(), &k[..], &v[..]))
        .collect();
    data(&borrowed)
}

/// What an engine holds after [`new_state`] was installed over [`old_state`].
fn check_new_state(engine: &dyn Engine) {
    let kv = dump(engine, Cf::Kv);
    let expected: Vec<_> = (20..70u8)
        .map(|i| kv_record(i, &format!("new {i}")))
        .collect();
    assert_eq!(kv, expected);
    assert_eq!(
        dump(engine, Cf::Lease),
        vec![(b"l-new".to_vec(), b"lease".to_vec())]
    );
    assert_eq!(
        dump(engine, Cf::Auth),
        vec![(b"auth".to_vec(), b"new auth".to_vec())]
    );
    assert_eq!(
        dump(engine, Cf::Meta),
        vec![
            (b"applied".to_vec(), b"new".to_vec()),
            (b"enc/1".to_vec(), b"my key".to_vec()),
            (b"member_id".to_vec(), b"mine".to_vec()),
        ]
    );
}

#[test]
fn a_state_written_in_small_batches_is_the_whole_state() {
    // batch_bytes 1: every record its own write; and all in one.
    for (batch_bytes, writes_at_least) in [(1, 50), (BATCH_BYTES, 1)] {
        let engine = FlakyEngine::default();
        old_state(&engine);
        engine.take_writes();
        let mut last = WriteBatch::new();
        last.delete(Cf::Meta, MARKER);
        write_state(&engine, &new_state(), batch_bytes, last).unwrap();
        check_new_state(&engine);
        let writes = engine.take_writes();
        assert!(writes.len() >= writes_at_least, "{} writes", writes.len());
        // Every write of the install marked as bulk, and the mark off again.
        assert_eq!(engine.bulk(), (false, writes.len()));
        // The state's writes skip the WAL and are persisted; then the
        // marker's end alone, synced.
        assert_eq!(engine.replayed(), writes.len() - 1);
        assert!(engine.syncs() >= 1);
        let synced: Vec<bool> = writes.iter().map(|(_, sync)| *sync).collect();
        assert_eq!(synced.iter().filter(|s| **s).count(), 1);
        assert_eq!(synced.last(), Some(&true));
        let (last, _) = writes.last().unwrap();
        assert!(matches!(
            &last.ops[..],
            [crate::storage::BatchOp::Delete { cf: Cf::Meta, key }] if key == MARKER
        ));
    }
}

#[test]
fn bad_data_is_found_by_the_check() {
    let good = new_state();
    assert_eq!(check(&good).unwrap().0, 56);
    assert_eq!(check(&[]).unwrap().0, 0);
    let (k1, v1) = kv_record(1, "1");
    let (k2, v2) = kv_record(2, "2");
    let unknown_cf = data(&[("kv", &k1, &v1), ("raft", b"k", b"")]);
    let truncated = &good[..good.len() - 3];
    for bad in [&[0xff][..], &unknown_cf, truncated] {
        assert!(matches!(check(bad), Err(Error::Corrupt { .. })));
    }
    // `kv` records the key index could not be built from, in the order
    // the engine keeps them: refused before anything is written.
    for bad in [
        data(&[("kv", &k2, &v2), ("kv", &k1, &v1)]),
        data(&[("kv", b"a", b"1")]),
        data(&[("kv", &k1, &[0xff])]),
    ] {
        assert!(matches!(
            check(&bad),
            Err(Error::Mvcc(crate::mvcc::Error::Corrupt { .. }))
        ));
    }
    // Checked while staged: bad data leaves no file; good data a file and
    // the marker to put.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    for bad in [&[0xff][..], &unknown_cf, truncated] {
        let refused = check_and_stage(bad, Some((&path, None)));
        assert!(matches!(refused, Err(Error::Corrupt { .. })));
        assert!(!path.exists());
    }
    let checked = check_and_stage(&good, Some((&path, None))).unwrap();
    assert_eq!(checked.records, 56);
    let value = marker_value(&checked.marker.unwrap());
    assert_eq!(read_staged(&path, &value, &[]).unwrap(), good);
    let checked = check_and_stage(&good, None).unwrap();
    assert_eq!((checked.records, checked.marker.is_none()), (56, true));
}

#[test]
fn staged_data_reads_back_sealed_or_plain_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let key = MasterKey::from_bytes([7; 32]);
    let other = MasterKey::from_bytes([8; 32]);
    // Three chunks, the last one short; and nothing at all.
    let big: Vec<u8> = (0..2 * CHUNK_BYTES + 5).map(|i| i as u8).collect();
    for data in [big, Vec::new()] {
        for master in [Some(&key), None] {
            let marker = stage(&path, &data, master).unwrap();
            let value = marker_value(&marker);
            assert_eq!(read_staged(&path, &value, &keys(master)).unwrap(), data);
            let on_disk = std::fs::read(&path).unwrap();
            if master.is_some() && !data.is_empty() {
                // Sealed: none of the data's bytes in the clear.
                assert!(!on_disk.windows(64).any(|w| w == &data[1000..1064]));
                assert!(read_staged(&path, &value, &[&other]).is_err());
                // The master key replaced at this start still opens it.
                assert_eq!(read_staged(&path, &value, &[&other, &key]).unwrap(), data);
                assert!(read_staged(&path, &value, &[]).is_err());
            } else if master.is_none() {
                assert!(read_staged(&path, &value, &[&key]).is_err());
            }
            // A marker that says otherwise, a short file, a longer file.
            let mut wrong = value.clone();
            wrong[15] ^= 1;
            assert!(read_staged(&path, &wrong, &keys(master)).is_err());
            // Lengths from a damaged disk are refused before anything is
            // allocated for them: a marker naming more than the file holds,
            // a chunk length past any staged chunk's.
            let mut huge = value.clone();
            huge[8..].copy_from_slice(&u64::MAX.to_be_bytes());
            let err = read_staged(&path, &huge, &keys(master)).unwrap_err();
            assert!(err.to_string().contains("more data than the file"), "{err}");
            if !data.is_empty() {
                let at = MAGIC.len() + 1 + if master.is_some() { WRAPPED_LEN } else { 0 };
                let mut long_chunk = on_disk.clone();
                long_chunk[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
                std::fs::write(&path, &long_chunk).unwrap();
                let err = read_staged(&path, &value, &keys(master)).unwrap_err();
                assert!(err.to_string().contains("longer than any staged"), "{err}");
                std::fs::write(&path, &on_disk).unwrap();
            }
            assert!(read_staged(&path, &value[..8], &keys(master)).is_err());
            std::fs::write(&path, &on_disk[..on_disk.len() - 1]).unwrap();
            assert!(read_staged(&path, &value, &keys(master)).is_err());
            let mut longer = on_disk.clone();
            longer.push(0);
            std::fs::write(&path, &longer).unwrap();
            assert!(read_staged(&path, &value, &keys(master)).is_err());
            // A chunk's byte flipped fails its seal (sealed) or the check.
            if master.is_some() && !data.is_empty() {
                let mut flipped = on_disk.clone();
                let at = flipped.len() - 20;
                flipped[at] ^= 1;
                std::fs::write(&path, &flipped).unwrap();
                assert!(read_staged(&path, &value, &keys(master)).is_err());
            }
        }
    }
}

/// The master keys of a member that seals with `master`, if any.
fn keys(master: Option<&MasterKey>) -> Vec<&MasterKey> {
    master.into_iter().collect()
}

/// The value a marker batch puts.
fn marker_value(batch: &WriteBatch) -> Vec<u8> {
    match batch.ops.as_slice() {
        [crate::storage::BatchOp::Put {
            cf: Cf::Meta,
            key,
            value,
        }] if key == MARKER => value.clone(),
        other => panic!("not a marker: {other:?}"),
    }
}

#[test]
fn an_install_cut_short_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let master = MasterKey::from_bytes([3; 32]);
    let new = new_state();
    // Phase 1: staged, marked, then the writes fail half-way.
    let engine = FlakyEngine::default();
    old_state(&engine);
    let marker = stage(&path, &new, Some(&master)).unwrap();
    engine.write(marker, true).unwrap();
    let mut deletes = WriteBatch::new();
    for i in 0..30u8 {
        deletes.delete(Cf::Kv, kv_record(i, "").0);
    }
    engine.write(deletes, false).unwrap();
    let (key, value) = kv_record(20, "new 20");
    put(&engine, Cf::Kv, &key, &value);
    engine.set_failing(true);
    assert!(write_state(&engine, &new, 1, WriteBatch::new()).is_err());
    // A failed install turns the bulk mark off too.
    assert!(!engine.bulk().0);
    engine.set_failing(false);
    // Phase 2: the next start finishes it and removes the file.
    assert!(finish_interrupted(&engine, &path, &[&master]).unwrap());
    check_new_state(&engine);
    assert_eq!(engine.get(Cf::Meta, MARKER).unwrap(), None);
    assert!(!path.exists());
    // Phase 3: the start after that has nothing to do.
    assert!(!finish_interrupted(&engine, &path, &[&master]).unwrap());
    check_new_state(&engine);
}

#[test]
fn a_crash_before_the_state_is_persisted_keeps_the_marker_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let db = dir.path().join("db");
    let new = new_state();
    // Phase 1: staged and marked (synced), then the install's batches
    // written, which skip the WAL, and the crash before their persist.
    let engine = crate::storage::RocksEngine::open(&db).unwrap();
    old_state(&engine);
    let marker = stage(&path, &new, None).unwrap();
    engine.write(marker, true).unwrap();
    replace_records(&engine, &new, 1).unwrap();
    let image = dir.path().join("crashed");
    crate::storage::flaky::crash_image(&db, &image);
    drop(engine);
    // Phase 2: the crash's image still has the marker, and the start
    // finishes the install from the staged file.
    let crashed = crate::storage::RocksEngine::open(&image).unwrap();
    assert!(unfinished(&crashed).unwrap());
    assert!(finish_interrupted(&crashed, &path, &[]).unwrap());
    check_new_state(&crashed);
    assert!(!unfinished(&crashed).unwrap());
}

#[test]
fn a_staged_file_without_a_marker_is_removed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let engine = MemoryEngine::new();
    old_state(&engine);
    let before = dump(&engine, Cf::Kv);
    // Staged, but the crash came before the marker.
    stage(&path, &new_state(), None).unwrap();
    assert!(!finish_interrupted(&engine, &path, &[]).unwrap());
    assert!(!path.exists());
    assert_eq!(dump(&engine, Cf::Kv), before);
    // A marker whose file is gone stops the start with an error.
    put(&engine, Cf::Meta, MARKER, &[0; 16]);
    let err = finish_interrupted(&engine, &path, &[]).unwrap_err();
    assert!(matches!(err, Error::Staging { .. }), "{err}");
    assert_eq!(dump(&engine, Cf::Kv), before);
}
