//! The RocksDB engine's own tests (the conformance suite every engine
//! passes, and what only RocksDB has: its families' options, caches,
//! blob files, crash and reopen).

use super::*;

#[test]
fn a_batch_is_sized_for_all_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Cf::Kv, vec![1; 300], vec![2; 200_000]);
    batch.delete(Cf::Raft, vec![3; 20]);
    batch.put(Cf::RaftState, b"k".to_vec(), Vec::new());
    let reserved = batch_bytes(&batch);
    let wb = engine.rocks_batch(batch).unwrap();
    assert!(
        reserved >= wb.size_in_bytes(),
        "{reserved} < {}",
        wb.size_in_bytes()
    );
    assert!(reserved < wb.size_in_bytes() + 64);
}

#[test]
fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    super::super::conformance::check(&engine);
}

#[test]
fn open_existing_creates_nothing_and_sees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    assert!(RocksEngine::open_existing(&path).unwrap().is_none());
    assert!(!path.exists(), "open_existing created the directory");
    // A RocksDB without Cairn's column families is not Cairn's.
    {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        drop(DB::open(&opts, &path).unwrap());
    }
    assert!(RocksEngine::open_existing(&path).unwrap().is_none());
    std::fs::remove_dir_all(&path).unwrap();
    let engine = RocksEngine::open(&path).unwrap();
    match RocksEngine::open_existing(&path) {
        Err(Error::InUse(p)) => assert_eq!(p, path),
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(engine);
    assert!(RocksEngine::open_existing(&path).unwrap().is_some());
}

#[test]
fn a_database_of_the_first_layout_opens_with_the_later_families() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = Cf::FIRST_LAYOUT.map(|cf| cf.name());
        let db = DB::open_cf(&opts, &path, cfs).unwrap();
        let raft = db.cf_handle(Cf::Raft.name()).unwrap();
        db.put_cf(raft, b"s/hard_state", b"old").unwrap();
    }
    let engine = RocksEngine::open_existing(&path).unwrap().unwrap();
    assert_eq!(
        engine.get(Cf::Raft, b"s/hard_state").unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(engine.get(Cf::RaftState, b"s/hard_state").unwrap(), None);
    let mut b = WriteBatch::new();
    b.put(Cf::RaftState, b"s/hard_state".to_vec(), b"new".to_vec());
    engine.write(b, true).unwrap();
    drop(engine);
    let engine = RocksEngine::open(&path).unwrap();
    assert_eq!(
        engine.get(Cf::RaftState, b"s/hard_state").unwrap(),
        Some(b"new".to_vec())
    );
}

fn put(engine: &RocksEngine, key: &[u8], sync: bool) {
    let mut b = WriteBatch::new();
    b.put(Cf::Kv, key.to_vec(), b"v".to_vec());
    engine.write(b, sync).unwrap();
}

#[test]
fn a_crash_keeps_the_writes_up_to_the_last_synced_one_and_a_close_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let engine = RocksEngine::open(&path).unwrap();
    put(&engine, b"unsynced before", false);
    put(&engine, b"synced", true);
    put(&engine, b"unsynced after", false);
    let image = dir.path().join("image");
    crate::storage::flaky::crash_image(&path, &image);
    let crashed = RocksEngine::open(&image).unwrap();
    assert!(crashed.get(Cf::Kv, b"unsynced before").unwrap().is_some());
    assert!(crashed.get(Cf::Kv, b"synced").unwrap().is_some());
    // Still in the WAL buffer: lost, as the tail a power failure loses.
    assert_eq!(crashed.get(Cf::Kv, b"unsynced after").unwrap(), None);
    drop(engine);
    let reopened = RocksEngine::open(&path).unwrap();
    assert!(reopened.get(Cf::Kv, b"unsynced after").unwrap().is_some());
}

#[test]
fn a_crash_keeps_the_replayed_writes_up_to_the_last_persist_in_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let engine = RocksEngine::open(&path).unwrap();
    // As an applied entry writes: its record and the applied index.
    let apply = |n: u8| {
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, vec![b'k', n], b"v".to_vec());
        b.put(Cf::Meta, b"applied".to_vec(), vec![n]);
        engine.write_replayed(b).unwrap();
    };
    apply(1);
    assert_eq!(engine.get_persisted(Cf::Meta, b"applied").unwrap(), None);
    engine.persist().unwrap();
    apply(2);
    // A synced write does not take the replayed ones before it along.
    put(&engine, b"synced", true);
    assert_eq!(engine.get(Cf::Meta, b"applied").unwrap(), Some(vec![2]));
    assert_eq!(
        engine.get_persisted(Cf::Meta, b"applied").unwrap(),
        Some(vec![1])
    );

    let image = dir.path().join("image");
    crate::storage::flaky::crash_image(&path, &image);
    let crashed = RocksEngine::open(&image).unwrap();
    assert_eq!(crashed.get(Cf::Meta, b"applied").unwrap(), Some(vec![1]));
    assert!(crashed.get(Cf::Kv, b"k\x01").unwrap().is_some());
    assert_eq!(crashed.get(Cf::Kv, b"k\x02").unwrap(), None);
    assert!(crashed.get(Cf::Kv, b"synced").unwrap().is_some());

    // A clean close persists them.
    drop(engine);
    let reopened = RocksEngine::open(&path).unwrap();
    assert_eq!(reopened.get(Cf::Meta, b"applied").unwrap(), Some(vec![2]));
    assert!(reopened.get(Cf::Kv, b"k\x02").unwrap().is_some());
}

