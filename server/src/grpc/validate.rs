//! Request checks etcd makes before a request is executed (its `v3rpc` layer).

use std::collections::HashSet;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::EtcdError;

/// Range: a key is required.
pub fn range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Put: a key is required; `ignore_value` / `ignore_lease` exclude a value / lease.
pub fn put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// DeleteRange: a key is required.
pub fn delete_range(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Txn: operation counts, keys, nested requests, then overlapping writes.
pub fn txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn(r, max_txn_ops)?;
    // Overlaps are checked after the counts, so a huge request cannot make
    // this quadratic check expensive.
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's count rule: the largest of the compare, success and failure lists
/// must not exceed the limit; nested transactions get what that leaves.
fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => range(r),
        Some(Request::RequestPut(r)) => put(r),
        Some(Request::RequestDeleteRange(r)) => delete_range(r),
        Some(Request::RequestTxn(r)) => check_txn(r, max_txn_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A deleted interval `[start, end)`; an empty `end` is the single key `start`.
/// `end` is compared as plain bytes, as etcd's interval tree does (so a
/// `"\0"` from-key end is an empty interval there too).
#[derive(Debug, Clone)]
struct Deleted {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            self.start == key
        } else {
            self.start.as_slice() <= key && key < self.end.as_slice()
        }
    }
}

/// Refuses a list of operations that writes one key twice: two puts of a key,
/// or a put of a deleted key, at this level or in nested transactions (the
/// success and failure branches of one nested txn may put the same key, since
/// only one of them runs). Returns the keys put and the ranges deleted.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), EtcdError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                start: d.key.clone(),
                end: d.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Deleted], key: &[u8]| dels.iter().any(|d| d.contains(key));

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn get_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), EtcdError> {
        txn(
            &TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            128,
        )
    }

    #[test]
    fn duplicate_key_table() {
        let cases: Vec<(&str, Vec<RequestOp>, Result<(), EtcdError>)> = vec![
            ("distinct puts", vec![put_op("a"), put_op("b")], Ok(())),
            (
                "same key twice",
                vec![put_op("a"), put_op("a")],
                Err(EtcdError::DuplicateKey),
            ),
            (
                "put inside a deleted range",
                vec![del_op("a", "c"), put_op("b")],
                Err(EtcdError::DuplicateKey),
            ),
            (
                "put at a range's end is outside it",
                vec![del_op("a", "c"), put_op("c")],
                Ok(()),
            ),
            (
                "put of a deleted key",
                vec![put_op("a"), del_op("a", "")],
                Err(EtcdError::DuplicateKey),
            ),
            (
                "two deletes may overlap",
                vec![del_op("a", "c"), del_op("b", "")],
                Ok(()),
            ),
            (
                "reads never conflict",
                vec![put_op("a"), get_op("a")],
                Ok(()),
            ),
            (
                "then/else of one nested txn may share a key",
                vec![txn_op(vec![put_op("a")], vec![put_op("a")])],
                Ok(()),
            ),
            (
                "nested put clashes with an outer put",
                vec![put_op("a"), txn_op(vec![put_op("a")], vec![])],
                Err(EtcdError::DuplicateKey),
            ),
            (
                "nested delete clashes with an outer put",
                vec![put_op("b"), txn_op(vec![del_op("a", "c")], vec![])],
                Err(EtcdError::DuplicateKey),
            ),
            (
                "from-key delete is an empty interval, as in etcd",
                vec![del_op("a", "\0"), put_op("b")],
                Ok(()),
            ),
        ];
        for (name, ops, want) in cases {
            assert_eq!(check(ops), want, "{name}");
        }
    }

    #[test]
    fn op_count_table() {
        let many = |n| (0..n).map(|i| put_op(&format!("k{i}"))).collect::<Vec<_>>();
        let nested_puts = (0..100)
            .map(|i| put_op(&format!("n{i}")))
            .collect::<Vec<_>>();
        assert_eq!(check(many(128)), Ok(()));
        assert_eq!(check(many(129)), Err(EtcdError::TooManyOps));
        // Nested transactions get the budget the outer lists leave.
        let nested = vec![txn_op(nested_puts, vec![])];
        let mut outer = many(27);
        outer.extend(nested.clone());
        assert_eq!(check(outer), Ok(()));
        let mut outer = many(29);
        outer.extend(nested);
        assert_eq!(check(outer), Err(EtcdError::TooManyOps));
        assert_eq!(
            check(vec![RequestOp { request: None }]),
            Err(EtcdError::KeyNotFound)
        );
        assert_eq!(check(vec![put_op("")]), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn put_checks() {
        let table = [
            (
                PutRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                },
                Ok(()),
            ),
            (PutRequest::default(), Err(EtcdError::EmptyKey)),
            (
                PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                },
                Err(EtcdError::ValueProvided),
            ),
            (
                PutRequest {
                    key: b"k".to_vec(),
                    lease: 5,
                    ignore_lease: true,
                    ..Default::default()
                },
                Err(EtcdError::LeaseProvided),
            ),
        ];
        for (req, want) in table {
            assert_eq!(put(&req), want, "{req:?}");
        }
    }
}
