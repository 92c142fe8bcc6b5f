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
        EtcdError::LeaseExist
        | EtcdError::NotLeader
        | EtcdError::MemberExist
        | EtcdError::PeerUrlExist
        | EtcdError::MemberNotEnoughStarted
        | EtcdError::MemberNotLearner
        | EtcdError::LearnerNotReady
        | EtcdError::TooManyLearners
        | EtcdError::BadLeaderTransferee => Code::FailedPrecondition,
        EtcdError::MemberBadUrls
        | EtcdError::WrongDowngradeVersionFormat
        | EtcdError::InvalidDowngradeTargetVersion => Code::InvalidArgument,
        EtcdError::DowngradeInProcess | EtcdError::NoInflightDowngrade => Code::FailedPrecondition,
        // etcd has no mapping for it: grpc-go's default, Unknown.
        EtcdError::UnknownMethod | EtcdError::NoPasswordUser => Code::Unknown,
        EtcdError::MemberNotFound => Code::NotFound,
        EtcdError::TooManyRequests => Code::ResourceExhausted,
        EtcdError::NoLeader
        | EtcdError::LeaderChanged
        | EtcdError::Timeout
        | EtcdError::TimeoutDueToLeaderFail
        | EtcdError::NotSupportedForLearner
        | EtcdError::Unhealthy => Code::Unavailable,
        EtcdError::NoSpace => Code::ResourceExhausted,
        EtcdError::LeaseNotFound => Code::NotFound,
        EtcdError::Stopped => Code::Unavailable,
        EtcdError::Corrupt => Code::DataLoss,
        EtcdError::Internal => Code::Internal,
        EtcdError::RootUserNotExist
        | EtcdError::RootRoleNotExist
        | EtcdError::UserAlreadyExist
        | EtcdError::UserNotFound
        | EtcdError::RoleAlreadyExist
        | EtcdError::RoleNotFound
        | EtcdError::RoleNotGranted
        | EtcdError::PermissionNotGranted
        | EtcdError::AuthNotEnabled => Code::FailedPrecondition,
        EtcdError::UserEmpty
        | EtcdError::RoleEmpty
        | EtcdError::AuthFailed
        | EtcdError::PermissionNotGiven
        | EtcdError::InvalidAuthMgmt
        | EtcdError::AuthOldRevision => Code::InvalidArgument,
        EtcdError::PermissionDenied => Code::PermissionDenied,
        EtcdError::InvalidAuthToken => Code::Unauthenticated,
    }
}

/// Converts an error for the wire.
pub fn to_status(e: EtcdError) -> Status {
    Status::new(code(&e), e.to_string())
}

/// What tonic answers for a request it could not read, turned into what
/// grpc-go (and so etcd) answers, since clients match on the code:
///
/// | tonic | etcd |
/// |---|---|
/// | OutOfRange "Error, decoded message length too large: found N bytes, the limit is: M bytes" | ResourceExhausted "grpc: received message larger than max (N vs. M)" |
/// | Internal "failed to decode …: recursion limit reached" (a Txn nested deeper than the decoder goes) | InvalidArgument "etcdserver: too many operations in txn request" |
/// | Internal "failed to decode Protobuf message: …" | Internal "grpc: failed to unmarshal the received message: …" |
///
/// Any other status is returned unchanged.
pub fn from_transport(status: Status) -> Status {
    let message = status.message();
    match status.code() {
        Code::OutOfRange => {
            let sizes = message
                .strip_prefix("Error, decoded message length too large: found ")
                .and_then(|rest| rest.strip_suffix(" bytes"))
                .and_then(|rest| rest.split_once(" bytes, the limit is: "));
            match sizes {
                Some((found, limit)) => Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({found} vs. {limit})"
                )),
                None => status,
            }
        }
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            if crate::entry::is_too_deep(&message) {
                to_status(EtcdError::TooManyOps)
            } else {
                Status::internal(format!(
                    "grpc: failed to unmarshal the received message: {message}"
                ))
            }
        }
        _ => status,
    }
}