/// Writes 1,000 `kv` records of 256 bytes, keys `from` on, as applies
/// write them (replayed), and flushes them to a table file.
fn write_flushed_kv(engine: &RocksEngine, from: u32) {
    let mut b = WriteBatch::new();
    for i in from..from + 1_000 {
        b.put(Cf::Kv, i.to_be_bytes().to_vec(), vec![7; 256]);
    }
    engine.write_replayed(b).unwrap();
    engine.persist().unwrap();
}

/// RocksDB's integer property `name` of family `cf`.
fn family_property(engine: &RocksEngine, cf: Cf, name: &str) -> u64 {
    let handle = engine.db.cf_handle(cf.name()).unwrap();
    engine
        .db
        .property_int_value_cf(&handle, name)
        .unwrap()
        .unwrap()
}

#[test]
fn a_flush_fills_the_kv_familys_own_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let property = |cf, name| family_property(&engine, cf, name);
    assert_eq!(
        property(Cf::Kv, "rocksdb.block-cache-capacity"),
        DEFAULT_KV_CACHE_BYTES as u64
    );
    // The cache's own table is charged to it from the start.
    let empty = property(Cf::Kv, "rocksdb.block-cache-usage");
    let meta_empty = property(Cf::Meta, "rocksdb.block-cache-usage");
    let mut b = WriteBatch::new();
    for i in 0u32..1_000 {
        b.put(Cf::Kv, i.to_be_bytes().to_vec(), vec![7; 256]);
        b.put(Cf::Meta, i.to_be_bytes().to_vec(), vec![7; 256]);
    }
    engine.write_replayed(b).unwrap();
    engine.persist().unwrap();
    // Nothing was read: the flush put the ~260 KB of blocks it wrote in
    // the cache. The other families keep RocksDB's default cache,
    // which a flush does not fill.
    let cached = property(Cf::Kv, "rocksdb.block-cache-usage") - empty;
    assert!(cached > 256_000, "{cached}");
    assert_eq!(property(Cf::Meta, "rocksdb.block-cache-usage"), meta_empty);
    assert_eq!(
        engine.get(Cf::Kv, &7u32.to_be_bytes()).unwrap(),
        Some(vec![7; 256])
    );
}

/// The table options RocksDB persisted for family `cf` (its newest
/// OPTIONS file's `[TableOptions/BlockBasedTable "<cf>"]` section).
fn persisted_table_options(dir: &Path, cf: Cf) -> Vec<String> {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("OPTIONS-"))
        .max_by_key(|name| name["OPTIONS-".len()..].parse::<u64>().unwrap())
        .unwrap();
    let text = std::fs::read_to_string(dir.join(newest)).unwrap();
    let header = format!("[TableOptions/BlockBasedTable \"{}\"]", cf.name());
    text.lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .map(|line| line.trim().to_string())
        .collect()
}

#[test]
fn kv_blocks_find_a_record_by_their_hash_and_read_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let kv = persisted_table_options(dir.path(), Cf::Kv);
    for option in [
        "data_block_index_type=kDataBlockBinaryAndHash",
        "block_restart_interval=1",
        "data_block_hash_table_util_ratio=0.750000",
    ] {
        assert!(kv.iter().any(|o| o == option), "{option} not in {kv:?}");
    }
    // The other families keep RocksDB's defaults.
    let meta = persisted_table_options(dir.path(), Cf::Meta);
    assert!(meta
        .iter()
        .any(|o| o == "data_block_index_type=kDataBlockBinarySearch"));
    // Every other key in a table file: each written one found, each
    // one between them (in a block's hash or not) absent, and a scan
    // sees them in order.
    let mut b = WriteBatch::new();
    for i in (0u32..4_000).step_by(2) {
        b.put(Cf::Kv, i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec());
    }
    engine.write_replayed(b).unwrap();
    engine.persist().unwrap();
    for i in 0u32..4_000 {
        let want = (i % 2 == 0).then(|| i.to_le_bytes().to_vec());
        assert_eq!(
            engine.get(Cf::Kv, &i.to_be_bytes()).unwrap(),
            want,
            "key {i}"
        );
    }
    let mut seen = Vec::new();
    engine
        .scan(Cf::Kv, &[], None, &mut |key, _| {
            seen.push(u32::from_be_bytes(key.try_into().unwrap()));
            Scan::Continue
        })
        .unwrap();
    assert_eq!(seen, (0u32..4_000).step_by(2).collect::<Vec<_>>());
}

