//! The sending side of the peer transport: raft messages and snapshots
//! to the other members.
//!
//! [`Peers`]: one task per peer owns a raft stream (`super::stream`: a
//! connection of its own, length-prefixed messages) and a bounded queue.
//! The raft thread only ever `try_send`s into the queue: when it is full
//! (the peer is slow or gone) the message is dropped and raft is told the
//! peer is unreachable; raft retransmits, so a stuck peer never blocks the
//! leader. A broken stream is reopened with exponential backoff.
//!
//! While a peer's task is idle on a plain TCP stream (nothing queued,
//! nothing being written), the raft thread writes its messages to the
//! connection itself, without blocking (tokio's `try_write`): one hand-off
//! between threads fewer on each message's way, the one that costs most on
//! the lone writer's path (a tokio worker woken to write a few hundred
//! bytes). What such a write leaves over, and everything sent while the
//! task is busy, goes through the queue as before, so the order of the
//! stream is the order raft sent in ([`Link`]). TLS streams are written by
//! their task alone. Snapshots
//! go on their own gRPC `Snapshot` call, sealed, in 1 MiB chunks, so a
//! large one never sits in front of heartbeats. Every peer task and
//! snapshot transfer is owned by [`Peers`] (a `JoinSet`): [`Peers::stop`]
//! ends and joins them all, and dropping [`Peers`] aborts them; nothing is
//! detached.
//!
//! The receiving side is `super::stream::StreamReceiver` (messages) and
//! `super::service::RaftService` (snapshots, the prober). What members ask
//! each other outside raft (lease forwarding, the member table, HashKV) is
//! `crate::peer`, a service of its own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::raft::eraftpb::Message;
use cairn_proto::cairnpb::raft_client::RaftClient;
use cairn_proto::cairnpb::{Done, SnapshotChunk, SnapshotKeyRequest};
use protobuf::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Status;

use super::dialer::{DialError, Dialer};
use super::node::{is_snapshot, Inbox, Input, Transport};
use super::stream::{self, encode_frames, Outgoing, StreamError};
use super::wire::{Exchange, WireError};
use crate::locks::lock;
use crate::metrics::network::{NetworkMetrics, PeerMetrics, Transfer};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages per batch on the stream.
const BATCH_MESSAGES: usize = 512;
/// Snapshot chunk size.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Largest gRPC message a member accepts from a peer.
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
/// Backoff bounds for reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The most entry bytes the raft thread writes to a peer itself: larger
/// batches are encoded and written by the peer's task, off the raft
/// thread, which has the next entries to persist (a write of a few hundred
/// bytes is what the hand-off costs most on).
const DIRECT_MAX: usize = 64 * 1024;

/// The entry bytes of `messages`, about what encoding them copies.
fn payload(messages: &[Message]) -> usize {
    messages
        .iter()
        .flat_map(|m| m.get_entries())
        .map(|e| e.data.len() + e.context.len())
        .sum()
}

/// Finds a member's peer URL (from the replicated member table).
pub type Resolver = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// What a peer's task is given to write.
#[derive(Debug)]
enum Queued {
    /// A message.
    Message(Message),
    /// The unwritten rest of frames the raft thread began writing on
    /// connection `conn` itself; meaningless on any other connection.
    Rest { conn: u64, bytes: Vec<u8> },
}

impl Queued {
    /// What to write of this on connection `conn`.
    fn on(self, conn: u64) -> Option<Outgoing> {
        match self {
            Queued::Message(msg) => Some(Outgoing::Message(msg)),
            Queued::Rest { conn: began, bytes } => {
                (began == conn).then_some(Outgoing::Encoded(bytes))
            }
        }
    }
}

/// One peer's way out: its task's queue, and whose turn it is to write.
struct Link {
    /// The task's queue.
    queue: mpsc::Sender<Queued>,
    /// Whether the raft thread may write to the connection itself.
    turn: Mutex<Turn>,
    /// etcd_network_peer_sent_bytes_total of this peer, for what the raft
    /// thread writes itself (none in unit tests).
    sent_bytes: Option<prometheus::IntCounter>,
}

/// Whose turn it is to write to a peer's connection. The raft thread writes
/// only while `busy` is false and there is a `tcp`; it sets `busy` whenever
/// it queues something, and the task clears it, under this lock, only when
/// it has written everything and its queue is empty. So the two never
/// write at once, and nothing queued is overtaken.
#[derive(Default)]
struct Turn {
    /// The stream's connection when it is plain TCP; none while the task
    /// (re)connects, or on TLS.
    tcp: Option<Arc<tokio::net::TcpStream>>,
    /// Which connection `tcp` is (a [`Queued::Rest`] belongs to one).
    conn: u64,
    /// The task has something to write.
    busy: bool,
}

