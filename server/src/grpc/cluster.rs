//! `etcdserverpb.Cluster`: the member table, changed through raft conf changes.

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::caller;
use crate::member::{to_pb, ClusterApi};

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub struct ClusterService {
    /// The API the requests are served by.
    cluster: Arc<ClusterApi>,
}

impl ClusterService {
    /// A Cluster service over `cluster`.
    pub fn new(cluster: Arc<ClusterApi>) -> Self {
        Self { cluster }
    }
}

fn list(members: &[cairn_proto::cairnpb::Member]) -> Vec<cairn_proto::etcdserverpb::Member> {
    members.iter().map(to_pb).collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let caller = caller::of(&request, self.cluster.proposer());
        let req = request.into_inner();
        let (added, members) = self
            .cluster
            .member_add(req.peer_ur_ls, req.is_learner, &caller)
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.cluster.proposer().header_without_revision()),
            member: Some(to_pb(&added)),
            members: list(&members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let caller = caller::of(&request, self.cluster.proposer());
        let members = self
            .cluster
            .member_remove(request.into_inner().id, &caller)
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.cluster.proposer().header_without_revision()),
            members: list(&members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let caller = caller::of(&request, self.cluster.proposer());
        let req = request.into_inner();
        let members = self
            .cluster
            .member_update(req.id, req.peer_ur_ls, &caller)
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.cluster.proposer().header_without_revision()),
            members: list(&members),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // `linearizable` (3.5): the list as of a ReadIndex round.
        if request.into_inner().linearizable {
            self.cluster.proposer().barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.cluster.proposer().header_without_revision()),
            members: list(&self.cluster.member_list()),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let caller = caller::of(&request, self.cluster.proposer());
        let members = self
            .cluster
            .member_promote(request.into_inner().id, &caller)
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.cluster.proposer().header_without_revision()),
            members: list(&members),
        }))
    }
}
