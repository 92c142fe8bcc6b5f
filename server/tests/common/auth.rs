//! Raw gRPC with etcd's auth metadata (`token`), for the auth tests: a
//! connection to one member that sends a token, and the Auth calls they
//! make.

use cairn_proto::authpb::permission::Type as PermissionType;
use cairn_proto::authpb::Permission;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    AuthenticateRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

/// A connection to one member, with an optional token.
#[derive(Clone)]
pub struct Conn {
    /// The member.
    pub channel: Channel,
    /// Sent as metadata `token` with every request, if set.
    pub token: Option<String>,
}

impl Conn {
    pub async fn to(url: &str) -> Conn {
        let channel = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Conn {
            channel,
            token: None,
        }
    }

    pub fn as_token(&self, token: &str) -> Conn {
        Conn {
            channel: self.channel.clone(),
            token: Some(token.to_string()),
        }
    }

    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("token", token.parse().unwrap());
        }
        request
    }

    pub fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone())
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, tonic::Status> {
        let resp = self
            .auth()
            .authenticate(AuthenticateRequest {
                name: name.into(),
                password: password.into(),
            })
            .await?;
        Ok(resp.into_inner().token)
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), tonic::Status> {
        self.kv()
            .put(self.req(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }))
            .await
            .map(drop)
    }

    pub async fn get(&self, key: &str) -> Result<usize, tonic::Status> {
        let resp = self
            .kv()
            .range(self.req(RangeRequest {
                key: key.into(),
                ..Default::default()
            }))
            .await?;
        Ok(resp.into_inner().kvs.len())
    }

    pub async fn user_add(&self, name: &str, password: &str) -> Result<(), tonic::Status> {
        self.auth()
            .user_add(self.req(AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
                ..Default::default()
            }))
            .await
            .map(drop)
    }

    pub async fn role_add(&self, name: &str) -> Result<(), tonic::Status> {
        self.auth()
            .role_add(self.req(AuthRoleAddRequest { name: name.into() }))
            .await
            .map(drop)
    }

    pub async fn grant_role(&self, user: &str, role: &str) -> Result<(), tonic::Status> {
        self.auth()
            .user_grant_role(self.req(AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            }))
            .await
            .map(drop)
    }

    pub async fn grant(&self, role: &str, key: &str, end: &str) -> Result<(), tonic::Status> {
        self.auth()
            .role_grant_permission(self.req(AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(Permission {
                    perm_type: PermissionType::Readwrite as i32,
                    key: key.into(),
                    range_end: end.into(),
                }),
            }))
            .await
            .map(drop)
    }

    pub async fn revoke(&self, role: &str, key: &str, end: &str) -> Result<(), tonic::Status> {
        self.auth()
            .role_revoke_permission(self.req(AuthRoleRevokePermissionRequest {
                role: role.into(),
                key: key.into(),
                range_end: end.into(),
            }))
            .await
            .map(drop)
    }

    pub async fn enable(&self) -> Result<(), tonic::Status> {
        self.auth()
            .auth_enable(self.req(AuthEnableRequest {}))
            .await
            .map(drop)
    }
}
