//! The persistent lease record.
//!
//! Column family `lease`: key = the lease id as 8 bytes big-endian (so a scan
//! lists leases in id order), value = an encoded `cairnpb.Lease` {ID, TTL,
//! RemainingTTL}. A protobuf message rather than a fixed layout because it
//! has the same field numbers as etcd's `leasepb.Lease` (the bytes are what
//! etcd stores), and fields can be added later without a migration; prost is
//! already how every other record is encoded.

use cairn_proto::cairnpb;
use prost::Message;

use crate::mvcc::Error;
use crate::storage::{try_scan, BatchOp, Cf, Engine, Scan};

/// The record key of lease `id`.
pub fn key(id: i64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The batch operation writing `record`.
pub fn put(record: &cairnpb::Lease) -> BatchOp {
    BatchOp::Put {
        cf: Cf::Lease,
        key: key(record.id),
        value: record.encode_to_vec(),
    }
}

/// The batch operation removing lease `id`'s record.
pub fn delete(id: i64) -> BatchOp {
    BatchOp::Delete {
        cf: Cf::Lease,
        key: key(id),
    }
}

/// Every stored lease record, in id-byte order.
pub fn load_all(engine: &dyn Engine) -> Result<Vec<cairnpb::Lease>, Error> {
    let mut records = Vec::new();
    try_scan::<Error>(engine, Cf::Lease, &[], None, |k, v| {
        let record = cairnpb::Lease::decode(v).map_err(|e| Error::Corrupt {
            what: format!("lease record {k:02x?}"),
            reason: e.to_string(),
        })?;
        if k != key(record.id).as_slice() {
            return Err(Error::Corrupt {
                what: "lease record".into(),
                reason: format!("key {k:02x?} holds lease {}", record.id),
            });
        }
        records.push(record);
        Ok(Scan::Continue)
    })?;
    Ok(records)
}
