//! Starting a member inside any Rust program (etcd's `embed` package).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_server::embed::Error> {
//! let mut config = cairn_server::embed::Config::default();
//! config.data_dir = "/tmp/demo.cairn".into();
//! config.listen_client_urls = vec!["http://127.0.0.1:0".into()];
//! let member = cairn_server::embed::start(config).await?;
//! println!("serving on {}", member.client_urls()[0]);
//! member.stop().await?;
//! # Ok(()) }
//! ```
//!
//! The `cairn` binary is a thin wrapper over [`start`]; the integration tests
//! use it too, with port 0 so that every test gets its own port.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use cairn_proto::cairnpb;
use tonic::transport::server::TcpIncoming;

use crate::lease::{Lessor, LessorConfig, TokioClock};
use crate::machine::Machine;
use crate::member::{Identity, Limits, Member, Replication};
use crate::mvcc::Store;
use crate::raft::transport::Dialer;
use crate::raft::{NodeConfig, PeerService, Peers, RaftStorage};
use crate::storage::crypto::{KeyHandle, MasterKey};
use crate::storage::{Cf, Engine, RocksEngine, SealedEngine, WriteBatch};

/// Errors starting or stopping a member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL flag is not `http://host:port`.
    #[error("invalid URL {0:?}: expected http://host:port")]
    BadUrl(String),
    /// A listener could not be opened.
    #[error("cannot listen on {url}: {source}")]
    Listen {
        /// The URL being bound.
        url: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The stored data could not be loaded.
    #[error(transparent)]
    Mvcc(#[from] crate::mvcc::Error),
    /// `--initial-cluster` is malformed or does not name this member.
    #[error("--initial-cluster: {0}")]
    BadCluster(String),
    /// Raft could not start.
    #[error(transparent)]
    Raft(#[from] crate::raft::Error),
    /// The state machine could not be loaded.
    #[error(transparent)]
    Machine(#[from] crate::machine::Error),
    /// The master key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] crate::storage::crypto::KeyFileError),
    /// A snapshot could not be restored.
    #[error("snapshot restore: {0}")]
    Restore(String),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A start-up check refused this member's data.
    #[error(transparent)]
    Recovery(#[from] crate::recovery::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
    /// How often the leader compares members' HashKV and raises CORRUPT on
    /// a mismatch (`--experimental-corrupt-check-time`; zero = off, etcd's
    /// default).
    pub corrupt_check_time: std::time::Duration,
    /// Auto compaction (`--auto-compaction-mode`,
    /// `--auto-compaction-retention`; off by default, as etcd).
    pub auto_compaction: crate::compactor::AutoCompaction,
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
    /// 3.5; see [`crate::recovery::initial_corrupt_check`]).
    pub initial_corrupt_check: bool,
    /// Disaster recovery (`--force-new-cluster`): restart this member as
    /// the only voter of its cluster, with all its committed data (see
    /// [`crate::recovery::force_new_cluster`]). Start with it once, then
    /// without it.
    pub force_new_cluster: bool,
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
            corrupt_check_time: std::time::Duration::ZERO,
            auto_compaction: crate::compactor::AutoCompaction::Off,
            encryption_key_file: None,
            previous_encryption_key_file: None,
            election_timeout: std::time::Duration::from_millis(d::ELECTION_TIMEOUT_MS),
            experimental_enable_lease_checkpoint: true,
            experimental_lease_checkpoint_interval: d::LEASE_CHECKPOINT_INTERVAL,
            max_request_bytes: d::MAX_REQUEST_BYTES,
            max_txn_ops: d::MAX_TXN_OPS,
            watch_progress_notify_interval: d::WATCH_PROGRESS_NOTIFY_INTERVAL,
            max_concurrent_streams: d::MAX_CONCURRENT_STREAMS,
            strict_reconfig_check: true,
            initial_corrupt_check: false,
            force_new_cluster: false,
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

/// How long [`Handle::stop`] waits for clients to finish before it closes
/// their connections.
pub const GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// A running member: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Handle {
    /// The member's state, for in-process inspection.
    member: Arc<Member>,
    /// The client URLs actually bound (ports resolved when 0 was asked).
    client_urls: Vec<String>,
    /// The peer URLs actually bound.
    peer_urls: Vec<String>,
    /// Flipped to true to ask every listener and task to stop.
    stop: watch::Sender<bool>,
    /// One server task per client listener.
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// One server task per peer listener.
    peer_servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Background tasks that end when `stop` flips: watch catch-up, lease
    /// expiry, leadership changes, attribute publication.
    tasks: Vec<JoinHandle<()>>,
    /// The raft thread.
    raft_thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// The bound client URLs, e.g. `http://127.0.0.1:41234`.
    pub fn client_urls(&self) -> &[String] {
        &self.client_urls
    }

    /// The bound peer URLs.
    pub fn peer_urls(&self) -> &[String] {
        &self.peer_urls
    }

    /// The member being served.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// Resolves once this member has applied its own removal from the
    /// cluster (its raft loop has stopped; it must stop serving, as etcd
    /// exits). Never resolves for a member without raft.
    pub async fn removed(&self) {
        let Some(replication) = self.member.replication() else {
            return std::future::pending().await;
        };
        let mut status = replication.raft.subscribe();
        if status.wait_for(|s| s.removed).await.is_err() {
            // The raft thread is gone without a removal: never resolve.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this member's raft loop has failed (a disk write
    /// failed, say a full disk): it cannot apply anything any more, has
    /// stopped serving, and should exit so that a supervisor restarts it
    /// (etcd exits). Never resolves for a member without raft.
    pub async fn failed(&self) {
        raft_failed(&self.member).await;
    }

    /// Stops accepting requests, lets in-flight ones finish (for at most
    /// [`GRACE_PERIOD`]; connections still open then are dropped), stops
    /// raft, waits for the servers to exit. Every acknowledged write is
    /// already on disk.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.member.begin_stop();
        // No receiver left only means every server already exited.
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.servers.iter().map(JoinHandle::abort_handle).collect();
        let servers = std::mem::take(&mut self.servers);
        let all = async {
            for server in servers {
                match server.await {
                    Err(e) if e.is_cancelled() => {}
                    joined => joined??,
                }
            }
            Ok::<(), Error>(())
        };
        tokio::pin!(all);
        let result = match tokio::time::timeout(GRACE_PERIOD, &mut all).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace = ?GRACE_PERIOD, "clients still connected after the grace period; closing them");
                aborts.iter().for_each(|a| a.abort());
                all.await
            }
        };
        self.shutdown_rest().await;
        result
    }

    /// Stops at once, as close to a crash as a process can get while keeping
    /// its threads: connections are dropped without a grace period and
    /// raft stops. (Nothing acknowledged is lost either way: it is on disk.)
    pub async fn kill(mut self) {
        self.member.begin_stop();
        let _ = self.stop.send(true);
        for server in self.servers.drain(..) {
            server.abort();
            let _ = server.await;
        }
        self.shutdown_rest().await;
    }

    /// Stops raft, the peer servers and the background tasks, and waits
    /// until the store is released.
    async fn shutdown_rest(&mut self) {
        // Peers stream forever: abort their servers rather than wait.
        for server in self.peer_servers.drain(..) {
            server.abort();
            let _ = server.await;
        }
        for task in self.tasks.drain(..) {
            // They watch the stop flag; a panic in one was logged already.
            let _ = task.await;
        }
        if let Some(replication) = self.member.replication() {
            replication.raft.send(crate::raft::Input::Stop);
        }
        if let Some(thread) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Store work already handed to the blocking pool finishes by itself;
        // wait for it so that the data directory is closed when we return
        // (an in-process restart reopens it at once).
        let deadline = tokio::time::Instant::now() + GRACE_PERIOD;
        while Arc::strong_count(&self.member) > 1
            || Arc::strong_count(self.member.machine()) > 1
            || Arc::strong_count(self.member.store()) > 1
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("store still in use after the grace period");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Waits until the servers exit (after [`Handle::stop`] or a failure).
    pub async fn wait(mut self) -> Result<(), Error> {
        for server in std::mem::take(&mut self.servers) {
            server.await??;
        }
        let _ = self.stop.send(true);
        self.shutdown_rest().await;
        Ok(())
    }
}

/// `http://host:port` -> `host:port`.
fn host_port(url: &str) -> Result<&str, Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::BadUrl(url.into()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(Error::BadUrl(url.into()));
    }
    Ok(rest)
}

/// etcd's member id: SHA-1 of the sorted peer URLs joined, then the cluster
/// token; the first 8 bytes, big-endian.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    sha1_prefix(&bytes)
}

/// etcd's cluster id: SHA-1 of the sorted member ids, 8 bytes big-endian each.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_prefix(&bytes)
}

