//! `etcdserverpb.KV`: validate, call the KV API, map the error, fill the header.

use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::{caller, validate};
use crate::apply::RangeReply;
use crate::member::KvApi;

/// The KV service of one member.
#[derive(Debug, Clone)]
pub struct KvService {
    /// The API the requests are served by.
    kv: Arc<KvApi>,
}

impl KvService {
    /// A KV service over `kv`.
    pub fn new(kv: Arc<KvApi>) -> Self {
        Self { kv }
    }

    /// Range as the gRPC port answers it ([`KvApi::range_reply`]): what
    /// [`Kv::range`] answers, encoded alike, its key-values never decoded.
    pub(super) async fn range_reply(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeReply>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let req = request.into_inner();
        validate::range(&req)?;
        let mut resp = self.kv.range_reply(req, &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    /// Completes a header that apply filled with the revision only.
    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.kv.proposer().header(revision));
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let req = request.into_inner();
        validate::range(&req)?;
        let mut resp = self.kv.range(req, &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let req = request.into_inner();
        validate::put(&req)?;
        let mut resp = self.kv.put(req, &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let req = request.into_inner();
        validate::delete_range(&req)?;
        let mut resp = self.kv.delete_range(req, &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let req = request.into_inner();
        validate::txn(&req, self.kv.limits().max_txn_ops)?;
        let mut resp = self.kv.txn(req, &caller).await?;
        self.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = caller::of(&request, self.kv.proposer());
        let resp = self.kv.compact(request.into_inner(), &caller).await?;
        Ok(Response::new(resp))
    }
}
