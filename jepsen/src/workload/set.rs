//! `set`: every client inserts unique keys `s/{n}` with a create-only Txn
//! (`create_revision == 0`); after the faults are healed, one final
//! linearizable read of the prefix. The checker ([`crate::checker::set`])
//! wants every acknowledged insert in it, exactly once (version 1), and
//! nothing that was never tried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use cairn_client::{Client, Compare, CompareOp, Op as TxnOp, Put, Txn};

use super::{header_revision, read_all, Effect, Env, Process};
use crate::history::{Call, Ret};
use crate::rng::Rng;

/// The keys' prefix.
pub const PREFIX: &str = "s/";

pub async fn run(env: Env, mut rng: Rng, base: u32) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    env.run_clients(&mut rng, |env, _rng, n| {
        client(env, base, n, Arc::clone(&next))
    })
    .await?;
    final_read(&env, base + env.clients as u32 * 1000, PREFIX, "set").await
}

async fn client(mut env: Env, base: u32, n: usize, next: Arc<AtomicU64>) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut p = Process::new(base + n as u32, env.clients as u32, "set", &env);
    while !env.stopped() {
        let key = format!("{PREFIX}{:08}", next.fetch_add(1, Ordering::Relaxed));
        add(&mut p, &client, &key).await;
        env.pause().await;
    }
    Ok(())
}

async fn add(p: &mut Process, client: &Client, key: &str) -> Option<Ret> {
    let call = Call::Add {
        key: key.to_string(),
    };
    p.invoke(call, Effect::Write, || async {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(Put::new(key, "1"))]);
        let resp = client.txn(txn).await?;
        Ok(Ret::Add {
            created: resp.succeeded,
            revision: header_revision(&resp.header),
        })
    })
    .await
}

/// After the heal: read every key under `prefix` (linearizably), retrying
/// until one read succeeds or 60 s have passed; every attempt is recorded.
pub async fn final_read(
    env: &Env,
    process: u32,
    prefix: &str,
    workload: &'static str,
) -> Result<()> {
    let mut healed = env.healed.clone();
    let _ = healed.wait_for(|h| *h).await;
    let (_zone, client) = env.client(0).await?;
    let mut p = Process::new(process, 1, workload, env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let call = Call::ReadAll {
            prefix: prefix.to_string(),
        };
        let got = p
            .invoke(call, Effect::Read, || read_all(&client, prefix))
            .await;
        if got.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