fn sha1_prefix(bytes: &[u8]) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

const META_MEMBER_ID: &[u8] = b"member_id";

/// This member's id: the one stored in the data directory, or a new one from
/// its advertised peer URLs and the cluster token (stored at once, so that
/// it never changes for this data directory).
fn load_member_id(
    engine: &dyn Engine,
    config: &Config,
    joined: Option<u64>,
) -> Result<u64, crate::storage::Error> {
    if let Some(id) = engine
        .get(Cf::Meta, META_MEMBER_ID)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
    {
        return Ok(id);
    }
    let id = joined.unwrap_or_else(|| {
        member_id(
            &config.initial_advertise_peer_urls,
            &config.initial_cluster_token,
        )
    });
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, META_MEMBER_ID, id.to_be_bytes());
    engine.write(batch, true)?;
    Ok(id)
}

/// The master key file a config uses: the flag, or `<data-dir>.key`.
pub fn key_file_path(config: &Config) -> PathBuf {
    config.encryption_key_file.clone().unwrap_or_else(|| {
        let mut name = config.data_dir.as_os_str().to_os_string();
        name.push(".key");
        PathBuf::from(name)
    })
}

/// The master key: loaded from `--encryption-key-file`, or, without the
/// flag, from `<data-dir>.key`, generated there (mode 0600) on first start.
fn master_key(config: &Config) -> Result<MasterKey, Error> {
    let path = key_file_path(config);
    if config.encryption_key_file.is_none() && !path.exists() {
        tracing::warn!(
            path = %path.display(),
            "NO --encryption-key-file GIVEN: GENERATED A MASTER KEY BESIDE THE DATA DIRECTORY. \
             This is for development only: whoever reads the data directory's parent can read the data. \
             Keep the key elsewhere and pass --encryption-key-file in production."
        );
        return Ok(MasterKey::generate_file(&path)?);
    }
    Ok(MasterKey::load(&path)?)
}

