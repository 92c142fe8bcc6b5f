//! `cairnpb.Admin`: Cairn's own administration calls (data key rotation).

use std::sync::Arc;

use cairn_proto::cairnpb::admin_server::Admin;
use cairn_proto::cairnpb::{RotateDataKeyRequest, RotateDataKeyResponse};
use tonic::{Request, Response, Status};

use crate::member::Member;

/// The Admin service of one member.
#[derive(Debug, Clone)]
pub struct AdminService {
    /// The member asked.
    member: Arc<Member>,
}

impl AdminService {
    /// An Admin service over `member`.
    pub fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn rotate_data_key(
        &self,
        _request: Request<RotateDataKeyRequest>,
    ) -> Result<Response<RotateDataKeyResponse>, Status> {
        let key_id = self.member.rotate_data_key().await?;
        Ok(Response::new(RotateDataKeyResponse {
            header: Some(self.member.header(0)),
            key_id,
        }))
    }
}
