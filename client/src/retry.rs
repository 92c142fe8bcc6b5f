//! When a failed call may be sent to another endpoint: etcd clientv3's retry
//! policy, as one classification of errors ([`classify`]) and one decision
//! table ([`decide`]).
//!
//! The question for every failure is "could the request have been applied?".
//! A read can be repeated either way, so it moves to the next endpoint
//! whenever the member or the connection to it looks unusable. A write may
//! only be repeated when it surely never reached a server; otherwise
//! repeating it could apply it twice (a second `Put` is a second revision, a
//! second `Txn` may take the other branch), so the caller gets
//! [`Error::UnknownOutcome`] and decides.

use std::error::Error as StdError;
use std::time::Duration;

use crate::Error;

/// How many times a call goes round all endpoints before giving up: one full
/// round, then `ROUNDS - 1` more after a backoff. Bounded so that a call on a
/// cluster that is down fails in well under a second instead of hanging.
pub(crate) const ROUNDS: u32 = 3;

/// The pause before the second round; it doubles for each later round
/// (50 ms, then 100 ms). Short, because the usual causes (a member
/// restarting, an election) either clear up within a few hundred
/// milliseconds or not soon at all, and the caller should then hear of it.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The message of etcd's `ErrGRPCNoLeader` (code `Unavailable`). A member
/// answers it before proposing anything (the require-leader check, or a
/// member that knows it has no leader), so the request was not applied.
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";

/// The message of etcd's `ErrGRPCNotSupportedForLearner` (code
/// `Unavailable`): a learner refuses writes and linearizable reads in its
/// gRPC interceptor, before anything is proposed, so the request was not
/// applied. clientv3 also sends such requests on to the next member.
pub(crate) const NOT_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// The pause before round `round` (0-based; round 0 starts at once).
pub(crate) fn backoff(round: u32) -> Duration {
    match round {
        0 => Duration::ZERO,
        r => FIRST_BACKOFF * 2u32.saturating_pow(r - 1),
    }
}

/// Whether a request may be repeated after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Changes nothing (Range, Status, MemberList, Alarm GET, LeaseTimeToLive,
    /// LeaseLeases, HashKV, Snapshot, opening a watch or keep-alive stream):
    /// repeating it is always safe.
    Read,
    /// Changes state (Put, DeleteRange, Txn, Compact, LeaseGrant/Revoke,
    /// Member*, MoveLeader, Defragment, Alarm activate/deactivate): repeated
    /// only when it surely never reached a server.
    Write,
}

/// What a failed call tells us about the request and the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request never reached a member's state machine: this client could
    /// not connect (the error chain holds a `tonic::ConnectError`, or it is
    /// an eager connect's transport error), or the member refused it before
    /// proposing ("etcdserver: no leader", "etcdserver: rpc not supported
    /// for learner"; these exact messages only). Anything may go elsewhere.
    NotSent,
    /// The member, or the connection to it, failed while the request may
    /// have been in flight: any other `Unavailable` ("etcdserver: leader
    /// changed", "etcdserver: request timed out", connection reset, a
    /// keep-alive ping timeout), or any status tonic made locally out of a
    /// lower-level error (h2/hyper/io; these carry a `source`, statuses from
    /// a server never do). Reads go elsewhere; writes have an unknown outcome.
    MaybeSent,
    /// The server gave up on the call without answering it
    /// (`DeadlineExceeded`, `Cancelled` from the server). Not a sign of a bad
    /// member, so nothing is retried, but a write may have been applied.
    Abandoned,
    /// The server's answer to this request (`InvalidArgument`, `OutOfRange`
    /// for a compacted revision, `NotFound`, `FailedPrecondition`, ...) or an
    /// error that is not about the connection (a watch canceled by the
    /// server, a bad endpoint string). Asking another member would get the
    /// same answer.
    Answer,
}

/// What the retry loop does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Move the current endpoint on and try the request there.
    TryNext,
    /// Return the error as it is.
    Return,
    /// Return it as [`Error::UnknownOutcome`] (and move the current endpoint
    /// on when the member looks unusable).
    ReturnUnknownOutcome,
}

/// Sorts an error into a [`Failure`].
pub(crate) fn classify(err: &Error) -> Failure {
    match err {
        Error::Status(status) => classify_status(status),
        // Only `Endpoint::connect` produces these: the connection was never made.
        Error::Transport(_) => Failure::NotSent,
        Error::UnknownOutcome { .. }
        | Error::InvalidEndpoint(_)
        | Error::Tls(_)
        | Error::NoSuchEndpoint { .. }
        | Error::Compacted { .. }
        | Error::WatchCanceled(_) => Failure::Answer,
    }
}

/// Sorts a gRPC status into a [`Failure`] (see the variants for the rules).
pub(crate) fn classify_status(status: &tonic::Status) -> Failure {
    if chain_has_connect_error(status) {
        return Failure::NotSent;
    }
    let local = StdError::source(status).is_some();
    match status.code() {
        tonic::Code::Unavailable
            if !local && [NO_LEADER, NOT_FOR_LEARNER].contains(&status.message()) =>
        {
            Failure::NotSent
        }
        tonic::Code::Unavailable => Failure::MaybeSent,
        _ if local => Failure::MaybeSent,
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Failure::Abandoned,
        _ => Failure::Answer,
    }
}

