//! Lessor tests: the replicated operations through a real member on an
//! in-memory engine, and the leader-only clock on tokio's paused clock
//! (`start_paused`, `tokio::time::advance`): no sleeps, no wall clock.

use crate::auth::Caller;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use tokio::time::advance;

use super::*;
use crate::entry::Command;
use crate::error::EtcdError;
use crate::member::test_member::{member_on, Disk, TestMember, REQUEST_TIMEOUT};
use crate::member::Apis;
use crate::mvcc::Revision;
use crate::storage::{Cf, Engine, MemoryEngine, Scan};

use crate::storage::flaky::FlakyEngine;

/// A lone voter on a new in-memory engine, lessor promoted now.
fn member() -> TestMember {
    member_on(&Disk::new(), LessorConfig::default())
}

async fn grant(m: &Apis, id: i64, ttl: i64) -> Result<i64, EtcdError> {
    m.lease()
        .grant(LeaseGrantRequest { ttl, id }, &Caller::Member)
        .await
        .map(|r| r.ttl)
}

async fn put(m: &Apis, key: &str, lease: i64) -> Result<i64, EtcdError> {
    let resp = m
        .kv()
        .put(
            PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
                ..PutRequest::default()
            },
            &Caller::Member,
        )
        .await?;
    Ok(resp.header.map_or(0, |h| h.revision))
}

async fn revoke(m: &Apis, id: i64) -> Result<i64, EtcdError> {
    let resp = m
        .lease()
        .revoke(LeaseRevokeRequest { id }, &Caller::Member)
        .await?;
    Ok(resp.header.map_or(0, |h| h.revision))
}

async fn keys_of(m: &Apis, id: i64) -> Vec<String> {
    m.lease()
        .lessor()
        .keys(id)
        .unwrap_or_default()
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect()
}

async fn live_keys(m: &Apis) -> Vec<String> {
    let rr = m
        .kv()
        .range(
            RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..RangeRequest::default()
            },
            &Caller::Member,
        )
        .await
        .unwrap();
    rr.kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}

/// The leader-only half of the member's lessor.
fn leader_only(m: &Apis) -> LeaderOnly<'_> {
    m.lease().lessor().leader_only()
}

/// Lease `id`'s checkpointed remaining TTL (0: none).
fn remaining_ttl(m: &Apis, id: i64) -> Option<i64> {
    m.lease().lessor().record(id).map(|r| r.remaining_ttl)
}

/// Every attached key, with its lease, in key order.
fn attached(m: &Apis) -> Vec<(Vec<u8>, i64)> {
    m.lease()
        .lessor()
        .attached_in(&crate::mvcc::KeyRange::new(b"", b"\0"))
}

fn ttl_now(m: &Apis, id: i64) -> Option<i64> {
    m.lease()
        .time_to_live_here(LeaseTimeToLiveRequest { id, keys: false })
        .ok()
        .map(|r| r.ttl)
}

#[test]
fn min_ttl_follows_election_timeout() {
    let c = |ms| LessorConfig::from_election_timeout(Duration::from_millis(ms));
    assert_eq!(c(1000).min_ttl, 2); // ceil(1.5)
    assert_eq!(c(100).min_ttl, 1); // ceil(0.15)
    assert_eq!(c(2000).min_ttl, 3);
    assert_eq!(c(1400).min_ttl, 3); // ceil(2.1)
    assert_eq!(c(1000).promotion_extension, Duration::from_secs(1));
    assert_eq!(LessorConfig::default(), c(1000));
}

