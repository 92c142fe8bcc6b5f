//! etcd's `client/v3/concurrency` recipes — the mutex and the election —
//! run inside a member against its own KV, Lease and Watch, as etcd's
//! `v3lock` and `v3election` servers run them through an in-process client.
//! The gRPC Lock and Election services (`grpc::lock`, `grpc::election`) are
//! thin wrappers over these functions.
//!
//! The shapes are etcd's, since clients of the two services see them: a
//! lock or candidacy is the key `name + "/" + lease id in hex`, written with
//! that lease; the holder is the key of the prefix with the lowest create
//! revision; a waiter watches the deletion of the key created just before
//! its own. A session whose lease is 0 gets a fresh 60-second lease that
//! nobody keeps alive (etcd's default session TTL), exactly as etcd's
//! servers do. Waiting ends when the member stops ("server stopped"); a
//! waiter whose client goes away removes its own key, as etcd's do.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};
use cairn_proto::v3electionpb::LeaderKey;
use tokio::sync::mpsc;

use crate::error::EtcdError;
use crate::mvcc::KeyRange;

mod client;

pub use client::LocalClient;
use client::LocalWatch;

/// The TTL, in seconds, of the lease a session without one is given
/// (etcd's `defaultSessionTTL`).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// What the recipes fail with, with etcd's messages. (etcd's servers return
/// these as plain errors, so clients see them with gRPC code Unknown; so
/// does every KV error that reaches a recipe.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A KV, Lease or Watch call failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The lock's key vanished while waiting: its lease expired.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// Proclaim by a campaigner that no longer holds the leadership.
    #[error("election: not leader")]
    NotLeader,
    /// Leader of an election nobody holds.
    #[error("election: no leader")]
    NoLeader,
    /// Proclaim or Resign without a leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
}

/// The end of the range of keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `name + "/"`.
fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// `prefix + lease id in lowercase hex` (Go's `%x` of an int64).
fn key_of(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [prefix, hex.as_bytes()].concat()
}

fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// The key of `prefix` with the lowest create revision (`WithFirstCreate`).
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The newest key of `prefix` created at or before `max_create_revision`.
fn last_created_up_to(prefix: &[u8], max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    op(Request::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }))
}

/// The key-values of the `i`th response of a Txn (a range's).
fn range_kvs(resp: &TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// A response header as clients see it: ids and term filled in.
fn header(member: &LocalClient, partial: Option<ResponseHeader>) -> ResponseHeader {
    member.header(partial.map_or(0, |h| h.revision))
}

/// The session's lease: `lease`, or a fresh one of [`DEFAULT_SESSION_TTL`]
/// when it is 0. (A given lease is not checked, as etcd does not: a missing
/// one fails the first write with "requested lease not found".)
async fn session(member: &LocalClient, lease: i64) -> Result<i64, Error> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = member
        .lease_grant(LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL,
            id: 0,
        })
        .await?;
    Ok(granted.id)
}

/// A lock's or candidate's session lease, its name's prefix and its key.
async fn candidacy(
    member: &LocalClient,
    name: &[u8],
    lease: i64,
) -> Result<(i64, Vec<u8>, Vec<u8>), Error> {
    let lease = session(member, lease).await?;
    let prefix = prefix_of(name);
    let key = key_of(&prefix, lease);
    Ok((lease, prefix, key))
}

async fn txn(member: &LocalClient, req: TxnRequest) -> Result<TxnResponse, Error> {
    Ok(member.txn(req).await?)
}

