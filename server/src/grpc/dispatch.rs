//! The client port's router: a request goes to its gRPC service by the
//! first segment of its path (`/etcdserverpb.KV/Range` → KV), anything
//! else to the HTTP routes (health, metrics, version, the JSON gateway),
//! which share the port as in etcd.
//!
//! Why not tonic's `Routes`: it is an axum router with a wildcard route per
//! service (`/etcdserverpb.KV/{*rest}`), so every call had its path
//! parameters decoded, stored in the request's extensions and its service
//! cloned out of a box: 8 of the ~57 allocations the three members made
//! per serializable range (counted with a uprobe on malloc, 2026-12-05).
//! A match on the service's name does the same routing with none.
//!
//! The KV service's calls (all unary) go to [`super::unary`], which
//! answers them without tonic's codec, and the Lease service's keep-alive
//! streams to [`super::keep_alive`]; the other calls to tonic.
//!
//! The router also makes etcd's `hasleader` check on the etcd API's
//! services: a request carrying the gRPC metadata `hasleader: true`
//! (clientv3's `WithRequireLeader`, sent by etcdctl watch and
//! kube-apiserver) is refused with "etcdserver: no leader" while this member
//! knows no leader, instead of waiting for one. (Here rather than in a
//! tonic interceptor, whose wrapper re-boxed every response's body.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::cairnpb::admin_server::{self, AdminServer};
use cairn_proto::etcdserverpb::auth_server::{self, AuthServer};
use cairn_proto::etcdserverpb::cluster_server::{self, ClusterServer};
use cairn_proto::etcdserverpb::kv_server::{self, Kv as _, KvServer};
use cairn_proto::etcdserverpb::lease_server::{self, LeaseServer};
use cairn_proto::etcdserverpb::maintenance_server::{self, MaintenanceServer};
use cairn_proto::etcdserverpb::watch_server::{self, WatchServer};
use cairn_proto::v3electionpb::election_server::{self, ElectionServer};
use cairn_proto::v3lockpb::lock_server::{self, LockServer};
use tonic::body::Body;
use tower::ServiceExt;

use super::{keep_alive, unary};
use super::{
    AdminService, AuthService, ClusterService, ElectionService, HealthService, KvService,
    LeaseService, LockService, MaintenanceService, WatchService,
};
use crate::error::EtcdError;
use crate::member::Proposer;

/// What a routed call answers.
pub(super) type Answer =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// The services of the client port, by name (see the module doc).
#[derive(Clone)]
pub(super) struct Dispatch {
    /// Shared by every connection's copy: a copy per call is one count.
    services: Arc<Services>,
}

/// Every service the client port serves.
pub(super) struct Services {
    /// Whose raft status the `hasleader` check reads.
    pub proposer: Arc<Proposer>,
    pub health: HealthService,
    pub kv: KvServer<KvService>,
    /// The KV service itself, whose calls [`unary`] answers (`kv` is
    /// the same service in tonic's server, for what `unary` leaves).
    pub kv_unary: KvService,
    /// The largest request message the etcd API's services decode (the
    /// limit `kv` was given).
    pub max_message: usize,
    pub lease: LeaseServer<LeaseService>,
    /// The Lease service itself, whose keep-alive streams [`keep_alive`]
    /// answers (`lease` is the same service in tonic's server).
    pub lease_streams: LeaseService,
    pub maintenance: MaintenanceServer<MaintenanceService>,
    pub cluster: ClusterServer<ClusterService>,
    pub watch: WatchServer<WatchService>,
    pub auth: AuthServer<AuthService>,
    pub lock: LockServer<LockService>,
    pub election: ElectionServer<ElectionService>,
    /// Cairn's own (not etcd's API: no `hasleader` check).
    pub admin: AdminServer<AdminService>,
    /// Everything that is not one of the services above (its fallback
    /// answers an unknown gRPC service `Unimplemented`, anything else 404).
    pub http: axum::Router,
}

impl Dispatch {
    pub(super) fn new(services: Services) -> Self {
        Self {
            services: Arc::new(services),
        }
    }
}

/// The service and method names of a gRPC path (`/SERVICE/METHOD`), or
/// ("", "").
fn grpc_path(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""))
}

impl tower::Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call readies the service it is routed to (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let Some(timeout) = grpc_timeout(request.headers()) else {
            return self.route(request);
        };
        // Past the client's deadline, tonic's answer (its server kept
        // `grpc-timeout` before [`super::connections`] did).
        let answer = self.route(request);
        Box::pin(async move {
            tokio::time::timeout(timeout, answer)
                .await
                .unwrap_or_else(|_| Ok(tonic::Status::cancelled("Timeout expired").into_http()))
        })
    }
}

