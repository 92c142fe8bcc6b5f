//! The permission checks of each request kind (etcd's `apply_auth.go` and
//! `isOpPermitted`), as pure functions of the auth state and the caller.
//!
//! [`Checker`] settles who the caller is once (etcd's order: auth off, no
//! user, an identity older than the store's revision, an unknown user, the
//! root role), but reports that outcome only when a check is made: a
//! request that names no key (a txn with no compare and no op, the revoke
//! of a lease with no key) is checked against nothing, as in etcd.
//!
//! Rules: Range reads its range; Put writes its key (and reads it with
//! `prev_kv`), and writes every key already attached to its lease (etcd's
//! `checkLeasePuts`: a user must not attach keys to a lease it could not
//! revoke); DeleteRange writes its range (and reads it with `prev_kv`); a
//! Txn reads every compare's range and checks every op of both branches,
//! nested txns included; LeaseRevoke writes every attached key; a watch
//! reads its range.

use cairn_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, WatchCreateRequest,
};

use super::perm::UserPermissions;
use super::state::AuthState;
use super::AuthInfo;
use crate::error::EtcdError;

/// What a caller may do, settled once per request.
#[derive(Debug, Clone)]
pub struct Checker<'a> {
    /// `Ok(None)`: everything (auth off, or a root user). `Ok(Some(p))`:
    /// what `p` permits. `Err(e)`: every check fails with `e`.
    access: Result<Option<&'a UserPermissions>, EtcdError>,
}

impl<'a> Checker<'a> {
    /// The checker for `caller` against `state` (etcd's `isOpPermitted`
    /// preamble). `caller` None means no credentials at all.
    pub fn new(state: &'a AuthState, caller: Option<&AuthInfo>) -> Self {
        let access = if !state.enabled() {
            Ok(None)
        } else {
            match caller {
                None => Err(EtcdError::UserEmpty),
                Some(info) if info.revision == 0 => Err(EtcdError::UserEmpty),
                Some(info) if info.revision < state.revision() => Err(EtcdError::AuthOldRevision),
                Some(info) => match state.permissions(&info.user) {
                    None => Err(EtcdError::PermissionDenied),
                    Some(_) if state.is_root(&info.user) => Ok(None),
                    Some(p) => Ok(Some(p)),
                },
            }
        };
        Self { access }
    }

    /// A checker that allows everything (the member's own requests).
    pub fn all() -> Self {
        Self { access: Ok(None) }
    }

    fn check(&self, allowed: impl FnOnce(&UserPermissions) -> bool) -> Result<(), EtcdError> {
        match &self.access {
            Err(e) => Err(e.clone()),
            Ok(None) => Ok(()),
            Ok(Some(p)) if allowed(p) => Ok(()),
            Ok(Some(_)) => Err(EtcdError::PermissionDenied),
        }
    }

    /// Read on `[key, range_end)` (etcd's reading of `range_end`).
    pub fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        self.check(|p| p.can_read(key, range_end))
    }

    /// Write on `[key, range_end)`.
    pub fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        self.check(|p| p.can_write(key, range_end))
    }

    /// A Range.
    pub fn range(&self, req: &RangeRequest) -> Result<(), EtcdError> {
        self.read(&req.key, &req.range_end)
    }

    /// A Put; `lease_keys` are the keys attached to a lease.
    pub fn put(
        &self,
        req: &PutRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), EtcdError> {
        self.write(&req.key, &[])?;
        if req.lease != 0 {
            self.lease_keys(&lease_keys(req.lease))?;
        }
        if req.prev_kv {
            self.read(&req.key, &[])?;
        }
        Ok(())
    }

    /// A DeleteRange.
    pub fn delete_range(&self, req: &DeleteRangeRequest) -> Result<(), EtcdError> {
        self.write(&req.key, &req.range_end)?;
        if req.prev_kv {
            self.read(&req.key, &req.range_end)?;
        }
        Ok(())
    }

    /// A Txn: its compares, then every op of both branches, depth first.
    pub fn txn(
        &self,
        req: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), EtcdError> {
        for compare in &req.compare {
            self.read(&compare.key, &compare.range_end)?;
        }
        for op in req.success.iter().chain(&req.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => self.range(r)?,
                Some(request_op::Request::RequestPut(r)) => self.put(r, lease_keys)?,
                Some(request_op::Request::RequestDeleteRange(r)) => self.delete_range(r)?,
                Some(request_op::Request::RequestTxn(t)) => self.txn(t, lease_keys)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Write on every key of a lease (LeaseRevoke, and a Put attaching to
    /// the lease).
    pub fn lease_keys(&self, keys: &[Vec<u8>]) -> Result<(), EtcdError> {
        for key in keys {
            self.write(key, &[])?;
        }
        Ok(())
    }

    /// Read on every key of a lease (LeaseTimeToLive with keys, Leases).
    pub fn lease_keys_read(&self, keys: &[Vec<u8>]) -> Result<(), EtcdError> {
        for key in keys {
            self.read(key, &[])?;
        }
        Ok(())
    }

    /// A watch's creation: read on its range, with etcd's normalisation (an
    /// empty key is `"\0"`, the smallest key).
    pub fn watch(&self, req: &WatchCreateRequest) -> Result<(), EtcdError> {
        let key: &[u8] = if req.key.is_empty() { &[0] } else { &req.key };
        self.read(key, &req.range_end)
    }
}

/// etcd's `IsAdminPermitted`: with auth on, the caller must be a user with
/// the root role.
pub fn admin(state: &AuthState, caller: Option<&AuthInfo>) -> Result<(), EtcdError> {
    if !state.enabled() {
        return Ok(());
    }
    let user = match caller {
        Some(info) if !info.user.is_empty() => &info.user,
        _ => return Err(EtcdError::UserEmpty),
    };
    if state.user(user).is_none() {
        return Err(EtcdError::UserNotFound);
    }
    if !state.is_root(user) {
        return Err(EtcdError::PermissionDenied);
    }
    Ok(())
}
