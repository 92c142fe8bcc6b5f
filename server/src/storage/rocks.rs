//! The RocksDB [`Engine`]: one column family per [`Cf`].

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DataBlockIndexType, FlushOptions, Options,
    ReadOptions, ReadTier, WriteOptions, DB,
};

use super::{BatchOp, Cf, Engine, Error, RecordVisitor, Scan, SizeInfo, WriteBatch};

/// A RocksDB database holding every column family of [`Cf::ALL`].
pub struct RocksEngine {
    /// The open database. RocksDB does its own locking; `DB` is `Send + Sync`.
    db: DB,
    /// Where the files live, for on-disk size figures.
    path: PathBuf,
    /// The options of every point read: RocksDB's defaults, made once (the
    /// plain `get` calls build and free a C++ `ReadOptions` for each read).
    point_reads: ReadOptions,
    /// The options of [`Engine::get_persisted`]: RocksDB's persisted tier,
    /// which skips the memtables once a write has skipped the WAL.
    persisted_reads: ReadOptions,
    /// How the `kv` family's flushes fill its block cache outside
    /// [`Engine::bulk_writes`]: [`KV_PREPOPULATE`], or not at all when the
    /// family has no cache (`--experimental-kv-cache-bytes 0`).
    kv_prepopulate: &'static str,
}

impl Drop for RocksEngine {
    /// Writes out and syncs what the WAL buffer holds (see `open_with`) and
    /// flushes the memtables, which hold the replayed writes: a clean
    /// close leaves every write on stable storage, and a restart has
    /// nothing to replay.
    fn drop(&mut self) {
        if let Err(e) = self.db.flush_wal(true) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot flush the WAL at close");
        }
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, path = %self.path.display(), "cannot flush the memtables at close");
        }
    }
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish()
    }
}

fn engine_err(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

/// Whether RocksDB refused to open because another process (or this one)
/// holds the database's `LOCK` file: "While lock file: <dir>/LOCK: Resource
/// temporarily unavailable", or "lock hold by current process ... <dir>/LOCK".
fn is_lock_error(message: &str) -> bool {
    message.contains("/LOCK: ")
        && (message.contains("While lock file") || message.contains("lock hold by"))
}

/// Memtable memory shared by all column families. Each flush syncs a table
/// file of about this size, and the raft log's own fsyncs wait behind it on
/// the same disk: 32 MiB (when the raft log's entries shared it) made the
/// 100 KiB puts' p99 50-60 ms once the `kv` family had it alone, 16 MiB
/// 32-38 ms (docs/benchmarks.md, "The raft log in files of its own"); with
/// the applied records out of RocksDB's WAL, 16 MiB 65-100 ms and 8 MiB
/// 42-60, for 6-8% of the large values' throughput, the small values' rows
/// level; 4 MiB cost a third of the throughput of small puts from 1,000
/// clients ("Smaller memtable flushes").
const DB_WRITE_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The most memory the `kv` family's block cache holds: the tables of a
/// store of 1,000,000 keys of 256-byte values (~350 MB) fit, as etcd's
/// mapped bbolt file keeps such a store's pages resident (its RSS after
/// that load is ~940 MiB). With RocksDB's default (32 MiB) a read of a
/// random key of such a store missed the cache: a `pread` of its 4 KiB
/// block, a checksum and an eviction, ~25% more of the member's CPU per
/// read than among 10,000 keys (docs/benchmarks.md, "A block cache the
/// size of the data"). The cache holds only blocks that were written or
/// read, so a small store's member stays small. An operator who would
/// rather hold less memory than read a large store at the rate of a small
/// one sets another size (`--experimental-kv-cache-bytes`, through
/// [`RocksEngine::open_with_kv_cache`]); 0 is no cache at all.
pub const DEFAULT_KV_CACHE_BYTES: usize = 512 * 1024 * 1024;

/// The smallest `kv` record kept in RocksDB's blob files instead of its
/// tables: a flush would otherwise copy each large value into the block
/// cache as it writes it (one block per value), for reads that large
/// values rarely get: 1 MiB puts cost the members 30% more CPU and ran 8%
/// slower with the cache filled by flushes, level with it with the values
/// in blob files (docs/benchmarks.md, "A block cache the size of the
/// data"). Kubernetes objects (a few KiB) stay in the tables.
const KV_BLOB_MIN_BYTES: u64 = 64 * 1024;

/// Records between the restart points of a `kv` data block: each record one,
/// so the block's hash index leads a point read straight to it (the keys,
/// 17-byte revisions, are then stored whole rather than as a suffix of the
/// previous one: 3% more data).
const KV_BLOCK_RESTART_INTERVAL: i32 = 1;

/// RocksDB's default for a data block's hash index: 0.75 records per bucket.
const KV_BLOCK_HASH_RATIO: f64 = 0.75;

/// The options of column family `cf`. The `kv` family, which every read of
/// a value reads, has a block cache of its own (`kv_cache_bytes`, by
/// default [`DEFAULT_KV_CACHE_BYTES`]; none at all when 0;
/// RocksDB's HyperClock cache, whose lookups take no lock: its LRU cache of
/// the same size read slower than the default under 1,000 clients) that
/// each flush fills with the blocks it writes (`prepopulate_block_cache`),
/// so a store's records are in it from their write on, where etcd's are in
/// the page cache it reads through, rather than after a first read of each
/// block. The revision keys arrive in order, so compactions mostly move
/// files down without rewriting them, and a moved file's cached blocks stay
/// valid. Records of [`KV_BLOB_MIN_BYTES`] and more go to blob files; a
/// compaction that rewrites a table moves the live values it references out
/// of any blob file (an age cutoff of 1.0), so a blob file whose records
/// were compacted away goes as a table of them would.
fn family_options(cf: Cf, kv_cache_bytes: usize) -> Result<Options, Error> {
    let mut opts = Options::default();
    if cf != Cf::Kv {
        return Ok(opts);
    }
    let mut table = BlockBasedOptions::default();
    // A point read finds its record in a data block by the block's hash
    // index, every record a restart point of its own, instead of a scan from
    // the block's one restart point through up to a dozen records of ~300
    // bytes: a cache miss or two instead of several, once the store no
    // longer fits the CPU's caches (docs/benchmarks.md, "Records found in
    // their block by a hash").
    table.set_block_restart_interval(KV_BLOCK_RESTART_INTERVAL);
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(KV_BLOCK_HASH_RATIO);
    if kv_cache_bytes == 0 {
        table.disable_cache();
    } else {
        table.set_block_cache(&Cache::new_hyper_clock_cache(kv_cache_bytes, 0));
    }
    opts.set_block_based_table_factory(&table);
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(KV_BLOB_MIN_BYTES);
    opts.set_enable_blob_gc(true);
    opts.set_blob_gc_age_cutoff(1.0);
    // Applied over the table options above (the cache set there is kept).
    opts.get_options_from_string(format!(
        "{TABLE_FACTORY}={}",
        kv_prepopulate(kv_prepopulate_for(kv_cache_bytes))
    ))
    .map_err(engine_err)
}

/// How the `kv` family's flushes fill a cache of `kv_cache_bytes`: not at
/// all when there is none.
fn kv_prepopulate_for(kv_cache_bytes: usize) -> &'static str {
    if kv_cache_bytes == 0 {
        KV_PREPOPULATE_OFF
    } else {
        KV_PREPOPULATE
    }
}

