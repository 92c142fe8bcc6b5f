//! A member's configuration: every flag of `cairn` (etcd's names), with
//! etcd's defaults (taken from [`crate::defaults`]). The binary's flags,
//! `--config-file` and `embed::start` all build this one struct.
//!
//! A leaf module: start-up ([`crate::bootstrap`]), the lifecycle log lines
//! and `embed` read it; it depends on none of them.

use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::lease::LessorConfig;

/// A configuration that cannot describe a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL flag is not `http://host:port` or `https://host:port`.
    #[error("invalid URL {0:?}: expected http://host:port or https://host:port")]
    BadUrl(String),
    /// `--initial-cluster` is malformed or does not name this member.
    #[error("--initial-cluster: {0}")]
    BadCluster(String),
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    #[default]
    New,
    /// Join a cluster that already added this member.
    Existing,
}

/// What auto compaction does (`--auto-compaction-mode`,
/// `--auto-compaction-retention`); [`crate::tasks::compactor`] does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoCompaction {
    /// Nothing (retention 0, etcd's default).
    #[default]
    Off,
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

impl AutoCompaction {
    /// From etcd's two flags. `mode` is `periodic` or `revision`; for
    /// periodic, `retention` is a whole number of hours or a Go duration
    /// (`5m`, `1h30m`); for revision, a number of revisions. A retention of
    /// 0 turns auto compaction off.
    pub fn from_flags(mode: &str, retention: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid --auto-compaction-retention {retention:?} for mode {mode}: {why}")
        };
        match mode {
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => hours
                        .checked_mul(3600)
                        .map(Duration::from_secs)
                        .ok_or_else(|| bad("too long"))?,
                    Err(_) => parse_go_duration(retention)
                        .map_err(|_| bad("expected hours or a duration such as 30m"))?,
                };
                Ok(if period.is_zero() {
                    Self::Off
                } else {
                    Self::Periodic(period)
                })
            }
            "revision" => {
                let revisions: i64 = retention
                    .parse()
                    .map_err(|_| bad("expected a number of revisions"))?;
                if revisions < 0 {
                    return Err(bad("must not be negative"));
                }
                Ok(if revisions == 0 {
                    Self::Off
                } else {
                    Self::Revision(revisions)
                })
            }
            other => Err(format!(
                "invalid --auto-compaction-mode {other:?}: expected periodic or revision"
            )),
        }
    }
}

