//! The lines etcd 3.5 logs at a member's milestones, with its `msg` text and
//! field names, so that tooling that waits for or greps them works on
//! Cairn: one function per moment, called where Cairn reaches it.

use super::go_duration;
use crate::config::AutoCompaction;
use crate::config::{ClusterState, Config};

/// The cluster version Cairn runs as (etcd's `major.minor`).
const CLUSTER_VERSION: &str = "3.5";

fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// Before binding: the URLs about to be listened on.
pub fn configuring_listeners(config: &Config) {
    tracing::info!(listen_peer_urls = ?config.listen_peer_urls, "configuring peer listeners");
    tracing::info!(listen_client_urls = ?config.listen_client_urls, "configuring client listeners");
}

/// Before opening the data directory: the configuration. Only what is
/// not secret: paths and numbers, never key material.
pub fn starting_server(config: &Config) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let initial_cluster = if config.initial_cluster.is_empty() {
        config
            .initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{}={u}", config.name))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        config.initial_cluster.clone()
    };
    let (mode, retention) = match config.auto_compaction {
        AutoCompaction::Off => ("periodic", "0s".to_string()),
        AutoCompaction::Periodic(d) => ("periodic", go_duration(d)),
        AutoCompaction::Revision(n) => ("revision", n.to_string()),
    };
    tracing::info!(
        etcd_version = crate::member::ETCD_VERSION,
        git_sha = env!("CAIRN_GIT_SHA"),
        cairn_version = env!("CARGO_PKG_VERSION"),
        go_os = std::env::consts::OS,
        max_cpu_set = cpus,
        max_cpu_available = cpus,
        member_initialized = config.data_dir.join("db").exists(),
        name = %config.name,
        data_dir = %config.data_dir.display(),
        heartbeat_interval = %go_duration(config.heartbeat_interval),
        election_timeout = %go_duration(config.election_timeout),
        snapshot_count = config.snapshot_count,
        snapshot_catchup_entries = config.snapshot_catchup_entries,
        initial_advertise_peer_urls = ?config.initial_advertise_peer_urls,
        listen_peer_urls = ?config.listen_peer_urls,
        advertise_client_urls = ?config.advertise_client_urls,
        listen_client_urls = ?config.listen_client_urls,
        initial_cluster = %initial_cluster,
        initial_cluster_state = match config.initial_cluster_state {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        },
        initial_cluster_token = %config.initial_cluster_token,
        quota_size_bytes = config.quota_backend_bytes,
        pre_vote = true,
        corrupt_check_time_interval = %go_duration(config.corrupt_check_time),
        auto_compaction_mode = mode,
        auto_compaction_retention = %retention,
        "starting an etcd server"
    );
}

/// The raft state is about to be started: fresh (`new`) or from disk.
pub fn starting_local_member(fresh: bool, member_id: u64, cluster_id: u64, commit: u64) {
    if fresh {
        tracing::info!(
            local_member_id = hex(member_id),
            cluster_id = hex(cluster_id),
            "starting local member"
        );
    } else {
        tracing::info!(
            cluster_id = hex(cluster_id),
            local_member_id = hex(member_id),
            commit_index = commit,
            "restarting local member"
        );
    }
}

/// Raft runs and the state is loaded. Cairn's cluster version is fixed
/// (3.5) from the start, which is when its capabilities are enabled.
pub fn starting_etcd_server(member_id: u64) {
    tracing::info!(
        local_member_id = hex(member_id),
        local_server_version = crate::member::ETCD_VERSION,
        cluster_version = CLUSTER_VERSION,
        "starting etcd server"
    );
    tracing::info!(
        cluster_version = CLUSTER_VERSION,
        "enabled capabilities for version"
    );
}

/// A peer listener serves.
pub fn serving_peer(address: &str) {
    tracing::info!(address, "serving peer traffic");
}

/// Every listener serves.
pub fn now_serving(member_id: u64, config: &Config, peer_urls: &[String], client_urls: &[String]) {
    tracing::info!(
        local_member_id = hex(member_id),
        initial_advertise_peer_urls = ?config.initial_advertise_peer_urls,
        listen_peer_urls = ?peer_urls,
        advertise_client_urls = ?config.advertise_client_urls,
        listen_client_urls = ?client_urls,
        listen_metrics_urls = ?Vec::<String>::new(),
        "now serving peer/client/metrics"
    );
}

/// A client listener serves: once per listener, each plaintext (Cairn
/// has no client TLS), as etcd says for each insecure one. etcd's line has
/// no address; Cairn adds it, so that a reader can tell the listeners
/// apart (and tests find the port they were given).
pub fn ready_to_serve(address: &str) {
    tracing::info!(address, "ready to serve client requests");
    tracing::info!(
        address,
        "serving client traffic insecurely; this is strongly discouraged!"
    );
}

/// The member's name and client URLs are in the member table.
pub fn published(
    member_id: u64,
    cluster_id: u64,
    name: &str,
    client_urls: &[String],
    timeout: std::time::Duration,
) {
    tracing::info!(
        local_member_id = hex(member_id),
        local_member_attributes = %format!("{{Name:{name} ClientURLs:[{}]}}", client_urls.join(" ")),
        request_path = %format!("/0/members/{member_id:x}/attributes"),
        cluster_id = hex(cluster_id),
        publish_timeout = %go_duration(timeout),
        "published local member to cluster through raft"
    );
}

/// What the closing and closed lines say about the member.
#[derive(Debug, Clone)]
pub struct Closing {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: String,
    /// The advertised peer URLs.
    pub advertise_peer_urls: Vec<String>,
    /// The advertised client URLs.
    pub advertise_client_urls: Vec<String>,
}

impl Closing {
    /// From the member's configuration.
    pub fn of(config: &Config) -> Self {
        Closing {
            name: config.name.clone(),
            data_dir: config.data_dir.display().to_string(),
            advertise_peer_urls: config.initial_advertise_peer_urls.clone(),
            advertise_client_urls: config.advertise_client_urls.clone(),
        }
    }

    /// The member starts to stop.
    pub fn closing(&self) {
        tracing::info!(
            name = %self.name,
            data_dir = %self.data_dir,
            advertise_peer_urls = ?self.advertise_peer_urls,
            advertise_client_urls = ?self.advertise_client_urls,
            "closing etcd server"
        );
    }

    /// The member has stopped.
    pub fn closed(&self) {
        tracing::info!(
            name = %self.name,
            data_dir = %self.data_dir,
            advertise_peer_urls = ?self.advertise_peer_urls,
            advertise_client_urls = ?self.advertise_client_urls,
            "closed etcd server"
        );
    }
}
