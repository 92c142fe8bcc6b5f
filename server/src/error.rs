//! The errors a client can see, named after etcd's `rpctypes`.
//!
//! Every layer below (mvcc, storage) has its own error type; they are turned
//! into an [`EtcdError`] here, and [`crate::grpc::status`] turns an
//! `EtcdError` into a gRPC status through one table. The `Display` text of each
//! variant is etcd's message, byte for byte: clients match on it.

use crate::{mvcc, raft, storage};

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
    /// This member knows no leader (raft has none, or it is cut off).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// A leader-only operation reached a follower.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// The leader changed while a linearizable read waited for it.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A proposal was not applied within the request timeout.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A proposal timed out after the leader changed under it: it may still
    /// be applied, or may have been lost with the old leader.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    /// Applying lags committing by too much; new proposals are refused.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// MemberAdd with an id that exists.
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    /// MemberAdd/MemberUpdate with peer URLs another member has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    /// MemberAdd/MemberRemove that would leave too few started members.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    /// A membership change while this member does not reach enough voters
    /// (`--strict-reconfig-check`).
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// Peer URLs that are not `http://host:port`.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// No member with that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// MemberPromote on a voting member.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// MemberPromote on a learner whose log is behind the leader's.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// MemberAdd of a learner when the cluster has the most it allows.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// MoveLeader to a member that cannot lead (unknown, or a learner).
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A request a learner cannot serve (writes, linearizable reads).
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// Downgrade with a version that is not `X.Y` or `X.Y.Z`.
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    /// Downgrade to anything but the previous minor version (3.4).
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    /// Downgrade validate / enable while a downgrade job is enabled.
    #[error("etcdserver: cluster has a downgrade job in progress")]
    DowngradeInProcess,
    /// Downgrade cancel with no downgrade job enabled.
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    /// A request naming an action the server does not know.
    #[error("etcdserver: unknown method")]
    UnknownMethod,
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// UserAdd with an empty name, or a request without a user while auth
    /// is enabled.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A request naming a user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A request naming a role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd with an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Authenticate with an unknown user or a wrong password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// Authenticate of a user added with `no_password` (etcd's
    /// ErrNoPasswordUser, which has no gRPC mapping: code Unknown).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The caller may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired, or from before auth was disabled.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would break auth (deleting root, root losing its
    /// role, an invalid permission range).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A request whose caller was identified before the auth store changed.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
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
        match e {
            storage::Error::Tampered(_) => EtcdError::Corrupt,
            _ => EtcdError::Internal,
        }
    }
}

impl From<raft::RequestError> for EtcdError {
    fn from(e: raft::RequestError) -> Self {
        match e {
            raft::RequestError::Stopped => EtcdError::Stopped,
            raft::RequestError::NotLeader => EtcdError::NotLeader,
            raft::RequestError::NoLeader => EtcdError::NoLeader,
            raft::RequestError::LeaderChanged => EtcdError::LeaderChanged,
        }
    }
}
