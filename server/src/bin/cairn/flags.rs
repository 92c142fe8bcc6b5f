//! The member's flags (etcd's names and defaults) and the [`Config`] they make.

use std::path::PathBuf;

use cairn_server::auth::TokenKind;
use cairn_server::defaults;
use cairn_server::embed::{self, Config};

/// The member's flags: etcd's names, defaults and `ETCD_*` variables.
#[derive(Debug, clap::Args)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = defaults::NAME)]
    pub name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = defaults::CLIENT_URL,
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,
    /// Comma-separated client URLs to advertise to clients.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = defaults::CLIENT_URL,
        value_delimiter = ','
    )]
    pub advertise_client_urls: Vec<String>,
    /// Comma-separated peer URLs to advertise to the cluster (they determine the member id).
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = defaults::PEER_URL,
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Comma-separated URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = defaults::PEER_URL,
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,name=url,...
    /// (default: this member alone, with its advertised peer URLs).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", default_value = "")]
    pub initial_cluster: String,
    /// Initial cluster state: 'new' (bootstrap) or 'existing' (join a
    /// cluster that already added this member with MemberAdd).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Availability zone of this member, shown in member lists and Status.
    #[arg(long, env = "ETCD_ZONE", default_value = "")]
    pub zone: String,
    /// Local IP address to open peer connections from (Cairn extension;
    /// default: the OS chooses). cairn-jepsen's fault proxy identifies
    /// members by it.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SOURCE_ADDRESS")]
    pub experimental_peer_source_address: Option<std::net::IpAddr>,
    /// TEST ONLY, deliberately wrong: serve linearizable reads without
    /// ReadIndex (stale reads), for cairn-jepsen's self-test. Exists only in
    /// builds with the `jepsen-broken` feature.
    #[cfg(feature = "jepsen-broken")]
    #[arg(long, env = "ETCD_EXPERIMENTAL_JEPSEN_BROKEN_STALE_READS")]
    pub experimental_jepsen_broken_stale_reads: bool,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = defaults::HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval: u64,
    /// Number of committed transactions to trigger a raft log compaction.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = defaults::SNAPSHOT_COUNT)]
    pub snapshot_count: u64,
    /// Entries kept after a raft log compaction, for slow followers.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = defaults::SNAPSHOT_CATCHUP_ENTRIES
    )]
    pub experimental_snapshot_catchup_entries: u64,
    /// Raise an alarm (and refuse writes) when the backend size exceeds this many bytes.
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = defaults::QUOTA_BACKEND_BYTES)]
    pub quota_backend_bytes: u64,
    /// The most memory (bytes) the block cache of the records' RocksDB
    /// family holds (Cairn extension): reads of a store larger than it
    /// read their blocks from the files. 0 = no cache.
    #[arg(long, env = "ETCD_EXPERIMENTAL_KV_CACHE_BYTES", default_value_t = defaults::KV_CACHE_BYTES)]
    pub experimental_kv_cache_bytes: u64,
    /// How often the leader checks that members' data hashes agree (e.g.
    /// 5m); 0 turns the check off. A mismatch raises the CORRUPT alarm.
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0", value_parser = parse_duration_or_zero)]
    pub experimental_corrupt_check_time: std::time::Duration,
    /// Auto compaction mode: periodic (keep a duration of history) or
    /// revision (keep a number of revisions).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["periodic", "revision"])]
    pub auto_compaction_mode: String,
    /// Auto compaction retention: for periodic, hours (a whole number) or a
    /// duration such as 30m; for revision, a number of revisions. 0 = off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Initial cluster token (it determines the member and cluster ids).
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = defaults::INITIAL_CLUSTER_TOKEN
    )]
    pub initial_cluster_token: String,
    /// The master key file: 32 bytes, raw or base64, mode 0600 or stricter.
    /// Without it, ${data-dir}.key is used (generated on first start: for
    /// development only).
    #[arg(long, env = "ETCD_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// When rotating the master key: the key file the data keys are wrapped
    /// with now; they are re-wrapped under --encryption-key-file at start.
    #[arg(long, env = "ETCD_PREVIOUS_ENCRYPTION_KEY_FILE")]
    pub previous_encryption_key_file: Option<PathBuf>,
    /// Time (in milliseconds) of an election timeout; the minimum lease TTL is
    /// 1.5 times it, rounded up to whole seconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = defaults::ELECTION_TIMEOUT_MS)]
    pub election_timeout: u64,
    /// Checkpoint the remaining TTL of leases periodically, so that a restart
    /// does not reset them to their full TTL (`=false` to turn off).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: bool,
    /// Duration of periodic lease checkpoints (e.g. 5m, 30s).
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = defaults::LEASE_CHECKPOINT_INTERVAL_TEXT, value_parser = parse_duration)]
    pub experimental_lease_checkpoint_interval: std::time::Duration,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = defaults::MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Specify auth token type and its options: 'simple' (etcd's simple
    /// tokens) or 'jwt,pub-key=...,priv-key=...,sign-method=...'.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = defaults::AUTH_TOKEN)]
    pub auth_token: String,
    /// Time (in seconds) of the auth token's life after its last use
    /// (simple tokens).
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = defaults::AUTH_TOKEN_TTL_SECS)]
    pub auth_token_ttl: u64,
    /// Specify bcrypt algorithm cost factor for auth password hashing
    /// (4 to 31; anything else means the default, 10, as in etcd).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = defaults::BCRYPT_COST)]
    pub bcrypt_cost: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = defaults::MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// Duration of periodic watch progress notifications (e.g. 10m, 30s, 500ms).
    #[arg(long = "experimental-watch-progress-notify-interval", env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = defaults::WATCH_PROGRESS_NOTIFY_INTERVAL_TEXT, value_parser = parse_duration)]
    pub watch_progress_notify_interval: std::time::Duration,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Logger: 'zap' only (etcd 3.5 removed 'capnslog').
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Comma-separated log outputs: 'default' (stderr), 'stderr', 'stdout',
    /// 'systemd/journal' (alone) or file paths; several at once write to each.
    #[arg(
        long,
        env = "ETCD_LOG_OUTPUTS",
        default_value = "default",
        value_delimiter = ','
    )]
    pub log_outputs: Vec<String>,
    /// Accepted for etcd's command lines, but the v2 API is not served
    /// (etcd 3.6 removed it): `--enable-v2` only logs a warning.
    #[arg(long, env = "ETCD_ENABLE_V2", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_v2: bool,
    /// Accepted for etcd's command lines (v3 prefix of the emulated v2
    /// store); the v2 API is not served, so a value only logs a warning.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_V2V3", default_value = "")]
    pub experimental_enable_v2v3: String,
    /// Maximum concurrent streams that each client connection can handle
    /// (default: no limit).
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = defaults::MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Reject reconfiguration requests that would cause quorum loss
    /// (`=false` to turn off).
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub strict_reconfig_check: bool,
    /// Check this member's data against its peers' before serving clients,
    /// and refuse to start on a mismatch.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub experimental_initial_corrupt_check: bool,
    /// Force to create a new one member cluster (disaster recovery: this
    /// member becomes the only voter, with all its data). Start with it
    /// once, then without it.
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_new_cluster: bool,
    /// Comma-separated URLs to listen on for the metrics and health
    /// endpoints only (no gRPC); https ones use the client TLS.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,
    /// Level of detail of the exported metrics: 'extensive' adds the
    /// server-side gRPC handling time histograms.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic", value_parser = ["basic", "extensive"])]
    pub metrics: String,
    /// Client and peer TLS.
    #[command(flatten)]
    pub tls: crate::tls_flags::TlsFlags,
}

