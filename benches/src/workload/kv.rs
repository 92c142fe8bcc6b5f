//! put, range, txn-put, txn-mixed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, request_op::Request, CompactionRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};

use super::{closed_loop, index, outcome, Env};
use crate::cli::{Consistency, PutArgs, RangeArgs, TxnMixedArgs, TxnPutArgs};
use crate::conn::{error_text, Chan, Conn};
use crate::keys::{check_key_size, fresh_key, KeyGen};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::Report;
use crate::rng::Rng;
use crate::Error;

/// `put`: `--total` puts of a `--key-size` key (index random in the key
/// space, or i % key-space-size with `--sequential-keys`) and one random
/// `--val-size` value.
pub(crate) async fn put(env: &Env, a: &PutArgs) -> Result<Vec<Report>, Error> {
    check_key_size(a.key_size, a.key_space_size)?;
    let mut rng = Rng::seeded();
    let value = rng.bytes(a.val_size);
    let mut keys = KeyGen::new(a.key_size);
    let (space, sequential) = (a.key_space_size, a.sequential_keys);
    let make = move |i: usize| {
        let key_index = if sequential {
            i % space
        } else {
            usize::try_from(rng.below(space as u64)).unwrap_or(0)
        };
        let request = PutRequest {
            key: keys.key(index(key_index))?,
            value: value.clone(),
            ..PutRequest::default()
        };
        Ok((0, request))
    };
    let call = |_client: usize, channel: Chan, request: PutRequest| async move {
        outcome(KvClient::new(channel).put(request).await)
    };

    let compactor = (!a.compact_interval.is_zero()).then(|| {
        tokio::spawn(compact_every(
            env.client_conn(0),
            a.compact_interval,
            a.compact_index_delta,
        ))
    });
    let progress = Progress::start(a.total as u64);
    let result = closed_loop(
        env,
        a.total,
        1,
        Limiter::new(a.rate, 1),
        &progress,
        make,
        call,
    )
    .await;
    if let Some(compactor) = compactor {
        compactor.abort();
    }
    let (took, by_kind) = result?;
    let recorders = by_kind.into_iter().next().unwrap_or_default();
    Ok(vec![env.report("put", took, recorders, "", "\n")])
}

/// etcd's `--compact-interval`: every interval, read the revision (a get of
/// "foo") and compact at revision - delta.
async fn compact_every(conn: Arc<Conn>, interval: Duration, delta: i64) {
    loop {
        tokio::time::sleep(interval).await;
        let get = RangeRequest {
            key: b"foo".to_vec(),
            ..RangeRequest::default()
        };
        let revision = match KvClient::new(conn.pick()).range(get).await {
            Ok(r) => r.into_inner().header.map_or(0, |h| h.revision),
            Err(s) => {
                eprintln!("compaction: reading the revision: {}", error_text(&s));
                continue;
            }
        };
        let target = revision.saturating_sub(delta);
        if target <= 0 {
            continue;
        }
        let compact = CompactionRequest {
            revision: target,
            physical: false,
        };
        if let Err(s) = KvClient::new(conn.pick()).compact(compact).await {
            eprintln!("compaction at {target}: {}", error_text(&s));
        }
    }
}

/// `range KEY [END]`: `--total` gets of the key or range, linearizable or
/// serializable; with `--key-space-size N`, each a get of one random key of
/// the N sequential ones put writes.
pub(crate) async fn range(env: &Env, a: &RangeArgs) -> Result<Vec<Report>, Error> {
    let request = RangeRequest {
        key: a.key.as_deref().unwrap_or("").as_bytes().to_vec(),
        range_end: a.end.as_deref().unwrap_or("").as_bytes().to_vec(),
        serializable: a.consistency == Consistency::S,
        ..RangeRequest::default()
    };
    let key_size = a.key_size;
    let mut spread = match a.key_space_size {
        Some(space) => {
            check_key_size(a.key_size, space)?;
            Some((space, Rng::seeded()))
        }
        None => None,
    };
    let make = move |_| {
        let mut request = request.clone();
        if let Some((space, rng)) = &mut spread {
            // A fresh buffer: the keys of one pass of put --sequential-keys
            // (etcd's put reuses its buffer, so a second pass differs).
            let i = usize::try_from(rng.below(*space as u64)).unwrap_or(0);
            request.key = fresh_key(key_size, index(i))?;
            request.range_end.clear();
        }
        Ok((0, request))
    };
    let call = |_client: usize, channel: Chan, request: RangeRequest| async move {
        outcome(KvClient::new(channel).range(request).await)
    };
    let progress = Progress::start(a.total as u64);
    let (took, by_kind) = closed_loop(
        env,
        a.total,
        1,
        Limiter::new(a.rate, 1),
        &progress,
        make,
        call,
    )
    .await?;
    let recorders = by_kind.into_iter().next().unwrap_or_default();
    Ok(vec![env.report("range", took, recorders, "", "")])
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key,
            value,
            ..PutRequest::default()
        })),
    }
}

