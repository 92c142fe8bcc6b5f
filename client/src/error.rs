//! The client's error type.

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A connection could not be set up. Only an eager
    /// `tonic::transport::Endpoint::connect` makes these; the client's own
    /// channels connect lazily, so for its calls a failed connection is an
    /// `Unavailable` [`Error::Status`]. Kept so that `?` on tonic's transport
    /// calls works in code that builds channels for
    /// [`Client::from_channel`](crate::Client::from_channel).
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The rpc failed with a non-OK gRPC status: the server's answer (for
    /// example `OutOfRange` for a compacted revision), or, after every
    /// endpoint was tried, the last `Unavailable`. For a write this means
    /// the request was **not** applied (see [`Error::UnknownOutcome`] for
    /// the other case).
    #[error("rpc failed: {0}")]
    Status(#[from] tonic::Status),

    /// A write failed in a way that leaves its outcome unknown: it may have
    /// reached a member and been applied, or not ("etcdserver: request timed
    /// out", "etcdserver: leader changed", a connection reset after the
    /// request was sent, a timeout). The client does not repeat it, since
    /// that could apply it twice; read the state (or make the write
    /// idempotent with a [`Txn`](crate::Txn) guard) before retrying.
    #[error("outcome unknown (the write may or may not have been applied): {source}")]
    UnknownOutcome {
        /// The failure, as the server or the transport reported it.
        source: tonic::Status,
    },

    /// An endpoint string given to [`Client::connect_all`](crate::Client::connect_all)
    /// is not a usable URI, or no endpoint was given.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),

    /// The TLS files given to [`Client::connect_all_tls`](crate::Client::connect_all_tls)
    /// cannot be used (missing, unreadable, a key that does not match).
    #[error("TLS: {0}")]
    Tls(String),

    /// A per-endpoint call named an endpoint the client does not have.
    #[error("no endpoint #{index}: the client has {count}")]
    NoSuchEndpoint {
        /// The index asked for.
        index: usize,
        /// How many endpoints the client has.
        count: usize,
    },

    /// A watch needed history that the server has compacted away. Re-read the
    /// state (for example with a range read at `compact_revision`) and watch
    /// again from `compact_revision` (etcd serves a watch at its compacted
    /// revision) or later.
    #[error("watch canceled: required revision {compact_revision} has been compacted")]
    Compacted {
        /// The server's compacted revision.
        compact_revision: i64,
    },

    /// The server refused or canceled a watch, with its reason.
    #[error("watch canceled: {0}")]
    WatchCanceled(String),
}

impl Error {
    /// The gRPC status, if the call ended with one (also for
    /// [`Error::UnknownOutcome`], whose status says what happened).
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(status) | Error::UnknownOutcome { source: status } => Some(status),
            Error::Transport(_)
            | Error::InvalidEndpoint(_)
            | Error::Tls(_)
            | Error::NoSuchEndpoint { .. }
            | Error::Compacted { .. }
            | Error::WatchCanceled(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_accessor() {
        let err = Error::from(tonic::Status::out_of_range("compacted"));
        let status = err.status();
        assert_eq!(
            status.map(tonic::Status::code),
            Some(tonic::Code::OutOfRange)
        );
        assert_eq!(status.map(tonic::Status::message), Some("compacted"));
        assert!(err.to_string().contains("compacted"));

        let err = Error::InvalidEndpoint("nope".into());
        assert!(err.status().is_none());
        assert_eq!(err.to_string(), "invalid endpoint: nope");

        let err = Error::UnknownOutcome {
            source: tonic::Status::unavailable("etcdserver: request timed out"),
        };
        assert_eq!(
            err.status().map(tonic::Status::message),
            Some("etcdserver: request timed out")
        );
        assert!(std::error::Error::source(&err).is_some());
        assert!(err.to_string().starts_with("outcome unknown"));
    }
}
