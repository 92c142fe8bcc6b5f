//! Range: filters, sorting, limits, `more` and `count`, as etcd computes them.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;

use super::reply::RangeReply;
use super::{header, ReadView};
use crate::error::EtcdError;
use crate::mvcc::{KeyRange, RangeOptions};

/// Applies a Range against `view`.
///
/// `count` is the number of keys in the range at the read revision before the
/// limit and the revision filters (etcd's rule); `more` says the limit cut the
/// result. Sorting or filtering needs every key, so the limit is then applied
/// after them.
pub fn range(view: &dyn ReadView, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    view.note_range();
    let (target, order) = sort_of(req);
    let limit = usize::try_from(req.limit).unwrap_or(0);
    // Any order asked for reads every key, even the one needing no sort
    // (etcd's rule: a target other than the key with no order sorts only
    // the keys read, one more than the limit).
    let asked = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let fetch_limit = if asked != SortOrder::None || filtered(req) {
        0
    } else {
        fetch_limit(limit)
    };
    let rr = view.read(
        &KeyRange::new(&req.key, &req.range_end),
        read_options(req, fetch_limit),
    )?;
    let mut kvs = rr.kvs;
    kvs.retain(|kv| {
        !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
            || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
            || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
            || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
    });

    // Sorts are stable, so ties keep key order.
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
        SortOrder::None => {}
    }

    let mut more = false;
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(rr.rev),
        kvs,
        more,
        count: rr.count as i64,
    })
}

/// [`range`] for the wire: where the key-values go out as they are stored
/// (in key order, unfiltered, values kept), they are spliced into the
/// answer without being decoded and encoded again; otherwise it is
/// [`range`]'s answer. Either way the same bytes.
pub fn range_reply(view: &dyn ReadView, req: &RangeRequest) -> Result<RangeReply, EtcdError> {
    if req.keys_only || filtered(req) || sort_of(req).1 != SortOrder::None {
        return range(view, req).map(RangeReply::from);
    }
    view.note_range();
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let rr = view.read_records(
        &KeyRange::new(&req.key, &req.range_end),
        read_options(req, fetch_limit(limit)),
    )?;
    let mut kvs = rr.kvs;
    let more = limit > 0 && kvs.len() > limit;
    if more {
        kvs.truncate(limit);
    }
    Ok(RangeReply {
        header: header(rr.rev),
        kvs,
        more,
        count: rr.count as i64,
    })
}

/// What the store is asked for: `limit` keys of the request's range at its
/// revision.
fn read_options(req: &RangeRequest, limit: usize) -> RangeOptions {
    RangeOptions {
        limit,
        rev: req.revision,
        count_only: req.count_only,
    }
}

/// How many keys to read for a client's `limit` (0: all): one more than
/// asked for tells whether there is more.
fn fetch_limit(limit: usize) -> usize {
    if limit == 0 {
        0
    } else {
        limit.saturating_add(1)
    }
}

/// Whether the request filters by revision (which needs every key, so
/// its limit applies after the filter).
fn filtered(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// The sort a request asks for, as work to do: the store returns keys in
/// ascending order, so that order is `None` (nothing to sort), and a
/// target other than the key with no order is ascending (etcd's rule).
fn sort_of(req: &RangeRequest) -> (SortTarget, SortOrder) {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let order = match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (t, SortOrder::None) if t != SortTarget::Key => SortOrder::Ascend,
        (_, o) => o,
    };
    (target, order)
}
