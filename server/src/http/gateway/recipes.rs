//! `/v3/lock/...` and `/v3/election/...`: etcd 3.5 serves its Lock and
//! Election services on the gateway too; through [`LockService`] and
//! [`ElectionService`] (observe is a stream of `{"result":...}` lines).

use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3lockpb::lock_server::Lock;

use super::stream::server_stream_route;
use super::{unary_route, Route};
use crate::concurrency::LocalClient;
use crate::grpc::{ElectionService, LockService};
use crate::member::Apis;

fn lock(apis: &Apis) -> LockService {
    LockService::new(LocalClient::new(apis))
}

fn election(apis: &Apis) -> ElectionService {
    ElectionService::new(LocalClient::new(apis))
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        unary_route!("/lock/lock", lock, Lock, lock),
        unary_route!("/lock/unlock", lock, Lock, unlock),
        unary_route!("/election/campaign", election, Election, campaign),
        unary_route!("/election/proclaim", election, Election, proclaim),
        unary_route!("/election/leader", election, Election, leader),
        server_stream_route!("/election/observe", election, Election, observe),
        unary_route!("/election/resign", election, Election, resign),
    ]
}
