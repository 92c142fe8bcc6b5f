//! The watch hub: who watches what, and delivering committed events to them
//! (etcd's watchableStore).
//!
//! Every watcher is either **synced** — it has seen every revision up to the
//! store's current one, so a commit's events go straight to it — or
//! **unsynced** — it still needs history (a start revision in the past, or it
//! fell behind), which [`Store::sync_watchers`](super::Store::sync_watchers)
//! reads from the stored records in bounded batches and delivers.
//!
//! Synced watchers of one key are indexed by it, so a commit visits only
//! the watchers of the keys it changed and every range watcher (etcd keeps
//! an interval tree; ranges are few in practice: a controller's prefix).
//!
//! Delivery never blocks a writer: a commit offers events to a watcher's stream
//! with `try_send`; if the stream's buffer is full the watcher simply becomes
//! unsynced at that revision and is caught up from history later (etcd's
//! victims). A watcher whose next revision was compacted away gets one
//! `Compacted` message and is removed, so nothing is ever dropped silently.
//!
//! Guarantees, per watcher: events arrive in revision order, each once, with no
//! gap, and all events of one revision in one message.
//!
//! Lock order: the store's state lock, then the hub's lock. Commits notify
//! while holding the write lock; syncing holds the read lock, so a revision
//! can never be both delivered live and replayed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use tokio::sync::{mpsc, Notify};

use super::index::KeyRange;

/// Identifies a watcher inside the hub (unique for the hub's life, unlike
/// client-chosen watch ids, so a late message can never reach a new watcher
/// that reused an id).
pub type WatcherKey = u64;

/// Identifies one client stream (a group of watchers sharing a buffer).
pub type StreamKey = u64;

/// What the hub sends to a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// Events for one watcher, covering whole revisions, up to `revision`.
    Events {
        /// The watcher.
        watcher: WatcherKey,
        /// The newest revision covered by this message.
        revision: i64,
        /// The events, in revision order.
        events: Vec<Event>,
    },
    /// The watcher needs history that compaction removed; it is cancelled.
    Compacted {
        /// The watcher.
        watcher: WatcherKey,
        /// The store's compacted revision.
        compact_revision: i64,
    },
    /// Every event up to `revision` has been delivered (to `watcher`, or to
    /// every watcher of the stream when `None`).
    Progress {
        /// The watcher, or `None` for the whole stream.
        watcher: Option<WatcherKey>,
        /// The progress point.
        revision: i64,
    },
}

/// What a new watcher asks for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// First revision wanted; 0 = from the next commit.
    pub start_revision: i64,
    /// Skip put events.
    pub no_put: bool,
    /// Skip delete events.
    pub no_delete: bool,
}

/// One watcher's state.
#[derive(Debug)]
struct Watcher {
    /// Its stream, for stream-wide progress and clean-up.
    stream: StreamKey,
    /// Which keys.
    range: KeyRange,
    /// The next revision it needs; every event below it has been delivered.
    /// A synced watcher's is only moved when a commit offers it events, so
    /// for it the hub's `notified + 1` may be later (see
    /// [`HubState::next_rev`]).
    next_rev: i64,
    /// Filters.
    no_put: bool,
    no_delete: bool,
    /// True when it has seen everything up to the current revision.
    synced: bool,
    /// The stream's buffer.
    tx: mpsc::Sender<WatchMessage>,
}

impl Watcher {
    fn wants(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        if kv.mod_revision < self.next_rev || !self.range.contains(&kv.key) {
            return false;
        }
        let is_put = ev.r#type == EventType::Put as i32;
        !(is_put && self.no_put || !is_put && self.no_delete)
    }
}

#[derive(Debug, Default)]
struct HubState {
    /// Every live watcher.
    watchers: HashMap<WatcherKey, Watcher>,
    /// The unsynced ones (a subset of `watchers`' keys).
    unsynced: HashSet<WatcherKey>,
    /// The synced watchers of one key, by that key: a commit visits the
    /// watchers of the keys it changed, not every watcher (10,000
    /// watchers of 1,000 keys: 10 per put instead of 10,000).
    synced_keys: HashMap<Vec<u8>, Vec<WatcherKey>>,
    /// The synced watchers of a range: every commit checks each of them.
    synced_ranges: HashSet<WatcherKey>,
    /// The newest revision offered to the synced watchers: each of them
    /// has had every event up to it.
    notified: i64,
    /// Streams that asked for progress while some of their watchers were
    /// unsynced: answered once they are all synced.
    progress_pending: HashMap<StreamKey, mpsc::Sender<WatchMessage>>,
}

