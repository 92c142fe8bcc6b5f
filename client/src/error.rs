//! The client's error type.

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection could not be set up or was lost.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The server answered the rpc with a non-OK gRPC status
    /// (for example `OutOfRange` for a compacted revision).
    #[error("rpc failed: {0}")]
    Status(#[from] tonic::Status),

    /// The endpoint string given to [`Client::connect`](crate::Client::connect)
    /// is not a usable URI.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),

    /// A watch needed history that the server has compacted away. Re-read the
    /// state (for example with a range read) and watch again from
    /// `compact_revision + 1` or later.
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
    /// The gRPC status, if the server answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(status) => Some(status),
            Error::Transport(_)
            | Error::InvalidEndpoint(_)
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
    }
}
