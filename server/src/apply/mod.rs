//! The deterministic state machine: etcd's KV requests applied to the MVCC store.
//!
//! Given the same store and the same request, every member computes the same
//! changes and the same response; nothing here reads a clock or talks to the
//! network. Validation that etcd does before a request enters raft lives in
//! [`crate::grpc::validate`]; what etcd checks while applying (lease existence,
//! `ignore_value` on a missing key, revisions inside a txn) is here.
//!
//! Lease operations (grant, revoke, checkpoint; [`lease_grant`] and friends)
//! are applied the same way, and every put and delete tells the lessor which
//! keys changed lease, through [`Leases`]: the lessor's changes commit or fail
//! with the write.
//!
//! Response headers carry only the revision; the member fills the rest.

mod lease;
mod range;
mod reply;
mod txn;

#[cfg(test)]
mod tests;

use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader,
};

use crate::error::EtcdError;
use crate::mvcc::{KeyRange, RangeOptions, RangeResult, Records, Store, WriteTxn};

pub use lease::{lease_checkpoint, lease_grant, lease_revoke};
pub use range::{range, range_reply};
pub use reply::RangeReply;
pub use txn::txn;

/// Something ranges can be read from: the store itself (a read-only request) or
/// a write transaction (which sees its own writes).
pub trait ReadView {
    /// Reads `range` with `opts`.
    fn read(&self, range: &KeyRange, opts: RangeOptions)
        -> Result<RangeResult, crate::mvcc::Error>;

    /// [`ReadView::read`], each key-value in its stored form (an encoded
    /// `mvccpb.KeyValue`).
    fn read_records(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<RangeResult<Records>, crate::mvcc::Error> {
        let read = self.read(range, opts)?;
        Ok(RangeResult {
            kvs: Records::encode(&read.kvs),
            count: read.count,
            rev: read.rev,
        })
    }

    /// Counts one range of a request (etcd_mvcc_range_total): a Range, or
    /// the previous values a put or delete returns. Reads the apply makes
    /// for itself (a put's previous lease) are not counted, as etcd's
    /// index lookups are not.
    fn note_range(&self);
}

impl ReadView for Store {
    fn read(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<RangeResult, crate::mvcc::Error> {
        self.range(range, opts)
    }

    fn read_records(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<RangeResult<Records>, crate::mvcc::Error> {
        self.range_records(range, opts)
    }

    fn note_range(&self) {
        Store::note_range(self);
    }
}

impl ReadView for WriteTxn<'_> {
    fn read(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<RangeResult, crate::mvcc::Error> {
        self.range(range, opts)
    }

    fn note_range(&self) {
        WriteTxn::note_range(self);
    }
}

/// The lessor as a write sees it: whether a lease exists, and where keys
/// are attached. The member's implementation is [`crate::lease::LeaseTxn`],
/// whose changes reach the lessor only if the write commits.
pub trait Leases {
    /// True when `id` names a live lease.
    fn exists(&self, id: i64) -> bool;
    /// `key` was put with `lease` (0 = none): attach it there, detaching it
    /// from its previous lease.
    fn attach(&mut self, key: &[u8], lease: i64);
    /// Every key of `range` was deleted: detach those attached to a lease.
    fn detach_range(&mut self, range: &KeyRange);
}

/// An empty lease table that stays empty (for tests of plain KV semantics):
/// a put naming a lease is refused as etcd refuses an unknown lease.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

impl Leases for NoLeases {
    fn exists(&self, _id: i64) -> bool {
        false
    }
    fn attach(&mut self, _key: &[u8], _lease: i64) {}
    fn detach_range(&mut self, _range: &KeyRange) {}
}

impl Leases for crate::lease::LeaseTxn<'_> {
    fn exists(&self, id: i64) -> bool {
        crate::lease::LeaseTxn::exists(self, id)
    }
    fn attach(&mut self, key: &[u8], lease: i64) {
        crate::lease::LeaseTxn::attach(self, key, lease);
    }
    fn detach_range(&mut self, range: &KeyRange) {
        crate::lease::LeaseTxn::detach_range(self, range);
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// The current value of exactly `key` as this transaction sees it.
fn current(
    view: &dyn ReadView,
    key: &[u8],
) -> Result<Option<cairn_proto::mvccpb::KeyValue>, EtcdError> {
    let rr = view.read(&KeyRange::new(key, b""), RangeOptions::default())?;
    Ok(rr.kvs.into_iter().next())
}

/// Checks what a put needs before anything is written: the key for
/// `ignore_value`/`ignore_lease`, the lease otherwise.
fn check_put(view: &dyn ReadView, leases: &dyn Leases, req: &PutRequest) -> Result<(), EtcdError> {
    if (req.ignore_value || req.ignore_lease) && current(view, &req.key)?.is_none() {
        return Err(EtcdError::KeyNotFound);
    }
    if !req.ignore_lease && req.lease != 0 && !leases.exists(req.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    Ok(())
}

/// Applies a Put (taken whole: its value moves into the store's record
/// instead of being copied).
pub fn put(
    txn: &mut WriteTxn<'_>,
    leases: &mut dyn Leases,
    req: PutRequest,
) -> Result<PutResponse, EtcdError> {
    check_put(txn, leases, &req)?;
    // The previous value is read only when the request uses it, as etcd
    // reads it: a plain put needs none (its creation revision and version
    // come from the key index), and reading it costs an engine read and an
    // unseal of a value that may be large.
    let prev = if req.prev_kv || req.ignore_value || req.ignore_lease {
        txn.note_range();
        current(txn, &req.key)?
    } else {
        None
    };
    let mut value = req.value;
    let mut lease = req.lease;
    if let Some(prev) = &prev {
        if req.ignore_value {
            value.clone_from(&prev.value);
        }
        if req.ignore_lease {
            lease = prev.lease;
        }
    }
    txn.put(&req.key, value, lease);
    leases.attach(&req.key, lease);
    Ok(PutResponse {
        header: header(txn.revision()),
        prev_kv: if req.prev_kv { prev } else { None },
    })
}

/// Applies a DeleteRange.
pub fn delete_range(
    txn: &mut WriteTxn<'_>,
    leases: &mut dyn Leases,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, EtcdError> {
    let range = KeyRange::new(&req.key, &req.range_end);
    let prev_kvs = if req.prev_kv {
        txn.note_range();
        txn.range(&range, RangeOptions::default())?.kvs
    } else {
        Vec::new()
    };
    let deleted = txn.delete_range(&range);
    if deleted > 0 {
        leases.detach_range(&range);
    }
    Ok(DeleteRangeResponse {
        header: header(txn.revision()),
        deleted: deleted as i64,
        prev_kvs,
    })
}
