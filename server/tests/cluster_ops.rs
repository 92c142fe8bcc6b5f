//! Cluster operations beyond replication: `hasleader`, the CORRUPT alarm
//! from the leader's hash check, the NOSPACE quota, and restoring a new
//! cluster from a `snapshot save` file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::{Duration, Instant};

use cairn_client::{Delete, Get, Put};
use cairn_proto::etcdserverpb::{kv_client::KvClient, AlarmType, RangeRequest};
use common::cluster::Cluster;
use common::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_requests_fail_fast_without_a_leader() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    // A watch stream opened with hasleader on the survivor, while it has one.
    let mut watch =
        cairn_proto::etcdserverpb::watch_client::WatchClient::connect(cluster.url(survivor))
            .await
            .unwrap();
    let (watch_tx, watch_rx) = tokio::sync::mpsc::channel(4);
    watch_tx
        .send(cairn_proto::etcdserverpb::WatchRequest {
            request_union: Some(
                cairn_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                    cairn_proto::etcdserverpb::WatchCreateRequest {
                        key: b"w".to_vec(),
                        ..Default::default()
                    },
                ),
            ),
        })
        .await
        .unwrap();
    let mut watch_req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(watch_rx));
    watch_req
        .metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    let mut responses = watch.watch(watch_req).await.unwrap().into_inner();
    let created = responses.message().await.unwrap().unwrap();
    assert!(created.created);
    for i in 0..3 {
        if i != survivor {
            cluster.kill(i).await;
        }
    }
    // Without a leader for a while, the stream ends with "no leader" (so
    // the client moves to a member that has one).
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the hasleader watch stream ends");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    drop(watch_tx);
    // Alone, the survivor loses its leader (check-quorum, or the leader is gone).
    let member = cluster.handle(survivor).member().clone();
    eventually(20, "the survivor to lose its leader", async || {
        member.raft_status().leader == 0
    })
    .await;
    let mut kv = KvClient::connect(cluster.url(survivor)).await.unwrap();
    let mut req = tonic::Request::new(RangeRequest {
        key: b"k".to_vec(),
        serializable: true,
        ..RangeRequest::default()
    });
    req.metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    let err = kv.range(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "etcdserver: no leader");
    // Without the metadata a serializable read is served locally.
    let ok = kv
        .range(RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..RangeRequest::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // A write has no leader to go to.
    let c = cluster.client(survivor).await;
    let err = c.put(Put::new("k", "v")).await.unwrap_err();
    assert!(err.to_string().contains("no leader"), "{err}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_differs_raises_corrupt() {
    let mut cluster = Cluster::start(3, |c| {
        c.corrupt_check_time = Duration::from_millis(200);
    })
    .await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader).await;
    for i in 0..20 {
        c.put(Put::new(format!("k{i}"), "v")).await.unwrap();
    }
    cluster.converge().await;
    assert!(
        c.alarms().await.unwrap().alarms.is_empty(),
        "healthy cluster"
    );
    // Damage one record on a follower, behind the store's back.
    let follower = (leader + 1) % 3;
    let victim = cluster.handle(follower).member().clone();
    let rev = c.get(Get::key("k5")).await.unwrap().kvs[0].mod_revision;
    common::damage_record(&victim, b"k5", rev);
    // The leader's check finds it and raises CORRUPT for that member.
    let victim_id = victim.identity().member_id;
    eventually(20, "the CORRUPT alarm", async || {
        c.alarms()
            .await
            .unwrap()
            .alarms
            .iter()
            .any(|a| a.member_id == victim_id && a.alarm == AlarmType::Corrupt as i32)
    })
    .await;
    // Then the cluster refuses to serve, as etcd does.
    let err = c.put(Put::new("k", "v")).await.unwrap_err();
    assert!(err.to_string().contains("corrupt cluster"), "{err}");
    let err = c.get(Get::key("k1")).await.unwrap_err();
    assert!(err.to_string().contains("corrupt cluster"), "{err}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_quota_raise_nospace_until_disarmed() {
    let mut cluster = Cluster::start(3, |c| {
        // Past whatever an empty database takes, and reachable quickly.
        c.quota_backend_bytes = 2 * 1024 * 1024;
    })
    .await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader).await;
    let big = vec![b'x'; 256 * 1024];
    let mut refused = None;
    for i in 0..200 {
        match c.put(Put::new(format!("big{i}"), big.clone())).await {
            Err(e) if e.to_string().contains("database space exceeded") => {
                refused = Some(e);
                break;
            }
            // Anything else (a slow machine's timeout) is not the point here.
            Err(e) => eprintln!("put big{i}: {e}"),
            Ok(_) => {}
        }
    }
    let err = refused.expect("the quota is reached");
    assert!(err.to_string().contains("database space exceeded"), "{err}");
    // Every member has the alarm (it is replicated), and refuses puts.
    cluster.converge().await;
    for i in 0..3 {
        let ci = cluster.client(i).await;
        let alarms = ci.alarms().await.unwrap().alarms;
        assert!(
            alarms.iter().any(|a| a.alarm == AlarmType::Nospace as i32),
            "member {i}"
        );
        let e = ci.put(Put::new("small", "v")).await.unwrap_err();
        assert!(e.to_string().contains("database space exceeded"), "{e}");
    }
    // Deletes still go through; disarming lets writes in again.
    c.delete(Delete::key("big0")).await.unwrap();
    let alarm = c.alarms().await.unwrap().alarms[0];
    c.alarm_deactivate(alarm.member_id, AlarmType::Nospace)
        .await
        .unwrap();
    assert!(c.alarms().await.unwrap().alarms.is_empty());
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_restores_from_a_snapshot_file() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    let c = cluster.client_all().await;
    for i in 0..300 {
        c.put(Put::new(format!("k{i:03}"), format!("{i}")))
            .await
            .unwrap();
    }
    let before = c.get(Get::key("k").prefix()).await.unwrap();
    // Saved through m0: sealed with m0's master key, which restoring needs.
    let file = cluster.client(0).await.snapshot_to_vec().await.unwrap();
    let key = cairn_server::embed::key_file_path(&cluster.slots[0].config);
    cluster.stop_all().await;

    // Restore into three new data directories, as a new cluster.
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster::configs(dir.path(), 3, |c| {
        c.initial_cluster_token = "restored".into();
        c.encryption_key_file = Some(key.clone());
    })
    .await;
    for config in &configs {
        let rev = cairn_server::embed::restore_snapshot(&file, config).unwrap();
        assert_eq!(rev, before.header.unwrap().revision);
    }
    // A damaged file is refused and touches nothing.
    let mut damaged = file.clone();
    let n = damaged.len();
    damaged[n / 2] ^= 0xff;
    let mut other = configs[0].clone();
    other.data_dir = dir.path().join("damaged");
    assert!(cairn_server::embed::restore_snapshot(&damaged, &other).is_err());
    assert!(!other.data_dir.join("db").exists());

    let mut handles = Vec::new();
    for config in configs.iter().cloned() {
        handles.push(common::cluster::start_member(config));
    }
    let mut running = Vec::new();
    for h in handles {
        running.push(h.await);
    }
    let restored =
        cairn_client::Client::connect_all(configs.iter().map(|c| c.listen_client_urls[0].clone()))
            .await
            .unwrap();
    eventually(20, "the restored cluster to serve", async || {
        restored.get(Get::key("k").prefix()).await.is_ok()
    })
    .await;
    let after = restored.get(Get::key("k").prefix()).await.unwrap();
    assert_eq!(after.kvs, before.kvs);
    // It is a new cluster: new members, and it takes writes.
    let members = restored.member_list().await.unwrap().members;
    assert_eq!(members.len(), 3);
    restored.put(Put::new("new", "1")).await.unwrap();
    for h in running {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_watches_work_through_followers_and_survive_a_new_leader() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let fc = cluster.client(follower).await;
    // Phase 1: a watch on a follower sees a write made through another member.
    let mut watcher = fc
        .watch(cairn_client::Watch::key("w").prefix())
        .await
        .unwrap();
    cluster
        .client(other)
        .await
        .put(Put::new("w/1", "x"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .unwrap()
        .unwrap()
    {
        cairn_client::WatchEvent::Events { events, .. } => {
            assert_eq!(events[0].kv.as_ref().unwrap().key, b"w/1")
        }
        other => panic!("expected events, got {other:?}"),
    }
    // Phase 2: a lease granted and kept alive through a follower (renewals
    // are forwarded to the leader, which alone keeps expiries).
    let lease = fc.lease_grant(2, 0).await.unwrap().id;
    fc.put(Put::new("owned", "1").lease(lease)).await.unwrap();
    let keep = fc.lease_keep_alive(lease).await.unwrap();
    let ttl = fc.lease_time_to_live(lease, true).await.unwrap();
    assert!(ttl.ttl > 0 && ttl.granted_ttl == 2, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"owned".to_vec()]);
    // Phase 3: the leader dies; kept alive, the lease outlives its TTL.
    cluster.kill(leader).await;
    cluster.leader().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = fc.get(Get::key("owned")).await.unwrap();
    assert_eq!(r.kvs.len(), 1, "a kept-alive lease must not expire");
    // Phase 4: no longer kept alive, it expires and takes its key along.
    drop(keep);
    eventually(20, "the lease to expire", async || {
        fc.get(Get::key("owned"))
            .await
            .is_ok_and(|r| r.kvs.is_empty())
    })
    .await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_that_would_lose_quorum_is_refused() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    // Every member started (published its name): the refusal below is
    // about reachability, not about members that never started.
    cluster.wait_started().await;
    let down = (leader + 1) % 3;
    let live = (leader + 2) % 3;
    cluster.kill(down).await;
    // The leader notices (no answer within an election timeout).
    let member = cluster.handle(leader).member().clone();
    let down_id = cluster.member_id(down);
    eventually(20, "the leader to see the member down", async || {
        !member.raft_status().active.contains(&down_id)
    })
    .await;
    // Removing the live follower would leave the leader and a dead member:
    // no quorum of reachable members. etcd refuses ("unhealthy cluster",
    // its active-quorum check); so does Cairn.
    let live_id = cluster.handle(live).member().identity().member_id;
    let c = cluster.client(leader).await;
    let err = c.member_remove(live_id).await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: unhealthy cluster"),
        "{err}"
    );
    // Removing the dead one is fine: two live voters remain.
    let r = c.member_remove(down_id).await.unwrap();
    assert_eq!(r.members.len(), 2);
    c.put(Put::new("still", "writable")).await.unwrap();
    cluster.stop_all().await;
}

/// Found by cairn-jepsen (membership nemesis, jepsen/FINDINGS.md #1): a
/// leader that applied its own removal kept driving raft, and raft-rs
/// panicked on the raft thread when the leader next persisted entries (it no
/// longer has a progress entry for itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_stops_it_and_the_others_go_on() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader).await;
    for i in 0..20 {
        c.put(Put::new(format!("before{i}"), "v")).await.unwrap();
    }
    // etcd's --strict-reconfig-check counts started members only.
    cluster.wait_started().await;
    // Phase 1: the leader removes itself, under writes.
    let leader_id = cluster.handle(leader).member().identity().member_id;
    let writer = {
        let c = cluster.client((leader + 1) % 3).await;
        tokio::spawn(async move {
            for i in 0..50 {
                let _ = c.put(Put::new(format!("during{i}"), "v")).await;
            }
        })
    };
    let r = common::cluster::reconfig(|| c.member_remove(leader_id))
        .await
        .unwrap();
    assert_eq!(r.members.len(), 2);
    // Phase 2: the removed member says so (its raft loop stopped; the binary
    // exits on this) instead of its raft thread panicking. Its loop ends
    // once, so Removed here means it did not fail.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        cluster.handle(leader).removed(),
    )
    .await
    .expect("the removed leader noticed its removal");
    writer.await.unwrap();
    // Phase 3: the other two elect a leader and keep every write.
    let other = (leader + 1) % 3;
    let c2 = cluster.client(other).await;
    eventually(30, "the others to accept writes", async || {
        c2.put(Put::new("after", "v")).await.is_ok()
    })
    .await;
    let got = c2
        .get(Get::key("before").prefix().count_only())
        .await
        .unwrap();
    assert_eq!(got.count, 20);
    let members = c2.member_list().await.unwrap().members;
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.id != leader_id));
    cluster.stop_all().await;
}

