//! `/v3/lease/...` (and etcd's `/v3/kv/lease/...` aliases of revoke,
//! timetolive and leases): `etcdserverpb.Lease` through [`LeaseService`].
//! `/v3/lease/keepalive` is a stream: one request per JSON object in the
//! body, one `{"result":...}` line per answer, ending with the body (as
//! the gRPC stream ends when the client closes its side).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::any;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};

use super::stream::bidi;
use super::{error_response, not_post, require_leader, unary_route, Route};
use crate::grpc::LeaseService;
use crate::member::Apis;

fn service(apis: &Apis) -> LeaseService {
    LeaseService::new(Arc::clone(apis.lease()))
}

async fn keep_alive(
    method: Method,
    State(apis): State<Arc<Apis>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(response) = not_post(&method) {
        return response;
    }
    if let Err(status) = require_leader(&apis, &headers) {
        return error_response(&status);
    }
    let service = service(&apis);
    let caller = super::caller(&apis, &headers);
    bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse, _>(&apis, body, move |requests| {
        service.keep_alives(requests, caller)
    })
    .await
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/lease/grant", service, Lease, lease_grant),
        unary_route!("/lease/revoke", service, Lease, lease_revoke),
        unary_route!("/kv/lease/revoke", service, Lease, lease_revoke),
        ("/lease/keepalive", any(keep_alive)),
        unary_route!("/lease/timetolive", service, Lease, lease_time_to_live),
        unary_route!("/kv/lease/timetolive", service, Lease, lease_time_to_live),
        unary_route!("/lease/leases", service, Lease, lease_leases),
        unary_route!("/kv/lease/leases", service, Lease, lease_leases),
    ]
}
