//! The peer transport: raft messages between members over tonic gRPC.
//!
//! Sending side ([`Peers`]): one task per peer owns a long-lived
//! client-streaming `Send` call and a bounded queue. The raft thread only
//! ever `try_send`s into the queue: when it is full (the peer is slow or
//! gone) the message is dropped and raft is told the peer is unreachable;
//! raft retransmits, so a stuck peer never blocks the leader. A broken call
//! is reopened with exponential backoff. Snapshots go on their own
//! `Snapshot` call, in 1 MiB chunks, so a large one never sits in front of
//! heartbeats.
//!
//! Receiving side ([`PeerService`]): decodes each message and hands it to the
//! raft thread; reassembles snapshots before handing them over. It also
//! answers the lease requests followers forward to the leader.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::raft::eraftpb::Message;
use cairn_proto::cairnpb::raft_client::RaftClient;
use cairn_proto::cairnpb::raft_server::{self, RaftServer};
use cairn_proto::cairnpb::{
    lease_forward, Done, LeaseForward, LeaseForwardResponse, MemberTable, RaftBatch, SnapshotChunk,
    SnapshotKeyRequest, SnapshotKeyResponse,
};
use hyper_util::client::legacy::connect::HttpConnector;
use protobuf::Message as _;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::node::{is_snapshot, Input, Transport};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages per batch on the stream.
const BATCH_MESSAGES: usize = 512;
/// Snapshot chunk size.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Snapshot transfers a member keeps keys for at most.
const MAX_PENDING_TRANSFERS: usize = 64;
/// Largest gRPC message a member accepts from a peer.
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
/// Backoff bounds for reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Finds a member's peer URL (from the replicated member table).
pub type Resolver = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// The sending side: a queue and a task per peer.
pub struct Peers {
    /// This member's id (messages to itself are never sent).
    id: u64,
    /// Peer id -> its queue.
    queues: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    /// Where peers are.
    resolve: Resolver,
    /// Reports to the raft thread (unreachable peers, snapshot outcomes).
    inputs: Mutex<Sender<Input>>,
    /// The runtime the peer tasks run on (the raft thread is not a tokio thread).
    runtime: tokio::runtime::Handle,
    /// How the peer tasks connect.
    dialer: Dialer,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("id", &self.id).finish()
    }
}

impl Peers {
    /// Peers of member `id`; must be created inside a tokio runtime.
    pub fn new(id: u64, resolve: Resolver, inputs: Sender<Input>, dialer: Dialer) -> Self {
        Self {
            id,
            dialer,
            queues: Mutex::new(HashMap::new()),
            resolve,
            inputs: Mutex::new(inputs),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn report(&self, input: Input) {
        let inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inputs.send(input);
    }

    fn queue(&self, to: u64) -> mpsc::Sender<Message> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&to) {
            if !q.is_closed() {
                return q.clone();
            }
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.runtime.spawn(run_peer(
            self.dialer.clone(),
            to,
            Arc::clone(&self.resolve),
            rx,
            inputs,
        ));
        queues.insert(to, tx.clone());
        tx
    }

    fn send_snapshot(&self, msg: Message) {
        let to = msg.to;
        let Some(url) = (self.resolve)(to) else {
            self.report(Input::SnapshotSent { to, failed: true });
            return;
        };
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dialer = self.dialer.clone();
        self.runtime.spawn(async move {
            let failed = match send_snapshot(&dialer, &url, msg).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(peer = format!("{to:x}"), error = %e, "sending a snapshot failed");
                    true
                }
            };
            let _ = inputs.send(Input::SnapshotSent { to, failed });
        });
    }
}

impl Transport for Peers {
    fn send(&self, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            if to == self.id || to == 0 {
                continue;
            }
            if is_snapshot(&msg) {
                self.send_snapshot(msg);
                continue;
            }
            if self.queue(to).try_send(msg).is_err() {
                self.report(Input::Unreachable(to));
            }
        }
    }
}

/// How this member opens connections to its peers: every peer channel (raft
/// streams, snapshots, lease forwarding, member lookup, hash checks) is made
/// here, so one setting applies to all of them.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    /// Local address to connect from (`--experimental-peer-source-address`);
    /// `None` lets the OS choose. A fault-injection proxy (cairn-jepsen) tells
    /// members apart by it, as a firewall would.
    source: Option<IpAddr>,
}

impl Dialer {
    /// Connections from `source` (or from whatever the OS picks).
    pub fn new(source: Option<IpAddr>) -> Self {
        Dialer { source }
    }

    fn endpoint(url: &str) -> Result<Endpoint, String> {
        Ok(Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5)))
    }

    fn connector(&self) -> HttpConnector {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_local_address(self.source);
        connector
    }

    /// A channel to a peer URL, connected now.
    async fn connect(&self, url: &str) -> Result<Channel, String> {
        let endpoint = Self::endpoint(url)?;
        match self.source {
            None => endpoint.connect().await,
            Some(_) => endpoint.connect_with_connector(self.connector()).await,
        }
        .map_err(|e| e.to_string())
    }

    /// A channel to a peer URL that connects on first use (and reconnects).
    fn lazy(&self, url: &str) -> Result<Channel, String> {
        let endpoint = Self::endpoint(url)?;
        Ok(match self.source {
            None => endpoint.connect_lazy(),
            Some(_) => endpoint.connect_with_connector_lazy(self.connector()),
        })
    }
}

