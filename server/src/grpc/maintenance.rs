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
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.maintenance.defragment().await?;
        // etcd answers Defragment, MoveLeader and every Snapshot chunk
        // without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Ok(Response::new(self.maintenance.hash().await?))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Ok(Response::new(
            self.maintenance.downgrade(request.into_inner()).await?,
        ))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = request.into_inner().revision;
        Ok(Response::new(self.maintenance.hash_kv(rev).await?))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.maintenance
            .move_leader(request.into_inner().target_id)
            .await?;
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        let file = self.maintenance.snapshot_file().await?;
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
