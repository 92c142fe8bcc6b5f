//! etcd behaviours real clients depend on, each checked against what etcd
//! 3.5.1 answers (probed side by side while writing these tests): response
//! headers per RPC, alarms per (member, type), Hash, Downgrade.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use cairn_client::Put;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::*;
use common::cluster::Cluster;
use tonic::transport::Channel;
use tonic::Code;

/// What etcd puts in a response's header.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Header {
    /// cluster id, member id, raft term, and the store's current revision.
    Current,
    /// cluster id, member id, raft term; revision 0 (the Cluster service).
    NoRevision,
    /// No header at all (Defragment, MoveLeader, Snapshot chunks).
    Absent,
}

fn check(name: &str, got: Option<ResponseHeader>, want: Header, current: i64) {
    match (want, got) {
        (Header::Absent, None) => {}
        (Header::Absent, Some(h)) => panic!("{name}: etcd sends no header, got {h:?}"),
        (_, None) => panic!("{name}: no header"),
        (want, Some(h)) => {
            assert!(h.cluster_id != 0 && h.member_id != 0, "{name}: {h:?}");
            assert!(h.raft_term != 0, "{name}: {h:?}");
            let revision = if want == Header::Current { current } else { 0 };
            assert_eq!(h.revision, revision, "{name}: {h:?}");
        }
    }
}