#[test]
fn the_kv_familys_cache_has_the_size_asked_for_or_is_not_there() {
    // Phase 1: a smaller cache than the default, filled by flushes as
    // the default one is.
    let dir = tempfile::tempdir().unwrap();
    let small = RocksEngine::open_with_kv_cache(dir.path(), 64 << 20).unwrap();
    let property = |name| family_property(&small, Cf::Kv, name);
    assert_eq!(property("rocksdb.block-cache-capacity"), 64 << 20);
    let empty = property("rocksdb.block-cache-usage");
    write_flushed_kv(&small, 0);
    let cached = property("rocksdb.block-cache-usage") - empty;
    assert!(cached > 256_000, "{cached}");
    // Phase 2: no cache: nothing to size, the flushed records read
    // from their file, and an install's bulk writes turned on and off.
    let dir = tempfile::tempdir().unwrap();
    let none = RocksEngine::open_with_kv_cache(dir.path(), 0).unwrap();
    let handle = none.handle(Cf::Kv).unwrap();
    let capacity = none
        .db
        .property_int_value_cf(&handle, "rocksdb.block-cache-capacity")
        .unwrap();
    assert_eq!(capacity, None);
    none.bulk_writes(true).unwrap();
    none.bulk_writes(false).unwrap();
    write_flushed_kv(&none, 0);
    assert_eq!(
        family_property(&none, Cf::Kv, "rocksdb.num-entries-active-mem-table"),
        0
    );
    assert_eq!(
        none.get(Cf::Kv, &7u32.to_be_bytes()).unwrap(),
        Some(vec![7; 256])
    );
}

#[test]
fn bulk_writes_and_scans_leave_the_kv_familys_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let property = |name| family_property(&engine, Cf::Kv, name);
    let usage = || property("rocksdb.block-cache-usage");
    let empty = usage();
    // Phase 1: an install's flush and a scan of what it wrote cache
    // nothing.
    engine.bulk_writes(true).unwrap();
    write_flushed_kv(&engine, 0);
    let mut scanned = 0;
    engine
        .scan(Cf::Kv, &[], None, &mut |_, _| {
            scanned += 1;
            Scan::Continue
        })
        .unwrap();
    assert_eq!(scanned, 1_000);
    assert!(usage() - empty < 16_000, "{}", usage() - empty);
    // Phase 2: back to flushes that fill it, the same cache.
    engine.bulk_writes(false).unwrap();
    write_flushed_kv(&engine, 1_000);
    let after_flush = usage();
    assert!(after_flush - empty > 256_000, "{}", after_flush - empty);
    assert_eq!(
        property("rocksdb.block-cache-capacity"),
        DEFAULT_KV_CACHE_BYTES as u64
    );
    // Phase 3: a client's read of a bulk-written record caches its block.
    assert_eq!(
        engine.get(Cf::Kv, &7u32.to_be_bytes()).unwrap(),
        Some(vec![7; 256])
    );
    assert!(usage() > after_flush);
}

#[test]
fn large_records_go_to_blob_files_not_the_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let property = |name| family_property(&engine, Cf::Kv, name);
    let large = KV_BLOB_MIN_BYTES as usize;
    let empty = property("rocksdb.block-cache-usage");
    let mut b = WriteBatch::new();
    for i in 0u8..8 {
        b.put(Cf::Kv, vec![b'l', i], vec![i; large]);
    }
    b.put(Cf::Kv, b"small".to_vec(), vec![1; 100]);
    engine.write_replayed(b).unwrap();
    engine.persist().unwrap();
    assert!(property("rocksdb.total-blob-file-size") >= 8 * large as u64);
    // The flush cached the table's block (the small record and the
    // large ones' references), not the 512 KiB of values.
    let cached = property("rocksdb.block-cache-usage") - empty;
    assert!(cached > 0 && cached < large as u64, "{cached}");
    for i in 0u8..8 {
        assert_eq!(
            engine.get(Cf::Kv, &[b'l', i]).unwrap(),
            Some(vec![i; large])
        );
    }
    // Deleted large records' space goes once a compaction rewrites the
    // table that referenced them.
    let mut b = WriteBatch::new();
    for i in 0u8..8 {
        b.delete(Cf::Kv, vec![b'l', i]);
    }
    engine.write_replayed(b).unwrap();
    engine.persist().unwrap();
    engine.defragment().unwrap();
    assert_eq!(property("rocksdb.total-blob-file-size"), 0);
    assert_eq!(engine.get(Cf::Kv, b"small").unwrap(), Some(vec![1; 100]));
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = RocksEngine::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"k".to_vec(), b"v".to_vec());
        engine.write(b, true).unwrap();
    }
    let engine = RocksEngine::open(dir.path()).unwrap();
    assert_eq!(engine.get(Cf::Kv, b"k").unwrap(), Some(b"v".to_vec()));
    assert!(engine.size().total > 0);
}
