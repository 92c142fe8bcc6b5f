//! `/v3/kv/...`: `etcdserverpb.KV` through [`KvService`].

use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::Kv;

use super::{unary_route, Route};
use crate::grpc::KvService;
use crate::member::Apis;

fn service(apis: &Apis) -> KvService {
    KvService::new(Arc::clone(apis.kv()))
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/kv/range", service, Kv, range),
        unary_route!("/kv/put", service, Kv, put),
        unary_route!("/kv/deleterange", service, Kv, delete_range),
        unary_route!("/kv/txn", service, Kv, txn),
        unary_route!("/kv/compaction", service, Kv, compact),
    ]
}