/// True if the status was made from a failure to connect. tonic reports a
/// lazy channel's failed connection as `Unavailable` with the original error
/// (holding a `tonic::ConnectError`) as its source; that is the only proof,
/// short of an answer, that no byte of the request left this client.
fn chain_has_connect_error(status: &tonic::Status) -> bool {
    let mut next = StdError::source(status);
    while let Some(err) = next {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// The decision table: what to do with a `failure` of a `kind` of request.
pub(crate) fn decide(kind: Kind, failure: Failure) -> Action {
    match (failure, kind) {
        (Failure::NotSent, _) | (Failure::MaybeSent, Kind::Read) => Action::TryNext,
        (Failure::MaybeSent | Failure::Abandoned, Kind::Write) => Action::ReturnUnknownOutcome,
        (Failure::Answer, _) | (Failure::Abandoned, Kind::Read) => Action::Return,
    }
}

/// True if a read that failed with `err` should be tried on another
/// endpoint (used by the watch and keep-alive streams, which are reopened
/// like reads).
pub(crate) fn read_should_fail_over(err: &Error) -> bool {
    decide(Kind::Read, classify(err)) == Action::TryNext
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io;

    use tonic::{Code, ConnectError, Status};

    use super::*;

    fn refused() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")
    }

    /// What tonic makes of a lazy channel that cannot connect.
    fn connect_failed() -> Status {
        Status::from_error(Box::new(ConnectError(Box::new(refused()))))
    }

    #[test]
    fn classification_table() {
        use Action::{Return, ReturnUnknownOutcome as Unknown, TryNext};
        let rows: Vec<(&str, Error, Failure, Action, Action)> = vec![
            // (what, error, failure, read action, write action)
            (
                "could not connect",
                Error::Status(connect_failed()),
                Failure::NotSent,
                TryNext,
                TryNext,
            ),
            (
                "no leader",
                Error::Status(Status::unavailable(NO_LEADER)),
                Failure::NotSent,
                TryNext,
                TryNext,
            ),
            (
                "learner refuses",
                Error::Status(Status::unavailable(NOT_FOR_LEARNER)),
                Failure::NotSent,
                TryNext,
                TryNext,
            ),
            (
                "server stopping",
                Error::Status(Status::unavailable("etcdserver: server stopped")),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "timed out due to leader failure",
                Error::Status(Status::unavailable(
                    "etcdserver: request timed out, possibly due to previous leader failure",
                )),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "not leader (MoveLeader on a follower)",
                Error::Status(Status::failed_precondition("etcdserver: not leader")),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "no leader, longer message",
                Error::Status(Status::unavailable("etcdserver: no leader yet")),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "leader changed",
                Error::Status(Status::unavailable("etcdserver: leader changed")),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "request timed out",
                Error::Status(Status::unavailable("etcdserver: request timed out")),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "connection reset (io, Unavailable)",
                Error::Status(Status::from(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "reset",
                ))),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "connection reset (local, Unknown)",
                Error::Status(Status::from_error(Box::new(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "reset",
                )))),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "local timeout (tonic TimeoutExpired)",
                Error::Status(Status::from_error(Box::new(tonic::TimeoutExpired(())))),
                Failure::MaybeSent,
                TryNext,
                Unknown,
            ),
            (
                "server deadline exceeded",
                Error::Status(Status::deadline_exceeded("deadline")),
                Failure::Abandoned,
                Return,
                Unknown,
            ),
            (
                "server cancelled",
                Error::Status(Status::cancelled("canceled")),
                Failure::Abandoned,
                Return,
                Unknown,
            ),
            (
                "invalid argument",
                Error::Status(Status::invalid_argument("etcdserver: key is not provided")),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "compacted",
                Error::Status(Status::out_of_range(
                    "etcdserver: mvcc: required revision has been compacted",
                )),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "not found",
                Error::Status(Status::not_found("etcdserver: requested lease not found")),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "failed precondition",
                Error::Status(Status::failed_precondition("etcdserver: member not found")),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "resource exhausted (NOSPACE)",
                Error::Status(Status::resource_exhausted(
                    "etcdserver: mvcc: database space exceeded",
                )),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "unimplemented",
                Error::Status(Status::unimplemented("Not yet implemented")),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "watch compacted",
                Error::Compacted {
                    compact_revision: 5,
                },
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "watch canceled",
                Error::WatchCanceled("permission denied".into()),
                Failure::Answer,
                Return,
                Return,
            ),
            (
                "invalid endpoint",
                Error::InvalidEndpoint("x".into()),
                Failure::Answer,
                Return,
                Return,
            ),
        ];
        for (what, err, failure, read, write) in rows {
            assert_eq!(classify(&err), failure, "{what}: classify");
            assert_eq!(decide(Kind::Read, failure), read, "{what}: read");
            assert_eq!(decide(Kind::Write, failure), write, "{what}: write");
            assert_eq!(read_should_fail_over(&err), read == TryNext, "{what}");
        }
    }

    #[test]
    fn source_chain_is_searched_for_the_connect_error() {
        // The connect error sits several levels down in practice (tonic's
        // transport error wraps hyper's, which wraps it).
        #[derive(Debug)]
        struct Wrapper(ConnectError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let status = Status::from_error(Box::new(Wrapper(ConnectError(Box::new(refused())))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(classify_status(&status), Failure::NotSent);
    }

    /// The real thing: a lazy channel to a port nobody listens on.
    #[tokio::test]
    async fn refused_connection_from_tonic_is_not_sent() {
        use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let status = KvClient::new(channel)
            .put(PutRequest::default())
            .await
            .unwrap_err();
        assert_eq!(classify_status(&status), Failure::NotSent, "{status:?}");

        // An eager connect's transport error means the same.
        let err = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert_eq!(classify(&Error::Transport(err)), Failure::NotSent);
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
    }
}
