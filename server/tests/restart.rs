//! Restart: everything acknowledged before a stop is there after, at the same revisions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use cairn_client::{Delete, Get, Op, Put, Txn};

#[tokio::test]
async fn restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
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
    let last = c
        .get(Get::key("").all())
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let snapshots: Vec<_> = {
        let mut v = Vec::new();
        for rev in 10..=last {
            v.push(c.get(Get::key("").all().revision(rev)).await.unwrap().kvs);
        }
        v
    };
    let status = c.status().await.unwrap();
    member.stop().await.unwrap();

    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    let now = c.get(Get::key("").all()).await.unwrap();
    assert_eq!(now.header.unwrap().revision, last);
    for (i, rev) in (10..=last).enumerate() {
        assert_eq!(
            c.get(Get::key("").all().revision(rev)).await.unwrap().kvs,
            snapshots[i],
            "revision {rev}"
        );
    }
    assert!(
        c.get(Get::key("").all().revision(9)).await.is_err(),
        "compaction survives restart"
    );
    let after = c.status().await.unwrap();
    // The new term's no-op (and the member's new client URL) are applied on top.
    assert!(after.raft_applied_index > status.raft_applied_index);
    assert_eq!(
        after.header.unwrap().member_id,
        status.header.unwrap().member_id
    );
    // Writing continues the numbering.
    let r = c.put(Put::new("k00", "after")).await.unwrap();
    assert_eq!(r.header.unwrap().revision, last + 1);
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