impl HubState {
    /// The next revision watcher `w` needs: a synced one has had everything
    /// up to `notified`, whether or not a commit touched its keys.
    fn next_rev(&self, w: &Watcher) -> i64 {
        if w.synced {
            w.next_rev.max(self.notified + 1)
        } else {
            w.next_rev
        }
    }

    /// Marks watcher `key` synced and indexes it for live delivery.
    fn mark_synced(&mut self, key: WatcherKey) {
        self.unsynced.remove(&key);
        let Some(w) = self.watchers.get_mut(&key) else {
            return;
        };
        if w.synced {
            return;
        }
        w.synced = true;
        match &w.range {
            KeyRange::Single(k) => self.synced_keys.entry(k.clone()).or_default().push(key),
            KeyRange::Range { .. } => {
                self.synced_ranges.insert(key);
            }
        }
    }

    /// Marks watcher `key` unsynced from the revision it next needs: it
    /// leaves the live index and is caught up from history.
    fn mark_unsynced(&mut self, key: WatcherKey) {
        let Some(w) = self.watchers.get(&key) else {
            return;
        };
        if !w.synced {
            return;
        }
        let next_rev = self.next_rev(w);
        self.unindex(key);
        if let Some(w) = self.watchers.get_mut(&key) {
            w.next_rev = next_rev;
            w.synced = false;
        }
        self.unsynced.insert(key);
    }

    /// Takes watcher `key` out of the live index (it stays registered).
    fn unindex(&mut self, key: WatcherKey) {
        let Some(w) = self.watchers.get(&key) else {
            return;
        };
        match &w.range {
            KeyRange::Single(k) => {
                if let Some(keys) = self.synced_keys.get_mut(k) {
                    keys.retain(|x| *x != key);
                    if keys.is_empty() {
                        self.synced_keys.remove(k);
                    }
                }
            }
            KeyRange::Range { .. } => {
                self.synced_ranges.remove(&key);
            }
        }
    }

    /// Removes watcher `key` entirely; false if it was not there.
    fn remove(&mut self, key: WatcherKey) -> bool {
        self.unindex(key);
        self.unsynced.remove(&key);
        self.watchers.remove(&key).is_some()
    }
}

/// The registry of watchers. Owned by the [`Store`](super::Store).
#[derive(Debug, Default)]
pub struct WatchHub {
    /// Watchers and their sync state.
    state: Mutex<HubState>,
    /// Wakes the sync task when there is history to deliver.
    wake: Notify,
    /// Next watcher key.
    next_watcher: AtomicU64,
    /// Next stream key.
    next_stream: AtomicU64,
    /// Streams given out and not yet removed (etcd's watch stream count).
    open_streams: AtomicI64,
    /// etcd's event counters (set once at start; none in unit tests).
    metrics: std::sync::OnceLock<EventMetrics>,
}

/// etcd_debugging_mvcc_pending_events_total and _events_total: events are
/// pending from the moment the hub hands them to a watcher's stream until
/// the stream takes them to send ([`WatchHub::events_taken`]), as etcd
/// counts them between its watchable store and its gRPC send loop.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    /// Events handed to streams and not yet taken.
    pub pending: prometheus::IntGauge,
    /// Events taken by streams to send.
    pub sent: prometheus::IntCounter,
}

/// What [`WatchHub::counts`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounts {
    /// Watchers registered.
    pub watchers: usize,
    /// Those still catching up from history (etcd's slow watchers).
    pub unsynced: usize,
    /// Open streams.
    pub streams: usize,
}

/// Outcome of one sync round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    /// Watchers still unsynced after the round.
    pub unsynced: usize,
    /// Whether the round moved any watcher forward (if not, its buffers are
    /// full: wait before trying again).
    pub progressed: bool,
}