/// Opens the data directory's engine: RocksDB under the sealing layer
/// (master key rotation first, when a previous key file is given), and the
/// handle on its keys that key rotation uses.
fn open_engine(
    config: &Config,
    db_dir: &std::path::Path,
) -> Result<(Arc<dyn Engine>, Option<KeyHandle>), Error> {
    let master = master_key(config)?;
    let raw: Arc<dyn Engine> = Arc::new(RocksEngine::open(db_dir)?);
    if cfg!(feature = "bench-plaintext") {
        tracing::warn!("built with bench-plaintext: NOTHING IS ENCRYPTED (benchmark builds only)");
        return Ok((raw, None));
    }
    if let Some(previous) = &config.previous_encryption_key_file {
        let old = MasterKey::load(previous)?;
        SealedEngine::rewrap(raw.as_ref(), &old, &master)?;
    }
    let sealed = Arc::new(SealedEngine::open(raw, master)?);
    let keys = KeyHandle::new(Arc::clone(&sealed));
    Ok((sealed, Some(keys)))
}

/// Listeners bound before [`start_with`] (tests bind port 0 and learn the
/// ports before the cluster's URLs are decided).
#[derive(Debug, Default)]
pub struct Listeners {
    /// Client listeners; when empty, `listen_client_urls` are bound.
    pub client: Vec<TcpListener>,
    /// Peer listeners; when empty, `listen_peer_urls` are bound.
    pub peer: Vec<TcpListener>,
}

/// The accept queue of every listener. etcd's (Go's) listeners take the
/// kernel's maximum, `net.core.somaxconn` (4096 on current Linux); tokio's
/// default of 1024 refused connection bursts that etcd takes.
pub const LISTEN_BACKLOG: u32 = 4096;

