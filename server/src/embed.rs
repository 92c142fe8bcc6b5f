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
//!
//! [`start_with`] binds, prepares the data directory
//! ([`crate::bootstrap::prepare`]), starts raft, the peer and client
//! servers and the background tasks ([`crate::tasks`]); the [`Handle`] stops
//! them all with one signal.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::bootstrap::listen::local_url;
use crate::bootstrap::tls::Transport;
use crate::bootstrap::Released;
use crate::member::{Apis, Identity, Limits, Replication};
use crate::metrics::Metrics;
use crate::peer::PeerService;
use crate::raft::{Dialer, NodeConfig, Peers, RaftService, StreamReceiver};
use crate::tasks::Tasks;

pub use crate::bootstrap::{
    bind, cluster_id, key_file_path, member_id, restore_snapshot, Listeners, LISTEN_BACKLOG,
};
pub use crate::config::{ClusterState, Config};

/// Errors starting or stopping a member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not describe a cluster this member is in.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Binding, opening the data directory, or a start-up check failed.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::Error),
    /// Raft could not start.
    #[error(transparent)]
    Raft(#[from] crate::raft::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The metrics could not be registered (a bug: their names are fixed).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// `--auth-token jwt,...` whose keys do not load.
    #[error("--auth-token: {0}")]
    AuthToken(String),
}

/// How long [`Handle::stop`] waits for clients to finish before it closes
/// their connections.
pub const GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// What a server task returns.
type Served = Result<(), tonic::transport::Error>;

/// A running member: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Handle {
    /// The member's state, for in-process inspection.
    member: Arc<Apis>,
    /// The client URLs actually bound (ports resolved when 0 was asked).
    client_urls: Vec<String>,
    /// The peer URLs actually bound.
    peer_urls: Vec<String>,
    /// The bound `--listen-metrics-urls`.
    metrics_urls: Vec<String>,
    /// The one shutdown signal and the background tasks that watch it.
    tasks: Tasks,
    /// One server per client listener; they drain on the signal.
    servers: JoinSet<Served>,
    /// One server per peer listener; aborted on stop (peers stream forever).
    peer_servers: JoinSet<Served>,
    /// The raft thread (not a tokio task: raft's loop blocks).
    raft_thread: Option<std::thread::JoinHandle<()>>,
    /// Raft's sending side, which owns the peer tasks: stopped and joined
    /// once the raft thread has stopped (until then, writes of clients still
    /// draining need raft's messages to reach the peers).
    peers: Arc<Peers>,
    /// Resolves once the data directory is closed: `stop` returns only
    /// then, so that an in-process restart can reopen it at once.
    released: Released,
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

    /// The bound metrics URLs (`--listen-metrics-urls`, ports resolved).
    pub fn metrics_urls(&self) -> &[String] {
        &self.metrics_urls
    }

    /// The member being served.
    pub fn member(&self) -> &Arc<Apis> {
        &self.member
    }

    /// Resolves once this member has applied its own removal from the
    /// cluster (its raft loop has stopped; it must stop serving, as etcd
    /// exits).
    pub async fn removed(&self) {
        let replication = self.member.proposer().replication();
        let mut ending = replication.raft.ending();
        if ending
            .wait_for(|e| *e == crate::raft::Ending::Removed)
            .await
            .is_err()
        {
            // The raft thread is gone without a removal: never resolve.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this member's raft loop has failed (a disk write
    /// failed, say a full disk): it cannot apply anything any more, has
    /// stopped serving, and should exit so that a supervisor restarts it
    /// (etcd exits).
    pub async fn failed(&self) {
        crate::tasks::serving::raft_failed(self.member.proposer()).await;
    }

    /// Stops accepting requests, lets in-flight ones finish (for at most
    /// [`GRACE_PERIOD`]; connections still open then are dropped), stops
    /// raft, waits for the servers to exit and the data directory to
    /// close. Every acknowledged write is already on disk.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.tasks.signal();
        let mut first_error = None;
        let drained = join_servers(&mut self.servers, &mut first_error);
        if tokio::time::timeout(GRACE_PERIOD, drained).await.is_err() {
            tracing::warn!(grace = ?GRACE_PERIOD, "clients still connected after the grace period; closing them");
            self.servers.abort_all();
            join_servers(&mut self.servers, &mut first_error).await;
        }
        self.shutdown_rest().await;
        first_error.map_or(Ok(()), Err)
    }

    /// Stops at once, as close to a crash as a process can get while keeping
    /// its threads: connections are dropped without a grace period and
    /// raft stops. (Nothing acknowledged is lost either way: it is on disk.)
    pub async fn kill(mut self) {
        self.tasks.signal();
        self.servers.abort_all();
        join_servers(&mut self.servers, &mut None).await;
        self.shutdown_rest().await;
    }

    /// Waits until the servers exit (after a failure of one), then stops
    /// the rest.
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut first_error = None;
        join_servers(&mut self.servers, &mut first_error).await;
        self.shutdown_rest().await;
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the peer servers, the background tasks, raft and its peer tasks,
    /// and waits until the data directory is closed.
    async fn shutdown_rest(self) {
        let Handle {
            member,
            mut peer_servers,
            mut tasks,
            raft_thread,
            peers,
            released,
            ..
        } = self;
        // Peers stream forever: abort their servers rather than wait.
        peer_servers.abort_all();
        while peer_servers.join_next().await.is_some() {}
        tasks.join().await;
        member
            .proposer()
            .replication()
            .raft
            .send(crate::raft::Input::Stop);
        if let Some(thread) = raft_thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Nothing sends to peers any more: end and join their tasks.
        peers.stop().await;
        // Store work already handed to the blocking pool finishes by
        // itself; the last holder of the engine closes it.
        drop(member);
        released.wait(GRACE_PERIOD).await;
    }
}