/// Everything a member needs to start. Defaults are etcd's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Human-readable member name (`--name`).
    pub name: String,
    /// Where the data lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// Client URLs to listen on (`--listen-client-urls`); port 0 picks a free port.
    pub listen_client_urls: Vec<String>,
    /// Client URLs announced to clients (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<String>,
    /// Peer URLs announced to other members (`--initial-advertise-peer-urls`);
    /// with the token they determine the member id, as in etcd.
    pub initial_advertise_peer_urls: Vec<String>,
    /// Cluster token (`--initial-cluster-token`).
    pub initial_cluster_token: String,
    /// Peer URLs to listen on (`--listen-peer-urls`); port 0 picks a free port.
    pub listen_peer_urls: Vec<String>,
    /// The bootstrap membership, `name=url,name=url,...`
    /// (`--initial-cluster`); empty = this member alone, `name=` its
    /// advertised peer URLs (etcd's default).
    pub initial_cluster: String,
    /// `--initial-cluster-state`: bootstrap a new cluster, or join an
    /// existing one (after a MemberAdd).
    pub initial_cluster_state: ClusterState,
    /// This member's availability zone (`--zone`).
    pub zone: String,
    /// Local address this member connects to its peers from
    /// (`--experimental-peer-source-address`, a Cairn extension); `None`:
    /// the OS chooses. cairn-jepsen's fault proxy tells members apart by it.
    pub peer_source_address: Option<std::net::IpAddr>,
    /// Test only: serve linearizable reads without ReadIndex, so that
    /// cairn-jepsen can prove it catches stale reads. Honoured only in builds
    /// with the `jepsen-broken` feature (`--experimental-jepsen-broken-stale-reads`
    /// exists only there); ignored otherwise.
    pub jepsen_broken_stale_reads: bool,
    /// One raft tick (`--heartbeat-interval`, default 100 ms).
    pub heartbeat_interval: std::time::Duration,
    /// Compact the raft log every this many applied entries
    /// (`--snapshot-count`, default 10,000).
    pub snapshot_count: u64,
    /// Entries kept after a log compaction for slow followers
    /// (`--experimental-snapshot-catchup-entries`, default 5,000).
    pub snapshot_catchup_entries: u64,
    /// Database size past which writes are refused with NOSPACE
    /// (`--quota-backend-bytes`, default 2 GiB).
    pub quota_backend_bytes: u64,
    /// The most memory the block cache of the records' RocksDB family holds
    /// (`--experimental-kv-cache-bytes`, Cairn's; default 512 MiB, 0 = no
    /// cache): memory spent so that a large store's reads keep a small
    /// one's rate; a member short of memory can spend less.
    pub kv_cache_bytes: u64,
    /// How often the leader compares members' HashKV and raises CORRUPT on
    /// a mismatch (`--experimental-corrupt-check-time`; zero = off, etcd's
    /// default).
    pub corrupt_check_time: std::time::Duration,
    /// Auto compaction (`--auto-compaction-mode`,
    /// `--auto-compaction-retention`; off by default, as etcd).
    pub auto_compaction: AutoCompaction,
    /// The master key file (`--encryption-key-file`: 32 bytes raw or
    /// base64, mode 0600 or stricter). None: `<data-dir>.key`, generated on
    /// first start (for development only; logged loudly).
    pub encryption_key_file: Option<PathBuf>,
    /// The master key the data keys are wrapped with now, when rotating the
    /// master key (`--previous-encryption-key-file`): they are re-wrapped
    /// under `encryption_key_file` at start.
    pub previous_encryption_key_file: Option<PathBuf>,
    /// Raft election timeout (`--election-timeout`, default 1000 ms). Before
    /// raft exists it sets the lease rules that derive from it: the minimum
    /// lease TTL, ceil(1.5 × timeout) seconds, and the extension every lease
    /// gets when a leader (or a restarted member) takes over.
    pub election_timeout: std::time::Duration,
    /// Periodically checkpoint the remaining TTL of long leases, so that a
    /// restart resumes them instead of granting their full TTL again
    /// (`--experimental-enable-lease-checkpoint`; on by default in Cairn, off
    /// in etcd 3.5).
    pub experimental_enable_lease_checkpoint: bool,
    /// How often a lease is checkpointed
    /// (`--experimental-lease-checkpoint-interval`, default 5 minutes).
    pub experimental_lease_checkpoint_interval: std::time::Duration,
    /// Largest write request accepted (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations in one txn branch (`--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Which tokens Authenticate hands out (`--auth-token`, etcd's simple
    /// tokens by default).
    pub auth_token: crate::auth::TokenKind,
    /// How long a simple token lives after its last use
    /// (`--auth-token-ttl`, 300 s).
    pub auth_token_ttl: std::time::Duration,
    /// bcrypt cost of password hashes (`--bcrypt-cost`, 10).
    pub bcrypt_cost: u32,
    /// How often watchers that asked for it get a progress notification
    /// (`--experimental-watch-progress-notify-interval`, default 10 minutes).
    pub watch_progress_notify_interval: std::time::Duration,
    /// Most HTTP/2 streams one client connection may have open at once
    /// (`--max-concurrent-streams`; etcd's default, `u32::MAX`, is no
    /// limit). Past it, a client's further requests wait for a free stream.
    pub max_concurrent_streams: u32,
    /// Refuse membership changes that would leave the cluster without a
    /// quorum of started, reachable voters (`--strict-reconfig-check`, on
    /// by default as in etcd; see [`crate::reconfig`]).
    pub strict_reconfig_check: bool,
    /// Before serving, compare this member's HashKV with its peers' and
    /// refuse to start on a mismatch
    /// (`--experimental-initial-corrupt-check`, off by default as in etcd
    /// 3.5; see [`crate::bootstrap::recovery::initial_corrupt_check`]).
    pub initial_corrupt_check: bool,
    /// Disaster recovery (`--force-new-cluster`): restart this member as
    /// the only voter of its cluster, with all its committed data (see
    /// [`crate::bootstrap::recovery::force_new_cluster`]). Start with it once, then
    /// without it.
    pub force_new_cluster: bool,
    /// Client and peer TLS (`--cert-file`, `--peer-cert-file`, ...; see
    /// [`TlsSettings`]).
    pub tls: TlsSettings,
    /// Extra URLs that serve only `/metrics` and the health endpoints, no
    /// gRPC (`--listen-metrics-urls`); `https://` ones with the client TLS.
    pub listen_metrics_urls: Vec<String>,
    /// `--metrics`: `basic` (etcd's default) or `extensive` (adds the gRPC
    /// handling time histograms).
    pub metrics: crate::metrics::Level,
}

