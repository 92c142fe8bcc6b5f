//! [`LogFiles`]: the raft log's entries and raft's own state in append-only
//! files of their own (tikv's raft-engine), apart from the state
//! machine's RocksDB.
//!
//! Why not RocksDB, where they lived before: there each entry went through
//! RocksDB's WAL and memtable beside the same value's `kv` record, and the
//! entries still kept at a flush were written to table files too; and
//! RocksDB's WAL grows with every append, so each synced append also
//! wrote the file's inode (docs/benchmarks.md, "The raft log in files of
//! its own"). raft-engine appends to files whose space it has allocated,
//! and a value goes through it once.
//!
//! # Records
//!
//! One raft group ([`GROUP`]). An entry is stored as an `eraftpb.Entry`
//! with its index and term in the clear (raft-engine indexes entries by
//! index; a term check needs no unseal) and, as its `data`, the whole
//! entry raft handed over, encoded and sealed by the engine as a record of
//! family `raft` under `keys::entry_key(index)`: the associated data the
//! entries had in RocksDB, so a sealed entry is bound to its index.
//! raft's state is four key-values, `keys::STATE_KEYS`, in the layouts of
//! `keys`, plain: they hold indexes, terms and member ids, no user data
//! (raft-engine checksums every batch).
//!
//! # Durability across the two stores
//!
//! 1. An entry is synced here before raft hands it to be applied, so the
//!    state machine is never ahead of what this log can replay... except
//!    after a snapshot's install (3).
//! 2. The log lets go of entries only up to the state machine's durable
//!    applied index (`StateMachine::durable_applied_index`: its applies
//!    skip RocksDB's WAL, `Engine::write_replayed`, and are durable once
//!    RocksDB flushes them), and after its other writes are synced
//!    (`Engine::sync`): the entries a restart after a crash replays from
//!    the applied index it finds are still here.
//! 3. A snapshot's install syncs the state first, then resets this log in
//!    one synced write; a crash between leaves the state ahead of the log,
//!    which replay tolerates (applying is idempotent by index).
//! 4. A data directory from before: [`LogFiles::open`] copies the log and
//!    state out of RocksDB's `raft` and `raft_state` families in one synced
//!    write here, then deletes them there in one synced write; a crash
//!    between leaves both, and the next open finishes the delete.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ::raft::eraftpb::Entry;
use protobuf::Message;

use super::keys;
use super::Error;
use crate::storage::crypto::KeyRing;
use crate::storage::{try_scan, Cf, Engine, Scan, WriteBatch};

/// The one raft group of a member.
const GROUP: u64 = 1;

/// Size of a log file. etcd's WAL segment is 64 MB; smaller files let the
/// space of a compacted log go sooner, and with [`PURGE_BYTES`] at 16 of
/// them keep the live entries out of raft-engine's rewrites: a purge copies
/// a group's entries that sit in files before its rewrite watermark (70% of
/// the way from the oldest file to the active one) into its rewrite queue,
/// synced, when fewer than 32 are there. With 16 MiB files and four of them
/// to a purge, the watermark was the file just before the active one, which
/// held part of the live tail (the 4 MiB kept for followers, or what
/// RocksDB has not flushed: up to two 8 MiB memtables), and 1 MiB puts had
/// the raft thread rewrite 12% more bytes than it appended. Now the files
/// past the watermark hold at least 16 MiB, that whole tail
/// (docs/benchmarks.md, "Large values on one disk"). A larger threshold
/// would widen the margin at the price of disk: raft-engine keeps up to
/// 1.5 times the threshold in purged files for reuse (a reused file's
/// extents are written already, so a synced append changes no metadata).
const FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Log files kept before raft-engine removes (or recycles) the ones that
/// hold only compacted entries: bounds what a restart reads back, and with
/// the files kept for reuse the log's disk (at most ~160 MiB; etcd keeps
/// five 64 MB WAL files).
const PURGE_BYTES: u64 = 16 * FILE_BYTES;

/// Entries read from the files per call when a range is read: the size
/// limit is raft's, on the entries as raft gave them, so it is applied
/// after opening, a bounded chunk at a time.
const READ_CHUNK: u64 = 64;

/// raft-engine's entry type: the stored `Entry` (see the module doc).
struct StoredEntry;

