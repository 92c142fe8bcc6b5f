//! How long the log keeps entries: by count as etcd does (a member cut off
//! past the kept entries catches up by snapshot), and by size: large
//! entries go once they are older than the newest 4 MiB and, on the
//! leader, every follower has them; by either rule, only entries whose
//! effects the state machine has made durable.

use super::*;

/// One large proposal's tail: 4 of them fill the size rule's 4 MiB.
const LARGE: usize = 1024 * 1024;

/// Proposes `n` large entries through `node`, ids from `first_id`.
async fn propose_large(node: &TestNode, first_id: u64, n: u64) {
    let tail = vec![7u8; LARGE];
    for id in first_id..first_id + n {
        propose(node, id, &tail).await;
    }
}

/// The log's `(first, last)` indexes.
fn span(node: &TestNode) -> (u64, u64) {
    (
        node.log.first_index().unwrap(),
        node.log.last_index().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_go_once_every_follower_has_them() {
    // Compaction by count never fires here: only the size rule compacts.
    let cluster = Cluster::start_with(3, 1_000_000).await;
    let (away_at, away_id) = cluster.follower();
    let (leader, away) = (cluster.leader(), &cluster.nodes[away_at]);

    // Phase 1: everyone keeps up. Every member drops the entries older
    // than the newest 4 MiB, and keeps those.
    propose_large(leader, 1_000, 12).await;
    let last = leader.log.last_index().unwrap();
    for node in &cluster.nodes {
        until("every member applied the large entries", || {
            node.fake.applied_index() >= last
        })
        .await;
        until("every member compacted by size", || span(node).0 > 5).await;
        let (first, last) = span(node);
        assert!(last + 1 - first >= 4, "4 MiB is kept: {first}..={last}");
    }

    // Phase 2: one follower is cut off. The leader keeps everything it
    // lacks, however large; the other follower, which cannot know,
    // compacts by its own log.
    let needed = away.fake.applied_index() + 1;
    cluster.net.cut.lock().unwrap().insert(away_id);
    propose_large(leader, 2_000, 12).await;
    let (first, last) = span(leader);
    assert!(
        first <= needed,
        "the leader kept {needed}: its log is {first}..={last}"
    );
    let other = cluster
        .nodes
        .iter()
        .enumerate()
        .find(|(at, _)| *at != away_at && *at != cluster.leader)
        .map(|(_, n)| n)
        .unwrap();
    until("the other follower compacted past the one cut off", || {
        span(other).0 > needed
    })
    .await;

    // Phase 3: heal. The follower catches up from the leader's log, with
    // no snapshot, and then the leader compacts.
    cluster.net.cut.lock().unwrap().clear();
    until("the follower caught up", || {
        away.fake.applied_index() >= last
    })
    .await;
    assert_eq!(away.fake.state().restores, 0);
    assert_eq!(away.fake.data(), leader.fake.data());
    propose(leader, 3_000, b"after").await;
    until("the leader compacted by size", || span(leader).0 > needed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_during_compaction_catches_up_by_snapshot() {
    let cluster = Cluster::start(3).await;
    let (behind, behind_id) = cluster.follower();
    let (leader, behind) = (cluster.leader(), &cluster.nodes[behind]);

    // Phase 1: cut one follower off, and write enough for the leader to
    // compact its log past everything that follower has.
    cluster.net.cut.lock().unwrap().insert(behind_id);
    for i in 0..(SNAPSHOT_COUNT + CATCH_UP) * 3 {
        propose(leader, 100 + i, format!("v{i}").as_bytes()).await;
    }
    assert_eq!(behind.fake.state().restores, 0);

    // Phase 2: heal. The follower is behind the leader's first index, so
    // it gets the leader's state machine snapshot and installs it.
    cluster.net.cut.lock().unwrap().clear();
    propose(leader, 1, b"after").await;
    let target = leader.fake.applied_index();
    until("the follower caught up", || {
        behind.fake.applied_index() >= target
    })
    .await;
    assert!(behind.fake.state().restores >= 1);
    assert_eq!(behind.fake.data(), leader.fake.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_what_the_state_machine_has_not_made_durable() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader();

    // Phase 1: the leader's state machine makes nothing durable past
    // where it is now. The count rule compacts the others' logs; the
    // leader's keeps every entry after that point.
    let pinned = leader.fake.applied_index();
    *leader.fake.durable.lock().unwrap() = Some(pinned);
    for id in 0..(SNAPSHOT_COUNT + CATCH_UP) * 3 {
        propose(leader, 100 + id, b"small").await;
    }
    let last = leader.log.last_index().unwrap();
    for node in &cluster.nodes {
        until("every member applied the entries", || {
            node.fake.applied_index() >= last
        })
        .await;
    }
    for (at, node) in cluster.nodes.iter().enumerate() {
        if at != cluster.leader {
            until("a follower compacted by count", || {
                span(node).0 > pinned + 1
            })
            .await;
        }
    }
    // Every entry after the pinned one is kept: the log may start right
    // after it (a fresh log starts after the bootstrap's index, the
    // pinned one when the new leader had not applied its first entry).
    let (first, _) = span(leader);
    assert!(
        first <= pinned + 1,
        "the leader's log starts at {first}, past {pinned} + 1"
    );

    // Phase 2: durable up to the end. The next round compacts it.
    *leader.fake.durable.lock().unwrap() = None;
    propose(leader, 1_000, b"after").await;
    until("the leader compacted by count", || {
        span(leader).0 > pinned + 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_replays_the_log_persists_what_it_replayed() {
    // Phase 1: a lone voter applies a few entries as it goes: nothing
    // was replayed, so nothing is persisted.
    let net = Arc::new(Network::default());
    let mut node = start(1, &[1], &net);
    until("it leads", || node.handle.status().is_leader).await;
    for id in 0..5 {
        propose(&node, 100 + id, b"v").await;
    }
    let last = node.log.last_index().unwrap();
    assert_eq!(node.fake.state().persists, 0);

    // Phase 2: it restarts over the same log with a state machine that
    // lost every apply (a crash before any flush). The start replays
    // them, then persists once.
    node.handle.send(Input::Stop);
    node.thread.take().unwrap().join().unwrap();
    let log = Arc::clone(&node.log);
    let log_dir = std::mem::replace(&mut node._log_dir, tempfile::tempdir().unwrap());
    drop(node);
    let node = run(1, &net, SNAPSHOT_COUNT, log, log_dir);
    until("the log replayed", || node.fake.applied_index() >= last).await;
    assert_eq!(node.fake.data().len(), 5);
    until("the replayed state persisted", || {
        node.fake.state().persists == 1
    })
    .await;

    // Phase 3: entries applied after the replay are not persisted again.
    propose(&node, 200, b"after").await;
    assert_eq!(node.fake.state().persists, 1);
}
