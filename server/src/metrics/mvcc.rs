//! `etcd_mvcc_*` and `etcd_debugging_mvcc_*` (etcd's
//! `server/storage/mvcc/metrics.go`).

use prometheus::{Histogram, IntCounter, IntGauge, Registry};

use super::{exponential, histogram, int_counter, int_gauge};
use crate::mvcc::Store;

/// What the store updates as it reads and writes: one atomic add per
/// operation.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// etcd_mvcc_range_total: every range, alone or inside a transaction
    /// (counted through [`StoreMetrics::ranges`]).
    range: IntCounter,
    /// etcd_debugging_mvcc_range_total: the same count under its older
    /// name, which etcd 3.5 still exports.
    range_debugging: IntCounter,
    /// etcd_mvcc_put_total: every put inside a write transaction.
    pub put: IntCounter,
    /// etcd_mvcc_delete_total: every delete-range inside a write transaction.
    pub delete: IntCounter,
    /// etcd_mvcc_txn_total: write transactions of more than one operation
    /// (etcd's rule: a lone put is not counted as a txn).
    pub txn: IntCounter,
    /// etcd_debugging_mvcc_total_put_size_in_bytes: key and value bytes put.
    pub put_size: IntGauge,
    /// etcd_disk_backend_commit_duration_seconds (see
    /// [`super::disk::BackendMetrics::commit`]).
    pub commit: Histogram,
    /// etcd_debugging_mvcc_db_compaction_keys_total: records deleted by
    /// compactions.
    pub compacted_keys: IntCounter,
    /// etcd_debugging_mvcc_db_compaction_total_duration_milliseconds.
    pub compaction_duration_ms: Histogram,
    /// etcd_debugging_mvcc_db_compaction_last: unix time of the last
    /// compaction (0 until one ran since start).
    pub compaction_last: IntGauge,
    /// etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds:
    /// the logical part of a compaction (the key index's), during which
    /// the store's writers wait.
    pub index_compaction_pause_ms: Histogram,
    /// etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds: each
    /// bounded batch of the physical part (etcd's writers wait for each of
    /// its batches; Cairn's do not, so here it is the batch's duration).
    pub db_compaction_pause_ms: Histogram,
    /// The watch hub's event counters.
    pub events: crate::mvcc::EventMetrics,
}

impl StoreMetrics {
    /// Counts `n` ranges.
    pub fn ranges(&self, n: u64) {
        self.range.inc_by(n);
        self.range_debugging.inc_by(n);
    }
}

/// `etcd_mvcc_*`: the store's counters, and the current values read at
/// each scrape.
#[derive(Debug)]
pub struct MvccMetrics {
    /// Counters the store updates (the commit histogram is added by
    /// [`super::Metrics::store`]).
    counters: StoreCounters,
    db_total_size: IntGauge,
    db_total_size_in_use: IntGauge,
    keys: IntGauge,
    current_revision: IntGauge,
    compact_revision: IntGauge,
    watchers: IntGauge,
    watch_streams: IntGauge,
    slow_watchers: IntGauge,
    /// etcd_mvcc_hash_duration_seconds: Maintenance.Hash.
    pub hash: Histogram,
    /// etcd_mvcc_hash_rev_duration_seconds: Maintenance.HashKV.
    pub hash_rev: Histogram,
}

/// The counters of [`StoreMetrics`] that belong to this file.
#[derive(Debug, Clone)]
struct StoreCounters {
    range: IntCounter,
    range_debugging: IntCounter,
    put: IntCounter,
    delete: IntCounter,
    txn: IntCounter,
    put_size: IntGauge,
    compacted_keys: IntCounter,
    compaction_duration_ms: Histogram,
    compaction_last: IntGauge,
    index_compaction_pause_ms: Histogram,
    db_compaction_pause_ms: Histogram,
    events: crate::mvcc::EventMetrics,
}