#[tokio::test(start_paused = true)]
async fn grant_raises_min_ttl_refuses_max_ttl_and_duplicates() {
    let m = member();
    assert_eq!(grant(&m, 1, 1).await, Ok(2));
    assert_eq!(grant(&m, 2, 0).await, Ok(2));
    assert_eq!(grant(&m, 3, -7).await, Ok(2));
    assert_eq!(grant(&m, 4, 60).await, Ok(60));
    assert_eq!(grant(&m, 5, MAX_LEASE_TTL).await, Ok(MAX_LEASE_TTL));
    assert_eq!(
        grant(&m, 6, MAX_LEASE_TTL + 1).await,
        Err(EtcdError::LeaseTtlTooLarge)
    );
    assert_eq!(grant(&m, 4, 10).await, Err(EtcdError::LeaseExist));
    // The TTL check comes before the duplicate check, as in etcd.
    assert_eq!(
        grant(&m, 4, MAX_LEASE_TTL + 1).await,
        Err(EtcdError::LeaseTtlTooLarge)
    );
    assert_eq!(m.lease().lessor().leases().len(), 5);
    // A grant changes no revision.
    assert_eq!(m.proposer().header(0).revision, 1);
    // Negative ids are accepted, as etcd does.
    assert_eq!(grant(&m, -9, 10).await, Ok(10));
}

#[tokio::test(start_paused = true)]
async fn grant_with_id_zero_gets_a_generated_positive_id() {
    let m = member();
    let a = m
        .lease()
        .grant(LeaseGrantRequest { ttl: 10, id: 0 }, &Caller::Member)
        .await
        .unwrap();
    let b = m
        .lease()
        .grant(LeaseGrantRequest { ttl: 10, id: 0 }, &Caller::Member)
        .await
        .unwrap();
    assert!(a.id > 0 && b.id > 0 && a.id != b.id);
    // The member id's low 16 bits head the id.
    assert_eq!(a.id >> 48, 0x694d);
    assert_eq!(b.id, a.id + 1);
    assert_eq!((a.ttl, a.error.as_str()), (10, ""));
}

#[tokio::test(start_paused = true)]
async fn grant_id_zero_is_not_found_when_applied() {
    // The member never applies id 0 (it picks one first), but the state
    // machine refuses it as etcd's lessor does.
    let m = member();
    let mut leases = LeaseTxn::new(m.lease().lessor());
    assert_eq!(leases.grant(0, 10), Err(EtcdError::LeaseNotFound));
}