async fn bind_all(urls: &[String]) -> Result<Vec<TcpListener>, Error> {
    let mut listeners = Vec::new();
    for url in urls {
        let listen_error = |source| Error::Listen {
            url: url.clone(),
            source,
        };
        // Like TcpListener::bind: the first of the name's addresses that binds.
        let mut last = None;
        for addr in tokio::net::lookup_host(host_port(url)?)
            .await
            .map_err(listen_error)?
        {
            match bind(addr) {
                Ok(listener) => {
                    last = Some(Ok(listener));
                    break;
                }
                Err(e) => last = Some(Err(e)),
            }
        }
        match last {
            Some(Ok(listener)) => listeners.push(listener),
            Some(Err(e)) => return Err(listen_error(e)),
            None => return Err(Error::BadUrl(url.clone())),
        }
    }
    Ok(listeners)
}

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and, as std and Go do,
/// `SO_REUSEADDR`, so a restarted member binds while old connections linger
/// in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn local_url(listener: &TcpListener) -> Result<String, Error> {
    let local = listener.local_addr().map_err(|source| Error::Listen {
        url: "bound listener".into(),
        source,
    })?;
    Ok(format!("http://{local}"))
}

/// Opens the data directory and starts serving the client API.
pub async fn start(config: Config) -> Result<Handle, Error> {
    start_with(config, Listeners::default()).await
}