impl WatchHub {
    /// Counts events in `metrics` from now on.
    pub fn set_metrics(&self, metrics: EventMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// A stream took `n` events off its channel to send them.
    pub fn events_taken(&self, n: usize) {
        if let Some(m) = self.metrics.get() {
            m.pending.sub(n as i64);
            m.sent.inc_by(n as u64);
        }
    }

    /// `n` events were handed to a stream.
    fn events_handed(&self, n: usize) {
        if let Some(m) = self.metrics.get() {
            m.pending.add(n as i64);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Hub state changes are single map operations: a panic elsewhere
        // cannot leave it half-updated.
        crate::locks::lock(&self.state)
    }

    /// A key for a new client stream (given back with
    /// [`WatchHub::remove_stream`]).
    pub fn new_stream(&self) -> StreamKey {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// How many watchers, unsynced ones and open streams there are (for
    /// the metrics).
    pub fn counts(&self) -> WatchCounts {
        let state = self.lock();
        WatchCounts {
            watchers: state.watchers.len(),
            unsynced: state.unsynced.len(),
            streams: usize::try_from(self.open_streams.load(Ordering::Relaxed)).unwrap_or(0),
        }
    }

    /// Resolves when a sync round may have work (a watcher became unsynced).
    pub async fn wait_for_work(&self) {
        self.wake.notified().await;
    }

    /// Number of watchers (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.lock().watchers.len()
    }

    /// True when some watcher still needs history.
    pub fn has_unsynced(&self) -> bool {
        !self.lock().unsynced.is_empty()
    }

    /// True when nobody watches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a watcher; `current` is the store's revision (caller holds
    /// the store lock).
    pub(super) fn add(
        &self,
        spec: WatchSpec,
        stream: StreamKey,
        tx: mpsc::Sender<WatchMessage>,
        current: i64,
    ) -> WatcherKey {
        let key = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        let (next_rev, synced) = if spec.start_revision <= 0 || spec.start_revision > current {
            (spec.start_revision.max(current + 1), true)
        } else {
            (spec.start_revision, false)
        };
        let mut state = self.lock();
        state.watchers.insert(
            key,
            Watcher {
                stream,
                range: spec.range,
                next_rev,
                no_put: spec.no_put,
                no_delete: spec.no_delete,
                synced: false,
                tx,
            },
        );
        if synced {
            state.mark_synced(key);
        } else {
            state.unsynced.insert(key);
            drop(state);
            self.wake.notify_one();
        }
        key
    }

    /// Removes a watcher; false if it was not there.
    pub fn remove(&self, key: WatcherKey) -> bool {
        self.lock().remove(key)
    }

    /// Removes every watcher of a closed stream (once per stream).
    pub fn remove_stream(&self, stream: StreamKey) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
        let mut state = self.lock();
        let keys: Vec<WatcherKey> = state
            .watchers
            .iter()
            .filter(|(_, w)| w.stream == stream)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            state.remove(k);
        }
        state.progress_pending.remove(&stream);
    }

