//! Fuzzing the path a write takes, without a network: the bytes a client
//! sends are decoded as the gRPC layer decodes them, validated as the gRPC
//! layer validates them, turned into a raft entry by [`entry::encode`], and
//! applied on three independent state machines over memory engines.
//!
//! The invariant (an entry accepted into the raft log applies on every
//! member, forever): every request is either refused before an entry exists,
//! or its entry applies on all three machines without a fatal error, with
//! the same answer for the client and the same resulting state.
//!
//! A proptest rather than cargo-fuzz: it runs on the stable toolchain with
//! the test runner CI already has, its cases are seeded and shrink to a
//! minimal failing request, and it builds no second, instrumented copy of
//! RocksDB. The generators are shaped by etcd's API (every request kind,
//! nesting up to past the decoder's limit, huge and inverted ranges, every
//! enum value and some that are not), and a second property mutates encoded
//! requests byte by byte.
//!
//! CI runs a short run (256 cases per property). The long run:
//! `CAIRN_FUZZ_CASES=300000 cargo test -p cairn-server --test fuzz_requests`
//! (plain `cargo test`: nextest stops any test after five minutes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;

use cairn_proto::etcdserverpb::compare::TargetUnion;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_server::entry::{self, Command};
use cairn_server::grpc::validate;
use cairn_server::lease::{Lessor, LessorConfig, TokioClock};
use cairn_server::machine::{Applied, Machine};
use cairn_server::mvcc::Store;
use cairn_server::storage::MemoryEngine;
use proptest::prelude::*;
use prost::Message;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

fn cases() -> u32 {
    std::env::var("CAIRN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

// ---- Generators, shaped by etcd's API --------------------------------------

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-e]{1,3}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => Just(vec![0]),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => Just(vec![0]),
        2 => key(),
    ]
}

fn revision() -> impl Strategy<Value = i64> {
    prop_oneof![4 => -3i64..40, 1 => any::<i64>()]
}

fn range() -> impl Strategy<Value = RangeRequest> {
    (
        (
            key(),
            range_end(),
            prop_oneof![-2i64..5, any::<i64>()],
            revision(),
        ),
        (
            -2i32..5,
            -2i32..7,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (revision(), revision(), revision(), revision()),
    )
        .prop_map(
            |((key, range_end, limit, revision), (order, target, ser, keys, count), mm)| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order: order,
                    sort_target: target,
                    serializable: ser,
                    keys_only: keys,
                    count_only: count,
                    min_mod_revision: mm.0,
                    max_mod_revision: mm.1,
                    min_create_revision: mm.2,
                    max_create_revision: mm.3,
                }
            },
        )
}

fn lease_id() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 3 => 1i64..4, 1 => any::<i64>()]
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        proptest::collection::vec(any::<u8>(), 0..16),
        lease_id(),
        any::<bool>(),
        prop_oneof![5 => Just(false), 1 => Just(true)],
        prop_oneof![5 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        revision().prop_map(TargetUnion::Version),
        revision().prop_map(TargetUnion::CreateRevision),
        revision().prop_map(TargetUnion::ModRevision),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(TargetUnion::Value),
        lease_id().prop_map(TargetUnion::Lease),
    ];
    (
        -1i32..5,
        -1i32..6,
        key(),
        range_end(),
        proptest::option::of(target),
    )
        .prop_map(|(result, target, key, range_end, target_union)| Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
}

fn leaf_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        range().prop_map(|r| Some(Request::RequestRange(r))),
        put().prop_map(|r| Some(Request::RequestPut(r))),
        delete().prop_map(|r| Some(Request::RequestDeleteRange(r))),
        Just(None),
    ]
    .prop_map(|request| RequestOp { request })
}

/// Transactions with nested transactions, a few levels deep and wide.
fn txn() -> impl Strategy<Value = TxnRequest> {
    let leaf = (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(leaf_op(), 0..4),
        proptest::collection::vec(leaf_op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(
                prop_oneof![
                    2 => leaf_op(),
                    1 => inner.clone().prop_map(|t| RequestOp { request: Some(Request::RequestTxn(t)) }),
                ],
                0..4,
            ),
            proptest::collection::vec(
                inner.prop_map(|t| RequestOp {
                    request: Some(Request::RequestTxn(t)),
                }),
                0..2,
            ),
        )
            .prop_map(|(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            })
    })
}