/// A linearizable read, retried while the cluster changes leader (as
/// clientv3 retries reads): a lock or election that waits through a leader
/// change must not fail because of it. Ends with "server stopped" when the
/// member stops.
async fn range(member: &LocalClient, req: RangeRequest) -> Result<RangeResponse, Error> {
    let mut backoff = Duration::from_millis(50);
    let mut stopping = member.stopping();
    loop {
        match member.range(req.clone()).await {
            Err(
                EtcdError::LeaderChanged
                | EtcdError::NoLeader
                | EtcdError::Timeout
                | EtcdError::TimeoutDueToLeaderFail
                | EtcdError::TooManyRequests,
            ) => {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|s| *s) => return Err(EtcdError::Stopped.into()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return Ok(other?),
        }
    }
}

fn is_delete(event: &Event) -> bool {
    event.r#type == EventType::Delete as i32
}

/// Waits until `key` is deleted after `revision`.
async fn wait_delete(member: &LocalClient, key: &[u8], revision: i64) -> Result<(), Error> {
    let mut watch = LocalWatch::new(member, KeyRange::new(key, b""), revision);
    loop {
        let (_, events) = watch.next().await?;
        if events.iter().any(is_delete) {
            return Ok(());
        }
    }
}

/// Waits until every key of `prefix` created at or before
/// `max_create_revision` is gone (etcd's `waitDeletes`: one at a time, the
/// newest first).
async fn wait_deletes(
    member: &LocalClient,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<(), Error> {
    loop {
        let resp = range(member, last_created_up_to(prefix, max_create_revision)).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(());
        };
        let revision = resp.header.map_or(0, |h| h.revision);
        wait_delete(member, &kv.key, revision).await?;
    }
}

/// Runs an async clean-up if dropped while armed (the client went away
/// mid-wait): the member outlives the request, so it is spawned.
struct CleanUp {
    /// The request to send, taken when disarmed.
    pending: Option<(Arc<LocalClient>, TxnRequest)>,
}

impl CleanUp {
    fn new(member: &Arc<LocalClient>, req: TxnRequest) -> Self {
        Self {
            pending: Some((Arc::clone(member), req)),
        }
    }

    fn disarm(&mut self) {
        self.pending = None;
    }

    /// Runs the clean-up now.
    async fn run(mut self) {
        if let Some((member, req)) = self.pending.take() {
            clean_up(member, req).await;
        }
    }
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        if let Some((member, req)) = self.pending.take() {
            tokio::spawn(clean_up(member, req));
        }
    }
}

async fn clean_up(member: Arc<LocalClient>, req: TxnRequest) {
    if let Err(e) = member.txn(req).await {
        tracing::warn!(error = %e, "recipe clean-up failed");
    }
}

fn delete_key(key: &[u8]) -> TxnRequest {
    TxnRequest {
        success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        }))],
        ..Default::default()
    }
}

/// Lock: acquires lock `name` for `lease` (0: a fresh 60 s lease), waiting
/// for every earlier holder or waiter to go. Returns the header and the key
/// that exists while the lock is held. Locking again with the same lease
/// returns the same key.
pub async fn lock(
    member: &Arc<LocalClient>,
    name: &[u8],
    lease: i64,
) -> Result<(ResponseHeader, Vec<u8>), Error> {
    let (lease, prefix, key) = candidacy(member, name, lease).await?;
    let resp = txn(
        member,
        TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![
                put(&key, b"", lease),
                op(Request::RequestRange(first_created(&prefix))),
            ],
            failure: vec![
                op(Request::RequestRange(get(&key))),
                op(Request::RequestRange(first_created(&prefix))),
            ],
        },
    )
    .await?;
    let my_rev = if resp.succeeded {
        resp.header.map_or(0, |h| h.revision)
    } else {
        range_kvs(&resp, 0)
            .first()
            .map_or(0, |kv| kv.create_revision)
    };
    let owner = range_kvs(&resp, 1).first();
    if owner.is_none_or(|kv| kv.create_revision == my_rev) {
        return Ok((header(member, resp.header), key));
    }
    let mut give_up = CleanUp::new(member, delete_key(&key));
    if let Err(e) = wait_deletes(member, &prefix, my_rev - 1).await {
        give_up.run().await;
        return Err(e);
    }
    give_up.disarm();
    let mine = range(member, get(&key)).await?;
    if mine.kvs.is_empty() {
        return Err(Error::SessionExpired);
    }
    Ok((header(member, mine.header), key))
}

/// Unlock: deletes the lock's key (whoever holds it; no error if it is
/// gone, as etcd).
pub async fn unlock(member: &LocalClient, key: &[u8]) -> Result<ResponseHeader, Error> {
    let resp = member
        .delete_range(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(header(member, resp.header))
}

/// Campaign: becomes a candidate in election `name` with `lease` (0: a
/// fresh 60 s lease) and `value`, and waits to lead. The header is the one
/// of the write that made the candidacy, as etcd's.
pub async fn campaign(
    member: &Arc<LocalClient>,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<(ResponseHeader, LeaderKey), Error> {
    let (lease, prefix, key) = candidacy(member, name, lease).await?;
    let resp = txn(
        member,
        TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put(&key, value, lease)],
            failure: vec![op(Request::RequestRange(get(&key)))],
        },
    )
    .await?;
    let first_header = resp.header;
    let mut leader = LeaderKey {
        name: name.to_vec(),
        key: key.clone(),
        rev: first_header.map_or(0, |h| h.revision),
        lease,
    };
    if !resp.succeeded {
        let existing = range_kvs(&resp, 0).first().cloned().unwrap_or_default();
        leader.rev = existing.create_revision;
        if existing.value != value {
            if let Err(e) = proclaim(member, Some(leader.clone()), value).await {
                let _ = resign(member, Some(leader)).await;
                return Err(e);
            }
        }
    }
    let mut give_up = CleanUp::new(member, resign_txn(&leader));
    let waited = wait_deletes(member, &prefix, leader.rev - 1).await;
    give_up.disarm();
    waited?;
    Ok((header(member, first_header), leader))
}