/// Waits for every server in `servers`, keeping the first failure (an
/// aborted server is no failure: it was asked to go).
async fn join_servers(servers: &mut JoinSet<Served>, first_error: &mut Option<Error>) {
    while let Some(joined) = servers.join_next().await {
        let error = match joined {
            Ok(Ok(())) => continue,
            Err(e) if e.is_cancelled() => continue,
            Ok(Err(e)) => Error::from(e),
            Err(e) => Error::from(e),
        };
        first_error.get_or_insert(error);
    }
}

/// Opens the data directory and starts serving the client API.
pub async fn start(config: Config) -> Result<Handle, Error> {
    start_with(config, Listeners::default()).await
}

/// Starts a member on listeners already bound (those missing are bound
/// from the config).
pub async fn start_with(config: Config, listeners: Listeners) -> Result<Handle, Error> {
    crate::logging::lifecycle::configuring_listeners(&config);
    // The token provider first: JWT key files that do not load stop the
    // start before anything is touched.
    let tokens = crate::auth::token::provider(&config.auth_token, config.auth_token_ttl)
        .map_err(|e| Error::AuthToken(e.to_string()))?;
    // Bind first: a taken port should fail before the data directory is touched.
    let bound = listeners.bind_missing(&config).await?;
    // TLS of both sides: the member's own files and flags are checked here.
    let transport = Transport::from_config(&config).map_err(crate::bootstrap::Error::from)?;
    // How this member connects to its peers (from
    // `--experimental-peer-source-address` and the peer TLS flags).
    let dialer = Dialer::new(config.peer_source_address, transport.peer_client.clone());
    crate::logging::lifecycle::starting_server(&config);
    let (opened, joined) = crate::bootstrap::prepare(&config, &dialer).await?;
    let identity = Identity {
        cluster_id: opened.cluster_id,
        member_id: opened.member_id,
    };
    // The metrics are labelled with the member's id, known only now; the
    // store and the log count from here on.
    let metrics = Arc::new(Metrics::new(config.metrics, opened.member_id)?);
    opened.log.set_metrics(metrics.wal.clone());
    metrics
        .server
        .quota_backend_bytes
        .set(i64::try_from(config.quota_backend_bytes).unwrap_or(i64::MAX));

    // Raft: the node's input channel first, so the transport can report to it.
    let (inputs, inputs_rx) = crate::raft::inbox().map_err(crate::raft::Error::Thread)?;
    let resolve =
        crate::bootstrap::join::resolver(&config, joined.peers, Arc::downgrade(&opened.machine))?;
    let peers = Arc::new(
        Peers::new(opened.member_id, resolve, inputs.clone(), dialer.clone())
            .with_metrics(Arc::clone(&metrics.network)),
    );
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
    // The token provider: member-local state that applied entries change,
    // set before the first entry is applied (the raft thread starts below).
    opened.machine.auth().set_tokens(tokens);
    let (raft, raft_thread) = crate::raft::node::start(
        node_config,
        Arc::clone(&opened.log),
        Arc::clone(&opened.machine),
        Arc::clone(&peers),
        (inputs.clone(), inputs_rx),
        Some(metrics.server.raft.clone()),
    )?;
    let member = Arc::new(
        Apis::builder(
            Arc::clone(&opened.machine),
            identity,
            Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
            Replication {
                raft: raft.clone(),
                request_timeout: config.request_timeout(),
                leader_change_grace: config.election_timeout,
                broken_stale_reads: config.jepsen_broken_stale_reads,
            },
        )
        .with_watch_progress_interval(config.watch_progress_notify_interval)
        .with_quota(config.quota_backend_bytes)
        .with_strict_reconfig_check(config.strict_reconfig_check)
        .with_zone(config.zone.clone())
        .with_peer_dialer(dialer)
        .with_metrics(Arc::clone(&metrics))
        .with_bcrypt_cost(config.bcrypt_cost)
        .build(),
    );

    // One shutdown signal for the servers and every background task.
    let mut tasks = Tasks::new();
    let mut peer_urls = Vec::new();
    let mut peer_servers = JoinSet::new();
    for bound in bound.peer {
        peer_urls.push(local_url(&bound)?);
        crate::logging::lifecycle::serving_peer(
            peer_urls
                .last()
                .map_or("", |u| u.split("://").nth(1).unwrap_or(u)),
        );
        let raft_service = RaftService::new(inputs.clone())
            .with_metrics(Arc::clone(&metrics.network))
            .into_server();
        let raft_streams = Arc::new(
            StreamReceiver::new(inputs.clone()).with_metrics(Arc::clone(&metrics.network)),
        );
        let peer_service = PeerService::new(&member).into_server();
        let security = transport.peer_security(&bound);
        let incoming = cairn_tls::server::TlsIncoming::new(bound.listener, security, "peer");
        let mut shutdown = tasks.shutdown();
        peer_servers.spawn(crate::peer::port::serve(
            incoming,
            tonic::transport::Server::builder()
                .add_service(raft_service)
                .add_service(peer_service),
            raft_streams,
            async move { shutdown.recv().await },
        ));
    }

    // A lone voter leads at once: wait for it, so that the first client
    // request finds a leader (and the lessor promoted).
    // (A member joining an existing cluster knows no voter yet: it must not
    // wait; it used to, for a whole request timeout, before serving.)
    let voters = raft.status().voters;
    if voters.len() == 1 && voters.contains(&identity.member_id) {
        let started = std::time::Instant::now();
        let mut status = raft.subscribe();
        let mut ending = raft.ending();
        let _ = tokio::time::timeout(config.request_timeout(), async {
            tokio::select! {
                _ = status.wait_for(|s| s.is_leader) => {}
                _ = ending.wait_for(|e| *e != crate::raft::Ending::Running) => {}
            }
        })
        .await;
        if raft.status().is_leader {
            member.lease().lessor().leader_only().promote();
        }
        let took_ms = crate::duration::millis_since(started);
        tracing::info!(phase = "election", took_ms, "start-up phase");
    }

    crate::logging::lifecycle::starting_etcd_server(identity.member_id);

    let (health, health_service) = crate::grpc::health().await;
    let mut client_urls = Vec::new();
    let mut servers = JoinSet::new();
    for bound in bound.client {
        client_urls.push(local_url(&bound)?);
        let security = transport.client_security(&bound);
        servers.spawn(crate::grpc::serve(
            Arc::clone(&member),
            bound.listener,
            security,
            health_service.clone(),
            config.max_concurrent_streams,
            {
                let mut shutdown = tasks.shutdown();
                async move { shutdown.recv().await }
            },
        ));
    }
    // `--listen-metrics-urls`: metrics and health only, drained like the
    // client servers.
    let mut metrics_urls = Vec::new();
    for bound in bound.metrics {
        metrics_urls.push(local_url(&bound)?);
        let security = transport.client_security(&bound);
        let mut shutdown = tasks.shutdown();
        servers.spawn(crate::http::serve_metrics(
            Arc::clone(&member),
            bound.listener,
            security,
            async move { shutdown.recv().await },
        ));
    }
    crate::logging::lifecycle::now_serving(identity.member_id, &config, &peer_urls, &client_urls);
    for url in &client_urls {
        // The listener is bound and its server spawned: a client that
        // reads this line and connects is served.
        crate::logging::lifecycle::ready_to_serve(url.split("://").nth(1).unwrap_or(url));
    }
    let advertised = if config.advertise_client_urls.is_empty()
        || config.listen_client_urls.iter().any(|u| u.ends_with(":0"))
    {
        client_urls.clone()
    } else {
        config.advertise_client_urls.clone()
    };
    crate::tasks::start_member_tasks(
        &mut tasks,
        &member,
        &opened.log,
        &config,
        advertised,
        health,
    );
    Ok(Handle {
        member,
        client_urls,
        peer_urls,
        metrics_urls,
        tasks,
        servers,
        peer_servers,
        raft_thread: Some(raft_thread),
        peers,
        released: opened.released,
    })
}
