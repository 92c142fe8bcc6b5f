//! [`RaftStorage`]: raft's log and state, in the log's own files
//! ([`LogFiles`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use ::raft::{GetEntriesContext, RaftState, Storage, NO_LIMIT};
use protobuf::Message;

use super::entry_cache::{EntryCache, CACHE_BYTES};
use super::keys::{self, LogId};
use super::log_files::{LogFiles, LogWrite};
use super::Error;
use crate::storage::crypto::SealedElsewhere;
use crate::storage::Engine;

/// The raft log, hard state and conf state of one member, in the log's
/// own files ([`LogFiles`]; records as `keys` lays them out), their
/// entries sealed by the member's [`Engine`].
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
/// the bounds' write lock across the files' write, so readers never see
/// bounds that disagree with the disk, and a failed write changes nothing.
pub struct RaftStorage {
    /// Where the records live.
    files: LogFiles,
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
    /// Opens the raft log in `dir` (an empty log in a new directory), whose
    /// entries `engine` seals and which moves the log of a data directory
    /// from before out of `engine` (see [`LogFiles`]).
    ///
    /// Fails when the entries held do not continue the compaction point
    /// (a missing entry is corruption, not something to skip).
    pub fn open(engine: Arc<dyn Engine>, dir: &std::path::Path) -> Result<Self, Error> {
        let files = LogFiles::open(dir, engine)?;
        let truncated = match files.state(keys::TRUNCATED) {
            Some(v) => LogId::decode(keys::TRUNCATED, &v)?,
            None => LogId::default(),
        };
        let snapshot = match files.state(keys::SNAPSHOT) {
            Some(v) => {
                let meta: SnapshotMetadata = keys::decode(keys::SNAPSHOT, &v)?;
                LogId {
                    index: meta.index,
                    term: meta.term,
                }
            }
            None => LogId::default(),
        };
        let last_index = match files.span() {
            // The compaction point is written in the same write as the
            // compaction, so the entries held continue it; none held (or
            // none past it, after a snapshot) and the log is empty.
            Some((first, last)) if last > truncated.index => {
                if first > truncated.index + 1 {
                    return Err(keys::corrupt(
                        &keys::entry_key(truncated.index + 1),
                        format!(
                            "log has a hole: entries {} to {} are missing",
                            truncated.index + 1,
                            first - 1
                        ),
                    ));
                }
                last
            }
            _ => truncated.index,
        };
        Ok(Self {
            files,
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
        let mut write = LogWrite::default();
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
                last_index = entry.index;
            }
            // The files replace every held entry from the first one's index
            // on: the conflicting suffix goes in the same write.
            write.append(&self.files, entries)?;
        }
        if let Some(hs) = hard_state {
            write.put_state(keys::HARD_STATE, keys::encode("hard state", hs)?)?;
        }
        let start = std::time::Instant::now();
        let written = self.files.write(&mut write, sync)?;
        if written == 0 {
            return Ok(());
        }
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
    /// Syncs the state machine's engine first: the entries removed are ones
    /// a restart no longer replays (the caller compacts only entries whose
    /// applies are durable, `StateMachine::durable_applied_index`; the
    /// sync covers its other writes). The compaction itself is not synced:
    /// after a crash it is either whole or absent, and an absent one only
    /// keeps entries longer.
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
        self.files.sync_state()?;
        let mut write = LogWrite::default();
        write.compact(to);
        write.put_state(keys::TRUNCATED, truncated.encode())?;
        self.files.write(&mut write, false)?;
        bounds.truncated = truncated;
        self.cache().compact(to);
        self.files.purge()
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
    /// machine's business, not this log's: it is synced first (see
    /// [`LogFiles`]).
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
        self.files.sync_state()?;
        let mut write = LogWrite::default();
        write.clean();
        write.put_state(keys::SNAPSHOT, keys::encode("snapshot", meta)?)?;
        write.put_state(keys::TRUNCATED, position.encode())?;
        write.put_state(keys::HARD_STATE, keys::encode("hard state", &hard_state)?)?;
        write.put_state(
            keys::CONF_STATE,
            keys::encode("conf state", meta.get_conf_state())?,
        )?;
        self.files.write(&mut write, true)?;
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
        let mut write = LogWrite::default();
        write.put_state(keys::CONF_STATE, keys::encode("conf state", conf_state)?)?;
        self.files.write(&mut write, true)?;
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
        match self.files.state(key) {
            Some(v) => keys::decode(key, &v),
            None => Ok(M::default()),
        }
    }

    fn hard_state(&self) -> Result<HardState, Error> {
        self.record(keys::HARD_STATE)
    }

    fn stored_term(&self, index: u64) -> Result<u64, Error> {
        self.files.term(index)?.ok_or_else(|| {
            keys::corrupt(&keys::entry_key(index), "entry missing from the log".into())
        })
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
        self.files.entries(low, high, limit)
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

/// Key rotation reaches the entries through this: they are sealed with the
/// engine's data keys but live in the log's files.
impl SealedElsewhere for RaftStorage {
    fn reseal(&self, active: u32) -> Result<usize, crate::storage::Error> {
        let bounds = self.write();
        let resealed = (|| {
            let sealed_with = self.files.sealed_with()?;
            let other = sealed_with.iter().filter(|(id, _)| **id != active);
            let Some(from) = other.map(|(_, first)| *first).min() else {
                return Ok(0);
            };
            // Rewritten from the first such entry to the end: an append
            // replaces every held entry from its first index on.
            let entries = self.files.entries(from, bounds.last_index + 1, u64::MAX)?;
            let mut write = LogWrite::default();
            write.append(&self.files, &entries)?;
            self.files.write(&mut write, true)?;
            Ok::<_, Error>(entries.len())
        })();
        resealed.map_err(|e| crate::storage::Error::Engine(e.to_string()))
    }

    fn key_ids(&self) -> Result<BTreeSet<u32>, crate::storage::Error> {
        // Under the bounds' lock, which every append seals under.
        let _bounds = self.read();
        self.files
            .sealed_with()
            .map(|ids| ids.into_keys().collect())
            .map_err(|e| crate::storage::Error::Engine(e.to_string()))
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
