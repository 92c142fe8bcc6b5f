//! `register`: reads, writes and compare-and-sets on a few keys, checked for
//! linearizability ([`crate::checker::register`]).
//!
//! Values are unique per key (one counter for the whole workload), which lets
//! the checker treat a compare-and-set on a mod revision as one on the value
//! that revision holds. Each of the `SLOTS` keys is replaced by a fresh one
//! (`r/{slot}/{generation}`) every `OPS_PER_KEY` ops, as Jepsen's
//! independent keys do, so that no single key's history grows too long for
//! the search.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use cairn_client::{Client, Compare, CompareOp, Get, Op as TxnOp, Put, Txn};

use super::{header_revision, parse_value, Effect, Env, Process};
use crate::history::{Call, Ret};
use crate::rng::Rng;

/// Keys in use at any time.
const SLOTS: u64 = 5;
/// Ops on one key before its slot moves on to a new key.
const OPS_PER_KEY: u64 = 150;

/// Shared by the workload's clients.
struct Shared {
    /// The next value to write (unique across the workload).
    next_value: AtomicU64,
    /// Ops done per slot (the key generation is this / OPS_PER_KEY).
    slot_ops: Vec<AtomicU64>,
}

pub async fn run(env: Env, mut rng: Rng, base: u32) -> Result<()> {
    let shared = Arc::new(Shared {
        next_value: AtomicU64::new(1),
        slot_ops: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
    });
    env.run_clients(&mut rng, |env, rng, n| {
        client(env, rng, base, n, Arc::clone(&shared))
    })
    .await
}

async fn client(
    mut env: Env,
    mut rng: Rng,
    base: u32,
    n: usize,
    shared: Arc<Shared>,
) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut p = Process::new(base + n as u32, env.clients as u32, "register", &env);
    // What this client last saw of each key: (value, mod revision).
    let mut seen: HashMap<String, (u64, i64)> = HashMap::new();
    while !env.stopped() {
        let slot = rng.below(SLOTS);
        let generation =
            shared.slot_ops[slot as usize].fetch_add(1, Ordering::Relaxed) / OPS_PER_KEY;
        let key = format!("r/{slot}/{generation}");
        match rng.below(4) {
            0 | 1 => {
                if let Some(Ret::Read {
                    value: Some(v),
                    mod_revision,
                    ..
                }) = read(&mut p, &client, &key).await
                {
                    seen.insert(key, (v, mod_revision));
                }
            }
            2 => {
                let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
                write(&mut p, &client, &key, value).await;
            }
            _ => {
                let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
                match seen.get(&key).copied() {
                    Some((expect, rev)) => {
                        let by_revision = rng.chance(0.5).then_some(rev);
                        cas(&mut p, &client, &key, expect, value, by_revision).await;
                    }
                    // Nothing seen yet: guess an old value (usually fails,
                    // which is a fine op to check too).
                    None => {
                        let guess = rng.below(value.max(1));
                        cas(&mut p, &client, &key, guess, value, None).await;
                    }
                }
            }
        }
        env.pause().await;
    }
    Ok(())
}

async fn read(p: &mut Process, client: &Client, key: &str) -> Option<Ret> {
    let call = Call::Read {
        key: key.to_string(),
    };
    p.invoke(call, Effect::Read, || async {
        let resp = client.get(Get::key(key)).await?;
        let kv = resp.kvs.first();
        Ok(Ret::Read {
            value: kv.and_then(|kv| parse_value(&kv.value)),
            mod_revision: kv.map_or(0, |kv| kv.mod_revision),
            revision: header_revision(&resp.header),
        })
    })
    .await
}

async fn write(p: &mut Process, client: &Client, key: &str, value: u64) -> Option<Ret> {
    let call = Call::Write {
        key: key.to_string(),
        value,
    };
    p.invoke(call, Effect::Write, || async {
        let resp = client.put(Put::new(key, value.to_string())).await?;
        Ok(Ret::Write {
            revision: header_revision(&resp.header),
        })
    })
    .await
}

async fn cas(
    p: &mut Process,
    client: &Client,
    key: &str,
    expect: u64,
    value: u64,
    by_revision: Option<i64>,
) -> Option<Ret> {
    let call = Call::Cas {
        key: key.to_string(),
        expect,
        value,
        by_revision,
    };
    let compare = match by_revision {
        Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        None => Compare::value(key, CompareOp::Equal, expect.to_string()),
    };
    p.invoke(call, Effect::Write, || async {
        let txn = Txn::new()
            .when(vec![compare])
            .and_then(vec![TxnOp::put(Put::new(key, value.to_string()))]);
        let resp = client.txn(txn).await?;
        Ok(Ret::Cas {
            succeeded: resp.succeeded,
            revision: header_revision(&resp.header),
        })
    })
    .await
}
