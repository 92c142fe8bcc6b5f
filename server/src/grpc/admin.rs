//! `cairnpb.Admin`: Cairn's own administration calls (data key rotation).

use std::sync::Arc;

use cairn_proto::cairnpb::admin_server::Admin;
use cairn_proto::cairnpb::{RotateDataKeyRequest, RotateDataKeyResponse};
use tonic::{Request, Response, Status};

use crate::member::MaintenanceApi;

/// The Admin service of one member.
#[derive(Debug, Clone)]
pub struct AdminService {
    /// Key rotation is a maintenance operation.
    maintenance: Arc<MaintenanceApi>,
}

impl AdminService {
    /// An Admin service over `maintenance`.
    pub fn new(maintenance: Arc<MaintenanceApi>) -> Self {
        Self { maintenance }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn rotate_data_key(
        &self,
        request: Request<RotateDataKeyRequest>,
    ) -> Result<Response<RotateDataKeyResponse>, Status> {
        let caller = super::caller::of(&request, self.maintenance.proposer());
        let key_id = self.maintenance.rotate_data_key(&caller).await?;
        Ok(Response::new(RotateDataKeyResponse {
            header: Some(self.maintenance.proposer().header(0)),
            key_id,
        }))
    }
}
