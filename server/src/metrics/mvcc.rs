//! `etcd_mvcc_*` and `etcd_debugging_mvcc_*` (etcd's
//! `server/storage/mvcc/metrics.go`).

use prometheus::{Histogram, IntCounter, IntGauge, Registry};

use super::{exponential, histogram, int_counter, int_gauge};
use crate::mvcc::Store;

/// What the store updates as it reads and writes: one atomic add per
/// operation.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// etcd_mvcc_range_total: every range, alone or inside a transaction.
    pub range: IntCounter,
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
    put: IntCounter,
    delete: IntCounter,
    txn: IntCounter,
    put_size: IntGauge,
    compacted_keys: IntCounter,
    compaction_duration_ms: Histogram,
    compaction_last: IntGauge,
}

impl MvccMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let counters = StoreCounters {
            range: int_counter(
                r,
                "etcd_mvcc_range_total",
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
            put: c.put,
            delete: c.delete,
            txn: c.txn,
            put_size: c.put_size,
            commit,
            compacted_keys: c.compacted_keys,
            compaction_duration_ms: c.compaction_duration_ms,
            compaction_last: c.compaction_last,
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
