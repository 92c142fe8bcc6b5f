//! The gRPC face of a member: the only module that knows tonic.
//!
//! Each service is thin: validate the request ([`validate`]), call its API
//! in [`crate::member`] (and only that one), map the error ([`status`], the one
//! mapping table), fill the response header.

mod admin;
mod auth;
mod authority;
pub mod caller;
mod cluster;
mod connections;
mod dispatch;
mod election;
mod gather;
mod keep_alive;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub mod status;
#[cfg(test)]
mod test_body;
mod unary;
pub mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tower::Layer as _;

pub use admin::AdminService;
pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;

use crate::concurrency;
use crate::member::Apis;

/// Extra bytes gRPC accepts beyond `--max-request-bytes`, so that an oversized
/// request reaches the member and gets etcd's "request is too large" instead
/// of a transport error (etcd uses the same margin).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The gRPC health service (`grpc.health.v1.Health`), as etcd registers it:
/// one status for the whole server, under the empty service name.
pub type HealthService =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// The health service and the handle that sets what it reports. The status
/// starts as SERVING, as etcd sets it once its server runs.
pub async fn health() -> (tonic_health::server::HealthReporter, HealthService) {
    let reporter = tonic_health::server::HealthReporter::new();
    let service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    (reporter, service)
}

/// Sets every client service's limits and compression as etcd's server has
/// them: requests up to `--max-request-bytes` plus etcd's margin, gzip
/// requests accepted (grpc's standard compression). Responses stay
/// uncompressed: grpc-go compresses a response only when its request was
/// compressed, which tonic cannot express, and compressing every response to
/// a client that merely accepts gzip would cost CPU etcd does not spend.
macro_rules! etcd_service {
    ($server:expr, $max:expr) => {
        $server
            .max_decoding_message_size($max)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    };
}

/// Serves the client API of `member` on `listener` until `shutdown` completes,
/// then finishes in-flight requests and returns. Each client connection
/// may open at most `max_concurrent_streams` HTTP/2 streams at once
/// (`--max-concurrent-streams`; `u32::MAX`, etcd's default, is no limit).
/// Never fails (a connection that cannot be accepted is skipped, as tonic's
/// server skipped it); the `Result` is the type every server of a member
/// returns.
pub async fn serve(
    member: Arc<Apis>,
    listener: TcpListener,
    security: cairn_tls::server::Security,
    health: HealthService,
    max_concurrent_streams: u32,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max_message = member
        .kv()
        .limits()
        .max_request_bytes
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let kv = etcd_service!(
        KvServer::new(KvService::new(Arc::clone(member.kv()))),
        max_message
    );
    let lease = etcd_service!(
        LeaseServer::new(LeaseService::new(Arc::clone(member.lease()))),
        max_message
    );
    let maintenance = etcd_service!(
        MaintenanceServer::new(MaintenanceService::new(Arc::clone(member.maintenance()))),
        max_message
    );
    let cluster = etcd_service!(
        ClusterServer::new(ClusterService::new(Arc::clone(member.cluster()))),
        max_message
    );
    let watch = etcd_service!(
        WatchServer::new(WatchService::new(
            Arc::clone(member.kv()),
            member.watch_progress_interval()
        )),
        max_message
    );
    let auth = etcd_service!(
        AuthServer::new(AuthService::new(Arc::clone(member.auth()))),
        max_message
    );
    let lock = etcd_service!(
        LockServer::new(LockService::new(concurrency::LocalClient::new(&member))),
        max_message
    );
    let election = etcd_service!(
        ElectionServer::new(ElectionService::new(concurrency::LocalClient::new(&member))),
        max_message
    );
    // Plain or TLS by the listener's URLs (TCP_NODELAY set on each); small
    // responses leave together (see `cairn_tls::coalesce`).
    let incoming =
        cairn_tls::server::TlsIncoming::new(listener, security, "client").map(|accepted| {
            accepted.map(|io| {
                cairn_tls::coalesce::CoalesceWrites::new(authority::FixAuthority::new(io))
            })
        });
    let dispatch = dispatch::Dispatch::new(dispatch::Services {
        proposer: Arc::clone(member.proposer()),
        health,
        kv,
        kv_unary: KvService::new(Arc::clone(member.kv())),
        max_message,
        lease,
        lease_streams: LeaseService::new(Arc::clone(member.lease())),
        maintenance,
        cluster,
        watch,
        auth,
        lock,
        election,
        admin: cairn_proto::cairnpb::admin_server::AdminServer::new(AdminService::new(Arc::clone(
            member.maintenance(),
        ))),
        // The HTTP routes share the port (routed by path), as in etcd.
        http: crate::http::router(Arc::clone(&member)).fallback(crate::http::not_found),
    });
    // grpc_server_* by method and code; outermost, so that it sees the
    // codes as clients do (after the rewrite below).
    let metered =
        crate::metrics::layer::GrpcMetricsLayer::new(member.metrics().map(|m| Arc::clone(&m.grpc)))
            .layer(
                // Requests tonic itself refuses (too large, undecodable) are
                // answered with grpc-go's codes, as etcd answers them.
                tower::util::MapResponse::new(dispatch, transport_statuses::<tonic::body::Body>),
            );
    connections::serve(
        metered,
        incoming,
        // etcd's default, math.MaxUint32, is grpc-go's "no limit": h2 then
        // advertises no SETTINGS_MAX_CONCURRENT_STREAMS at all.
        (max_concurrent_streams != u32::MAX).then_some(max_concurrent_streams),
        shutdown,
    )
    .await;
    Ok(())
}

/// Rewrites a trailers-only error response that tonic made itself (the
/// request was too large or did not decode) into grpc-go's status for the
/// same failure ([`status::from_transport`]). Other responses pass as they
/// are; errors that arrive on a request stream are mapped where the stream
/// is read.
fn transport_statuses<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == tonic::Code::Ok {
        return response;
    }
    let (code, message) = (status.code(), status.message().to_owned());
    let mapped = status::from_transport(status);
    if mapped.code() != code || mapped.message() != message {
        let headers = response.headers_mut();
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        if let Err(e) = mapped.add_header(headers) {
            tracing::warn!(error = %e, "cannot rewrite a transport error");
        }
    }
    response
}

/// The Lock and Election recipes run as the member itself, so while auth
/// is on they are served to root users only (etcd checks each of the
/// recipe's own requests against the caller's key permissions; Cairn is
/// stricter rather than letting any user lock or elect on any key).
async fn require_admin<T>(
    request: &tonic::Request<T>,
    member: &concurrency::LocalClient,
) -> Result<(), tonic::Status> {
    let proposer = member.proposer();
    if proposer.machine().auth().enabled() {
        proposer
            .require_admin(&caller::of(request, proposer))
            .await?;
    }
    Ok(())
}
