//! `/v3/watch`: `etcdserverpb.Watch` through [`WatchService::open`], the
//! stream the gRPC service serves too. The body carries the create,
//! cancel and progress requests, one JSON object after another; the
//! answer is one `{"result":WatchResponse}` line per response.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::any;
use cairn_proto::etcdserverpb::{WatchRequest, WatchResponse};

use super::stream::bidi;
use super::{error_response, not_post, require_leader, Route};
use crate::grpc::WatchService;
use crate::member::Apis;

async fn watch(
    method: Method,
    State(apis): State<Arc<Apis>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(response) = not_post(&method) {
        return response;
    }
    let require_leader = match require_leader(&apis, &headers) {
        Ok(wanted) => wanted,
        Err(status) => return error_response(&status),
    };
    let service = WatchService::new(Arc::clone(apis.kv()), apis.watch_progress_interval());
    let caller = super::caller(&apis, &headers);
    bidi::<WatchRequest, WatchResponse, _>(&apis, body, move |requests| {
        service.open(requests, require_leader, caller)
    })
    .await
}

pub(super) fn routes() -> Vec<Route> {
    vec![("/watch", any(watch))]
}
