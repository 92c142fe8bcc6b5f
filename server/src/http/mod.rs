//! The HTTP face of a member, on the client port beside gRPC (as etcd
//! serves both on one port): `/health`, `/livez`, `/readyz`, `/version`,
//! `/metrics`, and what later issues add (etcd's JSON API). The
//! `--listen-metrics-urls` listeners serve the metrics and health
//! endpoints alone ([`serve_metrics`]). Like [`crate::grpc`], each
//! handler is thin: read the request, call the member's APIs, answer with
//! etcd's body, headers and status code.
//!
//! gRPC and HTTP share the listener: tonic's server takes HTTP/1.1 too and
//! routes by path, so `/etcdserverpb.KV/Range` reaches the gRPC services
//! and `/health` this router; a path neither knows gets gRPC's
//! `Unimplemented` if it is a gRPC call and etcd's 404 otherwise.

mod gateway;
mod health;
mod metrics;
mod probes;

pub use metrics::serve_metrics;

use std::sync::Arc;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::member::Apis;

/// The HTTP routes of the client port.
pub fn router(apis: Arc<Apis>) -> Router {
    probes::routes(Router::new())
        .route("/version", get(version))
        .route("/metrics", get(metrics::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        // etcd's JSON API (after the fallback above, which is /health's).
        .merge(gateway::router())
        .layer(axum::middleware::map_response(cors))
        .with_state(apis)
}

/// etcd's CORS headers, on every HTTP answer of the client port.
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "access-control-allow-headers",
            "accept, content-type, authorization",
        ),
        (
            "access-control-allow-methods",
            "POST, GET, OPTIONS, PUT, DELETE",
        ),
        ("access-control-allow-origin", "*"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A text answer as Go's `http.Error` writes it: `text` and a newline.
pub(crate) fn go_error(status: StatusCode, text: &'static str) -> Response {
    go_text(status, format!("{text}\n"))
}

/// A plain-text body with the headers Go's `http.Error` sets.
pub(crate) fn go_text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn method_not_allowed() -> Response {
    let mut response = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    cors(response).await
}

/// What a path nobody serves gets: a gRPC call gRPC's `Unimplemented`
/// (as tonic answers it), anything else etcd's 404.
pub async fn not_found<B>(request: Request<B>) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    cors(go_error(StatusCode::NOT_FOUND, "404 page not found")).await
}

/// `GET /version`: etcd's server and cluster versions (in etcd's key
/// order).
async fn version() -> Response {
    let body = format!(
        r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
        crate::member::ETCD_VERSION,
        crate::member::CLUSTER_VERSION
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
