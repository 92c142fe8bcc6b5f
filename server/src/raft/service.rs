//! The receiving side of raft's gRPC calls: snapshots (and the key
//! exchange that seals them) and the prober's round trips. Raft's messages
//! themselves come on raft streams (`super::stream`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::raft::eraftpb::Message;
use cairn_proto::cairnpb::raft_server::{self, RaftServer};
use cairn_proto::cairnpb::{Done, SnapshotChunk, SnapshotKeyRequest, SnapshotKeyResponse};
use protobuf::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::node::{Inbox, Input};
use super::transport::MAX_PEER_MESSAGE;
use super::wire::Exchange;
use crate::locks::lock;
use crate::metrics::network::{NetworkMetrics, Transfer};

/// Snapshot transfers a member keeps keys for at most.
const MAX_PENDING_TRANSFERS: usize = 64;

/// The receiving side of raft's traffic.
pub struct RaftService {
    /// The raft thread's inputs.
    inputs: Mutex<Inbox>,
    /// Keys of snapshot transfers agreed but not yet received, by id.
    transfers: Mutex<HashMap<u64, super::wire::TransferKey>>,
    /// The next transfer id.
    next_transfer: std::sync::atomic::AtomicU64,
    /// Bytes, failures and snapshots received (none in unit tests).
    metrics: Option<Arc<NetworkMetrics>>,
}

impl RaftService {
    /// A service feeding `inputs`.
    pub fn new(inputs: Inbox) -> Self {
        Self {
            inputs: Mutex::new(inputs),
            transfers: Mutex::new(HashMap::new()),
            next_transfer: std::sync::atomic::AtomicU64::new(1),
            metrics: None,
        }
    }

    /// The same service, counting what it receives in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<NetworkMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    fn step(&self, msg: Message) -> Result<(), Status> {
        lock(&self.inputs)
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
impl raft_server::Raft for RaftService {
    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let key = lock(&self.transfers)
            .remove(&first.transfer)
            .ok_or_else(|| Status::failed_precondition("unknown snapshot transfer"))?;
        let mut msg = decode(&first.message)?;
        let (from, start) = (msg.from, std::time::Instant::now());
        let inflight = self
            .metrics
            .as_ref()
            .map(|m| m.inflight(Transfer::Received(from)));
        let received = async {
            let mut sealed = first.data;
            while let Some(chunk) = stream.message().await? {
                sealed.extend_from_slice(&chunk.data);
            }
            key.open(sealed)
                .map_err(|e| Status::data_loss(e.to_string()))
        }
        .await;
        drop(inflight);
        if let Some(m) = &self.metrics {
            m.snapshot(
                Transfer::Received(from),
                received.is_ok(),
                crate::metrics::since(start),
            );
        }
        msg.mut_snapshot().data = received?.into();
        self.step(msg)?;
        Ok(Response::new(Done {}))
    }

    async fn probe(&self, _request: Request<Done>) -> Result<Response<Done>, Status> {
        Ok(Response::new(Done {}))
    }

    async fn snapshot_key(
        &self,
        request: Request<SnapshotKeyRequest>,
    ) -> Result<Response<SnapshotKeyResponse>, Status> {
        let sender = request.into_inner().public_key;
        let exchange = Exchange::start().map_err(|e| Status::internal(e.to_string()))?;
        let public_key = exchange.public_key();
        let transfer = self
            .next_transfer
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = exchange
            .finish(&sender, transfer)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut transfers = lock(&self.transfers);
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
}