impl Dispatch {
    /// `request` to its service (see the module doc).
    fn route(&self, request: http::Request<Body>) -> Answer {
        let s = &self.services;
        match grpc_path(request.uri().path()).0 {
            kv_server::SERVICE_NAME => s.etcd(request, |r| s.kv(r)),
            watch_server::SERVICE_NAME => s.etcd(request, |r| answer(s.watch.clone(), r)),
            lease_server::SERVICE_NAME => s.etcd(request, |r| s.lease(r)),
            cluster_server::SERVICE_NAME => s.etcd(request, |r| answer(s.cluster.clone(), r)),
            maintenance_server::SERVICE_NAME => {
                s.etcd(request, |r| answer(s.maintenance.clone(), r))
            }
            auth_server::SERVICE_NAME => s.etcd(request, |r| answer(s.auth.clone(), r)),
            lock_server::SERVICE_NAME => s.etcd(request, |r| answer(s.lock.clone(), r)),
            election_server::SERVICE_NAME => s.etcd(request, |r| answer(s.election.clone(), r)),
            admin_server::SERVICE_NAME => answer(s.admin.clone(), request),
            tonic_health::pb::health_server::SERVICE_NAME => answer(s.health.clone(), request),
            _ => answer(s.http.clone(), request),
        }
    }
}

impl Services {
    /// `request` to one of the etcd API's services: refused while this
    /// member knows no leader if it asks for one (`hasleader`), else
    /// answered by `route`.
    fn etcd(
        &self,
        request: http::Request<Body>,
        route: impl FnOnce(http::Request<Body>) -> Answer,
    ) -> Answer {
        if wants_leader(&request) && self.proposer.with_raft_status(|r| r.leader) == 0 {
            let refused = tonic::Status::from(EtcdError::NoLeader).into_http();
            return Box::pin(std::future::ready(Ok(refused)));
        }
        route(request)
    }

    /// A call of the KV service, whose methods are all unary: answered by
    /// [`unary`] (tonic answers what it does not expect, and any method
    /// KV does not have).
    fn kv(&self, request: http::Request<Body>) -> Answer {
        let (kv, max) = (self.kv_unary.clone(), self.max_message);
        let server = self.kv.clone();
        let tonic = move |r| answer(server, r);
        match grpc_path(request.uri().path()).1 {
            "Range" => unary::answer(
                request,
                max,
                |r| async move { kv.range_reply(r).await },
                tonic,
            ),
            "Put" => unary::answer(request, max, |r| async move { kv.put(r).await }, tonic),
            "DeleteRange" => unary::answer(
                request,
                max,
                |r| async move { kv.delete_range(r).await },
                tonic,
            ),
            "Txn" => unary::answer(request, max, |r| async move { kv.txn(r).await }, tonic),
            "Compact" => unary::answer(request, max, |r| async move { kv.compact(r).await }, tonic),
            _ => tonic(request),
        }
    }

    /// A call of the Lease service: an uncompressed keep-alive stream
    /// answered by [`keep_alive`], anything else by tonic.
    fn lease(&self, request: http::Request<Body>) -> Answer {
        let keep_alive = grpc_path(request.uri().path()).1 == "LeaseKeepAlive";
        if !keep_alive || unary::compressed(request.headers()) {
            return answer(self.lease.clone(), request);
        }
        let response = keep_alive::answer(request, &self.lease_streams, self.max_message);
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// Whether `request` carries etcd's `hasleader: true`.
fn wants_leader(request: &http::Request<Body>) -> bool {
    request
        .headers()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true")
}

/// `request` answered by `service`, its response body in tonic's type.
fn answer<S, B>(service: S, request: http::Request<Body>) -> Answer
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    Box::pin(async move { Ok(service.oneshot(request).await?.map(Body::new)) })
}

/// A request's `grpc-timeout` (gRPC's "TimeoutValue TimeoutUnit": at most
/// 8 digits and one of H M S m u n); none when absent or malformed, as
/// tonic reads it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit = text.len().checked_sub(1)?;
    let (value, unit) = (text.get(..unit)?, text.get(unit..)?);
    if value.len() > 8 {
        return None;
    }
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{grpc_path, grpc_timeout};

    #[test]
    fn a_path_names_its_service_and_method_by_its_segments() {
        for (path, names) in [
            ("/etcdserverpb.KV/Range", ("etcdserverpb.KV", "Range")),
            (
                "/grpc.health.v1.Health/Check",
                ("grpc.health.v1.Health", "Check"),
            ),
            ("/etcdserverpb.KV/", ("etcdserverpb.KV", "")),
            ("/etcdserverpb.KV", ("", "")),
            ("/v3/kv/range", ("v3", "kv/range")),
            ("/health", ("", "")),
            ("", ("", "")),
        ] {
            assert_eq!(grpc_path(path), names, "{path}");
        }
    }

    #[test]
    fn grpc_timeouts_read_as_tonic_reads_them() {
        for (header, expected) in [
            ("5S", Some(Duration::from_secs(5))),
            ("100m", Some(Duration::from_millis(100))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("123456789S", None),
            ("5s", None),
            ("S", None),
            ("", None),
            ("-1S", None),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(header));
            assert_eq!(grpc_timeout(&headers), expected, "{header:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
