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

use crate::lease::{Lessor, LessorConfig, TokioClock};
use crate::member::{Identity, Limits, Member};
use crate::mvcc::Store;
use crate::storage::{Cf, Engine, RocksEngine, WriteBatch};

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
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "default".into(),
            data_dir: "default.cairn".into(),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster_token: "etcd-cluster".into(),
            election_timeout: std::time::Duration::from_millis(1000),
            experimental_enable_lease_checkpoint: true,
            experimental_lease_checkpoint_interval: std::time::Duration::from_secs(5 * 60),
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            watch_progress_notify_interval: crate::member::DEFAULT_WATCH_PROGRESS_INTERVAL,
        }
    }
}

impl Config {
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
    /// Flipped to true to ask every listener to stop.
    stop: watch::Sender<bool>,
    /// One server task per listener.
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Catches up watchers that need history.
    sync_task: JoinHandle<()>,
    /// Revokes expired leases and checkpoints long ones; stops with the servers.
    lease_task: JoinHandle<()>,
}

impl Handle {
    /// The bound client URLs, e.g. `http://127.0.0.1:41234`.
    pub fn client_urls(&self) -> &[String] {
        &self.client_urls
    }

    /// The member being served.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// Stops accepting requests, lets in-flight ones finish (for at most
    /// [`GRACE_PERIOD`]; connections still open then are dropped), waits for
    /// the servers to exit. Every acknowledged write is already on disk.
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
        // It watches the stop flag; a panic in it has been logged already.
        let _ = (&mut self.sync_task).await;
        // Likewise; a write it has started completes before it returns.
        let _ = (&mut self.lease_task).await;
        // Store work already handed to the blocking pool finishes by itself;
        // wait for it so that the data directory is closed when we return
        // (an in-process restart reopens it at once).
        let deadline = tokio::time::Instant::now() + GRACE_PERIOD;
        while Arc::strong_count(&self.member) > 1 || Arc::strong_count(self.member.store()) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("store still in use after the grace period");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        result
    }

    /// Waits until the servers exit (after [`Handle::stop`] or a failure).
    pub async fn wait(self) -> Result<(), Error> {
        for server in self.servers {
            server.await??;
        }
        self.sync_task.abort();
        let _ = self.stop.send(true);
        let _ = self.lease_task.await;
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
const META_CLUSTER_ID: &[u8] = b"cluster_id";

/// The identity stored in the data directory, or a new one from the config
/// (stored at once, so that it never changes for this data directory).
fn load_identity(engine: &dyn Engine, config: &Config) -> Result<Identity, crate::storage::Error> {
    let read = |key| -> Result<Option<u64>, crate::storage::Error> {
        Ok(engine
            .get(Cf::Meta, key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes))
    };
    if let (Some(member_id), Some(cluster_id)) = (read(META_MEMBER_ID)?, read(META_CLUSTER_ID)?) {
        return Ok(Identity {
            cluster_id,
            member_id,
        });
    }
    let member_id = member_id(
        &config.initial_advertise_peer_urls,
        &config.initial_cluster_token,
    );
    let cluster_id = cluster_id(&[member_id]);
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, META_MEMBER_ID, member_id.to_be_bytes());
    batch.put(Cf::Meta, META_CLUSTER_ID, cluster_id.to_be_bytes());
    engine.write(batch, true)?;
    Ok(Identity {
        cluster_id,
        member_id,
    })
}

/// Opens the data directory and starts serving the client API.
pub async fn start(config: Config) -> Result<Handle, Error> {
    // Bind first: a taken port should fail before the data directory is touched.
    let mut listeners = Vec::new();
    for url in &config.listen_client_urls {
        let addr = host_port(url)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                url: url.clone(),
                source,
            })?;
        listeners.push(listener);
    }
    let db_dir = config.data_dir.join("db");
    let id_config = config.clone();
    let lessor_config = config.lessor_config();
    let (store, identity, lessor) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(&db_dir)?);
        let identity = load_identity(engine.as_ref(), &id_config)?;
        let store = Store::open(engine, true)?;
        let lessor = Lessor::recover(lessor_config, Arc::new(TokioClock), &store)?;
        Ok((store, identity, lessor))
    })
    .await??;
    let member = Arc::new(
        Member::new(
            Arc::new(store),
            identity,
            Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
        )
        .with_lessor(lessor)
        .with_watch_progress_interval(config.watch_progress_notify_interval),
    );
    tracing::info!(
        name = %config.name,
        member_id = format!("{:x}", identity.member_id),
        cluster_id = format!("{:x}", identity.cluster_id),
        revision = member.header(0).revision,
        leases = member.lessor().len(),
        "member started"
    );

    let (stop, stopped) = watch::channel(false);
    let sync_task = tokio::spawn(sync_watchers(Arc::clone(member.store()), stopped.clone()));
    let lease_task = tokio::spawn(crate::lease::task::run(
        Arc::clone(&member),
        stopped.clone(),
    ));
    let mut client_urls = Vec::new();
    let mut servers = Vec::new();
    for listener in listeners {
        let local = listener.local_addr().map_err(|source| Error::Listen {
            url: "bound listener".into(),
            source,
        })?;
        client_urls.push(format!("http://{local}"));
        tracing::info!(address = %local, "serving client requests");
        let mut stopped = stopped.clone();
        let shutdown = async move {
            // An error means the handle was dropped: stop as well.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        servers.push(tokio::spawn(crate::grpc::serve(
            Arc::clone(&member),
            listener,
            shutdown,
        )));
    }
    Ok(Handle {
        member,
        client_urls,
        stop,
        servers,
        sync_task,
        lease_task,
    })
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
