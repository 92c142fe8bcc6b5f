//! etcd's defaults, in one place: [`crate::config::Config::default`], the
//! `cairn` binary's flags (and so `--config-file`, which goes through them)
//! and `cairn snapshot restore` all take them from here.

use std::time::Duration;

/// `--name`.
pub const NAME: &str = "default";
/// `--data-dir` when not given: `${name}.cairn` (etcd's is `${name}.etcd`).
pub fn data_dir(name: &str) -> std::path::PathBuf {
    format!("{name}.cairn").into()
}
/// `--listen-client-urls` and `--advertise-client-urls`.
pub const CLIENT_URL: &str = "http://localhost:2379";
/// `--listen-peer-urls` and `--initial-advertise-peer-urls`.
pub const PEER_URL: &str = "http://localhost:2380";
/// `--initial-cluster-token`.
pub const INITIAL_CLUSTER_TOKEN: &str = "etcd-cluster";
/// `--heartbeat-interval`, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// `--election-timeout`, in milliseconds.
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
/// `--snapshot-count`.
pub const SNAPSHOT_COUNT: u64 = 10_000;
/// `--experimental-snapshot-catchup-entries`.
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;
/// `--quota-backend-bytes` (2 GiB).
pub const QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// `--experimental-kv-cache-bytes` (Cairn's; 512 MiB): the most memory the
/// block cache of the records' family holds (why that size:
/// [`crate::storage::DEFAULT_KV_CACHE_BYTES`]).
pub const KV_CACHE_BYTES: u64 = crate::storage::DEFAULT_KV_CACHE_BYTES as u64;
/// `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// `--max-concurrent-streams` (no limit).
pub const MAX_CONCURRENT_STREAMS: u32 = u32::MAX;
/// `--experimental-lease-checkpoint-interval`.
pub const LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// [`LEASE_CHECKPOINT_INTERVAL`] as the flag shows it (Go's format).
pub const LEASE_CHECKPOINT_INTERVAL_TEXT: &str = "5m0s";
/// `--experimental-watch-progress-notify-interval`.
pub const WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// [`WATCH_PROGRESS_NOTIFY_INTERVAL`] as the flag shows it (Go's format).
pub const WATCH_PROGRESS_NOTIFY_INTERVAL_TEXT: &str = "10m0s";

/// `--self-signed-cert-validity`: years an `--auto-tls` certificate is valid.
pub const SELF_SIGNED_CERT_VALIDITY: u32 = 1;
/// `--tls-min-version`.
pub const TLS_MIN_VERSION: &str = "TLS1.2";

/// `--auth-token`: etcd's simple tokens.
pub const AUTH_TOKEN: &str = "simple";
/// `--auth-token-ttl` in seconds: how long a simple token lives unused.
pub const AUTH_TOKEN_TTL_SECS: u64 = 300;
/// [`AUTH_TOKEN_TTL_SECS`] as a duration.
pub const AUTH_TOKEN_TTL: Duration = Duration::from_secs(AUTH_TOKEN_TTL_SECS);
/// `--bcrypt-cost`: Go's `bcrypt.DefaultCost`.
pub const BCRYPT_COST: u32 = 10;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::duration::parse_go_duration;

    /// The flags' text defaults say the same as the durations.
    #[test]
    fn texts_match_durations() {
        for (text, duration) in [
            (LEASE_CHECKPOINT_INTERVAL_TEXT, LEASE_CHECKPOINT_INTERVAL),
            (
                WATCH_PROGRESS_NOTIFY_INTERVAL_TEXT,
                WATCH_PROGRESS_NOTIFY_INTERVAL,
            ),
        ] {
            assert_eq!(parse_go_duration(text).unwrap(), duration, "{text}");
        }
    }
}
