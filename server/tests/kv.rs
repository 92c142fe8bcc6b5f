//! The KV and Maintenance services through cairn-client against an in-process member.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use cairn_client::proto::etcdserverpb::response_op::Response;
use cairn_client::{Compare, CompareOp, Delete, Get, Op, Put, SortOrder, SortTarget, Txn};
use tonic::Code;

fn status_of<T: std::fmt::Debug>(r: Result<T, cairn_client::Error>) -> (Code, String) {
    let err = r.expect_err("request must fail");
    let status = err.status().expect("a gRPC status");
    (status.code(), status.message().to_string())
}

#[tokio::test]
async fn put_get_delete_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;

    let empty = c.get(Get::key("foo")).await.unwrap();
    let h = empty.header.unwrap();
    assert_eq!(h.revision, 1, "a new member is at revision 1");
    assert_eq!(format!("{:x}", h.member_id), "8e9e05c52164694d");
    assert_eq!(format!("{:x}", h.cluster_id), "cdf818194e3a8c32");
    assert_eq!(h.raft_term, 2);

    let r = c.put(Put::new("foo", "bar")).await.unwrap();
    assert_eq!(r.header.unwrap().revision, 2);
    let r = c.put(Put::new("foo", "baz").prev_kv()).await.unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"bar");
    let got = c.get(Get::key("foo")).await.unwrap();
    let kv = &got.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(got.count, 1);

    for k in ["p/1", "p/2", "p/3", "q"] {
        c.put(Put::new(k, "v")).await.unwrap();
    }
    let page = c.get(Get::key("p/").prefix().limit(2)).await.unwrap();
    assert_eq!((page.kvs.len(), page.more, page.count), (2, true, 3));
    let desc = c
        .get(
            Get::key("p/")
                .prefix()
                .sort(SortTarget::Key, SortOrder::Descend)
                .keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(desc.kvs[0].key, b"p/3");
    assert!(desc.kvs[0].value.is_empty());
    let from = c
        .get(Get::key("p/2").from_key().count_only())
        .await
        .unwrap();
    assert_eq!((from.kvs.len(), from.count), (0, 3));
    let old = c.get(Get::key("foo").revision(2)).await.unwrap();
    assert_eq!(old.kvs[0].value, b"bar");

    let d = c
        .delete(Delete::key("p/").prefix().prev_kv())
        .await
        .unwrap();
    assert_eq!((d.deleted, d.prev_kvs.len()), (3, 3));
    assert_eq!(d.header.unwrap().revision, 8);
    assert!(c.get(Get::key("p/").prefix()).await.unwrap().kvs.is_empty());
    member.stop().await.unwrap();
}

#[tokio::test]
async fn errors_carry_etcd_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    c.put(Put::new("a", "1")).await.unwrap(); // 2
    c.put(Put::new("a", "2")).await.unwrap(); // 3
    c.put(Put::new("a", "3")).await.unwrap(); // 4
    c.compact(3, true).await.unwrap();

    let cases: Vec<(&str, Result<(), cairn_client::Error>, Code, &str)> = vec![
        (
            "empty key",
            c.get(Get::key("")).await.map(drop),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            "empty put key",
            c.put(Put::new("", "v")).await.map(drop),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            "compacted",
            c.get(Get::key("a").revision(2)).await.map(drop),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            "future",
            c.get(Get::key("a").revision(99)).await.map(drop),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "compact again",
            c.compact(3, false).await.map(drop),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            "compact future",
            c.compact(10, false).await.map(drop),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "ignore value on a missing key",
            c.put(Put::new("missing", "").ignore_value())
                .await
                .map(drop),
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            "value with ignore value",
            c.put(Put::new("a", "x").ignore_value()).await.map(drop),
            Code::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            "unknown lease",
            c.put(Put::new("a", "x").lease(12345)).await.map(drop),
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            "duplicate key",
            c.txn(Txn::new().and_then(vec![
                Op::put(Put::new("k", "1")),
                Op::put(Put::new("k", "2")),
            ]))
            .await
            .map(drop),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            "too many ops",
            c.txn(
                Txn::new().and_then(
                    (0..129)
                        .map(|i| Op::put(Put::new(format!("k{i}"), "v")))
                        .collect(),
                ),
            )
            .await
            .map(drop),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            "request too large",
            c.put(Put::new("big", vec![b'x'; 1536 * 1024]))
                .await
                .map(drop),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
    ];
    for (name, result, code, message) in cases {
        assert_eq!(status_of(result), (code, message.to_string()), "{name}");
    }
    // None of the failures wrote anything.
    assert_eq!(
        c.get(Get::key("a")).await.unwrap().header.unwrap().revision,
        4
    );
    // A value just under the limit is accepted.
    c.put(Put::new("big", vec![b'x'; 1536 * 1024 - 64]))
        .await
        .unwrap();
    member.stop().await.unwrap();
}

