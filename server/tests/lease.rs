//! Leases end to end: cairn-client against an in-process member.
//!
//! Expiry needs real time to pass here (the server and the client talk over
//! TCP), so the member runs with a 100 ms election timeout (minimum TTL 1 s)
//! and the tests poll with deadlines instead of sleeping fixed amounts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use cairn_client::proto::etcdserverpb::lease_client::LeaseClient;
use cairn_client::proto::etcdserverpb::LeaseKeepAliveRequest;
use cairn_client::{Client, Get, Put};
use cairn_server::embed::{self, Handle};

/// How long a poll waits before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

async fn start(dir: &Path) -> Handle {
    let mut config = common::config(dir);
    config.election_timeout = Duration::from_millis(100);
    embed::start(config).await.expect("member starts")
}

/// Polls `check` every 20 ms until it is true; fails after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn keys(c: &Client, prefix: &str) -> Vec<String> {
    c.get(Get::key(prefix).prefix())
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}

async fn revision(c: &Client) -> i64 {
    c.get(Get::key("x")).await.unwrap().header.unwrap().revision
}

fn code(e: &cairn_client::Error) -> (tonic::Code, String) {
    let s = e.status().expect("a gRPC status");
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn grant_attach_time_to_live_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;

    let g = c.lease_grant(60, 0).await.unwrap();
    assert!(g.id > 0);
    assert_eq!((g.ttl, g.error.as_str()), (60, ""));
    let header = g.header.unwrap();
    assert_eq!(header.revision, 1);
    assert_ne!(header.member_id, 0);

    c.put(Put::new("app/b", "1").lease(g.id)).await.unwrap();
    c.put(Put::new("app/a", "2").lease(g.id)).await.unwrap();
    c.put(Put::new("app/c", "3")).await.unwrap();
    let got = c.get(Get::key("app/a")).await.unwrap();
    assert_eq!(got.kvs[0].lease, g.id);

    let ttl = c.lease_time_to_live(g.id, true).await.unwrap();
    assert_eq!(ttl.id, g.id);
    assert_eq!(ttl.granted_ttl, 60);
    assert!((58..=60).contains(&ttl.ttl), "{}", ttl.ttl);
    assert_eq!(ttl.keys, [b"app/a".to_vec(), b"app/b".to_vec()]);
    let no_keys = c.lease_time_to_live(g.id, false).await.unwrap();
    assert!(no_keys.keys.is_empty());

    let other = c.lease_grant(1, 4242).await.unwrap();
    assert_eq!((other.id, other.ttl), (4242, 1), "minimum TTL is 1 s here");
    let listed: Vec<i64> = c
        .lease_leases()
        .await
        .unwrap()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed, [4242, g.id], "soonest expiry first");

    // Errors, with etcd's codes and messages.
    let dup = c.lease_grant(10, 4242).await.unwrap_err();
    assert_eq!(
        code(&dup),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".into()
        )
    );
    let big = c.lease_grant(9_000_000_001, 0).await.unwrap_err();
    assert_eq!(
        code(&big),
        (
            tonic::Code::OutOfRange,
            "etcdserver: too large lease TTL".into()
        )
    );
    let unknown = c.put(Put::new("k", "v").lease(777)).await.unwrap_err();
    assert_eq!(
        code(&unknown),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );

    // Revoke: both keys go in one revision; the other key stays.
    let before = revision(&c).await;
    let r = c.lease_revoke(g.id).await.unwrap();
    assert_eq!(r.header.unwrap().revision, before + 1);
    assert_eq!(keys(&c, "app/").await, ["app/c"]);
    let gone = c.lease_time_to_live(g.id, true).await.unwrap();
    assert_eq!((gone.id, gone.ttl, gone.granted_ttl), (g.id, -1, 0));
    assert_ne!(gone.header.unwrap().cluster_id, 0);
    let again = c.lease_revoke(g.id).await.unwrap_err();
    assert_eq!(
        code(&again),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
    member.stop().await.unwrap();
}

