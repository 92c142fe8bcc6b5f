//! The one place internal errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::EtcdError;

/// The gRPC code etcd uses for each error (the message is the error's `Display`,
/// which is etcd's text).
fn code(e: &EtcdError) -> Code {
    match e {
        EtcdError::EmptyKey
        | EtcdError::KeyNotFound
        | EtcdError::ValueProvided
        | EtcdError::LeaseProvided
        | EtcdError::TooManyOps
        | EtcdError::DuplicateKey
        | EtcdError::RequestTooLarge => Code::InvalidArgument,
        EtcdError::Compacted | EtcdError::FutureRev | EtcdError::LeaseTtlTooLarge => {
            Code::OutOfRange
        }
        EtcdError::LeaseExist => Code::FailedPrecondition,
        EtcdError::NoSpace => Code::ResourceExhausted,
        EtcdError::LeaseNotFound => Code::NotFound,
        EtcdError::Stopped => Code::Unavailable,
        EtcdError::Corrupt => Code::DataLoss,
        EtcdError::Internal => Code::Internal,
    }
}

/// Converts an error for the wire.
pub fn to_status(e: EtcdError) -> Status {
    Status::new(code(&e), e.to_string())
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per error: code and message exactly as etcd's rpctypes.
    #[test]
    fn mapping_table() {
        let table = [
            (
                EtcdError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                EtcdError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                EtcdError::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                EtcdError::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                EtcdError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                EtcdError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::FutureRev,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                EtcdError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                EtcdError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                EtcdError::LeaseExist,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                EtcdError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                EtcdError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                EtcdError::Stopped,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
            (
                EtcdError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                EtcdError::Internal,
                Code::Internal,
                "etcdserver: internal error",
            ),
        ];
        for (err, want_code, want_msg) in table {
            let status = to_status(err.clone());
            assert_eq!(status.code(), want_code, "{err:?}");
            assert_eq!(status.message(), want_msg, "{err:?}");
        }
    }
}