impl MvccMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let counters = StoreCounters {
            range: int_counter(
                r,
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            )?,
            range_debugging: int_counter(
                r,
                "etcd_debugging_mvcc_range_total",
                "Total number of ranges seen by this member.",
            )?,
            put: int_counter(
                r,
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            )?,
            delete: int_counter(
                r,
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            )?,
            txn: int_counter(
                r,
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            )?,
            put_size: int_gauge(
                r,
                "etcd_debugging_mvcc_total_put_size_in_bytes",
                "The total size of put kv pairs seen by this member.",
            )?,
            compacted_keys: int_counter(
                r,
                "etcd_debugging_mvcc_db_compaction_keys_total",
                "Total number of db keys compacted.",
            )?,
            compaction_duration_ms: histogram(
                r,
                "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
                "Bucketed histogram of db compaction total duration.",
                exponential(100.0, 2.0, 14),
            )?,
            compaction_last: int_gauge(
                r,
                "etcd_debugging_mvcc_db_compaction_last",
                "The unix time of the last db compaction. Resets to 0 on start.",
            )?,
            index_compaction_pause_ms: histogram(
                r,
                "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds",
                "Bucketed histogram of index compaction pause duration.",
                // 0.5 ms up to 4 s, as etcd's.
                exponential(0.5, 2.0, 14),
            )?,
            db_compaction_pause_ms: histogram(
                r,
                "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
                "Bucketed histogram of db compaction pause duration.",
                // 1 ms up to 4 s, as etcd's.
                exponential(1.0, 2.0, 13),
            )?,
            events: crate::mvcc::EventMetrics {
                pending: int_gauge(
                    r,
                    "etcd_debugging_mvcc_pending_events_total",
                    "Total number of pending events to be sent.",
                )?,
                sent: int_counter(
                    r,
                    "etcd_debugging_mvcc_events_total",
                    "Total number of events sent by this member.",
                )?,
            },
        };
        Ok(Self {
            counters,
            db_total_size: int_gauge(
                r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            )?,
            db_total_size_in_use: int_gauge(
                r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            )?,
            keys: int_gauge(r, "etcd_debugging_mvcc_keys_total", "Total number of keys.")?,
            current_revision: int_gauge(
                r,
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            )?,
            compact_revision: int_gauge(
                r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            )?,
            watchers: int_gauge(
                r,
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            )?,
            watch_streams: int_gauge(
                r,
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            )?,
            slow_watchers: int_gauge(
                r,
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
            )?,
            hash: histogram(
                r,
                "etcd_mvcc_hash_duration_seconds",
                "The latency distribution of storage hash operation.",
                exponential(0.01, 2.0, 15),
            )?,
            hash_rev: histogram(
                r,
                "etcd_mvcc_hash_rev_duration_seconds",
                "The latency distribution of storage hash by revision operation.",
                exponential(0.01, 2.0, 15),
            )?,
        })
    }

    /// The store's handles, with the backend's commit histogram.
    pub(super) fn store(&self, commit: Histogram) -> StoreMetrics {
        let c = self.counters.clone();
        StoreMetrics {
            range: c.range,
            range_debugging: c.range_debugging,
            put: c.put,
            delete: c.delete,
            txn: c.txn,
            put_size: c.put_size,
            commit,
            compacted_keys: c.compacted_keys,
            compaction_duration_ms: c.compaction_duration_ms,
            compaction_last: c.compaction_last,
            index_compaction_pause_ms: c.index_compaction_pause_ms,
            db_compaction_pause_ms: c.db_compaction_pause_ms,
            events: c.events,
        }
    }

    /// The current values: sizes, revisions, keys and watchers.
    pub(super) fn refresh(&self, store: &Store) {
        let size = store.engine().size();
        self.db_total_size.set(clamp(size.total));
        self.db_total_size_in_use.set(clamp(size.in_use));
        self.keys.set(store.live_keys());
        self.current_revision.set(store.current_revision());
        self.compact_revision.set(store.compact_revision().max(0));
        let watch = store.watch_hub().counts();
        self.watchers.set(clamp(watch.watchers as u64));
        self.watch_streams.set(clamp(watch.streams as u64));
        self.slow_watchers.set(clamp(watch.unsynced as u64));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
