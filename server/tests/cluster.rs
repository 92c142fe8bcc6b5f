//! Three members in one process: election, replication through every
//! member, leader loss, catching up by snapshot, membership changes,
//! restart of the whole cluster, and a linearizability smoke test.
//! Written as phases; each phase's assertion says what it proves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;
/// The Wing–Gong/Lowe checker of cairn-jepsen (tested there).
use cairn_jepsen::checker::linearizable as linearizability;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_client::{Compare, CompareOp, Get, Op, Put, Txn};
use common::cluster::Cluster;

fn value_of(resp: &cairn_proto::etcdserverpb::RangeResponse) -> Option<String> {
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_through_every_member() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;

    // Phase 1: a write through each member (followers forward to the leader).
    for i in 0..3 {
        let c = cluster.client(i).await;
        c.put(Put::new(format!("from-{i}"), format!("v{i}")))
            .await
            .unwrap();
    }
    // Phase 2: every member reads every write, linearizably and (once
    // converged) serializably.
    cluster.converge().await;
    for i in 0..3 {
        let c = cluster.client(i).await;
        for j in 0..3 {
            let key = format!("from-{j}");
            let lin = c.get(Get::key(key.clone())).await.unwrap();
            assert_eq!(
                value_of(&lin),
                Some(format!("v{j}")),
                "member {i} key {key}"
            );
            let ser = c.get(Get::key(key.clone()).serializable()).await.unwrap();
            assert_eq!(value_of(&ser), Some(format!("v{j}")));
        }
    }
    // Phase 3: member list, status and HashKV agree.
    let c = cluster.client(0).await;
    // Names, client URLs and zones are published once each member has started.
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = c.member_list().await.unwrap();
        if list
            .members
            .iter()
            .all(|m| !m.name.is_empty() && !m.client_ur_ls.is_empty() && !m.zone.is_empty())
        {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "attributes not published: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list.members.len(), 3);
    let mut zones: Vec<String> = list.members.iter().map(|m| m.zone.clone()).collect();
    zones.sort();
    assert_eq!(zones, ["az-a", "az-b", "az-c"]);
    let leader_id = cluster.handle(leader).member().identity().member_id;
    let mut hashes = Vec::new();
    let rev = c.get(Get::key("x")).await.unwrap().header.unwrap().revision;
    cluster.converge().await;
    for i in 0..3 {
        let ci = cluster.client(i).await;
        let s = ci.status().await.unwrap();
        assert_eq!(s.leader, leader_id);
        assert_eq!(s.zone, cluster.slots[i].config.zone);
        hashes.push(ci.hash_kv(rev).await.unwrap().hash);
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    // Phase 4: MoveLeader hands the leadership to another member.
    let target = (leader + 1) % 3;
    let target_id = cluster.handle(target).member().identity().member_id;
    cluster
        .client(leader)
        .await
        .move_leader(target_id)
        .await
        .unwrap();
    assert_eq!(cluster.leader().await, target);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let client = cluster.client_all().await;
    let mut acked = Vec::new();
    for i in 0..200 {
        client.put(Put::new(format!("k{i:04}"), "v")).await.unwrap();
        acked.push(i);
    }
    // Phase 1: the leader goes away.
    cluster.kill(leader).await;
    let lost_at = Instant::now();
    // Phase 2: the others elect a new leader; the next write succeeds.
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let survivors: Vec<usize> = cluster.running().collect();
    let c = cluster.client(survivors[0]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.put(Put::new("after", "ok")).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no write after leader loss: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!(
        "leader loss to next successful write: {:?}",
        lost_at.elapsed()
    );
    // Phase 3: every acknowledged write is on every survivor.
    cluster.converge().await;
    for i in survivors {
        let c = cluster.client(i).await;
        let r = c.get(Get::key("k").prefix().serializable()).await.unwrap();
        assert_eq!(r.kvs.len(), acked.len(), "member {i}");
    }
    // Phase 4: the old leader comes back as a follower and catches up.
    cluster.restart(leader).await;
    cluster.converge().await;
    let r = cluster
        .client(leader)
        .await
        .get(Get::key("after").serializable())
        .await
        .unwrap();
    assert_eq!(value_of(&r).as_deref(), Some("ok"));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    // A short log: compacted every 1,000 entries, keeping 100.
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_count = 1000;
        c.snapshot_catchup_entries = 100;
    })
    .await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.kill(follower).await;
    // Phase 1: 20,000 writes and a compaction while it is away.
    let c = cluster.client(leader).await;
    let writers: Vec<_> = (0..50)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    c.put(Put::new(format!("w{w:02}/{i:03}"), format!("{i}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let rev = c.get(Get::key("x")).await.unwrap().header.unwrap().revision;
    c.compact(rev - 100, true).await.unwrap();
    let first = cluster.handle(leader).member().raft_status();
    assert!(first.commit > 20_000);
    // Phase 2: back, it can only catch up by snapshot (the log moved on).
    cluster.restart(follower).await;
    cluster.converge().await;
    let f = cluster.client(follower).await;
    let r = f
        .get(Get::key("w").prefix().count_only().serializable())
        .await
        .unwrap();
    assert_eq!(r.count, 20_000);
    let h_leader = c.hash_kv(rev).await.unwrap();
    let h_follower = f.hash_kv(rev).await.unwrap();
    assert_eq!(h_leader.hash, h_follower.hash);
    assert_eq!(h_leader.compact_revision, h_follower.compact_revision);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_promoted_and_a_member_removed_under_load() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    let client = cluster.client_all().await;
    let load_client = client.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = stop.clone();
    let load = tokio::spawn(async move {
        let mut n = 0;
        while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
            if load_client
                .put(Put::new(format!("load{n}"), "x"))
                .await
                .is_ok()
            {
                n += 1;
            }
        }
        n
    });
    // Phase 1: add a learner, start it with --initial-cluster-state existing.
    let initial: Vec<String> = cluster
        .slots
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s.config.name, s.config.initial_advertise_peer_urls[0]
            )
        })
        .collect();
    let mut config = cluster.joiner_config(String::new()).await;
    let peer = config.initial_advertise_peer_urls[0].clone();
    config.initial_cluster = format!("{},{}={peer}", initial.join(","), config.name);
    let added = common::cluster::reconfig(|| client.member_add(vec![peer.clone()], true))
        .await
        .unwrap();
    let new_id = added.member.unwrap().id;
    assert!(added.members.iter().any(|m| m.id == new_id && m.is_learner));
    // A second learner is refused (etcd allows one at a time).
    let refused =
        common::cluster::reconfig(|| client.member_add(vec!["http://127.0.0.1:1".into()], true))
            .await
            .unwrap_err();
    assert!(
        refused.to_string().contains("too many learner members"),
        "{refused}"
    );
    let handle = common::cluster::start_member(config.clone()).await;
    cluster.slots.push(common::cluster::Slot {
        config,
        handle: Some(handle),
    });
    // Phase 2: promote once it has caught up (the leader refuses before).
    let leader = cluster.leader().await;
    let lc = cluster.client(leader).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lc.member_promote(new_id).await {
            Ok(r) => {
                assert!(r.members.iter().all(|m| !m.is_learner));
                break;
            }
            Err(e) => {
                // Not caught up yet; or (etcd's --strict-reconfig-check)
                // the original members have not all published their names
                // yet under the load: they count as started only then.
                let e = e.to_string();
                assert!(
                    e.contains("in sync with leader") || e.contains("not enough started members"),
                    "unexpected promote error: {e}"
                );
                assert!(Instant::now() < deadline, "learner never caught up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Promoting a voter is refused.
    let again = lc.member_promote(new_id).await.unwrap_err();
    assert!(
        again
            .to_string()
            .contains("can only promote a learner member"),
        "{again}"
    );
    // Phase 3: remove one of the original (non-leader) members.
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = cluster.handle(victim).member().identity().member_id;
    let r = common::cluster::reconfig(|| lc.member_remove(victim_id))
        .await
        .unwrap();
    assert_eq!(r.members.len(), 3);
    assert!(r.members.iter().all(|m| m.id != victim_id));
    cluster.kill(victim).await;
    // Removing an unknown member fails as etcd does.
    let missing = lc.member_remove(victim_id).await.unwrap_err();
    assert!(
        missing.to_string().contains("member not found"),
        "{missing}"
    );
    // Phase 4: the cluster keeps taking writes, and the new member has them.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = load.await.unwrap();
    assert!(written > 0);
    lc.put(Put::new("final", "1")).await.unwrap();
    cluster.converge().await;
    let nc = cluster.client(3).await;
    let r = nc.get(Get::key("final")).await.unwrap();
    assert_eq!(value_of(&r).as_deref(), Some("1"));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_from_disk() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.leader().await;
    let c = cluster.client_all().await;
    for i in 0..100 {
        c.put(Put::new(format!("k{i}"), format!("{i}")))
            .await
            .unwrap();
    }
    let rev = c
        .get(Get::key("k1"))
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    cluster.stop_all().await;
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.leader().await;
    for i in 0..3 {
        let ci = cluster.client(i).await;
        let r = ci.get(Get::key("k").prefix()).await.unwrap();
        assert_eq!(r.kvs.len(), 100);
        assert_eq!(r.header.unwrap().revision, rev);
    }
    cluster.stop_all().await;
}

/// One client's view of a register operation, for the checker.
async fn run_register_client(
    id: usize,
    client: cairn_client::Client,
    start: Instant,
    ops: usize,
) -> Vec<linearizability::Operation> {
    use linearizability::{Op as LOp, Operation};
    let mut history = Vec::new();
    let tick = |t: Instant| t.duration_since(start).as_nanos() as u64;
    for n in 0..ops {
        let key = format!("r{}", (id + n) % 3);
        let value = (id * 1_000_000 + n) as u64;
        let invoke = tick(Instant::now());
        match n % 3 {
            0 => {
                // A failed read has no effect and tells nothing: not recorded.
                if let Ok(r) = client.get(Get::key(key.clone())).await {
                    history.push(Operation::read(
                        id,
                        key,
                        invoke,
                        tick(Instant::now()),
                        value_of(&r).map(|v| v.parse().unwrap()),
                    ));
                }
            }
            1 => match client.put(Put::new(key.clone(), value.to_string())).await {
                Ok(_) => history.push(Operation::write(
                    id,
                    key,
                    invoke,
                    tick(Instant::now()),
                    value,
                )),
                // Failed or unknown: it may have happened.
                Err(_) => history.push(Operation::unknown(id, key, LOp::Write(value), invoke)),
            },
            _ => {
                // CAS from the value last read by anyone: read then compare.
                let current = client
                    .get(Get::key(key.clone()).serializable())
                    .await
                    .ok()
                    .and_then(|r| value_of(&r))
                    .and_then(|v| v.parse::<u64>().ok());
                let compare = match current {
                    Some(v) => Compare::value(key.clone(), CompareOp::Equal, v.to_string()),
                    None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                };
                let invoke = tick(Instant::now());
                let txn = Txn::new()
                    .when(vec![compare])
                    .and_then(vec![Op::put(Put::new(key.clone(), value.to_string()))]);
                let op = LOp::Cas {
                    expect: current,
                    new: value,
                };
                match client.txn(txn).await {
                    Ok(r) => history.push(Operation::cas(
                        id,
                        key,
                        invoke,
                        tick(Instant::now()),
                        current,
                        value,
                        r.succeeded,
                    )),
                    Err(_) => history.push(Operation::unknown(id, key, op, invoke)),
                }
            }
        }
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_while_the_leader_is_killed() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let start = Instant::now();
    // Six clients, two per member, each pinned to its member.
    let mut tasks = Vec::new();
    for id in 0..6 {
        let client = cluster.client(id % 3).await;
        tasks.push(tokio::spawn(run_register_client(id, client, start, 150)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(leader).await;
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let ok = history
        .iter()
        .filter(|o| matches!(o.outcome, linearizability::Outcome::Ok(_)))
        .count();
    assert!(
        ok > 100,
        "too few completed operations to mean anything: {ok}"
    );
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for o in &history {
        *per_key.entry(o.key.clone()).or_default() += 1;
    }
    eprintln!("{} operations ({ok} ok) over {per_key:?}", history.len());
    if let Err(e) = linearizability::check(&history) {
        panic!("history is not linearizable: {e}");
    }
    cluster.stop_all().await;
}