/// A Lock or Election recipe's error. etcd's servers return these as plain
/// errors (what their in-process client reports, KV errors included), so
/// clients see code Unknown with etcd's message.
pub fn recipe_status(e: crate::concurrency::Error) -> Status {
    Status::unknown(e.to_string())
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
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::NotLeader,
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                EtcdError::LeaderChanged,
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                EtcdError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                EtcdError::TimeoutDueToLeaderFail,
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            (
                EtcdError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            (
                EtcdError::MemberExist,
                Code::FailedPrecondition,
                "etcdserver: member ID already exist",
            ),
            (
                EtcdError::PeerUrlExist,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                EtcdError::MemberNotEnoughStarted,
                Code::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            (
                EtcdError::Unhealthy,
                Code::Unavailable,
                "etcdserver: unhealthy cluster",
            ),
            (
                EtcdError::MemberBadUrls,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            (
                EtcdError::MemberNotFound,
                Code::NotFound,
                "etcdserver: member not found",
            ),
            (
                EtcdError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (
                EtcdError::LearnerNotReady,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                EtcdError::TooManyLearners,
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            (
                EtcdError::BadLeaderTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            (
                EtcdError::NotSupportedForLearner,
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
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
            (
                EtcdError::WrongDowngradeVersionFormat,
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            (
                EtcdError::InvalidDowngradeTargetVersion,
                Code::InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            (
                EtcdError::DowngradeInProcess,
                Code::FailedPrecondition,
                "etcdserver: cluster has a downgrade job in progress",
            ),
            (
                EtcdError::NoInflightDowngrade,
                Code::FailedPrecondition,
                "etcdserver: no inflight downgrade job",
            ),
            (
                EtcdError::UnknownMethod,
                Code::Unknown,
                "etcdserver: unknown method",
            ),
            (
                EtcdError::RootUserNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                EtcdError::RootRoleNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            (
                EtcdError::UserAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            (
                EtcdError::UserEmpty,
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                EtcdError::UserNotFound,
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            (
                EtcdError::RoleAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            (
                EtcdError::RoleNotFound,
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            (
                EtcdError::RoleEmpty,
                Code::InvalidArgument,
                "etcdserver: role name is empty",
            ),
            (
                EtcdError::AuthFailed,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                EtcdError::NoPasswordUser,
                Code::Unknown,
                "auth: authentication failed, password was given for no password user",
            ),
            (
                EtcdError::PermissionNotGiven,
                Code::InvalidArgument,
                "etcdserver: permission not given",
            ),
            (
                EtcdError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                EtcdError::RoleNotGranted,
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            (
                EtcdError::PermissionNotGranted,
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            (
                EtcdError::AuthNotEnabled,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (
                EtcdError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                EtcdError::InvalidAuthMgmt,
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            (
                EtcdError::AuthOldRevision,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
        ];
        for (err, want_code, want_msg) in table {
            let status = to_status(err.clone());
            assert_eq!(status.code(), want_code, "{err:?}");
            assert_eq!(status.message(), want_msg, "{err:?}");
        }
    }

    #[test]
    fn recipe_errors_are_unknown_with_etcds_message() {
        use crate::concurrency::Error;
        let table = [
            (Error::SessionExpired, "mutex: session is expired"),
            (Error::NotLeader, "election: not leader"),
            (Error::NoLeader, "election: no leader"),
            (Error::MissingLeaderKey, "\"leader\" field must be provided"),
            (
                Error::Etcd(EtcdError::LeaseNotFound),
                "etcdserver: requested lease not found",
            ),
        ];
        for (err, msg) in table {
            let status = recipe_status(err);
            assert_eq!(status.code(), Code::Unknown);
            assert_eq!(status.message(), msg);
        }
    }

    /// One row per status tonic makes itself.
    #[test]
    fn transport_table() {
        let table = [
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 2621450 bytes, the limit is: 2097152 bytes",
                ),
                Code::ResourceExhausted,
                "grpc: received message larger than max (2621450 vs. 2097152)",
            ),
            (
                Status::internal(
                    "failed to decode Protobuf message: RequestOp.request: TxnRequest.success: recursion limit reached",
                ),
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                Status::internal("failed to decode Protobuf message: buffer underflow"),
                Code::Internal,
                "grpc: failed to unmarshal the received message: failed to decode Protobuf message: buffer underflow",
            ),
            (
                Status::out_of_range("etcdserver: mvcc: required revision is a future revision"),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                Status::internal("etcdserver: internal error"),
                Code::Internal,
                "etcdserver: internal error",
            ),
        ];
        for (status, want_code, want_msg) in table {
            let mapped = from_transport(status.clone());
            assert_eq!(mapped.code(), want_code, "{status:?}");
            assert_eq!(mapped.message(), want_msg, "{status:?}");
        }
    }
}
