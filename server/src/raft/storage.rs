//! [`RaftStorage`]: raft's log and state on the [`Engine`].

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use ::raft::{GetEntriesContext, RaftState, Storage, NO_LIMIT};
use protobuf::Message;

use super::entry_cache::{EntryCache, CACHE_BYTES};
use super::keys::{self, LogId};
use super::Error;
use crate::storage::{try_scan, Cf, Engine, Scan, WriteBatch};

/// The raft log, hard state and conf state of one member, in column
/// families `raft` (the entries) and `raft_state` (the rest) of an
/// [`Engine`] (record layout in `keys`).
///
/// Behaves as raft-rs's `MemStorage` (the tests run the same cases against
/// both), with three deliberate differences: what `MemStorage` answers with a
/// panic (a gap in an append, compacting past the end, reading past the end)
/// is an error here; `term(first_index - 1)` still answers after a
/// compaction, as the `Storage` trait documents (`MemStorage` only keeps the
/// term of its last snapshot); and `snapshot()` answers
/// `SnapshotTemporarilyUnavailable` instead of a snapshot older than the
/// requested index.
///
/// Writers take `&self` (raft's `RawNode` hands out only `&Storage`) and hold
/// the bounds' write lock across the engine write, so readers never see
/// bounds that disagree with the disk, and a failed write changes nothing.
pub struct RaftStorage {
    /// Where the records live; the same engine as the MVCC store, so every
    /// byte of the member goes through one WAL (and one encryption layer).
    engine: Arc<dyn Engine>,
    /// The log's bounds, cached so `first_index`/`last_index` (called by raft
    /// on every step) never touch the disk.
    bounds: RwLock<Bounds>,
    /// The log's newest entries, so raft's reads of what it just appended
    /// skip RocksDB and the unseal. Changed under the bounds' write lock,
    /// after the engine write; taken after the bounds' lock, never before.
    cache: Mutex<EntryCache>,
    /// etcd's WAL metrics (fsync durations, bytes written); none in unit
    /// tests.
    metrics: std::sync::OnceLock<crate::metrics::disk::WalMetrics>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStorage")
            .field("bounds", &*self.read())
            .finish_non_exhaustive()
    }
}

/// Where the log starts and ends.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The last entry removed from the log (by compaction or a snapshot): the
    /// log starts at `truncated.index + 1`, and raft matches the next append
    /// against its term (`term(first_index - 1)`).
    truncated: LogId,
    /// The last applied snapshot's position: `MemStorage` answers `term()`
    /// for it even after later compactions, so this storage does too.
    snapshot: LogId,
    /// Index of the last entry; `truncated.index` when the log is empty.
    last_index: u64,
}

impl Bounds {
    fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }
}