/// The bootstrap member table from `--initial-cluster` (this member's name
/// filled in; the others publish theirs when they start) and its cluster id.
fn initial_member_records(config: &Config) -> Result<(Vec<cairnpb::Member>, u64), Error> {
    let members: Vec<cairnpb::Member> = config
        .initial_members()?
        .into_iter()
        .map(|(name, urls)| cairnpb::Member {
            id: self::member_id(&urls, &config.initial_cluster_token),
            name: if name == config.name {
                name
            } else {
                String::new()
            },
            peer_urls: urls,
            ..cairnpb::Member::default()
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    Ok((members, cluster_id(&ids)))
}

/// `cairn snapshot restore`: writes the state of a `snapshot save` file
/// into a new data directory and bootstraps a new cluster from it, with the
/// membership of `config` (`--name`, `--initial-cluster`,
/// `--initial-cluster-token`, `--initial-advertise-peer-urls`). Run once per
/// member with the same file; then start each member with the same flags.
/// Returns the restored revision.
pub fn restore_snapshot(file: &[u8], config: &Config) -> Result<i64, Error> {
    let (index, state) =
        crate::snapshot::decode_file(file).map_err(|e| Error::Restore(e.to_string()))?;
    let master = MasterKey::load(key_file_path(config))?;
    let data = crate::snapshot::open_state(Some(&master), index, state)
        .map_err(|e| Error::Restore(e.to_string()))?;
    let db_dir = config.data_dir.join("db");
    if db_dir.exists() {
        return Err(Error::Restore(format!(
            "data directory {} already exists",
            config.data_dir.display()
        )));
    }
    let (members, cluster_id) = initial_member_records(config)?;
    let (engine, keys) = open_engine(config, &db_dir)?;
    let member_id = load_member_id(engine.as_ref(), config, None)?;
    if !members.iter().any(|m| m.id == member_id) {
        return Err(Error::BadCluster(format!(
            "no member named {:?} with this member's peer URLs {:?}",
            config.name, config.initial_advertise_peer_urls
        )));
    }
    let store = Arc::new(Store::open(Arc::clone(&engine), true)?);
    let lessor = Arc::new(Lessor::new(config.lessor_config(), Arc::new(TokioClock)));
    let machine = Machine::new(Arc::clone(&store), lessor).with_keys(keys);
    machine.restore(&data)?;
    let log = RaftStorage::open(Arc::clone(&engine))?;
    bootstrap(&machine, &log, cluster_id, &members)?;
    Ok(store.current_revision())
}

/// What opening the data directory produced.
struct Opened {
    member_id: u64,
    cluster_id: u64,
    machine: Arc<Machine>,
    log: Arc<RaftStorage>,
}

/// Opens the engine, the store and the raft log; bootstraps a new cluster's
/// first state when there is no raft state yet and the cluster is new.
fn open(config: &Config, joined: Option<u64>) -> Result<Opened, Error> {
    let db_dir = config.data_dir.join("db");
    let (engine, keys) = open_engine(config, &db_dir)?;
    let member_id = load_member_id(engine.as_ref(), config, joined)?;
    let (members, cluster_id) = initial_member_records(config)?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    // Raft's log goes through the same engine; the store's commits need
    // not be synced, since raft's log is the durable copy and a restart
    // replays it from the applied index.
    let store = Arc::new(Store::open(Arc::clone(&engine), false)?);
    let lessor = Lessor::recover(config.lessor_config(), Arc::new(TokioClock), &store)?;
    let machine = Arc::new(Machine::open(store, Arc::new(lessor))?.with_keys(keys));
    let log = Arc::new(RaftStorage::open(Arc::clone(&engine))?);
    let state = ::raft::Storage::initial_state(log.as_ref()).map_err(crate::raft::Error::from)?;
    let fresh = state.hard_state.term == 0
        && state.conf_state.voters.is_empty()
        && state.conf_state.learners.is_empty();
    if fresh && config.initial_cluster_state == ClusterState::New {
        if !ids.contains(&member_id) {
            return Err(Error::BadCluster(format!(
                "no member named {:?} with this member's peer URLs {:?}",
                config.name, config.initial_advertise_peer_urls
            )));
        }
        bootstrap(&machine, &log, cluster_id, &members)?;
    } else if !fresh && config.force_new_cluster {
        crate::recovery::force_new_cluster(&machine, &log, member_id)?;
    }
    let commit = ::raft::Storage::initial_state(log.as_ref()).map_or(0, |s| s.hard_state.commit);
    let stored_cluster_id = match machine.cluster_id() {
        0 => cluster_id,
        id => id,
    };
    crate::logging::lifecycle::starting_local_member(fresh, member_id, stored_cluster_id, commit);
    Ok(Opened {
        member_id,
        cluster_id,
        machine,
        log,
    })
}

/// For a new member joining an existing cluster: its id, as MemberAdd chose
/// it, found by its peer URLs in the member table of a member listed in
/// `--initial-cluster` (etcd does the same). None when not joining, or when
/// the data directory already has an id.
async fn join_id(config: &Config, dialer: &Dialer) -> Result<Joined, Error> {
    if config.initial_cluster_state != ClusterState::Existing || config.data_dir.join("db").exists()
    {
        return Ok(Joined::default());
    }
    let others: Vec<String> = config
        .initial_members()?
        .into_iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    let table = crate::raft::transport::fetch_members(dialer, &others)
        .await
        .ok_or_else(|| Error::BadCluster("no member of --initial-cluster answers".into()))?;
    let id = table
        .members
        .iter()
        .find(|m| {
            m.peer_urls
                .iter()
                .any(|u| config.initial_advertise_peer_urls.contains(u))
        })
        .map(|m| m.id)
        .ok_or_else(|| {
            Error::BadCluster(format!(
                "the cluster has no member with peer URLs {:?}: add it with MemberAdd first",
                config.initial_advertise_peer_urls
            ))
        })?;
    let peers = table
        .members
        .iter()
        .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
        .collect();
    Ok(Joined {
        id: Some(id),
        peers,
    })
}

/// What a member joining an existing cluster learnt from it.
#[derive(Debug, Default)]
struct Joined {
    /// The id MemberAdd gave this member (None: not joining).
    id: Option<u64>,
    /// The cluster's members (id, peer URL) when it joined: until its first
    /// snapshot brings the member table, this is how it finds members that
    /// were themselves added later (their ids are random, not derived from
    /// `--initial-cluster`), the leader among them.
    peers: Vec<(u64, String)>,
}

/// Writes a new cluster's first state: the member table and the raft
/// configuration, as a snapshot at the store's applied index (1 for an
/// empty store; a restored store keeps its index). Members that join later
/// start empty and receive this state from the leader by snapshot.
pub fn bootstrap(
    machine: &Machine,
    log: &RaftStorage,
    cluster_id: u64,
    members: &[cairnpb::Member],
) -> Result<(), Error> {
    let index = machine.applied_index().max(1);
    machine.bootstrap(index, cluster_id, members)?;
    let mut meta = ::raft::eraftpb::SnapshotMetadata {
        index,
        term: 1,
        ..Default::default()
    };
    meta.mut_conf_state().voters = members.iter().map(|m| m.id).collect();
    log.apply_snapshot(&meta)?;
    Ok(())
}

/// Starts a member on listeners already bound (those missing are bound
/// from the config).
pub async fn start_with(config: Config, listeners: Listeners) -> Result<Handle, Error> {
    crate::logging::lifecycle::configuring_listeners(&config);
    // Bind first: a taken port should fail before the data directory is touched.
    let client_listeners = if listeners.client.is_empty() {
        bind_all(&config.listen_client_urls).await?
    } else {
        listeners.client
    };
    let peer_listeners = if listeners.peer.is_empty() {
        bind_all(&config.listen_peer_urls).await?
    } else {
        listeners.peer
    };
    // How this member connects to its peers (from `--experimental-peer-source-address`).
    let dialer = Dialer::new(config.peer_source_address);
    crate::logging::lifecycle::starting_server(&config);
    let joined = join_id(&config, &dialer).await?;
    let open_config = config.clone();
    let joined_id = joined.id;
    let opened = tokio::task::spawn_blocking(move || open(&open_config, joined_id)).await??;
    let identity = Identity {
        cluster_id: opened.cluster_id,
        member_id: opened.member_id,
    };
    if config.initial_corrupt_check {
        crate::recovery::initial_corrupt_check(
            &opened.machine,
            opened.member_id,
            &dialer,
            config.request_timeout(),
        )
        .await?;
    }

    // Raft: the node's input channel first, so the transport can report to it.
    let (inputs, inputs_rx) = std::sync::mpsc::channel();
    // Weak: peer tasks that outlive a stop must not keep the data open.
    let resolver_machine = Arc::downgrade(&opened.machine);
    // Until the member table is known (a joining member before its first
    // snapshot), peers are found from the table the cluster gave it when it
    // joined, and from `--initial-cluster`.
    let initial: std::collections::HashMap<u64, String> = config
        .initial_members()?
        .into_iter()
        .filter_map(|(_, urls)| {
            let id = member_id(&urls, &config.initial_cluster_token);
            urls.first().map(|u| (id, u.clone()))
        })
        .chain(joined.peers)
        .collect();
    let resolve: crate::raft::transport::Resolver = Arc::new(move |id| {
        resolver_machine
            .upgrade()
            .and_then(|machine| machine.member(id))
            .and_then(|m| m.peer_urls.first().cloned())
            .or_else(|| initial.get(&id).cloned())
    });
    let peers = Arc::new(Peers::new(
        opened.member_id,
        resolve,
        inputs.clone(),
        dialer.clone(),
    ));
    let election_ticks = (config.election_timeout.as_millis()
        / config.heartbeat_interval.as_millis().max(1))
    .max(2) as usize;
    let node_config = NodeConfig {
        id: opened.member_id,
        heartbeat: config.heartbeat_interval,
        election_ticks,
        snapshot_count: config.snapshot_count,
        catch_up_entries: config.snapshot_catchup_entries,
    };
    let (raft, raft_thread) = crate::raft::node::start(
        node_config,
        Arc::clone(&opened.log),
        Arc::clone(&opened.machine),
        peers,
        (inputs.clone(), inputs_rx),
    )?;
    let member = Arc::new(
        Member::with_machine(
            Arc::clone(&opened.machine),
            identity,
            Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
            Some(Replication {
                raft: raft.clone(),
                request_timeout: config.request_timeout(),
                leader_change_grace: config.election_timeout,
                broken_stale_reads: config.jepsen_broken_stale_reads,
            }),
        )
        .with_watch_progress_interval(config.watch_progress_notify_interval)
        .with_quota(config.quota_backend_bytes)
        .with_strict_reconfig_check(config.strict_reconfig_check)
        .with_zone(config.zone.clone())
        .with_peer_dialer(dialer),
    );

    let (stop, stopped) = watch::channel(false);
    let mut peer_urls = Vec::new();
    let mut peer_servers = Vec::new();
    for listener in peer_listeners {
        peer_urls.push(local_url(&listener)?);
        crate::logging::lifecycle::serving_peer(
            peer_urls
                .last()
                .map_or("", |u| u.trim_start_matches("http://")),
        );
        let service = PeerService::new(inputs.clone(), &member).into_server();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut stopped = stopped.clone();
        peer_servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }),
        ));
    }

    // A lone voter leads at once: wait for it, so that the first client
    // request finds a leader (and the lessor promoted).
    // (A member joining an existing cluster knows no voter yet: it must not
    // wait; it used to, for a whole request timeout, before serving.)
    let voters = raft.status().voters;
    if voters.len() == 1 && voters.contains(&identity.member_id) {
        let mut status = raft.subscribe();
        let _ = tokio::time::timeout(
            config.request_timeout(),
            status.wait_for(|s| s.is_leader || s.failed),
        )
        .await;
        if raft.status().is_leader {
            member.lessor().promote();
        }
    }

    crate::logging::lifecycle::starting_etcd_server(identity.member_id);

    let (health, health_service) = crate::grpc::health().await;
    let mut client_urls = Vec::new();
    let mut servers = Vec::new();
    for listener in client_listeners {
        let url = local_url(&listener)?;
        client_urls.push(url);
        let mut stopped = stopped.clone();
        let shutdown = async move {
            // An error means the handle was dropped: stop as well.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        servers.push(tokio::spawn(crate::grpc::serve(
            Arc::clone(&member),
            listener,
            health_service.clone(),
            config.max_concurrent_streams,
            shutdown,
        )));
    }
    crate::logging::lifecycle::now_serving(identity.member_id, &config, &peer_urls, &client_urls);
    for url in &client_urls {
        // The listener is bound and its server spawned: a client that
        // reads this line and connects is served.
        crate::logging::lifecycle::ready_to_serve(url.trim_start_matches("http://"));
    }
    let advertised = if config.advertise_client_urls.is_empty()
        || config.listen_client_urls.iter().any(|u| u.ends_with(":0"))
    {
        client_urls.clone()
    } else {
        config.advertise_client_urls.clone()
    };
    let mut tasks = vec![
        tokio::spawn(sync_watchers(Arc::clone(member.store()), stopped.clone())),
        tokio::spawn(crate::lease::task::run(
            Arc::clone(&member),
            stopped.clone(),
        )),
        tokio::spawn(follow_leadership(Arc::clone(&member), stopped.clone())),
        tokio::spawn(publish(
            Arc::clone(&member),
            config.name.clone(),
            advertised,
            config.request_timeout(),
            stopped.clone(),
        )),
    ];
    if let Some(keys) = member.machine().keys() {
        tasks.push(tokio::spawn(reseal(keys.clone(), stopped.clone())));
    }
    if config.auto_compaction != crate::compactor::AutoCompaction::Off {
        let (member, mode, stopped) =
            (Arc::clone(&member), config.auto_compaction, stopped.clone());
        tracing::info!(?mode, "auto compaction enabled");
        tasks.push(tokio::spawn(async move {
            crate::compactor::run(member.as_ref(), mode, stopped).await;
        }));
    }
    tasks.push(tokio::spawn(report_health(
        Arc::clone(&member),
        health,
        stopped.clone(),
    )));
    if !config.corrupt_check_time.is_zero() {
        tasks.push(tokio::spawn(check_corruption(
            Arc::clone(&member),
            config.corrupt_check_time,
            stopped.clone(),
        )));
    }
    Ok(Handle {
        member,
        client_urls,
        peer_urls,
        stop,
        servers,
        peer_servers,
        tasks,
        raft_thread: Some(raft_thread),
    })
}

