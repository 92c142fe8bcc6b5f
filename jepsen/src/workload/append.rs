//! `append`: transactions of reads and appends over a few list-valued keys,
//! checked for strict serializability ([`crate::checker::append`], after
//! Elle's list-append).
//!
//! A key (`a/{k}`) holds a list of unique u64s as decimal numbers separated
//! by commas (`3,17,42`; an absent key is the empty list). One logical
//! transaction of 1–4 micro-ops is done as:
//!
//! 1. one etcd Txn without compares whose success branch gets every involved
//!    key: a snapshot at one revision (each key's list and mod revision);
//! 2. if it appends: one etcd Txn that, if every involved key's mod revision
//!    is still the one seen, puts the new lists. If a compare fails nothing
//!    was done and the transaction is recorded as failed.
//!
//! Both steps are one recorded op, so its interval covers both. Reads report
//! the snapshot's list, or for a key appended earlier in the same
//! transaction the list as that transaction has made it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use cairn_client::proto::etcdserverpb::response_op::Response;
use cairn_client::{Client, Compare, CompareOp, Error, Get, Op as TxnOp, Put, Txn};

use super::{header_revision, Effect, Env, Process};
use crate::history::{Call, MicroOp, Ret};
use crate::rng::Rng;

/// The workload's name in the history.
pub const WORKLOAD: &str = "append";
/// Keys `a/0` .. `a/{KEYS-1}`.
const KEYS: u64 = 8;
/// Micro-ops per transaction: 1 ..= MAX_OPS.
const MAX_OPS: u64 = 4;

/// The key of number `k`.
pub fn key(k: u64) -> String {
    format!("a/{k}")
}

pub async fn run(env: Env, mut rng: Rng, base: u32) -> Result<()> {
    // Values appended, unique across the workload.
    let next_value = Arc::new(AtomicU64::new(1));
    env.run_clients(&mut rng, |env, rng, n| {
        client(env, rng, base, n, Arc::clone(&next_value))
    })
    .await
}

async fn client(
    mut env: Env,
    mut rng: Rng,
    base: u32,
    n: usize,
    next_value: Arc<AtomicU64>,
) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut p = Process::new(base + n as u32, env.clients as u32, WORKLOAD, &env);
    while !env.stopped() {
        let ops = random_txn(&mut rng, &next_value);
        transact(&mut p, &client, ops).await;
        env.pause().await;
    }
    Ok(())
}

/// 1–4 micro-ops on random keys, half reads, half appends of fresh values.
fn random_txn(rng: &mut Rng, next_value: &AtomicU64) -> Vec<MicroOp> {
    let n = rng.between(1, MAX_OPS);
    (0..n)
        .map(|_| {
            let key = key(rng.below(KEYS));
            if rng.chance(0.5) {
                MicroOp::Read { key, value: None }
            } else {
                MicroOp::Append {
                    key,
                    value: next_value.fetch_add(1, Ordering::Relaxed),
                }
            }
        })
        .collect()
}

/// A list as stored: `3,17,42`, empty for none.
pub fn encode(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A stored list; `None` if it is not one.
pub fn decode(bytes: &[u8]) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',').map(|v| v.parse().ok()).collect()
}

