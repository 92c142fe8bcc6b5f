//! etcd's operational flags: `--max-concurrent-streams` and
//! `--strict-reconfig-check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest};
use tokio_stream::wrappers::ReceiverStream;

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

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberRemoveRequest};
use common::cluster::{configs, start_member, Cluster, Slot};

/// Polls `f` until it returns true, failing after `secs`.
async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let leader = cluster.leader().await;
    let mut c = ClusterClient::connect(cluster.url(leader)).await.unwrap();
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

fn member_id(cluster: &Cluster, i: usize) -> u64 {
    let config = &cluster.slots[i].config;
    cairn_server::embed::member_id(
        &config.initial_advertise_peer_urls,
        &config.initial_cluster_token,
    )
}

/// etcd's `IsReadyToAddVotingMember` / `IsReadyToRemoveVotingMember`: with
/// one of three voters never started, adding a voter (2 started of 4) or
/// removing a started one (1 started of 2 left) is refused with
/// FailedPrecondition "not enough started members"; with
/// `--strict-reconfig-check=false` the same add goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_changes_without_started_quorum() {
    let mut cluster = two_of_three_started(true).await;
    let leader = cluster.leader().await;
    let follower = 1 - leader;
    for i in [leader, follower] {
        let mut c = ClusterClient::connect(cluster.url(i)).await.unwrap();
        let err = c
            .member_add(MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert_eq!(
            err.message(),
            "etcdserver: re-configuration failed due to not enough started members"
        );
        let err = c
            .member_remove(MemberRemoveRequest {
                id: member_id(&cluster, follower),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert_eq!(
            err.message(),
            "etcdserver: re-configuration failed due to not enough started members"
        );
    }
    // Removing the member that never started leaves two started of two.
    let mut c = ClusterClient::connect(cluster.url(leader)).await.unwrap();
    let left = c
        .member_remove(MemberRemoveRequest {
            id: member_id(&cluster, 2),
        })
        .await
        .unwrap();
    assert_eq!(left.into_inner().members.len(), 2);
    cluster.stop_all().await;

    let mut cluster = two_of_three_started(false).await;
    let leader = cluster.leader().await;
    let mut c = ClusterClient::connect(cluster.url(leader)).await.unwrap();
    let added = c
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: false,
        })
        .await
        .unwrap();
    assert_eq!(added.into_inner().members.len(), 4);
    cluster.stop_all().await;
}

/// etcd's active-quorum rules: with a voter down, the leader refuses to
/// add any member (it must reach every voter) or to remove a live voter
/// (1 reachable of 2 left) with Unavailable "unhealthy cluster"; removing
/// the dead one is fine. With `--strict-reconfig-check=false` the removal of
/// the live voter goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_changes_without_active_quorum() {
    for strict in [true, false] {
        let mut cluster = Cluster::start(3, |c| c.strict_reconfig_check = strict).await;
        let leader = cluster.leader().await;
        cluster.wait_started().await;
        let mut c = ClusterClient::connect(cluster.url(leader)).await.unwrap();
        let (down, live) = ((leader + 1) % 3, (leader + 2) % 3);
        cluster.kill(down).await;
        let member = cluster.handle(leader).member().clone();
        let down_id = member_id(&cluster, down);
        eventually(20, "the leader to see the member down", async || {
            !member.raft_status().active.contains(&down_id)
        })
        .await;
        let live_id = member_id(&cluster, live);
        if strict {
            let err = c
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    is_learner: true,
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert_eq!(err.message(), "etcdserver: unhealthy cluster");
            let err = c
                .member_remove(MemberRemoveRequest { id: live_id })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert_eq!(err.message(), "etcdserver: unhealthy cluster");
            let left = c
                .member_remove(MemberRemoveRequest { id: down_id })
                .await
                .unwrap();
            assert_eq!(left.into_inner().members.len(), 2);
        } else {
            let left = c
                .member_remove(MemberRemoveRequest { id: live_id })
                .await
                .unwrap();
            assert_eq!(left.into_inner().members.len(), 2);
        }
        cluster.stop_all().await;
    }
}