fn client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

/// One peer's task: (re)connects and streams its queue.
async fn run_peer(
    dialer: Dialer,
    to: u64,
    resolve: Resolver,
    mut queue: mpsc::Receiver<Message>,
    inputs: Sender<Input>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = match resolve(to) {
            Some(url) => dialer.connect(&url).await,
            None => Err("no peer URL known".to_string()),
        };
        let channel = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = format!("{to:x}"), error = %e, "peer unreachable");
                let _ = inputs.send(Input::Unreachable(to));
                // What is queued is stale by the time the peer is back;
                // raft retransmits what matters.
                while queue.try_recv().is_ok() {}
                if queue.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let (tx, rx) = mpsc::channel::<RaftBatch>(16);
        let mut raft = client(channel);
        let call = tokio::spawn(async move {
            raft.send(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        loop {
            let Some(first) = queue.recv().await else {
                call.abort();
                return;
            };
            let mut messages = Vec::with_capacity(8);
            for msg in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                match msg.write_to_bytes() {
                    Ok(bytes) => messages.push(bytes),
                    Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
                }
                if messages.len() >= BATCH_MESSAGES {
                    break;
                }
            }
            if tx.send(RaftBatch { messages }).await.is_err() {
                let _ = inputs.send(Input::Unreachable(to));
                break;
            }
        }
        call.abort();
    }
}