/// TLS for clients and peers, etcd's flags (see the `cairn-tls` crate).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The client side: `--cert-file`, `--key-file`, `--client-cert-auth`,
    /// `--trusted-ca-file`, `--client-crl-file`.
    pub client: cairn_tls::TlsInfo,
    /// `--auto-tls`: a self-signed client certificate in
    /// `<data-dir>/fixtures/client` when none is given.
    pub client_auto_tls: bool,
    /// The peer side, for listening and dialing: `--peer-cert-file`,
    /// `--peer-key-file`, `--peer-client-cert-auth`,
    /// `--peer-trusted-ca-file`, `--peer-crl-file`,
    /// `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`.
    pub peer: cairn_tls::TlsInfo,
    /// `--peer-auto-tls`: a self-signed peer certificate in
    /// `<data-dir>/fixtures/peer` when none is given (peers' certificates
    /// are then not verified, as in etcd).
    pub peer_auto_tls: bool,
    /// Years a self-signed certificate is valid
    /// (`--self-signed-cert-validity`, default 1).
    pub self_signed_cert_validity: u32,
    /// TLS 1.2 cipher suites, Go's names (`--cipher-suites`; empty: all).
    pub cipher_suites: Vec<String>,
    /// `--tls-min-version` (`TLS1.2`, etcd's default, or `TLS1.3`).
    pub min_version: String,
    /// `--tls-max-version` (empty: no bound).
    pub max_version: String,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            client: cairn_tls::TlsInfo::default(),
            client_auto_tls: false,
            peer: cairn_tls::TlsInfo::default(),
            peer_auto_tls: false,
            self_signed_cert_validity: crate::defaults::SELF_SIGNED_CERT_VALIDITY,
            cipher_suites: Vec::new(),
            min_version: crate::defaults::TLS_MIN_VERSION.into(),
            max_version: String::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        use crate::defaults as d;
        Self {
            name: d::NAME.into(),
            data_dir: d::data_dir(d::NAME),
            listen_client_urls: vec![d::CLIENT_URL.into()],
            advertise_client_urls: vec![d::CLIENT_URL.into()],
            initial_advertise_peer_urls: vec![d::PEER_URL.into()],
            initial_cluster_token: d::INITIAL_CLUSTER_TOKEN.into(),
            listen_peer_urls: vec![d::PEER_URL.into()],
            initial_cluster: String::new(),
            initial_cluster_state: ClusterState::New,
            zone: String::new(),
            peer_source_address: None,
            jepsen_broken_stale_reads: false,
            heartbeat_interval: std::time::Duration::from_millis(d::HEARTBEAT_INTERVAL_MS),
            snapshot_count: d::SNAPSHOT_COUNT,
            snapshot_catchup_entries: d::SNAPSHOT_CATCHUP_ENTRIES,
            quota_backend_bytes: d::QUOTA_BACKEND_BYTES,
            kv_cache_bytes: d::KV_CACHE_BYTES,
            corrupt_check_time: std::time::Duration::ZERO,
            auto_compaction: AutoCompaction::Off,
            encryption_key_file: None,
            previous_encryption_key_file: None,
            election_timeout: std::time::Duration::from_millis(d::ELECTION_TIMEOUT_MS),
            experimental_enable_lease_checkpoint: true,
            experimental_lease_checkpoint_interval: d::LEASE_CHECKPOINT_INTERVAL,
            max_request_bytes: d::MAX_REQUEST_BYTES,
            max_txn_ops: d::MAX_TXN_OPS,
            auth_token: crate::auth::TokenKind::Simple,
            auth_token_ttl: d::AUTH_TOKEN_TTL,
            bcrypt_cost: d::BCRYPT_COST,
            watch_progress_notify_interval: d::WATCH_PROGRESS_NOTIFY_INTERVAL,
            max_concurrent_streams: d::MAX_CONCURRENT_STREAMS,
            strict_reconfig_check: true,
            initial_corrupt_check: false,
            force_new_cluster: false,
            listen_metrics_urls: Vec::new(),
            metrics: crate::metrics::Level::Basic,
            tls: TlsSettings::default(),
        }
    }
}