/// The sending side: a queue and a task per peer.
pub struct Peers {
    /// This member's id (messages to itself are never sent).
    id: u64,
    /// Peer id -> its link.
    links: Mutex<HashMap<u64, Arc<Link>>>,
    /// The raft thread's buffer for the frames it writes itself (kept for
    /// its allocation).
    frames: Mutex<Vec<u8>>,
    /// Where peers are.
    resolve: Resolver,
    /// Reports to the raft thread (unreachable peers, snapshot outcomes).
    inputs: Mutex<Inbox>,
    /// The runtime the peer tasks run on (the raft thread is not a tokio thread).
    runtime: tokio::runtime::Handle,
    /// How the peer tasks connect.
    dialer: Dialer,
    /// Every peer task and snapshot transfer, so that none outlives the
    /// member: joined by [`Peers::stop`], aborted if `Peers` is dropped.
    tasks: Mutex<JoinSet<()>>,
    /// Turns true once, in [`Peers::stop`]: every task ends on it, and no
    /// task starts after it. Not the member's shutdown signal, which comes
    /// before clients have drained: until the raft thread stops, what they
    /// still write needs raft's messages to reach the peers.
    stop: watch::Sender<bool>,
    /// etcd_network_* of the peer side (none in unit tests).
    metrics: Option<Arc<NetworkMetrics>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("id", &self.id).finish()
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Peers {
    /// Peers of member `id`; must be created inside a tokio runtime.
    pub fn new(id: u64, resolve: Resolver, inputs: Inbox, dialer: Dialer) -> Self {
        Self {
            id,
            dialer,
            links: Mutex::new(HashMap::new()),
            frames: Mutex::new(Vec::new()),
            resolve,
            inputs: Mutex::new(inputs),
            runtime: tokio::runtime::Handle::current(),
            tasks: Mutex::new(JoinSet::new()),
            stop: watch::Sender::new(false),
            metrics: None,
        }
    }

    /// The same transport, counting bytes, failures, round trips and
    /// snapshot sends in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<NetworkMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Ends every peer task and snapshot transfer and waits for them. Called
    /// once the raft thread, the only sender, has stopped; a transfer cut
    /// short is reported failed, and whatever raft sends afterwards is
    /// reported unreachable.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        loop {
            let mut tasks = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                return;
            }
            while let Some(joined) = tasks.join_next().await {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a peer task panicked");
                    }
                }
            }
        }
    }

    fn report(&self, input: Input) {
        let _ = lock(&self.inputs).send(input);
    }

    /// Starts `task` on the runtime, owned by `self.tasks`; false (and
    /// `task` dropped) once stopping.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = lock(&self.tasks);
        if *self.stop.borrow() {
            return false;
        }
        // Finished transfers leave their results behind: reap them, so the
        // set holds live tasks only.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
        true
    }

    fn link(&self, to: u64) -> Arc<Link> {
        let mut links = lock(&self.links);
        if let Some(link) = links.get(&to) {
            if !link.queue.is_closed() {
                return Arc::clone(link);
            }
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let metrics = self.metrics.as_ref().map(|m| m.peer(to));
        let link = Arc::new(Link {
            queue: tx,
            turn: Mutex::new(Turn::default()),
            sent_bytes: metrics.as_ref().map(|m| m.sent_bytes.clone()),
        });
        // Refused once stopping: `rx` is dropped with the task, so the
        // caller's `try_send` fails and raft hears the peer is unreachable.
        self.spawn(run_peer(
            self.dialer.clone(),
            to,
            Arc::clone(&self.resolve),
            (Arc::clone(&link), rx),
            lock(&self.inputs).clone(),
            self.stop.subscribe(),
            metrics,
        ));
        links.insert(to, Arc::clone(&link));
        link
    }

    /// Sends `messages` (all to `to`, in raft's order): written here when
    /// it is this thread's turn ([`Turn`]), queued for the peer's task
    /// otherwise.
    fn send_to(&self, to: u64, messages: Vec<Message>) {
        let link = self.link(to);
        let mut turn = lock(&link.turn);
        let queued = match (&turn.tcp, turn.busy) {
            (Some(tcp), false) if payload(&messages) <= DIRECT_MAX => {
                let mut frames = lock(&self.frames);
                frames.clear();
                let bytes = encode_frames(&mut frames, messages);
                if let Some(sent) = &link.sent_bytes {
                    sent.inc_by(bytes);
                }
                // A broken connection writes nothing: the task finds it broken
                // too when it writes the rest, and reconnects.
                let written = tcp.try_write(&frames).unwrap_or_default();
                if written == frames.len() {
                    return;
                }
                // Not busy, so the queue is empty: the rest goes first, and
                // only a closed queue (the task gone, and the connection with
                // it) refuses it.
                frames.drain(..written);
                vec![Queued::Rest {
                    conn: turn.conn,
                    bytes: std::mem::take(&mut *frames),
                }]
            }
            _ => messages.into_iter().map(Queued::Message).collect(),
        };
        turn.busy = true;
        for item in queued {
            if link.queue.try_send(item).is_err() {
                if let Some(m) = &self.metrics {
                    m.send_failed(to);
                }
                self.report(Input::Unreachable(to));
            }
        }
    }

    fn send_snapshot(&self, msg: Message) {
        let to = msg.to;
        let Some(url) = (self.resolve)(to) else {
            self.report(Input::SnapshotSent { to, failed: true });
            return;
        };
        let inputs = lock(&self.inputs).clone();
        let dialer = self.dialer.clone();
        let stop = self.stop.subscribe();
        let metrics = self.metrics.clone();
        let spawned = self.spawn(async move {
            let start = std::time::Instant::now();
            let inflight = metrics.as_ref().map(|m| m.inflight(Transfer::Sent(to)));
            let sent = tokio::select! {
                sent = send_snapshot(&dialer, &url, msg) => sent,
                () = stopped(stop) => Err(SendError::Stopped),
            };
            drop(inflight);
            if let Some(m) = &metrics {
                m.snapshot(Transfer::Sent(to), sent.is_ok(), crate::metrics::since(start));
            }
            let failed = match sent {
                Ok(()) => false,
                Err(SendError::Stopped) => true,
                Err(e) => {
                    tracing::warn!(peer = format!("{to:x}"), error = %e, "sending a snapshot failed");
                    true
                }
            };
            let _ = inputs.send(Input::SnapshotSent { to, failed });
        });
        if !spawned {
            self.report(Input::SnapshotSent { to, failed: true });
        }
    }
}