impl raft_engine::MessageExt for StoredEntry {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

/// The raft log's files, and the engine that seals their entries.
pub(super) struct LogFiles {
    /// raft-engine, on the member's `raft-log` directory.
    files: raft_engine::Engine,
    /// The state machine's engine: it seals and opens the entries (the
    /// member's keys live there) and is synced before the log lets go of
    /// entries.
    engine: Arc<dyn Engine>,
}

fn files_err(e: raft_engine::Error) -> Error {
    Error::LogFiles(e.to_string())
}

impl LogFiles {
    /// Opens (creating if needed) the log files in `dir`; moves the log of
    /// a data directory from before out of `engine` (module doc, 4).
    pub(super) fn open(dir: &Path, engine: Arc<dyn Engine>) -> Result<Self, Error> {
        // raft-engine takes its directory as a string: a path that is not
        // UTF-8 is refused rather than mangled into another directory.
        let Some(dir) = dir.to_str() else {
            return Err(Error::LogFiles(format!(
                "the raft log's directory {} is not UTF-8",
                dir.display()
            )));
        };
        let config = raft_engine::Config {
            dir: dir.to_owned(),
            // Sealed entries do not compress.
            batch_compression_threshold: raft_engine::ReadableSize(0),
            target_file_size: raft_engine::ReadableSize(FILE_BYTES),
            purge_threshold: raft_engine::ReadableSize(PURGE_BYTES),
            ..Default::default()
        };
        let files = raft_engine::Engine::open(config).map_err(files_err)?;
        let log = Self { files, engine };
        log.move_out_of_the_engine()?;
        Ok(log)
    }

    /// The first and last index of the entries held, if any.
    pub(super) fn span(&self) -> Option<(u64, u64)> {
        Some((
            self.files.first_index(GROUP)?,
            self.files.last_index(GROUP)?,
        ))
    }

    /// The state record `key` (raw bytes), if written.
    pub(super) fn state(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.files.get(GROUP, key)
    }

    /// The ids of the data keys the held entries are sealed with, each with
    /// the first index it sealed.
    pub(super) fn sealed_with(&self) -> Result<BTreeMap<u32, u64>, Error> {
        let mut ids = BTreeMap::new();
        if let Some((first, last)) = self.span() {
            self.each_stored(first, last + 1, |s| {
                if let Some(id) = KeyRing::key_id_of(&s.data) {
                    ids.entry(id).or_insert(s.index);
                }
                Ok(true)
            })?;
        }
        Ok(ids)
    }

    /// The term of the entry at `index`, without opening it.
    pub(super) fn term(&self, index: u64) -> Result<Option<u64>, Error> {
        Ok(self.stored(index)?.map(|e| e.term))
    }

