//! Table-driven tests of etcd's KV semantics, on an in-memory store.

use std::sync::Arc;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};

use prost::Message;

use super::*;
use crate::mvcc::Store;
use crate::storage::flaky::FlakyEngine;
use crate::storage::MemoryEngine;

/// Leases that exist: the odd ids.
struct OddLeases;
impl Leases for OddLeases {
    fn exists(&self, id: i64) -> bool {
        id % 2 == 1
    }
    fn attach(&mut self, _key: &[u8], _lease: i64) {}
    fn detach_range(&mut self, _range: &KeyRange) {}
}

fn store() -> Store {
    Store::open(Arc::new(MemoryEngine::new()), true).unwrap()
}

fn do_put(s: &Store, req: PutRequest) -> Result<PutResponse, EtcdError> {
    let mut t = s.write();
    let r = put(&mut t, &mut OddLeases, req)?;
    t.commit(None).unwrap();
    Ok(r)
}

fn p(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn keys(resp: &cairn_proto::etcdserverpb::RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// a=3 (rev 2), b=1 (rev 3), c=2 (rev 4), then a updated to 0 (rev 5).
fn seeded() -> Store {
    let s = store();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("a", "0")] {
        do_put(&s, p(k, v)).unwrap();
    }
    s
}

#[test]
fn range_table() {
    let s = seeded();
    let all = |f: fn(&mut RangeRequest)| {
        let mut r = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    // (name, request, keys, more, count)
    let cases: Vec<(&str, RangeRequest, Vec<&str>, bool, i64)> = vec![
        ("all", all(|_| {}), vec!["a", "b", "c"], false, 3),
        ("limit", all(|r| r.limit = 2), vec!["a", "b"], true, 3),
        (
            "limit exact",
            all(|r| r.limit = 3),
            vec!["a", "b", "c"],
            false,
            3,
        ),
        (
            "descend by key",
            all(|r| r.sort_order = SortOrder::Descend as i32),
            vec!["c", "b", "a"],
            false,
            3,
        ),
        (
            "by value ascending (order none means ascend for non-key targets)",
            all(|r| r.sort_target = SortTarget::Value as i32),
            vec!["a", "b", "c"],
            false,
            3,
        ),
        (
            "by version descending, ties in key order",
            all(|r| {
                r.sort_target = SortTarget::Version as i32;
                r.sort_order = SortOrder::Descend as i32;
            }),
            vec!["a", "b", "c"],
            false,
            3,
        ),
        (
            "by create descending with limit",
            all(|r| {
                r.sort_target = SortTarget::Create as i32;
                r.sort_order = SortOrder::Descend as i32;
                r.limit = 1;
            }),
            vec!["c"],
            true,
            3,
        ),
        (
            "by mod ascending",
            all(|r| {
                r.sort_target = SortTarget::Mod as i32;
                r.sort_order = SortOrder::Ascend as i32;
            }),
            vec!["b", "c", "a"],
            false,
            3,
        ),
        (
            "min mod filter keeps count",
            all(|r| r.min_mod_revision = 4),
            vec!["a", "c"],
            false,
            3,
        ),
        (
            "max mod filter",
            all(|r| r.max_mod_revision = 3),
            vec!["b"],
            false,
            3,
        ),
        (
            "min create filter",
            all(|r| r.min_create_revision = 3),
            vec!["b", "c"],
            false,
            3,
        ),
        (
            "max create filter with limit",
            all(|r| {
                r.max_create_revision = 3;
                r.limit = 1;
            }),
            vec!["a"],
            true,
            3,
        ),
        (
            "by key ascending with limit (no sort needed)",
            all(|r| {
                r.sort_order = SortOrder::Ascend as i32;
                r.limit = 2;
            }),
            vec!["a", "b"],
            true,
            3,
        ),
        (
            "by value with limit and no order: sorts the keys read",
            all(|r| {
                r.sort_target = SortTarget::Value as i32;
                r.limit = 2;
            }),
            vec!["a", "b"],
            true,
            3,
        ),
        ("count only", all(|r| r.count_only = true), vec![], false, 3),
        (
            "at revision 3",
            all(|r| r.revision = 3),
            vec!["a", "b"],
            false,
            2,
        ),
        (
            "single key",
            RangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            },
            vec!["b"],
            false,
            1,
        ),
        (
            "prefix end",
            RangeRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                ..Default::default()
            },
            vec!["a", "b"],
            false,
            2,
        ),
    ];
    for (name, req, want, more, count) in cases {
        let resp = range(&s, &req).unwrap();
        // What the gRPC port sends: the same bytes, whichever way it got
        // its key-values.
        let reply = range_reply(&s, &req).unwrap();
        assert_eq!(reply.encode_to_vec(), resp.encode_to_vec(), "{name}: wire");
        // A transaction's reads encode what they decode.
        let txn = s.write();
        let in_txn = range_reply(&txn, &req).unwrap();
        drop(txn);
        assert_eq!(in_txn, reply, "{name}: in a transaction");
        assert_eq!(keys(&resp), want, "{name}");
        assert_eq!(resp.more, more, "{name}: more");
        assert_eq!(resp.count, count, "{name}: count");
        assert_eq!(
            resp.header.map(|h| h.revision),
            Some(5),
            "{name}: header revision"
        );
    }
    let ko = range(&s, &all(|r| r.keys_only = true)).unwrap();
    assert!(ko.kvs.iter().all(|kv| kv.value.is_empty()));
    let ko_reply = range_reply(&s, &all(|r| r.keys_only = true)).unwrap();
    assert_eq!(
        ko_reply.encode_to_vec(),
        ko.encode_to_vec(),
        "keys only: wire"
    );
    assert_eq!(
        range(&s, &all(|r| r.revision = 6)),
        Err(EtcdError::FutureRev)
    );
    assert_eq!(
        range_reply(&s, &all(|r| r.revision = 6)),
        Err(EtcdError::FutureRev)
    );
}

