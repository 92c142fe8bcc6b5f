//! Lease operations as state-machine operations: LeaseGrant, LeaseRevoke and
//! LeaseCheckpoint, applied inside one write transaction like any KV request.
//!
//! A revoke deletes every attached key in that one transaction, so all the
//! deletions share one revision (watchers see them together) and land in the
//! same batch as the removal of the lease record. Expiry is not a separate
//! path: the leader applies a revoke for each expired lease.

use cairn_proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse,
};

use super::header;
use crate::error::EtcdError;
use crate::lease::LeaseTxn;
use crate::mvcc::{KeyRange, WriteTxn};

/// Applies a LeaseGrant. The id must already be chosen (the member picks
/// one for a request that asked for 0 before applying).
pub fn lease_grant(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTxn<'_>,
    req: &LeaseGrantRequest,
) -> Result<LeaseGrantResponse, EtcdError> {
    let ttl = leases.grant(req.id, req.ttl)?;
    Ok(LeaseGrantResponse {
        header: header(txn.revision()),
        id: req.id,
        ttl,
        error: String::new(),
    })
}

/// Applies a LeaseRevoke: deletes the attached keys (sorted, one revision),
/// then the lease.
pub fn lease_revoke(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTxn<'_>,
    req: &LeaseRevokeRequest,
) -> Result<LeaseRevokeResponse, EtcdError> {
    for key in leases.revoke(req.id)? {
        txn.delete_range(&KeyRange::new(&key, b""));
        leases.attach(&key, 0);
    }
    Ok(LeaseRevokeResponse {
        header: header(txn.revision()),
    })
}

/// Applies a LeaseCheckpoint: records each lease's remaining TTL (leases
/// that no longer exist are skipped).
pub fn lease_checkpoint(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTxn<'_>,
    req: &LeaseCheckpointRequest,
) -> Result<LeaseCheckpointResponse, EtcdError> {
    for c in &req.checkpoints {
        leases.checkpoint(c.id, c.remaining_ttl);
    }
    Ok(LeaseCheckpointResponse {
        header: header(txn.revision()),
    })
}