/// A chain of single nested transactions around one operation, from one
/// level to past what the decoder accepts (the request of the bug that
/// stopped every member).
fn deep_txn() -> impl Strategy<Value = TxnRequest> {
    (1usize..=140, leaf_op(), any::<bool>()).prop_map(|(depth, op, in_failure)| {
        let mut txn = TxnRequest {
            success: vec![op],
            ..Default::default()
        };
        for _ in 1..depth {
            let nested = RequestOp {
                request: Some(Request::RequestTxn(txn)),
            };
            txn = if in_failure {
                TxnRequest {
                    failure: vec![nested],
                    ..Default::default()
                }
            } else {
                TxnRequest {
                    success: vec![nested],
                    ..Default::default()
                }
            };
        }
        txn
    })
}

/// A write request as a client sends it: which rpc, and the encoded message.
#[derive(Debug, Clone)]
enum Wire {
    Put(Vec<u8>),
    DeleteRange(Vec<u8>),
    Txn(Vec<u8>),
    Compact(Vec<u8>),
    LeaseGrant(Vec<u8>),
    LeaseRevoke(Vec<u8>),
    Alarm(Vec<u8>),
}

impl Wire {
    fn bytes_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Wire::Put(b)
            | Wire::DeleteRange(b)
            | Wire::Txn(b)
            | Wire::Compact(b)
            | Wire::LeaseGrant(b)
            | Wire::LeaseRevoke(b)
            | Wire::Alarm(b) => b,
        }
    }
}

fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        3 => put().prop_map(|r| Wire::Put(r.encode_to_vec())),
        2 => delete().prop_map(|r| Wire::DeleteRange(r.encode_to_vec())),
        4 => txn().prop_map(|r| Wire::Txn(r.encode_to_vec())),
        3 => deep_txn().prop_map(|r| Wire::Txn(r.encode_to_vec())),
        1 => (revision(), any::<bool>())
            .prop_map(|(revision, physical)| Wire::Compact(CompactionRequest { revision, physical }.encode_to_vec())),
        1 => (prop_oneof![-5i64..20, any::<i64>()], lease_id())
            .prop_map(|(ttl, id)| Wire::LeaseGrant(LeaseGrantRequest { ttl, id }.encode_to_vec())),
        1 => lease_id().prop_map(|id| Wire::LeaseRevoke(LeaseRevokeRequest { id }.encode_to_vec())),
        1 => (-1i32..3, 0u64..3, -1i32..4)
            .prop_map(|(action, member_id, alarm)| Wire::Alarm(AlarmRequest { action, member_id, alarm }.encode_to_vec())),
    ]
}

/// A byte-level mutation of an encoded request.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask,
        Mutation::Flip(..) => {}
        Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
        Mutation::Insert(at, more) => {
            let at = at % (len + 1);
            bytes.splice(at..at, more.iter().copied());
        }
    }
}

// ---- The path ---------------------------------------------------------------

/// Decodes and validates as the gRPC layer does, then builds the command a
/// member proposes. `None`: refused before any entry exists.
fn accept(wire: &Wire) -> Option<Command> {
    fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
        M::decode(bytes).ok()
    }
    match wire {
        Wire::Put(b) => {
            let r: PutRequest = decode(b)?;
            validate::put(&r).ok()?;
            Some(Command::Put(r))
        }
        Wire::DeleteRange(b) => {
            let r: DeleteRangeRequest = decode(b)?;
            validate::delete_range(&r).ok()?;
            Some(Command::DeleteRange(r))
        }
        Wire::Txn(b) => {
            let r: TxnRequest = decode(b)?;
            validate::txn(&r, MAX_TXN_OPS).ok()?;
            Some(Command::Txn(r))
        }
        Wire::Compact(b) => Some(Command::Compaction(decode(b)?)),
        Wire::LeaseGrant(b) => Some(Command::LeaseGrant(decode(b)?)),
        Wire::LeaseRevoke(b) => Some(Command::LeaseRevoke(decode(b)?)),
        Wire::Alarm(b) => Some(Command::Alarm(decode(b)?)),
    }
}