#[test]
fn put_table() {
    let s = seeded();
    // prev_kv
    let r = do_put(
        &s,
        PutRequest {
            prev_kv: true,
            ..p("a", "9")
        },
    )
    .unwrap();
    assert_eq!(r.prev_kv.map(|kv| kv.value), Some(b"0".to_vec()));
    assert_eq!(r.header.map(|h| h.revision), Some(6));
    // ignore_value keeps the value; lease 1 exists.
    do_put(
        &s,
        PutRequest {
            key: b"a".to_vec(),
            ignore_value: true,
            lease: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let kv = range(
        &s,
        &RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        },
    )
    .unwrap()
    .kvs
    .remove(0);
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"9"[..], 1, 4)
    );
    // ignore_lease keeps the lease.
    do_put(
        &s,
        PutRequest {
            ignore_lease: true,
            ..p("a", "10")
        },
    )
    .unwrap();
    let kv = range(
        &s,
        &RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        },
    )
    .unwrap()
    .kvs
    .remove(0);
    assert_eq!(kv.lease, 1);
    // Errors leave the store untouched.
    let rev = s.current_revision();
    let errors = [
        (
            PutRequest {
                key: b"zz".to_vec(),
                ignore_value: true,
                ..Default::default()
            },
            EtcdError::KeyNotFound,
        ),
        (
            PutRequest {
                key: b"zz".to_vec(),
                ignore_lease: true,
                ..Default::default()
            },
            EtcdError::KeyNotFound,
        ),
        (
            PutRequest {
                lease: 2,
                ..p("a", "x")
            },
            EtcdError::LeaseNotFound,
        ),
    ];
    for (req, want) in errors {
        assert_eq!(do_put(&s, req.clone()), Err(want), "{req:?}");
    }
    assert_eq!(s.current_revision(), rev);
}

