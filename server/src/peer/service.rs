//! The answering side of member-to-member calls.

use std::sync::{Arc, Weak};

use cairn_proto::cairnpb::peer_server::{self, PeerServer};
use cairn_proto::cairnpb::{
    lease_forward, Done, LeaseForward, LeaseForwardResponse, Member, MemberTable, Renewal,
    RenewalAnswer,
};
use cairn_proto::etcdserverpb::{
    HashKvRequest, HashKvResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Error;
use crate::error::EtcdError;
use crate::raft::transport::MAX_PEER_MESSAGE;

/// What a member answers its peers: the lease requests a follower forwards
/// (only the leader keeps lease expiries), the member table, and its HashKV
/// for the corruption check. Errors are the member's own; the service maps
/// them to the wire through [`Error::answer`].
#[tonic::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    /// Renews lease `id`; its TTL.
    async fn renew(&self, id: i64) -> Result<i64, EtcdError>;
    /// The cluster id and member table.
    fn members(&self) -> (u64, Vec<Member>);
    /// HashKV at a revision.
    async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, EtcdError>;
    /// LeaseTimeToLive.
    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError>;
}

/// The `cairnpb.Peer` service over a [`PeerHandler`].
pub struct PeerService<L> {
    /// Who answers. Weak: connections from peers outlive a stopping
    /// member's server for a while, and must not keep its state (and data
    /// directory) open.
    handler: Weak<L>,
}

impl<L: PeerHandler> PeerService<L> {
    /// A service answering through `handler`.
    pub fn new(handler: &Arc<L>) -> Self {
        Self {
            handler: Arc::downgrade(handler),
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    fn handler(&self) -> Result<Arc<L>, Status> {
        self.handler
            .upgrade()
            .ok_or_else(|| Error::Refused(EtcdError::Stopped).to_status())
    }
}

/// A handler's refusal, on the wire.
fn refused(e: EtcdError) -> Status {
    Error::answer(e).to_status()
}

#[tonic::async_trait]
impl<L: PeerHandler> peer_server::Peer for PeerService<L> {
    async fn renewals(
        &self,
        request: Request<Streaming<Renewal>>,
    ) -> Result<Response<BoxStream<RenewalAnswer>>, Status> {
        self.handler()?;
        let stream =
            super::renewals::answer_renewals(Weak::clone(&self.handler), request.into_inner());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let resp = self.handler()?.hash_kv(revision).await.map_err(refused)?;
        Ok(Response::new(resp))
    }

    async fn members(&self, _request: Request<Done>) -> Result<Response<MemberTable>, Status> {
        let (cluster_id, members) = self.handler()?.members();
        Ok(Response::new(MemberTable {
            cluster_id,
            members,
        }))
    }

    async fn lease(
        &self,
        request: Request<LeaseForward>,
    ) -> Result<Response<LeaseForwardResponse>, Status> {
        let resp = match request.into_inner().request {
            Some(lease_forward::Request::Renew(id)) => LeaseForwardResponse {
                ttl: self.handler()?.renew(id).await.map_err(refused)?,
                time_to_live: None,
            },
            Some(lease_forward::Request::TimeToLive(req)) => LeaseForwardResponse {
                ttl: 0,
                time_to_live: Some(self.handler()?.time_to_live(req).await.map_err(refused)?),
            },
            None => return Err(Error::Failed("empty lease request".into()).to_status()),
        };
        Ok(Response::new(resp))
    }
}
