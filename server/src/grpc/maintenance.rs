//! `etcdserverpb.Maintenance`: Status, Alarm and Defragment. The rpcs that need
//! a cluster or snapshots (Hash, HashKV, Snapshot, MoveLeader, Downgrade) come
//! with the raft work; until then they answer `Unimplemented` (tonic's default).

use std::sync::Arc;

use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, StatusRequest,
    StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::member::Member;

/// The Maintenance service of one member.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    /// The member reported on.
    member: Arc<Member>,
}

impl MaintenanceService {
    /// A Maintenance service over `member`.
    pub fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(self.member.alarm(request.into_inner())?))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.member.status().await?))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.member.defragment().await?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.member.header(0)),
        }))
    }
}
