//! `etcd_disk_*`: etcd's WAL (`server/storage/wal/metrics.go`) is Cairn's
//! raft log, etcd's backend (`server/storage/backend/metrics.go`) is the
//! store's RocksDB writes.

use prometheus::{Gauge, Histogram, IntGauge, Registry};

use super::{exponential, gauge, histogram, int_gauge};

/// The raft log's writes (etcd's WAL).
#[derive(Debug, Clone)]
pub struct WalMetrics {
    /// etcd_disk_wal_fsync_duration_seconds: every synced append of the raft
    /// log (the group commit: one per Ready that must sync).
    pub fsync: Histogram,
    /// etcd_disk_wal_write_bytes_total: bytes of entries and hard states
    /// appended (a gauge in etcd, whatever its name).
    pub write_bytes: Gauge,
}

impl WalMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            fsync: histogram(
                r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                exponential(0.001, 2.0, 14),
            )?,
            write_bytes: gauge(
                r,
                "etcd_disk_wal_write_bytes_total",
                "Total number of bytes written in WAL.",
            )?,
        })
    }
}

/// The store's writes (etcd's bbolt backend).
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// etcd_disk_backend_commit_duration_seconds: every write transaction's
    /// batch written to RocksDB (not synced: the raft log is the durable
    /// copy, so this is RocksDB's write path, where bbolt's includes fsync).
    pub commit: Histogram,
    /// etcd_disk_backend_defrag_duration_seconds.
    pub defrag: Histogram,
    /// etcd_disk_defrag_inflight: 1 while a defragmentation runs.
    pub defrag_inflight: IntGauge,
    /// etcd_disk_backend_snapshot_duration_seconds: a `snapshot save`
    /// stream, from its first byte to its last.
    pub snapshot: Histogram,
}

impl BackendMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            commit: histogram(
                r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                exponential(0.001, 2.0, 14),
            )?,
            defrag: histogram(
                r,
                "etcd_disk_backend_defrag_duration_seconds",
                "The latency distribution of backend defragmentation.",
                exponential(0.1, 2.0, 13),
            )?,
            defrag_inflight: int_gauge(
                r,
                "etcd_disk_defrag_inflight",
                "Whether or not defrag is active on the member. 1 means active, 0 means not.",
            )?,
            snapshot: histogram(
                r,
                "etcd_disk_backend_snapshot_duration_seconds",
                "The latency distribution of backend snapshots.",
                exponential(0.01, 2.0, 17),
            )?,
        })
    }
}