impl Transport for Peers {
    fn send(&self, messages: Vec<Message>) {
        // Each peer's messages together, in raft's order (a member has a
        // few peers: a list beats a map).
        let mut by_peer: Vec<(u64, Vec<Message>)> = Vec::new();
        for msg in messages {
            let to = msg.to;
            if to == self.id || to == 0 {
                continue;
            }
            if is_snapshot(&msg) {
                self.send_snapshot(msg);
                continue;
            }
            match by_peer.iter_mut().find(|(peer, _)| *peer == to) {
                Some((_, batch)) => batch.push(msg),
                None => by_peer.push((to, vec![msg])),
            }
        }
        for (to, batch) in by_peer {
            self.send_to(to, batch);
        }
    }
}

fn client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

/// One peer's task: (re)connects and streams its queue, until the queue
/// closes or `stop` turns true.
async fn run_peer(
    dialer: Dialer,
    to: u64,
    resolve: Resolver,
    (link, queue): (Arc<Link>, mpsc::Receiver<Queued>),
    inputs: Inbox,
    stop: watch::Receiver<bool>,
    metrics: Option<PeerMetrics>,
) {
    let m = metrics.as_ref();
    tokio::select! {
        () = stream_to_peer(&dialer, to, &resolve, (Arc::clone(&link), queue), &inputs, m) => {}
        () = probe(&dialer, to, &resolve, m) => {}
        () = stopped(stop) => {}
    }
    // The connection closes with the task, not with the last `Link`.
    lock(&link.turn).tcp = None;
    if let Some(m) = m {
        m.active.set(0);
    }
}

/// How often a peer's round trip is measured (etcd's prober interval).
const PROBE_INTERVAL: Duration = Duration::from_secs(4);

/// etcd's prober: times a call that touches nothing on the peer, every
/// [`PROBE_INTERVAL`], for etcd_network_peer_round_trip_time_seconds
/// (successful round trips only, as etcd records them). Never returns.
async fn probe(dialer: &Dialer, to: u64, resolve: &Resolver, metrics: Option<&PeerMetrics>) {
    let Some(metrics) = metrics else {
        return std::future::pending().await;
    };
    let mut channel = None;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if channel.is_none() {
            // Connects on first use and reconnects by itself.
            channel = resolve(to).and_then(|url| dialer.lazy(&url).ok());
        }
        let Some(ch) = channel.clone() else {
            continue;
        };
        let start = std::time::Instant::now();
        match client(ch).probe(Done {}).await {
            Ok(_) => metrics.round_trip.observe(crate::metrics::since(start)),
            // A peer from before the probe answers Unimplemented: still a
            // round trip.
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                metrics.round_trip.observe(crate::metrics::since(start))
            }
            Err(_) => channel = None,
        }
    }
}