/// The read options of every scan. A scan is one pass of the member's own
/// (its key index's rebuild at start and after an install, a snapshot's
/// build, a compaction, a hash, a watcher's catch-up, an install's
/// deletes): it leaves the block cache to the blocks flushes wrote and
/// clients read. The rebuild's pass over a million keys put the whole
/// store in the `kv` family's cache (docs/benchmarks.md, "A catch-up that
/// leaves the cache alone").
fn one_pass_reads() -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.fill_cache(false);
    opts
}

/// How the `kv` family's flushes fill its block cache, outside
/// [`Engine::bulk_writes`]: with every block they write.
const KV_PREPOPULATE: &str = "kFlushOnly";

/// Flushes that leave the `kv` family's block cache alone.
const KV_PREPOPULATE_OFF: &str = "kDisable";

/// RocksDB's name of a family's table options in an options string.
const TABLE_FACTORY: &str = "block_based_table_factory";

/// The [`TABLE_FACTORY`] options string that sets the `kv` family's
/// `prepopulate_block_cache` (rust-rocksdb has no setter for it) to
/// `value`, leaving its other table options as they are.
fn kv_prepopulate(value: &str) -> String {
    format!("{{prepopulate_block_cache={value}}}")
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`, its `kv` family's
    /// block cache of [`DEFAULT_KV_CACHE_BYTES`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with_kv_cache(path, DEFAULT_KV_CACHE_BYTES)
    }

    /// [`RocksEngine::open`] with a `kv` block cache of at most
    /// `kv_cache_bytes` (0: none; every read of a record not in a memtable
    /// then reads its block from the file).
    pub fn open_with_kv_cache(path: &Path, kv_cache_bytes: usize) -> Result<Self, Error> {
        std::fs::create_dir_all(path).map_err(|source| Error::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_with(path, true, kv_cache_bytes)
    }

    /// Opens the existing database in `path`, creating no directory or
    /// database (the offline tools must not turn a wrong path into a new
    /// empty member). `Ok(None)` when `path` holds no database with every
    /// column family of [`Cf::FIRST_LAYOUT`]; a database written before
    /// [`Cf::RaftState`] gets that family, empty. Fails with
    /// [`Error::InUse`] while a running member holds it.
    pub fn open_existing(path: &Path) -> Result<Option<Self>, Error> {
        if !path.join("CURRENT").is_file() {
            return Ok(None);
        }
        // Read from the MANIFEST without opening (or locking) the database.
        let Ok(names) = DB::list_cf(&Options::default(), path) else {
            return Ok(None);
        };
        if !Cf::FIRST_LAYOUT
            .iter()
            .all(|cf| names.iter().any(|n| n == cf.name()))
        {
            return Ok(None);
        }
        Self::open_with(path, false, DEFAULT_KV_CACHE_BYTES).map(Some)
    }

    fn open_with(path: &Path, create: bool, kv_cache_bytes: usize) -> Result<Self, Error> {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        // Families added after a database was written are created empty
        // (the callers checked that it is a Cairn database).
        opts.create_missing_column_families(true);
        // Fail loudly on checksum mismatches instead of returning bad data.
        opts.set_paranoid_checks(true);
        // One memtable budget for all column families (RocksDB's default is
        // 64 MiB per family, ×2 while one flushes): a write burst grew a
        // member by ~60 MiB of memtables (docs/benchmarks.md).
        opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
        // An unsynced write stays in RocksDB's WAL buffer until a synced
        // write, a `sync`, a memtable switch, a full buffer or the close,
        // instead of a `write` system call of its own (every applied entry
        // was one before applies skipped the WAL: 3.2 per put from 1,000
        // clients over three members, docs/benchmarks.md). Nothing is lost
        // that a crash did not already risk: a crash keeps a prefix of
        // these writes in their order, as a power failure did before.
        opts.set_manual_wal_flush(true);
        // Every family's memtables are flushed together, at one point in
        // the writes' order: the replayed writes (no WAL) that a crash
        // keeps are then a prefix of them across families (an applied
        // entry's records and its applied index, always together).
        // RocksDB's own flushes (a full budget, a manual compaction) take
        // every family; a manual flush takes the families it is given, so
        // `persist` gives them all and nothing flushes one alone.
        opts.set_atomic_flush(true);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| {
                let opts = family_options(*cf, kv_cache_bytes)?;
                Ok(ColumnFamilyDescriptor::new(cf.name(), opts))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let message = e.into_string();
            if is_lock_error(&message) {
                Error::InUse(path.to_path_buf())
            } else {
                Error::Engine(message)
            }
        })?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            point_reads: ReadOptions::default(),
            persisted_reads: {
                let mut opts = ReadOptions::default();
                opts.set_read_tier(ReadTier::Persisted);
                opts
            },
            kv_prepopulate: kv_prepopulate_for(kv_cache_bytes),
        })
    }

    /// `batch` as RocksDB's batch. Sized up front: grown as it fills,
    /// RocksDB's batch copies what it holds at each step (for a large value,
    /// most of a put's copies; perf: `basic_string::_M_mutate` under
    /// `WriteBatch::Put`). Each operation is dropped once copied, so a
    /// batch of the whole state (a snapshot's install) is not held twice
    /// before RocksDB's memtable takes a third copy.
    fn rocks_batch(&self, batch: WriteBatch) -> Result<rocksdb::WriteBatch, Error> {
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(batch_bytes(&batch));
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.handle(cf)?, key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.handle(cf)?, key),
            }
        }
        Ok(wb)
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, Error> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| Error::Engine(format!("column family {} is missing", cf.name())))
    }

    /// True while RocksDB flushes or compacts, or has compactions queued:
    /// a benchmark that reads waits for this to clear, so that the
    /// background's CPU and the table layout it is changing do not land in
    /// its figures.
    pub fn background_busy(&self) -> bool {
        [
            "rocksdb.num-running-flushes",
            "rocksdb.num-running-compactions",
            "rocksdb.compaction-pending",
            "rocksdb.mem-table-flush-pending",
        ]
        .iter()
        .any(|name| self.property_sum(name) > 0)
    }

    fn property_sum(&self, name: &str) -> u64 {
        Cf::ALL
            .iter()
            .filter_map(|cf| self.handle(*cf).ok())
            .filter_map(|h| self.db.property_int_value_cf(h, name).ok().flatten())
            .sum()
    }
}

/// The size of `batch` in RocksDB's batch format, rounded up: a 12-byte
/// header, and per operation a tag, the family's id, the lengths (varints)
/// and the bytes.
fn batch_bytes(batch: &WriteBatch) -> usize {
    const HEADER: usize = 12;
    const PER_OP: usize = 1 + 5 + 5 + 5;
    batch.ops.iter().fold(HEADER, |bytes, op| {
        bytes
            + PER_OP
            + match op {
                BatchOp::Put { key, value, .. } => key.len() + value.len(),
                BatchOp::Delete { key, .. } => key.len(),
            }
    })
}

/// Hands `visit` the records from where `iter` stands up to `end`
/// (exclusive; `None` = to the end); [`Scan::Stop`] if the visitor stopped
/// it. The raw iterator lends each record's bytes: no copy per record (the
/// start-up rebuild of the key index and a snapshot read every record).
fn visit_until(
    mut iter: rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    end: Option<&[u8]>,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
) -> Result<Scan, Error> {
    let mut answer = Scan::Continue;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if end.is_some_and(|end| key >= end) {
            break;
        }
        answer = visit(key, value);
        if answer == Scan::Stop {
            break;
        }
        iter.next();
    }
    // An iterator that ends on an error (I/O, a checksum) says so here.
    iter.status().map_err(engine_err)?;
    Ok(answer)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db
            .get_cf_opt(self.handle(cf)?, key, &self.point_reads)
            .map_err(engine_err)
    }

    fn get_many(
        &self,
        cf: Cf,
        keys: &[Vec<u8>],
        visit: &mut dyn FnMut(usize, Option<&[u8]>) -> Scan,
    ) -> Result<(), Error> {
        // One key (a single-key range, the commonest read): RocksDB's Get,
        // which skips MultiGet's batching (1.3 of 3.4 us per read from the
        // block cache, `examples/point_reads.rs`). Pinned, not copied.
        if let [key] = keys {
            let value = self
                .db
                .get_pinned_cf_opt(self.handle(cf)?, key, &self.point_reads)
                .map_err(engine_err)?;
            visit(0, value.as_deref());
            return Ok(());
        }
        // Sorted keys are looked up in one pass; each value is pinned in
        // the block cache (or memtable), lent to the visitor, not copied.
        let sorted = keys.is_sorted();
        let values =
            self.db
                .batched_multi_get_cf_opt(self.handle(cf)?, keys, sorted, &self.point_reads);
        for (i, value) in values.into_iter().enumerate() {
            if visit(i, value.map_err(engine_err)?.as_deref()) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.handle(cf)?, one_pass_reads());
        iter.seek(start);
        visit_until(iter, end, visit).map(|_| ())
    }

    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error> {
        let handles = cfs
            .iter()
            .map(|&cf| Ok((cf, self.handle(cf)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        // A RocksDB snapshot pins one sequence number for every family.
        let snapshot = self.db.snapshot();
        fixed();
        for (cf, handle) in handles {
            let mut iter = snapshot.raw_iterator_cf_opt(handle, one_pass_reads());
            iter.seek_to_first();
            if visit_until(iter, None, &mut |k, v| visit(cf, k, v))? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        let wb = self.rocks_batch(batch)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(engine_err)
    }

    fn sync(&self) -> Result<(), Error> {
        // The WAL buffer written out and the WAL synced: every write so far
        // (see `open_with`'s manual WAL flush).
        self.db.flush_wal(true).map_err(engine_err)
    }

    fn write_replayed(&self, batch: WriteBatch) -> Result<(), Error> {
        let wb = self.rocks_batch(batch)?;
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(wb, &opts).map_err(engine_err)
    }

    fn get_persisted(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db
            .get_cf_opt(self.handle(cf)?, key, &self.persisted_reads)
            .map_err(engine_err)
    }

    fn bulk_writes(&self, on: bool) -> Result<(), Error> {
        let prepopulate = if on {
            KV_PREPOPULATE_OFF
        } else {
            self.kv_prepopulate
        };
        let value = kv_prepopulate(prepopulate);
        self.db
            .set_options_cf(self.handle(Cf::Kv)?, &[(TABLE_FACTORY, &value)])
            .map_err(engine_err)
    }

    fn persist(&self) -> Result<(), Error> {
        // One atomic flush of every family (see `open_with`), waited for:
        // its table files are synced before RocksDB records them.
        let handles = Cf::ALL
            .iter()
            .map(|cf| self.handle(*cf))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&handles, &opts).map_err(engine_err)
    }

    fn size(&self) -> SizeInfo {
        let total = dir_size(&self.path);
        // Memtables count at their allocated size, which can exceed what is on
        // disk for a small database; "in use" is never more than the total.
        let in_use = self.property_sum("rocksdb.estimate-live-data-size")
            + self.property_sum("rocksdb.cur-size-all-mem-tables");
        SizeInfo {
            total,
            in_use: in_use.min(total),
        }
    }

    fn defragment(&self) -> Result<(), Error> {
        for cf in Cf::ALL {
            self.db
                .compact_range_cf(self.handle(cf)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
}
