//! The recipes' in-process client (etcd's servers use a real one): the
//! member's own KV and Lease APIs, and a watch on its own store.

use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, RangeRequest,
    RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::Event;
use tokio::sync::mpsc;

use super::Error;
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::member::{Apis, KvApi, LeaseApi};
use crate::mvcc::{KeyRange, StreamKey, WatchMessage, WatchSpec};

/// What the recipes call: the member's own KV (which also leads to the
/// store they watch and the member's stop signal) and Lease APIs, as
/// etcd's servers use an in-process client.
#[derive(Debug)]
pub struct LocalClient {
    /// Ranges, txns; the store, headers and the stop signal.
    kv: Arc<KvApi>,
    /// Session leases.
    lease: Arc<LeaseApi>,
}

impl LocalClient {
    /// A client of `apis`' KV and Lease APIs.
    pub fn new(apis: &Apis) -> Arc<Self> {
        Arc::new(Self {
            kv: Arc::clone(apis.kv()),
            lease: Arc::clone(apis.lease()),
        })
    }

    /// The member's write path (identity, auth checks).
    pub fn proposer(&self) -> &Arc<crate::member::Proposer> {
        self.kv.proposer()
    }

    pub(super) fn header(&self, revision: i64) -> ResponseHeader {
        self.kv.proposer().header(revision)
    }

    pub(super) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.kv.proposer().stopping()
    }

    pub(super) fn store(&self) -> &Arc<crate::mvcc::Store> {
        self.kv.proposer().store()
    }

    pub(super) async fn lease_grant(
        &self,
        req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        self.lease.grant(req, &Caller::Member).await
    }

    pub(super) async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.kv.delete_range(req, &Caller::Member).await
    }

    pub(super) async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.kv.txn(req, &Caller::Member).await
    }

    pub(super) async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.kv.range(req, &Caller::Member).await
    }
}

/// A watch on this member's own store, closed when dropped.
pub(super) struct LocalWatch<'a> {
    /// Whose store.
    member: &'a LocalClient,
    /// The hub stream of this one watcher.
    stream: StreamKey,
    /// Its messages.
    rx: mpsc::Receiver<WatchMessage>,
}

impl<'a> LocalWatch<'a> {
    /// Watches `range` from `start_revision` on.
    pub(super) fn new(member: &'a LocalClient, range: KeyRange, start_revision: i64) -> Self {
        let store = member.store();
        let stream = store.watch_hub().new_stream();
        let (tx, rx) = mpsc::channel(64);
        let spec = WatchSpec {
            range,
            start_revision,
            no_put: false,
            no_delete: false,
        };
        store.watch(spec, stream, tx);
        Self { member, stream, rx }
    }

    /// The next events, and the revision they reach. Ends with "server
    /// stopped" when the member stops.
    pub(super) async fn next(&mut self) -> Result<(i64, Vec<Event>), Error> {
        let mut stopping = self.member.stopping();
        loop {
            let message = tokio::select! {
                m = self.rx.recv() => m,
                _ = stopping.wait_for(|s| *s) => None,
            };
            match message {
                Some(WatchMessage::Events {
                    revision, events, ..
                }) => return Ok((revision, events)),
                Some(WatchMessage::Compacted { .. }) => return Err(EtcdError::Compacted.into()),
                Some(WatchMessage::Progress { .. }) => {}
                None => return Err(EtcdError::Stopped.into()),
            }
        }
    }
}

impl Drop for LocalWatch<'_> {
    fn drop(&mut self) {
        self.member.store().watch_hub().remove_stream(self.stream);
    }
}
