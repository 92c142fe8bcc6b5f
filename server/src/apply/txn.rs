//! Txn: compares, then one branch of operations, all at one revision.
//!
//! As in etcd, every compare of the transaction *and of the nested transactions
//! on the chosen path* is evaluated first, against the store as it was before
//! the transaction; then the requests on that path are checked (a missing lease,
//! a revision out of range) so that a failing transaction writes nothing; then
//! the operations run in list order, each seeing the writes before it.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;

use super::{check_put, delete_range, header, put, range, Leases, ReadView};
use crate::error::EtcdError;
use crate::mvcc::{KeyRange, RangeOptions, WriteTxn};

/// Applies a Txn.
pub fn txn(
    w: &mut WriteTxn<'_>,
    leases: &mut dyn Leases,
    req: &TxnRequest,
) -> Result<TxnResponse, EtcdError> {
    let mut path = Vec::new();
    compare_to_path(w, req, &mut path)?;
    check_path(w, &*leases, req, &mut path.iter().copied())?;
    let mut resp = execute(w, leases, req, &mut path.into_iter())?;
    resp.header = header(w.revision());
    Ok(resp)
}

/// Appends, depth first, which branch each transaction on the taken path takes.
fn compare_to_path(
    view: &dyn ReadView,
    req: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), EtcdError> {
    let mut succeeded = true;
    for c in &req.compare {
        if !compare(view, c)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in branch(req, succeeded) {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            compare_to_path(view, nested, path)?;
        }
    }
    Ok(())
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// True when every key of the compare's range satisfies it. A range with no
/// key compares against an empty key-value, except that a VALUE compare on a
/// missing key is always false (etcd cannot tell a missing value from "").
fn compare(view: &dyn ReadView, c: &Compare) -> Result<bool, EtcdError> {
    let rr = view.read(
        &KeyRange::new(&c.key, &c.range_end),
        RangeOptions::default(),
    )?;
    let target = CompareTarget::try_from(c.target).ok();
    if rr.kvs.is_empty() {
        if target == Some(CompareTarget::Value) {
            return Ok(false);
        }
        return Ok(compare_kv(c, target, &KeyValue::default()));
    }
    Ok(rr.kvs.iter().all(|kv| compare_kv(c, target, kv)))
}

fn compare_kv(c: &Compare, target: Option<CompareTarget>, kv: &KeyValue) -> bool {
    // A target union that does not match the target reads as zero / empty.
    let ordering = match target {
        Some(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Some(CompareTarget::Version) => kv.version.cmp(&int_target(c, |t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Some(CompareTarget::Create) => kv.create_revision.cmp(&int_target(c, |t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Some(CompareTarget::Mod) => kv.mod_revision.cmp(&int_target(c, |t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Some(CompareTarget::Lease) => kv.lease.cmp(&int_target(c, |t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        None => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        // etcd treats an unknown result as satisfied.
        Err(_) => true,
    }
}

fn int_target(c: &Compare, pick: impl Fn(&TargetUnion) -> Option<i64>) -> i64 {
    c.target_union.as_ref().and_then(pick).unwrap_or(0)
}

/// Checks the requests on the taken path before anything is written.
fn check_path(
    view: &WriteTxn<'_>,
    leases: &dyn Leases,
    req: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<(), EtcdError> {
    let succeeded = path.next().unwrap_or(false);
    for op in branch(req, succeeded) {
        match &op.request {
            Some(Request::RequestPut(p)) => check_put(view, leases, p)?,
            Some(Request::RequestRange(r)) if r.revision != 0 => {
                if r.revision > view.revision() {
                    return Err(EtcdError::FutureRev);
                }
                if r.revision < view.compact_revision() {
                    return Err(EtcdError::Compacted);
                }
            }
            Some(Request::RequestTxn(nested)) => check_path(view, leases, nested, path)?,
            _ => {}
        }
    }
    Ok(())
}

fn execute(
    w: &mut WriteTxn<'_>,
    leases: &mut dyn Leases,
    req: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<TxnResponse, EtcdError> {
    let succeeded = path.next().unwrap_or(false);
    let mut responses = Vec::new();
    for op in branch(req, succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Response::ResponseRange(range(w, r)?),
            Some(Request::RequestPut(p)) => Response::ResponsePut(put(w, leases, p.clone())?),
            Some(Request::RequestDeleteRange(d)) => {
                Response::ResponseDeleteRange(delete_range(w, leases, d)?)
            }
            Some(Request::RequestTxn(nested)) => {
                Response::ResponseTxn(execute(w, leases, nested, path)?)
            }
            // Validation refuses empty operations before they get here.
            None => return Err(EtcdError::KeyNotFound),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        // Nested transactions carry an empty header, as in etcd.
        header: Some(ResponseHeader::default()),
        succeeded,
        responses,
    })
}