/// [`run_peer`]'s loop: one raft stream at a time, each batch of the
/// queue written as one write; the raft thread's turn ([`Turn`]) whenever
/// the queue is empty on a plain TCP stream.
async fn stream_to_peer(
    dialer: &Dialer,
    to: u64,
    resolve: &Resolver,
    (link, mut queue): (Arc<Link>, mpsc::Receiver<Queued>),
    inputs: &Inbox,
    metrics: Option<&PeerMetrics>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut batch = Vec::with_capacity(8);
    let mut conn = 0;
    loop {
        let opened = match resolve(to) {
            Some(url) => stream::open(dialer, &url).await.map_err(SendError::from),
            None => Err(SendError::NoUrl),
        };
        let mut writer = match opened {
            Ok((writer, tcp)) => {
                conn += 1;
                let mut turn = lock(&link.turn);
                turn.tcp = tcp;
                turn.conn = conn;
                writer
            }
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
        if let Some(m) = metrics {
            m.active.set(1);
        }
        loop {
            {
                let mut turn = lock(&link.turn);
                if queue.is_empty() {
                    turn.busy = false;
                }
            }
            if queue.recv_many(&mut batch, BATCH_MESSAGES).await == 0 {
                return;
            }
            let items = batch.drain(..).filter_map(|item| item.on(conn));
            match writer.send(items).await {
                Ok(bytes) => {
                    if let Some(m) = metrics {
                        m.sent_bytes.inc_by(bytes);
                    }
                }
                Err(e) => {
                    lock(&link.turn).tcp = None;
                    tracing::debug!(peer = format!("{to:x}"), error = %e, "raft stream broke");
                    let _ = inputs.send(Input::Unreachable(to));
                    if let Some(m) = metrics {
                        m.active.set(0);
                        m.disconnected.inc();
                    }
                    break;
                }
            }
        }
    }
}

/// Why sending to a peer failed (logged; raft is told the peer is
/// unreachable or the snapshot failed, and retries).
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The member table has no URL for the peer.
    #[error("no peer URL known")]
    NoUrl,
    /// The peer could not be connected to.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The raft stream could not be opened, or broke.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Agreeing on the transfer key or sealing failed.
    #[error("snapshot sealing: {0}")]
    Wire(#[from] WireError),
    /// The raft message did not encode.
    #[error("cannot encode a raft message: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    /// The peer refused or the call broke.
    #[error("peer call failed: {0}")]
    Rpc(#[from] Status),
    /// The member stopped before the transfer ended.
    #[error("the member is stopping")]
    Stopped,
}

async fn send_snapshot(dialer: &Dialer, url: &str, mut msg: Message) -> Result<(), SendError> {
    let mut raft = client(dialer.connect(url).await?);
    // Agree on a key for this transfer, then seal the snapshot with it.
    let exchange = Exchange::start()?;
    let agreed = raft
        .snapshot_key(SnapshotKeyRequest {
            public_key: exchange.public_key(),
        })
        .await?
        .into_inner();
    let key = exchange.finish(&agreed.public_key, agreed.transfer)?;
    // The whole state, held once: taken out of the message without a copy
    // (raft handed the snapshot over, so its bytes have no other owner),
    // sealed in place, and copied into a chunk only as the stream asks.
    let data = Vec::from(std::mem::take(&mut msg.mut_snapshot().data));
    let sealed = key.seal(data)?;
    let header = SnapshotChunk {
        message: msg.write_to_bytes()?,
        data: Vec::new(),
        transfer: agreed.transfer,
    };
    let count = sealed.len().div_ceil(SNAPSHOT_CHUNK);
    let chunks = (0..count).map(move |i| {
        let start = i * SNAPSHOT_CHUNK;
        let end = sealed.len().min(start + SNAPSHOT_CHUNK);
        SnapshotChunk {
            message: Vec::new(),
            data: sealed.get(start..end).unwrap_or_default().to_vec(),
            transfer: 0,
        }
    });
    raft.snapshot(tokio_stream::iter(std::iter::once(header).chain(chunks)))
        .await?;
    Ok(())
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
