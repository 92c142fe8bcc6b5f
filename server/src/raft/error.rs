//! Errors of the raft layer (log storage, node, transport), and how raft sees them.
//!
//! [`Error`] stops the raft loop (or refuses to start it); [`RequestError`]
//! is why one proposal or read was not taken, which the member maps to
//! etcd's errors in one place (`crate::error`).

use ::raft::StorageError;

/// Errors of [`super::RaftStorage`].
///
/// `Compacted`, `Unavailable`, `SnapshotOutOfDate` and
/// `SnapshotTemporarilyUnavailable` are answers raft expects and reacts to
/// (they map to the `raft::StorageError` variant of the same name, as
/// `MemStorage` returns them). Everything else means the caller or the disk is
/// broken, and reaches raft as `StorageError::Other`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested index was removed by compaction or a snapshot.
    #[error("log compacted")]
    Compacted,
    /// The requested index is past the end of the log.
    #[error("log unavailable")]
    Unavailable,
    /// A snapshot older than the log's start was offered.
    #[error("snapshot out of date")]
    SnapshotOutOfDate,
    /// No snapshot at or after the requested index can be built yet.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Entries to append would leave a gap, or are not consecutive.
    #[error("raft log: entries must be consecutive: expected index {expected}, got {got}")]
    NotContiguous {
        /// The index the next entry must have.
        expected: u64,
        /// The index it has.
        got: u64,
    },
    /// Entries to append would overwrite the compacted part of the log.
    #[error(
        "raft log: append at {index} overwrites compacted entries (first index {first_index})"
    )]
    OverwriteCompacted {
        /// First index of the appended entries.
        index: u64,
        /// First index still in the log.
        first_index: u64,
    },
    /// Compaction asked for entries the log does not have.
    #[error("raft log: cannot compact to {to}: last index is {last_index}")]
    CompactBeyondLast {
        /// The requested compaction index.
        to: u64,
        /// The log's last index.
        last_index: u64,
    },
    /// A record on disk is missing or does not decode.
    #[error("raft log: corrupt record {key}: {reason}")]
    Corrupt {
        /// The record key, printable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("raft log: encoding {what}: {reason}")]
    Encode {
        /// The kind of record.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The raft log's files failed (raft-engine's message).
    #[error("raft log files: {0}")]
    LogFiles(String),
    /// raft itself refused (bad configuration, or a storage error it saw).
    #[error("raft: {0}")]
    Raft(#[from] ::raft::Error),
    /// Applying to the state machine failed: the member cannot go on.
    /// Boxed: raft does not know which state machine it drives.
    #[error(transparent)]
    Machine(Box<dyn std::error::Error + Send + Sync>),
    /// A committed entry does not decode.
    #[error("raft: corrupt {0}: {1}")]
    Decode(&'static str, String),
    /// The raft thread could not be started.
    #[error("cannot start the raft thread: {0}")]
    Thread(std::io::Error),
    /// The peer transport failed to start.
    #[error("peer transport: {0}")]
    Transport(String),
}

impl From<Error> for ::raft::Error {
    fn from(e: Error) -> Self {
        let store = match e {
            Error::Compacted => StorageError::Compacted,
            Error::Unavailable => StorageError::Unavailable,
            Error::SnapshotOutOfDate => StorageError::SnapshotOutOfDate,
            Error::SnapshotTemporarilyUnavailable => StorageError::SnapshotTemporarilyUnavailable,
            other => StorageError::Other(Box::new(other)),
        };
        ::raft::Error::Store(store)
    }
}

/// Why the raft thread did not take a proposal or serve a read. Cloned to
/// every read of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The raft thread is gone (stopping, failed or removed).
    #[error("raft stopped")]
    Stopped,
    /// A leader-only proposal reached a member that does not lead.
    #[error("not the leader")]
    NotLeader,
    /// raft dropped the proposal or read: no leader is known.
    #[error("no leader")]
    NoLeader,
    /// The leader changed while a read waited for its round.
    #[error("leader changed")]
    LeaderChanged,
}
