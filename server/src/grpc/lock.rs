//! `v3lockpb.Lock`: call the mutex recipe, map the error.

use std::sync::Arc;

use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::status::recipe_status;
use crate::concurrency;
use crate::concurrency::LocalClient;

/// The Lock service of one member.
#[derive(Debug, Clone)]
pub struct LockService {
    /// The member whose keys hold the locks.
    member: Arc<LocalClient>,
}

impl LockService {
    /// A Lock service over `member`.
    pub fn new(member: Arc<LocalClient>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let req = request.into_inner();
        let (header, key) = concurrency::lock(&self.member, &req.name, req.lease)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        super::require_admin(&request, &self.member).await?;
        let header = concurrency::unlock(&self.member, &request.into_inner().key)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(UnlockResponse {
            header: Some(header),
        }))
    }
}
