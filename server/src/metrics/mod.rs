//! Prometheus metrics with etcd's names, types, labels and buckets, so that
//! etcd's dashboards and alerts (the etcd mixin) work on Cairn unchanged;
//! Cairn's own additions are under `cairn_` (see `docs/metrics.md` for the
//! full list, and what is missing and why).
//!
//! One [`Metrics`] per member, with its own registry: tests run several
//! members in one process, and a process-wide default registry would mix
//! them up. Each layer gets the handles it updates when it is built (the
//! store its counters, the raft log its fsync histogram, ...), as an
//! `Option` so that unit tests build those layers without any.
//!
//! Two kinds of metric, by cost:
//!
//! - On the hot path (a request, a commit, an fsync): counters and
//!   histograms, which are atomics. Labelled ones are looked up once and
//!   kept (a peer task keeps its peer's counters; the gRPC layer has every
//!   method's counters in a table built at start), so a request pays no
//!   lock and no allocation for them.
//! - Everything that is a current value (leader, sizes, revisions, key and
//!   watcher counts, raft indexes) is read when scraped ([`Metrics::render`]),
//!   so it costs nothing in between.

pub mod cairn;
pub mod disk;
pub mod grpc;
pub mod layer;
pub mod lease;
pub mod mvcc;
pub mod network;
pub mod process;
pub mod server;

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::member::Apis;

/// `--metrics`: how much etcd exports. `extensive` adds the gRPC handling
/// time histograms (grpc-go-prometheus's `EnableHandlingTimeHistogram`),
/// which the mixin's `etcdGRPCRequestsSlow` alert needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Level {
    /// etcd's default.
    #[default]
    Basic,
    /// With `grpc_server_handling_seconds`.
    Extensive,
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "basic" => Ok(Level::Basic),
            "extensive" => Ok(Level::Extensive),
            // etcd's message for any other value.
            other => Err(format!("unknown metrics {other:?}")),
        }
    }
}

/// A member's metrics: its registry and the handles each layer updates.
pub struct Metrics {
    /// Everything below is registered here, and only here.
    registry: Registry,
    /// etcd_server_*, etcd_cluster_version, health checks.
    pub server: server::ServerMetrics,
    /// The raft log's fsync and write bytes (etcd's WAL).
    pub wal: disk::WalMetrics,
    /// The store's commits, defragmentation and snapshots (etcd's backend).
    pub backend: disk::BackendMetrics,
    /// etcd_mvcc_* and etcd_debugging_mvcc_*.
    pub mvcc: mvcc::MvccMetrics,
    /// Peers: bytes, round trips, snapshots (etcd's rafthttp).
    pub network: Arc<network::NetworkMetrics>,
    /// grpc_server_* and the client gRPC bytes.
    pub grpc: Arc<grpc::GrpcMetrics>,
    /// cairn_*: zone, encryption keys and re-sealing.
    pub cairn: cairn::CairnMetrics,
    /// process_* and os_fd_*.
    process: process::ProcessMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric of a member whose id is `member_id`, registered in a
    /// registry of its own.
    pub fn new(level: Level, member_id: u64) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Self {
            server: server::ServerMetrics::new(r, member_id, lease::LeaseMetrics::new(r)?)?,
            wal: disk::WalMetrics::new(r)?,
            backend: disk::BackendMetrics::new(r)?,
            mvcc: mvcc::MvccMetrics::new(r)?,
            network: Arc::new(network::NetworkMetrics::new(r, member_id)?),
            grpc: Arc::new(grpc::GrpcMetrics::new(r, level)?),
            cairn: cairn::CairnMetrics::new(r)?,
            process: process::ProcessMetrics::new(r)?,
            registry,
        })
    }

    /// The store's handles (its counters and the backend commit histogram).
    pub fn store(&self) -> mvcc::StoreMetrics {
        self.mvcc.store(self.backend.commit.clone())
    }

    /// What the Maintenance API times.
    pub fn maintenance(&self) -> MaintenanceMetrics {
        MaintenanceMetrics {
            hash: self.mvcc.hash.clone(),
            hash_rev: self.mvcc.hash_rev.clone(),
            defrag: self.backend.defrag.clone(),
            defrag_inflight: self.backend.defrag_inflight.clone(),
            snapshot: self.backend.snapshot.clone(),
        }
    }

    /// The scrape: current values read from `apis`, then every metric in
    /// Prometheus' text format (version 0.0.4, as etcd serves it).
    pub fn render(&self, apis: &Apis) -> String {
        self.server.refresh(apis);
        self.mvcc.refresh(apis.store());
        self.cairn.refresh(apis);
        self.process.refresh();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The Maintenance API's durations (etcd's hash, defragmentation and
/// snapshot histograms).
#[derive(Debug, Clone)]
pub struct MaintenanceMetrics {
    /// etcd_mvcc_hash_duration_seconds: Maintenance.Hash.
    pub hash: Histogram,
    /// etcd_mvcc_hash_rev_duration_seconds: Maintenance.HashKV.
    pub hash_rev: Histogram,
    /// etcd_disk_backend_defrag_duration_seconds.
    pub defrag: Histogram,
    /// etcd_disk_defrag_inflight.
    pub defrag_inflight: IntGauge,
    /// etcd_disk_backend_snapshot_duration_seconds.
    pub snapshot: Histogram,
}

/// The content type of [`Metrics::render`]'s text (etcd's).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Go's `prometheus.ExponentialBuckets(start, factor, count)`: etcd's
/// buckets are all written this way.
pub fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    let mut buckets = Vec::with_capacity(count);
    let mut next = start;
    for _ in 0..count {
        buckets.push(next);
        next *= factor;
    }
    buckets
}

fn int_counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let metric = IntCounter::with_opts(Opts::new(name, help))?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn int_counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let metric = IntGauge::with_opts(Opts::new(name, help))?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn int_gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
    let metric = Gauge::with_opts(Opts::new(name, help))?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> Result<Histogram, prometheus::Error> {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, prometheus::Error> {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Seconds since `start`, for a histogram.
pub fn since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn exponential_buckets_are_gos() {
        assert_eq!(exponential(0.001, 2.0, 3), [0.001, 0.002, 0.004]);
        assert_eq!(exponential(1.0, 2.0, 14).last().copied(), Some(8192.0));
    }

    #[test]
    fn every_name_registers_once_per_member() {
        // Two members in one process: two registries, no clash.
        let a = Metrics::new(Level::Extensive, 1).unwrap();
        let b = Metrics::new(Level::Basic, 2).unwrap();
        let handling = |m: &Metrics| {
            m.registry
                .gather()
                .iter()
                .any(|f| f.name() == "grpc_server_handling_seconds")
        };
        // Only `--metrics extensive` has the handling time histograms.
        assert!(handling(&a));
        assert!(!handling(&b));
        assert_eq!("extensive".parse::<Level>(), Ok(Level::Extensive));
        assert!("full".parse::<Level>().is_err());
    }
}