/// Resolves once `member`'s raft loop has failed; never for a member
/// without raft, or whose raft thread ended otherwise.
async fn raft_failed(member: &Member) {
    let Some(replication) = member.replication() else {
        return std::future::pending().await;
    };
    let mut status = replication.raft.subscribe();
    if status.wait_for(|s| s.failed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps the gRPC health service true: SERVING while the member serves,
/// NOT_SERVING once it stops or its raft loop has failed. A failed member
/// also stops answering at once ("server stopped"): it can no longer apply
/// entries, so it must not look alive with stale state meanwhile. The
/// `cairn` binary exits then ([`Handle::failed`]), as etcd does.
async fn report_health(
    member: Arc<Member>,
    health: tonic_health::server::HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::select! {
        () = raft_failed(&member) => {
            tracing::error!("the member's raft loop failed: it stops serving");
            member.begin_stop();
        }
        _ = stopped.wait_for(|stop| *stop) => {}
    }
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

/// Promotes the lessor when this member becomes the leader and demotes it
/// when it stops being one: only the leader keeps lease expiries.
async fn follow_leadership(member: Arc<Member>, mut stopped: watch::Receiver<bool>) {
    let Some(replication) = member.replication() else {
        return;
    };
    let mut status = replication.raft.subscribe();
    let mut leading = member.lessor().is_primary();
    loop {
        let is_leader = status.borrow_and_update().is_leader;
        if is_leader != leading {
            leading = is_leader;
            if leading {
                tracing::info!("became the leader: lease expiries start here");
                member.lessor().promote();
            } else {
                tracing::info!("no longer the leader: lease expiries are the leader's");
                member.lessor().demote();
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// Records re-sealed per round, and the pause between rounds: bounds the
/// background re-sealing after a key rotation to ~2,000 records a second.
const RESEAL_BATCH: usize = 200;
const RESEAL_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// After a data key rotation, re-seals old records at a bounded rate, then
/// drops the keys nothing needs any more. Survives a crash at any point:
/// it starts over from whatever is still sealed with an old key.
async fn reseal(keys: KeyHandle, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(RESEAL_PAUSE) => {}
        }
        let keys = keys.clone();
        let round = tokio::task::spawn_blocking(move || keys.reseal_round(RESEAL_BATCH)).await;
        match round {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "re-sealing failed; will retry"),
            Err(e) => tracing::error!(error = %e, "re-sealing task failed"),
        }
    }
}

/// Runs the leader's corruption check every `interval`.
async fn check_corruption(
    member: Arc<Member>,
    interval: std::time::Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = member.check_corruption().await {
            tracing::warn!(error = %e, "corruption check failed");
        }
    }
}

/// Announces this member's name, client URLs and zone, retrying until the
/// cluster has applied them (a new cluster may not have a leader yet).
async fn publish(
    member: Arc<Member>,
    name: String,
    client_urls: Vec<String>,
    timeout: std::time::Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let me = member.machine().member(member.identity().member_id);
        // Published already (by an earlier start) counts too: the line
        // says the cluster knows the member, as etcd's does at each start.
        let published = if me.as_ref().is_some_and(|m| {
            m.name == name && m.client_urls == client_urls && m.zone == member.zone()
        }) {
            true
        } else if me.is_some() {
            match member
                .publish_attributes(name.clone(), client_urls.clone())
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "publishing member attributes; will retry");
                    false
                }
            }
        } else {
            false
        };
        if published {
            crate::logging::lifecycle::published(
                member.identity().member_id,
                member.cluster_id(),
                &name,
                &client_urls,
                timeout,
            );
            return;
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
}

/// How often unsynced watchers are caught up even without a wake-up.
const WATCH_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Records read per catch-up round: bounds how long a round holds the store's
/// read lock (and so delays writers).
const WATCH_SYNC_BATCH: usize = 1000;

/// Catches up unsynced watchers from history until the member stops.
async fn sync_watchers(store: Arc<Store>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(WATCH_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = store.watch_hub().wait_for_work() => {}
            _ = tick.tick() => {}
        }
        // Nothing to catch up (the usual case): no round on the blocking pool.
        while store.watch_hub().has_unsynced() {
            let round = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || round.sync_watchers(WATCH_SYNC_BATCH)).await {
                Ok(Ok(outcome)) if outcome.unsynced > 0 && outcome.progressed => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "watch catch-up failed");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up task failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd_defaults() {
        // A default `etcd` reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let member = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[member])), "cdf818194e3a8c32");
    }

    #[test]
    fn url_table() {
        assert_eq!(
            host_port("http://127.0.0.1:2379").ok(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(host_port("http://localhost:0/").ok(), Some("localhost:0"));
        for bad in [
            "127.0.0.1:2379",
            "https://a:1",
            "http://nohost",
            "http://a:1/path",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
