//! One Cairn member: the internal API the gRPC services call (etcd's `EtcdServer`).
//!
//! A single member applies each write directly to the store, under the store's
//! write lock, recording an applied index with it; the raft work replaces
//! "apply directly" with "propose, wait for commit, apply" behind these same
//! methods. Store work is blocking (RocksDB, fsync), so it runs on tokio's
//! blocking pool, never on a runtime worker.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, StatusResponse, TxnRequest, TxnResponse,
};
use prost::Message;

use crate::apply::{self, NoLeases};
use crate::error::EtcdError;
use crate::mvcc::{Store, WriteTxn};

/// The etcd version Cairn reports. Clients gate features on it: kube-apiserver
/// enables WatchProgressRequest only from 3.5.8 on (and 3.4.25).
pub const ETCD_VERSION: &str = "3.5.17";

/// The raft term a single member reports until raft replication exists: what a
/// freshly started single etcd member shows (term 1 at bootstrap, 2 once it
/// has elected itself).
pub const SINGLE_MEMBER_TERM: u64 = 2;

/// Bytes etcd adds around a request when it wraps it for raft (request header
/// with a 64-bit id, field tags, length prefix); `--max-request-bytes` applies
/// to the wrapped size.
const RAFT_ENVELOPE_BYTES: usize = 20;

/// Identity of a member, fixed when its data directory is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's id (derived from its members' ids, as etcd does).
    pub cluster_id: u64,
    /// This member's id (derived from its peer URLs and the cluster token).
    pub member_id: u64,
}

/// Limits applied before a request is executed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `--max-request-bytes`: the largest write request accepted.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`: the most operations in one txn branch.
    pub max_txn_ops: usize,
}

/// A running member's state, shared by every gRPC service.
#[derive(Debug)]
pub struct Member {
    /// The MVCC store: all user data.
    store: Arc<Store>,
    /// Ids reported in every response header.
    identity: Identity,
    /// Size limits, checked before applying.
    limits: Limits,
    /// Active alarms. NOSPACE refuses writes while raised.
    alarms: Mutex<BTreeSet<(u64, i32)>>,
}

fn blocking_failed(e: tokio::task::JoinError) -> EtcdError {
    tracing::error!(error = %e, "store task failed");
    EtcdError::Internal
}

impl Member {
    /// A member serving `store`.
    pub fn new(store: Arc<Store>, identity: Identity, limits: Limits) -> Self {
        Self {
            store,
            identity,
            limits,
            alarms: Mutex::new(BTreeSet::new()),
        }
    }

    /// The member's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A complete response header at `revision` (0 = the current revision).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision: if revision == 0 {
                self.store.current_revision()
            } else {
                revision
            },
            raft_term: SINGLE_MEMBER_TERM,
        }
    }

    fn check_size(&self, request: &impl Message) -> Result<(), EtcdError> {
        if request.encoded_len() + RAFT_ENVELOPE_BYTES > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }

    fn check_space(&self) -> Result<(), EtcdError> {
        let alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        if alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32) {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it with
    /// the next applied index. An error drops the transaction: nothing is written.
    async fn write<R, F>(&self, f: F) -> Result<R, EtcdError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_>) -> Result<R, EtcdError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut txn = store.write();
            let index = txn.applied_index() + 1;
            let resp = f(&mut txn)?;
            txn.commit(Some(index))?;
            Ok(resp)
        })
        .await
        .map_err(blocking_failed)?
    }

    /// Range. A single member's own state is linearizable, so `serializable`
    /// changes nothing here.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || apply::range(store.as_ref(), &req))
            .await
            .map_err(blocking_failed)?
    }

    /// Put.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.check_size(&req)?;
        self.check_space()?;
        self.write(move |txn| apply::put(txn, &NoLeases, &req))
            .await
    }

    /// DeleteRange.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.check_size(&req)?;
        self.write(move |txn| apply::delete_range(txn, &req)).await
    }

    /// Txn.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.check_size(&req)?;
        if has_put(&req) {
            self.check_space()?;
        }
        self.write(move |txn| apply::txn(txn, &NoLeases, &req))
            .await
    }

    /// Compact. With `physical`, returns once the obsolete records are deleted;
    /// otherwise they are deleted in the background.
    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        let rev = req.revision;
        let job = tokio::task::spawn_blocking(move || store.compact(rev))
            .await
            .map_err(blocking_failed)??;
        let physical = tokio::task::spawn_blocking(move || {
            if let Err(e) = job.run() {
                tracing::error!(error = %e, revision = rev, "compaction failed");
                return Err(EtcdError::from(e));
            }
            Ok(())
        });
        if req.physical {
            physical.await.map_err(blocking_failed)??;
        }
        Ok(CompactionResponse {
            header: Some(self.header(0)),
        })
    }

    /// Maintenance.Status.
    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        let store = Arc::clone(&self.store);
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        let applied = self.store.applied_index();
        Ok(StatusResponse {
            header: Some(self.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size: size.total as i64,
            leader: self.identity.member_id,
            raft_index: applied,
            raft_term: SINGLE_MEMBER_TERM,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: size.in_use as i64,
            is_learner: false,
        })
    }

    /// Maintenance.Alarm: list, raise or clear alarms.
    pub fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        let mut alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        let member = if req.member_id == 0 {
            self.identity.member_id
        } else {
            req.member_id
        };
        let listed = |set: &BTreeSet<(u64, i32)>, only: Option<(u64, i32)>| {
            set.iter()
                .filter(|a| only.is_none_or(|o| o == **a))
                .map(|(member_id, alarm)| AlarmMember {
                    member_id: *member_id,
                    alarm: *alarm,
                })
                .collect::<Vec<_>>()
        };
        let alarm_list = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => listed(&alarms, None),
            Ok(AlarmAction::Activate) => {
                if req.alarm == AlarmType::None as i32 {
                    Vec::new()
                } else {
                    alarms.insert((member, req.alarm));
                    listed(&alarms, Some((member, req.alarm)))
                }
            }
            Ok(AlarmAction::Deactivate) => {
                let was = listed(&alarms, Some((member, req.alarm)));
                alarms.remove(&(member, req.alarm));
                was
            }
            Err(_) => Vec::new(),
        };
        Ok(AlarmResponse {
            header: Some(self.header(0)),
            alarms: alarm_list,
        })
    }

    /// Maintenance.Defragment: reclaims the space of deleted records.
    pub async fn defragment(&self) -> Result<(), EtcdError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.engine().defragment())
            .await
            .map_err(blocking_failed)??;
        Ok(())
    }
}

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
