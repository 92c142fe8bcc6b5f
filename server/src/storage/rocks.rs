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
#[path = "rocks_tests.rs"]
mod tests;