    /// The entries `low..high`, opened: the first always, then while their
    /// sizes (as raft counts them) stay within `limit`. Fewer than asked
    /// only by the limit; a missing entry is an error.
    pub(super) fn entries(&self, low: u64, high: u64, limit: u64) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        let mut size = 0u64;
        self.each_stored(low, high, |s| {
            let entry = self.open_entry(s)?;
            size = size.saturating_add(u64::from(entry.compute_size()));
            if !out.is_empty() && size > limit {
                return Ok(false);
            }
            out.push(entry);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Hands `visit` the stored entries `low..high` in order, read
    /// [`READ_CHUNK`] at a time, until it answers `false`; a missing entry
    /// is an error.
    fn each_stored(
        &self,
        low: u64,
        high: u64,
        mut visit: impl FnMut(&Entry) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut stored = Vec::new();
        let mut next = low;
        while next < high {
            let end = high.min(next + READ_CHUNK);
            stored.clear();
            self.files
                .fetch_entries_to::<StoredEntry>(GROUP, next, end, None, &mut stored)
                .map_err(files_err)?;
            if stored.len() as u64 != end - next {
                return Err(keys::corrupt(
                    &keys::entry_key(next + stored.len() as u64),
                    "entry missing from the log".into(),
                ));
            }
            for s in &stored {
                if !visit(s)? {
                    return Ok(());
                }
            }
            next = end;
        }
        Ok(())
    }

    /// Writes `write` (synced when `sync`); the bytes written.
    pub(super) fn write(&self, write: &mut LogWrite, sync: bool) -> Result<usize, Error> {
        if write.batch.is_empty() {
            return Ok(0);
        }
        self.files.write(&mut write.batch, sync).map_err(files_err)
    }

    /// Removes (or keeps for reuse) the files that hold only compacted
    /// entries, once there are more than [`PURGE_BYTES`] of them.
    pub(super) fn purge(&self) -> Result<(), Error> {
        self.files.purge_expired_files().map_err(files_err)?;
        Ok(())
    }

    /// Syncs the state machine's engine (module doc, 2 and 3).
    pub(super) fn sync_state(&self) -> Result<(), Error> {
        Ok(self.engine.sync()?)
    }

    /// `entry` as stored: index and term, the whole entry sealed.
    fn seal_entry(&self, entry: &Entry) -> Result<Entry, Error> {
        let key = keys::entry_key(entry.index);
        let plain = keys::encode("entry", entry)?;
        let sealed = self.engine.seal_raw(Cf::Raft, &key, plain)?;
        Ok(Entry {
            index: entry.index,
            term: entry.term,
            data: sealed.into(),
            ..Default::default()
        })
    }

    fn open_entry(&self, stored: &Entry) -> Result<Entry, Error> {
        let key = keys::entry_key(stored.index);
        let plain = self.engine.open_raw(Cf::Raft, &key, &stored.data)?;
        let entry: Entry = keys::decode(&key, &plain)?;
        if entry.index != stored.index || entry.term != stored.term {
            return Err(keys::corrupt(
                &key,
                format!(
                    "holds the entry of index {} term {}",
                    entry.index, entry.term
                ),
            ));
        }
        Ok(entry)
    }

    fn stored(&self, index: u64) -> Result<Option<Entry>, Error> {
        self.files
            .get_entry::<StoredEntry>(GROUP, index)
            .map_err(files_err)
    }

    /// Module doc, 4: the log and state of a data directory from before,
    /// copied here (unless a cut-short move already did), then deleted
    /// from the engine.
    fn move_out_of_the_engine(&self) -> Result<(), Error> {
        let mut legacy = WriteBatch::new();
        let mut state = Vec::new();
        for cf in [Cf::RaftState, Cf::Raft] {
            for key in keys::STATE_KEYS {
                if let Some(value) = self.engine.get(cf, key)? {
                    legacy.delete(cf, key.to_vec());
                    if !state.iter().any(|(k, _)| *k == key) {
                        state.push((key, value));
                    }
                }
            }
        }
        let mut entries = Vec::new();
        try_scan::<Error>(
            self.engine.as_ref(),
            Cf::Raft,
            &keys::entry_key(0),
            Some(keys::ENTRIES_END),
            |k, v| {
                legacy.delete(Cf::Raft, k.to_vec());
                let entry: Entry = keys::decode(k, v)?;
                if entry.index != keys::entry_index(k)? {
                    return Err(keys::corrupt(k, format!("holds entry {}", entry.index)));
                }
                entries.push(entry);
                Ok(Scan::Continue)
            },
        )?;
        if legacy.is_empty() {
            return Ok(());
        }
        let moved_before = self.state(keys::HARD_STATE).is_some() || self.span().is_some();
        if !moved_before {
            let mut write = LogWrite::default();
            write.append(self, &entries)?;
            for (key, value) in state {
                write.put_state(key, value)?;
            }
            self.write(&mut write, true)?;
            tracing::info!(
                entries = entries.len(),
                "raft log moved out of RocksDB into its own files"
            );
        }
        self.engine.write(legacy, true)?;
        Ok(())
    }
}

/// One atomic write to the log files.
#[derive(Default)]
pub(super) struct LogWrite {
    batch: raft_engine::LogBatch,
}

impl LogWrite {
    /// Appends `entries` (consecutive; the caller checked where they go):
    /// any held entry from the first one's index on is replaced.
    pub(super) fn append(&mut self, log: &LogFiles, entries: &[Entry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let sealed = entries
            .iter()
            .map(|e| log.seal_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.batch
            .add_entries::<StoredEntry>(GROUP, &sealed)
            .map_err(files_err)
    }

    /// Sets the state record `key`.
    pub(super) fn put_state(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.batch
            .put(GROUP, key.to_vec(), value)
            .map_err(files_err)
    }

    /// Removes the entries before `to`.
    pub(super) fn compact(&mut self, to: u64) {
        self.batch
            .add_command(GROUP, raft_engine::Command::Compact { index: to });
    }

    /// Removes every entry and state record (a snapshot's install puts the
    /// state back in the same write).
    pub(super) fn clean(&mut self) {
        self.batch.add_command(GROUP, raft_engine::Command::Clean);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    /// Stores `stored` as it is, unsealed and unchecked.
    fn store_raw(log: &LogFiles, stored: Entry) {
        let mut write = LogWrite::default();
        write
            .batch
            .add_entries::<StoredEntry>(GROUP, &[stored])
            .unwrap();
        log.write(&mut write, true).unwrap();
    }

    #[test]
    fn a_directory_that_is_not_utf8_is_refused_not_mangled() {
        use std::os::unix::ffi::OsStrExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join(std::ffi::OsStr::from_bytes(b"log\xff"));
        let err = LogFiles::open(&dir, Arc::new(MemoryEngine::new()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not UTF-8"), "{err}");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    /// The bytes of the files with names ending in `suffix` in `dir`.
    fn bytes_of(dir: &Path, suffix: &str) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| f.file_name().to_string_lossy().ends_with(suffix))
            .map(|f| f.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn the_live_tail_of_large_entries_is_purged_around_not_rewritten() {
        // 1 MiB entries (etcd's largest request) appended one at a time and
        // purged after each write, as the raft thread does. The log is
        // compacted as a member compacts it under such puts: to the newest
        // 4 MiB kept for followers, but only as far as RocksDB has flushed,
        // which it does every 8 MiB of memtables and may be one flush
        // behind. So the live tail grows from 4 to 16 entries and drops back.
        // The files of the compacted entries go; the live ones are never
        // copied into the rewrite queue (with 16 MiB files they were: the
        // raft thread rewrote 12% of the bytes it appended).
        const ENTRY_BYTES: u64 = 1024 * 1024;
        const KEPT: u64 = 4;
        const FLUSH_EVERY: u64 = 8;
        const FLUSHES_BEHIND: u64 = 1;
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), Arc::new(MemoryEngine::new())).unwrap();
        let rewrite_files_at_start = bytes_of(dir.path(), ".rewrite");
        let appended = 2 * PURGE_BYTES / ENTRY_BYTES;
        let mut longest_tail = 0;
        for index in 1..=appended {
            let entry = Entry {
                index,
                term: 1,
                data: vec![index as u8; ENTRY_BYTES as usize].into(),
                ..Default::default()
            };
            let mut write = LogWrite::default();
            write.append(&log, &[entry]).unwrap();
            let flushed = (index / FLUSH_EVERY).saturating_sub(FLUSHES_BEHIND) * FLUSH_EVERY;
            let to = flushed.min(index.saturating_sub(KEPT));
            if to > log.span().map_or(0, |(first, _)| first) {
                write.compact(to);
            }
            log.write(&mut write, false).unwrap();
            log.purge().unwrap();
            let (first, last) = log.span().unwrap();
            longest_tail = longest_tail.max(last + 1 - first);
        }
        assert_eq!(longest_tail, (FLUSHES_BEHIND + 1) * FLUSH_EVERY);
        assert_eq!(bytes_of(dir.path(), ".rewrite"), rewrite_files_at_start);
        // The compacted entries' files went (or wait to be reused:
        // raft-engine keeps purged files to recycle).
        let on_disk = bytes_of(dir.path(), ".raftlog");
        assert!(on_disk <= 2 * PURGE_BYTES, "{on_disk} bytes of log files");
    }

    #[test]
    fn a_corrupt_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), Arc::new(MemoryEngine::new())).unwrap();
        let entry = |index, term| Entry {
            index,
            term,
            data: b"data".to_vec().into(),
            ..Default::default()
        };
        let mut write = LogWrite::default();
        write.append(&log, &[entry(1, 1)]).unwrap();
        log.write(&mut write, true).unwrap();
        assert_eq!(log.entries(1, 2, u64::MAX).unwrap(), [entry(1, 1)]);

        // Garbage where the sealed entry should be: its term (in the clear)
        // still answers, the entry does not.
        store_raw(
            &log,
            Entry {
                index: 2,
                term: 1,
                data: b"\xff\xff\xff".to_vec().into(),
                ..Default::default()
            },
        );
        assert_eq!(log.term(2).unwrap(), Some(1));
        let err = log.entries(1, 3, u64::MAX).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");

        // The entry of index 4 stored as index 3.
        let plain = keys::encode("entry", &entry(4, 1)).unwrap();
        store_raw(
            &log,
            Entry {
                index: 3,
                term: 1,
                data: plain.into(),
                ..Default::default()
            },
        );
        let err = log.entries(3, 4, u64::MAX).unwrap_err();
        assert!(
            err.to_string().contains("holds the entry of index 4"),
            "{err}"
        );
        // Past the end: raft-engine's own error.
        assert!(log.entries(3, 9, u64::MAX).is_err());
        assert_eq!(log.term(9).unwrap(), None);
    }
}