/// Adds a member as a learner (its `--initial-cluster` lists every member,
/// as `etcdctl member add` prints it), starts it, promotes it once it has
/// caught up; returns its id. Panics if it never catches up.
async fn add_and_promote(cluster: &mut Cluster) -> u64 {
    let mut config = cluster.joiner_config(String::new()).await;
    let peer = config.initial_advertise_peer_urls[0].clone();
    let mut initial: Vec<String> = cluster
        .slots
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s.config.name, s.config.initial_advertise_peer_urls[0]
            )
        })
        .collect();
    initial.push(format!("{}={peer}", config.name));
    config.initial_cluster = initial.join(",");
    let client = cluster.client_all().await;
    let added = common::cluster::reconfig(|| client.member_add(vec![peer.clone()], true))
        .await
        .unwrap();
    let id = added.member.unwrap().id;
    let handle = common::cluster::start_member(config.clone()).await;
    cluster.slots.push(common::cluster::Slot {
        config,
        handle: Some(handle),
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader().await;
        match cluster.client(leader).await.member_promote(id).await {
            Ok(_) => return id,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the learner never caught up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Found by cairn-jepsen (membership nemesis, jepsen/FINDINGS.md #3): a
/// member joining a cluster whose leader had itself been added later (so
/// its id is random, not derived from `--initial-cluster`) could not find
/// that leader's address until its first snapshot, which only the leader
/// could send once it heard back: it stayed a learner that never caught up
/// until the leadership moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_finds_a_leader_that_was_added_later() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    // Phase 1: a fourth member joins and is made the leader.
    let fourth = add_and_promote(&mut cluster).await;
    let leader = cluster.leader().await;
    cluster
        .client(leader)
        .await
        .move_leader(fourth)
        .await
        .unwrap();
    assert_eq!(cluster.leader().await, 3);
    // Phase 2: a fifth joins; it must hear from that leader and catch up.
    add_and_promote(&mut cluster).await;
    let c = cluster.client(4).await;
    c.put(Put::new("through-the-fifth", "v")).await.unwrap();
    cluster.stop_all().await;
}

/// Found by cairn-jepsen (pause nemesis, jepsen/FINDINGS.md #4): a leader
/// paused past its leases' expiry, once resumed, proposed their revokes; it
/// had been deposed meanwhile, so raft forwarded the proposals to the new
/// leader, which committed them although its own lessor had the leases
/// renewed. Leader-only decisions are now proposed with `propose_as_leader`:
/// appended only by a member that leads, never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_only_proposals_are_never_forwarded() {
    use cairn_proto::etcdserverpb::PutRequest;
    use cairn_server::entry::{self, Command};
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let put = |key: &str| {
        let command = Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        entry::encode(0, command).unwrap()
    };
    let raft_of = |i: usize| {
        cluster
            .handle(i)
            .member()
            .proposer()
            .replication()
            .raft
            .clone()
    };
    // A follower refuses it at once; an ordinary proposal is forwarded.
    let err = raft_of(follower).propose_as_leader(put("refused")).await;
    assert_eq!(
        err.map_err(cairn_server::error::EtcdError::from),
        Err(cairn_server::error::EtcdError::NotLeader)
    );
    raft_of(follower).propose(put("forwarded")).await.unwrap();
    // The leader appends it.
    raft_of(leader)
        .propose_as_leader(put("appended"))
        .await
        .unwrap();
    let c = cluster.client(leader).await;
    eventually(10, "both accepted writes applied", async || {
        let got = |k: &'static str| c.get(Get::key(k));
        matches!((got("forwarded").await, got("appended").await),
            (Ok(a), Ok(b)) if a.count == 1 && b.count == 1)
    })
    .await;
    assert_eq!(c.get(Get::key("refused")).await.unwrap().count, 0);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_key_rotation_reaches_every_member() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    let c = cluster.client_all().await;
    for i in 0..50 {
        c.put(Put::new(format!("k{i}"), "v")).await.unwrap();
    }
    let mut admin = cairn_proto::cairnpb::admin_client::AdminClient::connect(cluster.url(1))
        .await
        .unwrap();
    let rotated = admin
        .rotate_data_key(cairn_proto::cairnpb::RotateDataKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.key_id, 2);
    cluster.converge().await;
    // Every member made its own key 2 active, re-sealed, and dropped key 1.
    for i in 0..3 {
        let member = cluster.handle(i).member().clone();
        eventually(30, "old key dropped", async || {
            member.proposer().machine().keys().unwrap().key_ids() == vec![2]
        })
        .await;
    }
    let r = c.get(Get::key("k").prefix().count_only()).await.unwrap();
    assert_eq!(r.count, 50);
    cluster.stop_all().await;
}
