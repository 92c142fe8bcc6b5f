//! `etcdserverpb.Maintenance`: Status, Alarm, Defragment, Hash, HashKV,
//! MoveLeader, Snapshot and Downgrade.

use std::sync::Arc;

use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::caller;
use crate::member::MaintenanceApi;

/// Bytes per Snapshot response message (etcd sends 32 KiB pieces; larger
/// ones cost fewer messages and stay far below the gRPC limit).
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// The Maintenance service of one member.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    /// The API the requests are served by.
    maintenance: Arc<MaintenanceApi>,
}

impl MaintenanceService {
    /// A Maintenance service over `maintenance`.
    pub fn new(maintenance: Arc<MaintenanceApi>) -> Self {
        Self { maintenance }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(
            self.maintenance.alarm(request.into_inner()).await?,
        ))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.maintenance.status().await?))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        self.maintenance.defragment(&caller).await?;
        // etcd answers Defragment, MoveLeader and every Snapshot chunk
        // without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        Ok(Response::new(self.maintenance.hash(&caller).await?))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        Ok(Response::new(
            self.maintenance
                .downgrade(request.into_inner(), &caller)
                .await?,
        ))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        let rev = request.into_inner().revision;
        Ok(Response::new(self.maintenance.hash_kv(rev, &caller).await?))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        self.maintenance
            .move_leader(request.into_inner().target_id, &caller)
            .await?;
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        let caller = caller::of(&request, self.maintenance.proposer());
        let file = self.maintenance.snapshot_file(&caller).await?;
        let total = file.len();
        let mut sent = 0;
        let responses: Vec<Result<SnapshotResponse, Status>> = file
            .chunks(SNAPSHOT_CHUNK)
            .map(|chunk| {
                sent += chunk.len();
                Ok(SnapshotResponse {
                    header: None,
                    remaining_bytes: (total - sent) as u64,
                    blob: chunk.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }
}