    /// Marks every watcher unsynced (caller holds the store's write lock):
    /// the store's history was replaced underneath them, so each catches up
    /// from its next revision through the history reads.
    pub(super) fn unsync_all(&self) {
        let mut state = self.lock();
        let keys: Vec<WatcherKey> = state.watchers.keys().copied().collect();
        for key in keys {
            state.mark_unsynced(key);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Delivers the events of a just-committed revision to synced watchers
    /// (caller holds the store's write lock).
    pub(super) fn notify(&self, revision: i64, events: &[Event]) {
        let mut state = self.lock();
        // The synced watchers these events may concern: those of a range,
        // and those of each changed key.
        let mut concerned: Vec<WatcherKey> = state.synced_ranges.iter().copied().collect();
        for kv in events.iter().filter_map(|e| e.kv.as_ref()) {
            if let Some(keys) = state.synced_keys.get(&kv.key) {
                concerned.extend_from_slice(keys);
            }
        }
        concerned.sort_unstable();
        concerned.dedup();
        let mut fell_behind = Vec::new();
        let mut handed = 0;
        for key in concerned {
            let Some(w) = state.watchers.get_mut(&key) else {
                continue;
            };
            if w.next_rev > revision {
                continue;
            }
            // Every event before this revision has been offered to it.
            w.next_rev = revision;
            let mine: Vec<Event> = events.iter().filter(|e| w.wants(e)).cloned().collect();
            if !mine.is_empty() {
                let n = mine.len();
                let msg = WatchMessage::Events {
                    watcher: key,
                    revision,
                    events: mine,
                };
                if w.tx.try_send(msg).is_err() {
                    // Buffer full (or stream gone): catch up from history
                    // later, from this revision.
                    fell_behind.push(key);
                    continue;
                }
                handed += n;
            }
            w.next_rev = revision + 1;
        }
        self.events_handed(handed);
        // Before `notified` moves: the ones that fell behind still need
        // this revision.
        for key in &fell_behind {
            state.mark_unsynced(*key);
        }
        state.notified = state.notified.max(revision);
        if !fell_behind.is_empty() {
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Sends progress to one synced watcher (caller holds the store lock).
    pub(super) fn progress(&self, key: WatcherKey, current: i64) {
        let state = self.lock();
        if let Some(w) = state.watchers.get(&key).filter(|w| w.synced) {
            // A full buffer skips this notification; the next one will do.
            let _ = w.tx.try_send(WatchMessage::Progress {
                watcher: Some(key),
                revision: current,
            });
        }
    }

    /// Sends stream-wide progress now if every watcher of the stream is
    /// synced, else as soon as they are (caller holds the store lock).
    pub(super) fn progress_all(
        &self,
        stream: StreamKey,
        tx: mpsc::Sender<WatchMessage>,
        current: i64,
    ) {
        let mut state = self.lock();
        let lagging = state
            .watchers
            .values()
            .any(|w| w.stream == stream && !w.synced);
        let progress = WatchMessage::Progress {
            watcher: None,
            revision: current,
        };
        // Lagging watchers, or a full buffer: answer once they are synced.
        if lagging || tx.try_send(progress).is_err() {
            state.progress_pending.insert(stream, tx);
        }
    }

    /// The unsynced watchers' needs: (key, next revision), and the smallest.
    pub(super) fn unsynced(&self) -> Vec<(WatcherKey, i64)> {
        let state = self.lock();
        state
            .unsynced
            .iter()
            .filter_map(|k| state.watchers.get(k).map(|w| (*k, w.next_rev)))
            .collect()
    }

    /// Delivers history `events` (every event of revisions `from..=to`, in
    /// order) to the unsynced watchers; `current` is the store's revision and
    /// `compacted` its compacted revision (caller holds the store's read lock).
    pub(super) fn deliver_history(
        &self,
        events: &[Event],
        to: i64,
        current: i64,
        compacted: i64,
    ) -> SyncOutcome {
        let mut state = self.lock();
        let keys: Vec<WatcherKey> = state.unsynced.iter().copied().collect();
        let mut done = Vec::new();
        let mut gone = Vec::new();
        let mut progressed = false;
        for key in keys {
            let Some(w) = state.watchers.get_mut(&key) else {
                done.push(key);
                continue;
            };
            // A watch AT the compacted revision is served (etcd's rule;
            // clients resume from `compact_revision`): only below is gone.
            if w.next_rev < compacted {
                let msg = WatchMessage::Compacted {
                    watcher: key,
                    compact_revision: compacted,
                };
                // On a full buffer, try again next round.
                if w.tx.try_send(msg).is_ok() {
                    gone.push(key);
                    progressed = true;
                }
                continue;
            }
            if w.next_rev > to {
                if w.next_rev > current {
                    done.push(key);
                }
                continue;
            }
            let mine: Vec<Event> = events.iter().filter(|e| w.wants(e)).cloned().collect();
            if !mine.is_empty() {
                let n = mine.len();
                let msg = WatchMessage::Events {
                    watcher: key,
                    revision: to,
                    events: mine,
                };
                if w.tx.try_send(msg).is_err() {
                    continue;
                }
                self.events_handed(n);
            }
            w.next_rev = to + 1;
            progressed = true;
            if to >= current {
                done.push(key);
            }
        }
        for key in &done {
            state.mark_synced(*key);
        }
        for key in &gone {
            state.remove(*key);
        }
        // Streams waiting for progress whose watchers are now all synced.
        let ready: Vec<StreamKey> = state
            .progress_pending
            .keys()
            .filter(|s| {
                !state
                    .watchers
                    .values()
                    .any(|w| w.stream == **s && !w.synced)
            })
            .copied()
            .collect();
        for s in ready {
            if let Some(tx) = state.progress_pending.get(&s) {
                let sent = tx.try_send(WatchMessage::Progress {
                    watcher: None,
                    revision: current,
                });
                if sent.is_ok() {
                    state.progress_pending.remove(&s);
                }
            }
        }
        SyncOutcome {
            unsynced: state.unsynced.len(),
            progressed,
        }
    }
}
