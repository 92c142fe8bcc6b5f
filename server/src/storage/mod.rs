//! The storage-engine boundary.
//!
//! Every byte of the state machine goes through [`Engine`]: the MVCC store's
//! revision records, its metadata, leases, auth. Keeping the boundary this
//! small is deliberate: the encryption-at-rest layer wraps an `Engine` and
//! seals every value in one place, and tests run the whole store on
//! [`MemoryEngine`] without touching the disk. The raft log lives in files of
//! its own (`crate::raft::RaftStorage`), its entries sealed by the same layer
//! ([`Engine::seal_raw`]).
//!
//! Writes are atomic batches ([`WriteBatch`]): the MVCC store puts the records
//! of one transaction and the applied index that produced them in the same
//! batch, so a crash never applies an entry twice or loses half of one.

pub mod crypto;
#[cfg(test)]
pub(crate) mod flaky;
mod memory;
pub mod parallel;
mod rocks;

use std::borrow::Cow;

pub use crypto::SealedEngine;
pub use memory::MemoryEngine;
pub use rocks::{RocksEngine, DEFAULT_KV_CACHE_BYTES};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying engine failed (I/O error, corruption detected by RocksDB, ...).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A sealed record failed authentication (flipped bits, truncation, a
    /// record moved from elsewhere) or its data key is missing: nothing read
    /// from it is returned.
    #[error("storage: corrupt sealed record: {0}")]
    Tampered(String),
    /// Sealing failed (no randomness, a data key used up).
    #[error("storage: sealing: {0}")]
    Sealing(String),
    /// The master key does not open this database's data keys.
    #[error("the encryption master key does not match this data directory (wrong --encryption-key-file?); nothing was changed")]
    WrongMasterKey,
    /// Another process (a running member) holds the database open.
    #[error("storage: the database {} is in use by another process", .0.display())]
    InUse(std::path::PathBuf),
    /// The data directory could not be prepared.
    #[error("storage: data directory {path}: {source}")]
    DataDir {
        /// The directory that failed.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A column family: one independent, ordered key space of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// MVCC records: revision bytes -> encoded `mvccpb.KeyValue`.
    Kv,
    /// Small named values: applied index, compaction progress, member identity.
    Meta,
    /// Leases: lease id -> encoded lease record (TTL, checkpointed remaining TTL).
    Lease,
    /// Where the raft log's entries (prefix + index, big-endian) lived
    /// before the log moved to files of its own: empty once
    /// `RaftStorage::open` has moved them. Its name is also the associated
    /// data the entries are sealed with in those files.
    Raft,
    /// The auth store (users with their password hashes, roles, the enabled
    /// flag and revision) as one record under one opaque key: sealed at
    /// rest like user data, and no user or role name in a record key.
    Auth,
    /// Where raft's own state (hard state, conf state, snapshot metadata,
    /// compaction point) lived before the log moved to files of its own:
    /// empty once `RaftStorage::open` has moved it. Absent from databases
    /// written before it: created on open.
    RaftState,
}

impl Cf {
    /// Every column family, in a fixed order (used when opening the engine).
    pub const ALL: [Cf; 6] = [
        Cf::Kv,
        Cf::Meta,
        Cf::Lease,
        Cf::Raft,
        Cf::Auth,
        Cf::RaftState,
    ];

    /// The column families every Cairn database has held since its first
    /// layout ([`Cf::RaftState`] came later).
    pub const FIRST_LAYOUT: [Cf; 5] = [Cf::Kv, Cf::Meta, Cf::Lease, Cf::Raft, Cf::Auth];

    /// The column family's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Kv => "kv",
            Cf::Meta => "meta",
            Cf::Lease => "lease",
            Cf::Raft => "raft",
            Cf::Auth => "auth",
            Cf::RaftState => "raft_state",
        }
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value` in `cf`.
    Put {
        /// Column family.
        cf: Cf,
        /// Record key.
        key: Vec<u8>,
        /// Record value.
        value: Vec<u8>,
    },
    /// Remove `key` from `cf` (absent keys are fine).
    Delete {
        /// Column family.
        cf: Cf,
        /// Record key.
        key: Vec<u8>,
    },
}

/// A set of writes applied atomically: after a crash either all or none are visible.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// The operations, applied in order (a later op on the same key wins).
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// What [`Engine::scan`]'s visitor answers after each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Go on with the next record.
    Continue,
    /// Stop the scan here.
    Stop,
}

/// The visitor of [`Engine::scan_point_in_time`]: each record with its
/// column family, until it answers [`Scan::Stop`].
pub type RecordVisitor<'a> = dyn FnMut(Cf, &[u8], &[u8]) -> Scan + 'a;

/// Size figures reported by `Status` (etcd's dbSize / dbSizeInUse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeInfo {
    /// Bytes the engine occupies on disk (or in memory).
    pub total: u64,
    /// Bytes holding live data, as estimated by the engine.
    pub in_use: u64,
}

/// A durable, ordered key-value engine with column families and atomic batches.
pub trait Engine: Send + Sync + 'static {
    /// Reads one record.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Reads the records at `keys`: hands `visit` each key's position in
    /// `keys` and its value (None: no such record), in the order of `keys`,
    /// until the visitor answers [`Scan::Stop`]. Keys in ascending order
    /// let an engine find them all in one pass (RocksDB's batched
    /// MultiGet), and lend each value without copying it.
    fn get_many(
        &self,
        cf: Cf,
        keys: &[Vec<u8>],
        visit: &mut dyn FnMut(usize, Option<&[u8]>) -> Scan,
    ) -> Result<(), Error> {
        for (i, key) in keys.iter().enumerate() {
            if visit(i, self.get(cf, key)?.as_deref()) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    /// Visits records of `cf` in key order, from `start` (inclusive) up to `end`
    /// (exclusive; `None` = to the end), until the visitor answers [`Scan::Stop`].
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error>;

    /// [`Engine::scan`], but each value as stored underneath any sealing:
    /// [`Engine::open_raw`] turns it into what `scan` gives. Lets a caller
    /// open values on other threads ([`parallel::scan_map`]).
    fn scan_raw(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        self.scan(cf, start, end, visit)
    }

    /// What [`Engine::scan`] gives for the value `raw` that
    /// [`Engine::scan_raw`] gave under `key` (the same bytes where nothing
    /// is sealed).
    fn open_raw<'a>(&self, cf: Cf, key: &[u8], raw: &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
        let _ = (cf, key);
        Ok(Cow::Borrowed(raw))
    }

    /// Visits every record of each of `cfs` (families in the order given,
    /// each in key order) as they all stood at one point in time: writes
    /// after it are not seen, however long the visit takes. Calls `fixed`
    /// once that point is taken and before the first record, so a caller
    /// that holds writers back to choose the point can let them go on
    /// while it reads (a snapshot for a member that is behind, built off
    /// the raft thread).
    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error>;

    /// Applies `batch` atomically; with `sync`, it is on stable storage before
    /// this returns, and so is every such write before it. Without, it may
    /// reach the disk only with a later synced write or the engine's close:
    /// a crash keeps a prefix of these writes, in the order they were made.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error>;

    /// Puts every [`Engine::write`] made so far on stable storage, as a
    /// synced write would (not the [`Engine::write_replayed`] ones: see
    /// [`Engine::persist`]).
    fn sync(&self) -> Result<(), Error>;

    /// Applies `batch` atomically, for records that something else replays
    /// after a crash (the state machine's applied entries: the raft log).
    /// Such writes reach stable storage only when the engine persists its
    /// memory: by itself as its memory fills, at [`Engine::persist`] or at
    /// the close. A crash keeps them up to the last such point, a prefix
    /// in the order they were made, and [`Engine::get_persisted`] tells
    /// how far. They skip the engine's own log (RocksDB's WAL), whose pass
    /// over every applied value was a third of what a member wrote
    /// (docs/benchmarks.md, "Applied records without RocksDB's WAL").
    ///
    /// A [`Engine::write`] that a crash keeps must not depend on one of
    /// these that it may lose: whatever reads the replayed records and
    /// writes from them (a compaction, a re-seal) writes replayed too.
    fn write_replayed(&self, batch: WriteBatch) -> Result<(), Error> {
        self.write(batch, false)
    }

    /// [`Engine::get`] of what a crash now would keep: without the
    /// [`Engine::write_replayed`] writes not yet persisted.
    fn get_persisted(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.get(cf, key)
    }

    /// Puts every write made so far on stable storage, the replayed ones
    /// included (for RocksDB a flush of every memtable to table files):
    /// for rare events, such as a bootstrap or dropping an old data key.
    fn persist(&self) -> Result<(), Error> {
        self.sync()
    }

    /// Marks the writes that follow, up to `bulk_writes(false)`, as a whole
    /// state written at once (a snapshot's install). Its records are not
    /// the ones clients were reading, so an engine whose flushes fill a
    /// cache (RocksDB's `kv` family) leaves the cache alone meanwhile: a
    /// follower that installed a million keys held them all there beside
    /// the snapshot (docs/benchmarks.md, "A catch-up that leaves the cache
    /// alone").
    fn bulk_writes(&self, on: bool) -> Result<(), Error> {
        let _ = on;
        Ok(())
    }

    /// `value` sealed as [`Engine::write`] would store it under `key` in
    /// `cf`, for a record kept outside the engine (the raft log's files):
    /// [`Engine::open_raw`] opens it. The same bytes where nothing is
    /// sealed.
    fn seal_raw(&self, cf: Cf, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, Error> {
        let _ = (cf, key);
        Ok(value)
    }

    /// Size on disk and in use.
    fn size(&self) -> SizeInfo;

    /// Reclaims space left by deleted records (etcd's defragment).
    fn defragment(&self) -> Result<(), Error>;
}

/// [`Engine::scan`] with a visitor that can fail: the first error stops the
/// scan and is returned (engine errors convert into the caller's error type).
pub fn try_scan<E: From<Error>>(
    engine: &dyn Engine,
    cf: Cf,
    start: &[u8],
    end: Option<&[u8]>,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<Scan, E>,
) -> Result<(), E> {
    let mut failure = None;
    engine.scan(cf, start, end, &mut |k, v| match visit(k, v) {
        Ok(next) => next,
        Err(e) => {
            failure = Some(e);
            Scan::Stop
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// [`Engine::get_many`] with a visitor that can fail, as [`try_scan`].
pub fn try_get_many<E: From<Error>>(
    engine: &dyn Engine,
    cf: Cf,
    keys: &[Vec<u8>],
    mut visit: impl FnMut(usize, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E> {
    let mut failure = None;
    engine.get_many(cf, keys, &mut |i, v| match visit(i, v) {
        Ok(()) => Scan::Continue,
        Err(e) => {
            failure = Some(e);
            Scan::Stop
        }
    })?;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One behaviour test run against every engine, so that the memory engine
    //! used by unit tests cannot drift from RocksDB.
    use super::*;

    pub fn check(engine: &dyn Engine) {
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"b".to_vec(), b"2".to_vec());
        b.put(Cf::Kv, b"a".to_vec(), b"1".to_vec());
        b.put(Cf::Kv, b"c".to_vec(), b"3".to_vec());
        b.put(Cf::Meta, b"a".to_vec(), b"meta".to_vec());
        b.delete(Cf::Kv, b"c".to_vec());
        engine.write(b, true).unwrap();

        assert_eq!(engine.get(Cf::Kv, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(Cf::Kv, b"c").unwrap(), None);
        assert_eq!(engine.get(Cf::Meta, b"a").unwrap(), Some(b"meta".to_vec()));
        assert_eq!(engine.get(Cf::Meta, b"b").unwrap(), None);

        let collect = |start: &[u8], end: Option<&[u8]>, limit: usize| {
            let mut out = Vec::new();
            engine
                .scan(Cf::Kv, start, end, &mut |k, _| {
                    out.push(k.to_vec());
                    if out.len() == limit {
                        Scan::Stop
                    } else {
                        Scan::Continue
                    }
                })
                .unwrap();
            out
        };
        assert_eq!(collect(b"", None, 10), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(collect(b"b", None, 10), vec![b"b".to_vec()]);
        assert_eq!(collect(b"", Some(b"b"), 10), vec![b"a".to_vec()]);
        assert_eq!(collect(b"", None, 1), vec![b"a".to_vec()]);

        // get_many: each key's value or None, by position, whatever the
        // keys' order; a Stop ends it.
        let many = |keys: &[&[u8]], limit: usize| {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            let mut out = Vec::new();
            engine
                .get_many(Cf::Kv, &keys, &mut |i, v| {
                    out.push((i, v.map(<[u8]>::to_vec)));
                    if out.len() == limit {
                        Scan::Stop
                    } else {
                        Scan::Continue
                    }
                })
                .unwrap();
            out
        };
        let (one, two) = (Some(b"1".to_vec()), Some(b"2".to_vec()));
        assert_eq!(
            many(&[b"a", b"b", b"c"], 10),
            vec![(0, one.clone()), (1, two.clone()), (2, None)]
        );
        assert_eq!(
            many(&[b"c", b"b", b"a"], 10),
            vec![(0, None), (1, two.clone()), (2, one.clone())]
        );
        assert_eq!(many(&[b"a", b"b"], 1), vec![(0, one.clone())]);
        assert_eq!(many(&[], 10), vec![]);
        // One key (RocksDB reads it by Get, not MultiGet): the same answers.
        assert_eq!(many(&[b"b"], 10), vec![(0, two)]);
        assert_eq!(many(&[b"c"], 10), vec![(0, None)]);
        assert_eq!(many(&[b"a"], 1), vec![(0, one)]);
        engine.defragment().unwrap();
        assert_eq!(engine.get(Cf::Kv, b"b").unwrap(), Some(b"2".to_vec()));

        // A point-in-time scan sees nothing written after its point, in
        // any family, and visits the families in the order asked.
        let mut seen = Vec::new();
        engine
            .scan_point_in_time(
                &[Cf::Meta, Cf::Kv],
                &mut || {
                    let mut late = WriteBatch::new();
                    late.put(Cf::Kv, b"aa".to_vec(), b"late".to_vec());
                    late.delete(Cf::Kv, b"b".to_vec());
                    late.put(Cf::Meta, b"z".to_vec(), b"late".to_vec());
                    engine.write(late, false).unwrap();
                },
                &mut |cf, k, v| {
                    // Not the sealing layer's own records (its keys).
                    if !k.starts_with(b"enc/") {
                        seen.push((cf, k.to_vec(), v.to_vec()));
                    }
                    Scan::Continue
                },
            )
            .unwrap();
        let record = |cf, k: &[u8], v: &[u8]| (cf, k.to_vec(), v.to_vec());
        assert_eq!(
            seen,
            vec![
                record(Cf::Meta, b"a", b"meta"),
                record(Cf::Kv, b"a", b"1"),
                record(Cf::Kv, b"b", b"2"),
            ]
        );
        assert_eq!(engine.get(Cf::Kv, b"aa").unwrap(), Some(b"late".to_vec()));
        // A Stop ends it.
        let mut visits = 0;
        engine
            .scan_point_in_time(&[Cf::Kv, Cf::Meta], &mut || {}, &mut |_, _, _| {
                visits += 1;
                Scan::Stop
            })
            .unwrap();
        assert_eq!(visits, 1);

        // A replayed write reads as any other (sealed the same, where the
        // engine seals); once persisted, a read of what a crash keeps has
        // it too.
        let mut replayed = WriteBatch::new();
        replayed.put(Cf::Kv, b"r".to_vec(), b"replayed".to_vec());
        replayed.put(Cf::Meta, b"r".to_vec(), b"7".to_vec());
        engine.write_replayed(replayed).unwrap();
        assert_eq!(
            engine.get(Cf::Kv, b"r").unwrap(),
            Some(b"replayed".to_vec())
        );
        engine.persist().unwrap();
        assert_eq!(
            engine.get_persisted(Cf::Kv, b"r").unwrap(),
            Some(b"replayed".to_vec())
        );
        assert_eq!(
            engine.get_persisted(Cf::Meta, b"r").unwrap(),
            Some(b"7".to_vec())
        );
        assert_eq!(engine.get_persisted(Cf::Meta, b"none").unwrap(), None);
    }
}
