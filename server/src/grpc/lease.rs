//! `etcdserverpb.Lease`: call the Lease API, map the error, fill the header.
//!
//! As in etcd, LeaseTimeToLive answers an unknown lease with TTL -1 instead
//! of an error, and a keep-alive for an unknown (or expired) lease with TTL 0.

use std::sync::Arc;

use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use tokio_stream::Stream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{caller, keep_alive};
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::member::LeaseApi;

/// The Lease service of one member.
#[derive(Debug, Clone)]
pub struct LeaseService {
    /// The API the requests are served by.
    lease: Arc<LeaseApi>,
}

impl LeaseService {
    /// A Lease service over `lease`.
    pub fn new(lease: Arc<LeaseApi>) -> Self {
        Self { lease }
    }

    /// The answers to one keep-alive stream's requests (a gRPC stream's
    /// whose requests are compressed, or the JSON gateway's; see
    /// [`super::keep_alive`]).
    pub fn keep_alives<S>(
        &self,
        requests: S,
        caller: Caller,
    ) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Unpin + Send + 'static
    where
        S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
    {
        keep_alive::keep_alives(&self.lease, requests, caller)
    }

    /// The API the requests are served by.
    pub(super) fn api(&self) -> &Arc<LeaseApi> {
        &self.lease
    }

    /// Completes a header that apply filled with the revision only.
    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.lease.proposer().header(revision));
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = caller::of(&request, self.lease.proposer());
        let mut resp = self.lease.grant(request.into_inner(), &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = caller::of(&request, self.lease.proposer());
        let mut resp = self.lease.revoke(request.into_inner(), &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        let caller = caller::of(&request, self.lease.proposer());
        Ok(Response::new(Box::pin(
            self.keep_alives(request.into_inner(), caller),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = caller::of(&request, self.lease.proposer());
        let req = request.into_inner();
        let id = req.id;
        match self.lease.time_to_live(req, &caller).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(EtcdError::LeaseNotFound) => Ok(Response::new(LeaseTimeToLiveResponse {
                header: Some(self.lease.proposer().header(0)),
                id,
                ttl: -1,
                ..LeaseTimeToLiveResponse::default()
            })),
            Err(e) => Err(e.into()),
        }
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let caller = caller::of(&request, self.lease.proposer());
        Ok(Response::new(self.lease.leases(&caller).await?))
    }
}