/// One row per RPC, in etcd 3.5's terms (etcd's v3rpc header.go fills the
/// ids and term of every header; the Cluster service leaves the revision
/// out; Defragment, MoveLeader and Snapshot send none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_header_is_as_etcds() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut kv = KvClient::new(channel.clone());
    let mut lease = LeaseClient::new(channel.clone());
    let mut cluster = ClusterClient::new(channel.clone());
    let mut m = MaintenanceClient::new(channel);

    let put = kv
        .put(PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    check("Put", put.header, Header::Current, 2);
    let r = kv
        .range(RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    check("Range", r.header, Header::Current, 2);
    let r = kv
        .delete_range(DeleteRangeRequest {
            key: b"zz".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    check("DeleteRange (nothing)", r.header, Header::Current, 2);
    let r = kv.txn(TxnRequest::default()).await.unwrap().into_inner();
    check("Txn (empty)", r.header, Header::Current, 2);
    kv.put(PutRequest {
        key: b"a".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = kv
        .compact(CompactionRequest {
            revision: 2,
            physical: false,
        })
        .await
        .unwrap()
        .into_inner();
    check("Compact", r.header, Header::Current, 3);

    let grant = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    check("LeaseGrant", grant.header, Header::Current, 3);
    let r = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: grant.id,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    check("LeaseTimeToLive", r.header, Header::Current, 3);
    let r = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: 12345,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ttl, -1);
    check("LeaseTimeToLive (missing)", r.header, Header::Current, 3);
    let r = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    check("LeaseLeases", r.header, Header::Current, 3);
    let mut keep = lease
        .lease_keep_alive(tokio_stream::once(LeaseKeepAliveRequest { id: grant.id }))
        .await
        .unwrap()
        .into_inner();
    let r = keep.message().await.unwrap().unwrap();
    check("LeaseKeepAlive", r.header, Header::Current, 3);
    let r = lease
        .lease_revoke(LeaseRevokeRequest { id: grant.id })
        .await
        .unwrap()
        .into_inner();
    check("LeaseRevoke", r.header, Header::Current, 3);

    let list = cluster
        .member_list(MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    check("MemberList", list.header, Header::NoRevision, 3);

    let r = m.alarm(AlarmRequest::default()).await.unwrap().into_inner();
    check("Alarm", r.header, Header::Current, 3);
    let status = m.status(StatusRequest {}).await.unwrap().into_inner();
    check("Status", status.header, Header::Current, 3);
    let r = m.hash(HashRequest {}).await.unwrap().into_inner();
    check("Hash", r.header, Header::Current, 3);
    let r = m
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    check("HashKV", r.header, Header::Current, 3);
    let r = m
        .downgrade(DowngradeRequest {
            action: 0,
            version: "3.4".into(),
        })
        .await
        .unwrap()
        .into_inner();
    check("Downgrade", r.header, Header::Current, 3);
    let r = m
        .defragment(DefragmentRequest {})
        .await
        .unwrap()
        .into_inner();
    check("Defragment", r.header, Header::Absent, 3);
    let r = m
        .move_leader(MoveLeaderRequest {
            target_id: status.leader,
        })
        .await
        .unwrap()
        .into_inner();
    check("MoveLeader", r.header, Header::Absent, 3);
    let mut snapshot = m.snapshot(SnapshotRequest {}).await.unwrap().into_inner();
    while let Some(chunk) = snapshot.message().await.unwrap() {
        check("Snapshot chunk", chunk.header, Header::Absent, 3);
    }
    let added = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .unwrap()
        .into_inner();
    check("MemberAdd", added.header, Header::NoRevision, 3);
    member.kill().await;
}

/// Alarms are kept per (member id, type) exactly as given: member 0 is a
/// member id like any other, beside a per-member alarm of the same type;
/// deactivate removes the exact pair; GET lists every pair (of one type,
/// unless NONE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_kept_per_member_id_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let me = member.member().identity().member_id;
    let mut m = MaintenanceClient::connect(member.client_urls()[0].clone())
        .await
        .unwrap();
    let alarm = |action: AlarmAction, member_id: u64, alarm: AlarmType| AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    };
    let mut call = async |req: AlarmRequest| {
        let mut pairs: Vec<(u64, i32)> = m
            .alarm(req)
            .await
            .unwrap()
            .into_inner()
            .alarms
            .into_iter()
            .map(|a| (a.member_id, a.alarm))
            .collect();
        pairs.sort();
        pairs
    };
    let (nospace, corrupt) = (AlarmType::Nospace as i32, AlarmType::Corrupt as i32);
    assert_eq!(
        call(alarm(AlarmAction::Activate, 0, AlarmType::Nospace)).await,
        vec![(0, nospace)]
    );
    assert_eq!(
        call(alarm(AlarmAction::Activate, me, AlarmType::Nospace)).await,
        vec![(me, nospace)]
    );
    assert_eq!(
        call(alarm(AlarmAction::Activate, 7, AlarmType::Corrupt)).await,
        vec![(7, corrupt)]
    );
    // Activating NONE does nothing.
    assert!(call(alarm(AlarmAction::Activate, 0, AlarmType::None))
        .await
        .is_empty());
    assert_eq!(
        call(alarm(AlarmAction::Get, 0, AlarmType::None)).await,
        vec![(0, nospace), (7, corrupt), (me, nospace)]
    );
    assert_eq!(
        call(alarm(AlarmAction::Get, 0, AlarmType::Nospace)).await,
        vec![(0, nospace), (me, nospace)]
    );
    // Deactivate is exact: member 0's leaves this member's.
    assert_eq!(
        call(alarm(AlarmAction::Deactivate, 0, AlarmType::Nospace)).await,
        vec![(0, nospace)]
    );
    assert!(call(alarm(AlarmAction::Deactivate, 0, AlarmType::Nospace))
        .await
        .is_empty());
    assert_eq!(
        call(alarm(AlarmAction::Get, 0, AlarmType::None)).await,
        vec![(7, corrupt), (me, nospace)]
    );
    member.kill().await;
}

/// Maintenance.Downgrade as a 3.5 cluster answers it (etcd 3.5.1's answers
/// for the same requests: only 3.4 is a valid target; cancel needs a job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_is_answered_as_etcd_3_5() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let mut m = MaintenanceClient::connect(member.client_urls()[0].clone())
        .await
        .unwrap();
    let mut call = async |action: i32, version: &str| {
        m.downgrade(DowngradeRequest {
            action,
            version: version.into(),
        })
        .await
        .map(|r| r.into_inner().version)
        .map_err(|s| (s.code(), s.message().to_string()))
    };
    let invalid = Err((
        Code::InvalidArgument,
        "etcdserver: invalid downgrade target version".to_string(),
    ));
    let format = Err((
        Code::InvalidArgument,
        "etcdserver: wrong downgrade target version format".to_string(),
    ));
    let no_job = Err((
        Code::FailedPrecondition,
        "etcdserver: no inflight downgrade job".to_string(),
    ));
    let ok = Ok("3.5.0".to_string());
    assert_eq!(call(0, "3.4").await, ok);
    assert_eq!(call(0, "3.4.7").await, ok);
    assert_eq!(call(0, "3.5").await, invalid);
    assert_eq!(call(0, "3.3").await, invalid);
    assert_eq!(call(1, "3.6").await, invalid);
    assert_eq!(call(0, "x").await, format);
    assert_eq!(call(0, "").await, format);
    assert_eq!(call(2, "3.4").await, no_job);
    assert_eq!(
        call(7, "3.4").await,
        Err((Code::Unknown, "etcdserver: unknown method".to_string()))
    );
    // Enable, then it is in progress until cancelled.
    assert_eq!(call(1, "3.4").await, ok);
    let busy = Err((
        Code::FailedPrecondition,
        "etcdserver: cluster has a downgrade job in progress".to_string(),
    ));
    assert_eq!(call(0, "3.4").await, busy);
    assert_eq!(call(1, "3.4").await, busy);
    assert_eq!(call(2, "").await, ok);
    assert_eq!(call(2, "").await, no_job);
    member.kill().await;
}

/// Maintenance.Hash is equal on members that applied the same entries, and
/// changes with the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_is_equal_across_members() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    // Every member has published its attributes through raft (until then
    // a member's table knows its own name only).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for i in 0..3 {
        let mut cl = ClusterClient::connect(cluster.url(i)).await.unwrap();
        loop {
            let list = cl.member_list(MemberListRequest::default()).await.unwrap();
            let members = list.into_inner().members;
            if members.len() == 3 && members.iter().all(|m| !m.client_ur_ls.is_empty()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "members never published"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let c = cluster.client_all().await;
    for i in 0..20 {
        c.put(Put::new(format!("k{i}"), "v")).await.unwrap();
    }
    c.lease_grant(60, 0).await.unwrap();
    c.compact(10, true).await.unwrap();
    cluster.converge().await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut m = MaintenanceClient::connect(cluster.url(i)).await.unwrap();
        let r = m.hash(HashRequest {}).await.unwrap().into_inner();
        hashes.push((r.hash, r.header.unwrap().revision));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    c.put(Put::new("one-more", "v")).await.unwrap();
    cluster.converge().await;
    let mut m = MaintenanceClient::connect(cluster.url(0)).await.unwrap();
    let after = m.hash(HashRequest {}).await.unwrap().into_inner().hash;
    assert_ne!(after, hashes[0].0);
    cluster.stop_all().await;
}