impl RaftStorage {
    /// Opens the raft state stored in `engine` (an empty log on a new engine).
    ///
    /// Scans the entry keys once to find the last index, and fails on a hole
    /// in the log (a missing entry is corruption, not something to skip).
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, Error> {
        move_state_out_of_the_log(engine.as_ref())?;
        let truncated = match engine.get(Cf::RaftState, keys::TRUNCATED)? {
            Some(v) => LogId::decode(keys::TRUNCATED, &v)?,
            None => LogId::default(),
        };
        let snapshot = match engine.get(Cf::RaftState, keys::SNAPSHOT)? {
            Some(v) => {
                let meta: SnapshotMetadata = keys::decode(keys::SNAPSHOT, &v)?;
                LogId {
                    index: meta.index,
                    term: meta.term,
                }
            }
            None => LogId::default(),
        };
        let mut last_index = truncated.index;
        let start = keys::entry_key(truncated.index + 1);
        try_scan::<Error>(
            engine.as_ref(),
            Cf::Raft,
            &start,
            Some(keys::ENTRIES_END),
            |k, _| {
                let index = keys::entry_index(k)?;
                if index != last_index + 1 {
                    return Err(keys::corrupt(
                        k,
                        format!("log has a hole: entry {} is missing", last_index + 1),
                    ));
                }
                last_index = index;
                Ok(Scan::Continue)
            },
        )?;
        Ok(Self {
            engine,
            bounds: RwLock::new(Bounds {
                truncated,
                snapshot,
                last_index,
            }),
            cache: Mutex::new(EntryCache::new(CACHE_BYTES)),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Reports this log's writes in `metrics` from now on (set once the
    /// member's id, which labels its metrics, is known).
    pub fn set_metrics(&self, metrics: crate::metrics::disk::WalMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Persists `entries` and `hard_state` in ONE atomic write (synced when
    /// `sync`): the new entries, the removal of every old entry after them
    /// (the conflicting suffix they replace), and the hard state.
    ///
    /// The first entry may overwrite any index from `first_index()` to
    /// `last_index() + 1`; the entries must be consecutive.
    pub fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), Error> {
        let mut bounds = self.write();
        let mut batch = WriteBatch::new();
        let mut written = 0usize;
        let mut last_index = bounds.last_index;
        if let Some(first) = entries.first() {
            if first.index < bounds.first_index() {
                return Err(Error::OverwriteCompacted {
                    index: first.index,
                    first_index: bounds.first_index(),
                });
            }
            if first.index > bounds.last_index + 1 {
                return Err(Error::NotContiguous {
                    expected: bounds.last_index + 1,
                    got: first.index,
                });
            }
            for (expected, entry) in (first.index..).zip(entries) {
                if entry.index != expected {
                    return Err(Error::NotContiguous {
                        expected,
                        got: entry.index,
                    });
                }
                let record = keys::encode("entry", entry)?;
                written += record.len();
                batch.put(Cf::Raft, keys::entry_key(entry.index), record);
                last_index = entry.index;
            }
            for stale in last_index + 1..=bounds.last_index {
                batch.delete(Cf::Raft, keys::entry_key(stale));
            }
        }
        if let Some(hs) = hard_state {
            let record = keys::encode("hard state", hs)?;
            written += record.len();
            batch.put(Cf::RaftState, keys::HARD_STATE, record);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let start = std::time::Instant::now();
        self.engine.write(batch, sync)?;
        if let Some(m) = self.metrics.get() {
            // A synced append is the WAL's fsync: its whole duration, as
            // etcd times `fsync` after writing.
            if sync {
                m.fsync.observe(crate::metrics::since(start));
            }
            m.write_bytes.add(written as f64);
        }
        bounds.last_index = last_index;
        self.cache().append(entries);
        Ok(())
    }

    /// Removes the entries before `to` (`first_index()` becomes `to`), keeping
    /// the term of the last removed one so `term(to - 1)` still answers.
    /// Compacting at or below `first_index()` does nothing; `to` may be at
    /// most `last_index() + 1` (which empties the log).
    ///
    /// Not synced: after a crash the compaction is either whole or absent,
    /// and an absent one only keeps entries longer.
    pub fn compact(&self, to: u64) -> Result<(), Error> {
        let mut bounds = self.write();
        if to <= bounds.first_index() {
            return Ok(());
        }
        if to > bounds.last_index + 1 {
            return Err(Error::CompactBeyondLast {
                to,
                last_index: bounds.last_index,
            });
        }
        let truncated = LogId {
            index: to - 1,
            term: self.term_at(&bounds, to - 1)?,
        };
        let mut batch = WriteBatch::new();
        for index in bounds.first_index()..to {
            batch.delete(Cf::Raft, keys::entry_key(index));
        }
        batch.put(Cf::RaftState, keys::TRUNCATED, truncated.encode());
        self.engine.write(batch, false)?;
        bounds.truncated = truncated;
        self.cache().compact(to);
        Ok(())
    }

    /// The first index of the newest entries that hold more than `bytes`
    /// (among at most `max_entries` cached ones): the entries before it are
    /// older than that. `None` when the cache cannot tell.
    pub fn newest_start(&self, bytes: u64, max_entries: usize) -> Option<u64> {
        self.cache().newest_start(bytes, max_entries)
    }

    /// Resets the log to the snapshot described by `meta` (synced, one
    /// write): every entry is removed, the log continues after `meta.index`,
    /// the conf state becomes the snapshot's and the hard state commits
    /// `meta.index` (its term raised to the snapshot's if lower), as
    /// `MemStorage::apply_snapshot`. The snapshot's data is the state
    /// machine's business, not this log's.
    pub fn apply_snapshot(&self, meta: &SnapshotMetadata) -> Result<(), Error> {
        let mut bounds = self.write();
        if bounds.first_index() > meta.index {
            return Err(Error::SnapshotOutOfDate);
        }
        let mut hard_state = self.hard_state()?;
        hard_state.term = hard_state.term.max(meta.term);
        hard_state.commit = meta.index;
        let position = LogId {
            index: meta.index,
            term: meta.term,
        };
        let mut batch = WriteBatch::new();
        for index in bounds.first_index()..=bounds.last_index {
            batch.delete(Cf::Raft, keys::entry_key(index));
        }
        batch.put(
            Cf::RaftState,
            keys::SNAPSHOT,
            keys::encode("snapshot", meta)?,
        );
        batch.put(Cf::RaftState, keys::TRUNCATED, position.encode());
        batch.put(
            Cf::RaftState,
            keys::HARD_STATE,
            keys::encode("hard state", &hard_state)?,
        );
        batch.put(
            Cf::RaftState,
            keys::CONF_STATE,
            keys::encode("conf state", meta.get_conf_state())?,
        );
        self.engine.write(batch, true)?;
        self.cache().clear();
        *bounds = Bounds {
            truncated: position,
            snapshot: position,
            last_index: meta.index,
        };
        Ok(())
    }

    /// Persists the conf state (synced), after a conf change is applied or to
    /// bootstrap a new cluster.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), Error> {
        let _bounds = self.write();
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::RaftState,
            keys::CONF_STATE,
            keys::encode("conf state", conf_state)?,
        );
        self.engine.write(batch, true)?;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Bounds> {
        // Bounds are only assigned after a successful write, in one
        // statement that cannot panic: a poisoned lock still holds good bounds.
        crate::locks::read(&self.bounds)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Bounds> {
        crate::locks::write(&self.bounds)
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        // A panic in the middle of a change may have left the cache
        // inconsistent: empty it, and the disk answers.
        self.cache.lock().unwrap_or_else(|e| {
            let mut cache = e.into_inner();
            cache.clear();
            self.cache.clear_poison();
            cache
        })
    }

    /// Reads a raft message record, `M::default()` when absent.
    fn record<M: Message + Default>(&self, key: &[u8]) -> Result<M, Error> {
        match self.engine.get(Cf::RaftState, key)? {
            Some(v) => keys::decode(key, &v),
            None => Ok(M::default()),
        }
    }

    fn hard_state(&self) -> Result<HardState, Error> {
        self.record(keys::HARD_STATE)
    }

    /// The entry at `index`, which the bounds say is in the log.
    fn stored_entry(&self, index: u64) -> Result<Entry, Error> {
        let key = keys::entry_key(index);
        let value = self
            .engine
            .get(Cf::Raft, &key)?
            .ok_or_else(|| keys::corrupt(&key, "entry missing from the log".into()))?;
        let entry: Entry = keys::decode(&key, &value)?;
        if entry.index != index {
            return Err(keys::corrupt(
                &key,
                format!("holds the entry of index {}", entry.index),
            ));
        }
        Ok(entry)
    }

    fn stored_term(&self, index: u64) -> Result<u64, Error> {
        Ok(self.stored_entry(index)?.term)
    }

    fn term_at(&self, bounds: &Bounds, index: u64) -> Result<u64, Error> {
        if index == bounds.snapshot.index {
            return Ok(bounds.snapshot.term);
        }
        if index == bounds.truncated.index {
            return Ok(bounds.truncated.term);
        }
        if index < bounds.first_index() {
            return Err(Error::Compacted);
        }
        if index > bounds.last_index {
            return Err(Error::Unavailable);
        }
        if let Some(term) = self.cache().term(index) {
            return Ok(term);
        }
        self.stored_term(index)
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, Error> {
        let bounds = self.read();
        if low < bounds.first_index() {
            return Err(Error::Compacted);
        }
        if high > bounds.last_index + 1 || low > high {
            return Err(Error::Unavailable);
        }
        // As raft's `limit_size`: the first entry always, then entries while
        // the total stays within `max_size`.
        let limit = match max_size {
            None | Some(NO_LIMIT) => u64::MAX,
            Some(max) => max,
        };
        if let Some(cached) = self.cache().entries(low, high, limit) {
            return Ok(cached);
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut limited = false;
        let (start, end) = (keys::entry_key(low), keys::entry_key(high));
        try_scan::<Error>(
            self.engine.as_ref(),
            Cf::Raft,
            &start,
            Some(&end),
            |k, v| {
                let expected = low + out.len() as u64;
                let index = keys::entry_index(k)?;
                let entry: Entry = keys::decode(k, v)?;
                if index != expected || entry.index != index {
                    return Err(keys::corrupt(
                        k,
                        format!("expected entry {expected}, found {}", entry.index),
                    ));
                }
                size = size.saturating_add(u64::from(entry.compute_size()));
                if !out.is_empty() && size > limit {
                    limited = true;
                    return Ok(Scan::Stop);
                }
                out.push(entry);
                Ok(Scan::Continue)
            },
        )?;
        let wanted = high - low;
        if !limited && (out.len() as u64) < wanted {
            let missing = low + out.len() as u64;
            return Err(keys::corrupt(
                &keys::entry_key(missing),
                "entry missing from the log".into(),
            ));
        }
        Ok(out)
    }

    fn build_snapshot(&self, request_index: u64) -> Result<Snapshot, Error> {
        let bounds = self.read();
        let hard_state = self.hard_state()?;
        let commit = hard_state.commit;
        if commit < request_index {
            // Raft asks again later; a snapshot older than it asked for is
            // useless to the follower (MemStorage relabels it instead).
            return Err(Error::SnapshotTemporarilyUnavailable);
        }
        if commit < bounds.snapshot.index {
            return Err(keys::corrupt(
                keys::HARD_STATE,
                format!(
                    "commit {commit} is before the applied snapshot {}",
                    bounds.snapshot.index
                ),
            ));
        }
        let term = self.term_at(&bounds, commit)?;
        let conf_state: ConfState = self.record(keys::CONF_STATE)?;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = commit;
        meta.term = term;
        meta.set_conf_state(conf_state);
        Ok(snapshot)
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        let hard_state = self.hard_state()?;
        let conf_state = self.record(keys::CONF_STATE)?;
        Ok(RaftState::new(hard_state, conf_state))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        // Entries are always read synchronously, so the context (which lets a
        // storage fetch asynchronously) is not needed.
        Ok(self.read_entries(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        let bounds = self.read();
        Ok(self.term_at(&bounds, idx)?)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        Ok(self.read().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> ::raft::Result<Snapshot> {
        Ok(self.build_snapshot(request_index)?)
    }
}

/// Moves raft's state records out of the entries' family, where databases
/// written before [`Cf::RaftState`] hold them, in one synced write: a crash
/// leaves them all in one family or all in the other, and the next open
/// finishes. Nothing to do (one read per record) once moved.
fn move_state_out_of_the_log(engine: &dyn Engine) -> Result<(), Error> {
    let mut batch = WriteBatch::new();
    for key in keys::STATE_KEYS {
        if let Some(value) = engine.get(Cf::Raft, key)? {
            batch.put(Cf::RaftState, key, value);
            batch.delete(Cf::Raft, key);
        }
    }
    if !batch.is_empty() {
        engine.write(batch, true)?;
        tracing::info!("raft state moved to column family raft_state");
    }
    Ok(())
}
