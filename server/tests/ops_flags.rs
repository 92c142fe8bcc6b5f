//! etcd's operational flags: `--max-concurrent-streams` and
//! `--strict-reconfig-check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberRemoveRequest, RangeRequest, WatchCreateRequest,
    WatchRequest,
};
use common::cluster::{configs, start_member, Cluster, Slot};
use common::eventually;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Opens a watch stream on `channel` and waits for its `created` answer:
/// from then on, the stream holds one HTTP/2 stream of that connection.
async fn open_watch(
    channel: tonic::transport::Channel,
) -> (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"w".to_vec(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut responses = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().unwrap().created);
    (tx, responses)
}

/// With `--max-concurrent-streams 1`, a second request on a connection
/// whose one stream is taken by a watch waits until the watch ends; with
/// etcd's default (no limit) it is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_limits_streams_per_connection() {
    for (limit, waits) in [(1, true), (u32::MAX, false)] {
        let dir = tempfile::tempdir().unwrap();
        let member = cairn_server::embed::start(cairn_server::embed::Config {
            max_concurrent_streams: limit,
            ..common::config(dir.path())
        })
        .await
        .unwrap();
        // One connection for both calls.
        let channel = tonic::transport::Endpoint::from_shared(member.client_urls()[0].clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (watch_tx, watch) = open_watch(channel.clone()).await;
        let mut kv = KvClient::new(channel.clone());
        let mut range = tokio::spawn(async move {
            kv.range(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
        });
        // Proving that something does not happen needs some time: half a
        // second, far above a local round trip.
        let early = tokio::time::timeout(Duration::from_millis(500), &mut range).await;
        assert_eq!(early.is_err(), waits, "limit {limit}: {early:?}");
        if let Ok(answered) = early {
            answered.unwrap().unwrap();
        }
        // Once the watch stream ends, its stream is free: the waiting
        // request goes through.
        drop((watch_tx, watch));
        if waits {
            tokio::time::timeout(Duration::from_secs(20), range)
                .await
                .expect("answered once the watch ended")
                .unwrap()
                .unwrap();
        }
        member.stop().await.unwrap();
    }
}

/// A Cluster service client.
type Members = ClusterClient<tonic::transport::Channel>;

/// A Cluster client of member `i` only.
async fn members_of(cluster: &Cluster, i: usize) -> Members {
    ClusterClient::connect(cluster.url(i)).await.unwrap()
}

/// MemberAdd of a peer URL nobody uses; the number of members after it.
async fn add(c: &mut Members, is_learner: bool) -> Result<usize, tonic::Status> {
    let req = MemberAddRequest {
        peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        is_learner,
    };
    c.member_add(req)
        .await
        .map(|r| r.into_inner().members.len())
}

/// MemberRemove of member `id`; the number of members after it.
async fn remove(c: &mut Members, id: u64) -> Result<usize, tonic::Status> {
    c.member_remove(MemberRemoveRequest { id })
        .await
        .map(|r| r.into_inner().members.len())
}

/// Asserts that a membership change was refused with `code` and etcd's
/// `message`.
fn assert_refused(result: Result<usize, tonic::Status>, code: Code, message: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(err.message(), message);
}

/// A three-member cluster of which only m0 and m1 ever started (m2 is in
/// `--initial-cluster` but never ran), once both have published their names.
async fn two_of_three_started(strict: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let configs = configs(dir.path(), 3, |c| c.strict_reconfig_check = strict).await;
    let mut slots = Vec::new();
    for (i, config) in configs.into_iter().enumerate() {
        let handle = if i < 2 {
            Some(start_member(config.clone()).await)
        } else {
            None
        };
        slots.push(Slot { config, handle });
    }
    let cluster = Cluster { dir, slots };
    let mut c = members_of(&cluster, cluster.leader().await).await;
    eventually(30, "m0 and m1 to publish their names", async || {
        let list = c.member_list(MemberListRequest::default()).await;
        list.is_ok_and(|l| {
            l.into_inner()
                .members
                .iter()
                .filter(|m| !m.name.is_empty())
                .count()
                == 2
        })
    })
    .await;
    cluster
}

/// etcd's `IsReadyToAddVotingMember` / `IsReadyToRemoveVotingMember`: with
/// one of three voters never started, adding a voter (2 started of 4) or
/// removing a started one (1 started of 2 left) is refused with
/// FailedPrecondition "not enough started members"; with
/// `--strict-reconfig-check=false` the same add goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_changes_without_started_quorum() {
    const NOT_STARTED: &str =
        "etcdserver: re-configuration failed due to not enough started members";
    let mut cluster = two_of_three_started(true).await;
    let leader = cluster.leader().await;
    let follower = 1 - leader;
    for i in [leader, follower] {
        let mut c = members_of(&cluster, i).await;
        let added = add(&mut c, false).await;
        assert_refused(added, Code::FailedPrecondition, NOT_STARTED);
        let removed = remove(&mut c, cluster.member_id(follower)).await;
        assert_refused(removed, Code::FailedPrecondition, NOT_STARTED);
    }
    // Removing the member that never started leaves two started of two.
    let mut c = members_of(&cluster, leader).await;
    assert_eq!(remove(&mut c, cluster.member_id(2)).await.unwrap(), 2);
    cluster.stop_all().await;

    let mut cluster = two_of_three_started(false).await;
    let mut c = members_of(&cluster, cluster.leader().await).await;
    assert_eq!(add(&mut c, false).await.unwrap(), 4);
    cluster.stop_all().await;
}

/// etcd's active-quorum rules: with a voter down, the leader refuses to
/// add any member (it must reach every voter) or to remove a live voter
/// (1 reachable of 2 left) with Unavailable "unhealthy cluster"; removing
/// the dead one is fine. With `--strict-reconfig-check=false` the removal of
/// the live voter goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_changes_without_active_quorum() {
    const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
    for strict in [true, false] {
        let mut cluster = Cluster::start(3, |c| c.strict_reconfig_check = strict).await;
        let leader = cluster.leader().await;
        cluster.wait_started().await;
        let mut c = members_of(&cluster, leader).await;
        let (down, live) = ((leader + 1) % 3, (leader + 2) % 3);
        cluster.kill(down).await;
        let member = cluster.handle(leader).member().clone();
        let down_id = cluster.member_id(down);
        eventually(20, "the leader to see the member down", async || {
            !member.raft_status().active.contains(&down_id)
        })
        .await;
        let live_id = cluster.member_id(live);
        if strict {
            assert_refused(add(&mut c, true).await, Code::Unavailable, UNHEALTHY);
            let removed = remove(&mut c, live_id).await;
            assert_refused(removed, Code::Unavailable, UNHEALTHY);
            assert_eq!(remove(&mut c, down_id).await.unwrap(), 2);
        } else {
            assert_eq!(remove(&mut c, live_id).await.unwrap(), 2);
        }
        cluster.stop_all().await;
    }
}