/// One member's state machine over a memory engine, with a little history
/// (keys a..c, a lease, a deletion), so requests have something to meet.
fn member() -> (Arc<Machine>, u64) {
    let store = Arc::new(Store::open(Arc::new(MemoryEngine::new()), true).unwrap());
    let lessor = Arc::new(Lessor::new(LessorConfig::default(), Arc::new(TokioClock)));
    let machine = Arc::new(Machine::new(store, lessor));
    let history = [
        Command::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 1 }),
        Command::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        }),
        Command::Put(PutRequest {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
            lease: 1,
            ..Default::default()
        }),
        Command::Put(PutRequest {
            key: b"c".to_vec(),
            value: b"3".to_vec(),
            ..Default::default()
        }),
        Command::DeleteRange(DeleteRangeRequest {
            key: b"c".to_vec(),
            ..Default::default()
        }),
    ];
    let mut index = 1;
    for command in history {
        index += 1;
        machine
            .apply_entry(index, &entry::encode(0, command).unwrap().into())
            .unwrap();
    }
    (machine, index)
}

/// The property: refused up front, or applied alike on three members.
fn check(wire: &Wire) -> Result<(), TestCaseError> {
    let Some(command) = accept(wire) else {
        return Ok(());
    };
    let Ok(data) = entry::encode(7, command) else {
        return Ok(());
    };
    let mut answers = Vec::new();
    let mut states = Vec::new();
    for _ in 0..3 {
        let (machine, last) = member();
        let waiter = machine.waiters().register(7);
        let applied = machine.apply_entry(last + 1, &bytes::Bytes::copy_from_slice(&data));
        prop_assert!(
            applied.is_ok(),
            "an accepted entry failed to apply: {applied:?}"
        );
        prop_assert_eq!(machine.applied_index(), last + 1);
        let mut waiter = waiter;
        let Ok(answer) = waiter.try_recv() else {
            return Err(TestCaseError::fail("the proposer got no answer"));
        };
        answers.push(match answer {
            // The receiver's state says how far the background deletion
            // got, which is timing, not the answer.
            Ok(Applied::Compaction(resp, _)) => format!("compaction {resp:?}"),
            other => format!("{other:?}"),
        });
        let rev = machine.store().current_revision();
        states.push((
            rev,
            machine.store().hash_kv(0).map_err(|e| e.to_string()),
            machine.lessor().len(),
            format!("{:?}", machine.tables().alarms()),
        ));
    }
    prop_assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:?}"
    );
    prop_assert!(
        states.windows(2).all(|w| w[0] == w[1]),
        "states differ: {states:?}"
    );
    Ok(())
}

/// Runs `property` over `strategy` on a thread with a large stack: building
/// the nested requests recurses deeply in proptest's own generators (a test
/// thread's 2 MiB overflowed in long runs). Failures are kept in
/// `fuzz_requests.proptest-regressions` and replayed first next time.
fn fuzz<S: Strategy + 'static>(
    strategy: fn() -> S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) {
    let run = move || {
        let strategy = strategy();
        let config = ProptestConfig {
            cases: cases(),
            source_file: Some(file!()),
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "tests/fuzz_requests.proptest-regressions",
                ),
            )),
            ..ProptestConfig::default()
        };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, property) {
            panic!("{e}");
        }
    };
    std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(256 << 20)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn accepted_requests_apply_alike_on_every_member() {
    fuzz(wire, |wire| check(&wire));
}

#[test]
fn mutated_requests_are_refused_or_apply_alike() {
    let strategy = || (wire(), proptest::collection::vec(mutation(), 1..4));
    fuzz(strategy, |(mut wire, mutations)| {
        for m in &mutations {
            mutate(wire.bytes_mut(), m);
        }
        check(&wire)
    });
}

/// The request that stopped every member: a write Txn nested 50 deep (the
/// deepest the gRPC decoder accepts) is accepted and applies everywhere;
/// one level deeper is refused before an entry exists.
#[test]
fn the_deepest_txn_applies_and_a_deeper_one_is_refused() {
    let chain = |depth: usize| {
        let mut t = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        for _ in 1..depth {
            t = TxnRequest {
                success: vec![RequestOp {
                    request: Some(Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        t
    };
    let fifty = Wire::Txn(chain(50).encode_to_vec());
    assert!(accept(&fifty).is_some(), "decodes and validates");
    check(&fifty).unwrap();
    let deeper = Wire::Txn(chain(51).encode_to_vec());
    assert!(accept(&deeper).is_none(), "the decoder refuses it");
}