#[tokio::test]
async fn txn_compares_and_branches() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    c.put(Put::new("k", "v1")).await.unwrap(); // 2

    // Kubernetes-style create-if-absent: mod revision 0 means "does not exist".
    let create = |key: &'static str| {
        Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![Op::put(Put::new(key, "created"))])
            .or_else(vec![Op::get(Get::key(key))])
    };
    let r = c.txn(create("new")).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    let r = c.txn(create("new")).await.unwrap();
    assert!(!r.succeeded);
    let Some(Response::ResponseRange(rr)) = &r.responses[0].response else {
        panic!("{r:?}")
    };
    assert_eq!(rr.kvs[0].value, b"created");

    // Every compare target, all true.
    let r = c
        .txn(
            Txn::new()
                .when(vec![
                    Compare::value("k", CompareOp::Equal, "v1"),
                    Compare::version("k", CompareOp::Equal, 1),
                    Compare::create_revision("k", CompareOp::Equal, 2),
                    Compare::mod_revision("k", CompareOp::Less, 3),
                    Compare::lease("k", CompareOp::Equal, 0),
                    Compare::value("k", CompareOp::NotEqual, "zz"),
                    Compare::version("k", CompareOp::Greater, 0),
                ])
                .and_then(vec![
                    Op::put(Put::new("k", "v2")),
                    Op::delete(Delete::key("new")),
                    Op::txn(Txn::new().and_then(vec![Op::get(Get::key("k"))])),
                ]),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 4);
    let Some(Response::ResponseTxn(inner)) = &r.responses[2].response else {
        panic!("{r:?}")
    };
    let Some(Response::ResponseRange(rr)) = &inner.responses[0].response else {
        panic!("{r:?}")
    };
    assert_eq!(
        rr.kvs[0].value, b"v2",
        "later ops see earlier writes of the same txn"
    );
    let after = c.get(Get::key("k")).await.unwrap();
    assert_eq!((after.kvs[0].mod_revision, after.kvs[0].version), (4, 2));
    member.stop().await.unwrap();
}

#[tokio::test]
async fn maintenance_status_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    c.put(Put::new("a", "1")).await.unwrap();
    c.put(Put::new("b", "1")).await.unwrap();
    let s = c.status().await.unwrap();
    assert!(s.version.starts_with("3.5."), "{}", s.version);
    let h = s.header.unwrap();
    assert_eq!(s.leader, h.member_id);
    // Bootstrap (1), the leader's no-op (2), then the two puts, plus the
    // attribute publication somewhere in between.
    assert_eq!(s.raft_index, s.raft_applied_index);
    assert!(s.raft_index >= 4, "{}", s.raft_index);
    assert!(s.db_size > 0);
    assert!(s.db_size_in_use <= s.db_size);
    assert!(!s.is_learner);
    assert!(c.alarms().await.unwrap().alarms.is_empty());
    member.stop().await.unwrap();
}

#[tokio::test]
async fn compaction_keeps_latest_values() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    for i in 0..50 {
        c.put(Put::new(format!("key{}", i % 5), format!("v{i}")))
            .await
            .unwrap();
    }
    c.delete(Delete::key("key0")).await.unwrap(); // 52
    let before = c.get(Get::key("").all()).await.unwrap();
    c.compact(52, true).await.unwrap();
    let after = c.get(Get::key("").all()).await.unwrap();
    assert_eq!(before.kvs, after.kvs);
    assert_eq!(after.kvs.len(), 4);
    let at = c.get(Get::key("").all().revision(52)).await.unwrap();
    assert_eq!(at.kvs, after.kvs);
    member.stop().await.unwrap();
}
