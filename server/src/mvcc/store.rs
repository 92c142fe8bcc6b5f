//! The multi-version key-value store: revision records on an [`Engine`], an
//! in-memory [`TreeIndex`] over them, and compaction. Writes go through a
//! [`WriteTxn`] (`write_txn.rs`), which holds the store's write lock.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};
use prost::Message;
use tokio::sync::mpsc;

use super::index::{KeyRange, TreeIndex};
use super::load::{self, IndexBuilder, LeasedKeys, Loaded};
use super::page_counts::PageCounts;
use super::range::{range_at, records_at, Records};
use super::revision::{Revision, REV_BYTES_LEN};
use super::watch::{StreamKey, SyncOutcome, WatchHub, WatchMessage, WatchSpec, WatcherKey};
use super::write_txn::WriteTxn;
use super::Error;
use crate::metrics::mvcc::StoreMetrics;
use crate::storage::parallel::default_threads;
use crate::storage::{try_scan, Cf, Engine, Scan, WriteBatch};

/// Meta key: the last applied index whose effects are in the store.
pub const META_APPLIED_INDEX: &[u8] = b"applied_index";
/// Meta key: the revision of the latest requested compaction.
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduled_compact_rev";
/// Meta key: the revision of the latest compaction whose records are all deleted.
pub const META_FINISHED_COMPACT: &[u8] = b"finished_compact_rev";
/// How many obsolete records one compaction batch deletes: bounds the size of
/// each write so compaction never stalls writers behind one huge batch.
const COMPACTION_BATCH: usize = 1000;

/// Options of a range read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys (0 = no limit).
    pub limit: usize,
    /// Read at this revision (0 or less = the current one).
    pub rev: i64,
    /// Count the keys only, return no key-values.
    pub count_only: bool,
}

/// The result of a range read: its key-values decoded, or as stored
/// ([`Records`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeResult<Kvs = Vec<KeyValue>> {
    /// Key-values in key order (empty with `count_only`).
    pub kvs: Kvs,
    /// Number of keys in the range at the read revision, regardless of the limit.
    pub count: usize,
    /// The store's current revision when the read was served.
    pub rev: i64,
}

/// State guarded by the store's lock (a [`WriteTxn`] changes it in place).
#[derive(Debug)]
pub(super) struct State {
    /// Every key's history.
    pub(super) index: TreeIndex,
    /// The revision of the latest committed write transaction (1 for a new store,
    /// as in etcd: the first write gets revision 2).
    pub(super) current_rev: i64,
    /// Reads below this revision are refused (-1: never compacted).
    pub(super) compact_rev: i64,
    /// Applied index recorded with the latest commit.
    pub(super) applied_index: u64,
    /// Keys alive at the current revision (etcd's keys gauge), kept up to
    /// date by each commit so that the metrics never count them.
    pub(super) live_keys: i64,
    /// Counts of paginated lists' next pages. Part of the state because it
    /// describes this history: a snapshot install, which replaces the
    /// state, starts it afresh.
    pub(super) page_counts: PageCounts,
}

/// An MVCC store. Cheap to share behind an `Arc`; reads run concurrently,
/// write transactions one at a time.
pub struct Store {
    /// Where records live. Every disk write goes through it.
    engine: Arc<dyn Engine>,
    /// Index and revisions. Write transactions hold the write lock for their
    /// whole life, which is what makes a transaction atomic to readers.
    state: RwLock<State>,
    /// Serialises the physical phase of compactions (they run without `state`).
    compaction: Mutex<()>,
    /// Whether commits wait for stable storage: on where the store is the
    /// only copy (an offline restore, tests). Off under raft, whose log is
    /// the durable copy: commits are then replayed writes
    /// ([`Store::write_state`]).
    pub(super) sync_writes: bool,
    /// Watchers, notified by every commit.
    pub(super) hub: WatchHub,
    /// Counters and the commit histogram (none in unit tests).
    pub(super) metrics: OnceLock<StoreMetrics>,
    /// The live keys attached to leases, found by the last load's pass over
    /// the records, until the lessor takes them ([`Store::leased_keys`]):
    /// so that rebuilding the lessor reads no record again.
    leased: Mutex<Option<LeasedKeys>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sync_writes", &self.sync_writes)
            .finish()
    }
}

