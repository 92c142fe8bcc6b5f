//! The KV API: Range, Put, DeleteRange, Txn and Compact, with etcd's size
//! limit and quota checks in front of the write path.

use std::sync::Arc;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use prost::Message;

use super::quota::Quota;
use super::{blocking_failed, unexpected, Limits, Proposer};
use crate::apply::{self, RangeReply, ReadView};
use crate::auth::Caller;
use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;

/// What the KV service (and the lock and election recipes) call.
#[derive(Debug)]
pub struct KvApi {
    /// Writes go through it; linearizable reads wait on it.
    proposer: Arc<Proposer>,
    /// `--max-request-bytes` and `--max-txn-ops`, checked before proposing.
    limits: Limits,
    /// `--quota-backend-bytes`: puts are refused once the database is full.
    quota: Arc<Quota>,
}

impl KvApi {
    /// The KV API over `proposer`.
    pub fn new(proposer: Arc<Proposer>, limits: Limits, quota: Arc<Quota>) -> Self {
        Self {
            proposer,
            limits,
            quota,
        }
    }

    /// The shared write path (headers, the store, the stop signal).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Range. Linearizable (the default) waits for a ReadIndex round;
    /// `serializable` reads the local state at once. While auth is on, the
    /// caller must may read the range, by the auth state applied here
    /// after that round (so a permission revoked anywhere before the
    /// request is refused).
    pub async fn range(
        &self,
        req: RangeRequest,
        caller: &Caller,
    ) -> Result<RangeResponse, EtcdError> {
        self.read(req, caller, apply::range).await
    }

    /// [`KvApi::range`] as it goes on the wire: the key-values as stored,
    /// not decoded (the gRPC port's answer; see [`apply::range_reply`]).
    pub async fn range_reply(
        &self,
        req: RangeRequest,
        caller: &Caller,
    ) -> Result<RangeReply, EtcdError> {
        self.read(req, caller, apply::range_reply).await
    }

    /// A Range answered by `answer` from the store, once the request may
    /// read it.
    async fn read<T: Send + 'static>(
        &self,
        req: RangeRequest,
        caller: &Caller,
        answer: fn(&dyn ReadView, &RangeRequest) -> Result<T, EtcdError>,
    ) -> Result<T, EtcdError> {
        self.proposer.check_serving()?;
        if !req.serializable {
            self.proposer.barrier().await?;
        }
        let who = self.proposer.identify(caller).await?;
        if who.is_checked() {
            who.checker(&self.proposer.machine().auth().state())
                .range(&req)?;
        }
        let result = if req.range_end.is_empty() {
            // One key: an index lookup and at most one record read and
            // unsealed, a few microseconds. Served on this task: the hop
            // to a blocking thread and back cost more than the read (35%
            // of a member's CPU under serializable gets of random keys
            // went to the blocking pool's wake-ups and context switches).
            answer(self.proposer.store().as_ref(), &req)
        } else {
            // A range may read and unseal many records: off the runtime.
            let store = Arc::clone(self.proposer.store());
            tokio::task::spawn_blocking(move || answer(store.as_ref(), &req))
                .await
                .map_err(blocking_failed)?
        };
        if let Err(EtcdError::Corrupt) = &result {
            self.raise_corrupt().await;
        }
        if who.is_checked() {
            who.still_current(&self.proposer.machine().auth().state())?;
        }
        result
    }

    /// Raises the CORRUPT alarm for this member (data read from its disk
    /// failed authentication): from then on every member refuses to serve.
    async fn raise_corrupt(&self) {
        tracing::error!("corrupt data on this member's disk; raising the CORRUPT alarm");
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.proposer.identity().member_id,
            alarm: AlarmType::Corrupt as i32,
        };
        if let Err(e) = self.proposer.propose(Command::Alarm(raise)).await {
            tracing::error!(error = %e, "raising the CORRUPT alarm failed");
        }
    }

    /// Put, checked at apply against the caller's permissions.
    pub async fn put(&self, req: PutRequest, caller: &Caller) -> Result<PutResponse, EtcdError> {
        self.limits.check_size(&req)?;
        self.quota.check(req.encoded_len()).await?;
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::Put(req), who.header())
            .await?
        {
            Applied::Put(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// DeleteRange, checked at apply against the caller's permissions.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        caller: &Caller,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.limits.check_size(&req)?;
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::DeleteRange(req), who.header())
            .await?
        {
            Applied::DeleteRange(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Txn. One that writes nothing (no put or delete on any branch) is
    /// served like a read, as etcd does: after a ReadIndex round (unless
    /// every range in it is serializable), from the local store, without a
    /// log entry.
    /// Every compare and op is checked against the caller's permissions
    /// (after the ReadIndex round for a read, at apply for a write).
    pub async fn txn(&self, req: TxnRequest, caller: &Caller) -> Result<TxnResponse, EtcdError> {
        self.limits.check_size(&req)?;
        if !has_write(&req) {
            self.proposer.check_serving()?;
            if !all_serializable(&req) {
                self.proposer.barrier().await?;
            }
            let who = self.proposer.identify(caller).await?;
            let machine = Arc::clone(self.proposer.machine());
            if who.is_checked() {
                let lessor = machine.lessor();
                who.checker(&machine.auth().state())
                    .txn(&req, &|id| lessor.keys(id).unwrap_or_default())?;
            }
            let served = Arc::clone(&machine);
            let result = tokio::task::spawn_blocking(move || served.read_only_txn(&req))
                .await
                .map_err(blocking_failed)?;
            if who.is_checked() {
                who.still_current(&machine.auth().state())?;
            }
            return result;
        }
        if has_put(&req) {
            self.quota.check(req.encoded_len()).await?;
        }
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::Txn(req), who.header())
            .await?
        {
            Applied::Txn(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Compact. With `physical`, returns once the obsolete records are deleted
    /// on this member; otherwise they are deleted in the background.
    /// Needs the root role while auth is on (checked at apply).
    pub async fn compact(
        &self,
        req: CompactionRequest,
        caller: &Caller,
    ) -> Result<CompactionResponse, EtcdError> {
        let physical = req.physical;
        let who = self.proposer.identify(caller).await?;
        match self
            .proposer
            .propose_as(Command::Compaction(req), who.header())
            .await?
        {
            Applied::Compaction(_, done) => {
                if physical {
                    done.await.map_err(|_| EtcdError::Internal)??;
                }
                Ok(CompactionResponse {
                    header: Some(self.proposer.header(0)),
                })
            }
            other => Err(unexpected(other)),
        }
    }
}

/// Whether any branch of `req` (nested ones included) puts or deletes.
fn has_write(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(t)) => has_write(t),
            _ => false,
        })
}

/// Whether every range of a read-only `req` asks for a serializable read.
fn all_serializable(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => all_serializable(t),
            _ => true,
        })
}

/// Whether any branch of `req` puts (what the quota check is for).
fn has_put(req: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => has_put(t),
            _ => false,
        })
}
