//! How long the log keeps entries: by count as etcd does (a member cut off
//! past the kept entries catches up by snapshot), and by size: large
//! entries go once they are older than the newest 4 MiB and, on the
//! leader, every follower has them.

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
