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
    let kv = cairn_proto::mvccpb::KeyValue {
        key: b"k5".to_vec(),
        value: b"garbage".to_vec(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        lease: 0,
    };
    let mut batch = cairn_server::storage::WriteBatch::new();
    batch.put(
        cairn_server::storage::Cf::Kv,
        cairn_server::mvcc::Revision::new(rev, 0).record_key(false),
        prost::Message::encode_to_vec(&kv),
    );
    member.store().engine().write(batch, true).unwrap();
    drop((c, member));
    cluster.kill(victim).await;

    // The others keep serving; the damaged member, restarted with the
    // check, finds its hash differs from theirs and refuses to start.
    let mut config = cluster.slots[victim].config.clone();
    config.initial_corrupt_check = true;
    let err = cairn_server::embed::start(config.clone())
        .await
        .expect_err("the damaged member must not start");
    let id = cairn_server::embed::member_id(
        &config.initial_advertise_peer_urls,
        &config.initial_cluster_token,
    );
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