#[tokio::test]
async fn keep_alive_keeps_keys_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let id = c.lease_grant(1, 0).await.unwrap().id;
    c.put(Put::new("ka/k", "v").lease(id)).await.unwrap();

    let once = c.keep_alive_once(id).await.unwrap();
    assert_eq!((once.id, once.ttl), (id, 1));

    // Renewed every TTL/3: 7 responses span 2 s, twice the TTL.
    let mut keep = c.lease_keep_alive(id).await.unwrap();
    assert_eq!(keep.id(), id);
    assert_eq!(keep.latest().map(|r| r.ttl), Some(1));
    eventually("seven renewals", || {
        let n = keep.renewals();
        async move { n >= 7 }
    })
    .await;
    assert!(keep.is_running());
    assert_eq!(keys(&c, "ka/").await, ["ka/k"]);
    let next = keep.next().await.unwrap();
    assert_eq!((next.id, next.ttl), (id, 1));
    keep.stop().await.unwrap();

    // Without renewals the lease expires and takes its key along.
    eventually("the key to expire", || {
        let c = c.clone();
        async move { keys(&c, "ka/").await.is_empty() }
    })
    .await;
    assert_eq!(c.lease_time_to_live(id, false).await.unwrap().ttl, -1);
    let err = c.keep_alive_once(id).await.unwrap_err();
    assert_eq!(
        code(&err),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
    assert!(c.lease_keep_alive(id).await.is_err());
    member.stop().await.unwrap();
}

#[tokio::test]
async fn keep_alive_stream_answers_each_request_and_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let id = c.lease_grant(30, 0).await.unwrap().id;

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = LeaseClient::new(c.channel())
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (ask, want_ttl) in [(id, 30), (999, 0), (id, 30)] {
        tx.send(LeaseKeepAliveRequest { id: ask }).await.unwrap();
        let resp = responses.message().await.unwrap().unwrap();
        assert_eq!((resp.id, resp.ttl), (ask, want_ttl));
        assert!(resp.header.unwrap().revision >= 1);
    }
    // Closing our side ends the stream with OK.
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());
    member.stop().await.unwrap();
}

#[tokio::test]
async fn stop_ends_keep_alive_streams_without_waiting_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let id = c.lease_grant(30, 0).await.unwrap().id;
    let keep = c.lease_keep_alive(id).await.unwrap();
    let started = tokio::time::Instant::now();
    member.stop().await.unwrap();
    assert!(
        started.elapsed() < embed::GRACE_PERIOD,
        "stop waited {:?} for the keep-alive stream",
        started.elapsed()
    );
    // The handle's task sees the stream end on its next renewal.
    let err = keep.stop().await;
    assert!(err.is_ok() || err.unwrap_err().status().is_some());
}

#[tokio::test]
async fn expiry_deletes_every_attached_key_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let id = c.lease_grant(1, 0).await.unwrap().id;
    for k in ["e/1", "e/2", "e/3"] {
        c.put(Put::new(k, "v").lease(id)).await.unwrap();
    }
    c.put(Put::new("e/keep", "v")).await.unwrap();
    let before = revision(&c).await;
    eventually("the keys to expire", || {
        let c = c.clone();
        async move { keys(&c, "e/").await == ["e/keep"] }
    })
    .await;
    assert_eq!(revision(&c).await, before + 1);
    let at_before = c.get(Get::key("e/").prefix().revision(before)).await;
    assert_eq!(at_before.unwrap().kvs.len(), 4);
    assert!(c.lease_leases().await.unwrap().leases.is_empty());
    member.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_leases_and_attached_keys() {
    let dir = tempfile::tempdir().unwrap();
    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let id = c.lease_grant(600, 0).await.unwrap().id;
    c.put(Put::new("r/a", "1").lease(id)).await.unwrap();
    c.put(Put::new("r/b", "2").lease(id)).await.unwrap();
    let short = c.lease_grant(300, 0).await.unwrap().id;
    member.stop().await.unwrap();

    let member = start(dir.path()).await;
    let c = common::client(&member).await;
    let ttl = c.lease_time_to_live(id, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 600);
    assert!((598..=600).contains(&ttl.ttl), "{}", ttl.ttl);
    assert_eq!(ttl.keys, [b"r/a".to_vec(), b"r/b".to_vec()]);
    let mut listed: Vec<i64> = c
        .lease_leases()
        .await
        .unwrap()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    listed.sort_unstable();
    let mut want = vec![id, short];
    want.sort_unstable();
    assert_eq!(listed, want);
    // A new grant after the restart does not reuse an id.
    let fresh = c.lease_grant(10, 0).await.unwrap().id;
    assert!(fresh != id && fresh != short);
    c.lease_revoke(id).await.unwrap();
    assert!(keys(&c, "r/").await.is_empty());
    member.stop().await.unwrap();
}
