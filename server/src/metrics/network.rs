//! `etcd_network_*` of the peer side (etcd's `rafthttp/metrics.go`): what
//! the raft transport sends to and receives from each peer, the probes'
//! round trips, snapshot transfers. Peer ids label them as etcd does (`To`,
//! `From`, `Local`, `Remote`: hexadecimal ids).

use prometheus::Registry;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{exponential, histogram_vec, int_counter_vec, int_gauge_vec};

/// `etcd_network_*` (peers).
#[derive(Debug)]
pub struct NetworkMetrics {
    /// This member's id, etcd's `Local` label.
    local: String,
    sent_bytes: IntCounterVec,
    received_bytes: IntCounterVec,
    sent_failures: IntCounterVec,
    received_failures: IntCounterVec,
    round_trip: HistogramVec,
    active_peers: IntGaugeVec,
    disconnected_peers: IntCounterVec,
    snapshot_send_success: IntCounterVec,
    snapshot_send_failures: IntCounterVec,
    snapshot_send_seconds: HistogramVec,
    snapshot_receive_success: IntCounterVec,
    snapshot_receive_failures: IntCounterVec,
    snapshot_receive_seconds: HistogramVec,
    snapshot_send_inflights: IntGaugeVec,
    snapshot_receive_inflights: IntGaugeVec,
}