/// Does one logical transaction and records it.
async fn transact(p: &mut Process, client: &Client, ops: Vec<MicroOp>) -> Option<Ret> {
    let writes = ops.iter().any(|op| matches!(op, MicroOp::Append { .. }));
    let effect = if writes { Effect::Write } else { Effect::Read };
    let call = Call::Txn { ops: ops.clone() };
    p.invoke(call, effect, || async move {
        let keys: Vec<&str> = {
            let mut keys: Vec<&str> = ops.iter().map(micro_key).collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        // 1. The snapshot.
        let snapshot_txn = Txn::new().and_then(
            keys.iter()
                .map(|k| TxnOp::get(Get::key(k.as_bytes().to_vec())))
                .collect(),
        );
        let resp = client.txn(snapshot_txn).await?;
        let snapshot_revision = header_revision(&resp.header);
        // key -> (list, mod revision)
        let mut seen: BTreeMap<&str, (Vec<u64>, i64)> = BTreeMap::new();
        for (k, r) in keys.iter().zip(&resp.responses) {
            let (list, mod_revision) = match &r.response {
                Some(Response::ResponseRange(range)) => match range.kvs.first() {
                    Some(kv) => (
                        decode(&kv.value).ok_or_else(|| {
                            malformed(format!(
                                "{k} holds {:?}, not a list",
                                String::from_utf8_lossy(&kv.value)
                            ))
                        })?,
                        kv.mod_revision,
                    ),
                    None => (Vec::new(), 0),
                },
                _ => return Err(malformed(format!("no range response for {k}"))),
            };
            seen.insert(k, (list, mod_revision));
        }
        if seen.len() != keys.len() {
            return Err(malformed("fewer responses than keys".to_owned()));
        }
        // The micro-ops applied in order on a copy of the snapshot.
        let mut lists: BTreeMap<&str, Vec<u64>> =
            seen.iter().map(|(k, (l, _))| (*k, l.clone())).collect();
        let mut done = Vec::with_capacity(ops.len());
        for op in &ops {
            match op {
                MicroOp::Append { key, value } => {
                    lists.entry(key.as_str()).or_default().push(*value);
                    done.push(op.clone());
                }
                MicroOp::Read { key, .. } => done.push(MicroOp::Read {
                    key: key.clone(),
                    value: Some(lists.get(key.as_str()).cloned().unwrap_or_default()),
                }),
            }
        }
        if !writes {
            return Ok(Ret::Txn {
                ops: done,
                revision: snapshot_revision,
            });
        }
        // 2. The write, if nothing changed since the snapshot.
        let compares = seen
            .iter()
            .map(|(k, (_, rev))| {
                Compare::mod_revision(k.as_bytes().to_vec(), CompareOp::Equal, *rev)
            })
            .collect();
        let mut appended: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                MicroOp::Append { key, .. } => Some(key.as_str()),
                MicroOp::Read { .. } => None,
            })
            .collect();
        appended.sort_unstable();
        appended.dedup();
        let puts = appended
            .iter()
            .map(|k| {
                let list = lists.get(k).map(Vec::as_slice).unwrap_or_default();
                TxnOp::put(Put::new(k.as_bytes().to_vec(), encode(list)))
            })
            .collect();
        let resp = client.txn(Txn::new().when(compares).and_then(puts)).await?;
        if !resp.succeeded {
            return Err(Error::Status(tonic::Status::aborted(
                "txn conflict: a key changed since the snapshot",
            )));
        }
        Ok(Ret::Txn {
            ops: done,
            revision: header_revision(&resp.header),
        })
    })
    .await
}

fn micro_key(op: &MicroOp) -> &str {
    match op {
        MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => key,
    }
}

/// An answer we cannot use: a definite failure (nothing was written yet when
/// the snapshot is malformed).
fn malformed(what: String) -> Error {
    Error::Status(tonic::Status::internal(format!("append: {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lists_round_trip() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[3, 17, 42]), "3,17,42");
        assert_eq!(decode(b"3,17,42"), Some(vec![3, 17, 42]));
        assert_eq!(decode(b""), Some(vec![]));
        assert_eq!(decode(b"3,x"), None);
    }

    #[test]
    fn append_random_txns_have_fresh_values() {
        let mut rng = Rng::new(7);
        let next = AtomicU64::new(1);
        let mut values = Vec::new();
        for _ in 0..100 {
            let ops = random_txn(&mut rng, &next);
            assert!((1..=MAX_OPS as usize).contains(&ops.len()));
            for op in ops {
                if let MicroOp::Append { value, .. } = op {
                    values.push(value);
                }
            }
        }
        let n = values.len();
        values.dedup();
        assert_eq!(values.len(), n);
    }
}
