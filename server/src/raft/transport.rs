//! The sending side of the peer transport: raft messages and snapshots
//! to the other members.
//!
//! [`Peers`]: one task per peer owns a raft stream (`super::stream`: a
//! connection of its own, length-prefixed messages) and a bounded queue.
//! The raft thread only ever `try_send`s into the queue: when it is full
//! (the peer is slow or gone) the message is dropped and raft is told the
//! peer is unreachable; raft retransmits, so a stuck peer never blocks the
//! leader. A broken stream is reopened with exponential backoff. Snapshots
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
use std::sync::mpsc::Sender;
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
use super::node::{is_snapshot, Input, Transport};
use super::stream::{self, StreamError};
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
    pub fn new(id: u64, resolve: Resolver, inputs: Sender<Input>, dialer: Dialer) -> Self {
        Self {
            id,
            dialer,
            queues: Mutex::new(HashMap::new()),
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

    fn queue(&self, to: u64) -> mpsc::Sender<Message> {
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.get(&to) {
            if !q.is_closed() {
                return q.clone();
            }
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        // Refused once stopping: `rx` is dropped with the task, so the
        // caller's `try_send` fails and raft hears the peer is unreachable.
        self.spawn(run_peer(
            self.dialer.clone(),
            to,
            Arc::clone(&self.resolve),
            rx,
            lock(&self.inputs).clone(),
            self.stop.subscribe(),
            self.metrics.as_ref().map(|m| m.peer(to)),
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
                if let Some(m) = &self.metrics {
                    m.send_failed(to);
                }
                self.report(Input::Unreachable(to));
            }
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
    queue: mpsc::Receiver<Message>,
    inputs: Sender<Input>,
    stop: watch::Receiver<bool>,
    metrics: Option<PeerMetrics>,
) {
    let m = metrics.as_ref();
    tokio::select! {
        () = stream_to_peer(&dialer, to, &resolve, queue, &inputs, m) => {}
        () = probe(&dialer, to, &resolve, m) => {}
        () = stopped(stop) => {}
    }
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
/// queue written as one write.
async fn stream_to_peer(
    dialer: &Dialer,
    to: u64,
    resolve: &Resolver,
    mut queue: mpsc::Receiver<Message>,
    inputs: &Sender<Input>,
    metrics: Option<&PeerMetrics>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut batch = Vec::with_capacity(8);
    loop {
        let opened = match resolve(to) {
            Some(url) => stream::open(dialer, &url).await.map_err(SendError::from),
            None => Err(SendError::NoUrl),
        };
        let mut writer = match opened {
            Ok(w) => w,
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
            if queue.recv_many(&mut batch, BATCH_MESSAGES).await == 0 {
                return;
            }
            match writer.send(batch.drain(..)).await {
                Ok(bytes) => {
                    if let Some(m) = metrics {
                        m.sent_bytes.inc_by(bytes);
                    }
                }
                Err(e) => {
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