async fn txn(channel: Chan, request: TxnRequest) -> Result<(), String> {
    outcome(KvClient::new(channel).txn(request).await)
}

/// `txn-put`: `--total` txns without compares, each `--txn-ops` puts of the
/// keys (i*txn-ops + j) % key-space-size.
pub(crate) async fn txn_put(env: &Env, a: &TxnPutArgs) -> Result<Vec<Report>, Error> {
    check_key_size(a.key_size, a.key_space_size)?;
    if a.txn_ops == 0 {
        return Err(Error::new("expected positive --txn-ops, got (0)"));
    }
    let value = Rng::seeded().bytes(a.val_size);
    let mut keys = KeyGen::new(a.key_size);
    let (space, ops) = (a.key_space_size, a.txn_ops);
    let make = move |i: usize| {
        let mut success = Vec::with_capacity(ops);
        for j in 0..ops {
            let key_index = (i.wrapping_mul(ops).wrapping_add(j)) % space;
            success.push(put_op(keys.key(index(key_index))?, value.clone()));
        }
        let request = TxnRequest {
            success,
            ..TxnRequest::default()
        };
        Ok((0, request))
    };
    let call = |_client: usize, channel: Chan, request: TxnRequest| txn(channel, request);
    let progress = Progress::start(a.total as u64);
    let (took, by_kind) = closed_loop(
        env,
        a.total,
        1,
        Limiter::new(a.rate, 1),
        &progress,
        make,
        call,
    )
    .await?;
    let recorders = by_kind.into_iter().next().unwrap_or_default();
    Ok(vec![env.report("txn-put", took, recorders, "", "\n")])
}

/// `txn-mixed`: `--total` one-op txns, each a read with probability
/// rw-ratio/(1+rw-ratio), else a put of key i % key-space-size. A read is,
/// as etcd builds it, a range from `\0` to the end of the keyspace (its
/// prefix option on an empty key replaces `--end-key`) with `--limit`.
/// Reads and writes get separate reports.
pub(crate) async fn txn_mixed(env: &Env, a: &TxnMixedArgs) -> Result<Vec<Report>, Error> {
    check_key_size(a.key_size, a.key_space_size)?;
    let mut rng = Rng::seeded();
    let value = rng.bytes(a.val_size);
    let mut keys = KeyGen::new(a.key_size);
    let read = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        limit: a.limit,
        serializable: a.consistency == Consistency::S,
        ..RangeRequest::default()
    };
    let read_share = a.rw_ratio / (1.0 + a.rw_ratio);
    let space = a.key_space_size;
    let reads = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let (read_count, write_count) = (Arc::clone(&reads), Arc::clone(&writes));
    let make = move |i: usize| {
        let (kind, op) = if rng.unit() < read_share {
            read_count.fetch_add(1, Ordering::Relaxed);
            let op = RequestOp {
                request: Some(Request::RequestRange(read.clone())),
            };
            (READ, op)
        } else {
            write_count.fetch_add(1, Ordering::Relaxed);
            (WRITE, put_op(keys.key(index(i % space))?, value.clone()))
        };
        let request = TxnRequest {
            success: vec![op],
            ..TxnRequest::default()
        };
        Ok((kind, request))
    };
    let call = |_client: usize, channel: Chan, request: TxnRequest| txn(channel, request);
    let progress = Progress::start(a.total as u64);
    let (took, by_kind) = closed_loop(
        env,
        a.total,
        2,
        Limiter::new(a.rate, 1),
        &progress,
        make,
        call,
    )
    .await?;
    let mut by_kind = by_kind.into_iter();
    let read_recorders = by_kind.next().unwrap_or_default();
    let write_recorders = by_kind.next().unwrap_or_default();
    let reads = reads.load(Ordering::Relaxed);
    let writes = writes.load(Ordering::Relaxed);
    Ok(vec![
        env.report(
            "txn-mixed-read",
            took,
            read_recorders,
            format!("Total Read Ops: {reads}\nDetails:"),
            "\n",
        ),
        env.report(
            "txn-mixed-write",
            took,
            write_recorders,
            format!("Total Write Ops: {writes}\nDetails:"),
            "\n",
        ),
    ])
}

/// Report kinds of txn-mixed.
const READ: usize = 0;
const WRITE: usize = 1;