/// A snapshot transfer under way: counted in etcd's
/// `etcd_network_snapshot_{send,receive}_inflights_total` until dropped.
#[derive(Debug)]
pub struct Inflight(IntGauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One peer's handles, looked up once by the task that talks to it.
#[derive(Debug, Clone)]
pub struct PeerMetrics {
    /// etcd_network_peer_sent_bytes_total{To}: encoded raft messages.
    pub sent_bytes: IntCounter,
    /// etcd_network_peer_round_trip_time_seconds{To}: the prober's round
    /// trips.
    pub round_trip: Histogram,
    /// etcd_network_active_peers{Local, Remote}: 1 while a stream to the
    /// peer is open.
    pub active: IntGauge,
    /// etcd_network_disconnected_peers_total{Local, Remote}.
    pub disconnected: IntCounter,
}

/// Where a snapshot went, or came from.
#[derive(Debug, Clone, Copy)]
pub enum Transfer {
    /// Sent to that peer.
    Sent(u64),
    /// Received from that peer.
    Received(u64),
}

/// etcd's label for a member id.
pub fn id_label(id: u64) -> String {
    format!("{id:x}")
}

impl NetworkMetrics {
    pub(super) fn new(r: &Registry, member_id: u64) -> Result<Self, prometheus::Error> {
        let durations = || exponential(0.1, 2.0, 10);
        Ok(Self {
            local: id_label(member_id),
            sent_bytes: int_counter_vec(
                r,
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
            )?,
            received_bytes: int_counter_vec(
                r,
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                &["From"],
            )?,
            sent_failures: int_counter_vec(
                r,
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                &["To"],
            )?,
            received_failures: int_counter_vec(
                r,
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                &["From"],
            )?,
            round_trip: histogram_vec(
                r,
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                &["To"],
                exponential(0.0001, 2.0, 16),
            )?,
            active_peers: int_gauge_vec(
                r,
                "etcd_network_active_peers",
                "The current number of active peer connections.",
                &["Local", "Remote"],
            )?,
            disconnected_peers: int_counter_vec(
                r,
                "etcd_network_disconnected_peers_total",
                "The total number of disconnected peers.",
                &["Local", "Remote"],
            )?,
            snapshot_send_inflights: int_gauge_vec(
                r,
                "etcd_network_snapshot_send_inflights_total",
                "Total number of inflight snapshot sends",
                &["To"],
            )?,
            snapshot_receive_inflights: int_gauge_vec(
                r,
                "etcd_network_snapshot_receive_inflights_total",
                "Total number of inflight snapshot receives",
                &["From"],
            )?,
            snapshot_send_success: int_counter_vec(
                r,
                "etcd_network_snapshot_send_success",
                "Total number of successful snapshot sends",
                &["To"],
            )?,
            snapshot_send_failures: int_counter_vec(
                r,
                "etcd_network_snapshot_send_failures",
                "Total number of snapshot send failures",
                &["To"],
            )?,
            snapshot_send_seconds: histogram_vec(
                r,
                "etcd_network_snapshot_send_total_duration_seconds",
                "Total latency distributions of v3 snapshot sends",
                &["To"],
                durations(),
            )?,
            snapshot_receive_success: int_counter_vec(
                r,
                "etcd_network_snapshot_receive_success",
                "Total number of successful snapshot receives",
                &["From"],
            )?,
            snapshot_receive_failures: int_counter_vec(
                r,
                "etcd_network_snapshot_receive_failures",
                "Total number of snapshot receive failures",
                &["From"],
            )?,
            snapshot_receive_seconds: histogram_vec(
                r,
                "etcd_network_snapshot_receive_total_duration_seconds",
                "Total latency distributions of v3 snapshot receives",
                &["From"],
                durations(),
            )?,
        })
    }

    /// The handles of the peer `to`.
    pub fn peer(&self, to: u64) -> PeerMetrics {
        let remote = id_label(to);
        // Created at zero with the peer, so that the mixin's
        // `rate(etcd_network_peer_sent_failures_total[...])` has a series
        // before the first failure.
        self.sent_failures.with_label_values(&[&remote]);
        PeerMetrics {
            sent_bytes: self.sent_bytes.with_label_values(&[&remote]),
            round_trip: self.round_trip.with_label_values(&[&remote]),
            active: self.active_peers.with_label_values(&[&self.local, &remote]),
            disconnected: self
                .disconnected_peers
                .with_label_values(&[&self.local, &remote]),
        }
    }

    /// etcd_network_peer_received_bytes_total{From}: the receiving side
    /// looks it up once per stream (0 until the sender is known, as etcd
    /// labels an unknown sender).
    pub fn received_from(&self, from: u64) -> IntCounter {
        self.received_bytes.with_label_values(&[&id_label(from)])
    }

    /// A message to `to` could not be queued (its queue is full or closed).
    pub fn send_failed(&self, to: u64) {
        self.sent_failures.with_label_values(&[&id_label(to)]).inc();
    }

    /// A stream from `from` failed (a message did not decode).
    pub fn receive_failed(&self, from: u64) {
        self.received_failures
            .with_label_values(&[&id_label(from)])
            .inc();
    }

    /// A snapshot transfer begins; it is in flight until the value is
    /// dropped.
    pub fn inflight(&self, transfer: Transfer) -> Inflight {
        let gauge = match transfer {
            Transfer::Sent(to) => self
                .snapshot_send_inflights
                .with_label_values(&[&id_label(to)]),
            Transfer::Received(from) => self
                .snapshot_receive_inflights
                .with_label_values(&[&id_label(from)]),
        };
        gauge.inc();
        Inflight(gauge)
    }

    /// A snapshot transfer ended after `seconds`, well or not.
    pub fn snapshot(&self, transfer: Transfer, ok: bool, seconds: f64) {
        let (peer, success, failures, duration) = match transfer {
            Transfer::Sent(to) => (
                to,
                &self.snapshot_send_success,
                &self.snapshot_send_failures,
                &self.snapshot_send_seconds,
            ),
            Transfer::Received(from) => (
                from,
                &self.snapshot_receive_success,
                &self.snapshot_receive_failures,
                &self.snapshot_receive_seconds,
            ),
        };
        let label = id_label(peer);
        if ok {
            success.with_label_values(&[&label]).inc();
            // etcd observes the duration of successful transfers only.
            duration.with_label_values(&[&label]).observe(seconds);
        } else {
            failures.with_label_values(&[&label]).inc();
        }
    }
}