#[test]
fn delete_range_reports_and_takes_one_revision() {
    let s = seeded();
    let mut t = s.write();
    let r = delete_range(
        &mut t,
        &mut OddLeases,
        &DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
        },
    )
    .unwrap();
    t.commit(None).unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(r.prev_kvs.len(), 2);
    assert_eq!(r.header.map(|h| h.revision), Some(6));
    assert_eq!(s.current_revision(), 6);
    let mut t = s.write();
    let r = delete_range(
        &mut t,
        &mut OddLeases,
        &DeleteRangeRequest {
            key: b"nope".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    t.commit(None).unwrap();
    assert_eq!((r.deleted, r.header.map(|h| h.revision)), (0, Some(6)));
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, value: TargetUnion) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(value),
        range_end: vec![],
    }
}

fn op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn run_txn(s: &Store, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    let mut t = s.write();
    let r = txn(&mut t, &mut OddLeases, req)?;
    t.commit(None).unwrap();
    Ok(r)
}

#[test]
fn compare_table() {
    use CompareResult::*;
    use CompareTarget::*;
    let s = seeded(); // a: value "0", version 2, create 2, mod 5; b: "1", v1, c3, m3
    let cases = [
        (
            cmp("a", Value, Equal, TargetUnion::Value(b"0".to_vec())),
            true,
        ),
        (
            cmp("a", Value, Greater, TargetUnion::Value(b"".to_vec())),
            true,
        ),
        (
            cmp("a", Value, Less, TargetUnion::Value(b"1".to_vec())),
            true,
        ),
        (
            cmp("a", Value, NotEqual, TargetUnion::Value(b"0".to_vec())),
            false,
        ),
        (cmp("a", Version, Equal, TargetUnion::Version(2)), true),
        (cmp("a", Version, Greater, TargetUnion::Version(1)), true),
        (
            cmp("a", Create, Equal, TargetUnion::CreateRevision(2)),
            true,
        ),
        (
            cmp("a", Create, Less, TargetUnion::CreateRevision(2)),
            false,
        ),
        (cmp("a", Mod, Equal, TargetUnion::ModRevision(5)), true),
        (cmp("a", Mod, Greater, TargetUnion::ModRevision(4)), true),
        (cmp("a", Lease, Equal, TargetUnion::Lease(0)), true),
        (cmp("a", Lease, NotEqual, TargetUnion::Lease(0)), false),
        // A missing key compares as an empty key-value ...
        (cmp("zz", Version, Equal, TargetUnion::Version(0)), true),
        (
            cmp("zz", Create, Equal, TargetUnion::CreateRevision(0)),
            true,
        ),
        (cmp("zz", Mod, Equal, TargetUnion::ModRevision(0)), true),
        // ... except a value compare, which always fails.
        (cmp("zz", Value, Equal, TargetUnion::Value(vec![])), false),
        (
            cmp("zz", Value, NotEqual, TargetUnion::Value(b"x".to_vec())),
            false,
        ),
        // A target union of the wrong kind reads as zero.
        (
            cmp("a", Version, Greater, TargetUnion::ModRevision(99)),
            true,
        ),
        // A range compare must hold for every key of the range.
        (
            Compare {
                range_end: b"c".to_vec(),
                ..cmp("a", Version, Greater, TargetUnion::Version(0))
            },
            true,
        ),
        (
            Compare {
                range_end: b"c".to_vec(),
                ..cmp("a", Version, Equal, TargetUnion::Version(2))
            },
            false,
        ),
    ];
    for (c, want) in cases {
        let req = TxnRequest {
            compare: vec![c.clone()],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(run_txn(&s, &req).unwrap().succeeded, want, "{c:?}");
    }
}

#[test]
fn txn_runs_one_branch_at_one_revision() {
    let s = seeded();
    let req = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"0".to_vec()),
        )],
        success: vec![
            op(Request::RequestPut(p("x", "1"))),
            op(Request::RequestPut(p("y", "1"))),
            op(Request::RequestRange(RangeRequest {
                key: b"x".to_vec(),
                range_end: b"z".to_vec(),
                ..Default::default()
            })),
            op(Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })),
        ],
        failure: vec![op(Request::RequestPut(p("never", "1")))],
    };
    let r = run_txn(&s, &req).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.as_ref().map(|h| h.revision), Some(6));
    let Some(Response::ResponseRange(rr)) = &r.responses[2].response else {
        panic!("{r:?}")
    };
    assert_eq!(keys(rr), vec!["x", "y"], "reads see the txn's own writes");
    assert_eq!(rr.header.as_ref().map(|h| h.revision), Some(6));
    assert_eq!(s.current_revision(), 6);
    let now = range(
        &s,
        &RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(keys(&now), vec!["a", "c", "x", "y"]);
    assert!(now
        .kvs
        .iter()
        .filter(|kv| kv.key != b"a" && kv.key != b"c")
        .all(|kv| kv.mod_revision == 6));

    // A read-only txn takes no revision.
    let r = run_txn(
        &s,
        &TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![],
        },
    )
    .unwrap();
    assert!(r.succeeded);
    assert_eq!(s.current_revision(), 6);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let s = seeded();
    // Outer puts a=new; the nested compare on a's value still sees "0".
    let nested = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"0".to_vec()),
        )],
        success: vec![op(Request::RequestPut(p("n", "then")))],
        failure: vec![op(Request::RequestPut(p("n", "else")))],
    };
    let req = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestPut(p("a", "new"))),
            op(Request::RequestTxn(nested)),
        ],
        failure: vec![],
    };
    let r = run_txn(&s, &req).unwrap();
    let Some(Response::ResponseTxn(inner)) = &r.responses[1].response else {
        panic!()
    };
    assert!(inner.succeeded);
    let n = range(
        &s,
        &RangeRequest {
            key: b"n".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(n.kvs[0].value, b"then");
}

#[test]
fn failing_txn_writes_nothing() {
    let s = seeded();
    let rev = s.current_revision();
    let cases = [
        // A put with a missing lease after a good put.
        vec![
            op(Request::RequestPut(p("x", "1"))),
            op(Request::RequestPut(PutRequest {
                lease: 4,
                ..p("y", "1")
            })),
        ],
        // A range at a future revision.
        vec![
            op(Request::RequestPut(p("x", "1"))),
            op(Request::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                revision: rev + 1,
                ..Default::default()
            })),
        ],
    ];
    let wants = [EtcdError::LeaseNotFound, EtcdError::FutureRev];
    for (success, want) in cases.into_iter().zip(wants) {
        let req = TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        assert_eq!(run_txn(&s, &req), Err(want));
        assert_eq!(s.current_revision(), rev);
        assert!(range(
            &s,
            &RangeRequest {
                key: b"x".to_vec(),
                ..Default::default()
            }
        )
        .unwrap()
        .kvs
        .is_empty());
    }
}

#[test]
fn a_put_reads_the_previous_value_only_when_it_uses_it() {
    let engine = Arc::new(FlakyEngine::default());
    let s = Store::open(Arc::clone(&engine) as Arc<dyn crate::storage::Engine>, true).unwrap();
    do_put(&s, p("a", "1")).unwrap();
    // An overwrite: its version and creation revision come from the index.
    let before = engine.reads();
    let r = do_put(&s, p("a", "2")).unwrap();
    assert_eq!((r.prev_kv, engine.reads()), (None, before));
    // With prev_kv (and likewise ignore_value, ignore_lease) it reads.
    let r = do_put(
        &s,
        PutRequest {
            prev_kv: true,
            ..p("a", "3")
        },
    )
    .unwrap();
    assert_eq!(r.prev_kv.map(|kv| kv.value), Some(b"2".to_vec()));
    assert!(engine.reads() > before);
    let got = s
        .range(&KeyRange::new(b"a", b""), RangeOptions::default())
        .unwrap();
    assert_eq!((got.kvs[0].version, got.kvs[0].create_revision), (3, 2));
}