#[tokio::test(start_paused = true)]
async fn attach_detach_and_reattach() {
    let m = member();
    grant(&m, 1, 60).await.unwrap();
    grant(&m, 3, 60).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    put(&m, "b", 1).await.unwrap();
    assert_eq!(keys_of(&m, 1).await, ["a", "b"]);

    // Reattaching moves the key.
    put(&m, "a", 3).await.unwrap();
    assert_eq!(keys_of(&m, 1).await, ["b"]);
    assert_eq!(keys_of(&m, 3).await, ["a"]);

    // ignore_lease keeps the old lease.
    m.kv()
        .put(
            PutRequest {
                key: b"a".to_vec(),
                value: b"w".to_vec(),
                ignore_lease: true,
                ..PutRequest::default()
            },
            &Caller::Member,
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&m, 3).await, ["a"]);

    // A put without a lease detaches.
    put(&m, "a", 0).await.unwrap();
    assert!(keys_of(&m, 3).await.is_empty());

    // Deleting detaches (a range delete too).
    put(&m, "c", 3).await.unwrap();
    put(&m, "d", 3).await.unwrap();
    m.kv()
        .delete_range(
            DeleteRangeRequest {
                key: b"b".to_vec(),
                range_end: b"d".to_vec(),
                ..DeleteRangeRequest::default()
            },
            &Caller::Member,
        )
        .await
        .unwrap();
    assert!(keys_of(&m, 1).await.is_empty());
    assert_eq!(keys_of(&m, 3).await, ["d"]);

    // A put naming an unknown lease changes nothing.
    assert_eq!(put(&m, "d", 7).await, Err(EtcdError::LeaseNotFound));
    assert_eq!(keys_of(&m, 3).await, ["d"]);

    // Inside a txn: a put attaches, a later delete in the same txn detaches.
    let op = |r| RequestOp { request: Some(r) };
    m.kv()
        .txn(
            TxnRequest {
                success: vec![
                    op(Request::RequestPut(PutRequest {
                        key: b"e".to_vec(),
                        lease: 1,
                        ..PutRequest::default()
                    })),
                    op(Request::RequestTxn(TxnRequest {
                        success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
                            key: b"e".to_vec(),
                            ..DeleteRangeRequest::default()
                        }))],
                        ..TxnRequest::default()
                    })),
                    op(Request::RequestPut(PutRequest {
                        key: b"f".to_vec(),
                        lease: 1,
                        ..PutRequest::default()
                    })),
                ],
                ..TxnRequest::default()
            },
            &Caller::Member,
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&m, 1).await, ["f"]);
    assert_eq!(attached(&m), [(b"d".to_vec(), 3), (b"f".to_vec(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_a_thousand_keys_in_one_revision() {
    let engine = Arc::new(MemoryEngine::new());
    let disk = Disk::on(engine.clone());
    let m = member_on(&disk, LessorConfig::default());
    grant(&m, 5, 60).await.unwrap();
    put(&m, "other", 0).await.unwrap();
    for i in 0..1000 {
        put(&m, &format!("k{i:04}"), 5).await.unwrap();
    }
    let before = m.proposer().header(0).revision;
    let rev = revoke(&m, 5).await.unwrap();
    assert_eq!(rev, before + 1, "one revision for every deletion");
    assert_eq!(live_keys(&m).await, ["other"]);
    assert!(!m.lease().lessor().exists(5));
    assert!(attached(&m).is_empty());
    // Every tombstone record carries that one revision, sub-revisions 0..1000
    // in key order.
    let mut tombstones = Vec::new();
    engine
        .scan(Cf::Kv, &[], None, &mut |k, _| {
            if let Some((r, true)) = Revision::from_record_key(k) {
                tombstones.push(r);
            }
            Scan::Continue
        })
        .unwrap();
    assert_eq!(tombstones.len(), 1000);
    assert!(tombstones.iter().all(|r| r.main == rev));
    let subs: Vec<i64> = tombstones.iter().map(|r| r.sub).collect();
    assert_eq!(subs, (0..1000).collect::<Vec<_>>());
    // The record is gone too.
    assert_eq!(engine.get(Cf::Lease, &5i64.to_be_bytes()).unwrap(), None);
    // Revoking again: not found. An empty lease takes no revision.
    assert_eq!(revoke(&m, 5).await, Err(EtcdError::LeaseNotFound));
    grant(&m, 6, 60).await.unwrap();
    assert_eq!(revoke(&m, 6).await, Ok(rev));
}

#[tokio::test(start_paused = true)]
async fn expires_at_exactly_the_ttl_not_before() {
    let m = member();
    grant(&m, 1, 5).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    assert_eq!(ttl_now(&m, 1), Some(5));
    advance(Duration::from_millis(4999)).await;
    assert!(leader_only(&m).expired(10).is_empty());
    m.lease().revoke_expired_leases().await;
    assert_eq!(live_keys(&m).await, ["a"]);
    assert_eq!(ttl_now(&m, 1), Some(0)); // 1 ms left, truncated
    advance(Duration::from_millis(1)).await;
    m.lease().revoke_expired_leases().await;
    assert!(live_keys(&m).await.is_empty());
    assert!(!m.lease().lessor().exists(1));
    assert_eq!(ttl_now(&m, 1), None);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_pushes_expiry_out() {
    let m = member();
    grant(&m, 1, 5).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    advance(Duration::from_secs(4)).await;
    assert_eq!(m.lease().renew(1, &Caller::Member).await, Ok(5));
    assert_eq!(ttl_now(&m, 1), Some(5));
    advance(Duration::from_secs(4)).await;
    m.lease().revoke_expired_leases().await;
    assert_eq!(live_keys(&m).await, ["a"]);
    advance(Duration::from_secs(1)).await;
    m.lease().revoke_expired_leases().await;
    assert!(live_keys(&m).await.is_empty());
    // Unknown (and revoked) leases are not found.
    assert_eq!(
        m.lease().renew(1, &Caller::Member).await,
        Err(EtcdError::LeaseNotFound)
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_cannot_be_renewed_and_is_retried_later() {
    let m = Arc::new(member());
    grant(&m, 1, 2).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    advance(Duration::from_secs(2)).await;
    // Expired, not yet revoked: a keep-alive waits for the revoke, as etcd's
    // (FINDINGS.md #2 of cairn-jepsen: answering "not found" at once let a
    // client read the keys of a lease it had just been told was gone).
    let renew = tokio::spawn({
        let m = Arc::clone(&m);
        async move { m.lease().renew(1, &Caller::Member).await }
    });
    tokio::task::yield_now().await;
    assert!(!renew.is_finished(), "answered before the revoke");
    m.lease().revoke_expired_leases().await;
    assert_eq!(renew.await.unwrap(), Err(EtcdError::LeaseNotFound));
    assert!(live_keys(&m).await.is_empty(), "not found, yet keys remain");
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_whose_revoke_never_comes_times_out_and_is_retried() {
    let m = Arc::new(member());
    grant(&m, 1, 2).await.unwrap();
    advance(Duration::from_secs(2)).await;
    // Nobody revokes it: the keep-alive gives up with "request timed out"
    // rather than claim the lease is gone while its keys live.
    let renew = tokio::spawn({
        let m = Arc::clone(&m);
        async move { m.lease().renew(1, &Caller::Member).await }
    });
    tokio::task::yield_now().await;
    assert!(!renew.is_finished(), "answered before the request timeout");
    advance(REQUEST_TIMEOUT).await;
    assert_eq!(renew.await.unwrap(), Err(EtcdError::Timeout));
    // Found expired once; if its revoke did not happen, it comes up again
    // after the retry interval.
    assert_eq!(leader_only(&m).expired(10), [1]);
    assert!(leader_only(&m).expired(10).is_empty());
    advance(EXPIRED_RETRY_INTERVAL).await;
    assert_eq!(leader_only(&m).expired(10), [1]);
}

#[tokio::test(start_paused = true)]
async fn checkpoint_then_restart_resumes_remaining_ttl() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let disk = Disk::on(engine.clone());
    let config = LessorConfig {
        checkpoint_interval: Some(Duration::from_secs(10)),
        ..LessorConfig::default()
    };
    let m = member_on(&disk, config);
    grant(&m, 1, 100).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    advance(Duration::from_millis(9_999)).await;
    m.lease().checkpoint_due_leases().await;
    assert_eq!(remaining_ttl(&m, 1), Some(0), "not due yet");
    advance(Duration::from_millis(1)).await;
    m.lease().checkpoint_due_leases().await;
    assert_eq!(remaining_ttl(&m, 1), Some(90));
    // The next one is scheduled (90 > 10 s) and records 80.
    advance(Duration::from_secs(10)).await;
    m.lease().checkpoint_due_leases().await;
    assert_eq!(remaining_ttl(&m, 1), Some(80));
    let rev = m.proposer().header(0).revision;
    drop(m);

    // Restart: the lease resumes from 80 s (+1 s extension), not 100 s, and
    // keeps its key; checkpoints took no revision.
    let m = member_on(&disk, config);
    assert_eq!(m.proposer().header(0).revision, rev);
    assert_eq!(ttl_now(&m, 1), Some(81));
    assert_eq!(keys_of(&m, 1).await, ["a"]);
    let ttl = m
        .lease()
        .time_to_live_here(LeaseTimeToLiveRequest { id: 1, keys: true })
        .unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys), (100, vec![b"a".to_vec()]));

    // A keep-alive clears the checkpoint (through the state machine): the
    // lease now has its full TTL, and a restart agrees.
    assert_eq!(m.lease().renew(1, &Caller::Member).await, Ok(100));
    assert_eq!(remaining_ttl(&m, 1), Some(0));
    assert_eq!(ttl_now(&m, 1), Some(100));
    drop(m);
    let m = member_on(&disk, config);
    assert_eq!(ttl_now(&m, 1), Some(101));
}

#[tokio::test(start_paused = true)]
async fn no_checkpoints_when_turned_off_or_when_the_lease_is_short() {
    let off = LessorConfig {
        checkpoint_interval: None,
        ..LessorConfig::default()
    };
    let m = member_on(&Disk::new(), off);
    grant(&m, 1, 100).await.unwrap();
    advance(Duration::from_secs(301)).await;
    assert!(leader_only(&m).due_checkpoints(10).is_empty());

    // Default interval is 5 minutes: a 60 s lease is never checkpointed.
    let m = member();
    grant(&m, 1, 60).await.unwrap();
    grant(&m, 2, 600).await.unwrap();
    advance(Duration::from_secs(300)).await;
    assert_eq!(leader_only(&m).due_checkpoints(10), [(2, 300)]);
}

#[tokio::test(start_paused = true)]
async fn restart_extends_expiries_instead_of_expiring_everything() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let disk = Disk::on(engine.clone());
    let m = member_on(&disk, LessorConfig::default());
    for id in 1..=3 {
        grant(&m, id, 10).await.unwrap();
        put(&m, &format!("k{id}"), id).await.unwrap();
    }
    // Down for longer than the TTL: without promotion every lease would be
    // expired on start.
    drop(m);
    advance(Duration::from_secs(60)).await;
    let m = member_on(&disk, LessorConfig::default());
    assert!(leader_only(&m).expired(10).is_empty());
    for id in 1..=3 {
        assert_eq!(ttl_now(&m, id), Some(11), "TTL + one election timeout");
    }
    advance(Duration::from_secs(10)).await;
    m.lease().revoke_expired_leases().await;
    assert_eq!(live_keys(&m).await.len(), 3);
    advance(Duration::from_secs(1)).await;
    m.lease().revoke_expired_leases().await;
    assert!(live_keys(&m).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn promotion_spreads_piled_up_expiries() {
    let m = member();
    let n = 2000;
    for id in 1..=n {
        grant(&m, id, 10).await.unwrap();
    }
    leader_only(&m).promote();
    let now = tokio::time::Instant::now();
    let mut expiries: Vec<Duration> = (1..=n)
        .map(|id| leader_only(&m).expiry(id).unwrap() - now)
        .collect();
    expiries.sort();
    assert_eq!(expiries[0], Duration::from_secs(11));
    assert!(*expiries.last().unwrap() > Duration::from_secs(13));
    // No one-second window holds more than 3/4 of the revoke rate (+1 for
    // the window edge).
    let most = (0..expiries.len())
        .map(|i| {
            expiries[i..]
                .iter()
                .take_while(|e| **e < expiries[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 3 * REVOKE_RATE / 4 + 1, "{most}");
    // Fewer than the revoke rate: no spreading.
    let m = member();
    for id in 1..=10 {
        grant(&m, id, 10).await.unwrap();
    }
    leader_only(&m).promote();
    let now = tokio::time::Instant::now();
    assert!((1..=10).all(|id| leader_only(&m).expiry(id) == Some(now + Duration::from_secs(11))));
}

#[tokio::test(start_paused = true)]
async fn failed_commits_leave_the_lessor_unchanged() {
    let engine = Arc::new(FlakyEngine::default());
    let disk = Disk::on(engine.clone());
    let m = member_on(&disk, LessorConfig::default());
    grant(&m, 1, 60).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    let before = m.lease().lessor().table();

    // A failed apply stops the raft node (the member stops serving, as
    // etcd's does), so the state machine is driven here as the node
    // drives it: each entry at the next index.
    let machine = Arc::clone(m.proposer().machine());
    let put_entry = |key: &str, lease| {
        Command::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..PutRequest::default()
        })
    };
    engine.set_failing(true);
    for command in [
        Command::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 2 }),
        put_entry("b", 1),
        put_entry("a", 0),
        Command::LeaseRevoke(LeaseRevokeRequest { id: 1 }),
        Command::LeaseCheckpoint(cairn_proto::etcdserverpb::LeaseCheckpointRequest {
            checkpoints: vec![cairn_proto::etcdserverpb::LeaseCheckpoint {
                id: 1,
                remaining_ttl: 5,
            }],
        }),
    ] {
        let data = crate::entry::encode(0, command).unwrap();
        let index = machine.applied_index() + 1;
        machine.apply_entry(index, &data.into()).unwrap_err();
    }
    assert_eq!(m.lease().lessor().table(), before);

    // And everything works once the disk does.
    engine.set_failing(false);
    assert_eq!(grant(&m, 2, 60).await, Ok(60));
    put(&m, "b", 2).await.unwrap();
    assert_eq!(keys_of(&m, 2).await, ["b"]);
    revoke(&m, 1).await.unwrap();
    assert_eq!(live_keys(&m).await, ["b"]);
}

#[tokio::test(start_paused = true)]
async fn leases_are_listed_soonest_expiry_first() {
    let m = member();
    grant(&m, 7, 30).await.unwrap();
    grant(&m, 3, 10).await.unwrap();
    grant(&m, 5, 20).await.unwrap();
    let ids: Vec<i64> = m
        .lease()
        .leases(&Caller::Member)
        .await
        .unwrap()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, [3, 5, 7]);
}

#[tokio::test(start_paused = true)]
async fn recovery_rebuilds_attached_keys_from_the_key_records() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let disk = Disk::on(engine.clone());
    let m = member_on(&disk, LessorConfig::default());
    grant(&m, 1, 60).await.unwrap();
    grant(&m, 2, 60).await.unwrap();
    // More keys than one recovery chunk.
    for i in 0..2500 {
        put(&m, &format!("k{i:04}"), if i % 2 == 0 { 1 } else { 2 })
            .await
            .unwrap();
    }
    put(&m, "k0000", 0).await.unwrap();
    let want = m.lease().lessor().table();
    drop(m);
    let m = member_on(&disk, LessorConfig::default());
    assert_eq!(m.lease().lessor().table(), want);
    assert_eq!(m.lease().lessor().keys(1).unwrap().len(), 1249);
    let keys: BTreeSet<Vec<u8>> = m.lease().lessor().keys(2).unwrap().into_iter().collect();
    assert_eq!(keys.len(), 1250);
}

#[tokio::test(start_paused = true)]
async fn lease_task_revokes_expired_leases_and_stops() {
    let m = Arc::new(member());
    grant(&m, 1, 3).await.unwrap();
    put(&m, "a", 1).await.unwrap();
    let mut tasks = crate::tasks::Tasks::new();
    let lease = Arc::clone(m.lease());
    tasks.spawn(|shutdown| crate::tasks::lease_expiry::run(lease, shutdown));
    // The task checks every 500 ms on the paused clock: the lease is revoked
    // at the first check at or after its expiry.
    advance(Duration::from_millis(2_999)).await;
    tokio::task::yield_now().await;
    assert_eq!(live_keys(&m).await, ["a"]);
    let mut waited = 0;
    while m.lease().lessor().exists(1) {
        // The paused clock moves only by `advance` (the test member holds
        // the auto-advance back); the revoke goes through the raft thread,
        // which takes a little real time.
        advance(Duration::from_millis(10)).await;
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        waited += 10;
        assert!(waited < 2_000, "lease not revoked");
    }
    assert!(live_keys(&m).await.is_empty());
    tasks.join().await;
}
