//! The errors a client can see, named after etcd's `rpctypes`.
//!
//! Every layer below (mvcc, storage) has its own error type; they are turned
//! into an [`EtcdError`] here, and [`crate::grpc::status`] turns an
//! `EtcdError` into a gRPC status through one table. The `Display` text of each
//! variant is etcd's message, byte for byte: clients match on it.

use crate::{mvcc, storage};

/// An error as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` / `ignore_lease` on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A value together with `ignore_value`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A lease together with `ignore_lease`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn with more operations than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writing one key twice (or putting a key it also deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read or compaction below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// The NOSPACE alarm is raised.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A put attached to a lease that does not exist, or a lease request
    /// naming one.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A LeaseGrant with the id of a lease that exists.
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    /// A LeaseGrant with a TTL above 9,000,000,000 seconds.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Stored data failed a consistency check; nothing read from it is returned.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A local failure with no etcd equivalent (for example a disk error). The
    /// detail is logged, not sent.
    #[error("etcdserver: internal error")]
    Internal,
}

impl From<mvcc::Error> for EtcdError {
    fn from(e: mvcc::Error) -> Self {
        match e {
            mvcc::Error::Compacted => EtcdError::Compacted,
            mvcc::Error::FutureRev => EtcdError::FutureRev,
            mvcc::Error::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt data in the store");
                EtcdError::Corrupt
            }
            mvcc::Error::Storage(e) => e.into(),
        }
    }
}

impl From<storage::Error> for EtcdError {
    fn from(e: storage::Error) -> Self {
        tracing::error!(error = %e, "storage failure");
        EtcdError::Internal
    }
}
