//! Errors of member-to-member calls, and their one mapping to and from the
//! wire.

use cairn_proto::cairnpb::{peer_error::Kind, PeerError};
use prost::Message;
use tonic::{Code, Status};

use crate::error::EtcdError;

/// Why a call to a peer did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer refused with one of etcd's errors that a caller passes on
    /// to its client (only those in [`PASSED_ON`]).
    #[error(transparent)]
    Refused(EtcdError),
    /// The peer failed in a way it does not pass on (its own log says
    /// why; the text is for this member's log only).
    #[error("the peer failed: {0}")]
    Failed(String),
    /// The call did not reach the peer's handler, or its answer did not
    /// come back (connection refused, reset, a status without details).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The caller stopped waiting.
    #[error("the peer did not answer in time")]
    DeadlineExceeded,
}

/// The etcd errors a peer passes on, with their wire kinds: THE table, read
/// in both directions. Anything else a handler answers travels as
/// `FAILED`.
const PASSED_ON: [(Kind, EtcdError); 8] = [
    (Kind::LeaseNotFound, EtcdError::LeaseNotFound),
    (Kind::LeaseExist, EtcdError::LeaseExist),
    (Kind::NoLeader, EtcdError::NoLeader),
    (Kind::NotLeader, EtcdError::NotLeader),
    (Kind::LeaderChanged, EtcdError::LeaderChanged),
    (Kind::Timeout, EtcdError::Timeout),
    (Kind::Stopped, EtcdError::Stopped),
    (Kind::TooManyRequests, EtcdError::TooManyRequests),
];

impl Error {
    /// What the answering member's handler said, as the caller will see it.
    pub fn answer(e: EtcdError) -> Self {
        if PASSED_ON.iter().any(|(_, known)| *known == e) {
            Error::Refused(e)
        } else {
            tracing::debug!(error = %e, "answering a peer with a failure it does not pass on");
            Error::Failed(e.to_string())
        }
    }

    /// The wire form of this error, as a status's details or a renewal's
    /// answer carry it.
    pub fn to_wire(&self) -> PeerError {
        let kind = match self {
            Error::Refused(e) => PASSED_ON
                .iter()
                .find(|(_, known)| known == e)
                .map_or(Kind::Failed, |(kind, _)| *kind),
            _ => Kind::Failed,
        };
        PeerError { kind: kind as i32 }
    }

    /// The error a peer's wire form carries (`message`: the text that came
    /// with it); `None` for an unspecified kind, which no peer sends.
    pub fn from_wire(wire: &PeerError, message: &str) -> Option<Self> {
        if wire.kind == Kind::Unspecified as i32 {
            return None;
        }
        let kind = Kind::try_from(wire.kind).unwrap_or(Kind::Failed);
        Some(match PASSED_ON.iter().find(|(known, _)| *known == kind) {
            Some((_, e)) => Error::Refused(e.clone()),
            None => Error::Failed(message.to_string()),
        })
    }

    /// The status that carries this error to the caller.
    pub fn to_status(&self) -> Status {
        let wire = self.to_wire();
        let code = if wire.kind == Kind::Failed as i32 {
            Code::Internal
        } else {
            Code::FailedPrecondition
        };
        Status::with_details(code, self.to_string(), wire.encode_to_vec().into())
    }

    /// The error a status from a peer carries. A status without a
    /// `PeerError` never came from the peer's handler: the call itself
    /// failed.
    pub fn from_status(status: &Status) -> Self {
        PeerError::decode(status.details())
            .ok()
            .and_then(|wire| Error::from_wire(&wire, status.message()))
            .unwrap_or_else(|| Error::Unreachable(status.to_string()))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::from_status(&status)
    }
}

/// A forwarded request's outcome for the client: the leader's own refusal
/// as is; a leader that could not answer is "no leader" (the client retries
/// elsewhere), as etcd answers.
impl From<Error> for EtcdError {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(e) => e,
            Error::Failed(_) | Error::Unreachable(_) | Error::DeadlineExceeded => {
                EtcdError::NoLeader
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_passed_on_error_survives_the_wire() {
        for (_, e) in PASSED_ON {
            let status = Error::answer(e.clone()).to_status();
            assert_eq!(Error::from_status(&status), Error::Refused(e.clone()));
            assert_eq!(EtcdError::from(Error::from_status(&status)), e);
        }
    }

    #[test]
    fn other_answers_are_failures_and_reach_a_client_as_no_leader() {
        for e in [
            EtcdError::Internal,
            EtcdError::Corrupt,
            EtcdError::Compacted,
        ] {
            let status = Error::answer(e.clone()).to_status();
            let back = Error::from_status(&status);
            assert!(matches!(back, Error::Failed(ref m) if m.contains(&e.to_string())));
            assert_eq!(EtcdError::from(back), EtcdError::NoLeader);
        }
    }

    #[test]
    fn a_status_without_details_is_an_unreachable_peer_whatever_its_text() {
        // Even a message that reads like a refusal is not one: no text is
        // matched.
        let status = Status::unavailable(EtcdError::LeaseNotFound.to_string());
        let back = Error::from_status(&status);
        assert!(matches!(back, Error::Unreachable(_)));
        assert_eq!(EtcdError::from(back), EtcdError::NoLeader);
        let garbage = Status::with_details(Code::Internal, "x", vec![0xff, 0xff].into());
        assert!(matches!(
            Error::from_status(&garbage),
            Error::Unreachable(_)
        ));
    }
}
