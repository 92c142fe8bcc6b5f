//! `cairn`: run one Cairn member. Flags follow etcd's names and defaults; with
//! no flags it serves a single member on localhost:2379 with data in
//! `./default.cairn`, as `etcd` does.

use std::path::PathBuf;

use anyhow::Context;
use cairn_server::embed::{self, Config};
use clap::{CommandFactory, FromArgMatches, Parser};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "An etcd v3-compatible key-value store"
)]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    listen_client_urls: Vec<String>,
    /// Comma-separated client URLs to advertise to clients.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    advertise_client_urls: Vec<String>,
    /// Comma-separated peer URLs to advertise to the cluster (they determine the member id).
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    initial_advertise_peer_urls: Vec<String>,
    /// Comma-separated URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    listen_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,name=url,...
    /// (default: this member alone, with its advertised peer URLs).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", default_value = "")]
    initial_cluster: String,
    /// Initial cluster state: 'new' (bootstrap) or 'existing' (join a
    /// cluster that already added this member with MemberAdd).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Availability zone of this member, shown in member lists and Status.
    #[arg(long, env = "ETCD_ZONE", default_value = "")]
    zone: String,
    /// Local IP address to open peer connections from (Cairn extension;
    /// default: the OS chooses). cairn-jepsen's fault proxy identifies
    /// members by it.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SOURCE_ADDRESS")]
    experimental_peer_source_address: Option<std::net::IpAddr>,
    /// TEST ONLY, deliberately wrong: serve linearizable reads without
    /// ReadIndex (stale reads), for cairn-jepsen's self-test. Exists only in
    /// builds with the `jepsen-broken` feature.
    #[cfg(feature = "jepsen-broken")]
    #[arg(long, env = "ETCD_EXPERIMENTAL_JEPSEN_BROKEN_STALE_READS")]
    experimental_jepsen_broken_stale_reads: bool,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Number of committed transactions to trigger a raft log compaction.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    snapshot_count: u64,
    /// Entries kept after a raft log compaction, for slow followers.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    experimental_snapshot_catchup_entries: u64,
    /// Raise an alarm (and refuse writes) when the backend size exceeds this many bytes.
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    quota_backend_bytes: u64,
    /// How often the leader checks that members' data hashes agree (e.g.
    /// 5m); 0 turns the check off. A mismatch raises the CORRUPT alarm.
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0", value_parser = parse_duration_or_zero)]
    experimental_corrupt_check_time: std::time::Duration,
    /// Auto compaction mode: periodic (keep a duration of history) or
    /// revision (keep a number of revisions).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["periodic", "revision"])]
    auto_compaction_mode: String,
    /// Auto compaction retention: for periodic, hours (a whole number) or a
    /// duration such as 30m; for revision, a number of revisions. 0 = off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Initial cluster token (it determines the member and cluster ids).
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// The master key file: 32 bytes, raw or base64, mode 0600 or stricter.
    /// Without it, ${data-dir}.key is used (generated on first start: for
    /// development only).
    #[arg(long, env = "ETCD_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// When rotating the master key: the key file the data keys are wrapped
    /// with now; they are re-wrapped under --encryption-key-file at start.
    #[arg(long, env = "ETCD_PREVIOUS_ENCRYPTION_KEY_FILE")]
    previous_encryption_key_file: Option<PathBuf>,
    /// Time (in milliseconds) of an election timeout; the minimum lease TTL is
    /// 1.5 times it, rounded up to whole seconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Checkpoint the remaining TTL of leases periodically, so that a restart
    /// does not reset them to their full TTL (`=false` to turn off).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    experimental_enable_lease_checkpoint: bool,
    /// Duration of periodic lease checkpoints (e.g. 5m, 30s).
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    experimental_lease_checkpoint_interval: std::time::Duration,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Duration of periodic watch progress notifications (e.g. 10m, 30s, 500ms).
    #[arg(long = "experimental-watch-progress-notify-interval", env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    watch_progress_notify_interval: std::time::Duration,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// `cairn snapshot restore FILE ...`: a new cluster's data directory from a
/// `snapshot save` file (etcdutl's `snapshot restore`, same flag names).
#[derive(Debug, Parser)]
#[command(name = "cairn snapshot")]
enum SnapshotCommand {
    /// Restores a snapshot file into a new data directory, bootstrapping a
    /// new cluster with the given membership. Run once per member, with the
    /// same file and cluster flags; then start each member with `cairn` and
    /// the same flags.
    Restore {
        /// The file written by `etcdctl snapshot save` against Cairn.
        file: PathBuf,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Path to the new data directory (default: ${name}.cairn); must not exist.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new cluster: name=url,name=url,...
        #[arg(long, default_value = "")]
        initial_cluster: String,
        /// The new cluster's token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
        /// The master key file: the saving member's (a sealed snapshot
        /// opens only with it); the restored member keeps using it.
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
}

/// `cairn admin ...`: Cairn's administration calls.
#[derive(Debug, Parser)]
#[command(name = "cairn admin")]
enum AdminCommand {
    /// Rotates the data key on every member: new writes use the new key at
    /// once, older records are re-sealed in the background, and the old key
    /// is dropped once nothing needs it.
    RotateDataKey {
        /// A client URL of any member.
        #[arg(long, default_value = "http://localhost:2379")]
        endpoint: String,
    },
}

async fn admin_command(args: Vec<String>) -> anyhow::Result<()> {
    let AdminCommand::RotateDataKey { endpoint } = AdminCommand::parse_from(args);
    let mut admin = cairn_proto::cairnpb::admin_client::AdminClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let resp = admin
        .rotate_data_key(cairn_proto::cairnpb::RotateDataKeyRequest {})
        .await
        .context("rotating the data key")?
        .into_inner();
    println!("data key {} is active", resp.key_id);
    Ok(())
}

fn snapshot_command(args: Vec<String>) -> anyhow::Result<()> {
    let SnapshotCommand::Restore {
        file,
        name,
        data_dir,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
        encryption_key_file,
    } = SnapshotCommand::parse_from(args);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let config = Config {
        data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.cairn"))),
        name,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
        encryption_key_file,
        ..Config::default()
    };
    let revision = embed::restore_snapshot(&bytes, &config).context("restoring the snapshot")?;
    println!(
        "restored {} into {} at revision {revision}",
        file.display(),
        config.data_dir.display()
    );
    Ok(())
}

/// Parses a Go-style duration with one unit: `500ms`, `30s`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = cairn_server::duration::parse_go_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(d)
}

