//! `/v3/cluster/member/...`: `etcdserverpb.Cluster` through
//! [`ClusterService`].

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;

use super::{unary_route, Route};
use crate::grpc::ClusterService;
use crate::member::Apis;

fn service(apis: &Apis) -> ClusterService {
    ClusterService::new(Arc::clone(apis.cluster()))
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/cluster/member/add", service, Cluster, member_add),
        unary_route!("/cluster/member/remove", service, Cluster, member_remove),
        unary_route!("/cluster/member/update", service, Cluster, member_update),
        unary_route!("/cluster/member/list", service, Cluster, member_list),
        unary_route!("/cluster/member/promote", service, Cluster, member_promote),
    ]
}
