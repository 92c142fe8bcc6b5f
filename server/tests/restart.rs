//! Restart: everything acknowledged before a stop, or before a crash, is
//! there after, at the same revisions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::Path;

use cairn_client::{Delete, Get, Op, Put, Txn};
use cairn_proto::mvccpb::KeyValue;
use cairn_server::mvcc::META_APPLIED_INDEX;
use cairn_server::storage::{Cf, Engine as _, RocksEngine};

/// Puts, a delete, a txn and a compaction at 10; returns the revision
/// after them.
async fn write_history(c: &cairn_client::Client) -> i64 {
    for i in 0..30 {
        c.put(Put::new(format!("k{:02}", i % 10), format!("v{i}")))
            .await
            .unwrap();
    }
    c.delete(Delete::key("k05")).await.unwrap();
    c.txn(Txn::new().and_then(vec![
        Op::put(Put::new("t1", "x")),
        Op::put(Put::new("t2", "y")),
    ]))
    .await
    .unwrap();
    c.compact(10, true).await.unwrap();
    c.get(Get::key("").all())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision
}

/// Every key at each revision from 10 (the compaction) to `last`.
async fn history(c: &cairn_client::Client, last: i64) -> Vec<Vec<KeyValue>> {
    let mut v = Vec::new();
    for rev in 10..=last {
        v.push(c.get(Get::key("").all().revision(rev)).await.unwrap().kvs);
    }
    v
}

/// Checks that `c`'s member holds `before` (from [`history`]) at the same
/// revisions, the compaction at 10 and no revision past `last` (by
/// linearizable reads: the new term's no-op is applied once they answer).
async fn same_history(c: &cairn_client::Client, last: i64, before: &[Vec<KeyValue>]) {
    let now = c.get(Get::key("").all()).await.unwrap();
    assert_eq!(now.header.unwrap().revision, last);
    assert_eq!(history(c, last).await, before);
    assert!(
        c.get(Get::key("").all().revision(9)).await.is_err(),
        "compaction survives restart"
    );
}

/// Checks that the next write takes the revision after `last`.
async fn writes_continue(c: &cairn_client::Client, last: i64) {
    let r = c.put(Put::new("k00", "after")).await.unwrap();
    assert_eq!(r.header.unwrap().revision, last + 1);
}

#[tokio::test]
async fn restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    let last = write_history(&c).await;
    let before = history(&c, last).await;
    let status = c.status().await.unwrap();
    member.stop().await.unwrap();

    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    same_history(&c, last, &before).await;
    let after = c.status().await.unwrap();
    // The new term's no-op (and the member's new client URL) are applied on top.
    assert!(after.raft_applied_index > status.raft_applied_index);
    assert_eq!(
        after.header.unwrap().member_id,
        status.header.unwrap().member_id
    );
    writes_continue(&c, last).await;
    member.stop().await.unwrap();
}

/// A copy of the tree `from` as it is on disk now, what the page cache
/// holds included: what a kill -9 of the member would leave.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_image(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_crash_loses_no_acknowledged_write_the_log_replays_them_at_their_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    let last = write_history(&c).await;
    let before = history(&c, last).await;
    let applied = c.status().await.unwrap().raft_applied_index;

    // What a kill -9 now would leave: the applies since the first state
    // are in RocksDB's memtables, not in its files nor its WAL, so the
    // image's store is behind and only the raft log's replay can bring
    // back what this test checks.
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    {
        let db = RocksEngine::open_existing(&image.path().join("member").join("db"))
            .unwrap()
            .unwrap();
        let stored = db.get(Cf::Meta, META_APPLIED_INDEX).unwrap().unwrap();
        let stored = i64::from_be_bytes(stored.try_into().unwrap());
        assert!(
            (stored as u64) < applied,
            "the image's store has applied {stored} of {applied}"
        );
    }
    member.stop().await.unwrap();

    let member = common::start(image.path()).await;
    let c = common::client(&member).await;
    same_history(&c, last, &before).await;
    writes_continue(&c, last).await;
    member.stop().await.unwrap();
}

#[tokio::test]
async fn stop_does_not_wait_forever_for_a_silent_client() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let addr = member.client_urls()[0]
        .trim_start_matches("http://")
        .to_string();
    // A connection that never speaks HTTP/2 and never closes.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let c = common::client(&member).await;
    c.put(Put::new("k", "v")).await.unwrap();
    // With the clock paused, the grace period passes as soon as nothing else
    // can run. (Paused only now: raft runs on its own thread, in real time,
    // and a paused clock would time a proposal out at once.)
    tokio::time::pause();
    member.stop().await.unwrap();
}
