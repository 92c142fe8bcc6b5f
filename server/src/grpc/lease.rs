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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::caller;
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::member::LeaseApi;

/// Keep-alive responses buffered per stream before the sender waits for the
/// client to read.
const KEEP_ALIVE_BUFFER: usize = 16;

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

    /// Serves one keep-alive stream (a gRPC stream, or the JSON
    /// gateway's) from a task of its own.
    pub fn keep_alives<S>(
        &self,
        requests: S,
        caller: Caller,
    ) -> ReceiverStream<Result<LeaseKeepAliveResponse, Status>>
    where
        S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        tokio::spawn(keep_alive(Arc::clone(&self.lease), requests, tx, caller));
        ReceiverStream::new(rx)
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

/// Answers the keep-alive requests of one stream, in order, until the client
/// closes its side (or goes away), or the member stops (the stream then ends
/// with "etcdserver: server stopped", so the client renews elsewhere).
async fn keep_alive(
    lease: Arc<LeaseApi>,
    mut requests: impl Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    responses: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
    caller: Caller,
) {
    let mut stopping = lease.proposer().stopping();
    loop {
        let next = tokio::select! {
            _ = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                let _ = responses.send(Err(EtcdError::Stopped.into())).await;
                return;
            }
            next = requests.next() => next,
        };
        let req = match next {
            Some(Ok(req)) => req,
            None => return,
            Some(Err(status)) => {
                // An undecodable or oversized message ends the stream with
                // that error (etcd's INTERNAL / RESOURCE_EXHAUSTED), not OK.
                tracing::debug!(error = %status, "lease keep-alive stream failed");
                let _ = responses
                    .send(Err(super::status::from_transport(status)))
                    .await;
                return;
            }
        };
        let resp = match renewal(&lease, req.id, &caller).await {
            Ok(resp) => resp,
            Err(e) => {
                let _ = responses.send(Err(e.into())).await;
                return;
            }
        };
        if responses.send(Ok(resp)).await.is_err() {
            // The client is gone.
            return;
        }
    }
}

/// The answer to one keep-alive request for lease `id`: its TTL, or 0 for
/// a lease that does not exist (or has expired), as etcd answers it; any
/// other error ends the stream.
pub(super) async fn renewal(
    lease: &LeaseApi,
    id: i64,
    caller: &Caller,
) -> Result<LeaseKeepAliveResponse, EtcdError> {
    // The header is taken before the renewal, as etcd does: a client never
    // sees a successful keep-alive at a revision after the one that revoked
    // the lease.
    let header = lease.proposer().header(0);
    let ttl = match lease.renew(id, caller).await {
        Ok(ttl) => ttl,
        Err(EtcdError::LeaseNotFound) => 0,
        Err(e) => return Err(e),
    };
    Ok(LeaseKeepAliveResponse {
        header: Some(header),
        id,
        ttl,
    })
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
