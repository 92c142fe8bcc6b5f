//! grpc-go-prometheus's server metrics, as etcd registers them
//! (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`, and with
//! `--metrics extensive` `grpc_server_handling_seconds`), plus etcd's
//! `etcd_network_client_grpc_{sent,received}_bytes_total`.
//!
//! Every method of every service the client port registers gets its
//! counters when the member starts, every code included, as grpc-go-
//! prometheus initialises them: a dashboard's `rate()` sees zeros rather
//! than no series. The layer that updates them is in [`super::layer`].

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};

use super::{histogram_vec, int_counter, int_counter_vec, Level};

/// grpc-go-prometheus's `grpc_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStream => "server_stream",
            Kind::ClientStream => "client_stream",
            Kind::BidiStream => "bidi_stream",
        }
    }
}

/// Every method the client port serves: (service, method, kind). A test
/// checks it against the `.proto` files.
pub const METHODS: &[(&str, &str, Kind)] = &[
    ("etcdserverpb.KV", "Range", Kind::Unary),
    ("etcdserverpb.KV", "Put", Kind::Unary),
    ("etcdserverpb.KV", "DeleteRange", Kind::Unary),
    ("etcdserverpb.KV", "Txn", Kind::Unary),
    ("etcdserverpb.KV", "Compact", Kind::Unary),
    ("etcdserverpb.Watch", "Watch", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseLeases", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberAdd", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberRemove", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberList", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberPromote", Kind::Unary),
    ("etcdserverpb.Auth", "AuthEnable", Kind::Unary),
    ("etcdserverpb.Auth", "AuthDisable", Kind::Unary),
    ("etcdserverpb.Auth", "AuthStatus", Kind::Unary),
    ("etcdserverpb.Auth", "Authenticate", Kind::Unary),
    ("etcdserverpb.Auth", "UserAdd", Kind::Unary),
    ("etcdserverpb.Auth", "UserGet", Kind::Unary),
    ("etcdserverpb.Auth", "UserList", Kind::Unary),
    ("etcdserverpb.Auth", "UserDelete", Kind::Unary),
    ("etcdserverpb.Auth", "UserChangePassword", Kind::Unary),
    ("etcdserverpb.Auth", "UserGrantRole", Kind::Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", Kind::Unary),
    ("etcdserverpb.Auth", "RoleAdd", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGet", Kind::Unary),
    ("etcdserverpb.Auth", "RoleList", Kind::Unary),
    ("etcdserverpb.Auth", "RoleDelete", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", Kind::Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", Kind::Unary),
    ("etcdserverpb.Maintenance", "Alarm", Kind::Unary),
    ("etcdserverpb.Maintenance", "Status", Kind::Unary),
    ("etcdserverpb.Maintenance", "Defragment", Kind::Unary),
    ("etcdserverpb.Maintenance", "Hash", Kind::Unary),
    ("etcdserverpb.Maintenance", "HashKV", Kind::Unary),
    ("etcdserverpb.Maintenance", "Snapshot", Kind::ServerStream),
    ("etcdserverpb.Maintenance", "MoveLeader", Kind::Unary),
    ("etcdserverpb.Maintenance", "Downgrade", Kind::Unary),
    ("v3lockpb.Lock", "Lock", Kind::Unary),
    ("v3lockpb.Lock", "Unlock", Kind::Unary),
    ("v3electionpb.Election", "Campaign", Kind::Unary),
    ("v3electionpb.Election", "Proclaim", Kind::Unary),
    ("v3electionpb.Election", "Leader", Kind::Unary),
    ("v3electionpb.Election", "Observe", Kind::ServerStream),
    ("v3electionpb.Election", "Resign", Kind::Unary),
    ("grpc.health.v1.Health", "Check", Kind::Unary),
    ("grpc.health.v1.Health", "Watch", Kind::ServerStream),
    ("etcdserverpb.Auth", "AuthEnable", Kind::Unary),
    ("etcdserverpb.Auth", "AuthDisable", Kind::Unary),
    ("etcdserverpb.Auth", "AuthStatus", Kind::Unary),
    ("etcdserverpb.Auth", "Authenticate", Kind::Unary),
    ("etcdserverpb.Auth", "UserAdd", Kind::Unary),
    ("etcdserverpb.Auth", "UserGet", Kind::Unary),
    ("etcdserverpb.Auth", "UserList", Kind::Unary),
    ("etcdserverpb.Auth", "UserDelete", Kind::Unary),
    ("etcdserverpb.Auth", "UserChangePassword", Kind::Unary),
    ("etcdserverpb.Auth", "UserGrantRole", Kind::Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", Kind::Unary),
    ("etcdserverpb.Auth", "RoleAdd", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGet", Kind::Unary),
    ("etcdserverpb.Auth", "RoleList", Kind::Unary),
    ("etcdserverpb.Auth", "RoleDelete", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", Kind::Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", Kind::Unary),
    ("cairnpb.Admin", "RotateDataKey", Kind::Unary),
];

/// grpc-go's code names, by code (`codes.Code.String()`).
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// grpc's code for a cancelled call (the client went away).
pub const CANCELED: usize = 1;
/// grpc's code for a call that ended without a status.
pub const UNKNOWN: usize = 2;

/// One method's counters, looked up once at start.
#[derive(Debug)]
pub struct MethodMetrics {
    /// grpc_server_started_total.
    pub started: IntCounter,
    /// grpc_server_handled_total, by code.
    pub handled: Vec<IntCounter>,
    /// grpc_server_msg_received_total.
    pub received: IntCounter,
    /// grpc_server_msg_sent_total.
    pub sent: IntCounter,
    /// grpc_server_handling_seconds (`--metrics extensive` only).
    pub handling: Option<Histogram>,
    /// Whether etcd's interceptors count it as a "stream" client request
    /// (any streaming kind) rather than a "unary" one.
    pub stream: bool,
}

/// How many distinct `client-api-version` values get a series of their
/// own; later ones are counted as "unknown". The value comes from clients,
/// and each distinct one would otherwise be a series kept forever.
const MAX_CLIENT_VERSIONS: usize = 32;

/// etcd_server_client_requests_total{type, client_api_version}.
#[derive(Debug)]
struct ClientRequests {
    /// The family, for versions not seen yet.
    vec: IntCounterVec,
    /// Version -> its (unary, stream) counters, looked up without
    /// allocating once a version was seen.
    by_version: RwLock<HashMap<String, [IntCounter; 2]>>,
}

impl ClientRequests {
    fn counters(&self, version: &str) -> [IntCounter; 2] {
        [
            self.vec.with_label_values(&["unary", version]),
            self.vec.with_label_values(&["stream", version]),
        ]
    }

    /// Counts one call of a client that sent `version` (none: "unknown",
    /// as etcd labels it).
    fn count(&self, version: Option<&str>, stream: bool) {
        let version = version.filter(|v| !v.is_empty()).unwrap_or("unknown");
        let i = usize::from(stream);
        {
            let known = crate::locks::read(&self.by_version);
            if let Some(counters) = known.get(version) {
                counters[i].inc();
                return;
            }
        }
        let mut known = crate::locks::write(&self.by_version);
        let version = if known.len() < MAX_CLIENT_VERSIONS {
            version
        } else {
            "unknown"
        };
        let counters = known
            .entry(version.to_string())
            .or_insert_with(|| self.counters(version));
        counters[i].inc();
    }
}

/// The client port's gRPC metrics.
#[derive(Debug)]
pub struct GrpcMetrics {
    /// By index in [`METHODS`].
    methods: Vec<MethodMetrics>,
    /// `/service/method` -> index.
    paths: HashMap<String, usize>,
    /// etcd_network_client_grpc_received_bytes_total: request messages'
    /// bytes (without gRPC's 5-byte prefix, as etcd counts them).
    pub received_bytes: IntCounter,
    /// etcd_network_client_grpc_sent_bytes_total: response messages' bytes.
    pub sent_bytes: IntCounter,
    /// etcd_server_client_requests_total.
    client_requests: ClientRequests,
}

impl GrpcMetrics {
    pub(super) fn new(r: &Registry, level: Level) -> Result<Self, prometheus::Error> {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let started = int_counter_vec(
            r,
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &labels,
        )?;
        let handled = int_counter_vec(
            r,
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let received = int_counter_vec(
            r,
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &labels,
        )?;
        let sent = int_counter_vec(
            r,
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &labels,
        )?;
        let handling = match level {
            Level::Basic => None,
            Level::Extensive => Some(histogram_vec(
                r,
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &labels,
                // Prometheus' DefBuckets, grpc-go-prometheus's default.
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )?),
        };
        let mut methods = Vec::with_capacity(METHODS.len());
        let mut paths = HashMap::with_capacity(METHODS.len());
        for (i, (service, method, kind)) in METHODS.iter().enumerate() {
            let values = [kind.label(), service, method];
            methods.push(MethodMetrics {
                started: started.with_label_values(&values),
                handled: CODES
                    .iter()
                    .map(|code| handled.with_label_values(&[kind.label(), service, method, code]))
                    .collect(),
                received: received.with_label_values(&values),
                sent: sent.with_label_values(&values),
                handling: handling.as_ref().map(|h| h.with_label_values(&values)),
                stream: *kind != Kind::Unary,
            });
            paths.insert(format!("/{service}/{method}"), i);
        }
        let client_requests = ClientRequests {
            vec: int_counter_vec(
                r,
                "etcd_server_client_requests_total",
                "The total number of client requests per client version.",
                &["type", "client_api_version"],
            )?,
            by_version: RwLock::new(HashMap::new()),
        };
        Ok(Self {
            methods,
            paths,
            client_requests,
            received_bytes: int_counter(
                r,
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            )?,
            sent_bytes: int_counter(
                r,
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            )?,
        })
    }

    /// The index of the method a request's path names, if it is one the
    /// client port serves.
    pub fn lookup(&self, path: &str) -> Option<usize> {
        self.paths.get(path).copied()
    }

    /// The counters of method `index` (from [`GrpcMetrics::lookup`]).
    pub fn method(&self, index: usize) -> Option<&MethodMetrics> {
        self.methods.get(index)
    }

    /// Counts a call of method `index` in etcd_server_client_requests_total,
    /// by the `client-api-version` metadata its client sent (etcd's
    /// clientv3 sends its own version, "3.5").
    pub fn client_request(&self, index: usize, version: Option<&str>) {
        let stream = self.method(index).is_some_and(|m| m.stream);
        self.client_requests.count(version, stream);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// (service, method, kind) of every rpc in a `.proto` file.
    fn rpcs(proto: &str) -> Vec<(String, String, Kind)> {
        let mut package = String::new();
        let mut service = String::new();
        let mut out = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("package ") {
                package = p.trim_end_matches(';').to_string();
            } else if let Some(s) = line.strip_prefix("service ") {
                service = format!("{package}.{}", s.trim_end_matches('{').trim());
            } else if let Some(rpc) = line.strip_prefix("rpc ") {
                let name = rpc.split('(').next().unwrap().trim().to_string();
                let (request, response) = rpc.split_once("returns").unwrap();
                let kind = match (request.contains("stream "), response.contains("stream ")) {
                    (false, false) => Kind::Unary,
                    (false, true) => Kind::ServerStream,
                    (true, false) => Kind::ClientStream,
                    (true, true) => Kind::BidiStream,
                };
                out.push((service.clone(), name, kind));
            }
        }
        out
    }

    #[test]
    fn client_versions_are_bounded() {
        let r = Registry::new();
        let m = GrpcMetrics::new(&r, Level::Basic).unwrap();
        let watch = m.lookup("/etcdserverpb.Watch/Watch").unwrap();
        let put = m.lookup("/etcdserverpb.KV/Put").unwrap();
        m.client_request(put, Some("3.5"));
        m.client_request(put, Some("3.5"));
        m.client_request(watch, None);
        for i in 0..100 {
            m.client_request(put, Some(&format!("x{i}")));
        }
        let family = r
            .gather()
            .into_iter()
            .find(|f| f.name() == "etcd_server_client_requests_total")
            .unwrap();
        let value = |kind: &str, version: &str| {
            family
                .get_metric()
                .iter()
                .find(|m| {
                    let labels: Vec<(&str, &str)> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    labels.contains(&("type", kind))
                        && labels.contains(&("client_api_version", version))
                })
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!(value("unary", "3.5"), Some(2.0));
        assert_eq!(value("stream", "unknown"), Some(1.0));
        // 32 versions at most (3.5 and unknown among them); the rest are
        // "unknown".
        assert_eq!(value("unary", "unknown"), Some(70.0));
        assert!(family.get_metric().len() <= 2 * MAX_CLIENT_VERSIONS);
    }

    #[test]
    fn the_method_table_matches_the_protos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
        let mut declared = Vec::new();
        for file in [
            "etcdserverpb/rpc.proto",
            "v3lockpb/v3lock.proto",
            "v3electionpb/v3election.proto",
            "cairnpb/raft.proto",
        ] {
            declared.extend(rpcs(&std::fs::read_to_string(dir.join(file)).unwrap()));
        }
        for (service, method, kind) in METHODS {
            if service.starts_with("grpc.health") {
                continue;
            }
            let found = declared
                .iter()
                .find(|(s, m, _)| s == service && m == method)
                .unwrap_or_else(|| panic!("{service}/{method} is not declared"));
            assert_eq!(found.2, *kind, "{service}/{method}");
        }
        // Every service the client port registers has all its methods here.
        for (service, method, _) in &declared {
            let served = METHODS.iter().any(|(s, _, _)| s == service);
            if served {
                assert!(
                    METHODS.iter().any(|(s, m, _)| s == service && m == method),
                    "{service}/{method} is missing from METHODS"
                );
            }
        }
    }
}
