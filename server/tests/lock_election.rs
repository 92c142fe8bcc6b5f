//! The Lock and Election services (`v3lockpb.Lock`, `v3electionpb.Election`)
//! through the gRPC clients that client libraries use, against etcd's
//! semantics: contention, a lease expiring releases a lock, a waiter whose
//! lease expired gets "mutex: session is expired", and an election observed
//! across a raft leader change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::cluster::Cluster;
use common::eventually;
use tonic::transport::Channel;
use tonic::Code;

async fn channel(url: String) -> Channel {
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn key_exists(ch: &Channel, key: &[u8]) -> bool {
    let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(ch.clone());
    let got = kv
        .range(cairn_proto::etcdserverpb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    got.count == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_exclusive_and_handed_over_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let ch = channel(member.client_urls()[0].clone()).await;
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    let mut locks = LockClient::new(ch.clone());
    let held = locks
        .lock(LockRequest {
            name: b"l".to_vec(),
            lease: a,
        })
        .await
        .unwrap()
        .into_inner();
    // etcd's key: name/lease-in-hex, the header of the write that made it.
    assert_eq!(held.key, format!("l/{a:x}").into_bytes());
    assert!(held.header.unwrap().revision > 1);
    // A second holder waits, with its key written...
    let mut other = LockClient::new(ch.clone());
    let waiter = tokio::spawn(async move {
        other
            .lock(LockRequest {
                name: b"l".to_vec(),
                lease: b,
            })
            .await
    });
    let b_key = format!("l/{b:x}").into_bytes();
    eventually(10, "the waiter's key", async || {
        key_exists(&ch, &b_key).await
    })
    .await;
    // ...and cannot have the lock while the first holds it.
    assert!(!waiter.is_finished());
    locks
        .unlock(UnlockRequest {
            key: held.key.clone(),
        })
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("handed over")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(second.key, b_key);
    // Locking again with the same lease is the same lock.
    let again = locks
        .lock(LockRequest {
            name: b"l".to_vec(),
            lease: b,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.key, b_key);
    // Unlock of a key that is gone is no error.
    locks.unlock(UnlockRequest { key: held.key }).await.unwrap();
    // A lease that does not exist: etcd's message, code Unknown.
    let err = locks
        .lock(LockRequest {
            name: b"l2".to_vec(),
            lease: 0x1234,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    // Lease 0: a fresh 60 s lease is granted for the lock.
    let fresh = locks
        .lock(LockRequest {
            name: b"l3".to_vec(),
            lease: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fresh.key.starts_with(b"l3/"));
    member.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_releases_its_lock_and_fails_its_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let ch = channel(member.client_urls()[0].clone()).await;
    // The holder's lease expires (no keep-alive): the waiter gets the lock.
    let short = grant(&ch, 2).await;
    let long = grant(&ch, 60).await;
    let mut locks = LockClient::new(ch.clone());
    locks
        .lock(LockRequest {
            name: b"x".to_vec(),
            lease: short,
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        locks.lock(LockRequest {
            name: b"x".to_vec(),
            lease: long,
        }),
    )
    .await
    .expect("the expired holder lets go")
    .unwrap()
    .into_inner();
    assert_eq!(got.key, format!("x/{long:x}").into_bytes());
    // A waiter whose own lease expires while it waits: once the holder
    // lets go, etcd's "mutex: session is expired".
    let short = grant(&ch, 2).await;
    let mut waiting = LockClient::new(ch.clone());
    let waiter = tokio::spawn(async move {
        waiting
            .lock(LockRequest {
                name: b"x".to_vec(),
                lease: short,
            })
            .await
    });
    let short_key = format!("x/{short:x}").into_bytes();
    eventually(10, "the waiter's key", async || {
        key_exists(&ch, &short_key).await
    })
    .await;
    eventually(30, "the waiter's lease expiring", async || {
        !key_exists(&ch, &short_key).await
    })
    .await;
    LeaseClient::new(ch.clone())
        .lease_revoke(LeaseRevokeRequest { id: long })
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter ends")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(err.message(), "mutex: session is expired");
    member.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_is_observed_across_a_leader_change() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let raft_leader = cluster.leader().await;
    let (x, y) = ((raft_leader + 1) % 3, (raft_leader + 2) % 3);
    let (ch_x, ch_y) = (channel(cluster.url(x)).await, channel(cluster.url(y)).await);
    let (a, b) = (grant(&ch_x, 60).await, grant(&ch_x, 60).await);
    let mut on_x = ElectionClient::new(ch_x.clone());
    let mut on_y = ElectionClient::new(ch_y.clone());

    let err = on_y
        .leader(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "election: no leader")
    );
    // Observe on y before anyone campaigns: the first candidate arrives.
    let mut observed = on_y
        .observe(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let won = on_x
        .campaign(CampaignRequest {
            name: b"e".to_vec(),
            lease: a,
            value: b"a".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let leader_a = won.leader.unwrap();
    assert_eq!(leader_a.key, format!("e/{a:x}").into_bytes());
    assert_eq!(leader_a.rev, won.header.unwrap().revision);
    let value = async |s: &mut tonic::Streaming<cairn_proto::v3electionpb::LeaderResponse>| {
        let r = tokio::time::timeout(Duration::from_secs(20), s.message())
            .await
            .expect("an observation")
            .unwrap()
            .unwrap();
        r.kv.unwrap().value
    };
    assert_eq!(value(&mut observed).await, b"a");
    on_x.proclaim(ProclaimRequest {
        leader: Some(leader_a.clone()),
        value: b"a2".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(value(&mut observed).await, b"a2");
    let got = on_y
        .leader(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value, b"a2");

    // A second candidate waits on y.
    let mut candidate = on_y.clone();
    let second = tokio::spawn(async move {
        candidate
            .campaign(CampaignRequest {
                name: b"e".to_vec(),
                lease: b,
                value: b"b".to_vec(),
            })
            .await
    });
    let b_key = format!("e/{b:x}").into_bytes();
    eventually(10, "the second candidacy", async || {
        key_exists(&ch_y, &b_key).await
    })
    .await;
    assert!(!second.is_finished());

    // The raft leader goes; the election goes on on the survivors.
    cluster.kill(raft_leader).await;
    eventually(30, "a new raft leader", async || {
        on_x.resign(ResignRequest {
            leader: Some(leader_a.clone()),
        })
        .await
        .is_ok()
    })
    .await;
    let won_b = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second candidate wins")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(won_b.leader.unwrap().key, b_key);
    assert_eq!(value(&mut observed).await, b"b");
    // The old leadership can no longer proclaim.
    let err = on_x
        .proclaim(ProclaimRequest {
            leader: Some(leader_a.clone()),
            value: b"stale".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "election: not leader")
    );
    let err = on_x
        .proclaim(ProclaimRequest {
            leader: None,
            value: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "\"leader\" field must be provided");
    // Resigning a leadership that is gone is no error.
    on_x.resign(ResignRequest {
        leader: Some(LeaderKey { rev: 1, ..leader_a }),
    })
    .await
    .unwrap();
    cluster.stop_all().await;
}

/// A call that waits (a Lock someone else holds) ends at its `grpc-timeout`
/// (clientv3 sends one with every deadline, etcdctl's 5 s by default), with
/// tonic's answer, and the member serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_its_grpc_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let ch = channel(member.client_urls()[0].clone()).await;
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    let mut locks = LockClient::new(ch.clone());
    let lock = |lease| LockRequest {
        name: b"t".to_vec(),
        lease,
    };
    locks.lock(lock(a)).await.unwrap();
    let mut waiting = tonic::Request::new(lock(b));
    waiting.set_timeout(Duration::from_millis(200));
    let err = locks.lock(waiting).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Cancelled, "Timeout expired")
    );
    assert!(key_exists(&ch, format!("t/{a:x}").as_bytes()).await);
    member.stop().await.unwrap();
}
