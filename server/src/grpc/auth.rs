//! `etcdserverpb.Auth`: call the Auth API with the caller, map the error,
//! fill the header.

use std::sync::Arc;

use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use super::caller;
use crate::auth::Caller;
use crate::member::AuthApi;

/// The Auth service of one member.
#[derive(Debug, Clone)]
pub struct AuthService {
    /// The API the requests are served by.
    auth: Arc<AuthApi>,
}

impl AuthService {
    /// An Auth service over `auth`.
    pub fn new(auth: Arc<AuthApi>) -> Self {
        Self { auth }
    }

    /// The caller of `request` and the request itself.
    fn split<T>(&self, request: Request<T>) -> (Caller, T) {
        let caller = caller::of(&request, self.auth.proposer());
        (caller, request.into_inner())
    }

    /// A complete header (etcd fills auth responses' headers with the
    /// current revision).
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.auth.proposer().header(0))
    }
}

/// A response holding only a header.
macro_rules! done {
    ($self:ident, $resp:ident) => {
        Ok(Response::new($resp {
            header: $self.header(),
        }))
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let (caller, _) = self.split(request);
        self.auth.enable(&caller).await?;
        done!(self, AuthEnableResponse)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let (caller, _) = self.split(request);
        self.auth.disable(&caller).await?;
        done!(self, AuthDisableResponse)
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let (caller, _) = self.split(request);
        Ok(Response::new(self.auth.status(&caller).await?))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let token = self.auth.authenticate(request.into_inner()).await?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.user_add(req, &caller).await?;
        done!(self, AuthUserAddResponse)
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let (caller, req) = self.split(request);
        Ok(Response::new(self.auth.user_get(req, &caller).await?))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let (caller, _) = self.split(request);
        Ok(Response::new(self.auth.user_list(&caller).await?))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.user_delete(req, &caller).await?;
        done!(self, AuthUserDeleteResponse)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.user_change_password(req, &caller).await?;
        done!(self, AuthUserChangePasswordResponse)
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.user_grant_role(req, &caller).await?;
        done!(self, AuthUserGrantRoleResponse)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.user_revoke_role(req, &caller).await?;
        done!(self, AuthUserRevokeRoleResponse)
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.role_add(req, &caller).await?;
        done!(self, AuthRoleAddResponse)
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let (caller, req) = self.split(request);
        Ok(Response::new(self.auth.role_get(req, &caller).await?))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let (caller, _) = self.split(request);
        Ok(Response::new(self.auth.role_list(&caller).await?))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.role_delete(req, &caller).await?;
        done!(self, AuthRoleDeleteResponse)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.role_grant_permission(req, &caller).await?;
        done!(self, AuthRoleGrantPermissionResponse)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let (caller, req) = self.split(request);
        self.auth.role_revoke_permission(req, &caller).await?;
        done!(self, AuthRoleRevokePermissionResponse)
    }
}