async fn send_snapshot(dialer: &Dialer, url: &str, mut msg: Message) -> Result<(), String> {
    let mut raft = client(dialer.connect(url).await?);
    // Agree on a key for this transfer, then seal the snapshot with it.
    let exchange = super::wire::Exchange::start().map_err(|e| e.to_string())?;
    let agreed = raft
        .snapshot_key(SnapshotKeyRequest {
            public_key: exchange.public_key(),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let key = exchange
        .finish(&agreed.public_key, agreed.transfer)
        .map_err(|e| e.to_string())?;
    let data = std::mem::take(&mut msg.mut_snapshot().data).to_vec();
    let sealed = key.seal(data).map_err(|e| e.to_string())?;
    let header = msg.write_to_bytes().map_err(|e| e.to_string())?;
    let mut chunks = vec![SnapshotChunk {
        message: header,
        data: Vec::new(),
        transfer: agreed.transfer,
    }];
    chunks.extend(sealed.chunks(SNAPSHOT_CHUNK).map(|c| SnapshotChunk {
        message: Vec::new(),
        data: c.to_vec(),
        transfer: 0,
    }));
    raft.snapshot(tokio_stream::iter(chunks))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// What a member answers its peers beyond raft messages: the lease
/// requests a follower forwards (only the leader keeps lease expiries), the
/// member table, and its HashKV for the corruption check.
#[tonic::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    /// Renews lease `id`; its TTL.
    async fn renew(&self, id: i64) -> Result<i64, crate::error::EtcdError>;
    /// The cluster id and member table.
    fn members(&self) -> (u64, Vec<cairn_proto::cairnpb::Member>);
    /// HashKV at a revision.
    async fn hash_kv(
        &self,
        revision: i64,
    ) -> Result<cairn_proto::etcdserverpb::HashKvResponse, crate::error::EtcdError>;
    /// LeaseTimeToLive.
    async fn time_to_live(
        &self,
        req: cairn_proto::etcdserverpb::LeaseTimeToLiveRequest,
    ) -> Result<cairn_proto::etcdserverpb::LeaseTimeToLiveResponse, crate::error::EtcdError>;
}

/// The receiving side of the peer service.
pub struct PeerService<L> {
    /// The raft thread's inputs.
    inputs: Mutex<Sender<Input>>,
    /// Who answers the non-raft requests. Weak: connections from peers
    /// outlive a stopping member's server for a while, and must not keep
    /// its state (and data directory) open.
    handler: std::sync::Weak<L>,
    /// Keys of snapshot transfers agreed but not yet received, by id.
    transfers: Mutex<HashMap<u64, super::wire::TransferKey>>,
    /// The next transfer id.
    next_transfer: std::sync::atomic::AtomicU64,
}

impl<L: PeerHandler> PeerService<L> {
    /// A service feeding `inputs`.
    pub fn new(inputs: Sender<Input>, handler: &Arc<L>) -> Self {
        Self {
            inputs: Mutex::new(inputs),
            handler: Arc::downgrade(handler),
            transfers: Mutex::new(HashMap::new()),
            next_transfer: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    fn handler(&self) -> Result<Arc<L>, Status> {
        self.handler
            .upgrade()
            .ok_or_else(|| Status::unavailable("etcdserver: server stopped"))
    }

    fn step(&self, msg: Message) -> Result<(), Status> {
        let inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        inputs
            .send(Input::Step(msg))
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    let mut msg = Message::default();
    msg.merge_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
    Ok(msg)
}

#[tonic::async_trait]
impl<L: PeerHandler> raft_server::Raft for PeerService<L> {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            for bytes in batch.messages {
                self.step(decode(&bytes)?)?;
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let key = self
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&first.transfer)
            .ok_or_else(|| Status::failed_precondition("unknown snapshot transfer"))?;
        let mut msg = decode(&first.message)?;
        let mut sealed = first.data;
        while let Some(chunk) = stream.message().await? {
            sealed.extend_from_slice(&chunk.data);
        }
        let data = key
            .open(sealed)
            .map_err(|e| Status::data_loss(e.to_string()))?;
        msg.mut_snapshot().data = data.into();
        self.step(msg)?;
        Ok(Response::new(Done {}))
    }

    async fn snapshot_key(
        &self,
        request: Request<SnapshotKeyRequest>,
    ) -> Result<Response<SnapshotKeyResponse>, Status> {
        let sender = request.into_inner().public_key;
        let exchange =
            super::wire::Exchange::start().map_err(|e| Status::internal(e.to_string()))?;
        let public_key = exchange.public_key();
        let transfer = self
            .next_transfer
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = exchange
            .finish(&sender, transfer)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        // A sender that never followed up must not pile keys up forever.
        if transfers.len() >= MAX_PENDING_TRANSFERS {
            transfers.clear();
        }
        transfers.insert(transfer, key);
        Ok(Response::new(SnapshotKeyResponse {
            transfer,
            public_key,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<cairn_proto::etcdserverpb::HashKvRequest>,
    ) -> Result<Response<cairn_proto::etcdserverpb::HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        Ok(Response::new(self.handler()?.hash_kv(revision).await?))
    }

    async fn members(&self, _request: Request<Done>) -> Result<Response<MemberTable>, Status> {
        let (cluster_id, members) = self.handler()?.members();
        Ok(Response::new(MemberTable {
            cluster_id,
            members,
        }))
    }

    async fn lease(
        &self,
        request: Request<LeaseForward>,
    ) -> Result<Response<LeaseForwardResponse>, Status> {
        let resp = match request.into_inner().request {
            Some(lease_forward::Request::Renew(id)) => LeaseForwardResponse {
                ttl: self.handler()?.renew(id).await?,
                time_to_live: None,
            },
            Some(lease_forward::Request::TimeToLive(req)) => LeaseForwardResponse {
                ttl: 0,
                time_to_live: Some(self.handler()?.time_to_live(req).await?),
            },
            None => return Err(Status::invalid_argument("empty lease request")),
        };
        Ok(Response::new(resp))
    }
}

/// Long-lived channels to peers for requests outside raft (lease
/// forwarding): one multiplexed HTTP/2 connection per peer URL, opened
/// lazily and reused, instead of a connection per request.
#[derive(Debug, Default)]
pub struct PeerChannels {
    /// Peer URL -> channel.
    channels: Mutex<HashMap<String, Channel>>,
    /// How the channels connect.
    dialer: Dialer,
}

impl PeerChannels {
    /// Channels opened through `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        PeerChannels {
            channels: Mutex::default(),
            dialer,
        }
    }

    /// How this member connects to its peers.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The channel to `url` (created on first use, lazily connected).
    fn get(&self, url: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let channel = self.dialer.lazy(url)?;
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forwards a lease request to the leader at `url`. Errors come back as
    /// the leader's etcd error when it sent one; an unreachable leader is
    /// "no leader".
    pub async fn forward_lease(
        &self,
        url: &str,
        req: LeaseForward,
    ) -> Result<LeaseForwardResponse, crate::error::EtcdError> {
        let channel = self
            .get(url)
            .map_err(|_| crate::error::EtcdError::NoLeader)?;
        let resp = client(channel).lease(req).await.map_err(|s| {
            crate::error::EtcdError::from_message(s.message())
                .unwrap_or(crate::error::EtcdError::NoLeader)
        })?;
        Ok(resp.into_inner())
    }
}

/// Asks the members at `peer_urls` for the member table; the first answer wins.
pub async fn fetch_members(dialer: &Dialer, peer_urls: &[String]) -> Option<MemberTable> {
    for url in peer_urls {
        let Ok(channel) = dialer.connect(url).await else {
            continue;
        };
        if let Ok(table) = client(channel).members(Done {}).await {
            return Some(table.into_inner());
        }
    }
    None
}

/// The HashKV of the member at peer URL `url`, at `revision`.
pub async fn peer_hash_kv(
    dialer: &Dialer,
    url: &str,
    revision: i64,
) -> Result<cairn_proto::etcdserverpb::HashKvResponse, String> {
    let channel = dialer.connect(url).await?;
    let resp = client(channel)
        .hash_kv(cairn_proto::etcdserverpb::HashKvRequest { revision })
        .await
        .map_err(|s| s.message().to_string())?;
    Ok(resp.into_inner())
}