pub(super) fn decode_kv(rev: Revision, bytes: &[u8]) -> Result<KeyValue, Error> {
    KeyValue::decode(bytes).map_err(|e| Error::Corrupt {
        what: format!("record {rev}"),
        reason: e.to_string(),
    })
}

/// Decodes a `kv` record whole: its revision, whether it is a tombstone, its
/// key-value (`load` decodes only what the key index needs of one).
fn decode_kv_record(key: &[u8], value: &[u8]) -> Result<(Revision, bool, KeyValue), Error> {
    let (rev, tombstone) = load::record_revision(key)?;
    Ok((rev, tombstone, decode_kv(rev, value)?))
}

/// Runs `write` on `engine` while the key index is built from `index` on
/// a thread of its own, then the state from the built index.
fn write_beside_build<E: From<Error>>(
    engine: &dyn Engine,
    index: IndexBuilder,
    write: impl FnOnce(&dyn Engine) -> Result<(), E>,
) -> Result<Loaded, E> {
    let threads = default_threads();
    let (written, built) = std::thread::scope(|scope| {
        let building = std::thread::Builder::new()
            .name("index-build".into())
            .spawn_scoped(scope, move || index.build(threads));
        let written = write(engine);
        (written, building.map(|b| b.join()))
    });
    written?;
    Ok(match built {
        Ok(Ok(built)) => load::load_built(engine, built)?,
        // No thread to spare (or a build that panicked, a bug): the
        // records read back instead.
        _ => load::load(engine)?,
    })
}

impl Store {
    /// Opens the store on `engine`: rebuilds the index from every stored
    /// record and finishes a compaction a crash interrupted.
    pub fn open(engine: Arc<dyn Engine>, sync_writes: bool) -> Result<Self, Error> {
        let Loaded {
            state,
            unfinished,
            leased,
        } = load::load(engine.as_ref())?;
        let store = Self {
            engine,
            state: RwLock::new(state),
            compaction: Mutex::new(()),
            sync_writes,
            hub: WatchHub::default(),
            metrics: OnceLock::new(),
            leased: Mutex::new(Some(leased)),
        };
        store.finish_compaction(unfinished)?;
        Ok(store)
    }

    /// Counts this store's work in `metrics` from now on (set once the
    /// member's id, which labels its metrics, is known).
    pub fn set_metrics(&self, metrics: StoreMetrics) {
        self.hub.set_metrics(metrics.events.clone());
        let _ = self.metrics.set(metrics);
    }

    /// Reloads the index after the engine's records were replaced wholesale
    /// (a raft snapshot was installed underneath). Every watcher becomes
    /// unsynced and catches up from the new history (or learns that it was
    /// compacted away), since the commits in between were never notified.
    pub fn reload(&self) -> Result<(), Error> {
        self.replace_with(|_| Ok::<(), Error>(()))
    }

    /// Runs `write`, which replaces records wholesale (a raft snapshot
    /// being installed, in several writes), then reloads as
    /// [`Store::reload`] does, all under the write lock: a read holding the
    /// read lock sees neither a state half replaced nor the new records
    /// through the old index (a record it names could be gone).
    pub fn replace_with<E: From<Error>>(
        &self,
        write: impl FnOnce(&dyn Engine) -> Result<(), E>,
    ) -> Result<(), E> {
        self.replace(None, write)
    }

    /// [`Store::replace_with`] where `index` was handed the `kv` records
    /// `write` writes (all of them, in order): the index is built from it
    /// on a thread of its own while `write` runs, and the records are not
    /// read back.
    pub fn replace_with_index<E: From<Error>>(
        &self,
        index: IndexBuilder,
        write: impl FnOnce(&dyn Engine) -> Result<(), E>,
    ) -> Result<(), E> {
        self.replace(Some(index), write)
    }

    fn replace<E: From<Error>>(
        &self,
        index: Option<IndexBuilder>,
        write: impl FnOnce(&dyn Engine) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.write_lock();
        let engine = self.engine.as_ref();
        let Loaded {
            state: fresh,
            unfinished,
            leased,
        } = match index {
            Some(index) => write_beside_build(engine, index, write)?,
            None => {
                write(engine)?;
                load::load(engine)?
            }
        };
        *state = fresh;
        *self.leased_lock() = Some(leased);
        self.hub.unsync_all();
        drop(state);
        Ok(self.finish_compaction(unfinished)?)
    }