/// [`parse_duration`], also accepting `0` (off).
fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(s)
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => anyhow::bail!(
            "invalid --log-level {other:?}: expected debug, info, warn, error, panic or fatal"
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// etcd's notes on its environment: every flag can come from `ETCD_` + its
/// name upper-cased with `-` as `_`; a flag given on the command line wins
/// (the variable is "shadowed"); an `ETCD_*` variable that names no flag is
/// reported. Values are not logged (a variable may hold anything).
fn log_environment(matches: &clap::ArgMatches) {
    let command = Flags::command();
    let mut known = std::collections::HashSet::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        known.insert(env.to_string());
        if std::env::var_os(env).is_none() {
            continue;
        }
        if matches.value_source(arg.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine)
        {
            tracing::warn!(
                "recognized environment variable {env}, but unused: shadowed by corresponding flag"
            );
        } else {
            tracing::info!("recognized and used environment variable {env}");
        }
    }
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("ETCD_") && !known.contains(name) {
            tracing::warn!("unrecognized environment variable {name}");
        }
    }
}

/// Tells a `Type=notify` systemd unit how the member is (etcd does too).
fn sd_notify(state: &str) {
    match cairn_server::notify::notify(state) {
        Ok(true) => tracing::info!(state, "notified the service manager"),
        Ok(false) => {}
        Err(e) => tracing::warn!(state, error = %e, "cannot notify the service manager"),
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("snapshot") => return snapshot_command(args.into_iter().skip(1).collect()),
        Some("admin") => return admin_command(args.into_iter().skip(1).collect()).await,
        _ => {}
    }
    let matches = Flags::command().get_matches();
    let flags = Flags::from_arg_matches(&matches)?;
    init_logging(&flags.log_level)?;
    log_environment(&matches);
    let config = Config {
        data_dir: flags
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", flags.name))),
        name: flags.name,
        listen_client_urls: flags.listen_client_urls,
        advertise_client_urls: flags.advertise_client_urls,
        initial_advertise_peer_urls: flags.initial_advertise_peer_urls,
        initial_cluster_token: flags.initial_cluster_token,
        election_timeout: std::time::Duration::from_millis(flags.election_timeout),
        experimental_enable_lease_checkpoint: flags.experimental_enable_lease_checkpoint,
        experimental_lease_checkpoint_interval: flags.experimental_lease_checkpoint_interval,
        max_request_bytes: flags.max_request_bytes,
        max_txn_ops: flags.max_txn_ops,
        watch_progress_notify_interval: flags.watch_progress_notify_interval,
        listen_peer_urls: flags.listen_peer_urls,
        initial_cluster: flags.initial_cluster,
        initial_cluster_state: if flags.initial_cluster_state == "existing" {
            embed::ClusterState::Existing
        } else {
            embed::ClusterState::New
        },
        zone: flags.zone,
        peer_source_address: flags.experimental_peer_source_address,
        #[cfg(feature = "jepsen-broken")]
        jepsen_broken_stale_reads: flags.experimental_jepsen_broken_stale_reads,
        #[cfg(not(feature = "jepsen-broken"))]
        jepsen_broken_stale_reads: false,
        heartbeat_interval: std::time::Duration::from_millis(flags.heartbeat_interval),
        snapshot_count: flags.snapshot_count,
        snapshot_catchup_entries: flags.experimental_snapshot_catchup_entries,
        quota_backend_bytes: flags.quota_backend_bytes,
        corrupt_check_time: flags.experimental_corrupt_check_time,
        auto_compaction: cairn_server::compactor::AutoCompaction::from_flags(
            &flags.auto_compaction_mode,
            &flags.auto_compaction_retention,
        )
        .map_err(anyhow::Error::msg)?,
        encryption_key_file: flags.encryption_key_file,
        previous_encryption_key_file: flags.previous_encryption_key_file,
    };
    let member = embed::start(config).await.context("starting cairn")?;
    tracing::info!(urls = ?member.client_urls(), "ready to serve client requests");
    sd_notify("READY=1");
    let failed = tokio::select! {
        signal = shutdown_signal() => { tracing::info!(signal = signal?, "shutting down"); false }
        () = member.removed() => {
            // etcd exits too: a removed member must not serve stale data.
            tracing::warn!("the member has been permanently removed from the cluster; exiting");
            false
        }
        () = member.failed() => true,
    };
    sd_notify("STOPPING=1");
    member.stop().await.context("stopping cairn")?;
    if failed {
        // etcd exits on a failed disk write too: never alive and broken.
        // The error is logged above; a supervisor restarts the member, which
        // resumes from its last synced state.
        anyhow::bail!(
            "the member stopped replicating after a storage failure (see the error above); exiting so that it can be restarted"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
