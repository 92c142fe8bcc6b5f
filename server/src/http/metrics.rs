//! `GET /metrics` (Prometheus' text format, etcd's metric names; see
//! [`crate::metrics`]), and the listeners of `--listen-metrics-urls`, which
//! serve only the metrics and health endpoints: no gRPC, as etcd's.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::member::Apis;

/// The handler.
pub(super) async fn metrics(State(apis): State<Arc<Apis>>) -> Response {
    let Some(metrics) = apis.metrics().cloned() else {
        return super::not_found(axum::http::Request::new(())).await;
    };
    // The scrape reads the database size from the disk: off the runtime.
    let text = tokio::task::spawn_blocking(move || metrics.render(&apis))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The routes of a metrics listener: etcd's `/metrics` and health
/// endpoints, and `/version`. Anything else, a gRPC call included, is a
/// plain 404 (etcd's metrics listener is an HTTP mux alone), and there are
/// no CORS headers (etcd adds them on the client port only).
fn router(apis: Arc<Apis>) -> Router {
    super::probes::routes(Router::new().route("/metrics", get(metrics)))
        .route("/version", get(super::version))
        .method_not_allowed_fallback(super::method_not_allowed)
        .fallback(not_found)
        .with_state(apis)
}

async fn not_found() -> Response {
    super::go_error(axum::http::StatusCode::NOT_FOUND, "404 page not found")
}

/// Serves `--listen-metrics-urls` listener `listener` until `shutdown`
/// completes (plain or TLS as its URLs say, HTTP/1.1 or HTTP/2).
pub async fn serve_metrics(
    member: Arc<Apis>,
    listener: TcpListener,
    security: cairn_tls::server::Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = cairn_tls::server::TlsIncoming::new(listener, security, "metrics");
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router(member)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