    fn leased_lock(&self) -> std::sync::MutexGuard<'_, Option<LeasedKeys>> {
        // Replaced or taken whole: a poisoned lock still holds a usable value.
        crate::locks::lock(&self.leased)
    }

    /// The live keys attached to a lease, with their lease ids, in key
    /// order: what the last load found, taken (once) if no write has
    /// committed since; otherwise read from the latest record of every live
    /// key.
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>, Error> {
        let state = self.read();
        let loaded = self.leased_lock().take();
        match loaded {
            Some(loaded) if loaded.rev == state.current_rev => Ok(loaded.keys),
            _ => load::read_leased_keys(&state, self.engine.as_ref()),
        }
    }

    fn finish_compaction(&self, unfinished: Option<(i64, HashSet<Revision>)>) -> Result<(), Error> {
        if let Some((scheduled, available)) = unfinished {
            tracing::info!(
                revision = scheduled,
                "finishing a compaction interrupted by a restart"
            );
            self.delete_compacted(scheduled, &available)?;
        }
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is only mutated through WriteTxn, which restores the index
        // on any early exit, so a poisoned lock still guards consistent data.
        crate::locks::read(&self.state)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, State> {
        crate::locks::write(&self.state)
    }

    /// The current revision.
    pub fn current_revision(&self) -> i64 {
        self.read().current_rev
    }

    /// The compacted revision (-1 when never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.read().compact_rev
    }

    /// The applied index recorded with the latest commit.
    pub fn applied_index(&self) -> u64 {
        self.read().applied_index
    }

    /// The applied index a crash now would leave the store at, where a
    /// restart goes on from: the raft log must keep every entry after it.
    pub fn durable_applied_index(&self) -> Result<u64, Error> {
        let persisted = self.engine.get_persisted(Cf::Meta, META_APPLIED_INDEX)?;
        let index = load::meta_i64(META_APPLIED_INDEX, persisted)?.unwrap_or(0);
        Ok(u64::try_from(index).unwrap_or(0))
    }

    /// Makes every write so far durable, the replayed ones included
    /// ([`Engine::persist`]).
    pub fn persist(&self) -> Result<(), Error> {
        Ok(self.engine.persist()?)
    }

    /// Writes a batch of the replicated state (an applied entry's records,
    /// a compaction's deletions and markers): synced when commits wait for
    /// stable storage, else replayed ([`Engine::write_replayed`]), all
    /// alike, so that what a crash keeps of them is a prefix.
    pub(super) fn write_state(&self, batch: WriteBatch) -> Result<(), Error> {
        if self.sync_writes {
            self.engine.write(batch, true)?;
        } else {
            self.engine.write_replayed(batch)?;
        }
        Ok(())
    }

    /// The engine underneath (for size figures and defragmentation).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Counts one range of a read-only request (see
    /// [`crate::apply::ReadView::note_range`]).
    pub fn note_range(&self) {
        if let Some(m) = self.metrics.get() {
            m.ranges(1);
        }
    }

    /// Keys alive at the current revision.
    pub fn live_keys(&self) -> i64 {
        self.read().live_keys
    }

    /// Reads a range at a revision.
    pub fn range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult, Error> {
        let state = self.read();
        range_at(
            &state,
            self.engine.as_ref(),
            &|_| None,
            Some(&state.page_counts),
            state.current_rev,
            range,
            opts,
        )
    }

    /// [`Store::range`], each key-value as stored (an encoded
    /// `mvccpb.KeyValue`), for a response to carry as it is.
    pub fn range_records(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<RangeResult<Records>, Error> {
        let state = self.read();
        records_at(
            &state,
            self.engine.as_ref(),
            Some(&state.page_counts),
            range,
            opts,
        )
    }

    /// Starts a write transaction. It holds the store's write lock until it is
    /// committed or dropped (dropping it undoes everything it did).
    pub fn write(&self) -> WriteTxn<'_> {
        WriteTxn::begin(self, self.write_lock())
    }

    /// The watch hub (stream keys, wake-ups, watcher count).
    pub fn watch_hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Adds a watcher whose messages go to `tx`; returns its key.
    pub fn watch(
        &self,
        spec: WatchSpec,
        stream: StreamKey,
        tx: mpsc::Sender<WatchMessage>,
    ) -> WatcherKey {
        let state = self.read();
        self.hub.add(spec, stream, tx, state.current_rev)
    }

    /// Asks for a progress notification for one watcher (sent only if it is
    /// synced: then every event up to the current revision was delivered).
    pub fn request_progress(&self, watcher: WatcherKey) {
        let state = self.read();
        self.hub.progress(watcher, state.current_rev);
    }

    /// Asks for a stream-wide progress notification, sent once every watcher
    /// of the stream is synced.
    pub fn request_progress_all(&self, stream: StreamKey, tx: mpsc::Sender<WatchMessage>) {
        let state = self.read();
        self.hub.progress_all(stream, tx, state.current_rev);
    }

    /// One round of catching up unsynced watchers from the stored history:
    /// reads at most about `max_records` records (always whole revisions).
    pub fn sync_watchers(&self, max_records: usize) -> Result<SyncOutcome, Error> {
        let state = self.read();
        let (current, compacted) = (state.current_rev, state.compact_rev);
        let pending = self.hub.unsynced();
        if pending.is_empty() {
            return Ok(SyncOutcome::default());
        }
        let from = pending
            .iter()
            .map(|(_, rev)| *rev)
            .filter(|rev| *rev >= compacted)
            .min();
        let mut events = Vec::new();
        let mut to = current;
        if let Some(from) = from.filter(|f| *f <= current) {
            let end = Revision::new(current + 1, 0).to_bytes();
            let mut last_rev = from - 1;
            let start = Revision::new(from, 0).to_bytes();
            try_scan::<Error>(
                self.engine.as_ref(),
                Cf::Kv,
                &start,
                Some(&end),
                |key, value| {
                    let (rev, tombstone, mut kv) = decode_kv_record(key, value)?;
                    if events.len() >= max_records && rev.main != last_rev {
                        to = last_rev;
                        return Ok(Scan::Stop);
                    }
                    last_rev = rev.main;
                    if tombstone {
                        kv.mod_revision = rev.main;
                    }
                    events.push(to_event(tombstone, kv));
                    Ok(Scan::Continue)
                },
            )?;
        }
        Ok(self.hub.deliver_history(&events, to, current, compacted))
    }

    /// The consistency hash of the store up to revision `rev` (0 = the
    /// current one): the compacted revision, every live key-value at the
    /// compacted revision, then every record after it up to `rev`, in
    /// revision order. The same history gives the same hash on every member,
    /// however far each one's physical compaction has got. Returns (hash,
    /// compacted revision, hashed revision). SHA-256 truncated to 32 bits
    /// (etcd uses CRC-32C over its own records; the values are not
    /// comparable with etcd's, only between Cairn members).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), Error> {
        let (compact_rev, current) = {
            let state = self.read();
            (state.compact_rev, state.current_rev)
        };
        // etcd refuses an asked-for revision at or below the compacted one
        // (the current revision is always fine).
        if rev > 0 && rev <= compact_rev {
            return Err(Error::Compacted);
        }
        let rev = if rev <= 0 { current } else { rev };
        if rev > current {
            return Err(Error::FutureRev);
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&compact_rev.to_be_bytes());
        if compact_rev > 0 {
            let opts = RangeOptions {
                rev: compact_rev,
                ..RangeOptions::default()
            };
            let base = self.range(&KeyRange::new(b"", b"\0"), opts)?;
            for kv in base.kvs {
                ctx.update(&kv.encode_to_vec());
            }
        }
        let start = Revision::new(compact_rev.max(0) + 1, 0).record_key(false);
        let end = Revision::new(rev + 1, 0).record_key(false);
        try_scan::<Error>(self.engine.as_ref(), Cf::Kv, &start, Some(&end), |k, v| {
            ctx.update(k);
            ctx.update(v);
            Ok(Scan::Continue)
        })?;
        let digest = ctx.finish();
        let mut first = [0u8; 4];
        first.copy_from_slice(&digest.as_ref()[..4]);
        Ok((u32::from_be_bytes(first), compact_rev, rev))
    }

    /// Compacts the history at `rev`. The logical part (refusing reads below
    /// `rev`) is done when this returns; the returned job deletes the obsolete
    /// records and must be run (see [`CompactionJob::run`]).
    pub fn compact(self: &Arc<Self>, rev: i64) -> Result<CompactionJob, Error> {
        let mut state = self.write_lock();
        if rev <= state.compact_rev {
            return Err(Error::Compacted);
        }
        if rev > state.current_rev {
            return Err(Error::FutureRev);
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, META_SCHEDULED_COMPACT, rev.to_be_bytes());
        self.write_state(batch)?;
        let pause = std::time::Instant::now();
        let available = state.index.compact(rev);
        state.compact_rev = rev;
        if let Some(m) = self.metrics.get() {
            m.index_compaction_pause_ms
                .observe(pause.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(CompactionJob {
            store: Arc::clone(self),
            rev,
            available,
        })
    }

    /// Deletes every record below `rev`, and at `rev`, that is not in
    /// `available`, in bounded batches, then records the compaction as
    /// finished. The records AT `rev` all stay (until a later compaction):
    /// a watch may start at the compacted revision, and must receive that
    /// revision whole, its deletions included (etcd drops them, splitting
    /// the revision). Reads and hashes at `rev` go through the index, which
    /// has forgotten those tombstones, so nothing else sees them.
    /// Returns how many records it deleted.
    fn delete_compacted(&self, rev: i64, available: &HashSet<Revision>) -> Result<u64, Error> {
        let _serial = crate::locks::lock(&self.compaction);
        let mut deleted = 0;
        let end = Revision::new(rev + 1, 0).to_bytes();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let batch_start = std::time::Instant::now();
            let mut obsolete = Vec::new();
            let mut next = None;
            self.engine
                .scan(Cf::Kv, &start, Some(&end), &mut |key, _| {
                    if obsolete.len() == COMPACTION_BATCH {
                        next = Some(key.to_vec());
                        return Scan::Stop;
                    }
                    let keep = Revision::from_record_key(key)
                        .is_some_and(|(r, _)| r.main == rev || available.contains(&r));
                    if !keep && key.len() >= REV_BYTES_LEN {
                        obsolete.push(key.to_vec());
                    }
                    Scan::Continue
                })?;
            if !obsolete.is_empty() {
                deleted += obsolete.len() as u64;
                let mut batch = WriteBatch::new();
                for key in obsolete {
                    batch.delete(Cf::Kv, key);
                }
                self.write_state(batch)?;
            }
            if let Some(m) = self.metrics.get() {
                m.db_compaction_pause_ms
                    .observe(batch_start.elapsed().as_secs_f64() * 1000.0);
            }
            match next {
                Some(key) => start = key,
                None => break,
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, META_FINISHED_COMPACT, rev.to_be_bytes());
        self.write_state(batch)?;
        tracing::debug!(revision = rev, "compaction finished");
        Ok(deleted)
    }
}

/// The physical part of a compaction: deleting records nothing can read any more.
#[derive(Debug)]
pub struct CompactionJob {
    /// The store to clean.
    store: Arc<Store>,
    /// The compaction point.
    rev: i64,
    /// Records at or below `rev` that stay (the latest of each key).
    available: HashSet<Revision>,
}

impl CompactionJob {
    /// Deletes the obsolete records (blocking; run it on a blocking thread).
    pub fn run(self) -> Result<(), Error> {
        let start = std::time::Instant::now();
        let deleted = self.store.delete_compacted(self.rev, &self.available)?;
        if let Some(m) = self.store.metrics.get() {
            m.compacted_keys.inc_by(deleted);
            m.compaction_duration_ms
                .observe(start.elapsed().as_secs_f64() * 1000.0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            m.compaction_last.set(i64::try_from(now).unwrap_or(0));
        }
        Ok(())
    }
}

/// A change as a watch event. A deletion's key-value carries only the key and
/// the deletion revision as `mod_revision` (etcd's convention).
pub(super) fn to_event(tombstone: bool, kv: KeyValue) -> Event {
    let r#type = if tombstone {
        EventType::Delete
    } else {
        EventType::Put
    };
    Event {
        r#type: r#type as i32,
        kv: Some(kv),
        prev_kv: None,
    }
}
