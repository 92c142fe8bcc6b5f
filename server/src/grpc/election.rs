//! `v3electionpb.Election`: call the election recipe, map the error.

use std::sync::Arc;

use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::status::recipe_status;
use crate::concurrency;
use crate::concurrency::LocalClient;

/// The Election service of one member.
#[derive(Debug, Clone)]
pub struct ElectionService {
    /// The member whose keys hold the elections.
    member: Arc<LocalClient>,
}

impl ElectionService {
    /// An Election service over `member`.
    pub fn new(member: Arc<LocalClient>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let req = request.into_inner();
        let (header, leader) =
            concurrency::campaign(&self.member, &req.name, req.lease, &req.value)
                .await
                .map_err(recipe_status)?;
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let req = request.into_inner();
        let header = concurrency::proclaim(&self.member, req.leader, &req.value)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let (header, kv) = concurrency::leader(&self.member, &request.into_inner().name)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        super::require_admin(&request, &self.member).await?;
        let name = request.into_inner().name;
        let (tx, rx) = mpsc::channel(16);
        let member = Arc::clone(&self.member);
        // Ends when the client goes (the receiver is dropped) or on error.
        tokio::spawn(async move { concurrency::observe(&member, &name, tx).await });
        let stream = ReceiverStream::new(rx).map(|item| {
            item.map(|(header, kv)| LeaderResponse {
                header: Some(header),
                kv: Some(kv),
            })
            .map_err(recipe_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let header = concurrency::resign(&self.member, request.into_inner().leader)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(ResignResponse {
            header: Some(header),
        }))
    }
}
