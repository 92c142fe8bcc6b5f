//! Range: filters, sorting, limits, `more` and `count`, as etcd computes them.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;

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
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let fetch_limit = if order != SortOrder::None || filtered || limit == 0 {
        0
    } else {
        // One more than asked for tells whether there is more.
        limit.saturating_add(1)
    };
    let rr = view.read(
        &KeyRange::new(&req.key, &req.range_end),
        RangeOptions {
            limit: fetch_limit,
            rev: req.revision,
            count_only: req.count_only,
        },
    )?;
    let mut kvs = rr.kvs;
    kvs.retain(|kv| {
        !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
            || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
            || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
            || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
    });

    // The store returns keys in ascending order: sort only when that is not
    // what was asked. Sorts are stable, so ties keep key order.
    let order = match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (t, SortOrder::None) if t != SortTarget::Key => SortOrder::Ascend,
        (_, o) => o,
    };
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