impl Flags {
    /// The member's configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        self.warn_unserved();
        Ok(Config {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| defaults::data_dir(&self.name)),
            name: self.name,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster_token: self.initial_cluster_token,
            election_timeout: std::time::Duration::from_millis(self.election_timeout),
            experimental_enable_lease_checkpoint: self.experimental_enable_lease_checkpoint,
            experimental_lease_checkpoint_interval: self.experimental_lease_checkpoint_interval,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            auth_token: TokenKind::parse(&self.auth_token)
                .map_err(|e| anyhow::anyhow!("--auth-token: {e}"))?,
            auth_token_ttl: std::time::Duration::from_secs(self.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost,
            watch_progress_notify_interval: self.watch_progress_notify_interval,
            listen_peer_urls: self.listen_peer_urls,
            initial_cluster: self.initial_cluster,
            initial_cluster_state: if self.initial_cluster_state == "existing" {
                embed::ClusterState::Existing
            } else {
                embed::ClusterState::New
            },
            zone: self.zone,
            peer_source_address: self.experimental_peer_source_address,
            #[cfg(feature = "jepsen-broken")]
            jepsen_broken_stale_reads: self.experimental_jepsen_broken_stale_reads,
            #[cfg(not(feature = "jepsen-broken"))]
            jepsen_broken_stale_reads: false,
            heartbeat_interval: std::time::Duration::from_millis(self.heartbeat_interval),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            quota_backend_bytes: self.quota_backend_bytes,
            kv_cache_bytes: self.experimental_kv_cache_bytes,
            corrupt_check_time: self.experimental_corrupt_check_time,
            auto_compaction: cairn_server::config::AutoCompaction::from_flags(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )
            .map_err(anyhow::Error::msg)?,
            encryption_key_file: self.encryption_key_file,
            previous_encryption_key_file: self.previous_encryption_key_file,
            max_concurrent_streams: self.max_concurrent_streams,
            strict_reconfig_check: self.strict_reconfig_check,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            force_new_cluster: self.force_new_cluster,
            tls: self.tls.into_settings(),
            listen_metrics_urls: self.listen_metrics_urls,
            metrics: self.metrics.parse().map_err(anyhow::Error::msg)?,
        })
    }
}

impl Flags {
    /// Warns about flags etcd 3.5 has that Cairn accepts without acting on
    /// them: a command line written for etcd keeps working, and says so.
    fn warn_unserved(&self) {
        if self.enable_v2 {
            tracing::warn!(
                "--enable-v2 is set, but the v2 API is not served (Cairn serves the v3 API only; etcd 3.6 removed v2); ignoring it"
            );
        }
        if !self.experimental_enable_v2v3.is_empty() {
            tracing::warn!(
                prefix = %self.experimental_enable_v2v3,
                "--experimental-enable-v2v3 is set, but the v2 API is not served (Cairn serves the v3 API only; etcd 3.6 removed v2); ignoring it"
            );
        }
    }
}

/// Parses a Go-style duration with one unit: `500ms`, `30s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = cairn_server::duration::parse_go_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(d)
}

/// [`parse_duration`], also accepting `0` (off).
pub fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(s)
}
