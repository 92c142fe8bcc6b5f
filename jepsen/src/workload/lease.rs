//! `lease`: each client grants a lease, attaches two keys to it, keeps it
//! alive for a few rounds while reading the keys, then either revokes it or
//! stops renewing it and lets it expire, reading the keys again afterwards.
//! The checker ([`crate::checker::lease`]) wants the keys present while the
//! lease is surely alive, gone after a revoke or an expiry, and both keys of
//! a lease deleted in one revision.

use std::time::Duration;

use anyhow::Result;
use cairn_client::{Client, Error, Put};

use super::{header_revision, read_all, Effect, Env, Process};
use crate::history::{Call, Ret};
use crate::rng::Rng;

/// The keys' prefix: `l/{lease id in hex}/{0,1}`.
pub const PREFIX: &str = "l/";
/// TTL asked for (Cairn's minimum with a 1 s election timeout is 2 s).
const TTL: i64 = 3;
/// Keys per lease.
const KEYS: usize = 2;

pub async fn run(env: Env, mut rng: Rng, base: u32) -> Result<()> {
    env.run_clients(&mut rng, |env, rng, n| client(env, rng, base, n))
        .await
}

async fn client(mut env: Env, mut rng: Rng, base: u32, n: usize) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut p = Process::new(base + n as u32, env.clients as u32, "lease", &env);
    while !env.stopped() {
        let Some(Ret::LeaseGrant { lease, .. }) = p
            .invoke(Call::LeaseGrant { ttl: TTL }, Effect::Write, || async {
                let resp = client.lease_grant(TTL, 0).await?;
                Ok(Ret::LeaseGrant {
                    lease: resp.id,
                    ttl: resp.ttl,
                })
            })
            .await
        else {
            env.pause().await;
            continue;
        };
        let prefix = format!("{PREFIX}{lease:x}/");
        for k in 0..KEYS {
            let key = format!("{prefix}{k}");
            let call = Call::LeasePut {
                key: key.clone(),
                lease,
            };
            p.invoke(call, Effect::Write, || async {
                let resp = client.put(Put::new(key.as_str(), "1").lease(lease)).await?;
                Ok(Ret::LeasePut {
                    revision: header_revision(&resp.header),
                })
            })
            .await;
        }
        // Keep it alive for a few rounds, reading in between.
        for _ in 0..rng.between(1, 4) {
            if env.stopped() {
                break;
            }
            read(&mut p, &client, &prefix).await;
            keep_alive(&mut p, &client, lease).await;
            sleep_or_stop(&mut env, Duration::from_millis(700)).await;
        }
        if rng.chance(0.5) {
            let call = Call::LeaseRevoke { lease };
            p.invoke(call, Effect::Write, || async {
                let resp = client.lease_revoke(lease).await?;
                Ok(Ret::LeaseRevoke {
                    revision: header_revision(&resp.header),
                })
            })
            .await;
            read(&mut p, &client, &prefix).await;
        } else {
            // Let it expire: no renewal for two TTLs, then look.
            sleep_or_stop(&mut env, Duration::from_secs(2 * TTL as u64)).await;
            keep_alive(&mut p, &client, lease).await;
            read(&mut p, &client, &prefix).await;
        }
        env.pause().await;
    }
    Ok(())
}

async fn sleep_or_stop(env: &mut Env, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = env.stop.wait_for(|s| *s) => {}
    }
}

/// One keep-alive round; "lease not found" is an answer (TTL 0), not an error.
async fn keep_alive(p: &mut Process, client: &Client, lease: i64) -> Option<Ret> {
    p.invoke(Call::LeaseKeepAlive { lease }, Effect::Write, || async {
        match client.keep_alive_once(lease).await {
            Ok(resp) => Ok(Ret::LeaseKeepAlive { ttl: resp.ttl }),
            Err(Error::Status(s)) if s.code() == tonic::Code::NotFound => {
                Ok(Ret::LeaseKeepAlive { ttl: 0 })
            }
            Err(e) => Err(e),
        }
    })
    .await
}

async fn read(p: &mut Process, client: &Client, prefix: &str) -> Option<Ret> {
    let call = Call::ReadAll {
        prefix: prefix.to_string(),
    };
    p.invoke(call, Effect::Read, || read_all(client, prefix))
        .await
}