impl Config {
    /// The bootstrap membership: (name, peer URLs) in the order given.
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, Error> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(vec![(
                self.name.clone(),
                self.initial_advertise_peer_urls.clone(),
            )]);
        }
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for part in self.initial_cluster.split(',').map(str::trim) {
            let Some((name, url)) = part.split_once('=') else {
                return Err(Error::BadCluster(format!("{part:?} is not name=url")));
            };
            host_port(url)?;
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        Ok(members)
    }

    /// How long a proposal may wait (etcd: 5 s + 2 election timeouts).
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// The lessor settings these flags give (see [`Config::election_timeout`]).
    pub fn lessor_config(&self) -> LessorConfig {
        LessorConfig {
            checkpoint_interval: self
                .experimental_enable_lease_checkpoint
                .then_some(self.experimental_lease_checkpoint_interval),
            ..LessorConfig::from_election_timeout(self.election_timeout)
        }
    }
}

/// Whether `url` is `https://`.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// `http://host:port` or `https://host:port` -> `host:port`.
pub fn host_port(url: &str) -> Result<&str, Error> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| Error::BadUrl(url.into()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(Error::BadUrl(url.into()));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        assert_eq!(
            host_port("http://127.0.0.1:2379").ok(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(host_port("http://localhost:0/").ok(), Some("localhost:0"));
        assert_eq!(host_port("https://a:1").ok(), Some("a:1"));
        for bad in [
            "127.0.0.1:2379",
            "unix://a:1",
            "http://nohost",
            "http://a:1/path",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_as_etcd_reads_them() {
        let table = [
            ("periodic", "0", Ok(AutoCompaction::Off)),
            (
                "periodic",
                "1",
                Ok(AutoCompaction::Periodic(Duration::from_secs(3600))),
            ),
            (
                "periodic",
                "72",
                Ok(AutoCompaction::Periodic(Duration::from_secs(3600) * 72)),
            ),
            (
                "periodic",
                "5m",
                Ok(AutoCompaction::Periodic(Duration::from_secs(300))),
            ),
            (
                "periodic",
                "1h30m",
                Ok(AutoCompaction::Periodic(Duration::from_secs(5400))),
            ),
            ("revision", "1000", Ok(AutoCompaction::Revision(1000))),
            ("revision", "0", Ok(AutoCompaction::Off)),
        ];
        for (mode, retention, want) in table {
            assert_eq!(
                AutoCompaction::from_flags(mode, retention),
                want,
                "{mode} {retention}"
            );
        }
        for (mode, retention) in [
            ("periodic", "soon"),
            ("periodic", "-1h"),
            ("revision", "5m"),
            ("revision", "-3"),
            ("hourly", "1"),
        ] {
            assert!(
                AutoCompaction::from_flags(mode, retention).is_err(),
                "{mode} {retention}"
            );
        }
    }
}
