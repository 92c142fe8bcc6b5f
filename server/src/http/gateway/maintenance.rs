//! `/v3/maintenance/...`: `etcdserverpb.Maintenance` through
//! [`MaintenanceService`]. etcd 3.5 maps `/v3/maintenance/hash` to Hash
//! (HashKV has no path of its own there); the snapshot is a stream of
//! `{"result":{"blob":...}}` lines.

use std::sync::Arc;

use cairn_proto::etcdserverpb::maintenance_server::Maintenance;

use super::stream::server_stream_route;
use super::{unary_route, Route};
use crate::grpc::MaintenanceService;
use crate::member::Apis;

fn service(apis: &Apis) -> MaintenanceService {
    MaintenanceService::new(Arc::clone(apis.maintenance()))
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/maintenance/alarm", service, Maintenance, alarm),
        unary_route!("/maintenance/status", service, Maintenance, status),
        unary_route!("/maintenance/defragment", service, Maintenance, defragment),
        unary_route!("/maintenance/hash", service, Maintenance, hash),
        server_stream_route!("/maintenance/snapshot", service, Maintenance, snapshot),
        unary_route!(
            "/maintenance/transfer-leadership",
            service,
            Maintenance,
            move_leader
        ),
        unary_route!("/maintenance/downgrade", service, Maintenance, downgrade),
    ]
}