fn resign_txn(leader: &LeaderKey) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        ..delete_key(&leader.key)
    }
}

/// Proclaim: the leader posts a new value; "election: not leader" if
/// `leader` no longer holds the election.
pub async fn proclaim(
    member: &LocalClient,
    leader: Option<LeaderKey>,
    value: &[u8],
) -> Result<ResponseHeader, Error> {
    let leader = leader.ok_or(Error::MissingLeaderKey)?;
    let resp = txn(
        member,
        TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![put(&leader.key, value, leader.lease)],
            failure: vec![],
        },
    )
    .await?;
    if !resp.succeeded {
        return Err(Error::NotLeader);
    }
    Ok(header(member, resp.header))
}

/// Resign: gives up the leadership (no error if `leader` no longer holds
/// it, as etcd).
pub async fn resign(
    member: &LocalClient,
    leader: Option<LeaderKey>,
) -> Result<ResponseHeader, Error> {
    let leader = leader.ok_or(Error::MissingLeaderKey)?;
    let resp = txn(member, resign_txn(&leader)).await?;
    Ok(header(member, resp.header))
}

/// Leader: the current leader's key-value, or "election: no leader".
pub async fn leader(
    member: &LocalClient,
    name: &[u8],
) -> Result<(ResponseHeader, KeyValue), Error> {
    let resp = range(member, first_created(&prefix_of(name))).await?;
    let kv = resp.kvs.into_iter().next().ok_or(Error::NoLeader)?;
    Ok((header(member, resp.header), kv))
}

/// Observe: sends the leader's key-value, each value it proclaims, and each
/// next leader's, in order, to `out` until `out` closes or an error (which
/// is sent last).
pub async fn observe(
    member: &LocalClient,
    name: &[u8],
    out: mpsc::Sender<Result<(ResponseHeader, KeyValue), Error>>,
) {
    let result = tokio::select! {
        r = observe_into(member, name, &out) => r,
        () = out.closed() => Ok(()),
    };
    if let Err(e) = result {
        let _ = out.send(Err(e)).await;
    }
}

async fn observe_into(
    member: &LocalClient,
    name: &[u8],
    out: &mpsc::Sender<Result<(ResponseHeader, KeyValue), Error>>,
) -> Result<(), Error> {
    let prefix = prefix_of(name);
    loop {
        let resp = range(member, first_created(&prefix)).await?;
        let mut revision = resp.header.map_or(0, |h| h.revision);
        let leader = match resp.kvs.into_iter().next() {
            Some(kv) => kv,
            None => {
                // No leader: the first candidate to appear.
                let mut watch = LocalWatch::new(
                    member,
                    KeyRange::new(&prefix, &prefix_end(&prefix)),
                    revision,
                );
                loop {
                    let (_, events) = watch.next().await?;
                    if let Some(kv) = events
                        .into_iter()
                        .find(|e| !is_delete(e))
                        .and_then(|e| e.kv)
                    {
                        revision = kv.mod_revision;
                        break kv;
                    }
                }
            }
        };
        let key = leader.key.clone();
        if out
            .send(Ok((member.header(revision), leader)))
            .await
            .is_err()
        {
            return Ok(());
        }
        // Its proclamations, until it goes.
        let mut watch = LocalWatch::new(member, KeyRange::new(&key, b""), revision + 1);
        'leader: loop {
            let (at, events) = watch.next().await?;
            for event in events {
                if is_delete(&event) {
                    break 'leader;
                }
                if let Some(kv) = event.kv {
                    if out.send(Ok((member.header(at), kv))).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ranges_as_etcd_makes_them() {
        assert_eq!(
            key_of(b"lock/", 0x694d_7d5b_27b4_c01a),
            b"lock/694d7d5b27b4c01a"
        );
        assert_eq!(key_of(b"e/", 10), b"e/a");
        assert_eq!(key_of(b"e/", -1), b"e/-1");
        assert_eq!(prefix_of(b"x"), b"x/");
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
