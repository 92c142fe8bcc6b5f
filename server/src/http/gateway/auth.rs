//! `/v3/auth/...`: `etcdserverpb.Auth` through [`AuthService`], with the
//! HTTP `Authorization` header as the caller's token.

use std::sync::Arc;

use cairn_proto::etcdserverpb::auth_server::Auth;

use super::{unary_route, Route};
use crate::grpc::AuthService;
use crate::member::Apis;

fn service(apis: &Apis) -> AuthService {
    AuthService::new(Arc::clone(apis.auth()))
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/auth/enable", service, Auth, auth_enable),
        unary_route!("/auth/disable", service, Auth, auth_disable),
        unary_route!("/auth/status", service, Auth, auth_status),
        unary_route!("/auth/authenticate", service, Auth, authenticate),
        unary_route!("/auth/user/add", service, Auth, user_add),
        unary_route!("/auth/user/get", service, Auth, user_get),
        unary_route!("/auth/user/list", service, Auth, user_list),
        unary_route!("/auth/user/delete", service, Auth, user_delete),
        unary_route!("/auth/user/changepw", service, Auth, user_change_password),
        unary_route!("/auth/user/grant", service, Auth, user_grant_role),
        unary_route!("/auth/user/revoke", service, Auth, user_revoke_role),
        unary_route!("/auth/role/add", service, Auth, role_add),
        unary_route!("/auth/role/get", service, Auth, role_get),
        unary_route!("/auth/role/list", service, Auth, role_list),
        unary_route!("/auth/role/delete", service, Auth, role_delete),
        unary_route!("/auth/role/grant", service, Auth, role_grant_permission),
        unary_route!("/auth/role/revoke", service, Auth, role_revoke_permission),
    ]
}
