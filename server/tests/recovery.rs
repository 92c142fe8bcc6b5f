//! Start-up checks and repairs: `--experimental-initial-corrupt-check` and
//! `--force-new-cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_client::{Get, Put};
use common::cluster::Cluster;

/// A member whose data differs from its peers' (one record changed behind
/// the store's back) refuses to start with the initial corruption check
/// on, with etcd's error; a healthy member starts with it, and skips a
/// peer that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_differs_refuses_to_start() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader).await;
    for i in 0..20 {
        c.put(Put::new(format!("k{i}"), "v")).await.unwrap();
    }
    cluster.converge().await;
    let victim = (leader + 1) % 3;
    let member = cluster.handle(victim).member().clone();
    let rev = c.get(Get::key("k5")).await.unwrap().kvs[0].mod_revision;
    common::damage_record(&member, b"k5", rev);
    drop((c, member));
    cluster.kill(victim).await;

    // The others keep serving; the damaged member, restarted with the
    // check, finds its hash differs from theirs and refuses to start.
    let mut config = cluster.slots[victim].config.clone();
    config.initial_corrupt_check = true;
    let err = cairn_server::embed::start(config.clone())
        .await
        .expect_err("the damaged member must not start");
    let id = cluster.member_id(victim);
    assert_eq!(
        err.to_string(),
        format!("{id:x} found data inconsistency with peers")
    );

    // A healthy member starts with the check on (the damaged one is down
    // and skipped).
    let healthy = (leader + 2) % 3;
    cluster.kill(healthy).await;
    cluster.slots[healthy].config.initial_corrupt_check = true;
    cluster.restart(healthy).await;
    let c = cluster.client(healthy).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(got) = c.get(Get::key("k5")).await {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .map(|got| assert_eq!(got.kvs[0].value, b"v"))
    .expect("the healthy member serves");
    cluster.stop_all().await;
}

/// Polls `f` until it returns Some, failing after `secs`.
async fn eventually<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Disaster recovery: a three-member cluster loses two members for good;
/// the survivor, started once with `--force-new-cluster`, serves alone
/// with all its data and revisions, its member and cluster ids, and a
/// member table of itself; a restart without the flag keeps it so; then
/// the cluster grows again with MemberAdd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_restarts_a_survivor_alone_with_its_data() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader).await;
    for i in 0..30 {
        c.put(Put::new(format!("k{i:02}"), format!("v{i}")))
            .await
            .unwrap();
    }
    c.delete(cairn_client::Delete::key("k00")).await.unwrap();
    let before = c.get(Get::key("k").prefix()).await.unwrap();
    let header = before.header.unwrap();
    assert_eq!(before.count, 29);
    cluster.converge().await;
    drop(c);
    cluster.stop_all().await;

    // m0 survives; m1 and m2 are gone for good.
    let survivor = 0;
    let id = cluster.member_id(survivor);
    let mut forced = cluster.slots[survivor].config.clone();
    forced.force_new_cluster = true;
    let handle = common::cluster::start_member(forced).await;
    cluster.slots[survivor].handle = Some(handle);
    let check_alone = async |cluster: &Cluster, writes: &str| {
        let c = cluster.client(survivor).await;
        // Serving alone: a write commits with this member only.
        let put = eventually(30, "the survivor to accept writes", async || {
            c.put(Put::new(writes, "x")).await.ok()
        })
        .await;
        let got = c.get(Get::key("k").prefix()).await.unwrap();
        assert_eq!(got.kvs, before.kvs, "every key, with its revisions");
        let h = got.header.unwrap();
        assert_eq!(h.cluster_id, header.cluster_id);
        assert_eq!(h.member_id, id);
        let members = c.member_list().await.unwrap().members;
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].id, id);
        assert!(!members[0].is_learner);
        put.header.unwrap().revision
    };
    let rev = check_alone(&cluster, "after-force").await;
    assert_eq!(
        rev,
        header.revision + 1,
        "revisions go on from the old ones"
    );
    let status = cluster.handle(survivor).member().raft_status();
    assert_eq!(status.voters.len(), 1, "{status:?}");

    // Restarted without the flag, it stays a one-member cluster.
    cluster.stop(survivor).await;
    cluster.restart(survivor).await;
    let rev = check_alone(&cluster, "after-restart").await;
    assert_eq!(rev, header.revision + 2);

    // And grows again with MemberAdd.
    let peer_url =
        |config: &cairn_server::embed::Config| config.initial_advertise_peer_urls[0].clone();
    let mut joiner = cluster.joiner_config(String::new()).await;
    joiner.initial_cluster = format!(
        "m0={},{}={}",
        peer_url(&cluster.slots[survivor].config),
        joiner.name,
        peer_url(&joiner)
    );
    let c = cluster.client(survivor).await;
    let added = c.member_add(vec![peer_url(&joiner)], false).await.unwrap();
    assert_eq!(added.members.len(), 2);
    let handle = common::cluster::start_member(joiner.clone()).await;
    cluster.slots.push(common::cluster::Slot {
        config: joiner,
        handle: Some(handle),
    });
    let new = cluster.slots.len() - 1;
    c.put(Put::new("after-add", "y")).await.unwrap();
    let nc = cluster.client(new).await;
    let got = eventually(30, "the new member to have the data", async || {
        let got = nc.get(Get::key("after-add").serializable()).await.ok()?;
        (got.count == 1).then_some(got)
    })
    .await;
    assert_eq!(got.kvs[0].value, b"y");
    let all = nc.get(Get::key("k").prefix().serializable()).await.unwrap();
    assert_eq!(all.kvs, before.kvs);
    cluster.stop_all().await;
}
