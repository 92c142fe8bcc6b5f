//! lease-keepalive.

use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{closed_loop, join_error, Env};
use crate::cli::LeaseKeepaliveArgs;
use crate::conn::{error_text, Chan};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::Report;
use crate::Error;

/// The TTL of each client's lease (etcd's).
const LEASE_TTL: i64 = 100;

/// `lease-keepalive`: each client grants one lease (TTL 100 s, not
/// measured), then the clients share `--total` single renewals of their
/// lease, each as clientv3's `KeepAliveOnce` does it: a new keep-alive
/// stream, one request, one response, stream closed.
pub(crate) async fn lease_keepalive(
    env: &Env,
    a: &LeaseKeepaliveArgs,
) -> Result<Vec<Report>, Error> {
    let mut grants = tokio::task::JoinSet::new();
    for client in 0..env.clients() {
        let conn = env.client_conn(client);
        grants.spawn(async move {
            let grant = LeaseGrantRequest {
                ttl: LEASE_TTL,
                id: 0,
            };
            let response = LeaseClient::new(conn.pick())
                .lease_grant(grant)
                .await
                .map_err(|s| Error::new(format!("lease grant: {}", error_text(&s))))?
                .into_inner();
            if !response.error.is_empty() {
                return Err(Error::new(format!("lease grant: {}", response.error)));
            }
            Ok::<_, Error>((client, response.id))
        });
    }
    let mut leases = vec![0i64; env.clients()];
    while let Some(granted) = grants.join_next().await {
        let (client, id) = granted.map_err(join_error)??;
        leases[client] = id;
    }
    let leases = Arc::new(leases);

    let make = |_| Ok((0, ()));
    let call = move |client: usize, channel: Chan, (): ()| {
        let id = leases.get(client).copied().unwrap_or(0);
        keep_alive_once(channel, id)
    };
    let progress = Progress::start(a.total as u64);
    let (took, by_kind) =
        closed_loop(env, a.total, 1, Limiter::unlimited(), &progress, make, call).await?;
    let recorders = by_kind.into_iter().next().unwrap_or_default();
    Ok(vec![env.report("lease-keepalive", took, recorders, "", "")])
}

/// One renewal on a stream of its own.
async fn keep_alive_once(channel: Chan, id: i64) -> Result<(), String> {
    let (requests, queue) = mpsc::channel(1);
    requests
        .send(LeaseKeepAliveRequest { id })
        .await
        .map_err(|_| "keepalive request queue closed".to_string())?;
    let mut responses = LeaseClient::new(channel)
        .lease_keep_alive(ReceiverStream::new(queue))
        .await
        .map_err(|s| error_text(&s))?
        .into_inner();
    let response = responses.message().await.map_err(|s| error_text(&s))?;
    drop(requests);
    match response {
        Some(r) if r.ttl > 0 => Ok(()),
        Some(_) => Err("etcdserver: requested lease not found".into()),
        None => Err("keepalive stream ended without a response".into()),
    }
}
