//! The gRPC face of a member: the only module that knows tonic.
//!
//! Each service is thin: validate the request ([`validate`]), call the
//! [`Member`](crate::member::Member), map the error ([`status`], the one
//! mapping table), fill the response header.

mod cluster;
mod kv;
mod lease;
mod maintenance;
pub mod status;
pub mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use cluster::ClusterService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;

use crate::member::Member;

/// Extra bytes gRPC accepts beyond `--max-request-bytes`, so that an oversized
/// request reaches the member and gets etcd's "request is too large" instead
/// of a transport error (etcd uses the same margin).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Serves the client API of `member` on `listener` until `shutdown` completes,
/// then finishes in-flight requests and returns.
pub async fn serve(
    member: Arc<Member>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max_message = member
        .limits()
        .max_request_bytes
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let kv =
        KvServer::new(KvService::new(Arc::clone(&member))).max_decoding_message_size(max_message);
    let maintenance = MaintenanceServer::new(MaintenanceService::new(Arc::clone(&member)))
        .max_decoding_message_size(max_message);
    // Without TCP_NODELAY a response written in several frames waits for the
    // client's delayed ACK: ~40 ms per unary call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(kv)
        .add_service(
            cairn_proto::etcdserverpb::lease_server::LeaseServer::new(LeaseService::new(
                Arc::clone(&member),
            ))
            .max_decoding_message_size(max_message),
        )
        .add_service(maintenance)
        .add_service(
            cairn_proto::etcdserverpb::cluster_server::ClusterServer::new(ClusterService::new(
                Arc::clone(&member),
            ))
            .max_decoding_message_size(max_message),
        )
        .add_service(
            WatchServer::new(WatchService::new(Arc::clone(&member)))
                .max_decoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
